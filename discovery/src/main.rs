//! The `pilotfish` binary.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use pilotfish_discovery::ads::XdsLimits;
use pilotfish_discovery::bootstrap::{BootstrapOptions, bootstrap};
use pilotfish_discovery::serve::{DynamicRegistry, KubernetesConfigOptions, ServeOptions, serve};
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
    Serve(ServeArgs),
    /// Print an Envoy bootstrap (JSON) that points a proxy at Pilotfish.
    Bootstrap(BootstrapArgs),
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
    /// gRPC ADS listen address.
    #[arg(long, default_value = "0.0.0.0:15010")]
    xds_address: SocketAddr,
    /// Debug, readiness and metrics listen address.
    #[arg(long, default_value = "0.0.0.0:15014")]
    http_address: SocketAddr,
    /// Quiet time after a change before pushing.
    #[arg(long, default_value_t = 100)]
    debounce_ms: u64,
    #[arg(long, value_enum, default_value = "ALLOW_ANY")]
    outbound_traffic_policy: OutboundPolicyArg,
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
    /// Log as JSON lines.
    #[arg(long)]
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
    /// Pilotfish's xDS address, HOST:PORT.
    #[arg(long)]
    xds_address: String,
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
    /// REDIRECT (iptables), TPROXY, or NONE (listeners bind real ports).
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Bootstrap(args) => run_bootstrap(args),
    }
}

fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_json);
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
    let opts = ServeOptions {
        config_dirs: args.config_dirs,
        registry_files: args.registry_files,
        xds_address: args.xds_address,
        http_address: args.http_address,
        debounce: Duration::from_millis(args.debounce_ms),
        mesh: MeshConfig {
            domain_suffix: args.domain_suffix,
            scope_gateway_to_namespace: args.scope_gateway_to_namespace,
            outbound_traffic_policy: match args.outbound_traffic_policy {
                OutboundPolicyArg::AllowAny => OutboundTrafficPolicy::AllowAny,
                OutboundPolicyArg::RegistryOnly => OutboundTrafficPolicy::RegistryOnly,
            },
            ..MeshConfig::default()
        },
        default_namespace: args.default_namespace,
        registries,
        kubernetes_config: kube_config.then(|| KubernetesConfigOptions {
            namespaces: namespaces.clone(),
        }),
        kubeconfig: args.kube.kubeconfig.clone(),
        limits: args.limits.limits(),
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(opts))
}

impl ServeArgs {
    fn kubeconfig_given(&self) -> bool {
        self.kube.kubeconfig.is_some()
    }
}

fn run_bootstrap(args: BootstrapArgs) -> anyhow::Result<()> {
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
        xds_address: args.xds_address,
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
    };
    let value = bootstrap(&opts)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
