//! The routes of one service's virtual host: its VirtualService's HTTP
//! rules, or Istio's default route when none applies.

use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, route,
    route_action::{ClusterSpecifier, HashPolicy},
};
use pilotfish_crds::{HttpMatchRequest, HttpRoute};
use pilotfish_model::Service;

use crate::diagnostics::Diagnostic;
use crate::emit::context::Context;
use crate::emit::sidecar::route_destinations::{self, ResolvedDestination, RuleScope};
use crate::emit::sidecar::virtual_service_index::IndexedVirtualService;
use crate::names;
use crate::protobuf;
use crate::provenance;
use crate::resolve::route_match;
use crate::resolve::route_policies::{self, HeaderMutation};
use crate::rule_applicability::{self, MatchConditions, RouteFor};

/// Routes for `service` in route configuration `port`.
pub fn service_routes(
    ctx: &Context,
    service: &Service,
    port: u16,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Route> {
    let selection = ctx.virtual_services.select(&service.hostname);
    diags.extend(selection.diagnostics(&service.hostname));
    let routes = match selection.winner {
        Some(vs) => virtual_service_routes(ctx, vs, port, RouteFor::Mesh, diags),
        None => Vec::new(),
    };
    // No rule for this port (or every rule was invalid): serve it like a
    // service without VirtualService rather than answering 404.
    if routes.is_empty() {
        return vec![default_route(ctx, service, port, diags)];
    }
    routes
}

/// Prefix `/` to the service, no timeout, Istio's default retries.
pub fn default_route(
    ctx: &Context,
    service: &Service,
    port: u16,
    diags: &mut Vec<Diagnostic>,
) -> Route {
    let cluster = names::outbound_cluster(port, None, &service.hostname);
    let policy = ctx.destination_rules.policy(&service.hostname, port, None);
    let hash_policy = policy
        .load_balancer
        .map(|lb| crate::emit::policy::traffic_policy::hash_policies(&lb, diags))
        .unwrap_or_default();
    forward_all(cluster, hash_policy)
}

/// Prefix `/` to `cluster`, no timeout, Istio's default retries (which stay
/// on one host when `hash_policy` pins requests to hosts).
pub fn forward_all(cluster: String, hash_policy: Vec<HashPolicy>) -> Route {
    let action = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster)),
        timeout: Some(protobuf::zero_duration()),
        retry_policy: Some(route_policies::default_retry_policy(
            !hash_policy.is_empty(),
        )),
        hash_policy,
        ..Default::default()
    };
    Route {
        name: "default".into(),
        r#match: Some(route_match::match_all()),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

/// The routes of `vs`'s HTTP rules that apply to `target` on `port`; an
/// invalid rule is reported and skipped.
pub fn virtual_service_routes(
    ctx: &Context,
    vs: &IndexedVirtualService,
    port: u16,
    target: RouteFor,
    diags: &mut Vec<Diagnostic>,
) -> Vec<Route> {
    let scope = RuleScope {
        ctx,
        object: vs.name(),
        namespace: vs.namespace(),
        port,
        target,
    };
    let mut out = Vec::new();
    for (i, rule) in vs.spec.http.iter().enumerate() {
        match rule_routes(&scope, rule, &format!("spec.http[{i}]"), diags) {
            Ok(routes) => out.extend(routes),
            Err(diagnostic) => diags.push(diagnostic),
        }
    }
    let metadata = provenance::metadata([vs.object]);
    for route in &mut out {
        route.metadata = metadata.clone();
    }
    out
}

/// One Envoy route per applicable match of the rule (matches are ORed).
/// Any invalid field skips the whole rule.
fn rule_routes(
    scope: &RuleScope,
    rule: &HttpRoute,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Result<Vec<Route>, Diagnostic> {
    let matches: Vec<(String, Option<&HttpMatchRequest>)> = if rule.match_.is_empty() {
        vec![(String::new(), None)]
    } else {
        rule.match_
            .iter()
            .enumerate()
            .filter(|(_, m)| match_applies(scope, m))
            .map(|(j, m)| (format!("{field}.match[{j}]"), Some(m)))
            .collect()
    };
    if matches.is_empty() {
        return Ok(Vec::new());
    }
    let template = route_template(scope, rule, field, diags)?;
    matches
        .into_iter()
        .map(|(match_field, m)| {
            Ok(Route {
                name: route_name(rule, m),
                r#match: Some(route_match::route_match(m, &scope.object, &match_field)?),
                stat_prefix: m.and_then(|m| m.stat_prefix.clone()).unwrap_or_default(),
                ..template.clone()
            })
        })
        .collect()
}

/// Which of `vs`'s HTTP matches apply to the view on `port`, in order: all
/// that the view's own labels and namespace change in its routes.
pub fn applicable_matches(ctx: &Context, vs: &IndexedVirtualService, port: u16) -> Vec<bool> {
    vs.spec
        .http
        .iter()
        .flat_map(|rule| &rule.match_)
        .map(|m| {
            rule_applicability::match_applies(
                ctx.proxy,
                RouteFor::Mesh,
                vs.namespace(),
                port,
                MatchConditions::from(m),
            )
        })
        .collect()
}

/// Matches bound to another port, other source labels or namespace, or
/// other gateways do not apply to this route configuration.
fn match_applies(scope: &RuleScope, m: &HttpMatchRequest) -> bool {
    rule_applicability::match_applies(
        scope.ctx.proxy,
        scope.target,
        scope.namespace,
        scope.port,
        MatchConditions::from(m),
    )
}

fn route_name(rule: &HttpRoute, m: Option<&HttpMatchRequest>) -> String {
    let rule_name = rule.name.as_deref().unwrap_or_default();
    match m.and_then(|m| m.name.as_deref()) {
        Some(match_name) if !rule_name.is_empty() => format!("{rule_name}.{match_name}"),
        Some(match_name) => match_name.to_string(),
        None => rule_name.to_string(),
    }
}

/// Everything of the route except its match.
fn route_template(
    scope: &RuleScope,
    rule: &HttpRoute,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Result<Route, Diagnostic> {
    let object = scope.object.as_str();
    let mut route = Route::default();
    let (action, destination_headers) = action(scope, rule, field, diags)?;
    route.action = Some(action);
    HeaderMutation::from_headers(rule.headers.as_ref(), object, &format!("{field}.headers"))?
        .apply_to_route(&mut route);
    if let Some(headers) = destination_headers {
        headers.apply_to_route(&mut route);
    }
    if let Some(fault) = &rule.fault
        && let Some(config) = route_policies::fault(fault, object, &format!("{field}.fault"))?
    {
        route
            .typed_per_filter_config
            .insert(names::FAULT.into(), protobuf::any(config));
    }
    if let Some(cors) = &rule.cors_policy {
        let config = route_policies::cors(cors, object, &format!("{field}.corsPolicy"))?;
        route
            .typed_per_filter_config
            .insert(names::CORS.into(), protobuf::any(config));
    }
    Ok(route)
}

/// Redirect, direct response or forwarding, in that order of precedence.
fn action(
    scope: &RuleScope,
    rule: &HttpRoute,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Result<(route::Action, Option<HeaderMutation>), Diagnostic> {
    let object = scope.object.as_str();
    if let Some(redirect) = &rule.redirect {
        let redirect = route_policies::redirect(redirect, object, &format!("{field}.redirect"))?;
        return Ok((route::Action::Redirect(redirect), None));
    }
    if let Some(direct) = &rule.direct_response {
        let direct =
            route_policies::direct_response(direct, object, &format!("{field}.directResponse"))?;
        return Ok((route::Action::DirectResponse(direct), None));
    }
    if rule.route.is_empty() {
        // Delegation is reported as unsupported; anything else is malformed.
        return Err(match rule.delegate {
            Some(_) => Diagnostic::unsupported(object, format!("{field}.delegate")),
            None => Diagnostic::invalid(
                object,
                field,
                "rule has no route, redirect or directResponse",
            ),
        });
    }
    let (action, headers) = forward_action(scope, rule, field, diags)?;
    Ok((route::Action::Route(action), headers))
}

fn forward_action(
    scope: &RuleScope,
    rule: &HttpRoute,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Result<(RouteAction, Option<HeaderMutation>), Diagnostic> {
    let object = scope.object.as_str();
    let target = route_destinations::route_target(scope, &rule.route, field, diags)?;
    let hash_policy = shared_hash_policy(scope, &target.destinations, diags);
    let timeout = match &rule.timeout {
        Some(text) => protobuf::parse_duration(text, object, &format!("{field}.timeout"))?,
        None => protobuf::zero_duration(),
    };
    let retries = rule.retries.as_ref();
    let retry_policy = route_policies::retry_policy(
        retries,
        !hash_policy.is_empty(),
        object,
        &format!("{field}.retries"),
    )?;
    let mut action = RouteAction {
        cluster_specifier: Some(target.specifier),
        timeout: Some(timeout),
        retry_policy,
        request_mirror_policies: route_destinations::mirror_policies(scope, rule, field, diags)?,
        hash_policy,
        ..Default::default()
    };
    if let Some(rewrite) = &rule.rewrite {
        route_policies::apply_rewrite(&mut action, rewrite, object, &format!("{field}.rewrite"))?;
    }
    Ok((action, target.headers))
}

/// Hash keys apply to a split only when every destination agrees on them.
fn shared_hash_policy(
    scope: &RuleScope,
    destinations: &[ResolvedDestination],
    diags: &mut Vec<Diagnostic>,
) -> Vec<envoy_types::pb::envoy::config::route::v3::route_action::HashPolicy> {
    let mut policies = destinations.iter().map(|d| scope.hash_policies(d, diags));
    let Some(first) = policies.next() else {
        return Vec::new();
    };
    if policies.all(|p| p == first) {
        first
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::DiagnosticKind;
    use crate::test_support::*;
    use envoy_types::pb::envoy::config::route::v3::{
        header_matcher::HeaderMatchSpecifier, route_match::PathSpecifier,
    };
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;

    fn vs(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n{spec}"
        )
    }

    /// Istio's samples/bookinfo virtual-service-reviews-test-v2.
    const JASON_TO_V2: &str = r#"
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
"#;

    #[test]
    fn header_match_routes_jason_to_v2_and_everyone_else_to_v1() {
        let t = translate_for(&bookinfo(&vs(JASON_TO_V2)), &sidecar("default"));
        let routes = reviews_routes(&t);
        assert_eq!(routes.len(), 2);
        let jason = &routes[0];
        let m = jason.r#match.clone().unwrap();
        assert_eq!(m.path_specifier, Some(PathSpecifier::Prefix("/".into())));
        assert_eq!(m.headers[0].name, "end-user");
        let Some(HeaderMatchSpecifier::StringMatch(sm)) = &m.headers[0].header_match_specifier
        else {
            panic!()
        };
        assert_eq!(sm.match_pattern, Some(MatchPattern::Exact("jason".into())));
        assert_eq!(route_cluster(jason), reviews_cluster("v2"));
        assert_eq!(route_cluster(&routes[1]), reviews_cluster("v1"));
        assert!(routes[1].r#match.as_ref().unwrap().headers.is_empty());
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        assert_envoy_invariants(&t);
    }

    #[test]
    fn uri_prefix_match() {
        let spec = r#"
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /api/}}, {uri: {exact: /health}}]
    route: [{destination: {host: reviews, subset: v3}}]
"#;
        let t = translate_for(&bookinfo(&vs(spec)), &sidecar("default"));
        let routes = reviews_routes(&t);
        assert_eq!(routes.len(), 2, "one route per ORed match");
        assert_eq!(
            routes[0].r#match.as_ref().unwrap().path_specifier,
            Some(PathSpecifier::Prefix("/api/".into()))
        );
        assert_eq!(
            routes[1].r#match.as_ref().unwrap().path_specifier,
            Some(PathSpecifier::Path("/health".into()))
        );
    }

    #[test]
    fn weights_split_traffic_80_20() {
        let spec = r#"
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v3}, weight: 20}
"#;
        let t = translate_for(&bookinfo(&vs(spec)), &sidecar("default"));
        let routes = reviews_routes(&t);
        let Some(ClusterSpecifier::WeightedClusters(wc)) =
            &route_action(&routes[0]).cluster_specifier
        else {
            panic!("not weighted")
        };
        let split: Vec<_> = wc
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c.weight.map(|w| w.value)))
            .collect();
        assert_eq!(
            split,
            [
                (
                    "outbound|9080|v1|reviews.default.svc.cluster.local",
                    Some(80)
                ),
                (
                    "outbound|9080|v3|reviews.default.svc.cluster.local",
                    Some(20)
                ),
            ]
        );
    }

    #[test]
    fn missing_subset_still_routes_to_the_named_cluster_and_is_reported() {
        let spec = "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews, subset: v9}}]\n";
        let t = translate_for(&bookinfo(&vs(spec)), &sidecar("default"));
        assert_eq!(route_cluster(&reviews_routes(&t)[0]), reviews_cluster("v9"));
        assert_one_diagnostic(
            &t,
            DiagnosticKind::MissingSubset,
            "VirtualService default/reviews",
            "spec.http[0].route[0].destination.subset",
        );
    }

    #[test]
    fn unknown_destination_host_is_reported_but_routed_by_name() {
        let spec = "  hosts: [reviews]\n  http:\n  - route: [{destination: {host: nowhere, port: {number: 80}}}]\n";
        let t = translate_for(&bookinfo(&vs(spec)), &sidecar("default"));
        assert_eq!(
            route_cluster(&reviews_routes(&t)[0]),
            "outbound|80||nowhere.default.svc.cluster.local"
        );
        let unknown = diagnostics_of(&t, DiagnosticKind::UnknownDestination);
        assert_eq!(
            unknown[0].field.as_deref(),
            Some("spec.http[0].route[0].destination.host")
        );
    }

    #[test]
    fn older_virtual_service_wins_and_newer_one_is_shadowed() {
        let older = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: default, creationTimestamp: \"2024-01-01T00:00:00Z\"}\nspec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v1}}]}]}\n---\n";
        let newer = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b, namespace: default, creationTimestamp: \"2024-03-01T00:00:00Z\"}\nspec: {hosts: [reviews], http: [{route: [{destination: {host: reviews, subset: v2}}]}]}\n";
        let t = translate_for(&bookinfo(&format!("{older}{newer}")), &sidecar("default"));
        assert_eq!(route_cluster(&reviews_routes(&t)[0]), reviews_cluster("v1"));
        let shadowed = diagnostics_of(&t, DiagnosticKind::ShadowedVirtualService);
        assert_eq!(shadowed.len(), 1);
        assert_eq!(shadowed[0].object, "VirtualService default/b");
    }

    #[test]
    fn bad_duration_skips_only_its_rule_and_is_reported() {
        let spec = r#"
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    timeout: 5 parsecs
    route: [{destination: {host: reviews, subset: v2}}]
  - timeout: 1.5s
    route: [{destination: {host: reviews, subset: v1}}]
"#;
        let t = translate_for(&bookinfo(&vs(spec)), &sidecar("default"));
        let routes = reviews_routes(&t);
        assert_eq!(routes.len(), 1);
        assert_eq!(route_cluster(&routes[0]), reviews_cluster("v1"));
        assert_eq!(
            route_action(&routes[0]).timeout,
            Some(protobuf::duration(std::time::Duration::from_millis(1500)))
        );
        assert_one_diagnostic(
            &t,
            DiagnosticKind::InvalidField,
            "VirtualService default/reviews",
            "spec.http[0].timeout",
        );
    }

    #[test]
    fn rules_with_a_port_match_go_only_into_that_port_route_config() {
        let spec = "  hosts: [reviews]\n  http:\n  - match: [{port: 8080}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n";
        let t = translate_for(&bookinfo(&vs(spec)), &sidecar("default"));
        let routes = reviews_routes(&t);
        assert_eq!(routes.len(), 1);
        assert_eq!(route_cluster(&routes[0]), reviews_cluster("v1"));
    }

    #[test]
    fn source_labels_select_which_sidecars_get_a_rule() {
        let spec = "  hosts: [reviews]\n  http:\n  - match: [{sourceLabels: {app: productpage}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n";
        let m = bookinfo(&vs(spec));
        let t = translate_for(&m, &sidecar("default"));
        assert_eq!(reviews_routes(&t).len(), 1);
        let t = translate_for(
            &m,
            &sidecar_with_labels("default", &[("app", "productpage"), ("version", "v1")]),
        );
        let routes = reviews_routes(&t);
        assert_eq!(routes.len(), 2);
        assert_eq!(route_cluster(&routes[0]), reviews_cluster("v2"));
    }

    #[test]
    fn fault_cors_headers_rewrite_retries_and_mirror_are_translated() {
        let spec = r#"
  hosts: [reviews]
  http:
  - fault:
      delay: {fixedDelay: 7s, percentage: {value: 50}}
      abort: {httpStatus: 500, percentage: {value: 10}}
    corsPolicy: {allowOrigins: [{exact: "https://example.com"}], allowMethods: [GET, POST], maxAge: 24h}
    headers:
      request: {set: {x-env: test}, remove: [x-debug]}
      response: {add: {x-served-by: mesh}}
    rewrite: {uri: /v2/, authority: reviews.internal}
    retries: {attempts: 4, retryOn: "5xx,503"}
    mirror: {host: ratings}
    mirrorPercentage: {value: 25}
    route: [{destination: {host: reviews, subset: v1}}]
"#;
        let t = translate_for(&bookinfo(&vs(spec)), &sidecar("default"));
        let route = &reviews_routes(&t)[0];
        let fault: HttpFault =
            protobuf::unpack(&route.typed_per_filter_config["envoy.filters.http.fault"]).unwrap();
        assert_eq!(
            fault.delay.unwrap().percentage,
            Some(protobuf::percent(50.0))
        );
        assert!(fault.abort.is_some());
        assert!(
            route
                .typed_per_filter_config
                .contains_key("envoy.filters.http.cors")
        );
        assert_eq!(
            route.request_headers_to_add[0].header.as_ref().unwrap().key,
            "x-env"
        );
        assert_eq!(route.request_headers_to_remove, ["x-debug"]);
        assert_eq!(route.response_headers_to_add.len(), 1);
        let action = route_action(route);
        assert_eq!(action.prefix_rewrite, "/v2/");
        let retry = action.retry_policy.as_ref().unwrap();
        assert_eq!(
            (
                retry.retry_on.as_str(),
                retry.retriable_status_codes.as_slice()
            ),
            ("5xx,retriable-status-codes", &[503][..])
        );
        let mirror = &action.request_mirror_policies[0];
        assert_eq!(
            mirror.cluster,
            "outbound|9080||ratings.default.svc.cluster.local"
        );
        assert_eq!(
            mirror.runtime_fraction.as_ref().unwrap().default_value,
            Some(protobuf::percent(25.0))
        );
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    }

    #[test]
    fn redirect_and_direct_response_replace_forwarding() {
        let spec = r#"
  hosts: [reviews]
  http:
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new, redirectCode: 302}
  - directResponse: {status: 418, body: {string: teapot}}
