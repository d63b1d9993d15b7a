//! Ports shared by HTTP and everything else, as a modern mesh serves them.
//! A port with an HTTP service sniffs: HTTP goes to the port's route
//! configuration, any other traffic (raw TCP, TLS) to a destination without
//! a chain of its own follows the outbound traffic policy (or goes to the
//! TCP service that owns the port) instead of meeting an HTTP parser. A
//! TCP service without a VIP alone on its port owns the port, so a DNS
//! ServiceEntry (its name served by a DNS server the test runs in the
//! pod's namespace) is reachable under REGISTRY_ONLY whatever address the
//! application resolved its name to.

mod support;

use support::l4::{tcp_tally, tls_tally, wait_chain};
use support::tls::{ClientAuth, TestCa, TlsBackends};
use support::{Pod, Request};

/// A mesh HTTP service on 8080 (VIP 127.1.0.90), and a DNS ServiceEntry on
/// 5432 next to another HTTP service.
const REGISTRY: &str = r#"
services:
- hostname: web.default.svc.cluster.local
  addresses: [127.1.0.90]
  ports: [{name: http, port: 8080, protocol: HTTP}]
  endpoints: [{address: 127.0.0.91, labels: {version: v1}}]
- hostname: admin.default.svc.cluster.local
  addresses: [127.1.0.80]
  ports: [{name: http, port: 5432, protocol: HTTP}]
  endpoints: [{address: 127.0.0.81, labels: {version: v1}}]
"#;

/// The database as egress is usually declared: resolved by DNS, no
/// addresses, no endpoints. Envoy resolves its host through the pod's
/// resolver, a DNS server the test runs in the pod's namespace.
const DATABASE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp-postgres, protocol: TCP}]
  resolution: DNS
  location: MESH_EXTERNAL
"#;

const WEB_VIP: &str = "127.1.0.90:8080";
const TCP_OUTSIDE: &str = "127.0.0.98:8080";
const TLS_OUTSIDE: &str = "127.0.0.97:8080";
const DATABASE_BACKEND: &str = "127.0.0.95:5432";
/// Where the application's resolver might have sent it: any address.
const DATABASE_AS_RESOLVED: &str = "127.0.0.94:5432";

const N: usize = 10;

struct Sniffing {
    pod: Pod,
    ca: TestCa,
    _tls: TlsBackends,
}

fn pod_on_shared_ports(name: &str, policy: &str) -> Sniffing {
    let ca = TestCa::new(name);
    let mut pod = Pod::builder(name)
        .registry(REGISTRY)
        .config("db.yaml", DATABASE)
        .resolver(&[("db.example.com", "127.0.0.95")])
        .pilotfish_arg("--outbound-traffic-policy")
        .pilotfish_arg(policy)
        .start();
    pod.add_backend(TCP_OUTSIDE, "outside", "");
    // A raw server on the HTTP service's VIP itself: what a connection
    // passed through to its original destination reaches.
    pod.add_backend(WEB_VIP, "vip", "");
    pod.add_backend(DATABASE_BACKEND, "db", "");
    let mut tls = TlsBackends::start(pod.ns());
    let identity = ca.issue("api.example.com");
    tls.add(TLS_OUTSIDE, "api", &identity, &ca, ClientAuth::None);
    pod.envoy
        .wait_route_domain("8080", "web.default.svc.cluster.local");
    Sniffing { pod, ca, _tls: tls }
}

fn web() -> Request {
    Request::get(WEB_VIP, "web.default.svc.cluster.local")
}

#[test]
fn under_allow_any_non_http_traffic_on_an_http_port_reaches_its_destination() {
    let Sniffing { pod, ca, _tls } = pod_on_shared_ports("sniff-allow-any", "ALLOW_ANY");
    pod.tally(N, &web())
        .assert_all("web v1", "HTTP routed by Host");
    tcp_tally(&pod, TCP_OUTSIDE, N).assert_all("outside", "raw TCP to an outside address on 8080");
    tls_tally(&pod, TLS_OUTSIDE, "api.example.com", &ca, N)
        .assert_all("api", "TLS to an outside address on 8080");
    tcp_tally(&pod, WEB_VIP, N)
        .assert_all("vip", "raw TCP to the HTTP service's VIP, passed through");
    assert!(
        pod.envoy
            .cluster_stat("PassthroughCluster", "upstream_cx_total")
            >= (3 * N) as u64,
        "raw TCP and TLS went through PassthroughCluster"
    );
    pod.envoy.assert_no_rejected_updates();
}

#[test]
fn under_registry_only_non_http_traffic_on_an_http_port_is_refused_not_parsed() {
    let Sniffing { pod, ca, _tls } = pod_on_shared_ports("sniff-registry-only", "REGISTRY_ONLY");
    pod.tally(N, &web())
        .assert_all("web v1", "HTTP routed by Host");
    for (addr, what) in [
        (TCP_OUTSIDE, "outside address"),
        (WEB_VIP, "HTTP service's VIP"),
    ] {
        let tally = tcp_tally(&pod, addr, N);
        assert_eq!(
            tally.count("outside") + tally.count("vip"),
            0,
            "{what} reached: {tally}"
        );
        assert!(
            !tally.to_string().contains("HTTP/1.1"),
            "answered by an HTTP parser ({what}): {tally}"
        );
    }
    let tls = tls_tally(&pod, TLS_OUTSIDE, "api.example.com", &ca, N);
    assert_eq!(tls.count("api"), 0, "TLS reached: {tls}");
    assert_eq!(pod.backends.at(TCP_OUTSIDE).connections(), 0);
    assert_eq!(pod.backends.at(WEB_VIP).connections(), 0);
    assert_eq!(
        pod.envoy
            .cluster_stat("PassthroughCluster", "upstream_cx_total"),
        0,
        "nothing passed through under REGISTRY_ONLY"
    );
    pod.envoy.assert_no_rejected_updates();
}

#[test]
fn a_dns_service_entry_alone_on_its_port_is_reached_at_any_address_under_registry_only() {
    let Sniffing { pod, .. } = pod_on_shared_ports("lone-tcp-owner", "REGISTRY_ONLY");
    wait_chain(
        &pod,
        "0.0.0.0_5432",
        "default:tcp|outbound|5432||db.example.com",
        true,
    );
    tcp_tally(&pod, DATABASE_AS_RESOLVED, N).assert_all(
        "db",
        "the database through its cluster, from the address the app resolved",
    );
    assert_eq!(pod.backends.at(DATABASE_BACKEND).connections(), N as u64);
    // The HTTP service sharing the port is still routed by Host.
    pod.tally(
        N,
        &Request::get("127.1.0.80:5432", "admin.default.svc.cluster.local"),
    )
    .assert_all("admin v1", "HTTP beside the database on 5432");
    pod.envoy.assert_no_rejected_updates();
}
