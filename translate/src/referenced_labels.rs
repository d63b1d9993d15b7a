//! Which proxy labels the config of a mesh can look at. A label that no rule
//! reads cannot change a proxy's resources, so a server may leave it out of
//! the key it caches translations under: proxies (or hostile clients) with
//! unique but irrelevant labels then share one translation.

use std::collections::{BTreeMap, BTreeSet};

use pilotfish_crds::ConfigSpec;
use pilotfish_crds::virtual_service::VirtualServiceSpec;

use crate::mesh::MeshState;
use crate::proxy::ProxyView;

/// The label keys that some config object of one mesh state matches proxies
/// on: VirtualService match `sourceLabels` (HTTP, TLS and TCP), Gateway
/// `selector` and DestinationRule `workloadSelector`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferencedLabels {
    keys: BTreeSet<String>,
}

impl ReferencedLabels {
    /// Collects the keys once per mesh state (a pass over the config).
    pub fn of(mesh: &MeshState) -> Self {
        let mut keys = BTreeSet::new();
        for object in mesh.config.iter() {
            match &object.spec {
                ConfigSpec::VirtualService(spec) => keys.extend(source_label_keys(spec)),
                ConfigSpec::Gateway(spec) => keys.extend(spec.selector.keys().cloned()),
                ConfigSpec::DestinationRule(spec) => keys.extend(
                    spec.workload_selector
                        .iter()
                        .flat_map(|s| s.match_labels.keys().cloned()),
                ),
                // A ServiceEntry's workloadSelector selects endpoints, not proxies.
                ConfigSpec::ServiceEntry(_) => {}
            }
        }
        ReferencedLabels { keys }
    }

    pub fn keys(&self) -> &BTreeSet<String> {
        &self.keys
    }

    /// `labels` restricted to the referenced keys. Every label rule asks
    /// only whether given keys hold given values, so a view with the
    /// projected labels translates exactly like one with all of them.
    pub fn project(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        labels
            .iter()
            .filter(|(k, _)| self.keys.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// `view` with its labels projected (see [`ReferencedLabels::project`]).
    pub fn project_view(&self, view: &ProxyView) -> ProxyView {
        ProxyView {
            kind: view.kind,
            namespace: view.namespace.clone(),
            interception: view.interception,
            labels: self.project(&view.labels),
            inbound: view.inbound.clone(),
            locality: view.locality.clone(),
        }
    }
}

fn source_label_keys(spec: &VirtualServiceSpec) -> impl Iterator<Item = String> + '_ {
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
    http.chain(tls).chain(tcp).flat_map(|l| l.keys().cloned())
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
        let keys: Vec<&str> = keys.keys().iter().map(String::as_str).collect();
        assert_eq!(keys, ["app", "istio", "version"]);
        assert!(ReferencedLabels::of(&busy_mesh()).keys().is_empty());
    }

    #[test]
    fn projection_keeps_only_referenced_keys() {
        let keys = ReferencedLabels::of(&labelled_mesh());
        let view = sidecar_with_labels("default", &[("app", "batch"), ("pod-hash", "x1")]);
        let projected = keys.project_view(&view);
        assert_eq!(
            projected,
            sidecar_with_labels("default", &[("app", "batch")])
        );
    }

    /// The projection is exact: over proxies of both kinds carrying
    /// referenced, unreferenced and conflicting labels, the projected view
    /// translates to exactly what the full view does.
    #[test]
    fn translation_of_the_projected_view_equals_the_full_one() {
        let label_sets: [&[(&str, &str)]; 6] = [
            &[],
            &[("app", "productpage"), ("pod-template-hash", "abc")],
            &[("app", "batch"), ("version", "v1"), ("team", "x")],
            &[("version", "v1"), ("random", "1")],
            &[("istio", "ingressgateway"), ("zone", "a")],
            &[("istio", "egressgateway"), ("app", "productpage")],
        ];
        let meshes = std::iter::once(labelled_mesh()).chain((0..20).map(|seed| {
            let mut m = random_mesh(seed);
            Arc::make_mut(&mut m.config).extend(config(LABEL_RULES));
            m
        }));
        for m in meshes {
            let keys = ReferencedLabels::of(&m);
            for labels in label_sets {
                for view in [
                    sidecar_with_labels("default", labels),
                    gateway_proxy("default", labels),
                ] {
                    let projected = keys.project_view(&view);
                    assert_eq!(
                        translate(&m, &projected),
                        translate(&m, &view),
                        "{labels:?}"
                    );
                }
            }
        }
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
    }
}
