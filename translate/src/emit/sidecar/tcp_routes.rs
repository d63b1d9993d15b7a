//! VirtualService `tls` and `tcp` rules: the opaque (tcp_proxy) filter
//! chains of one service on one outbound port.
//!
//! Envoy picks a filter chain level by level — destination range (most
//! specific first), then SNI, then ALPN — and never backtracks: once a
//! destination range is chosen, a connection that matches none of its
//! chains gets no chain. So every range a service's chains use keeps a
//! chain without SNI, and the rules' "first match wins" is translated into
//! ranges Envoy's most-specific-first choice agrees with:
//!
//! - `tls` rules (TLS services only) add chains on the service's own
//!   destinations narrowed by `sniHosts` (and by `destinationSubnets`, which
//!   select among the service's own addresses); an SNI an earlier rule
//!   already took (exactly or by wildcard) is left out.
//! - `tcp` rules take each of the service's own addresses for the first rule
//!   matching it; `destinationSubnets` that are not one of them become extra
//!   ranges of that rule (claimed port-wide: the first claim wins, and a
//!   range inside an earlier rule's range is shadowed by it).
//! - Whatever is left goes to the service itself (Istio's default route).
//!
//! `port`, `sourceLabels`, `gateways` and `sourceNamespace` decide statically
//! whether a match applies to this proxy and port.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch};
use ipnet::IpNet;
use pilotfish_crds::RouteDestination;
use pilotfish_model::{Protocol, Service};

use crate::claims::{Claim, Claimant, Claims};
use crate::diagnostics::{Diagnostic, DiagnosticKind, Severity};
use crate::emit::context::Context;
use crate::emit::envoy::chain_match::MatchOn;
use crate::emit::envoy::filters;
use crate::emit::sidecar::route_destinations::RuleScope;
use crate::emit::sidecar::virtual_service_index::IndexedVirtualService;
use crate::names;
use crate::protobuf;
use crate::provenance;
use crate::resolve::validate;
use crate::rule_applicability::{self, MatchConditions, RouteFor};

/// Where a chain's connections go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Cluster(String),
    /// Clusters with their (positive) weights, in rule order.
    Weighted(Vec<(String, u32)>),
}

/// One tcp_proxy filter chain.
#[derive(Clone, Debug, PartialEq)]
pub struct L4Chain {
    /// `tcp|<service cluster>` for the service's default route,
    /// `tcp|<service cluster>|spec.tcp[i]` or
    /// `tls|<service cluster>|spec.tls[i].match[j]` for a rule.
    pub name: String,
    /// Destination ranges; empty matches any destination.
    pub ranges: Vec<IpNet>,
    /// SNI values; empty matches any.
    pub server_names: Vec<String>,
    pub target: Target,
    /// The service's own cluster (`outbound|<port>||<host>`), the stat
    /// prefix of its weighted splits.
    pub service_cluster: String,
    /// The objects the chain comes from (see [`crate::provenance`]).
    pub metadata: Option<Metadata>,
}

impl L4Chain {
    /// The chain as an Envoy filter chain: a tcp_proxy to its target.
    pub fn filter_chain(&self) -> FilterChain {
        let filter = match &self.target {
            Target::Cluster(cluster) => filters::tcp_proxy(cluster),
            Target::Weighted(clusters) => {
                filters::weighted_tcp_proxy(&self.service_cluster, clusters)
            }
        };
        FilterChain {
            name: self.name.clone(),
            filter_chain_match: Some(FilterChainMatch {
                prefix_ranges: self.ranges.iter().map(|n| protobuf::cidr(*n)).collect(),
                server_names: self.server_names.clone(),
                ..Default::default()
            }),
            filters: vec![filter],
            metadata: self.metadata.clone(),
            ..Default::default()
        }
    }
}

/// A match key of a chain without ALPN: destination range (or any) and SNI (or any).
type MatchKey = (Option<IpNet>, Option<String>);

/// Who holds each chain match on one port, so that no two chains share one
/// (Envoy rejects the whole listener otherwise).
#[derive(Clone, Debug, Default)]
pub struct MatchClaims<'a> {
    owners: Claims<MatchKey, MatchHolder<'a>>,
    /// Addresses of HTTP services (served by the port's catch-all chain).
    http: BTreeMap<IpAddr, &'a Service>,
}

/// Why a service holds a match; services' own destinations come before
/// anything VirtualService rules claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum MatchSource {
    /// The destination of the service's own chains.
    OwnChain,
    /// An address an HTTP service answers on.
    HttpAddress,
    /// A range or SNI a rule of the service claims.
    Rule,
}

#[derive(Clone, Copy, Debug)]
struct MatchHolder<'a> {
    source: MatchSource,
    service: &'a Service,
}

impl<'a> Claimant for MatchHolder<'a> {
    type Rank = (MatchSource, <&'a Service as Claimant>::Rank);

    fn rank(&self) -> Self::Rank {
        (self.source, self.service.rank())
    }

    /// A service's rule may claim what the service holds already.
    fn is(&self, other: &Self) -> bool {
        self.service.is(&other.service)
    }
}

impl<'a> MatchClaims<'a> {
    /// Records a service's own destination.
    pub fn own(&mut self, service: &'a Service, match_on: &MatchOn) {
        let keys: Vec<MatchKey> = match match_on {
            MatchOn::Addresses(ips) => ips
                .iter()
                .map(|ip| (Some(IpNet::from(*ip)), None))
                .collect(),
            MatchOn::ServerName(name) => vec![(None, Some(name.clone()))],
        };
        for key in keys {
            self.hold(key, MatchSource::OwnChain, service);
        }
    }

