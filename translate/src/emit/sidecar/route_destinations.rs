//! VirtualService destinations → cluster names, weighted clusters, mirrors
//! and the consistent-hash keys of the destination's DestinationRule.

use envoy_types::pb::envoy::config::core::v3::RuntimeFractionalPercent;
use envoy_types::pb::envoy::config::route::v3::{
    WeightedCluster,
    route_action::{ClusterSpecifier, HashPolicy, RequestMirrorPolicy},
    weighted_cluster::ClusterWeight,
};
use pilotfish_crds::{Destination, HttpRoute, HttpRouteDestination};
use pilotfish_model::Service;

use crate::diagnostics::{Diagnostic, DiagnosticKind};
use crate::emit::context::Context;
use crate::emit::policy::traffic_policy;
use crate::hosts;
use crate::names;
use crate::protobuf;
use crate::resolve::route_policies::HeaderMutation;
use crate::rule_applicability::RouteFor;

/// Where a VirtualService's rules are being translated.
pub struct RuleScope<'c, 'a> {
    pub ctx: &'c Context<'a>,
    /// `VirtualService ns/name`.
    pub object: String,
    pub namespace: &'c str,
    /// The listener port whose route configuration is being built.
    pub port: u16,
    /// Sidecars or the gateway the routes are for.
    pub target: RouteFor<'c>,
}

/// A destination resolved to its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedDestination {
    pub cluster: String,
    pub host: String,
    pub port: u16,
    pub subset: Option<String>,
}

impl RuleScope<'_, '_> {
    /// Resolves `dest` (at `field`); unknown hosts and missing subsets are
    /// reported but still routed by name, so they answer 503 until fixed.
    pub fn resolve(
        &self,
        dest: &Destination,
        field: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> Result<ResolvedDestination, Diagnostic> {
        let resolved = hosts::resolve(&dest.host, self.namespace, self.ctx.domain_suffix());
        let service = self.ctx.service(&resolved);
        // Cluster names carry the registry's spelling of the hostname.
        let host = service.map_or(resolved, |s| s.hostname.clone());
        let port = self.destination_port(dest, service, field)?;
        match service {
            None => diags.push(self.unknown(
                format!("{field}.host"),
                format!("host {host} is not a service visible to this proxy"),
            )),
            Some(s) if s.port(port).is_none() => diags.push(self.unknown(
                format!("{field}.port"),
                format!("service {host} has no port {port}"),
            )),
            Some(_) => {}
        }
        let subset = dest.subset.clone().filter(|s| !s.is_empty());
        if let Some(name) = &subset {
            self.check_subset(&host, name, field, diags);
        }
        Ok(ResolvedDestination {
            cluster: names::outbound_cluster(port, subset.as_deref(), &host),
            host,
            port,
            subset,
        })
    }

    /// The explicit port, else the service's only port, else the listener's.
    fn destination_port(
        &self,
        dest: &Destination,
        service: Option<&Service>,
        field: &str,
    ) -> Result<u16, Diagnostic> {
        if let Some(number) = dest.port.as_ref().and_then(|p| p.number) {
            let invalid = |_| {
                let field = format!("{field}.port.number");
                Diagnostic::invalid(&self.object, field, "port out of range")
            };
            return u16::try_from(number).map_err(invalid);
        }
        let only_port = service.and_then(|s| match s.ports.as_slice() {
            [only] => Some(only.port),
            _ => None,
        });
        Ok(only_port.unwrap_or(self.port))
    }

    fn check_subset(&self, host: &str, subset: &str, field: &str, diags: &mut Vec<Diagnostic>) {
        if self.ctx.destination_rules.has_subset(host, subset) {
            return;
        }
        let message =
            format!("no DestinationRule defines subset {subset:?} of {host}; requests get 503");
        let diagnostic = Diagnostic::new(DiagnosticKind::MissingSubset, &self.object, message);
        diags.push(diagnostic.at(format!("{field}.subset")));
    }

    fn unknown(&self, field: String, message: String) -> Diagnostic {
        Diagnostic::new(DiagnosticKind::UnknownDestination, &self.object, message).at(field)
    }

    /// Consistent-hash keys of a destination's DestinationRule.
    pub fn hash_policies(
        &self,
        dest: &ResolvedDestination,
        diags: &mut Vec<Diagnostic>,
    ) -> Vec<HashPolicy> {
        let policy =
            self.ctx
                .destination_rules
                .policy(&dest.host, dest.port, dest.subset.as_deref());
        policy
            .load_balancer
            .map(|lb| traffic_policy::hash_policies(&lb, diags))
            .unwrap_or_default()
    }
}

/// Where a forwarding rule sends requests.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteTarget {
    pub specifier: ClusterSpecifier,
    pub destinations: Vec<ResolvedDestination>,
    /// Header changes of a single destination, which belong on the route
    /// (a split carries them on each weighted cluster instead).
    pub headers: Option<HeaderMutation>,
}

