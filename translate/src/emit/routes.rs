//! RDS for sidecars: one route configuration per port with HTTP or sniffed
//! services, named after the port, one virtual host per service.

use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, Route, RouteAction, RouteConfiguration, VirtualHost, route,
    route_action::ClusterSpecifier,
};
use std::sync::Arc;

use pilotfish_model::Service;

use crate::claims::{Claim, Claims};
use crate::diagnostics::{Diagnostic, DiagnosticKind, service_object};
use crate::emit::context::Context;
use crate::emit::sidecar::http_routes;
use crate::emit::sidecar::listener_matches::{self, Handling};
use crate::hosts;
use crate::names;
use crate::parts::{
    ClaimedDomains, DomainsKey, RouteConfigKey, RouteConfigPart, RouteConfigParts, VirtualHostKey,
    VirtualHostPart,
};
use crate::protobuf;
use crate::proxy::ProxyKind;
use crate::resolve::route_match;
use crate::resolve::route_policies;

/// Route configurations of a sidecar (or, for gateways, of its Gateway
/// servers), sorted by name.
pub fn build(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<RouteConfigParts> {
    if ctx.proxy.kind == ProxyKind::Router {
        return crate::emit::gateway::gateway_routes::build(ctx, diags)
            .into_iter()
            .map(RouteConfigParts::whole)
            .collect();
    }
    let mut out: Vec<RouteConfigParts> = listener_matches::services_by_port(ctx)
        .into_iter()
        .filter_map(|(port, services)| {
            let routed: Vec<&Service> = services
                .into_iter()
                .filter(|s| is_routed(s, port))
                .collect();
            (!routed.is_empty()).then(|| route_config(ctx, port, routed, diags))
        })
        .collect();
    out.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    out
}

/// HTTP services, and sniffed ones (their HTTP traffic uses the same routes).
fn is_routed(service: &Service, port: u16) -> bool {
    service
        .port(port)
        .is_some_and(|p| matches!(Handling::of(p.protocol), Handling::Http | Handling::Sniffed))
}

/// The view's route configuration for `port`: shared with every view of
/// the generation whose configuration depends on the same.
fn route_config(
    ctx: &Context,
    port: u16,
    mut services: Vec<&Service>,
    diags: &mut Vec<Diagnostic>,
) -> RouteConfigParts {
    // Older services keep contested domains.
    services.sort_by(|a, b| a.precedence().cmp(&b.precedence()));
    let routed: Vec<Routed> = services
        .into_iter()
        .map(|service| {
            let (virtual_service, applicable_matches) = routing_of(ctx, service, port);
            Routed {
                service,
                virtual_service,
                applicable_matches,
            }
        })
        .collect();
    let key = RouteConfigKey {
        namespace: ctx.proxy.namespace.clone(),
        port,
        fallback_cluster: ctx.fallback_cluster(),
        destination_rules: ctx.destination_rules.applied(),
        services: routed
            .iter()
            .map(|r| {
                let address = std::ptr::from_ref(r.service) as usize;
                (address, r.virtual_service, r.applicable_matches.clone())
            })
            .collect(),
    };
    let part = ctx.resolved.parts.route_config(key, || {
        let mut diagnostics = Vec::new();
        let route_config = build_route_config(ctx, port, routed, &mut diagnostics);
        RouteConfigPart {
            route_config,
            diagnostics,
        }
    });
    diags.extend(part.diagnostics.iter().cloned());
    part.route_config.clone()
}

/// A service on the port and what of the view's routing applies to it.
struct Routed<'a> {
    service: &'a Service,
    /// The config position of the VirtualService routing it.
    virtual_service: Option<usize>,
    /// Which of that VirtualService's matches apply to the view.
    applicable_matches: Vec<bool>,
}

fn build_route_config(
    ctx: &Context,
    port: u16,
    routed: Vec<Routed>,
    diags: &mut Vec<Diagnostic>,
) -> RouteConfigParts {
    let services: Vec<&Service> = routed.iter().map(|r| r.service).collect();
    let key = DomainsKey {
        namespace: ctx.proxy.namespace.clone(),
        port,
        services: services
            .iter()
            .map(|s| std::ptr::from_ref(*s) as usize)
            .collect(),
    };
    let claimed = ctx
        .resolved
        .parts
        .domains(key, || claim_domains(ctx, port, &services));
    diags.extend(claimed.diagnostics.iter().cloned());
    let destination_rules = ctx.destination_rules.applied();
    let mut virtual_hosts = Vec::new();
    for (routed, domains) in routed.into_iter().zip(&claimed.domains) {
        if domains.is_empty() {
            continue;
        }
        let service = routed.service;
        let key = VirtualHostKey {
            claimed_domains: Arc::as_ptr(&claimed) as usize,
            destination_rules: destination_rules.clone(),
            service: std::ptr::from_ref(service) as usize,
            virtual_service: routed.virtual_service,
            applicable_matches: routed.applicable_matches,
        };
        let part = ctx.resolved.parts.virtual_host(key, || {
            let mut diagnostics = Vec::new();
            let virtual_host = VirtualHost {
                name: names::virtual_host(&service.hostname, port),
                domains: domains.clone(),
                routes: http_routes::service_routes(ctx, service, port, &mut diagnostics),
                ..Default::default()
            };
            VirtualHostPart {
                virtual_host: Arc::new(virtual_host),
                diagnostics,
            }
        });
        diags.extend(part.diagnostics.iter().cloned());
        virtual_hosts.push(part.virtual_host.clone());
    }
    virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
    let fallback = ctx.fallback_cluster();
    virtual_hosts.push(
        ctx.resolved
            .parts
            .catch_all(fallback, || catch_all_virtual_host(fallback)),
    );
    RouteConfigParts {
        config: RouteConfiguration {
            name: names::route_config(port),
            // A route to a subset cluster that does not exist yet answers
            // 503 instead of getting the whole configuration rejected.
            validate_clusters: Some(protobuf::bool_value(false)),
            max_direct_response_body_size_bytes: Some(protobuf::u32_value(
                route_policies::MAX_DIRECT_RESPONSE_BODY_BYTES,
            )),
            ..Default::default()
        },
        virtual_hosts,
    }
}

