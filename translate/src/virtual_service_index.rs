//! VirtualServices that apply to a sidecar, and which one routes each host.

use std::collections::HashMap;

use pilotfish_crds::{ConfigObject, ConfigSpec, VirtualServiceSpec};

use crate::diagnostics::{Diagnostic, DiagnosticKind};
use crate::hosts;
use crate::proxy::ProxyView;
use crate::visibility;

use crate::rule_applicability::{self, RouteFor};

#[derive(Clone, Debug)]
pub struct IndexedVirtualService<'a> {
    pub object: &'a ConfigObject,
    pub spec: &'a VirtualServiceSpec,
    /// `spec.hosts`, resolved against the object's namespace.
    pub hosts: Vec<String>,
}

impl IndexedVirtualService<'_> {
    /// `VirtualService ns/name`.
    pub fn name(&self) -> String {
        self.object.key().to_string()
    }

    pub fn namespace(&self) -> &str {
        &self.object.meta.namespace
    }

    /// The most specific of this service's hosts that covers `hostname`.
    fn best_match(&self, hostname: &str) -> Option<&str> {
        self.hosts
            .iter()
            .filter(|pattern| hosts::matches(pattern, hostname))
            .min_by_key(|pattern| hosts::specificity(pattern))
            .map(String::as_str)
    }
}

/// Which VirtualService routes a host, and which ones it shadows.
#[derive(Clone, Debug, Default)]
pub struct Selection<'i, 'a> {
    pub winner: Option<&'i IndexedVirtualService<'a>>,
    pub shadowed: Vec<&'i IndexedVirtualService<'a>>,
}

impl Selection<'_, '_> {
    /// ShadowedVirtualService diagnostics for `hostname`.
    pub fn diagnostics(&self, hostname: &str) -> Vec<Diagnostic> {
        let Some(winner) = self.winner else {
            return Vec::new();
        };
        self.shadowed
            .iter()
            .map(|loser| {
                Diagnostic::new(
                    DiagnosticKind::ShadowedVirtualService,
                    loser.name(),
                    format!(
                        "host {hostname} is routed by {} (more specific or older); this one is ignored for it",
                        winner.name()
                    ),
                )
                .at("spec.hosts")
            })
            .collect()
    }
}

#[derive(Clone, Debug, Default)]
pub struct VirtualServiceIndex<'a> {
    /// Sidecar-applicable, visible VirtualServices in precedence order.
    entries: Vec<IndexedVirtualService<'a>>,
    /// Entries by each exact host they name, and entries with any wildcard
    /// host: the only ones that can match a hostname. Every service of a
    /// view asks which VirtualService routes it, and a scan of all entries
    /// per service made that quadratic in the mesh's size.
    by_exact_host: HashMap<String, Vec<usize>>,
    with_wildcards: Vec<usize>,
}

impl<'a> VirtualServiceIndex<'a> {
    /// VirtualServices for sidecars (bound to no gateway or to `mesh`).
    pub fn new(config: &'a [ConfigObject], proxy: &ProxyView, domain_suffix: &str) -> Self {
        Self::build(config, proxy, domain_suffix, |spec, namespace| {
            rule_applicability::binds(&spec.gateways, namespace, RouteFor::Mesh)
        })
    }

    /// VirtualServices bound to at least one gateway; which one is decided
    /// per gateway server.
    pub fn for_gateways(
        config: &'a [ConfigObject],
        proxy: &ProxyView,
        domain_suffix: &str,
    ) -> Self {
        Self::build(config, proxy, domain_suffix, |spec, namespace| {
            spec.gateways
                .iter()
                .any(|g| rule_applicability::gateway_key(g, namespace).is_some())
        })
    }

    fn build(
        config: &'a [ConfigObject],
        proxy: &ProxyView,
        domain_suffix: &str,
        bound: impl Fn(&VirtualServiceSpec, &str) -> bool,
    ) -> Self {
        let mut entries: Vec<_> = config
            .iter()
            .filter_map(|object| match &object.spec {
                ConfigSpec::VirtualService(spec)
                    if bound(spec, &object.meta.namespace)
                        && visibility::is_exported(
                            &spec.export_to,
                            &object.meta.namespace,
                            &proxy.namespace,
                        ) =>
                {
                    Some(IndexedVirtualService {
                        object,
                        spec,
                        hosts: spec
                            .hosts
                            .iter()
                            .map(|h| hosts::resolve(h, &object.meta.namespace, domain_suffix))
                            .collect(),
                    })
                }
                _ => None,
            })
            .collect();
        entries.sort_by(|a, b| a.object.precedence().cmp(&b.object.precedence()));
        let mut by_exact_host: HashMap<String, Vec<usize>> = HashMap::new();
        let mut with_wildcards = Vec::new();
        for (order, entry) in entries.iter().enumerate() {
            for host in &entry.hosts {
                if host.starts_with('*') {
                    with_wildcards.push(order);
                } else {
                    by_exact_host.entry(host.clone()).or_default().push(order);
                }
            }
        }
        with_wildcards.dedup();
        VirtualServiceIndex {
            entries,
            by_exact_host,
            with_wildcards,
        }
    }

    pub fn entries(&self) -> &[IndexedVirtualService<'a>] {
        &self.entries
    }

