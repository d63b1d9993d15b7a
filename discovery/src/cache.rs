//! The snapshot cache: one built snapshot per distinct proxy view and mesh
//! generation. Streams never translate; they ask the cache, and proxies with
//! the same view share the same `Arc<Snapshot>`.
//!
//! Clients choose their views, so the cache is bounded twice over: a view
//! is keyed only by labels that some config reads, and beyond `max_views`
//! the least recently used views are evicted.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dashmap::DashMap;
use pilotfish_translate::{Context, Diagnostic, DiagnosticKind, ProxyView, diagnostics, emit};

use crate::cluster_parts::ClusterParts;
use crate::mesh_store::MeshGeneration;
use crate::metrics::Metrics;
use crate::route_blocks::RouteBlocks;
use crate::snapshot::{SharedSets, Snapshot, ViewResources};

/// Views kept when no limit is given.
pub const DEFAULT_MAX_VIEWS: usize = 10_000;

/// One view's snapshot and what its translation found, replaced whole.
#[derive(Clone, Debug, Default)]
struct Built {
    snapshot: Arc<Snapshot>,
    diagnostics: Arc<Vec<Diagnostic>>,
}

/// A view's place in the cache. The map's own locks are held only to find
/// or add a slot, never while translating: the slot serialises builders of
/// its view, so each view is built once per generation however many
/// proxies ask.
#[derive(Debug, Default)]
struct Slot {
    built: Mutex<Built>,
    /// Held by the one builder of this view (on whatever thread builds).
    building: Mutex<()>,
    /// Held by an async asker while the build it started runs on the
    /// blocking pool; other async askers wait here without a thread.
    asking: tokio::sync::Mutex<()>,
    /// Tick of the cache clock at the last lookup, for LRU eviction.
    last_used: AtomicU64,
}

impl Slot {
    fn built(&self) -> Built {
        self.built.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn version(&self) -> u64 {
        self.built
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .snapshot
            .mesh_version
    }
}

pub struct SnapshotCache {
    entries: DashMap<ProxyView, Arc<Slot>>,
    /// Equal resource sets of different views, held once.
    shared: SharedSets,
    /// Clusters and endpoints, built once per clusters key and generation.
    parts: ClusterParts,
    /// Virtual hosts encoded once per generation for every view's routes.
    routes: RouteBlocks,
    /// Builds running at once: one per core. More would only interleave
    /// them, each holding its whole translation in memory meanwhile.
    builders: tokio::sync::Semaphore,
    metrics: Arc<Metrics>,
    max_views: usize,
    clock: AtomicU64,
}

impl SnapshotCache {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self::with_max_views(metrics, DEFAULT_MAX_VIEWS)
    }

    pub fn with_max_views(metrics: Arc<Metrics>, max_views: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        SnapshotCache {
            entries: DashMap::new(),
            shared: SharedSets::default(),
            parts: ClusterParts::default(),
            routes: RouteBlocks::default(),
            builders: tokio::sync::Semaphore::new(cores),
            metrics,
            max_views: max_views.max(1),
            clock: AtomicU64::new(0),
        }
    }

