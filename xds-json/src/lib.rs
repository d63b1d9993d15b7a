//! Envoy's canonical protobuf JSON for envoy-types messages: the mapping
//! Envoy itself prints in `/config_dump` and reads in a JSON bootstrap
//! (`"@type"` on every `Any`, durations as `"5s"`, enums by name, 64-bit
//! integers as strings, lowerCamel field names, default values left out).
//!
//! envoy-types has no JSON mapping of its own, so messages go through their
//! wire encoding into prost-reflect's dynamic messages, described by the
//! descriptors `build.rs` compiles from the .proto files envoy-types ships.
//! Any nested `Any` (a filter's or transport socket's typed config, ...)
//! comes out expanded, since the pool holds every Envoy v3 type.

use std::sync::LazyLock;

use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{
    DescriptorError, DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor,
    SerializeOptions,
};
use serde_json::Value;

static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

static POOL: LazyLock<Result<DescriptorPool, DescriptorError>> =
    LazyLock::new(|| DescriptorPool::decode(DESCRIPTORS));

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the embedded Envoy descriptors do not load: {0}")]
    Descriptors(String),
    #[error("no descriptor for message type {type_name}")]
    UnknownType { type_name: String },
    #[error("{type_name}: protobuf does not decode: {source}")]
    Decode {
        type_name: String,
        source: prost::DecodeError,
    },
    #[error("{type_name}: no JSON for it: {source}")]
    ToJson {
        type_name: String,
        source: serde_json::Error,
    },
    #[error("{type_name}: JSON does not read as this message: {source}")]
    FromJson {
        type_name: String,
        source: serde_json::Error,
    },
}

/// The descriptor pool of every Envoy v3 message (and what they import).
pub fn descriptor_pool() -> Result<&'static DescriptorPool, Error> {
    POOL.as_ref().map_err(|e| Error::Descriptors(e.to_string()))
}

/// `message` in Envoy's JSON.
pub fn message_to_json<M: prost::Message + prost::Name>(message: &M) -> Result<Value, Error> {
    encoded_to_json(&M::full_name(), &message.encode_to_vec())
}

/// An `Any` in Envoy's JSON: its message's fields plus `"@type"`.
pub fn any_to_json(any: &Any) -> Result<Value, Error> {
    message_to_json(any)
}

/// Reads `json` (Envoy's JSON for `M`) back into `M`; unknown fields are
/// an error, as they are for Envoy.
pub fn json_to_message<M: prost::Message + prost::Name + Default>(
    json: &Value,
) -> Result<M, Error> {
    let type_name = M::full_name();
    let dynamic = DynamicMessage::deserialize_with_options(
        descriptor(&type_name)?,
        json,
        &DeserializeOptions::new(),
    )
    .map_err(|source| Error::FromJson {
        type_name: type_name.clone(),
        source,
    })?;
    M::decode(dynamic.encode_to_vec().as_slice())
        .map_err(|source| Error::Decode { type_name, source })
}

fn encoded_to_json(type_name: &str, bytes: &[u8]) -> Result<Value, Error> {
    let dynamic =
        DynamicMessage::decode(descriptor(type_name)?, bytes).map_err(|source| Error::Decode {
            type_name: type_name.to_string(),
            source,
        })?;
    // Canonical proto3 JSON: these are prost-reflect's defaults, spelled out
    // because the dump and golden tests depend on them.
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false)
        .use_proto_field_name(false)
        .skip_default_fields(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| Error::ToJson {
            type_name: type_name.to_string(),
            source,
        })
}

fn descriptor(type_name: &str) -> Result<MessageDescriptor, Error> {
    descriptor_pool()?
        .get_message_by_name(type_name)
        .ok_or_else(|| Error::UnknownType {
            type_name: type_name.to_string(),
        })
}
