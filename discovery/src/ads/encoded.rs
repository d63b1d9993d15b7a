//! Responses assembled from bytes encoded once. A snapshot encodes each
//! resource's response entry once (for state of the world and for delta);
//! every stream that sends the resource sends those same bytes, adding only
//! a small header of its own (version, type URL, nonce). A queued response
//! therefore holds reference counts, not a copy of the resources per stream.
//!
//! Protobuf allows a message's fields in any order and repeated fields in
//! separate runs, so a header encoded alone followed by entries encoded
//! alone is one valid `DiscoveryResponse` (or `DeltaDiscoveryResponse`).

use std::collections::BTreeMap;
use std::ops::Range;

use crate::resource::Resource;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
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

    /// Bytes of the resource entries (all but the header).
    pub fn resource_bytes(&self) -> usize {
        self.parts.iter().skip(1).map(Bytes::len).sum()
    }

    /// The parts to send, in order: the header, then the entries.
    pub fn into_parts(self) -> Vec<Bytes> {
        self.parts
    }

    fn assemble(header: Vec<u8>, entries: impl IntoIterator<Item = Bytes>) -> Self {
        let mut parts = vec![Bytes::from(header)];
        parts.extend(entries);
        EncodedResponse { parts }
    }
}

/// Writes a resource's entry in a state-of-the-world response (field
/// `resources`).
pub fn write_sotw_entry(resource: &Resource, out: &mut EntryWriter) {
    use prost::encoding::{encode_key, encode_varint};
    encode_key(SOTW_RESOURCES, WireType::LengthDelimited, out.own());
    encode_varint(resource.any_len() as u64, out.own());
    resource.write_any(out);
}

/// Writes a resource's entry in a delta response: a `Resource` with its
/// name and version (field `resources`), without copying shared pieces.
pub fn write_delta_entry(name: &str, version: &str, resource: &Resource, out: &mut EntryWriter) {
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len};
    let any_len = resource.any_len();
    let len = text_field_len(RESOURCE_VERSION, version)
        + key_len(RESOURCE_RESOURCE)
        + encoded_len_varint(any_len as u64)
        + any_len
        + text_field_len(RESOURCE_NAME, name);
    encode_key(DELTA_RESOURCES, WireType::LengthDelimited, out.own());
    encode_varint(len as u64, out.own());
    write_text_field(RESOURCE_VERSION, version, out.own());
    encode_key(RESOURCE_RESOURCE, WireType::LengthDelimited, out.own());
    encode_varint(any_len as u64, out.own());
    resource.write_any(out);
    write_text_field(RESOURCE_NAME, name, out.own());
}

/// A string field as prost writes it (omitted when empty, as proto3 does).
pub fn write_text_field(tag: u32, value: &str, buf: &mut impl BufMut) {
    if !value.is_empty() {
        prost::encoding::encode_key(tag, WireType::LengthDelimited, buf);
        prost::encoding::encode_varint(value.len() as u64, buf);
        buf.put_slice(value.as_bytes());
    }
}

pub fn text_field_len(tag: u32, value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        prost::encoding::key_len(tag)
            + prost::encoding::encoded_len_varint(value.len() as u64)
            + value.len()
    }
}

// Field numbers in envoy/service/discovery/v3/discovery.proto.
const SOTW_RESOURCES: u32 = 2;
const DELTA_RESOURCES: u32 = 2;
const RESOURCE_VERSION: u32 = 1;
const RESOURCE_RESOURCE: u32 = 2;
const RESOURCE_NAME: u32 = 3;

/// A resource's entry in a state-of-the-world response, alone.
#[cfg(test)]
pub fn sotw_entry(resource: &Resource) -> Bytes {
    let mut out = EntryWriter::default();
    write_sotw_entry(resource, &mut out);
    Bytes::from(out.into_parts().concat())
}

/// A resource's entry in a delta response, alone (copied into one buffer:
/// for the rare resource a set's buffer lacks).
pub fn delta_entry(name: &str, version: &str, resource: &Resource) -> Bytes {
    let mut out = EntryWriter::default();
    write_delta_entry(name, version, resource, &mut out);
    Bytes::from(out.into_parts().concat())
}

