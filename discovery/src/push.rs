//! Push scheduling: change signals are debounced, the mesh is rebuilt once,
//! and the new generation is published to every stream.

use std::sync::Arc;
use std::time::Duration;

use pilotfish_registries::RegistrySnapshot;
use std::collections::{BTreeMap, BTreeSet};

use pilotfish_crds::{ConfigKey, ConfigObject, ConfigSpec, Resolution, ServiceEntrySpec};
use pilotfish_registries::changed_keys;
use pilotfish_translate::{MeshState, ProxyView};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::ads::XdsContext;
use crate::mesh_store::{MeshGeneration, MeshStore, RegistryScope};
use crate::quarantine::QuarantineRequest;
use crate::readiness::Readiness;

pub struct Debounce {
    /// Quiet time after the last change before rebuilding.
    pub quiet: Duration,
    /// Upper bound on how long a stream of changes can delay a rebuild.
    pub max_delay: Duration,
}

/// Rebuilds the mesh and publishes it as a new generation, unless nothing
/// changed. Returns whether a generation was published.
pub fn publish(
    store: &mut MeshStore,
    ctx: &XdsContext,
    tx: &watch::Sender<Arc<MeshGeneration>>,
) -> bool {
    let started = std::time::Instant::now();
    let mut generation = store.rebuild();
    let rebuilt = started.elapsed();
    let previous = tx.borrow().clone();
    // A patched generation says what changed; a merged one is compared.
    let same_mesh = if generation.endpoints_only {
        generation.changed_hosts.is_empty()
    } else {
        *generation.mesh == *previous.mesh
    };
    let unchanged = previous.version > 0 && same_mesh && generation.problems == previous.problems;
    if unchanged {
        tracing::debug!(
            version = previous.version,
            "sources re-read; nothing changed"
        );
        return false;
    }
    generation.version = previous.version + 1;
    stamp_revisions(&previous, &mut generation);
    if previous.version > 0
        && !generation.endpoints_only
        && let Some(hosts) = endpoint_change_scope(&previous.mesh, &generation.mesh)
    {
        generation.endpoints_only = true;
        generation.changed_hosts = hosts;
    }
    // The first generation has nothing to be scoped against.
    if previous.version == 0 {
        generation.endpoints_only = false;
    }
    let generation = Arc::new(generation);
    report_problems(&previous, &generation);
    ctx.metrics
        .config_errors
        .set(generation.problems.len() as i64);
    ctx.metrics.mesh_generation.set(generation.version as i64);
    ctx.metrics
        .services
        .set(generation.mesh.services.len() as i64);
    let (quarantined, ever) = store.quarantined();
    ctx.metrics.config_quarantined.set(quarantined as i64);
    let counted = ctx.metrics.config_quarantines.get();
    ctx.metrics
        .config_quarantines
        .inc_by(ever.saturating_sub(counted));

    // Translate a default sidecar view eagerly so conflicts and other
    // diagnostics are reported (by the cache) even before any proxy connects.
    let default_view = ProxyView {
        namespace: "default".into(),
        ..Default::default()
    };
    ctx.cache.snapshot(&generation, &default_view);
    tx.send_replace(generation.clone());
    ctx.cache.prune(previous.version);
    tracing::info!(
        version = generation.version,
        services = generation.mesh.services.len(),
        config_objects = generation.mesh.config.len(),
        credentials = generation.mesh.credentials.len(),
        problems = generation.problems.len(),
        rebuild_ms = rebuilt.as_millis() as u64,
        publish_ms = started.elapsed().as_millis() as u64,
        "published mesh generation"
    );
    true
}

/// Gives each config object of `current` its revision (kept from
/// `previous` when its content is the same), and notes whether services,
/// credentials or mesh settings changed: what a proxy's rejection is
/// attributed with.
fn stamp_revisions(previous: &MeshGeneration, current: &mut MeshGeneration) {
    let (before, now) = (&previous.mesh, &current.mesh);
    let same_registry = previous.version > 0
        && before.services == now.services
        && before.credentials == now.credentials
        && before.mesh == now.mesh;
    current.registry_changed_at = match same_registry {
        true => previous.registry_changed_at,
        false => current.version,
    };
    if Arc::ptr_eq(&before.config, &now.config) {
        current.revisions = previous.revisions.clone();
        return;
    }
    let held: BTreeMap<ConfigKey, &ConfigObject> =
        before.config.iter().map(|o| (o.key(), o)).collect();
    let revisions = now
        .config
        .iter()
        .map(|object| {
            let key = object.key();
            let revision = match (held.get(&key), previous.revisions.get(&key)) {
                (Some(old), Some(revision)) if *old == object => *revision,
                _ => current.version,
            };
            (key, revision)
        })
        .collect();
    current.revisions = Arc::new(revisions);
}

