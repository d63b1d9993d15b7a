//! Workload certificates over SDS, with real Envoys whose bootstrap holds a
//! TLS listener that takes its certificate from SDS `default` and its
//! trust from SDS `ROOTCA`, over ADS (as Istio's sidecars name them).
//!
//! - An Envoy authenticated on the secure port (client certificate of
//!   `default/sa-sds`) gets `default` with the URI SAN
//!   `spiffe://cluster.local/ns/default/sa/sa-sds` and `ROOTCA` equal to
//!   the mesh CA's root; an Envoy on the plaintext port asking for the same
//!   gets neither, and the refusal is counted.
//! - With `--workload-cert-ttl-seconds 4` (renewed every 2 s, at half
//!   life), the certificate Envoy holds changes at least twice, without a
//!   NACK, and a TLS client verifying against the mesh root sees no failed
//!   request meanwhile, on new connections (which see the new
//!   certificates) or on one kept open across the rotations.
//!
//! Needs root (network namespaces, uid 1337 for Envoy).

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use sha2::{Digest, Sha256};
use support::envoy::{Envoy, sidecar_bootstrap};
use support::netns::Netns;
use support::pilotfish::{self, Pilotfish};
use support::pod::write_registry_file;
use support::testdir::TestDir;
use support::{PROPAGATION, STARTUP, secure_xds, wait_until};

const SERVICE_ACCOUNT: &str = "sa-sds";
const SPIFFE_ID: &str = "spiffe://cluster.local/ns/default/sa/sa-sds";
/// Where the bootstrap's TLS listener listens.
const TLS_ADDRESS: &str = "127.0.0.1:18443";
/// The plaintext Envoy's admin port, beside the secure one's 15000.
const PLAINTEXT_ADMIN_PORT: u16 = 15200;
/// Short enough for several renewals in a test (every 2 s); the flag has
/// no minimum, and pilotfish never renews sooner than a second after issuing.
const SHORT_TTL_SECONDS: &str = "4";

struct World {
    pilotfish: Pilotfish,
    dir: TestDir,
    ns: Arc<Netns>,
}

impl World {
    fn start(name: &str, extra_args: &[&str]) -> World {
        let dir = TestDir::new(name);
        let config_dir = dir.path().join("config");
        std::fs::create_dir(&config_dir).expect("create config dir");
        let registry_file = write_registry_file(dir.path(), "");
        let ns = Arc::new(Netns::new());
        let mut args = secure_xds::pilotfish_args(dir.path());
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let pilotfish = Pilotfish::start(
            ns.clone(),
            &config_dir,
            &registry_file,
            &dir.path().join("pilotfish.log"),
            &args,
        );
        World { pilotfish, dir, ns }
    }

    fn root_pem(&self) -> String {
        std::fs::read_to_string(secure_xds::ca_dir(self.dir.path()).join("ca-cert.pem"))
            .expect("pilotfish wrote its CA certificate")
    }

    /// An Envoy on the secure port with a client certificate of
    /// `default/sa-sds`, serving the SDS listener.
    fn secure_envoy(&self) -> Envoy {
        let args =
            secure_xds::certificate_bootstrap_args(self.dir.path(), "default", SERVICE_ACCOUNT);
        let bootstrap =
            sidecar_bootstrap("sds-secure", secure_xds::SECURE_XDS_ADDRESS, "NONE", &args);
        self.envoy("secure", &with_sds_listener(&bootstrap, None))
    }

    /// An Envoy on the plaintext port asking for the same secrets.
    fn plaintext_envoy(&self) -> Envoy {
        let bootstrap = sidecar_bootstrap("sds-plaintext", pilotfish::XDS_ADDRESS, "NONE", &[]);
        let bootstrap = with_sds_listener(&bootstrap, Some(PLAINTEXT_ADMIN_PORT));
        self.envoy("plaintext", &bootstrap)
    }

    fn envoy(&self, name: &str, bootstrap: &str) -> Envoy {
        let dir = self.dir.path().join(name);
        std::fs::create_dir(&dir).expect("create Envoy dir");
        Envoy::start_with_bootstrap(self.ns.clone(), &dir, bootstrap)
    }
}

/// Adds a TLS listener on [`TLS_ADDRESS`] answering 200 to any request,
/// its certificate from SDS `default` and client validation context from
/// SDS `ROOTCA`, both over ADS (clients need no certificate: the test's
/// client checks the server). `admin_port`: moves the admin port and drops
/// the health and stats listeners, so two Envoys share the namespace.
fn with_sds_listener(bootstrap: &str, admin_port: Option<u16>) -> String {
    let mut parsed: Value = serde_json::from_str(bootstrap).expect("bootstrap JSON");
    let over_ads = |name: &str| {
        json!({
            "name": name,
            // The plaintext Envoy never gets them: it must still go LIVE.
            "sds_config": {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "3s"}
        })
    };
    let (host, port) = TLS_ADDRESS.split_once(':').expect("host:port");
    let listener = json!({
        "name": "sds-tls",
        "address": {"socket_address": {"address": host, "port_value": port.parse::<u16>().expect("port")}},
        "filter_chains": [{
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "common_tls_context": {
                        "tls_certificate_sds_secret_configs": [over_ads("default")],
                        "validation_context_sds_secret_config": over_ads("ROOTCA")
                    }
                }
            },
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "sds_tls",
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                    }],
                    "route_config": {"virtual_hosts": [{
                        "name": "all",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]
                    }]}
                }
            }]
        }]
    });
    if let Some(port) = admin_port {
        parsed["admin"]["address"]["socket_address"]["port_value"] = json!(port);
    }
    let listeners = parsed
        .pointer_mut("/static_resources/listeners")
        .and_then(Value::as_array_mut)
        .expect("static listeners");
    if admin_port.is_some() {
        listeners.clear();
    }
    listeners.push(listener);
    parsed.to_string()
}

