//! VirtualService checks.

use super::{Report, hosts, is_dns1123_label, is_dns1123_subdomain};
use crate::virtual_service::{
    CorsPolicy, Destination, Headers, HttpFaultInjection, HttpMatchRequest, HttpRoute,
    HttpRouteDestination, RouteDestination, VirtualServiceSpec,
};

/// Envoy's HTTP and gRPC retry conditions, which Istio passes through.
const RETRY_CONDITIONS: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The largest direct response body the route configuration allows
/// (`max_direct_response_body_size_bytes` in the routes Pilotfish writes).
pub const MAX_DIRECT_RESPONSE_BODY: usize = 1 << 20;

const GRPC_STATUSES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The gRPC status code of `name` (a name in any case, or the number).
pub fn grpc_status_code(name: &str) -> Option<u32> {
    let name = name.trim();
    if let Ok(code) = name.parse::<u32>() {
        return (code < 17).then_some(code);
    }
    let position = GRPC_STATUSES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))?;
    u32::try_from(position).ok()
}

/// A comma-separated list of retry conditions or HTTP status codes.
fn retry_conditions(field: &str, retry_on: &str, r: &mut Report) {
    for condition in retry_on.split(',').map(str::trim) {
        let status_code = condition
            .parse::<u16>()
            .is_ok_and(|code| (100..=599).contains(&code));
        if !status_code && !RETRY_CONDITIONS.contains(&condition) {
            r.error(
                field,
                format!("unknown retry condition {condition:?} (an Envoy retry policy or an HTTP status code)"),
            );
        }
    }
}

pub(super) fn check(spec: &VirtualServiceSpec, r: &mut Report) {
    // Istio treats a VirtualService without hosts as a delegate, which may
    // only be reached through another VirtualService's HTTP routes.
    let delegate = spec.hosts.is_empty();
    if delegate {
        if !spec.gateways.is_empty() {
            r.error(
                "spec.gateways",
                "a VirtualService without hosts is a delegate and must not name gateways",
            );
        }
        if !spec.tls.is_empty() || !spec.tcp.is_empty() {
            r.error(
                "spec.hosts",
                "at least one host is required (a delegate may only have http routes)",
            );
        }
    }
    // Sidecars apply a VirtualService with no gateways, or the `mesh` one.
    let bound_to_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
    for (i, host) in spec.hosts.iter().enumerate() {
        if let Err(e) = hosts::host_or_ip(host) {
            r.error(format!("spec.hosts[{i}]"), e);
        } else if host == "*" && bound_to_mesh {
            r.error(
                format!("spec.hosts[{i}]"),
                "'*' is not allowed for a VirtualService that applies to sidecars (no gateways, or 'mesh')",
            );
        }
    }
    if spec.http.is_empty() && spec.tls.is_empty() && spec.tcp.is_empty() {
        r.error(
            "spec",
            "at least one of http, tls or tcp routes is required",
        );
    }
    for (i, route) in spec.http.iter().enumerate() {
        http_route(&format!("spec.http[{i}]"), route, delegate, r);
    }
    for (i, gateway) in spec.gateways.iter().enumerate() {
        if let Err(e) = gateway_name(gateway) {
            r.error(format!("spec.gateways[{i}]"), e);
        }
    }
    r.export_to(&spec.export_to);
    for (i, tls) in spec.tls.iter().enumerate() {
        let at = format!("spec.tls[{i}]");
        if tls.match_.is_empty() {
            r.error(
                format!("{at}.match"),
                "a TLS route needs at least one match",
            );
        }
        for (j, m) in tls.match_.iter().enumerate() {
            if m.sni_hosts.is_empty() {
                r.error(
                    format!("{at}.match[{j}].sniHosts"),
                    "at least one SNI host is required",
                );
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                sni_host(
                    &format!("{at}.match[{j}].sniHosts[{k}]"),
                    sni,
                    &spec.hosts,
                    r,
                );
            }
        }
        l4_routes(&at, &tls.route, r);
    }
    for (i, tcp) in spec.tcp.iter().enumerate() {
        l4_routes(&format!("spec.tcp[{i}]"), &tcp.route, r);
    }
}

