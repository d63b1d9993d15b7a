//! `pilotfish serve`: wires sources, the push scheduler, the ADS server and
//! the debug server together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use pilotfish_registries::consul::ConsulConfig;
use pilotfish_registries::kubernetes::{ApiServer, KubernetesConfig};
use pilotfish_translate::MeshConfig;
use tokio::sync::{mpsc, watch};

use crate::ads::limits::with_http2_limits;
use crate::ads::{AdsServer, XdsContext, XdsLimits};
use crate::debug::{self, DebugState, RegistryStatus};
use crate::mesh_store::{MeshGeneration, MeshStore};
use crate::metrics::Metrics;
use crate::push::{self, Debounce};
use crate::sources;
use crate::sources::config_dir::ConfigDirs;
use crate::sources::registry_files::RegistryFiles;
use crate::sources::watch::watch_paths;

pub struct ServeOptions {
    pub config_dirs: Vec<PathBuf>,
    pub registry_files: Vec<PathBuf>,
    pub xds_address: SocketAddr,
    pub http_address: SocketAddr,
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
}

/// A registry that pushes snapshots.
pub enum DynamicRegistry {
    Consul(ConsulConfig),
    Kubernetes(KubernetesConfig),
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
    let ctx = Arc::new(XdsContext::with_limits(
        metrics.clone(),
        generation_rx,
        opts.limits.clone(),
    ));

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
    // Ready once every registry and config source has delivered its first
    // full snapshot.
    let ready = Arc::new(AtomicBool::new(store.all_synced()));

    let scheduler = tokio::spawn(push::run(
        store,
        ctx.clone(),
        generation_tx,
        change_rx,
        Debounce {
            quiet: opts.debounce,
            max_delay: opts.debounce * 10,
        },
        ready.clone(),
    ));

    let http_listener = tokio::net::TcpListener::bind(opts.http_address)
        .await
        .with_context(|| format!("cannot listen on {} (debug/metrics)", opts.http_address))?;
    let http = axum::serve(
        http_listener,
        debug::router(DebugState {
            ctx: ctx.clone(),
            ready: ready.clone(),
            registries: Arc::new(registries),
        }),
    );
    tracing::info!(xds = %opts.xds_address, http = %opts.http_address, "pilotfish serving");

    let grpc = with_http2_limits(tonic::transport::Server::builder())
        .add_service(AdsServer::new(ctx.clone()).into_service())
        .serve_with_shutdown(opts.xds_address, shutdown_signal());

    let result = tokio::select! {
        r = grpc => r.context("xDS server failed"),
        r = http => r.context("debug server failed"),
        r = scheduler => r.context("push scheduler stopped").and(Ok(())),
    };
    ready.store(false, Ordering::Release);
    result
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
