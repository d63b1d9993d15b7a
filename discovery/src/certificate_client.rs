//! `pilotfish certificate request|issue`: get a workload certificate from
//! Pilotfish's `CreateCertificate` (or issue one offline with the CA key) and
//! lay it out for Envoy: `cert-chain.pem`, `key.pem`, `root-cert.pem`.
//!
//! The files are published the way the kubelet publishes Secret volumes: a
//! fresh timestamped directory, then an atomic rename of the `..data`
//! symlink to it; the top-level names are symlinks into `..data`. A reader
//! (Envoy's SDS `watched_directory`) never sees a key from one certificate
//! with the chain of another.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::security::WorkloadIdentity;
use crate::security::ca::{
    CaError, CertificateAuthority, pem_certificates, random_bytes, write_atomic,
};
use crate::security::csr::request_certificate;

pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
pub const KEY_FILE: &str = "key.pem";
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
const DATA_LINK: &str = "..data";
const DATA_LINK_TMP: &str = "..data_tmp";

/// Retries after a failed renewal start here and double up to the cap.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum CertificateClientError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot make a key and certificate signing request: {0}")]
    Csr(rcgen::Error),
    #[error("cannot connect to {address}: {message}")]
    Connect { address: String, message: String },
    #[error("CreateCertificate at {address}: {status}")]
    Request {
        address: String,
        status: tonic::Status,
    },
    #[error("the certificate service returned an unusable chain: {0}")]
    BadChain(String),
    #[error(transparent)]
    Ca(#[from] CaError),
}

/// The three files Envoy reads.
pub struct CertificateFiles {
    /// The leaf and any intermediates (not the root).
    pub cert_chain_pem: String,
    pub key_pem: String,
    pub root_pem: String,
}

impl std::fmt::Debug for CertificateFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateFiles").finish_non_exhaustive()
    }
}

/// A client certificate to authenticate `CreateCertificate` with (renewing
/// with the certificate one already has).
#[derive(Clone, Debug)]
pub struct ClientCertificate {
    pub cert_chain: PathBuf,
    pub private_key: PathBuf,
}

/// What `pilotfish certificate request` needs.
#[derive(Clone, Debug)]
pub struct RequestOptions {
    /// HOST:PORT of the secure xDS / certificate port (or a full https:// URL).
    pub xds_address: String,
    /// The mesh root to verify the server with.
    pub root_cert: PathBuf,
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// A ServiceAccount token, read afresh for every request (it rotates).
    pub token_file: Option<PathBuf>,
    pub client_certificate: Option<ClientCertificate>,
    pub out_dir: PathBuf,
    pub ttl: Duration,
}

/// A new ECDSA P-256 key and a CSR for it (PEM, key first). The CSR names
/// nothing: the server puts the caller's authenticated identity in.
pub fn generate_key_and_csr() -> Result<(String, String), CertificateClientError> {
    let key =
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertificateClientError::Csr)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(CertificateClientError::Csr)?;
    Ok((key.serialize_pem(), csr))
}

/// Publishes `files` in `out_dir` (see the module doc) and returns the new
/// data directory. Older data directories are removed.
pub fn write_certificate_dir(
    out_dir: &Path,
    files: &CertificateFiles,
) -> Result<PathBuf, CertificateClientError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertificateClientError::Write { path, source }
    };
    fs::create_dir_all(out_dir).map_err(write_err(out_dir))?;
    let (data_name, data_dir) = new_data_dir(out_dir).map_err(write_err(out_dir))?;
    for (name, contents, mode) in [
        (CERT_CHAIN_FILE, &files.cert_chain_pem, 0o644),
        (KEY_FILE, &files.key_pem, 0o600),
        (ROOT_CERT_FILE, &files.root_pem, 0o644),
    ] {
        let path = data_dir.join(name);
        write_atomic(&path, contents.as_bytes(), mode).map_err(write_err(&path))?;
    }
    fs::File::open(&data_dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err(&data_dir))?;

    // The switch: one rename makes all three files current at once.
    replace_symlink(out_dir, DATA_LINK_TMP, DATA_LINK, Path::new(&data_name))
        .map_err(write_err(&out_dir.join(DATA_LINK)))?;
    for name in [CERT_CHAIN_FILE, KEY_FILE, ROOT_CERT_FILE] {
        let target = Path::new(DATA_LINK).join(name);
        let link = out_dir.join(name);
        if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
            replace_symlink(out_dir, &format!(".{name}.link_tmp"), name, &target)
                .map_err(write_err(&link))?;
        }
    }
    fs::File::open(out_dir)
        .and_then(|d| d.sync_all())
        .map_err(write_err(out_dir))?;
    remove_old_data_dirs(out_dir, &data_name);
    Ok(data_dir)
}

