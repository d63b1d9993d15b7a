//! Locality-aware load balancing (DestinationRule
//! `loadBalancer.localityLbSetting`), applied to a cluster's load assignment
//! relative to the proxy's own locality.
//!
//! Like Istio:
//! - `distribute` sets per-locality weights (`load_balancing_weight`) for
//!   proxies in a matching `from` locality; localities no `to` entry names
//!   get no traffic. The cluster gets `locality_weighted_lb_config`.
//! - Otherwise, and only when the cluster has outlier detection (without
//!   it Envoy would never move traffic to a lower priority), endpoints get
//!   priorities by proximity: same region/zone/subzone, same zone, same
//!   region, other regions; a `failover` entry for the proxy's region pushes
//!   regions other than its `to` below the `to` region. Priorities are then
//!   renumbered to be contiguous from 0.
//! - A rule without `localityLbSetting` behaves as Istio's default mesh
//!   config (`localityLbSetting: {enabled: true}`); `enabled: false` turns
//!   it off.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{CommonLbConfig, common_lb_config},
};
use envoy_types::pb::envoy::config::core::v3::Locality as EnvoyLocality;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use pilotfish_crds::{LoadBalancerSettings, LocalityLbSetting, SimpleLb};

use crate::diagnostics::Diagnostic;
use crate::protobuf;

pub use crate::proxy::Locality;

fn of_envoy(l: Option<&EnvoyLocality>) -> Locality {
    l.and_then(Locality::from_envoy).unwrap_or_default()
}

/// Istio's proximity rank: 0 same subzone, 1 same zone, 2 same region, 3 other.
fn proximity(proxy: &Locality, ep: &Locality) -> u32 {
    match (
        proxy.region == ep.region,
        proxy.zone == ep.zone,
        proxy.sub_zone == ep.sub_zone,
    ) {
        (true, true, true) => 0,
        (true, true, false) => 1,
        (true, false, _) => 2,
        (false, ..) => 3,
    }
}

/// What locality-aware balancing reads of a cluster's effective policy
/// (`DestinationRule` traffic policy, see
/// `destination_rules::EffectivePolicy::locality_policy`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LbPolicy<'p> {
    pub load_balancer: Option<&'p LoadBalancerSettings>,
    pub outlier_detection: bool,
}

/// Whether the policy routes to the caller's original destination.
pub fn is_passthrough(policy: LbPolicy) -> bool {
    policy
        .load_balancer
        .is_some_and(|lb| lb.simple == Some(SimpleLb::Passthrough))
}

/// The locality setting in force for a cluster: the rule's unless disabled
/// or invalid, else Istio's mesh default (enabled, no rules).
fn setting(policy: LbPolicy) -> Option<LocalityLbSetting> {
    match policy
        .load_balancer
        .and_then(|lb| lb.locality_lb_setting.as_ref())
    {
        None => Some(LocalityLbSetting::default()),
        Some(s) if s.enabled == Some(false) => None,
        Some(s) if !problems(s).is_empty() => None,
        Some(s) => Some(s.clone()),
    }
}

/// Rewrites a load assignment for a proxy in `proxy` locality.
pub fn apply(cla: &mut ClusterLoadAssignment, proxy: Option<&Locality>, policy: LbPolicy) {
    let Some(proxy) = proxy.filter(|l| !l.is_empty()) else {
        return;
    };
    let Some(setting) = setting(policy) else {
        return;
    };
    if !setting.distribute.is_empty() {
        distribute(cla, proxy, &setting);
    } else if policy.outlier_detection {
        failover(cla, proxy, &setting);
    }
}

/// Cluster side: locality weights only take effect with
/// `locality_weighted_lb_config`.
pub fn apply_cluster(cluster: &mut Cluster, proxy: Option<&Locality>, policy: LbPolicy) {
    if proxy.is_none_or(Locality::is_empty) {
        return;
    }
    let Some(setting) = setting(policy) else {
        return;
    };
    let applies = setting.distribute.iter().any(|d| {
        d.from
            .as_deref()
            .is_some_and(|from| proxy.is_some_and(|p| p.matches(from)))
    });
    if applies {
        cluster
            .common_lb_config
            .get_or_insert_with(CommonLbConfig::default)
            .locality_config_specifier = Some(
            common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                common_lb_config::LocalityWeightedLbConfig {},
            ),
        );
    }
}

