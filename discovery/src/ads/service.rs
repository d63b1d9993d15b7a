//! The ADS gRPC service, routed by hand rather than through envoy-types'
//! generated server: that server only sends whole `DiscoveryResponse`
//! messages, which would make every stream own a copy of every resource it
//! sends. Here responses are [`EncodedResponse`]s built from the snapshot's
//! shared bytes; requests decode as usual.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::encoded::EncodedResponse;
use super::{AdsServer, ResponseStream};

const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// The tower service tonic routes ADS calls to.
#[derive(Clone)]
pub struct AdsService {
    server: Arc<AdsServer>,
    max_request_bytes: usize,
    max_response_bytes: usize,
}

impl AdsService {
    pub fn new(server: AdsServer, max_request_bytes: usize, max_response_bytes: usize) -> Self {
        AdsService {
            server: Arc::new(server),
            max_request_bytes,
            max_response_bytes,
        }
    }
}

impl NamedService for AdsService {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

struct Sotw(Arc<AdsServer>);
struct Delta(Arc<AdsServer>);

impl StreamingService<DiscoveryRequest> for Sotw {
    type Response = EncodedResponse;
    type ResponseStream = ResponseStream<EncodedResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DiscoveryRequest>>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move { server.stream_aggregated_resources(request).await })
    }
}

impl StreamingService<DeltaDiscoveryRequest> for Delta {
    type Response = EncodedResponse;
    type ResponseStream = ResponseStream<EncodedResponse>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<Streaming<DeltaDiscoveryRequest>>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move { server.delta_aggregated_resources(request).await })
    }
}

impl<B> Service<http::Request<B>> for AdsService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let server = self.server.clone();
        let limits = (Some(self.max_request_bytes), Some(self.max_response_bytes));
        match request.uri().path() {
            SOTW_PATH => Box::pin(async move {
                let codec = ProstCodec::<EncodedResponse, DiscoveryRequest>::default();
                let mut grpc = Grpc::new(codec).apply_max_message_size_config(limits.0, limits.1);
                Ok(grpc.streaming(Sotw(server), request).await)
            }),
            DELTA_PATH => Box::pin(async move {
                let codec = ProstCodec::<EncodedResponse, DeltaDiscoveryRequest>::default();
                let mut grpc = Grpc::new(codec).apply_max_message_size_config(limits.0, limits.1);
                Ok(grpc.streaming(Delta(server), request).await)
            }),
            _ => {
                Box::pin(async move { Ok(Status::unimplemented("no such ADS method").into_http()) })
            }
        }
    }
}
