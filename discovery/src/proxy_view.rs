//! A proxy's view for one mesh generation: its node identity plus the ports
//! its own workload serves, found in the registries by the proxy's IP.

use std::collections::{BTreeMap, BTreeSet};

use pilotfish_translate::{InboundPort, MeshState, ProxyView};

use crate::node::ProxyIdentity;

/// Inbound ports by workload IP, built once per mesh generation so that
/// computing a proxy's view does not scan every endpoint.
#[derive(Debug, Default)]
pub struct InboundIndex {
    by_ip: BTreeMap<String, Vec<InboundPort>>,
}

impl InboundIndex {
    /// Ports that endpoints at each IP listen on, with their service port's
    /// protocol. One target port claimed with two protocols is sniffed
    /// rather than guessed.
    pub fn build(mesh: &MeshState) -> Self {
        let mut found: BTreeMap<&str, BTreeSet<InboundPort>> = BTreeMap::new();
        for service in mesh.services.iter() {
            let endpoints = mesh.endpoints.get(&service.hostname);
            for ep in endpoints.into_iter().flat_map(|list| list.iter()) {
                if let Some(port) = service.port(ep.service_port) {
                    found
                        .entry(ep.address.as_str())
                        .or_default()
                        .insert(InboundPort {
                            port: ep.port,
                            protocol: port.protocol,
                        });
                }
            }
        }
        let by_ip = found
            .into_iter()
            .map(|(ip, ports)| (ip.to_string(), merge_protocols(ports)))
            .collect();
        InboundIndex { by_ip }
    }

    pub fn ports(&self, ip: &str) -> &[InboundPort] {
        self.by_ip.get(ip).map(Vec::as_slice).unwrap_or_default()
    }
}

fn merge_protocols(ports: BTreeSet<InboundPort>) -> Vec<InboundPort> {
    let mut out: Vec<InboundPort> = Vec::new();
    for port in ports {
        match out.last_mut() {
            Some(last) if last.port == port.port => {
                last.protocol = pilotfish_registries::Protocol::Unknown
            }
            _ => out.push(port),
        }
    }
    out
}

pub fn view_for(identity: &ProxyIdentity, inbound: &InboundIndex) -> ProxyView {
    let mut view = identity.view.clone();
    if let Some(ip) = &identity.ip {
        view.inbound = inbound.ports(ip).to_vec();
    }
    view
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pilotfish_registries::{
        Endpoint, Health, Protocol, RegistryKind, Resolution, Service, ServicePort,
    };
    use pilotfish_translate::ProxyKind;

    use super::*;

    fn service(host: &str, protocol: Protocol) -> Service {
        Service {
            hostname: host.into(),
            namespace: "default".into(),
            vips: vec![],
            ports: vec![ServicePort {
                name: "p".into(),
                port: 9080,
                protocol,
            }],
            registry: RegistryKind::Consul,
            created: None,
            resolution: Resolution::Static,
            mesh_external: false,
            export_to: vec![],
        }
    }

    fn at(ip: &str, port: u16) -> Endpoint {
        Endpoint {
            address: ip.into(),
            port,
            service_port: 9080,
            labels: BTreeMap::new(),
            locality: None,
            health: Health::Healthy,
            weight: None,
        }
    }

    fn identity(ip: &str) -> ProxyIdentity {
        ProxyIdentity {
            node_id: format!("sidecar~{ip}~x.default~default.svc.cluster.local"),
            kind: ProxyKind::Sidecar,
            ip: Some(ip.into()),
            pod: Some("x".into()),
            id_namespace: Some("default".into()),
            service_account: None,
            view: ProxyView::default(),
        }
    }

    #[test]
    fn inbound_ports_come_from_endpoints_at_the_proxy_ip() {
        let mesh = MeshState::of(
            vec![
                service("a.service.consul", Protocol::Http),
                service("b.service.consul", Protocol::Tcp),
            ],
            BTreeMap::from([
                (
                    "a.service.consul".into(),
                    vec![at("10.0.0.1", 9080), at("10.0.0.2", 9080)],
                ),
                ("b.service.consul".into(), vec![at("10.0.0.1", 7000)]),
            ]),
            Vec::new(),
        );
        let view = view_for(&identity("10.0.0.1"), &InboundIndex::build(&mesh));
        assert_eq!(
            view.inbound,
            [
                InboundPort {
                    port: 7000,
                    protocol: Protocol::Tcp
                },
                InboundPort {
                    port: 9080,
                    protocol: Protocol::Http
                }
            ]
        );
        assert!(
            view_for(&identity("10.0.0.9"), &InboundIndex::build(&mesh))
                .inbound
                .is_empty()
        );
    }

    #[test]
    fn one_port_claimed_with_two_protocols_is_sniffed() {
        let mesh = MeshState::of(
            vec![
                service("a.service.consul", Protocol::Http),
                service("b.service.consul", Protocol::Tcp),
            ],
            BTreeMap::from([
                ("a.service.consul".into(), vec![at("10.0.0.1", 9080)]),
                ("b.service.consul".into(), vec![at("10.0.0.1", 9080)]),
            ]),
            Vec::new(),
        );
        let view = view_for(&identity("10.0.0.1"), &InboundIndex::build(&mesh));
        assert_eq!(
            view.inbound,
            [InboundPort {
                port: 9080,
                protocol: Protocol::Unknown
            }]
        );
    }
}
