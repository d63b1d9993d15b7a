//! DestinationRules visible to a proxy, merged per host, and the traffic
//! policy that applies to one cluster (host, port, subset).

use std::collections::BTreeMap;
use std::sync::Arc;

use pilotfish_crds::{
    ClientTlsMode, ClientTlsSettings, ConfigObject, ConfigSpec, ConnectionPoolSettings,
    DestinationRuleSpec, LoadBalancerSettings, LocalityLbSetting, OutlierDetection, PolicySections,
    Subset, TrafficPolicy,
};

use envoy_types::pb::google::protobuf::Duration;

use crate::diagnostics::Diagnostic;
use crate::emit::envoy::mesh_tls::MeshTls;
use crate::emit::policy::locality::{self, Locality};
use crate::emit::policy::upstream_tls::{self, CredentialLookup, FoundCredential};
use crate::hosts;
use crate::mesh::{CredentialKey, TlsCredential};
use crate::protobuf;
use crate::proxy::ProxyView;
use crate::resolve::destination_rules::ResolvedDestinationRule;
use crate::visibility;

/// A piece of config with the object and field path it came from, so that
/// diagnostics can name both.
#[derive(Clone, Debug)]
pub struct Sourced<'a, T> {
    pub value: &'a T,
    pub object: &'a ConfigObject,
    pub field: String,
}

impl<'a, T> Sourced<'a, T> {
    fn new(value: &'a T, object: &'a ConfigObject, field: String) -> Self {
        Sourced {
            value,
            object,
            field,
        }
    }

    /// `DestinationRule ns/name`.
    pub fn object_name(&self) -> String {
        self.object.key().to_string()
    }

    /// Field path of a child: `spec.trafficPolicy.loadBalancer` + `simple`.
    pub fn child(&self, name: &str) -> String {
        format!("{}.{name}", self.field)
    }

    /// A child section, sourced at `self.field` + `name`.
    pub fn nested<U>(&self, value: &'a U, name: &str) -> Sourced<'a, U> {
        Sourced::new(value, self.object, self.child(name))
    }

    /// Parses an optional duration at child `name`; a bad value is reported
    /// and ignored (the rest of the policy still applies).
    pub fn duration(
        &self,
        text: Option<&str>,
        name: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> Option<Duration> {
        let parsed = protobuf::parse_duration(text?, &self.object_name(), &self.child(name));
        parsed.map_err(|d| diags.push(d)).ok()
    }
}

/// All DestinationRules for one host, merged: older rules first; the first
/// top-level traffic policy and the first subset of each name win.
#[derive(Clone, Debug)]
pub struct MergedRule<'a> {
    pub host: String,
    pub traffic_policy: Option<Sourced<'a, TrafficPolicy>>,
    pub subsets: Vec<Sourced<'a, Subset>>,
}

/// The policy for one cluster, after subset and port-level overrides.
#[derive(Clone, Debug, Default)]
pub struct EffectivePolicy<'a> {
    pub load_balancer: Option<Sourced<'a, LoadBalancerSettings>>,
    pub connection_pool: Option<Sourced<'a, ConnectionPoolSettings>>,
    pub outlier_detection: Option<Sourced<'a, OutlierDetection>>,
    /// Upstream TLS origination (see [`crate::emit::policy::upstream_tls`]).
    pub tls: Option<Sourced<'a, ClientTlsSettings>>,
    /// The proxy's own locality, for locality-aware load balancing.
    pub proxy_locality: Option<Locality>,
    /// The credential `tls.credentialName` names, when the proxy's
    /// namespace holds it.
    pub tls_credential: Option<FoundCredential>,
    /// The proxy holds a workload certificate: `ISTIO_MUTUAL` and auto
    /// mTLS are possible.
    pub mesh_tls: Option<MeshTls>,
}

