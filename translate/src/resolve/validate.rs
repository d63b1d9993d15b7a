//! Stage-1 checks of single objects: every VirtualService's fields that
//! no view changes (matches and their regexes, durations, retries, fault,
//! CORS, headers, redirects, direct responses, destination subnets) and
//! the fields Pilotfish does not translate. Run once per generation over
//! every object, so a broken object is reported even when no connected
//! proxy sees it; a view that uses the object meets the same problem and
//! skips the same rule.

use std::net::IpAddr;

use ipnet::IpNet;
use pilotfish_crds::{ConfigObject, ConfigSpec, HttpRoute, VirtualServiceSpec};

use crate::diagnostics::Diagnostic;
use crate::protobuf;
use crate::resolve::route_match;
use crate::resolve::route_policies::{self, HeaderMutation};

/// The problems of every object of the generation.
pub(crate) fn objects(config: &[ConfigObject]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for object in config {
        if let ConfigSpec::VirtualService(spec) = &object.spec {
            virtual_service(&object.key().to_string(), spec, &mut out);
        }
    }
    out
}

fn virtual_service(name: &str, spec: &VirtualServiceSpec, out: &mut Vec<Diagnostic>) {
    out.extend(unsupported(name, spec));
    for (i, rule) in spec.http.iter().enumerate() {
        if let Err(problem) = http_rule(name, rule, &format!("spec.http[{i}]")) {
            out.push(problem);
        }
    }
    let l4_matches =
        spec.tcp
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                r.match_.iter().enumerate().map(move |(j, m)| {
                    (format!("spec.tcp[{i}].match[{j}]"), &m.destination_subnets)
                })
            })
            .chain(spec.tls.iter().enumerate().flat_map(|(i, r)| {
                r.match_.iter().enumerate().map(move |(j, m)| {
                    (format!("spec.tls[{i}].match[{j}]"), &m.destination_subnets)
                })
            }));
    for (field, texts) in l4_matches {
        if let Err(problem) = subnets(name, &field, texts) {
            out.push(problem);
        }
    }
}

/// The first view-independent problem of one HTTP rule (a view skips the
/// rule at its first problem, so later ones would not be reached either).
fn http_rule(object: &str, rule: &HttpRoute, field: &str) -> Result<(), Diagnostic> {
    if let Some(redirect) = &rule.redirect {
        route_policies::redirect(redirect, object, &format!("{field}.redirect"))?;
    } else if let Some(direct) = &rule.direct_response {
        route_policies::direct_response(direct, object, &format!("{field}.directResponse"))?;
    } else if !rule.route.is_empty() {
        if let Some(text) = &rule.timeout {
            protobuf::parse_duration(text, object, &format!("{field}.timeout"))?;
        }
        let retries = format!("{field}.retries");
        route_policies::retry_policy(rule.retries.as_ref(), false, object, &retries)?;
        if let Some(rewrite) = &rule.rewrite {
            let mut action = Default::default();
            let rewrite_field = format!("{field}.rewrite");
            route_policies::apply_rewrite(&mut action, rewrite, object, &rewrite_field)?;
        }
    }
    HeaderMutation::from_headers(rule.headers.as_ref(), object, &format!("{field}.headers"))?;
    if let Some(fault) = &rule.fault {
        route_policies::fault(fault, object, &format!("{field}.fault"))?;
    }
    if let Some(cors) = &rule.cors_policy {
        route_policies::cors(cors, object, &format!("{field}.corsPolicy"))?;
    }
    for (j, m) in rule.match_.iter().enumerate() {
        route_match::route_match(Some(m), object, &format!("{field}.match[{j}]"))?;
    }
    Ok(())
}

/// Fields of a VirtualService Pilotfish does not translate, whichever proxies it binds to.
pub(crate) fn unsupported(name: &str, spec: &VirtualServiceSpec) -> Vec<Diagnostic> {
    let mut fields = Vec::new();
    // `tls` and `tcp` rules are translated by the emit stage (sidecar tcp_routes).
    for (i, rule) in spec.http.iter().enumerate() {
        let mut flag = |present: bool, name: &str| {
            if present {
                fields.push(format!("spec.http[{i}].{name}"));
            }
        };
        flag(rule.delegate.is_some(), "delegate");
        let delay = rule.fault.as_ref().and_then(|f| f.delay.as_ref());
        flag(
            delay.is_some_and(|d| d.exponential_delay.is_some()),
            "fault.delay.exponentialDelay",
        );
        let abort = rule.fault.as_ref().and_then(|f| f.abort.as_ref());
        flag(
            abort.is_some_and(|a| a.http2_error.is_some()),
            "fault.abort.http2Error",
        );
        flag(
            rule.redirect
                .as_ref()
                .is_some_and(|r| r.derive_port.is_some()),
            "redirect.derivePort",
        );
        let bytes = rule
            .direct_response
            .as_ref()
            .and_then(|d| d.body.as_ref())
            .is_some_and(|b| b.bytes.is_some());
        flag(bytes, "directResponse.body.bytes");
    }
    fields
        .into_iter()
        .map(|f| Diagnostic::unsupported(name, f))
        .collect()
}

/// `destinationSubnets` as networks (host bits cleared); a bad entry is
/// reported and makes the whole match inapplicable.
pub(crate) fn subnets(vs: &str, field: &str, texts: &[String]) -> Result<Vec<IpNet>, Diagnostic> {
    texts
        .iter()
        .enumerate()
        .map(|(k, text)| {
            let text = text.trim();
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            parsed.map(|net| net.trunc()).map_err(|_| {
                Diagnostic::invalid(
                    vs,
                    format!("{field}.destinationSubnets[{k}]"),
                    format!("{text:?} is not an IP address or CIDR range; this match is ignored"),
                )
            })
        })
        .collect()
}
