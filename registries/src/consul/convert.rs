//! One Consul service (its `/v1/health/service/<name>` answer) → the model.
//!
//! - Hostname `<name>.<domain>` (see [`ConsulConfig::hostname`]), no VIPs,
//!   the configured namespace, static (EDS) resolution.
//! - One port. Consul instances each have their own port, so the service
//!   port is the most common instance port (ties: the lowest), with a
//!   warning when instances disagree; every instance keeps its own port as
//!   the endpoint's target port.
//! - Protocol from the instances' `ServiceMeta.protocol` (`Protocol::parse`
//!   names: http, http2, grpc, tcp, tls, https, mongo...). None declared →
//!   `Unknown` (sniffed), never TCP. An unknown name → `Unknown` and a
//!   warning naming the service.
//! - The port is named after its protocol in lower case (`http`, `grpc`,
//!   `tcp`, `unknown`...), so Istio's port-name convention gives back the
//!   same protocol.
//! - Instance address: `Service.Address`, else `Node.Address`; it must be an
//!   IP (EDS endpoints of a static cluster cannot be hostnames).
//! - Health: every check (node and service) `passing` → Healthy, anything
//!   else (warning, critical, maintenance) → Unhealthy.
//! - Labels from tags, see [`super::tags`].
//! - Consul Connect's own proxies and gateways (`Kind` set) are skipped.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::api::{HealthCheck, HealthEntry};
use super::config::ConsulConfig;
use super::tags::labels_from_tags;
use crate::model::{Endpoint, Health, Protocol, RegistryKind, Resolution, Service, ServicePort};

/// The model of one Consul service.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvertedService {
    /// `None` when no instance is usable and no port was known before: a
    /// service without a port cannot be described.
    pub service: Option<Service>,
    pub endpoints: Vec<Endpoint>,
    /// Problems worth an operator's attention, each naming the service.
    pub warnings: Vec<String>,
}

struct Instance {
    address: String,
    port: u16,
    protocol: Option<String>,
    entry_index: usize,
}

/// Converts one service's health entries. `previous_port` is the port
/// published last time: when every instance has gone (or, with
/// `passing_only`, is failing) the service keeps that port with no
/// endpoints, so clients get "no healthy upstream" rather than an unknown
/// host.
pub fn convert_service(
    config: &ConsulConfig,
    name: &str,
    entries: &[HealthEntry],
    previous_port: Option<&ServicePort>,
) -> ConvertedService {
    let hostname = config.hostname(name);
    let mut warnings = Vec::new();
    let mut instances = Vec::new();
    for (entry_index, entry) in entries.iter().enumerate() {
        let svc = &entry.service;
        if !svc.kind.is_empty() {
            continue;
        }
        let id = instance_name(entry);
        let address = if svc.address.trim().is_empty() {
            entry.node.address.trim()
        } else {
            svc.address.trim()
        };
        if address.parse::<IpAddr>().is_err() {
            warnings.push(format!(
                "consul service {name:?}: instance {id}: address {address:?} is not an IP address; instance skipped"
            ));
            continue;
        }
        let Some(port) = u16::try_from(svc.port).ok().filter(|p| *p != 0) else {
            warnings.push(format!(
                "consul service {name:?}: instance {id}: port {} is not a usable port; instance skipped",
                svc.port
            ));
            continue;
        };
        let protocol = svc
            .meta
            .get("protocol")
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty());
        instances.push(Instance {
            address: address.to_string(),
            port,
            protocol,
            entry_index,
        });
    }

    let service_port = if instances.is_empty() {
        match previous_port {
            Some(port) => port.clone(),
            None => {
                return ConvertedService {
                    service: None,
                    endpoints: Vec::new(),
                    warnings,
                };
            }
        }
    } else {
        let (port, ports) = most_common(instances.iter().map(|i| i.port));
        if ports.len() > 1 {
            warnings.push(format!(
                "consul service {name:?}: instances listen on different ports {}; the service port is {port} (the most common)",
                join(ports.keys())
            ));
        }
        let (declared, protocols) = most_common(instances.iter().map(|i| i.protocol.clone()));
        if protocols.len() > 1 {
            let names: Vec<String> = protocols
                .keys()
                .map(|p| p.clone().unwrap_or_else(|| "(none)".into()))
                .collect();
            warnings.push(format!(
                "consul service {name:?}: instances declare different protocols {}; using {} (the most common)",
                names.join(", "),
                declared.as_deref().unwrap_or("(none)")
            ));
        }
        let protocol = match declared.as_deref() {
            None => Protocol::Unknown,
            Some(p) => Protocol::parse(p).unwrap_or_else(|| {
                warnings.push(format!(
                    "consul service {name:?}: meta protocol {p:?} is not a known protocol (http, http2, grpc, tcp, tls, https, mongo, mysql, redis); port {port} is sniffed"
                ));
                Protocol::Unknown
            }),
        };
        ServicePort {
            name: protocol.as_str().to_ascii_lowercase(),
            port,
            protocol,
        }
    };

    let mut endpoints: Vec<Endpoint> = instances
        .iter()
        .map(|inst| {
            let entry = &entries[inst.entry_index];
            Endpoint {
                address: inst.address.clone(),
                port: inst.port,
                service_port: service_port.port,
                labels: labels_from_tags(&entry.service.tags),
                locality: None,
                health: health_of(&entry.checks),
                weight: None,
            }
        })
        .collect();
    endpoints.sort();
    endpoints.dedup();

    ConvertedService {
        service: Some(Service {
            hostname,
            namespace: config.namespace.clone(),
            vips: Vec::new(),
            ports: vec![service_port],
            registry: RegistryKind::Consul,
            created: None,
            resolution: Resolution::Static,
            mesh_external: false,
            export_to: Vec::new(),
        }),
        endpoints,
        warnings,
    }
}

