//! Which proxy labels the config of a mesh can look at. Every rule that
//! reads a proxy's labels asks one question: does the proxy carry all of a
//! selector's `key: value` pairs? So two label sets that satisfy the same
//! selectors translate alike, and the union of the selectors a proxy
//! satisfies is a label set that satisfies exactly those again: a server
//! keys its cached translations by that union, and proxies (or hostile
//! clients) whose labels no rule selects share their namespace's
//! translation, however unique their labels.
//!
//! Clusters and endpoints read labels only through DestinationRule
//! `workloadSelector`s, so their key is the union of those alone: sidecars
//! told apart by `sourceLabels` routes still share one set of clusters.

use std::collections::{BTreeMap, BTreeSet};

use pilotfish_crds::ConfigSpec;
use pilotfish_crds::virtual_service::VirtualServiceSpec;

use crate::mesh::MeshState;
use crate::proxy::ProxyView;

type Labels = BTreeMap<String, String>;

/// The label selectors the config of one mesh state matches proxies with:
/// VirtualService match `sourceLabels` (HTTP, TLS and TCP) and Gateway
/// `selector`s, which shape listeners and routes, and DestinationRule
/// `workloadSelector`s, which shape clusters and endpoints too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferencedLabels {
    /// sourceLabels and Gateway selectors.
    route_selectors: BTreeSet<Labels>,
    /// DestinationRule workloadSelectors.
    workload_selectors: BTreeSet<Labels>,
    /// PeerAuthentication and AuthorizationPolicy selectors: they shape
    /// the inbound listener only, never clusters.
    policy_selectors: BTreeSet<Labels>,
}

impl ReferencedLabels {
    /// Collects the selectors once per mesh state (a pass over the config).
    pub fn of(mesh: &MeshState) -> Self {
        let mut out = ReferencedLabels::default();
        for object in mesh.config.iter() {
            match &object.spec {
                ConfigSpec::VirtualService(spec) => {
                    out.route_selectors.extend(source_labels(spec).cloned())
                }
                ConfigSpec::Gateway(spec) => {
                    out.route_selectors.insert(spec.selector.clone());
                }
                ConfigSpec::DestinationRule(spec) => out.workload_selectors.extend(
                    spec.workload_selector
                        .iter()
                        .map(|s| s.match_labels.clone()),
                ),
                // A ServiceEntry's workloadSelector selects endpoints, not proxies.
                ConfigSpec::ServiceEntry(_) => {}
                ConfigSpec::PeerAuthentication(spec) => out
                    .policy_selectors
                    .extend(spec.selector.iter().map(|s| s.match_labels.clone())),
                ConfigSpec::AuthorizationPolicy(spec) => out
                    .policy_selectors
                    .extend(spec.selector.iter().map(|s| s.match_labels.clone())),
            }
        }
        // An empty selector matches every proxy: it tells none apart.
        out.route_selectors.retain(|s| !s.is_empty());
        out.workload_selectors.retain(|s| !s.is_empty());
        out.policy_selectors.retain(|s| !s.is_empty());
        out
    }

    /// Label keys some selector reads, sorted.
    pub fn keys(&self) -> BTreeSet<&str> {
        self.route_selectors
            .iter()
            .chain(&self.workload_selectors)
            .chain(&self.policy_selectors)
            .flat_map(|s| s.keys().map(String::as_str))
            .collect()
    }

    /// The union of the selectors `labels` satisfy: it satisfies exactly
    /// the same selectors, so a view with it translates exactly like one
    /// with all of `labels`.
    pub fn project(&self, labels: &Labels) -> Labels {
        union_of_matching(
            self.route_selectors
                .iter()
                .chain(&self.workload_selectors)
                .chain(&self.policy_selectors),
            labels,
        )
    }

    /// `view` with its labels projected (see [`ReferencedLabels::project`]).
    pub fn project_view(&self, view: &ProxyView) -> ProxyView {
        with_labels(view, self.project(&view.labels))
    }

