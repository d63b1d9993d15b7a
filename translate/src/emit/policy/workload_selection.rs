//! Which workloads a security policy (PeerAuthentication,
//! AuthorizationPolicy) applies to, and how specifically: Istio's scopes.

use std::collections::BTreeMap;

use pilotfish_crds::{ConfigObject, WorkloadSelector};

use crate::proxy::ProxyView;
use crate::visibility;

/// How specifically a policy selects a proxy; later variants win.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// In the root namespace without a selector.
    Mesh,
    /// In the proxy's namespace without a selector.
    Namespace,
    /// A selector the proxy's labels satisfy.
    Workload,
}

/// Whether a selector in the root namespace reaches workloads of other
/// namespaces: it does for AuthorizationPolicy, not for PeerAuthentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootSelectors {
    MeshWide,
    OwnNamespace,
}

/// The scope in which `object` (with `selector`) applies to `proxy`, or
/// `None` when it does not. An empty `matchLabels` selects as no selector.
pub fn scope(
    object: &ConfigObject,
    selector: Option<&WorkloadSelector>,
    root_namespace: &str,
    root_selectors: RootSelectors,
    proxy: &ProxyView,
) -> Option<Scope> {
    let namespace = object.meta.namespace.as_str();
    let in_root = namespace == root_namespace;
    let in_own = namespace == proxy.namespace;
    match labels_of(selector) {
        None if in_own && !in_root => Some(Scope::Namespace),
        None if in_root => Some(Scope::Mesh),
        None => None,
        Some(labels) => {
            let reaches = in_own || (in_root && root_selectors == RootSelectors::MeshWide);
            (reaches && visibility::labels_match(labels, &proxy.labels)).then_some(Scope::Workload)
        }
    }
}

fn labels_of(selector: Option<&WorkloadSelector>) -> Option<&BTreeMap<String, String>> {
    selector
        .map(|s| &s.match_labels)
        .filter(|labels| !labels.is_empty())
}
