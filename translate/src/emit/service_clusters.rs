//! The outbound clusters a proxy needs: one per visible service port, plus
//! one per DestinationRule subset. Shared by CDS and EDS so both always agree
//! on the set of cluster names.

use pilotfish_crds::Subset;
use pilotfish_model::{Endpoint, Service, ServicePort};

use crate::emit::context::Context;
use crate::emit::policy::destination_rules::Sourced;
use crate::names;
use crate::visibility;

#[derive(Clone, Debug)]
pub struct ServiceCluster<'a> {
    pub name: String,
    pub service: &'a Service,
    pub port: &'a ServicePort,
    pub subset: Option<Sourced<'a, Subset>>,
}

impl<'a> ServiceCluster<'a> {
    pub fn subset_name(&self) -> Option<&'a str> {
        self.subset.as_ref().map(|s| s.value.name.as_str())
    }

    /// Endpoints of this service port that carry every subset label.
    pub fn endpoints(&self, ctx: &Context<'a>) -> Vec<&'a Endpoint> {
        let labels = self.subset.as_ref().map(|s| &s.value.labels);
        ctx.endpoints(&self.service.hostname)
            .iter()
            .filter(|ep| ep.service_port == self.port.port)
            .filter(|ep| labels.is_none_or(|l| visibility::labels_match(l, &ep.labels)))
            .collect()
    }
}

/// All service clusters for the proxy, sorted by name, names unique.
pub fn list<'a>(ctx: &Context<'a>) -> Vec<ServiceCluster<'a>> {
    let mut out = Vec::new();
    for service in ctx.services() {
        let rule = ctx.destination_rules.for_host(&service.hostname);
        for port in &service.ports {
            out.push(cluster(service, port, None));
            for subset in rule.map(|r| r.subsets.as_slice()).unwrap_or_default() {
                out.push(cluster(service, port, Some(subset.clone())));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

fn cluster<'a>(
    service: &'a Service,
    port: &'a ServicePort,
    subset: Option<Sourced<'a, Subset>>,
) -> ServiceCluster<'a> {
    let subset_name = subset.as_ref().map(|s| s.value.name.as_str());
    ServiceCluster {
        name: names::outbound_cluster(port.port, subset_name, &service.hostname),
        service,
        port,
        subset,
    }
}
