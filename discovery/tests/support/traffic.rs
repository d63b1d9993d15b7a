//! Shared by the traffic-feature tests (`e2e_traffic_*.rs`): a Bookinfo pod
//! whose `reviews` VirtualService and DestinationRule a test writes itself,
//! waits on what Envoy applied, timed and concurrent requests, and the
//! closing "no NACK" check.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bookinfo::{self, PORT};
use super::config_dump;
use super::pod::{Pod, PodBuilder};
use super::{PROPAGATION, Request, Response, outbound_cluster, repo_path, wait_until};

/// Bookinfo's file of DestinationRules (one per service).
pub const BOOKINFO_RULES_FILE: &str = "destination-rules.yaml";
/// Where these tests put reviews' DestinationRule.
pub const REVIEWS_DR_FILE: &str = "reviews-destination-rule.yaml";
/// Where these tests put reviews' VirtualService (Bookinfo's own file name,
/// so that it replaces the `end-user: jason` rule).
pub const REVIEWS_VS_FILE: &str = bookinfo::REVIEWS_VS_FILE;

/// Endpoint addresses of reviews v1, v2 and v3 (one each).
pub const REVIEWS_V1: &str = "127.0.0.31:9080";
pub const REVIEWS_V2: &str = "127.0.0.32:9080";
pub const REVIEWS_V3: &str = "127.0.0.33:9080";

/// reviews' DestinationRule with only the subsets (no traffic policy).
pub const REVIEWS_SUBSETS: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
  - name: v3
    labels: {version: v3}
"#;

/// reviews' VirtualService sending to all of reviews (every endpoint), no
/// subset.
pub const REVIEWS_ALL_ENDPOINTS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
"#;

pub fn reviews_fqdn() -> String {
    bookinfo::fqdn("reviews")
}

/// `outbound|9080|<subset>|reviews.default.svc.cluster.local`; "" for the
/// whole service.
pub fn reviews_cluster(subset: &str) -> String {
    outbound_cluster(PORT, subset, &reviews_fqdn())
}

/// The Bookinfo pod with reviews' DestinationRule `destination_rule` (the
/// other services keep Bookinfo's) and reviews' VirtualService
/// `virtual_service`, or none at all.
pub fn reviews_pod(
    name: &str,
    destination_rule: &str,
    virtual_service: Option<&str>,
) -> PodBuilder {
    let mut builder = Pod::builder(name)
        .registry_from("testdata/bookinfo/registry.yaml")
        .config(BOOKINFO_RULES_FILE, &bookinfo_rules_except_reviews())
        .config(REVIEWS_DR_FILE, destination_rule);
    if let Some(vs) = virtual_service {
        builder = builder.config(REVIEWS_VS_FILE, vs);
    }
    builder
}

/// testdata/bookinfo's DestinationRules without the one for reviews.
pub fn bookinfo_rules_except_reviews() -> String {
    let path = repo_path(&format!("testdata/bookinfo/config/{BOOKINFO_RULES_FILE}"));
    let all =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let kept: Vec<&str> = all
        .split("\n---\n")
        .filter(|doc| !doc.contains("name: reviews\n"))
        .collect();
    assert_eq!(
        kept.len(),
        3,
        "Bookinfo's {BOOKINFO_RULES_FILE} changed shape; update this helper"
    );
    kept.join("\n---\n")
}

/// Waits until Envoy routes reviews (domain in route config `9080`) and
/// each of `clusters` (`""` for the whole service, else a subset) has at
/// least `hosts` endpoints.
pub fn wait_reviews_served(pod: &Pod, clusters: &[(&str, usize)]) {
    pod.envoy
        .wait_route_domain(&PORT.to_string(), &reviews_fqdn());
    for (subset, hosts) in clusters {
        pod.envoy.wait_cluster(&reviews_cluster(subset), *hosts);
    }
}

/// Starts [`reviews_pod`] with reviews' subsets and `virtual_service`, and
/// waits until Envoy serves reviews with `clusters` (as
/// [`wait_reviews_served`]).
pub fn start_reviews_pod(name: &str, virtual_service: &str, clusters: &[(&str, usize)]) -> Pod {
    let pod = reviews_pod(name, REVIEWS_SUBSETS, Some(virtual_service)).start();
    wait_reviews_served(&pod, clusters);
    pod
}

