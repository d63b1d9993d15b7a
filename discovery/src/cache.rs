//! The snapshot cache: one built snapshot per distinct proxy view and mesh
//! generation. Streams never translate; they ask the cache, and proxies with
//! the same view share the same `Arc<Snapshot>`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use pilotfish_translate::{
    Context, Diagnostic, DiagnosticKind, ProxyView, diagnostics, endpoints, listeners, translate,
};

use crate::mesh_store::MeshGeneration;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

#[derive(Debug)]
struct Entry {
    snapshot: Arc<Snapshot>,
    diagnostics: Arc<Vec<Diagnostic>>,
}

pub struct SnapshotCache {
    entries: DashMap<ProxyView, Entry>,
    metrics: Arc<Metrics>,
}

impl SnapshotCache {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        SnapshotCache {
            entries: DashMap::new(),
            metrics,
        }
    }

    /// The snapshot of `view` for `generation`, built on first use.
    pub fn snapshot(&self, generation: &MeshGeneration, view: &ProxyView) -> Arc<Snapshot> {
        if let Some(entry) = self.entries.get(view)
            && entry.snapshot.mesh_version == generation.version
        {
            return entry.snapshot.clone();
        }
        // The entry lock serialises builders of one view: built once, not per stream.
        let mut entry = self.entries.entry(view.clone()).or_insert_with(|| Entry {
            snapshot: Arc::new(Snapshot::default()),
            diagnostics: Arc::default(),
        });
        if entry.snapshot.mesh_version == generation.version && generation.version != 0 {
            return entry.snapshot.clone();
        }
        let started = Instant::now();
        let previous_version = entry.snapshot.mesh_version;
        let previous_diagnostics = entry.diagnostics.clone();
        if generation.endpoints_only
            && previous_version > 0
            && previous_version + 1 == generation.version
        {
            rebuild_endpoints(&mut entry, generation, view);
        } else {
            let translation = translate(&generation.mesh, view);
            let previous = Some(entry.snapshot.as_ref()).filter(|s| s.mesh_version > 0);
            entry.snapshot = Arc::new(Snapshot::build(
                generation.version,
                translation.resources,
                previous,
            ));
            entry.diagnostics = Arc::new(translation.diagnostics);
        }
        self.metrics.observe_translation(started.elapsed());
        let (snapshot, diagnostics) = (entry.snapshot.clone(), entry.diagnostics.clone());
        // Release the entry before reading the others (same map).
        drop(entry);
        self.report(
            view,
            generation.version,
            &previous_diagnostics,
            &diagnostics,
        );
        snapshot
    }

    /// Logs what a view's new snapshot found that its previous snapshot and
    /// the other views of this generation did not, and recounts the
    /// diagnostic gauges. Views are translated when a proxy first asks, so
    /// reporting here covers every kind of proxy (a gateway's conflicts are
    /// found only in a gateway's view).
    fn report(
        &self,
        view: &ProxyView,
        version: u64,
        previous: &[Diagnostic],
        current: &[Diagnostic],
    ) {
        let mut others = BTreeSet::new();
        let mut all = BTreeSet::new();
        for entry in self.entries.iter() {
            if entry.snapshot.mesh_version != version {
                continue;
            }
            all.extend(entry.diagnostics.iter().cloned());
            if entry.key() != view {
                others.extend(entry.diagnostics.iter().cloned());
            }
        }
        for d in current
            .iter()
            .filter(|d| !previous.contains(d) && !others.contains(*d))
        {
            tracing::warn!(kind = ?d.kind, object = %d.object, field = ?d.field, "{}", d.message);
        }
        let conflicts = all
            .iter()
            .filter(|d| d.kind == DiagnosticKind::ListenerConflict)
            .count();
        self.metrics.listener_conflicts.set(conflicts as i64);
        self.metrics.translation_diagnostics.set(all.len() as i64);
    }

    /// Drops snapshots older than the previous generation; called when a
    /// generation is published, so views nobody uses any more do not pile up,
    /// while views in use keep one older snapshot to reuse encodings from.
    pub fn prune(&self, keep_from_version: u64) {
        self.entries
            .retain(|_, e| e.snapshot.mesh_version >= keep_from_version);
    }

    /// Every translation diagnostic of the current generation, across views.
    pub fn diagnostics(&self, current_version: u64) -> Vec<Diagnostic> {
        let mut all = BTreeSet::new();
        for entry in self.entries.iter() {
            if entry.snapshot.mesh_version == current_version {
                all.extend(entry.diagnostics.iter().cloned());
            }
        }
        all.into_iter().collect()
    }

    pub fn views(&self) -> usize {
        self.entries.len()
    }
}

