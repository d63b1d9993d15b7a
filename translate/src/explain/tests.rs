//! The engine on testdata/bookinfo (its registry file and config, as the
//! server loads them) seen from productpage's sidecar, plus two TCP
//! services sharing a port and extra VirtualServices per case.

use std::collections::BTreeMap;

use pilotfish_crds::Kind;
use pilotfish_model::{Endpoint, Protocol, Service};

use super::*;
use crate::test_support::{endpoint, service};
use crate::{InboundPort, MeshState, ProxyView};

const TCP_PORT: u16 = 9000;

fn repo_file(relative: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Two TCP services on one port, told apart by VIP.
fn tcp_services() -> (Vec<Service>, Vec<(String, Vec<Endpoint>)>) {
    let db = |name: &str, vip: &str, ip: &str| {
        let host = format!("{name}.default.svc.cluster.local");
        let eps = vec![endpoint(
            ip,
            TCP_PORT,
            TCP_PORT,
            &[("app", name), ("version", "v1")],
        )];
        (
            service(&host, &[vip], &[(TCP_PORT, Protocol::Tcp)]),
            (host, eps),
        )
    };
    let (a, a_eps) = db("mongo", "127.1.0.50", "127.0.0.50");
    let (b, b_eps) = db("redis", "127.1.0.60", "127.0.0.60");
    (vec![a, b], vec![a_eps, b_eps])
}

/// Bookinfo with its config, the reviews VirtualService replaced by
/// `reviews_vs` when given, and the TCP services.
fn mesh(reviews_vs: Option<&str>) -> MeshState {
    let registry = pilotfish_registries::file::parse_registry_file(
        "registry.yaml",
        &repo_file("testdata/bookinfo/registry.yaml"),
    )
    .expect("registry parses")
    .snapshot;
    let mut files = vec![(
        "destination-rules.yaml",
        repo_file("testdata/bookinfo/config/destination-rules.yaml"),
    )];
    files.push(match reviews_vs {
        Some(vs) => ("reviews.yaml", vs.to_string()),
        None => (
            "reviews-jason-v2.yaml",
            repo_file("testdata/bookinfo/config/reviews-jason-v2.yaml"),
        ),
    });
    let mut objects = Vec::new();
    for (name, text) in files {
        let loaded = pilotfish_crds::load_yaml(name, &text, "default");
        assert!(loaded.errors.is_empty(), "{name}: {:?}", loaded.errors);
        objects.extend(loaded.objects);
    }
    let (tcp, tcp_endpoints) = tcp_services();
    let mut services = registry.services;
    services.extend(tcp);
    let mut endpoints = registry.endpoints;
    endpoints.extend(tcp_endpoints);
    MeshState::of(services, endpoints, objects)
}

fn productpage() -> ProxyView {
    ProxyView {
        namespace: "default".into(),
        labels: BTreeMap::from([
            ("app".to_string(), "productpage".to_string()),
            ("version".to_string(), "v1".to_string()),
        ]),
        inbound: vec![InboundPort {
            port: 9080,
            protocol: Protocol::Http,
        }],
        ..Default::default()
    }
}

/// Explains `url` with `headers` for productpage; names resolve to VIPs.
fn explain_in(mesh: &MeshState, url: &str, headers: &[&str]) -> Explanation {
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let request = ExplainRequest::parse(url, &headers).expect("request parses");
    let translation = crate::translate(mesh, &productpage());
    explain_in_mesh(&translation.resources, mesh, "default", request)
}

fn destinations(e: &Explanation) -> Vec<(String, Option<u32>)> {
    match &e.outcome {
        Outcome::Forwarded { destinations } => destinations
            .iter()
            .map(|d| (d.cluster.clone(), d.weight))
            .collect(),
        other => panic!("not forwarded: {other:?}\n{e}"),
    }
}

fn reviews(subset: &str) -> String {
    format!("outbound|9080|{subset}|reviews.default.svc.cluster.local")
}

fn step(e: &Explanation, kind: StepKind) -> &Step {
    let found = e.steps.iter().rev().find(|s| s.kind == kind);
    found.unwrap_or_else(|| panic!("no {kind:?} step in\n{e}"))
}

fn vs(rules: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n{rules}"
    )
}

