//! The secure xDS port's TLS: rustls (TLS 1.2 and 1.3, ring), a serving
//! certificate that can change under a running server (files re-read when
//! they change, or re-issued by the mesh CA before it expires), and client
//! certificates verified against the mesh CA when a client presents one
//! (a proxy may instead authenticate with a ServiceAccount token).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use super::ca::CertificateAuthority;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("serving certificate: {0}")]
    Certificate(String),
    #[error("mesh CA root: {0}")]
    Roots(String),
}

/// Where the serving certificate comes from.
pub enum ServingCertificate {
    /// PEM files (e.g. a mounted Secret), re-read when they change.
    Files {
        cert_chain: PathBuf,
        private_key: PathBuf,
    },
    /// Issued by the mesh CA for these names, re-issued at half its life.
    Issued {
        ca: Arc<CertificateAuthority>,
        dns_names: Vec<String>,
        ips: Vec<IpAddr>,
        ttl: Duration,
    },
}

/// The certificate the server presents; swapped whole on reload.
#[derive(Debug)]
pub struct ReloadingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    /// Reloads that failed (the current certificate was kept).
    failed_reloads: AtomicU64,
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

impl ReloadingCertificate {
    fn set(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM chain and key into what rustls serves.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Certificate(format!("certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate("no certificate in the chain".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Certificate(format!("private key: {e}")))?;
    let key = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| TlsError::Certificate(format!("key does not fit the certificate: {e}")))?;
    Ok(key)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Builds the server config: `h2` only, TLS 1.2+, optional client
/// certificates verified against `client_roots_pem`, and the serving
/// certificate from `source`. Spawns the task that keeps the certificate
/// fresh until `stop`.
pub fn server_config(
    source: ServingCertificate,
    client_roots_pem: &str,
    reload_interval: Duration,
    stop: CancellationToken,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_and_certificate(source, client_roots_pem, reload_interval, stop)
        .map(|(config, _)| config)
}

/// [`server_config`] and the certificate it serves.
fn server_config_and_certificate(
    source: ServingCertificate,
    client_roots_pem: &str,
    reload_interval: Duration,
    stop: CancellationToken,
) -> Result<(Arc<rustls::ServerConfig>, Arc<ReloadingCertificate>), TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_roots_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsError::Roots(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::Roots(e.to_string()))?;
    }
    // A client without a certificate may still authenticate with a token;
    // one that presents a certificate must present a valid one.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Roots(e.to_string()))?;
    let (first, refresh) = load(&source)?;
    let resolver = Arc::new(ReloadingCertificate {
        current: RwLock::new(Arc::new(first)),
        failed_reloads: AtomicU64::new(0),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Certificate(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio::spawn(keep_fresh(
        source,
        resolver.clone(),
        refresh,
        reload_interval,
        stop,
    ));
    Ok((Arc::new(config), resolver))
}

/// When to look again: a file's modification stamp, or an issued
/// certificate's renewal time.
enum Refresh {
    Files(Option<(SystemTime, SystemTime)>),
    At(SystemTime),
}

fn load(source: &ServingCertificate) -> Result<(CertifiedKey, Refresh), TlsError> {
    match source {
        ServingCertificate::Files {
            cert_chain,
            private_key,
        } => {
            let stamp = stamps(cert_chain, private_key);
            let key = certified_key(&read(cert_chain)?, &read(private_key)?)?;
            Ok((key, Refresh::Files(stamp)))
        }
        ServingCertificate::Issued {
            ca,
            dns_names,
            ips,
            ttl,
        } => {
            let issued = ca
                .issue_server(dns_names, ips, *ttl)
                .map_err(|e| TlsError::Certificate(e.to_string()))?;
            let key = certified_key(issued.chain_pem.as_bytes(), issued.key_pem.as_bytes())?;
            let renew_at = SystemTime::now() + *ttl / 2;
            Ok((key, Refresh::At(renew_at)))
        }
    }
}

fn stamps(a: &Path, b: &Path) -> Option<(SystemTime, SystemTime)> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((modified(a)?, modified(b)?))
}

async fn keep_fresh(
    source: ServingCertificate,
    resolver: Arc<ReloadingCertificate>,
    mut refresh: Refresh,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let due = match (&refresh, &source) {
            (Refresh::At(when), _) => SystemTime::now() >= *when,
            (
                Refresh::Files(seen),
                ServingCertificate::Files {
                    cert_chain,
                    private_key,
                },
            ) => stamps(cert_chain, private_key) != *seen,
            (Refresh::Files(_), _) => false,
        };
        if !due {
            continue;
        }
        match load(&source) {
            Ok((key, next)) => {
                resolver.set(key);
                refresh = next;
                tracing::info!("xDS serving certificate reloaded");
            }
            // Keep serving the last good certificate; try again next round.
            Err(e) => {
                resolver.failed_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot reload the xDS serving certificate; keeping the current one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rustls::pki_types::ServerName;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    /// The leaf certificate the server at `address` presents.
    async fn presented(address: std::net::SocketAddr, root_pem: &str) -> Vec<u8> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
            roots.add(cert.expect("root")).expect("add root");
        }
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(address).await.expect("connect");
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("handshake");
        tls.get_ref().1.peer_certificates().expect("certificates")[0].to_vec()
    }

    #[tokio::test]
    async fn serving_certificate_files_are_reloaded_without_a_restart() {
        let ca = Arc::new(CertificateAuthority::generate("cluster.local").expect("CA"));
        let dir = std::env::temp_dir().join(format!("pf-tls-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (chain, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let write = |issued: &super::super::ca::IssuedCertificate| {
            std::fs::write(&chain, &issued.chain_pem).expect("write chain");
            std::fs::write(&key, &issued.key_pem).expect("write key");
        };
        let localhost = vec!["localhost".to_string()];
        write(
            &ca.issue_server(&localhost, &[], Duration::from_secs(3600))
                .expect("first"),
        );
        let stop = CancellationToken::new();
        let (config, certificate) = server_config_and_certificate(
            ServingCertificate::Files {
                cert_chain: chain.clone(),
                private_key: key.clone(),
            },
            ca.root_pem(),
            Duration::from_millis(20),
            stop.clone(),
        )
        .expect("server config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        let first = presented(address, ca.root_pem()).await;

        // A broken write is not served; the last good certificate stays.
        std::fs::write(&chain, "not a certificate").expect("break");
        let deadline = Instant::now() + Duration::from_secs(5);
        while certificate.failed_reloads.load(Ordering::Relaxed) == 0 {
            assert!(
                Instant::now() < deadline,
                "the broken write was never tried"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(presented(address, ca.root_pem()).await, first);

        write(
            &ca.issue_server(&localhost, &[], Duration::from_secs(3600))
                .expect("second"),
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while presented(address, ca.root_pem()).await == first {
            assert!(
                Instant::now() < deadline,
                "the renewed certificate was never served"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
