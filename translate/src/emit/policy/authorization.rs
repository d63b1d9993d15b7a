//! AuthorizationPolicies selecting a sidecar, as RBAC filters on its
//! inbound chains (Istio's translation): DENY policies in one filter with
//! action DENY, checked first, then ALLOW policies in one filter with
//! action ALLOW. No ALLOW policy selecting the workload: no ALLOW filter
//! (everything not denied is allowed); an ALLOW policy without rules allows
//! nothing.
//!
//! Selection: in the root namespace without a selector, every workload; in
//! a namespace without a selector, that namespace's; with a selector, the
//! workloads whose labels match (in the policy's namespace, or in any from
//! the root namespace).
//!
//! Fail closed, never widen: a policy Pilotfish cannot enforce as written
//! denies everything on its workloads, with a diagnostic. On TCP chains
//! HTTP-only fields cannot be checked: an ALLOW rule using them matches
//! nothing, a DENY rule is checked without them. Without a workload
//! certificate no peer proves an identity: ALLOW rules on identities match
//! nothing, and a DENY policy on identities denies everything.

use envoy_types::pb::envoy::config::listener::v3::Filter;
use envoy_types::pb::envoy::config::rbac::v3::Policy;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use pilotfish_crds::{AuthorizationAction, AuthorizationPolicySpec, ConfigObject, ConfigSpec};

use crate::diagnostics::{Diagnostic, DiagnosticKind};
use crate::emit::context::Context;
use crate::emit::envoy::rbac::{self, Policies, Verdict};
use crate::emit::policy::authorization_rules::{self, Enforcement};
use crate::emit::policy::workload_selection::{self, RootSelectors};

/// The policies that select one proxy, ready to become filters.
pub struct InboundAuthorization {
    http: Filters,
    tcp: Filters,
}

/// The RBAC policies of one kind of chain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    deny: Policies,
    /// `None`: no ALLOW policy selects the workload.
    allow: Option<Policies>,
}

impl InboundAuthorization {
    pub fn for_proxy(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Self {
        let mut selected: Vec<(&ConfigObject, &AuthorizationPolicySpec)> = ctx
            .mesh
            .config
            .iter()
            .filter_map(|object| match &object.spec {
                ConfigSpec::AuthorizationPolicy(spec) => Some((object, spec)),
                _ => None,
            })
            .filter(|(object, spec)| {
                workload_selection::scope(
                    object,
                    spec.selector.as_ref(),
                    &ctx.mesh.mesh.root_namespace,
                    RootSelectors::MeshWide,
                    ctx.proxy,
                )
                .is_some()
            })
            .collect();
        // Stable names and order whatever the input order.
        selected.sort_by_key(|(object, _)| object.key());
        let identities = ctx.proxy.workload_certificate;
        for (object, spec) in &selected {
            if let Some(reason) = fails_closed(spec, identities) {
                diags.push(Diagnostic::new(
                    DiagnosticKind::PolicyFailedClosed,
                    object.key().to_string(),
                    format!("{reason}: every request to this workload is denied"),
                ));
            }
        }
        let filters = |http| Filters::of(&selected, Enforcement { http, identities });
        InboundAuthorization {
            http: filters(true),
            tcp: filters(false),
        }
    }

    /// The guards of the proxy's chains.
    pub fn guards(&self) -> AuthorizationGuards<'_> {
        AuthorizationGuards { authz: self }
    }
}

/// RBAC filters for the inbound chains of one proxy.
pub struct AuthorizationGuards<'a> {
    authz: &'a InboundAuthorization,
}

impl AuthorizationGuards<'_> {
    /// HTTP filters, to run before the router: DENY, then ALLOW.
    pub fn http(&self) -> Vec<HttpFilter> {
        let f = &self.authz.http;
        let deny = (!f.deny.is_empty()).then(|| rbac::http_filter(Verdict::Deny, f.deny.clone()));
        let allow = f
            .allow
            .as_ref()
            .map(|allow| rbac::http_filter(Verdict::Allow, allow.clone()));
        deny.into_iter().chain(allow).collect()
    }

    /// Network filters, to run before tcp_proxy: DENY, then ALLOW.
    pub fn tcp(&self, stat_prefix: &str) -> Vec<Filter> {
        let f = &self.authz.tcp;
        let deny = (!f.deny.is_empty())
            .then(|| rbac::network_filter(stat_prefix, Verdict::Deny, f.deny.clone()));
        let allow = f
            .allow
            .as_ref()
            .map(|allow| rbac::network_filter(stat_prefix, Verdict::Allow, allow.clone()));
        deny.into_iter().chain(allow).collect()
    }
}

