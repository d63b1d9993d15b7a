//! The Kubernetes registry: Services, EndpointSlices and Pods (labels, by
//! metadata only) from an API server, kept current by reflectors.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pilotfish_registries::kubernetes::KubernetesError> {
//! use pilotfish_registries::kubernetes::{ApiServer, KubernetesConfig, KubernetesRegistry};
//! let api = ApiServer::connect(None).await?;
//! let registry = KubernetesRegistry::start(&api, KubernetesConfig::default());
//! let mut snapshots = registry.snapshots();
//! loop {
//!     let current = snapshots.borrow_and_update().clone();
//!     if current.synced {
//!         let _ = &current.snapshot; // the whole Kubernetes view
//!     }
//!     if snapshots.changed().await.is_err() {
//!         break;
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! How objects map onto the model is described in [`convert`]. Nothing is
//! published until every store (Services, EndpointSlices, Pods, and Nodes
//! when read) has been listed once; from then on every change rebuilds the
//! snapshot (changes arriving together are coalesced), and a new one is
//! published only when it differs. While the API server is unreachable the
//! last snapshot stays; watches resume (or relist) when it is back.
//!
//! RBAC: `list` and `watch` on services, pods (core) and endpointslices
//! (discovery.k8s.io), in the watched namespaces; on nodes when
//! [`KubernetesConfig::read_nodes`].

pub mod client;
pub mod convert;
pub mod status;
pub mod watch;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::core::PartialObjectMeta;
use tokio::sync::{Notify, watch as channel};

pub use client::{ApiServer, KubernetesError};
/// The kube-rs version this crate is built with, for callers that watch
/// other kinds (the Istio config source).
pub use kube;
pub use status::{KubernetesStatus, StatusTracker};

use crate::model::RegistrySnapshot;
use watch::{AbortOnDrop, Reflector, describe, reflect, scoped_api, strip_metadata};

#[derive(Clone, Debug)]
pub struct KubernetesConfig {
    /// Namespaces to watch; empty means all.
    pub namespaces: BTreeSet<String>,
    /// Hostnames are `<service>.<namespace>.svc.<domain_suffix>`.
    pub domain_suffix: String,
    /// Read Nodes (metadata) for the region part of endpoint localities.
    /// Needs cluster-wide `list`/`watch` on nodes.
    pub read_nodes: bool,
    /// Quiet time after a change before the snapshot is rebuilt, so that a
    /// burst of events (a rollout) costs one rebuild.
    pub coalesce: Duration,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        KubernetesConfig {
            namespaces: BTreeSet::new(),
            domain_suffix: "cluster.local".into(),
            read_nodes: false,
            coalesce: Duration::from_millis(20),
        }
    }
}

/// What the registry publishes.
#[derive(Clone, Debug, Default)]
pub struct KubernetesSnapshot {
    pub snapshot: Arc<RegistrySnapshot>,
    /// False until every store was listed once; the snapshot is empty then.
    pub synced: bool,
    /// Bumped on every published change.
    pub version: u64,
}

/// A running Kubernetes registry. Dropping it stops every watch.
pub struct KubernetesRegistry {
    snapshots: channel::Receiver<KubernetesSnapshot>,
    status: channel::Receiver<KubernetesStatus>,
    _tasks: Vec<AbortOnDrop>,
}

/// Every store the snapshot is built from.
struct Stores {
    services: Vec<Reflector<Service>>,
    slices: Vec<Reflector<EndpointSlice>>,
    pods: Vec<Reflector<PartialObjectMeta<Pod>>>,
    nodes: Option<Reflector<PartialObjectMeta<Node>>>,
}

impl Stores {
    /// Waits for every first list; false if a reflector is gone.
    async fn ready(&self) -> bool {
        let mut ok = true;
        for r in &self.services {
            ok &= r.ready().await;
        }
        for r in &self.slices {
            ok &= r.ready().await;
        }
        for r in &self.pods {
            ok &= r.ready().await;
        }
        if let Some(r) = &self.nodes {
            ok &= r.ready().await;
        }
        ok
    }

