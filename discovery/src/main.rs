//! The `pilotfish` binary.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use pilotfish_discovery::ads::XdsLimits;
use pilotfish_discovery::bootstrap::{self, BootstrapOptions, XdsTls, bootstrap};
use pilotfish_discovery::certificate_client::{
    ClientCertificate, RequestOptions, issue_offline, renew_until_cancelled, request_once,
};
use pilotfish_discovery::cli;
use pilotfish_discovery::incoming::{DEFAULT_MAX_CONNECTIONS, IncomingLimits};
use pilotfish_discovery::mesh_config_file::{self, MeshConfigFile};
use pilotfish_discovery::paths::{self, Expected};
use pilotfish_discovery::pilot_flags;
use pilotfish_discovery::quarantine::QuarantinePolicy;
use pilotfish_discovery::security::WorkloadIdentity;
use pilotfish_discovery::security::authn::DEFAULT_TOKEN_AUDIENCE;
use pilotfish_discovery::security::ca::CertificateAuthority;
use pilotfish_discovery::serve::{
    CaSource, DynamicRegistry, IdentityOptions, KubernetesConfigOptions, SecureXdsOptions,
    ServeOptions, serve,
};
use pilotfish_discovery::xds_server::{self, ConnectionAge};
use pilotfish_discovery::xds_types::XdsProtocol;
use pilotfish_registries::consul::ConsulConfig;
use pilotfish_registries::kubernetes::KubernetesConfig;
use pilotfish_translate::{MeshConfig, OutboundTrafficPolicy};

#[derive(Parser)]
#[command(
    name = "pilotfish",
    version,
    about = "A service-mesh control plane for stock Envoy, speaking Istio's API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve xDS to Envoy proxies from config directories and registries.
    Serve(Box<ServeArgs>),
    /// Print an Envoy bootstrap (JSON) that points a proxy at Pilotfish.
    Bootstrap(BootstrapArgs),
    /// Istio 1.1's `pilot-discovery discovery` flags (docker-compose files):
    /// --registries, --consulserverURL, --kubeconfig, --configDir,
    /// --meshConfig, --httpAddr, --grpcAddr, --secureGrpcAddr,
    /// --monitoringAddr, --domain; run as the matching `serve`.
    #[command(disable_help_flag = true)]
    Discovery {
        #[arg(num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Get (or issue offline) a workload certificate as files for Envoy.
    Certificate {
        #[command(subcommand)]
        command: CertificateCommand,
    },
    /// Check Istio config files offline, as the server would read them,
    /// plus cross-object checks (undefined subsets, unknown hosts...).
    Validate(cli::validate::ValidateArgs),
    /// Every proxy connected to a running server and how synced it is.
    ProxyStatus(cli::proxy_status::ProxyStatusArgs),
    /// What a running server sent one proxy: clusters, listeners, routes,
    /// endpoints or secrets.
    ProxyConfig(cli::proxy_config::ProxyConfigArgs),
    /// The path a request takes through a proxy's config, and the Istio
    /// objects behind each step.
    Explain(cli::explain::ExplainArgs),
    /// Which proxies and resources a config change would change.
    Diff(cli::diff::DiffArgs),
}

#[derive(Subcommand)]
enum CertificateCommand {
    /// Ask Pilotfish's CreateCertificate for a certificate and write
    /// cert-chain.pem, key.pem and root-cert.pem (atomically, via a `..data`
    /// symlink that Envoy's watched_directory notices).
    Request(CertificateRequestArgs),
    /// Issue a certificate with the CA key itself (VMs, Consul, tests).
    Issue(CertificateIssueArgs),
}