    /// The slot of `view` (projected), and whether it holds `version` built.
    fn slot(&self, view: &ProxyView) -> Arc<Slot> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let slot = match self.entries.get(view) {
            Some(slot) => slot.clone(),
            None => self.entries.entry(view.clone()).or_default().clone(),
        };
        slot.last_used.store(now, Ordering::Relaxed);
        slot
    }

    /// The snapshot of `view` for `generation`, built on first use, on the
    /// calling thread. Labels no config of the generation reads are left
    /// out of the key.
    pub fn snapshot(&self, generation: &MeshGeneration, view: &ProxyView) -> Arc<Snapshot> {
        let view = &generation.referenced_labels().project_view(view);
        let slot = self.slot(view);
        self.build(&slot, generation, view)
    }

    /// [`SnapshotCache::snapshot`] for async callers: a snapshot already
    /// built is returned at once; otherwise one asker per view builds it on
    /// the blocking pool (translation never runs on the async workers) and
    /// the others wait for it without holding a thread.
    pub async fn snapshot_async(
        self: &Arc<Self>,
        generation: &Arc<MeshGeneration>,
        view: &ProxyView,
    ) -> Arc<Snapshot> {
        let view = generation.referenced_labels().project_view(view);
        let slot = self.slot(&view);
        let ready = |slot: &Slot| {
            let built = slot.built();
            (built.snapshot.mesh_version == generation.version && generation.version != 0)
                .then_some(built.snapshot)
        };
        if let Some(snapshot) = ready(&slot) {
            return snapshot;
        }
        let _asking = slot.asking.lock().await;
        if let Some(snapshot) = ready(&slot) {
            return snapshot;
        }
        let Ok(_builder) = self.builders.acquire().await else {
            return slot.built().snapshot;
        };
        let (cache, generation) = (self.clone(), generation.clone());
        let task_slot = slot.clone();
        let built =
            tokio::task::spawn_blocking(move || cache.build(&task_slot, &generation, &view)).await;
        match built {
            Ok(snapshot) => snapshot,
            // The build panicked (a translator bug): serve what was there.
            Err(_) => slot.built().snapshot,
        }
    }

    /// Builds `slot`'s snapshot for `generation` unless a builder already
    /// did; reports and evicts afterwards.
    fn build(&self, slot: &Slot, generation: &MeshGeneration, view: &ProxyView) -> Arc<Snapshot> {
        let _building = slot.building.lock().unwrap_or_else(|p| p.into_inner());
        let previous = slot.built();
        if previous.snapshot.mesh_version == generation.version && generation.version != 0 {
            return previous.snapshot;
        }
        let started = Instant::now();
        let built = if generation.endpoints_only
            && previous.snapshot.mesh_version > 0
            && previous.snapshot.mesh_version + 1 == generation.version
        {
            self.rebuild_endpoints(&previous, generation, view)
        } else {
            self.translate(&previous, generation, view)
        };
        self.metrics.observe_translation(started.elapsed());
        *slot.built.lock().unwrap_or_else(|p| p.into_inner()) = built.clone();
        self.report(
            view,
            generation.version,
            &previous.diagnostics,
            &built.diagnostics,
        );
        self.evict_over_limit(generation.version, view);
        built.snapshot
    }

    /// A view's whole snapshot: its clusters and endpoints from the part
    /// it shares with every view of its clusters key, the rest translated
    /// for the view itself. The same resources and diagnostics as
    /// `pilotfish_translate::translate` gives for the view.
    fn translate(&self, previous: &Built, generation: &MeshGeneration, view: &ProxyView) -> Built {
        let part = self
            .parts
            .part(generation, view, &self.shared, &self.metrics);
        let resolved = generation.resolved();
        let ctx = Context::new(resolved, view);
        // The generation's own diagnostics travel with each view's, so that
        // reporting and the debug endpoint see them as they see a view's.
        let mut diagnostics = part.diagnostics.clone();
        diagnostics.extend(resolved.diagnostics().iter().cloned());
        let own = ViewResources {
            listeners: emit::listeners(&ctx, &mut diagnostics),
            routes: emit::route_parts(&ctx, &mut diagnostics),
            secrets: emit::secrets(&ctx, &mut diagnostics),
        };
        diagnostics::normalize(&mut diagnostics);
        let reuse = Some(previous.snapshot.as_ref()).filter(|s| s.mesh_version > 0);
        let snapshot = Snapshot::assemble(
            generation.version,
            (part.clusters.clone(), part.endpoints.clone()),
            own,
            reuse,
            &self.routes,
        );
        Built {
            snapshot: Arc::new(self.shared.share(snapshot)),
            diagnostics: Arc::new(diagnostics),
        }
    }

    /// Endpoints-only generation: the view takes its part's endpoints (in
    /// which only the changed services' assignments were rebuilt) and
    /// shares everything else with its previous snapshot; listeners are
    /// rebuilt (with their diagnostics) only when one of those services is
    /// VIP-less, as its listener matches its endpoints' addresses.
    fn rebuild_endpoints(
        &self,
        previous: &Built,
        generation: &MeshGeneration,
        view: &ProxyView,
    ) -> Built {
        let part = self
            .parts
            .part(generation, view, &self.shared, &self.metrics);
        let services = &generation.mesh.services;
        let vip_less = generation.changed_hosts.iter().any(|host| {
            services
                .binary_search_by(|s| s.hostname.as_str().cmp(host))
                .map_or(true, |i| services[i].vips.is_empty())
        });
        let mut diagnostics = previous.diagnostics.as_ref().clone();
        let listeners = vip_less.then(|| {
            let mut listener_diagnostics = Vec::new();
            let ctx = Context::new(generation.resolved(), view);
            let listeners = emit::listeners(&ctx, &mut listener_diagnostics);
            diagnostics.retain(|d| !is_listener_diagnostic(d));
            diagnostics.extend(listener_diagnostics);
            diagnostics::normalize(&mut diagnostics);
            listeners
        });
        let snapshot = Snapshot::with_endpoints(
            generation.version,
            &previous.snapshot,
            part.endpoints.clone(),
            listeners,
        );
        Built {
            snapshot: Arc::new(self.shared.share(snapshot)),
            diagnostics: Arc::new(diagnostics),
        }
    }

    /// Evicts views until at most `max_views` remain: least recently used
    /// first among views not of the current generation, then among all.
    /// `keep` (the view just built) is never evicted.
    fn evict_over_limit(&self, current_version: u64, keep: &ProxyView) {
        while self.entries.len() > self.max_views {
            let victim = self
                .entries
                .iter()
                .filter(|e| e.key() != keep)
                .min_by_key(|e| {
                    let current = e.version() == current_version;
                    (current, e.last_used.load(Ordering::Relaxed))
                })
                .map(|e| e.key().clone());
            let Some(victim) = victim else { break };
            if self.entries.remove(&victim).is_some() {
                self.metrics.view_cache_evictions.inc();
            }
        }
        self.metrics.views.set(self.entries.len() as i64);
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
            let built = entry.built();
            if built.snapshot.mesh_version != version {
                continue;
            }
            all.extend(built.diagnostics.iter().cloned());
            if entry.key() != view {
                others.extend(built.diagnostics.iter().cloned());
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
        self.entries.retain(|_, e| e.version() >= keep_from_version);
        self.parts.prune(keep_from_version);
        self.metrics.views.set(self.entries.len() as i64);
    }

    /// Every translation diagnostic of the current generation, across views.
    pub fn diagnostics(&self, current_version: u64) -> Vec<Diagnostic> {
        let mut all = BTreeSet::new();
        for entry in self.entries.iter() {
            let built = entry.built();
            if built.snapshot.mesh_version == current_version {
                all.extend(built.diagnostics.iter().cloned());
            }
        }
        all.into_iter().collect()
    }

    pub fn views(&self) -> usize {
        self.entries.len()
    }
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
        Arc::new(MeshState::of(
            vec![
                service("db.service.consul", Protocol::Tcp),
                service("web.service.consul", Protocol::Http),
            ],
            BTreeMap::from([
                ("db.service.consul".to_string(), endpoints.clone()),
                ("web.service.consul".to_string(), endpoints),
            ]),
            Vec::new(),
        ))
    }

    fn versions(s: &Snapshot) -> Vec<String> {
        XdsType::ALL
            .iter()
            .map(|t| s.of(*t).selection_version(None))
            .collect()
    }

    #[test]
    fn views_told_apart_by_source_labels_share_one_build_of_clusters_and_endpoints() {
        let metrics = Arc::new(Metrics::new());
        let cache = SnapshotCache::new(metrics.clone());
        let generation = generation(1, BY_CALLER);
        let selected = cache.snapshot(&generation, &labelled(&[("app", "batch"), ("pod", "b-1")]));
        let other = cache.snapshot(&generation, &labelled(&[("app", "web"), ("pod", "w-1")]));
        let another = cache.snapshot(&generation, &labelled(&[("app", "cron"), ("pod", "c-1")]));
        assert!(Arc::ptr_eq(&selected.clusters, &other.clusters));
        assert!(Arc::ptr_eq(&selected.endpoints, &other.endpoints));
        assert_ne!(
            versions(&selected)[3],
            versions(&other)[3],
            "the selected view has routes of its own"
        );
        // Values no rule selects, even of a key one reads: one view, one snapshot.
        assert!(Arc::ptr_eq(&other, &another));
        assert_eq!((cache.views(), cache.parts.len()), (2, 1));
        assert_eq!(
            metrics.cluster_part_builds.get(),
            1,
            "one build for both views"
        );
    }

    #[test]
    fn a_snapshot_from_shared_parts_equals_the_full_translation_of_its_view() {
        let generation = generation(1, BY_CALLER);
        let cache = SnapshotCache::new(Arc::new(Metrics::new()));
        let mut expected_diagnostics = BTreeSet::new();
        for view in [
            labelled(&[("app", "batch")]),
            labelled(&[("app", "web")]),
            ProxyView::default(),
        ] {
            let shared = cache.snapshot(&generation, &view);
            let full = pilotfish_translate::translate(&generation.mesh, &view);
            expected_diagnostics.extend(full.diagnostics.iter().cloned());
            let full = Snapshot::build(1, full.resources, None);
            assert_eq!(versions(&shared), versions(&full), "{view:?}");
        }
        let diagnostics: BTreeSet<_> = cache.diagnostics(1).into_iter().collect();
        assert_eq!(diagnostics, expected_diagnostics);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_async_askers_of_one_view_share_one_build_made_off_the_workers() {
        let metrics = Arc::new(Metrics::new());
        let cache = Arc::new(SnapshotCache::new(metrics.clone()));
        let generation = Arc::new(MeshGeneration {
            version: 1,
            mesh: mesh(&["10.0.0.1", "10.0.0.2"]),
            ..Default::default()
        });
        let askers: Vec<_> = (0..64)
            .map(|_| {
                let (cache, generation) = (cache.clone(), generation.clone());
                tokio::spawn(async move {
                    cache
                        .snapshot_async(&generation, &ProxyView::default())
                        .await
                })
            })
            .collect();
        let mut snapshots = Vec::new();
        for asker in askers {
            snapshots.push(asker.await.expect("asker"));
        }
        assert!(snapshots.iter().all(|s| Arc::ptr_eq(s, &snapshots[0])));
        let text = metrics.encode();
        assert!(
            text.contains("pilotfish_translation_duration_seconds_count 1\n"),
            "translated more than once: {text}"
        );
    }

    /// Snapshots of one view: before, after an endpoints-only generation
    /// changing `hosts`, and the same generation translated in full.
    fn endpoint_change(
        before: Arc<MeshState>,
        after: Arc<MeshState>,
        hosts: &[&str],
    ) -> (Arc<Snapshot>, Arc<Snapshot>, Arc<Snapshot>) {
        let cache = SnapshotCache::new(Arc::new(Metrics::new()));
        let view = ProxyView::default();
        let first = MeshGeneration {
            version: 1,
            mesh: before,
            ..Default::default()
        };
        let before = cache.snapshot(&first, &view);
        let second = MeshGeneration {
            version: 2,
            mesh: after,
            endpoints_only: true,
            changed_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..Default::default()
        };
        let scoped = cache.snapshot(&second, &view);
        let full = SnapshotCache::new(Arc::new(Metrics::new())).snapshot(&second, &view);
        (before, scoped, full)
    }

    #[test]
    fn endpoints_only_generation_equals_a_full_rebuild_and_shares_clusters() {
        let (before, partial, full) = endpoint_change(
            mesh(&["10.0.0.1"]),
            mesh(&["10.0.0.1", "10.0.0.2"]),
            &["db.service.consul", "web.service.consul"],
        );
        assert!(
            Arc::ptr_eq(&before.clusters, &partial.clusters),
            "clusters are shared, not rebuilt"
        );
        assert!(Arc::ptr_eq(&before.routes, &partial.routes));
        assert_eq!(versions(&partial), versions(&full));
        // The VIP-less TCP service is matched by endpoint address, so LDS changed too.
        assert_ne!(versions(&before)[2], versions(&partial)[2]);
    }

    #[test]
    fn an_endpoint_change_of_a_service_with_a_vip_rebuilds_only_its_assignments() {
        let with_vips = |web_ips: &[&str]| {
            let mut mesh = (*mesh(&["10.0.0.1"])).clone();
            for service in Arc::make_mut(&mut mesh.services) {
                service.vips = vec!["240.0.0.1".parse().expect("ip")];
            }
            let web = super::tests::mesh(web_ips).endpoints["web.service.consul"].clone();
            mesh.endpoints.insert("web.service.consul".into(), web);
            Arc::new(mesh)
        };
        let (before, after, full) = endpoint_change(
            with_vips(&["10.0.0.1"]),
            with_vips(&["10.0.0.1", "10.0.0.9"]),
            &["web.service.consul"],
        );
        assert!(Arc::ptr_eq(&before.listeners, &after.listeners));
        let db = "outbound|9080||db.service.consul";
        let web = "outbound|9080||web.service.consul";
        assert!(Arc::ptr_eq(
            &before.endpoints.resources[db],
            &after.endpoints.resources[db]
        ));
        assert_ne!(
            before.endpoints.version(web),
            after.endpoints.version(web),
            "web's assignment has the new endpoint"
        );
        assert_eq!(versions(&after), versions(&full));
    }

    /// Routes web's callers by their `app` label.
    const BY_CALLER: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-by-caller, namespace: default}
