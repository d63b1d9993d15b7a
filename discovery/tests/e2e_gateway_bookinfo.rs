//! Istio's Bookinfo gateway sample (`bookinfo-gateway.yaml`, unchanged) on
//! a stock Envoy running as a gateway (proxy type `router`, labels
//! `istio=ingressgateway`): the sample's paths reach our productpage
//! backend, others answer 404. A Gateway that selects other proxies
//! changes nothing for this one (not even a push), and removing the
//! Gateway removes its listener from Envoy. Gateways sharing a port merge;
//! one that claims the port for another protocol is reported, not served.

mod support;

use serde_json::Value;
use support::config_dump;
use support::gateway::{self, istio_sample, to_gateway, wait_gateway_serves};
use support::http::control_get;
use support::{PROPAGATION, wait_until};

const SAMPLE: &str = "bookinfo-gateway.yaml";
const PORT: u16 = 8080;
const N: usize = 20;

/// A Gateway and VirtualService for the egress gateway's labels, which
/// this ingress proxy does not have.
const OTHER_GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: elsewhere}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 9999, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: elsewhere}
spec:
  hosts: ["*"]
  gateways: [elsewhere]
  http: [{route: [{destination: {host: ratings}}]}]
"#;

#[test]
fn bookinfo_gateway_sample_routes_its_paths_to_productpage_and_404s_the_rest() {
    let pod = gateway::ingress_pod("gw-bookinfo")
        .config(SAMPLE, &istio_sample(SAMPLE))
        .start();
    wait_gateway_serves(&pod, PORT, "productpage", "");

    for path in [
        "/productpage",
        "/static/css/site.css",
        "/login",
        "/logout",
        "/api/v1/products",
        "/api/v1/products/0/reviews",
    ] {
        for host in ["bookinfo.example.com", "10.0.0.1:8080"] {
            let request = to_gateway(PORT, host, path);
            pod.tally(N, &request)
                .assert_all("productpage v1", &format!("{request}"));
            let answer = pod.send(&request).answer().expect("a backend answered");
            assert_eq!(answer.path, path, "the path reaches productpage unchanged");
        }
    }
    for path in ["/", "/reviews", "/productpage/x", "/api/v2/products"] {
        let request = to_gateway(PORT, "bookinfo.example.com", path);
        pod.tally(N, &request)
            .assert_all("status 404", &format!("{request} is not in the sample"));
    }
    // Istio's readiness and Prometheus pages, beside the admin port (15100
    // in these tests: 15121 and 15190), and nothing else of admin.
    let page = |port: u16, path: &str| {
        pod.ns()
            .run(|| control_get(&format!("127.0.0.1:{port}"), path))
            .unwrap_or_else(|e| panic!(":{port}{path}: {e}"))
    };
    assert_eq!(page(15121, "/healthz/ready").0, 200);
    let (status, metrics) = page(15190, "/stats/prometheus");
    assert_eq!(status, 200);
    assert!(metrics.contains("envoy_cluster_upstream_rq"), "{metrics}");
    assert_eq!(page(15121, "/quitquitquit").0, 404);
    assert_eq!(page(15190, "/config_dump").0, 404);

    let productpage = pod.backends.at("127.0.0.10:9080");
    assert!(productpage.requests() >= (12 * N) as u64);
    gateway::assert_clean_gateway(&pod, &pod.envoy);
}

