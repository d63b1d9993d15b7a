//! Push scheduling: change signals are debounced, the mesh is rebuilt once,
//! and the new generation is published to every stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pilotfish_registries::RegistrySnapshot;
use pilotfish_translate::{MeshState, ProxyView};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::ads::XdsContext;
use crate::mesh_store::{MeshGeneration, MeshStore};

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
    let unchanged = previous.version > 0
        && *generation.mesh == *previous.mesh
        && generation.problems == previous.problems;
    if unchanged {
        tracing::debug!(
            version = previous.version,
            "sources re-read; nothing changed"
        );
        return false;
    }
    generation.version = previous.version + 1;
    generation.endpoints_only =
        previous.version > 0 && only_endpoints_differ(&generation.mesh, &previous.mesh);
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

fn only_endpoints_differ(a: &MeshState, b: &MeshState) -> bool {
    // Credentials too: an endpoints-only rebuild keeps the previous secrets.
    a.services == b.services
        && a.config == b.config
        && a.mesh == b.mesh
        && a.credentials == b.credentials
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
    /// Some watched file changed; files are re-read on rebuild.
    Files,
    /// A pushing registry has a new snapshot.
    Registry {
        name: String,
        snapshot: RegistrySnapshot,
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
    ready: Arc<AtomicBool>,
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
        if store.all_synced() && !ready.swap(true, Ordering::AcqRel) {
            tracing::info!("every registry and config source synced; ready");
        }
    }
}

fn apply(store: &mut MeshStore, change: Change) {
    match change {
        Change::Files => {}
        Change::Registry { name, snapshot } => store.set_dynamic_registry(&name, snapshot),
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
