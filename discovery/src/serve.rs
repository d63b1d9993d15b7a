//! `pilotfish serve`: wires sources, the push scheduler, the ADS server and
//! the debug server together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use pilotfish_registries::consul::ConsulConfig;
use pilotfish_translate::MeshConfig;
use tokio::sync::{mpsc, watch};

use crate::ads::{AdsServer, XdsContext};
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
    /// Watch this Consul as a registry too.
    pub consul: Option<ConsulConfig>,
}

pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let mut store = MeshStore::new(
        ConfigDirs::new(opts.config_dirs, &opts.default_namespace),
        RegistryFiles::new(opts.registry_files),
        opts.mesh,
    );
    let (generation_tx, generation_rx) = watch::channel(Arc::new(MeshGeneration::default()));
    let ctx = Arc::new(XdsContext::new(metrics.clone(), generation_rx));

    // Watch before the first load so no edit falls between the two.
    let (change_tx, change_rx) = mpsc::unbounded_channel();
    let _watcher = watch_paths(
        store.watched_dirs(),
        store.watched_files(),
        change_tx.clone(),
    )
    .context("cannot watch the config directories and registry files")?;
    let mut registries = Vec::new();
    let _consul = match opts.consul {
        Some(config) => {
            store.add_dynamic_registry(sources::consul::REGISTRY_NAME);
            let (registry, status) = sources::consul::start(config, change_tx.clone(), metrics)
                .context("cannot start the Consul registry")?;
            registries.push(RegistryStatus::Consul(status));
            Some(registry)
        }
        None => None,
    };
    push::publish(&mut store, &ctx, &generation_tx);
    // Ready once every registry has delivered its first full snapshot.
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

    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
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
