//! Services sharing one port: VIP-less TCP services told apart by endpoint
//! address (the Istio 1.1 listener collision), HTTP beside TCP, and a
//! protocol-sniffed service that serves both HTTP and raw TCP.
//!
//! "Went through Envoy, to the right service" is proven by the service's own
//! Envoy cluster counting the connections (`upstream_cx_total`) or HTTP
//! responses (`upstream_rq_2xx`: only the HTTP router records response
//! codes; TCP proxying counts in `upstream_rq_total` too) while the other
//! services' clusters stay still.

mod support;

use support::{Pod, Request, outbound_cluster};

const PORT: u16 = 9000;
const N: u64 = 10;

fn cluster(service: &str) -> String {
    outbound_cluster(PORT, "", &format!("{service}.default.svc.cluster.local"))
}

/// Waits until Envoy's listener for `port` and the services' clusters are in.
fn wait_port_served(pod: &Pod, port: u16, services: &[&str]) {
    pod.envoy.wait_listener(&format!("0.0.0.0_{port}"));
    for service in services {
        pod.envoy.wait_cluster(
            &outbound_cluster(port, "", &format!("{service}.default.svc.cluster.local")),
            1,
        );
    }
}

/// Snapshot of one stat for several clusters, to compare before and after.
fn cluster_stats(pod: &Pod, clusters: &[String], stat: &str) -> Vec<u64> {
    clusters
        .iter()
        .map(|c| pod.envoy.cluster_stat(c, stat))
        .collect()
}

/// Runs `traffic`, then checks that of `clusters` only `clusters[expect]`
/// saw `stat` grow, by exactly `N`.
fn assert_only_cluster_counted(
    pod: &Pod,
    clusters: &[String],
    expect: usize,
    stat: &str,
    traffic: impl FnOnce(),
) {
    let before = cluster_stats(pod, clusters, stat);
    traffic();
    let after = cluster_stats(pod, clusters, stat);
    for (i, cluster) in clusters.iter().enumerate() {
        let grew = after[i] - before[i];
        let want = if i == expect { N } else { 0 };
        assert_eq!(
            grew, want,
            "{cluster} {stat} grew by {grew}, expected {want} (all: {clusters:?} {before:?} -> {after:?})"
        );
    }
}

fn tcp_round_trips(pod: &Pod, addr: &str, expected_name: &str) {
    for i in 0..N {
        let reply = pod.tcp_line(addr, &format!("ping {i}"));
        assert_eq!(reply, format!("{expected_name}: ping {i}"), "TCP to {addr}");
    }
}

const TWO_VIPLESS_TCP: &str = r#"
services:
- hostname: a.default.svc.cluster.local
  ports: [{name: tcp, port: 9000, protocol: TCP}]
  endpoints: [{address: 127.0.0.21}]
- hostname: b.default.svc.cluster.local
  ports: [{name: tcp, port: 9000, protocol: TCP}]
  endpoints: [{address: 127.0.0.22}]
"#;

#[test]
fn two_vipless_tcp_services_on_one_port_each_reach_their_own_backend() {
    let pod = Pod::builder("tcp-collision")
        .registry(TWO_VIPLESS_TCP)
        .start();
    wait_port_served(&pod, PORT, &["a", "b"]);
    let clusters = [cluster("a"), cluster("b")];
    for (i, (addr, name)) in [("127.0.0.21:9000", "a"), ("127.0.0.22:9000", "b")]
        .into_iter()
        .enumerate()
    {
        assert_only_cluster_counted(&pod, &clusters, i, "upstream_cx_total", || {
            tcp_round_trips(&pod, addr, name)
        });
        assert_eq!(
            pod.backends.at(addr).connections(),
            N,
            "{name}'s backend connections"
        );
    }
    pod.envoy.assert_no_rejected_updates();
}

const HTTP_AND_TCP: &str = r#"
services:
- hostname: web.default.svc.cluster.local
  addresses: [127.1.0.50]
  ports: [{name: http, port: 9000, protocol: HTTP}]
  endpoints: [{address: 127.0.0.23, labels: {version: v1}}]
- hostname: db.default.svc.cluster.local
  addresses: [127.1.0.51]
  ports: [{name: tcp, port: 9000, protocol: TCP}]
  endpoints: [{address: 127.0.0.24}]
- hostname: cache.default.svc.cluster.local
  ports: [{name: tcp, port: 9000, protocol: TCP}]
  endpoints: [{address: 127.0.0.25}]
"#;

#[test]
fn http_and_tcp_services_on_one_port_are_all_reachable() {
    let pod = Pod::builder("http-and-tcp").registry(HTTP_AND_TCP).start();
    wait_port_served(&pod, PORT, &["web", "db", "cache"]);
    pod.envoy
        .wait_route_domain(&PORT.to_string(), "web.default.svc.cluster.local");
    let clusters = [cluster("web"), cluster("db"), cluster("cache")];

    assert_only_cluster_counted(&pod, &clusters, 0, "upstream_rq_2xx", || {
        pod.tally(N as usize, &Request::get("127.1.0.50:9000", "web"))
            .assert_all("web v1", "HTTP to web's VIP");
    });
    assert_only_cluster_counted(&pod, &clusters, 1, "upstream_cx_total", || {
        tcp_round_trips(&pod, "127.1.0.51:9000", "db")
    });
    assert_only_cluster_counted(&pod, &clusters, 2, "upstream_cx_total", || {
        tcp_round_trips(&pod, "127.0.0.25:9000", "cache")
    });
    pod.envoy.assert_no_rejected_updates();
}

/// No protocol and port names that say nothing: Envoy must sniff.
const SNIFFED: &str = r#"
services:
- hostname: legacy.default.svc.cluster.local
  ports: [{name: legacy, port: 9100}]
  endpoints: [{address: 127.0.0.26, labels: {version: v1}}]
- hostname: other.default.svc.cluster.local
  ports: [{name: legacy, port: 9100}]
  endpoints: [{address: 127.0.0.27, labels: {version: v1}}]
"#;

#[test]
fn sniffed_vipless_service_routes_http_by_host_and_passes_raw_tcp() {
    let pod = Pod::builder("sniffed").registry(SNIFFED).start();
    wait_port_served(&pod, 9100, &["legacy", "other"]);
    let clusters = [
        outbound_cluster(9100, "", "legacy.default.svc.cluster.local"),
        outbound_cluster(9100, "", "other.default.svc.cluster.local"),
    ];

    // HTTP is detected and handled by the HTTP connection manager: the
    // cluster records response codes, which plain TCP proxying never does.
    // It is routed by Host, whichever endpoint address the client dialled.
    for (i, (host, expected)) in [
        ("legacy.default.svc.cluster.local", "legacy v1"),
        ("other", "other v1"),
    ]
    .into_iter()
    .enumerate()
    {
        assert_only_cluster_counted(&pod, &clusters, i, "upstream_rq_2xx", || {
            let request = Request::get("127.0.0.26:9100", host);
            pod.tally(N as usize, &request)
                .assert_all(expected, &format!("HTTP to legacy's address, Host {host}"));
        });
    }
    let http_before = cluster_stats(&pod, &clusters, "upstream_rq_2xx");
    assert_only_cluster_counted(&pod, &clusters, 0, "upstream_cx_total", || {
        tcp_round_trips(&pod, "127.0.0.26:9100", "legacy v1")
    });
    let http_after = cluster_stats(&pod, &clusters, "upstream_rq_2xx");
    assert_eq!(
        http_after, http_before,
        "raw TCP must not be handled as HTTP"
    );
    pod.envoy.assert_no_rejected_updates();
}
