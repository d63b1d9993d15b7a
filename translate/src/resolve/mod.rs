//! Stage 1: the generation's mesh and config resolved once, with no proxy
//! in sight. Services are ordered by precedence per hostname,
//! VirtualServices and DestinationRules ordered by creation time with
//! their hosts resolved and indexed, and every object's own fields
//! validated: what no view changes is decided here, and its diagnostics
//! are reported once, even for objects no connected proxy sees.
//!
//! Stage 2 (`emit`) selects from a [`Resolved`] per view.

pub(crate) mod addresses;
pub(crate) mod destination_rules;
mod dump;
pub(crate) mod route_match;
pub(crate) mod route_policies;
pub(crate) mod services;
pub(crate) mod validate;
pub(crate) mod virtual_services;

use std::sync::Arc;

use crate::diagnostics::{self, Diagnostic};
use crate::mesh::MeshState;
use crate::parts::SharedParts;

/// The mesh of one generation, resolved for every view.
pub struct Resolved {
    mesh: Arc<MeshState>,
    pub(crate) services: services::ServiceTable,
    pub(crate) virtual_services: virtual_services::VirtualServiceTable,
    pub(crate) destination_rules: Vec<destination_rules::ResolvedDestinationRule>,
    /// VIPs for ServiceEntries without addresses, for proxies that use them.
    pub(crate) addresses: addresses::AllocatedAddresses,
    diagnostics: Vec<Diagnostic>,
    /// What views build that depends on less than the whole view, built by
    /// the first view that needs it and shared with the rest.
    pub(crate) parts: SharedParts,
}

/// Resolves a generation's mesh state (stage 1).
pub fn resolve(mesh: impl Into<Arc<MeshState>>) -> Resolved {
    let mesh = mesh.into();
    let suffix = mesh.mesh.domain_suffix.as_str();
    let mut diagnostics = validate::objects(&mesh.config);
    diagnostics::normalize(&mut diagnostics);
    Resolved {
        services: services::ServiceTable::new(&mesh.services),
        virtual_services: virtual_services::VirtualServiceTable::new(&mesh.config, suffix),
        destination_rules: destination_rules::table(&mesh.config, suffix),
        addresses: addresses::AllocatedAddresses::new(&mesh.services),
        diagnostics,
        parts: SharedParts::default(),
        mesh,
    }
}

impl Resolved {
    pub fn mesh(&self) -> &MeshState {
        &self.mesh
    }

    /// The mesh state this was resolved from, shared.
    pub fn mesh_state(&self) -> &Arc<MeshState> {
        &self.mesh
    }

    /// Problems of single objects (invalid or unsupported fields), found
    /// once per generation whichever proxies see the objects. Conflicts
    /// that depend on what a view sees are reported by the `emit` stage.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("services", &self.services.by_host.len())
            .field("virtual_services", &self.virtual_services.entries.len())
            .field("destination_rules", &self.destination_rules.len())
            .field("diagnostics", &self.diagnostics.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::DiagnosticKind;
    use crate::test_support::*;

    /// A VirtualService exported only to a namespace without proxies: no
    /// view sees it, and stage 1 still reports its broken and unsupported
    /// fields, each once.
    #[test]
    fn problems_of_objects_no_view_sees_are_reported_once_by_resolve() {
        let hidden = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: hidden, namespace: team}
spec:
  hosts: [reviews.default.svc.cluster.local]
  exportTo: [team]
  http:
  - timeout: 5 parsecs
    route: [{destination: {host: reviews.default.svc.cluster.local}}]
  - match: [{uri: {regex: "(unclosed"}}]
    route: [{destination: {host: reviews.default.svc.cluster.local}}]
  - delegate: {name: other}
  tcp:
  - match: [{destinationSubnets: [not-a-subnet]}]
    route: [{destination: {host: reviews.default.svc.cluster.local}}]
"#;
        let resolved = resolve(bookinfo(hidden));
        let found: Vec<(DiagnosticKind, &str, Option<&str>)> = resolved
            .diagnostics()
            .iter()
            .map(|d| (d.kind, d.object.as_str(), d.field.as_deref()))
            .collect();
        let object = "VirtualService team/hidden";
        assert_eq!(
            found,
            [
                (
                    DiagnosticKind::Unsupported,
                    object,
                    Some("spec.http[2].delegate")
                ),
                (
                    DiagnosticKind::InvalidField,
                    object,
                    Some("spec.http[0].timeout")
                ),
                (
                    DiagnosticKind::InvalidField,
                    object,
                    Some("spec.http[1].match[0].uri.regex")
                ),
                (
                    DiagnosticKind::InvalidField,
                    object,
                    Some("spec.tcp[0].match[0].destinationSubnets[0]")
                ),
            ]
        );
        let view = crate::emit(&resolved, &sidecar("default"));
        assert!(
            view.diagnostics.iter().all(|d| d.object != object),
            "{:?}",
            view.diagnostics
        );
    }
}