/// Envoy's active SDS secret `name` (private keys redacted by Envoy).
fn active_secret(envoy: &Envoy, name: &str) -> Option<Value> {
    let dump = envoy.config_dump();
    let secrets = dump["configs"].as_array()?.iter().find(|c| {
        c["@type"]
            .as_str()
            .is_some_and(|t| t.ends_with("SecretsConfigDump"))
    })?;
    secrets["dynamic_active_secrets"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
}

/// The leaf of the chain in Envoy's `default`, and the secret's version.
fn held_certificate(envoy: &Envoy) -> Result<(String, Vec<u8>), String> {
    let secret = active_secret(envoy, "default").ok_or("no active secret default")?;
    let chain = secret
        .pointer("/secret/tls_certificate/certificate_chain/inline_string")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no inline chain in {secret}"))?;
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .ok_or("empty chain")?
        .map_err(|e| format!("chain PEM: {e:?}"))?;
    let version = secret["version_info"].as_str().unwrap_or_default();
    Ok((version.to_string(), leaf.to_vec()))
}

fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).expect("X.509");
    cert.subject_alternative_name()
        .expect("SAN extension")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(uri) => Some(uri.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_authenticated_envoy_gets_its_spiffe_certificate_and_the_root_a_plaintext_one_nothing() {
    let world = World::start("workload-sds", &[]);
    let secure = world.secure_envoy();
    let (_, leaf) = wait_until("Envoy holds default", PROPAGATION, || {
        held_certificate(&secure)
    });
    assert_eq!(uri_sans(&leaf), [SPIFFE_ID]);
    let root = active_secret(&secure, "ROOTCA").expect("ROOTCA is active");
    assert_eq!(
        root.pointer("/secret/validation_context/trusted_ca/inline_string")
            .and_then(Value::as_str),
        Some(world.root_pem().as_str()),
        "ROOTCA is the mesh CA's root"
    );
    let dump = secure.config_dump().to_string();
    assert!(!dump.contains("BEGIN PRIVATE KEY"), "Envoy shows the key");
    secure.assert_no_rejected_updates();

    let plaintext = world.plaintext_envoy();
    let refusals = wait_until("pilotfish counts the refusal", PROPAGATION, || {
        let metrics = world.pilotfish.metrics();
        support::mesh::metric_value(&metrics, "pilotfish_sds_refusals_total", "plaintext")
            .filter(|n| *n > 0.0)
            .ok_or_else(|| metrics.lines().filter(|l| l.contains("sds")).collect())
    });
    assert!(refusals >= 1.0);
    for name in ["default", "ROOTCA"] {
        assert!(
            active_secret(&plaintext, name).is_none(),
            "plaintext Envoy got {name}"
        );
    }
    // Nothing of the CA's key or the workload keys in pilotfish's pages or log.
    let proxy_dump = format!("/debug/config_dump?proxy={}", secure.node_id());
    for page in ["/debug/syncz", proxy_dump.as_str()] {
        let (status, body) = world.pilotfish.get(page).unwrap_or_default();
        assert_eq!(status, 200, "{page}: {body}");
        assert!(!body.contains("PRIVATE KEY"), "{page} shows a key");
    }
    assert!(!world.pilotfish.log().contains("PRIVATE KEY"));

    // `pilotfish proxy-config secrets` names the proxy's own certificate,
    // valid now, with the fingerprint of the leaf Envoy holds, and the root.
    let out = world
        .ns
        .command(
            support::pilotfish::binary(),
            &[
                "proxy-config",
                "secrets",
                secure.node_id(),
                "--server",
                world.pilotfish.http_address(),
                "-o",
                "json",
            ],
        )
        .output()
        .expect("run pilotfish proxy-config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    let secrets: Vec<Value> = serde_json::from_str(&text).expect("JSON");
    let by_name = |name: &str| {
        secrets
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let (_, leaf) = held_certificate(&secure).expect("Envoy holds default");
    let fingerprint: String = Sha256::digest(&leaf)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let default = by_name("default");
    assert_eq!(default["type"], "Cert Chain", "{text}");
    assert_eq!(default["valid_now"], true, "{text}");
    // A day's certificate here: the one Envoy holds.
    assert_eq!(
        default["sha256_fingerprint"],
        fingerprint.as_str(),
        "{text}"
    );
    assert_eq!(by_name("ROOTCA")["type"], "CA", "{text}");
}

#[test]
fn short_lived_certificates_rotate_under_traffic_without_a_failed_request() {
    let world = World::start(
        "workload-rotation",
        &["--workload-cert-ttl-seconds", SHORT_TTL_SECONDS],
    );
    let secure = world.secure_envoy();
    let (first, _) = wait_until("Envoy holds default", PROPAGATION, || {
        held_certificate(&secure)
    });
    let client = Arc::new(MeshClient::new(&world.root_pem()));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (ns, client, stop) = (world.ns.clone(), client.clone(), stop.clone());
        std::thread::spawn(move || ns.run(|| client.until(&stop)))
    };

    // Three distinct certificates: two renewals, each pushed on its own.
    let mut versions = vec![first];
    let started = Instant::now();
    wait_until("two renewals reach Envoy", STARTUP, || {
        let (version, leaf) = held_certificate(&secure)?;
        if versions.last() != Some(&version) {
            assert_eq!(uri_sans(&leaf), [SPIFFE_ID]);
            versions.push(version);
        }
        match versions.len() {
            3.. => Ok(()),
            n => Err(format!("{n} certificates so far")),
        }
    });
    println!("3 certificates in {:?}: {versions:?}", started.elapsed());
    // Traffic over the last renewal too.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let tally = traffic.join().expect("traffic thread");
    println!("{tally:?}");
    assert_eq!(tally.failures, Vec::<String>::new(), "failed requests");
    assert!(tally.new_connections >= 20, "{tally:?}");
    assert!(tally.kept_connection >= 20, "{tally:?}");
    assert!(
        tally.served_certificates.len() >= 3,
        "new connections saw the renewed certificates: {tally:?}"
    );
    secure.assert_no_rejected_updates();
    assert_eq!(secure.stat("sds.default.update_rejected"), 0);
    assert!(secure.stat("sds.default.update_success") >= 3);
}

/// A TLS client that trusts only the mesh root and wants the server's
/// SPIFFE id (workload certificates carry no DNS name).
struct MeshClient {
    config: Arc<rustls::ClientConfig>,
}

#[derive(Default)]
struct Tally {
    new_connections: usize,
    kept_connection: usize,
    failures: Vec<String>,
    /// Leaf certificates seen on new connections.
    served_certificates: BTreeSet<Vec<u8>>,
}

impl std::fmt::Debug for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tally")
            .field("new_connections", &self.new_connections)
            .field("kept_connection", &self.kept_connection)
            .field("failures", &self.failures)
            .field("served_certificates", &self.served_certificates.len())
            .finish()
    }
}

