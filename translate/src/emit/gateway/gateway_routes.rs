//! RDS for gateways: `http.<port>` for the plaintext servers of a port,
//! `https.<port>.<portName>.<gateway>.<namespace>` for each terminated one.
//!
//! One virtual host per host the servers take. Unlike on sidecars, every
//! VirtualService bound to the same gateway host contributes its routes,
//! oldest first (Istio merges them on gateways); routes after an earlier
//! VirtualService's catch-all can never match and are reported.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteConfiguration, VirtualHost, route,
    virtual_host::TlsRequirementType,
};

use crate::diagnostics::{Diagnostic, DiagnosticKind};
use crate::emit::context::Context;
use crate::emit::gateway::gateway_bindings;
use crate::emit::gateway::gateway_servers::{self, GatewayServer, PortFamily, ServerKind};
use crate::emit::sidecar::http_routes;
use crate::emit::sidecar::virtual_service_index::{IndexedVirtualService, VirtualServiceIndex};
use crate::protobuf;
use crate::resolve::route_match;
use crate::resolve::route_policies;
use crate::rule_applicability::RouteFor;

/// Route configurations of a gateway proxy, sorted by name.
pub fn build(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<RouteConfiguration> {
    let plan = gateway_servers::plan(ctx, diags);
    let index = ctx.gateway_virtual_services();
    let all_servers: Vec<&GatewayServer> = plan.iter().flat_map(|p| &p.servers).collect();
    diags.extend(gateway_bindings::unbound_diagnostics(
        ctx,
        index.entries(),
        &all_servers,
    ));
    let mut out = Vec::new();
    for port in &plan {
        match port.family {
            PortFamily::Http => {
                let servers: Vec<_> = port.servers.iter().collect();
                let name = servers[0].route_config_name();
                out.push(route_config(ctx, &index, name, port.port, &servers, diags));
            }
            PortFamily::Tls => {
                for server in port.servers.iter().filter(|s| s.kind == ServerKind::Https) {
                    let name = server.route_config_name();
                    out.push(route_config(ctx, &index, name, port.port, &[server], diags));
                }
            }
            PortFamily::Tcp => {}
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What one virtual host is made of.
#[derive(Default)]
struct HostPlan<'i, 'a> {
    /// Some server of the host answers plaintext with a redirect to HTTPS.
    redirect: bool,
    /// Bound VirtualServices, oldest first, with the Gateway they are bound through.
    sources: Vec<(&'i IndexedVirtualService<'a>, &'i str)>,
}

fn route_config<'i, 'a>(
    ctx: &Context,
    index: &'i VirtualServiceIndex<'a>,
    name: String,
    port: u16,
    servers: &[&'i GatewayServer],
    diags: &mut Vec<Diagnostic>,
) -> RouteConfiguration {
    let mut hosts: BTreeMap<String, HostPlan<'i, 'a>> = BTreeMap::new();
    for server in servers {
        if server.redirects_to_https() {
            for host in server.host_names() {
                hosts.entry(host.to_string()).or_default().redirect = true;
            }
            continue;
        }
        for (host, vs) in gateway_bindings::bound(index.entries(), server) {
            let plan = hosts.entry(host).or_default();
            if !plan
                .sources
                .iter()
                .any(|(v, _)| std::ptr::eq(v.object, vs.object))
            {
                plan.sources.push((vs, server.gateway_key.as_str()));
            }
        }
    }
    let mut virtual_hosts: Vec<VirtualHost> = hosts
        .into_iter()
        .filter_map(|(host, plan)| virtual_host(ctx, &host, port, plan, diags))
        .collect();
    if virtual_hosts.is_empty() {
        virtual_hosts.push(not_found_virtual_host(port));
    }
    RouteConfiguration {
        name,
        virtual_hosts,
        validate_clusters: Some(protobuf::bool_value(false)),
        max_direct_response_body_size_bytes: Some(protobuf::u32_value(
            route_policies::MAX_DIRECT_RESPONSE_BODY_BYTES,
        )),
        ..Default::default()
    }
}

fn virtual_host(
    ctx: &Context,
    host: &str,
    port: u16,
    plan: HostPlan,
    diags: &mut Vec<Diagnostic>,
) -> Option<VirtualHost> {
    let mut routes: Vec<Route> = Vec::new();
    // Envoy answers a redirect before looking at routes.
    if !plan.redirect {
        let mut catch_all: Option<String> = None;
        for (vs, gateway) in &plan.sources {
            let before = routes.len();
            routes.extend(http_routes::virtual_service_routes(
                ctx,
                vs,
                port,
                RouteFor::Gateway(gateway),
                diags,
            ));
            if routes.len() == before {
                continue;
            }
            if let Some(earlier) = &catch_all {
                diags.push(shadowed(vs, host, port, earlier));
            }
            if routes[before..]
                .iter()
                .any(|r| r.r#match == Some(route_match::match_all()))
            {
                catch_all.get_or_insert_with(|| vs.name());
            }
        }
        if routes.is_empty() {
            return None;
        }
    }
    Some(VirtualHost {
        name: format!("{host}:{port}"),
        domains: vec![host.to_string()],
        routes,
        require_tls: if plan.redirect {
            TlsRequirementType::All as i32
        } else {
            TlsRequirementType::None as i32
        },
        ..Default::default()
    })
}

fn shadowed(vs: &IndexedVirtualService, host: &str, port: u16, earlier: &str) -> Diagnostic {
    Diagnostic::new(
        DiagnosticKind::ShadowedVirtualService,
        vs.name(),
        format!(
            "gateway host {host} port {port}: its routes come after the catch-all route of {earlier} (older) and never match"
        ),
    )
    .at("spec.http")
}

/// A route configuration with no virtual host would leave requests to
/// Envoy's default; say 404 explicitly, as Istio does.
fn not_found_virtual_host(port: u16) -> VirtualHost {
    VirtualHost {
        name: format!("blackhole:{port}"),
        domains: vec!["*".into()],
        routes: vec![Route {
            name: "default".into(),
            r#match: Some(route_match::match_all()),
            action: Some(route::Action::DirectResponse(DirectResponseAction {
                status: 404,
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    }
}
