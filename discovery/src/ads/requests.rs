//! xDS requests as the server reads them: the same wire format as
//! `DiscoveryRequest` and `DeltaDiscoveryRequest`, with the fields that
//! repeat on every ACK left as slices of the received message. Envoy sends
//! its node (tens of metadata fields) with every request, and a SotW EDS
//! ACK names every cluster again; decoding those into strings for each of
//! thousands of ACKs was most of the server's work per push. The node is
//! decoded once per stream, names only when the subscription changed.

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use std::collections::HashMap;
use tonic::Status;

/// `envoy.service.discovery.v3.DiscoveryRequest`, names and node raw.
#[derive(Clone, PartialEq, Message)]
pub struct SotwRequest {
    #[prost(string, tag = "1")]
    pub version_info: String,
    /// The encoded `Node`, decoded by [`decode_node`] once per stream.
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub node: Option<Bytes>,
    /// UTF-8 checked only when the names are taken ([`names`]).
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub resource_names: Vec<Bytes>,
    #[prost(string, tag = "4")]
    pub type_url: String,
    #[prost(string, tag = "5")]
    pub response_nonce: String,
    #[prost(message, optional, tag = "6")]
    pub error_detail: Option<RpcStatus>,
}

/// `envoy.service.discovery.v3.DeltaDiscoveryRequest`, node raw.
#[derive(Clone, PartialEq, Message)]
pub struct DeltaRequest {
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub node: Option<Bytes>,
    #[prost(string, tag = "2")]
    pub type_url: String,
    #[prost(string, repeated, tag = "3")]
    pub resource_names_subscribe: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub resource_names_unsubscribe: Vec<String>,
    #[prost(map = "string, string", tag = "5")]
    pub initial_resource_versions: HashMap<String, String>,
    #[prost(string, tag = "6")]
    pub response_nonce: String,
    #[prost(message, optional, tag = "7")]
    pub error_detail: Option<RpcStatus>,
}

/// Decodes an encoded node.
pub fn decode_node(node: Option<&Bytes>) -> Result<Option<Node>, Status> {
    node.map(|raw| Node::decode(raw.clone()))
        .transpose()
        .map_err(|e| Status::invalid_argument(format!("undecodable node: {e}")))
}

/// Requested names as text.
pub fn names(raw: &[Bytes]) -> Result<Vec<String>, Status> {
    raw.iter()
        .map(|name| {
            std::str::from_utf8(name)
                .map(str::to_string)
                .map_err(|_| Status::invalid_argument("a resource name is not UTF-8"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};

    fn node() -> Node {
        Node {
            id: "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local".into(),
            ..Default::default()
        }
    }

    #[test]
    fn sotw_request_reads_what_envoy_sends() {
        let sent = DiscoveryRequest {
            version_info: "v1".into(),
            node: Some(node()),
            resource_names: vec!["a".into(), "b".into()],
            type_url: "t".into(),
            response_nonce: "n".into(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "bad".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let read = SotwRequest::decode(Bytes::from(sent.encode_to_vec())).expect("decodes");
        assert_eq!(read.version_info, "v1");
        assert_eq!(decode_node(read.node.as_ref()).expect("node"), Some(node()));
        assert_eq!(names(&read.resource_names).expect("utf-8"), ["a", "b"]);
        assert_eq!(
            (read.type_url.as_str(), read.response_nonce.as_str()),
            ("t", "n")
        );
        assert_eq!(read.error_detail.map(|e| e.message), Some("bad".into()));

        let bare = SotwRequest::decode(Bytes::new()).expect("empty decodes");
        assert_eq!(decode_node(bare.node.as_ref()).expect("no node"), None);
        assert!(names(&[Bytes::from_static(b"\xff")]).is_err());
    }

    #[test]
    fn delta_request_reads_what_envoy_sends() {
        let sent = DeltaDiscoveryRequest {
            node: Some(node()),
            type_url: "t".into(),
            resource_names_subscribe: vec!["a".into()],
            resource_names_unsubscribe: vec!["b".into()],
            initial_resource_versions: [("a".to_string(), "1".to_string())].into(),
            response_nonce: "n".into(),
            ..Default::default()
        };
        let read = DeltaRequest::decode(Bytes::from(sent.encode_to_vec())).expect("decodes");
        assert_eq!(decode_node(read.node.as_ref()).expect("node"), Some(node()));
        assert_eq!(read.resource_names_subscribe, ["a"]);
        assert_eq!(read.resource_names_unsubscribe, ["b"]);
        assert_eq!(read.initial_resource_versions["a"], "1");
        assert_eq!(read.response_nonce, "n");
    }
}