/// Endpoints-only generation: rebuild EDS and LDS (VIP-less services are
/// matched by endpoint address), share clusters and routes, and refresh the
/// diagnostics that listener building produces.
fn rebuild_endpoints(entry: &mut Entry, generation: &MeshGeneration, view: &ProxyView) {
    let ctx = Context::new(&generation.mesh, view);
    let mut listener_diagnostics = Vec::new();
    let listeners = listeners::build(&ctx, &mut listener_diagnostics);
    let endpoints = endpoints::build(&ctx);
    entry.snapshot = Arc::new(Snapshot::with_endpoints(
        generation.version,
        &entry.snapshot,
        endpoints,
        listeners,
    ));
    let mut diagnostics: Vec<Diagnostic> = entry
        .diagnostics
        .iter()
        .filter(|d| !is_listener_diagnostic(d))
        .cloned()
        .collect();
    diagnostics.extend(listener_diagnostics);
    diagnostics::normalize(&mut diagnostics);
    entry.diagnostics = Arc::new(diagnostics);
}

fn is_listener_diagnostic(d: &Diagnostic) -> bool {
    matches!(
        d.kind,
        DiagnosticKind::ListenerConflict | DiagnosticKind::Unreachable
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pilotfish_registries::{
        Endpoint, Health, Protocol, RegistryKind, Resolution, Service, ServicePort,
    };
    use pilotfish_translate::MeshState;

    use super::*;
    use crate::snapshot::content_version;
    use crate::xds_types::XdsType;

    fn mesh(endpoint_ips: &[&str]) -> Arc<MeshState> {
        let service = |host: &str, protocol| Service {
            hostname: host.into(),
            namespace: "default".into(),
            vips: vec![],
            ports: vec![ServicePort {
                name: "p".into(),
                port: 9080,
                protocol,
            }],
            registry: RegistryKind::Consul,
            created: None,
            resolution: Resolution::Static,
            mesh_external: false,
            export_to: vec![],
        };
        let endpoints = endpoint_ips
            .iter()
            .map(|ip| Endpoint {
                address: ip.to_string(),
                port: 9080,
                service_port: 9080,
                labels: BTreeMap::new(),
                locality: None,
                health: Health::Healthy,
                weight: None,
            })
            .collect::<Vec<_>>();
        Arc::new(MeshState {
            services: vec![
                service("db.service.consul", Protocol::Tcp),
                service("web.service.consul", Protocol::Http),
            ],
            endpoints: BTreeMap::from([
                ("db.service.consul".to_string(), endpoints.clone()),
                ("web.service.consul".to_string(), endpoints),
            ]),
            ..Default::default()
        })
    }

    fn versions(s: &Snapshot) -> Vec<String> {
        XdsType::ALL
            .iter()
            .map(|t| content_version(&s.of(*t).select(None)))
            .collect()
    }

    #[test]
    fn endpoints_only_generation_equals_a_full_rebuild_and_shares_clusters() {
        let cache = SnapshotCache::new(Arc::new(Metrics::new()));
        let view = ProxyView::default();
        let first = MeshGeneration {
            version: 1,
            mesh: mesh(&["10.0.0.1"]),
            ..Default::default()
        };
        let before = cache.snapshot(&first, &view);
        let second = MeshGeneration {
            version: 2,
            mesh: mesh(&["10.0.0.1", "10.0.0.2"]),
            endpoints_only: true,
            ..Default::default()
        };
        let partial = cache.snapshot(&second, &view);
        assert!(
            Arc::ptr_eq(&before.clusters, &partial.clusters),
            "clusters are shared, not rebuilt"
        );
        assert!(Arc::ptr_eq(&before.routes, &partial.routes));

        let full = SnapshotCache::new(Arc::new(Metrics::new())).snapshot(&second, &view);
        assert_eq!(versions(&partial), versions(&full));
        // The VIP-less TCP service is matched by endpoint address, so LDS changed too.
        assert_ne!(versions(&before)[2], versions(&partial)[2]);
    }
}
