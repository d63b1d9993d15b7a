//! Per-rule HTTP policies of a VirtualService: retries, fault injection,
//! header mutations, CORS, rewrites, redirects and direct responses.

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, data_source,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::Route;
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, RetryPolicy, RouteAction,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    retry_policy::{
        RetryBackOff, RetryHostPredicate, RetryPriority, retry_host_predicate, retry_priority,
    },
    route_action::HostRewriteSpecifier,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use pilotfish_crds::{
    CorsPolicy, HeaderOperations, Headers, HttpDirectResponse, HttpFaultInjection, HttpRedirect,
    HttpRetry, HttpRewrite, UnmatchedPreflights,
};

use crate::diagnostics::Diagnostic;
use crate::names;
use crate::protobuf;
use crate::resolve::route_match;

/// Retry conditions of Istio's default policy.
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
const DEFAULT_RETRIES: u32 = 2;

/// Envoy's default limit is 4 KiB; route configurations raise it to this.
pub const MAX_DIRECT_RESPONSE_BODY_BYTES: u32 =
    pilotfish_crds::validate::virtual_service::MAX_DIRECT_RESPONSE_BODY as u32;

/// Istio's default: 2 retries on connection-level failures and 503, on
/// other hosts than the failed one, unless the destination hashes
/// consistently (a retry must then stay on the same host).
pub fn default_retry_policy(consistent_hash: bool) -> RetryPolicy {
    RetryPolicy {
        retry_on: DEFAULT_RETRY_ON.into(),
        num_retries: Some(protobuf::u32_value(DEFAULT_RETRIES)),
        retriable_status_codes: vec![503],
        host_selection_retry_max_attempts: 5,
        retry_host_predicate: if consistent_hash {
            Vec::new()
        } else {
            vec![previous_hosts()]
        },
        ..Default::default()
    }
}

fn previous_hosts() -> RetryHostPredicate {
    RetryHostPredicate {
        name: names::PREVIOUS_HOSTS_PREDICATE.into(),
        config_type: Some(retry_host_predicate::ConfigType::TypedConfig(
            protobuf::any(PreviousHostsPredicate::default()),
        )),
    }
}

/// The VirtualService `retries` on top of the default; `attempts: 0`
/// disables retries altogether.
pub fn retry_policy(
    retries: Option<&HttpRetry>,
    consistent_hash: bool,
    object: &str,
    field: &str,
) -> Result<Option<RetryPolicy>, Diagnostic> {
    let mut out = default_retry_policy(consistent_hash);
    let Some(retries) = retries else {
        return Ok(Some(out));
    };
    let attempts = retries.attempts.unwrap_or(0);
    if attempts <= 0 {
        return Ok(None);
    }
    out.num_retries = Some(protobuf::count(attempts));
    if let Some(retry_on) = retries.retry_on.as_deref().filter(|r| !r.trim().is_empty()) {
        (out.retry_on, out.retriable_status_codes) = parse_retry_on(retry_on);
    }
    if let Some(timeout) = &retries.per_try_timeout {
        out.per_try_timeout = Some(protobuf::parse_duration(
            timeout,
            object,
            &format!("{field}.perTryTimeout"),
        )?);
    }
    if let Some(backoff) = &retries.backoff {
        let base = protobuf::parse_duration(backoff, object, &format!("{field}.backoff"))?;
        out.retry_back_off = Some(RetryBackOff {
            base_interval: Some(base),
            ..Default::default()
        });
    }
    apply_host_selection(&mut out, retries);
    Ok(Some(out))
}

/// Which hosts a retry may pick: other than the failed ones unless
/// `retryIgnorePreviousHosts: false`; other localities on request.
fn apply_host_selection(out: &mut RetryPolicy, retries: &HttpRetry) {
    match retries.retry_ignore_previous_hosts {
        Some(false) => out.retry_host_predicate.clear(),
        Some(true) => out.retry_host_predicate = vec![previous_hosts()],
        None => {}
    }
    if retries.retry_remote_localities == Some(true) {
        let config = PreviousPrioritiesConfig {
            update_frequency: 2,
        };
        out.retry_priority = Some(RetryPriority {
            name: names::PREVIOUS_PRIORITIES.into(),
            config_type: Some(retry_priority::ConfigType::TypedConfig(protobuf::any(
                config,
            ))),
        });
    }
}

