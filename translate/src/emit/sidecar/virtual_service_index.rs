//! VirtualServices that apply to a sidecar, and which one routes each host.

use pilotfish_crds::{ConfigObject, ConfigSpec, VirtualServiceSpec};

use crate::diagnostics::{Diagnostic, DiagnosticKind};
use crate::hosts;
use crate::visibility;

use crate::resolve::virtual_services::VirtualServiceTable;

#[derive(Clone, Debug)]
pub struct IndexedVirtualService<'a> {
    /// Position in the mesh's config.
    pub position: usize,
    pub object: &'a ConfigObject,
    pub spec: &'a VirtualServiceSpec,
    /// `spec.hosts`, resolved against the object's namespace.
    pub hosts: &'a [String],
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

/// The VirtualServices one view sees, selected from the generation's
/// [`VirtualServiceTable`]: precedence and host resolution were decided
/// there once; a view only filters by binding and visibility.
#[derive(Clone, Debug, Default)]
pub struct VirtualServiceIndex<'a> {
    table: Option<&'a VirtualServiceTable>,
    /// The view's entries, by the table's order (`None`: not for this view).
    entries: Vec<Option<IndexedVirtualService<'a>>>,
}

/// Whom an index is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoundTo {
    /// Sidecars: VirtualServices with no gateways or with `mesh`.
    Mesh,
    /// Gateways: VirtualServices bound to at least one Gateway (which one is
    /// decided per gateway server).
    Gateways,
}

impl<'a> VirtualServiceIndex<'a> {
    pub(crate) fn new(
        table: &'a VirtualServiceTable,
        config: &'a [ConfigObject],
        proxy_namespace: &str,
        bound: BoundTo,
    ) -> Self {
        let entries = table
            .entries
            .iter()
            .map(|entry| {
                let object = config.get(entry.config)?;
                let ConfigSpec::VirtualService(spec) = &object.spec else {
                    return None;
                };
                let bound = match bound {
                    BoundTo::Mesh => entry.for_mesh,
                    BoundTo::Gateways => entry.for_gateways,
                };
                let visible = visibility::is_exported(
                    &spec.export_to,
                    &object.meta.namespace,
                    proxy_namespace,
                );
                (bound && visible).then_some(IndexedVirtualService {
                    position: entry.config,
                    object,
                    spec,
                    hosts: &entry.hosts,
                })
            })
            .collect();
        VirtualServiceIndex {
            table: Some(table),
            entries,
        }
    }

    /// The view's VirtualServices in precedence order.
    pub fn entries(&self) -> impl Iterator<Item = &IndexedVirtualService<'a>> {
        self.entries.iter().flatten()
    }

    /// Most specific host match wins, then the oldest object.
    pub fn select(&self, hostname: &str) -> Selection<'_, 'a> {
        let hostname = hostname.to_ascii_lowercase();
        let hostname = hostname.as_str();
        let orders = self
            .table
            .map(|t| t.candidates(hostname))
            .unwrap_or_default();
        let mut candidates: Vec<_> = orders
            .into_iter()
            .filter_map(|order| {
                let vs = self.entries.get(order)?.as_ref()?;
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
    use crate::test_support::config;

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
                .entries()
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
                let table = VirtualServiceTable::new(&m.config, "cluster.local");
                let index = VirtualServiceIndex::new(&table, &m.config, namespace, BoundTo::Mesh);
                let hostnames = m.services.iter().map(|s| s.hostname.clone()).chain(
                    index
                        .entries()
                        .flat_map(|e| e.hosts.to_vec())
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
        let table = VirtualServiceTable::new(&objects, "cluster.local");
        let index = VirtualServiceIndex::new(&table, &objects, "default", BoundTo::Mesh);
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
        let table = VirtualServiceTable::new(&objects, "cluster.local");
        let index = VirtualServiceIndex::new(&table, &objects, "default", BoundTo::Mesh);
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
        let table = VirtualServiceTable::new(&objects, "cluster.local");
        let index = VirtualServiceIndex::new(&table, &objects, "default", BoundTo::Mesh);
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
