//! The sidecar's receiving side: `virtualInbound` on 15006, where iptables
//! sends traffic addressed to the workload, and the `inbound|<port>||`
//! clusters that deliver it to the local application on 127.0.0.1. Ports the
//! registry does not know for this workload pass through unchanged. Each
//! port's PeerAuthentication mode decides whether it takes mesh mTLS,
//! plaintext or both; AuthorizationPolicies become RBAC filters on its
//! chains.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::{
    BindConfig, SocketAddress, TrafficDirection, socket_address,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost, route};
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use pilotfish_model::{Endpoint, Health};

use crate::diagnostics::{Diagnostic, DiagnosticKind};
use crate::emit::context::Context;
use crate::emit::endpoints::{self, AddressKind};
use crate::emit::envoy::filters;
use crate::emit::envoy::filters::SNIFFED_HTTP_PROTOCOLS;
use crate::emit::envoy::mesh_tls::{self, MeshTls};
use crate::emit::envoy::rbac;
use crate::emit::policy::authorization::{AuthorizationGuards, InboundAuthorization};
use crate::emit::policy::peer_authentication::{PeerAuthentication, PeerMode};
use crate::emit::policy::traffic_policy;
use crate::emit::sidecar::http_routes;
use crate::emit::sidecar::listener_matches::Handling;
use crate::names;
use crate::protobuf;
use crate::proxy::{InboundPort, InterceptionMode, ProxyKind};

pub const VIRTUAL_INBOUND_LISTENER: &str = "virtualInbound";
pub const VIRTUAL_INBOUND_PORT: u16 = 15006;
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
const ORIGINAL_DST_FILTER: &str = "envoy.filters.listener.original_dst";
/// The application is reached on loopback, as Istio's sidecars did.
const LOCAL_APP_ADDRESS: &str = "127.0.0.1";
/// Istio's source address for inbound passthrough connections. They go to
/// the pod's own IP over `lo`; interception (pilotfish-iptables.sh with
/// inbound capture) sends the proxy's other `lo` connections to its own IP
/// back through `virtualInbound` (a pod calling its own service must pass
/// its inbound side too) and lets only this source through, which is what
/// keeps passthrough from looping.
pub const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6";

/// `inbound|9080||`.
pub fn cluster_name(port: u16) -> String {
    format!("inbound|{port}||")
}

/// Only intercepted sidecars have a receiving side to build.
fn has_inbound(ctx: &Context) -> bool {
    ctx.proxy.kind == ProxyKind::Sidecar && ctx.proxy.interception != InterceptionMode::None
}

