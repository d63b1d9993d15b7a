//! Push scheduling: change signals are debounced, the mesh is rebuilt once,
//! and the new generation is published to every stream.

use std::sync::Arc;
use std::time::Duration;

use pilotfish_registries::RegistrySnapshot;
use std::collections::BTreeSet;

use pilotfish_crds::{ConfigObject, ConfigSpec, Resolution, ServiceEntrySpec};
use pilotfish_registries::changed_keys;
use pilotfish_translate::{MeshState, ProxyView};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::ads::XdsContext;
use crate::mesh_store::{MeshGeneration, MeshStore, RegistryScope};
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
