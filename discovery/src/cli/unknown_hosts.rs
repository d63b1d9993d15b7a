//! `validate`'s registry check (Istio's "referenced host not found"):
//! every destination a VirtualService routes or mirrors to, and every
//! DestinationRule's host, must be a service some registry (or
//! ServiceEntry) knows; otherwise its traffic gets 503s or the rule does
//! nothing.

use pilotfish_crds::{ConfigObject, ConfigSpec, Destination};
use pilotfish_translate::hosts;
use pilotfish_translate::mesh::MeshState;

/// A host nothing knows: the object, the field and the host as resolved.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownHost {
    pub object: String,
    pub field: String,
    pub host: String,
    /// A destination (traffic fails) rather than a DestinationRule's host
    /// (the rule does nothing).
    pub routed: bool,
}

pub fn unknown_hosts(mesh: &MeshState) -> Vec<UnknownHost> {
    let suffix = &mesh.mesh.domain_suffix;
    let known = |host: &str| {
        mesh.services
            .iter()
            .any(|s| s.hostname == host || hosts::matches(&s.hostname, host))
    };
    let mut out = Vec::new();
    for object in mesh.config.iter() {
        let namespace = &object.meta.namespace;
        for (field, host, routed) in referenced_hosts(object) {
            let resolved = hosts::resolve(&host, namespace, suffix);
            if resolved.contains('*') || known(&resolved) {
                continue;
            }
            out.push(UnknownHost {
                object: object.key().to_string(),
                field,
                host: resolved,
                routed,
            });
        }
    }
    out
}

/// (field path, host as written, is a destination) of one object.
fn referenced_hosts(object: &ConfigObject) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let mut destination = |field: String, d: &Destination| {
        out.push((format!("{field}.host"), d.host.clone(), true));
    };
    match &object.spec {
        ConfigSpec::VirtualService(vs) => {
            for (i, http) in vs.http.iter().enumerate() {
                for (j, r) in http.route.iter().enumerate() {
                    destination(
                        format!("spec.http[{i}].route[{j}].destination"),
                        &r.destination,
                    );
                }
                if let Some(mirror) = &http.mirror {
                    destination(format!("spec.http[{i}].mirror"), mirror);
                }
                for (j, m) in http.mirrors.iter().enumerate() {
                    destination(
                        format!("spec.http[{i}].mirrors[{j}].destination"),
                        &m.destination,
                    );
                }
            }
            for (section, routes) in [
                ("tcp", vs.tcp.iter().map(|r| &r.route).collect::<Vec<_>>()),
                ("tls", vs.tls.iter().map(|r| &r.route).collect()),
            ] {
                for (i, route) in routes.into_iter().enumerate() {
                    for (j, r) in route.iter().enumerate() {
                        destination(
                            format!("spec.{section}[{i}].route[{j}].destination"),
                            &r.destination,
                        );
                    }
                }
            }
        }
        ConfigSpec::DestinationRule(dr) => out.push(("spec.host".into(), dr.host.clone(), false)),
        ConfigSpec::Gateway(_)
        | ConfigSpec::ServiceEntry(_)
        | ConfigSpec::PeerAuthentication(_)
        | ConfigSpec::AuthorizationPolicy(_) => {}
    }
    out
}