    /// `view` with only the labels DestinationRule workloadSelectors match:
    /// the view whose clusters and endpoints `view` gets.
    pub fn project_view_for_clusters(&self, view: &ProxyView) -> ProxyView {
        with_labels(
            view,
            union_of_matching(self.workload_selectors.iter(), &view.labels),
        )
    }
}

fn union_of_matching<'s>(selectors: impl Iterator<Item = &'s Labels>, labels: &Labels) -> Labels {
    selectors
        .filter(|selector| crate::visibility::labels_match(selector, labels))
        .flat_map(|selector| selector.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn with_labels(view: &ProxyView, labels: Labels) -> ProxyView {
    ProxyView {
        kind: view.kind,
        namespace: view.namespace.clone(),
        interception: view.interception,
        labels,
        inbound: view.inbound.clone(),
        locality: view.locality.clone(),
        dns: view.dns,
        workload_certificate: view.workload_certificate,
    }
}

fn source_labels(spec: &VirtualServiceSpec) -> impl Iterator<Item = &Labels> + '_ {
    let http = spec
        .http
        .iter()
        .flat_map(|r| r.match_.iter().map(|m| &m.source_labels));
    let tls = spec
        .tls
        .iter()
        .flat_map(|r| r.match_.iter().map(|m| &m.source_labels));
    let tcp = spec
        .tcp
        .iter()
        .flat_map(|r| r.match_.iter().map(|m| &m.source_labels));
    http.chain(tls).chain(tcp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use crate::translate;
    use std::sync::Arc;

    /// Rules reading `app` (sourceLabels, HTTP and TCP), `version` (a
    /// DestinationRule workloadSelector) and `istio` (a Gateway selector).
    const LABEL_RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-by-caller, namespace: default, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: productpage}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db-by-caller, namespace: default, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  hosts: [db-a.service.consul]
  tcp:
  - match: [{sourceLabels: {app: batch}}]
    route: [{destination: {host: db-b.service.consul}}]
  - route: [{destination: {host: db-a.service.consul}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-for-v1, namespace: default, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  host: ratings
  workloadSelector: {matchLabels: {version: v1}}
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict-reviews, namespace: default}
spec:
  selector: {matchLabels: {tier: backend}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-batch, namespace: default}
spec:
  selector: {matchLabels: {app: batch}}
  action: DENY
  rules: [{to: [{operation: {ports: ["9090"]}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: via-ingress, namespace: default}
spec:
  hosts: ["*"]
  gateways: [ingress]
  http:
  - route: [{destination: {host: productpage}}]
"#;

    fn labelled_mesh() -> MeshState {
        let mut m = busy_mesh();
        Arc::make_mut(&mut m.config).extend(config(LABEL_RULES));
        m
    }

    #[test]
    fn collects_source_labels_gateway_selectors_and_workload_selectors() {
        let keys = ReferencedLabels::of(&labelled_mesh());
        let keys: Vec<&str> = keys.keys().into_iter().collect();
        assert_eq!(keys, ["app", "istio", "tier", "version"]);
        assert!(ReferencedLabels::of(&busy_mesh()).keys().is_empty());
    }

    #[test]
    fn projection_keeps_only_the_selectors_a_proxy_satisfies() {
        let keys = ReferencedLabels::of(&labelled_mesh());
        let view = sidecar_with_labels("default", &[("app", "batch"), ("pod-hash", "x1")]);
        let projected = keys.project_view(&view);
        assert_eq!(
            projected,
            sidecar_with_labels("default", &[("app", "batch")])
        );
        // `app` is read, but no rule asks for this value: nothing to keep,
        // so every such deployment shares its namespace's translation.
        let unselected = sidecar_with_labels("default", &[("app", "dep-17"), ("version", "v2")]);
        assert_eq!(keys.project_view(&unselected), sidecar("default"));
    }

    #[test]
    fn clusters_are_keyed_by_workload_selectors_alone() {
        let keys = ReferencedLabels::of(&labelled_mesh());
        let view = sidecar_with_labels("default", &[("app", "batch"), ("version", "v1")]);
        assert_eq!(
            keys.project_view_for_clusters(&view),
            sidecar_with_labels("default", &[("version", "v1")])
        );
    }

    /// The clusters projection is exact for what it keys: over the same
    /// meshes and label sets, the clusters and endpoints of the projected
    /// view are those of the full view.
    #[test]
    fn clusters_and_endpoints_of_the_clusters_view_equal_the_full_ones() {
        use crate::Context;
        use crate::emit::{clusters, endpoints};
        for_every_labelled_view(|m, keys, view| {
            let projected = keys.project_view_for_clusters(view);
            let resolved = crate::resolve(m.clone());
            let full = Context::new(&resolved, view);
            let part = Context::new(&resolved, &projected);
            let (mut full_d, mut part_d) = (Vec::new(), Vec::new());
            assert_eq!(
                clusters::build(&part, &mut part_d),
                clusters::build(&full, &mut full_d),
                "{view:?}"
            );
            assert_eq!(part_d, full_d, "{view:?}");
            assert_eq!(endpoints::build(&part), endpoints::build(&full), "{view:?}");
        });
        // The workload selector does shape clusters, so the key must keep it.
        let m = labelled_mesh();
        let (v1, plain) = (
            sidecar_with_labels("default", &[("version", "v1")]),
            sidecar("default"),
        );
        let resolved = crate::resolve(m);
        let (selected, other) = (
            Context::new(&resolved, &v1),
            Context::new(&resolved, &plain),
        );
        assert_ne!(
            clusters::build(&selected, &mut Vec::new()),
            clusters::build(&other, &mut Vec::new())
        );
    }

    const LABEL_SETS: [&[(&str, &str)]; 7] = [
        &[],
        &[("app", "productpage"), ("pod-template-hash", "abc")],
        &[("app", "batch"), ("version", "v1"), ("team", "x")],
        &[("version", "v1"), ("random", "1")],
        &[("istio", "ingressgateway"), ("zone", "a")],
        &[("istio", "egressgateway"), ("app", "productpage")],
        &[("tier", "backend"), ("app", "batch"), ("zone", "b")],
    ];

    /// Calls `check` for a sidecar, a certified sidecar serving ports (the
    /// security policies shape its inbound side) and a gateway with each
    /// of [`LABEL_SETS`], over the labelled mesh and 20 random meshes with
    /// the same rules.
    fn for_every_labelled_view(mut check: impl FnMut(&MeshState, &ReferencedLabels, &ProxyView)) {
        let meshes = std::iter::once(labelled_mesh()).chain((0..20).map(|seed| {
            let mut m = random_mesh(seed);
            Arc::make_mut(&mut m.config).extend(config(LABEL_RULES));
            m
        }));
        for m in meshes {
            let keys = ReferencedLabels::of(&m);
            for labels in LABEL_SETS {
                for view in [
                    sidecar_with_labels("default", labels),
                    serving_sidecar(labels),
                    gateway_proxy("default", labels),
                ] {
                    check(&m, &keys, &view);
                }
            }
        }
    }

    fn serving_sidecar(labels: &[(&str, &str)]) -> ProxyView {
        ProxyView {
            workload_certificate: true,
            inbound: with_inbound(&[
                (9080, pilotfish_model::Protocol::Http),
                (9090, pilotfish_model::Protocol::Tcp),
            ])
            .inbound,
            ..sidecar_with_labels("default", labels)
        }
    }

    /// Stage 2 shares parts (virtual hosts) between the views of one
    /// resolution; what a view gets from a resolution that other views
    /// used first is exactly what it gets from one of its own, over the
    /// labelled and random meshes, both proxy kinds, two namespaces and
    /// every label set, in forward and reverse order.
    #[test]
    fn views_emitted_from_one_shared_resolution_equal_views_emitted_alone() {
        let meshes = std::iter::once(labelled_mesh()).chain((0..20).map(|seed| {
            let mut m = random_mesh(seed);
            Arc::make_mut(&mut m.config).extend(config(LABEL_RULES));
            m
        }));
        for m in meshes {
            let views: Vec<ProxyView> = LABEL_SETS
                .iter()
                .flat_map(|labels| {
                    [
                        sidecar_with_labels("default", labels),
                        sidecar_with_labels("other", labels),
                        gateway_proxy("default", labels),
                    ]
                })
                .collect();
            let alone: Vec<_> = views
                .iter()
                .map(|v| crate::emit(&crate::resolve(m.clone()), v))
                .collect();
            let shared = crate::resolve(m.clone());
            for (view, expected) in views.iter().zip(&alone).rev() {
                assert_eq!(&crate::emit(&shared, view), expected, "{view:?}");
            }
            for (view, expected) in views.iter().zip(&alone) {
                assert_eq!(&crate::emit(&shared, view), expected, "{view:?}");
            }
        }
    }

    /// Views that differ only in labels no rule selects share every
    /// virtual host; a view selected by a `sourceLabels` rule gets its own
    /// virtual host for that rule's host and shares the others.
    #[test]
    fn virtual_hosts_are_shared_unless_a_rule_selects_the_view() {
        let resolved = crate::resolve(labelled_mesh());
        let vhosts = |labels: &[(&str, &str)]| {
            let view = sidecar_with_labels("default", labels);
            let ctx = crate::Context::new(&resolved, &view);
            let parts = crate::emit::route_parts(&ctx, &mut Vec::new());
            let config = parts
                .into_iter()
                .find(|p| p.name() == "9080")
                .expect("9080");
            config.virtual_hosts
        };
        let plain = vhosts(&[("app", "batch")]);
        let other = vhosts(&[("app", "web"), ("pod-template-hash", "x")]);
        let selected = vhosts(&[("app", "productpage")]);
        assert_eq!(plain.len(), other.len());
        for (a, b) in plain.iter().zip(&other) {
            assert!(Arc::ptr_eq(a, b), "{} not shared", a.name);
        }
        let own: Vec<&str> = plain
            .iter()
            .zip(&selected)
            .filter(|(a, b)| !Arc::ptr_eq(a, b))
            .map(|(a, _)| a.name.as_str())
            .collect();
        // Only the host the sourceLabels rule routes differs.
        assert_eq!(own, ["reviews.default.svc.cluster.local:9080"]);
    }

    /// The projection is exact: over proxies of both kinds carrying
    /// referenced, unreferenced and conflicting labels, the projected view
    /// translates to exactly what the full view does.
    #[test]
    fn translation_of_the_projected_view_equals_the_full_one() {
        for_every_labelled_view(|m, keys, view| {
            let projected = keys.project_view(view);
            assert_eq!(translate(m, &projected), translate(m, view), "{view:?}");
        });
        // The rules do make these labels matter, so equality above is not vacuous.
        let m = labelled_mesh();
        assert_ne!(
            translate(
                &m,
                &sidecar_with_labels("default", &[("app", "productpage")])
            ),
            translate(&m, &sidecar("default"))
        );
        assert_ne!(
            translate(
                &m,
                &gateway_proxy("default", &[("istio", "ingressgateway")])
            ),
            translate(&m, &gateway_proxy("default", &[]))
        );
        for policy_labels in [("tier", "backend"), ("app", "batch")] {
            assert_ne!(
                translate(&m, &serving_sidecar(&[policy_labels])),
                translate(&m, &serving_sidecar(&[])),
                "{policy_labels:?}"
            );
        }
    }
}
