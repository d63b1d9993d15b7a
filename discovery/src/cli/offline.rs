//! The mesh as the server would build it, read once from files: the same
//! config loader, registry files and merge ([`MeshStore`]), for commands
//! that need no server (`validate`, `explain`, `diff`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use pilotfish_crds::ConfigSpec;
use pilotfish_registries::RegistrySnapshot;
use pilotfish_registries::consul::{ConsulConfig, ConsulRegistry};
use pilotfish_translate::{
    InboundPort, InterceptionMode, MeshConfig, OutboundTrafficPolicy, ProxyKind, ProxyView,
};

use crate::mesh_config_file::{self, MeshConfigFile};
use crate::mesh_store::{MeshGeneration, MeshStore, RegistryScope};
use crate::sources::config_dir::ConfigDirs;
use crate::sources::consul;
use crate::sources::registry_files::RegistryFiles;

/// Where the mesh comes from, as `serve` takes it.
#[derive(Args, Clone, Debug, Default)]
pub struct MeshFiles {
    /// A registry file (our YAML format or Istio ServiceEntries); repeatable.
    #[arg(long = "registry-file")]
    pub registry_files: Vec<PathBuf>,
    /// Istio's mesh config (meshConfig YAML), as `serve --mesh-config`.
    #[arg(long)]
    pub mesh_config: Option<PathBuf>,
    /// Namespace for objects that name none.
    #[arg(long, default_value = "default")]
    pub default_namespace: String,
    /// The cluster domain short names expand with.
    #[arg(long, default_value = "cluster.local")]
    pub domain_suffix: String,
    /// Overrides the mesh config's outboundTrafficPolicy.
    #[arg(long, value_parser = ["ALLOW_ANY", "REGISTRY_ONLY"])]
    pub outbound_traffic_policy: Option<String>,
    /// Also read the services of a Consul agent once (`consul`).
    #[arg(long, value_parser = ["consul"])]
    pub registry: Option<String>,
    /// The Consul agent for `--registry consul`.
    #[arg(long, default_value = "http://127.0.0.1:8500")]
    pub consul_address: String,
    /// The domain Consul services are named in, as `serve --consul-domain`.
    #[arg(long)]
    pub consul_domain: Option<String>,
}

/// How long `--registry consul` waits for the first full read.
const CONSUL_READ_TIMEOUT: Duration = Duration::from_secs(20);

impl MeshFiles {
    /// One generation from `config` (files or directories of Istio YAML)
    /// and the registry files, with every problem the server would report.
    pub fn load(&self, config: &[PathBuf]) -> anyhow::Result<MeshGeneration> {
        Ok(self.store(config)?.rebuild())
    }

    /// The store `load` rebuilds, for callers that add config of their own.
    pub fn store(&self, config: &[PathBuf]) -> anyhow::Result<MeshStore> {
        for path in config.iter().chain(&self.registry_files) {
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        }
        let mesh_file = match &self.mesh_config {
            Some(path) => mesh_config_file::load(path)?,
            None => MeshConfigFile::default(),
        };
        let outbound_traffic_policy = match self.outbound_traffic_policy.as_deref() {
            Some("REGISTRY_ONLY") => OutboundTrafficPolicy::RegistryOnly,
            Some(_) => OutboundTrafficPolicy::AllowAny,
            None => mesh_file.outbound_traffic_policy.unwrap_or_default(),
        };
        let mesh = MeshConfig {
            domain_suffix: self.domain_suffix.clone(),
            outbound_traffic_policy,
            access_log_file: mesh_file.access_log_file,
            zipkin: mesh_file.zipkin,
            ..MeshConfig::default()
        };
        let mut store = MeshStore::new(
            ConfigDirs::new(config.to_vec(), &self.default_namespace),
            RegistryFiles::new(self.registry_files.clone()),
            mesh,
        );
        if self.registry.is_some() {
            let snapshot = self.read_consul()?;
            store.add_dynamic_registry(consul::REGISTRY_NAME);
            store.set_dynamic_registry(consul::REGISTRY_NAME, snapshot, RegistryScope::Everything);
        }
        Ok(store)
    }

