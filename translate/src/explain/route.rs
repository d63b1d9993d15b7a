//! HTTP routing as Envoy's router does it: the route configuration, the
//! virtual host by Host (exact domain, then the longest `*suffix`, the
//! longest `prefix*`, then `*`), and the first route whose match holds.

use envoy_types::pb::envoy::config::core::v3::data_source;
use envoy_types::pb::envoy::config::route::v3::{
    RedirectAction, Route, RouteConfiguration, VirtualHost, redirect_action, route,
    route_action::ClusterSpecifier, route_match::PathSpecifier,
};

use super::listener::RouteSource;
use super::matchers::{Matched, full_regex_match, header_matches, query_matches};
use super::{ExplainRequest, Miss, Outcome, Step, StepKind, Target, config_of};
use crate::resources::XdsResources;

pub enum Routed {
    To(Vec<Target>),
    /// The router answers itself (or cannot route).
    Answered(Outcome),
}

pub fn choose(
    resources: &XdsResources,
    source: &RouteSource,
    request: &ExplainRequest,
    steps: &mut Vec<Step>,
) -> Routed {
    let (config, strip_port, how) = match source {
        RouteSource::Rds { name, strip_port } => {
            match resources.routes.iter().find(|r| r.name == *name) {
                Some(config) => (config, *strip_port, "over RDS"),
                None => {
                    return failed(format!(
                        "route configuration {name} was not sent: Envoy answers 404"
                    ));
                }
            }
        }
        RouteSource::Inline { config, strip_port } => {
            (&**config, *strip_port, "inline in the listener")
        }
    };
    steps.push(Step::new(StepKind::RouteConfiguration, &config.name).note(how));
    let authority = request.authority().to_ascii_lowercase();
    let host = match strip_port || config.ignore_port_in_host_matching {
        true => without_port(&authority),
        false => authority.as_str(),
    };
    let Some((virtual_host, domain)) = virtual_host(config, host) else {
        return failed(format!(
            "no virtual host of {} has a domain for Host {host:?}: Envoy answers 404",
            config.name
        ));
    };
    steps.push(
        Step::new(StepKind::VirtualHost, &virtual_host.name)
            .note(format!("domain {domain:?} matches Host {host:?}")),
    );
    let mut misses = Vec::new();
    for (i, route) in virtual_host.routes.iter().enumerate() {
        let name = match route.name.is_empty() {
            true => format!("#{i}"),
            false => format!("#{i} {}", route.name),
        };
        match route_matches(route, request) {
            Ok(()) => {
                let mut step = Step::new(StepKind::Route, name).note(describe_match(route));
                step.not_matched = misses;
                step.config = config_of(route.metadata.as_ref());
                return act(route, request, step, steps);
            }
            Err(reason) => misses.push(Miss { name, reason }),
        }
    }
    let mut step = Step::new(StepKind::Route, "(none)").note("no route matches");
    step.not_matched = misses;
    steps.push(step);
    failed("no route of the virtual host matches: Envoy answers 404".into())
}

fn failed(reason: String) -> Routed {
    Routed::Answered(Outcome::Failed { reason })
}

fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        // Not inside a bracketed IPv6 address.
        Some((h, port)) if !port.contains(']') && port.parse::<u16>().is_ok() => h,
        _ => host,
    }
}

/// The virtual host for `host`, and the domain that matched.
fn virtual_host<'c>(
    config: &'c RouteConfiguration,
    host: &str,
) -> Option<(&'c VirtualHost, String)> {
    let domains = || {
        config
            .virtual_hosts
            .iter()
            .flat_map(|vh| vh.domains.iter().map(move |d| (vh, d.to_ascii_lowercase())))
    };
    if let Some((vh, d)) = domains().find(|(_, d)| d == host) {
        return Some((vh, d));
    }
    // Wildcards never match an empty remainder; the longest wins.
    let suffix = domains()
        .filter(|(_, d)| d.len() > 1 && d.starts_with('*'))
        .filter(|(_, d)| host.len() > d.len() - 1 && host.ends_with(&d[1..]))
        .max_by_key(|(_, d)| d.len());
    let prefix = || {
        domains()
            .filter(|(_, d)| d.len() > 1 && d.ends_with('*'))
            .filter(|(_, d)| host.len() > d.len() - 1 && host.starts_with(&d[..d.len() - 1]))
            .max_by_key(|(_, d)| d.len())
    };
    suffix
        .or_else(prefix)
        .or_else(|| domains().find(|(_, d)| d == "*"))
}