#[test]
fn http_by_name_walks_virtual_outbound_port_listener_route_and_subset_endpoints_with_labels() {
    let e = explain_in(&mesh(None), "http://reviews:9080/", &[]);
    let listeners: Vec<&str> = e
        .steps
        .iter()
        .filter(|s| s.kind == StepKind::Listener)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(listeners, ["virtualOutbound", "0.0.0.0_9080"], "{e}");
    assert_eq!(step(&e, StepKind::FilterChain).name, "http");
    assert_eq!(step(&e, StepKind::RouteConfiguration).name, "9080");
    assert_eq!(
        step(&e, StepKind::VirtualHost).name,
        "reviews.default.svc.cluster.local:9080"
    );
    let route = step(&e, StepKind::Route);
    assert_eq!(route.config[0].kind, Kind::VirtualService);
    assert_eq!(
        (
            route.config[0].namespace.as_str(),
            route.config[0].name.as_str()
        ),
        ("default", "reviews")
    );
    assert_eq!(route.not_matched.len(), 1, "{e}");
    assert!(
        route.not_matched[0].reason.contains("end-user is missing"),
        "{e}"
    );
    assert_eq!(destinations(&e), [(reviews("v1"), None)]);
    let Outcome::Forwarded { destinations } = &e.outcome else {
        unreachable!()
    };
    let endpoint = &destinations[0].endpoints[0];
    assert_eq!(
        (endpoint.address.as_str(), endpoint.port),
        ("127.0.0.31", 9080)
    );
    assert_eq!(
        endpoint.labels.get("version").map(String::as_str),
        Some("v1")
    );
    assert_eq!(destinations[0].config[0].kind, Kind::DestinationRule, "{e}");
    assert!(e.succeeded);
    let text = e.to_string();
    assert!(
        text.contains("from VirtualService default/reviews"),
        "{text}"
    );
    assert!(
        text.contains("127.0.0.31:9080 HEALTHY app=reviews,version=v1"),
        "{text}"
    );
}

#[test]
fn exact_header_match_takes_the_jason_route_and_other_values_fall_through() {
    let m = mesh(None);
    let jason = explain_in(&m, "http://reviews:9080/", &["end-user: jason"]);
    assert_eq!(destinations(&jason), [(reviews("v2"), None)]);
    assert!(step(&jason, StepKind::Route).not_matched.is_empty());
    let other = explain_in(&m, "http://reviews:9080/", &["end-user:Jason"]);
    assert_eq!(destinations(&other), [(reviews("v1"), None)]);
    let reason = &step(&other, StepKind::Route).not_matched[0].reason;
    assert!(
        reason.contains("\"Jason\" does not match exact \"jason\""),
        "{reason}"
    );
}

#[test]
fn header_prefix_regex_and_without_headers_and_path_and_query_matches() {
    let rules = "  - match: [{headers: {x-tier: {prefix: gold}}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - match: [{headers: {x-id: {regex: \"u[0-9]+\"}}}]\n    route: [{destination: {host: reviews, subset: v3}}]\n  - match: [{uri: {exact: /health}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - match: [{uri: {prefix: /api/}, queryParams: {debug: {exact: \"1\"}}}]\n    route: [{destination: {host: reviews, subset: v3}}]\n  - match: [{withoutHeaders: {x-plain: {}}, uri: {prefix: /fancy}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n";
    let m = mesh(Some(&vs(rules)));
    let cases: [(&str, &[&str], &str); 9] = [
        ("/", &["x-tier: golden"], "v2"),
        ("/", &["x-tier: silver"], "v1"),
        ("/", &["x-id: u42"], "v3"),
        ("/", &["x-id: u42x"], "v1"),
        ("/health", &[], "v2"),
        ("/health/x", &[], "v1"),
        ("/api/x?debug=1", &[], "v3"),
        ("/api/x?debug=2", &[], "v1"),
        ("/fancy", &["x-plain: 1"], "v1"),
    ];
    for (path, headers, subset) in cases {
        let e = explain_in(&m, &format!("http://reviews:9080{path}"), headers);
        assert_eq!(
            destinations(&e),
            [(reviews(subset), None)],
            "{path} {headers:?}\n{e}"
        );
    }
    let e = explain_in(&m, "http://reviews:9080/fancy", &[]);
    assert_eq!(destinations(&e), [(reviews("v2"), None)], "{e}");
    assert_eq!(step(&e, StepKind::Route).not_matched.len(), 4, "{e}");
}