    /// Every Consul service, read once through the server's own watcher.
    fn read_consul(&self) -> anyhow::Result<Arc<RegistrySnapshot>> {
        let mut config = ConsulConfig::new(self.consul_address.clone());
        if let Some(domain) = &self.consul_domain {
            config.domain = domain.clone();
        }
        config.token = std::env::var("CONSUL_HTTP_TOKEN").ok();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime for Consul")?;
        runtime.block_on(async {
            let registry = ConsulRegistry::start(config)?;
            let mut snapshots = registry.snapshots();
            let status = registry.status();
            let synced =
                tokio::time::timeout(CONSUL_READ_TIMEOUT, snapshots.wait_for(|s| s.synced)).await;
            match synced {
                Ok(Ok(snapshot)) => Ok(snapshot.snapshot.clone()),
                _ => bail!(
                    "Consul at {} was not read within {}s: {}",
                    self.consul_address,
                    CONSUL_READ_TIMEOUT.as_secs(),
                    status
                        .borrow()
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "no answer".into())
                ),
            }
        })
    }
}

/// A proxy as the commands name it: `sidecar default app=reviews,version=v1`.
#[derive(Clone, Debug)]
pub struct NamedView {
    pub name: String,
    pub view: ProxyView,
}

/// `--proxy-namespace`, `--proxy-label`, `--proxy-type`: a view given by hand.
#[derive(Args, Clone, Debug, Default)]
pub struct ViewArgs {
    /// The proxy's namespace.
    #[arg(long = "proxy-namespace")]
    pub namespace: Option<String>,
    /// A workload label of the proxy (KEY=VALUE); repeatable.
    #[arg(long = "proxy-label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// sidecar or router (a gateway).
    #[arg(long = "proxy-type", default_value = "sidecar", value_parser = ["sidecar", "router"])]
    pub kind: String,
    /// The workload's IP, for its inbound ports (registry endpoints there).
    #[arg(long = "proxy-ip")]
    pub ip: Option<String>,
}

impl ViewArgs {
    pub fn given(&self) -> bool {
        self.namespace.is_some() || !self.labels.is_empty() || self.ip.is_some()
    }

    pub fn view(&self, generation: &MeshGeneration, default_namespace: &str) -> NamedView {
        let kind = match self.kind.as_str() {
            "router" => ProxyKind::Router,
            _ => ProxyKind::Sidecar,
        };
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| default_namespace.to_string());
        let labels: BTreeMap<String, String> = self.labels.iter().cloned().collect();
        let mut view = view(kind, &namespace, labels);
        if let Some(ip) = &self.ip {
            view.inbound = generation.inbound.ports(ip).to_vec();
        }
        NamedView {
            name: name_of(&view),
            view,
        }
    }
}

pub fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn view(kind: ProxyKind, namespace: &str, labels: BTreeMap<String, String>) -> ProxyView {
    ProxyView {
        kind,
        namespace: namespace.to_string(),
        interception: InterceptionMode::Redirect,
        labels,
        ..ProxyView::default()
    }
}

/// `sidecar default app=reviews,version=v1`.
pub fn name_of(view: &ProxyView) -> String {
    let kind = match view.kind {
        ProxyKind::Sidecar => "sidecar",
        ProxyKind::Router => "router",
    };
    let labels: Vec<String> = view
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let labels = match labels.is_empty() {
        true => "-".to_string(),
        false => labels.join(","),
    };
    format!("{kind} {} {labels}", view.namespace)
}

/// The proxies the mesh implies: a sidecar for every distinct workload the
/// registries list (namespace of its service, endpoint labels, the ports
/// served at its address), and a gateway for every Gateway selector.
pub fn implied_views(generation: &MeshGeneration) -> Vec<NamedView> {
    let mesh = &generation.mesh;
    // By name and inbound ports: equal views once.
    let mut views: BTreeMap<(String, Vec<InboundPort>), ProxyView> = BTreeMap::new();
    let mut add = |v: ProxyView| {
        views.entry((name_of(&v), v.inbound.clone())).or_insert(v);
    };
    for service in mesh.services.iter() {
        let Some(endpoints) = mesh.endpoints.get(&service.hostname) else {
            continue;
        };
        for endpoint in endpoints.iter() {
            let mut v = view(
                ProxyKind::Sidecar,
                &service.namespace,
                endpoint.labels.clone(),
            );
            v.inbound = generation.inbound.ports(&endpoint.address).to_vec();
            add(v);
        }
    }
    for object in mesh.config.iter() {
        if let ConfigSpec::Gateway(gateway) = &object.spec {
            add(view(
                ProxyKind::Router,
                &object.key().namespace,
                gateway.selector.clone(),
            ));
        }
    }
    // Two workloads with equal labels but other inbound ports print alike.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    views
        .into_iter()
        .map(|((name, _), view)| {
            let n = seen.entry(name.clone()).or_default();
            *n += 1;
            let name = match *n {
                1 => name,
                n => format!("{name} #{n}"),
            };
            NamedView { name, view }
        })
        .collect()
}
