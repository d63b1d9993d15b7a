//! An in-process ADS server over a temp config directory and registry file,
//! for the protocol tests of both ADS variants (SotW and delta).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use pilotfish_discovery::ads::limits::with_http2_limits;
use pilotfish_discovery::ads::{AdsServer, XdsContext, XdsLimits};
use pilotfish_discovery::incoming::{self, IncomingLimits};
use pilotfish_discovery::mesh_store::{MeshGeneration, MeshStore};
use pilotfish_discovery::metrics::Metrics;
use pilotfish_discovery::push::{Change, publish};
use pilotfish_discovery::quarantine::{QuarantinePolicy, QuarantineSink};
use pilotfish_discovery::security::WorkloadIdentity;
use pilotfish_discovery::security::ca::CertificateAuthority;
use pilotfish_discovery::security::server_tls::{self, ServingCertificate};
use pilotfish_discovery::sources::config_dir::ConfigDirs;
use pilotfish_discovery::sources::registry_files::RegistryFiles;
use pilotfish_translate::MeshConfig;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub const REGISTRY: &str = r#"
services:
- hostname: reviews.default.svc.cluster.local
  addresses: [127.1.0.1]
  ports: [{name: http, port: 9080}]
  endpoints: [{address: 127.0.0.11, labels: {version: v1}}]
"#;

/// The reviews cluster (and its ClusterLoadAssignment).
pub const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";

/// The node id test clients connect with.
pub const NODE_ID: &str = "sidecar~127.0.0.1~test.default~default.svc.cluster.local";

pub fn node() -> Option<Node> {
    Some(Node {
        id: NODE_ID.into(),
        ..Default::default()
    })
}

pub struct Harness {
    _dir: TempDir,
    pub config_dir: PathBuf,
    pub registry: PathBuf,
    pub store: MeshStore,
    pub ctx: Arc<XdsContext>,
    pub tx: watch::Sender<Arc<MeshGeneration>>,
    /// Plaintext ADS (config only).
    pub addr: std::net::SocketAddr,
    /// ADS over TLS, with client certificates from `ca`.
    pub secure_addr: std::net::SocketAddr,
    pub ca: Arc<CertificateAuthority>,
    stop: CancellationToken,
}