/// A piece of an encoded entry: bytes of the entry buffer itself, or a
/// piece shared with other resources (referenced, not copied).
#[derive(Clone, Debug)]
enum Segment {
    Own(Range<usize>),
    Shared(Bytes),
}

/// Writes entries into one buffer, recording for each the runs of its own
/// bytes and the shared pieces between them.
#[derive(Debug, Default)]
pub struct EntryWriter {
    buffer: BytesMut,
    segments: Vec<Segment>,
    run_start: usize,
}

impl EntryWriter {
    /// Where the entry's own bytes go.
    pub fn own(&mut self) -> &mut BytesMut {
        &mut self.buffer
    }

    /// Appends a shared piece by reference.
    pub fn share(&mut self, piece: Bytes) {
        self.close_run();
        self.segments.push(Segment::Shared(piece));
    }

    fn close_run(&mut self) {
        if self.buffer.len() > self.run_start {
            self.segments
                .push(Segment::Own(self.run_start..self.buffer.len()));
        }
        self.run_start = self.buffer.len();
    }

    /// The segments of the entry written since the last call.
    fn end_entry(&mut self) -> Vec<Segment> {
        self.close_run();
        std::mem::take(&mut self.segments)
    }

    /// Everything written, as parts in order.
    pub(crate) fn into_parts(mut self) -> Vec<Bytes> {
        let segments = self.end_entry();
        let buffer = self.buffer.freeze();
        segments
            .into_iter()
            .map(|segment| match segment {
                Segment::Own(range) => buffer.slice(range),
                Segment::Shared(piece) => piece,
            })
            .collect()
    }
}

/// The response entries of one resource set, encoded into one buffer in
/// name order (pieces shared with other sets referenced, not copied). A
/// response selecting neighbouring entries sends one slice of it (a full
/// set of single-piece resources is a single slice), so what a stream
/// queues and what HTTP/2 holds until the socket takes it are reference
/// counts, however many streams send it.
#[derive(Debug, Default)]
pub struct EntryBuffer {
    buffer: Bytes,
    entries: BTreeMap<String, Vec<Segment>>,
}