    /// Records an address an HTTP service answers on.
    pub fn http_address(&mut self, service: &'a Service, ip: IpAddr) {
        self.http.entry(ip).or_insert(service);
        self.hold(
            (Some(IpNet::from(ip)), None),
            MatchSource::HttpAddress,
            service,
        );
    }

    fn hold(&mut self, key: MatchKey, source: MatchSource, service: &'a Service) {
        // Own destinations were decided by the listener's claims already;
        // a second HTTP service on an address is no conflict here.
        let _ = self.owners.claim(key, MatchHolder { source, service });
    }

    /// Takes `key` for a rule of `service`; the holder if another service has it.
    fn claim(&mut self, key: MatchKey, service: &'a Service) -> Result<(), &'a Service> {
        let rule = MatchHolder {
            source: MatchSource::Rule,
            service,
        };
        match self.owners.claim(key, rule) {
            Claim::Lost { winner } => Err(winner.service),
            Claim::Won | Claim::Again => Ok(()),
        }
    }
}

/// The service and port whose chains are being built.
struct Subject<'a> {
    service: &'a Service,
    port: u16,
    /// `outbound|<port>||<host>`.
    cluster: String,
}

/// The opaque chains of `service` on `port`, whose own destination is
/// `match_on`: rule chains first, then the default one (if any destination
/// is left for it).
pub fn service_chains<'a>(
    ctx: &Context,
    port: u16,
    service: &'a Service,
    match_on: &MatchOn,
    claims: &mut MatchClaims<'a>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<L4Chain> {
    let subject = Subject {
        service,
        port,
        cluster: names::outbound_cluster(port, None, &service.hostname),
    };
    let selection = ctx.virtual_services.select(&service.hostname);
    diags.extend(selection.diagnostics(&service.hostname));
    let mut own = OwnDestinations::new(match_on);
    let mut chains = Vec::new();
    if let Some(vs) = selection.winner {
        let is_tls = service
            .port(port)
            .is_some_and(|p| p.protocol == Protocol::Tls);
        if is_tls {
            chains.extend(tls_chains(ctx, &subject, vs, &mut own, claims, diags));
        }
        chains.extend(tcp_chains(ctx, &subject, vs, &mut own, claims, diags));
    }
    chains.extend(own.default_chain(&subject));
    chains
}

/// The service's own destinations and which of them rules have taken.
struct OwnDestinations {
    /// Own addresses, and the rule index (of `spec.tcp`) that took each.
    addresses: BTreeMap<IpAddr, Option<usize>>,
    /// SNIs rules took on each own address (`None`: the SNI-only service).
    snis: BTreeMap<Option<IpAddr>, Vec<String>>,
    /// The SNI of a service without addresses, and whether a rule took it.
    server_name: Option<(String, bool)>,
}

impl OwnDestinations {
    fn new(match_on: &MatchOn) -> Self {
        match match_on {
            MatchOn::Addresses(ips) => OwnDestinations {
                addresses: ips.iter().map(|ip| (*ip, None)).collect(),
                snis: BTreeMap::new(),
                server_name: None,
            },
            MatchOn::ServerName(name) => OwnDestinations {
                addresses: BTreeMap::new(),
                snis: BTreeMap::new(),
                server_name: Some((name.clone(), false)),
            },
        }
    }

    /// The default route over whatever no rule took.
    fn default_chain(&self, subject: &Subject) -> Option<L4Chain> {
        let target = Target::Cluster(subject.cluster.clone());
        let name = format!("tcp|{}", subject.cluster);
        if let Some((server_name, taken)) = &self.server_name {
            return (!taken).then(|| L4Chain {
                name,
                ranges: Vec::new(),
                server_names: vec![server_name.clone()],
                target,
                service_cluster: subject.cluster.clone(),
                metadata: None,
            });
        }
        let ranges: Vec<IpNet> = self
            .addresses
            .iter()
            .filter(|(_, rule)| rule.is_none())
            .map(|(ip, _)| IpNet::from(*ip))
            .collect();
        (!ranges.is_empty()).then_some(L4Chain {
            name,
            ranges,
            server_names: Vec::new(),
            target,
            service_cluster: subject.cluster.clone(),
            metadata: None,
        })
    }

    /// Takes for SNI chains on `at` the names of `wanted` no earlier rule
    /// took there (exactly or through a wildcard).
    fn take_snis(&mut self, at: Option<IpAddr>, wanted: &[String]) -> Vec<String> {
        let taken = self.snis.entry(at).or_default();
        let mut kept = Vec::new();
        for name in wanted {
            if !taken.iter().any(|t| sni_covers(t, name)) {
                taken.push(name.clone());
                kept.push(name.clone());
            }
        }
        kept
    }
}

