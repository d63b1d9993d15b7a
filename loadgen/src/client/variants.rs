//! The two ADS variants' message shapes. State of the world: a request names
//! the whole subscription and ACKs with the response's version and nonce.
//! Delta: a request subscribes and unsubscribes names, ACKs with the nonce
//! alone, and the first request of a type on a new stream tells what the
//! proxy holds (`initial_resource_versions`).

use std::collections::HashMap;

use bytes::{BufMut, Bytes};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic_prost::ProstDecoder;

use super::follow::{Follower, Step};
use super::{MAX_MESSAGE_BYTES, Received, Variant, sotw_key};
use crate::inspect::{XdsType, content_key};

/// The last response's nonce (and version) per type, for its ACK.
#[derive(Default)]
struct LastSeen {
    nonce: [String; 4],
    version: [String; 4],
}

impl LastSeen {
    /// A new stream: nonces are per stream; the versions are what the
    /// proxy accepted, which Envoy's SotW requests keep.
    fn forget_nonces(&mut self) {
        self.nonce = Default::default();
    }

    fn note(&mut self, ty: XdsType, nonce: &str, version: &str) {
        self.nonce[ty.index()] = nonce.to_string();
        self.version[ty.index()] = version.to_string();
    }
}

fn step_type(step: &Step) -> XdsType {
    match step {
        Step::Ack(ty) | Step::Subscribe { ty, .. } => *ty,
    }
}

pub struct Sotw {
    last: LastSeen,
    /// Each type's subscribed names, encoded once per subscription: every
    /// ACK repeats them (an EDS ACK names every cluster), and re-encoding
    /// them per ACK made the generator, not the server, the bottleneck.
    names: [Bytes; 4],
}

/// A `DiscoveryRequest` whose `resource_names` are already encoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SotwRequest {
    head: DiscoveryRequest,
    names: Bytes,
}

impl SotwRequest {
    /// The request's encoding: field numbers are independent of order, so
    /// the encoded names may follow the other fields.
    fn write(&self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        self.head.encode(buf)?;
        buf.put_slice(&self.names);
        Ok(())
    }
}

/// Requests as [`SotwRequest::write`] writes them, responses as prost
/// decodes them.
#[derive(Default)]
struct SotwCodec;

struct SotwEncoder;

impl Encoder for SotwEncoder {
    type Item = SotwRequest;
    type Error = tonic::Status;