impl EffectivePolicy<'_> {
    /// What locality-aware load balancing reads of this policy.
    pub fn locality_policy(&self) -> locality::LbPolicy<'_> {
        locality::LbPolicy {
            load_balancer: self.load_balancer.as_ref().map(|lb| lb.value),
            outlier_detection: self.outlier_detection.is_some(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct DestinationRuleIndex<'a> {
    /// Visible rules in precedence order.
    rules: Vec<(&'a ConfigObject, &'a DestinationRuleSpec)>,
    /// Their positions in the mesh's config: what sets this index apart.
    positions: Arc<[usize]>,
    by_host: BTreeMap<String, MergedRule<'a>>,
    /// Wildcard hosts, most specific first.
    wildcards: Vec<String>,
    proxy_locality: Option<Locality>,
    /// Credentials (`credentialName`) of the proxy's namespace.
    credentials: Option<&'a BTreeMap<CredentialKey, TlsCredential>>,
    proxy_namespace: String,
    mesh_tls: Option<MeshTls>,
}

impl<'a> DestinationRuleIndex<'a> {
    /// Merges the generation's rules (in precedence order, hosts resolved)
    /// that apply to `proxy`.
    pub(crate) fn new(
        table: &'a [ResolvedDestinationRule],
        config: &'a [ConfigObject],
        proxy: &ProxyView,
    ) -> Self {
        let mut rules = Vec::new();
        let mut positions = Vec::new();
        let mut by_host: BTreeMap<String, MergedRule<'a>> = BTreeMap::new();
        for resolved in table {
            let Some(object) = config.get(resolved.config) else {
                continue;
            };
            let ConfigSpec::DestinationRule(spec) = &object.spec else {
                continue;
            };
            if !applies(object, spec, proxy) {
                continue;
            }
            rules.push((object, spec));
            positions.push(resolved.config);
            let merged = by_host
                .entry(resolved.host.clone())
                .or_insert_with(|| MergedRule {
                    host: resolved.host.clone(),
                    traffic_policy: None,
                    subsets: Vec::new(),
                });
            merged.absorb(object, spec);
        }
        let mut wildcards: Vec<String> = by_host
            .keys()
            .filter(|h| h.starts_with('*'))
            .cloned()
            .collect();
        wildcards.sort_by(|a, b| {
            hosts::specificity(a)
                .cmp(&hosts::specificity(b))
                .then(a.cmp(b))
        });
        DestinationRuleIndex {
            rules,
            positions: positions.into(),
            by_host,
            wildcards,
            proxy_locality: proxy.locality.clone(),
            credentials: None,
            proxy_namespace: proxy.namespace.clone(),
            mesh_tls: None,
        }
    }

    /// The config positions of the rules that apply: views with equal
    /// positions (and namespace) get equal policies.
    pub fn applied(&self) -> Arc<[usize]> {
        self.positions.clone()
    }

    /// Resolves `credentialName`s against these credentials.
    pub fn with_credentials(
        mut self,
        credentials: &'a BTreeMap<CredentialKey, TlsCredential>,
    ) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The proxy's mesh TLS, when it holds a workload certificate.
    pub fn with_mesh_tls(mut self, mesh_tls: Option<MeshTls>) -> Self {
        self.mesh_tls = mesh_tls;
        self
    }

    /// What the proxy's namespace holds for a section's `credentialName`.
    fn credential(&self, tls: &ClientTlsSettings) -> Option<Result<FoundCredential, ()>> {
        let name = tls
            .credential_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())?;
        let key = (self.proxy_namespace.clone(), name.to_string());
        Some(
            self.credentials
                .and_then(|all| all.get(&key))
                .map(|c| FoundCredential {
                    name: name.to_string(),
                    has_ca: c.ca_certificates.is_some(),
                })
                .ok_or(()),
        )
    }

    /// The credentials visible rules name that the proxy's namespace holds,
    /// by name (what the proxy gets over SDS for its clusters).
    pub fn found_credentials(&self) -> Vec<FoundCredential> {
        let mut out: Vec<FoundCredential> = self
            .rules
            .iter()
            .flat_map(|(_, spec)| tls_sections(spec))
            .filter(|(_, tls)| {
                matches!(
                    tls.mode,
                    Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)
                )
            })
            .filter_map(|(_, tls)| self.credential(tls)?.ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup();
        out
    }

    /// The rule for a service: an exact host match, else the most specific wildcard.
    pub fn for_host(&self, hostname: &str) -> Option<&MergedRule<'a>> {
        let hostname = hostname.to_ascii_lowercase();
        let hostname = hostname.as_str();
        self.by_host.get(hostname).or_else(|| {
            self.wildcards
                .iter()
                .find(|pattern| hosts::matches(pattern, hostname))
                .and_then(|pattern| self.by_host.get(pattern))
        })
    }

    pub fn has_subset(&self, hostname: &str, subset: &str) -> bool {
        self.for_host(hostname)
            .is_some_and(|rule| rule.subset(subset).is_some())
    }

    /// Effective policy for `outbound|port|subset|hostname`, if any rule applies.
    pub fn policy(&self, hostname: &str, port: u16, subset: Option<&str>) -> EffectivePolicy<'a> {
        let mut policy: EffectivePolicy<'a> = self
            .for_host(hostname)
            .map(|rule| rule.policy(port, subset))
            .unwrap_or_default();
        policy.proxy_locality = self.proxy_locality.clone();
        policy.mesh_tls = self.mesh_tls.clone();
        policy.tls_credential = policy
            .tls
            .as_ref()
            .and_then(|tls| self.credential(tls.value)?.ok());
        policy
    }

    /// One diagnostic per field of a visible rule that Pilotfish ignores,
    /// plus the problems of its TLS settings (reported once per rule, not
    /// once per cluster they apply to).
    pub fn unsupported(&self) -> Vec<Diagnostic> {
        self.rules
            .iter()
            .flat_map(|(object, spec)| {
                let name = object.key().to_string();
                let ignored = unsupported_fields(spec)
                    .into_iter()
                    .map(move |field| Diagnostic::unsupported(name.clone(), field));
                let tls = tls_sections(spec).into_iter().flat_map(|(path, tls)| {
                    let found = self.credential(tls);
                    let lookup = match &found {
                        None => CredentialLookup::NotNamed,
                        Some(Ok(found)) => CredentialLookup::Found(found),
                        Some(Err(())) => CredentialLookup::Missing {
                            namespace: &self.proxy_namespace,
                        },
                    };
                    let certificate = self.mesh_tls.is_some();
                    upstream_tls::diagnostics(
                        &object.key().to_string(),
                        &path,
                        tls,
                        lookup,
                        certificate,
                    )
                });
                let locality = locality_sections(spec).into_iter().flat_map(|(path, s)| {
                    locality::diagnostics(&object.key().to_string(), &path, s)
                });
                ignored.chain(tls).chain(locality).collect::<Vec<_>>()
            })
            .collect()
    }
}

