//! What EDS does not carry but an explanation shows: each endpoint's
//! workload labels, and a service name's address (the client resolves a
//! name before it connects; Envoy only sees the address).

use std::collections::BTreeMap;
use std::net::IpAddr;

use pilotfish_model::MeshState;

/// Workload labels by endpoint address and port.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointLabels(BTreeMap<(String, u16), BTreeMap<String, String>>);

impl EndpointLabels {
    pub fn get(&self, address: &str, port: u16) -> Option<&BTreeMap<String, String>> {
        self.0.get(&(address.to_string(), port))
    }
}

/// The labels of every endpoint the registries list.
pub fn endpoint_labels(mesh: &MeshState) -> EndpointLabels {
    let mut out = BTreeMap::new();
    for endpoint in mesh.endpoints.values().flat_map(|eps| eps.iter()) {
        out.entry((endpoint.address.trim().to_string(), endpoint.port))
            .or_insert_with(|| endpoint.labels.clone());
    }
    EndpointLabels(out)
}

/// The address a client in `namespace` reaches `host` at: the first VIP of
/// the service that name means there (`reviews`, `reviews.default`,
/// `reviews.default.svc`, or the full hostname).
pub fn service_address(
    mesh: &MeshState,
    host: &str,
    namespace: &str,
    domain_suffix: &str,
) -> Option<IpAddr> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let candidates = [
        host.clone(),
        format!("{host}.{namespace}.svc.{domain_suffix}"),
        format!("{host}.svc.{domain_suffix}"),
        format!("{host}.{domain_suffix}"),
    ];
    candidates.iter().find_map(|name| {
        mesh.services
            .iter()
            .find(|s| s.hostname.eq_ignore_ascii_case(name))
            .and_then(|s| s.vips.first().copied())
    })
}