/// Splits `retryOn` into Envoy conditions and status codes; status codes
/// need the `retriable-status-codes` condition to take effect.
fn parse_retry_on(retry_on: &str) -> (String, Vec<u32>) {
    let mut conditions = Vec::new();
    let mut codes = Vec::new();
    for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(code) if (100..=599).contains(&code) => codes.push(code),
            _ => conditions.push(part.to_string()),
        }
    }
    let marker = "retriable-status-codes";
    if !codes.is_empty() && !conditions.iter().any(|c| c == marker) {
        conditions.push(marker.into());
    }
    (conditions.join(","), codes)
}

/// `None` when neither a usable delay nor abort is set (exponential delays
/// and HTTP/2 errors are reported as unsupported elsewhere).
pub fn fault(
    f: &HttpFaultInjection,
    object: &str,
    field: &str,
) -> Result<Option<HttpFault>, Diagnostic> {
    let mut out = HttpFault::default();
    if let Some(delay) = &f.delay
        && let Some(fixed) = &delay.fixed_delay
    {
        let d = protobuf::parse_duration(fixed, object, &format!("{field}.delay.fixedDelay"))?;
        out.delay = Some(FaultDelay {
            percentage: fault_percentage(delay.percentage.as_ref().map(|p| p.value), delay.percent),
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(d)),
        });
    }
    if let Some(abort) = &f.abort
        && let Some(error) = abort_error(abort, object, field)?
    {
        out.abort = Some(FaultAbort {
            percentage: fault_percentage(abort.percentage.as_ref().map(|p| p.value), None),
            error_type: Some(error),
            ..Default::default()
        });
    }
    Ok((out.delay.is_some() || out.abort.is_some()).then_some(out))
}

fn fault_percentage(
    percentage: Option<f64>,
    legacy: Option<i32>,
) -> Option<envoy_types::pb::envoy::r#type::v3::FractionalPercent> {
    percentage
        .map(protobuf::percent)
        .or(legacy.map(|p| protobuf::integer_percent(i64::from(p))))
}

fn abort_error(
    abort: &pilotfish_crds::FaultAbort,
    object: &str,
    field: &str,
) -> Result<Option<fault_abort::ErrorType>, Diagnostic> {
    if let Some(status) = abort.http_status {
        return match u32::try_from(status) {
            Ok(code) if (200..600).contains(&code) => {
                Ok(Some(fault_abort::ErrorType::HttpStatus(code)))
            }
            _ => Err(Diagnostic::invalid(
                object,
                format!("{field}.abort.httpStatus"),
                "must be in 200..599",
            )),
        };
    }
    let Some(name) = &abort.grpc_status else {
        return Ok(None);
    };
    grpc_code(name)
        .map(|code| Some(fault_abort::ErrorType::GrpcStatus(code)))
        .ok_or_else(|| {
            Diagnostic::invalid(
                object,
                format!("{field}.abort.grpcStatus"),
                format!("unknown gRPC status {name:?}"),
            )
        })
}

/// gRPC status names (`UNAVAILABLE`) or numbers to codes.
fn grpc_code(name: &str) -> Option<u32> {
    pilotfish_crds::validate::virtual_service::grpc_status_code(name)
}

/// Header mutations for a route or a weighted cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeaderMutation {
    pub request_add: Vec<HeaderValueOption>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<HeaderValueOption>,
    pub response_remove: Vec<String>,
}

impl HeaderMutation {
    pub fn from_headers(
        headers: Option<&Headers>,
        object: &str,
        field: &str,
    ) -> Result<Self, Diagnostic> {
        let mut out = HeaderMutation::default();
        let Some(headers) = headers else {
            return Ok(out);
        };
        if let Some(ops) = &headers.request {
            (out.request_add, out.request_remove) =
                operations(ops, object, &format!("{field}.request"))?;
        }
        if let Some(ops) = &headers.response {
            (out.response_add, out.response_remove) =
                operations(ops, object, &format!("{field}.response"))?;
        }
        Ok(out)
    }

    pub fn apply_to_route(self, route: &mut Route) {
        route.request_headers_to_add.extend(self.request_add);
        route.request_headers_to_remove.extend(self.request_remove);
        route.response_headers_to_add.extend(self.response_add);
        route
            .response_headers_to_remove
            .extend(self.response_remove);
    }

    pub fn apply_to_weight(self, weight: &mut ClusterWeight) {
        weight.request_headers_to_add.extend(self.request_add);
        weight.request_headers_to_remove.extend(self.request_remove);
        weight.response_headers_to_add.extend(self.response_add);
        weight
            .response_headers_to_remove
            .extend(self.response_remove);
    }
}

