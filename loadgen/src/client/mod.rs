//! One simulated sidecar: its own HTTP/2 connection and ADS stream, the
//! subscriptions Envoy makes, an ACK for every response, and a record of
//! what arrived when. The protocol variants differ only in message shapes
//! (see `variants`).

pub mod follow;
pub mod record;
mod variants;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use crate::inspect::{Inspector, XdsType, content_key};
use follow::{Follower, Step, Update};
pub use record::{ActiveChange, ChangeWatch, Progress, StreamRecord};
use record::{Recorder, ResponseSize};

/// Envoy's default HTTP/2 windows for its gRPC clients (256 MiB), so large
/// state-of-the-world responses are not throttled by flow control.
const WINDOW_BYTES: u32 = 256 * 1024 * 1024;
/// Responses can be large (every cluster of a big mesh in one message).
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_ATTEMPTS: u32 = 5;
const REQUEST_QUEUE: usize = 16;
/// Pause before a proxy reopens a stream the server ended, plus up to
/// `RECONNECT_JITTER_MS` spread over the proxies.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
const RECONNECT_JITTER_MS: u64 = 400;
/// Reconnects per proxy in one run (a run restarts or kills a server once).
const MAX_RECONNECTS: u32 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// State of the world (Envoy's `api_type: GRPC`).
    Sotw,
    /// Incremental (`DELTA_GRPC`).
    Delta,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Sotw => "SotW",
            Protocol::Delta => "delta",
        }
    }
}

/// What every client shares.
pub struct Shared {
    /// The replicas' ADS addresses, as Envoy's xds-grpc cluster lists them.
    pub targets: Vec<SocketAddr>,
    pub protocol: Protocol,
    pub views: usize,
    pub rounds: usize,
    pub inspector: Inspector,
    pub progress: Arc<Progress>,
    pub change: ChangeWatch,
    pub stop: watch::Receiver<bool>,
    /// No stream outlives this.
    pub deadline: Instant,
    /// Reopen a stream the server ends (`--restart`, `--kill-replica`).
    pub reconnect: bool,
}

/// Runs proxy `index` until told to stop, the deadline, or a stream error.
pub async fn run(index: usize, shared: Arc<Shared>) -> StreamRecord {
    match shared.protocol {
        Protocol::Sotw => proxy::<variants::Sotw>(index, &shared).await,
        Protocol::Delta => proxy::<variants::Delta>(index, &shared).await,
    }
}

/// One proxy's streams. What it holds (the follower's subscriptions, the
/// variant's versions) outlives a stream, as Envoy keeps its config when
/// its control plane goes away.
async fn proxy<V: Variant>(index: usize, shared: &Shared) -> StreamRecord {
    let mut recorder = Recorder::new(
        shared.rounds,
        shared.progress.clone(),
        shared.change.clone(),
    );
    recorder.start();
    let node = crate::node::sidecar_node(index, shared.views);
    let mut variant = V::new(shared.reconnect);
    let mut follower = Follower::default();
    // First connections alternate over the replicas, as a load balancer
    // spreads them.
    let mut replica = index % shared.targets.len().max(1);
    loop {
        let node = node.clone();
        let outcome = drive(
            &mut variant,
            &mut follower,
            node,
            shared,
            &mut recorder,
            &mut replica,
        );
        let Err(error) = outcome.await else { break };
        // As Envoy does, a synced proxy whose stream the server ended opens
        // a new one after a jittered pause, on the next host of its list.
        let reconnect = shared.reconnect
            && recorder.record.sync_time.is_some()
            && error.ended_by_server
            && recorder.record.reconnects < MAX_RECONNECTS;
        if reconnect {
            recorder.lost();
            replica = next_replica(replica, shared);
            let jitter = Duration::from_millis(RECONNECT_JITTER_MS * (index as u64 % 16) / 16);
            tokio::time::sleep(RECONNECT_PAUSE + jitter).await;
            continue;
        }
        tracing::debug!(proxy = index, error = %error.message, "stream ended");
        recorder.ended(error.message);
        break;
    }
    recorder.record
}

fn next_replica(replica: usize, shared: &Shared) -> usize {
    (replica + 1) % shared.targets.len().max(1)
}

/// How a stream ended against our will.
struct StreamEnd {
    message: String,
    /// The server closed or reset it (rather than a local failure).
    ended_by_server: bool,
}

impl From<String> for StreamEnd {
    fn from(message: String) -> Self {
        StreamEnd {
            message,
            ended_by_server: false,
        }
    }
}