/// The virtual host for reviews in Envoy's route configuration `9080`.
pub fn reviews_virtual_host(dump: &Value) -> Option<Value> {
    let config = config_dump::route_config(dump, &PORT.to_string())?;
    let fqdn = reviews_fqdn();
    config
        .get("virtual_hosts")?
        .as_array()?
        .iter()
        .find(|vh| {
            vh.get("domains")
                .and_then(Value::as_array)
                .is_some_and(|d| d.iter().any(|d| d.as_str() == Some(&fqdn)))
        })
        .cloned()
}

/// Waits (up to the propagation deadline) until reviews' virtual host, as
/// Envoy applied it, satisfies `check`; returns how long that took.
pub fn wait_reviews_routes(
    pod: &Pod,
    what: &str,
    mut check: impl FnMut(&Value) -> bool,
) -> Duration {
    let start = Instant::now();
    wait_until(what, PROPAGATION, || {
        let (_, body) = pod.envoy.admin_get("/config_dump")?;
        let dump: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let vh = reviews_virtual_host(&dump).ok_or("no reviews virtual host")?;
        if check(&vh) {
            Ok(())
        } else {
            Err(format!("reviews virtual host: {vh}"))
        }
    });
    start.elapsed()
}

/// Sends one request and measures how long the answer took.
pub fn timed(pod: &Pod, request: &Request) -> (Response, Duration) {
    let start = Instant::now();
    let response = pod.send(request);
    (response, start.elapsed())
}

/// The outcome of one of several concurrent requests.
#[derive(Debug)]
pub struct Concurrent {
    pub response: Result<Response, String>,
    pub elapsed: Duration,
}

/// Sends `n` copies of `request` at once, each from its own thread on its
/// own connection (all released together by a barrier), and waits for all.
pub fn send_concurrently(pod: &Pod, n: usize, request: &Request) -> Vec<Concurrent> {
    pod.ns().run(|| {
        let barrier = Barrier::new(n);
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..n)
                .map(|_| {
                    // Born on a thread inside the namespace: so is this one.
                    scope.spawn(|| {
                        barrier.wait();
                        let start = Instant::now();
                        let response = request.send().map_err(|e| e.to_string());
                        Concurrent {
                            response,
                            elapsed: start.elapsed(),
                        }
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("request thread"))
                .collect()
        })
    })
}

/// The end-of-test check every traffic test makes: Envoy accepted every xDS
/// update pilotfish sent (`update_rejected` is 0 for LDS, CDS, every RDS and
/// EDS subscription), pilotfish recorded no NACK and sees everything ACKed,
/// and pilotfish serves this proxy a configuration (its debug config dump).
pub fn assert_no_nack(pod: &Pod) {
    pod.envoy.assert_no_rejected_updates();
    pod.pilotfish.wait_synced_without_nack(pod.envoy.node_id());
    let served = pod
        .pilotfish
        .get_json(&format!("/debug/config_dump?proxy={}", pod.envoy.node_id()));
    assert!(
        served.to_string().contains(&reviews_fqdn()),
        "pilotfish serves {} nothing about reviews: {served}",
        pod.envoy.node_id()
    );
}

/// Every translation or input diagnostic pilotfish reports that mentions
/// `needle` (e.g. an object name): a feature the test relies on must not
/// have been reported unsupported or invalid.
pub fn diagnostics_mentioning(pod: &Pod, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    collect_messages(&pod.pilotfish.diagnostics(), &mut out);
    out.retain(|entry| entry.contains(needle));
    out
}

fn collect_messages(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if map.contains_key("message") => out.push(value.to_string()),
        Value::Object(map) => map.values().for_each(|v| collect_messages(v, out)),
        Value::Array(items) => items.iter().for_each(|v| collect_messages(v, out)),
        _ => {}
    }
}

/// `assert_no_nack`, plus: pilotfish reported nothing about reviews'
/// VirtualService or DestinationRule.
pub fn assert_clean(pod: &Pod) {
    assert_no_nack(pod);
    let reported = diagnostics_mentioning(pod, "reviews");
    assert!(
        reported.is_empty(),
        "pilotfish reported problems with reviews' config: {reported:#?}"
    );
}

/// Milliseconds, for the numbers tests print.
pub fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
