//! Builders and finders shared by the unit tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteConfiguration, VirtualHost, route, route_action,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use pilotfish_crds::ConfigObject;
use pilotfish_model::{Endpoint, Protocol, RegistryKind, Resolution, Service, ServicePort};

use crate::diagnostics::{Diagnostic, DiagnosticKind};
use crate::mesh::MeshState;
use crate::protobuf::unpack;
use crate::proxy::ProxyView;
use crate::resources::Translation;

/// A service; the namespace is taken from Kubernetes-style hosts.
pub fn service(host: &str, vips: &[&str], ports: &[(u16, Protocol)]) -> Service {
    let namespace = crate::hosts::kubernetes_parts(host, "cluster.local")
        .map(|(_, ns)| ns.to_string())
        .unwrap_or_else(|| "default".into());
    Service {
        hostname: host.into(),
        namespace,
        vips: vips.iter().map(|v| v.parse().expect("test VIP")).collect(),
        ports: ports
            .iter()
            .map(|&(port, protocol)| ServicePort {
                name: format!("{}-{port}", protocol.as_str().to_ascii_lowercase()),
                port,
                protocol,
            })
            .collect(),
        registry: RegistryKind::File,
        created: None,
        resolution: Resolution::Static,
        mesh_external: false,
        export_to: Vec::new(),
    }
}

/// A ServiceEntry host resolved by DNS, without addresses, on one TCP port:
/// egress as it is usually declared.
pub fn dns_service_entry(host: &str, port: u16) -> Service {
    Service {
        registry: RegistryKind::ServiceEntry,
        resolution: Resolution::Dns,
        ..service(host, &[], &[(port, Protocol::Tcp)])
    }
}

pub fn created(mut service: Service, timestamp: &str) -> Service {
    service.created = Some(timestamp.into());
    service
}

pub fn endpoint(address: &str, port: u16, service_port: u16, labels: &[(&str, &str)]) -> Endpoint {
    Endpoint {
        address: address.into(),
        port,
        service_port,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        locality: None,
        health: Default::default(),
        weight: None,
    }
}

/// Parses Istio YAML; panics on any load error.
pub fn config(yaml: &str) -> Vec<ConfigObject> {
    let outcome = pilotfish_crds::load_yaml("test.yaml", yaml, "default");
    assert!(
        outcome.errors.is_empty(),
        "config errors: {:?}",
        outcome.errors
    );
    outcome.objects
}

/// A DestinationRule named after `host` with `version`-labelled subsets.
pub fn dr_subsets(host: &str, subsets: &[(&str, &str)]) -> Vec<ConfigObject> {
    let subsets: Vec<String> = subsets
        .iter()
        .map(|(name, version)| format!("{{name: {name}, labels: {{version: {version}}}}}"))
        .collect();
    config(&format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {host}, namespace: default}}\nspec: {{host: {host}, subsets: [{}]}}\n",
        subsets.join(", ")
    ))
}

pub fn mesh(
    services: Vec<Service>,
    endpoints: Vec<(&str, Vec<Endpoint>)>,
    config: &[ConfigObject],
) -> MeshState {
    MeshState::of(
        services,
        endpoints
            .into_iter()
            .map(|(h, eps)| (h.to_string(), eps))
            .collect(),
        config.to_vec(),
    )
}

/// A mesh of one service on one port, with no endpoints or config.
pub fn one_service_mesh(host: &str, vips: &[&str], port: u16, protocol: Protocol) -> MeshState {
    mesh(vec![service(host, vips, &[(port, protocol)])], vec![], &[])
}

pub fn sidecar(namespace: &str) -> ProxyView {
    ProxyView {
        namespace: namespace.into(),
        ..Default::default()
    }
}

/// A sidecar without traffic interception (`InterceptionMode::None`).
pub fn sidecar_without_interception(namespace: &str) -> ProxyView {
    ProxyView {
        interception: crate::proxy::InterceptionMode::None,
        ..sidecar(namespace)
    }
}