#[derive(clap::Args)]
struct CertificateRequestArgs {
    /// Pilotfish's secure address, HOST:PORT.
    #[arg(long)]
    xds_address: String,
    /// The mesh root certificate to verify Pilotfish with.
    #[arg(long)]
    root_cert: PathBuf,
    /// The name Pilotfish's serving certificate carries.
    #[arg(long, default_value = "istiod.istio-system.svc")]
    server_name: String,
    /// ServiceAccount token (audience istio-ca) to authenticate with.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Authenticate with an existing certificate (renewal); needs --private-key.
    #[arg(long, requires = "private_key")]
    cert_chain: Option<PathBuf>,
    #[arg(long, requires = "cert_chain")]
    private_key: Option<PathBuf>,
    #[arg(long)]
    out_dir: PathBuf,
    /// Requested lifetime in seconds (the server may grant less).
    #[arg(long, default_value_t = 86400)]
    ttl: u64,
    /// Keep running: renew at half the lifetime until SIGTERM or SIGINT.
    #[arg(long)]
    renew: bool,
}

#[derive(clap::Args)]
struct CertificateIssueArgs {
    /// Directory with ca-cert.pem and ca-key.pem (Istio's cacerts layout).
    #[arg(long)]
    ca_dir: PathBuf,
    /// Generate a new CA in --ca-dir when it holds none.
    #[arg(long)]
    generate_ca: bool,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    #[arg(long)]
    namespace: String,
    #[arg(long)]
    service_account: String,
    #[arg(long)]
    out_dir: PathBuf,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 86400)]
    ttl: u64,
}

/// `--xds-protocol`: which ADS variant the bootstrapped Envoy speaks.
#[derive(Clone, Copy, ValueEnum)]
enum XdsProtocolArg {
    /// State of the world (`api_type: GRPC`).
    Sotw,
    /// Incremental (`api_type: DELTA_GRPC`).
    Delta,
}