/// The position of the VirtualService routing `service` for the view, and
/// which of its matches apply to the view on `port`.
fn routing_of(ctx: &Context, service: &Service, port: u16) -> (Option<usize>, Vec<bool>) {
    let winner = ctx.virtual_services.select(&service.hostname).winner;
    let applicable_matches = winner
        .map(|vs| http_routes::applicable_matches(ctx, vs, port))
        .unwrap_or_default();
    (winner.map(|vs| vs.position), applicable_matches)
}

/// Each service's domains that no older service claimed (`services` in
/// precedence order). Envoy rejects a route configuration in which two
/// virtual hosts share a domain.
fn claim_domains(ctx: &Context, port: u16, services: &[&Service]) -> ClaimedDomains {
    let mut owners: Claims<String, &Service> = Claims::default();
    let mut diagnostics = Vec::new();
    let domains = services
        .iter()
        .map(|&service| {
            let mut won = Vec::new();
            for domain in hosts::domains(service, port, &ctx.proxy.namespace, ctx.domain_suffix()) {
                let domain = domain.to_ascii_lowercase();
                match owners.claim(domain.clone(), service) {
                    Claim::Won => won.push(domain),
                    Claim::Again => {}
                    Claim::Lost { winner } => {
                        diagnostics.push(domain_conflict(service, winner, port, &domain))
                    }
                }
            }
            won
        })
        .collect();
    ClaimedDomains {
        domains,
        diagnostics,
    }
}

fn domain_conflict(loser: &Service, winner: &Service, port: u16, domain: &str) -> Diagnostic {
    Diagnostic::new(
        DiagnosticKind::ListenerConflict,
        service_object(&loser.hostname),
        format!(
            "port {port}, domain {domain} already routes to service {} (older); requests for it go there",
            winner.hostname
        ),
    )
}

