//! `pilotfish serve`: wires sources, the push scheduler, the ADS server and
//! the debug server together.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pilotfish_registries::consul::ConsulConfig;
use pilotfish_registries::kubernetes::{ApiServer, KubernetesConfig};
use pilotfish_translate::MeshConfig;
use tokio::sync::{mpsc, watch};
use tonic::service::Routes;

use crate::ads::{AdsServer, XdsContext, XdsLimits};
use crate::debug::{self, DebugState, RegistryStatus};
use crate::incoming::{self, IncomingLimits};
use crate::mesh_store::{MeshGeneration, MeshStore};
use crate::metrics::Metrics;
use crate::push::{self, Debounce};
use crate::quarantine::{QuarantinePolicy, QuarantineSink};
use crate::readiness::Readiness;
use crate::security::authn::{DEFAULT_TOKEN_AUDIENCE, TokenReviewer};
use crate::security::ca::CertificateAuthority;
use crate::security::csr::CertificateService;
use crate::security::server_tls::{self, ServingCertificate};
use crate::security::{Authenticator, WorkloadCertificates};
use crate::sources;
use crate::sources::config_dir::ConfigDirs;
use crate::sources::registry_files::RegistryFiles;
use crate::sources::watch::watch_paths;
use crate::xds_server::{self, ConnectionAge};

pub struct ServeOptions {
    pub config_dirs: Vec<PathBuf>,
    pub registry_files: Vec<PathBuf>,
    /// Plaintext ADS (Istio's 15010): config for anyone who asks, never
    /// secrets. `None`: off.
    pub xds_address: Option<SocketAddr>,
    /// ADS and the certificate service over TLS (Istio's 15012).
    pub secure_xds: Option<SecureXdsOptions>,
    /// Debug pages, readiness and metrics; loopback by default, since config
    /// dumps and sync status describe every proxy.
    pub http_address: SocketAddr,
    /// Only `/ready` and `/metrics`, for probes and scrapers from the network.
    pub monitoring_address: Option<SocketAddr>,
    /// How long SIGTERM may take: streams are told to go, then the process
    /// exits even if some connection lingers.
    pub shutdown_timeout: Duration,
    /// Limits on what any client can make the xDS listeners hold.
    pub incoming: IncomingLimits,
    /// How long an xDS connection lives before it is sent GOAWAY, so that
    /// proxies spread over replicas (Istio's
    /// `--keepaliveMaxServerConnectionAge`).
    pub connection_age: ConnectionAge,
    /// Who the mesh's workloads are: SPIFFE trust domain and token review.
    pub identity: IdentityOptions,
    pub debounce: Duration,
    pub mesh: MeshConfig,
    pub default_namespace: String,
    /// Pushing registries, in command-line order: a hostname defined by
    /// several belongs to the first (after the registry files).
    pub registries: Vec<DynamicRegistry>,
    /// Read Istio config, and the Secrets gateways name as credentials, from
    /// the Kubernetes API too (`--config-source kubernetes`).
    pub kubernetes_config: Option<KubernetesConfigOptions>,
    /// Kubeconfig for the Kubernetes registry and config source; `None`:
    /// KUBECONFIG, ~/.kube/config, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// What one xDS client can make the server hold.
    pub limits: XdsLimits,
    /// Whose rejections (NACKs) may leave the config object at fault out
    /// of pushes.
    pub quarantine: QuarantinePolicy,
}

/// A registry that pushes snapshots.
pub enum DynamicRegistry {
    Consul(ConsulConfig),
    Kubernetes(KubernetesConfig),
}

/// The secure xDS port.
pub struct SecureXdsOptions {
    pub address: SocketAddr,
    pub ca: CaSource,
    /// Serving certificate files; `None`: issued by the mesh CA for
    /// `dns_names` and `ips`, renewed at half its life.
    pub serving_files: Option<(PathBuf, PathBuf)>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// How often serving certificate files are checked for changes.
    pub reload_interval: Duration,
    /// Workload certificates from CreateCertificate: default and maximum life.
    pub workload_cert_ttl: Duration,
    pub max_workload_cert_ttl: Duration,
}

