//! `--outbound-traffic-policy`: with ALLOW_ANY, traffic to destinations the
//! registry does not know passes through Envoy to where it was going; with
//! REGISTRY_ONLY it is blocked (502 for HTTP on a mesh port, reset for TCP).

mod support;

use support::bookinfo;
use support::{Pod, Request};

/// A server the registry knows nothing about.
const OUTSIDE: &str = "127.0.0.99:8080";

fn pod_with_outside_server(name: &str, policy: &str) -> Pod {
    let mut pod = bookinfo::pod(name)
        .pilotfish_arg("--outbound-traffic-policy")
        .pilotfish_arg(policy)
        .start();
    pod.add_backend(OUTSIDE, "outside", "");
    bookinfo::wait_served(&pod);
    pod
}

#[test]
fn allow_any_passes_unknown_destinations_through_envoy() {
    let pod = pod_with_outside_server("allow-any", "ALLOW_ANY");
    let before = pod
        .envoy
        .cluster_stat("PassthroughCluster", "upstream_cx_total");
    pod.tally(10, &Request::get(OUTSIDE, "outside.example"))
        .assert_all("outside", "unregistered address");
    let passed = pod
        .envoy
        .cluster_stat("PassthroughCluster", "upstream_cx_total")
        - before;
    assert_eq!(passed, 10, "connections through PassthroughCluster");
    pod.envoy.assert_no_rejected_updates();
}

#[test]
fn registry_only_blocks_unknown_hosts_and_addresses() {
    let pod = pod_with_outside_server("registry-only", "REGISTRY_ONLY");
    let outside = pod.tally(10, &Request::get(OUTSIDE, "outside.example"));
    assert_eq!(
        outside.count("outside"),
        0,
        "unregistered address reached: {outside}"
    );
    assert_eq!(pod.backends.at(OUTSIDE).connections(), 0);
    // An unknown Host on a mesh port gets Istio's 502 from the block-all route,
    // while registered hosts on the same port still work.
    pod.tally(10, &Request::get(bookinfo::REVIEWS_VIP, "nobody.example"))
        .assert_all("status 502", "unknown Host on port 9080");
    pod.tally(10, &Request::get(bookinfo::DETAILS_VIP, "details"))
        .assert_all("details v1", "registered Host");
    pod.envoy.assert_no_rejected_updates();
}
