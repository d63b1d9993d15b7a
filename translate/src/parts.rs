//! Parts of a view's output that depend on less than the whole view, built
//! by the first view of a generation that needs them and shared by `Arc`
//! with every other view that would build the same: a service's virtual
//! host depends on the view's namespace, the DestinationRules that apply to
//! it and which of its VirtualService's matches apply, not on the rest of
//! the view's labels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};

use crate::diagnostics::Diagnostic;

/// A route configuration whose virtual hosts are shared by `Arc` with
/// the other views of the generation that have the same ones.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfigParts {
    /// Everything but the virtual hosts.
    pub config: RouteConfiguration,
    pub virtual_hosts: Vec<Arc<VirtualHost>>,
}

impl RouteConfigParts {
    /// A configuration built whole (its virtual hosts owned by it alone).
    pub fn whole(mut config: RouteConfiguration) -> Self {
        let virtual_hosts = std::mem::take(&mut config.virtual_hosts)
            .into_iter()
            .map(Arc::new)
            .collect();
        RouteConfigParts {
            config,
            virtual_hosts,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The configuration as Envoy gets it.
    pub fn assemble(self) -> RouteConfiguration {
        let mut config = self.config;
        config.virtual_hosts = self
            .virtual_hosts
            .into_iter()
            .map(Arc::unwrap_or_clone)
            .collect();
        config
    }
}

/// What a sidecar's virtual host for one service on one port depends on.
/// Addresses stand for values the generation holds for its whole life.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct VirtualHostKey {
    /// The domains claimed on the port (the address of the generation's
    /// `ClaimedDomains`): they follow from the view's namespace, the port
    /// and the other services on it.
    pub claimed_domains: usize,
    /// The config positions of the DestinationRules that apply to the view.
    pub destination_rules: Arc<[usize]>,
    /// The service (its address in the generation's mesh state).
    pub service: usize,
    /// The config position of the VirtualService that routes the host.
    pub virtual_service: Option<usize>,
    /// Which of its HTTP matches apply to the view (sourceLabels,
    /// sourceNamespace, port), in order.
    pub applicable_matches: Vec<bool>,
}

/// What a sidecar's route configuration for one port depends on: the
/// services routed on the port (by address in the generation's state, in
/// precedence order) and, per service, what its virtual host depends on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RouteConfigKey {
    pub namespace: String,
    pub port: u16,
    pub fallback_cluster: &'static str,
    pub destination_rules: Arc<[usize]>,
    /// Per service: its address, its VirtualService's position and which
    /// of the VirtualService's matches apply.
    pub services: Vec<(usize, Option<usize>, Vec<bool>)>,
}

/// What the domains of a port's virtual hosts depend on: the view's
/// namespace and the services routed on the port, in precedence order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DomainsKey {
    pub namespace: String,
    pub port: u16,
    pub services: Vec<usize>,
}

/// Each service's domains (in the key's order; empty when older services
/// hold them all) and the conflicts found.
#[derive(Debug)]
pub(crate) struct ClaimedDomains {
    pub domains: Vec<Vec<String>>,
    pub diagnostics: Vec<Diagnostic>,
}

/// A route configuration and what building it reported.
#[derive(Debug)]
pub(crate) struct RouteConfigPart {
    pub route_config: RouteConfigParts,
    pub diagnostics: Vec<Diagnostic>,
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
    route_configs: Mutex<HashMap<RouteConfigKey, Arc<RouteConfigPart>>>,
    domains: Mutex<HashMap<DomainsKey, Arc<ClaimedDomains>>>,
    /// The catch-all virtual host, by the cluster unknown hosts go to.
    catch_alls: Mutex<HashMap<&'static str, Arc<VirtualHost>>>,
}

impl SharedParts {
    /// The virtual host of `key`, built by `build` unless a view built it
    /// already.
    pub fn virtual_host(
        &self,
        key: VirtualHostKey,
        build: impl FnOnce() -> VirtualHostPart,
    ) -> Arc<VirtualHostPart> {
        shared(&self.virtual_hosts, key, build)
    }

    /// The domains of `key`, claimed by `claim` unless a view did already.
    pub fn domains(
        &self,
        key: DomainsKey,
        claim: impl FnOnce() -> ClaimedDomains,
    ) -> Arc<ClaimedDomains> {
        shared(&self.domains, key, claim)
    }

    /// The route configuration of `key`, built by `build` unless a view
    /// built it already.
    pub fn route_config(
        &self,
        key: RouteConfigKey,
        build: impl FnOnce() -> RouteConfigPart,
    ) -> Arc<RouteConfigPart> {
        shared(&self.route_configs, key, build)
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

/// The value of `key` in `map`, built by `build` unless present. Building
/// runs outside the lock; two views racing on one key build equal values
/// and the first one stored is kept.
fn shared<K: Eq + std::hash::Hash, V>(
    map: &Mutex<HashMap<K, Arc<V>>>,
    key: K,
    build: impl FnOnce() -> V,
) -> Arc<V> {
    if let Some(found) = lock(map).get(&key) {
        return found.clone();
    }
    let built = Arc::new(build());
    lock(map).entry(key).or_insert(built).clone()
}

/// A panic elsewhere leaves a usable map (parts are complete values), so
/// poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
