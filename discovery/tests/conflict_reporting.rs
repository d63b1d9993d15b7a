//! A listener conflict (two TCP services claiming the same VIP and port) is
//! never silent: the loser is reported in the metric and in
//! `/debug/diagnostics`, and the winner keeps its route.

use std::sync::Arc;

use pilotfish_discovery::ads::XdsContext;
use pilotfish_discovery::debug::{DebugState, router};
use pilotfish_discovery::mesh_store::{MeshGeneration, MeshStore};
use pilotfish_discovery::metrics::Metrics;
use pilotfish_discovery::push::publish;
use pilotfish_discovery::readiness::Readiness;
use pilotfish_discovery::sources::config_dir::ConfigDirs;
use pilotfish_discovery::sources::registry_files::RegistryFiles;
use pilotfish_translate::MeshConfig;
use tokio::sync::watch;

const CLASHING: &str = r#"
services:
- hostname: older-db.default.svc.cluster.local
  created: "2024-01-01T00:00:00Z"
  addresses: [127.1.0.9]
  ports: [{name: tcp, port: 5432, protocol: TCP}]
  endpoints: [{address: 127.0.0.21}]
- hostname: newer-db.default.svc.cluster.local
  created: "2025-01-01T00:00:00Z"
  addresses: [127.1.0.9]
  ports: [{name: tcp, port: 5432, protocol: TCP}]
  endpoints: [{address: 127.0.0.22}]
"#;

#[tokio::test]
async fn listener_conflict_is_in_the_metric_and_the_debug_endpoint() {
    let dir = std::env::temp_dir().join(format!("pf-conflict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let registry = dir.join("registry.yaml");
    std::fs::write(&registry, CLASHING).expect("write registry");
    let mut store = MeshStore::new(
        ConfigDirs::new(vec![], "default"),
        RegistryFiles::new(vec![registry]),
        MeshConfig::default(),
    );
    let (tx, rx) = watch::channel(Arc::new(MeshGeneration::default()));
    let ctx = Arc::new(XdsContext::new(Arc::new(Metrics::new()), rx));
    publish(&mut store, &ctx, &tx);

    assert!(
        ctx.metrics
            .encode()
            .contains("pilotfish_listener_conflicts 1"),
        "{}",
        ctx.metrics.encode()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = router(DebugState {
        ctx: ctx.clone(),
        readiness: Arc::new(Readiness::ready()),
        registries: Arc::new(Vec::new()),
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body = http_get(addr, "/debug/diagnostics").await;
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let conflicts: Vec<&serde_json::Value> = json["translation"]
        .as_array()
        .expect("translation diagnostics")
        .iter()
        .filter(|d| d["kind"] == "ListenerConflict")
        .collect();
    assert_eq!(conflicts.len(), 1, "{body}");
    assert_eq!(
        conflicts[0]["object"],
        "service newer-db.default.svc.cluster.local"
    );
    let message = conflicts[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("older-db.default.svc.cluster.local") && message.contains("5432"),
        "{message}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bare HTTP/1.0 GET (the debug server needs nothing more).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}
