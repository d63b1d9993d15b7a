//! Bookinfo on Consul, on one machine: the mesh Istio 1.1 broke (issue 3).
//!
//! Istio 1.1 treated Consul services without a `protocol` as TCP, and gave
//! every VIP-less TCP service the whole port: all of :9080 went to one
//! random service. Here every pod is a network namespace on a bridge with its
//! own IP, Consul (HTTP + DNS) and pilotfish sit on the bridge, each pod runs
//! our Bookinfo-like app (productpage calls details and reviews, reviews v2
//! and v3 call ratings), a real Envoy sidecar and the iptables capture, and
//! everything calls everything by Consul DNS name. The same checks run twice:
//! services registered without `protocol` meta (sniffed: the Istio 1.1
//! failure condition) and with `protocol: http` / `tcp`.
//!
//! Checks: each service reached by name from every pod (its own pod too)
//! answers as itself; all-v1 VirtualServices pin reviews to v1;
//! `end-user: jason` goes to v2 (which calls ratings), everyone else to v1;
//! two VIP-less TCP services on one port each have their own /32 chains and
//! reach their own server; and every hop went through both sidecars
//! (caller's outbound cluster and callee's `inbound|<port>||` counted it,
//! the app saw it come from 127.0.0.1).

mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;
use support::app::AppAnswer;
use support::config_dump;
use support::mesh::{HTTP_PORT, Mesh, PodSpec, host};
use support::{PROPAGATION, outbound_cluster, wait_until};

/// Both tests build an 8-sidecar mesh; one at a time on 2 cores.
static ONE_MESH_AT_A_TIME: Mutex<()> = Mutex::new(());

const TCP_PORT: u16 = 9000;
const HTTP_SERVICES: [&str; 4] = ["productpage", "details", "reviews", "ratings"];
const TCP_SERVICES: [&str; 2] = ["echo-a", "echo-b"];
/// Requests per routing check (the brief asks for at least 30).
const ROUTED_REQUESTS: usize = 40;
/// Connections per TCP service per client pod.
const TCP_ROUND_TRIPS: usize = 5;
/// The pod used as a plain client for productpage (like Istio's `sleep`).
const CLIENT_POD: &str = "echo-a-v1";

const DESTINATION_RULES: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: productpage}
spec:
  host: productpage.service.consul
  subsets:
  - name: v1
    labels: {version: v1}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.service.consul
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
  - name: v3
    labels: {version: v3}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings.service.consul
  subsets:
  - name: v1
    labels: {version: v1}
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: details}
spec:
  host: details.service.consul
  subsets:
  - name: v1
    labels: {version: v1}
"#;