/// Whether SNI pattern `pattern` (exact, or `*.suffix`) matches every name
/// `name` matches.
fn sni_covers(pattern: &str, name: &str) -> bool {
    if pattern == name {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => {
            let rest = name.strip_prefix('*').unwrap_or(name);
            rest.ends_with(suffix) && rest.len() > suffix.len()
        }
        _ => false,
    }
}

/// Whether a rule match applies to this sidecar on `port`.
fn applies(ctx: &Context, vs: &IndexedVirtualService, port: u16, m: MatchConditions) -> bool {
    rule_applicability::match_applies(ctx.proxy, RouteFor::Mesh, vs.namespace(), port, m)
}

fn scope<'c, 'a>(
    ctx: &'c Context<'a>,
    vs: &'c IndexedVirtualService,
    port: u16,
) -> RuleScope<'c, 'a> {
    RuleScope {
        ctx,
        object: vs.name(),
        namespace: vs.namespace(),
        port,
        target: RouteFor::Mesh,
    }
}

/// Where a rule's connections go: one cluster, or a weighted split.
pub(crate) fn target(
    scope: &RuleScope,
    routes: &[RouteDestination],
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Result<Target, Diagnostic> {
    if routes.is_empty() {
        let field = format!("{field}.route");
        return Err(Diagnostic::invalid(
            &scope.object,
            field,
            "rule has no route",
        ));
    }
    let mut weighted: Vec<(String, u32)> = Vec::new();
    for (k, rd) in routes.iter().enumerate() {
        let at = format!("{field}.route[{k}]");
        let weight = match rd.weight {
            None if routes.len() == 1 => 100,
            None => 0,
            Some(w) => u32::try_from(w).map_err(|_| {
                Diagnostic::invalid(&scope.object, format!("{at}.weight"), "negative weight")
            })?,
        };
        let mut found = Vec::new();
        let resolved = scope.resolve(&rd.destination, &format!("{at}.destination"), &mut found)?;
        diags.extend(found.into_iter().map(|d| match d.kind {
            DiagnosticKind::MissingSubset => Diagnostic {
                message: format!(
                    "no DestinationRule defines subset {:?} of {}; connections routed to it are closed",
                    resolved.subset.as_deref().unwrap_or_default(),
                    resolved.host
                ),
                ..d
            },
            _ => d,
        }));
        if weight == 0 {
            continue;
        }
        match weighted.iter_mut().find(|(c, _)| *c == resolved.cluster) {
            Some((_, w)) => *w = w.saturating_add(weight),
            None => weighted.push((resolved.cluster, weight)),
        }
    }
    match weighted.len() {
        0 => Err(Diagnostic::invalid(
            &scope.object,
            format!("{field}.route"),
            "no destination with a positive weight",
        )),
        1 => Ok(Target::Cluster(weighted.remove(0).0)),
        _ => Ok(Target::Weighted(weighted)),
    }
}

fn tls_chains<'a>(
    ctx: &Context,
    subject: &Subject<'a>,
    vs: &IndexedVirtualService,
    own: &mut OwnDestinations,
    claims: &mut MatchClaims<'a>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<L4Chain> {
    let name = vs.name();
    let scope = scope(ctx, vs, subject.port);
    let metadata = provenance::metadata([vs.object]);
    let mut out = Vec::new();
    for (i, rule) in vs.spec.tls.iter().enumerate() {
        let field = format!("spec.tls[{i}]");
        let matches: Vec<_> = rule
            .match_
            .iter()
            .enumerate()
            .filter(|(_, m)| applies(ctx, vs, subject.port, MatchConditions::from(*m)))
            .filter(|(_, m)| !m.sni_hosts.is_empty())
            .collect();
        if matches.is_empty() {
            continue;
        }
        let target = match target(&scope, &rule.route, &field, diags) {
            Ok(t) => t,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        for (j, m) in matches {
            let match_field = format!("{field}.match[{j}]");
            let snis: Vec<String> = m
                .sni_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let chain_name = format!("tls|{}|{match_field}", subject.cluster);
            if own.server_name.is_some() {
                if !m.destination_subnets.is_empty() {
                    diags.push(
                        Diagnostic::new(
                            DiagnosticKind::Unsupported,
                            &name,
                            format!(
                                "service {} has no addresses (it is matched by SNI only), so destinationSubnets cannot narrow it; this match is ignored",
                                subject.service.hostname
                            ),
                        )
                        .at(format!("{match_field}.destinationSubnets")),
                    );
                    continue;
                }
                let kept = claim_snis(subject, own, claims, &snis, &name, &match_field, diags);
                if !kept.is_empty() {
                    out.push(L4Chain {
                        name: chain_name,
                        ranges: Vec::new(),
                        server_names: kept,
                        target: target.clone(),
                        service_cluster: subject.cluster.clone(),
                        metadata: metadata.clone(),
                    });
                }
                continue;
            }
            let narrowed = match validate::subnets(&name, &match_field, &m.destination_subnets) {
                Ok(nets) => nets,
                Err(d) => {
                    diags.push(d);
                    continue;
                }
            };
            let ips: Vec<IpAddr> = own
                .addresses
                .keys()
                .copied()
                .filter(|ip| narrowed.is_empty() || narrowed.iter().any(|n| n.contains(ip)))
                .collect();
            // Addresses that keep the same SNIs share one chain.
            let mut groups: BTreeMap<Vec<String>, Vec<IpNet>> = BTreeMap::new();
            for ip in ips {
                let kept = own.take_snis(Some(ip), &snis);
                if !kept.is_empty() {
                    groups.entry(kept).or_default().push(IpNet::from(ip));
                }
            }
            let several = groups.len() > 1;
            for (g, (server_names, ranges)) in groups.into_iter().enumerate() {
                let name = if several {
                    format!("{chain_name}#{g}")
                } else {
                    chain_name.clone()
                };
                out.push(L4Chain {
                    name,
                    ranges,
                    server_names,
                    target: target.clone(),
                    service_cluster: subject.cluster.clone(),
                    metadata: metadata.clone(),
                });
            }
        }
    }
    out
}

/// SNI chains of a service without addresses are matched on SNI alone,
/// port-wide: each name goes to the first service (and rule) to claim it.
fn claim_snis<'a>(
    subject: &Subject<'a>,
    own: &mut OwnDestinations,
    claims: &mut MatchClaims<'a>,
    snis: &[String],
    vs: &str,
    field: &str,
    diags: &mut Vec<Diagnostic>,
) -> Vec<String> {
    let mut kept = Vec::new();
    for name in own.take_snis(None, snis) {
        match claims.claim((None, Some(name.clone())), subject.service) {
            Ok(()) => {
                if let Some((own_name, taken)) = &mut own.server_name
                    && *own_name == name
                {
                    *taken = true;
                }
                kept.push(name);
            }
            Err(holder) => diags.push(claim_conflict(
                vs,
                field,
                subject.port,
                &format!("SNI {name}"),
                &holder.hostname,
            )),
        }
    }
    kept
}