fn distribute(cla: &mut ClusterLoadAssignment, proxy: &Locality, setting: &LocalityLbSetting) {
    let Some(rule) = setting
        .distribute
        .iter()
        .find(|d| d.from.as_deref().is_some_and(|from| proxy.matches(from)))
    else {
        return;
    };
    // More specific targets claim their localities first.
    let mut targets: Vec<(&String, u32)> = rule.to.iter().map(|(k, v)| (k, *v)).collect();
    targets.sort_by_key(|(k, _)| {
        (
            k.matches('*').count(),
            std::cmp::Reverse(k.matches('/').count()),
        )
    });
    let mut weights: BTreeMap<usize, u32> = BTreeMap::new();
    for (target, weight) in targets {
        let claimed: Vec<usize> = (0..cla.endpoints.len())
            .filter(|i| !weights.contains_key(i))
            .filter(|&i| of_envoy(cla.endpoints[i].locality.as_ref()).matches(target))
            .filter(|&i| !cla.endpoints[i].lb_endpoints.is_empty())
            .collect();
        // A wildcard target's weight is shared by the localities it matches,
        // in proportion to their endpoint counts.
        let total: usize = claimed
            .iter()
            .map(|&i| cla.endpoints[i].lb_endpoints.len())
            .sum();
        for i in claimed {
            let share = u64::from(weight) * cla.endpoints[i].lb_endpoints.len() as u64;
            let share = share.div_ceil(total.max(1) as u64);
            weights.insert(i, u32::try_from(share).unwrap_or(u32::MAX));
        }
    }
    for (i, group) in cla.endpoints.iter_mut().enumerate() {
        match weights.get(&i).copied().filter(|w| *w > 0) {
            Some(w) => group.load_balancing_weight = Some(protobuf::u32_value(w)),
            // No weight: no traffic, like Istio (which drops the endpoints).
            None => {
                group.load_balancing_weight = None;
                group.lb_endpoints.clear();
            }
        }
    }
}

fn failover(cla: &mut ClusterLoadAssignment, proxy: &Locality, setting: &LocalityLbSetting) {
    let target = setting
        .failover
        .iter()
        .find(|f| f.from.as_deref() == Some(proxy.region.as_str()))
        .map(|f| f.to.as_deref().unwrap_or_default());
    let ranks: Vec<u32> = cla
        .endpoints
        .iter()
        .map(|group| {
            let ep = of_envoy(group.locality.as_ref());
            let rank = proximity(proxy, &ep);
            match target {
                Some(to) if rank == 3 && ep.region != to => 4,
                _ => rank,
            }
        })
        .collect();
    let mut used: Vec<u32> = ranks.clone();
    used.sort_unstable();
    used.dedup();
    for (group, rank) in cla.endpoints.iter_mut().zip(ranks) {
        group.priority = used.iter().position(|r| *r == rank).unwrap_or(0) as u32;
    }
}

