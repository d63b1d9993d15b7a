//! Builds the one versioned mesh state from every source: registries and
//! config are merged here, once, before any per-proxy work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use pilotfish_crds::{ConfigKey, ConfigObject, ConfigSpec};
use pilotfish_registries::RegistrySnapshot;
use pilotfish_registries::service_entry::add_service_entry;
use pilotfish_translate::{CredentialKey, MeshConfig, MeshState, ReferencedLabels, TlsCredential};

use crate::problems::InputProblem;
use crate::proxy_view::InboundIndex;
use crate::sources::config_dir::{ConfigDirs, ConfigLoad};
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
    /// With `endpoints_only`: the services (hostnames) whose endpoints
    /// changed, the scope of the rebuild.
    pub changed_hosts: BTreeSet<String>,
    /// Each workload IP's own ports, for sidecars' inbound side.
    pub inbound: InboundIndex,
    /// Proxy label keys some config reads; see [`MeshGeneration::referenced_labels`].
    pub referenced_labels: OnceLock<ReferencedLabels>,
}

impl MeshGeneration {
    /// The label keys the config of this generation matches proxies on,
    /// computed once (eagerly by [`MeshStore::rebuild`]).
    pub fn referenced_labels(&self) -> &ReferencedLabels {
        self.referenced_labels
            .get_or_init(|| ReferencedLabels::of(&self.mesh))
    }
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
    /// Config sources that push objects (Kubernetes), by name, in the order
    /// they were added; they rank after the config directories.
    dynamic_config: Vec<DynamicConfig>,
    /// Pushing config and credential sources that have not delivered their
    /// first full set.
    unsynced_config: std::collections::BTreeSet<String>,
    /// Sources of gateway TLS credentials (Kubernetes Secrets), in the order
    /// they were added; the first one holding a namespace/name wins.
    dynamic_credentials: Vec<DynamicCredentials>,
    /// Files as last read, and whether the watcher saw them change since.
    files: FileInputs,
    files_changed: bool,
    /// The merged config as last computed, and whether an input changed.
    merged_config: MergedConfig,
    config_changed: bool,
}

pub type Credentials = BTreeMap<CredentialKey, TlsCredential>;

/// The latest full set of credentials from one source, with the problems it
/// found (a certificate without its key...).
#[derive(Debug, Default)]
struct DynamicCredentials {
    name: String,
    credentials: Credentials,
    problems: Vec<InputProblem>,
}

/// The latest full set of objects from one pushing config source, with the
/// problems it found (invalid objects, kept last valid versions).
#[derive(Debug, Default)]
struct DynamicConfig {
    name: String,
    objects: Vec<ConfigObject>,
    problems: Vec<InputProblem>,
}