/// Creates `out_dir/..<seconds>.<nanoseconds>`, unique even when called
/// twice in the same instant.
fn new_data_dir(out_dir: &Path) -> io::Result<(String, PathBuf)> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    for attempt in 0..100u32 {
        let name = format!("..{}.{:09}_{attempt}", now.as_secs(), now.subsec_nanos());
        let path = out_dir.join(&name);
        match fs::create_dir(&path) {
            Ok(()) => return Ok((name, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free name for a new data directory",
    ))
}

/// Points `dir/name` at `target` atomically: a symlink at `dir/tmp_name`,
/// renamed over `name`.
fn replace_symlink(dir: &Path, tmp_name: &str, name: &str, target: &Path) -> io::Result<()> {
    let tmp = dir.join(tmp_name);
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    symlink(target, &tmp)?;
    fs::rename(&tmp, dir.join(name))
}

fn remove_old_data_dirs(out_dir: &Path, current: &str) {
    let Ok(entries) = fs::read_dir(out_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_data_dir = name.starts_with("..")
            && name != DATA_LINK
            && name != DATA_LINK_TMP
            && name != current
            && entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_data_dir && let Err(e) = fs::remove_dir_all(entry.path()) {
            tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove an old certificate directory");
        }
    }
}

/// Splits a chain (leaf first, root last) into the files' contents.
fn files_from_chain(
    chain: &[String],
    key_pem: String,
) -> Result<(CertificateFiles, SystemTime), CertificateClientError> {
    let mut certs = Vec::new();
    for pem in chain {
        certs.extend(pem_certificates(pem).map_err(CertificateClientError::BadChain)?);
    }
    let leaf_der = certs
        .first()
        .map(|(_, der)| der.clone())
        .ok_or_else(|| CertificateClientError::BadChain("no certificate".to_string()))?;
    if certs.len() < 2 {
        return Err(CertificateClientError::BadChain(
            "no root certificate after the leaf".to_string(),
        ));
    }
    let (root_pem, _) = certs[certs.len() - 1].clone();
    let rest = &certs[..certs.len() - 1];
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der)
        .map_err(|e| CertificateClientError::BadChain(format!("cannot parse the leaf: {e}")))?;
    let key = KeyPair::from_pem(&key_pem).map_err(CertificateClientError::Csr)?;
    if leaf.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CertificateClientError::BadChain(
            "the leaf is not for the key this client generated".to_string(),
        ));
    }
    let not_after =
        UNIX_EPOCH + Duration::from_secs(leaf.validity().not_after.timestamp().max(0) as u64);
    let cert_chain_pem = rest.iter().map(|(pem, _)| pem.as_str()).collect();
    Ok((
        CertificateFiles {
            cert_chain_pem,
            key_pem,
            root_pem,
        },
        not_after,
    ))
}

fn read_to_string(path: &Path) -> Result<String, CertificateClientError> {
    fs::read_to_string(path).map_err(|source| CertificateClientError::Read {
        path: path.to_path_buf(),
        source,
    })
}