spec:
  hosts: [web.service.consul]
  http:
  - match: [{sourceLabels: {app: batch}}]
    route: [{destination: {host: db.service.consul}}]
  - route: [{destination: {host: web.service.consul}}]
"#;

    fn generation(version: u64, config: &str) -> MeshGeneration {
        let loaded = pilotfish_crds::load_yaml("test.yaml", config, "default");
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let mut mesh = (*mesh(&["10.0.0.1"])).clone();
        mesh.config = Arc::new(loaded.objects);
        MeshGeneration {
            version,
            mesh: Arc::new(mesh),
            ..Default::default()
        }
    }

    /// A VirtualService per `app` value, each routing that caller on its
    /// own: every such caller is a view of its own.
    fn callers_each_with_a_route(apps: &[&str]) -> String {
        apps.iter()
            .map(|app| {
                format!(
                    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: for-{app}, namespace: default}}\nspec:\n  hosts: [web.service.consul]\n  http:\n  - match: [{{sourceLabels: {{app: {app}}}}}]\n    route: [{{destination: {{host: db.service.consul}}}}]\n"
                )
            })
            .collect::<Vec<_>>()
            .join("---\n")
    }

    fn labelled(labels: &[(&str, &str)]) -> ProxyView {
        ProxyView {
            namespace: "default".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn views_differing_only_in_labels_no_config_reads_share_a_snapshot() {
        let metrics = Arc::new(Metrics::new());
        let cache = SnapshotCache::new(metrics.clone());
        let generation = generation(1, BY_CALLER);
        let a = cache.snapshot(&generation, &labelled(&[("app", "web"), ("pod", "a-1")]));
        let b = cache.snapshot(&generation, &labelled(&[("app", "web"), ("pod", "b-2")]));
        assert!(
            Arc::ptr_eq(&a, &b),
            "the unread `pod` label is not part of the key"
        );
        let batch = cache.snapshot(&generation, &labelled(&[("app", "batch"), ("pod", "c")]));
        assert!(!Arc::ptr_eq(&a, &batch), "`app` is read by sourceLabels");
        assert_ne!(versions(&a), versions(&batch));
        assert_eq!(cache.views(), 2);
        assert_eq!(metrics.views.get(), 2);
    }

    #[test]
    fn beyond_max_views_evicts_older_generations_first_then_least_recently_used() {
        let metrics = Arc::new(Metrics::new());
        let cache = SnapshotCache::with_max_views(metrics.clone(), 3);
        let rules = callers_each_with_a_route(&["stale", "a", "b", "c", "d"]);
        let (old, current) = (generation(1, &rules), generation(2, &rules));
        let view = |app: &str| labelled(&[("app", app)]);
        cache.snapshot(&old, &view("stale"));
        cache.snapshot(&current, &view("a"));
        cache.snapshot(&current, &view("b"));
        // `stale` was used least recently but `a` before `b`: a new view
        // evicts the old generation's view although it is not the LRU one.
        cache.snapshot(&old, &view("stale"));
        cache.snapshot(&current, &view("c"));
        assert_eq!(cache.views(), 3);
        assert_eq!(metrics.view_cache_evictions.get(), 1);
        let keys = |cache: &SnapshotCache| {
            let mut apps: Vec<String> = cache
                .entries
                .iter()
                .map(|e| e.key().labels["app"].clone())
                .collect();
            apps.sort();
            apps
        };
        assert_eq!(keys(&cache), ["a", "b", "c"]);
        // All of the current generation now: the least recently used goes.
        cache.snapshot(&current, &view("a"));
        cache.snapshot(&current, &view("d"));
        assert_eq!(keys(&cache), ["a", "c", "d"]);
        assert_eq!(metrics.view_cache_evictions.get(), 2);
        assert_eq!(metrics.views.get(), 3);
    }

    #[test]
    fn views_whose_proxies_left_are_pruned_with_their_generation() {
        let metrics = Arc::new(Metrics::new());
        let cache = SnapshotCache::new(metrics.clone());
        cache.snapshot(&generation(1, BY_CALLER), &labelled(&[("app", "batch")]));
        cache.snapshot(&generation(3, BY_CALLER), &labelled(&[]));
        cache.prune(2);
        assert_eq!(cache.views(), 1);
        assert_eq!(metrics.views.get(), 1);
    }
}
