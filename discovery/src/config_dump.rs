//! A readable dump of what Pilotfish serves a proxy. envoy-types has no
//! protobuf JSON mapping, so each resource is shown by name, size and its
//! decoded structure in Rust debug notation; Envoy's own `/config_dump` on
//! the proxy remains the authoritative JSON view.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use serde_json::{Value, json};

use crate::snapshot::{Snapshot, content_version};
use crate::xds_types::XdsType;

pub fn config_dump(snapshot: &Snapshot) -> Value {
    let mut types = serde_json::Map::new();
    for ty in XdsType::ALL {
        let selected = snapshot.of(ty).select(None);
        let resources: Vec<Value> = selected
            .iter()
            .map(|(name, any)| json!({"name": name, "bytes": any.value.len(), "resource": describe(ty, any)}))
            .collect();
        types.insert(
            ty.short().to_string(),
            json!({"type_url": ty.type_url(), "version": content_version(&selected), "resources": resources}),
        );
    }
    json!({"mesh_version": snapshot.mesh_version, "types": types})
}

fn describe(ty: XdsType, any: &Any) -> String {
    let bytes = any.value.as_slice();
    let decoded = match ty {
        XdsType::Cluster => Cluster::decode(bytes).map(|m| format!("{m:#?}")),
        XdsType::Endpoint => ClusterLoadAssignment::decode(bytes).map(|m| format!("{m:#?}")),
        XdsType::Listener => Listener::decode(bytes).map(|m| format!("{m:#?}")),
        XdsType::Route => RouteConfiguration::decode(bytes).map(|m| format!("{m:#?}")),
    };
    decoded.unwrap_or_else(|e| format!("<undecodable: {e}>"))
}
