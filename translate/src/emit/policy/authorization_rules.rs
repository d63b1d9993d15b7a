//! One AuthorizationPolicy rule as an Envoy RBAC policy, Istio's mapping:
//! `from` sources become principals (peer identity from the mesh TLS
//! certificate's URI SAN, peer addresses), `to` operations and `when`
//! conditions permissions (request attributes, destination). Within a
//! source or operation every field must match, any value of a field;
//! `not*` fields negate.
//!
//! Istio writes principals without `spiffe://`
//! (`cluster.local/ns/default/sa/foo`); `*` alone matches any value, as a
//! prefix or suffix a suffix or prefix.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, permission, principal,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, RegexMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
};
use pilotfish_crds::{Condition, Operation, Rule, Source};

use crate::protobuf;

/// Where a rule is enforced, which decides what it can check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enforcement {
    /// An HTTP chain: methods, paths, hosts and headers can be checked.
    pub http: bool,
    /// The proxy holds a workload certificate: peers can prove an identity.
    pub identities: bool,
}

/// What a rule needs that some chains cannot give.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Methods, paths, hosts or request headers.
    pub http: bool,
    /// Principals, namespaces, service accounts or trust domains.
    pub identity: bool,
    /// A condition key Pilotfish cannot check (its name).
    pub unenforceable: Option<&'static str>,
}

/// What a rule reads.
pub fn needs(rule: &Rule) -> Needs {
    let mut out = Needs::default();
    for source in rule.from.iter().filter_map(|f| f.source.as_ref()) {
        out.identity |= [
            &source.principals,
            &source.not_principals,
            &source.namespaces,
            &source.not_namespaces,
            &source.service_accounts,
            &source.not_service_accounts,
            &source.trust_domains,
            &source.not_trust_domains,
        ]
        .iter()
        .any(|v| !v.is_empty());
    }
    for op in rule.to.iter().filter_map(|t| t.operation.as_ref()) {
        out.http |= [
            &op.hosts,
            &op.not_hosts,
            &op.methods,
            &op.not_methods,
            &op.paths,
            &op.not_paths,
        ]
        .iter()
        .any(|v| !v.is_empty());
    }
    for condition in &rule.when {
        match ConditionKey::of(&condition.key) {
            ConditionKey::Header(_) => out.http = true,
            ConditionKey::SourcePrincipal | ConditionKey::SourceNamespace => out.identity = true,
            ConditionKey::Unenforceable => {
                out.unenforceable.get_or_insert("unknown condition");
            }
            _ => {}
        }
    }
    out
}

/// The rule as an RBAC policy for a chain where `enforcement` holds. What
/// the chain cannot check is left out of the rule, which widens what it
/// matches: callers use that only for DENY rules (never widening what is
/// allowed) and drop ALLOW rules that need more than the chain gives.
pub fn policy(rule: &Rule, policy_namespace: &str, enforcement: Enforcement) -> Policy {
    let sources: Vec<Principal> = rule
        .from
        .iter()
        .filter_map(|f| f.source.as_ref())
        .map(|s| source(s, policy_namespace))
        .collect();
    let operations: Vec<Permission> = rule
        .to
        .iter()
        .filter_map(|t| t.operation.as_ref())
        .map(|o| operation(o, enforcement.http))
        .collect();
    let mut principals = Vec::new();
    let mut permissions = Vec::new();
    if !sources.is_empty() {
        principals.push(or_ids(sources));
    }
    if !operations.is_empty() {
        permissions.push(or_rules(operations));
    }
    for condition in &rule.when {
        match condition_match(condition, enforcement.http) {
            Some(Match::Principal(p)) => principals.push(p),
            Some(Match::Permission(p)) => permissions.push(p),
            None => {}
        }
    }
    Policy {
        permissions: vec![and_rules(permissions)],
        principals: vec![and_ids(principals)],
        ..Default::default()
    }
}

