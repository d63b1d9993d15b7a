//! One stream's SDS resources when its proxy holds a workload certificate:
//! the view's secrets (gateway credentials, shared by the view) with its
//! identity's `default` and `ROOTCA` added. The merged set is built again
//! only when either side changes, so the protocol code diffs and versions
//! it like any other set (a renewal changes only `default`).

use std::sync::Arc;

use crate::security::workload_certificates::{Lease, WorkloadSecrets};
use crate::snapshot::TypeResources;

pub struct StreamSecrets {
    lease: Lease,
    merged: Option<Merged>,
}

struct Merged {
    view: Arc<TypeResources>,
    certificate: Arc<WorkloadSecrets>,
    set: Arc<TypeResources>,
}

impl StreamSecrets {
    pub fn new(lease: Lease) -> Self {
        StreamSecrets {
            lease,
            merged: None,
        }
    }

    /// `view`'s secrets with the identity's current certificate added.
    pub fn merge(&mut self, view: &Arc<TypeResources>) -> Arc<TypeResources> {
        let certificate = self.lease.current();
        if let Some(merged) = &self.merged
            && Arc::ptr_eq(&merged.view, view)
            && Arc::ptr_eq(&merged.certificate, &certificate)
        {
            return merged.set.clone();
        }
        let mut resources = view.resources.clone();
        // Istio's names: a credential cannot take them (those are
        // `kubernetes://<name>`), and the proxy's own would win anyway.
        resources.extend(
            certificate
                .resources
                .iter()
                .map(|(name, resource)| (name.clone(), resource.clone())),
        );
        let set = Arc::new(TypeResources::new(resources));
        self.merged = Some(Merged {
            view: view.clone(),
            certificate,
            set: set.clone(),
        });
        set
    }

    /// Resolves when the identity's certificate is renewed.
    pub fn renewed(&self) -> impl Future<Output = ()> + Send + 'static {
        self.lease.renewed()
    }

    /// The renewal was noticed (the next push sends it).
    pub fn mark_seen(&mut self) {
        self.lease.seen();
    }
}