/// `set` overwrites, `add` appends; Envoy NACKs changes to pseudo-headers and `host`.
fn operations(
    ops: &HeaderOperations,
    object: &str,
    field: &str,
) -> Result<(Vec<HeaderValueOption>, Vec<String>), Diagnostic> {
    let mut add = Vec::new();
    let groups = [
        (&ops.set, "set", HeaderAppendAction::OverwriteIfExistsOrAdd),
        (&ops.add, "add", HeaderAppendAction::AppendIfExistsOrAdd),
    ];
    for (map, key, action) in groups {
        for (name, value) in map {
            check_header(name, value, object, &format!("{field}.{key}.{name}"))?;
            add.push(HeaderValueOption {
                header: Some(HeaderValue {
                    key: name.clone(),
                    value: value.clone(),
                    ..Default::default()
                }),
                append_action: action as i32,
                ..Default::default()
            });
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        check_header_name(name, object, &format!("{field}.remove[{i}]"))?;
    }
    Ok((add, ops.remove.clone()))
}

/// Envoy NACKs header values with NUL, CR or LF.
fn check_header(name: &str, value: &str, object: &str, field: &str) -> Result<(), Diagnostic> {
    check_header_name(name, object, field)?;
    if value.contains(['\0', '\r', '\n']) {
        return Err(Diagnostic::invalid(
            object,
            field,
            "header value contains NUL, CR or LF",
        ));
    }
    Ok(())
}

fn check_header_name(name: &str, object: &str, field: &str) -> Result<(), Diagnostic> {
    if pilotfish_crds::validate::headers::modifiable(name).is_ok() {
        Ok(())
    } else {
        Err(Diagnostic::invalid(
            object,
            field,
            format!("header {name:?} cannot be modified"),
        ))
    }
}

pub fn cors(c: &CorsPolicy, object: &str, field: &str) -> Result<EnvoyCorsPolicy, Diagnostic> {
    let mut origins = Vec::new();
    for (i, origin) in c.allow_origins.iter().enumerate() {
        if let Some(m) =
            route_match::string_matcher(origin, object, &format!("{field}.allowOrigins[{i}]"))?
        {
            origins.push(m);
        }
    }
    for origin in &c.allow_origin {
        let exact = pilotfish_crds::StringMatch {
            exact: Some(origin.clone()),
            ..Default::default()
        };
        origins.extend(route_match::string_matcher(&exact, object, field)?);
    }
    let max_age = match &c.max_age {
        Some(text) => protobuf::parse_duration(text, object, &format!("{field}.maxAge"))?
            .seconds
            .to_string(),
        None => String::new(),
    };
    Ok(EnvoyCorsPolicy {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age,
        allow_credentials: c.allow_credentials.map(protobuf::bool_value),
        forward_not_matching_preflights: match c.unmatched_preflights {
            Some(UnmatchedPreflights::Forward) => Some(protobuf::bool_value(true)),
            Some(UnmatchedPreflights::Ignore) => Some(protobuf::bool_value(false)),
            Some(UnmatchedPreflights::Unspecified) | None => None,
        },
        ..Default::default()
    })
}

pub fn apply_rewrite(
    action: &mut RouteAction,
    rw: &HttpRewrite,
    object: &str,
    field: &str,
) -> Result<(), Diagnostic> {
    if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
        return Err(Diagnostic::invalid(
            object,
            field,
            "uri and uriRegexRewrite are mutually exclusive",
        ));
    }
    if let Some(uri) = &rw.uri {
        action.prefix_rewrite = uri.clone();
    }
    if let Some(rr) = &rw.uri_regex_rewrite {
        let pattern = route_match::regex_matcher(
            &rr.match_,
            object,
            &format!("{field}.uriRegexRewrite.match"),
        )?;
        action.regex_rewrite = Some(RegexMatchAndSubstitute {
            pattern: Some(pattern),
            substitution: rr.rewrite.clone(),
        });
    }
    if let Some(authority) = &rw.authority {
        action.host_rewrite_specifier =
            Some(HostRewriteSpecifier::HostRewriteLiteral(authority.clone()));
    }
    Ok(())
}

pub fn redirect(r: &HttpRedirect, object: &str, field: &str) -> Result<RedirectAction, Diagnostic> {
    if r.uri.is_some() && r.prefix_rewrite.is_some() {
        return Err(Diagnostic::invalid(
            object,
            field,
            "uri and prefixRewrite are mutually exclusive",
        ));
    }
    let response_code = match r.redirect_code.unwrap_or(301) {
        301 => RedirectResponseCode::MovedPermanently,
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        other => {
            let message = format!("redirect code {other} is not one of 301, 302, 303, 307, 308");
            return Err(Diagnostic::invalid(
                object,
                format!("{field}.redirectCode"),
                message,
            ));
        }
    };
    let path = (r.uri.clone().map(PathRewriteSpecifier::PathRedirect)).or(r
        .prefix_rewrite
        .clone()
        .map(PathRewriteSpecifier::PrefixRewrite));
    let port_redirect = match r.port {
        Some(p) if p > u32::from(u16::MAX) => {
            return Err(Diagnostic::invalid(
                object,
                format!("{field}.port"),
                "port out of range",
            ));
        }
        other => other.unwrap_or(0),
    };
    Ok(RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        port_redirect,
        response_code: response_code as i32,
        scheme_rewrite_specifier: r.scheme.clone().map(SchemeRewriteSpecifier::SchemeRedirect),
        path_rewrite_specifier: path,
        ..Default::default()
    })
}

