//! What every ADS stream does whatever its protocol variant (state of the
//! world or incremental): identify the proxy on its first request, follow
//! mesh generations, number responses, and record pushes, ACKs and NACKs in
//! the sync status and metrics.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::request_stream::RequestStream;

use super::XdsContext;
use super::limits::check_node_size;
use super::rejection::{self, Acceptance, Rejection, SentResponse, Verdict};
use super::requests::{DecodeRequest, decode_node};
use super::workload_secrets::StreamSecrets;
use crate::mesh_store::MeshGeneration;
use crate::metrics::type_label;
use crate::node::{ProxyIdentity, identify};
use crate::proxy_view::view_for;
use crate::quarantine::QuarantineRequest;
use crate::security::WorkloadIdentity;
use crate::security::workload_certificates::is_workload_secret;
use crate::snapshot::{Snapshot, TypeResources};
use crate::status::{ProxyStatus, ResourceNames, TypeStatus};
use crate::xds_types::{XdsProtocol, XdsType};
use bytes::Bytes;

/// Who opened a stream, as far as the server could verify.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub remote: Option<SocketAddr>,
    /// Came over TLS.
    pub secure: bool,
    /// Verified by client certificate or token; `None` for an anonymous
    /// (plaintext) caller.
    pub identity: Option<WorkloadIdentity>,
    /// Cancelled when the stream's connection reached its maximum age
    /// (`--max-connection-age`) and was sent GOAWAY.
    pub connection_aged: CancellationToken,
}

/// What an anonymous caller gets instead of secrets.
static NO_SECRETS: LazyLock<Arc<TypeResources>> = LazyLock::new(Arc::default);

/// One proxy's stream, independent of the protocol variant spoken on it.
pub struct Session<R> {
    pub ctx: Arc<XdsContext>,
    pub id: u64,
    protocol: XdsProtocol,
    caller: Caller,
    /// A refused secret request was logged (once per stream; counted always).
    refusal_logged: bool,
    /// The identity's workload certificate (SDS `default`, `ROOTCA`), once
    /// the proxy asked for it.
    workload_secrets: Option<StreamSecrets>,
    tx: mpsc::Sender<Result<R, Status>>,
    identity: Option<ProxyIdentity>,
    status: Option<Arc<Mutex<ProxyStatus>>>,
    pub generation: Arc<MeshGeneration>,
    nonce: u64,
    /// What the proxy accepted of each type whose resources name their
    /// config objects, to tell what a rejection is down to.
    acceptance: BTreeMap<XdsType, Acceptance>,
}

impl<R> Session<R> {
    pub fn new(
        ctx: Arc<XdsContext>,
        id: u64,
        protocol: XdsProtocol,
        tx: mpsc::Sender<Result<R, Status>>,
        caller: Caller,
    ) -> Self {
        let generation = ctx.generations.borrow().clone();
        Session {
            ctx,
            id,
            protocol,
            caller,
            refusal_logged: false,
            workload_secrets: None,
            tx,
            identity: None,
            status: None,
            generation,
            nonce: 0,
            acceptance: BTreeMap::new(),
        }
    }