async fn connect(opts: &RequestOptions) -> Result<Channel, CertificateClientError> {
    let connect_err = |message: String| CertificateClientError::Connect {
        address: opts.xds_address.clone(),
        message,
    };
    let root = read_to_string(&opts.root_cert)?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root))
        .domain_name(opts.server_name.clone());
    if let Some(client) = &opts.client_certificate {
        let cert = read_to_string(&client.cert_chain)?;
        let key = read_to_string(&client.private_key)?;
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let url = if opts.xds_address.contains("://") {
        opts.xds_address.clone()
    } else {
        format!("https://{}", opts.xds_address)
    };
    Endpoint::from_shared(url)
        .map_err(|e| connect_err(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| connect_err(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| connect_err(describe_transport_error(&e)))
}

/// A transport error with its causes (tonic's own message is just
/// "transport error").
fn describe_transport_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// One `CreateCertificate` round: new key and CSR, the call, the files.
/// Returns when the new certificate expires.
pub async fn request_once(opts: &RequestOptions) -> Result<SystemTime, CertificateClientError> {
    let token = match &opts.token_file {
        Some(path) => Some(read_to_string(path)?),
        None => None,
    };
    let (key_pem, csr_pem) = generate_key_and_csr()?;
    let channel = connect(opts).await?;
    let chain = request_certificate(channel, token.as_deref().map(str::trim), &csr_pem, opts.ttl)
        .await
        .map_err(|status| CertificateClientError::Request {
            address: opts.xds_address.clone(),
            status,
        })?;
    let (files, not_after) = files_from_chain(&chain, key_pem)?;
    let data_dir = write_certificate_dir(&opts.out_dir, &files)?;
    tracing::info!(
        dir = %data_dir.display(),
        valid_for_seconds = not_after.duration_since(SystemTime::now()).unwrap_or_default().as_secs(),
        "wrote a new workload certificate"
    );
    Ok(not_after)
}

/// Keeps a certificate in `out_dir` until `cancel`: requests one, renews it
/// at about half its remaining lifetime (jittered, so replicas spread out),
/// retries failures with exponential back-off. With a client certificate,
/// renewals authenticate with the certificate last written.
pub async fn renew_until_cancelled(
    mut opts: RequestOptions,
    cancel: CancellationToken,
) -> Result<(), CertificateClientError> {
    let mut retry = FIRST_RETRY;
    loop {
        let wait = match request_once(&opts).await {
            Ok(not_after) => {
                retry = FIRST_RETRY;
                if opts.client_certificate.is_some() {
                    opts.client_certificate = Some(ClientCertificate {
                        cert_chain: opts.out_dir.join(CERT_CHAIN_FILE),
                        private_key: opts.out_dir.join(KEY_FILE),
                    });
                }
                let remaining = not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let wait = jitter(remaining / 2, 0.1)?;
                tracing::info!(renew_in_seconds = wait.as_secs(), "next renewal scheduled");
                wait
            }
            Err(e) => {
                let wait = jitter(retry, 0.2)?;
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot get a certificate");
                retry = (retry * 2).min(MAX_RETRY);
                wait
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// `base` moved randomly by up to `fraction` of itself, either way.
fn jitter(base: Duration, fraction: f64) -> Result<Duration, CaError> {
    let mut bytes = [0u8; 4];
    random_bytes(&mut bytes)?;
    let unit = f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX); // 0..=1
    Ok(base.mul_f64(1.0 + fraction * (2.0 * unit - 1.0)))
}

/// Issues a workload certificate with the CA's key and publishes it in
/// `out_dir`. Returns when it expires.
pub fn issue_offline(
    ca: &CertificateAuthority,
    identity: &WorkloadIdentity,
    ttl: Duration,
    out_dir: &Path,
) -> Result<SystemTime, CertificateClientError> {
    let issued = ca.issue_workload(identity, ttl)?;
    let (files, not_after) = files_from_chain(&[issued.chain_pem], issued.key_pem)?;
    let data_dir = write_certificate_dir(out_dir, &files)?;
    tracing::info!(%identity, dir = %data_dir.display(), "issued a workload certificate offline");
    Ok(not_after)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use tokio_stream::wrappers::TcpListenerStream;
    use tonic::Status;
    use tonic::transport::{Server, ServerTlsConfig};

    use super::*;
    use crate::security::ca::spiffe_identity_of;
    use crate::security::csr::CertificateService;
    use crate::security::{Authenticator, PeerInfo};

    const TD: &str = "cluster.local";

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pilotfish-certclient-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn data_dirs(out: &Path) -> Vec<String> {
        let mut dirs: Vec<String> = fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_LINK)
            .collect();
        dirs.sort();
        dirs
    }

    fn leaf_identity(out: &Path) -> WorkloadIdentity {
        let chain = fs::read_to_string(out.join(CERT_CHAIN_FILE)).unwrap();
        let leaf = CertificateDer::from_pem_slice(chain.as_bytes()).unwrap();
        spiffe_identity_of(&leaf).unwrap()
    }

    #[test]
    fn symlink_swap_publishes_a_consistent_set_and_drops_the_old_one() {
        let out = temp_dir("swap");
        let set = |tag: &str| CertificateFiles {
            cert_chain_pem: format!("chain {tag}"),
            key_pem: format!("key {tag}"),
            root_pem: format!("root {tag}"),
        };
        let first = write_certificate_dir(&out, &set("one")).unwrap();
        assert_eq!(fs::read_to_string(out.join(KEY_FILE)).unwrap(), "key one");
        let second = write_certificate_dir(&out, &set("two")).unwrap();
        assert_ne!(first, second);
        for (name, want) in [
            (CERT_CHAIN_FILE, "chain two"),
            (KEY_FILE, "key two"),
            (ROOT_CERT_FILE, "root two"),
        ] {
            assert_eq!(fs::read_to_string(out.join(name)).unwrap(), want);
            assert_eq!(
                fs::read_link(out.join(name)).unwrap(),
                Path::new(DATA_LINK).join(name)
            );
        }
        assert_eq!(
            fs::read_link(out.join(DATA_LINK)).unwrap(),
            Path::new(second.file_name().unwrap())
        );
        assert_eq!(
            data_dirs(&out),
            vec![second.file_name().unwrap().to_string_lossy().into_owned()]
        );
        let mode = fs::metadata(out.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .chain(fs::read_dir(&second).unwrap())
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn offline_issue_writes_a_certificate_for_the_identity() {
        let ca_dir = temp_dir("offline-ca");
        let out = temp_dir("offline-out");
        let ca = CertificateAuthority::load_or_generate_dir(&ca_dir, TD).unwrap();
        let id = WorkloadIdentity::new(TD, "vm", "billing");
        issue_offline(&ca, &id, Duration::from_secs(3600), &out).unwrap();
        assert_eq!(leaf_identity(&out), id);
        assert_eq!(
            fs::read_to_string(out.join(ROOT_CERT_FILE)).unwrap(),
            ca.root_pem()
        );
        assert_eq!(
            pem_certificates(&fs::read_to_string(out.join(CERT_CHAIN_FILE)).unwrap())
                .unwrap()
                .len(),
            1,
            "the chain file holds the leaf, not the root"
        );
        fs::remove_dir_all(&ca_dir).unwrap();
        fs::remove_dir_all(&out).unwrap();
    }

    /// Stands in for the Authenticator's token path: `Bearer good-token`
    /// authenticates as shop/cart.
    fn token_authn(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let identity = match request.metadata().get("authorization") {
            Some(v) if v == "Bearer good-token" => Some(WorkloadIdentity::new(TD, "shop", "cart")),
            Some(_) => return Err(Status::unauthenticated("bad token")),
            None => None,
        };
        request.extensions_mut().insert(PeerInfo {
            remote_addr: None,
            secure: true,
            certificate_identity: identity,
        });
        Ok(request)
    }

    #[tokio::test]
    async fn request_over_tls_writes_the_callers_certificate_and_renews_it() {
        let ca = Arc::new(CertificateAuthority::generate(TD).unwrap());
        let server_cert = ca
            .issue_server(
                &["istiod.istio-system.svc".to_string()],
                &[],
                Duration::from_secs(3600),
            )
            .unwrap();
        let service = CertificateService::new(
            ca.clone(),
            Arc::new(Authenticator::new(TD, None)),
            Duration::from_secs(3600),
            Duration::from_secs(4),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::builder()
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(
                &server_cert.chain_pem,
                &server_cert.key_pem,
            )))
            .unwrap()
            .add_service(tonic::service::interceptor::InterceptedService::new(
                service.clone(),
                token_authn,
            ))
            .serve_with_incoming(TcpListenerStream::new(listener));
        let server = tokio::spawn(server);

        let work = temp_dir("tls");
        fs::create_dir_all(&work).unwrap();
        fs::write(work.join("root.pem"), ca.root_pem()).unwrap();
        fs::write(work.join("token"), "good-token\n").unwrap();
        let out = work.join("out");
        let opts = RequestOptions {
            xds_address: addr.to_string(),
            root_cert: work.join("root.pem"),
            server_name: "istiod.istio-system.svc".to_string(),
            token_file: Some(work.join("token")),
            client_certificate: None,
            out_dir: out.clone(),
            ttl: Duration::from_secs(86400),
        };

        // Without a token: refused, nothing written.
        let anonymous = RequestOptions {
            token_file: None,
            ..opts.clone()
        };
        let err = request_once(&anonymous).await.unwrap_err();
        assert!(
            matches!(&err, CertificateClientError::Request { status, .. } if status.code() == tonic::Code::Unauthenticated),
            "{err}"
        );
        assert!(!out.join(CERT_CHAIN_FILE).exists());

        // A server name the certificate does not carry: the TLS handshake fails.
        let wrong_name = RequestOptions {
            server_name: "evil.example".to_string(),
            ..opts.clone()
        };
        assert!(request_once(&wrong_name).await.is_err());

        // The renew loop: first certificate at once (ttl capped to 4 s by
        // the server), the next at about half of it.
        let cancel = CancellationToken::new();
        let renewer = tokio::spawn(renew_until_cancelled(opts.clone(), cancel.clone()));
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while seen.len() < 2 && tokio::time::Instant::now() < deadline {
            if let Ok(target) = fs::read_link(out.join(DATA_LINK))
                && seen.last() != Some(&target)
            {
                seen.push(target);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cancel.cancel();
        renewer.await.unwrap().unwrap();
        assert_eq!(seen.len(), 2, "one issue and one renewal: {seen:?}");
        assert_eq!(
            leaf_identity(&out),
            WorkloadIdentity::new(TD, "shop", "cart")
        );
        assert_eq!(
            fs::read_to_string(out.join(ROOT_CERT_FILE)).unwrap(),
            ca.root_pem()
        );
        assert!(service.issued_count() >= 2);

        // Renewing with the certificate just written as the client identity
        // (the test authenticator ignores it; the TLS client must accept it).
        let with_cert = RequestOptions {
            client_certificate: Some(ClientCertificate {
                cert_chain: out.join(CERT_CHAIN_FILE),
                private_key: out.join(KEY_FILE),
            }),
            ..opts.clone()
        };
        request_once(&with_cert).await.unwrap();
        server.abort();
        fs::remove_dir_all(&work).unwrap();
    }
}