/// The services whose endpoints alone changed between two meshes, or
/// `None` when anything else changed (and every view is rebuilt). A
/// ServiceEntry edit that only moves its STATIC endpoints is an endpoint
/// change: translation reads endpoints from the mesh, not from the entry.
fn endpoint_change_scope(previous: &MeshState, current: &MeshState) -> Option<BTreeSet<String>> {
    // Credentials too: an endpoints-only rebuild keeps the previous secrets.
    let same = previous.services == current.services
        && previous.mesh == current.mesh
        && previous.credentials == current.credentials
        && previous.config.len() == current.config.len()
        && previous
            .config
            .iter()
            .zip(current.config.iter())
            .all(|(a, b)| a == b || same_but_static_endpoints(a, b));
    if !same {
        return None;
    }
    Some(changed_keys(&previous.endpoints, &current.endpoints))
}

fn same_but_static_endpoints(a: &ConfigObject, b: &ConfigObject) -> bool {
    let (ConfigSpec::ServiceEntry(x), ConfigSpec::ServiceEntry(y)) = (&a.spec, &b.spec) else {
        return false;
    };
    let is_static = |spec: &ServiceEntrySpec| spec.resolution == Some(Resolution::Static);
    if !is_static(x) || !is_static(y) {
        return false;
    }
    // The edit itself bumps the object's revision.
    let strip = |o: &ConfigObject| {
        let mut o = o.clone();
        o.meta.resource_version = None;
        o.meta.generation = None;
        if let ConfigSpec::ServiceEntry(spec) = &mut o.spec {
            spec.endpoints.clear();
        }
        o
    };
    strip(a) == strip(b)
}

fn report_problems(previous: &MeshGeneration, current: &MeshGeneration) {
    for problem in &current.problems {
        if !previous.problems.contains(problem) {
            tracing::warn!(source = %problem.source, object = ?problem.object, field = ?problem.field, "{}", problem.message);
        }
    }
}

/// A change reported by a source.
#[derive(Debug)]
pub enum Change {
    /// Some watched file changed; files are read again on rebuild.
    Files,
    /// A pushing registry has a new snapshot; `scope` says what changed.
    Registry {
        name: String,
        snapshot: Arc<RegistrySnapshot>,
        scope: RegistryScope,
    },
    /// A pushing config source (Kubernetes) has a new full set of valid
    /// objects, and the problems it found.
    Config {
        name: String,
        objects: Vec<pilotfish_crds::ConfigObject>,
        problems: Vec<crate::problems::InputProblem>,
    },
    /// A credential source (Kubernetes Secrets) has a new full set of TLS
    /// credentials, and the problems it found.
    Credentials {
        name: String,
        credentials: crate::mesh_store::Credentials,
        problems: Vec<crate::problems::InputProblem>,
    },
    /// A proxy rejected what one config object produced (boxed: rare, and
    /// it carries the whole object).
    Rejected(Box<QuarantineRequest>),
}

/// Runs until the change channel closes: waits for a change, debounces,
/// applies every change received meanwhile, rebuilds and publishes.
pub async fn run(
    mut store: MeshStore,
    ctx: Arc<XdsContext>,
    tx: watch::Sender<Arc<MeshGeneration>>,
    mut changes: mpsc::UnboundedReceiver<Change>,
    debounce: Debounce,
    readiness: Arc<Readiness>,
) {
    while let Some(change) = changes.recv().await {
        apply(&mut store, change);
        let first = Instant::now();
        loop {
            let deadline = (Instant::now() + debounce.quiet).min(first + debounce.max_delay);
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Ok(Some(change)) => {
                    apply(&mut store, change);
                    if Instant::now() >= first + debounce.max_delay {
                        break;
                    }
                }
                Ok(None) => return,
                Err(_) => break,
            }
        }
        // Re-reading sources, merging and translating the eager view are
        // heavy: they run on the blocking pool, not on the async workers
        // that serve the streams.
        let (ctx_for_build, tx_for_build) = (ctx.clone(), tx.clone());
        store = match tokio::task::spawn_blocking(move || {
            publish(&mut store, &ctx_for_build, &tx_for_build);
            store
        })
        .await
        {
            Ok(store) => store,
            Err(e) => {
                tracing::error!(error = %e, "rebuilding the mesh failed; the push scheduler stops");
                return;
            }
        };
        if !readiness.is_ready() {
            readiness.update(store.pending_sources());
        }
    }
}