    fn build(&self, domain_suffix: &str) -> convert::Converted {
        let services: Vec<_> = self.services.iter().flat_map(|r| r.store.state()).collect();
        let slices: Vec<_> = self.slices.iter().flat_map(|r| r.store.state()).collect();
        let pods: Vec<_> = self.pods.iter().flat_map(|r| r.store.state()).collect();
        let nodes: Vec<_> = self.nodes.iter().flat_map(|r| r.store.state()).collect();
        let workloads = convert::Workloads::new(
            pods.iter().map(|p| &p.metadata),
            nodes.iter().map(|n| &n.metadata),
        );
        convert::build_snapshot(
            services.iter().map(|s| s.as_ref()),
            slices.iter().map(|s| s.as_ref()),
            &workloads,
            domain_suffix,
        )
    }
}

impl KubernetesRegistry {
    /// Starts watching in the background; must be called inside a Tokio
    /// runtime. An unreachable API server is retried, and shows in
    /// [`KubernetesRegistry::status`].
    pub fn start(api: &ApiServer, config: KubernetesConfig) -> KubernetesRegistry {
        let (tracker, status) = StatusTracker::new("kubernetes", &api.url);
        let changed = Arc::new(Notify::new());
        let client = &api.client;
        let scopes: Vec<Option<&str>> = if config.namespaces.is_empty() {
            vec![None]
        } else {
            config.namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let mut stores = Stores {
            services: Vec::new(),
            slices: Vec::new(),
            pods: Vec::new(),
            nodes: None,
        };
        for ns in &scopes {
            stores.services.push(reflect(
                scoped_api::<Service>(client, *ns),
                (),
                describe("Service", *ns),
                |s| {
                    strip_metadata(&mut s.metadata);
                    s.status = None;
                },
                tracker.clone(),
                changed.clone(),
            ));
            stores.slices.push(reflect(
                scoped_api::<EndpointSlice>(client, *ns),
                (),
                describe("EndpointSlice", *ns),
                |s| strip_metadata(&mut s.metadata),
                tracker.clone(),
                changed.clone(),
            ));
            stores.pods.push(reflect(
                scoped_api::<PartialObjectMeta<Pod>>(client, *ns),
                (),
                describe("Pod metadata", *ns),
                |p| {
                    p.metadata.managed_fields = None;
                    p.metadata.annotations = None;
                },
                tracker.clone(),
                changed.clone(),
            ));
        }
        if config.read_nodes {
            stores.nodes = Some(reflect(
                Api::<PartialObjectMeta<Node>>::all(client.clone()),
                (),
                "Node metadata".to_string(),
                |n| {
                    n.metadata.managed_fields = None;
                    n.metadata.annotations = None;
                },
                tracker.clone(),
                changed.clone(),
            ));
        }

        let (snapshot_tx, snapshots) = channel::channel(KubernetesSnapshot::default());
        let builder = tokio::spawn(run_builder(
            stores,
            config,
            changed,
            snapshot_tx,
            tracker.clone(),
        ));
        let probe = watch::probe_while_disconnected(client.clone(), tracker);
        KubernetesRegistry {
            snapshots,
            status,
            _tasks: vec![AbortOnDrop(builder), probe],
        }
    }

    /// Snapshots; `synced` is false until the first full list.
    pub fn snapshots(&self) -> channel::Receiver<KubernetesSnapshot> {
        self.snapshots.clone()
    }

    pub fn current(&self) -> KubernetesSnapshot {
        self.snapshots.borrow().clone()
    }

    /// Connection status; woken on state changes.
    pub fn status(&self) -> channel::Receiver<KubernetesStatus> {
        self.status.clone()
    }
}

/// Builds a snapshot after the first full list and after every change.
/// Owns the stores, so the reflector tasks live as long as it does.
async fn run_builder(
    stores: Stores,
    config: KubernetesConfig,
    changed: Arc<Notify>,
    tx: channel::Sender<KubernetesSnapshot>,
    tracker: StatusTracker,
) {
    if !stores.ready().await {
        return;
    }
    let mut version = 0;
    loop {
        let converted = stores.build(&config.domain_suffix);
        let services = converted.snapshot.services.len();
        let differs = version == 0 || *tx.borrow().snapshot != converted.snapshot;
        if differs {
            version += 1;
            tx.send_replace(KubernetesSnapshot {
                snapshot: Arc::new(converted.snapshot),
                synced: true,
                version,
            });
        }
        tracker.published(true, services, converted.warnings);
        changed.notified().await;
        tokio::time::sleep(config.coalesce).await;
    }
}