impl EntryBuffer {
    /// Encodes one entry per name, in the iterator's order.
    pub fn build<'a, T: 'a>(
        items: impl IntoIterator<Item = (&'a String, T)>,
        write: impl Fn(&str, T, &mut EntryWriter),
    ) -> Self {
        let mut out = EntryWriter::default();
        let mut entries = BTreeMap::new();
        for (name, item) in items {
            write(name, item, &mut out);
            entries.insert(name.clone(), out.end_entry());
        }
        EntryBuffer {
            buffer: out.buffer.freeze(),
            entries,
        }
    }

    /// The entries of `items` as few parts as their order allows; an item
    /// this buffer lacks is encoded on its own by `missing` (or left out).
    pub fn parts<T>(
        &self,
        items: impl IntoIterator<Item = T>,
        name: impl Fn(&T) -> &str,
        missing: impl Fn(&T) -> Option<Bytes>,
    ) -> Vec<Bytes> {
        let mut parts = Vec::new();
        let mut run: Option<Range<usize>> = None;
        let flush = |run: &mut Option<Range<usize>>, parts: &mut Vec<Bytes>| {
            if let Some(done) = run.take() {
                parts.push(self.buffer.slice(done));
            }
        };
        for item in items {
            let Some(segments) = self.entries.get(name(&item)) else {
                if let Some(own) = missing(&item) {
                    flush(&mut run, &mut parts);
                    parts.push(own);
                }
                continue;
            };
            for segment in segments {
                match segment {
                    Segment::Own(range) => match &mut run {
                        Some(current) if current.end == range.start => current.end = range.end,
                        _ => {
                            flush(&mut run, &mut parts);
                            run = Some(range.clone());
                        }
                    },
                    Segment::Shared(piece) => {
                        flush(&mut run, &mut parts);
                        parts.push(piece.clone());
                    }
                }
            }
        }
        flush(&mut run, &mut parts);
        parts
    }

    /// Bytes held by this buffer itself (shared pieces not counted).
    pub fn own_len(&self) -> usize {
        self.buffer.len()
    }
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

    use envoy_types::pb::google::protobuf::Any;

    fn any(type_url: &str, value: &[u8]) -> Resource {
        Resource::from_any(Any {
            type_url: type_url.into(),
            value: value.to_vec(),
        })
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
                resources: vec![a.to_any(), b.to_any()],
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
        assert_eq!(decoded.resources[0].resource.as_ref(), Some(&a.to_any()));
    }

    fn buffer_of(names: &[&str]) -> (BTreeMap<String, Resource>, EntryBuffer) {
        let resources: BTreeMap<String, Resource> = names
            .iter()
            .map(|n| (n.to_string(), any("t/x", n.as_bytes())))
            .collect();
        let buffer = EntryBuffer::build(resources.iter(), |_, any, buf| write_sotw_entry(any, buf));
        (resources, buffer)
    }

    #[test]
    fn neighbouring_entries_go_out_as_one_slice_of_the_shared_buffer() {
        let (resources, buffer) = buffer_of(&["a", "b", "c", "d"]);
        let all = buffer.parts(resources.keys(), |n| n.as_str(), |_| None);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].len(), buffer.own_len());
        let gaps = buffer.parts(["a", "b", "d"], |n| n, |_| None);
        assert_eq!(gaps.len(), 2);
        let joined: Vec<u8> = gaps.concat();
        let expected: Vec<u8> = [&resources["a"], &resources["b"], &resources["d"]]
            .iter()
            .flat_map(|a| sotw_entry(a).to_vec())
            .collect();
        assert_eq!(joined, expected);
    }

    #[test]
    fn shared_pieces_go_out_by_reference_between_runs_of_own_bytes() {
        let shared = Bytes::from(vec![0x12, 0x02, b'h', b'i']);
        let split = Resource::from_pieces(
            "t/r".into(),
            vec![Bytes::from_static(b"\x0a\x01r"), shared.clone()],
        );
        let resources = BTreeMap::from([
            ("a".to_string(), any("t/x", b"a")),
            ("b".to_string(), split),
            ("c".to_string(), any("t/x", b"c")),
        ]);
        let buffer = EntryBuffer::build(resources.iter(), |_, r, out| write_sotw_entry(r, out));
        let parts = buffer.parts(resources.keys(), |n| n.as_str(), |_| None);
        assert_eq!(parts.len(), 3, "a and b's head, b's shared piece, then c");
        assert_eq!(parts[1].as_ptr(), shared.as_ptr());
        let expected: Vec<u8> = resources
            .values()
            .flat_map(|r| sotw_entry(r).to_vec())
            .collect();
        assert_eq!(parts.concat(), expected);
    }

    #[test]
    fn entries_missing_from_the_buffer_are_encoded_alone_in_order() {
        let (_, buffer) = buffer_of(&["a", "c"]);
        let extra = any("t/x", b"b");
        let parts = buffer.parts(
            ["a", "b", "c"],
            |n| n,
            |n| (*n == "b").then(|| sotw_entry(&extra)),
        );
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1], sotw_entry(&extra));
    }

    #[test]
    fn delta_entry_without_a_copy_matches_prost() {
        let a = any("t/a", b"AAA");
        let expected = DeltaDiscoveryResponse {
            resources: vec![envoy_types::pb::envoy::service::discovery::v3::Resource {
                name: "a".into(),
                version: "va".into(),
                resource: Some(a.to_any()),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(delta_entry("a", "va", &a).to_vec(), expected);
    }

    #[test]
    fn entries_are_shared_not_copied() {
        let entry = sotw_entry(&any("t/a", b"AAA"));
        let one = EncodedResponse::sotw("v".into(), "t".into(), "1".into(), [entry.clone()]);
        let two = EncodedResponse::sotw("v".into(), "t".into(), "2".into(), [entry.clone()]);
        assert_eq!(one.parts[1].as_ptr(), two.parts[1].as_ptr());
    }
}