fn applies(object: &ConfigObject, spec: &DestinationRuleSpec, proxy: &ProxyView) -> bool {
    let selected = spec
        .workload_selector
        .as_ref()
        .is_none_or(|sel| visibility::labels_match(&sel.match_labels, &proxy.labels));
    selected && visibility::is_exported(&spec.export_to, &object.meta.namespace, &proxy.namespace)
}

impl<'a> MergedRule<'a> {
    fn absorb(&mut self, object: &'a ConfigObject, spec: &'a DestinationRuleSpec) {
        if self.traffic_policy.is_none()
            && let Some(policy) = &spec.traffic_policy
        {
            self.traffic_policy = Some(Sourced::new(policy, object, "spec.trafficPolicy".into()));
        }
        for (i, subset) in spec.subsets.iter().enumerate() {
            if self.subset(&subset.name).is_none() {
                self.subsets
                    .push(Sourced::new(subset, object, format!("spec.subsets[{i}]")));
            }
        }
    }

    pub fn subset(&self, name: &str) -> Option<&Sourced<'a, Subset>> {
        self.subsets.iter().find(|s| s.value.name == name)
    }

    /// Top level, then top-level port settings, then the subset's policy and
    /// its port settings: each later layer replaces whole sections.
    pub fn policy(&self, port: u16, subset: Option<&str>) -> EffectivePolicy<'a> {
        let mut out = EffectivePolicy::default();
        if let Some(tp) = &self.traffic_policy {
            out.overlay(tp.value, tp.object, &tp.field, port);
        }
        if let Some(subset) = subset.and_then(|name| self.subset(name))
            && let Some(tp) = &subset.value.traffic_policy
        {
            out.overlay(tp, subset.object, &subset.child("trafficPolicy"), port);
        }
        out
    }
}

impl<'a> EffectivePolicy<'a> {
    /// The DestinationRules the policy's sections come from.
    pub fn objects(&self) -> impl Iterator<Item = &'a ConfigObject> {
        let sections = [
            self.load_balancer.as_ref().map(|s| s.object),
            self.connection_pool.as_ref().map(|s| s.object),
            self.outlier_detection.as_ref().map(|s| s.object),
            self.tls.as_ref().map(|s| s.object),
        ];
        sections.into_iter().flatten()
    }

    fn overlay(&mut self, tp: &'a TrafficPolicy, object: &'a ConfigObject, field: &str, port: u16) {
        self.set(tp.sections(), object, field);
        for (i, pls) in tp.port_level_settings.iter().enumerate() {
            if pls.port.as_ref().and_then(|p| p.number) == Some(u32::from(port)) {
                let field = format!("{field}.portLevelSettings[{i}]");
                self.set(pls.sections(), object, &field);
            }
        }
    }

    fn set(&mut self, sections: PolicySections<'a>, object: &'a ConfigObject, field: &str) {
        if let Some(lb) = sections.load_balancer {
            self.load_balancer = Some(Sourced::new(lb, object, format!("{field}.loadBalancer")));
        }
        if let Some(pool) = sections.connection_pool {
            self.connection_pool = Some(Sourced::new(
                pool,
                object,
                format!("{field}.connectionPool"),
            ));
        }
        if let Some(od) = sections.outlier_detection {
            self.outlier_detection = Some(Sourced::new(
                od,
                object,
                format!("{field}.outlierDetection"),
            ));
        }
        if let Some(tls) = sections.tls {
            self.tls = Some(Sourced::new(tls, object, format!("{field}.tls")));
        }
    }
}