/// A sidecar in `default` whose workload serves `ports`.
pub fn with_inbound(ports: &[(u16, Protocol)]) -> ProxyView {
    ProxyView {
        inbound: ports
            .iter()
            .map(|&(port, protocol)| crate::InboundPort { port, protocol })
            .collect(),
        ..sidecar("default")
    }
}

pub fn sidecar_with_labels(namespace: &str, labels: &[(&str, &str)]) -> ProxyView {
    ProxyView {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..sidecar(namespace)
    }
}

/// A gateway proxy (`router`) in `namespace` with `labels`.
pub fn gateway_proxy(namespace: &str, labels: &[(&str, &str)]) -> ProxyView {
    ProxyView {
        kind: crate::proxy::ProxyKind::Router,
        interception: crate::proxy::InterceptionMode::None,
        ..sidecar_with_labels(namespace, labels)
    }
}

pub fn translate_for(mesh: &MeshState, proxy: &ProxyView) -> Translation {
    crate::translate(mesh, proxy)
}

pub fn cluster_named<'t>(t: &'t Translation, name: &str) -> &'t Cluster {
    let found = t.resources.clusters.iter().find(|c| c.name == name);
    found.unwrap_or_else(|| panic!("no cluster {name}; have {:?}", cluster_names(t)))
}

pub fn cluster_names(t: &Translation) -> Vec<&str> {
    t.resources
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .collect()
}

pub fn load_assignment_named<'t>(t: &'t Translation, name: &str) -> &'t ClusterLoadAssignment {
    let found = t
        .resources
        .endpoints
        .iter()
        .find(|c| c.cluster_name == name);
    found.unwrap_or_else(|| panic!("no load assignment {name}"))
}

pub fn listener_named<'t>(t: &'t Translation, name: &str) -> &'t Listener {
    let found = t.resources.listeners.iter().find(|l| l.name == name);
    found.unwrap_or_else(|| panic!("no listener {name}"))
}

pub fn route_config_named<'t>(t: &'t Translation, name: &str) -> &'t RouteConfiguration {
    let found = t.resources.routes.iter().find(|r| r.name == name);
    found.unwrap_or_else(|| panic!("no route configuration {name}"))
}

pub fn virtual_host_named<'r>(rc: &'r RouteConfiguration, name: &str) -> &'r VirtualHost {
    let found = rc.virtual_hosts.iter().find(|v| v.name == name);
    found.unwrap_or_else(|| panic!("no virtual host {name} in {}", rc.name))
}

pub fn endpoint_address(lb: &LbEndpoint) -> String {
    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
        panic!("endpoint without address");
    };
    let Some(address::Address::SocketAddress(sa)) =
        ep.address.as_ref().and_then(|a| a.address.clone())
    else {
        panic!("not a socket address");
    };
    let Some(socket_address::PortSpecifier::PortValue(port)) = sa.port_specifier else {
        panic!("no port");
    };
    format!("{}:{port}", sa.address)
}

pub fn typed_config(filter: &Filter) -> &envoy_types::pb::google::protobuf::Any {
    match &filter.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => any,
        _ => panic!("filter {} has no typed config", filter.name),
    }
}

pub fn hcm(chain: &FilterChain) -> HttpConnectionManager {
    let filter = &chain.filters[0];
    assert_eq!(filter.name, crate::names::HTTP_CONNECTION_MANAGER);
    unpack(typed_config(filter)).expect("HttpConnectionManager")
}

/// The clusters and weights of a tcp_proxy chain (one cluster: weight 0),
/// or `None` for other chains.
pub fn tcp_proxy_targets(chain: &FilterChain) -> Option<Vec<(String, u32)>> {
    let filter = chain.filters.first()?;
    let proxy: TcpProxy = unpack(typed_config(filter))?;
    match proxy.cluster_specifier? {
        tcp_proxy::ClusterSpecifier::Cluster(c) => Some(vec![(c, 0)]),
        tcp_proxy::ClusterSpecifier::WeightedClusters(w) => {
            Some(w.clusters.into_iter().map(|c| (c.name, c.weight)).collect())
        }
    }
}