impl From<&str> for StreamEnd {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

fn by_server(message: String) -> StreamEnd {
    StreamEnd {
        message,
        ended_by_server: true,
    }
}

/// A response as the protocol-independent part of a client needs it.
pub struct Received<'a> {
    pub ty: XdsType,
    pub bytes: usize,
    /// Identifies the content (see [`content_key`]).
    pub key: u64,
    pub resources: Vec<&'a Any>,
    /// `None` for state of the world (the response replaces everything).
    pub removed: Option<&'a [String]>,
}

/// An ADS protocol variant: how steps become requests and responses are read.
pub trait Variant: Send {
    type Request: Send + 'static;
    type Response: Send + 'static;

    /// A proxy's variant; `reconnects` when it may open more than one
    /// stream (and so must remember what it holds).
    fn new(reconnects: bool) -> Self;

    fn request(&mut self, step: &Step, follower: &Follower, node: Option<Node>) -> Self::Request;

    /// A new stream opens: forget the previous stream's nonces.
    fn new_stream(&mut self);

    /// Reads a response (and remembers its nonce and version for the ACK).
    fn read<'a>(&mut self, response: &'a Self::Response) -> Option<Received<'a>>;

    fn open(
        channel: Channel,
        requests: ReceiverStream<Self::Request>,
    ) -> impl Future<Output = Result<Streaming<Self::Response>, tonic::Status>> + Send;
}

/// Connects with a few retries (as Envoy would retry), counting failures;
/// a failed attempt tries the next replica, as Envoy's cluster picks
/// another host. `replica` ends as the one connected to.
async fn connect(
    shared: &Shared,
    replica: &mut usize,
    recorder: &mut Recorder,
) -> Result<Channel, String> {
    let mut last_error = String::new();
    for attempt in 1..=CONNECT_ATTEMPTS {
        let target = shared
            .targets
            .get(*replica)
            .ok_or("no replica to connect to")?;
        let endpoint = Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .initial_stream_window_size(WINDOW_BYTES)
            .initial_connection_window_size(WINDOW_BYTES);
        match endpoint.connect().await {
            Ok(channel) => {
                recorder.connected_to(*replica);
                return Ok(channel);
            }
            Err(error) => {
                recorder.connect_failed();
                last_error = format!("connect: {error}");
                *replica = next_replica(*replica, shared);
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
            }
        }
    }
    Err(last_error)
}

/// The stream's life: connect, subscribe as Envoy does, ACK everything,
/// record, until stopped (`Ok`) or failed (`Err`).
async fn drive<V: Variant>(
    variant: &mut V,
    follower: &mut Follower,
    node: Node,
    shared: &Shared,
    recorder: &mut Recorder,
    replica: &mut usize,
) -> Result<(), StreamEnd> {
    let channel = connect(shared, replica, recorder).await?;
    variant.new_stream();
    let (requests, queue) = mpsc::channel(REQUEST_QUEUE);
    // Envoy sets the node on the first request of a stream only.
    let mut node = Some(node);
    for step in follower.open() {
        let request = variant.request(&step, follower, node.take());
        requests
            .send(request)
            .await
            .map_err(|_| "request queue closed")?;
    }
    let mut responses = V::open(channel, ReceiverStream::new(queue))
        .await
        .map_err(|status| by_server(format!("open stream: {status}")))?;
    let mut stop = shared.stop.clone();
    loop {
        let response = tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = tokio::time::sleep_until(shared.deadline) => return Err("deadline reached".into()),
            message = responses.message() => match message {
                Ok(Some(response)) => response,
                Ok(None) => return Err(by_server("server closed the stream".into())),
                Err(status) => return Err(by_server(format!("stream reset: {status}"))),
            },
        };
        let Some(received) = variant.read(&response) else {
            continue;
        };
        let inspector = &shared.inspector;
        let (key, ty) = (received.key, received.ty);
        let size = ResponseSize {
            ty,
            bytes: received.bytes,
            resources: received.resources.len(),
        };
        recorder.received(size, |probe| {
            inspector.shows(key, probe, received.resources.iter().copied())
        });
        let references = inspector.references(key, ty, received.resources.iter().copied());
        let update = match received.removed {
            None => Update::Replace(&references),
            Some(removed) => Update::Merge {
                changed: &references,
                removed,
            },
        };
        for step in follower.on_response(ty, update) {
            let request = variant.request(&step, follower, None);
            requests
                .send(request)
                .await
                .map_err(|_| "request queue closed")?;
        }
        recorder.check_synced(follower.synced());
    }
}

/// Content key of a state-of-the-world response: the server's version is
/// a hash of the content it sent.
fn sotw_key(type_url: &str, version: &str) -> u64 {
    content_key(type_url, version, std::iter::empty(), &[])
}
