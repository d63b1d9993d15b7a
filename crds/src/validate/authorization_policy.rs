//! AuthorizationPolicy checks: Istio's webhook rules, plus refusals of what
//! Pilotfish cannot enforce. A policy Pilotfish could only partly apply
//! would allow or deny other requests than its author meant, so anything
//! not supported rejects the whole object, naming the field.

use std::net::IpAddr;

use ipnet::IpNet;

use super::Report;
use crate::authorization_policy::{
    AuthorizationAction, AuthorizationPolicySpec, Condition, Operation, Source,
};

/// The message for what Pilotfish cannot enforce.
fn unsupported(what: &str) -> String {
    format!(
        "{what}: not supported by Pilotfish; rejected so that nothing is silently allowed or denied"
    )
}

pub(super) fn check(spec: &AuthorizationPolicySpec, r: &mut Report) {
    if let Some(selector) = &spec.selector {
        r.match_labels("spec.selector", &selector.match_labels);
    }
    target_refs(spec, r);
    match spec.action {
        Some(AuthorizationAction::Custom) => r.error(
            "spec.action",
            unsupported("action CUSTOM (external authorization through a provider)"),
        ),
        Some(AuthorizationAction::Audit) => r.error("spec.action", unsupported("action AUDIT")),
        _ if spec.provider.is_some() => r.error(
            "spec.provider",
            "a provider can only be used with action CUSTOM",
        ),
        _ => {}
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        for (j, from) in rule.from.iter().enumerate() {
            let at = format!("{at}.from[{j}].source");
            match &from.source {
                Some(source) => self::source(&at, source, r),
                None => r.error(at, "every `from` entry needs a source"),
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let at = format!("{at}.to[{j}].operation");
            match &to.operation {
                Some(operation) => self::operation(&at, operation, r),
                None => r.error(at, "every `to` entry needs an operation"),
            }
        }
        for (j, condition) in rule.when.iter().enumerate() {
            self::condition(&format!("{at}.when[{j}]"), condition, r);
        }
    }
}

/// Policies attached to Gateway API gateways or waypoints: Pilotfish has
/// neither, and ignoring the reference would apply the policy namespace-wide.
fn target_refs(spec: &AuthorizationPolicySpec, r: &mut Report) {
    let attached = |field: &str| {
        unsupported(&format!(
            "{field} (a policy attached to a Gateway API resource or a waypoint; use selector)"
        ))
    };
    if spec.target_ref.is_some() {
        r.error("spec.targetRef", attached("targetRef"));
    }
    if !spec.target_refs.is_empty() {
        r.error("spec.targetRefs", attached("targetRefs"));
    }
}

fn source(at: &str, s: &Source, r: &mut Report) {
    let lists: [(&str, &[String]); 14] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("trustDomains", &s.trust_domains),
        ("notTrustDomains", &s.not_trust_domains),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ];
    if lists.iter().all(|(_, values)| values.is_empty()) {
        r.error(at, "a source must set at least one field");
    }
    for (name, values) in lists {
        r.no_empty_values(&format!("{at}.{name}"), values);
    }
    for (name, values) in [
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
    ] {
        if !values.is_empty() {
            r.error(format!("{at}.{name}"), request_auth_unsupported(name));
        }
    }
    let accounts = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
    let identities = [
        &s.principals,
        &s.not_principals,
        &s.namespaces,
        &s.not_namespaces,
    ];
    if accounts && identities.iter().any(|v| !v.is_empty()) {
        r.error(
            at,
            "cannot set serviceAccounts with namespaces or principals",
        );
    }
    for (name, values) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        r.ip_blocks(&format!("{at}.{name}"), values);
    }
}

