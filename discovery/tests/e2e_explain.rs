//! `pilotfish explain` against what real Envoy does: for each request, the
//! real binary explains it against the running server (`--server`,
//! `--proxy <node id>`), the same request goes through the sidecar, and the
//! backend that answered must be among the endpoints the explanation names
//! (service and version label), or Envoy's own answer must be the one
//! explained (direct response, no route). Covers header matches (exact,
//! prefix, regex), exact and prefix paths, a weighted split, Host-based
//! virtual hosts, a direct response, a no-route 404 and two TCP services
//! sharing a port by VIP; one offline run gives the same answer.

mod support;

use std::collections::BTreeSet;
use std::process::Output;

use serde_json::Value;
use support::bookinfo::{self, PRODUCTPAGE_VIP, RATINGS_VIP, REVIEWS_VIP, REVIEWS_VS_FILE};
use support::pilotfish::HTTP_ADDRESS;
use support::{Pod, Request, outbound_cluster};

const TCP_PORT: u16 = 9000;

/// Two TCP services on one port, told apart by VIP.
const TCP_SERVICES: &str = r#"
- hostname: mongo.default.svc.cluster.local
  addresses: [127.1.0.50]
  ports: [{name: tcp, port: 9000, protocol: TCP}]
  endpoints: [{address: 127.0.0.50, labels: {app: mongo, version: v1}}]
- hostname: redis.default.svc.cluster.local
  addresses: [127.1.0.60]
  ports: [{name: tcp, port: 9000, protocol: TCP}]
  endpoints: [{address: 127.0.0.60, labels: {app: redis, version: v2}}]
"#;

