//! Per-proxy, per-type sync status (what was sent, what was ACKed, the last
//! NACK), for `/debug/syncz` and istioctl-like proxy status.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use serde::Serialize;

use crate::ads::interned::NameSet;
use crate::ads::rejection::Rejection;
use crate::node::ProxyIdentity;
use crate::snapshot::TypeResources;
use crate::xds_types::{XdsProtocol, XdsType};

#[derive(Clone, Debug, Default, Serialize)]
pub struct TypeStatus {
    pub sent_version: Option<String>,
    pub sent_nonce: Option<String>,
    pub acked_version: Option<String>,
    pub last_nack: Option<String>,
    /// The last rejection, while the proxy has not accepted those resources
    /// since: what fed them and what it is down to.
    pub rejected: Option<Rejection>,
    pub pushes: u64,
    pub nacks: u64,
    /// The proxy's answer to the last response it answered was a NACK.
    pub last_response_rejected: bool,
    /// When the last response of this type was sent (Unix milliseconds).
    pub last_push_unix_ms: Option<u64>,
    pub resource_names: ResourceNames,
}

/// Milliseconds since the Unix epoch, for status timestamps.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The resources of a type a proxy holds, kept as the shared data they come
/// from (the snapshot's resources and the stream's interned subscription),
/// not as a copy of every name per stream and push.
#[derive(Clone, Debug, Default)]
pub enum ResourceNames {
    #[default]
    Unknown,
    /// What `names` selects of `resources` (all of them for `None`).
    Selected {
        resources: Arc<TypeResources>,
        names: Option<NameSet>,
    },
    /// An explicit list.
    Listed(Vec<String>),
}

impl ResourceNames {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            ResourceNames::Unknown => Vec::new(),
            ResourceNames::Selected { resources, names } => resources
                .select(names.as_deref())
                .into_iter()
                .map(|(name, _)| name.clone())
                .collect(),
            ResourceNames::Listed(names) => names.clone(),
        }
    }
}

impl Serialize for ResourceNames {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_vec().serialize(serializer)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ProxyStatus {
    pub connection_id: u64,
    pub identity: ProxyIdentity,
    pub protocol: XdsProtocol,
    /// The SPIFFE id the proxy proved (client certificate or token), if any.
    pub verified_identity: Option<String>,
    /// Connected over TLS.
    pub secure: bool,
    pub connected_at_unix: u64,
    pub mesh_version: u64,
    pub types: BTreeMap<XdsType, TypeStatus>,
}

#[derive(Default)]
pub struct SyncStatus {
    proxies: DashMap<u64, Arc<Mutex<ProxyStatus>>>,
}

impl SyncStatus {
    pub fn register(&self, status: ProxyStatus) -> Arc<Mutex<ProxyStatus>> {
        let id = status.connection_id;
        let entry = Arc::new(Mutex::new(status));
        self.proxies.insert(id, entry.clone());
        entry
    }

    pub fn remove(&self, connection_id: u64) {
        self.proxies.remove(&connection_id);
    }

    pub fn len(&self) -> usize {
        self.proxies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.proxies.is_empty()
    }

    /// All proxies, sorted by node id.
    pub fn list(&self) -> Vec<ProxyStatus> {
        let mut all: Vec<ProxyStatus> = self
            .proxies
            .iter()
            .map(|e| e.value().lock().unwrap_or_else(|p| p.into_inner()).clone())
            .collect();
        all.sort_by(|a, b| {
            a.identity
                .node_id
                .cmp(&b.identity.node_id)
                .then(a.connection_id.cmp(&b.connection_id))
        });
        all
    }

    /// Every rejection a connected proxy has not got past: node id, type
    /// and rejection, by node id. Copies only those.
    pub fn rejections(&self) -> Vec<(String, XdsType, Rejection)> {
        let mut out = Vec::new();
        for entry in self.proxies.iter() {
            let status = entry.value().lock().unwrap_or_else(|p| p.into_inner());
            for (ty, type_status) in &status.types {
                if let Some(rejection) = &type_status.rejected {
                    out.push((status.identity.node_id.clone(), *ty, rejection.clone()));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    pub fn find(&self, node_id: &str) -> Option<ProxyStatus> {
        self.list()
            .into_iter()
            .find(|p| p.identity.node_id == node_id)
    }
}