fn http_route(at: &str, route: &HttpRoute, in_delegate: bool, r: &mut Report) {
    for (j, m) in route.match_.iter().enumerate() {
        http_match(&format!("{at}.match[{j}]"), m, r);
    }
    let actions = [
        ("route", !route.route.is_empty()),
        ("redirect", route.redirect.is_some()),
        ("directResponse", route.direct_response.is_some()),
        ("delegate", route.delegate.is_some()),
    ];
    let set: Vec<&str> = actions
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
    match set.as_slice() {
        [] => r.error(
            at,
            "one of route, redirect, directResponse or delegate is required",
        ),
        [_] => {}
        many => r.error(at, format!("{} cannot be combined", many.join(" and "))),
    }
    if let Some(delegate) = &route.delegate {
        if in_delegate {
            r.error(
                format!("{at}.delegate"),
                "a delegate VirtualService cannot delegate again",
            );
        }
        if delegate.name.as_deref().unwrap_or_default().is_empty() {
            r.error(
                format!("{at}.delegate.name"),
                "the delegate's name is required",
            );
        }
    }
    for (k, dest) in route.route.iter().enumerate() {
        http_destination(&format!("{at}.route[{k}]"), dest, r);
    }
    if let Some(resp) = &route.direct_response {
        if !(200..=599).contains(&resp.status) {
            r.error(
                format!("{at}.directResponse.status"),
                format!("status {} must be in 200..=599", resp.status),
            );
        }
        if let Some(text) = resp.body.as_ref().and_then(|b| b.string.as_ref())
            && text.len() > MAX_DIRECT_RESPONSE_BODY
        {
            r.error(
                format!("{at}.directResponse.body.string"),
                format!("the body is larger than {MAX_DIRECT_RESPONSE_BODY} bytes"),
            );
        }
        if let Some(body) = &resp.body {
            let set = [
                ("string", body.string.is_some()),
                ("bytes", body.bytes.is_some()),
            ];
            r.at_most_one(&format!("{at}.directResponse.body"), &set);
        }
    }
    if let Some(redirect) = &route.redirect {
        let set = [
            ("port", redirect.port.is_some()),
            ("derivePort", redirect.derive_port.is_some()),
        ];
        r.at_most_one(&format!("{at}.redirect"), &set);
        // Istio takes any 3xx; Envoy's redirect action knows only these.
        if let Some(code) = redirect.redirect_code
            && ![301, 302, 303, 307, 308].contains(&code)
        {
            r.error(
                format!("{at}.redirect.redirectCode"),
                format!("redirect code {code} is not one of 301, 302, 303, 307, 308"),
            );
        }
    }
    if let Some(rewrite) = &route.rewrite
        && let Some(regex_rewrite) = &rewrite.uri_regex_rewrite
    {
        if rewrite.uri.is_some() {
            r.error(
                format!("{at}.rewrite"),
                "uri and uriRegexRewrite cannot be combined",
            );
        }
        r.regex(
            &format!("{at}.rewrite.uriRegexRewrite.match"),
            &regex_rewrite.match_,
        );
    }
    r.at(at).duration_min_1ms("timeout", route.timeout.as_ref());
    if let Some(retries) = &route.retries {
        r.int_range(
            &format!("{at}.retries.attempts"),
            retries.attempts.map(i64::from),
            0,
            i64::MAX,
        );
        if let Some(retry_on) = &retries.retry_on {
            retry_conditions(&format!("{at}.retries.retryOn"), retry_on, r);
        }
        let mut retries_at = r.at(format!("{at}.retries"));
        retries_at.duration_min_1ms("perTryTimeout", retries.per_try_timeout.as_ref());
        retries_at.duration_min_1ms("backoff", retries.backoff.as_ref());
    }
    if let Some(fault) = &route.fault {
        fault_injection(&format!("{at}.fault"), fault, r);
    }
    if let Some(mirror) = &route.mirror {
        destination(&format!("{at}.mirror"), mirror, r);
    }
    for (k, mirror) in route.mirrors.iter().enumerate() {
        destination(
            &format!("{at}.mirrors[{k}].destination"),
            &mirror.destination,
            r,
        );
        r.at(format!("{at}.mirrors[{k}]"))
            .percentage("percentage", mirror.percentage.as_ref());
    }
    header_operations(&format!("{at}.headers"), route.headers.as_ref(), r);
    let mut route_at = r.at(at);
    route_at.percentage("mirrorPercentage", route.mirror_percentage.as_ref());
    route_at.percent("mirrorPercent", route.mirror_percent);
    route_at.percent("mirror_percent", route.mirror_percent_legacy);
    if let Some(cors) = &route.cors_policy {
        cors_policy(&format!("{at}.corsPolicy"), cors, r);
    }
}