fn claim_conflict(vs: &str, field: &str, port: u16, what: &str, holder: &str) -> Diagnostic {
    Diagnostic::new(
        DiagnosticKind::ListenerConflict,
        vs,
        format!(
            "port {port}, {what} is already matched by service {holder}; this rule does not apply to it"
        ),
    )
    .at(field)
}

fn tcp_chains<'a>(
    ctx: &Context,
    subject: &Subject<'a>,
    vs: &IndexedVirtualService,
    own: &mut OwnDestinations,
    claims: &mut MatchClaims<'a>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<L4Chain> {
    let name = vs.name();
    let scope = scope(ctx, vs, subject.port);
    let metadata = provenance::metadata([vs.object]);
    // Extra ranges kept by earlier rules, for shadowing.
    let mut extra: Vec<IpNet> = Vec::new();
    let mut out = Vec::new();
    for (i, rule) in vs.spec.tcp.iter().enumerate() {
        let field = format!("spec.tcp[{i}]");
        let mut matches = Vec::new();
        // A rule without matches applies to all traffic for the host.
        if rule.match_.is_empty() {
            matches.push((field.clone(), Vec::new()));
        }
        for (j, m) in rule.match_.iter().enumerate() {
            if !applies(ctx, vs, subject.port, MatchConditions::from(m)) {
                continue;
            }
            let match_field = format!("{field}.match[{j}]");
            if m.source_subnet.as_deref().is_some_and(|s| !s.is_empty()) {
                let message =
                    "sourceSubnet is not implemented by Pilotfish yet; this match is ignored";
                diags.push(
                    Diagnostic::new(DiagnosticKind::Unsupported, &name, message)
                        .at(format!("{match_field}.sourceSubnet")),
                );
                continue;
            }
            match validate::subnets(&name, &match_field, &m.destination_subnets) {
                Ok(nets) => matches.push((match_field, nets)),
                Err(d) => diags.push(d),
            }
        }
        if matches.is_empty() {
            continue;
        }
        let target = match target(&scope, &rule.route, &field, diags) {
            Ok(t) => t,
            Err(d) => {
                diags.push(d);
                continue;
            }
        };
        let mut ranges: Vec<IpNet> = Vec::new();
        let mut server_names = Vec::new();
        for (match_field, nets) in matches {
            if nets.is_empty() {
                // The service's own destinations.
                for (ip, rule_index) in own.addresses.iter_mut() {
                    if rule_index.is_none() {
                        *rule_index = Some(i);
                        ranges.push(IpNet::from(*ip));
                    }
                }
                if let Some((server_name, taken)) = &mut own.server_name
                    && !*taken
                {
                    *taken = true;
                    server_names.push(server_name.clone());
                }
                continue;
            }
            for (k, net) in nets.into_iter().enumerate() {
                let net_field = format!("{match_field}.destinationSubnets[{k}]");
                for (ip, rule_index) in own.addresses.iter_mut() {
                    if rule_index.is_none() && net.contains(ip) {
                        *rule_index = Some(i);
                        ranges.push(IpNet::from(*ip));
                    }
                }
                let own_host = own.addresses.contains_key(&net.addr())
                    && net.prefix_len() == net.max_prefix_len();
                if own_host || extra.iter().any(|e| e.contains(&net)) {
                    continue;
                }
                match claims.claim((Some(net), None), subject.service) {
                    Ok(()) => {
                        extra.push(net);
                        ranges.push(net);
                        diags.extend(http_coverage(claims, &name, &net_field, subject.port, net));
                    }
                    Err(holder) => diags.push(claim_conflict(
                        &name,
                        &net_field,
                        subject.port,
                        &format!("destination {net}"),
                        &holder.hostname,
                    )),
                }
            }
        }
        // SNI-only services: a chain either matches the SNI (own traffic) or
        // destination ranges (the rule's subnets), never both at once.
        let by_sni = !server_names.is_empty();
        if by_sni {
            out.push(L4Chain {
                name: format!("tcp|{}|{field}", subject.cluster),
                ranges: Vec::new(),
                server_names,
                target: target.clone(),
                service_cluster: subject.cluster.clone(),
                metadata: metadata.clone(),
            });
        }
        if !ranges.is_empty() {
            ranges.sort();
            ranges.dedup();
            let suffix = if by_sni { "#ranges" } else { "" };
            out.push(L4Chain {
                name: format!("tcp|{}|{field}{suffix}", subject.cluster),
                ranges,
                server_names: Vec::new(),
                target,
                service_cluster: subject.cluster.clone(),
                metadata: metadata.clone(),
            });
        }
    }
    out
}

