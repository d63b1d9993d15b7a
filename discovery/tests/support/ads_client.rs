//! A bare ADS client (tonic, no Envoy): what pilotfish answers a stream
//! before any proxy could, e.g. a refusal while it is not ready.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use futures::StreamExt;
use pilotfish_discovery::xds_types::XdsType;

use super::STARTUP;
use super::netns::Netns;

/// Opens a state-of-the-world ADS stream to `address` from inside `ns` and
/// asks for every cluster: the number of clusters in the first response,
/// or the status the stream was refused with.
pub fn clusters_from_raw_client(ns: &Netns, address: &str) -> Result<usize, tonic::Status> {
    ns.run(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(async {
            let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
                .expect("uri")
                .connect()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
            let request = DiscoveryRequest {
                node: Some(Node {
                    id: "sidecar~127.0.0.251~raw.default~default.svc.cluster.local".into(),
                    ..Default::default()
                }),
                type_url: XdsType::Cluster.type_url(),
                ..Default::default()
            };
            // The stream stays open after the request, as a proxy's does.
            let requests = futures::stream::iter([request]).chain(futures::stream::pending());
            let mut responses = AggregatedDiscoveryServiceClient::new(channel)
                .stream_aggregated_resources(requests)
                .await?
                .into_inner();
            match tokio::time::timeout(STARTUP, responses.message()).await {
                Ok(Ok(Some(response))) => Ok(response.resources.len()),
                Ok(Ok(None)) => Err(tonic::Status::unknown("stream ended without a response")),
                Ok(Err(status)) => Err(status),
                Err(_) => Err(tonic::Status::deadline_exceeded("no response")),
            }
        })
    })
}