/// How a test client proves who it is on the secure port.
pub enum Credential<'a> {
    None,
    /// A workload certificate from the harness CA.
    Certificate(&'a WorkloadIdentity),
    /// A client certificate from another CA (refused in the handshake).
    ForeignCertificate(&'a WorkloadIdentity),
}

impl Harness {
    /// Rewrites the registry file and publishes the new generation.
    pub fn set_registry(&mut self, yaml: &str) {
        std::fs::write(&self.registry, yaml).expect("rewrite registry");
        self.publish();
    }

    /// Writes one config file and publishes the new generation.
    pub fn set_config(&mut self, file_name: &str, yaml: &str) {
        std::fs::write(self.config_dir.join(file_name), yaml).expect("write config");
        self.publish();
    }

    /// Publishes the current inputs (files read again, as after a watcher
    /// event); true when that made a new generation.
    pub fn publish(&mut self) -> bool {
        self.store.note_files_changed();
        publish(&mut self.store, &self.ctx, &self.tx)
    }

    /// A channel to the plaintext port.
    pub async fn plaintext_channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect to plaintext ADS")
    }

    /// A channel to the secure port presenting `credential`; the server is
    /// verified against the harness CA as `localhost`.
    pub async fn secure_channel(
        &self,
        credential: Credential<'_>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.root_pem()))
            .domain_name("localhost");
        let issued = match credential {
            Credential::None => None,
            Credential::Certificate(id) => Some(
                self.ca
                    .issue_workload(id, Duration::from_secs(3600))
                    .expect("issue"),
            ),
            Credential::ForeignCertificate(id) => Some(
                CertificateAuthority::generate("cluster.local")
                    .expect("another CA")
                    .issue_workload(id, Duration::from_secs(3600))
                    .expect("issue"),
            ),
        };
        if let Some(issued) = issued {
            tls = tls.identity(Identity::from_pem(issued.chain_pem, issued.key_pem));
        }
        Channel::from_shared(format!("https://{}", self.secure_addr))
            .expect("uri")
            .tls_config(tls)
            .expect("tls config")
            .connect()
            .await
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A directory removed on drop (no extra crate for one helper).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub async fn start() -> Harness {
    start_with(REGISTRY).await
}

/// A harness on the file registry `registry_yaml`.
pub async fn start_with(registry_yaml: &str) -> Harness {
    start_with_limits(registry_yaml, XdsLimits::default()).await
}

/// A harness on the file registry `registry_yaml`, serving with `limits`
/// and the HTTP/2 settings of `pilotfish serve`.
pub async fn start_with_limits(registry_yaml: &str, limits: XdsLimits) -> Harness {
    start_configured(registry_yaml, limits, |ctx| ctx).await
}

/// A harness on [`REGISTRY`] whose streams send the config objects
/// rejections are down to, as `policy` allows, to the returned receiver.
pub async fn start_with_quarantine(
    policy: QuarantinePolicy,
) -> (Harness, mpsc::UnboundedReceiver<Change>) {
    let (changes, received) = mpsc::unbounded_channel();
    let sink = QuarantineSink::new(policy, changes);
    let harness = start_configured(REGISTRY, XdsLimits::default(), |ctx| {
        ctx.with_quarantine(sink)
    })
    .await;
    (harness, received)
}

/// A harness on [`REGISTRY`] whose context `configure` completes (e.g.
/// with a workload certificate store).
pub async fn start_with_context(configure: impl FnOnce(XdsContext) -> XdsContext) -> Harness {
    start_configured(REGISTRY, XdsLimits::default(), configure).await
}

async fn start_configured(
    registry_yaml: &str,
    limits: XdsLimits,
    configure: impl FnOnce(XdsContext) -> XdsContext,
) -> Harness {
    let dir = std::env::temp_dir().join(format!(
        "pf-ads-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let config_dir = dir.join("config");
    std::fs::create_dir_all(&config_dir).expect("temp dir");
    let registry = dir.join("registry.yaml");
    std::fs::write(&registry, registry_yaml).expect("write registry");
    let mut store = MeshStore::new(
        ConfigDirs::new(vec![config_dir.clone()], "default"),
        RegistryFiles::new(vec![registry.clone()]),
        MeshConfig::default(),
    );
    let (tx, rx) = watch::channel(Arc::new(MeshGeneration::default()));
    let ctx = Arc::new(configure(XdsContext::with_limits(
        Arc::new(Metrics::new()),
        rx,
        limits,
    )));
    publish(&mut store, &ctx, &tx);
    // Both ports as `pilotfish serve` runs them: the same accept loops,
    // the secure one with TLS from a mesh CA.
    let stop = CancellationToken::new();
    let ca = Arc::new(CertificateAuthority::generate("cluster.local").expect("mesh CA"));
    let serve = |tls: Option<tokio_rustls::TlsAcceptor>| {
        let listener = incoming::bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = incoming::incoming(
            listener,
            tls,
            IncomingLimits::default(),
            ctx.metrics.clone(),
            stop.clone(),
        );
        tokio::spawn(
            with_http2_limits(tonic::transport::Server::builder())
                .add_service(AdsServer::new(ctx.clone()).into_service())
                .serve_with_incoming_shutdown(connections, stop.clone().cancelled_owned()),
        );
        addr
    };
    let addr = serve(None);
    let tls = server_tls::server_config(
        ServingCertificate::Issued {
            ca: ca.clone(),
            dns_names: vec!["localhost".into()],
            ips: vec![],
            ttl: Duration::from_secs(3600),
        },
        ca.root_pem(),
        Duration::from_secs(5),
        stop.clone(),
    )
    .expect("server TLS");
    let secure_addr = serve(Some(tokio_rustls::TlsAcceptor::from(tls)));
    Harness {
        _dir: TempDir(dir),
        config_dir,
        registry,
        store,
        ctx,
        tx,
        addr,
        secure_addr,
        ca,
        stop,
    }
}

/// The next message on a response stream, within 5 s.
pub async fn next_message<T>(responses: &mut Streaming<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("a response within 5s")
        .expect("stream healthy")
        .expect("stream open")
}

/// Asserts nothing arrives for a while (bounded: proving a negative).
pub async fn expect_silence<T: std::fmt::Debug>(responses: &mut Streaming<T>, wait: Duration) {
    if let Ok(msg) = tokio::time::timeout(wait, responses.message()).await {
        panic!("expected no response, got {msg:?}");
    }
}

/// A stream's request sender and its responses.
pub type Stream<Req, Resp> = (tokio::sync::mpsc::Sender<Req>, Streaming<Resp>);

/// A connection to the harness, as Envoy opens one.
pub async fn channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    endpoint(addr).connect().await.expect("connect to ADS")
}

/// A connection with the smallest HTTP/2 receive windows, so that not
/// reading its responses soon stops the server from sending.
pub async fn narrow_channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    endpoint(addr)
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect to ADS")
}

fn endpoint(addr: std::net::SocketAddr) -> tonic::transport::Endpoint {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}")).expect("endpoint address")
}

/// Opens a state-of-the-world ADS stream on `channel`.
pub async fn open_sotw(
    channel: tonic::transport::Channel,
) -> Result<Stream<DiscoveryRequest, DiscoveryResponse>, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let responses = AggregatedDiscoveryServiceClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, responses))
}

/// Opens an incremental ADS stream on `channel`.
pub async fn open_delta(
    channel: tonic::transport::Channel,
) -> Result<Stream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let responses = AggregatedDiscoveryServiceClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, responses))
}

/// Polls `probe` until it succeeds, panicking with its last reason after
/// `timeout` (the async form of the e2e support's `wait_until`).
pub async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = tokio::time::Instant::now();
    loop {
        match probe() {
            Ok(value) => return value,
            Err(reason) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {reason}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// A state-of-the-world ADS stream, as a test client playing Envoy.
pub struct SotwClient {
    pub requests: tokio::sync::mpsc::Sender<DiscoveryRequest>,
    pub responses: Streaming<DiscoveryResponse>,
}

impl SotwClient {
    /// A stream over plaintext to `addr`.
    pub async fn connect(addr: std::net::SocketAddr) -> SotwClient {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to ADS");
        SotwClient::on(channel).await
    }

    /// A stream on `channel` (e.g. a TLS one).
    pub async fn on(channel: Channel) -> SotwClient {
        let (requests, rx) = tokio::sync::mpsc::channel(16);
        let responses = AggregatedDiscoveryServiceClient::new(channel)
            .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("open stream")
            .into_inner();
        SotwClient {
            requests,
            responses,
        }
    }

    pub async fn send(&self, request: DiscoveryRequest) {
        self.requests.send(request).await.expect("send request");
    }

    pub async fn next(&mut self) -> DiscoveryResponse {
        next_message(&mut self.responses).await
    }

    /// Asserts nothing arrives for a while (bounded: proving a negative).
    pub async fn expect_silence(&mut self, wait: Duration) {
        expect_silence(&mut self.responses, wait).await
    }
}