/// What is wrong with a setting, as (field under `localityLbSetting`, message).
fn problems(s: &LocalityLbSetting) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !s.distribute.is_empty() && !s.failover.is_empty() {
        out.push((
            "failover".into(),
            "distribute and failover cannot both be set".into(),
        ));
    }
    for (i, d) in s.distribute.iter().enumerate() {
        let field = format!("distribute[{i}]");
        match d.from.as_deref().map(str::trim) {
            None | Some("") => out.push((format!("{field}.from"), "from is required".into())),
            Some(from) if !valid_pattern(from) => out.push((
                format!("{field}.from"),
                format!("{from:?}: expected region/zone/subzone, '*' only as a whole last part"),
            )),
            _ => {}
        }
        for to in d.to.keys() {
            if !valid_pattern(to) {
                out.push((
                    format!("{field}.to"),
                    format!("{to:?}: expected region/zone/subzone, '*' only as a whole last part"),
                ));
            }
        }
        let total: u64 = d.to.values().map(|w| u64::from(*w)).sum();
        if total != 100 {
            out.push((
                format!("{field}.to"),
                format!("weights sum to {total}, not 100"),
            ));
        }
    }
    for (i, f) in s.failover.iter().enumerate() {
        let field = format!("failover[{i}]");
        let (from, to) = (
            f.from.as_deref().unwrap_or(""),
            f.to.as_deref().unwrap_or(""),
        );
        if from.is_empty() || to.is_empty() {
            out.push((field, "from and to are both required".into()));
        } else if from.contains('/') || to.contains('/') {
            out.push((field, "failover names regions only (no '/')".into()));
        } else if from == to {
            out.push((field, format!("from and to are the same region {from:?}")));
        }
    }
    out
}

/// `*` is allowed only as the last part, and nothing may follow it.
fn valid_pattern(p: &str) -> bool {
    let parts: Vec<&str> = p.split('/').collect();
    parts.len() <= 3
        && parts.iter().all(|x| !x.is_empty())
        && parts
            .iter()
            .enumerate()
            .all(|(i, x)| !x.contains('*') || (*x == "*" && i == parts.len() - 1))
}