/// `virtual-service-all-v1.yaml` for Consul hosts.
fn all_v1() -> String {
    HTTP_SERVICES
        .iter()
        .map(|s| {
            format!(
                "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {{name: {s}}}\nspec:\n  hosts: [{h}]\n  http:\n  - route:\n    - destination: {{host: {h}, subset: v1}}\n",
                h = host(s)
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// `virtual-service-reviews-test-v2.yaml` for Consul hosts.
const REVIEWS_TEST_V2: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews.service.consul]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews.service.consul, subset: v2}
  - route:
    - destination: {host: reviews.service.consul, subset: v1}
"#;

fn bookinfo_pods() -> Vec<PodSpec> {
    vec![
        PodSpec::http("productpage", "v1")
            .calls("details")
            .calls("reviews"),
        PodSpec::http("details", "v1"),
        PodSpec::http("reviews", "v1"),
        PodSpec::http("reviews", "v2").calls("ratings"),
        PodSpec::http("reviews", "v3").calls("ratings"),
        PodSpec::http("ratings", "v1"),
        PodSpec::tcp_echo("echo-a", "v1", TCP_PORT),
        PodSpec::tcp_echo("echo-b", "v1", TCP_PORT),
    ]
}

#[test]
fn bookinfo_on_consul_without_protocol_meta_is_sniffed_and_routed_by_host() {
    run_bookinfo("consul-bookinfo-sniffed", None, None);
}

#[test]
fn bookinfo_on_consul_with_protocol_meta() {
    run_bookinfo("consul-bookinfo-declared", Some("http"), Some("tcp"));
}

fn run_bookinfo(name: &str, http_protocol: Option<&str>, tcp_protocol: Option<&str>) {
    let _one = ONE_MESH_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = Instant::now();
    let mut mesh = Mesh::start(name, &[("destination-rules.yaml", DESTINATION_RULES)], &[]);
    for spec in bookinfo_pods() {
        mesh.add_pod(spec);
    }
    let names: Vec<String> = mesh.pods().iter().map(|p| p.name().to_string()).collect();
    for pod in mesh.pods() {
        let protocol = if pod.spec.port() == HTTP_PORT {
            http_protocol
        } else {
            tcp_protocol
        };
        mesh.register(pod.name(), protocol);
    }
    mesh.start_sidecars();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    mesh.wait_converged(&names);
    eprintln!(
        "[{name}] mesh of {} pods up and converged in {:?}",
        names.len(),
        started.elapsed()
    );
    assert_dns_answers(&mesh);

    assert_tcp_chains_per_endpoint(&mesh);
    let t = Instant::now();
    every_pod_reaches_every_service_by_name_as_itself(&mesh);
    eprintln!("[{name}] all-pairs check in {:?}", t.elapsed());

    let t = Instant::now();
    mesh.write_config("virtual-service-all-v1.yaml", &all_v1());
    wait_reviews_route(&mesh, |vh| {
        let text = vh.to_string();
        (text.contains(&outbound_cluster(HTTP_PORT, "v1", &host("reviews")))
            && !text.contains("|v2|"))
        .then_some(())
        .ok_or_else(|| format!("reviews routes: {text}"))
    });
    eprintln!("[{name}] all-v1 applied in {:?}", t.elapsed());
    let tally = productpage_tally(&mesh, &[]);
    assert_eq!(
        tally.get("reviews v1").copied().unwrap_or(0),
        ROUTED_REQUESTS,
        "all-v1: every request through productpage must reach reviews v1: {tally:?}"
    );

    let t = Instant::now();
    mesh.write_config("virtual-service-all-v1.yaml", &all_v1_without_reviews());
    mesh.write_config("virtual-service-reviews-test-v2.yaml", REVIEWS_TEST_V2);
    wait_reviews_route(&mesh, |vh| {
        let text = vh.to_string();
        (text.contains("end-user")
            && text.contains(&outbound_cluster(HTTP_PORT, "v2", &host("reviews"))))
        .then_some(())
        .ok_or_else(|| format!("reviews routes: {text}"))
    });
    eprintln!("[{name}] reviews-test-v2 applied in {:?}", t.elapsed());
    let jason = productpage_tally(&mesh, &[("end-user", "jason")]);
    assert_eq!(
        jason.get("reviews v2").copied().unwrap_or(0),
        ROUTED_REQUESTS,
        "end-user: jason must reach reviews v2: {jason:?}"
    );
    let others = productpage_tally(&mesh, &[("end-user", "someone-else")]);
    assert_eq!(
        others.get("reviews v1").copied().unwrap_or(0),
        ROUTED_REQUESTS,
        "other users must reach reviews v1: {others:?}"
    );
    let anonymous = productpage_tally(&mesh, &[]);
    assert_eq!(
        anonymous.get("reviews v1").copied().unwrap_or(0),
        ROUTED_REQUESTS,
        "requests without end-user must reach reviews v1: {anonymous:?}"
    );

    mesh.assert_no_rejected_updates();
    eprintln!("[{name}] passed in {:?}", started.elapsed());
}

/// all-v1 without its reviews VirtualService (replaced by reviews-test-v2).
fn all_v1_without_reviews() -> String {
    all_v1()
        .split("---\n")
        .filter(|doc| !doc.contains("name: reviews}"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Consul's DNS gives each name exactly its instances' IPs.
fn assert_dns_answers(mesh: &Mesh) {
    let client = mesh.pod(CLIENT_POD);
    for service in HTTP_SERVICES.iter().chain(&TCP_SERVICES) {
        let mut want: Vec<String> = mesh
            .instances_of(service)
            .iter()
            .map(|p| p.ip.clone())
            .collect();
        want.sort();
        let mut got: Vec<String> = client
            .resolve(&host(service))
            .unwrap_or_else(|e| panic!("resolve {}: {e}", host(service)))
            .iter()
            .map(|ip| ip.to_string())
            .collect();
        got.sort();
        assert_eq!(got, want, "Consul DNS for {}", host(service));
    }
}

/// The heart of issue 3: on the shared TCP port every sidecar has, per
/// VIP-less TCP service, a tcp_proxy chain matching exactly its endpoints'
/// /32s (Istio 1.1 gave each of them the whole port).
fn assert_tcp_chains_per_endpoint(mesh: &Mesh) {
    let listener_name = format!("0.0.0.0_{TCP_PORT}");
    for pod in mesh.pods() {
        let dump = pod.envoy().config_dump();
        let listener = dump["configs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("dynamic_listeners")?.as_array())
            .flatten()
            .find(|l| l["name"] == listener_name.as_str())
            .and_then(|l| l.pointer("/active_state/listener"))
            .unwrap_or_else(|| panic!("{}: no active listener {listener_name}", pod.name()));
        let mut tcp_matches: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for chain in listener["filter_chains"].as_array().into_iter().flatten() {
            let Some(cluster) = chain["filters"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|f| f.pointer("/typed_config/cluster").and_then(Value::as_str))
            else {
                continue;
            };
            let ranges = chain
                .pointer("/filter_chain_match/prefix_ranges")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| {
                    format!(
                        "{}/{}",
                        r["address_prefix"].as_str().unwrap_or("?"),
                        r["prefix_len"]
                    )
                });
            tcp_matches
                .entry(cluster.to_string())
                .or_default()
                .extend(ranges);
        }
        for service in TCP_SERVICES {
            let want: Vec<String> = mesh
                .instances_of(service)
                .iter()
                .map(|p| format!("{}/32", p.ip))
                .collect();
            let cluster = outbound_cluster(TCP_PORT, "", &host(service));
            assert_eq!(
                tcp_matches.get(&cluster),
                Some(&want),
                "{}: tcp_proxy chains of {listener_name} by cluster: {tcp_matches:?}",
                pod.name()
            );
        }
    }
}

/// Stats of every sidecar that prove a hop went through both ends.
#[derive(Debug, Default)]
struct HopStats {
    /// (pod, cluster) → upstream_rq_total (HTTP) or upstream_cx_total (TCP).
    counters: BTreeMap<(String, String), u64>,
}

fn hop_counters(mesh: &Mesh) -> HopStats {
    let mut out = HopStats::default();
    for pod in mesh.pods() {
        let stats = pod.envoy().stats();
        for (name, value) in stats {
            let Some(rest) = name.strip_prefix("cluster.") else {
                continue;
            };
            for stat in ["upstream_rq_total", "upstream_cx_total"] {
                if let Some(cluster) = rest.strip_suffix(&format!(".{stat}")) {
                    out.counters
                        .insert((pod.name().to_string(), format!("{cluster} {stat}")), value);
                }
            }
        }
    }
    out
}

fn grew(before: &HopStats, after: &HopStats, pod: &str, cluster: &str, stat: &str) -> u64 {
    let key = (pod.to_string(), format!("{cluster} {stat}"));
    after.counters.get(&key).copied().unwrap_or(0) - before.counters.get(&key).copied().unwrap_or(0)
}

/// From every pod, every service by name (its own too: Consul's DNS may
/// then name the pod itself, and the call must still pass its inbound
/// side): HTTP services answer as themselves (their callees too), TCP
/// services echo with their own name. Then the sidecar stats: each caller's
/// outbound cluster counted its calls, each callee's inbound cluster
/// counted exactly what its app served.
fn every_pod_reaches_every_service_by_name_as_itself(mesh: &Mesh) {
    let served_before: BTreeMap<String, u64> = mesh
        .pods()
        .iter()
        .map(|p| (p.name().to_string(), p.served()))
        .collect();
    let before = hop_counters(mesh);
    // (caller pod, service) → direct calls made by the test.
    let mut calls: BTreeMap<(String, String), u64> = BTreeMap::new();
    for pod in mesh.pods() {
        for service in HTTP_SERVICES {
            let answer = pod
                .call(service, &[])
                .unwrap_or_else(|e| panic!("{} -> {service}: {e}", pod.name()));
            assert_eq!(
                answer.service,
                service,
                "{} called {} and {} answered: {}",
                pod.name(),
                host(service),
                answer.label(),
                answer.tree()
            );
            assert_callees_answer_as_themselves(&answer);
            answer
                .all_via_sidecar()
                .unwrap_or_else(|e| panic!("{} -> {service}: {e}", pod.name()));
            if pod.spec.service == service && mesh.instances_of(service).len() == 1 {
                // Its own single instance: out through its outbound side, in
                // again through its inbound side (the peer check above).
                assert_eq!(answer.pod, pod.name(), "{}", answer.tree());
            }
            *calls
                .entry((pod.name().to_string(), service.to_string()))
                .or_default() += 1;
        }
        for service in TCP_SERVICES {
            for i in 0..TCP_ROUND_TRIPS {
                let line = format!("ping {i} from {}", pod.name());
                let reply = pod
                    .tcp_line(&host(service), TCP_PORT, &line)
                    .unwrap_or_else(|e| panic!("{} -> {service}: {e}", pod.name()));
                assert_eq!(
                    reply,
                    format!("{service} v1: {line}"),
                    "{} -> {}:{TCP_PORT} answered by the wrong service",
                    pod.name(),
                    host(service)
                );
            }
            *calls
                .entry((pod.name().to_string(), service.to_string()))
                .or_default() += TCP_ROUND_TRIPS as u64;
        }
    }
    let after = hop_counters(mesh);

    // Caller side: its outbound cluster for the service counted at least
    // the test's own calls (apps add theirs: productpage -> reviews ...).
    for ((pod, service), n) in &calls {
        let (port, stat) = if TCP_SERVICES.contains(&service.as_str()) {
            (TCP_PORT, "upstream_cx_total")
        } else {
            (HTTP_PORT, "upstream_rq_total")
        };
        let cluster = outbound_cluster(port, "", &host(service));
        let counted = grew(&before, &after, pod, &cluster, stat);
        assert!(
            counted >= *n,
            "{pod}'s sidecar counted {counted} {stat} on {cluster} for {n} calls"
        );
    }
    // Callee side: everything its app served came through its inbound cluster.
    let mut summary = Vec::new();
    for pod in mesh.pods() {
        let served = pod.served() - served_before[pod.name()];
        let (cluster, stat) = if pod.spec.port() == TCP_PORT {
            (format!("inbound|{TCP_PORT}||"), "upstream_cx_total")
        } else {
            (format!("inbound|{HTTP_PORT}||"), "upstream_rq_total")
        };
        let counted = grew(&before, &after, pod.name(), &cluster, stat);
        assert!(served > 0, "{} served nothing", pod.name());
        assert_eq!(
            counted,
            served,
            "{}: its app served {served} but its sidecar's {cluster} counted {counted} {stat}",
            pod.name()
        );
        summary.push(format!("{} {served}", pod.name()));
    }
    eprintln!(
        "served (= counted by each callee's inbound cluster): {}",
        summary.join(", ")
    );
}

/// productpage's callees are details and reviews, reviews v2/v3 call
/// ratings: each answered as itself.
fn assert_callees_answer_as_themselves(answer: &AppAnswer) {
    for (callee_host, outcome) in &answer.calls {
        let callee = outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("{} -> {callee_host}: {e}", answer.label()));
        assert_eq!(
            host(&callee.service),
            *callee_host,
            "{} called {callee_host} and {} answered: {}",
            answer.label(),
            callee.label(),
            answer.tree()
        );
        assert_callees_answer_as_themselves(callee);
    }
}

/// Waits until productpage's sidecar routes reviews as `check` wants.
fn wait_reviews_route(mesh: &Mesh, mut check: impl FnMut(&Value) -> Result<(), String>) {
    let envoy = mesh.pod("productpage-v1").envoy();
    let reviews = host("reviews");
    wait_until("productpage's routes for reviews", PROPAGATION, || {
        let dump = envoy.config_dump();
        let config = config_dump::route_config(&dump, &HTTP_PORT.to_string())
            .ok_or("no route config 9080")?;
        let vh = config
            .get("virtual_hosts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|vh| {
                vh.get("domains")
                    .and_then(Value::as_array)
                    .is_some_and(|d| d.iter().any(|d| d.as_str() == Some(reviews.as_str())))
            })
            .ok_or("no virtual host for reviews")?;
        check(vh)
    });
}

/// `ROUTED_REQUESTS` requests to productpage from the client pod; counts
/// which reviews answered productpage. Every request must succeed, go
/// through the sidecars, and reviews v2/v3 must have called ratings.
fn productpage_tally(mesh: &Mesh, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
    let client = mesh.pod(CLIENT_POD);
    let mut tally = BTreeMap::new();
    client.run(|| {
        for _ in 0..ROUTED_REQUESTS {
            let response = client
                .get_in_ns(&host("productpage"), HTTP_PORT, headers)
                .unwrap_or_else(|e| panic!("productpage: {e}"));
            let answer =
                AppAnswer::from_response(&response).unwrap_or_else(|e| panic!("productpage: {e}"));
            assert_eq!(answer.service, "productpage");
            assert_callees_answer_as_themselves(&answer);
            answer
                .all_via_sidecar()
                .unwrap_or_else(|e| panic!("{e}: {}", answer.tree()));
            let reviews = answer
                .callee("reviews")
                .unwrap_or_else(|e| panic!("{e}: {}", answer.tree()));
            if reviews.version != "v1" {
                let ratings = reviews
                    .callee("ratings")
                    .unwrap_or_else(|e| panic!("{e}: {}", answer.tree()));
                assert_eq!(ratings.label(), "ratings v1", "{}", answer.tree());
            }
            *tally.entry(reviews.label()).or_insert(0) += 1;
        }
    });
    tally
}
