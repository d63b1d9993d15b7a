//! Every VirtualService of the generation, in precedence order (oldest
//! first, by creation time), its hosts resolved against its namespace and
//! indexed by host: decided once, whatever proxies ask.

use std::collections::HashMap;

use pilotfish_crds::{ConfigObject, ConfigSpec};

use crate::hosts;
use crate::rule_applicability::{self, RouteFor};

/// One VirtualService as stage 2 selects it.
#[derive(Clone, Debug)]
pub(crate) struct ResolvedVirtualService {
    /// Position in the mesh's config.
    pub config: usize,
    /// `spec.hosts`, resolved against the object's namespace.
    pub hosts: Vec<String>,
    /// Applies to sidecars (no `gateways`, or `mesh` among them).
    pub for_mesh: bool,
    /// Bound to at least one Gateway.
    pub for_gateways: bool,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct VirtualServiceTable {
    /// In precedence order.
    pub entries: Vec<ResolvedVirtualService>,
    /// Entries by each exact host they name, and the entries with a
    /// wildcard host: the only ones that can match a hostname.
    by_exact_host: HashMap<String, Vec<usize>>,
    with_wildcards: Vec<usize>,
}

impl VirtualServiceTable {
    pub fn new(config: &[ConfigObject], domain_suffix: &str) -> Self {
        let mut entries: Vec<(&ConfigObject, ResolvedVirtualService)> = config
            .iter()
            .enumerate()
            .filter_map(|(position, object)| {
                let ConfigSpec::VirtualService(spec) = &object.spec else {
                    return None;
                };
                let namespace = &object.meta.namespace;
                let entry = ResolvedVirtualService {
                    config: position,
                    hosts: spec
                        .hosts
                        .iter()
                        .map(|h| hosts::resolve(h, namespace, domain_suffix))
                        .collect(),
                    for_mesh: rule_applicability::binds(&spec.gateways, namespace, RouteFor::Mesh),
                    for_gateways: spec
                        .gateways
                        .iter()
                        .any(|g| rule_applicability::gateway_key(g, namespace).is_some()),
                };
                Some((object, entry))
            })
            .collect();
        entries.sort_by(|a, b| a.0.precedence().cmp(&b.0.precedence()));
        let entries: Vec<ResolvedVirtualService> = entries.into_iter().map(|(_, e)| e).collect();
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
        VirtualServiceTable {
            entries,
            by_exact_host,
            with_wildcards,
        }
    }

    /// Orders (positions in `entries`) of the entries that may match the
    /// lower-case `hostname`, ascending.
    pub fn candidates(&self, hostname: &str) -> Vec<usize> {
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
        orders
    }
}