/// The cluster a tcp_proxy chain forwards to, or `None` for other chains.
pub fn tcp_proxy_cluster(chain: &FilterChain) -> Option<String> {
    let filter = chain.filters.first()?;
    let proxy: TcpProxy = unpack(typed_config(filter))?;
    match proxy.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => Some(c),
        _ => None,
    }
}

pub fn route_action(route: &Route) -> &envoy_types::pb::envoy::config::route::v3::RouteAction {
    match &route.action {
        Some(route::Action::Route(action)) => action,
        other => panic!("not a route action: {other:?}"),
    }
}

pub fn route_cluster(route: &Route) -> &str {
    match &route_action(route).cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => c,
        other => panic!("not a single cluster: {other:?}"),
    }
}

pub fn diagnostics_of(t: &Translation, kind: DiagnosticKind) -> Vec<&Diagnostic> {
    t.diagnostics.iter().filter(|d| d.kind == kind).collect()
}

/// Asserts exactly one diagnostic of `kind`, naming `object` and `field`.
pub fn assert_one_diagnostic(t: &Translation, kind: DiagnosticKind, object: &str, field: &str) {
    let found = diagnostics_of(t, kind);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].object, object);
    assert_eq!(found[0].field.as_deref(), Some(field));
}

/// What Envoy would NACK: duplicate resource names, duplicate filter chain
/// matches within a listener, duplicate domains within a route configuration,
/// and TCP chains without a destination match.
pub fn assert_envoy_invariants(t: &Translation) {
    let r = &t.resources;
    assert_sorted_unique(r.clusters.iter().map(|c| c.name.as_str()), "clusters");
    assert_sorted_unique(
        r.endpoints.iter().map(|c| c.cluster_name.as_str()),
        "endpoints",
    );
    assert_sorted_unique(r.listeners.iter().map(|c| c.name.as_str()), "listeners");
    assert_sorted_unique(r.routes.iter().map(|c| c.name.as_str()), "routes");
    // Gateways have neither virtualOutbound nor loopback listeners (those of
    // a sidecar without interception); a TCP server's one chain takes every
    // connection of its port, as it should.
    let sidecar = r.listeners.iter().any(|l| {
        l.name == crate::names::VIRTUAL_OUTBOUND_LISTENER || l.name.starts_with("127.0.0.1_")
    });
    for listener in &r.listeners {
        assert_unique_chain_matches(listener, sidecar);
    }
    for rc in &r.routes {
        let mut seen = std::collections::BTreeSet::new();
        for vh in &rc.virtual_hosts {
            for domain in &vh.domains {
                assert!(
                    seen.insert(domain.to_ascii_lowercase()),
                    "duplicate domain {domain} in route config {}",
                    rc.name
                );
            }
        }
    }
}

fn assert_sorted_unique<'a>(names: impl Iterator<Item = &'a str>, what: &str) {
    let names: Vec<&str> = names.collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "{what} must be sorted and unique");
}

