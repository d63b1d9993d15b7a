//! One encoded xDS resource: the value of its `Any`, held as pieces whose
//! concatenation is the message's protobuf encoding.
//!
//! Most resources are one piece. A route configuration is many: its own
//! fields, then runs of virtual hosts encoded once per generation and
//! shared by every view whose configuration holds the same run, so 200
//! views of one namespace do not hold 200 copies of the same hosts.
//! Protobuf lets a repeated field arrive in separate runs, so the pieces
//! concatenated are one valid message.

use std::borrow::Cow;

use bytes::Bytes;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};
use sha2::{Digest, Sha256};

use crate::ads::encoded::{EntryWriter, text_field_len, write_text_field};

#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    type_url: String,
    /// The `Any`'s value, in order. Pieces after the first may be shared
    /// with other resources and are referenced, never copied, by the
    /// response entries built from this resource.
    pieces: Vec<Bytes>,
    /// The version, when whoever split the encoding knew it already.
    version: Option<String>,
}

// Field numbers in google/protobuf/any.proto.
const ANY_TYPE_URL: u32 = 1;
const ANY_VALUE: u32 = 2;

impl Resource {
    /// `message` encoded whole, as `pack_any` would.
    pub fn encode<T: Message + Name>(message: &T) -> Self {
        Resource {
            type_url: T::type_url(),
            pieces: vec![Bytes::from(message.encode_to_vec())],
            version: None,
        }
    }

    /// A resource of `type_url` whose encoding is `pieces` concatenated.
    pub fn from_pieces(type_url: String, pieces: Vec<Bytes>) -> Self {
        Resource {
            type_url,
            pieces,
            version: None,
        }
    }

    /// [`Resource::from_pieces`] with its version given, computed by the
    /// caller from digests of its pieces that it keeps (so that shared
    /// pieces are hashed once, not once per resource holding them).
    pub fn with_version(type_url: String, pieces: Vec<Bytes>, version: String) -> Self {
        Resource {
            type_url,
            pieces,
            version: Some(version),
        }
    }

    pub fn from_any(any: Any) -> Self {
        Resource {
            type_url: any.type_url,
            pieces: vec![Bytes::from(any.value)],
            version: None,
        }
    }

    pub fn type_url(&self) -> &str {
        &self.type_url
    }

    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// The message's encoding; copied only when it is in several pieces.
    pub fn value(&self) -> Cow<'_, [u8]> {
        match self.pieces.as_slice() {
            [] => Cow::Borrowed(&[]),
            [one] => Cow::Borrowed(one),
            many => Cow::Owned(many.concat()),
        }
    }

    pub fn value_len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }

    pub fn to_any(&self) -> Any {
        Any {
            type_url: self.type_url.clone(),
            value: self.value().into_owned(),
        }
    }

    /// Whether `other` encodes the same bytes, however they are split.
    pub fn same_encoding(&self, other: &Resource) -> bool {
        if self.type_url != other.type_url || self.value_len() != other.value_len() {
            return false;
        }
        // Split alike (the usual case: the same blocks): piece by piece,
        // shared pieces compared by address; otherwise byte by byte.
        let alike = self.pieces.len() == other.pieces.len()
            && self
                .pieces
                .iter()
                .zip(&other.pieces)
                .all(|(a, b)| (a.as_ptr() == b.as_ptr() && a.len() == b.len()) || a == b);
        alike
            || self
                .pieces
                .iter()
                .flat_map(|p| p.iter())
                .eq(other.pieces.iter().flat_map(|p| p.iter()))
    }

    /// The resource's version in incremental xDS: the one given, else a
    /// short hash of the encoding.
    pub fn version(&self) -> String {
        match &self.version {
            Some(version) => version.clone(),
            None => short_digest(self.pieces.iter()),
        }
    }

    /// The length of this resource encoded as an `Any` message.
    pub fn any_len(&self) -> usize {
        let value = self.value_len();
        let value_field = if value == 0 {
            0
        } else {
            prost::encoding::key_len(ANY_VALUE)
                + prost::encoding::encoded_len_varint(value as u64)
                + value
        };
        text_field_len(ANY_TYPE_URL, &self.type_url) + value_field
    }

    /// Writes the `Any` message's fields (as prost would) to `out`: the
    /// first piece copied, the others shared.
    pub fn write_any(&self, out: &mut EntryWriter) {
        write_text_field(ANY_TYPE_URL, &self.type_url, out.own());
        let value = self.value_len();
        if value == 0 {
            return;
        }
        prost::encoding::encode_key(
            ANY_VALUE,
            prost::encoding::WireType::LengthDelimited,
            out.own(),
        );
        prost::encoding::encode_varint(value as u64, out.own());
        let mut pieces = self.pieces.iter();
        if let Some(first) = pieces.next() {
            bytes::BufMut::put_slice(out.own(), first);
        }
        for piece in pieces {
            out.share(piece.clone());
        }
    }
}

/// A short hash of `parts` in order.
pub fn short_digest<T: AsRef<[u8]>>(parts: impl IntoIterator<Item = T>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_ref());
    }
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};

    fn config() -> RouteConfiguration {
        RouteConfiguration {
            name: "9080".into(),
            virtual_hosts: (0..3)
                .map(|i| VirtualHost {
                    name: format!("h{i}:9080"),
                    domains: vec![format!("h{i}")],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_message_split_into_pieces_decodes_as_the_whole() {
        let whole = config();
        let head = RouteConfiguration {
            virtual_hosts: Vec::new(),
            ..whole.clone()
        };
        let mut pieces = vec![Bytes::from(head.encode_to_vec())];
        for host in &whole.virtual_hosts {
            let mut buf = Vec::new();
            prost::encoding::message::encode(2, host, &mut buf);
            pieces.push(Bytes::from(buf));
        }
        let split = Resource::from_pieces(RouteConfiguration::type_url(), pieces);
        let decoded = RouteConfiguration::decode(split.value().as_ref()).expect("valid");
        assert_eq!(decoded, whole);
        let one = Resource::encode(&whole);
        assert!(split.same_encoding(&one), "same bytes, split differently");
        assert_eq!(split.version(), one.version());
        assert_eq!(split.any_len(), one.to_any().encoded_len());
    }

    #[test]
    fn the_any_written_in_pieces_equals_prosts_and_shares_the_later_pieces() {
        let shared = Bytes::from_static(b"\x12\x03abc");
        let resource = Resource::from_pieces(
            "t/x".into(),
            vec![Bytes::from_static(b"\x0a\x01n"), shared.clone()],
        );
        let mut out = EntryWriter::default();
        resource.write_any(&mut out);
        let parts = out.into_parts();
        assert_eq!(parts.concat(), resource.to_any().encode_to_vec());
        assert!(
            parts.iter().any(|p| p.as_ptr() == shared.as_ptr()),
            "the shared piece is referenced, not copied"
        );
    }
}