fn http_match(at: &str, m: &HttpMatchRequest, r: &mut Report) {
    let single = [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ];
    for (name, value) in single {
        if let Some(value) = value {
            r.string_match(&format!("{at}.{name}"), value, false);
        }
    }
    let maps = [
        ("headers", &m.headers),
        ("queryParams", &m.query_params),
        ("withoutHeaders", &m.without_headers),
    ];
    for (name, map) in maps {
        for (key, value) in map {
            let field = format!("{at}.{name}.{key}");
            if name == "queryParams" {
                if key.is_empty() {
                    r.error(&field, "a query parameter name must not be empty");
                }
            } else {
                r.header_name(&field, key);
            }
            r.string_match(&field, value, true);
        }
    }
    if let Some(port) = m.port {
        r.port(&format!("{at}.port"), Some(port));
    }
}

fn http_destination(at: &str, dest: &HttpRouteDestination, r: &mut Report) {
    weighted_destination(at, &dest.destination, dest.weight, r);
    header_operations(&format!("{at}.headers"), dest.headers.as_ref(), r);
}

fn header_operations(at: &str, headers: Option<&Headers>, r: &mut Report) {
    let Some(headers) = headers else {
        return;
    };
    for (side, ops) in [
        ("request", &headers.request),
        ("response", &headers.response),
    ] {
        if let Some(ops) = ops {
            r.header_operations(&format!("{at}.{side}"), ops);
        }
    }
}

fn l4_routes(at: &str, routes: &[RouteDestination], r: &mut Report) {
    for (k, dest) in routes.iter().enumerate() {
        let at = format!("{at}.route[{k}]");
        weighted_destination(&at, &dest.destination, dest.weight, r);
    }
}

/// HTTP and TCP/TLS route destinations differ only in their other fields.
fn weighted_destination(at: &str, dest: &Destination, weight: Option<i32>, r: &mut Report) {
    destination(&format!("{at}.destination"), dest, r);
    r.at(at).percent("weight", weight);
}

/// An SNI host must be a host name that one of the VirtualService's hosts
/// covers, as Istio requires (an IP address passes, as Istio only warns).
fn sni_host(at: &str, sni: &str, vs_hosts: &[String], r: &mut Report) {
    // Istio only warns about an IP address as SNI; Envoy takes it.
    if sni.parse::<std::net::IpAddr>().is_ok() {
        return;
    }
    if let Err(e) = hosts::wildcard_domain(sni) {
        r.error(at, e);
    } else if !vs_hosts.iter().any(|h| hosts::is_subset_of(sni, h)) {
        r.error(
            at,
            format!(
                "SNI host {sni:?} is not covered by any of the VirtualService's hosts [{}]",
                vs_hosts.join(", ")
            ),
        );
    }
}

