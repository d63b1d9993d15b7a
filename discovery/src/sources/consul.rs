//! Consul as a pushing registry: snapshots become store changes, status
//! becomes metrics and the `/debug/registries` view.

use std::sync::Arc;

use pilotfish_registries::consul::{ConsulConfig, ConsulRegistry, ConsulStatus};
use tokio::sync::{mpsc, watch};

use crate::mesh_store::RegistryScope;
use crate::metrics::Metrics;
use crate::push::Change;

pub const REGISTRY_NAME: &str = "consul";

/// Starts watching Consul. The returned registry must be kept alive; its
/// status receiver feeds the debug view.
pub fn start(
    config: ConsulConfig,
    changes: mpsc::UnboundedSender<Change>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(ConsulRegistry, watch::Receiver<ConsulStatus>)> {
    let registry = ConsulRegistry::start(config)?;
    let mut updates = registry.updates();
    tokio::spawn(async move {
        while let Some(update) = updates.next().await {
            // Consul tells endpoint-only changes apart (health, instances).
            let scope = if update.endpoints_only() {
                RegistryScope::Endpoints(update.changed_hosts)
            } else {
                RegistryScope::Everything
            };
            let change = Change::Registry {
                name: REGISTRY_NAME.to_string(),
                snapshot: update.snapshot,
                scope,
            };
            if changes.send(change).is_err() {
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
    Ok((registry, status))
}