impl Filters {
    fn of(selected: &[(&ConfigObject, &AuthorizationPolicySpec)], on: Enforcement) -> Self {
        let mut out = Filters::default();
        for (object, spec) in selected {
            let prefix = format!("ns[{}]-policy[{}]", object.meta.namespace, object.meta.name);
            if fails_closed(spec, on.identities).is_some() {
                out.deny.push((
                    format!("{prefix}-fail-closed"),
                    authorization_rules::everything(),
                ));
                continue;
            }
            let rules = spec.rules.iter().enumerate();
            let named = |(i, policy): (usize, Policy)| (format!("{prefix}-rule[{i}]"), policy);
            match spec.action.unwrap_or(AuthorizationAction::Allow) {
                AuthorizationAction::Deny => out.deny.extend(
                    rules
                        .map(|(i, rule)| {
                            (
                                i,
                                authorization_rules::policy(rule, &object.meta.namespace, on),
                            )
                        })
                        .map(named),
                ),
                // Validation rejects AUDIT and CUSTOM; were one here, it
                // would have failed closed above.
                _ => out.allow.get_or_insert_with(Vec::new).extend(
                    rules
                        .filter(|(_, rule)| {
                            let needs = authorization_rules::needs(rule);
                            (on.http || !needs.http) && (on.identities || !needs.identity)
                        })
                        .map(|(i, rule)| {
                            (
                                i,
                                authorization_rules::policy(rule, &object.meta.namespace, on),
                            )
                        })
                        .map(named),
                ),
            }
        }
        out
    }
}