fn operation(at: &str, o: &Operation, r: &mut Report) {
    let lists: [(&str, &[String]); 8] = [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("ports", &o.ports),
        ("notPorts", &o.not_ports),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ];
    if lists.iter().all(|(_, values)| values.is_empty()) {
        r.error(at, "an operation must set at least one field");
    }
    for (name, values) in lists {
        r.no_empty_values(&format!("{at}.{name}"), values);
    }
    r.port_strings(&format!("{at}.ports"), &o.ports);
    r.port_strings(&format!("{at}.notPorts"), &o.not_ports);
    for (name, values) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
        for (k, path) in values.iter().enumerate() {
            if !is_supported_path(path) {
                r.error(
                    format!("{at}.{name}[{k}]"),
                    format!(
                        "{path:?}: `*` is only allowed alone, as a prefix or as a suffix (path templates are not supported)"
                    ),
                );
            }
        }
    }
}

/// Exact, `*`, `*suffix` or `prefix*`: what Istio matches without templates.
fn is_supported_path(path: &str) -> bool {
    match path.matches('*').count() {
        0 => true,
        1 => path.starts_with('*') || path.ends_with('*'),
        _ => false,
    }
}

fn condition(at: &str, c: &Condition, r: &mut Report) {
    let key_field = format!("{at}.key");
    if c.key.is_empty() {
        r.error(key_field, "a condition needs a key");
        return;
    }
    if c.values.is_empty() && c.not_values.is_empty() {
        r.error(
            at,
            format!("condition {:?} must set values or notValues", c.key),
        );
    }
    let values = [("values", &c.values), ("notValues", &c.not_values)];
    for (name, list) in values {
        r.no_empty_values(&format!("{at}.{name}"), list);
    }
    match ConditionKey::parse(&c.key) {
        Err(message) => r.error(key_field, message),
        Ok(ConditionKey::RequestAuth) => r.error(key_field, request_auth_unsupported(&c.key)),
        Ok(ConditionKey::Ips) => {
            for (name, list) in values {
                r.ip_blocks(&format!("{at}.{name}"), list);
            }
        }
        Ok(ConditionKey::Port) => {
            for (name, list) in values {
                r.port_strings(&format!("{at}.{name}"), list);
            }
        }
        Ok(ConditionKey::Other) => {}
    }
}

/// The attributes Istio knows, grouped by how their values are checked.
#[derive(Debug, PartialEq)]
enum ConditionKey {
    /// `source.ip`, `remote.ip`, `destination.ip`: IPs or CIDRs.
    Ips,
    /// `destination.port`.
    Port,
    /// `request.auth.*`: needs RequestAuthentication.
    RequestAuth,
    Other,
}

impl ConditionKey {
    fn parse(key: &str) -> Result<ConditionKey, String> {
        match key {
            "source.ip" | "remote.ip" | "destination.ip" => return Ok(ConditionKey::Ips),
            "destination.port" => return Ok(ConditionKey::Port),
            "source.namespace" | "source.principal" | "connection.sni" => {
                return Ok(ConditionKey::Other);
            }
            _ => {}
        }
        if key.starts_with("request.auth.") {
            Ok(ConditionKey::RequestAuth)
        } else if key.starts_with("experimental.") {
            Ok(ConditionKey::Other)
        } else if let Some(rest) = key.strip_prefix("request.headers") {
            match rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
                Some(name) if !name.is_empty() && !name.contains(['[', ']']) => {
                    Ok(ConditionKey::Other)
                }
                _ => Err(format!(
                    "{key:?}: a header condition is written request.headers[<name>]"
                )),
            }
        } else {
            Err(format!(
                "unknown attribute {key:?}; Istio knows request.headers[<name>], source.ip, remote.ip, source.namespace, source.principal, destination.ip, destination.port, connection.sni, request.auth.* and experimental.*"
            ))
        }
    }
}

fn request_auth_unsupported(field: &str) -> String {
    unsupported(&format!(
        "{field} (needs RequestAuthentication, JWT, which Pilotfish does not serve)"
    ))
}

impl Report {
    fn no_empty_values(&mut self, at: &str, values: &[String]) {
        for (k, value) in values.iter().enumerate() {
            if value.is_empty() {
                self.error(format!("{at}[{k}]"), "empty value not allowed");
            }
        }
    }