    /// Identifies the proxy from the stream's first request (Envoy sets the
    /// node on the first message only).
    pub fn register(&mut self, node: Option<&Bytes>) -> Result<(), Status> {
        if self.identity.is_some() {
            return Ok(());
        }
        // Measured encoded, before anything is decoded or kept.
        check_node_size(node.map_or(0, Bytes::len), self.ctx.limits.max_node_bytes)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let node = decode_node(node)?;
        let node = node.as_ref();
        let mut identity = identify(node).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Mesh mTLS in its config only for a proxy that is served its
        // workload certificate: a proven identity over TLS.
        identity.view.workload_certificate = self.caller.secure && self.caller.identity.is_some();
        if let Some(verified) = &self.caller.identity
            && let Err(mismatch) = identity.matches(verified)
        {
            self.ctx
                .metrics
                .security
                .authentication_failed("identity_mismatch");
            tracing::warn!(connection = self.id, peer = ?self.caller.remote, node = %identity.node_id, identity = %verified, error = %mismatch, "xDS stream refused: node metadata disagrees with the verified identity");
            return Err(Status::permission_denied(format!(
                "node {:?}: {mismatch}; authenticated as {verified}",
                identity.node_id
            )));
        }
        tracing::info!(connection = self.id, node = %identity.node_id, namespace = %identity.view.namespace, protocol = ?self.protocol, peer = ?self.caller.remote, identity = ?self.caller.identity.as_ref().map(WorkloadIdentity::spiffe_uri), "proxy connected");
        let connected_at_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.status = Some(
            self.ctx.status.register(ProxyStatus {
                connection_id: self.id,
                identity: identity.clone(),
                protocol: self.protocol,
                verified_identity: self
                    .caller
                    .identity
                    .as_ref()
                    .map(WorkloadIdentity::spiffe_uri),
                secure: self.caller.secure,
                connected_at_unix,
                mesh_version: self.generation.version,
                types: BTreeMap::new(),
            }),
        );
        self.ctx.metrics.connected_proxies.inc();
        self.identity = Some(identity);
        Ok(())
    }

    /// The snapshot of this proxy's view for the current generation; `None`
    /// before the proxy identified itself. Built off the async workers.
    pub async fn snapshot(&self) -> Option<Arc<Snapshot>> {
        let identity = self.identity.as_ref()?;
        let view = view_for(identity, &self.generation.inbound);
        Some(self.ctx.cache.snapshot_async(&self.generation, &view).await)
    }

    /// The resources of `ty` this stream may receive from `snapshot`:
    /// secrets only for a caller whose verified identity is of the proxy's
    /// namespace (checked at registration), with its own workload
    /// certificate once it asked for it; everything else for anyone.
    pub fn resources(&mut self, snapshot: &Snapshot, ty: XdsType) -> Arc<TypeResources> {
        if ty != XdsType::Secret {
            return snapshot.of_shared(ty).clone();
        }
        if !self.may_hold_secrets() {
            return NO_SECRETS.clone();
        }
        match &mut self.workload_secrets {
            Some(workload) => workload.merge(snapshot.of_shared(ty)),
            None => snapshot.of_shared(ty).clone(),
        }
    }