/// Diagnostics for one `localityLbSetting` at `field` of `object`. An
/// invalid setting is ignored as a whole.
pub fn diagnostics(object: &str, field: &str, s: &LocalityLbSetting) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = problems(s)
        .into_iter()
        .map(|(sub, message)| {
            Diagnostic::invalid(
                object,
                format!("{field}.{sub}"),
                format!("{message}; localityLbSetting ignored"),
            )
        })
        .collect();
    if !s.failover_priority.is_empty() {
        out.push(Diagnostic::unsupported(
            object,
            format!("{field}.failoverPriority"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_follows_istio_wildcards() {
        let l = Locality::parse("us-east/zone-a/rack1").unwrap();
        for rule in [
            "us-east",
            "us-east/*",
            "us-east/zone-a",
            "us-east/zone-a/*",
            "*",
            "us-east/zone-a/rack1",
        ] {
            assert!(l.matches(rule), "{rule}");
        }
        for rule in ["us-west", "us-east/zone-b", "us-east/zone-a/rack2", ""] {
            assert!(!l.matches(rule), "{rule}");
        }
    }

    #[test]
    fn patterns_are_validated() {
        assert!(valid_pattern("us-east/*"));
        assert!(valid_pattern("*"));
        assert!(!valid_pattern("*/zone"));
        assert!(!valid_pattern("us-*"));
        assert!(!valid_pattern("a/b/c/d"));
    }

    use crate::diagnostics::DiagnosticKind;
    use crate::test_support::*;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType, LbPolicy,
    };
    use pilotfish_model::{Endpoint, Protocol, Resolution};

    const HOST: &str = "reviews.default.svc.cluster.local";
    const ALL: &str = "outbound|9080||reviews.default.svc.cluster.local";

    fn located(ip: &str, locality: &str, version: &str) -> Endpoint {
        let mut ep = endpoint(ip, 9080, 9080, &[("version", version)]);
        ep.locality = Some(locality.into());
        ep
    }

    /// reviews with one endpoint per locality, and a rule `dr` (YAML of
    /// `spec.trafficPolicy`, plus subsets v1/v2).
    fn reviews(traffic_policy: &str) -> crate::MeshState {
        let dr = format!(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  trafficPolicy: {traffic_policy}
  subsets:
  - name: v1
    labels: {{version: v1}}
"#
        );
        mesh(
            vec![service(HOST, &["10.0.0.9"], &[(9080, Protocol::Http)])],
            vec![(
                HOST,
                vec![
                    located("10.1.0.1", "us-east/zone-a/rack1", "v1"),
                    located("10.1.0.2", "us-east/zone-a/rack2", "v1"),
                    located("10.1.0.3", "us-east/zone-b", "v1"),
                    located("10.1.0.4", "us-west/zone-a", "v1"),
                    located("10.1.0.5", "eu-west/zone-a", "v1"),
                    endpoint("10.1.0.6", 9080, 9080, &[("version", "v2")]),
                ],
            )],
            &config(&dr),
        )
    }

    fn proxy_in(locality: &str) -> crate::ProxyView {
        crate::ProxyView {
            locality: Locality::parse(locality),
            ..sidecar("default")
        }
    }

    /// (locality, priority, weight) of each group with endpoints.
    fn groups(cla: &ClusterLoadAssignment) -> Vec<(String, u32, Option<u32>)> {
        cla.endpoints
            .iter()
            .filter(|g| !g.lb_endpoints.is_empty())
            .map(|g| {
                let l = of_envoy(g.locality.as_ref());
                let name = if l.is_empty() {
                    String::new()
                } else {
                    l.to_string()
                };
                (name, g.priority, g.load_balancing_weight.map(|w| w.value))
            })
            .collect()
    }

    fn priorities(t: &crate::Translation, cluster: &str) -> BTreeMap<String, u32> {
        groups(load_assignment_named(t, cluster))
            .into_iter()
            .map(|(l, p, _)| (l, p))
            .collect()
    }

    const OUTLIER: &str =
        "outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s}";

    #[test]
    fn outlier_detection_gives_priorities_by_proximity() {
        let m = reviews(&format!("{{{OUTLIER}}}"));
        let t = translate_for(&m, &proxy_in("us-east/zone-a/rack1"));
        let expected = [
            ("", 3),
            ("eu-west/zone-a/", 3),
            ("us-east/zone-a/rack1", 0),
            ("us-east/zone-a/rack2", 1),
            ("us-east/zone-b/", 2),
            ("us-west/zone-a/", 3),
        ];
        let expected: BTreeMap<String, u32> =
            expected.iter().map(|(l, p)| (l.to_string(), *p)).collect();
        assert_eq!(priorities(&t, ALL), expected);
        // Without subzones: same zone 0, same region 1, others 2.
        let t = translate_for(&m, &proxy_in("us-east/zone-b"));
        let p = priorities(&t, ALL);
        assert_eq!(p["us-east/zone-b/"], 0);
        assert_eq!(p["us-east/zone-a/rack1"], 1);
        assert_eq!(p["us-east/zone-a/rack2"], 1);
        assert_eq!(p["us-west/zone-a/"], 2);
        assert_eq!(p["eu-west/zone-a/"], 2);
        // Subset clusters get the same treatment.
        let v1 = priorities(&t, "outbound|9080|v1|reviews.default.svc.cluster.local");
        assert_eq!(v1["us-east/zone-b/"], 0);
        assert_eq!(v1["us-west/zone-a/"], 2);
        assert!(!v1.contains_key(""));
        assert_envoy_invariants(&t);
    }

    #[test]
    fn failover_moves_other_regions_below_the_target_region() {
        let m = reviews(&format!(
            "{{{OUTLIER}, loadBalancer: {{localityLbSetting: {{failover: [{{from: us-east, to: eu-west}}]}}}}}}"
        ));
        let p = priorities(&translate_for(&m, &proxy_in("us-east/zone-b")), ALL);
        assert_eq!(p["us-east/zone-b/"], 0);
        assert_eq!(p["us-east/zone-a/rack1"], 1);
        assert_eq!(p["eu-west/zone-a/"], 2);
        assert_eq!(p["us-west/zone-a/"], 3);
        assert_eq!(p[""], 3);
        // The rule is for us-east proxies only.
        let p = priorities(&translate_for(&m, &proxy_in("us-west/zone-a")), ALL);
        assert_eq!(p["us-west/zone-a/"], 0);
        assert_eq!(p["eu-west/zone-a/"], 1);
        assert_eq!(p["us-east/zone-b/"], 1);
    }

    #[test]
    fn no_priorities_without_outlier_detection_proxy_locality_or_when_disabled() {
        let plain = reviews("{loadBalancer: {simple: RANDOM}}");
        let disabled = reviews(&format!(
            "{{{OUTLIER}, loadBalancer: {{localityLbSetting: {{enabled: false}}}}}}"
        ));
        let od = reviews(&format!("{{{OUTLIER}}}"));
        for (m, proxy) in [
            (&plain, proxy_in("us-east/zone-a")),
            (&disabled, proxy_in("us-east/zone-a")),
            (&od, sidecar("default")),
        ] {
            let t = translate_for(m, &proxy);
            assert!(priorities(&t, ALL).values().all(|p| *p == 0));
        }
    }

    const DISTRIBUTE: &str = "{loadBalancer: {localityLbSetting: {distribute: [{from: us-east/zone-b/*, to: {us-east/zone-a/*: 80, us-west/*: 20}}]}}}";

    #[test]
    fn distribute_sets_locality_weights_and_weighted_lb() {
        let m = reviews(DISTRIBUTE);
        let t = translate_for(&m, &proxy_in("us-east/zone-b"));
        // zone-a's 80 is shared by its two subzones; unnamed localities get nothing.
        assert_eq!(
            groups(load_assignment_named(&t, ALL)),
            [
                ("us-east/zone-a/rack1".to_string(), 0, Some(40)),
                ("us-east/zone-a/rack2".to_string(), 0, Some(40)),
                ("us-west/zone-a/".to_string(), 0, Some(20)),
            ]
        );
        let v1 = load_assignment_named(&t, "outbound|9080|v1|reviews.default.svc.cluster.local");
        assert_eq!(groups(v1).len(), 3);
        let lb = cluster_named(&t, ALL).common_lb_config.clone().unwrap();
        assert!(matches!(
            lb.locality_config_specifier,
            Some(common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
        ));
        assert!(diagnostics_of(&t, DiagnosticKind::InvalidField).is_empty());
        assert_envoy_invariants(&t);
        // A proxy outside every `from` is untouched.
        let t = translate_for(&m, &proxy_in("us-west/zone-a"));
        assert!(
            groups(load_assignment_named(&t, ALL))
                .iter()
                .all(|g| g.2.is_none())
        );
        assert!(cluster_named(&t, ALL).common_lb_config.is_none());
    }

    #[test]
    fn invalid_settings_are_reported_and_ignored() {
        let m = reviews(&format!(
            "{{{OUTLIER}, loadBalancer: {{localityLbSetting: {{distribute: [{{from: us-east/*, to: {{us-west/*: 60, eu-west/*: 30}}}}], failover: [{{from: us-east, to: us-east}}]}}}}}}"
        ));
        let t = translate_for(&m, &proxy_in("us-east/zone-b"));
        let mut fields: Vec<_> = diagnostics_of(&t, DiagnosticKind::InvalidField)
            .into_iter()
            .map(|d| (d.object.clone(), d.field.clone().unwrap()))
            .collect();
        fields.sort();
        let base = "spec.trafficPolicy.loadBalancer.localityLbSetting";
        assert_eq!(
            fields,
            [
                (
                    "DestinationRule default/reviews".to_string(),
                    format!("{base}.distribute[0].to")
                ),
                (
                    "DestinationRule default/reviews".to_string(),
                    format!("{base}.failover")
                ),
                (
                    "DestinationRule default/reviews".to_string(),
                    format!("{base}.failover[0]")
                ),
            ]
        );
        // Ignored as a whole: no weights, no failover.
        assert!(
            groups(load_assignment_named(&t, ALL))
                .iter()
                .all(|g| g.1 == 0 && g.2.is_none())
        );
    }

    const PASSTHROUGH: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: PASSTHROUGH}
    outlierDetection: {consecutive5xxErrors: 3}
    portLevelSettings:
    - port: {number: 9090}
      loadBalancer: {simple: LEAST_REQUEST}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer: {simple: ROUND_ROBIN}
"#;

    fn original_dst(cluster: &envoy_types::pb::envoy::config::cluster::v3::Cluster) -> bool {
        cluster.cluster_discovery_type
            == Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ))
            && cluster.lb_policy == LbPolicy::ClusterProvided as i32
            && cluster.eds_cluster_config.is_none()
            && cluster.load_assignment.is_none()
    }

    #[test]
    fn passthrough_makes_original_dst_clusters_without_eds() {
        let m = mesh(
            vec![service(
                HOST,
                &["10.0.0.9"],
                &[(9080, Protocol::Http), (9090, Protocol::Http)],
            )],
            vec![(
                HOST,
                vec![
                    located("10.1.0.1", "us-east/zone-a", "v1"),
                    located("10.1.0.2", "us-east/zone-a", "v2"),
                ],
            )],
            &config(PASSTHROUGH),
        );
        let t = translate_for(&m, &proxy_in("us-east/zone-a"));
        let name = |port: u16, subset: &str| {
            format!("outbound|{port}|{subset}|reviews.default.svc.cluster.local")
        };
        for cluster in [name(9080, ""), name(9080, "v1")] {
            let c = cluster_named(&t, &cluster);
            assert!(original_dst(c), "{cluster}: {c:#?}");
            assert!(
                c.outlier_detection.is_some(),
                "the rest of the policy applies"
            );
            assert!(
                !t.resources
                    .endpoints
                    .iter()
                    .any(|e| e.cluster_name == cluster)
            );
        }
        // Port-level and subset overrides replace PASSTHROUGH.
        for (cluster, policy) in [
            (name(9090, ""), LbPolicy::LeastRequest),
            (name(9090, "v1"), LbPolicy::LeastRequest),
            (name(9080, "v2"), LbPolicy::RoundRobin),
        ] {
            let c = cluster_named(&t, &cluster);
            assert!(!original_dst(c), "{cluster}");
            assert_eq!(c.lb_policy, policy as i32, "{cluster}");
            load_assignment_named(&t, &cluster);
        }
        assert!(
            diagnostics_of(&t, DiagnosticKind::Unsupported).is_empty(),
            "{:#?}",
            t.diagnostics
        );
        assert_envoy_invariants(&t);
    }

    #[test]
    fn passthrough_applies_to_dns_services_too() {
        let mut svc = service("api.example.com", &[], &[(443, Protocol::Tls)]);
        svc.resolution = Resolution::Dns;
        let dr = config(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: default}
spec: {host: api.example.com, trafficPolicy: {loadBalancer: {simple: PASSTHROUGH}}}
"#,
        );
        let t = translate_for(&mesh(vec![svc], vec![], &dr), &sidecar("default"));
        let c = cluster_named(&t, "outbound|443||api.example.com");
        assert!(original_dst(c));
        assert_eq!(c.dns_lookup_family, 0);
    }

    #[test]
    fn dns_clusters_get_locality_priorities_inline() {
        let mut svc = service("api.example.com", &[], &[(443, Protocol::Tls)]);
        svc.resolution = Resolution::Dns;
        let mut near = endpoint("near.api.example.com", 443, 443, &[]);
        near.locality = Some("us-east/zone-a".into());
        let mut far = endpoint("far.api.example.com", 443, 443, &[]);
        far.locality = Some("eu-west/zone-a".into());
        let dr = config(&format!(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api, namespace: default}}
spec: {{host: api.example.com, trafficPolicy: {{{OUTLIER}}}}}
"#
        ));
        let m = mesh(vec![svc], vec![("api.example.com", vec![near, far])], &dr);
        let t = translate_for(&m, &proxy_in("us-east/zone-a"));
        let c = cluster_named(&t, "outbound|443||api.example.com");
        let p: BTreeMap<_, _> = groups(c.load_assignment.as_ref().unwrap())
            .into_iter()
            .map(|(l, p, _)| (l, p))
            .collect();
        assert_eq!(p["us-east/zone-a/"], 0);
        assert_eq!(p["eu-west/zone-a/"], 1);
    }
}
