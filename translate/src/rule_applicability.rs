//! Whether a VirtualService (or one of its rule matches) applies to the
//! proxy being built: a sidecar (Istio's reserved gateway name `mesh`) or
//! one Gateway, on one port.

use std::collections::BTreeMap;

use pilotfish_crds::{HttpMatchRequest, L4MatchAttributes, TlsMatchAttributes};

use crate::proxy::ProxyView;
use crate::visibility;

/// The gateway name that stands for "all sidecars".
pub const MESH_GATEWAY: &str = "mesh";

/// Who routes are being built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteFor<'g> {
    /// Sidecars.
    Mesh,
    /// The Gateway `namespace/name`.
    Gateway(&'g str),
}

/// `namespace/name` of a `gateways` entry written in `namespace`: `name`,
/// `ns/name`, or the older `name.ns.svc.<suffix>` form. `None` for `mesh`.
pub fn gateway_key(entry: &str, namespace: &str) -> Option<String> {
    let entry = entry.trim();
    if entry == MESH_GATEWAY {
        return None;
    }
    if entry.contains('/') {
        return Some(entry.to_string());
    }
    match entry.split_once('.') {
        Some((name, rest)) => {
            let ns = rest.split('.').next().unwrap_or(namespace);
            Some(format!("{ns}/{name}"))
        }
        None => Some(format!("{namespace}/{entry}")),
    }
}

/// Whether a `gateways` list written in `namespace` names `target`.
pub fn names_target(gateways: &[String], namespace: &str, target: RouteFor) -> bool {
    gateways
        .iter()
        .any(|g| match (gateway_key(g, namespace), target) {
            (None, RouteFor::Mesh) => true,
            (Some(key), RouteFor::Gateway(name)) => key == name,
            _ => false,
        })
}

/// A VirtualService's own `gateways`: none means sidecars only.
pub fn binds(gateways: &[String], namespace: &str, target: RouteFor) -> bool {
    if gateways.is_empty() {
        return target == RouteFor::Mesh;
    }
    names_target(gateways, namespace, target)
}

/// The conditions of one rule match that are decided per proxy and port.
pub struct MatchConditions<'m> {
    pub port: Option<u32>,
    pub source_labels: &'m BTreeMap<String, String>,
    /// Empty: the VirtualService's own gateways (already checked).
    pub gateways: &'m [String],
    pub source_namespace: Option<&'m String>,
}

/// The same four conditions sit on HTTP, TLS and TCP matches.
macro_rules! match_conditions_from {
    ($($match_type:ty),*) => {$(
        impl<'m> From<&'m $match_type> for MatchConditions<'m> {
            fn from(m: &'m $match_type) -> Self {
                MatchConditions {
                    port: m.port,
                    source_labels: &m.source_labels,
                    gateways: &m.gateways,
                    source_namespace: m.source_namespace.as_ref(),
                }
            }
        }
    )*};
}

match_conditions_from!(HttpMatchRequest, TlsMatchAttributes, L4MatchAttributes);

/// Whether a match applies to `proxy`, routed for `target` on `port`.
pub fn match_applies(
    proxy: &ProxyView,
    target: RouteFor,
    vs_namespace: &str,
    port: u16,
    m: MatchConditions,
) -> bool {
    let port_ok = m.port.is_none_or(|p| p == u32::from(port));
    let labels_ok = visibility::labels_match(m.source_labels, &proxy.labels);
    let gateways_ok = m.gateways.is_empty() || names_target(m.gateways, vs_namespace, target);
    let namespace_ok = m.source_namespace.is_none_or(|ns| *ns == proxy.namespace);
    port_ok && labels_ok && gateways_ok && namespace_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn gateway_names_resolve_against_the_virtual_service_namespace() {
        assert_eq!(
            gateway_key("gw", "bookinfo").as_deref(),
            Some("bookinfo/gw")
        );
        assert_eq!(
            gateway_key("istio-system/gw", "bookinfo").as_deref(),
            Some("istio-system/gw")
        );
        assert_eq!(
            gateway_key("gw.edge.svc.cluster.local", "bookinfo").as_deref(),
            Some("edge/gw")
        );
        assert_eq!(gateway_key("mesh", "bookinfo"), None);
    }

    #[test]
    fn no_gateways_means_sidecars_only() {
        assert!(binds(&[], "default", RouteFor::Mesh));
        assert!(!binds(&[], "default", RouteFor::Gateway("default/gw")));
        let both = list(&["gw", "mesh"]);
        assert!(binds(&both, "default", RouteFor::Mesh));
        assert!(binds(&both, "default", RouteFor::Gateway("default/gw")));
        assert!(!binds(&both, "default", RouteFor::Gateway("other/gw")));
    }
}