    fn ip_blocks(&mut self, at: &str, values: &[String]) {
        for (k, value) in values.iter().enumerate() {
            if !value.is_empty()
                && value.parse::<IpAddr>().is_err()
                && value.parse::<IpNet>().is_err()
            {
                self.error(
                    format!("{at}[{k}]"),
                    format!("{value:?} is neither an IP address nor a CIDR block"),
                );
            }
        }
    }

    /// Ports as Istio's API writes them here: decimal strings.
    fn port_strings(&mut self, at: &str, values: &[String]) {
        for (k, value) in values.iter().enumerate() {
            let field = format!("{at}[{k}]");
            match value.parse::<u32>() {
                Ok(number) => self.port(&field, Some(number)),
                Err(_) if value.is_empty() => {}
                Err(_) => self.error(field, format!("{value:?} is not a port number (1..=65535)")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::{assert_one, errors_of, fields};

    fn ap(spec: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {{name: ap}}\nspec:\n{spec}"
        )
    }

    fn paths(yaml: &str) -> Vec<String> {
        fields(&errors_of(yaml))
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    #[test]
    fn valid_policies_pass() {
        for spec in [
            "  {}\n",
            "  action: DENY\n",
            "  selector: {matchLabels: {app: reviews}}\n  action: ALLOW\n  rules:\n  - from:\n    - source: {principals: [\"cluster.local/ns/shop/sa/productpage\"], ipBlocks: [10.0.0.0/8, \"2001:db8::1\"]}\n    to:\n    - operation: {methods: [GET], paths: [\"/api/*\", \"*.css\", \"*\", /exact], ports: [\"9080\"]}\n    when:\n    - {key: \"request.headers[x-user]\", values: [alice]}\n    - {key: source.ip, notValues: [10.1.0.0/16]}\n    - {key: destination.port, values: [\"443\"]}\n    - {key: \"experimental.envoy.filters.network.mysql_proxy[db.table]\", values: [x]}\n",
            "  rules:\n  - {}\n",
        ] {
            let errors = errors_of(&ap(spec));
            assert!(errors.is_empty(), "{spec}: {errors:?}");
        }
    }

    #[test]
    fn custom_and_audit_actions_are_rejected_at_spec_action() {
        assert_one(
            &ap("  action: CUSTOM\n  provider: {name: ext-authz}\n"),
            "spec.action",
            "not supported by Pilotfish; rejected so that nothing is silently allowed",
        );
        assert_one(
            &ap("  action: AUDIT\n"),
            "spec.action",
            "not supported by Pilotfish; rejected so that nothing is silently allowed",
        );
        assert_one(
            &ap("  action: DENY\n  provider: {name: x}\n"),
            "spec.provider",
            "only be used with action CUSTOM",
        );
    }

    #[test]
    fn target_refs_are_reported_as_unsupported() {
        assert_one(
            &ap("  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n"),
            "spec.targetRef",
            "not supported",
        );
        assert_one(
            &ap("  targetRefs:\n  - {kind: Service, name: reviews}\n"),
            "spec.targetRefs",
            "not supported",
        );
    }

    #[test]
    fn request_principals_and_request_auth_keys_are_not_supported() {
        assert_one(
            &ap("  rules:\n  - from:\n    - source: {requestPrincipals: [\"*\"]}\n"),
            "spec.rules[0].from[0].source.requestPrincipals",
            "not supported",
        );
        assert_one(
            &ap("  rules:\n  - from:\n    - source: {notRequestPrincipals: [\"a/b\"]}\n"),
            "spec.rules[0].from[0].source.notRequestPrincipals",
            "RequestAuthentication",
        );
        assert_one(
            &ap("  rules:\n  - when:\n    - {key: \"request.auth.claims[iss]\", values: [x]}\n"),
            "spec.rules[0].when[0].key",
            "not supported",
        );
    }

    #[test]
    fn unknown_condition_keys_are_rejected() {
        for key in [
            "source.user",
            "request.headers",
            "request.headers[]",
            "Source.ip",
        ] {
            assert_one(
                &ap(&format!(
                    "  rules:\n  - when:\n    - {{key: \"{key}\", values: [x]}}\n"
                )),
                "spec.rules[0].when[0].key",
                key,
            );
        }
        assert_one(
            &ap("  rules:\n  - when:\n    - {key: source.namespace}\n"),
            "spec.rules[0].when[0]",
            "values or notValues",
        );
    }

    #[test]
    fn ip_blocks_must_be_ips_or_cidrs() {
        let yaml = ap(
            "  rules:\n  - from:\n    - source: {ipBlocks: [10.0.0.1, 10.0.0.0/33], notRemoteIpBlocks: [example.com]}\n    when:\n    - {key: remote.ip, values: [1.2.3.4/24, nope]}\n",
        );
        assert_eq!(
            paths(&yaml),
            [
                "spec.rules[0].from[0].source.ipBlocks[1]",
                "spec.rules[0].from[0].source.notRemoteIpBlocks[0]",
                "spec.rules[0].when[0].values[1]",
            ]
        );
    }

    #[test]
    fn ports_are_numbers_from_1_to_65535() {
        let yaml = ap(
            "  rules:\n  - to:\n    - operation: {ports: [\"80\", \"0\", \"http\", \"70000\"], notPorts: [\"-1\"]}\n",
        );
        assert_eq!(
            paths(&yaml),
            [
                "spec.rules[0].to[0].operation.ports[1]",
                "spec.rules[0].to[0].operation.ports[2]",
                "spec.rules[0].to[0].operation.ports[3]",
                "spec.rules[0].to[0].operation.notPorts[0]",
            ]
        );
        let shown = errors_of(&yaml)[1].to_string();
        assert!(
            shown.contains("AuthorizationPolicy default/ap")
                && shown.contains("spec.rules[0].to[0].operation.ports[2]"),
            "{shown}"
        );
    }

    #[test]
    fn paths_take_a_wildcard_only_alone_as_prefix_or_suffix() {
        let yaml = ap(
            "  rules:\n  - to:\n    - operation: {paths: [\"/a/*/b\", \"*/x/*\", \"/ok*\"], notPaths: [\"/v1/{*}/x\"]}\n",
        );
        assert_eq!(
            paths(&yaml),
            [
                "spec.rules[0].to[0].operation.paths[0]",
                "spec.rules[0].to[0].operation.paths[1]",
                "spec.rules[0].to[0].operation.notPaths[0]",
            ]
        );
    }

    #[test]
    fn empty_from_and_to_entries_are_invalid() {
        let yaml = ap(
            "  rules:\n  - from:\n    - {}\n    - source: {}\n    to:\n    - {}\n    - operation: {}\n",
        );
        assert_eq!(
            paths(&yaml),
            [
                "spec.rules[0].from[0].source",
                "spec.rules[0].from[1].source",
                "spec.rules[0].to[0].operation",
                "spec.rules[0].to[1].operation",
            ]
        );
    }

    #[test]
    fn empty_values_and_service_accounts_with_principals_are_invalid() {
        let yaml = ap(
            "  rules:\n  - from:\n    - source: {principals: [\"\"], serviceAccounts: [shop/reviews]}\n",
        );
        let got = fields(&errors_of(&yaml));
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "spec.rules[0].from[0].source.principals[0]");
        assert_eq!(got[1].0, "spec.rules[0].from[0].source");
        assert!(got[1].1.contains("serviceAccounts"), "{got:?}");
    }

    #[test]
    fn selector_labels_take_no_wildcards() {
        assert_one(
            &ap("  selector: {matchLabels: {\"app*\": x}}\n"),
            "spec.selector.matchLabels.app*",
            "wildcard",
        );
    }
}