/// Field paths of everything in a rule that Pilotfish does not translate.
fn unsupported_fields(spec: &DestinationRuleSpec) -> Vec<String> {
    let mut out = Vec::new();
    for (path, tp) in traffic_policies(spec) {
        policy_unsupported(tp, &path, &mut out);
    }
    out
}

/// The rule's traffic policies with their field paths: top level, then each
/// subset's.
fn traffic_policies(spec: &DestinationRuleSpec) -> Vec<(String, &TrafficPolicy)> {
    let top = spec
        .traffic_policy
        .as_ref()
        .map(|tp| ("spec.trafficPolicy".to_string(), tp));
    let subsets = spec.subsets.iter().enumerate().filter_map(|(i, subset)| {
        let tp = subset.traffic_policy.as_ref()?;
        Some((format!("spec.subsets[{i}].trafficPolicy"), tp))
    });
    top.into_iter().chain(subsets).collect()
}

/// Every policy section block of a rule (each traffic policy and each of its
/// port-level settings) with its field path.
fn all_sections(spec: &DestinationRuleSpec) -> Vec<(String, PolicySections<'_>)> {
    let mut out = Vec::new();
    for (path, tp) in traffic_policies(spec) {
        let port_levels: Vec<_> = tp
            .port_level_settings
            .iter()
            .enumerate()
            .map(|(i, pls)| (format!("{path}.portLevelSettings[{i}]"), pls.sections()))
            .collect();
        out.push((path, tp.sections()));
        out.extend(port_levels);
    }
    out
}

fn policy_unsupported(tp: &TrafficPolicy, path: &str, out: &mut Vec<String>) {
    flag(out, path, "tunnel", tp.tunnel.is_some());
    flag(out, path, "proxyProtocol", tp.proxy_protocol.is_some());
    flag(out, path, "retryBudget", tp.retry_budget.is_some());
    sections_unsupported(tp.sections(), path, out);
    for (i, pls) in tp.port_level_settings.iter().enumerate() {
        let path = format!("{path}.portLevelSettings[{i}]");
        sections_unsupported(pls.sections(), &path, out);
    }
}

fn sections_unsupported(sections: PolicySections<'_>, path: &str, out: &mut Vec<String>) {
    if let Some(lb) = sections.load_balancer {
        let path = format!("{path}.loadBalancer");
        flag(
            out,
            &path,
            "zoneAwareLbSetting",
            lb.zone_aware_lb_setting.is_some(),
        );
        flag(
            out,
            &path,
            "warmupDurationSecs",
            lb.warmup_duration_secs.is_some(),
        );
        flag(out, &path, "warmup", lb.warmup.is_some());
        flag(
            out,
            &path,
            "backendUtilization",
            lb.backend_utilization.is_some(),
        );
    }
    if let Some(pool) = sections.connection_pool {
        let path = format!("{path}.connectionPool");
        flag(
            out,
            &path,
            "tcp.idleTimeout",
            pool.tcp.as_ref().is_some_and(|t| t.idle_timeout.is_some()),
        );
        let http2_keep_alive = pool
            .http
            .as_ref()
            .is_some_and(|h| h.http2_keep_alive.is_some());
        flag(out, &path, "http.http2KeepAlive", http2_keep_alive);
    }
    if let Some(od) = sections.outlier_detection {
        let codes = !od.outlier_detection_http_error_codes.is_empty();
        flag(
            out,
            &format!("{path}.outlierDetection"),
            "outlierDetectionHttpErrorCodes",
            codes,
        );
    }
}

/// Every `tls` section of a rule with its field path: top level, subsets,
/// and their port-level settings.
fn tls_sections(spec: &DestinationRuleSpec) -> Vec<(String, &ClientTlsSettings)> {
    all_sections(spec)
        .into_iter()
        .filter_map(|(path, s)| Some((format!("{path}.tls"), s.tls?)))
        .collect()
}

