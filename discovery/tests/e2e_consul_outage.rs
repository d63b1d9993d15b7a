//! Consul goes away for `OUTAGE` while traffic flows, then comes back.
//!
//! Mesh: productpage-v1 (calls details), details-v1, and ratings-v1, which is
//! only registered after the outage and until then serves as the client pod
//! (its sidecar has no inbound side yet). Throughout, the client calls
//! productpage by name about once a second (the call tree must be
//! complete and go through the sidecars; names resolve through Consul's DNS,
//! the pod's resolver keeping its last answer while Consul is down, as a
//! caching resolver does). While Consul is down pilotfish must keep serving
//! the last known endpoints, stay ready, and say it is disconnected:
//! `/debug/registries` connected=false with the error, and
//! `pilotfish_registry_connected{registry="consul"} 0`. Consul restarts on
//! its data directory (a one-server cluster, not `-dev`, so the catalog
//! survives); pilotfish reconnects, and a registration made afterwards
//! reaches Envoy.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::app::AppAnswer;
use support::consul::Instance;
use support::mesh::{HTTP_PORT, Mesh, PodSpec, host};
use support::{STARTUP, outbound_cluster, wait_until};

const OUTAGE: Duration = Duration::from_secs(30);
/// How often the client checks the mesh during the outage.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long pilotfish may take to notice the outage.
const NOTICE: Duration = Duration::from_secs(10);
/// Registration → Envoy, as in the churn test.
const EDS_FOLLOW: Duration = Duration::from_secs(5);
/// Consul back → pilotfish connected: its watch loops retry on a back-off
/// that grows to 30 s (`BackoffConfig::default().max`), jittered.
const RECONNECT: Duration = Duration::from_secs(45);
/// An instance with no pod behind it: only Envoy's EDS is checked.
const LEGACY_IP: &str = "10.77.0.99";

/// The client pod; its own service is only registered after the outage.
const CLIENT_POD: &str = "ratings-v1";

/// One end-to-end check: client → productpage → details, all through sidecars.
fn check_traffic(mesh: &Mesh) -> Result<Duration, String> {
    let client = mesh.pod(CLIENT_POD);
    let start = Instant::now();
    let answer = client.call("productpage", &[])?;
    let details = answer.callee("details")?;
    if answer.service != "productpage" || details.service != "details" {
        return Err(format!("wrong services answered: {}", answer.tree()));
    }
    answer.all_via_sidecar()?;
    Ok(start.elapsed())
}

fn registry_connected(mesh: &Mesh) -> bool {
    mesh.consul_status()["connected"] == Value::Bool(true)
}