fn apply(store: &mut MeshStore, change: Change) {
    match change {
        Change::Files => store.note_files_changed(),
        Change::Registry {
            name,
            snapshot,
            scope,
        } => store.set_dynamic_registry(&name, snapshot, scope),
        Change::Config {
            name,
            objects,
            problems,
        } => store.set_dynamic_config(&name, objects, problems),
        Change::Credentials {
            name,
            credentials,
            problems,
        } => store.set_dynamic_credentials(&name, credentials, problems),
        Change::Rejected(request) => store.quarantine(*request),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(endpoint: &str, port: u16, revision: &str) -> String {
        format!(
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc, namespace: default, resourceVersion: "{revision}"}}
spec:
  hosts: [svc.mesh.local]
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {endpoint}}}]
"#
        )
    }

    fn mesh_of(yaml: &str) -> MeshState {
        let loaded = pilotfish_crds::load_yaml("test.yaml", yaml, "default");
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let mut entries = pilotfish_registries::RegistrySnapshot::default();
        for obj in &loaded.objects {
            if let ConfigSpec::ServiceEntry(spec) = &obj.spec {
                pilotfish_registries::service_entry::add_service_entry(
                    &obj.key(),
                    None,
                    spec,
                    &mut entries,
                );
            }
        }
        MeshState::of(entries.services, entries.endpoints, loaded.objects)
    }

    #[test]
    fn moving_a_static_service_entry_endpoint_is_scoped_to_its_host() {
        let before = mesh_of(&entry("10.0.0.1", 8080, "1"));
        let moved = mesh_of(&entry("10.0.0.2", 8080, "2"));
        assert_eq!(
            endpoint_change_scope(&before, &moved),
            Some(BTreeSet::from(["svc.mesh.local".to_string()]))
        );
        assert_eq!(
            endpoint_change_scope(&before, &before),
            Some(BTreeSet::new())
        );
    }

    #[test]
    fn revisions_change_only_with_content_and_registry_changes_are_dated() {
        let vs = |name: &str, host: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec: {{hosts: [{host}]}}\n---\n"
            )
        };
        let published = |version, mesh: MeshState, previous: &MeshGeneration| {
            let mut generation = MeshGeneration {
                version,
                mesh: Arc::new(mesh),
                ..Default::default()
            };
            stamp_revisions(previous, &mut generation);
            generation
        };
        let first = published(
            1,
            mesh_of(&(vs("a", "x") + &vs("b", "x"))),
            &MeshGeneration::default(),
        );
        let second = published(
            2,
            mesh_of(&(vs("a", "x") + &vs("b", "z") + &vs("c", "x"))),
            &first,
        );
        let revision = |g: &MeshGeneration, name: &str| {
            g.revisions
                .iter()
                .find(|(k, _)| k.name == name)
                .map(|(_, r)| *r)
        };
        assert_eq!(revision(&second, "a"), Some(1), "unchanged");
        assert_eq!(revision(&second, "b"), Some(2), "edited");
        assert_eq!(revision(&second, "c"), Some(2), "new");
        assert_eq!(second.registry_changed_at, 1);
        let with_entry = mesh_of(&(vs("a", "x") + &entry("10.0.0.1", 8080, "1")));
        let third = published(3, with_entry, &second);
        assert_eq!(third.registry_changed_at, 3, "a service appeared");
        assert_eq!(revision(&third, "b"), None, "deleted");
    }

    #[test]
    fn any_other_edit_rebuilds_everything() {
        let before = mesh_of(&entry("10.0.0.1", 8080, "1"));
        let new_port = mesh_of(&entry("10.0.0.1", 9090, "2"));
        assert_eq!(endpoint_change_scope(&before, &new_port), None);
        let dns = mesh_of(&entry("10.0.0.1", 8080, "1").replace("STATIC", "DNS"));
        let dns_moved = mesh_of(&entry("10.0.0.2", 8080, "2").replace("STATIC", "DNS"));
        assert_eq!(
            endpoint_change_scope(&dns, &dns_moved),
            None,
            "DNS clusters carry their endpoints in CDS"
        );
    }
}
