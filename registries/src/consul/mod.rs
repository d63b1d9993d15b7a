//! The Consul registry: services and instances from a Consul agent's HTTP
//! API, kept current with blocking queries.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pilotfish_registries::consul::ConsulError> {
//! use pilotfish_registries::consul::{ConsulConfig, ConsulRegistry};
//! let registry = ConsulRegistry::start(ConsulConfig::new("http://127.0.0.1:8500"))?;
//! let mut updates = registry.updates();
//! while let Some(update) = updates.next().await {
//!     if update.services_changed {
//!         // services appeared, went away or changed port/protocol: full push
//!     } else {
//!         // only endpoints of `update.changed_hosts` changed: EDS push
//!     }
//!     let _ = &update.snapshot; // the whole Consul view, as a RegistrySnapshot
//! }
//! # Ok(()) }
//! ```
//!
//! How Consul maps onto the model is described in [`convert`] and [`tags`].
//! Each service is watched by its own blocking query, so a Consul agent must
//! allow one HTTP connection per service plus one
//! (`limits.http_max_conns_per_client`, 200 by default).

pub mod api;
pub mod backoff;
pub mod config;
pub mod convert;
pub mod error;
pub mod index;
pub mod status;
pub mod tags;
mod watcher;

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;

pub use backoff::BackoffConfig;
pub use config::ConsulConfig;
pub use error::ConsulError;
pub use status::ConsulStatus;

use crate::model::RegistrySnapshot;
use api::{ClientSettings, ConsulClient};
use status::StatusTracker;
use watcher::AbortOnDrop;

/// What the registry publishes. The versions only grow; comparing them with
/// the ones seen before tells whether services (not only endpoints) changed,
/// however many updates a slow reader skipped.
#[derive(Clone, Debug, Default)]
pub struct ConsulSnapshot {
    pub snapshot: Arc<RegistrySnapshot>,
    /// False until every service was read once; the snapshot is empty then.
    pub synced: bool,
    /// Bumped when the services (hostnames, ports, protocols) change.
    pub services_version: u64,
    /// Bumped when any endpoint changes.
    pub endpoints_version: u64,
}

/// A running Consul registry. Dropping it stops every watch.
pub struct ConsulRegistry {
    snapshots: watch::Receiver<ConsulSnapshot>,
    status: watch::Receiver<ConsulStatus>,
    _task: AbortOnDrop,
}

impl ConsulRegistry {
    /// Starts watching Consul in the background; must be called inside a
    /// Tokio runtime. Fails only on bad settings: an unreachable Consul is
    /// retried, and shows in [`ConsulRegistry::status`].
    pub fn start(config: ConsulConfig) -> Result<ConsulRegistry, ConsulError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| ConsulError::Client(format!("not inside a Tokio runtime: {e}")))?;
        let client = ConsulClient::new(&ClientSettings {
            address: config.address.clone(),
            token: config.token.clone(),
            datacenter: config.datacenter.clone(),
            connect_timeout: config.connect_timeout,
        })?;
        let (snapshot_tx, snapshots) = watch::channel(ConsulSnapshot::default());
        let (status_tx, status) = watch::channel(ConsulStatus::default());
        let tracker = StatusTracker::new(status_tx, client.base_url().to_string());
        let task = runtime.spawn(watcher::run(client, Arc::new(config), snapshot_tx, tracker));
        Ok(ConsulRegistry {
            snapshots,
            status,
            _task: AbortOnDrop(task),
        })
    }

    /// The raw snapshot channel.
    pub fn snapshots(&self) -> watch::Receiver<ConsulSnapshot> {
        self.snapshots.clone()
    }

    /// The latest snapshot (possibly not yet synced).
    pub fn current(&self) -> ConsulSnapshot {
        self.snapshots.borrow().clone()
    }

    /// Synced snapshots with what changed since the previous one this
    /// reader saw. Each call gives an independent reader starting from
    /// nothing, so its first update is the whole current state.
    pub fn updates(&self) -> ConsulUpdates {
        ConsulUpdates {
            rx: self.snapshots.clone(),
            last: None,
        }
    }

    /// Connection status; woken on state changes (connected, synced, new
    /// error, service count), not on every answer.
    pub fn status(&self) -> watch::Receiver<ConsulStatus> {
        self.status.clone()
    }
}

/// One change as seen by one [`ConsulUpdates`] reader.
#[derive(Clone, Debug)]
pub struct ConsulUpdate {
    pub snapshot: Arc<RegistrySnapshot>,
    /// Services were added, removed or changed (or this is the reader's
    /// first update). False: only endpoints changed, an EDS push suffices.
    pub services_changed: bool,
    /// Hostnames whose service or endpoints differ from the previous update.
    pub changed_hosts: BTreeSet<String>,
}

impl ConsulUpdate {
    pub fn endpoints_only(&self) -> bool {
        !self.services_changed
    }
}

/// Reader of synced snapshots; see [`ConsulRegistry::updates`].
pub struct ConsulUpdates {
    rx: watch::Receiver<ConsulSnapshot>,
    last: Option<ConsulSnapshot>,
}

