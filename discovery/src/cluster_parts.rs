//! Clusters and endpoints shared between views. They depend on a proxy's
//! labels only through DestinationRule workloadSelectors
//! ([`ReferencedLabels::project_view_for_clusters`]), so views told apart
//! by route selectors alone (`sourceLabels`, Gateway selectors) build and
//! encode them once per generation, not once each: in a mesh where rules
//! select single deployments, most of each view's work (every cluster and
//! assignment of the mesh) is done once for all of them.
//!
//! [`ReferencedLabels::project_view_for_clusters`]: pilotfish_translate::ReferencedLabels::project_view_for_clusters

use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use pilotfish_translate::{Context, Diagnostic, ProxyView, emit};

use crate::mesh_store::MeshGeneration;
use crate::metrics::Metrics;
use crate::snapshot::{
    SharedSets, TypeResources, encode_clusters, encode_endpoints, patch_endpoints,
};
use crate::xds_types::XdsType;

/// One clusters key's encoded clusters and endpoints for one generation.
#[derive(Debug)]
pub struct ClusterPart {
    pub mesh_version: u64,
    pub clusters: Arc<TypeResources>,
    pub endpoints: Arc<TypeResources>,
    /// What building the clusters found (endpoints report nothing).
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Default)]
struct PartSlot {
    built: Mutex<Option<Arc<ClusterPart>>>,
    /// Held by the one builder of this key: others wait and share its part.
    building: Mutex<()>,
}

/// The parts of the current (and previous) generations, by clusters key.
#[derive(Debug, Default)]
pub struct ClusterParts {
    entries: DashMap<ProxyView, Arc<PartSlot>>,
}

impl ClusterParts {
    /// The clusters and endpoints of `view` (any view: it is projected to
    /// its clusters key here) for `generation`, built by the first view of
    /// the key to ask. An endpoints-only generation patches the previous
    /// generation's part: only the changed hosts' assignments are built.
    pub fn part(
        &self,
        generation: &MeshGeneration,
        view: &ProxyView,
        shared: &SharedSets,
        metrics: &Metrics,
    ) -> Arc<ClusterPart> {
        let key = generation
            .referenced_labels()
            .project_view_for_clusters(view);
        let slot = match self.entries.get(&key) {
            Some(slot) => slot.clone(),
            None => self.entries.entry(key.clone()).or_default().clone(),
        };
        let _building = slot.building.lock().unwrap_or_else(|p| p.into_inner());
        let previous = slot.built.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(part) = previous
            .as_ref()
            .filter(|p| p.mesh_version == generation.version && generation.version != 0)
        {
            return part.clone();
        }
        metrics.cluster_part_builds.inc();
        let ctx = Context::new(generation.resolved(), &key);
        let patchable = previous.as_ref().filter(|p| {
            generation.endpoints_only
                && p.mesh_version > 0
                && p.mesh_version + 1 == generation.version
        });
        let part = match patchable {
            Some(previous) => {
                let hosts = &generation.changed_hosts;
                let fresh = emit::endpoints_for_hosts(&ctx, hosts);
                ClusterPart {
                    mesh_version: generation.version,
                    clusters: previous.clusters.clone(),
                    endpoints: Arc::new(patch_endpoints(&previous.endpoints, hosts, fresh)),
                    diagnostics: previous.diagnostics.clone(),
                }
            }
            None => {
                let mut diagnostics = Vec::new();
                let built_clusters = emit::clusters(&ctx, &mut diagnostics);
                let built_endpoints = emit::endpoints(&ctx);
                // Equal resources keep the last generation's encodings (and versions).
                let reuse = previous.as_deref();
                ClusterPart {
                    mesh_version: generation.version,
                    clusters: Arc::new(encode_clusters(
                        built_clusters,
                        reuse.map(|p| &*p.clusters),
                    )),
                    endpoints: Arc::new(encode_endpoints(
                        built_endpoints,
                        reuse.map(|p| &*p.endpoints),
                    )),
                    diagnostics,
                }
            }
        };
        let part = Arc::new(ClusterPart {
            clusters: shared.share_set(XdsType::Cluster, part.clusters),
            endpoints: shared.share_set(XdsType::Endpoint, part.endpoints),
            ..part
        });
        *slot.built.lock().unwrap_or_else(|p| p.into_inner()) = Some(part.clone());
        part
    }

    /// Drops parts older than `keep_from_version` (with the views that used them).
    pub fn prune(&self, keep_from_version: u64) {
        self.entries.retain(|_, slot| {
            slot.built
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_none_or(|p| p.mesh_version >= keep_from_version)
        });
    }

    /// Clusters keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
