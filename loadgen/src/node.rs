//! The Envoy `Node` each simulated sidecar sends, in Istio's form, so the
//! server groups proxies into views as it would real ones: proxy `i` is in
//! namespace `loadgen-<i mod views>`.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

fn string(value: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(value.to_string())),
    }
}

/// The namespace of proxy `index` when proxies are spread over `views` views.
pub fn namespace(index: usize, views: usize) -> String {
    format!("loadgen-{}", index % views.max(1))
}

/// The node of proxy `index`. Its IP (172.16/12) is outside the mesh's
/// endpoint range, so no proxy gets inbound listeners of a mesh service.
pub fn sidecar_node(index: usize, views: usize) -> Node {
    let namespace = namespace(index, views);
    let n = index + 1;
    let ip = format!(
        "172.{}.{}.{}",
        16 + ((n >> 16) & 0x0f),
        (n >> 8) & 0xff,
        n & 0xff
    );
    let pod = format!("loadgen-{index}");
    let mut labels = Struct::default();
    labels.fields.insert("app".into(), string("loadgen"));
    let mut metadata = Struct::default();
    metadata
        .fields
        .insert("NAMESPACE".into(), string(&namespace));
    metadata.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    Node {
        id: format!("sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"),
        cluster: format!("loadgen.{namespace}"),
        metadata: Some(metadata),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_istio_sidecars_spread_over_views() {
        let node = sidecar_node(0, 3);
        assert_eq!(
            node.id,
            "sidecar~172.16.0.1~loadgen-0.loadgen-0~loadgen-0.svc.cluster.local"
        );
        assert_eq!(namespace(4, 3), "loadgen-1");
        assert_eq!(namespace(4, 1), "loadgen-0");
        assert_ne!(sidecar_node(1, 1).id, sidecar_node(2, 1).id);
    }
}