/// A wide range also catches the addresses of the port's HTTP services
/// (their chain matches no address, so any range is more specific).
fn http_coverage(
    claims: &MatchClaims,
    vs: &str,
    field: &str,
    port: u16,
    net: IpNet,
) -> Vec<Diagnostic> {
    claims
        .http
        .iter()
        .filter(|(ip, _)| net.contains(*ip))
        .map(|(ip, service)| {
            let service = &service.hostname;
            let mut d = Diagnostic::new(
                DiagnosticKind::ListenerConflict,
                vs,
                format!(
                    "port {port}: {net} also covers {ip}, an address of HTTP service {service}; connections to it take this TCP route"
                ),
            )
            .at(field);
            d.severity = Severity::Warning;
            d
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::listeners::tests::{listener_filter_names, ranges};
    use crate::test_support::*;
    use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
    use pilotfish_model::Protocol;
    use std::sync::Arc;

    const DB: &str = "db.default.svc.cluster.local";

    fn chain<'l>(listener: &'l Listener, name: &str) -> &'l FilterChain {
        let names: Vec<_> = listener
            .filter_chains
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        let found = listener.filter_chains.iter().find(|c| c.name == name);
        found.unwrap_or_else(|| panic!("no chain {name} in {}: {names:?}", listener.name))
    }

    fn server_names(chain: &FilterChain) -> Vec<String> {
        chain
            .filter_chain_match
            .clone()
            .unwrap_or_default()
            .server_names
    }

    fn targets(chain: &FilterChain) -> Vec<(String, u32)> {
        tcp_proxy_targets(chain).expect("a tcp_proxy chain")
    }

    fn cluster(port: u16, subset: &str, host: &str) -> String {
        names::outbound_cluster(port, (!subset.is_empty()).then_some(subset), host)
    }

    fn vs(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: db, namespace: default}}\nspec:\n{spec}"
        )
    }

    /// db: a TCP service on 5432 and 6432 with two VIPs and v1/v2 endpoints.
    fn db_mesh(extra: &str) -> crate::MeshState {
        let mut objects = dr_subsets("db", &[("v1", "v1"), ("v2", "v2")]);
        objects.extend(config(extra));
        mesh(
            vec![
                service(
                    DB,
                    &["10.0.0.5", "10.0.0.6"],
                    &[(5432, Protocol::Tcp), (6432, Protocol::Tcp)],
                ),
                service(
                    "web.default.svc.cluster.local",
                    &["10.0.0.7"],
                    &[(5432, Protocol::Http)],
                ),
                service(
                    "cache.default.svc.cluster.local",
                    &["10.0.1.9"],
                    &[(5432, Protocol::Tcp)],
                ),
            ],
            vec![(
                DB,
                vec![
                    endpoint("10.1.0.1", 5432, 5432, &[("version", "v1")]),
                    endpoint("10.1.0.2", 5432, 5432, &[("version", "v2")]),
                ],
            )],
            &objects,
        )
    }

    const WEIGHTED: &str = r#"
  hosts: [db]
  tcp:
  - match: [{port: 5432}]
    route:
    - {destination: {host: db, subset: v1}, weight: 80}
    - {destination: {host: db, subset: v2}, weight: 20}