/// Envoy expands each chain's match into (destination range × SNI × ALPN)
/// keys; any key claimed by two chains gets the listener rejected. It also
/// picks the destination range first and never backtracks, so a range
/// some chain narrows by SNI or ALPN needs a chain taking the rest.
fn assert_unique_chain_matches(listener: &Listener, sidecar: bool) {
    let mut seen = std::collections::BTreeSet::new();
    let mut narrowed = std::collections::BTreeSet::new();
    let mut complete = std::collections::BTreeSet::new();
    for chain in &listener.filter_chains {
        let m = chain.filter_chain_match.clone().unwrap_or_default();
        // Inbound passthrough over mesh TLS (STRICT) is narrowed by ALPN.
        let mesh_passthrough = listener.name
            == crate::emit::sidecar::inbound::VIRTUAL_INBOUND_LISTENER
            && !m.application_protocols.is_empty();
        if sidecar
            && tcp_proxy_targets(chain).is_some()
            && listener.name != crate::names::VIRTUAL_OUTBOUND_LISTENER
            && !mesh_passthrough
        {
            assert!(
                !m.prefix_ranges.is_empty()
                    || !m.server_names.is_empty()
                    || m.destination_port.is_some(),
                "TCP chain {} of {} matches every destination",
                chain.name,
                listener.name
            );
        }
        let any = || vec!["*".to_string()];
        let ranges: Vec<String> = if m.prefix_ranges.is_empty() {
            any()
        } else {
            m.prefix_ranges
                .iter()
                .map(|r| format!("{}/{:?}", r.address_prefix, r.prefix_len))
                .collect()
        };
        let alpns = if m.application_protocols.is_empty() {
            any()
        } else {
            m.application_protocols.clone()
        };
        let server_names = if m.server_names.is_empty() {
            any()
        } else {
            m.server_names
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect()
        };
        for range in &ranges {
            if m.application_protocols.is_empty() && m.server_names.is_empty() {
                complete.insert(range.clone());
            } else {
                narrowed.insert(range.clone());
            }
            for alpn in &alpns {
                for server_name in &server_names {
                    let key = (
                        m.destination_port.as_ref().map(|p| p.value),
                        range.clone(),
                        server_name.clone(),
                        alpn.clone(),
                        m.transport_protocol.clone(),
                    );
                    assert!(
                        seen.insert(key.clone()),
                        "duplicate filter chain match {key:?} in {}",
                        listener.name
                    );
                }
            }
        }
    }
    for range in narrowed.iter().filter(|r| *r != "*") {
        assert!(
            complete.contains(range),
            "{}: destination {range} has only SNI/ALPN-restricted chains; other traffic to it would be dropped",
            listener.name
        );
    }
}

pub const REVIEWS: &str = "reviews.default.svc.cluster.local";

/// Bookinfo's services on 9080 with reviews v1..v3 and their DestinationRule,
/// plus `extra` config.
pub fn bookinfo(extra: &str) -> MeshState {
    let reviews_eps = (1..=3)
        .map(|v| {
            endpoint(
                &format!("10.1.0.{v}"),
                9080,
                9080,
                &[("version", &format!("v{v}"))],
            )
        })
        .collect();
    let mut objects = dr_subsets("reviews", &[("v1", "v1"), ("v2", "v2"), ("v3", "v3")]);
    if !extra.trim().is_empty() {
        objects.extend(config(extra));
    }
    mesh(
        vec![
            service(
                "productpage.default.svc.cluster.local",
                &["10.0.0.1"],
                &[(9080, Protocol::Http)],
            ),
            service(
                "details.default.svc.cluster.local",
                &["10.0.0.2"],
                &[(9080, Protocol::Http)],
            ),
            service(
                "ratings.default.svc.cluster.local",
                &["10.0.0.3"],
                &[(9080, Protocol::Http)],
            ),
            service(REVIEWS, &["10.0.0.4"], &[(9080, Protocol::Http)]),
        ],
        vec![(REVIEWS, reviews_eps)],
        &objects,
    )
}

/// The outbound cluster of one reviews subset on port 9080.
pub fn reviews_cluster(subset: &str) -> String {
    format!("outbound|9080|{subset}|{REVIEWS}")
}

/// The routes of reviews' virtual host in route configuration 9080.
pub fn reviews_routes(t: &Translation) -> Vec<Route> {
    reviews_virtual_host(t).routes.clone()
}

/// Reviews' virtual host in route configuration 9080.
pub fn reviews_virtual_host(t: &Translation) -> &VirtualHost {
    virtual_host_named(
        route_config_named(t, "9080"),
        "reviews.default.svc.cluster.local:9080",
    )
}