/// Every `loadBalancer.localityLbSetting` of a rule with its field path.
fn locality_sections(spec: &DestinationRuleSpec) -> Vec<(String, &LocalityLbSetting)> {
    all_sections(spec)
        .into_iter()
        .filter_map(|(path, s)| {
            let setting = s.load_balancer?.locality_lb_setting.as_ref()?;
            Some((format!("{path}.loadBalancer.localityLbSetting"), setting))
        })
        .collect()
}

fn flag(out: &mut Vec<String>, path: &str, field: &str, present: bool) {
    if present {
        out.push(format!("{path}.{field}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{config, sidecar};
    use pilotfish_crds::SimpleLb;

    const RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: newer, namespace: default, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1-from-newer}
  - name: v3
    labels: {version: v3}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: older, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      connectionPool: {tcp: {maxConnections: 7}}
      portLevelSettings:
      - port: {number: 9080}
        loadBalancer: {simple: LEAST_REQUEST}
"#;

    #[test]
    fn rules_for_one_host_merge_older_first() {
        let objects = config(RULES);
        let table = crate::resolve::destination_rules::table(&objects, "cluster.local");
        let index = DestinationRuleIndex::new(&table, &objects, &sidecar("default"));
        let rule = index.for_host("reviews.default.svc.cluster.local").unwrap();
        let names: Vec<_> = rule.subsets.iter().map(|s| s.value.name.as_str()).collect();
        assert_eq!(names, ["v1", "v3"]);
        assert_eq!(rule.subset("v1").unwrap().value.labels["version"], "v1");
        assert_eq!(rule.subset("v1").unwrap().object.meta.name, "older");
        // The older rule has no top-level policy, so the newer one's applies.
        assert_eq!(
            rule.traffic_policy.as_ref().unwrap().object.meta.name,
            "newer"
        );
    }

    #[test]
    fn subset_and_port_level_settings_override_top_level() {
        let objects = config(RULES);
        let table = crate::resolve::destination_rules::table(&objects, "cluster.local");
        let index = DestinationRuleIndex::new(&table, &objects, &sidecar("default"));
        let host = "reviews.default.svc.cluster.local";
        let top = index.policy(host, 9080, None);
        assert_eq!(
            top.load_balancer.unwrap().value.simple,
            Some(SimpleLb::Random)
        );
        let v1 = index.policy(host, 9080, Some("v1"));
        let lb = v1.load_balancer.unwrap();
        assert_eq!(lb.value.simple, Some(SimpleLb::LeastRequest));
        assert_eq!(
            lb.field,
            "spec.subsets[0].trafficPolicy.portLevelSettings[0].loadBalancer"
        );
        assert!(v1.connection_pool.is_some());
        let other_port = index.policy(host, 8080, Some("v1"));
        assert_eq!(
            other_port.load_balancer.unwrap().value.simple,
            Some(SimpleLb::Random)
        );
    }

    #[test]
    fn wildcard_rules_apply_when_no_exact_rule_exists() {
        let objects = config(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wide, namespace: default}
spec: {host: "*.example.com", subsets: [{name: a}]}
"#,
        );
        let table = crate::resolve::destination_rules::table(&objects, "cluster.local");
        let index = DestinationRuleIndex::new(&table, &objects, &sidecar("default"));
        assert!(index.has_subset("api.example.com", "a"));
        assert!(!index.has_subset("example.com", "a"));
    }

    #[test]
    fn unexported_rules_are_invisible() {
        let objects = config(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: private, namespace: team}
spec: {host: db.example.com, exportTo: ["."], subsets: [{name: a}]}
"#,
        );
        let table = crate::resolve::destination_rules::table(&objects, "cluster.local");
        let index = DestinationRuleIndex::new(&table, &objects, &sidecar("default"));
        assert!(!index.has_subset("db.example.com", "a"));
        let table = crate::resolve::destination_rules::table(&objects, "cluster.local");
        let index = DestinationRuleIndex::new(&table, &objects, &sidecar("team"));
        assert!(index.has_subset("db.example.com", "a"));
    }

    #[test]
    fn unimplemented_policy_fields_are_reported() {
        let objects = config(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    loadBalancer: {localityLbSetting: {enabled: true, failoverPriority: [topology.istio.io/network]}}
"#,
        );
        let table = crate::resolve::destination_rules::table(&objects, "cluster.local");
        let index = DestinationRuleIndex::new(&table, &objects, &sidecar("default"));
        let fields: Vec<_> = index
            .unsupported()
            .into_iter()
            .filter_map(|d| d.field)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.trafficPolicy.tls.mode",
                "spec.trafficPolicy.loadBalancer.localityLbSetting.failoverPriority",
            ]
        );
    }
}