impl ConsulUpdates {
    /// Waits for the next synced snapshot that differs from the last one
    /// returned; `None` once the registry is dropped.
    pub async fn next(&mut self) -> Option<ConsulUpdate> {
        loop {
            // The versions tell what this reader has already seen, so looking
            // at the same value twice is harmless.
            let current = self.rx.borrow_and_update().clone();
            if let Some(update) = self.diff(current) {
                return Some(update);
            }
            self.rx.changed().await.ok()?;
        }
    }

    fn diff(&mut self, current: ConsulSnapshot) -> Option<ConsulUpdate> {
        if !current.synced {
            return None;
        }
        let update = match &self.last {
            Some(last)
                if last.services_version == current.services_version
                    && last.endpoints_version == current.endpoints_version =>
            {
                return None;
            }
            Some(last) => ConsulUpdate {
                snapshot: current.snapshot.clone(),
                services_changed: last.services_version != current.services_version,
                changed_hosts: changed_hosts(&last.snapshot, &current.snapshot),
            },
            None => ConsulUpdate {
                snapshot: current.snapshot.clone(),
                services_changed: true,
                changed_hosts: current
                    .snapshot
                    .services
                    .iter()
                    .map(|s| s.hostname.clone())
                    .collect(),
            },
        };
        self.last = Some(current);
        Some(update)
    }
}

fn changed_hosts(old: &RegistrySnapshot, new: &RegistrySnapshot) -> BTreeSet<String> {
    let hosts: BTreeSet<&String> = old
        .services
        .iter()
        .chain(&new.services)
        .map(|s| &s.hostname)
        .chain(old.endpoints.keys())
        .chain(new.endpoints.keys())
        .collect();
    hosts
        .into_iter()
        .filter(|h| {
            let find =
                |snap: &RegistrySnapshot| snap.services.iter().find(|s| &s.hostname == *h).cloned();
            find(old) != find(new) || old.endpoints.get(*h) != new.endpoints.get(*h)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Endpoint, Health, Protocol, RegistryKind, Resolution, Service, ServicePort,
    };

    fn service(host: &str, port: u16) -> Service {
        Service {
            hostname: host.into(),
            namespace: "default".into(),
            vips: Vec::new(),
            ports: vec![ServicePort {
                name: "http".into(),
                port,
                protocol: Protocol::Http,
            }],
            registry: RegistryKind::Consul,
            created: None,
            resolution: Resolution::Static,
            mesh_external: false,
            export_to: Vec::new(),
        }
    }

    fn endpoint(address: &str) -> Endpoint {
        Endpoint {
            address: address.into(),
            port: 9080,
            service_port: 9080,
            labels: Default::default(),
            locality: None,
            health: Health::Healthy,
            weight: None,
        }
    }

    fn snap(services: Vec<Service>, eps: &[(&str, &[&str])], sv: u64, ev: u64) -> ConsulSnapshot {
        let mut snapshot = RegistrySnapshot {
            services,
            ..Default::default()
        };
        for (host, addrs) in eps {
            snapshot.endpoints.insert(
                host.to_string(),
                addrs.iter().map(|a| endpoint(a)).collect(),
            );
        }
        ConsulSnapshot {
            snapshot: Arc::new(snapshot),
            synced: true,
            services_version: sv,
            endpoints_version: ev,
        }
    }

    fn reader() -> ConsulUpdates {
        let (_tx, rx) = watch::channel(ConsulSnapshot::default());
        ConsulUpdates { rx, last: None }
    }

    #[test]
    fn unsynced_snapshots_are_not_updates() {
        let mut r = reader();
        assert!(r.diff(ConsulSnapshot::default()).is_none());
    }

    #[test]
    fn first_update_is_full_then_endpoint_changes_are_flagged() {
        let mut r = reader();
        let a = "a.service.consul";
        let b = "b.service.consul";
        let first = r
            .diff(snap(
                vec![service(a, 80), service(b, 80)],
                &[(a, &["127.0.0.1"]), (b, &[])],
                1,
                1,
            ))
            .expect("first");
        assert!(first.services_changed);
        assert_eq!(first.changed_hosts.len(), 2);

        let eds = r
            .diff(snap(
                vec![service(a, 80), service(b, 80)],
                &[(a, &["127.0.0.1", "127.0.0.2"]), (b, &[])],
                1,
                2,
            ))
            .expect("endpoints");
        assert!(eds.endpoints_only());
        assert_eq!(eds.changed_hosts, BTreeSet::from([a.to_string()]));

        // Same versions: nothing new.
        assert!(r.diff(snap(vec![], &[], 1, 2)).is_none());
    }

    #[test]
    fn skipped_service_change_is_not_hidden_by_a_later_endpoint_change() {
        let mut r = reader();
        let a = "a.service.consul";
        r.diff(snap(vec![service(a, 80)], &[(a, &[])], 1, 1));
        // The reader missed version (2, 2), a port change, and sees (2, 3).
        let update = r
            .diff(snap(vec![service(a, 81)], &[(a, &["127.0.0.1"])], 2, 3))
            .expect("update");
        assert!(update.services_changed);
        assert_eq!(update.changed_hosts, BTreeSet::from([a.to_string()]));
    }
}
