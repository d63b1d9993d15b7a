//! LDS for gateways: one real listener `0.0.0.0_<port>` per server port.
//!
//! - HTTP ports: one HCM, routes from `http.<port>`.
//! - TLS ports: a chain per terminated server (its SNI names, its TLS
//!   context, then HTTP routes from its own route configuration for HTTPS,
//!   or the first bound `tcp` rule for protocol TLS), and a chain per SNI
//!   set of the VirtualService `tls` rules bound to passthrough servers
//!   (tcp_proxy, TLS untouched). Unclaimed SNI is closed.
//! - TCP ports: tcp_proxy per the first applicable VirtualService `tcp`
//!   rule bound to the server, else closed.

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use pilotfish_crds::RouteDestination;

use crate::claims::{Claim, Claims};
use crate::diagnostics::{Diagnostic, DiagnosticKind};
use crate::emit::context::Context;
use crate::emit::envoy::filters;
use crate::emit::gateway::gateway_bindings;
use crate::emit::gateway::gateway_servers::{
    self, GatewayServer, PortFamily, PortServers, ServerKind, SniHolder, SniRank,
};
use crate::emit::gateway::gateway_tls;
use crate::emit::sidecar::route_destinations::RuleScope;
use crate::emit::sidecar::tcp_routes::{self, L4Chain, Target};
use crate::emit::sidecar::virtual_service_index::{IndexedVirtualService, VirtualServiceIndex};
use crate::names;
use crate::protobuf;
use crate::provenance;
use crate::rule_applicability::{self, MatchConditions, RouteFor};