#[test]
fn weighted_split_names_each_subset_with_its_weight() {
    let rules = "  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 50}\n    - {destination: {host: reviews, subset: v3}, weight: 50}\n";
    let e = explain_in(&mesh(Some(&vs(rules))), "http://reviews:9080/", &[]);
    assert_eq!(
        destinations(&e),
        [(reviews("v1"), Some(50)), (reviews("v3"), Some(50))]
    );
    let text = e.to_string();
    assert!(text.contains("weight 50 of 100"), "{text}");
}

#[test]
fn direct_response_is_answered_by_envoy() {
    let rules = "  - directResponse: {status: 418, body: {string: teapot}}\n";
    let e = explain_in(&mesh(Some(&vs(rules))), "http://reviews:9080/", &[]);
    assert_eq!(
        e.outcome,
        Outcome::DirectResponse {
            status: 418,
            body: Some("teapot".into())
        }
    );
    assert!(!e.succeeded);
}

#[test]
fn an_unknown_host_on_a_known_port_passes_through_by_the_catch_all_virtual_host() {
    let e = explain_in(
        &mesh(None),
        "http://10.9.9.9:9080/",
        &["host: elsewhere.example"],
    );
    assert!(
        matches!(&e.outcome, Outcome::Passthrough { address, .. } if address == "10.9.9.9:9080"),
        "{e}"
    );
    assert_eq!(
        step(&e, StepKind::VirtualHost).notes[0],
        "domain \"*\" matches Host \"elsewhere.example\""
    );
}

#[test]
fn tcp_services_sharing_a_port_are_told_apart_by_destination_ip() {
    let m = mesh(None);
    for (vip, host) in [("127.1.0.50", "mongo"), ("127.1.0.60", "redis")] {
        let e = explain_in(&m, &format!("tcp://{vip}:{TCP_PORT}"), &[]);
        let cluster = format!("outbound|{TCP_PORT}||{host}.default.svc.cluster.local");
        assert_eq!(destinations(&e), [(cluster, None)], "{e}");
        let chain = step(&e, StepKind::FilterChain);
        assert!(
            chain
                .not_matched
                .iter()
                .any(|m| m.reason.contains("is not in")),
            "{e}"
        );
        let Outcome::Forwarded { destinations } = &e.outcome else {
            unreachable!()
        };
        assert_eq!(destinations[0].endpoints[0].labels["app"], host);
    }
}

#[test]
fn tcp_to_a_port_without_listener_stays_on_virtual_outbound_and_passes_through() {
    let e = explain_in(&mesh(None), "tcp://10.9.9.9:7777", &[]);
    assert_eq!(e.steps[0].name, "virtualOutbound");
    assert!(matches!(e.outcome, Outcome::Passthrough { .. }), "{e}");
    assert!(e.succeeded);
}

#[test]
fn raw_tcp_to_an_http_only_port_takes_the_default_chain_to_the_port_owner() {
    // The HTTP chain needs the inspector to detect HTTP; raw bytes do not.
    let e = explain_in(&mesh(None), "tcp://127.1.0.30:9080", &[]);
    let chain = step(&e, StepKind::FilterChain);
    assert!(chain.notes[0].contains("default chain"), "{e}");
    assert!(
        chain.not_matched[0].reason.contains("not detected as HTTP"),
        "{e}"
    );
}

#[test]
fn explanations_serialize_with_steps_and_outcome() {
    let e = explain_in(&mesh(None), "http://reviews:9080/", &["end-user: jason"]);
    let json = serde_json::to_value(&e).expect("serializes");
    assert_eq!(json["outcome"]["kind"], "forwarded");
    assert_eq!(
        json["outcome"]["destinations"][0]["endpoints"][0]["labels"]["version"],
        "v2"
    );
    assert_eq!(json["steps"][0]["kind"], "listener");
}
