//! Real Envoy on the secure xDS port (15012), and what SIGTERM does to it.
//!
//! - A sidecar and a gateway, each with a workload certificate from
//!   pilotfish's CA (`pilotfish certificate issue`), connect over TLS with
//!   the bootstrap's settings, are listed in syncz with their verified
//!   SPIFFE ids, and route traffic.
//! - SIGTERM with those Envoys connected: pilotfish exits within its
//!   shutdown bound (10 s by default), the Envoys keep serving their last
//!   configuration, and reconnect to the next instance on the same address,
//!   which pushes a config change made meanwhile.
//!
//! Needs root (network namespaces, iptables, uid 1337 for Envoy).

mod support;

use std::time::Duration;

use support::PROPAGATION;
use support::bookinfo::{self, REVIEWS_VS_FILE};
use support::gateway::{INGRESS_LABELS, to_gateway};
use support::traffic::ms;

/// pilotfish's default --shutdown-timeout-seconds, plus start-up slack of
/// a loaded 2-core machine for the signal to be handled.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(12);

const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: edge}
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
  - route: [{destination: {host: productpage}}]
"#;

#[test]
fn envoys_on_the_secure_port_route_traffic_and_survive_sigterm_of_pilotfish() {
    let mut pod = bookinfo::pod("secure-xds")
        .config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v1", 100)]))
        .config("gateway.yaml", GATEWAY)
        .secure_xds()
        .start();
    bookinfo::wait_served(&pod);
    let reviews = bookinfo::reviews();
    pod.tally(20, &reviews)
        .assert_all("reviews v1", "sidecar over the secure port");
    let gateway = pod.start_gateway("edge", &INGRESS_LABELS);
    gateway.wait_listener("0.0.0.0_8080");
    let through_gateway = to_gateway(8080, "shop.example.com", "/productpage");
    pod.tally(20, &through_gateway)
        .assert_all("productpage v1", "gateway over the secure port");
    let syncz = pod.pilotfish.syncz().to_string();
    for identity in [
        "spiffe://cluster.local/ns/default/sa/secure-xds",
        "spiffe://cluster.local/ns/default/sa/edge",
    ] {
        assert!(syncz.contains(identity), "{identity} not in syncz: {syncz}");
    }

    let (took, status) = pod
        .pilotfish
        .terminate(SHUTDOWN_BOUND)
        .expect("pilotfish exited within its shutdown bound");
    println!("SIGTERM with two Envoys connected: exited in {}", ms(took));
    assert!(status.success(), "exit status {status}");
    let log = pod.pilotfish.log();
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "a log written to a file carries no terminal colour codes"
    );

    // No control plane: the Envoys keep what they have.
    pod.tally(20, &reviews)
        .assert_all("reviews v1", "after pilotfish exited");
    pod.tally(10, &through_gateway)
        .assert_all("productpage v1", "gateway after pilotfish exited");

    // The next instance (same CA, same address) takes over: an edit made
    // while nobody served reaches both Envoys once they reconnect.
    pod.write_config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v2", 100)]));
    pod.restart_pilotfish();
    let switched = pod.wait_for_switch(&reviews, "reviews v1", "reviews v2", PROPAGATION * 4);
    println!(
        "reconnected and switched {} after the restart",
        ms(switched)
    );
    pod.pilotfish.wait_synced_without_nack(pod.envoy.node_id());
    pod.pilotfish.wait_synced_without_nack(gateway.node_id());
    pod.envoy.assert_no_rejected_updates();
    gateway.assert_no_rejected_updates();
}
