//! The mTLS mode a sidecar's inbound ports accept, from the
//! PeerAuthentications that select it (Istio's semantics): mesh-wide (root
//! namespace, no selector), namespace-wide (no selector) and
//! workload-specific (selector) policies; the most specific one that sets
//! a mode wins, `UNSET` inherits from the scope above, PERMISSIVE when none
//! does. Port-level modes count only in the workload-specific policy.
//! Within one scope the oldest policy applies; the others are reported.

use std::collections::BTreeMap;

use pilotfish_crds::{ConfigObject, ConfigSpec, MtlsMode, PeerAuthenticationSpec, PeerMtls};

use crate::diagnostics::{Diagnostic, DiagnosticKind};
use crate::emit::policy::workload_selection::{self, RootSelectors, Scope};
use crate::mesh::MeshState;
use crate::proxy::ProxyView;

/// What a port accepts from its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMode {
    /// Mesh mTLS only.
    Strict,
    /// Mesh mTLS and plaintext.
    Permissive,
    /// Plaintext only.
    Disable,
}

/// The effective modes for one proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAuthentication {
    default: PeerMode,
    ports: BTreeMap<u16, PeerMode>,
    /// The policy that decided `default`, for diagnostics.
    source: Option<String>,
}

impl Default for PeerAuthentication {
    fn default() -> Self {
        PeerAuthentication {
            default: PeerMode::Permissive,
            ports: BTreeMap::new(),
            source: None,
        }
    }
}

impl PeerAuthentication {
    /// The mode of inbound port `port`.
    pub fn mode(&self, port: u16) -> PeerMode {
        self.ports.get(&port).copied().unwrap_or(self.default)
    }

    /// The workload's mode, for ports it does not declare.
    pub fn workload_mode(&self) -> PeerMode {
        self.default
    }

    /// `PeerAuthentication ns/name` that set the mode of `port`, if any.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The modes for `proxy`, reporting policies that lose to an older one
    /// of the same scope.
    pub fn for_proxy(mesh: &MeshState, proxy: &ProxyView, diags: &mut Vec<Diagnostic>) -> Self {
        let mut by_scope: BTreeMap<Scope, Vec<(&ConfigObject, &PeerAuthenticationSpec)>> =
            BTreeMap::new();
        for object in mesh.config.iter() {
            let ConfigSpec::PeerAuthentication(spec) = &object.spec else {
                continue;
            };
            let scope = workload_selection::scope(
                object,
                spec.selector.as_ref(),
                &mesh.mesh.root_namespace,
                RootSelectors::OwnNamespace,
                proxy,
            );
            if let Some(scope) = scope {
                by_scope.entry(scope).or_default().push((object, spec));
            }
        }
        let mut out = PeerAuthentication::default();
        // Mesh, then namespace, then workload: each one that sets a mode
        // overrides the scope above it.
        for (_, mut candidates) in by_scope {
            candidates.sort_by(|a, b| a.0.precedence().cmp(&b.0.precedence()));
            let (winner, spec) = candidates[0];
            for (ignored, _) in &candidates[1..] {
                diags.push(shadowed(ignored, winner));
            }
            if let Some(mode) = effective(spec.mtls.as_ref()) {
                out.default = mode;
                out.source = Some(winner.key().to_string());
            }
            // Validation keeps port-level modes to workload-specific policies.
            out.ports = port_modes(spec, out.default);
        }
        out
    }
}

/// `None` for an unset mode: inherit.
fn effective(mtls: Option<&PeerMtls>) -> Option<PeerMode> {
    match mtls?.mode? {
        MtlsMode::Unset => None,
        MtlsMode::Strict => Some(PeerMode::Strict),
        MtlsMode::Permissive => Some(PeerMode::Permissive),
        MtlsMode::Disable => Some(PeerMode::Disable),
    }
}

/// Port-level modes; an unset one takes the workload's mode.
fn port_modes(spec: &PeerAuthenticationSpec, inherited: PeerMode) -> BTreeMap<u16, PeerMode> {
    spec.port_level_mtls
        .iter()
        .filter_map(|(port, mtls)| {
            let port = port.parse::<u16>().ok()?;
            Some((port, effective(Some(mtls)).unwrap_or(inherited)))
        })
        .collect()
}

