//! The ADS gRPC service, routed by hand rather than through envoy-types'
//! generated server: that server only sends whole `DiscoveryResponse`
//! messages, which would make every stream own a copy of every resource it
//! sends. Here responses are [`EncodedResponse`]s built from the snapshot's
//! shared bytes, written by [`ResponseBody`]; requests decode as usual.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::requests::{DecodeRequest, DeltaRequest, SotwRequest};
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::encoded::EncodedResponse;
use super::request_stream::RequestStream;
use super::response_body::ResponseBody;
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
        let (max_request, max_response) = (self.max_request_bytes, self.max_response_bytes);
        match request.uri().path() {
            SOTW_PATH => Box::pin(async move {
                let request = decoded::<SotwRequest, B>(request, max_request);
                let response = server.stream_aggregated_resources(request).await;
                Ok(into_http(response, max_response))
            }),
            DELTA_PATH => Box::pin(async move {
                let request = decoded::<DeltaRequest, B>(request, max_request);
                let response = server.delta_aggregated_resources(request).await;
                Ok(into_http(response, max_response))
            }),
            _ => {
                Box::pin(async move { Ok(Status::unimplemented("no such ADS method").into_http()) })
            }
        }
    }
}

/// The request side, decoded as it arrives (uncompressed: Envoy does not
/// compress xDS requests, and a compressed one is refused).
fn decoded<T, B>(request: http::Request<B>, max_request_bytes: usize) -> Request<RequestStream<T>>
where
    T: DecodeRequest,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    Request::from_http(request.map(|body| RequestStream::new(body, max_request_bytes)))
}

fn into_http(
    response: Result<Response<ResponseStream<EncodedResponse>>, Status>,
    max_response_bytes: usize,
) -> http::Response<tonic::body::Body> {
    match response {
        Ok(response) => {
            let (metadata, responses, extensions) = response.into_parts();
            let mut http = http::Response::new(tonic::body::Body::new(ResponseBody::new(
                responses,
                max_response_bytes,
            )));
            *http.headers_mut() = metadata.into_headers();
            *http.extensions_mut() = extensions;
            http.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            http
        }
        Err(status) => status.into_http(),
    }
}