impl MeshClient {
    fn new(root_pem: &str) -> MeshClient {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
            roots.add(cert.expect("root PEM")).expect("root");
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .expect("verifier");
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SpiffeVerifier { webpki }))
            .with_no_client_auth();
        MeshClient {
            config: Arc::new(config),
        }
    }

    fn connect(&self) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
        let name = ServerName::try_from("sds-secure.default").expect("server name");
        let conn = rustls::ClientConnection::new(self.config.clone(), name)
            .map_err(std::io::Error::other)?;
        let tcp = TcpStream::connect(TLS_ADDRESS)?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(rustls::StreamOwned::new(conn, tcp))
    }

    /// Requests until `stop`: each round on a new connection and on one
    /// kept open throughout.
    fn until(&self, stop: &AtomicBool) -> Tally {
        let mut tally = Tally::default();
        let mut kept = match self.connect() {
            Ok(kept) => Some(kept),
            Err(e) => {
                tally.failures.push(format!("connect: {e}"));
                None
            }
        };
        while !stop.load(Ordering::Relaxed) {
            match self.connect().and_then(|mut stream| {
                get(&mut stream, true)?;
                Ok(stream.conn.peer_certificates().map(|c| c[0].to_vec()))
            }) {
                Ok(leaf) => {
                    tally.new_connections += 1;
                    tally.served_certificates.extend(leaf);
                }
                Err(e) => tally.failures.push(format!("new connection: {e}")),
            }
            if let Some(stream) = &mut kept {
                match get(stream, false) {
                    Ok(()) => tally.kept_connection += 1,
                    Err(e) => tally.failures.push(format!("kept connection: {e}")),
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        tally
    }
}

/// One GET; `Ok` only for a 200 whose body was read whole.
fn get(stream: &mut impl ReadWrite, close: bool) -> std::io::Result<()> {
    let connection = if close { "close" } else { "keep-alive" };
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: sds\r\nConnection: {connection}\r\n\r\n"
    )?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    if !status.starts_with("HTTP/1.1 200") || body != b"ok" {
        return Err(std::io::Error::other(format!(
            "{} {}",
            status.trim_end(),
            String::from_utf8_lossy(&body)
        )));
    }
    Ok(())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The chain must lead to the mesh root; the name checked is the SPIFFE id
/// in the URI SAN, since workload certificates have no DNS name.
#[derive(Debug)]
struct SpiffeVerifier {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Ok(verified) => Ok(verified),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if uri_sans(end_entity) == [SPIFFE_ID] => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
