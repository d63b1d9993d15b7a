//! Everything the builders share for one proxy view: the services it can
//! see and the config indexes. Built once per translation.

use std::collections::BTreeMap;

use pilotfish_model::{Endpoint, Service};

use crate::claims::Claims;
use crate::destination_rules::DestinationRuleIndex;
use crate::mesh::{MeshState, OutboundTrafficPolicy};
use crate::names;
use crate::proxy::{InterceptionMode, ProxyView};
use crate::virtual_service_index::VirtualServiceIndex;
use crate::visibility;

pub struct Context<'a> {
    pub mesh: &'a MeshState,
    pub proxy: &'a ProxyView,
    /// Visible services by hostname.
    services: BTreeMap<&'a str, &'a Service>,
    /// Hostnames by their lower-case form: config names hosts case-insensitively.
    lowercase: BTreeMap<String, &'a str>,
    pub destination_rules: DestinationRuleIndex<'a>,
    pub virtual_services: VirtualServiceIndex<'a>,
}

impl<'a> Context<'a> {
    pub fn new(mesh: &'a MeshState, proxy: &'a ProxyView) -> Self {
        let suffix = mesh.mesh.domain_suffix.as_str();
        // One service per hostname; should a registry merge leave two, the
        // older wins.
        let mut claims: Claims<&'a str, &'a Service> = Claims::default();
        for service in mesh.services.iter() {
            if visibility::is_exported(&service.export_to, &service.namespace, &proxy.namespace) {
                let _ = claims.claim(service.hostname.as_str(), service);
            }
        }
        let services: BTreeMap<&'a str, &'a Service> = claims.into_holders().collect();
        let lowercase = services
            .keys()
            .map(|h| (h.to_ascii_lowercase(), *h))
            .collect();
        Context {
            mesh,
            proxy,
            services,
            lowercase,
            destination_rules: DestinationRuleIndex::new(&mesh.config, proxy, suffix)
                .with_credentials(&mesh.credentials),
            virtual_services: VirtualServiceIndex::new(&mesh.config, proxy, suffix),
        }
    }

    /// Visible services, sorted by hostname.
    pub fn services(&self) -> impl Iterator<Item = &'a Service> + '_ {
        self.services.values().copied()
    }

    /// The visible service of `hostname`, compared case-insensitively.
    pub fn service(&self, hostname: &str) -> Option<&'a Service> {
        self.services.get(hostname).copied().or_else(|| {
            let exact = self.lowercase.get(&hostname.to_ascii_lowercase())?;
            self.services.get(exact).copied()
        })
    }

    pub fn endpoints(&self, hostname: &str) -> &'a [Endpoint] {
        self.mesh
            .endpoints
            .get(hostname)
            .map(|endpoints| endpoints.as_slice())
            .unwrap_or_default()
    }

    pub fn domain_suffix(&self) -> &str {
        &self.mesh.mesh.domain_suffix
    }

    /// Where traffic for unknown destinations goes. Without interception
    /// there is no original destination to pass through to (it would be the
    /// proxy's own listener, a loop), so it is blocked.
    pub fn fallback_cluster(&self) -> &'static str {
        let blocked = self.mesh.mesh.outbound_traffic_policy == OutboundTrafficPolicy::RegistryOnly
            || self.proxy.interception == InterceptionMode::None;
        if blocked {
            names::BLACKHOLE_CLUSTER
        } else {
            names::PASSTHROUGH_CLUSTER
        }
    }
}
