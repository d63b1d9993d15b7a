//! A snapshot: every resource of one proxy view, encoded once to `Any` and
//! shared (via `Arc`) by every stream that serves that view.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use pilotfish_translate::XdsResources;
use sha2::{Digest, Sha256};

use crate::xds_types::XdsType;

/// Resources of one type, by name.
#[derive(Debug, Default)]
pub struct TypeResources {
    pub resources: BTreeMap<String, Arc<Any>>,
}

impl TypeResources {
    fn from_iter<T: prost::Name + prost::Message>(items: Vec<T>, name: impl Fn(&T) -> String) -> Self {
        let resources = items
            .into_iter()
            .map(|item| (name(&item), Arc::new(pack_any(item))))
            .collect();
        TypeResources { resources }
    }

    /// The resources a subscription selects: all of them for a wildcard
    /// subscription, otherwise the named ones that exist.
    pub fn select(&self, names: Option<&BTreeSet<String>>) -> Vec<(&String, &Arc<Any>)> {
        match names {
            None => self.resources.iter().collect(),
            Some(names) => names.iter().filter_map(|n| self.resources.get_key_value(n)).collect(),
        }
    }
}

/// Content version of a set of resources: equal content, equal version, so a
/// rebuild that changes nothing sends nothing.
pub fn content_version(selected: &[(&String, &Arc<Any>)]) -> String {
    let mut hasher = Sha256::new();
    for (name, any) in selected {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((any.value.len() as u64).to_le_bytes());
        hasher.update(&any.value);
    }
    hex::encode(&hasher.finalize()[..8])
}

#[derive(Debug, Default)]
pub struct Snapshot {
    /// The mesh generation this snapshot was built from.
    pub mesh_version: u64,
    pub clusters: TypeResources,
    pub endpoints: TypeResources,
    pub listeners: TypeResources,
    pub routes: TypeResources,
}

impl Snapshot {
    pub fn build(mesh_version: u64, resources: XdsResources) -> Snapshot {
        Snapshot {
            mesh_version,
            clusters: TypeResources::from_iter(resources.clusters, |c| c.name.clone()),
            endpoints: TypeResources::from_iter(resources.endpoints, |e| e.cluster_name.clone()),
            listeners: TypeResources::from_iter(resources.listeners, |l| l.name.clone()),
            routes: TypeResources::from_iter(resources.routes, |r| r.name.clone()),
        }
    }

    pub fn of(&self, ty: XdsType) -> &TypeResources {
        match ty {
            XdsType::Cluster => &self.clusters,
            XdsType::Endpoint => &self.endpoints,
            XdsType::Listener => &self.listeners,
            XdsType::Route => &self.routes,
        }
    }
}