    /// Resolves when this stream's workload certificate is renewed (never
    /// if it holds none); borrows nothing of the session.
    pub fn workload_renewal(&self) -> impl Future<Output = ()> + Send + 'static {
        let renewed = self.workload_secrets.as_ref().map(StreamSecrets::renewed);
        async move {
            match renewed {
                Some(renewed) => renewed.await,
                None => std::future::pending().await,
            }
        }
    }

    /// Issues (or shares) the verified identity's workload certificate the
    /// first time the proxy asks for `default` or `ROOTCA`; only ever for
    /// a caller that may hold secrets.
    fn hold_workload_certificate<N: AsRef<[u8]>>(&mut self, names: &[N]) {
        if self.workload_secrets.is_some()
            || !names
                .iter()
                .any(|n| std::str::from_utf8(n.as_ref()).is_ok_and(is_workload_secret))
        {
            return;
        }
        let (Some(store), Some(identity)) = (
            &self.ctx.workload_certificates,
            self.caller.identity.as_ref(),
        ) else {
            return;
        };
        match store.acquire(identity) {
            Ok(lease) => self.workload_secrets = Some(StreamSecrets::new(lease)),
            Err(error) => {
                tracing::warn!(connection = self.id, %identity, %error, "cannot issue a workload certificate; default and ROOTCA stay unanswered")
            }
        }
    }

    fn may_hold_secrets(&self) -> bool {
        self.caller.secure && self.caller.identity.is_some() && self.identity.is_some()
    }

    /// Logs (once per stream) and counts a secret request that will be
    /// answered without secrets; names only, never key material.
    pub fn note_request<N: AsRef<[u8]>>(&mut self, ty: XdsType, names: &[N]) {
        if ty != XdsType::Secret {
            return;
        }
        if self.may_hold_secrets() {
            self.hold_workload_certificate(names);
            return;
        }
        let reason = if self.caller.secure {
            "unauthenticated"
        } else {
            "plaintext"
        };
        self.ctx.metrics.security.secret_refused(reason);
        if !self.refusal_logged {
            self.refusal_logged = true;
            tracing::warn!(
                connection = self.id,
                peer = ?self.caller.remote,
                node = ?self.identity.as_ref().map(|i| &i.node_id),
                reason,
                secrets = ?names.iter().map(|n| String::from_utf8_lossy(n.as_ref())).collect::<Vec<_>>(),
                "secrets refused: they are served only over TLS to a proxy authenticated in their namespace"
            );
        }
    }

    /// A nonce unique on this server: connection id and response count.
    pub fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        format!("{}-{}", self.id, self.nonce)
    }

    /// The proxy accepted a response (`sent`, for the types whose
    /// resources name their config objects).
    pub fn record_ack(&mut self, ty: XdsType, version: &str, sent: Option<&SentResponse>) {
        let settled = sent.is_some_and(|sent| self.acceptance.entry(ty).or_default().accept(sent));
        self.update_status(ty, |s| {
            s.acked_version = Some(version.to_string());
            s.last_response_rejected = false;
            if settled {
                s.rejected = None;
            }
        });
    }

    /// The proxy rejected a response: logged, counted, and put down to the
    /// config objects that fed it; when one object is at fault, it is left
    /// out of pushes (if this proxy may cause that).
    pub fn record_nack(
        &mut self,
        ty: XdsType,
        version: &str,
        message: &str,
        sent: Option<&SentResponse>,
    ) {
        let rejection = sent.map(|sent| {
            let acceptance = self.acceptance.entry(ty).or_default();
            rejection::attribute(ty, acceptance, sent, &self.generation, message)
        });
        let node = self.node_id();
        let listed =
            |field: fn(&Rejection) -> &Vec<String>| rejection.as_ref().map(|r| field(r).join(", "));
        // Logged once per rejected response; the same content is not re-sent.
        tracing::warn!(
            node,
            r#type = ty.short(),
            rejected_version = version,
            error = message,
            resources = listed(|r| &r.resources),
            config = listed(|r| &r.config),
            changed = listed(|r| &r.changed),
            verdict = ?rejection.as_ref().map(|r| &r.verdict),
            "proxy rejected config (NACK)"
        );
        self.ctx
            .metrics
            .nacks
            .get_or_create(&type_label(ty.short()))
            .inc();
        if let Some(rejection) = &rejection {
            self.leave_out(rejection);
        }
        self.update_status(ty, |s| {
            s.last_nack = Some(message.to_string());
            s.nacks += 1;
            s.last_response_rejected = true;
            if rejection.is_some() {
                s.rejected = rejection;
            }
        });
    }

    /// Asks the push scheduler to leave out the object `rejection` is
    /// down to, if any, and if this proxy's rejections may do that.
    fn leave_out(&self, rejection: &Rejection) {
        let Verdict::Object(key) = &rejection.verdict else {
            return;
        };
        let node = self.node_id();
        let Some(sink) = &self.ctx.quarantine else {
            return;
        };
        if !sink.policy.allows(self.caller.identity.is_some()) {
            tracing::warn!(node, object = %key, policy = ?sink.policy, "the rejection is down to this object, but this proxy's rejections may not leave config out (--quarantine-rejected-config)");
            return;
        }
        let config = &self.generation.mesh.config;
        if let Some(object) = config.iter().find(|o| o.key() == *key) {
            sink.request(QuarantineRequest {
                object: object.clone(),
                proxy: node.to_string(),
                message: rejection.message.clone(),
            });
        }
    }

    fn node_id(&self) -> &str {
        self.identity
            .as_ref()
            .map(|i| i.node_id.as_str())
            .unwrap_or_default()
    }

    /// Records a response about to be sent; `names` are the resources of the
    /// type the proxy holds once it applies the response.
    pub fn record_push(&self, ty: XdsType, version: &str, nonce: &str, names: ResourceNames) {
        tracing::debug!(connection = self.id, node = ?self.identity.as_ref().map(|i| &i.node_id), r#type = ty.short(), %version, "push");
        self.ctx
            .metrics
            .pushes
            .get_or_create(&type_label(ty.short()))
            .inc();
        self.update_status(ty, |s| {
            s.sent_version = Some(version.to_string());
            s.sent_nonce = Some(nonce.to_string());
            s.pushes += 1;
            s.last_push_unix_ms = Some(crate::status::unix_millis());
            s.resource_names = names;
        });
    }

    /// Counts the resources a response of `ty` carries and their bytes.
    pub fn count_sent(&self, ty: XdsType, resources: usize, bytes: usize) {
        let label = type_label(ty.short());
        let metrics = &self.ctx.metrics;
        metrics
            .resources_sent
            .get_or_create(&label)
            .inc_by(resources as u64);
        metrics
            .resource_bytes_sent
            .get_or_create(&label)
            .inc_by(bytes as u64);
    }

    /// Records the resources of a type the proxy holds after it changed its
    /// subscription (an unsubscribe is not answered, so no push records it).
    pub fn record_names(&self, ty: XdsType, names: ResourceNames) {
        self.update_status(ty, |s| s.resource_names = names);
    }

    /// Records that every type is up to date with the current generation.
    pub fn record_generation(&self) {
        if let Some(status) = &self.status {
            status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .mesh_version = self.generation.version;
        }
    }

    fn update_status(&self, ty: XdsType, f: impl FnOnce(&mut TypeStatus)) {
        if let Some(status) = &self.status {
            let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
            f(status.types.entry(ty).or_default());
        }
    }

    /// Queues a response; a proxy that leaves it unread for longer than
    /// the send timeout is stalled, and its stream is closed.
    pub async fn send(&self, response: R) -> Result<(), Status> {
        let timeout = self.ctx.limits.stream_send_timeout;
        match tokio::time::timeout(timeout, self.tx.send(Ok(response))).await {
            Ok(sent) => sent.map_err(|_| Status::cancelled("stream closed")),
            Err(_) => Err(self.stalled()),
        }
    }

    fn stalled(&self) -> Status {
        let node = self.identity.as_ref().map(|i| i.node_id.as_str());
        let timeout = self.ctx.limits.stream_send_timeout;
        tracing::warn!(
            connection = self.id,
            node,
            ?timeout,
            "proxy does not read its responses; closing the stream"
        );
        self.ctx.metrics.stalled_streams.inc();
        Status::deadline_exceeded(format!("responses unread for {timeout:?}"))
    }

    fn close(&self) {
        if let Some(identity) = &self.identity {
            tracing::info!(connection = self.id, node = %identity.node_id, "proxy disconnected");
            self.ctx.status.remove(self.id);
            self.ctx.metrics.connected_proxies.dec();
        }
        crate::memory::note_release();
    }
}

