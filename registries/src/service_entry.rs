//! ServiceEntry objects as a registry: each host of an entry becomes a service.

use std::net::IpAddr;

use pilotfish_crds::{ConfigKey, Location, Resolution as SeResolution, ServiceEntrySpec};

use crate::model::{
    Endpoint, Health, Protocol, RegistryKind, RegistrySnapshot, Resolution, Service, ServicePort,
};

/// A problem found while converting; the rest of the entry is still used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryWarning {
    pub object: ConfigKey,
    pub field: String,
    pub message: String,
}

/// Adds the services and endpoints of one ServiceEntry to `out`.
pub fn add_service_entry(
    key: &ConfigKey,
    created: Option<&str>,
    spec: &ServiceEntrySpec,
    out: &mut RegistrySnapshot,
) -> Vec<EntryWarning> {
    let mut warnings = Vec::new();
    let warn = |field: String, message: String| EntryWarning {
        object: key.clone(),
        field,
        message,
    };
    let mut vips = Vec::new();
    for (i, addr) in spec.addresses.iter().enumerate() {
        match addr.parse::<IpAddr>() {
            Ok(ip) => vips.push(ip),
            Err(_) => warnings.push(warn(
                format!("spec.addresses[{i}]"),
                format!(
                    "{addr:?} is not an IP address (CIDR ranges are not supported yet); ignored"
                ),
            )),
        }
    }
    let mut ports = Vec::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let Ok(number) = u16::try_from(port.number) else {
            warnings.push(warn(
                format!("spec.ports[{i}].number"),
                format!("{} is not a valid port", port.number),
            ));
            continue;
        };
        let protocol = match port.protocol.as_deref() {
            None => Protocol::Unknown,
            Some(name) => Protocol::parse(name).unwrap_or_else(|| {
                warnings.push(warn(
                    format!("spec.ports[{i}].protocol"),
                    format!("unknown protocol {name:?}; the port will be sniffed"),
                ));
                Protocol::Unknown
            }),
        };
        ports.push(ServicePort {
            name: port.name.clone().unwrap_or_else(|| number.to_string()),
            port: number,
            protocol,
        });
    }
    let resolution = match spec.resolution {
        None | Some(SeResolution::None) => Resolution::Passthrough,
        Some(SeResolution::Static) => Resolution::Static,
        Some(SeResolution::Dns | SeResolution::DnsRoundRobin | SeResolution::DynamicDns) => {
            Resolution::Dns
        }
    };
    let mut endpoints = Vec::new();
    for (i, we) in spec.endpoints.iter().enumerate() {
        let Some(address) = we.address.clone().filter(|a| !a.is_empty()) else {
            warnings.push(warn(
                format!("spec.endpoints[{i}].address"),
                "endpoint has no address; ignored".into(),
            ));
            continue;
        };
        if resolution == Resolution::Static && address.parse::<IpAddr>().is_err() {
            warnings.push(warn(
                format!("spec.endpoints[{i}].address"),
                format!(
                    "{address:?} is not an IP address, which resolution STATIC requires; ignored"
                ),
            ));
            continue;
        }
        for port in &ports {
            let target = we
                .ports
                .get(&port.name)
                .copied()
                .unwrap_or(u32::from(port.port));
            let Ok(target) = u16::try_from(target) else {
                warnings.push(warn(
                    format!("spec.endpoints[{i}].ports.{}", port.name),
                    format!("{target} is not a valid port"),
                ));
                continue;
            };
            endpoints.push(Endpoint {
                address: address.clone(),
                port: target,
                service_port: port.port,
                labels: we.labels.clone(),
                locality: we.locality.clone(),
                health: Health::Healthy,
                weight: we.weight,
            });
        }
    }
    for host in &spec.hosts {
        out.services.push(Service {
            hostname: host.clone(),
            namespace: key.namespace.clone(),
            vips: vips.clone(),
            ports: ports.clone(),
            registry: RegistryKind::ServiceEntry,
            created: created.map(str::to_string),
            resolution,
            mesh_external: spec.location != Some(Location::MeshInternal),
            export_to: spec.export_to.clone(),
        });
        if !endpoints.is_empty() {
            out.endpoints
                .entry(host.clone())
                .or_default()
                .extend(endpoints.iter().cloned());
        }
    }
    warnings
}