/// Where the mesh CA's root and key come from.
pub enum CaSource {
    /// `ca-cert.pem` and `ca-key.pem` in a directory, generated there at
    /// first start.
    Dir(PathBuf),
    /// A Kubernetes Secret (`ca-cert.pem`, `ca-key.pem`), created at first start.
    Secret { namespace: String, name: String },
    /// Generated in memory: certificates it issued die with the process.
    Ephemeral,
}

pub struct IdentityOptions {
    pub trust_domain: String,
    /// Check ServiceAccount tokens with the Kubernetes API server.
    pub token_review: bool,
    pub token_audiences: Vec<String>,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        IdentityOptions {
            trust_domain: "cluster.local".into(),
            token_review: false,
            token_audiences: vec![DEFAULT_TOKEN_AUDIENCE.into()],
        }
    }
}

pub struct KubernetesConfigOptions {
    /// Namespaces to watch; empty means all.
    pub namespaces: std::collections::BTreeSet<String>,
}

pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let mut store = MeshStore::new(
        ConfigDirs::new(opts.config_dirs, &opts.default_namespace),
        RegistryFiles::new(opts.registry_files),
        opts.mesh,
    );
    let (generation_tx, generation_rx) = watch::channel(Arc::new(MeshGeneration::default()));

    // Watch before the first load so no edit falls between the two.
    let (change_tx, change_rx) = mpsc::unbounded_channel();
    let _watcher = watch_paths(
        store.watched_dirs(),
        store.watched_files(),
        change_tx.clone(),
    )
    .context("cannot watch the config directories and registry files")?;
    let mut registries = Vec::new();
    // One client for every Kubernetes watch, built only when one is asked for.
    let needs_kube = opts.kubernetes_config.is_some()
        || opts.identity.token_review
        || matches!(
            opts.secure_xds.as_ref().map(|s| &s.ca),
            Some(CaSource::Secret { .. })
        )
        || opts
            .registries
            .iter()
            .any(|r| matches!(r, DynamicRegistry::Kubernetes(_)));
    let kube = match needs_kube {
        true => Some(
            ApiServer::connect(opts.kubeconfig.as_deref())
                .await
                .context("cannot configure the Kubernetes client")?,
        ),
        false => None,
    };
    let reviewer = match (&kube, opts.identity.token_review) {
        (Some(api), true) => Some(TokenReviewer::new(
            api.client.clone(),
            opts.identity.token_audiences.clone(),
        )),
        _ => None,
    };
    let authenticator = Arc::new(Authenticator::new(&opts.identity.trust_domain, reviewer));
    let readiness = Arc::new(Readiness::waiting(store.pending_sources()));
    let ca = match &opts.secure_xds {
        Some(secure) => Some(Arc::new(
            load_ca(&secure.ca, kube.as_ref(), &opts.identity.trust_domain).await?,
        )),
        None => None,
    };
    let mut xds = XdsContext::with_limits(metrics.clone(), generation_rx, opts.limits.clone())
        .with_authenticator(authenticator.clone())
        .with_readiness(readiness.clone())
        .with_quarantine(QuarantineSink::new(opts.quarantine, change_tx.clone()));
    if let (Some(secure), Some(ca)) = (&opts.secure_xds, &ca) {
        let workload_certificates = WorkloadCertificates::new(ca.clone(), secure.workload_cert_ttl);
        tokio::spawn(workload_certificates.clone().run(xds.shutdown.clone()));
        xds = xds.with_workload_certificates(workload_certificates);
    }
    let ctx = Arc::new(xds);
    // Kept alive for as long as the server runs: dropping stops the watches.
    let mut _consul = None;
    let mut _kubernetes = None;
    for registry in opts.registries {
        match registry {
            DynamicRegistry::Consul(config) => {
                store.add_dynamic_registry(sources::consul::REGISTRY_NAME);
                let (registry, status) =
                    sources::consul::start(config, change_tx.clone(), metrics.clone())
                        .context("cannot start the Consul registry")?;
                registries.push(RegistryStatus::Consul(status));
                _consul = Some(registry);
            }
            DynamicRegistry::Kubernetes(config) => {
                let api = kube.as_ref().expect("client built above");
                store.add_dynamic_registry(sources::kubernetes_registry::REGISTRY_NAME);
                tracing::info!(api_server = %api.url, namespaces = ?config.namespaces, "watching Kubernetes services");
                let (registry, status) = sources::kubernetes_registry::start(
                    api,
                    config,
                    change_tx.clone(),
                    metrics.clone(),
                );
                registries.push(RegistryStatus::Kubernetes(status));
                _kubernetes = Some(registry);
            }
        }
    }
    let _kubernetes_config = match (&opts.kubernetes_config, &kube) {
        (Some(config), Some(api)) => {
            store.add_dynamic_config(sources::kubernetes_config::SOURCE_NAME);
            tracing::info!(api_server = %api.url, namespaces = ?config.namespaces, "watching Istio config in Kubernetes");
            let source = sources::kubernetes_config::start(
                api,
                &config.namespaces,
                change_tx.clone(),
                metrics.clone(),
            );
            registries.push(RegistryStatus::Kubernetes(source.status()));
            // Gateway credentials (`credentialName`) live next to the config
            // that names them, in the same namespaces.
            store.add_dynamic_credentials(sources::kubernetes_secrets::SOURCE_NAME);
            tracing::info!(api_server = %api.url, namespaces = ?config.namespaces, "watching gateway credentials (Secrets) in Kubernetes");
            let secrets = sources::kubernetes_secrets::start(
                api,
                &config.namespaces,
                change_tx.clone(),
                metrics.clone(),
            );
            registries.push(RegistryStatus::Kubernetes(secrets.status()));
            Some((source, secrets))
        }
        _ => None,
    };
    push::publish(&mut store, &ctx, &generation_tx);
    // Ready once every registry file has loaded and every pushing registry
    // and config source has delivered its first full snapshot.
    readiness.update(store.pending_sources());

    let scheduler = tokio::spawn(push::run(
        store,
        ctx.clone(),
        generation_tx,
        change_rx,
        Debounce {
            quiet: opts.debounce,
            max_delay: opts.debounce * 10,
        },
        readiness.clone(),
    ));

    tokio::spawn(crate::memory::trim_after_releases(ctx.shutdown.clone()));

    let debug_state = DebugState {
        ctx: ctx.clone(),
        readiness: readiness.clone(),
        registries: Arc::new(registries),
    };
    let stop = ctx.shutdown.clone();
    let mut servers: Vec<Server> = Vec::new();
    servers.push(
        http_server(
            "debug",
            "--http-address",
            opts.http_address,
            debug::router(debug_state.clone()),
            stop.clone(),
        )
        .await?,
    );
    if let Some(address) = opts.monitoring_address {
        servers.push(
            http_server(
                "monitoring",
                "--monitoring-address",
                address,
                debug::monitoring_router(debug_state),
                stop.clone(),
            )
            .await?,
        );
    }
    // Both xDS ports: connections aged out and ended the same way.
    let serve_xds = |connections, routes| {
        xds_server::serve(
            connections,
            routes,
            opts.connection_age,
            metrics.clone(),
            stop.clone(),
        )
    };
    if let Some(address) = opts.xds_address {
        let listener =
            incoming::bind(address).with_context(|| cannot_listen(address, "--xds-address"))?;
        let connections = incoming::incoming(
            listener,
            None,
            opts.incoming.clone(),
            metrics.clone(),
            stop.clone(),
        );
        let routes = Routes::new(AdsServer::new(ctx.clone()).into_service());
        servers.push(named("plaintext xDS", serve_xds(connections, routes)));
        tracing::info!(%address, "serving plaintext xDS (config only, never secrets)");
    }
    if let (Some(secure), Some(ca)) = (&opts.secure_xds, &ca) {
        let source = match &secure.serving_files {
            Some((cert_chain, private_key)) => ServingCertificate::Files {
                cert_chain: cert_chain.clone(),
                private_key: private_key.clone(),
            },
            None => ServingCertificate::Issued {
                ca: ca.clone(),
                dns_names: secure.dns_names.clone(),
                ips: secure.ips.clone(),
                ttl: SERVING_CERT_TTL,
            },
        };
        let tls =
            server_tls::server_config(source, ca.root_pem(), secure.reload_interval, stop.clone())
                .context("cannot set up TLS for the secure xDS port")?;
        let listener = incoming::bind(secure.address)
            .with_context(|| cannot_listen(secure.address, "--secure-xds-address"))?;
        let connections = incoming::incoming(
            listener,
            Some(tokio_rustls::TlsAcceptor::from(tls)),
            opts.incoming.clone(),
            metrics.clone(),
            stop.clone(),
        );
        let certificates = CertificateService::new(
            ca.clone(),
            authenticator.clone(),
            secure.workload_cert_ttl,
            secure.max_workload_cert_ttl,
        );
        let routes =
            Routes::new(AdsServer::new(ctx.clone()).into_service()).add_service(certificates);
        servers.push(named("secure xDS", serve_xds(connections, routes)));
        tracing::info!(address = %secure.address, trust_domain = %opts.identity.trust_domain, "serving xDS and certificates over TLS");
    }
    tracing::info!(xds = ?opts.xds_address, secure_xds = ?opts.secure_xds.as_ref().map(|s| s.address), http = %opts.http_address, "pilotfish serving");

    let mut running = futures::future::select_all(servers);
    let failure = tokio::select! {
        _ = shutdown_signal() => None,
        (result, _, _) = &mut running => Some(result.err().unwrap_or_else(|| anyhow::anyhow!("a server stopped"))),
        r = scheduler => Some(anyhow::anyhow!("push scheduler stopped: {r:?}")),
    };
    readiness.stop();
    // Stop accepting, tell every proxy to go (GOAWAY, and UNAVAILABLE on its
    // stream so it reconnects elsewhere), and give connections a bounded
    // time to close.
    stop.cancel();
    let remaining = running.into_inner();
    match tokio::time::timeout(opts.shutdown_timeout, futures::future::join_all(remaining)).await {
        Ok(_) => tracing::info!("stopped"),
        Err(_) => {
            tracing::warn!(timeout = ?opts.shutdown_timeout, "connections still open at the shutdown deadline; exiting anyway")
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How long the mesh CA's certificate for the secure port lives (renewed at half).
const SERVING_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

type Server = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

fn named(
    what: &'static str,
    server: impl Future<Output = anyhow::Result<()>> + Send + 'static,
) -> Server {
    Box::pin(async move {
        server
            .await
            .with_context(|| format!("{what} server failed"))
    })
}

/// A listener's bind failure, naming the address and the flag that set it
/// (the cause follows: "Address already in use").
fn cannot_listen(address: SocketAddr, flag: &str) -> String {
    format!("cannot listen on {address} ({flag})")
}

async fn http_server(
    what: &'static str,
    flag: &'static str,
    address: SocketAddr,
    router: axum::Router,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Server> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| cannot_listen(address, flag))?;
    if !address.ip().is_loopback() && what == "debug" {
        tracing::warn!(%address, "debug pages (config dumps, proxy status) are open to the network");
    }
    Ok(named(what, async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .map_err(anyhow::Error::from)
    }))
}

async fn load_ca(
    source: &CaSource,
    kube: Option<&ApiServer>,
    trust_domain: &str,
) -> anyhow::Result<CertificateAuthority> {
    match source {
        CaSource::Dir(dir) => CertificateAuthority::load_or_generate_dir(dir, trust_domain)
            .with_context(|| format!("mesh CA in {}", dir.display())),
        CaSource::Secret { namespace, name } => {
            let api = kube.context("a CA Secret needs a Kubernetes API server")?;
            CertificateAuthority::load_or_create_secret(
                api.client.clone(),
                namespace,
                name,
                trust_domain,
            )
            .await
            .with_context(|| format!("mesh CA in Secret {namespace}/{name}"))
        }
        CaSource::Ephemeral => {
            tracing::warn!(
                "mesh CA generated in memory (no --ca-dir or --ca-secret): certificates it issues die with this process"
            );
            CertificateAuthority::generate(trust_domain).context("cannot generate the mesh CA")
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}