/// `mesh`, a Gateway name, or `namespace/name` (also the Gateway's FQDN).
fn gateway_name(gateway: &str) -> Result<(), String> {
    let name = match gateway.split_once('/') {
        Some((ns, name)) => {
            if !is_dns1123_label(ns) {
                return Err(format!("{gateway:?}: {ns:?} is not a namespace name"));
            }
            name
        }
        None => gateway,
    };
    if is_dns1123_subdomain(name) {
        Ok(())
    } else {
        Err(format!(
            "{gateway:?} is not 'mesh', a Gateway name or namespace/name"
        ))
    }
}

fn destination(at: &str, dest: &Destination, r: &mut Report) {
    if dest.host.is_empty() {
        r.error(format!("{at}.host"), "a destination needs a host");
    } else {
        r.host(&format!("{at}.host"), &dest.host, hosts::host_or_ip);
    }
    if let Some(port) = &dest.port
        && port.number.is_some()
    {
        r.port(&format!("{at}.port.number"), port.number);
    }
}

fn fault_injection(at: &str, fault: &HttpFaultInjection, r: &mut Report) {
    let mut fault_at = r.at(at);
    if let Some(delay) = &fault.delay {
        let set = [
            ("fixedDelay", delay.fixed_delay.is_some()),
            ("exponentialDelay", delay.exponential_delay.is_some()),
        ];
        fault_at.at_most_one("delay", &set);
        fault_at.duration_min_1ms("delay.fixedDelay", delay.fixed_delay.as_ref());
        fault_at.duration_min_1ms("delay.exponentialDelay", delay.exponential_delay.as_ref());
        fault_at.percentage("delay.percentage", delay.percentage.as_ref());
        fault_at.percent("delay.percent", delay.percent);
    }
    if let Some(abort) = &fault.abort {
        let set = [
            ("httpStatus", abort.http_status.is_some()),
            ("grpcStatus", abort.grpc_status.is_some()),
            ("http2Error", abort.http2_error.is_some()),
        ];
        fault_at.at_most_one("abort", &set);
        if let Some(name) = &abort.grpc_status
            && grpc_status_code(name).is_none()
        {
            fault_at.report.error(
                fault_at.field("abort.grpcStatus"),
                format!("{name:?} is not a gRPC status name or code (0..=16)"),
            );
        }
        if let Some(status) = abort.http_status
            && !(200..=599).contains(&status)
        {
            fault_at.report.error(
                fault_at.field("abort.httpStatus"),
                format!("status {status} must be in 200..=599"),
            );
        }
        fault_at.percentage("abort.percentage", abort.percentage.as_ref());
    }
}