const ROUTING: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 5}}}
    corsPolicy: {allowOrigins: [{prefix: "https://"}]}
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v3}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-late, namespace: default, creationTimestamp: "2024-05-01T00:00:00Z"}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews, subset: nope}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}, tls: {mode: SIMPLE}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: default}
spec:
  host: details
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: session, ttl: 60s, path: /}, maglev: {tableSize: 65537}}}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 250ms, tcpKeepalive: {probes: 3, time: 60s, interval: 10s}}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 20, maxRequestsPerConnection: 5, maxRetries: 1, idleTimeout: 30s, h2UpgradePolicy: UPGRADE, maxConcurrentStreams: 100}
    outlierDetection: {consecutiveGatewayErrors: 3, consecutiveLocalOriginFailures: 2, splitExternalLocalOriginErrors: true, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50, minHealthPercent: 30}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: LEAST_CONN}
  subsets:
  - {name: v1, labels: {version: v1}, trafficPolicy: {connectionPool: {http: {useClientProtocol: true}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - name: everything
    match: [{name: api, uri: {regex: "/api/v[0-9]+/.*"}, ignoreUriCase: true, method: {exact: GET}, queryParams: {debug: {exact: "1"}}, withoutHeaders: {x-skip: {}}}]
    fault:
      delay: {fixedDelay: 7s, percentage: {value: 50}}
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 10}}
    corsPolicy: {allowOrigins: [{regex: "https://.*[.]example[.]com"}], allowOrigin: ["https://a.example.com"], allowMethods: [GET, POST], allowHeaders: [x-a], exposeHeaders: [x-b], maxAge: 24h, allowCredentials: true, unmatchedPreflights: IGNORE}
    headers:
      request: {set: {x-env: test}, add: {x-trace: "1"}, remove: [x-debug]}
      response: {add: {x-served-by: mesh}, remove: [server]}
    rewrite: {uriRegexRewrite: {match: "^/api/(.*)", rewrite: "/\\1"}, authority: ratings.internal}
    retries: {attempts: 4, perTryTimeout: 2s, retryOn: "5xx,503", retryRemoteLocalities: true, retryIgnorePreviousHosts: false, backoff: 25ms}
    timeout: 10s
    mirrors: [{destination: {host: details}, percentage: {value: 5}}]
    mirror: {host: details}
    mirror_percent: 20
    route:
    - {destination: {host: ratings}, weight: 90, headers: {request: {set: {x-split: a}}}}
    - {destination: {host: details}, weight: 10}
  - match: [{uri: {prefix: /old}}]
    redirect: {authority: new.example.com, port: 8080, scheme: https, redirectCode: 308, prefixRewrite: /new}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: short and stout}}
  - route: [{destination: {host: ratings}}]
"#;

/// A mesh exercising every listener and route feature at once.
/// `m` with the mesh's access log on `/dev/stdout` and Zipkin tracing to
/// `zipkin.istio-system:9411`.
pub fn with_access_log_and_tracing(mut m: MeshState) -> MeshState {
    m.mesh.access_log_file = Some("/dev/stdout".into());
    m.mesh.zipkin = Some(crate::ZipkinCollector {
        host: "zipkin.istio-system".into(),
        port: 9411,
    });
    m
}

pub fn busy_mesh() -> MeshState {
    let mut m = bookinfo(ROUTING);
    Arc::make_mut(&mut m.services).extend([
        service("db-a.service.consul", &[], &[(5432, Protocol::Tcp)]),
        service("db-b.service.consul", &[], &[(5432, Protocol::Tcp)]),
        created(
            service(
                "old.default.svc.cluster.local",
                &["10.0.0.9"],
                &[(7000, Protocol::Unknown)],
            ),
            "2024-01-01T00:00:00Z",
        ),
        created(
            service(
                "new.default.svc.cluster.local",
                &["10.0.0.9"],
                &[(7000, Protocol::Tcp)],
            ),
            "2024-02-01T00:00:00Z",
        ),
    ]);
    m.endpoints.insert(
        "db-a.service.consul".into(),
        Arc::new(vec![
            endpoint("10.5.0.2", 5432, 5432, &[]),
            endpoint("10.5.0.1", 5432, 5432, &[]),
        ]),
    );
    let mut dns = service(
        "api.example.com",
        &[],
        &[(443, Protocol::Tls), (80, Protocol::Http)],
    );
    dns.resolution = Resolution::Dns;
    let mut any = service("any.example.com", &[], &[(443, Protocol::Tls)]);
    any.resolution = Resolution::Passthrough;
    let grpc = service(
        "grpc.default.svc.cluster.local",
        &["10.0.0.20"],
        &[(50051, Protocol::Grpc)],
    );
    Arc::make_mut(&mut m.services).extend([dns, any, grpc]);
    m.endpoints.insert(
        "db-b.service.consul".into(),
        Arc::new(vec![endpoint("10.6.0.1", 5432, 5432, &[])]),
    );
    m
}

