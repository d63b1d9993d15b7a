//! Pure translation: service model + Istio config + proxy view → Envoy xDS
//! resources. No I/O, no clocks, no randomness: the same input always gives
//! equal output (resources sorted by name, input order irrelevant).
//!
//! Its input types (the service model and [`MeshState`]) live in the small
//! `pilotfish-model` crate, not in `registries`, so that translation
//! depends on no Consul or Kubernetes client either.
//!
//! Caveat for versioning: a few Envoy fields are protobuf maps
//! (`typed_per_filter_config`, `typed_extension_protocol_options`) held in
//! `HashMap`s, which prost encodes in hash order. Compare resources with
//! `==`, or derive versions from the input, not from encoded bytes.
//!
//! [`translate`] builds everything; the per-type builders
//! ([`clusters::build`], [`endpoints::build`], [`listeners::build`],
//! [`routes::build`]) take a [`Context`] so that a server can rebuild one
//! type alone (say, EDS when only endpoints changed).

pub mod chain_match;
pub mod claims;
pub mod clusters;
pub mod context;
pub mod destination_rules;
pub mod diagnostics;
pub mod endpoints;
pub mod filters;
pub mod gateway_bindings;
pub mod gateway_listeners;
pub mod gateway_routes;
pub mod gateway_servers;
pub mod gateway_tls;
pub mod hosts;
pub mod http_routes;
pub mod inbound;
pub mod listener_matches;
pub mod listeners;
pub mod locality;
/// The mesh state lives in `pilotfish-model`; kept here under its old path.
pub use pilotfish_model::mesh;
pub mod names;
pub mod observability;
pub mod protobuf;
pub mod provenance;
pub mod proxy;
pub mod referenced_labels;
pub mod resources;
pub mod route_destinations;
pub mod route_match;
pub mod route_policies;
pub mod routes;
pub mod rule_applicability;
pub mod sds;
pub mod service_clusters;
pub mod tcp_routes;
pub mod traffic_policy;
pub mod upstream_tls;
pub mod virtual_service_index;
pub mod visibility;

#[cfg(test)]
mod envoy_validation;
#[cfg(test)]
mod gateway_tests;
#[cfg(test)]
mod generated_meshes;
#[cfg(test)]
mod test_support;

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

pub use context::Context;
pub use diagnostics::{Diagnostic, DiagnosticKind, Severity};
pub use mesh::{
    CredentialKey, MeshConfig, MeshState, OutboundTrafficPolicy, TlsCredential, ZipkinCollector,
};
pub use proxy::{InboundPort, InterceptionMode, Locality, ProxyKind, ProxyView};
pub use referenced_labels::ReferencedLabels;
pub use resources::{Translation, XdsResources};

/// Builds every resource type for one proxy view: clusters, endpoints,
/// listeners, routes (a sidecar's, or a gateway's from its Gateways) and
/// the SDS secrets its gateway servers and DestinationRules name.
pub fn translate(mesh: &MeshState, proxy: &ProxyView) -> Translation {
    let ctx = Context::new(mesh, proxy);
    let mut diagnostics = Vec::new();
    let resources = XdsResources {
        clusters: clusters::build(&ctx, &mut diagnostics),
        endpoints: endpoints::build(&ctx),
        listeners: listeners::build(&ctx, &mut diagnostics),
        routes: routes::build(&ctx, &mut diagnostics),
        secrets: gateway_tls::secrets(&ctx, &mut diagnostics),
    };
    diagnostics::normalize(&mut diagnostics);
    Translation {
        resources,
        diagnostics,
    }
}

/// EDS alone, for endpoint-only changes.
pub fn translate_endpoints(mesh: &MeshState, proxy: &ProxyView) -> Vec<ClusterLoadAssignment> {
    endpoints::build(&Context::new(mesh, proxy))
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