/// Healthy only when every check passes; no checks at all is healthy (Consul
/// itself treats an unchecked instance as passing).
pub fn health_of(checks: &[HealthCheck]) -> Health {
    if checks
        .iter()
        .all(|c| c.status.eq_ignore_ascii_case("passing"))
    {
        Health::Healthy
    } else {
        Health::Unhealthy
    }
}

/// The most frequent value (ties: the smallest) and all counts.
fn most_common<T: Ord + Clone + Default>(
    values: impl Iterator<Item = T>,
) -> (T, BTreeMap<T, usize>) {
    let mut counts = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_insert(0usize) += 1;
    }
    let best = counts
        .iter()
        // max_by_key keeps the last maximum; iterate in reverse so that the
        // smallest value wins ties.
        .rev()
        .max_by_key(|(_, n)| **n)
        .map(|(v, _)| v.clone())
        .unwrap_or_default();
    (best, counts)
}

fn instance_name(entry: &HealthEntry) -> String {
    let id = if entry.service.id.is_empty() {
        &entry.service.service
    } else {
        &entry.service.id
    };
    format!("{id:?} on node {:?}", entry.node.node)
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::api::{AgentService, Node};
    use super::*;

    fn check(status: &str) -> HealthCheck {
        HealthCheck {
            check_id: "c".into(),
            status: status.into(),
            ..HealthCheck::default()
        }
    }

    fn entry(
        id: &str,
        address: &str,
        port: i64,
        tags: &[&str],
        protocol: Option<&str>,
    ) -> HealthEntry {
        HealthEntry {
            node: Node {
                node: "node-1".into(),
                address: "127.0.0.9".into(),
                datacenter: "dc1".into(),
            },
            service: AgentService {
                id: id.into(),
                service: "reviews".into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                address: address.into(),
                port,
                meta: protocol
                    .map(|p| BTreeMap::from([("protocol".to_string(), p.to_string())]))
                    .unwrap_or_default(),
                kind: String::new(),
            },
            checks: vec![check("passing")],
        }
    }

    fn convert(entries: &[HealthEntry]) -> ConvertedService {
        convert_service(&ConsulConfig::default(), "reviews", entries, None)
    }

    #[test]
    fn service_and_endpoints_from_instances() {
        let out = convert(&[
            entry(
                "r1",
                "127.0.0.11",
                9080,
                &["version|v1", "primary"],
                Some("http"),
            ),
            entry("r2", "127.0.0.12", 9080, &["version=v2"], Some("http")),
        ]);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let svc = out.service.expect("service");
        assert_eq!(svc.hostname, "reviews.service.consul");
        assert_eq!(svc.namespace, "default");
        assert!(svc.vips.is_empty());
        assert_eq!(svc.registry, RegistryKind::Consul);
        assert_eq!(
            svc.ports,
            [ServicePort {
                name: "http".into(),
                port: 9080,
                protocol: Protocol::Http
            }]
        );
        assert_eq!(out.endpoints.len(), 2);
        assert_eq!(out.endpoints[0].address, "127.0.0.11");
        assert_eq!(out.endpoints[0].labels["version"], "v1");
        assert!(!out.endpoints[0].labels.contains_key("primary"));
        assert_eq!(out.endpoints[1].labels["version"], "v2");
        assert_eq!(out.endpoints[1].service_port, 9080);
    }

    #[test]
    fn known_protocol_names() {
        for (meta, want) in [
            ("http", Protocol::Http),
            ("HTTP2", Protocol::Http2),
            ("grpc", Protocol::Grpc),
            ("tcp", Protocol::Tcp),
            ("mongo", Protocol::Tcp),
            ("tls", Protocol::Tls),
            ("https", Protocol::Tls),
        ] {
            let out = convert(&[entry("r1", "127.0.0.11", 9080, &[], Some(meta))]);
            let port = &out.service.expect("service").ports[0];
            assert_eq!(port.protocol, want, "meta {meta}");
            assert_eq!(port.name, want.as_str().to_ascii_lowercase());
            assert!(out.warnings.is_empty());
        }
    }

    #[test]
    fn missing_protocol_is_sniffed_not_tcp() {
        let out = convert(&[entry("r1", "127.0.0.11", 9080, &[], None)]);
        let port = &out.service.expect("service").ports[0];
        assert_eq!(port.protocol, Protocol::Unknown);
        assert_eq!(port.name, "unknown");
        assert_eq!(Protocol::from_port_name(&port.name), Protocol::Unknown);
        assert!(out.warnings.is_empty());
    }

    #[test]
    fn unknown_protocol_warns_naming_the_service() {
        let out = convert(&[entry("r1", "127.0.0.11", 9080, &[], Some("quic"))]);
        assert_eq!(
            out.service.expect("service").ports[0].protocol,
            Protocol::Unknown
        );
        assert_eq!(out.warnings.len(), 1);
        assert!(
            out.warnings[0].contains("\"reviews\""),
            "{}",
            out.warnings[0]
        );
        assert!(out.warnings[0].contains("\"quic\""), "{}", out.warnings[0]);
    }

    #[test]
    fn address_falls_back_to_node_address() {
        let out = convert(&[entry("r1", "", 9080, &[], None)]);
        assert_eq!(out.endpoints[0].address, "127.0.0.9");
    }

    #[test]
    fn non_ip_addresses_and_bad_ports_are_skipped_with_warnings() {
        let out = convert(&[
            entry("r1", "reviews.example.com", 9080, &[], None),
            entry("r2", "127.0.0.12", 0, &[], None),
            entry("r3", "127.0.0.13", 70000, &[], None),
            entry("r4", "127.0.0.14", 9080, &[], None),
        ]);
        assert_eq!(out.endpoints.len(), 1);
        assert_eq!(out.warnings.len(), 3, "{:?}", out.warnings);
        assert!(out.warnings.iter().all(|w| w.contains("\"reviews\"")));
    }

    #[test]
    fn health_requires_every_check_passing() {
        assert_eq!(health_of(&[]), Health::Healthy);
        assert_eq!(
            health_of(&[check("passing"), check("passing")]),
            Health::Healthy
        );
        assert_eq!(
            health_of(&[check("passing"), check("warning")]),
            Health::Unhealthy
        );
        assert_eq!(health_of(&[check("critical")]), Health::Unhealthy);

        let mut sick = entry("r2", "127.0.0.12", 9080, &[], None);
        sick.checks.push(check("critical"));
        let out = convert(&[entry("r1", "127.0.0.11", 9080, &[], None), sick]);
        let health: Vec<Health> = out.endpoints.iter().map(|e| e.health).collect();
        assert_eq!(health, [Health::Healthy, Health::Unhealthy]);
    }

    #[test]
    fn disagreeing_ports_take_the_most_common() {
        let out = convert(&[
            entry("r1", "127.0.0.11", 9080, &[], None),
            entry("r2", "127.0.0.12", 9090, &[], None),
            entry("r3", "127.0.0.13", 9090, &[], None),
        ]);
        assert_eq!(out.service.expect("service").ports[0].port, 9090);
        assert_eq!(out.warnings.len(), 1);
        // Each instance keeps its own target port.
        let targets: Vec<(u16, u16)> = out
            .endpoints
            .iter()
            .map(|e| (e.port, e.service_port))
            .collect();
        assert_eq!(targets, [(9080, 9090), (9090, 9090), (9090, 9090)]);
        // A tie goes to the lowest port.
        let tie = convert(&[
            entry("r1", "127.0.0.11", 9090, &[], None),
            entry("r2", "127.0.0.12", 9080, &[], None),
        ]);
        assert_eq!(tie.service.expect("service").ports[0].port, 9080);
    }

    #[test]
    fn no_instances_keep_the_previous_port_or_no_service() {
        assert_eq!(convert(&[]).service, None);
        let previous = ServicePort {
            name: "http".into(),
            port: 9080,
            protocol: Protocol::Http,
        };
        let out = convert_service(&ConsulConfig::default(), "reviews", &[], Some(&previous));
        assert_eq!(out.service.expect("service").ports, [previous]);
        assert!(out.endpoints.is_empty());
    }

    #[test]
    fn connect_proxies_are_skipped() {
        let mut proxy = entry("r1-sidecar", "127.0.0.11", 21000, &[], None);
        proxy.service.kind = "connect-proxy".into();
        assert_eq!(convert(&[proxy]).service, None);
    }
}