/// Listeners of a gateway proxy, sorted by name.
pub fn build(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<Listener> {
    let index = ctx.gateway_virtual_services();
    let mut out: Vec<Listener> = gateway_servers::plan(ctx, diags)
        .iter()
        .map(|port| port_listener(ctx, &index, port, diags))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn port_listener(
    ctx: &Context,
    index: &VirtualServiceIndex,
    port: &PortServers,
    diags: &mut Vec<Diagnostic>,
) -> Listener {
    let mut listener = Listener {
        name: names::port_listener(names::WILDCARD_ADDRESS, port.port),
        address: Some(protobuf::socket_address(names::WILDCARD_ADDRESS, port.port)),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    };
    match port.family {
        PortFamily::Http => {
            let route_config = port.servers[0].route_config_name();
            listener.filter_chains = vec![FilterChain {
                name: route_config.clone(),
                filters: vec![filters::gateway_connection_manager(
                    port.port,
                    &route_config,
                )],
                metadata: provenance::metadata(port.servers.iter().map(|s| s.gateway)),
                ..Default::default()
            }];
        }
        PortFamily::Tls => {
            listener.listener_filters = vec![filters::tls_inspector()];
            let mut sni_owners = port.sni_owners.clone();
            for server in &port.servers {
                match server.kind {
                    ServerKind::Https => listener.filter_chains.push(terminated_chain(server)),
                    ServerKind::TlsTerminated => listener
                        .filter_chains
                        .extend(terminated_tcp_chain(ctx, index, server, diags)),
                    ServerKind::Passthrough => listener.filter_chains.extend(passthrough_chains(
                        ctx,
                        index,
                        server,
                        &mut sni_owners,
                        diags,
                    )),
                    ServerKind::Http | ServerKind::Tcp => {}
                }
            }
            listener.default_filter_chain = Some(closed_chain());
        }
        PortFamily::Tcp => match tcp_chain(ctx, index, &port.servers[0], diags) {
            Some(chain) => listener.filter_chains = vec![chain],
            None => listener.default_filter_chain = Some(closed_chain()),
        },
    }
    listener
}

/// Connections nobody routes are closed (BlackHoleCluster).
fn closed_chain() -> FilterChain {
    FilterChain {
        name: names::BLACKHOLE_CLUSTER.into(),
        filters: vec![filters::tcp_proxy(names::BLACKHOLE_CLUSTER)],
        ..Default::default()
    }
}

fn terminated_chain(server: &GatewayServer) -> FilterChain {
    let route_config = server.route_config_name();
    FilterChain {
        name: route_config.clone(),
        filter_chain_match: Some(FilterChainMatch {
            server_names: server.server_names.clone(),
            ..Default::default()
        }),
        transport_socket: gateway_tls::transport_socket(server),
        filters: vec![filters::gateway_connection_manager(
            server.port,
            &route_config,
        )],
        metadata: provenance::metadata([server.gateway]),
        ..Default::default()
    }
}

/// TLS terminated with the server's certificate, then the bytes forwarded
/// per the first bound `tcp` rule; without one, nothing is added and the
/// port's default chain closes the connection.
fn terminated_tcp_chain(
    ctx: &Context,
    index: &VirtualServiceIndex,
    server: &GatewayServer,
    diags: &mut Vec<Diagnostic>,
) -> Option<FilterChain> {
    let mut chain = tcp_chain(ctx, index, server, diags)?;
    chain.filter_chain_match = Some(FilterChainMatch {
        server_names: server.server_names.clone(),
        ..Default::default()
    });
    chain.transport_socket = gateway_tls::transport_socket(server);
    Some(chain)
}

fn scope<'c, 'a>(
    ctx: &'c Context<'a>,
    vs: &'c IndexedVirtualService,
    server: &'c GatewayServer,
) -> RuleScope<'c, 'a> {
    RuleScope {
        ctx,
        object: vs.name(),
        namespace: vs.namespace(),
        port: server.port,
        target: RouteFor::Gateway(&server.gateway_key),
    }
}

/// The VirtualServices bound to `server`, each once, oldest first.
fn bound_virtual_services<'i, 'a>(
    index: &'i VirtualServiceIndex<'a>,
    server: &GatewayServer,
) -> Vec<&'i IndexedVirtualService<'a>> {
    let mut out: Vec<&IndexedVirtualService> = Vec::new();
    for (_, vs) in gateway_bindings::bound(index.entries(), server) {
        if !out.iter().any(|v| std::ptr::eq(v.object, vs.object)) {
            out.push(vs);
        }
    }
    out
}

/// Chains of the `tls` rules bound to a passthrough server: SNI names the
/// rule matches within the server's hosts, older VirtualServices and
/// earlier rules first.
fn passthrough_chains(
    ctx: &Context,
    index: &VirtualServiceIndex,
    server: &GatewayServer,
    sni_owners: &mut Claims<String, SniHolder>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<FilterChain> {
    let mut out = Vec::new();
    for (position, vs) in bound_virtual_services(index, server)
        .into_iter()
        .enumerate()
    {
        let scope = scope(ctx, vs, server);
        for (i, rule) in vs.spec.tls.iter().enumerate() {
            let field = format!("spec.tls[{i}]");
            let mut names = Vec::new();
            for m in &rule.match_ {
                if !rule_applicability::match_applies(
                    ctx.proxy,
                    scope.target,
                    vs.namespace(),
                    server.port,
                    MatchConditions::from(m),
                ) {
                    continue;
                }
                for sni in &m.sni_hosts {
                    let sni = sni.trim().to_ascii_lowercase();
                    names.extend(
                        server
                            .host_names()
                            .filter_map(|h| gateway_bindings::intersect(h, &sni)),
                    );
                }
            }
            // `*` is not an SNI pattern Envoy takes: it is the chain for any
            // SNI, claimed as "" like a terminated server for host `*`.
            if names.iter().any(|n| n == "*") {
                names = vec![String::new()];
            }
            names.sort();
            names.dedup();
            if names.is_empty() {
                continue;
            }
            let Some(target) = rule_target(&scope, &rule.route, &field, diags) else {
                continue;
            };
            let owner = SniHolder {
                rank: SniRank::Rule(server.rank, position, i),
                label: format!("{} {field}", vs.name()),
            };
            let claimed = claim(
                sni_owners,
                names,
                owner,
                server.port,
                &vs.name(),
                &field,
                diags,
            );
            if claimed.is_empty() {
                continue;
            }
            out.push(L4Chain::filter_chain(&L4Chain {
                name: format!("tls|{}|{}|{field}", server.port, vs.name()),
                ranges: Vec::new(),
                server_names: claimed.into_iter().filter(|n| !n.is_empty()).collect(),
                target,
                service_cluster: format!("gateway_{}", server.port),
                metadata: provenance::metadata([vs.object, server.gateway]),
            }));
        }
    }
    out
}

/// Takes the SNI names nobody holds; the rest are reported.
fn claim(
    owners: &mut Claims<String, SniHolder>,
    names: Vec<String>,
    owner: SniHolder,
    port: u16,
    object: &str,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<String> {
    let mut kept = Vec::new();
    for name in names {
        match owners.claim(name.clone(), owner.clone()) {
            Claim::Lost { winner } => diags.push(
                Diagnostic::new(
                    DiagnosticKind::ListenerConflict,
                    object,
                    format!(
                        "gateway port {port}: SNI {name} is already routed by {} (older); this rule does not get it",
                        winner.label
                    ),
                )
                .at(field.to_string()),
            ),
            Claim::Won | Claim::Again => kept.push(name),
        }
    }
    kept
}

/// The chain of a TCP server: the first bound `tcp` rule whose match
/// applies (a rule without matches applies to every connection).
fn tcp_chain(
    ctx: &Context,
    index: &VirtualServiceIndex,
    server: &GatewayServer,
    diags: &mut Vec<Diagnostic>,
) -> Option<FilterChain> {
    for vs in bound_virtual_services(index, server) {
        let scope = scope(ctx, vs, server);
        for (i, rule) in vs.spec.tcp.iter().enumerate() {
            let applies = rule.match_.is_empty()
                || rule.match_.iter().any(|m| {
                    rule_applicability::match_applies(
                        ctx.proxy,
                        scope.target,
                        vs.namespace(),
                        server.port,
                        MatchConditions::from(m),
                    )
                });
            if !applies {
                continue;
            }
            let field = format!("spec.tcp[{i}]");
            let target = rule_target(&scope, &rule.route, &field, diags)?;
            return Some(L4Chain::filter_chain(&L4Chain {
                name: format!("tcp|{}|{}|{field}", server.port, vs.name()),
                ranges: Vec::new(),
                server_names: Vec::new(),
                target,
                service_cluster: format!("gateway_{}", server.port),
                metadata: provenance::metadata([vs.object, server.gateway]),
            }));
        }
    }
    None
}

fn rule_target(
    scope: &RuleScope,
    routes: &[RouteDestination],
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Target> {
    match tcp_routes::target(scope, routes, field, diags) {
        Ok(target) => Some(target),
        Err(diagnostic) => {
            diags.push(diagnostic);
            None
        }
    }
}
