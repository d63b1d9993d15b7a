//! The two ADS variants' message shapes. State of the world: a request names
//! the whole subscription and ACKs with the response's version and nonce.
//! Delta: a request subscribes and unsubscribes names, and ACKs with the
//! nonce alone.

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

#[derive(Default)]
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

#[derive(Default)]
pub struct Delta {
    last: LastSeen,
}

impl Variant for Delta {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;

    fn request(&mut self, step: &Step, _: &Follower, node: Option<Node>) -> DeltaDiscoveryRequest {
        let ty = step_type(step);
        let mut request = DeltaDiscoveryRequest {
            node,
            type_url: ty.type_url(),
            ..Default::default()
        };
        match step {
            Step::Ack(_) => request.response_nonce = self.last.nonce[ty.index()].clone(),
            Step::Subscribe { added, removed, .. } => {
                request.resource_names_subscribe = added.clone();
                request.resource_names_unsubscribe = removed.clone();
            }
        }
        request
    }

    fn read<'a>(&mut self, response: &'a DeltaDiscoveryResponse) -> Option<Received<'a>> {
        let ty = XdsType::from_type_url(&response.type_url)?;
        self.last
            .note(ty, &response.nonce, &response.system_version_info);
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
        let mut sotw = Sotw::default();
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
}