/// One destination of a rule with its weight and header changes.
struct Weighted {
    destination: ResolvedDestination,
    weight: u32,
    headers: HeaderMutation,
}

/// A single destination ignores its weight; zero-weight destinations are
/// dropped from a split.
pub fn route_target(
    scope: &RuleScope,
    routes: &[HttpRouteDestination],
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Result<RouteTarget, Diagnostic> {
    let mut weighted = Vec::new();
    for (k, rd) in routes.iter().enumerate() {
        let w = weighted_destination(
            scope,
            rd,
            routes.len(),
            &format!("{field}.route[{k}]"),
            diags,
        )?;
        if w.weight > 0 {
            weighted.push(w);
        }
    }
    if weighted.len() == 1
        && let Some(only) = weighted.pop()
    {
        return Ok(RouteTarget {
            specifier: ClusterSpecifier::Cluster(only.destination.cluster.clone()),
            destinations: vec![only.destination],
            headers: Some(only.headers),
        });
    }
    if weighted.is_empty() {
        let field = format!("{field}.route");
        return Err(Diagnostic::invalid(
            &scope.object,
            field,
            "no destination with a positive weight",
        ));
    }
    let clusters = weighted.iter().map(cluster_weight).collect();
    Ok(RouteTarget {
        specifier: ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters,
            ..Default::default()
        }),
        destinations: weighted.into_iter().map(|w| w.destination).collect(),
        headers: None,
    })
}

fn weighted_destination(
    scope: &RuleScope,
    rd: &HttpRouteDestination,
    count: usize,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Result<Weighted, Diagnostic> {
    let weight = match rd.weight {
        None if count == 1 => 100,
        None => 0,
        Some(w) => u32::try_from(w).map_err(|_| {
            Diagnostic::invalid(&scope.object, format!("{field}.weight"), "negative weight")
        })?,
    };
    let destination = scope.resolve(&rd.destination, &format!("{field}.destination"), diags)?;
    let headers_field = format!("{field}.headers");
    let headers = HeaderMutation::from_headers(rd.headers.as_ref(), &scope.object, &headers_field)?;
    Ok(Weighted {
        destination,
        weight,
        headers,
    })
}

fn cluster_weight(w: &Weighted) -> ClusterWeight {
    let mut out = ClusterWeight {
        name: w.destination.cluster.clone(),
        weight: Some(protobuf::u32_value(w.weight)),
        ..Default::default()
    };
    w.headers.clone().apply_to_weight(&mut out);
    out
}

/// `mirror` (+ `mirrorPercentage` or the legacy integer forms) and `mirrors`.
pub fn mirror_policies(
    scope: &RuleScope,
    rule: &HttpRoute,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Result<Vec<RequestMirrorPolicy>, Diagnostic> {
    let mut out = Vec::new();
    if let Some(dest) = &rule.mirror {
        let resolved = scope.resolve(dest, &format!("{field}.mirror"), diags)?;
        let legacy = rule
            .mirror_percent
            .or(rule.mirror_percent_legacy)
            .map(|p| f64::from(p.min(100)));
        let percent = rule.mirror_percentage.as_ref().map(|p| p.value).or(legacy);
        out.push(mirror(resolved.cluster, percent));
    }
    for (i, m) in rule.mirrors.iter().enumerate() {
        let resolved = scope.resolve(
            &m.destination,
            &format!("{field}.mirrors[{i}].destination"),
            diags,
        )?;
        out.push(mirror(
            resolved.cluster,
            m.percentage.as_ref().map(|p| p.value),
        ));
    }
    Ok(out)
}

fn mirror(cluster: String, percent: Option<f64>) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(protobuf::percent(percent.unwrap_or(100.0))),
            ..Default::default()
        }),
        ..Default::default()
    }
}
