//! The Aggregated Discovery Service over gRPC, in both variants: state of
//! the world (`StreamAggregatedResources`, Envoy's `api_type: GRPC`) and
//! incremental (`DeltaAggregatedResources`, `DELTA_GRPC`). Both serve the same
//! snapshots from the cache; they differ only in what a response carries.

pub mod delta;
mod delta_stream;
pub mod limits;
mod session;
mod stream;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::cache::SnapshotCache;
use crate::mesh_store::MeshGeneration;
use crate::metrics::Metrics;
use crate::status::SyncStatus;
pub use limits::XdsLimits;

/// Responses are ours and may be large (every cluster of a big mesh); the
/// size of requests, which clients choose, is bounded by [`XdsLimits`].
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// State shared by all streams.
pub struct XdsContext {
    pub cache: SnapshotCache,
    pub status: SyncStatus,
    pub metrics: Arc<Metrics>,
    pub generations: watch::Receiver<Arc<MeshGeneration>>,
    pub limits: XdsLimits,
    next_connection: AtomicU64,
}

impl XdsContext {
    pub fn new(metrics: Arc<Metrics>, generations: watch::Receiver<Arc<MeshGeneration>>) -> Self {
        Self::with_limits(metrics, generations, XdsLimits::default())
    }

    pub fn with_limits(
        metrics: Arc<Metrics>,
        generations: watch::Receiver<Arc<MeshGeneration>>,
        limits: XdsLimits,
    ) -> Self {
        XdsContext {
            cache: SnapshotCache::with_max_views(metrics.clone(), limits.max_views),
            status: SyncStatus::default(),
            metrics,
            generations,
            limits,
            next_connection: AtomicU64::new(1),
        }
    }

    fn connection_id(&self) -> u64 {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }
}

pub struct AdsServer {
    ctx: Arc<XdsContext>,
}

impl AdsServer {
    pub fn new(ctx: Arc<XdsContext>) -> Self {
        AdsServer { ctx }
    }

    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        let max_request_bytes = self.ctx.limits.max_request_bytes;
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(max_request_bytes)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let peer = request.remote_addr();
        let (tx, rx) = mpsc::channel(limits::RESPONSE_BUFFER);
        let connection = stream::Connection::new(self.ctx.clone(), self.ctx.connection_id(), tx);
        tokio::spawn(session::serve(connection, request.into_inner(), peer));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let peer = request.remote_addr();
        let (tx, rx) = mpsc::channel(limits::RESPONSE_BUFFER);
        let connection =
            delta_stream::DeltaConnection::new(self.ctx.clone(), self.ctx.connection_id(), tx);
        tokio::spawn(session::serve(connection, request.into_inner(), peer));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
