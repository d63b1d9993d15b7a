//! Egress and the outbound traffic policy. "External" hosts are backends on
//! loopback addresses of the pod's namespace that the registry does not
//! know. Under REGISTRY_ONLY they are blocked (502 from the block-all route
//! for HTTP on a mesh port, a closed connection for TCP and TLS) until a
//! ServiceEntry, written into the config directory while everything runs,
//! names them: by Host for HTTP, by port for TCP (resolution NONE, no
//! addresses), by SNI for TLS. A ServiceEntry not exported to the pod's
//! namespace lets nothing through. Under ALLOW_ANY the same destinations
//! pass without any ServiceEntry.

mod support;

use support::l4::{tcp_tally, tls_tally, wait_chain};
use support::tls::{ClientAuth, TestCa, TlsBackends};
use support::{PROPAGATION, Pod, Request};

/// A mesh HTTP service on 8080, so that port has an HTTP listener.
const REGISTRY: &str = r#"
services:
- hostname: web.default.svc.cluster.local
  addresses: [127.1.0.90]
  ports: [{name: http, port: 8080, protocol: HTTP}]
  endpoints: [{address: 127.0.0.91, labels: {version: v1}}]
"#;

const HTTP_OUTSIDE: &str = "127.0.0.99:8080";
const TCP_OUTSIDE: &str = "127.0.0.98:27017";
const TLS_OUTSIDE: &str = "127.0.0.97:443";
const HIDDEN_OUTSIDE: &str = "127.0.0.96:8080";

const EGRESS_FILE: &str = "egress.yaml";

const SERVICE_ENTRIES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: outside-http}
spec:
  hosts: [outside.example.com]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: NONE
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: outside-db}
spec:
  hosts: [db.outside.example.com]
  ports: [{number: 27017, name: tcp-mongo, protocol: TCP}]
  resolution: NONE
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: outside-api}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: NONE
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: hidden, namespace: elsewhere}
spec:
  hosts: [hidden.example.com]
  exportTo: ["."]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: NONE
"#;

const N: usize = 10;

struct Outside {
    pod: Pod,
    ca: TestCa,
    _tls: TlsBackends,
    api: std::sync::Arc<support::tls::TlsBackend>,
}

fn pod_with_outside_servers(name: &str, policy: &str) -> Outside {
    let ca = TestCa::new(name);
    let mut pod = Pod::builder(name)
        .registry(REGISTRY)
        .pilotfish_arg("--outbound-traffic-policy")
        .pilotfish_arg(policy)
        .start();
    pod.add_backend(HTTP_OUTSIDE, "outside", "");
    pod.add_backend(TCP_OUTSIDE, "mongo", "");
    pod.add_backend(HIDDEN_OUTSIDE, "hidden", "");
    let mut tls = TlsBackends::start(pod.ns());
    let identity = ca.issue("api.example.com");
    let api = tls.add(TLS_OUTSIDE, "api", &identity, &ca, ClientAuth::None);
    pod.envoy
        .wait_route_domain("8080", "web.default.svc.cluster.local");
    Outside {
        pod,
        ca,
        _tls: tls,
        api,
    }
}

fn http_outside() -> Request {
    Request::get(HTTP_OUTSIDE, "outside.example.com")
}

#[test]
fn registry_only_blocks_until_a_service_entry_names_the_destination() {
    let Outside { pod, ca, api, _tls } =
        pod_with_outside_servers("egress-registry-only", "REGISTRY_ONLY");
    let backend_connections = |addr: &str| pod.backends.at(addr).connections();

    // Nothing is known: HTTP gets the block-all 502, TCP and TLS are closed.
    pod.tally(N, &http_outside())
        .assert_all("status 502", "unknown Host on mesh port 8080");
    let tcp = tcp_tally(&pod, TCP_OUTSIDE, N);
    assert_eq!(
        tcp.count("mongo"),
        0,
        "unknown TCP destination reached: {tcp}"
    );
    let tls = tls_tally(&pod, TLS_OUTSIDE, "api.example.com", &ca, N);
    assert_eq!(
        tls.count("api"),
        0,
        "unknown TLS destination reached: {tls}"
    );
    assert_eq!(backend_connections(HTTP_OUTSIDE), 0);
    assert_eq!(backend_connections(TCP_OUTSIDE), 0);
    assert_eq!(api.handshakes() + api.failed_handshakes(), 0);

    // ServiceEntries arrive while traffic flows.
    pod.write_config(EGRESS_FILE, SERVICE_ENTRIES);
    let switched = pod.wait_for_switch(&http_outside(), "status 502", "outside", PROPAGATION);
    eprintln!("HTTP egress allowed {switched:?} after the ServiceEntry was written");
    pod.tally(N, &http_outside())
        .assert_all("outside", "ServiceEntry host outside.example.com");
    wait_chain(
        &pod,
        "0.0.0.0_27017",
        "default:tcp|outbound|27017||db.outside.example.com",
        true,
    );
    tcp_tally(&pod, TCP_OUTSIDE, N).assert_all("mongo", "ServiceEntry port 27017");
    wait_chain(
        &pod,
        "0.0.0.0_443",
        "tcp|outbound|443||api.example.com",
        true,
    );
    tls_tally(&pod, TLS_OUTSIDE, "api.example.com", &ca, N)
        .assert_all("api", "ServiceEntry SNI api.example.com");
    assert_eq!(api.snis(), vec!["api.example.com".to_string(); N]);

    // The SNI decides on 443: another name to the same address stays blocked.
    let before = api.handshakes() + api.failed_handshakes();
    let other = tls_tally(&pod, TLS_OUTSIDE, "other.example.com", &ca, N);
    assert_eq!(other.count("api"), 0, "{other}");
    assert_eq!(
        api.handshakes() + api.failed_handshakes(),
        before,
        "other SNI reached the server"
    );

    // An entry exported only to its own namespace does not open anything here.
    pod.tally(N, &Request::get(HIDDEN_OUTSIDE, "hidden.example.com"))
        .assert_all("status 502", "ServiceEntry not exported to default");
    assert_eq!(backend_connections(HIDDEN_OUTSIDE), 0);

    // Removing the entries closes the doors again.
    pod.remove_config(EGRESS_FILE);
    pod.wait_for_switch(&http_outside(), "outside", "status 502", PROPAGATION);
    pod.envoy.assert_no_rejected_updates();
}

#[test]
fn allow_any_passes_unknown_destinations() {
    let Outside { pod, ca, api, _tls } = pod_with_outside_servers("egress-allow-any", "ALLOW_ANY");
    pod.tally(N, &http_outside())
        .assert_all("outside", "unknown Host on mesh port 8080");
    tcp_tally(&pod, TCP_OUTSIDE, N).assert_all("mongo", "unknown TCP destination");
    tls_tally(&pod, TLS_OUTSIDE, "api.example.com", &ca, N)
        .assert_all("api", "unknown TLS destination");
    assert_eq!(api.snis().len(), N);
    assert!(
        pod.envoy
            .cluster_stat("PassthroughCluster", "upstream_cx_total")
            >= (2 * N) as u64,
        "TCP and TLS went through PassthroughCluster"
    );
    pod.envoy.assert_no_rejected_updates();
}