const REVIEWS_RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{headers: {x-tier: {prefix: gold}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{headers: {x-id: {regex: "u[0-9]+"}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {exact: /health}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - match: [{uri: {prefix: /api/}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /split}}]
    route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v3}, weight: 50}
  - match: [{uri: {prefix: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match: [{uri: {prefix: /ratings}}]
    route: [{destination: {host: ratings, subset: v1}}]
"#;

/// What Envoy did with a request: the backend that answered (`reviews
/// v2`), or its own status.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
enum Seen {
    Backend(String),
    Status(u16),
}

/// One request, as explain takes it and as the test sends it.
struct Case {
    url: String,
    headers: Vec<(&'static str, &'static str)>,
    /// Where the client connects (the name's VIP).
    address: &'static str,
    host: &'static str,
    path: &'static str,
    tcp: bool,
}

fn http(address: &'static str, host: &'static str, path: &'static str) -> Case {
    let name = host.split(':').next().unwrap_or(host);
    let port = bookinfo::PORT;
    Case {
        url: format!("http://{name}:{port}{path}"),
        headers: Vec::new(),
        address,
        host,
        path,
        tcp: false,
    }
}

fn reviews(path: &'static str) -> Case {
    http(REVIEWS_VIP, "reviews:9080", path)
}

fn tcp(address: &'static str) -> Case {
    Case {
        url: format!("tcp://{address}"),
        headers: Vec::new(),
        address,
        host: "",
        path: "",
        tcp: true,
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: &'static str) -> Case {
        self.headers.push((name, value));
        self
    }

    fn header_args(&self) -> Vec<String> {
        self.headers
            .iter()
            .flat_map(|(n, v)| ["-H".to_string(), format!("{n}: {v}")])
            .collect()
    }

    fn send(&self, pod: &Pod) -> Seen {
        if self.tcp {
            let reply = pod.tcp_line(self.address, "ping");
            let who = reply
                .split_once(": ")
                .map_or(reply.as_str(), |(who, _)| who);
            return Seen::Backend(who.to_string());
        }
        let mut request = Request::get(self.address, self.host).path(self.path);
        // Host is the request's own (`self.host`); explain takes it as -H.
        for (name, value) in self.headers.iter().filter(|(n, _)| *n != "host") {
            request = request.header(name, value);
        }
        let response = pod.send(&request);
        match response.answer() {
            Some(answer) => Seen::Backend(answer.label()),
            None => Seen::Status(response.status),
        }
    }
}

fn pilotfish_explain(pod: &Pod, args: &[String]) -> (Value, Option<i32>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output: Output = pod
        .ns()
        .command(env!("CARGO_BIN_EXE_pilotfish"), &args)
        .output()
        .expect("run pilotfish explain");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "pilotfish {args:?}: not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (json, output.status.code())
}

fn explain_online(pod: &Pod, case: &Case) -> (Value, Option<i32>) {
    let mut args = vec!["explain".to_string(), case.url.clone()];
    args.extend(case.header_args());
    args.extend(
        [
            "--server",
            HTTP_ADDRESS,
            "--proxy",
            pod.envoy.node_id(),
            "-o",
            "json",
        ]
        .map(String::from),
    );
    pilotfish_explain(pod, &args)
}

/// `reviews v2` for each endpoint of each explained destination (the
/// service's short name and the endpoint's version label), with weights.
fn explained_backends(explanation: &Value) -> Vec<(String, Option<u64>)> {
    let destinations = explanation["outcome"]["destinations"].as_array();
    let mut out = Vec::new();
    for d in destinations.into_iter().flatten() {
        let cluster = d["cluster"].as_str().unwrap_or_default();
        let host = cluster.rsplit('|').next().unwrap_or_default();
        let service = host.split('.').next().unwrap_or_default();
        for e in d["endpoints"].as_array().into_iter().flatten() {
            let version = e["labels"]["version"].as_str().unwrap_or_default();
            out.push((format!("{service} {version}"), d["weight"].as_u64()));
        }
    }
    out
}

/// Checks what Envoy did against the explanation; returns what was seen.
fn assert_agrees(case: &Case, explanation: &Value, code: Option<i32>, seen: &Seen) {
    let what = format!(
        "{} {:?}: Envoy {seen:?}, explain:\n{explanation:#}",
        case.url, case.headers
    );
    let outcome = &explanation["outcome"];
    match seen {
        Seen::Backend(backend) => {
            assert_eq!(outcome["kind"], "forwarded", "{what}");
            let named: BTreeSet<String> = explained_backends(explanation)
                .into_iter()
                .map(|(b, _)| b)
                .collect();
            assert!(
                named.contains(backend),
                "{backend} not among {named:?}: {what}"
            );
            assert_eq!(code, Some(0), "{what}");
        }
        Seen::Status(status) => {
            let explained = match outcome["kind"].as_str() {
                Some("direct_response") => outcome["status"].as_u64(),
                // No virtual host or route: Envoy's 404.
                Some("failed")
                    if outcome["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("404")) =>
                {
                    Some(404)
                }
                _ => None,
            };
            assert_eq!(explained, Some(u64::from(*status)), "{what}");
            assert_eq!(code, Some(1), "{what}");
        }
    }
}

#[test]
fn explain_names_the_backend_envoy_used_for_every_request() {
    let registry = std::fs::read_to_string(support::repo_path("testdata/bookinfo/registry.yaml"))
        .expect("Bookinfo registry")
        + TCP_SERVICES;
    let pod = Pod::builder("explain")
        .registry(&registry)
        .config_from("testdata/bookinfo/config")
        .config(REVIEWS_VS_FILE, REVIEWS_RULES)
        .start();
    bookinfo::wait_served(&pod);
    pod.envoy.wait_listener(&format!("0.0.0.0_{TCP_PORT}"));
    for service in ["mongo", "redis"] {
        let host = format!("{service}.default.svc.cluster.local");
        pod.envoy
            .wait_cluster(&outbound_cluster(TCP_PORT, "", &host), 1);
    }
    let cases = [
        reviews("/"),
        reviews("/").header("end-user", "jason"),
        reviews("/").header("end-user", "Jason"),
        reviews("/").header("end-user", "jason2"),
        reviews("/").header("x-tier", "golden"),
        reviews("/").header("x-tier", "silver"),
        reviews("/").header("x-id", "u42"),
        reviews("/").header("x-id", "u42x"),
        reviews("/health"),
        reviews("/health/deep"),
        reviews("/api/reviews/1"),
        reviews("/apiary"),
        reviews("/api/x").header("end-user", "jason"),
        reviews("/health").header("x-tier", "gold"),
        reviews("/teapot"),
        http(PRODUCTPAGE_VIP, "productpage:9080", "/"),
        http(bookinfo::DETAILS_VIP, "details:9080", "/details/0"),
        http(RATINGS_VIP, "ratings:9080", "/ratings/1"),
        http(RATINGS_VIP, "ratings:9080", "/other"),
        // Host, not the address, picks the virtual host.
        Case {
            url: "http://127.1.0.30:9080/".into(),
            ..http(REVIEWS_VIP, "details:9080", "/")
        }
        .header("host", "details:9080"),
        tcp("127.1.0.50:9000"),
        tcp("127.1.0.60:9000"),
    ];
    let mut compared = 0;
    for case in &cases {
        let (explanation, code) = explain_online(&pod, case);
        for _ in 0..3 {
            assert_agrees(case, &explanation, code, &case.send(&pod));
        }
        compared += 1;
    }

    // The weighted split: every answer is an explained destination, and the
    // weights are the configured ones.
    let split = reviews("/split");
    let (explanation, code) = explain_online(&pod, &split);
    let weights: BTreeSet<(String, Option<u64>)> =
        explained_backends(&explanation).into_iter().collect();
    assert_eq!(
        weights,
        BTreeSet::from([
            ("reviews v1".to_string(), Some(50)),
            ("reviews v3".to_string(), Some(50))
        ]),
        "{explanation:#}"
    );
    let mut seen = BTreeSet::new();
    for _ in 0..40 {
        let answer = split.send(&pod);
        assert_agrees(&split, &explanation, code, &answer);
        seen.insert(answer);
    }
    assert_eq!(seen.len(), 2, "both halves of the split answer: {seen:?}");
    compared += 1;
    println!("explain agreed with Envoy on {compared} distinct requests");
    assert!(compared >= 20);

    // Offline, from the same files and a view like the sidecar's, the
    // answer is the online one.
    let online = explain_online(&pod, &reviews("/").header("end-user", "jason")).0;
    let dir = pod.dir();
    let offline_args: Vec<String> = [
        "explain",
        "http://reviews:9080/",
        "-H",
        "end-user:jason",
        "--config",
        &dir.join("config").to_string_lossy(),
        "--registry-file",
        &dir.join("registry/registry.yaml").to_string_lossy(),
        "--proxy-namespace",
        "default",
        "--proxy-label",
        "app=productpage",
        "-o",
        "json",
    ]
    .map(String::from)
    .to_vec();
    let (offline, code) = pilotfish_explain(&pod, &offline_args);
    assert_eq!(code, Some(0));
    assert_eq!(
        offline["outcome"], online["outcome"],
        "offline:\n{offline:#}\nonline:\n{online:#}"
    );
    let routes = |e: &Value| {
        e["steps"].as_array().map(|s| {
            s.iter()
                .filter(|s| s["kind"] == "route")
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(routes(&offline), routes(&online));

    // The pod's name finds the proxy too, at the default server address.
    let by_pod: Vec<String> = ["explain", "http://reviews:9080/", "-H", "end-user: jason"]
        .into_iter()
        .chain(["--proxy", "explain.default", "-o", "json"])
        .map(String::from)
        .collect();
    let (by_pod, code) = pilotfish_explain(&pod, &by_pod);
    assert_eq!(code, Some(0));
    assert_eq!(by_pod["outcome"], online["outcome"], "{by_pod:#}");
    pod.envoy.assert_no_rejected_updates();
}
