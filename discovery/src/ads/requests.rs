//! xDS requests as the server reads them: the same wire format as
//! `DiscoveryRequest` and `DeltaDiscoveryRequest`, with the fields that
//! repeat on every ACK left in the received message. Envoy sends its node
//! (tens of metadata fields) with every request, and a SotW EDS ACK names
//! every cluster again; decoding those into strings for each of thousands
//! of ACKs was most of the server's work per push. The node is decoded once
//! per stream, SotW names are digested and parsed only when the digest
//! differs from the subscription's.

use std::collections::HashMap;

use bytes::{Buf, Bytes};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use prost::encoding::{DecodeContext, WireType, decode_key, skip_field};
use tonic::Status;
use xxhash_rust::xxh3::Xxh3;

/// A request type as read off an ADS stream, from the message's bytes.
pub trait DecodeRequest: Sized {
    fn decode_request(message: Bytes) -> Result<Self, Status>;
}

fn undecodable(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable request: {e}"))
}

/// `envoy.service.discovery.v3.DiscoveryRequest` with the node raw and the
/// resource names only digested: a subscription that did not change (the
/// common ACK) is recognised without parsing its names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SotwRequest {
    pub version_info: String,
    /// The encoded `Node`, decoded by [`decode_node`] once per stream.
    pub node: Option<Bytes>,
    pub names: RequestedNames,
    pub type_url: String,
    pub response_nonce: String,
    pub error_detail: Option<RpcStatus>,
}

/// The fields of a `DiscoveryRequest` besides its names (prost skips the
/// names, field 3, as unknown).
#[derive(Clone, PartialEq, Message)]
struct SotwHead {
    #[prost(string, tag = "1")]
    version_info: String,
    #[prost(bytes = "bytes", optional, tag = "2")]
    node: Option<Bytes>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    response_nonce: String,
    #[prost(message, optional, tag = "6")]
    error_detail: Option<RpcStatus>,
}

/// The names of a `DiscoveryRequest`, as slices of it.
#[derive(Clone, PartialEq, Message)]
struct SotwNames {
    #[prost(bytes = "bytes", repeated, tag = "3")]
    resource_names: Vec<Bytes>,
}

const RESOURCE_NAMES: u32 = 3;

/// A request's `resource_names`: the message they came in and a digest of
/// them in order (XXH3, 128 bits: equal digests are equal lists but for a
/// collision, which could only ever hide a proxy's own subscription change).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestedNames {
    message: Bytes,
    digest: [u8; 16],
}

impl RequestedNames {
    pub fn digest(&self) -> [u8; 16] {
        self.digest
    }

    /// The names, as slices of the message.
    pub fn parse(&self) -> Result<Vec<Bytes>, Status> {
        SotwNames::decode(self.message.clone())
            .map(|n| n.resource_names)
            .map_err(undecodable)
    }

    fn digest_of(message: Bytes) -> Result<Self, Status> {
        // Each entry's encoding (key, length, bytes) delimits itself, so the
        // hash runs over the entries as they lie in the message: usually
        // one contiguous span.
        let mut hasher = Xxh3::new();
        let mut span: Option<std::ops::Range<usize>> = None;
        let mut buf = &message[..];
        while buf.has_remaining() {
            let start = message.len() - buf.remaining();
            let (tag, wire_type) = decode_key(&mut buf).map_err(undecodable)?;
            skip_field(wire_type, tag, &mut buf, DecodeContext::default()).map_err(undecodable)?;
            if tag != RESOURCE_NAMES {
                continue;
            }
            if wire_type != WireType::LengthDelimited {
                return Err(undecodable("resource_names is not a string"));
            }
            let end = message.len() - buf.remaining();
            match &mut span {
                Some(current) if current.end == start => current.end = end,
                _ => {
                    if let Some(done) = span.replace(start..end) {
                        hasher.update(&message[done]);
                    }
                }
            }
        }
        if let Some(done) = span {
            hasher.update(&message[done]);
        }
        Ok(RequestedNames {
            message,
            digest: hasher.digest128().to_le_bytes(),
        })
    }
}

impl DecodeRequest for SotwRequest {
    fn decode_request(message: Bytes) -> Result<Self, Status> {
        let head = SotwHead::decode(message.clone()).map_err(undecodable)?;
        Ok(SotwRequest {
            version_info: head.version_info,
            node: head.node,
            names: RequestedNames::digest_of(message)?,
            type_url: head.type_url,
            response_nonce: head.response_nonce,
            error_detail: head.error_detail,
        })
    }
}

/// Plain messages (`DeltaRequest`) decode as prost does.
impl<T: Message + Default> DecodeRequest for T {
    fn decode_request(message: Bytes) -> Result<Self, Status> {
        T::decode(message).map_err(undecodable)
    }
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
        let read = SotwRequest::decode_request(Bytes::from(sent.encode_to_vec())).expect("decodes");
        assert_eq!(read.version_info, "v1");
        assert_eq!(decode_node(read.node.as_ref()).expect("node"), Some(node()));
        let parsed = read.names.parse().expect("names");
        assert_eq!(names(&parsed).expect("utf-8"), ["a", "b"]);
        assert_eq!(
            (read.type_url.as_str(), read.response_nonce.as_str()),
            ("t", "n")
        );
        assert_eq!(read.error_detail.map(|e| e.message), Some("bad".into()));

        let bare = SotwRequest::decode_request(Bytes::new()).expect("empty decodes");
        assert_eq!(decode_node(bare.node.as_ref()).expect("no node"), None);
        assert!(bare.names.parse().expect("no names").is_empty());
        assert!(names(&[Bytes::from_static(b"\xff")]).is_err());
    }

    #[test]
    fn equal_name_lists_have_equal_digests_whatever_else_differs() {
        let request = |names: &[&str], nonce: &str| {
            let sent = DiscoveryRequest {
                resource_names: names.iter().map(|n| n.to_string()).collect(),
                response_nonce: nonce.into(),
                ..Default::default()
            };
            SotwRequest::decode_request(Bytes::from(sent.encode_to_vec())).expect("decodes")
        };
        let digest = |names: &[&str]| request(names, "n").names.digest();
        assert_eq!(
            request(&["a", "b"], "1").names.digest(),
            request(&["a", "b"], "2").names.digest()
        );
        assert_ne!(digest(&["a", "b"]), digest(&["ab"]), "names are delimited");
        assert_ne!(digest(&["a", "b"]), digest(&["a"]));
        assert_ne!(digest(&[]), digest(&[""]));
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
