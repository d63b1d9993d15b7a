//! Locality-aware load balancing with a real Envoy: the sidecar is
//! bootstrapped with a locality (`pilotfish bootstrap --locality`), reviews
//! has one endpoint in the sidecar's zone, one elsewhere in its region and
//! one in another region (registry `locality:`), and a DestinationRule with
//! outlier detection turns on Istio's locality failover. All traffic stays
//! in the local zone until that endpoint fails and is ejected; then it moves
//! to the same region, and only then to the other region.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::backend::Backends;
use support::behaviours::Behaviour;
use support::bookinfo;
use support::envoy::{self, Envoy};
use support::netns::Netns;
use support::pilotfish::{self, Pilotfish};
use support::pod::write_registry_file;
use support::process::write_world_readable;
use support::testdir::TestDir;
use support::{Tally, outbound_cluster, run_checked, wait_until};

const REGISTRY: &str = r#"
services:
- hostname: reviews.default.svc.cluster.local
  addresses: [127.1.0.30]
  ports:
  - {name: http, port: 9080, protocol: HTTP}
  endpoints:
  - address: 127.0.0.31
    labels: {app: reviews, version: v1}
    locality: us-east/zone-a
  - address: 127.0.0.32
    labels: {app: reviews, version: v2}
    locality: us-east/zone-b
  - address: 127.0.0.33
    labels: {app: reviews, version: v3}
    locality: us-west/zone-a
"#;

const DESTINATION_RULE: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 60s
      maxEjectionPercent: 100
    loadBalancer:
      localityLbSetting:
        enabled: true
"#;

/// A pod like `support::pod`'s, but with the sidecar in a locality.
/// Fields drop in order: Envoy and pilotfish go before the backends.
struct LocalityPod {
    envoy: Envoy,
    pilotfish: Pilotfish,
    backends: Backends,
    _dir: TestDir,
    ns: Arc<Netns>,
}

impl LocalityPod {
    fn start(name: &str, locality: &str) -> LocalityPod {
        let dir = TestDir::new(name);
        let config_dir = dir.path().join("config");
        std::fs::create_dir(&config_dir).expect("create config dir");
        write_world_readable(&config_dir.join("reviews-dr.yaml"), DESTINATION_RULE);
        let registry_file = write_registry_file(dir.path(), REGISTRY);

        let ns = Arc::new(Netns::new());
        ns.capture_outbound(false);
        let backends = Backends::start_for_registry(&ns, REGISTRY);
        let pilotfish = Pilotfish::start(
            ns.clone(),
            &config_dir,
            &registry_file,
            &dir.path().join("pilotfish.log"),
            &[],
        );
        let mut cmd = Command::new(pilotfish::binary());
        cmd.args(["bootstrap", "--xds-address", pilotfish::XDS_ADDRESS])
            .args(["--proxy-type", "sidecar", "--ip", envoy::POD_IP])
            .args(["--name", name, "--namespace", "default"])
            .args(["--admin-port", "15000", "--interception-mode", "REDIRECT"])
            .args(["--locality", locality]);
        envoy::add_args(&mut cmd, &[]);
        let bootstrap = run_checked(&mut cmd);
        let parsed: Value = serde_json::from_str(&bootstrap).expect("bootstrap JSON");
        assert_eq!(parsed["node"]["locality"]["zone"], "zone-a");
        let envoy = Envoy::start_with_bootstrap(ns.clone(), dir.path(), &bootstrap);
        LocalityPod {
            envoy,
            pilotfish,
            backends,
            _dir: dir,
            ns,
        }
    }

    fn send_outcome(&self) -> String {
        match self.ns.run(|| bookinfo::reviews().send()) {
            Ok(response) => response.outcome(),
            Err(e) => format!("error {}", e.kind()),
        }
    }

    fn tally(&self, n: usize) -> Tally {
        let mut tally = Tally::default();
        for _ in 0..n {
            tally.add(self.send_outcome());
        }
        tally
    }

    /// Sends until `outcome` answers `n` times in a row (Envoy's worker
    /// applies host health changes after up to a second); returns what was
    /// seen meanwhile and how long it took.
    fn settle_on(&self, outcome: &str, n: usize, timeout: Duration) -> (Tally, Duration) {
        let start = Instant::now();
        let mut seen = Tally::default();
        let mut in_a_row = 0;
        wait_until(&format!("traffic to settle on {outcome}"), timeout, || {
            let got = self.send_outcome();
            in_a_row = if got == outcome { in_a_row + 1 } else { 0 };
            seen.add(got);
            if in_a_row >= n {
                Ok(())
            } else {
                Err(format!("{seen}"))
            }
        });
        (seen, start.elapsed())
    }