/// Malformed and extreme input: every rule of its VirtualService is invalid.
pub fn odd_mesh() -> MeshState {
    let mut weird = service(
        "Weird.Example.COM",
        &["0.0.0.0", "::"],
        &[(0, Protocol::Http), (65535, Protocol::Unknown)],
    );
    weird.export_to = vec!["*".into()];
    let empty = service("", &[], &[(80, Protocol::Tcp)]);
    let eps = vec![
        endpoint("not an address", 1, 0, &[]),
        endpoint("10.9.9.9", 0, 65535, &[]),
        Endpoint {
            weight: Some(0),
            locality: Some("a/b/c/d".into()),
            ..endpoint("fd00::9", 80, 0, &[])
        },
    ];
    let vs = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: odd, namespace: default}
spec:
  hosts: ["*", "weird.example.com"]
  http:
  - match: [{uri: {regex: "(("}}]
    route: [{destination: {host: x}}]
  - route: [{destination: {host: "y", port: {number: 99999}}}]
  - route: [{destination: {host: a}, weight: -5}, {destination: {host: b}}]
  - route: [{destination: {host: a}, weight: 0}, {destination: {host: b}, weight: 0}]
  - {}
  - redirect: {redirectCode: 999}
  - directResponse: {status: 42}
  - headers: {request: {set: {":path": /x}}}
    route: [{destination: {host: a}}]
  - fault: {abort: {grpcStatus: NOPE}}
    route: [{destination: {host: a}}]
  - match: [{headers: {"bad name": {exact: x}}}]
    route: [{destination: {host: a}}]
  - match: [{uri: {regex: ""}}]
    route: [{destination: {host: a}}]
  - match: [{queryParams: {"": {exact: x}}}]
    route: [{destination: {host: a}}]
  - match: [{headers: {x-any: {prefix: ""}}, uri: {prefix: ""}}]
    headers: {request: {set: {x-a: "two\nlines"}}}
    route: [{destination: {host: a}}]
  - match: [{headers: {x-any: {prefix: ""}}, uri: {prefix: ""}}]
    route: [{destination: {host: a}}]
"#;
    mesh(
        vec![weird, empty],
        vec![("Weird.Example.COM", eps)],
        &config(vs),
    )
}