/// A policy matching every connection and request.
pub fn everything() -> Policy {
    Policy {
        permissions: vec![any_permission()],
        principals: vec![any_principal()],
        ..Default::default()
    }
}

fn source(s: &Source, policy_namespace: &str) -> Principal {
    let mut all = Vec::new();
    let mut field = |values: &[String], negated: bool, one: &dyn Fn(&str) -> Principal| {
        if values.is_empty() {
            return;
        }
        let any = or_ids(values.iter().map(|v| one(v)).collect());
        all.push(if negated { not_id(any) } else { any });
    };
    field(&s.principals, false, &principal_named);
    field(&s.not_principals, true, &principal_named);
    field(&s.namespaces, false, &namespace);
    field(&s.not_namespaces, true, &namespace);
    let account = |v: &str| service_account(v, policy_namespace);
    field(&s.service_accounts, false, &account);
    field(&s.not_service_accounts, true, &account);
    field(&s.trust_domains, false, &trust_domain);
    field(&s.not_trust_domains, true, &trust_domain);
    field(&s.ip_blocks, false, &|v| ip(v, Peer::Direct));
    field(&s.not_ip_blocks, true, &|v| ip(v, Peer::Direct));
    field(&s.remote_ip_blocks, false, &|v| ip(v, Peer::Remote));
    field(&s.not_remote_ip_blocks, true, &|v| ip(v, Peer::Remote));
    and_ids(all)
}

/// HTTP-only fields are left out when `http` is false (see [`policy`]).
fn operation(o: &Operation, http: bool) -> Permission {
    let mut all = Vec::new();
    let mut field = |values: &[String], negated: bool, one: &dyn Fn(&str) -> Permission| {
        if values.is_empty() {
            return;
        }
        let any = or_rules(values.iter().map(|v| one(v)).collect());
        all.push(if negated { not_rule(any) } else { any });
    };
    field(&o.ports, false, &port);
    field(&o.not_ports, true, &port);
    if http {
        field(&o.hosts, false, &host);
        field(&o.not_hosts, true, &host);
        field(&o.methods, false, &method);
        field(&o.not_methods, true, &method);
        field(&o.paths, false, &path);
        field(&o.not_paths, true, &path);
    }
    and_rules(all)
}

enum Match {
    Principal(Principal),
    Permission(Permission),
}

/// The `when` keys Pilotfish enforces.
#[derive(Debug, PartialEq, Eq)]
enum ConditionKey<'k> {
    Header(&'k str),
    SourcePrincipal,
    SourceNamespace,
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    Sni,
    Unenforceable,
}

impl<'k> ConditionKey<'k> {
    fn of(key: &'k str) -> Self {
        match key {
            "source.principal" => Self::SourcePrincipal,
            "source.namespace" => Self::SourceNamespace,
            "source.ip" => Self::SourceIp,
            "remote.ip" => Self::RemoteIp,
            "destination.ip" => Self::DestinationIp,
            "destination.port" => Self::DestinationPort,
            "connection.sni" => Self::Sni,
            _ => match key
                .strip_prefix("request.headers[")
                .and_then(|k| k.strip_suffix(']'))
            {
                Some(name) if !name.is_empty() => Self::Header(name),
                _ => Self::Unenforceable,
            },
        }
    }
}

