//! The xDS listeners' accept loops. Both ports hand tonic connections that
//! carry a [`PeerInfo`]; the secure port completes the TLS handshake first
//! (each in its own task, under a deadline, so slow handshakes cannot stall
//! accepting). Running out of file descriptors backs off instead of
//! spinning, and a per-address connection limit can be set.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::security::PeerInfo;
use crate::security::ca::spiffe_identity_of;

/// Pending connections the kernel queues per listener: enough for thousands
/// of proxies reconnecting at once (as istiod's 4096).
const LISTEN_BACKLOG: u32 = 4096;
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// Connections one listener keeps open: ten times the proxies a replica is
/// sized for, far below what descriptors and memory allow.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

#[derive(Clone, Debug)]
pub struct IncomingLimits {
    /// Open connections per client IP; `None` for no limit.
    pub max_per_peer: Option<usize>,
    /// Open connections in all, on one listener.
    pub max_total: usize,
    /// How long a client may take to finish its TLS handshake.
    pub handshake_timeout: Duration,
}

impl Default for IncomingLimits {
    fn default() -> Self {
        IncomingLimits {
            max_per_peer: None,
            max_total: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Binds `address` with a deep listen backlog.
pub fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts on `listener` until `stop`, yielding connections for tonic. With
/// `tls`, only connections that completed the handshake are yielded.
pub fn incoming(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: IncomingLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<PeerStream>> {
    let (tx, rx) = mpsc::channel(128);
    tokio::spawn(accept_loop(listener, tls, limits, metrics, stop, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: IncomingLimits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    tx: mpsc::Sender<io::Result<PeerStream>>,
) {
    let per_peer = PeerCounts::default();
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(pair) => {
                backoff = Duration::ZERO;
                pair
            }
            Err(e) if is_resource_exhaustion(&e) => {
                // The listener stays readable while the process is out of
                // descriptors: retrying at once would spin a core.
                backoff = (backoff * 2).clamp(Duration::from_millis(5), MAX_ACCEPT_BACKOFF);
                metrics.security.accept_backoffs.inc();
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "cannot accept xDS connections; backing off");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
        };
        let Some(slot) = per_peer.take(remote.ip(), limits.max_per_peer, limits.max_total) else {
            metrics.security.refused_connections.inc();
            tracing::debug!(peer = %remote, "too many connections (from this address or in all); refused");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        match &tls {
            None => {
                let stream = PeerStream {
                    io: Io::Plain(tcp),
                    info: PeerInfo {
                        remote_addr: Some(remote),
                        secure: false,
                        certificate_identity: None,
                    },
                    _slot: slot,
                };
                if tx.send(Ok(stream)).await.is_err() {
                    return;
                }
            }
            Some(acceptor) => {
                let handshake = handshake(acceptor.clone(), tcp, remote, slot, metrics.clone());
                let tx = tx.clone();
                let timeout = limits.handshake_timeout;
                let stop = stop.clone();
                tokio::spawn(async move {
                    let outcome = tokio::select! {
                        _ = stop.cancelled() => return,
                        outcome = tokio::time::timeout(timeout, handshake) => outcome,
                    };
                    match outcome {
                        Ok(Some(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(None) => {}
                        Err(_) => tracing::debug!(peer = %remote, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    remote: SocketAddr,
    slot: PeerSlot,
    metrics: Arc<Metrics>,
) -> Option<PeerStream> {
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            metrics.security.tls_handshake_failures.inc();
            tracing::debug!(peer = %remote, error = %e, "TLS handshake failed");
            return None;
        }
    };
    // The verifier has checked the chain against the mesh CA; what remains
    // is reading who the certificate names.
    let certificate_identity = match tls.get_ref().1.peer_certificates() {
        Some([leaf, ..]) => match spiffe_identity_of(leaf.as_ref()) {
            Ok(identity) => Some(identity),
            Err(e) => {
                metrics.security.tls_handshake_failures.inc();
                tracing::info!(peer = %remote, error = %e, "client certificate names no workload identity; closing");
                return None;
            }
        },
        _ => None,
    };
    Some(PeerStream {
        io: Io::Tls(Box::new(tls)),
        info: PeerInfo {
            remote_addr: Some(remote),
            secure: true,
            certificate_identity,
        },
        _slot: slot,
    })
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Open connections per client address, and in all.
#[derive(Clone, Default)]
struct PeerCounts(Arc<Mutex<Counts>>);

#[derive(Default)]
struct Counts {
    by_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// One counted connection; uncounted when dropped (the connection closed).
struct PeerSlot {
    counts: PeerCounts,
    ip: IpAddr,
}

impl PeerCounts {
    fn take(&self, ip: IpAddr, max: Option<usize>, max_total: usize) -> Option<PeerSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if counts.total >= max_total {
            return None;
        }
        let count = counts.by_ip.entry(ip).or_default();
        if max.is_some_and(|max| *count >= max) {
            return None;
        }
        *count += 1;
        counts.total += 1;
        Some(PeerSlot {
            counts: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(count) = counts.by_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.by_ip.remove(&self.ip);
            }
        }
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// An accepted connection and what is known about its peer.
pub struct PeerStream {
    io: Io,
    info: PeerInfo,
    _slot: PeerSlot,
}

impl tonic::transport::server::Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_per_address_and_in_all_are_counted_and_released() {
        let counts = PeerCounts::default();
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let a = counts.take(ip, Some(2), 10).expect("first");
        let _b = counts.take(ip, Some(2), 10).expect("second");
        assert!(
            counts.take(ip, Some(2), 10).is_none(),
            "third is over the limit"
        );
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        let _c = counts.take(other, Some(2), 10).expect("another address");
        drop(a);
        let _d = counts
            .take(ip, Some(2), 10)
            .expect("a closed connection frees its slot");
        let _e = counts.take(ip, None, 10).expect("no per-address limit");
        assert!(
            counts.take(other, None, 4).is_none(),
            "four open: the total is reached"
        );
    }

    #[test]
    fn running_out_of_descriptors_is_told_apart() {
        assert!(is_resource_exhaustion(&io::Error::from_raw_os_error(
            libc::EMFILE
        )));
        assert!(is_resource_exhaustion(&io::Error::from_raw_os_error(
            libc::ENFILE
        )));
        assert!(!is_resource_exhaustion(&io::Error::from_raw_os_error(
            libc::ECONNABORTED
        )));
    }
}
