//! LDS for sidecars: `virtualOutbound` (15001), which hands intercepted
//! connections to the per-port `0.0.0.0_<port>` listeners. A sidecar
//! without interception gets no `virtualOutbound` (nothing is redirected to
//! it) and per-port listeners bound on loopback, `127.0.0.1_<port>`, which
//! the application dials itself (Istio's `InterceptionNone`). Gateways:
//! [`crate::emit::gateway::gateway_listeners`].

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};

use crate::diagnostics::Diagnostic;
use crate::emit::context::Context;
use crate::emit::envoy::filters;
use crate::emit::sidecar::inbound;
use crate::emit::sidecar::listener_matches::{self, AddressedService, Handling, MatchOn, PortPlan};
use crate::emit::sidecar::tcp_routes::L4Chain;
use crate::names;
use crate::protobuf;
use crate::proxy::ProxyKind;

/// How long a sniffed port (any port with an HTTP or unknown-protocol
/// service) waits for the client's first bytes before treating the
/// connection as not HTTP: a server-first protocol (MySQL, SMTP) sends
/// nothing until the server speaks, so its connection starts this much
/// later, then takes its TCP chain or the port's default path. Istio's
/// `protocolDetectionTimeout` defaults to 0 (wait forever), which hangs
/// such clients; one second bounds the delay and is long enough for a
/// client's first request on a loaded host.
const PROTOCOL_DETECTION_TIMEOUT_SECS: u64 = 1;

