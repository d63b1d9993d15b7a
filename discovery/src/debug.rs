//! The debug, readiness and metrics HTTP server (istioctl-like views).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use pilotfish_registries::consul::ConsulStatus;
use pilotfish_registries::kubernetes::KubernetesStatus;
use tokio::sync::watch;

use crate::ads::XdsContext;
use crate::config_dump::config_dump;
use crate::readiness::Readiness;
use crate::security::WorkloadIdentity;
use crate::status::SyncStatus;

#[derive(Clone)]
pub struct DebugState {
    pub ctx: Arc<XdsContext>,
    /// Ready once the first full load of every source has been published.
    pub readiness: Arc<Readiness>,
    pub registries: Arc<Vec<RegistryStatus>>,
}

/// Health of a pushing registry.
#[derive(Clone)]
pub enum RegistryStatus {
    Consul(watch::Receiver<ConsulStatus>),
    /// The Kubernetes registry or the Kubernetes config source (named by
    /// the status itself).
    Kubernetes(watch::Receiver<KubernetesStatus>),
}

impl RegistryStatus {
    fn describe(&self) -> Value {
        match self {
            RegistryStatus::Consul(rx) => {
                let s = rx.borrow().clone();
                json!({
                    "registry": "consul",
                    "connected": s.connected,
                    "synced": s.synced,
                    "services": s.services,
                    "consecutive_failures": s.consecutive_failures,
                    "last_error": s.last_error,
                    "seconds_since_last_success": s.last_success
                        .and_then(|t| t.elapsed().ok())
                        .map(|d| d.as_secs()),
                })
            }
            RegistryStatus::Kubernetes(rx) => {
                let s = rx.borrow().clone();
                json!({
                    "registry": s.name,
                    "api_server": s.api_server,
                    "connected": s.connected,
                    "synced": s.synced,
                    "objects": s.objects,
                    "consecutive_failures": s.consecutive_failures,
                    "last_error": s.last_error,
                    "seconds_since_last_success": s.last_success
                        .and_then(|t| t.elapsed().ok())
                        .map(|d| d.as_secs()),
                    "warnings": s.warnings,
                })
            }
        }
    }
}

/// Everything: readiness, metrics and the debug pages (which describe every
/// proxy and the whole config, so they stay on loopback by default).
pub fn router(state: DebugState) -> Router {
    probes()
        .route("/debug/syncz", get(syncz))
        .route("/debug/diagnostics", get(diagnostics))
        .route("/debug/config_dump", get(dump))
        .route("/debug/explain", get(explain))
        .route("/debug/registries", get(registries))
        .route("/debug/credentials", get(credentials))
        .with_state(state)
}

/// Only readiness and metrics: what probes and scrapers on the network need.
pub fn monitoring_router(state: DebugState) -> Router {
    probes().with_state(state)
}

fn probes() -> Router<DebugState> {
    Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// Ready after the first good load of every source; until then the body
/// names each awaited source and its cause. A registry outage later does
/// not make Pilotfish unready (it keeps serving the last known state), but
/// the body says so.
async fn ready(State(state): State<DebugState>) -> Response {
    let mut body = String::new();
    for r in state.registries.iter() {
        let d = r.describe();
        let name = d["registry"].as_str().unwrap_or("registry");
        body.push_str(&format!(
            "{name}: connected={} synced={}",
            d["connected"], d["synced"]
        ));
        // The cause, for a source that has not synced or is disconnected.
        let failing = d["connected"] == false || d["synced"] == false;
        if let (true, Some(error)) = (failing, d["last_error"].as_str()) {
            body.push_str(&format!(" last_error={error:?}"));
        }
        body.push('\n');
    }
    match state.readiness.unready_reason() {
        None => (StatusCode::OK, format!("ready\n{body}")).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n{body}"),
        )
            .into_response(),
    }
}

async fn registries(State(state): State<DebugState>) -> Json<Value> {
    Json(Value::Array(
        state
            .registries
            .iter()
            .map(RegistryStatus::describe)
            .collect(),
    ))
}

async fn metrics(State(state): State<DebugState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.ctx.metrics.encode(),
    )
        .into_response()
}

