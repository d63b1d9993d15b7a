//! Parts of a view's output that depend on less than the whole view, built
//! by the first view of a generation that needs them and shared by `Arc`
//! with every other view that would build the same: a service's virtual
//! host depends on the view's namespace, the DestinationRules that apply to
//! it and which of its VirtualService's matches apply, not on the rest of
//! the view's labels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::route::v3::VirtualHost;

use crate::diagnostics::Diagnostic;

/// What a sidecar's virtual host for one service on one port depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct VirtualHostKey {
    pub namespace: String,
    /// The config positions of the DestinationRules that apply to the view.
    pub destination_rules: Arc<[usize]>,
    pub hostname: String,
    pub port: u16,
    /// The config position of the VirtualService that routes the host.
    pub virtual_service: Option<usize>,
    /// Which of its HTTP matches apply to the view (sourceLabels,
    /// sourceNamespace, port), in order.
    pub applicable_matches: Vec<bool>,
}

/// A virtual host and what building it reported.
#[derive(Debug)]
pub(crate) struct VirtualHostPart {
    pub virtual_host: Arc<VirtualHost>,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, Default)]
pub(crate) struct SharedParts {
    virtual_hosts: Mutex<HashMap<VirtualHostKey, Arc<VirtualHostPart>>>,
    /// The catch-all virtual host, by the cluster unknown hosts go to.
    catch_alls: Mutex<HashMap<&'static str, Arc<VirtualHost>>>,
}

impl SharedParts {
    /// The part of `key`, built by `build` unless a view built it already.
    /// Building runs outside the lock; two views racing on one key build
    /// equal parts and the first one stored is kept.
    pub fn virtual_host(
        &self,
        key: VirtualHostKey,
        build: impl FnOnce() -> VirtualHostPart,
    ) -> Arc<VirtualHostPart> {
        if let Some(found) = lock(&self.virtual_hosts).get(&key) {
            return found.clone();
        }
        let built = Arc::new(build());
        lock(&self.virtual_hosts)
            .entry(key)
            .or_insert(built)
            .clone()
    }

    /// The catch-all virtual host for `fallback_cluster`.
    pub fn catch_all(
        &self,
        fallback_cluster: &'static str,
        build: impl FnOnce() -> VirtualHost,
    ) -> Arc<VirtualHost> {
        lock(&self.catch_alls)
            .entry(fallback_cluster)
            .or_insert_with(|| Arc::new(build()))
            .clone()
    }
}

/// A panic elsewhere leaves a usable map (parts are complete values), so
/// poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
