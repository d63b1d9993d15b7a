//! Which VirtualServices a gateway server takes, and for which hosts.
//!
//! A VirtualService binds to a server when it names the server's Gateway in
//! `gateways`, the server's host namespace admits the VirtualService's
//! namespace, and one of its hosts intersects one of the server's hosts.
//! The intersection (the more specific of the two) is the virtual host.

use std::collections::BTreeSet;

use crate::diagnostics::{Diagnostic, DiagnosticKind};
use crate::emit::context::Context;
use crate::emit::gateway::gateway_servers::{self, GatewayServer};
use crate::emit::sidecar::virtual_service_index::IndexedVirtualService;
use crate::hosts;
use crate::rule_applicability::{self, RouteFor};

/// The more specific of two host patterns when one covers the other.
pub fn intersect(a: &str, b: &str) -> Option<String> {
    if hosts::matches(a, b) {
        Some(b.to_string())
    } else if hosts::matches(b, a) {
        Some(a.to_string())
    } else {
        None
    }
}

/// `(host, VirtualService)` pairs a server takes, VirtualServices in
/// precedence order (oldest first), each host once per VirtualService.
pub fn bound<'i, 'a: 'i>(
    entries: impl Iterator<Item = &'i IndexedVirtualService<'a>>,
    server: &GatewayServer,
) -> Vec<(String, &'i IndexedVirtualService<'a>)> {
    let target = RouteFor::Gateway(&server.gateway_key);
    let mut out = Vec::new();
    for vs in entries {
        if !rule_applicability::binds(&vs.spec.gateways, vs.namespace(), target) {
            continue;
        }
        let mut seen = BTreeSet::new();
        for vs_host in vs.hosts {
            for server_host in server.hosts.iter().filter(|h| h.admits(vs.namespace())) {
                if let Some(host) = intersect(vs_host, &server_host.host)
                    && seen.insert(host.clone())
                {
                    out.push((host, vs));
                }
            }
        }
    }
    out
}

/// Warnings for VirtualServices that name a Gateway that does not exist,
/// or one of the Gateways of this proxy without taking any of its hosts.
pub fn unbound_diagnostics<'i, 'a: 'i>(
    ctx: &Context,
    entries: impl Iterator<Item = &'i IndexedVirtualService<'a>>,
    servers: &[&GatewayServer],
) -> Vec<Diagnostic> {
    let existing: BTreeSet<String> = ctx
        .mesh
        .config
        .iter()
        .filter(|o| o.kind() == pilotfish_crds::Kind::Gateway)
        .map(|o| format!("{}/{}", o.meta.namespace, o.meta.name))
        .collect();
    let selected: BTreeSet<String> = gateway_servers::selected(ctx)
        .iter()
        .map(|(o, _)| format!("{}/{}", o.meta.namespace, o.meta.name))
        .collect();
    let mut out = Vec::new();
    for vs in entries {
        for (i, entry) in vs.spec.gateways.iter().enumerate() {
            let Some(key) = rule_applicability::gateway_key(entry, vs.namespace()) else {
                continue;
            };
            let field = format!("spec.gateways[{i}]");
            if !existing.contains(&key) {
                out.push(
                    Diagnostic::new(
                        DiagnosticKind::UnboundVirtualService,
                        vs.name(),
                        format!("Gateway {key} does not exist"),
                    )
                    .at(field),
                );
                continue;
            }
            let takes_a_host = servers
                .iter()
                .filter(|s| s.gateway_key == key)
                .any(|s| !bound(std::iter::once(vs), s).is_empty());
            if selected.contains(&key) && !takes_a_host {
                out.push(
                    Diagnostic::new(
                        DiagnosticKind::UnboundVirtualService,
                        vs.name(),
                        format!(
                            "none of its hosts is a host of a server of Gateway {key} (that admits namespace {})",
                            vs.namespace()
                        ),
                    )
                    .at("spec.hosts"),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_is_the_more_specific_host() {
        assert_eq!(
            intersect("*", "a.example.com").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("a.example.com", "*").as_deref(),
            Some("a.example.com")
        );
        assert_eq!(
            intersect("*.example.com", "*.a.example.com").as_deref(),
            Some("*.a.example.com")
        );
        assert_eq!(intersect("*", "*").as_deref(), Some("*"));
        assert_eq!(intersect("a.example.com", "b.example.com"), None);
        assert_eq!(intersect("*.example.com", "example.com"), None);
    }
}
