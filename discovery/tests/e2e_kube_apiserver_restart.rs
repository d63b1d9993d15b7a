//! The API server restarted under a running mesh: pilotfish keeps serving
//! the last state while it is gone (Envoy keeps routing, `/ready` stays
//! 200, `/debug/registries` and `pilotfish_registry_connected` say it is
//! disconnected), its watches resume when it is back with nothing lost, and
//! later kubectl changes — config, and endpoints — still reach Envoy.
//!
//! Needs root (network namespaces, iptables) and
//! scripts/install-kube-apiserver.sh.

mod support;

use std::time::{Duration, Instant};

use support::kube_apiserver::KubeApiServer;
use support::kube_mesh::{
    KubePod, KubePodOptions, PORT, apply, apply_bookinfo_config, bookinfo_workloads, fqdn,
    install_crds, pod_yaml, request, slice_yaml,
};
use support::{PROPAGATION, outbound_cluster, wait_until};

const N: usize = 30;
/// The watches' back-off after an outage (client-go's: 0.8 s doubling,
/// jittered, at most 30 s) plus a relist.
const RESUME: Duration = Duration::from_secs(60);

#[test]
fn api_server_restart_keeps_routing_and_watches_resume_with_later_changes() {
    let started = Instant::now();
    let mut server = KubeApiServer::start("kube-restart");
    install_crds(&server);
    apply(&server, &bookinfo_workloads());
    apply_bookinfo_config(&server);
    let mut opts = KubePodOptions::new("kube-restart");
    opts.extra_ips = vec!["10.244.0.41"];
    let mut pod = KubePod::start(&server, opts);
    pod.wait_bookinfo_served();
    pod.tally(N, &request("reviews").header("end-user", "jason"))
        .assert_all("reviews v2", "jason before the outage");

    // Outage.
    let outage = Instant::now();
    server.stop_apiserver();
    for source in ["kubernetes", "kubernetes-config"] {
        let status = pod.wait_connected(source, false, RESUME);
        println!("{source} while down: {status}");
        assert!(status["last_error"].is_string(), "{status}");
    }
    wait_until("pilotfish_registry_connected to say 0", PROPAGATION, || {
        let metrics = pod.pilotfish.metrics();
        if metrics.contains("pilotfish_registry_connected{registry=\"kubernetes\"} 0") {
            Ok(())
        } else {
            Err(metrics)
        }
    });
    // Still served from the last state.
    assert_eq!(pod.pilotfish.get("/ready").expect("/ready").0, 200);
    pod.tally(N, &request("reviews").header("end-user", "jason"))
        .assert_all("reviews v2", "jason during the outage");
    pod.tally(N, &request("reviews"))
        .assert_all("reviews v1", "others during the outage");

    server.start_again();
    for source in ["kubernetes", "kubernetes-config"] {
        pod.wait_connected(source, true, RESUME);
    }
    println!(
        "reconnected {:.1?} after the outage began",
        outage.elapsed()
    );
    // Nothing lost.
    pod.wait_bookinfo_served();
    let config_status = pod.registry_status("kubernetes-config");
    assert_eq!(config_status["objects"], 5, "{config_status}");

    // Later changes arrive: a VirtualService edit...
    let resumed = Instant::now();
    apply(
        &server,
        &support::bookinfo::reviews_weighted(&[("v3", 100)])
            .replace("name: reviews", "name: reviews\n  namespace: default"),
    );
    pod.wait_all(&request("reviews"), N, "reviews v3", RESUME);
    println!(
        "VirtualService edit after the restart served within {:.1?}",
        resumed.elapsed()
    );
    // ...and a new endpoint.
    pod.add_backend("10.244.0.41", "ratings", "v2");
    apply(
        &server,
        &format!(
            "{}---\n{}",
            pod_yaml("ratings", "v2"),
            slice_yaml("ratings", "ratings-2", &[("v2", "10.244.0.41")])
        ),
    );
    pod.envoy
        .wait_cluster(&outbound_cluster(PORT, "", &fqdn("ratings")), 2);
    wait_until("ratings v2 to answer", RESUME, || {
        let tally = pod.tally(N, &request("ratings"));
        if tally.count("ratings v2") > 0 && tally.count("ratings v1") > 0 {
            Ok(())
        } else {
            Err(tally.to_string())
        }
    });
    pod.envoy.assert_no_rejected_updates();
    pod.pilotfish.assert_running();
    println!("whole test {:.1?}", started.elapsed());
}