    /// Envoy's view of the cluster's hosts: address => priority.
    fn host_priorities(&self, cluster: &str) -> Vec<(String, u64)> {
        let (_, body) = self
            .envoy
            .admin_get("/clusters?format=json")
            .expect("admin /clusters");
        let clusters: Value = serde_json::from_str(&body).expect("clusters JSON");
        let mut out = Vec::new();
        for c in clusters["cluster_statuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if c["name"] != cluster {
                continue;
            }
            for host in c["host_statuses"].as_array().into_iter().flatten() {
                let addr = &host["address"]["socket_address"];
                let name = format!(
                    "{}:{}",
                    addr["address"].as_str().unwrap_or(""),
                    addr["port_value"]
                );
                out.push((name, host["priority"].as_u64().unwrap_or(0)));
            }
        }
        out.sort();
        out
    }

    fn assert_clean(&self) {
        self.envoy.assert_no_rejected_updates();
        let diagnostics = self.pilotfish.diagnostics().to_string();
        assert!(
            !diagnostics.contains("reviews"),
            "pilotfish reported problems with reviews: {diagnostics}"
        );
    }
}

#[test]
fn locality_failover_keeps_traffic_local_until_the_local_endpoint_is_ejected() {
    let pod = LocalityPod::start("locality-failover", "us-east/zone-a");
    let cluster = outbound_cluster(bookinfo::PORT, "", &bookinfo::fqdn("reviews"));
    pod.envoy
        .wait_route_domain(&bookinfo::PORT.to_string(), &bookinfo::fqdn("reviews"));
    pod.envoy.wait_cluster(&cluster, 3);
    let priorities = pod.host_priorities(&cluster);
    assert_eq!(
        priorities,
        [
            ("127.0.0.31:9080".to_string(), 0),
            ("127.0.0.32:9080".to_string(), 1),
            ("127.0.0.33:9080".to_string(), 2),
        ],
        "same zone, same region, other region"
    );
    let (v1, v2, v3) = (
        pod.backends.at("127.0.0.31:9080"),
        pod.backends.at("127.0.0.32:9080"),
        pod.backends.at("127.0.0.33:9080"),
    );

    let local = pod.tally(100);
    local.assert_all("reviews v1", "before any failure");

    // The local endpoint fails; outlier detection ejects it and traffic
    // fails over to the next priority (same region, other zone).
    v1.behave(Behaviour::always_fail(500));
    let ejected_at = Instant::now(); // failure start
    let mut before = Tally::default();
    wait_until(
        "the local endpoint ejected",
        Duration::from_secs(20),
        || {
            before.add(pod.send_outcome());
            let ejected = pod
                .envoy
                .cluster_stat(&cluster, "outlier_detection.ejections_enforced_total");
            if ejected >= 1 {
                Ok(())
            } else {
                Err(format!("ejections_enforced_total = {ejected}; {before}"))
            }
        },
    );
    let ejection = ejected_at.elapsed();
    let (settling, settle_time) = pod.settle_on("reviews v2", 10, Duration::from_secs(5));
    let v1_failed = v1.attempts();
    let failover = pod.tally(100);
    println!(
        "locality failover: before failure {local}; until ejection ({}) {before}; \
         settling ({}) {settling}; after: {failover}",
        support::traffic::ms(ejection),
        support::traffic::ms(settle_time),
    );
    failover.assert_all("reviews v2", "after ejecting the local endpoint");
    assert_eq!(v1.attempts(), v1_failed, "the ejected endpoint got traffic");
    assert_eq!(v3.attempts(), 0, "the other region got traffic too early");

    // Then the same-region endpoint fails too: the other region takes over.
    v2.behave(Behaviour::always_fail(500));
    wait_until(
        "the regional endpoint ejected",
        Duration::from_secs(20),
        || {
            pod.send_outcome();
            let ejected = pod
                .envoy
                .cluster_stat(&cluster, "outlier_detection.ejections_enforced_total");
            if ejected >= 2 {
                Ok(())
            } else {
                Err(format!("ejections_enforced_total = {ejected}"))
            }
        },
    );
    let (settling, _) = pod.settle_on("reviews v3", 10, Duration::from_secs(5));
    let remote = pod.tally(100);
    println!("locality failover, second step: settling {settling}; after: {remote}");
    remote.assert_all("reviews v3", "after ejecting both us-east endpoints");
    pod.assert_clean();
}