/// A condition's values (any) and notValues (none) as one match; `None`
/// when the chain cannot check it (headers on TCP) or Pilotfish cannot
/// (callers fail closed on those, see [`needs`]).
fn condition_match(c: &Condition, http: bool) -> Option<Match> {
    let principal = |one: &dyn Fn(&str) -> Principal| {
        let mut all = Vec::new();
        if !c.values.is_empty() {
            all.push(or_ids(c.values.iter().map(|v| one(v)).collect()));
        }
        if !c.not_values.is_empty() {
            all.push(not_id(or_ids(
                c.not_values.iter().map(|v| one(v)).collect(),
            )));
        }
        Some(Match::Principal(and_ids(all)))
    };
    let permission = |one: &dyn Fn(&str) -> Permission| {
        let mut all = Vec::new();
        if !c.values.is_empty() {
            all.push(or_rules(c.values.iter().map(|v| one(v)).collect()));
        }
        if !c.not_values.is_empty() {
            all.push(not_rule(or_rules(
                c.not_values.iter().map(|v| one(v)).collect(),
            )));
        }
        Some(Match::Permission(and_rules(all)))
    };
    match ConditionKey::of(&c.key) {
        ConditionKey::Header(name) if http => permission(&|v| header(name, v)),
        ConditionKey::Header(_) | ConditionKey::Unenforceable => None,
        ConditionKey::SourcePrincipal => principal(&principal_named),
        ConditionKey::SourceNamespace => principal(&namespace),
        ConditionKey::SourceIp => principal(&|v| ip(v, Peer::Direct)),
        ConditionKey::RemoteIp => principal(&|v| ip(v, Peer::Remote)),
        ConditionKey::DestinationIp => permission(&|v| {
            cidr(v).map_or_else(nothing_permission, |r| {
                permission_of(permission::Rule::DestinationIp(r))
            })
        }),
        ConditionKey::DestinationPort => permission(&port),
        ConditionKey::Sni => {
            permission(&|v| permission_of(permission::Rule::RequestedServerName(wildcard(v, None))))
        }
    }
}

/// `cluster.local/ns/default/sa/foo` against the peer certificate's URI SAN.
fn principal_named(value: &str) -> Principal {
    if value == "*" {
        return authenticated(None);
    }
    authenticated(Some(wildcard(value, Some("spiffe://"))))
}

/// Any identity of namespace `value` (`*` as in Istio).
fn namespace(value: &str) -> Principal {
    if value == "*" {
        return authenticated(None);
    }
    let name = match (value.strip_prefix('*'), value.strip_suffix('*')) {
        (Some(suffix), _) => format!("[^/]*{}", regex::escape(suffix)),
        (_, Some(prefix)) => format!("{}[^/]*", regex::escape(prefix)),
        _ => regex::escape(value),
    };
    authenticated(Some(regex(format!("spiffe://[^/]+/ns/{name}/.*"))))
}

/// `namespace/name`, or a name in the policy's namespace.
fn service_account(value: &str, policy_namespace: &str) -> Principal {
    let (ns, name) = value.split_once('/').unwrap_or((policy_namespace, value));
    authenticated(Some(matcher(MatchPattern::Suffix(format!(
        "/ns/{ns}/sa/{name}"
    )))))
}

fn trust_domain(value: &str) -> Principal {
    if value == "*" {
        return authenticated(None);
    }
    authenticated(Some(matcher(MatchPattern::Prefix(format!(
        "spiffe://{value}/"
    )))))
}

#[derive(Clone, Copy)]
enum Peer {
    /// The connection's own peer address.
    Direct,
    /// The original client, as X-Forwarded-For tells it.
    Remote,
}

fn ip(value: &str, peer: Peer) -> Principal {
    let Some(range) = cidr(value) else {
        return nothing_principal();
    };
    principal_of(match peer {
        Peer::Direct => principal::Identifier::DirectRemoteIp(range),
        Peer::Remote => principal::Identifier::RemoteIp(range),
    })
}

/// An IP or CIDR (validated when loaded; anything else matches nothing).
fn cidr(value: &str) -> Option<CidrRange> {
    if let Ok(net) = value.parse::<ipnet::IpNet>() {
        return Some(protobuf::cidr(net.trunc()));
    }
    value.parse::<IpAddr>().ok().map(protobuf::host_cidr)
}

fn port(value: &str) -> Permission {
    match value.parse::<u32>() {
        Ok(port) => permission_of(permission::Rule::DestinationPort(port)),
        Err(_) => nothing_permission(),
    }
}

fn method(value: &str) -> Permission {
    header(":method", value)
}