/// Requests for hosts that are not services: passed through, or refused
/// with 502 under REGISTRY_ONLY.
fn catch_all_virtual_host(fallback_cluster: &str) -> VirtualHost {
    let (name, action) = if fallback_cluster == names::PASSTHROUGH_CLUSTER {
        let forward = RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(names::PASSTHROUGH_CLUSTER.into())),
            timeout: Some(protobuf::zero_duration()),
            ..Default::default()
        };
        (names::ALLOW_ANY_VIRTUAL_HOST, route::Action::Route(forward))
    } else {
        let refuse = DirectResponseAction {
            status: 502,
            ..Default::default()
        };
        (
            names::BLOCK_ALL_VIRTUAL_HOST,
            route::Action::DirectResponse(refuse),
        )
    };
    VirtualHost {
        name: name.into(),
        domains: vec!["*".into()],
        routes: vec![Route {
            name: name.into(),
            r#match: Some(route_match::match_all()),
            action: Some(action),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::OutboundTrafficPolicy;
    use crate::resolve::route_policies::DEFAULT_RETRY_ON;
    use crate::test_support::*;
    use pilotfish_model::Protocol;

    #[test]
    fn one_route_config_per_http_port_named_by_the_port() {
        let t = translate_for(&bookinfo(""), &sidecar("default"));
        let names: Vec<_> = t.resources.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["9080"]);
        let rc = route_config_named(&t, "9080");
        assert_eq!(rc.validate_clusters, Some(protobuf::bool_value(false)));
        let vhosts: Vec<_> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            vhosts,
            [
                "details.default.svc.cluster.local:9080",
                "productpage.default.svc.cluster.local:9080",
                "ratings.default.svc.cluster.local:9080",
                "reviews.default.svc.cluster.local:9080",
                "allow_any",
            ]
        );
        assert_envoy_invariants(&t);
    }

    /// Resolution NONE forwards to the original destination, which without
    /// interception is the sidecar's own listener: such a host gets no
    /// virtual host (the catch-all refuses it) instead of a request loop.
    #[test]
    fn without_interception_resolution_none_hosts_get_no_virtual_host() {
        let mut outside = service("outside.example.com", &[], &[(8080, Protocol::Http)]);
        outside.resolution = pilotfish_model::Resolution::Passthrough;
        let web = service(
            "web.default.svc.cluster.local",
            &["10.0.0.1"],
            &[(8080, Protocol::Http)],
        );
        let m = mesh(vec![outside, web], vec![], &[]);
        let vhost_names = |t: &crate::Translation| -> Vec<String> {
            route_config_named(t, "8080")
                .virtual_hosts
                .iter()
                .map(|v| v.name.clone())
                .collect()
        };
        let intercepted = translate_for(&m, &sidecar("default"));
        assert!(vhost_names(&intercepted).contains(&"outside.example.com:8080".to_string()));

        let t = translate_for(&m, &sidecar_without_interception("default"));
        assert_eq!(
            vhost_names(&t),
            ["web.default.svc.cluster.local:8080", "block_all"]
        );
        let unreachable = diagnostics_of(&t, crate::DiagnosticKind::Unreachable);
        assert_eq!(unreachable.len(), 1);
        assert_eq!(unreachable[0].object, "service outside.example.com");
        assert_envoy_invariants(&t);
    }

    #[test]
    fn tcp_only_ports_get_no_route_config() {
        let m = one_service_mesh(
            "db.default.svc.cluster.local",
            &["10.0.0.1"],
            5432,
            Protocol::Tcp,
        );
        let t = translate_for(&m, &sidecar("default"));
        assert!(t.resources.routes.is_empty());
    }

    #[test]
    fn default_route_has_no_timeout_and_istio_default_retries() {
        let t = translate_for(&bookinfo(""), &sidecar("default"));
        let routes = reviews_routes(&t);
        assert_eq!(routes.len(), 1);
        let route = &routes[0];
        assert_eq!(route.r#match, Some(route_match::match_all()));
        assert_eq!(
            route_cluster(route),
            "outbound|9080||reviews.default.svc.cluster.local"
        );
        let action = route_action(route);
        assert_eq!(action.timeout, Some(protobuf::zero_duration()));
        let retry = action.retry_policy.as_ref().unwrap();
        assert_eq!(retry.retry_on, DEFAULT_RETRY_ON);
        assert_eq!(retry.num_retries, Some(protobuf::u32_value(2)));
    }

    #[test]
    fn domains_from_the_same_namespace_include_short_names() {
        let t = translate_for(&bookinfo(""), &sidecar("default"));
        let vh = reviews_virtual_host(&t);
        for d in [
            "reviews",
            "reviews:9080",
            "reviews.default",
            "reviews.default.svc:9080",
            "10.0.0.4:9080",
        ] {
            assert!(vh.domains.contains(&d.to_string()), "missing {d}");
        }
    }

    #[test]
    fn domains_from_another_namespace_omit_the_bare_name() {
        let t = translate_for(&bookinfo(""), &sidecar("other"));
        let vh = reviews_virtual_host(&t);
        assert!(!vh.domains.contains(&"reviews".to_string()));
        assert!(vh.domains.contains(&"reviews.default".to_string()));
    }

    #[test]
    fn shared_domains_stay_with_the_older_service_and_are_never_duplicated() {
        let m = mesh(
            vec![
                created(
                    service(
                        "a.default.svc.cluster.local",
                        &["10.0.0.5"],
                        &[(80, Protocol::Http)],
                    ),
                    "2024-01-01T00:00:00Z",
                ),
                created(
                    service(
                        "b.default.svc.cluster.local",
                        &["10.0.0.5"],
                        &[(80, Protocol::Http)],
                    ),
                    "2024-02-01T00:00:00Z",
                ),
            ],
            vec![],
            &[],
        );
        let t = translate_for(&m, &sidecar("default"));
        let rc = route_config_named(&t, "80");
        let a = virtual_host_named(rc, "a.default.svc.cluster.local:80");
        let b = virtual_host_named(rc, "b.default.svc.cluster.local:80");
        assert!(a.domains.contains(&"10.0.0.5".to_string()));
        assert!(!b.domains.contains(&"10.0.0.5".to_string()));
        let conflicts = diagnostics_of(&t, DiagnosticKind::ListenerConflict);
        assert_eq!(conflicts.len(), 2, "VIP and VIP:port");
        assert!(
            conflicts
                .iter()
                .all(|d| d.object == "service b.default.svc.cluster.local")
        );
        assert_envoy_invariants(&t);
    }

    #[test]
    fn catch_all_passes_through_or_blocks_per_outbound_policy() {
        let mut m = bookinfo("");
        let t = translate_for(&m, &sidecar("default"));
        let allow = virtual_host_named(route_config_named(&t, "9080"), "allow_any");
        assert_eq!(allow.domains, ["*"]);
        assert_eq!(route_cluster(&allow.routes[0]), "PassthroughCluster");

        m.mesh.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly;
        let t = translate_for(&m, &sidecar("default"));
        let block = virtual_host_named(route_config_named(&t, "9080"), "block_all");
        let Some(route::Action::DirectResponse(d)) = &block.routes[0].action else {
            panic!("not a direct response")
        };
        assert_eq!(d.status, 502);
    }
}
