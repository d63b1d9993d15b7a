//! The two ADS variants' message shapes. State of the world: a request names
//! the whole subscription and ACKs with the response's version and nonce.
//! Delta: a request subscribes and unsubscribes names, and ACKs with the
//! nonce alone.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use prost::Message;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

use super::follow::{Follower, Step};
use super::{Received, Variant, sotw_key};
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
}

impl Variant for Sotw {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;

    /// An ACK and a subscription change are the same request: the current
    /// names with the last version and nonce of the type.
    fn request(&self, step: &Step, follower: &Follower, node: Option<Node>) -> DiscoveryRequest {
        let ty = step_type(step);
        DiscoveryRequest {
            node,
            type_url: ty.type_url(),
            version_info: self.last.version[ty.index()].clone(),
            response_nonce: self.last.nonce[ty.index()].clone(),
            resource_names: follower.names(ty),
            ..Default::default()
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
        mut client: AggregatedDiscoveryServiceClient<Channel>,
        requests: ReceiverStream<DiscoveryRequest>,
    ) -> Result<Streaming<DiscoveryResponse>, tonic::Status> {
        Ok(client
            .stream_aggregated_resources(requests)
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

    fn request(&self, step: &Step, _: &Follower, node: Option<Node>) -> DeltaDiscoveryRequest {
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
        mut client: AggregatedDiscoveryServiceClient<Channel>,
        requests: ReceiverStream<DeltaDiscoveryRequest>,
    ) -> Result<Streaming<DeltaDiscoveryResponse>, tonic::Status> {
        Ok(client
            .delta_aggregated_resources(requests)
            .await?
            .into_inner())
    }
}
