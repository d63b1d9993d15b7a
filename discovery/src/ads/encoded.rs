//! Responses assembled from bytes encoded once. A snapshot encodes each
//! resource's response entry once (for state of the world and for delta);
//! every stream that sends the resource sends those same bytes, adding only
//! a small header of its own (version, type URL, nonce). A queued response
//! therefore holds reference counts, not a copy of the resources per stream.
//!
//! Protobuf allows a message's fields in any order and repeated fields in
//! separate runs, so a header encoded alone followed by entries encoded
//! alone is one valid `DiscoveryResponse` (or `DeltaDiscoveryResponse`).

use bytes::{Buf, BufMut, Bytes};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryResponse, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

/// A response as pre-encoded parts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedResponse {
    parts: Vec<Bytes>,
}

impl EncodedResponse {
    /// A state-of-the-world response carrying `entries` (see [`sotw_entry`]).
    pub fn sotw(
        version_info: String,
        type_url: String,
        nonce: String,
        entries: impl IntoIterator<Item = Bytes>,
    ) -> Self {
        let header = DiscoveryResponse {
            version_info,
            type_url,
            nonce,
            ..Default::default()
        };
        Self::assemble(header.encode_to_vec(), entries)
    }

    /// A delta response carrying `entries` (see [`delta_entry`]) and the
    /// names removed.
    pub fn delta(
        system_version_info: String,
        type_url: String,
        nonce: String,
        removed_resources: Vec<String>,
        entries: impl IntoIterator<Item = Bytes>,
    ) -> Self {
        let header = DeltaDiscoveryResponse {
            system_version_info,
            type_url,
            nonce,
            removed_resources,
            ..Default::default()
        };
        Self::assemble(header.encode_to_vec(), entries)
    }

    fn assemble(header: Vec<u8>, entries: impl IntoIterator<Item = Bytes>) -> Self {
        let mut parts = vec![Bytes::from(header)];
        parts.extend(entries);
        EncodedResponse { parts }
    }
}

/// A resource's entry in a state-of-the-world response (field
/// `resources`).
pub fn sotw_entry(any: &Any) -> Bytes {
    DiscoveryResponse {
        resources: vec![any.clone()],
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

/// A resource's entry in a delta response (a `Resource` with its name and
/// version, field `resources`).
pub fn delta_entry(name: &str, version: &str, any: &Any) -> Bytes {
    DeltaDiscoveryResponse {
        resources: vec![Resource {
            name: name.to_string(),
            version: version.to_string(),
            resource: Some(any.clone()),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

/// Encoding writes the parts as they are; the server never decodes one.
impl Message for EncodedResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for part in &self.parts {
            buf.put_slice(part);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    fn clear(&mut self) {
        self.parts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: &[u8]) -> Any {
        Any {
            type_url: type_url.into(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn assembled_sotw_response_decodes_as_the_one_prost_would_build() {
        let (a, b) = (any("t/a", b"AAA"), any("t/b", b"B"));
        let assembled = EncodedResponse::sotw(
            "v1".into(),
            "t".into(),
            "n-1".into(),
            [sotw_entry(&a), sotw_entry(&b)],
        );
        let decoded = DiscoveryResponse::decode(assembled.encode_to_vec().as_slice())
            .expect("valid protobuf");
        assert_eq!(
            decoded,
            DiscoveryResponse {
                version_info: "v1".into(),
                resources: vec![a, b],
                type_url: "t".into(),
                nonce: "n-1".into(),
                ..Default::default()
            }
        );
        assert_eq!(assembled.encoded_len(), assembled.encode_to_vec().len());
    }

    #[test]
    fn assembled_delta_response_decodes_with_names_versions_and_removals() {
        let a = any("t/a", b"AAA");
        let assembled = EncodedResponse::delta(
            "sys".into(),
            "t".into(),
            "n-2".into(),
            vec!["gone".into()],
            [delta_entry("a", "va", &a)],
        );
        let decoded = DeltaDiscoveryResponse::decode(assembled.encode_to_vec().as_slice())
            .expect("valid protobuf");
        assert_eq!(decoded.system_version_info, "sys");
        assert_eq!(decoded.removed_resources, ["gone"]);
        assert_eq!(decoded.nonce, "n-2");
        assert_eq!(decoded.resources.len(), 1);
        assert_eq!(decoded.resources[0].name, "a");
        assert_eq!(decoded.resources[0].version, "va");
        assert_eq!(decoded.resources[0].resource.as_ref(), Some(&a));
    }

    #[test]
    fn entries_are_shared_not_copied() {
        let entry = sotw_entry(&any("t/a", b"AAA"));
        let one = EncodedResponse::sotw("v".into(), "t".into(), "1".into(), [entry.clone()]);
        let two = EncodedResponse::sotw("v".into(), "t".into(), "2".into(), [entry.clone()]);
        assert_eq!(one.parts[1].as_ptr(), two.parts[1].as_ptr());
    }
}