/// Host header, with or without a port, compared case-insensitively.
fn host(value: &str) -> Permission {
    let name = match (value.strip_prefix('*'), value.strip_suffix('*')) {
        _ if value == "*" => return any_permission(),
        (Some(suffix), _) => format!(".*{}", regex::escape(suffix)),
        (_, Some(prefix)) => format!("{}.*", regex::escape(prefix)),
        _ => regex::escape(value),
    };
    permission_of(permission::Rule::Header(HeaderMatcher {
        name: ":authority".into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(regex(
            format!("(?i){name}(:[0-9]+)?"),
        ))),
        ..Default::default()
    }))
}

fn path(value: &str) -> Permission {
    if value == "*" {
        return any_permission();
    }
    permission_of(permission::Rule::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(wildcard(value, None))),
    }))
}

/// A request header; `*` only asks that it is present.
fn header(name: &str, value: &str) -> Permission {
    let specifier = if value == "*" {
        header_matcher::HeaderMatchSpecifier::PresentMatch(true)
    } else {
        header_matcher::HeaderMatchSpecifier::StringMatch(wildcard(value, None))
    };
    permission_of(permission::Rule::Header(HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(specifier),
        ..Default::default()
    }))
}

/// Istio's value matching: exact, `*suffix`, `prefix*`, `*` (any,
/// non-empty); `scheme` is put before the value (never before a suffix).
fn wildcard(value: &str, scheme: Option<&str>) -> StringMatcher {
    let scheme = scheme.unwrap_or("");
    if value == "*" {
        return regex(".+".into());
    }
    matcher(match (value.strip_prefix('*'), value.strip_suffix('*')) {
        (Some(suffix), _) => MatchPattern::Suffix(suffix.to_string()),
        (_, Some(prefix)) => MatchPattern::Prefix(format!("{scheme}{prefix}")),
        _ => MatchPattern::Exact(format!("{scheme}{value}")),
    })
}

fn matcher(pattern: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

fn regex(regex: String) -> StringMatcher {
    matcher(MatchPattern::SafeRegex(RegexMatcher {
        regex,
        ..Default::default()
    }))
}

fn authenticated(name: Option<StringMatcher>) -> Principal {
    principal_of(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: name,
        },
    ))
}

fn principal_of(identifier: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(identifier),
    }
}

fn permission_of(rule: permission::Rule) -> Permission {
    Permission { rule: Some(rule) }
}

fn any_principal() -> Principal {
    principal_of(principal::Identifier::Any(true))
}

fn any_permission() -> Permission {
    permission_of(permission::Rule::Any(true))
}

fn nothing_principal() -> Principal {
    not_id(any_principal())
}

fn nothing_permission() -> Permission {
    not_rule(any_permission())
}

fn not_id(p: Principal) -> Principal {
    principal_of(principal::Identifier::NotId(Box::new(p)))
}

fn not_rule(p: Permission) -> Permission {
    permission_of(permission::Rule::NotRule(Box::new(p)))
}

/// All of `ids`; none: any.
fn and_ids(mut ids: Vec<Principal>) -> Principal {
    match ids.len() {
        0 => any_principal(),
        1 => ids.remove(0),
        _ => principal_of(principal::Identifier::AndIds(principal::Set { ids })),
    }
}

/// One of `ids` (never empty: callers skip empty lists).
fn or_ids(mut ids: Vec<Principal>) -> Principal {
    match ids.len() {
        1 => ids.remove(0),
        _ => principal_of(principal::Identifier::OrIds(principal::Set { ids })),
    }
}

fn and_rules(mut rules: Vec<Permission>) -> Permission {
    match rules.len() {
        0 => any_permission(),
        1 => rules.remove(0),
        _ => permission_of(permission::Rule::AndRules(permission::Set { rules })),
    }
}

fn or_rules(mut rules: Vec<Permission>) -> Permission {
    match rules.len() {
        1 => rules.remove(0),
        _ => permission_of(permission::Rule::OrRules(permission::Set { rules })),
    }
}