    /// Most specific host match wins, then the oldest object.
    pub fn select(&self, hostname: &str) -> Selection<'_, 'a> {
        let hostname = hostname.to_ascii_lowercase();
        let hostname = hostname.as_str();
        let mut orders: Vec<usize> = self
            .by_exact_host
            .get(hostname)
            .into_iter()
            .flatten()
            .chain(&self.with_wildcards)
            .copied()
            .collect();
        orders.sort_unstable();
        orders.dedup();
        let mut candidates: Vec<_> = orders
            .into_iter()
            .filter_map(|order| {
                let vs = &self.entries[order];
                vs.best_match(hostname)
                    .map(|p| (hosts::specificity(p), order, vs))
            })
            .collect();
        candidates.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut ranked = candidates.into_iter().map(|(_, _, vs)| vs);
        Selection {
            winner: ranked.next(),
            shadowed: ranked.collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{config, sidecar};

    fn vs(name: &str, created: &str, hosts: &str, gateways: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"}}\nspec: {{hosts: {hosts}, gateways: {gateways}, http: [{{route: [{{destination: {{host: reviews}}}}]}}]}}\n---\n"
        )
    }

    /// The host index finds exactly what a scan of every entry finds, in
    /// the same order, over random meshes (wildcard and exact hosts, many
    /// namespaces) and every hostname they route.
    #[test]
    fn indexed_selection_equals_a_scan_of_every_entry() {
        fn scan<'i, 'a>(index: &'i VirtualServiceIndex<'a>, hostname: &str) -> Vec<&'i str> {
            let mut candidates: Vec<_> = index
                .entries
                .iter()
                .enumerate()
                .filter_map(|(order, vs)| {
                    vs.best_match(hostname)
                        .map(|p| (hosts::specificity(p), order, vs))
                })
                .collect();
            candidates.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
            candidates
                .into_iter()
                .map(|(_, _, vs)| vs.object.meta.name.as_str())
                .collect()
        }
        let mut compared = 0;
        for seed in 0..60 {
            let m = crate::test_support::random_mesh(seed);
            for namespace in ["default", "other"] {
                let index =
                    VirtualServiceIndex::new(&m.config, &sidecar(namespace), "cluster.local");
                let hostnames = m.services.iter().map(|s| s.hostname.clone()).chain(
                    index
                        .entries
                        .iter()
                        .flat_map(|e| e.hosts.clone())
                        .map(|h| h.replace('*', "x")),
                );
                for hostname in hostnames {
                    let selection = index.select(&hostname);
                    let found: Vec<&str> = selection
                        .winner
                        .into_iter()
                        .chain(selection.shadowed)
                        .map(|vs| vs.object.meta.name.as_str())
                        .collect();
                    assert_eq!(
                        found,
                        scan(&index, &hostname.to_ascii_lowercase()),
                        "seed {seed}, {hostname}"
                    );
                    compared += usize::from(!found.is_empty());
                }
            }
        }
        assert!(
            compared > 100,
            "the meshes route too few hosts to compare: {compared}"
        );
    }

    #[test]
    fn oldest_virtual_service_wins_and_the_rest_are_shadowed() {
        let text = vs("b", "2024-02-01T00:00:00Z", "[reviews]", "[]")
            + &vs("a", "2024-01-01T00:00:00Z", "[reviews]", "[]");
        let objects = config(&text);
        let index = VirtualServiceIndex::new(&objects, &sidecar("default"), "cluster.local");
        let host = "reviews.default.svc.cluster.local";
        let selection = index.select(host);
        assert_eq!(selection.winner.unwrap().object.meta.name, "a");
        let diags = selection.diagnostics(host);
        assert_eq!(diags.len(), 1);
        assert_eq!(diags[0].kind, DiagnosticKind::ShadowedVirtualService);
        assert_eq!(diags[0].object, "VirtualService default/b");
    }

    #[test]
    fn exact_hosts_beat_older_wildcards() {
        let text = vs(
            "wild",
            "2024-01-01T00:00:00Z",
            "[\"*.svc.cluster.local\"]",
            "[]",
        ) + &vs("exact", "2024-02-01T00:00:00Z", "[reviews]", "[]");
        let objects = config(&text);
        let index = VirtualServiceIndex::new(&objects, &sidecar("default"), "cluster.local");
        let selection = index.select("reviews.default.svc.cluster.local");
        assert_eq!(selection.winner.unwrap().object.meta.name, "exact");
        assert_eq!(
            index
                .select("ratings.default.svc.cluster.local")
                .winner
                .unwrap()
                .object
                .meta
                .name,
            "wild"
        );
    }

    #[test]
    fn gateway_bound_virtual_services_skip_sidecars() {
        let text = vs("gw", "2024-01-01T00:00:00Z", "[reviews]", "[my-gateway]")
            + &vs(
                "mesh",
                "2024-02-01T00:00:00Z",
                "[ratings]",
                "[my-gateway, mesh]",
            );
        let objects = config(&text);
        let index = VirtualServiceIndex::new(&objects, &sidecar("default"), "cluster.local");
        assert!(
            index
                .select("reviews.default.svc.cluster.local")
                .winner
                .is_none()
        );
        assert!(
            index
                .select("ratings.default.svc.cluster.local")
                .winner
                .is_some()
        );
    }
}