fn route_matches(route: &Route, request: &ExplainRequest) -> Matched {
    let Some(m) = route.r#match.as_ref() else {
        return Err("the route has no match".into());
    };
    let case_sensitive = m.case_sensitive.as_ref().is_none_or(|b| b.value);
    let fold = |s: &str| match case_sensitive {
        true => s.to_string(),
        false => s.to_lowercase(),
    };
    let (path, full) = (fold(request.path_only()), fold(&request.path));
    match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) if !full.starts_with(&fold(p)) => {
            Err(format!("path {:?} does not start with {p:?}", request.path))
        }
        Some(PathSpecifier::Path(p)) if path != fold(p) => {
            Err(format!("path {:?} is not {p:?}", request.path_only()))
        }
        Some(PathSpecifier::SafeRegex(r)) if !full_regex_match(r, request.path_only()) => {
            Err(format!(
                "path {:?} does not match regex {:?}",
                request.path_only(),
                r.regex
            ))
        }
        Some(PathSpecifier::PathSeparatedPrefix(p))
            if path != fold(p) && !path.starts_with(&format!("{}/", fold(p))) =>
        {
            Err(format!(
                "path {:?} is not {p:?} or below it",
                request.path_only()
            ))
        }
        Some(PathSpecifier::ConnectMatcher(_)) => Err("matches CONNECT requests only".into()),
        Some(PathSpecifier::PathMatchPolicy(p)) => {
            Err(format!("path match policy {} is not modelled", p.name))
        }
        _ => Ok(()),
    }?;
    for header in &m.headers {
        header_matches(header, request)?;
    }
    for query in &m.query_parameters {
        query_matches(query, request)?;
    }
    if m.grpc.is_some()
        && !request
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/grpc"))
    {
        return Err("matches gRPC requests only".into());
    }
    Ok(())
}

fn describe_match(route: &Route) -> String {
    let Some(m) = route.r#match.as_ref() else {
        return "matches".into();
    };
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => format!("path prefix {p:?}"),
        Some(PathSpecifier::Path(p)) => format!("path {p:?}"),
        Some(PathSpecifier::SafeRegex(r)) => format!("path regex {:?}", r.regex),
        Some(PathSpecifier::PathSeparatedPrefix(p)) => format!("path {p:?} or below"),
        _ => "any path".into(),
    };
    let headers: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
    let queries: Vec<&str> = m.query_parameters.iter().map(|q| q.name.as_str()).collect();
    let mut text = format!("matches: {path}");
    if !headers.is_empty() {
        text.push_str(&format!(", headers {}", headers.join(", ")));
    }
    if !queries.is_empty() {
        text.push_str(&format!(", query parameters {}", queries.join(", ")));
    }
    text
}

/// What the matched route does.
fn act(route: &Route, request: &ExplainRequest, mut step: Step, steps: &mut Vec<Step>) -> Routed {
    let routed = match &route.action {
        Some(route::Action::Route(action)) => {
            if let Some(rewrite) =
                (!action.prefix_rewrite.is_empty()).then_some(&action.prefix_rewrite)
            {
                step = step.note(format!("rewrites the path prefix to {rewrite:?}"));
            }
            match &action.cluster_specifier {
                Some(ClusterSpecifier::Cluster(cluster)) => Routed::To(vec![Target {
                    cluster: cluster.clone(),
                    weight: None,
                }]),
                Some(ClusterSpecifier::WeightedClusters(weighted)) => Routed::To(
                    weighted
                        .clusters
                        .iter()
                        .map(|c| Target {
                            cluster: c.name.clone(),
                            weight: Some(c.weight.as_ref().map_or(0, |w| w.value)),
                        })
                        .collect(),
                ),
                Some(ClusterSpecifier::ClusterHeader(header)) => match request.header(header) {
                    Some(cluster) => Routed::To(vec![Target {
                        cluster,
                        weight: None,
                    }]),
                    None => failed(format!(
                        "the cluster comes from header {header}, which is missing: Envoy answers 404"
                    )),
                },
                _ => failed("the route's cluster specifier is not modelled".into()),
            }
        }
        Some(route::Action::Redirect(redirect)) => Routed::Answered(Outcome::Redirect {
            status: redirect_status(redirect),
            location: redirect_location(redirect, request),
        }),
        Some(route::Action::DirectResponse(direct)) => {
            let body = direct.body.as_ref().and_then(|b| match &b.specifier {
                Some(data_source::Specifier::InlineString(s)) => Some(s.clone()),
                Some(data_source::Specifier::InlineBytes(b)) => {
                    Some(String::from_utf8_lossy(b).into_owned())
                }
                _ => None,
            });
            Routed::Answered(Outcome::DirectResponse {
                status: direct.status,
                body,
            })
        }
        _ => failed("the route neither forwards, redirects nor answers".into()),
    };
    steps.push(step);
    routed
}

fn redirect_status(redirect: &RedirectAction) -> u32 {
    use redirect_action::RedirectResponseCode as Code;
    match Code::try_from(redirect.response_code) {
        Ok(Code::Found) => 302,
        Ok(Code::SeeOther) => 303,
        Ok(Code::TemporaryRedirect) => 307,
        Ok(Code::PermanentRedirect) => 308,
        _ => 301,
    }
}

fn redirect_location(redirect: &RedirectAction, request: &ExplainRequest) -> String {
    let scheme = match &redirect.scheme_rewrite_specifier {
        Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => "https".to_string(),
        Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) => s.clone(),
        _ => "http".to_string(),
    };
    let authority = request.authority();
    let host = match redirect.host_redirect.as_str() {
        "" => without_port(&authority).to_string(),
        h => h.to_string(),
    };
    let port = match redirect.port_redirect {
        0 => authority
            .strip_prefix(without_port(&authority))
            .unwrap_or("")
            .to_string(),
        p => format!(":{p}"),
    };
    let path = match &redirect.path_rewrite_specifier {
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) => p.clone(),
        _ => request.path.clone(),
    };
    format!("{scheme}://{host}{port}{path}")
}