fn shadowed(ignored: &ConfigObject, winner: &ConfigObject) -> Diagnostic {
    Diagnostic::new(
        DiagnosticKind::ShadowedPolicy,
        ignored.key().to_string(),
        format!(
            "ignored for this workload: the older {} of the same scope applies",
            winner.key()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use std::sync::Arc;

    fn modes(yaml: &str, proxy: &ProxyView) -> (PeerAuthentication, Vec<Diagnostic>) {
        let mut m = bookinfo("");
        Arc::make_mut(&mut m.config).extend(config(yaml));
        let mut diags = Vec::new();
        (PeerAuthentication::for_proxy(&m, proxy, &mut diags), diags)
    }

    fn pa(name: &str, namespace: &str, created: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {namespace}, creationTimestamp: \"{created}\"}}\nspec:\n{spec}"
        )
    }

    const T1: &str = "2023-01-01T00:00:00Z";
    const T2: &str = "2023-02-01T00:00:00Z";

    #[test]
    fn no_policy_means_permissive() {
        let (got, diags) = modes("", &sidecar("default"));
        assert_eq!(got.mode(9080), PeerMode::Permissive);
        assert!(diags.is_empty());
    }

    #[test]
    fn mesh_wide_strict_applies_to_every_namespace() {
        let yaml = pa("mesh", "istio-system", T1, "  mtls: {mode: STRICT}\n");
        assert_eq!(
            modes(&yaml, &sidecar("default")).0.mode(1),
            PeerMode::Strict
        );
        assert_eq!(modes(&yaml, &sidecar("other")).0.mode(1), PeerMode::Strict);
    }

    #[test]
    fn namespace_policy_overrides_mesh_and_stays_in_its_namespace() {
        let yaml = pa("mesh", "istio-system", T1, "  mtls: {mode: STRICT}\n")
            + &pa("ns", "default", T1, "  mtls: {mode: DISABLE}\n");
        assert_eq!(
            modes(&yaml, &sidecar("default")).0.mode(1),
            PeerMode::Disable
        );
        assert_eq!(modes(&yaml, &sidecar("other")).0.mode(1), PeerMode::Strict);
    }

    #[test]
    fn unset_inherits_from_the_parent_scope() {
        let yaml = pa("ns", "default", T1, "  mtls: {mode: STRICT}\n")
            + &pa(
                "wl",
                "default",
                T1,
                "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: UNSET}\n",
            );
        let proxy = sidecar_with_labels("default", &[("app", "reviews")]);
        assert_eq!(modes(&yaml, &proxy).0.mode(9080), PeerMode::Strict);
    }

    #[test]
    fn workload_selector_must_match_the_proxy_labels() {
        let yaml = pa(
            "wl",
            "default",
            T1,
            "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: STRICT}\n",
        );
        let other = sidecar_with_labels("default", &[("app", "ratings")]);
        assert_eq!(modes(&yaml, &other).0.mode(1), PeerMode::Permissive);
        let selected = sidecar_with_labels("default", &[("app", "reviews")]);
        assert_eq!(modes(&yaml, &selected).0.mode(1), PeerMode::Strict);
    }

    #[test]
    fn root_namespace_selectors_do_not_reach_other_namespaces() {
        let yaml = pa(
            "wl",
            "istio-system",
            T1,
            "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: STRICT}\n",
        );
        let proxy = sidecar_with_labels("default", &[("app", "reviews")]);
        assert_eq!(modes(&yaml, &proxy).0.mode(1), PeerMode::Permissive);
    }

    #[test]
    fn port_level_mode_overrides_the_workload_mode_on_its_port() {
        let yaml = pa(
            "wl",
            "default",
            T1,
            "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    9090: {mode: DISABLE}\n    9091: {mode: UNSET}\n",
        );
        let (got, _) = modes(
            &yaml,
            &sidecar_with_labels("default", &[("app", "reviews")]),
        );
        assert_eq!(got.mode(9080), PeerMode::Strict);
        assert_eq!(got.mode(9090), PeerMode::Disable);
        assert_eq!(got.mode(9091), PeerMode::Strict);
    }

    #[test]
    fn precedence_the_oldest_policy_of_a_scope_wins_and_the_others_are_reported() {
        let yaml = pa("newer", "default", T2, "  mtls: {mode: DISABLE}\n")
            + &pa("older", "default", T1, "  mtls: {mode: STRICT}\n");
        let (got, diags) = modes(&yaml, &sidecar("default"));
        assert_eq!(got.mode(1), PeerMode::Strict);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].kind, DiagnosticKind::ShadowedPolicy);
        assert_eq!(diags[0].object, "PeerAuthentication default/newer");
    }

    #[test]
    fn the_root_namespace_is_mesh_config() {
        let yaml = pa("mesh", "mesh-root", T1, "  mtls: {mode: STRICT}\n");
        let mut m = bookinfo("");
        Arc::make_mut(&mut m.config).extend(config(&yaml));
        m.mesh.root_namespace = "mesh-root".into();
        let got = PeerAuthentication::for_proxy(&m, &sidecar("default"), &mut Vec::new());
        assert_eq!(got.mode(1), PeerMode::Strict);
    }
}
