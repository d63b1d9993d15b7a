//! The snapshot cache: one built snapshot per distinct proxy view and mesh
//! generation. Streams never translate; they ask the cache, and proxies with
//! the same view share the same `Arc<Snapshot>`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use pilotfish_translate::{Diagnostic, ProxyView, translate};

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
        if entry.snapshot.mesh_version != generation.version || generation.version == 0 {
            let started = Instant::now();
            let translation = translate(&generation.mesh, view);
            let previous = Some(entry.snapshot.as_ref()).filter(|s| s.mesh_version > 0);
            entry.snapshot = Arc::new(Snapshot::build(
                generation.version,
                translation.resources,
                previous,
            ));
            entry.diagnostics = Arc::new(translation.diagnostics);
            self.metrics.observe_translation(started.elapsed());
        }
        entry.snapshot.clone()
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
