//! The one service model that every registry (file, Consul, Kubernetes,
//! ServiceEntry) produces and the translator consumes.

use std::collections::{BTreeMap, BTreeSet};

use pilotfish_crds::CreationTime;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub type Labels = BTreeMap<String, String>;

/// Application protocol of a service port. `Unknown` ports are sniffed by the
/// proxy; they are never silently treated as TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Tcp,
    Tls,
    Unknown,
}

impl Protocol {
    /// Parses Istio's protocol names, case-insensitively. Protocols Envoy
    /// only proxies as opaque bytes (Mongo, MySQL, Redis...) map to TCP;
    /// HTTPS is TLS from the sidecar's point of view.
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name.to_ascii_lowercase().as_str() {
            "http" | "http1" | "http/1.1" => Protocol::Http,
            "http2" | "h2c" => Protocol::Http2,
            "grpc" | "grpc-web" => Protocol::Grpc,
            "tcp" | "mongo" | "mysql" | "redis" => Protocol::Tcp,
            "tls" | "https" => Protocol::Tls,
            _ => return None,
        })
    }

    /// Istio's port-name convention: `http`, `http-web`, `grpc-api`, `tcp-db`.
    pub fn from_port_name(port_name: &str) -> Protocol {
        let prefix = port_name.split('-').next().unwrap_or_default();
        Protocol::parse(prefix).unwrap_or(Protocol::Unknown)
    }

    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Protocol::parse(s).ok_or_else(|| format!("unknown protocol {s:?}"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// Which registry a service came from; used for diagnostics and precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryKind {
    File,
    ServiceEntry,
    Consul,
    Kubernetes,
}

/// How the proxy finds a service's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Resolution {
    /// Endpoints are pushed over EDS.
    #[default]
    Static,
    /// The proxy resolves the hostname by DNS (ServiceEntry `DNS`).
    Dns,
    /// Forward to the original destination (ServiceEntry `NONE`).
    Passthrough,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Service {
    /// Fully qualified hostname, e.g. `reviews.default.svc.cluster.local`
    /// or `reviews.service.consul`.
    pub hostname: String,
    pub namespace: String,
    /// Virtual IPs; empty for VIP-less services (Consul, headless).
    pub vips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub registry: RegistryKind,
    /// RFC 3339 creation time where the registry knows it; older wins conflicts.
    pub created: Option<String>,
    pub resolution: Resolution,
    /// Outside the mesh (ServiceEntry MESH_EXTERNAL).
    pub mesh_external: bool,
    /// Namespaces the service is visible in; empty or `*` means everywhere.
    pub export_to: Vec<String>,
}

impl Service {
    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }

    /// Istio's precedence: older first (undated last, see
    /// [`CreationTime`]), then hostname; deterministic.
    pub fn precedence(&self) -> (CreationTime, &str) {
        (CreationTime::of(self.created.as_deref()), &self.hostname)
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Health {
    #[default]
    Healthy,
    Unhealthy,
    Draining,
}

/// One instance of one service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// An IP address, or a hostname for DNS-resolved services.
    pub address: String,
    /// The port the instance listens on (target port).
    pub port: u16,
    /// The service port this instance serves.
    pub service_port: u16,
    pub labels: Labels,
    /// `region/zone/subzone`.
    pub locality: Option<String>,
    pub health: Health,
    pub weight: Option<u32>,
}

/// Everything one registry knows at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySnapshot {
    pub services: Vec<Service>,
    /// Endpoints by service hostname.
    pub endpoints: BTreeMap<String, Vec<Endpoint>>,
}

impl Endpoint {
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }
}

/// Keys present in only one of two maps or mapped to different values.
pub fn changed_keys<K: Ord + Clone, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> BTreeSet<K> {
    old.keys()
        .chain(new.keys())
        .filter(|key| old.get(*key) != new.get(*key))
        .cloned()
        .collect()
}

impl RegistrySnapshot {
    /// The hostnames whose endpoints alone differ in `newer`, or `None`
    /// when a service was added, removed or changed. Compares this one
    /// registry's content, nothing else of the mesh.
    pub fn endpoint_changes(&self, newer: &RegistrySnapshot) -> Option<BTreeSet<String>> {
        if self.services != newer.services {
            return None;
        }
        Some(changed_keys(&self.endpoints, &newer.endpoints))
    }

    /// Sorts everything so that equal content compares and hashes equal.
    pub fn normalize(&mut self) {
        self.services.sort_by(|a, b| {
            a.hostname
                .cmp(&b.hostname)
                .then(a.registry.cmp(&b.registry))
        });
        for eps in self.endpoints.values_mut() {
            eps.sort();
            eps.dedup();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_changes_name_the_hosts_or_say_services_changed() {
        let service = |host: &str| Service {
            hostname: host.into(),
            namespace: "default".into(),
            vips: vec![],
            ports: vec![],
            registry: RegistryKind::Consul,
            created: None,
            resolution: Resolution::Static,
            mesh_external: false,
            export_to: vec![],
        };
        let endpoint = |ip: &str| Endpoint {
            address: ip.into(),
            port: 80,
            service_port: 80,
            labels: BTreeMap::new(),
            locality: None,
            health: Health::Healthy,
            weight: None,
        };
        let before = RegistrySnapshot {
            services: vec![service("a"), service("b")],
            endpoints: BTreeMap::from([("a".to_string(), vec![endpoint("10.0.0.1")])]),
        };
        let mut moved = before.clone();
        moved
            .endpoints
            .insert("a".into(), vec![endpoint("10.0.0.2")]);
        moved
            .endpoints
            .insert("b".into(), vec![endpoint("10.0.0.3")]);
        assert_eq!(
            before.endpoint_changes(&moved),
            Some(BTreeSet::from(["a".to_string(), "b".to_string()]))
        );
        let mut grown = before.clone();
        grown.services.push(service("c"));
        assert_eq!(before.endpoint_changes(&grown), None);
    }

    #[test]
    fn protocol_from_istio_port_names() {
        assert_eq!(Protocol::from_port_name("http"), Protocol::Http);
        assert_eq!(Protocol::from_port_name("http-web"), Protocol::Http);
        assert_eq!(Protocol::from_port_name("grpc-api"), Protocol::Grpc);
        assert_eq!(Protocol::from_port_name("tcp-db"), Protocol::Tcp);
        assert_eq!(Protocol::from_port_name("https"), Protocol::Tls);
        assert_eq!(Protocol::from_port_name("web"), Protocol::Unknown);
        assert_eq!(Protocol::from_port_name(""), Protocol::Unknown);
    }

    #[test]
    fn protocol_parse_is_case_insensitive() {
        assert_eq!("HTTP2".parse::<Protocol>(), Ok(Protocol::Http2));
        assert_eq!("Mongo".parse::<Protocol>(), Ok(Protocol::Tcp));
        assert!("quic".parse::<Protocol>().is_err());
    }
}
