//! TLS for the L4 and egress tests: a throwaway CA and certificates made
//! with the `openssl` CLI, TLS backends (tokio-rustls) inside a pod's
//! namespace, and a blocking TLS client (rustls) that verifies the server
//! against the test CA, so the certificate that answers proves which
//! backend the connection reached, and that nobody in between terminated it.
//!
//! A TLS backend, once the handshake is done, answers HTTP/1.1 requests with
//! `{"service":<name>,"version":"","path":..,"sni":..,"client_cert":..}`
//! (the shape [`Response::outcome`](super::http::Response::outcome) reads)
//! and echoes anything else line by line as `<name>: <line>`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::backend::NsRuntime;
use super::http::{Request, Response};
use super::netns::Netns;
use super::run_checked;
use super::testdir::TestDir;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate and its key, as files Envoy (uid 1337) can read too.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA for one test, in its own world-readable directory.
pub struct TestCa {
    dir: TestDir,
    /// The CA certificate (PEM), what clients and Envoy trust.
    pub cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    pub fn new(label: &str) -> TestCa {
        let dir = TestDir::new(&format!("{label}-ca"));
        let cert = dir.path().join("ca.pem");
        let key = dir.path().join("ca-key.pem");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=pilotfish e2e CA",
            ],
            &[("-keyout", &key), ("-out", &cert)],
        );
        world_readable(&cert);
        TestCa { dir, cert, key }
    }

    /// A certificate for DNS name `name` (server and client use), signed by the CA.
    pub fn issue(&self, name: &str) -> Identity {
        let base = self.dir.path().join(name);
        let key = base.with_extension("key.pem");
        let csr = base.with_extension("csr");
        let cert = base.with_extension("pem");
        let ext = base.with_extension("ext");
        std::fs::write(
            &ext,
            format!("subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )
        .expect("write extensions");
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
            ],
            &[("-keyout", &key), ("-out", &csr)],
        );
        openssl(
            &["x509", "-req", "-days", "2", "-CAcreateserial"],
            &[
                ("-in", &csr),
                ("-CA", &self.cert),
                ("-CAkey", &self.key),
                ("-extfile", &ext),
                ("-out", &cert),
            ],
        );
        world_readable(&cert);
        world_readable(&key);
        Identity {
            name: name.to_string(),
            cert,
            key,
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&self.cert).expect("read CA") {
            roots.add(cert.expect("CA PEM")).expect("add CA");
        }
        roots
    }
}

fn openssl(args: &[&str], paths: &[(&str, &Path)]) {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    for (flag, path) in paths {
        cmd.arg(flag).arg(path);
    }
    run_checked(&mut cmd);
}

fn world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// One TLS backend and what it has seen.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub name: String,
    handshakes: AtomicU64,
    failed_handshakes: AtomicU64,
    requests: AtomicU64,
    /// The SNI of every completed handshake ("" when none was sent).
    snis: Mutex<Vec<String>>,
    /// Handshakes in which the client presented a certificate.
    client_certs: AtomicU64,
}

impl TlsBackend {
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Connections that did not complete a handshake (plaintext, bad client).
    pub fn failed_handshakes(&self) -> u64 {
        self.failed_handshakes.load(Ordering::Relaxed)
    }

    /// HTTP requests answered plus lines echoed.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn snis(&self) -> Vec<String> {
        self.snis.lock().expect("sni lock").clone()
    }

    pub fn client_certs(&self) -> u64 {
        self.client_certs.load(Ordering::Relaxed)
    }
}

/// How a backend treats client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// Requires a client certificate signed by the test CA.
    Required,
}

/// A runtime thread inside the namespace serving every TLS backend.
pub struct TlsBackends {
    // First, so that it stops before the backends are dropped.
    runtime: NsRuntime,
    started: Vec<Arc<TlsBackend>>,
}

impl TlsBackends {
    pub fn start(ns: &Netns) -> TlsBackends {
        TlsBackends {
            runtime: NsRuntime::start(ns, "tls-backends", "TLS backend"),
            started: Vec::new(),
        }
    }