"#;
        let t = translate_for(&bookinfo(&vs(spec)), &sidecar("default"));
        let routes = reviews_routes(&t);
        let Some(route::Action::Redirect(r)) = &routes[0].action else {
            panic!("not a redirect")
        };
        assert_eq!(r.response_code, 1, "302 Found");
        let Some(route::Action::DirectResponse(d)) = &routes[1].action else {
            panic!("not a direct response")
        };
        assert_eq!(d.status, 418);
    }

    #[test]
    fn unimplemented_fields_are_reported_with_their_path() {
        let spec = r#"
  hosts: [reviews]
  tcp: [{route: [{destination: {host: reviews}}]}]
  http:
  - fault: {delay: {exponentialDelay: 1s}}
    route: [{destination: {host: reviews}}]
"#;
        let t = translate_for(&bookinfo(&vs(spec)), &sidecar("default"));
        let fields: Vec<_> = diagnostics_of(&t, DiagnosticKind::Unsupported)
            .iter()
            .filter_map(|d| d.field.clone())
            .collect();
        assert_eq!(fields, ["spec.http[0].fault.delay.exponentialDelay"]);
    }

    #[test]
    fn consistent_hash_sets_ring_hash_and_route_hash_policy() {
        let dr = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
"#;
        let t = translate_for(&bookinfo(dr), &sidecar("default"));
        let cluster = cluster_named(&t, "outbound|9080||ratings.default.svc.cluster.local");
        assert_eq!(
            cluster.lb_policy,
            envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy::RingHash as i32
        );
        let vh = virtual_host_named(
            route_config_named(&t, "9080"),
            "ratings.default.svc.cluster.local:9080",
        );
        let action = route_action(&vh.routes[0]);
        assert_eq!(action.hash_policy.len(), 1);
        assert!(
            action
                .retry_policy
                .as_ref()
                .unwrap()
                .retry_host_predicate
                .is_empty(),
            "retries stay on the hashed host"
        );
    }
}