async fn syncz(State(state): State<DebugState>) -> Json<Value> {
    let generation = state.ctx.generations.borrow().clone();
    Json(json!({
        "mesh_version": generation.version,
        "proxies": state.ctx.status.list(),
    }))
}

async fn diagnostics(State(state): State<DebugState>) -> Json<Value> {
    let generation = state.ctx.generations.borrow().clone();
    Json(json!({
        "mesh_version": generation.version,
        "input_problems": generation.problems,
        "translation": state.ctx.cache.diagnostics(generation.version),
        "rejected_by_proxies": rejected_by_proxies(&state.ctx.status),
    }))
}

/// Every rejection (NACK) a connected proxy has not got past yet: the
/// resources, the config objects that fed them, and what it is down to.
fn rejected_by_proxies(status: &SyncStatus) -> Vec<Value> {
    status
        .rejections()
        .into_iter()
        .map(|(proxy, ty, rejection)| {
            json!({
                "proxy": proxy,
                "type": ty.short(),
                "rejection": rejection,
            })
        })
        .collect()
}

/// The gateway TLS credentials of the current generation: names, sizes and
/// certificate digests, so a rotation can be followed; never key material.
async fn credentials(State(state): State<DebugState>) -> Json<Value> {
    let generation = state.ctx.generations.borrow().clone();
    let digest = |bytes: &[u8]| hex::encode(&Sha256::digest(bytes)[..8]);
    let credentials: Vec<Value> = generation
        .mesh
        .credentials
        .iter()
        .map(|((namespace, name), c)| {
            json!({
                "namespace": namespace,
                "name": name,
                "certificate_chain_bytes": c.certificate_chain.len(),
                "certificate_chain_sha256": digest(&c.certificate_chain),
                "ca_certificates_bytes": c.ca_certificates.as_ref().map(Vec::len),
            })
        })
        .collect();
    Json(json!({
        "mesh_version": generation.version,
        "credentials": credentials,
    }))
}

/// `/debug/config_dump?proxy=<node id>`: what Pilotfish would send that proxy.
async fn dump(
    State(state): State<DebugState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(node_id) = query.get("proxy") else {
        return (StatusCode::BAD_REQUEST, "missing ?proxy=<node id>\n").into_response();
    };
    let Some(proxy) = state.ctx.status.find(node_id) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no connected proxy {node_id:?}\n"),
        )
            .into_response();
    };
    let generation = state.ctx.generations.borrow().clone();
    let view = crate::proxy_view::view_for(&proxy.identity, &generation.inbound);
    let snapshot = state.ctx.cache.snapshot(&generation, &view);
    let workload = proxy
        .verified_identity
        .as_deref()
        .and_then(|uri| WorkloadIdentity::parse_spiffe(uri).ok())
        .zip(state.ctx.workload_certificates.as_ref())
        .and_then(|(identity, store)| store.peek(&identity));
    Json(config_dump(&snapshot, workload.as_deref())).into_response()
}

/// `/debug/explain?proxy=<node id or pod>&url=<url>&header=<name: value>`:
/// the path that request takes through the proxy ([`crate::explain_endpoint`]).
async fn explain(
    State(state): State<DebugState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    use crate::explain_endpoint::{self, ExplainQuery};
    let answer = ExplainQuery::from_pairs(pairs).and_then(|query| {
        let proxy =
            explain_endpoint::find_proxy(&state.ctx.status, &query.proxy).ok_or_else(|| {
                explain_endpoint::ExplainEndpointError::UnknownProxy(query.proxy.clone())
            })?;
        let generation = state.ctx.generations.borrow().clone();
        let view = crate::proxy_view::view_for(&proxy.identity, &generation.inbound);
        let snapshot = state.ctx.cache.snapshot(&generation, &view);
        explain_endpoint::explain(&query, &proxy, &generation, &snapshot)
    });
    match answer.map(|e| explain_endpoint::envelope(&e)) {
        Ok(Ok(envelope)) => Json(envelope).into_response(),
        Ok(Err(error)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
        Err(error) => {
            let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
            (status, format!("{error}\n")).into_response()
        }
    }
}