/// Inbound clusters plus `InboundPassthroughCluster`, sorted by name.
pub fn clusters(ctx: &Context) -> Vec<Cluster> {
    if !has_inbound(ctx) {
        return Vec::new();
    }
    let mut out: Vec<Cluster> = ctx
        .proxy
        .inbound
        .iter()
        .map(|p| local_cluster(ctx, p))
        .collect();
    out.push(Cluster {
        name: INBOUND_PASSTHROUGH_CLUSTER.to_string(),
        connect_timeout: Some(protobuf::duration(ctx.mesh.mesh.connect_timeout)),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        upstream_bind_config: Some(BindConfig {
            source_address: Some(SocketAddress {
                address: INBOUND_PASSTHROUGH_SOURCE.to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn local_cluster(ctx: &Context, port: &InboundPort) -> Cluster {
    let name = cluster_name(port.port);
    let app = Endpoint {
        address: LOCAL_APP_ADDRESS.to_string(),
        port: port.port,
        service_port: port.port,
        labels: Default::default(),
        locality: None,
        health: Health::Healthy,
        weight: None,
    };
    let mut cluster = Cluster {
        name: name.clone(),
        connect_timeout: Some(protobuf::duration(ctx.mesh.mesh.connect_timeout)),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        load_assignment: Some(endpoints::load_assignment(
            &name,
            &[&app],
            AddressKind::IpOnly,
        )),
        circuit_breakers: Some(traffic_policy::default_circuit_breakers()),
        ..Default::default()
    };
    // Upstream HTTP/2 for gRPC/HTTP2 apps, downstream's protocol when sniffed.
    traffic_policy::apply(
        &mut cluster,
        &Default::default(),
        port.protocol,
        &mut Vec::new(),
    );
    cluster
}

/// `virtualInbound`, or nothing for proxies without interception.
pub fn listener(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Option<Listener> {
    if !has_inbound(ctx) {
        return None;
    }
    let mesh = mesh_tls(ctx);
    let peers = PeerAuthentication::for_proxy(ctx.mesh, ctx.proxy, diags);
    let authz = InboundAuthorization::for_proxy(ctx, diags);
    let guards = authz.guards();
    let mut chains = Vec::new();
    for port in &ctx.proxy.inbound {
        let mode = peers.mode(port.port);
        if mode == PeerMode::Strict && mesh.is_none() {
            diags.push(uncertified_strict(ctx, &peers, port.port));
        }
        chains.extend(port_chains_for_mode(port, mode, mesh.as_ref(), &guards));
    }
    // Ports the workload does not declare pass through; under a STRICT
    // workload mode only over mesh TLS, as in Istio.
    let strict = peers.workload_mode() == PeerMode::Strict;
    if let (true, Some(mesh)) = (strict, &mesh) {
        chains.push(mesh_passthrough_chain(mesh, &guards));
    }
    let default_filter_chain = match strict {
        true => refusing_default_chain(),
        false => FilterChain {
            name: INBOUND_PASSTHROUGH_CLUSTER.to_string(),
            filters: vec![filters::tcp_proxy(INBOUND_PASSTHROUGH_CLUSTER)],
            ..Default::default()
        },
    };
    let sniffing = ctx
        .proxy
        .inbound
        .iter()
        .any(|p| Handling::of(p.protocol) == Handling::Sniffed);
    let tls_inspecting = mesh.is_some() && (strict || !ctx.proxy.inbound.is_empty());
    let inspecting = sniffing || tls_inspecting;
    // Redirected connections arrive on 15006; the original destination
    // (restored by this filter) picks the chain by port.
    let mut listener_filters = vec![ListenerFilter {
        name: ORIGINAL_DST_FILTER.to_string(),
        config_type: Some(
            envoy_types::pb::envoy::config::listener::v3::listener_filter::ConfigType::TypedConfig(
                protobuf::any(OriginalDst::default()),
            ),
        ),
        ..Default::default()
    }];
    // TLS first: a mesh connection's ALPN picks its chain; the HTTP
    // inspector then reads plaintext only.
    if tls_inspecting {
        listener_filters.push(filters::tls_inspector());
    }
    if sniffing {
        listener_filters.push(filters::http_inspector());
    }
    Some(Listener {
        name: VIRTUAL_INBOUND_LISTENER.to_string(),
        address: Some(protobuf::socket_address(
            names::WILDCARD_ADDRESS,
            VIRTUAL_INBOUND_PORT,
        )),
        filter_chains: chains,
        default_filter_chain: Some(default_filter_chain),
        listener_filters,
        listener_filters_timeout: inspecting.then(|| protobuf::seconds(1)),
        continue_on_listener_filters_timeout: inspecting,
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    })
}

/// The chains of one local port under its PeerAuthentication mode.
fn port_chains_for_mode(
    port: &InboundPort,
    mode: PeerMode,
    mesh: Option<&MeshTls>,
    guards: &AuthorizationGuards,
) -> Vec<FilterChain> {
    match (mode, mesh) {
        (PeerMode::Strict, Some(mesh)) => {
            let mut chains = mesh_chains(port, mesh, guards);
            chains.extend(refusing_chains(port, true));
            chains
        }
        (PeerMode::Permissive, Some(mesh)) => {
            let mut chains = mesh_chains(port, mesh, guards);
            chains.extend(port_chains(port, guards));
            chains
        }
        // Without a workload certificate mTLS cannot be terminated: STRICT
        // fails closed rather than falling back to plaintext.
        (PeerMode::Strict, None) => refusing_chains(port, false),
        (PeerMode::Permissive | PeerMode::Disable, _) => port_chains(port, guards),
    }
}

/// Chains that close what reaches a port in a way its mode refuses:
/// plaintext, and (`tls`) TLS without a mesh ALPN. Without them those
/// connections would take the listener's default chain, which passes
/// them through to the application.
fn refusing_chains(port: &InboundPort, tls: bool) -> Vec<FilterChain> {
    let cluster = cluster_name(port.port);
    let refuse = |name: String, transport: &str| FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            destination_port: Some(protobuf::u32_value(u32::from(port.port))),
            transport_protocol: transport.to_string(),
            ..Default::default()
        }),
        filters: vec![
            rbac::refuse_all(&name),
            filters::tcp_proxy(names::BLACKHOLE_CLUSTER),
        ],
        name,
        ..Default::default()
    };
    let mut chains = vec![refuse(format!("refused|{cluster}"), "")];
    if tls {
        chains.push(refuse(format!("refused|tls|{cluster}"), "tls"));
    }
    chains
}

/// Mesh TLS to a port the workload does not declare, under STRICT:
/// terminated, authorized, then passed through to the original destination.
fn mesh_passthrough_chain(mesh: &MeshTls, guards: &AuthorizationGuards) -> FilterChain {
    let name = format!("tls|{INBOUND_PASSTHROUGH_CLUSTER}");
    let mut chain_filters = guards.tcp(&name);
    chain_filters.push(filters::tcp_proxy(INBOUND_PASSTHROUGH_CLUSTER));
    FilterChain {
        filter_chain_match: Some(FilterChainMatch {
            transport_protocol: "tls".into(),
            application_protocols: mesh_tls::MESH_ALPNS.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }),
        filters: chain_filters,
        transport_socket: Some(mesh.downstream()),
        name,
        ..Default::default()
    }
}

/// STRICT: whatever no chain took (plaintext, other TLS) is closed, not
/// passed through; without a workload certificate that is everything.
fn refusing_default_chain() -> FilterChain {
    let name = format!("refused|{INBOUND_PASSTHROUGH_CLUSTER}");
    FilterChain {
        filters: vec![
            rbac::refuse_all(&name),
            filters::tcp_proxy(names::BLACKHOLE_CLUSTER),
        ],
        name,
        ..Default::default()
    }
}

fn uncertified_strict(ctx: &Context, peers: &PeerAuthentication, port: u16) -> Diagnostic {
    let object = peers
        .source()
        .map(str::to_string)
        .unwrap_or_else(|| format!("proxy in namespace {}", ctx.proxy.namespace));
    Diagnostic::new(
        DiagnosticKind::PolicyFailedClosed,
        object,
        format!(
            "port {port} requires mTLS (STRICT) but this proxy has no workload certificate: connections to it are refused; the proxy must authenticate on the secure xDS port (15012) to be served one"
        ),
    )
}

fn port_chains(port: &InboundPort, guards: &AuthorizationGuards) -> Vec<FilterChain> {
    let cluster = cluster_name(port.port);
    let by_port = FilterChainMatch {
        destination_port: Some(protobuf::u32_value(u32::from(port.port))),
        ..Default::default()
    };
    let http = || FilterChain {
        name: format!("http|{cluster}"),
        filter_chain_match: Some(by_port.clone()),
        filters: vec![filters::inline_http_connection_manager(
            &cluster,
            local_routes(&cluster),
            guards.http(),
        )],
        ..Default::default()
    };
    let tcp = || {
        let name = format!("tcp|{cluster}");
        let mut chain_filters = guards.tcp(&name);
        chain_filters.push(filters::tcp_proxy(&cluster));
        FilterChain {
            filter_chain_match: Some(by_port.clone()),
            filters: chain_filters,
            name,
            ..Default::default()
        }
    };
    match Handling::of(port.protocol) {
        Handling::Http => vec![http()],
        Handling::Opaque => vec![tcp()],
        Handling::Sniffed => {
            let mut sniffed = http();
            if let Some(m) = sniffed.filter_chain_match.as_mut() {
                m.application_protocols = SNIFFED_HTTP_PROTOCOLS
                    .iter()
                    .map(|p| p.to_string())
                    .collect();
            }
            vec![sniffed, tcp()]
        }
    }
}

/// The proxy's mesh TLS, when it holds a workload certificate.
fn mesh_tls(ctx: &Context) -> Option<MeshTls> {
    ctx.proxy.workload_certificate.then(|| MeshTls {
        trust_domain: ctx.mesh.mesh.trust_domain.clone(),
    })
}

/// Mesh mTLS to a local port (PERMISSIVE and STRICT): chains for TLS with
/// a mesh ALPN terminate it with the workload certificate, requiring the
/// caller's, then deliver as the plaintext chains do.
fn mesh_chains(
    port: &InboundPort,
    mesh: &MeshTls,
    guards: &AuthorizationGuards,
) -> Vec<FilterChain> {
    let cluster = cluster_name(port.port);
    let chain = |kind: &str, alpns: &[&str], mut chain_filters: Vec<Filter>| {
        let name = format!("tls|{kind}|{cluster}");
        if kind == "tcp" {
            let mut guarded = guards.tcp(&name);
            guarded.append(&mut chain_filters);
            chain_filters = guarded;
        }
        FilterChain {
            filter_chain_match: Some(FilterChainMatch {
                destination_port: Some(protobuf::u32_value(u32::from(port.port))),
                transport_protocol: "tls".into(),
                application_protocols: alpns.iter().map(|p| p.to_string()).collect(),
                ..Default::default()
            }),
            filters: chain_filters,
            transport_socket: Some(mesh.downstream()),
            name,
            ..Default::default()
        }
    };
    let http = || {
        vec![filters::inline_mtls_http_connection_manager(
            &cluster,
            local_routes(&cluster),
            guards.http(),
        )]
    };
    let tcp = || vec![filters::tcp_proxy(&cluster)];
    match Handling::of(port.protocol) {
        Handling::Http => vec![chain("http", &mesh_tls::MESH_ALPNS, http())],
        Handling::Opaque => vec![chain("tcp", &mesh_tls::MESH_ALPNS, tcp())],
        // The client's ALPN says whether the stream inside is HTTP.
        Handling::Sniffed => vec![
            chain("http", &mesh_tls::MESH_HTTP_ALPNS, http()),
            chain("tcp", &mesh_tls::TCP_ALPN, tcp()),
        ],
    }
}

/// Everything arriving for a local port goes to the local app, without
/// retries: the caller's sidecar has already applied its retry policy.
fn local_routes(cluster: &str) -> RouteConfiguration {
    let mut route = http_routes::forward_all(cluster.to_string(), Vec::new());
    if let Some(route::Action::Route(action)) = route.action.as_mut() {
        action.retry_policy = None;
    }
    RouteConfiguration {
        name: cluster.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: cluster.to_string(),
            domains: vec!["*".to_string()],
            routes: vec![route],
            ..Default::default()
        }],
        validate_clusters: Some(protobuf::bool_value(false)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use pilotfish_model::Protocol;

    fn chain_ports(l: &Listener) -> Vec<(String, Option<u32>)> {
        l.filter_chains
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.filter_chain_match
                        .as_ref()
                        .and_then(|m| m.destination_port.as_ref())
                        .map(|p| p.value),
                )
            })
            .collect()
    }

    #[test]
    fn virtual_inbound_delivers_each_local_port_to_the_app_on_loopback() {
        let mesh = bookinfo("");
        let t = translate_for(
            &mesh,
            &with_inbound(&[(9080, Protocol::Http), (9090, Protocol::Tcp)]),
        );
        let l = listener_named(&t, VIRTUAL_INBOUND_LISTENER);
        assert_eq!(
            chain_ports(l),
            [
                ("http|inbound|9080||".to_string(), Some(9080)),
                ("tcp|inbound|9090||".to_string(), Some(9090))
            ]
        );
        assert_eq!(l.listener_filters[0].name, ORIGINAL_DST_FILTER);
        assert_eq!(hcm(&l.filter_chains[0]).stat_prefix, "inbound|9080||");
        assert_eq!(
            tcp_proxy_cluster(&l.filter_chains[1]).as_deref(),
            Some("inbound|9090||")
        );
        let default = l
            .default_filter_chain
            .as_ref()
            .expect("passthrough for undeclared ports");
        assert_eq!(
            tcp_proxy_cluster(default).as_deref(),
            Some(INBOUND_PASSTHROUGH_CLUSTER)
        );
        let cluster = load_assignment_named_in_cluster(&t, "inbound|9080||");
        assert_eq!(cluster, "127.0.0.1:9080");
        assert_envoy_invariants(&t);
    }

    fn load_assignment_named_in_cluster(t: &crate::Translation, name: &str) -> String {
        let c = cluster_named(t, name);
        let la = c
            .load_assignment
            .as_ref()
            .expect("static cluster carries its endpoint");
        endpoint_address(&la.endpoints[0].lb_endpoints[0])
    }

    #[test]
    fn unknown_inbound_ports_are_sniffed() {
        let t = translate_for(&bookinfo(""), &with_inbound(&[(9080, Protocol::Unknown)]));
        let l = listener_named(&t, VIRTUAL_INBOUND_LISTENER);
        assert_eq!(l.filter_chains.len(), 2);
        let http = l.filter_chains[0]
            .filter_chain_match
            .as_ref()
            .expect("match");
        assert_eq!(
            http.application_protocols,
            SNIFFED_HTTP_PROTOCOLS.map(String::from)
        );
        assert!(
            l.listener_filters
                .iter()
                .any(|f| f.name == names::HTTP_INSPECTOR)
        );
    }

    #[test]
    fn no_inbound_side_without_interception_or_for_gateways() {
        let mut view = sidecar_without_interception("default");
        view.inbound = vec![InboundPort {
            port: 9080,
            protocol: Protocol::Http,
        }];
        let t = translate_for(&bookinfo(""), &view);
        assert!(
            t.resources
                .listeners
                .iter()
                .all(|l| l.name != VIRTUAL_INBOUND_LISTENER)
        );
        assert!(!cluster_names(&t).contains(&"inbound|9080||"));
    }

    #[test]
    fn inbound_passthrough_connects_from_127_0_0_6() {
        let t = translate_for(&bookinfo(""), &with_inbound(&[(9080, Protocol::Http)]));
        let bind = cluster_named(&t, INBOUND_PASSTHROUGH_CLUSTER)
            .upstream_bind_config
            .as_ref()
            .and_then(|b| b.source_address.as_ref())
            .expect("passthrough binds a source address");
        assert_eq!(bind.address, "127.0.0.6");
        assert_eq!(
            bind.port_specifier,
            Some(socket_address::PortSpecifier::PortValue(0))
        );
        // The local app is reached from 127.0.0.1 as before.
        assert!(
            cluster_named(&t, "inbound|9080||")
                .upstream_bind_config
                .is_none()
        );
        assert_envoy_invariants(&t);
    }

    #[test]
    fn inbound_passthrough_exists_even_with_no_local_ports() {
        let t = translate_for(&bookinfo(""), &sidecar("default"));
        assert!(cluster_names(&t).contains(&INBOUND_PASSTHROUGH_CLUSTER));
        assert!(
            listener_named(&t, VIRTUAL_INBOUND_LISTENER)
                .filter_chains
                .is_empty()
        );
    }

    fn with_policies(yaml: &str) -> crate::MeshState {
        bookinfo(yaml)
    }

    fn certified(ports: &[(u16, Protocol)]) -> crate::ProxyView {
        crate::ProxyView {
            workload_certificate: true,
            labels: [("app".to_string(), "reviews".to_string())].into(),
            ..with_inbound(ports)
        }
    }

    fn chain_names(t: &crate::Translation) -> Vec<String> {
        listener_named(t, VIRTUAL_INBOUND_LISTENER)
            .filter_chains
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    const MESH_STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"#;

    #[test]
    fn strict_keeps_only_mesh_tls_and_closes_plaintext_instead_of_passing_it_through() {
        let t = translate_for(
            &with_policies(MESH_STRICT),
            &certified(&[(9080, Protocol::Http), (9090, Protocol::Tcp)]),
        );
        assert_eq!(
            chain_names(&t),
            [
                "tls|http|inbound|9080||",
                "refused|inbound|9080||",
                "refused|tls|inbound|9080||",
                "tls|tcp|inbound|9090||",
                "refused|inbound|9090||",
                "refused|tls|inbound|9090||",
                "tls|InboundPassthroughCluster",
            ]
        );
        let l = listener_named(&t, VIRTUAL_INBOUND_LISTENER);
        // Ports the workload does not declare: mesh TLS passes through,
        // everything else is closed by the default chain.
        let passthrough = l.filter_chains.last().expect("passthrough chain");
        let m = passthrough.filter_chain_match.as_ref().expect("match");
        assert!(m.destination_port.is_none() && m.transport_protocol == "tls");
        assert!(passthrough.transport_socket.is_some());
        let default = l.default_filter_chain.as_ref().expect("default chain");
        assert_eq!(default.name, "refused|InboundPassthroughCluster");
        assert_eq!(default.filters[0].name, rbac::NETWORK_RBAC);
        let refused = &l.filter_chains[1];
        let m = refused.filter_chain_match.as_ref().expect("match");
        // Any plaintext connection to the port lands here, not on the
        // passthrough default chain.
        assert_eq!(m.destination_port.as_ref().map(|p| p.value), Some(9080));
        assert!(m.transport_protocol.is_empty() && m.application_protocols.is_empty());
        assert_eq!(refused.filters[0].name, rbac::NETWORK_RBAC);
        let after_rbac = FilterChain {
            filters: refused.filters[1..].to_vec(),
            ..Default::default()
        };
        assert_eq!(
            tcp_proxy_cluster(&after_rbac).as_deref(),
            Some(names::BLACKHOLE_CLUSTER)
        );
        assert_envoy_invariants(&t);
    }

    #[test]
    fn permissive_is_the_default_and_keeps_both() {
        let t = translate_for(&bookinfo(""), &certified(&[(9080, Protocol::Http)]));
        assert_eq!(
            chain_names(&t),
            ["tls|http|inbound|9080||", "http|inbound|9080||"]
        );
    }

    #[test]
    fn disable_keeps_plaintext_only() {
        let t = translate_for(
            &with_policies(&MESH_STRICT.replace("STRICT", "DISABLE")),
            &certified(&[(9080, Protocol::Http)]),
        );
        assert_eq!(chain_names(&t), ["http|inbound|9080||"]);
    }

    #[test]
    fn port_level_mode_applies_to_its_port_only() {
        let yaml = format!(
            "{MESH_STRICT}---\n{}",
            r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls:
    9090: {mode: PERMISSIVE}
"#
        );
        let t = translate_for(
            &with_policies(&yaml),
            &certified(&[(9080, Protocol::Http), (9090, Protocol::Tcp)]),
        );
        assert_eq!(
            chain_names(&t),
            [
                "tls|http|inbound|9080||",
                "refused|inbound|9080||",
                "refused|tls|inbound|9080||",
                "tls|tcp|inbound|9090||",
                "tcp|inbound|9090||",
                "tls|InboundPassthroughCluster",
            ]
        );
    }

    #[test]
    fn uncertified_strict_fails_closed_with_a_diagnostic() {
        let t = translate_for(
            &with_policies(MESH_STRICT),
            &with_inbound(&[(9080, Protocol::Http), (9091, Protocol::Unknown)]),
        );
        assert_eq!(
            chain_names(&t),
            ["refused|inbound|9080||", "refused|inbound|9091||"]
        );
        let failed = diagnostics_of(&t, crate::DiagnosticKind::PolicyFailedClosed);
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert_eq!(failed[0].object, "PeerAuthentication istio-system/default");
        assert!(
            failed[0].message.contains("authenticate"),
            "{}",
            failed[0].message
        );
        // Nor does anything pass through to undeclared ports.
        let l = listener_named(&t, VIRTUAL_INBOUND_LISTENER);
        let default = l.default_filter_chain.as_ref().expect("default chain");
        assert_eq!(default.name, "refused|InboundPassthroughCluster");
        assert_envoy_invariants(&t);
    }
}