/// Listeners of a sidecar (or, for gateways, of its Gateway servers), sorted by name.
pub fn build(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<Listener> {
    let mut out = match ctx.proxy.kind {
        ProxyKind::Router => crate::emit::gateway::gateway_listeners::build(ctx, diags),
        _ => sidecar_listeners(ctx, diags),
    };
    crate::emit::envoy::observability::instrument(&ctx.mesh.mesh, &mut out);
    out
}

fn sidecar_listeners(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<Listener> {
    diags.extend(listener_matches::reserved_port_diagnostics(ctx));
    diags.extend(listener_matches::self_forwarding_diagnostics(ctx));
    let mut out = Vec::new();
    if !ctx.proxy.interception.binds_listeners() {
        out.push(virtual_outbound(ctx));
    }
    out.extend(inbound::listener(ctx, diags));
    out.extend(crate::emit::sidecar::dns::listener(ctx));
    for (port, services) in listener_matches::services_by_port(ctx) {
        let plan = listener_matches::plan(ctx, port, &services, diags);
        out.push(port_listener(ctx, &plan));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Catches every intercepted connection and hands it to the listener of its
/// original destination port; unknown ports follow the outbound policy.
fn virtual_outbound(ctx: &Context) -> Listener {
    Listener {
        name: names::VIRTUAL_OUTBOUND_LISTENER.to_string(),
        address: Some(protobuf::socket_address(
            names::WILDCARD_ADDRESS,
            names::VIRTUAL_OUTBOUND_PORT,
        )),
        use_original_dst: Some(protobuf::bool_value(true)),
        filter_chains: vec![fallback_chain(ctx)],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

fn port_listener(ctx: &Context, plan: &PortPlan) -> Listener {
    let port = plan.port;
    let address = ctx.proxy.interception.outbound_listener_address();
    let name = names::port_listener(address, port);
    let mut chains = Vec::new();
    if plan.has_http {
        chains.push(http_catch_all_chain(&name, port));
    }
    for svc in &plan.addressed {
        match svc.handling {
            Handling::Opaque => {}
            Handling::Sniffed => chains.push(sniffed_http_chain(&name, port, svc)),
            // HTTP services never get addressed chains.
            Handling::Http => continue,
        }
        chains.extend(svc.chains.iter().map(L4Chain::filter_chain));
    }
    let listener_filters = listener_filters(plan, &chains);
    let mut listener = Listener {
        name,
        address: Some(protobuf::socket_address(&address.to_string(), port)),
        filter_chains: chains,
        traffic_direction: TrafficDirection::Outbound as i32,
        bind_to_port: bind_to_port(ctx),
        ..Default::default()
    };
    if !listener_filters.is_empty() {
        listener.listener_filters = listener_filters;
        listener.listener_filters_timeout =
            Some(protobuf::seconds(PROTOCOL_DETECTION_TIMEOUT_SECS));
        listener.continue_on_listener_filters_timeout = true;
    }
    // What no chain matches (on an HTTP port: what is not HTTP) goes to the
    // port's owner, else follows the outbound policy.
    listener.default_filter_chain = Some(match plan.owner {
        Some(service) => {
            let cluster = names::outbound_cluster(port, None, &service.hostname);
            FilterChain {
                name: format!("tcp|{cluster}"),
                filters: vec![filters::tcp_proxy(&cluster)],
                ..Default::default()
            }
        }
        None => fallback_chain(ctx),
    });
    listener
}

/// tcp_proxy to PassthroughCluster or BlackHoleCluster.
pub(crate) fn fallback_chain(ctx: &Context) -> FilterChain {
    let fallback = ctx.fallback_cluster();
    FilterChain {
        name: fallback.to_string(),
        filters: vec![filters::tcp_proxy(fallback)],
        ..Default::default()
    }
}

/// The TLS inspector reads SNI for chains matching server names; the HTTP
/// inspector tells HTTP from other traffic on ports with HTTP or sniffed
/// services.
fn listener_filters(
    plan: &PortPlan,
    chains: &[FilterChain],
) -> Vec<envoy_types::pb::envoy::config::listener::v3::ListenerFilter> {
    let sni = chains.iter().any(|c| {
        c.filter_chain_match
            .as_ref()
            .is_some_and(|m| !m.server_names.is_empty())
    });
    let sniffing = plan.has_http
        || plan
            .addressed
            .iter()
            .any(|s| s.handling == Handling::Sniffed);
    let mut out = Vec::new();
    if sni {
        out.push(filters::tls_inspector());
    }
    if sniffing {
        out.push(filters::http_inspector());
    }
    out
}

/// Intercepted traffic arrives through `virtualOutbound`, so per-port
/// listeners must not bind; without interception they are real sockets.
fn bind_to_port(ctx: &Context) -> Option<envoy_types::pb::google::protobuf::BoolValue> {
    (!ctx.proxy.interception.binds_listeners()).then(|| protobuf::bool_value(false))
}

/// One HCM for the HTTP traffic of the port (as the inspector detects it)
/// to destinations without chains of their own; RDS tells the services
/// apart. Other traffic takes the listener's default chain, so a raw TCP or
/// TLS client on an HTTP port reaches its destination (or is refused by
/// the outbound policy) instead of getting an HTTP protocol error.
fn http_catch_all_chain(listener: &str, port: u16) -> FilterChain {
    FilterChain {
        name: "http".into(),
        filter_chain_match: Some(http_protocols(FilterChainMatch::default())),
        filters: vec![filters::http_connection_manager(listener, port)],
        ..Default::default()
    }
}

/// `base` narrowed to what the HTTP inspector recognises as HTTP.
fn http_protocols(base: FilterChainMatch) -> FilterChainMatch {
    FilterChainMatch {
        application_protocols: filters::SNIFFED_HTTP_PROTOCOLS
            .iter()
            .map(|p| p.to_string())
            .collect(),
        ..base
    }
}

fn destination_match(svc: &AddressedService) -> FilterChainMatch {
    match &svc.match_on {
        MatchOn::Addresses(ips) => FilterChainMatch {
            prefix_ranges: ips.iter().map(|ip| protobuf::host_cidr(*ip)).collect(),
            ..Default::default()
        },
        MatchOn::ServerName(name) => FilterChainMatch {
            server_names: vec![name.clone()],
            ..Default::default()
        },
    }
}

/// HTTP (as detected by the inspector) on a sniffed service's addresses
/// goes to the port's HCM; its other traffic takes the service's tcp chains.
fn sniffed_http_chain(listener: &str, port: u16, svc: &AddressedService) -> FilterChain {
    let cluster = names::outbound_cluster(port, None, &svc.service.hostname);
    FilterChain {
        name: format!("http|{cluster}"),
        filter_chain_match: Some(http_protocols(destination_match(svc))),
        filters: vec![filters::http_connection_manager(listener, port)],
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::diagnostics::{DiagnosticKind, Severity};
    use crate::mesh::OutboundTrafficPolicy;
    use crate::test_support::*;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
    use pilotfish_model::Protocol;

    /// A chain's destination prefix ranges, as `address/len`.
    pub(crate) fn ranges(chain: &FilterChain) -> Vec<String> {
        let m = chain.filter_chain_match.clone().unwrap_or_default();
        m.prefix_ranges
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r.address_prefix,
                    r.prefix_len.map(|l| l.value).unwrap_or(0)
                )
            })
            .collect()
    }

    /// The names of a listener's listener filters (inspectors), in order.
    pub(crate) fn listener_filter_names(listener: &Listener) -> Vec<&str> {
        listener
            .listener_filters
            .iter()
            .map(|f| f.name.as_str())
            .collect()
    }

    /// Where a listener's default chain sends what no chain matches.
    fn default_cluster(listener: &Listener) -> Option<String> {
        tcp_proxy_cluster(listener.default_filter_chain.as_ref()?)
    }

    fn chain_named<'l>(listener: &'l Listener, name: &str) -> &'l FilterChain {
        let found = listener.filter_chains.iter().find(|c| c.name == name);
        found.unwrap_or_else(|| panic!("no chain {name} in {}", listener.name))
    }

    fn http_mesh() -> crate::MeshState {
        mesh(
            vec![
                service(
                    "reviews.default.svc.cluster.local",
                    &["10.0.0.1"],
                    &[(9080, Protocol::Http)],
                ),
                service(
                    "ratings.default.svc.cluster.local",
                    &["10.0.0.2"],
                    &[(9080, Protocol::Http)],
                ),
                service(
                    "details.default.svc.cluster.local",
                    &["10.0.0.3"],
                    &[(9080, Protocol::Grpc)],
                ),
            ],
            vec![],
            &[],
        )
    }

    #[test]
    fn per_port_listeners_do_not_bind_under_redirect() {
        let t = translate_for(&http_mesh(), &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_9080");
        assert_eq!(listener.bind_to_port, Some(protobuf::bool_value(false)));
        assert_eq!(
            listener.address,
            Some(protobuf::socket_address("0.0.0.0", 9080))
        );
        assert_envoy_invariants(&t);
    }

    /// Istio's `InterceptionNone`: the application dials 127.0.0.1:<port>,
    /// so the listener binds there (not the wildcard, which would also take
    /// every local backend's address on the port), and nothing is
    /// redirected to a virtual listener.
    #[test]
    fn without_interception_per_port_listeners_bind_loopback_and_no_virtual_listener_exists() {
        let mut proxy = sidecar_without_interception("default");
        proxy.inbound = vec![crate::InboundPort {
            port: 9080,
            protocol: Protocol::Http,
        }];
        let t = translate_for(&http_mesh(), &proxy);
        let names: Vec<_> = t.resources.listeners.iter().map(|l| &l.name).collect();
        assert_eq!(names, ["127.0.0.1_9080"]);
        let listener = listener_named(&t, "127.0.0.1_9080");
        assert_eq!(
            listener.address,
            Some(protobuf::socket_address("127.0.0.1", 9080))
        );
        assert_eq!(listener.bind_to_port, None, "a real socket");
        assert_eq!(
            hcm(&listener.filter_chains[0]).stat_prefix,
            "outbound_127.0.0.1_9080"
        );
        route_config_named(&t, "9080");
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        assert_envoy_invariants(&t);
    }

    /// The only destination a loopback listener sees is its own address:
    /// whatever their VIPs or endpoints, TCP services claim that one, the
    /// oldest keeps it and the others are reported.
    #[test]
    fn without_interception_the_oldest_tcp_service_of_a_port_takes_its_listener() {
        let m = mesh(
            vec![
                created(
                    service(
                        "new.default.svc.cluster.local",
                        &["10.0.0.9"],
                        &[(5432, Protocol::Tcp)],
                    ),
                    "2024-02-01T00:00:00Z",
                ),
                created(
                    service("old.service.consul", &[], &[(5432, Protocol::Tcp)]),
                    "2024-01-01T00:00:00Z",
                ),
                service(
                    "cache.default.svc.cluster.local",
                    &["10.0.0.10"],
                    &[(6379, Protocol::Tcp)],
                ),
            ],
            vec![(
                "old.service.consul",
                vec![endpoint("10.1.0.1", 5432, 5432, &[])],
            )],
            &[],
        );
        let t = translate_for(&m, &sidecar_without_interception("default"));
        let listener = listener_named(&t, "127.0.0.1_5432");
        assert_eq!(listener.filter_chains.len(), 1);
        let chain = &listener.filter_chains[0];
        assert_eq!(ranges(chain), ["127.0.0.1/32"]);
        assert_eq!(
            tcp_proxy_cluster(chain).as_deref(),
            Some("outbound|5432||old.service.consul")
        );
        let cache = &listener_named(&t, "127.0.0.1_6379").filter_chains[0];
        assert_eq!(ranges(cache), ["127.0.0.1/32"]);
        let conflicts = diagnostics_of(&t, DiagnosticKind::ListenerConflict);
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0].object, "service new.default.svc.cluster.local");
        assert!(conflicts[0].message.contains("old.service.consul"));
        assert_envoy_invariants(&t);
    }

    #[test]
    fn without_interception_sniffed_and_http_services_share_the_listener_address() {
        let m = sniffed_beside_http(7000);
        let t = translate_for(&m, &sidecar_without_interception("default"));
        let listener = listener_named(&t, "127.0.0.1_7000");
        let http = chain_named(
            listener,
            "http|outbound|7000||legacy.default.svc.cluster.local",
        );
        assert_eq!(ranges(http), ["127.0.0.1/32"]);
        let tcp = chain_named(
            listener,
            "tcp|outbound|7000||legacy.default.svc.cluster.local",
        );
        assert_eq!(ranges(tcp), ["127.0.0.1/32"]);
        let http = chain_named(listener, "http").filter_chain_match.clone();
        assert_eq!(
            http.map(|m| m.prefix_ranges),
            Some(vec![]),
            "any destination"
        );
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        assert_envoy_invariants(&t);
    }

    #[test]
    fn virtual_outbound_uses_original_dst_and_the_outbound_policy() {
        let mut m = http_mesh();
        let t = translate_for(&m, &sidecar("default"));
        let vo = listener_named(&t, "virtualOutbound");
        assert_eq!(vo.address, Some(protobuf::socket_address("0.0.0.0", 15001)));
        assert_eq!(vo.use_original_dst, Some(protobuf::bool_value(true)));
        assert_eq!(
            tcp_proxy_cluster(&vo.filter_chains[0]).as_deref(),
            Some("PassthroughCluster")
        );

        m.mesh.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly;
        let t = translate_for(&m, &sidecar("default"));
        let vo = listener_named(&t, "virtualOutbound");
        assert_eq!(
            tcp_proxy_cluster(&vo.filter_chains[0]).as_deref(),
            Some("BlackHoleCluster")
        );
    }

    #[test]
    fn http_services_on_one_port_share_one_hcm_and_one_route_config() {
        let t = translate_for(&http_mesh(), &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_9080");
        assert_eq!(listener.filter_chains.len(), 1);
        let chain = &listener.filter_chains[0];
        let matched = chain.filter_chain_match.clone().unwrap_or_default();
        assert_eq!(
            (matched.prefix_ranges.len(), matched.application_protocols),
            (
                0,
                filters::SNIFFED_HTTP_PROTOCOLS.map(String::from).to_vec()
            ),
            "the HTTP chain takes HTTP to every destination"
        );
        let hcm = hcm(chain);
        assert_eq!(hcm.stat_prefix, "outbound_0.0.0.0_9080");
        let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
            panic!("not RDS")
        };
        assert_eq!(rds.route_config_name, "9080");
        assert_eq!(rds.config_source, Some(protobuf::ads_config_source()));
        let filters: Vec<_> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(filters.last(), Some(&"envoy.filters.http.router"));
        assert!(
            filters
                .iter()
                .position(|f| *f == "envoy.filters.http.fault")
                < filters
                    .iter()
                    .position(|f| *f == "envoy.filters.http.router")
        );
        assert_eq!(
            listener
                .default_filter_chain
                .as_ref()
                .map(|c| c.name.as_str()),
            Some("PassthroughCluster"),
            "what is not HTTP follows the outbound policy"
        );
        assert_eq!(
            listener_filter_names(listener),
            ["envoy.filters.listener.http_inspector"]
        );
        assert_eq!(t.resources.routes.len(), 1);
        assert_eq!(
            route_config_named(&t, "9080").virtual_hosts.len(),
            4,
            "3 services + catch-all"
        );
    }

    /// Istio 1.1 regression: the first TCP service on a port took every
    /// service's traffic on that port.
    #[test]
    fn vipless_tcp_services_on_one_port_get_their_own_chains_and_clusters() {
        let m = mesh(
            vec![
                service("db-a.service.consul", &[], &[(9080, Protocol::Tcp)]),
                service("db-b.service.consul", &[], &[(9080, Protocol::Tcp)]),
            ],
            vec![
                (
                    "db-a.service.consul",
                    vec![
                        endpoint("10.1.0.1", 9080, 9080, &[]),
                        endpoint("10.1.0.2", 9080, 9080, &[]),
                    ],
                ),
                (
                    "db-b.service.consul",
                    vec![endpoint("10.2.0.1", 9080, 9080, &[])],
                ),
            ],
            &[],
        );
        let t = translate_for(&m, &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_9080");
        assert_eq!(listener.filter_chains.len(), 2);
        let a = chain_named(listener, "tcp|outbound|9080||db-a.service.consul");
        assert_eq!(ranges(a), ["10.1.0.1/32", "10.1.0.2/32"]);
        assert_eq!(
            tcp_proxy_cluster(a).as_deref(),
            Some("outbound|9080||db-a.service.consul")
        );
        let b = chain_named(listener, "tcp|outbound|9080||db-b.service.consul");
        assert_eq!(ranges(b), ["10.2.0.1/32"]);
        assert_eq!(
            tcp_proxy_cluster(b).as_deref(),
            Some("outbound|9080||db-b.service.consul")
        );
        let default = listener.default_filter_chain.as_ref().unwrap();
        assert_eq!(
            tcp_proxy_cluster(default).as_deref(),
            Some("PassthroughCluster")
        );
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        assert_envoy_invariants(&t);
    }

    /// Istio gives a VIP-less TCP service alone on its port the whole port:
    /// a DNS ServiceEntry has no address to match, and without owning the
    /// port it would get no traffic at all.
    #[test]
    fn a_lone_tcp_service_without_addresses_owns_its_port_beside_http() {
        let registry_only = |mut m: crate::MeshState| {
            m.mesh.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly;
            m
        };
        let db = dns_service_entry("db.example.com", 5432);
        let web = service(
            "web.default.svc.cluster.local",
            &["10.0.0.1"],
            &[(5432, Protocol::Http)],
        );
        let m = registry_only(mesh(vec![db.clone(), web], vec![], &[]));
        let t = translate_for(&m, &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_5432");
        assert_eq!(
            default_cluster(listener).as_deref(),
            Some("outbound|5432||db.example.com"),
            "not BlackHoleCluster: the database owns the port"
        );
        hcm(chain_named(listener, "http"));
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        assert_envoy_invariants(&t);

        // A second such service: neither can own the port, both are reported.
        let other = dns_service_entry("db2.example.com", 5432);
        let t = translate_for(
            &registry_only(mesh(vec![db, other], vec![], &[])),
            &sidecar("default"),
        );
        let listener = listener_named(&t, "0.0.0.0_5432");
        assert_eq!(
            default_cluster(listener).as_deref(),
            Some("BlackHoleCluster")
        );
        let unreachable: Vec<_> = t
            .diagnostics
            .iter()
            .filter(|d| d.kind == DiagnosticKind::Unreachable)
            .map(|d| d.object.as_str())
            .collect();
        assert_eq!(unreachable.len(), 2, "{:?}", t.diagnostics);
    }

    /// DNS ServiceEntries without addresses cannot share a port by address
    /// unless they get one: a proxy that uses allocated VIPs matches each
    /// at its own, and the others cannot tell them apart.
    #[test]
    fn dns_service_entries_sharing_a_port_are_told_apart_by_allocated_addresses() {
        let entries = ["db-a.example.com", "db-b.example.com", "db-c.example.com"]
            .map(|host| dns_service_entry(host, 5432))
            .to_vec();
        let m = mesh(entries, vec![], &[]);
        let mut proxy = sidecar("default");
        proxy.dns.auto_allocate = true;
        let t = translate_for(&m, &proxy);
        let listener = listener_named(&t, "0.0.0.0_5432");
        let resolved = crate::resolve(m.clone());
        for host in ["db-a.example.com", "db-b.example.com", "db-c.example.com"] {
            let chain = chain_named(listener, &format!("tcp|outbound|5432||{host}"));
            let allocated = resolved.addresses.of(host).expect("allocated");
            assert_eq!(ranges(chain), [format!("{allocated}/32")]);
        }
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        assert_envoy_invariants(&t);

        // Without allocated addresses nothing tells them apart.
        let t = translate_for(&m, &sidecar("default"));
        assert!(listener_named(&t, "0.0.0.0_5432").filter_chains.is_empty());
        assert_eq!(diagnostics_of(&t, DiagnosticKind::Unreachable).len(), 3);
    }

    #[test]
    fn http_and_tcp_services_on_one_port() {
        let m = mesh(
            vec![
                service(
                    "web.default.svc.cluster.local",
                    &["10.0.0.1"],
                    &[(8080, Protocol::Http)],
                ),
                service(
                    "cache.default.svc.cluster.local",
                    &["10.0.0.2", "fd00::2"],
                    &[(8080, Protocol::Tcp)],
                ),
            ],
            vec![],
            &[],
        );
        let t = translate_for(&m, &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_8080");
        assert_eq!(listener.filter_chains.len(), 2);
        hcm(chain_named(listener, "http"));
        let tcp = chain_named(
            listener,
            "tcp|outbound|8080||cache.default.svc.cluster.local",
        );
        assert_eq!(ranges(tcp), ["10.0.0.2/32", "fd00::2/128"]);
        assert_eq!(
            default_cluster(listener).as_deref(),
            Some("PassthroughCluster"),
            "neither HTTP nor a TCP service's address: the outbound policy"
        );
        assert!(
            route_config_named(&t, "8080")
                .virtual_hosts
                .iter()
                .all(|v| !v.name.starts_with("cache"))
        );
        assert_envoy_invariants(&t);
    }

    #[test]
    fn unknown_protocol_is_sniffed_with_an_http_and_a_tcp_chain() {
        let m = one_service_mesh(
            "legacy.default.svc.cluster.local",
            &["10.0.0.7"],
            7000,
            Protocol::Unknown,
        );
        let t = translate_for(&m, &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_7000");
        let inspectors = listener_filter_names(listener);
        assert_eq!(inspectors, ["envoy.filters.listener.http_inspector"]);
        assert!(listener.continue_on_listener_filters_timeout);
        let http = chain_named(
            listener,
            "http|outbound|7000||legacy.default.svc.cluster.local",
        );
        let m = http.filter_chain_match.clone().unwrap();
        assert!(m.application_protocols.contains(&"http/1.1".to_string()));
        assert!(m.application_protocols.contains(&"h2c".to_string()));
        assert_eq!(ranges(http), ["10.0.0.7/32"]);
        let Some(RouteSpecifier::Rds(rds)) = hcm(http).route_specifier else {
            panic!("not RDS")
        };
        assert_eq!(rds.route_config_name, "7000");
        let tcp = chain_named(
            listener,
            "tcp|outbound|7000||legacy.default.svc.cluster.local",
        );
        assert!(
            tcp.filter_chain_match
                .clone()
                .unwrap()
                .application_protocols
                .is_empty()
        );
        assert_eq!(ranges(tcp), ["10.0.0.7/32"]);
        assert_eq!(
            tcp_proxy_cluster(tcp).as_deref(),
            Some("outbound|7000||legacy.default.svc.cluster.local")
        );
        assert!(listener.default_filter_chain.is_some());
        route_config_named(&t, "7000");
        assert_envoy_invariants(&t);
    }

    /// `legacy` (protocol unknown, sniffed) and `web` (HTTP) on one port.
    fn sniffed_beside_http(port: u16) -> crate::MeshState {
        mesh(
            vec![
                service(
                    "legacy.default.svc.cluster.local",
                    &["10.0.0.7"],
                    &[(port, Protocol::Unknown)],
                ),
                service(
                    "web.default.svc.cluster.local",
                    &["10.0.0.8"],
                    &[(port, Protocol::Http)],
                ),
            ],
            vec![],
            &[],
        )
    }

    #[test]
    fn unknown_next_to_http_keeps_the_http_catch_all() {
        let m = sniffed_beside_http(80);
        let t = translate_for(&m, &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_80");
        assert_eq!(listener.filter_chains.len(), 3);
        let http = chain_named(listener, "http").filter_chain_match.clone();
        assert_eq!(
            http.map(|m| m.prefix_ranges),
            Some(vec![]),
            "any destination"
        );
        assert_envoy_invariants(&t);
    }

    #[test]
    fn two_tcp_services_on_one_vip_keep_the_older_and_report_the_loser() {
        let m = mesh(
            vec![
                created(
                    service(
                        "new.default.svc.cluster.local",
                        &["10.0.0.9"],
                        &[(5432, Protocol::Tcp)],
                    ),
                    "2024-02-01T00:00:00Z",
                ),
                created(
                    service(
                        "old.default.svc.cluster.local",
                        &["10.0.0.9"],
                        &[(5432, Protocol::Tcp)],
                    ),
                    "2024-01-01T00:00:00Z",
                ),
            ],
            vec![],
            &[],
        );
        let t = translate_for(&m, &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_5432");
        assert_eq!(listener.filter_chains.len(), 1);
        let chain = &listener.filter_chains[0];
        assert_eq!(
            tcp_proxy_cluster(chain).as_deref(),
            Some("outbound|5432||old.default.svc.cluster.local")
        );
        let conflicts = diagnostics_of(&t, DiagnosticKind::ListenerConflict);
        assert_eq!(conflicts.len(), 1);
        let d = conflicts[0];
        assert_eq!(d.severity, Severity::Error);
        assert_eq!(d.object, "service new.default.svc.cluster.local");
        for needle in ["old.default.svc.cluster.local", "5432", "10.0.0.9"] {
            assert!(d.message.contains(needle), "{} lacks {needle}", d.message);
        }
        assert_envoy_invariants(&t);
    }

    #[test]
    fn tcp_and_http_services_sharing_a_vip_conflict() {
        let m = mesh(
            vec![
                created(
                    service(
                        "web.default.svc.cluster.local",
                        &["10.0.0.9"],
                        &[(80, Protocol::Http)],
                    ),
                    "2024-01-01T00:00:00Z",
                ),
                created(
                    service(
                        "raw.default.svc.cluster.local",
                        &["10.0.0.9", "10.0.0.10"],
                        &[(80, Protocol::Tcp)],
                    ),
                    "2024-02-01T00:00:00Z",
                ),
            ],
            vec![],
            &[],
        );
        let t = translate_for(&m, &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_80");
        let tcp = chain_named(listener, "tcp|outbound|80||raw.default.svc.cluster.local");
        assert_eq!(
            ranges(tcp),
            ["10.0.0.10/32"],
            "only the contested address is dropped"
        );
        let conflicts = diagnostics_of(&t, DiagnosticKind::ListenerConflict);
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].object, "service raw.default.svc.cluster.local");
        assert_envoy_invariants(&t);
    }

    #[test]
    fn a_lone_vipless_tcp_service_without_endpoints_owns_its_port() {
        let m = one_service_mesh("lonely.service.consul", &[], 6379, Protocol::Tcp);
        let t = translate_for(&m, &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_6379");
        assert!(listener.filter_chains.is_empty());
        assert_eq!(
            default_cluster(listener).as_deref(),
            Some("outbound|6379||lonely.service.consul")
        );
        assert!(diagnostics_of(&t, DiagnosticKind::Unreachable).is_empty());
        assert_envoy_invariants(&t);
    }

    #[test]
    fn vipless_tls_services_are_matched_by_sni() {
        let mut api = service("api.example.com", &[], &[(443, Protocol::Tls)]);
        api.resolution = pilotfish_model::Resolution::Dns;
        let m = mesh(vec![api], vec![], &[]);
        let t = translate_for(&m, &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_443");
        let chain = chain_named(listener, "tcp|outbound|443||api.example.com");
        let m = chain.filter_chain_match.clone().unwrap();
        assert_eq!(m.server_names, ["api.example.com"]);
        assert!(m.prefix_ranges.is_empty());
        let inspectors = listener_filter_names(listener);
        assert_eq!(inspectors, ["envoy.filters.listener.tls_inspector"]);
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        assert_envoy_invariants(&t);
    }

    #[test]
    fn interception_none_never_passes_through_to_itself() {
        let m = one_service_mesh("db.service.consul", &["10.0.0.1"], 6379, Protocol::Tcp);
        let t = translate_for(&m, &sidecar_without_interception("default"));
        let default = listener_named(&t, "127.0.0.1_6379")
            .default_filter_chain
            .clone()
            .unwrap();
        assert_eq!(
            tcp_proxy_cluster(&default).as_deref(),
            Some("BlackHoleCluster")
        );
    }

    #[test]
    fn service_ports_reserved_by_the_sidecar_get_no_listener() {
        let m = one_service_mesh(
            "x.default.svc.cluster.local",
            &["10.0.0.1"],
            15001,
            Protocol::Tcp,
        );
        let t = translate_for(&m, &sidecar("default"));
        let names: Vec<_> = t
            .resources
            .listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(names, ["virtualInbound", "virtualOutbound"]);
        cluster_named(&t, "outbound|15001||x.default.svc.cluster.local");
        assert_eq!(diagnostics_of(&t, DiagnosticKind::Unreachable).len(), 1);
    }

    #[test]
    fn gateways_without_gateway_config_get_clusters_but_no_listeners() {
        let proxy = crate::ProxyView {
            kind: ProxyKind::Router,
            ..sidecar("default")
        };
        let t = translate_for(&http_mesh(), &proxy);
        assert!(t.resources.listeners.is_empty());
        assert!(t.resources.routes.is_empty());
        assert!(!t.resources.clusters.is_empty());
    }
}
