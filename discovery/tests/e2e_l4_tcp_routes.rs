//! VirtualService `tcp` routes through a real Envoy: a weighted split of
//! connections between two subsets of a TCP service, a rule scoped to one
//! port of the service, and `destinationSubnets` claiming addresses no
//! service has.
//!
//! Each connection is a new one (tcp_proxy picks the weighted cluster per
//! connection); the backend that echoes the line names itself ("db v1").

mod support;

use support::l4::{tcp_tally, wait_chain};
use support::{Pod, outbound_cluster};

const DB: &str = "db.default.svc.cluster.local";
const DB_VIP: &str = "127.1.0.80";
const DATA: u16 = 7000;
const ADMIN: u16 = 7001;

const REGISTRY: &str = r#"
services:
- hostname: db.default.svc.cluster.local
  addresses: [127.1.0.80]
  ports:
  - {name: tcp-data, port: 7000, protocol: TCP}
  - {name: tcp-admin, port: 7001, protocol: TCP}
  endpoints:
  - {address: 127.0.0.81, labels: {version: v1}}
  - {address: 127.0.0.82, labels: {version: v2}}
"#;

const SUBSETS: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 7000}]
    route:
    - {destination: {host: db, subset: v1}, weight: 80}
    - {destination: {host: db, subset: v2}, weight: 20}
  - match: [{port: 7001}]
    route: [{destination: {host: db, subset: v2}}]
  - match: [{destinationSubnets: [127.1.9.0/24]}]
    route: [{destination: {host: db, subset: v1, port: {number: 7000}}}]
"#;

fn rule_chain(port: u16, rule: usize) -> String {
    format!("tcp|{}|spec.tcp[{rule}]", outbound_cluster(port, "", DB))
}

fn pod(name: &str) -> Pod {
    let pod = Pod::builder(name)
        .registry(REGISTRY)
        .config("db-subsets.yaml", SUBSETS)
        .config("db-routes.yaml", ROUTES)
        .start();
    for port in [DATA, ADMIN] {
        for subset in ["v1", "v2"] {
            pod.envoy
                .wait_cluster(&outbound_cluster(port, subset, DB), 1);
        }
    }
    wait_chain(&pod, &format!("0.0.0.0_{DATA}"), &rule_chain(DATA, 0), true);
    wait_chain(
        &pod,
        &format!("0.0.0.0_{ADMIN}"),
        &rule_chain(ADMIN, 1),
        true,
    );
    pod
}

/// 500 connections, 80/20: v1's count is Binomial(500, 0.8), mean 400 and
/// standard deviation 8.9; the bounds (360..=440) are 4.5 deviations out.
#[test]
fn tcp_route_weights_split_connections_between_subsets() {
    let pod = pod("l4-tcp-weights");
    let clusters = [
        outbound_cluster(DATA, "v1", DB),
        outbound_cluster(DATA, "v2", DB),
    ];
    let before: Vec<u64> = clusters
        .iter()
        .map(|c| pod.envoy.cluster_stat(c, "upstream_cx_total"))
        .collect();
    let started = std::time::Instant::now();
    let tally = tcp_tally(&pod, &format!("{DB_VIP}:{DATA}"), 500);
    eprintln!("500 connections in {:?}: {tally}", started.elapsed());
    assert_eq!(tally.total(), 500);
    let v1 = tally.count("db v1");
    let v2 = tally.count("db v2");
    assert_eq!(
        v1 + v2,
        500,
        "every connection answered by a subset: {tally}"
    );
    assert!(
        (360..=440).contains(&v1),
        "v1 got {v1} of 500 (expected 400 ± 40): {tally}"
    );
    // Envoy's own view agrees: the subset clusters carried the connections.
    let grew: Vec<u64> = clusters
        .iter()
        .zip(&before)
        .map(|(c, b)| pod.envoy.cluster_stat(c, "upstream_cx_total") - b)
        .collect();
    assert_eq!(
        grew,
        [v1 as u64, v2 as u64],
        "upstream_cx_total of {clusters:?}"
    );
    pod.envoy.assert_no_rejected_updates();
}

/// The `port: 7001` rule sends every admin connection to v2 while 7000
/// keeps its split; without the rule 7001 is balanced over both subsets
/// again. Addresses in the rule's `destinationSubnets` (no service has
/// them) reach v1's data port.
#[test]
fn port_scoped_rule_and_destination_subnets() {
    let pod = pod("l4-tcp-port");
    let admin = format!("{DB_VIP}:{ADMIN}");
    tcp_tally(&pod, &admin, 20).assert_all("db v2", "admin port, rule port 7001");
    let data = tcp_tally(&pod, &format!("{DB_VIP}:{DATA}"), 20);
    assert_eq!(data.count("db v1") + data.count("db v2"), 20, "{data}");

    // Not a service address: only the rule's subnet claims it.
    tcp_tally(&pod, &format!("127.1.9.7:{DATA}"), 10).assert_all("db v1", "subnet 127.1.9.0/24");

    // Drop the admin rule: 7001 falls back to the service (both subsets).
    let without_admin = ROUTES.replace(
        "  - match: [{port: 7001}]\n    route: [{destination: {host: db, subset: v2}}]\n",
        "",
    );
    pod.write_config("db-routes.yaml", &without_admin);
    wait_chain(
        &pod,
        &format!("0.0.0.0_{ADMIN}"),
        &format!("tcp|{}", outbound_cluster(ADMIN, "", DB)),
        true,
    );
    let balanced = tcp_tally(&pod, &admin, 40);
    assert!(
        balanced.count("db v1") >= 5 && balanced.count("db v2") >= 5,
        "admin port without its rule: {balanced}"
    );
    assert_eq!(
        balanced.count("db v1") + balanced.count("db v2"),
        40,
        "{balanced}"
    );
    pod.envoy.assert_no_rejected_updates();
}