#[derive(Clone, Copy, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
enum OutboundPolicyArg {
    AllowAny,
    RegistryOnly,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory of Istio YAML (VirtualService, DestinationRule, Gateway, ServiceEntry); repeatable.
    #[arg(long = "config-dir")]
    config_dirs: Vec<PathBuf>,
    /// Registry file (services and endpoints); repeatable.
    #[arg(long = "registry-file")]
    registry_files: Vec<PathBuf>,
    /// Plaintext ADS listen address (config only, never secrets), or `off`.
    #[arg(long, default_value = "0.0.0.0:15010", value_parser = optional_address)]
    xds_address: OptionalAddress,
    /// ADS and Istio's CreateCertificate over TLS, or `off`.
    #[arg(long, default_value = "0.0.0.0:15012", value_parser = optional_address)]
    secure_xds_address: OptionalAddress,
    /// Debug pages, readiness and metrics. Config dumps and sync status
    /// describe every proxy: keep this on loopback unless the network is trusted.
    #[arg(long, default_value = "127.0.0.1:15014")]
    http_address: SocketAddr,
    /// Also serve only /ready and /metrics here (probes, Prometheus).
    #[arg(long)]
    monitoring_address: Option<SocketAddr>,
    /// Seconds SIGTERM may take: proxies are told to go, then the process exits.
    #[arg(long, default_value_t = 10)]
    shutdown_timeout_seconds: u64,
    /// Open xDS connections allowed per client IP address (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_connections_per_peer: usize,
    /// Open xDS connections allowed in all, per xDS port.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds a client may take to complete its TLS handshake.
    #[arg(long, default_value_t = 10)]
    tls_handshake_timeout_seconds: u64,
    /// How long an xDS connection lives (Istio's
    /// --keepaliveMaxServerConnectionAge), ±10 % at random per connection:
    /// then it is sent HTTP/2 GOAWAY and its ADS streams end after the
    /// responses in flight, and Envoy reconnects, through the Service, to
    /// any replica ("30m", "5s"; `off` or 0: connections live as long as
    /// their proxies keep them).
    #[arg(long, default_value = "30m", value_parser = xds_server::parse_optional_duration)]
    max_connection_age: OptionalDuration,
    /// How long a connection past its maximum age may stay open after its
    /// GOAWAY before it is closed (`off`: as long as its streams last).
    #[arg(long, default_value = "10s", value_parser = xds_server::parse_optional_duration)]
    max_connection_age_grace: OptionalDuration,
    #[command(flatten)]
    security: SecurityArgs,
    /// Quiet time after a change before pushing.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    /// ALLOW_ANY (the default) or REGISTRY_ONLY; wins over the mesh config file's.
    #[arg(long, value_enum)]
    outbound_traffic_policy: Option<OutboundPolicyArg>,
    /// Istio MeshConfig YAML (pilot-discovery's --meshConfig):
    /// outboundTrafficPolicy.mode, accessLogFile, enableTracing and
    /// defaultConfig.tracing.zipkin.address are honoured; other fields are
    /// logged as ignored.
    #[arg(long)]
    mesh_config: Option<PathBuf>,
    /// Cluster domain used to expand short host names.
    #[arg(long, default_value = "cluster.local")]
    domain_suffix: String,
    /// A Gateway applies only to gateway proxies in its own namespace
    /// (Istio's PILOT_SCOPE_GATEWAY_TO_NAMESPACE); by default its selector
    /// matches gateway proxies in every namespace.
    #[arg(long)]
    scope_gateway_to_namespace: bool,
    /// Namespace for config objects that name none.
    #[arg(long, default_value = "default")]
    default_namespace: String,
    /// Log format: `text` (colours only on a terminal) or `json` (one
    /// object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Same as `--log-format json`.
    #[arg(long, hide = true)]
    log_json: bool,
    /// Registries to watch besides --registry-file files (which imply `file`); repeatable.
    /// Their order is their precedence for a hostname defined twice.
    #[arg(long = "registry", value_enum)]
    registries: Vec<RegistryArg>,
    /// Where Istio config comes from besides --config-dir: `kubernetes` reads
    /// VirtualService, DestinationRule, Gateway and ServiceEntry from the API server.
    #[arg(long = "config-source", value_enum)]
    config_sources: Vec<ConfigSourceArg>,
    #[command(flatten)]
    consul: ConsulArgs,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// Whose rejections (NACKs) leave the config object at fault out of
    /// pushes until it changes: `authenticated` proxies (verified by
    /// certificate or token), `any` proxy (plaintext clients too), or `off`
    /// (rejections are only reported).
    #[arg(long, value_enum, default_value = "authenticated")]
    quarantine_rejected_config: QuarantineArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum QuarantineArg {
    Authenticated,
    Any,
    Off,
}

/// Bounds on what one xDS client can make the server hold.
#[derive(clap::Args)]
struct LimitArgs {
    /// Distinct proxy views whose snapshots are cached; least recently used beyond.
    #[arg(long, default_value_t = 10_000)]
    max_views: usize,
    /// Largest Envoy node (id, metadata, labels) accepted, encoded, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_node_bytes: usize,
    /// Largest ADS request message, in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_request_bytes: usize,
    /// How long a push waits for a proxy to read before its stream is closed ("20s", "500ms").
    #[arg(long, default_value = "20s", value_parser = pilotfish_crds::duration::parse_duration)]
    stream_send_timeout: Duration,
}

impl LimitArgs {
    fn limits(&self) -> XdsLimits {
        XdsLimits {
            max_views: self.max_views,
            max_node_bytes: self.max_node_bytes,
            max_request_bytes: self.max_request_bytes,
            stream_send_timeout: self.stream_send_timeout,
        }
    }
}

/// A listen address, or `None` for `off`.
type OptionalAddress = Option<SocketAddr>;

/// A duration, or `None` for `off` (no limit).
type OptionalDuration = Option<Duration>;

fn optional_address(text: &str) -> Result<OptionalAddress, String> {
    match text {
        "off" | "" => Ok(None),
        _ => text
            .parse()
            .map(Some)
            .map_err(|e| format!("{text:?}: {e} (expected HOST:PORT or off)")),
    }
}

#[derive(clap::Args)]
struct SecurityArgs {
    /// SPIFFE trust domain of workload identities.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Accept Kubernetes ServiceAccount tokens (checked with TokenReview) on the TLS port.
    #[arg(long)]
    token_review: bool,
    /// Audience a token must be for; repeatable.
    #[arg(long = "token-audience", default_value = DEFAULT_TOKEN_AUDIENCE)]
    token_audiences: Vec<String>,
    /// Directory holding the mesh CA (ca-cert.pem, ca-key.pem); generated there at first start.
    #[arg(long, conflicts_with = "ca_secret")]
    ca_dir: Option<PathBuf>,
    /// Kubernetes Secret NAMESPACE/NAME holding the mesh CA; created at first start.
    #[arg(long)]
    ca_secret: Option<String>,
    /// Serving certificate chain for the TLS port (PEM; re-read when it changes).
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// DNS names of the CA-issued serving certificate; repeatable.
    #[arg(long = "tls-dns-name", default_values_t = [
        "istiod.istio-system.svc".to_string(),
        "pilotfish.pilotfish-system.svc".to_string(),
        "localhost".to_string(),
    ])]
    tls_dns_names: Vec<String>,
    /// IP addresses of the CA-issued serving certificate; repeatable.
    #[arg(long = "tls-ip", default_value = "127.0.0.1")]
    tls_ips: Vec<IpAddr>,
    /// Seconds between checks of the serving certificate files.
    #[arg(long, default_value_t = 5)]
    tls_reload_seconds: u64,
    /// Default life of workload certificates (CreateCertificate), seconds.
    #[arg(long, default_value_t = 24 * 3600)]
    workload_cert_ttl_seconds: u64,
    /// Longest life a workload certificate may be asked for, seconds.
    #[arg(long, default_value_t = 90 * 24 * 3600)]
    max_workload_cert_ttl_seconds: u64,
}