pub fn direct_response(
    d: &HttpDirectResponse,
    object: &str,
    field: &str,
) -> Result<DirectResponseAction, Diagnostic> {
    if !(100..600).contains(&d.status) {
        return Err(Diagnostic::invalid(
            object,
            format!("{field}.status"),
            "must be in 100..599",
        ));
    }
    let text = d.body.as_ref().and_then(|b| b.string.clone());
    if text
        .as_ref()
        .is_some_and(|t| t.len() > MAX_DIRECT_RESPONSE_BODY_BYTES as usize)
    {
        let message = format!("body is larger than {MAX_DIRECT_RESPONSE_BODY_BYTES} bytes");
        return Err(Diagnostic::invalid(
            object,
            format!("{field}.body.string"),
            message,
        ));
    }
    let body = text.map(|text| DataSource {
        specifier: Some(data_source::Specifier::InlineString(text)),
        ..Default::default()
    });
    Ok(DirectResponseAction {
        status: d.status,
        body,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_on_status_codes_add_the_retriable_condition() {
        let (on, codes) = parse_retry_on("gateway-error, 503 ,connect-failure,429");
        assert_eq!(on, "gateway-error,connect-failure,retriable-status-codes");
        assert_eq!(codes, [503, 429]);
    }

    #[test]
    fn zero_attempts_disable_retries() {
        let retries = HttpRetry {
            attempts: Some(0),
            ..Default::default()
        };
        assert_eq!(retry_policy(Some(&retries), false, "vs", "f"), Ok(None));
    }

    #[test]
    fn retries_override_the_default() {
        let retries = HttpRetry {
            attempts: Some(3),
            per_try_timeout: Some("2s".into()),
            retry_on: Some("5xx".into()),
            ..Default::default()
        };
        let policy = retry_policy(Some(&retries), false, "vs", "f")
            .unwrap()
            .unwrap();
        assert_eq!(policy.num_retries, Some(protobuf::u32_value(3)));
        assert_eq!(policy.retry_on, "5xx");
        assert_eq!(policy.per_try_timeout, Some(protobuf::seconds(2)));
        assert_eq!(policy.retry_host_predicate.len(), 1);
    }

    #[test]
    fn bad_per_try_timeout_is_an_invalid_field() {
        let retries = HttpRetry {
            attempts: Some(3),
            per_try_timeout: Some("soon".into()),
            ..Default::default()
        };
        let err = retry_policy(
            Some(&retries),
            false,
            "VirtualService d/r",
            "spec.http[0].retries",
        )
        .unwrap_err();
        assert_eq!(
            err.field.as_deref(),
            Some("spec.http[0].retries.perTryTimeout")
        );
    }

    #[test]
    fn grpc_status_names_map_to_codes() {
        assert_eq!(grpc_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_code("unavailable"), Some(14));
        assert_eq!(grpc_code("4"), Some(4));
        assert_eq!(grpc_code("NOPE"), None);
    }

    #[test]
    fn header_values_with_line_breaks_are_invalid() {
        assert!(check_header("x-a", "fine", "vs", "f").is_ok());
        assert!(check_header("x-a", "two\nlines", "vs", "f").is_err());
    }

    #[test]
    fn direct_response_bodies_are_bounded() {
        let response = |len: usize| HttpDirectResponse {
            status: 200,
            body: Some(pilotfish_crds::HttpBody {
                string: Some("x".repeat(len)),
                bytes: None,
            }),
        };
        assert!(direct_response(&response(5000), "vs", "f").is_ok());
        let err = direct_response(&response(2 << 20), "vs", "f").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("f.body.string"));
    }

    #[test]
    fn host_and_pseudo_headers_cannot_be_set() {
        assert!(check_header_name("x-user", "vs", "f").is_ok());
        assert!(check_header_name("Host", "vs", "f").is_err());
        assert!(check_header_name(":path", "vs", "f").is_err());
    }
}
