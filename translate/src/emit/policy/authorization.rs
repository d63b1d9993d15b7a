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