/// Why `spec` cannot be enforced as written on a proxy (with or without
/// `identities`), if it cannot.
fn fails_closed(spec: &AuthorizationPolicySpec, identities: bool) -> Option<String> {
    let action = spec.action.unwrap_or(AuthorizationAction::Allow);
    if !matches!(
        action,
        AuthorizationAction::Allow | AuthorizationAction::Deny
    ) {
        return Some(format!("action {action:?} is not enforced by Pilotfish"));
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let needs = authorization_rules::needs(rule);
        if needs.unenforceable.is_some() {
            let keys: Vec<&str> = rule.when.iter().map(|c| c.key.as_str()).collect();
            return Some(format!(
                "spec.rules[{i}].when uses a condition Pilotfish cannot check (one of {keys:?})"
            ));
        }
        if action == AuthorizationAction::Deny && needs.identity && !identities {
            return Some(format!(
                "spec.rules[{i}] denies by peer identity, but this proxy has no workload certificate, so no peer can prove one; the proxy must authenticate on the secure xDS port (15012) to be served one"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::sidecar::inbound::VIRTUAL_INBOUND_LISTENER;
    use crate::protobuf::unpack;
    use crate::test_support::*;
    use envoy_types::pb::envoy::config::listener::v3::FilterChain;
    use envoy_types::pb::envoy::config::rbac::v3::{Rbac, permission, principal};
    use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
    use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
    use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
    use pilotfish_model::Protocol;

    fn translated(yaml: &str, certified: bool) -> crate::Translation {
        let view = crate::ProxyView {
            workload_certificate: certified,
            labels: [("app".to_string(), "reviews".to_string())].into(),
            ..with_inbound(&[(9080, Protocol::Http), (9090, Protocol::Tcp)])
        };
        translate_for(&bookinfo(yaml), &view)
    }

    fn chain<'t>(t: &'t crate::Translation, name: &str) -> &'t FilterChain {
        let l = listener_named(t, VIRTUAL_INBOUND_LISTENER);
        let found = l.filter_chains.iter().find(|c| c.name == name);
        found.unwrap_or_else(|| panic!("no chain {name}"))
    }

    /// (action, policies sorted by name) of each RBAC filter of an HTTP chain.
    fn http_rbac(t: &crate::Translation, name: &str) -> Vec<(i32, Vec<(String, Policy)>)> {
        hcm(chain(t, name))
            .http_filters
            .iter()
            .filter(|f| f.name == rbac::HTTP_RBAC)
            .map(|f| match &f.config_type {
                Some(envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType::TypedConfig(any)) => {
                    let config: HttpRbac = unpack(any).expect("rbac");
                    sorted(config.rules.expect("rules"))
                }
                _ => panic!("untyped"),
            })
            .collect()
    }

    fn tcp_rbac(t: &crate::Translation, name: &str) -> Vec<(i32, Vec<(String, Policy)>)> {
        chain(t, name)
            .filters
            .iter()
            .filter(|f| f.name == rbac::NETWORK_RBAC)
            .map(|f| {
                let config: NetworkRbac = unpack(typed_config(f)).expect("rbac");
                sorted(config.rules.expect("rules"))
            })
            .collect()
    }

    fn sorted(rules: Rbac) -> (i32, Vec<(String, Policy)>) {
        let mut policies: Vec<_> = rules.policies.into_iter().collect();
        policies.sort_by(|a, b| a.0.cmp(&b.0));
        (rules.action, policies)
    }

    const ALLOW: i32 = 0;
    const DENY: i32 = 1;

    fn ap(name: &str, namespace: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
        )
    }

    #[test]
    fn no_policy_means_no_rbac_filter() {
        let t = translated("", true);
        assert!(http_rbac(&t, "http|inbound|9080||").is_empty());
        assert!(tcp_rbac(&t, "tcp|inbound|9090||").is_empty());
    }

    #[test]
    fn deny_filter_comes_before_allow_and_both_before_the_router() {
        let yaml = ap(
            "deny",
            "default",
            "  action: DENY\n  rules: [{to: [{operation: {methods: [DELETE]}}]}]\n",
        ) + &ap(
            "allow",
            "default",
            "  rules: [{to: [{operation: {paths: [\"/ok\"]}}]}]\n",
        );
        let t = translated(&yaml, true);
        let filters = hcm(chain(&t, "tls|http|inbound|9080||")).http_filters;
        let names: Vec<&str> = filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names[..2], [rbac::HTTP_RBAC, rbac::HTTP_RBAC]);
        assert_eq!(names.last(), Some(&crate::names::ROUTER));
        let got = http_rbac(&t, "http|inbound|9080||");
        assert_eq!(got.iter().map(|f| f.0).collect::<Vec<_>>(), [DENY, ALLOW]);
        assert_eq!(got[0].1[0].0, "ns[default]-policy[deny]-rule[0]");
        assert_envoy_invariants(&t);
    }

    #[test]
    fn allow_policy_without_rules_denies_everything() {
        let t = translated(&ap("nothing", "default", "  {}\n"), true);
        assert_eq!(http_rbac(&t, "http|inbound|9080||"), [(ALLOW, vec![])]);
        assert_eq!(tcp_rbac(&t, "tcp|inbound|9090||"), [(ALLOW, vec![])]);
    }

    #[test]
    fn root_namespace_policy_selects_every_workload_namespace_policy_its_own() {
        let mesh = ap("mesh", "istio-system", "  {}\n");
        let t = translated(&mesh, true);
        assert_eq!(http_rbac(&t, "http|inbound|9080||").len(), 1);
        let elsewhere = ap("ns", "other", "  {}\n");
        let t = translated(&elsewhere, true);
        assert!(http_rbac(&t, "http|inbound|9080||").is_empty());
        let unselected = ap(
            "sel",
            "default",
            "  selector: {matchLabels: {app: ratings}}\n",
        );
        assert!(http_rbac(&translated(&unselected, true), "http|inbound|9080||").is_empty());
    }

    fn only_policy(filters: &[(i32, Vec<(String, Policy)>)]) -> &Policy {
        assert_eq!(filters.len(), 1, "{filters:?}");
        assert_eq!(filters[0].1.len(), 1, "{filters:?}");
        &filters[0].1[0].1
    }

    #[test]
    fn principals_match_the_spiffe_uri_san_with_wildcards() {
        let yaml = ap(
            "p",
            "default",
            "  rules: [{from: [{source: {principals: [\"cluster.local/ns/default/sa/productpage\", \"*/sa/bad\", \"td/*\"]}}]}]\n",
        );
        let t = translated(&yaml, true);
        let policy = only_policy(&http_rbac(&t, "http|inbound|9080||")).clone();
        let Some(principal::Identifier::OrIds(set)) = &policy.principals[0].identifier else {
            panic!("{policy:?}")
        };
        let patterns: Vec<_> = set
            .ids
            .iter()
            .map(|id| match &id.identifier {
                Some(principal::Identifier::Authenticated(a)) => a
                    .principal_name
                    .as_ref()
                    .and_then(|m| m.match_pattern.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            patterns,
            [
                Some(MatchPattern::Exact(
                    "spiffe://cluster.local/ns/default/sa/productpage".into()
                )),
                Some(MatchPattern::Suffix("/sa/bad".into())),
                Some(MatchPattern::Prefix("spiffe://td/".into())),
            ]
        );
    }

    #[test]
    fn namespaces_ip_blocks_and_operations_map_to_envoy_matches() {
        let yaml = ap(
            "p",
            "default",
            "  rules:\n  - from: [{source: {namespaces: [shop], ipBlocks: [10.0.0.0/8]}}]\n    to: [{operation: {methods: [GET], paths: [\"/api/*\"], ports: [\"9080\"], hosts: [\"*.example.com\"]}}]\n    when: [{key: \"request.headers[x-user]\", values: [alice]}, {key: destination.port, values: [\"9080\"]}]\n",
        );
        let text = format!(
            "{:?}",
            only_policy(&http_rbac(&translated(&yaml, true), "http|inbound|9080||"))
        );
        for expected in [
            "spiffe://[^/]+/ns/shop/.*",
            "DirectRemoteIp(CidrRange { address_prefix: \"10.0.0.0\"",
            "name: \":method\"",
            "Exact(\"GET\")",
            "UrlPath",
            "Prefix(\"/api/\")",
            "DestinationPort(9080)",
            "name: \":authority\"",
            "(?i).*\\\\.example\\\\.com(:[0-9]+)?",
            "name: \"x-user\"",
        ] {
            assert!(text.contains(expected), "{expected} not in {text}");
        }
    }

    #[test]
    fn tcp_allow_rule_with_http_fields_matches_nothing() {
        let yaml = ap(
            "p",
            "default",
            "  rules:\n  - to: [{operation: {methods: [GET]}}]\n  - to: [{operation: {ports: [\"9090\"]}}]\n",
        );
        let t = translated(&yaml, true);
        let tcp = tcp_rbac(&t, "tcp|inbound|9090||");
        assert_eq!(tcp[0].0, ALLOW);
        let names: Vec<&str> = tcp[0].1.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ns[default]-policy[p]-rule[1]"]);
        assert_eq!(http_rbac(&t, "http|inbound|9080||")[0].1.len(), 2);
    }

    #[test]
    fn tcp_deny_rule_with_http_fields_is_checked_without_them() {
        let yaml = ap(
            "p",
            "default",
            "  action: DENY\n  rules: [{to: [{operation: {methods: [DELETE]}}]}]\n",
        );
        let t = translated(&yaml, true);
        let tcp = tcp_rbac(&t, "tcp|inbound|9090||");
        assert_eq!(tcp[0].0, DENY);
        // Without the method, the rule denies every connection.
        assert_eq!(tcp[0].1[0].1, authorization_rules::everything());
    }

    #[test]
    fn uncertified_allow_by_principal_matches_nothing() {
        let yaml = ap(
            "p",
            "default",
            "  rules: [{from: [{source: {principals: [\"cluster.local/ns/default/sa/x\"]}}]}]\n",
        );
        let t = translated(&yaml, false);
        assert_eq!(http_rbac(&t, "http|inbound|9080||"), [(ALLOW, vec![])]);
        assert!(diagnostics_of(&t, DiagnosticKind::PolicyFailedClosed).is_empty());
    }

    #[test]
    fn uncertified_deny_by_namespace_fails_closed_and_denies_everything() {
        let yaml = ap(
            "p",
            "default",
            "  action: DENY\n  rules: [{from: [{source: {namespaces: [evil]}}]}]\n",
        );
        let t = translated(&yaml, false);
        let expected = vec![(
            "ns[default]-policy[p]-fail-closed".to_string(),
            authorization_rules::everything(),
        )];
        assert_eq!(
            http_rbac(&t, "http|inbound|9080||"),
            [(DENY, expected.clone())]
        );
        assert_eq!(tcp_rbac(&t, "tcp|inbound|9090||"), [(DENY, expected)]);
        let failed = diagnostics_of(&t, DiagnosticKind::PolicyFailedClosed);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].object, "AuthorizationPolicy default/p");
    }

    #[test]
    fn unenforceable_condition_fails_closed_and_denies_everything() {
        let yaml = ap(
            "p",
            "default",
            "  rules: [{when: [{key: experimental.envoy.filters.x, values: [z]}]}]\n",
        );
        let t = translated(&yaml, true);
        let got = http_rbac(&t, "tls|http|inbound|9080||");
        assert_eq!(got[0].0, DENY);
        assert_eq!(got[0].1[0].0, "ns[default]-policy[p]-fail-closed");
        let failed = diagnostics_of(&t, DiagnosticKind::PolicyFailedClosed);
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].message.contains("experimental"),
            "{}",
            failed[0].message
        );
    }

    #[test]
    fn sni_and_destination_ip_conditions_are_permissions() {
        let yaml = ap(
            "p",
            "default",
            "  rules: [{when: [{key: connection.sni, values: [\"*.local\"]}, {key: destination.ip, values: [10.1.0.1]}]}]\n",
        );
        let t = translated(&yaml, true);
        let policy = only_policy(&tcp_rbac(&t, "tcp|inbound|9090||")).clone();
        let Some(permission::Rule::AndRules(set)) = &policy.permissions[0].rule else {
            panic!("{policy:?}")
        };
        assert!(matches!(
            set.rules[0].rule,
            Some(permission::Rule::RequestedServerName(_))
        ));
        assert!(matches!(
            set.rules[1].rule,
            Some(permission::Rule::DestinationIp(_))
        ));
    }
}
