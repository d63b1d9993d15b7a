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
use support::mesh::{HTTP_PORT, Mesh, PodSpec, host};
use support::{STARTUP, outbound_cluster, wait_until};

const OUTAGE: Duration = Duration::from_secs(30);
/// How often the client checks the mesh during the outage.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long pilotfish may take to notice the outage, and the way back.
const NOTICE: Duration = Duration::from_secs(10);
/// Registration → Envoy, as in the churn test.
const EDS_FOLLOW: Duration = Duration::from_secs(5);

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
    assert!(!error.is_empty(), "no last_error while Consul is down: {status}");
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

    // Consul comes back on its data directory.
    let leader_after = mesh.consul.restart();
    let back = Instant::now();
    wait_until("pilotfish to reconnect to Consul", NOTICE, || {
        check_traffic(&mesh)?;
        registry_connected(&mesh)
            .then_some(())
            .ok_or_else(|| format!("{}", mesh.consul_status()))
    });
    let reconnected = back.elapsed();
    assert_eq!(mesh.consul_connected_metric(), Some(1.0));
    // The catalog survived the restart: nothing known was dropped.
    assert_eq!(
        mesh.pod("productpage-v1").cluster_hosts(&details_cluster),
        Ok(Some(details_hosts))
    );
    check_traffic(&mesh).unwrap_or_else(|e| panic!("after Consul came back: {e}"));
    eprintln!(
        "Consul restarted (leader after {leader_after:?}); pilotfish reconnected {reconnected:?} later"
    );

    // A registration after the restart reaches Envoy.
    let ratings = mesh.pod("ratings-v1");
    let ratings_hosts = BTreeSet::from([format!("{}:{HTTP_PORT}", ratings.ip)]);
    let registered = Instant::now();
    mesh.register("ratings-v1", Some("http"));
    let followed = mesh.wait_cluster_hosts(
        "productpage-v1",
        &outbound_cluster(HTTP_PORT, "", &host("ratings")),
        &ratings_hosts,
        Duration::from_secs(90),
    );
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
        "ratings registered after the restart: in the client's EDS after {followed:?}, answering by name after {:?}",
        registered.elapsed()
    );
    mesh.assert_no_rejected_updates();
    eprintln!("passed in {:?}", started.elapsed());
}
