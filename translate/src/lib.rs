//! Pure translation: service model + Istio config + proxy view → Envoy xDS
//! resources. No I/O, no clocks, no randomness: the same input always gives
//! equal output (resources sorted by name, input order irrelevant).
//!
//! Two stages:
//! 1. [`resolve()`] — once per generation, no proxy in sight: services,
//!    VirtualServices and DestinationRules ordered by precedence and
//!    indexed, every object's own fields validated ([`Resolved`], with the
//!    diagnostics of single objects).
//! 2. [`emit()`] — per proxy view: selects from the [`Resolved`] what the
//!    view sees (exportTo, workload selectors, sourceLabels, gateway
//!    binding, its own ports) and builds Envoy resources; what depends on
//!    less than the whole view (a service's virtual host) is built by the
//!    first view that needs it and shared with the others.
//!
//! [`translate`] runs both for one view. Servers resolve once per
//! generation and call the per-type emitters in [`emit`] (clusters and
//! endpoints once per DestinationRule-selector key, EDS alone when only
//! endpoints changed).
//!
//! Its input types (the service model and [`MeshState`]) live in the small
//! `pilotfish-model` crate, not in `registries`, so that translation
//! depends on no Consul or Kubernetes client either.
//!
//! Caveat for versioning: a few Envoy fields are protobuf maps
//! (`typed_per_filter_config`, `typed_extension_protocol_options`) held in
//! `HashMap`s, which prost encodes in hash order. Compare resources with
//! `==`, or derive versions from the input, not from encoded bytes.

// Shared by both stages.
pub(crate) mod claims;
pub mod diagnostics;
pub mod hosts;
pub mod names;
pub(crate) mod parts;
pub(crate) mod protobuf;
pub mod provenance;
pub mod proxy;
pub mod referenced_labels;
pub mod resources;
pub(crate) mod rule_applicability;
pub(crate) mod visibility;
/// The mesh state lives in `pilotfish-model`; kept here under its old path.
pub use pilotfish_model::mesh;

pub mod emit;
pub mod explain;
pub mod resolve;

#[cfg(test)]
mod envoy_validation;
#[cfg(test)]
mod generated_meshes;
#[cfg(test)]
mod test_support;

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

pub use diagnostics::{Diagnostic, DiagnosticKind, Severity};
pub use emit::{Context, emit};
pub use mesh::{
    CredentialKey, MeshConfig, MeshState, OutboundTrafficPolicy, TlsCredential, ZipkinCollector,
};
pub use pilotfish_model::Protocol;
pub use proxy::{DnsOptions, InboundPort, InterceptionMode, Locality, ProxyKind, ProxyView};
pub use referenced_labels::ReferencedLabels;
pub use resolve::{Resolved, resolve};
pub use resources::{Translation, XdsResources};

/// Both stages for one proxy view: every resource type (clusters,
/// endpoints, listeners, routes, SDS secrets) and every diagnostic, the
/// generation's own included.
pub fn translate(mesh: &MeshState, proxy: &ProxyView) -> Translation {
    let resolved = resolve(mesh.clone());
    let mut translation = emit(&resolved, proxy);
    translation
        .diagnostics
        .extend(resolved.diagnostics().iter().cloned());
    diagnostics::normalize(&mut translation.diagnostics);
    translation
}

/// EDS alone, for endpoint-only changes.
pub fn translate_endpoints(mesh: &MeshState, proxy: &ProxyView) -> Vec<ClusterLoadAssignment> {
    let resolved = resolve(mesh.clone());
    emit::endpoints(&Context::new(&resolved, proxy))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use pilotfish_model::Protocol;
    use std::sync::Arc;

    fn shuffled(mut m: MeshState) -> MeshState {
        Arc::make_mut(&mut m.services).reverse();
        Arc::make_mut(&mut m.config).reverse();
        for eps in m.endpoints.values_mut() {
            Arc::make_mut(eps).reverse();
        }
        m
    }

    #[test]
    fn translating_twice_gives_identical_output() {
        let m = busy_mesh();
        let proxy = sidecar("default");
        let first = translate(&m, &proxy);
        assert_eq!(first, translate(&m, &proxy));
        assert_envoy_invariants(&first);
        assert!(!first.diagnostics.is_empty());
    }

    #[test]
    fn shuffled_input_order_gives_identical_output() {
        let proxy = sidecar("default");
        let ordered = translate(&busy_mesh(), &proxy);
        let reversed = translate(&shuffled(busy_mesh()), &proxy);
        assert_eq!(ordered, reversed);
    }

    #[test]
    fn diagnostics_are_sorted_and_unique() {
        let t = translate(&busy_mesh(), &sidecar("default"));
        let mut expected = t.diagnostics.clone();
        diagnostics::normalize(&mut expected);
        assert_eq!(t.diagnostics, expected);
        let kinds: std::collections::BTreeSet<_> = t.diagnostics.iter().map(|d| d.kind).collect();
        for kind in [
            DiagnosticKind::ListenerConflict,
            DiagnosticKind::ShadowedVirtualService,
            DiagnosticKind::Unsupported,
        ] {
            assert!(kinds.contains(&kind), "no {kind:?} in {:?}", t.diagnostics);
        }
    }

    #[test]
    fn endpoint_only_translation_matches_the_full_one() {
        let m = busy_mesh();
        let proxy = sidecar("default");
        assert_eq!(
            translate_endpoints(&m, &proxy),
            translate(&m, &proxy).resources.endpoints
        );
    }

    #[test]
    fn services_not_exported_to_the_proxy_namespace_are_invisible() {
        let mut hidden = service(
            "secret.team.svc.cluster.local",
            &["10.0.0.50"],
            &[(8080, Protocol::Http)],
        );
        hidden.export_to = vec![".".into()];
        let mut shared = service(
            "shared.team.svc.cluster.local",
            &["10.0.0.51"],
            &[(8081, Protocol::Http)],
        );
        shared.export_to = vec!["default".into()];
        let m = mesh(vec![hidden, shared], vec![], &[]);
        let outside = translate(&m, &sidecar("default"));
        assert!(!cluster_names(&outside).iter().any(|c| c.contains("secret")));
        assert!(cluster_names(&outside).iter().any(|c| c.contains("shared")));
        assert!(outside.resources.routes.iter().all(|r| r.name != "8080"));
        let inside = translate(&m, &sidecar("team"));
        assert!(cluster_names(&inside).iter().any(|c| c.contains("secret")));
        assert!(!cluster_names(&inside).iter().any(|c| c.contains("shared")));
    }

    #[test]
    fn random_meshes_keep_envoy_invariants_and_determinism() {
        for seed in 0..200 {
            let m = random_mesh(seed);
            for proxy in [sidecar("default"), sidecar_without_interception("other")] {
                let t = translate(&m, &proxy);
                assert_envoy_invariants(&t);
                assert_eq!(t, translate(&shuffled(m.clone()), &proxy), "seed {seed}");
            }
        }
    }

    #[test]
    fn odd_input_never_panics_and_stays_valid_for_envoy() {
        let m = odd_mesh();
        for proxy in [
            sidecar("default"),
            sidecar_without_interception("x"),
            ProxyView {
                kind: ProxyKind::Router,
                ..sidecar("")
            },
        ] {
            let t = translate(&m, &proxy);
            assert_envoy_invariants(&t);
        }
        let t = translate(&m, &sidecar("default"));
        assert!(
            diagnostics_of(&t, DiagnosticKind::InvalidField).len() >= 12,
            "{:#?}",
            t.diagnostics
        );
    }
}