#[test]
fn consul_outage_keeps_known_endpoints_and_recovers() {
    let started = Instant::now();
    let mut mesh = Mesh::start("consul-outage", &[], &[]);
    mesh.add_pod(PodSpec::http("productpage", "v1").calls("details"));
    mesh.add_pod(PodSpec::http("details", "v1"));
    mesh.add_pod(PodSpec::http("ratings", "v1"));
    mesh.register("productpage-v1", Some("http"));
    mesh.register("details-v1", Some("http"));
    mesh.start_sidecars();
    mesh.wait_converged(&["productpage-v1", "details-v1"]);
    check_traffic(&mesh).unwrap_or_else(|e| panic!("before the outage: {e}"));
    assert!(registry_connected(&mesh), "{}", mesh.consul_status());
    assert_eq!(mesh.consul_connected_metric(), Some(1.0));
    eprintln!("mesh up in {:?}", started.elapsed());

    let details_cluster = outbound_cluster(HTTP_PORT, "", &host("details"));
    let details_hosts = BTreeSet::from([format!("{}:{HTTP_PORT}", mesh.pod("details-v1").ip)]);

    // The outage.
    mesh.consul.stop();
    let down = Instant::now();
    let mut noticed: Option<Duration> = None;
    let mut checks = 0;
    let mut slowest = Duration::ZERO;
    while down.elapsed() < OUTAGE {
        let tick = Instant::now();
        let latency = check_traffic(&mesh)
            .unwrap_or_else(|e| panic!("{:?} into the Consul outage: {e}", down.elapsed()));
        slowest = slowest.max(latency);
        checks += 1;
        assert_eq!(
            mesh.pilotfish().get("/ready").map(|(status, _)| status),
            Ok(200),
            "pilotfish must stay ready while it serves the last known state"
        );
        if noticed.is_none() && !registry_connected(&mesh) {
            noticed = Some(down.elapsed());
        }
        std::thread::sleep(CHECK_EVERY.saturating_sub(tick.elapsed()));
    }
    let noticed = noticed.unwrap_or_else(|| {
        panic!(
            "pilotfish still says Consul is connected {OUTAGE:?} into the outage: {}",
            mesh.consul_status()
        )
    });
    assert!(noticed <= NOTICE, "outage noticed only after {noticed:?}");
    let status = mesh.consul_status();
    assert_eq!(status["connected"], Value::Bool(false), "{status}");
    assert_eq!(status["synced"], Value::Bool(true), "{status}");
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        !error.is_empty(),
        "no last_error while Consul is down: {status}"
    );
    assert!(
        status["consecutive_failures"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    assert_eq!(
        mesh.consul_connected_metric(),
        Some(0.0),
        "pilotfish_registry_connected{{registry=\"consul\"}} during the outage:\n{}",
        mesh.pilotfish().metrics()
    );
    // Envoy still has the endpoints it knew.
    assert_eq!(
        mesh.pod("productpage-v1").cluster_hosts(&details_cluster),
        Ok(Some(details_hosts.clone()))
    );
    eprintln!(
        "outage of {OUTAGE:?}: {checks} checks, all answered (slowest {slowest:?}); pilotfish noticed after {noticed:?}; status {status}"
    );

    // Consul comes back on its data directory, and ratings registers at once,
    // while pilotfish's watch loops are still backing off.
    let leader_after = mesh.consul.restart();
    let back = Instant::now();
    let ratings = mesh.pod("ratings-v1");
    let ratings_cluster = outbound_cluster(HTTP_PORT, "", &host("ratings"));
    let ratings_hosts = BTreeSet::from([format!("{}:{HTTP_PORT}", ratings.ip)]);
    mesh.register("ratings-v1", Some("http"));
    // Until pilotfish's next retry (its back-off reaches 30 s), traffic
    // keeps flowing on the last known state.
    wait_until("pilotfish to reconnect to Consul", RECONNECT, || {
        check_traffic(&mesh)?;
        registry_connected(&mesh)
            .then_some(())
            .ok_or_else(|| format!("{}", mesh.consul_status()))
    });
    let reconnected = back.elapsed();
    let reconnected_at = Instant::now();
    assert_eq!(mesh.consul_connected_metric(), Some(1.0));
    // The first answer wakes every loop: the new service is read at once,
    // not after the catalog loop's own back-off.
    mesh.wait_cluster_hosts(
        "productpage-v1",
        &ratings_cluster,
        &ratings_hosts,
        EDS_FOLLOW,
    );
    let ratings_followed = reconnected_at.elapsed();
    // The catalog survived the restart: nothing known was dropped.
    assert_eq!(
        mesh.pod("productpage-v1").cluster_hosts(&details_cluster),
        Ok(Some(details_hosts))
    );
    check_traffic(&mesh).unwrap_or_else(|e| panic!("after Consul came back: {e}"));
    mesh.wait_cluster_hosts(
        "ratings-v1",
        &format!("inbound|{HTTP_PORT}||"),
        &BTreeSet::from([format!("127.0.0.1:{HTTP_PORT}")]),
        STARTUP,
    );
    let answer = wait_until("ratings to answer by name", EDS_FOLLOW, || {
        let response = mesh
            .pod("productpage-v1")
            .get(&host("ratings"), HTTP_PORT, &[])?;
        let answer = AppAnswer::from_response(&response)?;
        answer.all_via_sidecar()?;
        Ok(answer)
    });
    assert_eq!(answer.label(), "ratings v1");
    eprintln!(
        "Consul restarted (leader after {leader_after:?}); pilotfish reconnected {reconnected:?} after that; ratings (registered right after the restart) in the client's EDS {ratings_followed:?} after the reconnection"
    );

    // A registration made once everything is back reaches Envoy as usual.
    let legacy = Instance::new("reviews-legacy", "reviews", LEGACY_IP, HTTP_PORT)
        .tag("version|v0")
        .protocol(Some("http"));
    let registered = Instant::now();
    mesh.consul.register(&legacy);
    let followed = mesh.wait_cluster_hosts(
        "productpage-v1",
        &outbound_cluster(HTTP_PORT, "", &host("reviews")),
        &BTreeSet::from([format!("{LEGACY_IP}:{HTTP_PORT}")]),
        EDS_FOLLOW,
    );
    eprintln!(
        "a registration after the reconnection: in the client's EDS after {followed:?} ({:?} in all)",
        registered.elapsed()
    );
    mesh.assert_no_rejected_updates();
    eprintln!("passed in {:?}", started.elapsed());
}