fn cors_policy(at: &str, cors: &CorsPolicy, r: &mut Report) {
    for (k, origin) in cors.allow_origins.iter().enumerate() {
        r.string_match(&format!("{at}.allowOrigins[{k}]"), origin, false);
    }
    r.at(at).duration_min_1ms("maxAge", cors.max_age.as_ref());
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::{assert_one, errors_of, field_paths, fields, object};

    fn vs(http: &str) -> String {
        object(
            "VirtualService",
            "r",
            &format!("  hosts: [reviews]\n  http:\n{http}"),
        )
    }

    const ROUTE: &str = "    route:\n    - destination: {host: reviews}\n";

    #[test]
    fn vs_valid_routes_have_no_errors() {
        let yaml = vs(&format!(
            "  - match:\n    - uri: {{regex: '^/api/v[0-9]+'}}\n      headers: {{x-present: {{}}, end-user: {{exact: jason}}}}\n    timeout: 1.5s\n    retries: {{attempts: 3, perTryTimeout: 500ms}}\n    corsPolicy: {{allowOrigins: [{{prefix: 'https://'}}], maxAge: 24h}}\n{ROUTE}"
        ));
        assert_eq!(fields(&errors_of(&yaml)), vec![]);
    }

    #[test]
    fn vs_bad_regex_is_reported_with_field_path() {
        let yaml = vs(&format!(
            "  - match:\n    - uri: {{regex: '(unclosed'}}\n{ROUTE}"
        ));
        assert_one(&yaml, "spec.http[0].match[0].uri.regex", "invalid regex");
    }

    #[test]
    fn vs_bad_regex_in_header_query_and_cors_maps() {
        let yaml = vs(&format!(
            "  - match:\n    - headers: {{x-a: {{regex: '['}}}}\n      queryParams: {{q: {{regex: '*'}}}}\n      withoutHeaders: {{x-b: {{regex: '('}}}}\n    corsPolicy: {{allowOrigins: [{{regex: '('}}]}}\n    rewrite: {{uriRegexRewrite: {{match: '(', rewrite: '/'}}}}\n{ROUTE}"
        ));
        let got = field_paths(&yaml);
        assert_eq!(
            got,
            [
                "spec.http[0].match[0].headers.x-a.regex",
                "spec.http[0].match[0].queryParams.q.regex",
                "spec.http[0].match[0].withoutHeaders.x-b.regex",
                "spec.http[0].rewrite.uriRegexRewrite.match",
                "spec.http[0].corsPolicy.allowOrigins[0].regex",
            ]
        );
    }

    #[test]
    fn vs_string_match_must_set_exactly_one() {
        let yaml = vs(&format!(
            "  - match:\n    - method: {{exact: GET, prefix: G}}\n{ROUTE}"
        ));
        assert_one(&yaml, "spec.http[0].match[0].method", "only one");
        let yaml = vs(&format!("  - match:\n    - authority: {{}}\n{ROUTE}"));
        assert_one(&yaml, "spec.http[0].match[0].authority", "one of exact");
    }

    #[test]
    fn vs_bad_durations_are_reported() {
        let yaml = vs(&format!(
            "  - timeout: 5 parsecs\n    retries: {{perTryTimeout: '2'}}\n    fault: {{delay: {{fixedDelay: 0s}}}}\n    corsPolicy: {{maxAge: soon}}\n{ROUTE}"
        ));
        let got = field_paths(&yaml);
        assert_eq!(
            got,
            [
                "spec.http[0].timeout",
                "spec.http[0].retries.perTryTimeout",
                "spec.http[0].fault.delay.fixedDelay",
                "spec.http[0].corsPolicy.maxAge",
            ]
        );
    }

    #[test]
    fn vs_weights_must_be_0_to_100() {
        let yaml = vs(
            "  - route:\n    - destination: {host: a}\n      weight: 120\n    - destination: {host: b}\n      weight: -5\n",
        );
        let got = fields(&errors_of(&yaml));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "spec.http[0].route[0].weight");
        assert_eq!(got[1].0, "spec.http[0].route[1].weight");
    }

    #[test]
    fn vs_destination_needs_a_host() {
        let yaml = vs("  - route:\n    - destination: {host: ''}\n");
        assert_one(
            &yaml,
            "spec.http[0].route[0].destination.host",
            "needs a host",
        );
    }

    #[test]
    fn vs_percentages_must_be_0_to_100() {
        let yaml = vs(&format!(
            "  - fault: {{abort: {{httpStatus: 503, percentage: {{value: 150}}}}}}\n    mirror: {{host: shadow}}\n    mirrorPercentage: {{value: -1}}\n{ROUTE}"
        ));
        let got = field_paths(&yaml);
        assert_eq!(
            got,
            [
                "spec.http[0].fault.abort.percentage.value",
                "spec.http[0].mirrorPercentage.value"
            ]
        );
    }

    #[test]
    fn vs_schema_one_of_rules_apply_to_files_too() {
        let yaml = vs(&format!(
            "  - fault: {{delay: {{fixedDelay: 1s, exponentialDelay: 2s}}, abort: {{httpStatus: 503, grpcStatus: UNAVAILABLE}}}}\n{ROUTE}"
        ));
        let got = fields(&errors_of(&yaml));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0],
            (
                "spec.http[0].fault.delay".into(),
                "only one of fixedDelay, exponentialDelay may be set".into()
            )
        );
        assert_eq!(got[1].0, "spec.http[0].fault.abort");
        let yaml = vs("  - redirect: {uri: /x, port: 8080, derivePort: FROM_REQUEST_PORT}\n");
        assert_one(
            &yaml,
            "spec.http[0].redirect",
            "only one of port, derivePort",
        );
        let yaml = vs("  - directResponse: {status: 200, body: {string: a, bytes: YQ==}}\n");
        assert_one(
            &yaml,
            "spec.http[0].directResponse.body",
            "only one of string, bytes",
        );
    }

    #[test]
    fn vs_redirect_and_route_cannot_combine() {
        let yaml = vs(&format!("  - redirect: {{uri: /new}}\n{ROUTE}"));
        assert_one(
            &yaml,
            "spec.http[0]",
            "route and redirect cannot be combined",
        );
    }

    #[test]
    fn vs_direct_response_status_must_be_200_to_599() {
        let yaml = vs("  - directResponse: {status: 99}\n");
        assert_one(&yaml, "spec.http[0].directResponse.status", "200..=599");
        let abort = vs(&format!(
            "  - fault: {{abort: {{httpStatus: 600}}}}\n{ROUTE}"
        ));
        assert_one(&abort, "spec.http[0].fault.abort.httpStatus", "200..=599");
        let grpc = vs(&format!(
            "  - fault: {{abort: {{grpcStatus: NOPE}}}}\n{ROUTE}"
        ));
        assert_one(&grpc, "spec.http[0].fault.abort.grpcStatus", "gRPC status");
        let grpc_ok = vs(&format!(
            "  - fault: {{abort: {{grpcStatus: unavailable}}}}\n{ROUTE}"
        ));
        assert!(field_paths(&grpc_ok).is_empty());
        let redirect = vs("  - redirect: {uri: /v2, redirectCode: 305}\n");
        assert_one(&redirect, "spec.http[0].redirect.redirectCode", "301, 302");
        let big = "x".repeat(super::MAX_DIRECT_RESPONSE_BODY + 1);
        let body = vs(&format!(
            "  - directResponse: {{status: 200, body: {{string: {big}}}}}\n"
        ));
        assert_one(
            &body,
            "spec.http[0].directResponse.body.string",
            "larger than",
        );
    }

    #[test]
    fn a_star_host_is_refused_on_the_mesh_and_allowed_on_a_gateway() {
        let route = "  http:\n  - route: [{destination: {host: reviews}}]\n";
        assert_one(
            &object(
                "VirtualService",
                "all",
                &format!("  hosts: [\"*\"]\n{route}"),
            ),
            "spec.hosts[0]",
            "not allowed",
        );
        assert_one(
            &object(
                "VirtualService",
                "all",
                &format!("  hosts: [\"*\"]\n  gateways: [edge, mesh]\n{route}"),
            ),
            "spec.hosts[0]",
            "not allowed",
        );
        let gateway = object(
            "VirtualService",
            "all",
            &format!("  hosts: [\"*\"]\n  gateways: [edge]\n{route}"),
        );
        assert!(field_paths(&gateway).is_empty());
    }

    #[test]
    fn unknown_retry_conditions_are_refused() {
        let vs = |retry_on: &str| {
            object(
                "VirtualService",
                "r",
                &format!(
                    "  hosts: [reviews]\n  http:\n  - route: [{{destination: {{host: reviews}}}}]\n    retries: {{attempts: 2, retryOn: \"{retry_on}\"}}\n"
                ),
            )
        };
        assert_one(
            &vs("5xx,bogus"),
            "spec.http[0].retries.retryOn",
            "\"bogus\"",
        );
        assert_one(
            &vs("gateway-error,999"),
            "spec.http[0].retries.retryOn",
            "\"999\"",
        );
        assert!(field_paths(&vs("5xx, connect-failure,503,unavailable")).is_empty());
    }

    #[test]
    fn vs_hosts_required_unless_delegate() {
        let no_hosts = object("VirtualService", "d", "");
        let delegate = format!("{no_hosts}  http:\n  - name: d\n{ROUTE}");
        assert_eq!(fields(&errors_of(&delegate)), vec![]);
        let tcp = format!("{no_hosts}  tcp:\n  - route:\n    - destination: {{host: db}}\n");
        assert_one(&tcp, "spec.hosts", "at least one host");
        let gw = format!("{no_hosts}  gateways: [gw]\n  http:\n  - name: d\n{ROUTE}");
        assert_one(&gw, "spec.gateways", "delegate");
    }

    #[test]
    fn vs_needs_some_route() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: e}\nspec: {hosts: [a]}\n";
        assert_one(yaml, "spec", "at least one of http, tls or tcp");
    }

    #[test]
    fn hosts_gateways_and_export_to_follow_istio() {
        let with = |fields: &str| {
            object(
                "VirtualService",
                "h",
                &format!("{fields}  http:\n  - name: r\n{ROUTE}"),
            )
        };
        assert_one(
            &with("  hosts: [reviews, Reviews.Example.com]\n"),
            "spec.hosts[1]",
            "not a valid host",
        );
        assert_one(
            &with("  hosts: [reviews]\n  gateways: [a/b/c]\n"),
            "spec.gateways[0]",
            "Gateway name",
        );
        assert_one(
            &with("  hosts: [reviews]\n  exportTo: [Bad_NS]\n"),
            "spec.exportTo[0]",
            "namespace name",
        );
        let fine = with(
            "  hosts: [reviews, 10.0.0.5, '*.example.com']\n  gateways: [mesh, istio-system/gw, gw.istio-system.svc.cluster.local]\n  exportTo: ['.', '*']\n",
        );
        assert_eq!(fields(&errors_of(&fine)), vec![]);
    }

    #[test]
    fn sni_hosts_must_fall_under_the_virtual_services_hosts() {
        let tls = |snis: &str| {
            object(
                "VirtualService",
                "t",
                &format!(
                    "  hosts: ['*.example.com']
  tls:
  - match: [{{sniHosts: {snis}}}]
    route: [{{destination: {{host: a.example.com}}}}]
"
                ),
            )
        };
        assert!(field_paths(&tls("[a.example.com, '*.b.example.com', 10.0.0.5]")).is_empty());
        assert_one(
            &tls("['*']"),
            "spec.tls[0].match[0].sniHosts[0]",
            "not covered",
        );
        assert_one(
            &tls("[example.org]"),
            "spec.tls[0].match[0].sniHosts[0]",
            "not covered",
        );
    }

    #[test]
    fn header_operations_and_match_names_are_checked_as_envoy_takes_them() {
        let yaml = vs(concat!(
            "  - match: [{headers: {'bad name': {exact: x}}}]\n",
            "    headers:\n",
            "      request: {set: {x-a: '100%'}, remove: [':path']}\n",
            "      response: {add: {host: x}}\n",
            "    route:\n",
            "    - destination: {host: reviews}\n",
            "      headers: {request: {set: {x-b: '%BOGUS%'}}}\n",
        ));
        assert_eq!(
            field_paths(&yaml),
            [
                "spec.http[0].match[0].headers.bad name",
                "spec.http[0].route[0].headers.request.set.x-b",
                "spec.http[0].headers.request.set.x-a",
                "spec.http[0].headers.request.remove[0]",
                "spec.http[0].headers.response.add.host",
            ]
        );
        let fine = vs(
            "  - headers: {request: {set: {x-a: '%DOWNSTREAM_REMOTE_ADDRESS%', x-b: '100%%'}}}
    route: [{destination: {host: reviews}}]
",
        );
        assert!(field_paths(&fine).is_empty(), "{:?}", field_paths(&fine));
    }

    #[test]
    fn regexes_re2_refuses_are_refused() {
        let yaml = vs(
            "  - match: [{uri: {regex: '(x{1,60}){1,60}'}}]\n    route: [{destination: {host: reviews}}]\n",
        );
        assert_one(&yaml, "spec.http[0].match[0].uri.regex", "RE2");
    }
}
