//! Builds the one versioned mesh state from every source: registries and
//! config are merged here, once, before any per-proxy work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use pilotfish_crds::{ConfigKey, ConfigObject, ConfigSpec};
use pilotfish_registries::service_entry::add_service_entry;
use pilotfish_registries::{Endpoint, RegistrySnapshot, Service};
use pilotfish_translate::mesh::shared_endpoints;
use pilotfish_translate::{
    CredentialKey, MeshConfig, MeshState, ReferencedLabels, Resolved, TlsCredential, resolve,
};

use crate::problems::InputProblem;
use crate::proxy_view::InboundIndex;
use crate::quarantine::{Quarantine, QuarantineRequest};
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
    /// Stage 1 of the translation, run once for every view of the
    /// generation; see [`MeshGeneration::resolved`].
    pub resolved: OnceLock<Resolved>,
    /// Each config object's revision: the version of the generation in
    /// which its current content appeared (set when published).
    pub revisions: Arc<BTreeMap<ConfigKey, u64>>,
    /// The version of the generation in which services, credentials or
    /// mesh settings last changed (set when published): what a proxy
    /// rejects may come from them rather than from a config object.
    pub registry_changed_at: u64,
}

impl MeshGeneration {
    /// The label keys the config of this generation matches proxies on,
    /// computed once (eagerly by [`MeshStore::rebuild`]).
    pub fn referenced_labels(&self) -> &ReferencedLabels {
        self.referenced_labels
            .get_or_init(|| ReferencedLabels::of(&self.mesh))
    }

    /// The generation resolved (translation stage 1), computed by the first
    /// view that needs it; its views share it, and the parts it holds.
    pub fn resolved(&self) -> &Resolved {
        self.resolved.get_or_init(|| resolve(self.mesh.clone()))
    }
}

pub struct MeshStore {
    config: ConfigDirs,
    registries: RegistryFiles,
    mesh_config: MeshConfig,
    /// Registries that push snapshots (Consul, Kubernetes), by name, in
    /// the order they were added: that order is their precedence.
    dynamic: Vec<(String, Arc<RegistrySnapshot>)>,
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
    /// A pushing registry changed its services, or credentials changed,
    /// since the last rebuild: everything is merged again.
    sources_changed: bool,
    /// Hostnames whose endpoints alone pushing registries changed since the
    /// last rebuild: the last merge is patched.
    endpoint_hosts: BTreeSet<String>,
    last: Option<LastMerge>,
    /// Objects left out because a proxy rejected what they produced.
    quarantine: Quarantine,
}

/// What the last full merge produced, kept to patch endpoint changes into.
#[derive(Debug)]
struct LastMerge {
    services: Arc<Vec<Service>>,
    endpoints: BTreeMap<String, Arc<Vec<Endpoint>>>,
    /// The source whose service each hostname is.
    owners: BTreeMap<String, String>,
    credentials: Credentials,
    problems: Vec<InputProblem>,
    referenced_labels: ReferencedLabels,
}