    /// Serves TLS on `addr` with `identity`'s certificate, as `name`.
    pub fn add(
        &mut self,
        addr: &str,
        name: &str,
        identity: &Identity,
        ca: &TestCa,
        auth: ClientAuth,
    ) -> Arc<TlsBackend> {
        let addr: SocketAddr = addr.parse().expect("socket address");
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&identity.cert)
            .expect("read certificate")
            .map(|c| c.expect("certificate PEM"))
            .collect();
        let key = PrivateKeyDer::from_pem_file(&identity.key).expect("read key");
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = match auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(ca.roots()),
                    provider(),
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(certs, key)
            .expect("server certificate");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let backend = Arc::new(TlsBackend {
            addr,
            name: name.to_string(),
            handshakes: AtomicU64::new(0),
            failed_handshakes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            snis: Mutex::new(Vec::new()),
            client_certs: AtomicU64::new(0),
        });
        let serving = backend.clone();
        self.runtime
            .bind(addr, |listener| async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(acceptor.clone(), stream, serving.clone()));
                }
            })
            .unwrap_or_else(|e| panic!("TLS backend {name}: bind {addr}: {e}"));
        self.started.push(backend.clone());
        backend
    }
}

async fn serve(acceptor: TlsAcceptor, stream: tokio::net::TcpStream, backend: Arc<TlsBackend>) {
    let tls = match acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(_) => {
            backend.failed_handshakes.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let (sni, client_cert) = {
        let (_, conn) = tls.get_ref();
        let sni = conn.server_name().unwrap_or_default().to_string();
        (sni, conn.peer_certificates().is_some_and(|c| !c.is_empty()))
    };
    backend.handshakes.fetch_add(1, Ordering::Relaxed);
    if client_cert {
        backend.client_certs.fetch_add(1, Ordering::Relaxed);
    }
    backend.snis.lock().expect("sni lock").push(sni.clone());
    let mut reader = AsyncBufReader::new(tls);
    let _ = answer(&mut reader, &backend, &sni, client_cert).await;
}

/// HTTP/1.1 requests (keep-alive) or echoed lines, until the client closes.
async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    reader: &mut AsyncBufReader<S>,
    backend: &TlsBackend,
    sni: &str,
    client_cert: bool,
) -> std::io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let is_http = line.ends_with(" HTTP/1.1\r\n") || line.ends_with(" HTTP/1.0\r\n");
        if !is_http {
            backend.requests.fetch_add(1, Ordering::Relaxed);
            let reply = format!("{}: {}\n", backend.name, line.trim_end());
            reader.get_mut().write_all(reply.as_bytes()).await?;
            continue;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut content_length = 0usize;
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => content_length = value.trim().parse().unwrap_or(0),
                    "connection" => close = value.trim().eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        if content_length > 0 {
            let mut body = vec![0; content_length];
            reader.read_exact(&mut body).await?;
        }
        backend.requests.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({
            "service": backend.name,
            "version": "",
            "path": path,
            "sni": sni,
            "client_cert": client_cert,
        })
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        reader.get_mut().write_all(response.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}

/// Sends `request` over TLS to its address with SNI `server_name`,
/// verifying the server's certificate for that name against `ca`, and
/// presenting `client` when given. Must run inside the namespace.
pub fn https(
    request: &Request,
    server_name: &str,
    ca: &TestCa,
    client: Option<&Identity>,
) -> std::io::Result<Response> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(ca.roots());
    let config = match client {
        None => builder.with_no_client_auth(),
        Some(identity) => {
            let certs = CertificateDer::pem_file_iter(&identity.cert)
                .expect("read client certificate")
                .map(|c| c.expect("certificate PEM"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(&identity.key).expect("read client key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client certificate")
        }
    };
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let tcp = TcpStream::connect_timeout(&request.addr, IO_TIMEOUT)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    request.send_over(&mut rustls::StreamOwned::new(conn, tcp))
}

/// Opens TLS to `addr` with SNI `server_name`, verifying the server's
/// certificate for that name against `ca`, sends `line` and returns the
/// reply line. Must run inside the namespace.
pub fn exchange_line(
    addr: &str,
    server_name: &str,
    ca: &TestCa,
    line: &str,
) -> std::io::Result<String> {
    let addr: SocketAddr = addr.parse().expect("socket address");
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_string()).expect("server name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    stream.write_all(format!("{line}\n").as_bytes())?;
    stream.flush()?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed without a reply",
        ));
    }
    Ok(reply.trim_end().to_string())
}
