//! Everything the builders share for one proxy view: the services it can
//! see and the config indexes. Built once per translation.

use std::collections::BTreeMap;

use pilotfish_model::{Endpoint, Service};

use crate::emit::envoy::mesh_tls::MeshTls;
use crate::emit::policy::destination_rules::DestinationRuleIndex;
use crate::emit::sidecar::virtual_service_index::{BoundTo, VirtualServiceIndex};
use crate::mesh::{MeshState, OutboundTrafficPolicy};
use crate::names;
use crate::proxy::{InterceptionMode, ProxyView};
use crate::resolve::Resolved;
use crate::visibility;

pub struct Context<'a> {
    pub mesh: &'a MeshState,
    pub proxy: &'a ProxyView,
    /// The generation this view selects from.
    pub resolved: &'a Resolved,
    /// Visible services by hostname.
    services: BTreeMap<&'a str, &'a Service>,
    /// Hostnames by their lower-case form: config names hosts case-insensitively.
    lowercase: BTreeMap<String, &'a str>,
    pub destination_rules: DestinationRuleIndex<'a>,
    pub virtual_services: VirtualServiceIndex<'a>,
}

impl<'a> Context<'a> {
    pub fn new(resolved: &'a Resolved, proxy: &'a ProxyView) -> Self {
        let mesh = resolved.mesh();
        // Per hostname, the oldest service the view can see (the order was
        // decided by stage 1).
        let services: BTreeMap<&'a str, &'a Service> = resolved
            .services
            .by_host
            .iter()
            .filter_map(|(hostname, positions)| {
                let service = positions
                    .iter()
                    .filter_map(|p| mesh.services.get(*p))
                    .find(|s| {
                        visibility::is_exported(&s.export_to, &s.namespace, &proxy.namespace)
                    })?;
                Some((hostname.as_str(), service))
            })
            .collect();
        let lowercase = services
            .keys()
            .map(|h| (h.to_ascii_lowercase(), *h))
            .collect();
        Context {
            mesh,
            proxy,
            resolved,
            services,
            lowercase,
            destination_rules: DestinationRuleIndex::new(
                &resolved.destination_rules,
                &mesh.config,
                proxy,
            )
            .with_credentials(&mesh.credentials)
            .with_mesh_tls(proxy.workload_certificate.then(|| MeshTls {
                trust_domain: mesh.mesh.trust_domain.clone(),
            })),
            virtual_services: VirtualServiceIndex::new(
                &resolved.virtual_services,
                &mesh.config,
                &proxy.namespace,
                BoundTo::Mesh,
            ),
        }
    }

    /// The visible VirtualServices bound to Gateways (for gateway proxies).
    pub fn gateway_virtual_services(&self) -> VirtualServiceIndex<'a> {
        VirtualServiceIndex::new(
            &self.resolved.virtual_services,
            &self.mesh.config,
            &self.proxy.namespace,
            BoundTo::Gateways,
        )
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

    /// The addresses `service` is matched at for this view: its VIPs, or
    /// the one allocated to it when the proxy uses allocated addresses.
    /// Unspecified VIPs (0.0.0.0 would match everything) are left out.
    pub fn service_addresses(&self, service: &Service) -> Vec<std::net::IpAddr> {
        let vips: Vec<std::net::IpAddr> = service
            .vips
            .iter()
            .copied()
            .filter(|ip| !ip.is_unspecified())
            .collect();
        if !vips.is_empty() || !self.proxy.dns.auto_allocate {
            return vips;
        }
        self.resolved
            .addresses
            .of(&service.hostname)
            .map(std::net::IpAddr::V4)
            .into_iter()
            .collect()
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