/// What a pushing registry's new snapshot changed, as the registry saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryScope {
    /// Services may have changed: everything is merged again.
    Everything,
    /// Only the endpoints of these hostnames changed.
    Endpoints(BTreeSet<String>),
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
            sources_changed: true,
            endpoint_hosts: BTreeSet::new(),
            last: None,
            quarantine: Quarantine::default(),
        }
    }

    /// Leaves `request`'s object out of the next merges, as long as its
    /// content stays what the proxy rejected.
    pub fn quarantine(&mut self, request: QuarantineRequest) {
        if self.quarantine.add(request) {
            self.config_changed = true;
        }
    }

    /// Objects left out now, and ever.
    pub fn quarantined(&self) -> (usize, u64) {
        (self.quarantine.len(), self.quarantine.applied_total())
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
            self.dynamic.push((name.to_string(), Arc::default()));
            self.unsynced.insert(name.to_string());
            self.sources_changed = true;
        }
    }

    /// Every registry file has loaded once, and every pushing registry and
    /// config source has delivered a full first snapshot.
    pub fn all_synced(&self) -> bool {
        self.pending_sources().is_empty()
    }

    /// What has not loaded yet, one line each naming the source and why:
    /// pilotfish is not ready while any is left.
    pub fn pending_sources(&self) -> Vec<String> {
        let mut pending: Vec<String> = self.registries.unloaded().cloned().collect();
        pending.extend(
            self.unsynced
                .iter()
                .map(|name| format!("registry {name}: no first snapshot yet")),
        );
        pending.extend(
            self.unsynced_config
                .iter()
                .map(|name| format!("config source {name}: no first full set yet")),
        );
        pending
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
        self.sources_changed = true;
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

    /// Replaces the latest snapshot of a pushing registry; `scope` is what
    /// the registry says changed since its previous one.
    pub fn set_dynamic_registry(
        &mut self,
        name: &str,
        snapshot: Arc<RegistrySnapshot>,
        scope: RegistryScope,
    ) {
        let first = self.unsynced.remove(name);
        match (scope, first) {
            (RegistryScope::Endpoints(hosts), false) => self.endpoint_hosts.extend(hosts),
            _ => self.sources_changed = true,
        }
        match self.dynamic.iter_mut().find(|(n, _)| n == name) {
            Some((_, current)) => *current = snapshot,
            None => {
                self.dynamic.push((name.to_string(), snapshot));
                self.sources_changed = true;
            }
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
    /// When pushing registries changed only endpoints, the last merge is
    /// patched for those hostnames and the generation says so (nothing
    /// else is merged or compared). The version is assigned when the
    /// result is published (and only if it differs from what is served).
    pub fn rebuild(&mut self) -> MeshGeneration {
        let full = self.files_changed || self.config_changed || self.sources_changed;
        match self.last.take() {
            Some(last) if !full => self.patch_endpoints(last),
            _ => self.merge_everything(),
        }
    }

    fn merge_everything(&mut self) -> MeshGeneration {
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
        self.sources_changed = false;
        self.endpoint_hosts.clear();
        let merged = &self.merged_config;
        let mut problems = merged.problems.clone();
        problems.extend(self.files.registry_problems.iter().cloned());
        let mut snapshots = self.files.registries.clone();
        snapshots.extend(self.dynamic.iter().map(|(n, s)| (n.clone(), (**s).clone())));
        snapshots.push(("ServiceEntry".to_string(), merged.entries.clone()));
        let (services, endpoints, owners) = merge_registries(snapshots, &mut problems);
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
            services: Arc::new(services),
            endpoints: shared_endpoints(endpoints),
            config: merged.objects.clone(),
            credentials: credentials.clone(),
            mesh: self.mesh_config.clone(),
        };
        let referenced_labels = ReferencedLabels::of(&mesh);
        self.last = Some(LastMerge {
            services: mesh.services.clone(),
            endpoints: mesh.endpoints.clone(),
            owners,
            credentials,
            problems: problems.clone(),
            referenced_labels: referenced_labels.clone(),
        });
        MeshGeneration {
            version: 0,
            inbound: InboundIndex::build(&mesh),
            referenced_labels: OnceLock::from(referenced_labels),
            mesh: Arc::new(mesh),
            problems,
            endpoints_only: false,
            changed_hosts: BTreeSet::new(),
            ..MeshGeneration::default()
        }
    }

    /// The last merge with the endpoint lists of the hostnames pushing
    /// registries changed replaced by their owners' current ones.
    fn patch_endpoints(&mut self, mut last: LastMerge) -> MeshGeneration {
        let mut changed = BTreeSet::new();
        for host in std::mem::take(&mut self.endpoint_hosts) {
            // Endpoints of a hostname no service has are not served.
            let Some(owner) = last.owners.get(&host) else {
                continue;
            };
            let fresh = self
                .dynamic
                .iter()
                .find(|(name, _)| name == owner)
                .and_then(|(_, snapshot)| snapshot.endpoints.get(&host));
            let held = last.endpoints.get(&host).map(|e| e.as_slice());
            if fresh.map(Vec::as_slice) == held {
                continue;
            }
            match fresh {
                Some(list) => last.endpoints.insert(host.clone(), Arc::new(list.clone())),
                None => last.endpoints.remove(&host),
            };
            changed.insert(host);
        }
        let mesh = MeshState {
            services: last.services.clone(),
            endpoints: last.endpoints.clone(),
            config: self.merged_config.objects.clone(),
            credentials: last.credentials.clone(),
            mesh: self.mesh_config.clone(),
        };
        let generation = MeshGeneration {
            version: 0,
            inbound: InboundIndex::build(&mesh),
            referenced_labels: OnceLock::from(last.referenced_labels.clone()),
            mesh: Arc::new(mesh),
            problems: last.problems.clone(),
            endpoints_only: true,
            changed_hosts: changed,
            ..MeshGeneration::default()
        };
        self.last = Some(last);
        generation
    }
}

impl MeshStore {
    /// The config of the files and the pushing sources, without the
    /// quarantined objects, and the registry its ServiceEntries make.
    fn merge_config(&mut self) -> MergedConfig {
        let mut loaded = ConfigLoad {
            objects: self.files.config.objects.clone(),
            problems: self.files.config.problems.clone(),
        };
        merge_dynamic_config(&self.dynamic_config, &mut loaded);
        self.quarantine
            .apply(&mut loaded.objects, &mut loaded.problems);
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
            objects: Arc::new(loaded.objects),
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
    objects: Arc<Vec<ConfigObject>>,
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

/// Services, their endpoints, and the source each hostname came from.
type Merged = (
    Vec<Service>,
    BTreeMap<String, Vec<Endpoint>>,
    BTreeMap<String, String>,
);

/// One service per hostname: the first source that defines a hostname owns it
/// (sources are in command-line order); later definitions are reported.
fn merge_registries(
    snapshots: Vec<(String, RegistrySnapshot)>,
    problems: &mut Vec<InputProblem>,
) -> Merged {
    let mut services: BTreeMap<String, (String, Service)> = BTreeMap::new();
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
    let owners = services
        .iter()
        .map(|(host, (source, _))| (host.clone(), source.clone()))
        .collect();
    (
        services.into_values().map(|(_, s)| s).collect(),
        endpoints,
        owners,
    )
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
        store.set_dynamic_registry("consul", Arc::default(), RegistryScope::Everything);
        assert_eq!(names(&store.rebuild()), ["reviews"], "not read again");
        store.note_files_changed();
        assert_eq!(names(&store.rebuild()), ["edited"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn store_without_files() -> MeshStore {
        MeshStore::new(
            ConfigDirs::new(Vec::new(), "default"),
            RegistryFiles::new(Vec::new()),
            MeshConfig::default(),
        )
    }

    /// A registry of `hosts`, each with one endpoint at its IP.
    fn registry(hosts: &[(&str, &str)]) -> Arc<RegistrySnapshot> {
        let text: String = hosts
            .iter()
            .map(|(host, ip)| {
                format!("- hostname: {host}\n  ports: [{{port: 80}}]\n  endpoints: [{{address: {ip}}}]\n")
            })
            .collect();
        let parsed =
            pilotfish_registries::file::parse_registry_file("test", &format!("services:\n{text}"))
                .expect("a registry file");
        Arc::new(parsed.snapshot)
    }

    #[test]
    fn an_endpoint_only_registry_change_patches_the_last_merge() {
        let mut store = store_without_files();
        store.add_dynamic_registry("first");
        store.add_dynamic_registry("second");
        let everything = RegistryScope::Everything;
        store.set_dynamic_registry("first", registry(&[("a", "10.0.0.1")]), everything.clone());
        let second = registry(&[("a", "10.9.9.9"), ("b", "10.0.0.2")]);
        store.set_dynamic_registry("second", second, everything);
        let before = store.rebuild();
        assert!(!before.endpoints_only);

        // `a` belongs to the first registry: the second's `a` is not served.
        let moved = registry(&[("a", "10.9.9.8"), ("b", "10.0.0.3")]);
        let scope = RegistryScope::Endpoints(["a", "b"].map(String::from).into());
        store.set_dynamic_registry("second", moved, scope);
        let after = store.rebuild();
        assert!(after.endpoints_only);
        assert_eq!(after.changed_hosts, BTreeSet::from(["b".to_string()]));
        assert!(Arc::ptr_eq(&before.mesh.services, &after.mesh.services));
        assert!(Arc::ptr_eq(&before.mesh.config, &after.mesh.config));
        assert!(Arc::ptr_eq(
            &before.mesh.endpoints["a"],
            &after.mesh.endpoints["a"]
        ));
        assert_eq!(after.mesh.endpoints["b"][0].address, "10.0.0.3");

        // A service change merges everything again.
        let grown = registry(&[("b", "10.0.0.3"), ("c", "10.0.0.4")]);
        store.set_dynamic_registry("second", grown, RegistryScope::Everything);
        let merged = store.rebuild();
        assert!(!merged.endpoints_only);
        assert_eq!(merged.mesh.services.len(), 3);
    }

    /// A store reading one config dir (named from `prefix`) that holds `DR`.
    fn store_with_dr_file(prefix: &str) -> (std::path::PathBuf, MeshStore) {
        let dir = std::env::temp_dir().join(format!("{prefix}{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dr.yaml"), DR).unwrap();
        let store = MeshStore::new(
            ConfigDirs::new(vec![dir.clone()], "default"),
            RegistryFiles::new(Vec::new()),
            MeshConfig::default(),
        );
        (dir, store)
    }

    #[test]
    fn dynamic_config_merges_after_files_reports_duplicates_and_gates_readiness() {
        let (dir, mut store) = store_with_dr_file("pf-mesh-store-");
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
    fn a_quarantined_object_is_left_out_until_its_file_changes() {
        let (dir, mut store) = store_with_dr_file("pf-mesh-quarantine-");
        let served = store.rebuild();
        let rejected = served.mesh.config[0].clone();
        store.quarantine(QuarantineRequest {
            object: rejected,
            proxy: "sidecar~10.0.0.1~a.shop~shop.svc.cluster.local".into(),
            message: "rejected".into(),
        });
        let left_out = store.rebuild();
        assert!(left_out.mesh.config.is_empty());
        let problem = left_out
            .problems
            .iter()
            .find(|p| p.object.as_deref() == Some("DestinationRule shop/reviews"))
            .expect("reported");
        assert!(problem.source.contains("dr.yaml"), "{problem}");
        assert_eq!(store.quarantined(), (1, 1));

        std::fs::write(
            dir.join("dr.yaml"),
            DR.replace("host: reviews", "host: ratings"),
        )
        .unwrap();
        store.note_files_changed();
        let fixed = store.rebuild();
        assert_eq!(fixed.mesh.config.len(), 1, "served again");
        assert!(fixed.problems.is_empty());
        assert_eq!(store.quarantined(), (0, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn credentials_reach_the_mesh_with_their_problems_and_gate_readiness() {
        let mut store = store_without_files();
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