/// A protocol variant spoken on a [`Session`].
pub trait Protocol: Send {
    type Request: DecodeRequest + Send + 'static;
    type Response: Send + 'static;

    fn session(&mut self) -> &mut Session<Self::Response>;

    /// Handles one request; an error closes the stream with that status.
    fn on_request(
        &mut self,
        request: Self::Request,
    ) -> impl Future<Output = Result<(), Status>> + Send;

    /// Pushes what changed with the session's (new) generation.
    fn push_changed(&mut self) -> impl Future<Output = Result<(), Status>> + Send;
}

/// Serves one stream until the proxy or the server goes away: requests as
/// they come, and a push per new mesh generation.
pub async fn serve<P: Protocol>(mut protocol: P, mut requests: RequestStream<P::Request>) {
    let mut generations = protocol.session().ctx.generations.clone();
    // The newest generation, marked seen. The session took the one current
    // when the stream was accepted; one published since (before this task
    // ran) must not be marked seen without being taken, or the proxy would
    // wait for the next change to get it.
    protocol.session().generation = generations.borrow_and_update().clone();
    let shutdown = protocol.session().ctx.shutdown.clone();
    let aged = protocol.session().caller.connection_aged.clone();
    loop {
        let renewed = protocol.session().workload_renewal();
        tokio::select! {
            _ = shutdown.cancelled() => {
                // UNAVAILABLE makes Envoy reconnect (to another replica),
                // keeping the configuration it has meanwhile.
                let session = protocol.session();
                let _ = session.tx.try_send(Err(Status::unavailable("pilotfish is shutting down; reconnect")));
                break;
            }
            _ = aged.cancelled() => {
                // The connection was sent GOAWAY at its maximum age: the
                // stream ends after the responses queued on it, never inside
                // one, and Envoy, keeping its configuration, reconnects on a
                // new connection (through the Service, to any replica).
                let session = protocol.session();
                tracing::debug!(connection = session.id, node = session.node_id(), "connection reached its maximum age; ending the stream");
                let status = Status::unavailable("the connection reached its maximum age (--max-connection-age); reconnect");
                let _ = tokio::time::timeout(session.ctx.limits.stream_send_timeout, session.tx.send(Err(status))).await;
                break;
            }
            message = requests.message() => match message {
                Ok(Some(request)) => {
                    if let Err(status) = protocol.on_request(request).await {
                        let session = protocol.session();
                        tracing::warn!(connection = session.id, peer = ?session.caller.remote, error = %status.message(), "closing ADS stream");
                        // Never waits: the buffer may be full of unread responses.
                        let _ = session.tx.try_send(Err(status));
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(connection = protocol.session().id, error = %e, "ADS stream ended");
                    // Tells a client whose request was refused (too large) why.
                    let _ = protocol.session().tx.try_send(Err(e));
                    break;
                }
            },
            changed = generations.changed() => {
                if changed.is_err() {
                    break;
                }
                protocol.session().generation = generations.borrow_and_update().clone();
                if protocol.push_changed().await.is_err() {
                    break;
                }
                protocol.session().record_generation();
            }
            _ = renewed => {
                // Pushed at once, not with the next mesh change: only the
                // renewed `default` differs.
                if let Some(workload) = &mut protocol.session().workload_secrets {
                    workload.mark_seen();
                }
                if protocol.push_changed().await.is_err() {
                    break;
                }
            }
        }
    }
    protocol.session().close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ads::stream::Connection;
    use crate::metrics::Metrics;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use futures::StreamExt;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use prost::Message;
    use tokio::sync::watch;

    const NODE: &str = "sidecar~10.0.0.1~a.default~default.svc.cluster.local";

    fn generation(version: u64) -> Arc<MeshGeneration> {
        Arc::new(MeshGeneration {
            version,
            ..Default::default()
        })
    }

    /// A request body holding one framed LDS request, then staying open as
    /// a proxy's does.
    fn one_request() -> RequestStream<crate::ads::requests::SotwRequest> {
        let request = DiscoveryRequest {
            node: Some(Node {
                id: NODE.into(),
                ..Default::default()
            }),
            type_url: XdsType::Listener.type_url(),
            ..Default::default()
        };
        let encoded = request.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        framed.extend_from_slice(&encoded);
        let frames = futures::stream::iter([Ok::<_, Status>(Frame::data(Bytes::from(framed)))])
            .chain(futures::stream::pending());
        RequestStream::new(StreamBody::new(frames), 1 << 20)
    }

    #[tokio::test]
    async fn a_generation_published_between_accepting_a_stream_and_serving_it_is_served() {
        let (publish, generations) = watch::channel(generation(1));
        let ctx = Arc::new(XdsContext::new(Arc::new(Metrics::new()), generations));
        let (tx, mut responses) = mpsc::channel(16);
        let caller = Caller {
            remote: None,
            secure: false,
            identity: None,
            connection_aged: CancellationToken::new(),
        };
        // Accepted (the session takes generation 1), then generation 2 is
        // published before the stream's task first runs.
        let connection = Connection::new(ctx.clone(), 1, tx, caller);
        publish.send(generation(2)).expect("a receiver is alive");
        let task = tokio::spawn(serve(connection, one_request()));
        assert!(responses.recv().await.is_some(), "an LDS response");
        let status = ctx.status.find(NODE).expect("the proxy is listed");
        assert_eq!(
            status.mesh_version, 2,
            "the stream serves the newest generation, not the one current when it was accepted"
        );
        task.abort();
    }
}
