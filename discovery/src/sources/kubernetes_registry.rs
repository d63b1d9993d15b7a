//! Kubernetes as a pushing registry: synced snapshots become store changes,
//! status becomes metrics and the `/debug/registries` view.

use std::sync::Arc;

use pilotfish_registries::RegistrySnapshot;
use pilotfish_registries::kubernetes::{
    ApiServer, KubernetesConfig, KubernetesRegistry, KubernetesStatus,
};
use tokio::sync::{mpsc, watch};

use crate::mesh_store::RegistryScope;
use crate::metrics::Metrics;
use crate::push::Change;

pub const REGISTRY_NAME: &str = "kubernetes";

/// Starts the registry. The returned registry must be kept alive; its
/// status receiver feeds the debug view.
pub fn start(
    api: &ApiServer,
    config: KubernetesConfig,
    changes: mpsc::UnboundedSender<Change>,
    metrics: Arc<Metrics>,
) -> (KubernetesRegistry, watch::Receiver<KubernetesStatus>) {
    let registry = KubernetesRegistry::start(api, config);
    let mut snapshots = registry.snapshots();
    tokio::spawn(async move {
        let mut sent = 0;
        let mut previous: Option<Arc<RegistrySnapshot>> = None;
        loop {
            let current = snapshots.borrow_and_update().clone();
            if current.synced && current.version != sent {
                sent = current.version;
                // EndpointSlice events change endpoints only: said here,
                // from this registry's own previous snapshot.
                let scope = previous
                    .as_ref()
                    .and_then(|p| p.endpoint_changes(&current.snapshot))
                    .map_or(RegistryScope::Everything, RegistryScope::Endpoints);
                previous = Some(current.snapshot.clone());
                let change = Change::Registry {
                    name: REGISTRY_NAME.to_string(),
                    snapshot: current.snapshot,
                    scope,
                };
                if changes.send(change).is_err() {
                    break;
                }
            }
            if snapshots.changed().await.is_err() {
                break;
            }
        }
    });
    let status = registry.status();
    let mut watched = status.clone();
    tokio::spawn(async move {
        loop {
            let current = watched.borrow_and_update().clone();
            metrics.set_registry_status(
                REGISTRY_NAME,
                current.connected,
                current.consecutive_failures,
            );
            if watched.changed().await.is_err() {
                break;
            }
        }
    });
    (registry, status)
}