#[test]
fn gateway_for_other_proxies_changes_nothing_and_removal_removes_the_listener() {
    let pod = gateway::ingress_pod("gw-lifecycle")
        .config(SAMPLE, &istio_sample(SAMPLE))
        .start();
    wait_gateway_serves(&pod, PORT, "productpage", "");
    let node = pod.envoy.node_id().to_string();
    pod.pilotfish.wait_synced_without_nack(&node);
    let lds_updates = || pod.envoy.stat("listener_manager.lds.update_attempt");
    let rds_updates = || {
        pod.envoy
            .stat("http.outbound_0.0.0.0_8080.rds.http.8080.update_attempt")
    };
    let before = (
        lds_updates(),
        rds_updates(),
        listeners(&pod.envoy.config_dump()),
        pushes(&pod, &node),
    );
    assert!(
        before.0 > 0 && before.1 > 0 && before.3 > 0,
        "LDS and RDS stats and pilotfish's push count exist: {before:?}"
    );

    // Pilotfish takes the new Gateway in (a new mesh generation), and this
    // proxy's stream has handled that generation (syncz records it once the
    // stream has sent whatever the generation changed for the proxy) ...
    let version = mesh_version(&pod);
    pod.write_config("elsewhere.yaml", OTHER_GATEWAY);
    wait_until(
        "the gateway's stream to handle the new generation",
        PROPAGATION,
        || {
            let syncz = pod.pilotfish.syncz();
            let handled = syncz["proxies"]
                .as_array()
                .and_then(|proxies| proxies.iter().find(|p| p["identity"]["node_id"] == node))
                .and_then(|p| p["mesh_version"].as_u64())
                .unwrap_or(0);
            if mesh_version(&pod) > version && handled == mesh_version(&pod) {
                Ok(())
            } else {
                Err(format!("stream at generation {handled}: {syncz}"))
            }
        },
    );
    pod.pilotfish.wait_synced_without_nack(&node);
    // ... but this proxy's resources are the same, so nothing was pushed.
    let after = (
        lds_updates(),
        rds_updates(),
        listeners(&pod.envoy.config_dump()),
        pushes(&pod, &node),
    );
    assert_eq!(
        before, after,
        "(LDS updates, RDS updates, listeners, pushes pilotfish sent)"
    );
    assert!(!after.2.iter().any(|l| l == "0.0.0.0_9999"));
    pod.tally(N, &to_gateway(PORT, "x", "/productpage"))
        .assert_all("productpage v1", "the sample still routes");

    // Removing the sample's Gateway (its VirtualService stays) removes its
    // listener.
    let virtual_service_only: String = istio_sample(SAMPLE)
        .split("\n---\n")
        .filter(|doc| doc.contains("kind: VirtualService"))
        .collect();
    pod.replace_config(SAMPLE, &virtual_service_only);
    wait_until("Envoy to drop 0.0.0.0_8080", PROPAGATION, || {
        let active = listeners(&pod.envoy.config_dump());
        if active.is_empty() {
            Ok(())
        } else {
            Err(format!("still active: {active:?}"))
        }
    });
    pod.envoy.assert_no_rejected_updates();
    pod.pilotfish.wait_synced_without_nack(&node);
    // The sample's VirtualService now names a Gateway that is gone: said so.
    let warning = pod
        .pilotfish
        .wait_diagnostic("Gateway default/bookinfo-gateway does not exist");
    assert!(
        warning.contains("VirtualService default/bookinfo"),
        "{warning}"
    );
}

fn listeners(dump: &Value) -> Vec<String> {
    config_dump::active_listeners(dump)
        .into_iter()
        .map(str::to_string)
        .collect()
}

/// Proxy `node`'s entry in `/debug/syncz` (null if it is not connected).
fn proxy_status(pod: &support::Pod, node: &str) -> Value {
    let syncz = pod.pilotfish.syncz();
    syncz["proxies"]
        .as_array()
        .and_then(|proxies| proxies.iter().find(|p| p["identity"]["node_id"] == node))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Responses pilotfish has sent proxy `node`, all types together.
fn pushes(pod: &support::Pod, node: &str) -> u64 {
    proxy_status(pod, node)["types"]
        .as_object()
        .map(|types| types.values().filter_map(|t| t["pushes"].as_u64()).sum())
        .unwrap_or(0)
}

fn mesh_version(pod: &support::Pod) -> u64 {
    pod.pilotfish.syncz()["mesh_version"]
        .as_u64()
        .expect("syncz mesh_version")
}

/// Two Gateways share port 8080 (their servers merge into one listener and
/// route configuration `http.8080`); a third claims the port for TCP and is
/// reported, not served, while the others keep routing.
const SHARED_PORT: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: [shop.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: blog, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: web, protocol: HTTP}, hosts: [blog.example.com]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: raw, creationTimestamp: "2024-03-01T00:00:00Z"}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 8080, name: tcp, protocol: TCP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com]
  gateways: [shop]
  http: [{route: [{destination: {host: productpage}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: blog}
spec:
  hosts: [blog.example.com]
  gateways: [blog]
  http: [{route: [{destination: {host: details}}]}]
"#;

#[test]
fn gateways_sharing_a_port_merge_and_a_conflicting_server_is_reported() {
    let pod = gateway::ingress_pod("gw-shared-port")
        .config("shared.yaml", SHARED_PORT)
        .start();
    wait_gateway_serves(&pod, PORT, "productpage", "");
    wait_gateway_serves(&pod, PORT, "details", "");
    pod.envoy.wait_route_domain("http.8080", "blog.example.com");
    pod.tally(N, &to_gateway(PORT, "shop.example.com", "/"))
        .assert_all("productpage v1", "the shop Gateway's host");
    pod.tally(N, &to_gateway(PORT, "blog.example.com:8080", "/"))
        .assert_all("details v1", "the blog Gateway's host, same port");
    pod.tally(N, &to_gateway(PORT, "other.example.com", "/"))
        .assert_all("status 404", "a host no Gateway takes");
    let reported = pod
        .pilotfish
        .wait_diagnostic("a port serves one protocol family");
    assert!(
        reported.contains("Gateway default/raw") && reported.contains("spec.servers[0]"),
        "{reported}"
    );
    let metrics = pod.pilotfish.metrics();
    assert!(
        metrics.contains("pilotfish_listener_conflicts 1"),
        "{metrics}"
    );
    pod.envoy.assert_no_rejected_updates();
    pod.pilotfish.wait_synced_without_nack(pod.envoy.node_id());
}
