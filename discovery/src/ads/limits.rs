//! Bounds on what one unauthenticated client can make the xDS server hold:
//! the size of what it sends, how long a push waits for it to read, and
//! (through the snapshot cache) how many distinct views it can create.

use std::time::Duration;

use tonic::transport::Server;

/// Responses buffered per stream beyond the one being written: enough to
/// pipeline a push of several types, small so that a stream that stops
/// reading is noticed (its responses share the snapshot's bytes, but a
/// stalled stream should not pin old snapshots for long).
pub const RESPONSE_BUFFER: usize = 2;

/// Streams one HTTP/2 connection may open: an Envoy uses one ADS stream,
/// so this only limits how much one connection can multiply.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;

const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// A connection whose peer does not answer a keepalive ping in time is
/// closed, releasing every stream on it.
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Request headers of a gRPC call are small; the h2 default is 16 MiB.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsLimits {
    /// Distinct proxy views whose snapshots the cache keeps (LRU beyond).
    pub max_views: usize,
    /// Largest encoded `Node` accepted on a stream's first request.
    pub max_node_bytes: usize,
    /// Largest request message decoded (delta requests list many names).
    pub max_request_bytes: usize,
    /// How long a response may wait for room in the stream's buffer, that
    /// is for the proxy to read, before the stream is closed.
    pub stream_send_timeout: Duration,
}

impl Default for XdsLimits {
    fn default() -> Self {
        XdsLimits {
            max_views: 10_000,
            max_node_bytes: 64 * 1024,
            max_request_bytes: 4 * 1024 * 1024,
            stream_send_timeout: Duration::from_secs(20),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("node is {size} bytes, more than the limit of {limit} bytes (--max-node-bytes)")]
pub struct NodeTooLarge {
    pub size: usize,
    pub limit: usize,
}

/// Refuses a node larger than `limit` once encoded, before any of it is kept.
pub fn check_node_size(size: usize, limit: usize) -> Result<(), NodeTooLarge> {
    if size > limit {
        return Err(NodeTooLarge { size, limit });
    }
    Ok(())
}

/// HTTP/2 settings of the xDS listener: few streams per connection, and
/// dead peers detected by keepalive.
pub fn with_http2_limits<L>(server: Server<L>) -> Server<L> {
    server
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
}

/// The same settings on the HTTP/2 connections `pilotfish serve`'s xDS
/// ports serve themselves (see [`crate::xds_server`]); the builder needs a
/// timer for the keepalive.
pub fn http2_settings<E>(builder: &mut hyper::server::conn::http2::Builder<E>) {
    builder
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
        .max_header_list_size(MAX_HEADER_LIST_BYTES);
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    use prost::Message;

    use super::*;

    #[test]
    fn node_over_the_limit_is_refused_with_size_and_limit() {
        let mut metadata = Struct::default();
        metadata.fields.insert(
            "BLOB".into(),
            Value {
                kind: Some(Kind::StringValue("x".repeat(100))),
            },
        );
        let node = Node {
            id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local".into(),
            metadata: Some(metadata),
            ..Default::default()
        };
        let size = node.encoded_len();
        assert_eq!(check_node_size(size, size), Ok(()));
        let refused = check_node_size(size, size - 1).unwrap_err();
        assert_eq!(refused.size, size);
        let message = refused.to_string();
        assert!(message.contains(&size.to_string()) && message.contains(&(size - 1).to_string()));
        assert_eq!(check_node_size(0, 0), Ok(()));
    }

    /// A delta request subscribing to ten thousand realistic EDS names
    /// stays well under the default request limit.
    #[test]
    fn ten_thousand_resource_names_fit_the_default_request_limit() {
        let request = DeltaDiscoveryRequest {
            resource_names_subscribe: (0..10_000)
                .map(|i| {
                    format!("outbound|9080|v1|service-{i:05}.namespace-{i:04}.svc.cluster.local")
                })
                .collect(),
            ..Default::default()
        };
        assert!(request.encoded_len() * 4 < XdsLimits::default().max_request_bytes);
    }
}