impl SecurityArgs {
    fn ca_source(&self) -> anyhow::Result<CaSource> {
        if let Some(dir) = &self.ca_dir {
            return Ok(CaSource::Dir(dir.clone()));
        }
        match &self.ca_secret {
            Some(text) => {
                let (namespace, name) = text
                    .split_once('/')
                    .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
                    .with_context(|| format!("--ca-secret {text:?}: expected NAMESPACE/NAME"))?;
                Ok(CaSource::Secret {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                })
            }
            None => Ok(CaSource::Ephemeral),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RegistryArg {
    File,
    Consul,
    Kubernetes,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConfigSourceArg {
    Kubernetes,
}

#[derive(clap::Args)]
struct KubeArgs {
    /// Kubeconfig for --registry kubernetes and --config-source kubernetes
    /// (default: KUBECONFIG, ~/.kube/config, then the in-cluster service account).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (services and config); repeatable. Default: all namespaces.
    #[arg(long = "kube-namespace")]
    kube_namespaces: Vec<String>,
    /// Read Nodes for the region of endpoint localities (needs list/watch on nodes).
    #[arg(long)]
    kube_read_nodes: bool,
}

#[derive(clap::Args)]
struct ConsulArgs {
    /// Consul agent HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:8500")]
    consul_address: String,
    /// Hostnames are <service>.<domain>.
    #[arg(long, default_value = "service.consul")]
    consul_domain: String,
    /// Datacenter to read; hostnames then are <service>.service.<dc>.consul.
    #[arg(long)]
    consul_datacenter: Option<String>,
    /// Namespace given to Consul services.
    #[arg(long, default_value = "default")]
    consul_namespace: String,
    /// Import only instances whose health checks pass (default: all, failing ones marked unhealthy).
    #[arg(long)]
    consul_passing_only: bool,
    /// ACL token.
    #[arg(long, env = "CONSUL_HTTP_TOKEN", hide_env_values = true)]
    consul_token: Option<String>,
}

impl ConsulArgs {
    fn config(&self) -> ConsulConfig {
        ConsulConfig {
            address: self.consul_address.clone(),
            domain: self.consul_domain.clone(),
            datacenter: self.consul_datacenter.clone(),
            namespace: self.consul_namespace.clone(),
            passing_only: self.consul_passing_only,
            token: self.consul_token.clone(),
            ..ConsulConfig::default()
        }
    }
}

#[derive(clap::Args)]
struct BootstrapArgs {
    /// Pilotfish's xDS address, HOST:PORT; repeatable (each replica's):
    /// Envoy's xDS cluster lists them all and reconnects to another when
    /// one goes.
    #[arg(long = "xds-address", required = true)]
    xds_addresses: Vec<String>,
    #[arg(long, default_value = "sidecar")]
    proxy_type: String,
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,
    /// Pod (workload instance) name.
    #[arg(long, default_value = "proxy")]
    name: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    #[arg(long, default_value = "cluster.local")]
    domain_suffix: String,
    /// Use this node id instead of Istio's sidecar~ip~name.ns~ns.svc.domain form.
    #[arg(long)]
    node_id: Option<String>,
    #[arg(long, default_value_t = 15000)]
    admin_port: u16,
    /// REDIRECT (iptables), TPROXY, or NONE (no iptables: outbound listeners
    /// bind 127.0.0.1:<port>, which the application dials itself).
    #[arg(long, default_value = "REDIRECT")]
    interception_mode: String,
    /// Workload label KEY=VALUE; repeatable.
    #[arg(long = "label")]
    labels: Vec<String>,
    /// The proxy's locality, region/zone[/subzone] (Envoy node.locality).
    #[arg(long)]
    locality: Option<String>,
    /// ADS variant: delta (DELTA_GRPC, incremental; Istio's default since
    /// 1.22) or sotw (api_type GRPC, state of the world).
    #[arg(long, value_enum, default_value = "delta")]
    xds_protocol: XdsProtocolArg,
    /// Port answering GET /healthz/ready from Envoy's /ready (Istio's 15021);
    /// 0 for none.
    #[arg(long, default_value_t = 15021)]
    health_port: u16,
    /// Port answering GET /stats/prometheus (Istio's 15090); 0 for none.
    #[arg(long, default_value_t = 15090)]
    stats_port: u16,
    /// The workload's service account (metadata SERVICE_ACCOUNT).
    #[arg(long)]
    service_account: Option<String>,
    /// Mesh CA root (PEM file on the proxy): connect over TLS to the secure port.
    #[arg(long)]
    xds_root_cert: Option<String>,
    /// Name Pilotfish's certificate must carry.
    #[arg(long, default_value = "istiod.istio-system.svc")]
    xds_server_name: String,
    /// Directory with the proxy's cert-chain.pem and key.pem (as written by
    /// `pilotfish certificate`); Envoy reloads them when it changes.
    #[arg(long, requires = "xds_root_cert", conflicts_with = "token_file")]
    cert_dir: Option<String>,
    /// ServiceAccount token file, sent as `authorization: Bearer` (read now
    /// and written into the bootstrap).
    #[arg(long, requires = "xds_root_cert")]
    token_file: Option<PathBuf>,
    /// DNS proxying (Istio's ISTIO_META_DNS_CAPTURE and _AUTO_ALLOCATE): the
    /// sidecar answers the pod's DNS, captured by `pilotfish-iptables.sh
    /// --capture-dns`, with service addresses, allocated ones for
    /// ServiceEntries without addresses.
    #[arg(long)]
    dns_proxy: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let success = |result: anyhow::Result<()>| result.map(|()| ExitCode::SUCCESS);
    let result = match cli.command {
        Command::Serve(args) => success(run_serve(*args)),
        Command::Discovery { args } => success(run_discovery(&args)),
        Command::Bootstrap(args) => success(run_bootstrap(args)),
        Command::Certificate { command } => success(run_certificate(command)),
        Command::Validate(args) => cli::validate::run(args),
        Command::ProxyStatus(args) => cli::proxy_status::run(args),
        Command::ProxyConfig(args) => cli::proxy_config::run(args),
        Command::Explain(args) => cli::explain::run(args),
        Command::Diff(args) => cli::diff::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            // One line, every cause after a colon: what a log collector
            // keeps together ("cannot listen on ADDRESS (--flag): Address
            // already in use").
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_json || args.log_format == LogFormat::Json);
    args.check_paths()?;
    if args.registries.contains(&RegistryArg::File) && args.registry_files.is_empty() {
        bail!("--registry file needs at least one --registry-file");
    }
    let kube_config = args.config_sources.contains(&ConfigSourceArg::Kubernetes);
    let mut registry_order: Vec<RegistryArg> = Vec::new();
    for r in &args.registries {
        if *r != RegistryArg::File && !registry_order.contains(r) {
            registry_order.push(*r);
        }
    }
    if args.config_dirs.is_empty()
        && args.registry_files.is_empty()
        && registry_order.is_empty()
        && !kube_config
    {
        bail!(
            "nothing to serve: give --config-dir, --registry-file, --registry consul|kubernetes and/or --config-source kubernetes"
        );
    }
    let uses_kube = kube_config || registry_order.contains(&RegistryArg::Kubernetes);
    if !uses_kube && (args.kubeconfig_given() || !args.kube.kube_namespaces.is_empty()) {
        bail!(
            "--kubeconfig and --kube-namespace need --registry kubernetes or --config-source kubernetes"
        );
    }
    let namespaces: std::collections::BTreeSet<String> =
        args.kube.kube_namespaces.iter().cloned().collect();
    let registries = registry_order
        .iter()
        .map(|r| match r {
            RegistryArg::Consul => DynamicRegistry::Consul(args.consul.config()),
            RegistryArg::Kubernetes => DynamicRegistry::Kubernetes(KubernetesConfig {
                namespaces: namespaces.clone(),
                domain_suffix: args.domain_suffix.clone(),
                read_nodes: args.kube.kube_read_nodes,
                ..KubernetesConfig::default()
            }),
            RegistryArg::File => unreachable!("filtered out above"),
        })
        .collect();
    if args.xds_address.is_none() && args.secure_xds_address.is_none() {
        bail!("--xds-address and --secure-xds-address are both off: nothing would serve xDS");
    }
    let mesh_file = match &args.mesh_config {
        Some(path) => mesh_config_file::load(path)?,
        None => MeshConfigFile::default(),
    };
    if !mesh_file.ignored_fields.is_empty() {
        tracing::warn!(
            ignored = ?mesh_file.ignored_fields,
            "mesh config fields that Pilotfish does not honour"
        );
    }
    let outbound_traffic_policy = match args.outbound_traffic_policy {
        Some(OutboundPolicyArg::AllowAny) => OutboundTrafficPolicy::AllowAny,
        Some(OutboundPolicyArg::RegistryOnly) => OutboundTrafficPolicy::RegistryOnly,
        None => mesh_file.outbound_traffic_policy.unwrap_or_default(),
    };
    let security = &args.security;
    let secure_xds = match args.secure_xds_address {
        None => None,
        Some(address) => Some(SecureXdsOptions {
            address,
            ca: security.ca_source()?,
            serving_files: security
                .tls_cert_file
                .clone()
                .zip(security.tls_key_file.clone()),
            dns_names: security.tls_dns_names.clone(),
            ips: security.tls_ips.clone(),
            reload_interval: Duration::from_secs(security.tls_reload_seconds.max(1)),
            workload_cert_ttl: Duration::from_secs(security.workload_cert_ttl_seconds),
            max_workload_cert_ttl: Duration::from_secs(security.max_workload_cert_ttl_seconds),
        }),
    };
    let opts = ServeOptions {
        config_dirs: args.config_dirs,
        registry_files: args.registry_files,
        xds_address: args.xds_address,
        secure_xds,
        http_address: args.http_address,
        monitoring_address: args.monitoring_address,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout_seconds),
        incoming: IncomingLimits {
            max_per_peer: Some(args.max_connections_per_peer).filter(|n| *n > 0),
            max_total: args.max_connections.max(1),
            handshake_timeout: Duration::from_secs(args.tls_handshake_timeout_seconds.max(1)),
        },
        connection_age: ConnectionAge {
            max: args.max_connection_age,
            grace: args.max_connection_age_grace,
        },
        identity: IdentityOptions {
            trust_domain: args.security.trust_domain.clone(),
            token_review: args.security.token_review,
            token_audiences: args.security.token_audiences.clone(),
        },
        debounce: Duration::from_millis(args.debounce_ms),
        mesh: MeshConfig {
            domain_suffix: args.domain_suffix,
            scope_gateway_to_namespace: args.scope_gateway_to_namespace,
            outbound_traffic_policy,
            access_log_file: mesh_file.access_log_file,
            zipkin: mesh_file.zipkin,
            trust_domain: args.security.trust_domain.clone(),
            ..MeshConfig::default()
        },
        default_namespace: args.default_namespace,
        registries,
        kubernetes_config: kube_config.then(|| KubernetesConfigOptions {
            namespaces: namespaces.clone(),
        }),
        kubeconfig: args.kube.kubeconfig.clone(),
        limits: args.limits.limits(),
        quarantine: match args.quarantine_rejected_config {
            QuarantineArg::Authenticated => QuarantinePolicy::Authenticated,
            QuarantineArg::Any => QuarantinePolicy::Any,
            QuarantineArg::Off => QuarantinePolicy::Off,
        },
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(opts));
    // Blocking threads (file watches, Kubernetes clients) must not hold up
    // the exit that serve() has already bounded.
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// `pilotfish discovery ARGS`: pilot-discovery's flags run as `serve`.
fn run_discovery(args: &[String]) -> anyhow::Result<()> {
    if matches!(args, [only] if only == "--help" || only == "-h") {
        let mut command = <Cli as clap::CommandFactory>::command();
        if let Some(discovery) = command.find_subcommand_mut("discovery") {
            discovery.print_long_help()?;
        }
        return Ok(());
    }
    let serve_args = pilot_flags::serve_args(args)?;
    // Errors name serve's flags: say which serve command they come from.
    let ran_as = format!("run as `pilotfish serve {}`", serve_args.join(" "));
    let argv = ["pilotfish", "serve"]
        .into_iter()
        .map(String::from)
        .chain(serve_args);
    let cli = Cli::try_parse_from(argv).context(ran_as.clone())?;
    let Command::Serve(serve_args) = cli.command else {
        bail!("pilot-discovery flags did not translate to `serve`");
    };
    run_serve(*serve_args).context(ran_as)
}

impl ServeArgs {
    fn kubeconfig_given(&self) -> bool {
        self.kube.kubeconfig.is_some()
    }

    /// Every input path flag must name something readable of the right
    /// kind at start (see `paths`); `--ca-dir` is an output, created.
    fn check_paths(&self) -> Result<(), paths::PathError> {
        let dirs = self
            .config_dirs
            .iter()
            .map(|p| ("--config-dir", p, Expected::Directory));
        let files = [
            ("--tls-cert-file", &self.security.tls_cert_file),
            ("--tls-key-file", &self.security.tls_key_file),
            ("--kubeconfig", &self.kube.kubeconfig),
            ("--mesh-config", &self.mesh_config),
        ]
        .into_iter()
        .filter_map(|(flag, path)| Some((flag, path.as_ref()?, Expected::File)));
        let registry_files = self
            .registry_files
            .iter()
            .map(|p| ("--registry-file", p, Expected::File));
        dirs.chain(registry_files)
            .chain(files)
            .try_for_each(|(flag, path, expected)| paths::check(flag, path, expected))
    }
}

fn run_bootstrap(args: BootstrapArgs) -> anyhow::Result<()> {
    let xds_tls = xds_tls(&args)?;
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        let (k, v) = label
            .split_once('=')
            .with_context(|| format!("--label {label:?}: expected KEY=VALUE"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let opts = BootstrapOptions {
        proxy_type: args.proxy_type,
        ip: args.ip,
        name: args.name,
        namespace: args.namespace,
        domain_suffix: args.domain_suffix,
        node_id: args.node_id,
        xds_addresses: args.xds_addresses,
        admin_port: args.admin_port,
        interception_mode: args.interception_mode,
        labels,
        locality: args.locality,
        health_port: Some(args.health_port).filter(|p| *p != 0),
        stats_port: Some(args.stats_port).filter(|p| *p != 0),
        xds_protocol: match args.xds_protocol {
            XdsProtocolArg::Sotw => XdsProtocol::Sotw,
            XdsProtocolArg::Delta => XdsProtocol::Delta,
        },
        service_account: args.service_account.clone(),
        xds_tls,
        dns_proxy: args.dns_proxy,
    };
    let value = bootstrap(&opts)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn xds_tls(args: &BootstrapArgs) -> anyhow::Result<Option<XdsTls>> {
    let Some(root_cert) = &args.xds_root_cert else {
        return Ok(None);
    };
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--token-file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let client_certificate = args.cert_dir.as_ref().map(|dir| {
        let dir = dir.trim_end_matches('/');
        bootstrap::ClientCertificate {
            cert_chain: format!("{dir}/cert-chain.pem"),
            private_key: format!("{dir}/key.pem"),
            watched_directory: Some(dir.to_string()),
        }
    });
    Ok(Some(XdsTls {
        root_cert: root_cert.clone(),
        server_name: args.xds_server_name.clone(),
        client_certificate,
        token,
    }))
}

fn run_certificate(command: CertificateCommand) -> anyhow::Result<()> {
    init_tracing(false);
    // One crypto provider for every rustls user in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match command {
        CertificateCommand::Request(args) => {
            let opts = RequestOptions {
                xds_address: args.xds_address,
                root_cert: args.root_cert,
                server_name: args.server_name,
                token_file: args.token_file,
                client_certificate: args.cert_chain.zip(args.private_key).map(
                    |(cert_chain, private_key)| ClientCertificate {
                        cert_chain,
                        private_key,
                    },
                ),
                out_dir: args.out_dir,
                ttl: Duration::from_secs(args.ttl),
            };
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(async move {
                if !args.renew {
                    request_once(&opts).await?;
                    return Ok(());
                }
                let cancel = tokio_util::sync::CancellationToken::new();
                let on_signal = cancel.clone();
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .context("cannot watch SIGTERM")?;
                tokio::spawn(async move {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                    tracing::info!("stopping certificate renewal");
                    on_signal.cancel();
                });
                renew_until_cancelled(opts, cancel).await?;
                Ok(())
            })
        }
        CertificateCommand::Issue(args) => {
            let ca = if args.generate_ca {
                CertificateAuthority::load_or_generate_dir(&args.ca_dir, &args.trust_domain)?
            } else {
                CertificateAuthority::load_dir(&args.ca_dir, &args.trust_domain)
                    .context("no usable CA there (--generate-ca creates one)")?
            };
            let identity =
                WorkloadIdentity::new(&args.trust_domain, &args.namespace, &args.service_account);
            WorkloadIdentity::parse_spiffe(&identity.spiffe_uri())
                .with_context(|| format!("--namespace/--service-account: {identity}"))?;
            issue_offline(&ca, &identity, Duration::from_secs(args.ttl), &args.out_dir)?;
            Ok(())
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: a log file or a collector gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
