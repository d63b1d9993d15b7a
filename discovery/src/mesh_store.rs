//! Builds the one versioned mesh state from every source: registries and
//! config are merged here, once, before any per-proxy work.

use std::collections::BTreeMap;
use std::sync::Arc;

use pilotfish_crds::ConfigSpec;
use pilotfish_registries::RegistrySnapshot;
use pilotfish_registries::service_entry::add_service_entry;
use pilotfish_translate::{MeshConfig, MeshState};

use crate::problems::InputProblem;
use crate::proxy_view::InboundIndex;
use crate::sources::config_dir::ConfigDirs;
use crate::sources::registry_files::RegistryFiles;

/// One published generation of the mesh.
#[derive(Debug, Default)]
pub struct MeshGeneration {
    pub version: u64,
    pub mesh: Arc<MeshState>,
    /// Problems with the inputs of this generation.
    pub problems: Vec<InputProblem>,
    /// Only endpoints differ from the previous generation, so proxies need
    /// new endpoints (and listeners), not a full rebuild.
    pub endpoints_only: bool,
    /// Each workload IP's own ports, for sidecars' inbound side.
    pub inbound: InboundIndex,
}

pub struct MeshStore {
    config: ConfigDirs,
    registries: RegistryFiles,
    mesh_config: MeshConfig,
    /// Registries that push snapshots (Consul, later Kubernetes), by name, in
    /// the order they were added: that order is their precedence.
    dynamic: Vec<(String, RegistrySnapshot)>,
    /// Pushing registries that have not delivered their first snapshot.
    unsynced: std::collections::BTreeSet<String>,
}

impl MeshStore {
    pub fn new(config: ConfigDirs, registries: RegistryFiles, mesh_config: MeshConfig) -> Self {
        MeshStore {
            config,
            registries,
            mesh_config,
            dynamic: Vec::new(),
            unsynced: Default::default(),
        }
    }

    pub fn watched_dirs(&self) -> &[std::path::PathBuf] {
        self.config.dirs()
    }

    pub fn watched_files(&self) -> &[std::path::PathBuf] {
        self.registries.files()
    }

    /// Declares a pushing registry; its services rank after the registry
    /// files and after the registries declared before it.
    pub fn add_dynamic_registry(&mut self, name: &str) {
        if !self.dynamic.iter().any(|(n, _)| n == name) {
            self.dynamic
                .push((name.to_string(), RegistrySnapshot::default()));
            self.unsynced.insert(name.to_string());
        }
    }

    /// Every pushing registry has delivered a full first snapshot.
    pub fn all_synced(&self) -> bool {
        self.unsynced.is_empty()
    }

    /// Replaces the latest snapshot of a pushing registry.
    pub fn set_dynamic_registry(&mut self, name: &str, snapshot: RegistrySnapshot) {
        self.unsynced.remove(name);
        match self.dynamic.iter_mut().find(|(n, _)| n == name) {
            Some((_, current)) => *current = snapshot,
            None => self.dynamic.push((name.to_string(), snapshot)),
        }
    }

    /// Re-reads every source. The version is assigned when the result is
    /// published (and only if it differs from what is being served).
    pub fn rebuild(&mut self) -> MeshGeneration {
        let loaded = self.config.load();
        let mut problems = loaded.problems;
        let mut snapshots = self.registries.load(&mut problems);
        snapshots.extend(self.dynamic.iter().cloned());

        // ServiceEntries in the config are a registry of their own.
        let mut entries = RegistrySnapshot::default();
        for obj in &loaded.objects {
            if let ConfigSpec::ServiceEntry(spec) = &obj.spec {
                let warnings = add_service_entry(
                    &obj.key(),
                    obj.meta.creation_timestamp.as_deref(),
                    spec,
                    &mut entries,
                );
                problems.extend(warnings.into_iter().map(|w| InputProblem {
                    source: obj.origin.to_string(),
                    object: Some(w.object.to_string()),
                    field: Some(w.field),
                    message: w.message,
                }));
            }
        }
        snapshots.push(("ServiceEntry".to_string(), entries));

        let (services, endpoints) = merge_registries(snapshots, &mut problems);
        problems.sort();
        problems.dedup();
        let mesh = MeshState {
            services,
            endpoints,
            config: loaded.objects,
            mesh: self.mesh_config.clone(),
        };
        MeshGeneration {
            version: 0,
            inbound: InboundIndex::build(&mesh),
            mesh: Arc::new(mesh),
            problems,
            endpoints_only: false,
        }
    }
}

type Merged = (
    Vec<pilotfish_registries::Service>,
    BTreeMap<String, Vec<pilotfish_registries::Endpoint>>,
);

/// One service per hostname: the first source that defines a hostname owns it
/// (sources are in command-line order); later definitions are reported.
fn merge_registries(
    snapshots: Vec<(String, RegistrySnapshot)>,
    problems: &mut Vec<InputProblem>,
) -> Merged {
    let mut services: BTreeMap<String, (String, pilotfish_registries::Service)> = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    for (source, snapshot) in snapshots {
        let mut snapshot_endpoints = snapshot.endpoints;
        for service in snapshot.services {
            if let Some((owner, _)) = services.get(&service.hostname) {
                problems.push(InputProblem {
                    source: source.clone(),
                    object: Some(format!("service {}", service.hostname)),
                    field: None,
                    message: format!(
                        "hostname already defined by {owner}; this definition is ignored"
                    ),
                });
                continue;
            }
            if let Some(eps) = snapshot_endpoints.remove(&service.hostname) {
                endpoints.insert(service.hostname.clone(), eps);
            }
            services.insert(service.hostname.clone(), (source.clone(), service));
        }
    }
    (services.into_values().map(|(_, s)| s).collect(), endpoints)
}