    fn encode(&mut self, item: SotwRequest, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        item.write(buf)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Codec for SotwCodec {
    type Encode = SotwRequest;
    type Decode = DiscoveryResponse;
    type Encoder = SotwEncoder;
    type Decoder = ProstDecoder<DiscoveryResponse>;

    fn encoder(&mut self) -> SotwEncoder {
        SotwEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

fn encode_names(names: &[String]) -> Bytes {
    DiscoveryRequest {
        resource_names: names.to_vec(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

impl Variant for Sotw {
    type Request = SotwRequest;
    type Response = DiscoveryResponse;

    fn new(_: bool) -> Self {
        Sotw {
            last: LastSeen::default(),
            names: Default::default(),
        }
    }

    fn new_stream(&mut self) {
        self.last.forget_nonces();
    }

    /// An ACK and a subscription change are the same request: the current
    /// names with the last version and nonce of the type.
    fn request(&mut self, step: &Step, _: &Follower, node: Option<Node>) -> SotwRequest {
        let ty = step_type(step);
        if let Step::Subscribe { names, .. } = step {
            self.names[ty.index()] = encode_names(names);
        }
        SotwRequest {
            head: DiscoveryRequest {
                node,
                type_url: ty.type_url(),
                version_info: self.last.version[ty.index()].clone(),
                response_nonce: self.last.nonce[ty.index()].clone(),
                ..Default::default()
            },
            names: self.names[ty.index()].clone(),
        }
    }

    fn read<'a>(&mut self, response: &'a DiscoveryResponse) -> Option<Received<'a>> {
        let ty = XdsType::from_type_url(&response.type_url)?;
        self.last.note(ty, &response.nonce, &response.version_info);
        Some(Received {
            ty,
            bytes: response.encoded_len(),
            key: sotw_key(&response.type_url, &response.version_info),
            resources: response.resources.iter().collect(),
            removed: None,
        })
    }

    async fn open(
        channel: Channel,
        requests: ReceiverStream<SotwRequest>,
    ) -> Result<Streaming<DiscoveryResponse>, tonic::Status> {
        // The generated client only takes `DiscoveryRequest`; the same
        // method, called with our own request type.
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec = SotwCodec;
        let path = http::uri::PathAndQuery::from_static(
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
        );
        Ok(grpc
            .streaming(tonic::Request::new(requests), path, codec)
            .await?
            .into_inner())
    }
}

pub struct Delta {
    last: LastSeen,
    /// Per type, name → version of what the proxy holds; kept only for
    /// a proxy that reopens streams (it costs the generator's CPU).
    held: Option<[HashMap<String, String>; 4]>,
    /// Types not requested yet on this stream.
    unrequested: [bool; 4],
}

impl Variant for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn new(reconnects: bool) -> Self {
        Delta {
            last: LastSeen::default(),
            held: reconnects.then(Default::default),
            unrequested: [true; 4],
        }
    }

    fn new_stream(&mut self) {
        self.last.forget_nonces();
        self.unrequested = [true; 4];
    }

    fn request(&mut self, step: &Step, _: &Follower, node: Option<Node>) -> DeltaDiscoveryRequest {
        let ty = step_type(step);
        let held = self.held.as_mut().map(|held| &mut held[ty.index()]);
        let mut request = DeltaDiscoveryRequest {
            node,
            type_url: ty.type_url(),
            ..Default::default()
        };
        // As Envoy does on a new stream: the server then sends only what
        // differs from what the proxy holds (nothing, on the same input).
        if std::mem::take(&mut self.unrequested[ty.index()])
            && let Some(held) = &held
        {
            request.initial_resource_versions = (*held).clone();
        }
        match step {
            Step::Ack(_) => request.response_nonce = self.last.nonce[ty.index()].clone(),
            Step::Subscribe { added, removed, .. } => {
                request.resource_names_subscribe = added.clone();
                request.resource_names_unsubscribe = removed.clone();
                if let Some(held) = held {
                    for name in removed {
                        held.remove(name);
                    }
                }
            }
        }
        request
    }

    fn read<'a>(&mut self, response: &'a DeltaDiscoveryResponse) -> Option<Received<'a>> {
        let ty = XdsType::from_type_url(&response.type_url)?;
        self.last
            .note(ty, &response.nonce, &response.system_version_info);
        if let Some(held) = self.held.as_mut().map(|held| &mut held[ty.index()]) {
            for resource in &response.resources {
                held.insert(resource.name.clone(), resource.version.clone());
            }
            for name in &response.removed_resources {
                held.remove(name);
            }
        }
        let key = content_key(
            &response.type_url,
            &response.system_version_info,
            response
                .resources
                .iter()
                .map(|r| (r.name.as_str(), r.version.as_str())),
            &response.removed_resources,
        );
        Some(Received {
            ty,
            bytes: response.encoded_len(),
            key,
            resources: response
                .resources
                .iter()
                .filter_map(|r| r.resource.as_ref())
                .collect(),
            removed: Some(&response.removed_resources),
        })
    }

    async fn open(
        channel: Channel,
        requests: ReceiverStream<DeltaDiscoveryRequest>,
    ) -> Result<Streaming<DeltaDiscoveryResponse>, tonic::Status> {
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(client
            .delta_aggregated_resources(requests)
            .await?
            .into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_carries_the_subscribed_names_encoded_once() {
        let mut sotw = Sotw::new(false);
        let follower = Follower::default();
        let names = vec!["a".to_string(), "b".to_string()];
        let subscribe = Step::Subscribe {
            ty: XdsType::Endpoint,
            names: names.clone(),
            added: names.clone(),
            removed: Vec::new(),
        };
        sotw.request(&subscribe, &follower, None);
        let ack = sotw.request(&Step::Ack(XdsType::Endpoint), &follower, None);
        let mut encoded = Vec::new();
        ack.write(&mut encoded).expect("encodes");
        let decoded = DiscoveryRequest::decode(encoded.as_slice()).expect("a DiscoveryRequest");
        assert_eq!(decoded.resource_names, names);
        assert_eq!(decoded.type_url, XdsType::Endpoint.type_url());
    }

    #[test]
    fn a_new_delta_stream_tells_the_versions_the_proxy_holds() {
        use envoy_types::pb::envoy::service::discovery::v3::Resource;
        let follower = Follower::default();
        let mut delta = Delta::new(true);
        let cds = Step::Subscribe {
            ty: XdsType::Cluster,
            names: Vec::new(),
            added: Vec::new(),
            removed: Vec::new(),
        };
        let first = delta.request(&cds, &follower, None);
        assert!(first.initial_resource_versions.is_empty());
        let resource = |name: &str, version: &str| Resource {
            name: name.into(),
            version: version.into(),
            ..Default::default()
        };
        let response = DeltaDiscoveryResponse {
            type_url: XdsType::Cluster.type_url(),
            nonce: "1".into(),
            resources: vec![resource("a", "v1"), resource("b", "v1")],
            ..Default::default()
        };
        delta.read(&response);
        let removal = DeltaDiscoveryResponse {
            type_url: XdsType::Cluster.type_url(),
            nonce: "2".into(),
            removed_resources: vec!["b".into()],
            ..Default::default()
        };
        delta.read(&removal);
        let ack = delta.request(&Step::Ack(XdsType::Cluster), &follower, None);
        assert!(
            ack.initial_resource_versions.is_empty(),
            "only a stream's first request"
        );
        assert_eq!(ack.response_nonce, "2");

        delta.new_stream();
        let again = delta.request(&cds, &follower, None);
        let expected: HashMap<String, String> = [("a".to_string(), "v1".to_string())].into();
        assert_eq!(again.initial_resource_versions, expected);
        assert!(again.response_nonce.is_empty());
    }
}