/// A tiny deterministic generator (xorshift) for randomized meshes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A random mesh over small pools of names, addresses and ports, so that
/// shared VIPs, shared ports and conflicting config are frequent.
pub fn random_mesh(seed: u64) -> MeshState {
    let mut rng = Rng::new(seed);
    let hosts = [
        "a",
        "b",
        "c",
        "d",
        "e.service.consul",
        "f.service.consul",
        "api.example.com",
    ];
    let vips = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1"];
    let ports = [80, 443, 9080, 5432, 7000, 15001];
    let protocols = [
        Protocol::Http,
        Protocol::Http2,
        Protocol::Grpc,
        Protocol::Tcp,
        Protocol::Tls,
        Protocol::Unknown,
    ];
    let mut services = Vec::new();
    let mut endpoints = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        if rng.below(4) == 0 {
            continue;
        }
        let fqdn = if host.contains('.') {
            host.to_string()
        } else {
            format!("{host}.default.svc.cluster.local")
        };
        let vip_count = rng.below(3);
        let my_vips: Vec<&str> = (0..vip_count).map(|_| *rng.pick(&vips)).collect();
        let port_count = 1 + rng.below(2);
        let mut my_ports: Vec<(u16, Protocol)> = (0..port_count)
            .map(|_| (*rng.pick(&ports), *rng.pick(&protocols)))
            .collect();
        my_ports.sort_by_key(|p| p.0);
        my_ports.dedup_by_key(|p| p.0);
        let mut svc = created(
            service(&fqdn, &my_vips, &my_ports),
            &format!("2024-01-0{}T00:00:00Z", 1 + rng.below(3)),
        );
        svc.resolution = *rng.pick(&[
            Resolution::Static,
            Resolution::Static,
            Resolution::Dns,
            Resolution::Passthrough,
        ]);
        let eps: Vec<Endpoint> = (0..rng.below(4))
            .map(|j| {
                let (port, _) = *rng.pick(&my_ports);
                let mut ep = endpoint(
                    &format!("10.1.{i}.{}", j % 2),
                    port,
                    port,
                    &[("version", *rng.pick(&["v1", "v2"]))],
                );
                ep.locality = rng.pick(&[None, Some("r/z".to_string())]).clone();
                ep
            })
            .collect();
        endpoints.push((fqdn.clone(), eps));
        services.push(svc);
    }
    let mut yaml = String::new();
    for (i, host) in hosts.iter().enumerate().filter(|_| rng.below(2) == 0) {
        yaml += &format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: dr{i}, namespace: default}}\nspec: {{host: \"{host}\", subsets: [{{name: v1, labels: {{version: v1}}}}]}}\n---\n"
        );
    }
    for i in 0..rng.below(4) {
        let host = rng.pick(&hosts);
        let target = rng.pick(&hosts);
        let subset = rng.pick(&["v1", "v2"]);
        let port = rng.pick(&ports);
        let header = rng.pick(&[
            "{}",
            "{headers: {x-user: {exact: jason}}}",
            "{uri: {prefix: /api}}",
            "{port: 9080}",
        ]);
        yaml += &format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs{i}, namespace: default, creationTimestamp: \"2024-0{}-01T00:00:00Z\"}}\nspec:\n  hosts: [\"{host}\"]\n  http:\n  - match: [{header}]\n    route: [{{destination: {{host: \"{target}\", subset: {subset}}}, weight: 70}}, {{destination: {{host: \"{target}\", port: {{number: {port}}}}}, weight: 30}}]\n  - route: [{{destination: {{host: \"{target}\"}}}}]\n---\n",
            1 + rng.below(5)
        );
    }
    // TCP and TLS rules with overlapping subnets and SNIs.
    for i in 0..rng.below(4) {
        let host = rng.pick(&hosts);
        let target = rng.pick(&hosts);
        let subnets = rng.pick(&[
            "[]",
            "[10.0.0.0/8]",
            "[10.0.0.1, 10.0.0.0/30]",
            "[10.1.0.0/16, \"fd00::/64\"]",
        ]);
        let port = rng.pick(&ports);
        let sni = rng.pick(&["a.example.com", "\"*.example.com\"", "api.example.com"]);
        yaml += &format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: l4-{i}, namespace: default, creationTimestamp: \"2024-0{}-01T00:00:00Z\"}}\nspec:\n  hosts: [\"{host}\"]\n  tls:\n  - match: [{{sniHosts: [{sni}, b.example.com], destinationSubnets: {subnets}}}]\n    route: [{{destination: {{host: \"{target}\", subset: v1}}, weight: 60}}, {{destination: {{host: \"{target}\", port: {{number: {port}}}}}, weight: 40}}]\n  tcp:\n  - match: [{{destinationSubnets: {subnets}}}, {{port: {port}}}]\n    route: [{{destination: {{host: \"{target}\", subset: v1}}, weight: 60}}, {{destination: {{host: \"{target}\"}}, weight: 40}}]\n  - route: [{{destination: {{host: \"{target}\"}}}}]\n---\n",
            1 + rng.below(5)
        );
    }
    let endpoints: Vec<(&str, Vec<Endpoint>)> = endpoints
        .iter()
        .map(|(h, e)| (h.as_str(), e.clone()))
        .collect();
    mesh(services, endpoints, &config(&yaml))
}
