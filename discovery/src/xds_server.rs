//! The xDS ports' HTTP/2 server: tonic's routes, served connection by
//! connection so that each connection can be given a maximum age
//! (`--max-connection-age`, Istio's `--keepaliveMaxServerConnectionAge`).
//!
//! A connection's age is the configured value ± up to 10 % at random, so
//! proxies that connected together do not all reconnect together. When it
//! is reached the connection is sent HTTP/2 GOAWAY (no new streams) and its
//! ADS streams end with `UNAVAILABLE` once the responses already queued on
//! them are written, never in the middle of one; Envoy keeps its
//! configuration and reconnects on a new connection, through the Service, to
//! any replica. A connection still open `--max-connection-age-grace` later
//! is closed. Shutdown sends every connection GOAWAY and waits for them.

use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::service::Routes;
use tonic::transport::server::Connected;

use crate::ads::limits::http2_settings;
use crate::incoming::PeerStream;
use crate::metrics::Metrics;
use crate::security::PeerInfo;

/// Istio's default `--keepaliveMaxServerConnectionAge`.
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(30 * 60);
/// How long an aged connection may stay open after its GOAWAY.
pub const DEFAULT_MAX_CONNECTION_AGE_GRACE: Duration = Duration::from_secs(10);
/// A connection's age differs from the configured one by at most this share.
pub const AGE_JITTER: f64 = 0.1;

/// How long xDS connections may live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionAge {
    /// `None`: connections live as long as their peers keep them.
    pub max: Option<Duration>,
    /// After the GOAWAY, how long before the connection is closed anyway;
    /// `None`: it may stay as long as its streams do.
    pub grace: Option<Duration>,
}

impl Default for ConnectionAge {
    fn default() -> Self {
        ConnectionAge {
            max: Some(DEFAULT_MAX_CONNECTION_AGE),
            grace: Some(DEFAULT_MAX_CONNECTION_AGE_GRACE),
        }
    }
}

/// On every request of a connection: cancelled when the connection reached
/// its maximum age and was sent GOAWAY, so its streams end.
#[derive(Clone, Debug, Default)]
pub struct ConnectionAged(pub CancellationToken);

/// `base` moved by up to ±[`AGE_JITTER`] of itself: `unit` (in `[0, 1]`)
/// picks where, 0 the shortest and 1 the longest.
pub fn jittered(base: Duration, unit: f64) -> Duration {
    let unit = unit.clamp(0.0, 1.0);
    base.mul_f64(1.0 + AGE_JITTER * (2.0 * unit - 1.0))
}

/// A random number in `[0, 1)`: the standard library's randomly keyed hasher
/// (new keys for each [`RandomState`]) is random enough to spread ages.
fn random_unit() -> f64 {
    let bits = RandomState::new().hash_one(0u8);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// A duration as Go writes them (`30m`, `1h30m`, `5s`, `500ms`); `off`
/// or a zero duration is `None`: no limit.
pub fn parse_optional_duration(text: &str) -> Result<Option<Duration>, String> {
    if text.trim() == "off" {
        return Ok(None);
    }
    let duration = pilotfish_crds::duration::parse_duration(text)?;
    Ok(Some(duration).filter(|d| !d.is_zero()))
}

/// Serves `connections` with `routes` until `stop`, then waits for every
/// connection (each sent GOAWAY) to close.
pub async fn serve<S>(
    mut connections: S,
    routes: Routes,
    age: ConnectionAge,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> anyhow::Result<()>
where
    S: Stream<Item = io::Result<PeerStream>> + Unpin,
{
    let routes = routes.prepare();
    // A receiver per open connection: closed once every one is dropped.
    let (open, _) = watch::channel(());
    loop {
        let connection = tokio::select! {
            _ = stop.cancelled() => break,
            next = connections.next() => match next {
                Some(Ok(connection)) => connection,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
                None => break,
            },
        };
        let max_age = age.max.map(|max| jittered(max, random_unit()));
        tokio::spawn(serve_connection(
            connection,
            routes.clone(),
            max_age,
            age.grace,
            metrics.clone(),
            stop.clone(),
            open.subscribe(),
        ));
    }
    // Stop accepting before waiting for connections to drain.
    drop(connections);
    open.closed().await;
    Ok(())
}

/// Resolves at `deadline`, never for `None`.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn serve_connection(
    io: PeerStream,
    routes: Routes,
    max_age: Option<Duration>,
    grace: Option<Duration>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    _open: watch::Receiver<()>,
) {
    let aged = CancellationToken::new();
    let service = PeerService {
        routes,
        peer: io.connect_info(),
        aged: ConnectionAged(aged.clone()),
    };
    let peer = service.peer.remote_addr;
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    http2_settings(&mut builder);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    let expires = max_age.map(|age| Instant::now() + age);
    let mut aged_out = false;
    let mut closes: Option<Instant> = None;
    let mut going_away = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(?peer, error = %e, "xDS connection ended");
                }
                break;
            }
            _ = until(expires), if !aged_out => {
                aged_out = true;
                metrics.connections_aged_out.inc();
                tracing::debug!(?peer, ?max_age, "xDS connection reached its maximum age: GOAWAY");
                if !going_away {
                    going_away = true;
                    connection.as_mut().graceful_shutdown();
                }
                // Its streams end once what is queued on them is written.
                aged.cancel();
                closes = grace.map(|grace| Instant::now() + grace);
            }
            _ = until(closes) => {
                metrics.connections_closed_after_grace.inc();
                tracing::info!(?peer, ?grace, "xDS connection still open after its maximum age and grace; closing it");
                break;
            }
            _ = stop.cancelled(), if !going_away => {
                going_away = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Routes a connection's requests, each carrying who the peer is and
/// whether the connection is going away.
#[derive(Clone)]
struct PeerService {
    routes: Routes,
    peer: PeerInfo,
    aged: ConnectionAged,
}

impl hyper::service::Service<http::Request<Incoming>> for PeerService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        request.extensions_mut().insert(self.aged.clone());
        let mut routes = self.routes.clone();
        Box::pin(routes.call(request.map(tonic::body::Body::new)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_stay_within_ten_percent_of_the_configured_one() {
        let base = Duration::from_secs(30 * 60);
        assert_eq!(jittered(base, 0.0), Duration::from_secs(27 * 60));
        assert_eq!(jittered(base, 1.0), Duration::from_secs(33 * 60));
        assert_eq!(jittered(base, 0.5), base);
        let (low, high) = (base.mul_f64(0.9), base.mul_f64(1.1));
        let ages: Vec<Duration> = (0..1000).map(|_| jittered(base, random_unit())).collect();
        assert!(
            ages.iter().all(|age| (low..=high).contains(age)),
            "{ages:?}"
        );
        // Spread, not all the same: both halves of the range are used.
        assert!(ages.iter().any(|age| *age < base) && ages.iter().any(|age| *age > base));
    }

    #[test]
    fn zero_or_off_means_no_maximum_age() {
        let secs = |s: u64| Ok(Some(Duration::from_secs(s)));
        assert_eq!(parse_optional_duration("30m"), secs(1800));
        assert_eq!(parse_optional_duration("1h30m"), secs(5400));
        assert_eq!(parse_optional_duration("5s"), secs(5));
        assert_eq!(parse_optional_duration("0"), Ok(None));
        assert_eq!(parse_optional_duration("0s"), Ok(None));
        assert_eq!(parse_optional_duration("off"), Ok(None));
        for bad in ["", "5", "5x", "-5s"] {
            assert!(parse_optional_duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