"#;

    #[test]
    fn weighted_tcp_route_splits_connections_between_subsets() {
        let t = translate_for(&db_mesh(&vs(WEIGHTED)), &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_5432");
        let rule = chain(
            listener,
            &format!("tcp|{}|spec.tcp[0]", cluster(5432, "", DB)),
        );
        assert_eq!(ranges(rule), ["10.0.0.5/32", "10.0.0.6/32"]);
        assert_eq!(
            targets(rule),
            [(cluster(5432, "v1", DB), 80), (cluster(5432, "v2", DB), 20)]
        );
        assert!(
            listener
                .filter_chains
                .iter()
                .all(|c| c.name != format!("tcp|{}", cluster(5432, "", DB))),
            "the rule took every address: no default chain"
        );
        // The rule is scoped to 5432: 6432 keeps the default route.
        let other = listener_named(&t, "0.0.0.0_6432");
        let default = chain(other, &format!("tcp|{}", cluster(6432, "", DB)));
        assert_eq!(targets(default), [(cluster(6432, "", DB), 0)]);
        assert_eq!(other.filter_chains.len(), 1);
        assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
        assert_envoy_invariants(&t);
    }

    #[test]
    fn first_matching_rule_wins_per_address_and_source_labels_select_rules() {
        let spec = r#"
  hosts: [db]
  tcp:
  - match: [{sourceLabels: {app: batch}}]
    route: [{destination: {host: db, subset: v2}}]
  - match: [{destinationSubnets: [10.0.0.6/32]}]
    route: [{destination: {host: db, subset: v1}}]
  - route: [{destination: {host: cache}}]
"#;
        let m = db_mesh(&vs(spec));
        let t = translate_for(&m, &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_5432");
        let base = cluster(5432, "", DB);
        let narrow = chain(listener, &format!("tcp|{base}|spec.tcp[1]"));
        assert_eq!(ranges(narrow), ["10.0.0.6/32"]);
        assert_eq!(targets(narrow), [(cluster(5432, "v1", DB), 0)]);
        let rest = chain(listener, &format!("tcp|{base}|spec.tcp[2]"));
        assert_eq!(ranges(rest), ["10.0.0.5/32"]);
        assert_eq!(
            targets(rest),
            [(cluster(5432, "", "cache.default.svc.cluster.local"), 0)]
        );
        assert_envoy_invariants(&t);

        let batch = sidecar_with_labels("default", &[("app", "batch")]);
        let t = translate_for(&m, &batch);
        let listener = listener_named(&t, "0.0.0.0_5432");
        let all = chain(listener, &format!("tcp|{base}|spec.tcp[0]"));
        assert_eq!(ranges(all), ["10.0.0.5/32", "10.0.0.6/32"]);
        assert!(
            listener
                .filter_chains
                .iter()
                .all(|c| !c.name.contains("spec.tcp[1]"))
        );
        assert_envoy_invariants(&t);
    }

    #[test]
    fn destination_subnets_add_ranges_claimed_once_per_port() {
        let spec = r#"
  hosts: [db]
  tcp:
  - match: [{destinationSubnets: [10.0.0.0/24, "10.0.1.9", 10.9.0.0/16, bogus]}]
    route: [{destination: {host: db, subset: v1}}]
  - match: [{destinationSubnets: [10.0.0.128/25, 10.8.0.0/16]}]
    route: [{destination: {host: db, subset: v2}}]
"#;
        let t = translate_for(&db_mesh(&vs(spec)), &sidecar("default"));
        // The whole first match is ignored (a bad subnet); the second rule applies.
        let listener = listener_named(&t, "0.0.0.0_5432");
        let base = cluster(5432, "", DB);
        let second = chain(listener, &format!("tcp|{base}|spec.tcp[1]"));
        assert_eq!(ranges(second), ["10.0.0.128/25", "10.8.0.0/16"]);
        let default = chain(listener, &format!("tcp|{base}"));
        assert_eq!(ranges(default), ["10.0.0.5/32", "10.0.0.6/32"]);
        assert_one_diagnostic(
            &t,
            DiagnosticKind::InvalidField,
            "VirtualService default/db",
            "spec.tcp[0].match[0].destinationSubnets[3]",
        );
        assert_envoy_invariants(&t);

        let spec = spec.replace(", bogus", "");
        let t = translate_for(&db_mesh(&vs(&spec)), &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_5432");
        let first = chain(listener, &format!("tcp|{base}|spec.tcp[0]"));
        // Own addresses inside the subnet, the subnet itself, and 10.9/16;
        // cache's VIP stays cache's (reported).
        assert_eq!(
            ranges(first),
            ["10.0.0.0/24", "10.0.0.5/32", "10.0.0.6/32", "10.9.0.0/16"]
        );
        // 10.0.0.128/25 lies inside the first rule's /24: shadowed.
        let second = chain(listener, &format!("tcp|{base}|spec.tcp[1]"));
        assert_eq!(ranges(second), ["10.8.0.0/16"]);
        assert!(
            listener
                .filter_chains
                .iter()
                .all(|c| c.name != format!("tcp|{base}"))
        );
        let conflicts = diagnostics_of(&t, DiagnosticKind::ListenerConflict);
        let fields: Vec<_> = conflicts
            .iter()
            .map(|d| (d.field.clone().unwrap_or_default(), d.severity))
            .collect();
        assert_eq!(
            fields,
            [
                // The /24 also catches web's HTTP VIP: a warning.
                (
                    "spec.tcp[0].match[0].destinationSubnets[0]".to_string(),
                    Severity::Warning
                ),
                (
                    "spec.tcp[0].match[0].destinationSubnets[1]".to_string(),
                    Severity::Error
                ),
            ]
        );
        assert!(
            conflicts[1]
                .message
                .contains("cache.default.svc.cluster.local")
        );
        assert!(
            conflicts[0]
                .message
                .contains("web.default.svc.cluster.local")
        );
        let cache = chain(
            listener,
            &format!(
                "tcp|{}",
                cluster(5432, "", "cache.default.svc.cluster.local")
            ),
        );
        assert_eq!(ranges(cache), ["10.0.1.9/32"]);
        assert_envoy_invariants(&t);
    }

    #[test]
    fn missing_subsets_and_unknown_hosts_are_routed_by_name_and_reported() {
        let spec = r#"
  hosts: [db]
  tcp:
  - route: [{destination: {host: db, subset: v9}}]
"#;
        let t = translate_for(&db_mesh(&vs(spec)), &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_5432");
        let rule = chain(
            listener,
            &format!("tcp|{}|spec.tcp[0]", cluster(5432, "", DB)),
        );
        assert_eq!(targets(rule), [(cluster(5432, "v9", DB), 0)]);
        assert_one_diagnostic(
            &t,
            DiagnosticKind::MissingSubset,
            "VirtualService default/db",
            "spec.tcp[0].route[0].destination.subset",
        );
        let d = diagnostics_of(&t, DiagnosticKind::MissingSubset)[0];
        assert!(d.message.contains("connections"), "{}", d.message);
        assert_envoy_invariants(&t);

        let spec = r#"
  hosts: [db]
  tcp:
  - route: [{destination: {host: nowhere.example.com, port: {number: 5432}}}]
  - route: [{destination: {host: db}, weight: 0}]
"#;
        let t = translate_for(&db_mesh(&vs(spec)), &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_5432");
        let rule = chain(
            listener,
            &format!("tcp|{}|spec.tcp[0]", cluster(5432, "", DB)),
        );
        assert_eq!(
            targets(rule),
            [(cluster(5432, "", "nowhere.example.com"), 0)]
        );
        assert_eq!(
            diagnostics_of(&t, DiagnosticKind::UnknownDestination).len(),
            1
        );
        assert_one_diagnostic(
            &t,
            DiagnosticKind::InvalidField,
            "VirtualService default/db",
            "spec.tcp[1].route",
        );
    }

    #[test]
    fn source_subnet_and_gateway_only_matches_do_not_apply() {
        let spec = r#"
  hosts: [db]
  gateways: [mesh, edge]
  tcp:
  - match: [{sourceSubnet: 10.0.0.0/8}]
    route: [{destination: {host: db, subset: v1}}]
  - match: [{gateways: [edge]}]
    route: [{destination: {host: db, subset: v2}}]
"#;
        let t = translate_for(&db_mesh(&vs(spec)), &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_5432");
        assert!(
            listener
                .filter_chains
                .iter()
                .all(|c| !c.name.contains("spec.tcp"))
        );
        assert_one_diagnostic(
            &t,
            DiagnosticKind::Unsupported,
            "VirtualService default/db",
            "spec.tcp[0].match[0].sourceSubnet",
        );
    }

    #[test]
    fn sniffed_services_keep_their_http_chain_and_route_the_rest() {
        let mut m = db_mesh(&vs(WEIGHTED));
        Arc::make_mut(&mut m.services)[0].ports[0].protocol = Protocol::Unknown;
        let t = translate_for(&m, &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_5432");
        let base = cluster(5432, "", DB);
        let http = chain(listener, &format!("http|{base}"));
        assert_eq!(ranges(http), ["10.0.0.5/32", "10.0.0.6/32"]);
        let rule = chain(listener, &format!("tcp|{base}|spec.tcp[0]"));
        assert_eq!(targets(rule).len(), 2);
        assert_envoy_invariants(&t);
    }

    /// front: a TLS service with a VIP; a and b: TLS services on the same port.
    fn tls_mesh(spec: &str) -> crate::MeshState {
        let mut vip_less = service("c.example.com", &[], &[(443, Protocol::Tls)]);
        vip_less.resolution = pilotfish_model::Resolution::Dns;
        let mut objects = config(&format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: front, namespace: default}}\nspec:\n{spec}"
        ));
        objects.extend(dr_subsets("a.example.com", &[("v1", "v1")]));
        mesh(
            vec![
                service("front.example.com", &["10.0.0.60"], &[(443, Protocol::Tls)]),
                service("a.example.com", &["10.0.0.61"], &[(443, Protocol::Tls)]),
                service("b.example.com", &["10.0.0.62"], &[(443, Protocol::Tls)]),
                vip_less,
            ],
            vec![],
            &objects,
        )
    }

    #[test]
    fn tls_routes_pick_destinations_by_sni_on_the_service_addresses() {
        let spec = r#"
  hosts: [front.example.com]
  tls:
  - match: [{sniHosts: [a.example.com, "*.a.example.com"]}]
    route: [{destination: {host: a.example.com, subset: v1}}]
  - match: [{sniHosts: [x.a.example.com, b.example.com]}, {sniHosts: [z.example.com], port: 8443}]
    route:
    - {destination: {host: b.example.com}, weight: 90}
    - {destination: {host: a.example.com}, weight: 10}
"#;
        let t = translate_for(&tls_mesh(spec), &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_443");
        let base = cluster(443, "", "front.example.com");
        let a = chain(listener, &format!("tls|{base}|spec.tls[0].match[0]"));
        assert_eq!(ranges(a), ["10.0.0.60/32"]);
        assert_eq!(server_names(a), ["*.a.example.com", "a.example.com"]);
        assert_eq!(targets(a), [(cluster(443, "v1", "a.example.com"), 0)]);
        let b = chain(listener, &format!("tls|{base}|spec.tls[1].match[0]"));
        assert_eq!(
            server_names(b),
            ["b.example.com"],
            "x.a.example.com is taken by *.a.example.com"
        );
        assert_eq!(
            targets(b),
            [
                (cluster(443, "", "b.example.com"), 90),
                (cluster(443, "", "a.example.com"), 10)
            ]
        );
        // Other SNIs (and non-TLS traffic) to front's VIP still reach front.
        let default = chain(listener, &format!("tcp|{base}"));
        assert_eq!(ranges(default), ["10.0.0.60/32"]);
        assert!(server_names(default).is_empty());
        let inspectors = listener_filter_names(listener);
        assert_eq!(inspectors, ["envoy.filters.listener.tls_inspector"]);
        assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
        assert_envoy_invariants(&t);
    }

    #[test]
    fn tls_routes_of_sni_only_services_claim_server_names_port_wide() {
        let spec = r#"
  hosts: [c.example.com]
  tls:
  - match: [{sniHosts: [c.example.com, other.example.com]}]
    route: [{destination: {host: a.example.com}}]
  - match: [{sniHosts: [d.example.com], destinationSubnets: [10.0.0.0/8]}]
    route: [{destination: {host: b.example.com}}]
"#;
        let t = translate_for(&tls_mesh(spec), &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_443");
        let base = cluster(443, "", "c.example.com");
        let rule = chain(listener, &format!("tls|{base}|spec.tls[0].match[0]"));
        assert!(ranges(rule).is_empty());
        assert_eq!(server_names(rule), ["c.example.com", "other.example.com"]);
        assert!(
            listener
                .filter_chains
                .iter()
                .all(|c| c.name != format!("tcp|{base}")),
            "the rule took c.example.com's own SNI"
        );
        assert_one_diagnostic(
            &t,
            DiagnosticKind::Unsupported,
            "VirtualService default/front",
            "spec.tls[1].match[0].destinationSubnets",
        );
        assert_envoy_invariants(&t);
    }

    #[test]
    fn tcp_rules_also_apply_to_tls_services_after_their_tls_rules() {
        let spec = r#"
  hosts: [front.example.com]
  tls:
  - match: [{sniHosts: [a.example.com]}]
    route: [{destination: {host: a.example.com}}]
  tcp:
  - route: [{destination: {host: b.example.com}}]
"#;
        let t = translate_for(&tls_mesh(spec), &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_443");
        let base = cluster(443, "", "front.example.com");
        chain(listener, &format!("tls|{base}|spec.tls[0].match[0]"));
        let rest = chain(listener, &format!("tcp|{base}|spec.tcp[0]"));
        assert_eq!(ranges(rest), ["10.0.0.60/32"]);
        assert_eq!(targets(rest), [(cluster(443, "", "b.example.com"), 0)]);
        assert_envoy_invariants(&t);
    }

    #[test]
    fn passthrough_service_entries_without_addresses_let_their_port_out() {
        let mut mongo = service("mongo.example.com", &[], &[(27017, Protocol::Tcp)]);
        mongo.resolution = pilotfish_model::Resolution::Passthrough;
        let mut m = mesh(vec![mongo], vec![], &[]);
        m.mesh.outbound_traffic_policy = crate::OutboundTrafficPolicy::RegistryOnly;
        let t = translate_for(&m, &sidecar("default"));
        let listener = listener_named(&t, "0.0.0.0_27017");
        assert!(listener.filter_chains.is_empty());
        let default = listener.default_filter_chain.as_ref().unwrap();
        assert_eq!(
            tcp_proxy_cluster(default).as_deref(),
            Some("outbound|27017||mongo.example.com")
        );
        assert!(t.diagnostics.is_empty(), "{:#?}", t.diagnostics);
        // Without interception the original destination would be Envoy's
        // own listener: no listener at all, and the service is reported.
        let t = translate_for(&m, &sidecar_without_interception("default"));
        assert!(t.resources.listeners.is_empty());
        let unreachable = diagnostics_of(&t, DiagnosticKind::Unreachable);
        assert_eq!(unreachable.len(), 1);
        assert_eq!(unreachable[0].object, "service mongo.example.com");
        assert!(unreachable[0].message.contains("resolution NONE"));
    }

    /// The random meshes of the invariant and Envoy tests do reach these rules.
    #[test]
    fn random_meshes_exercise_tcp_and_tls_rules() {
        let (mut tcp, mut tls, mut weighted) = (0, 0, 0);
        for seed in 0..200 {
            let t = translate_for(&random_mesh(seed), &sidecar("default"));
            for c in t.resources.listeners.iter().flat_map(|l| &l.filter_chains) {
                tcp += usize::from(c.name.contains("|spec.tcp["));
                tls += usize::from(c.name.contains("|spec.tls["));
                weighted += usize::from(tcp_proxy_targets(c).is_some_and(|t| t.len() > 1));
            }
        }
        assert!(
            tcp > 20 && tls > 5 && weighted > 20,
            "tcp {tcp}, tls {tls}, weighted {weighted}"
        );
    }
}
