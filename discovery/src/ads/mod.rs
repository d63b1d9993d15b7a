//! The Aggregated Discovery Service over gRPC, in both variants: state of
//! the world (`StreamAggregatedResources`, Envoy's `api_type: GRPC`) and
//! incremental (`DeltaAggregatedResources`, `DELTA_GRPC`). Both serve the same
//! snapshots from the cache; they differ only in what a response carries.

pub mod delta;
mod delta_stream;
pub mod encoded;
pub mod interned;
pub mod limits;
pub mod rejection;
mod request_stream;
pub mod requests;
mod response_body;
mod service;
mod session;
mod stream;
mod workload_secrets;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::Stream;
use requests::{DeltaRequest, SotwRequest};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use request_stream::RequestStream;

use tokio_util::sync::CancellationToken;

use crate::cache::SnapshotCache;
use crate::mesh_store::MeshGeneration;
use crate::metrics::Metrics;
use crate::quarantine::QuarantineSink;
use crate::readiness::Readiness;
use crate::security::{Authenticator, PeerInfo, WorkloadCertificates};
use crate::status::SyncStatus;
use crate::xds_server::ConnectionAged;
use encoded::EncodedResponse;
pub use limits::XdsLimits;

pub use session::Caller;

/// Responses are ours and may be large (every cluster of a big mesh); the
/// size of requests, which clients choose, is bounded by [`XdsLimits`].
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// State shared by all streams.
pub struct XdsContext {
    pub cache: Arc<SnapshotCache>,
    pub status: SyncStatus,
    pub metrics: Arc<Metrics>,
    pub generations: watch::Receiver<Arc<MeshGeneration>>,
    /// Who a stream's caller is (client certificate or token).
    pub authenticator: Arc<Authenticator>,
    /// Refuse streams on the TLS port that present no credential.
    pub require_identity_on_tls: bool,
    /// Cancelled on shutdown: every stream tells its proxy to go.
    pub shutdown: CancellationToken,
    pub limits: XdsLimits,
    /// Subscription name sets, shared by the streams that hold equal ones.
    pub name_sets: interned::NameSets,
    /// Streams are refused until every source has loaded.
    pub readiness: Arc<Readiness>,
    /// Where rejected config objects are sent to be left out; `None`: only
    /// reported.
    pub quarantine: Option<QuarantineSink>,
    /// SDS `default` and `ROOTCA` per verified identity; `None` without a
    /// mesh CA (no secure port).
    pub workload_certificates: Option<Arc<WorkloadCertificates>>,
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
            cache: Arc::new(SnapshotCache::with_max_views(
                metrics.clone(),
                limits.max_views,
            )),
            status: SyncStatus::default(),
            metrics,
            generations,
            authenticator: Arc::new(Authenticator::new("cluster.local", None)),
            require_identity_on_tls: true,
            shutdown: CancellationToken::new(),
            limits,
            name_sets: interned::NameSets::default(),
            readiness: Arc::new(Readiness::ready()),
            quarantine: None,
            workload_certificates: None,
            next_connection: AtomicU64::new(1),
        }
    }

    /// Leaves out the config objects proxies' rejections are down to.
    pub fn with_quarantine(mut self, sink: QuarantineSink) -> Self {
        self.quarantine = Some(sink);
        self
    }

    /// Serves authenticated proxies their workload certificates over SDS.
    pub fn with_workload_certificates(mut self, store: Arc<WorkloadCertificates>) -> Self {
        self.workload_certificates = Some(store);
        self
    }

    /// Authenticates with `authenticator` instead of the default (trust
    /// domain cluster.local, client certificates only).
    pub fn with_authenticator(mut self, authenticator: Arc<Authenticator>) -> Self {
        self.authenticator = authenticator;
        self
    }

    /// Refuses streams until `readiness` says every source has loaded,
    /// instead of serving a partial or empty mesh.
    pub fn with_readiness(mut self, readiness: Arc<Readiness>) -> Self {
        self.readiness = readiness;
        self
    }

    /// UNAVAILABLE, saying what pilotfish waits for, while it is not ready:
    /// the proxy retries (or goes to a ready replica).
    fn admit(&self, caller: &Caller) -> Result<(), Status> {
        let Some(reason) = self.readiness.unready_reason() else {
            return Ok(());
        };
        self.metrics.unready_refusals.inc();
        tracing::debug!(peer = ?caller.remote, "xDS stream refused: not ready");
        Err(Status::unavailable(format!(
            "pilotfish is not ready: {reason}"
        )))
    }

    /// Who opened a stream: its address, whether it came over TLS, and its
    /// verified identity. A credential that does not verify, or none on the
    /// TLS port, refuses the stream.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let peer = PeerInfo::of(request);
        let remote = peer
            .and_then(|p| p.remote_addr)
            .or_else(|| request.remote_addr());
        let secure = peer.is_some_and(|p| p.secure);
        let identity = match self.authenticator.authenticate(request).await {
            Ok(identity) => identity,
            Err(status) => {
                self.metrics
                    .security
                    .authentication_failed("bad_credential");
                tracing::warn!(peer = ?remote, error = %status.message(), "xDS stream refused: credential does not verify");
                return Err(status);
            }
        };
        if secure && identity.is_none() && self.require_identity_on_tls {
            self.metrics.security.authentication_failed("no_credential");
            tracing::warn!(peer = ?remote, "xDS stream refused: no client certificate or token on the TLS port");
            return Err(Status::unauthenticated(
                "the secure xDS port needs a client certificate from the mesh CA or a ServiceAccount token (authorization: Bearer)",
            ));
        }
        let connection_aged = request
            .extensions()
            .get::<ConnectionAged>()
            .map(|aged| aged.0.clone())
            .unwrap_or_default();
        Ok(Caller {
            remote,
            secure,
            identity,
            connection_aged,
        })
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

    pub fn into_service(self) -> service::AdsService {
        let max_request_bytes = self.ctx.limits.max_request_bytes;
        service::AdsService::new(self, max_request_bytes, MAX_RESPONSE_BYTES)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl AdsServer {
    /// State of the world (`StreamAggregatedResources`).
    async fn stream_aggregated_resources(
        &self,
        request: Request<RequestStream<SotwRequest>>,
    ) -> Result<Response<ResponseStream<EncodedResponse>>, Status> {
        let caller = self.ctx.caller(&request).await?;
        self.ctx.admit(&caller)?;
        let (tx, rx) = mpsc::channel(limits::RESPONSE_BUFFER);
        let connection =
            stream::Connection::new(self.ctx.clone(), self.ctx.connection_id(), tx, caller);
        tokio::spawn(session::serve(connection, request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    /// Incremental (`DeltaAggregatedResources`).
    async fn delta_aggregated_resources(
        &self,
        request: Request<RequestStream<DeltaRequest>>,
    ) -> Result<Response<ResponseStream<EncodedResponse>>, Status> {
        let caller = self.ctx.caller(&request).await?;
        self.ctx.admit(&caller)?;
        let (tx, rx) = mpsc::channel(limits::RESPONSE_BUFFER);
        let connection = delta_stream::DeltaConnection::new(
            self.ctx.clone(),
            self.ctx.connection_id(),
            tx,
            caller,
        );
        tokio::spawn(session::serve(connection, request.into_inner()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