impl MeshStore {
    pub fn new(config: ConfigDirs, registries: RegistryFiles, mesh_config: MeshConfig) -> Self {
        MeshStore {
            config,
            registries,
            mesh_config,
            dynamic: Vec::new(),
            unsynced: Default::default(),
            dynamic_config: Vec::new(),
            unsynced_config: Default::default(),
            dynamic_credentials: Vec::new(),
            files: FileInputs::default(),
            files_changed: true,
            merged_config: MergedConfig::default(),
            config_changed: true,
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

    /// Every pushing registry and config source has delivered a full first
    /// snapshot.
    pub fn all_synced(&self) -> bool {
        self.unsynced.is_empty() && self.unsynced_config.is_empty()
    }

    /// Declares a pushing config source; its objects rank after the config
    /// directories and after the sources declared before it.
    pub fn add_dynamic_config(&mut self, name: &str) {
        if !self.dynamic_config.iter().any(|c| c.name == name) {
            self.dynamic_config.push(DynamicConfig {
                name: name.to_string(),
                ..DynamicConfig::default()
            });
            self.unsynced_config.insert(name.to_string());
        }
    }

    /// Replaces the objects (already validated) and problems of a pushing
    /// config source.
    pub fn set_dynamic_config(
        &mut self,
        name: &str,
        objects: Vec<ConfigObject>,
        problems: Vec<InputProblem>,
    ) {
        self.unsynced_config.remove(name);
        self.config_changed = true;
        let fresh = DynamicConfig {
            name: name.to_string(),
            objects,
            problems,
        };
        match self.dynamic_config.iter_mut().find(|c| c.name == name) {
            Some(current) => *current = fresh,
            None => self.dynamic_config.push(fresh),
        }
    }

    /// Declares a credential source; not synced until its first full set.
    pub fn add_dynamic_credentials(&mut self, name: &str) {
        if !self.dynamic_credentials.iter().any(|c| c.name == name) {
            self.dynamic_credentials.push(DynamicCredentials {
                name: name.to_string(),
                ..DynamicCredentials::default()
            });
            self.unsynced_config.insert(name.to_string());
        }
    }

    /// Replaces the credentials and problems of a credential source.
    pub fn set_dynamic_credentials(
        &mut self,
        name: &str,
        credentials: Credentials,
        problems: Vec<InputProblem>,
    ) {
        self.unsynced_config.remove(name);
        let fresh = DynamicCredentials {
            name: name.to_string(),
            credentials,
            problems,
        };
        match self.dynamic_credentials.iter_mut().find(|c| c.name == name) {
            Some(current) => *current = fresh,
            None => self.dynamic_credentials.push(fresh),
        }
    }

    /// Replaces the latest snapshot of a pushing registry.
    pub fn set_dynamic_registry(&mut self, name: &str, snapshot: RegistrySnapshot) {
        self.unsynced.remove(name);
        match self.dynamic.iter_mut().find(|(n, _)| n == name) {
            Some((_, current)) => *current = snapshot,
            None => self.dynamic.push((name.to_string(), snapshot)),
        }
    }

    /// Config or registry files changed (the watcher saw them): they are
    /// read again on the next rebuild, and only then.
    pub fn note_files_changed(&mut self) {
        self.files_changed = true;
        self.config_changed = true;
    }

    /// Merges every source into a generation. Files are read again only
    /// after [`MeshStore::note_files_changed`], and the config (with the
    /// ServiceEntries it defines) is merged again only when files or a
    /// pushing config source changed: a registry event re-reads nothing.
    /// The version is assigned when the result is published (and only if
    /// it differs from what is being served).
    pub fn rebuild(&mut self) -> MeshGeneration {
        if self.files_changed {
            let config = self.config.load();
            let mut registry_problems = Vec::new();
            let registries = self.registries.load(&mut registry_problems);
            self.files = FileInputs {
                config,
                registries,
                registry_problems,
            };
            self.files_changed = false;
        }
        if self.config_changed {
            self.merged_config = self.merge_config();
            self.config_changed = false;
        }
        let merged = &self.merged_config;
        let mut problems = merged.problems.clone();
        problems.extend(self.files.registry_problems.iter().cloned());
        let mut snapshots = self.files.registries.clone();
        snapshots.extend(self.dynamic.iter().cloned());
        snapshots.push(("ServiceEntry".to_string(), merged.entries.clone()));
        let objects = merged.objects.clone();
        let (services, endpoints) = merge_registries(snapshots, &mut problems);
        let mut credentials = Credentials::new();
        for source in &self.dynamic_credentials {
            problems.extend(source.problems.iter().cloned());
            for (key, credential) in &source.credentials {
                credentials
                    .entry(key.clone())
                    .or_insert_with(|| credential.clone());
            }
        }
        problems.sort();
        problems.dedup();
        let mesh = MeshState {
            services,
            endpoints,
            config: objects,
            credentials,
            mesh: self.mesh_config.clone(),
        };
        MeshGeneration {
            version: 0,
            inbound: InboundIndex::build(&mesh),
            referenced_labels: OnceLock::from(ReferencedLabels::of(&mesh)),
            mesh: Arc::new(mesh),
            problems,
            endpoints_only: false,
            changed_hosts: BTreeSet::new(),
        }
    }
}

impl MeshStore {
    /// The config of the files and the pushing sources, and the registry
    /// its ServiceEntries make.
    fn merge_config(&self) -> MergedConfig {
        let mut loaded = ConfigLoad {
            objects: self.files.config.objects.clone(),
            problems: self.files.config.problems.clone(),
        };
        merge_dynamic_config(&self.dynamic_config, &mut loaded);
        let mut problems = loaded.problems;
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
        MergedConfig {
            objects: loaded.objects,
            problems,
            entries,
        }
    }
}

/// What the files held when last read.
#[derive(Debug, Default)]
struct FileInputs {
    config: ConfigLoad,
    registries: Vec<(String, RegistrySnapshot)>,
    registry_problems: Vec<InputProblem>,
}

/// The merged config and the ServiceEntry registry it defines.
#[derive(Debug, Default)]
struct MergedConfig {
    objects: Vec<ConfigObject>,
    problems: Vec<InputProblem>,
    entries: RegistrySnapshot,
}

/// Adds the pushing sources' objects after the files' ones; an object whose
/// kind/namespace/name is already taken is reported and skipped.
fn merge_dynamic_config(sources: &[DynamicConfig], loaded: &mut ConfigLoad) {
    if sources.is_empty() {
        return;
    }
    let mut seen: BTreeMap<ConfigKey, String> = loaded
        .objects
        .iter()
        .map(|o| (o.key(), o.origin.to_string()))
        .collect();
    for source in sources {
        loaded.problems.extend(source.problems.iter().cloned());
        for obj in &source.objects {
            let key = obj.key();
            match seen.get(&key) {
                Some(first) => loaded.problems.push(InputProblem {
                    source: obj.origin.to_string(),
                    object: Some(key.to_string()),
                    field: Some("metadata.name".into()),
                    message: format!("duplicate object; the one in {first} is used"),
                }),
                None => {
                    seen.insert(key, obj.origin.to_string());
                    loaded.objects.push(obj.clone());
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: shop}\nspec: {host: reviews}\n";

    fn object(source: &str, name: &str) -> ConfigObject {
        let text = DR.replace("name: reviews", &format!("name: {name}"));
        let mut loaded = pilotfish_crds::load_yaml(source, &text, "default");
        let mut obj = loaded.objects.remove(0);
        obj.origin.document = None;
        obj
    }

    #[test]
    fn a_registry_event_reads_no_file_and_a_file_event_reads_them_again() {
        let dir = std::env::temp_dir().join(format!("pf-mesh-store-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let names = |generation: &MeshGeneration| -> Vec<String> {
            let config = &generation.mesh.config;
            config.iter().map(|o| o.meta.name.clone()).collect()
        };
        std::fs::write(dir.join("dr.yaml"), DR).unwrap();
        let mut store = MeshStore::new(
            ConfigDirs::new(vec![dir.clone()], "default"),
            RegistryFiles::new(Vec::new()),
            MeshConfig::default(),
        );
        assert_eq!(names(&store.rebuild()), ["reviews"]);
        std::fs::write(
            dir.join("dr.yaml"),
            DR.replace("name: reviews", "name: edited"),
        )
        .unwrap();
        store.add_dynamic_registry("consul");
        store.set_dynamic_registry("consul", RegistrySnapshot::default());
        assert_eq!(names(&store.rebuild()), ["reviews"], "not read again");
        store.note_files_changed();
        assert_eq!(names(&store.rebuild()), ["edited"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dynamic_config_merges_after_files_reports_duplicates_and_gates_readiness() {
        let dir = std::env::temp_dir().join(format!("pf-mesh-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dr.yaml"), DR).unwrap();
        let mut store = MeshStore::new(
            ConfigDirs::new(vec![dir.clone()], "default"),
            RegistryFiles::new(Vec::new()),
            MeshConfig::default(),
        );
        store.add_dynamic_config("kubernetes-config");
        assert!(!store.all_synced(), "not ready before the first full set");
        let problem = InputProblem::plain("kubernetes", "something invalid");
        store.set_dynamic_config(
            "kubernetes-config",
            vec![
                object("kubernetes", "reviews"),
                object("kubernetes", "ratings"),
            ],
            vec![problem.clone()],
        );
        assert!(store.all_synced());
        let generation = store.rebuild();
        let keys: Vec<String> = generation
            .mesh
            .config
            .iter()
            .map(|o| o.key().to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "DestinationRule shop/reviews",
                "DestinationRule shop/ratings"
            ]
        );
        assert!(
            generation.mesh.config[0].origin.source.ends_with("dr.yaml"),
            "the file wins"
        );
        assert!(generation.problems.contains(&problem));
        let duplicate = generation
            .problems
            .iter()
            .find(|p| p.message.starts_with("duplicate object"))
            .expect("duplicate reported");
        assert_eq!(duplicate.source, "kubernetes");
        assert_eq!(
            duplicate.object.as_deref(),
            Some("DestinationRule shop/reviews")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn credentials_reach_the_mesh_with_their_problems_and_gate_readiness() {
        let mut store = MeshStore::new(
            ConfigDirs::new(Vec::new(), "default"),
            RegistryFiles::new(Vec::new()),
            MeshConfig::default(),
        );
        store.add_dynamic_credentials("kubernetes-secrets");
        assert!(!store.all_synced(), "not ready before the first full set");
        let key = ("istio-system".to_string(), "gw-cert".to_string());
        let credential = TlsCredential {
            certificate_chain: b"CERT".to_vec(),
            private_key: b"KEY".to_vec(),
            ca_certificates: None,
        };
        let problem = InputProblem::plain("kubernetes", "Secret without its key");
        store.set_dynamic_credentials(
            "kubernetes-secrets",
            Credentials::from([(key.clone(), credential.clone())]),
            vec![problem.clone()],
        );
        assert!(store.all_synced());
        let generation = store.rebuild();
        assert_eq!(generation.mesh.credentials.get(&key), Some(&credential));
        assert!(generation.problems.contains(&problem));

        store.set_dynamic_credentials("kubernetes-secrets", Credentials::new(), Vec::new());
        assert!(store.rebuild().mesh.credentials.is_empty(), "deleted");
    }
}
