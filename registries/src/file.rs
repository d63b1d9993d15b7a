//! The file registry: services and endpoints from YAML, so Pilotfish runs with
//! no cluster at all. A file holds documents of our own small format
//! (a top-level `services:` list) and/or Istio ServiceEntry objects.
//!
//! ```yaml
//! services:
//! - hostname: reviews.default.svc.cluster.local
//!   namespace: default          # optional, default "default"
//!   addresses: [10.96.0.12]     # VIPs, optional
//!   ports:
//!   - {name: http, port: 9080, protocol: HTTP}   # protocol optional: from the name, else sniffed
//!   endpoints:
//!   - address: 127.0.0.12
//!     ports: {http: 19080}      # target port by port name; default = service port
//!     labels: {app: reviews, version: v1}
//!     locality: us-east/zone-a
//!     health: HEALTHY
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;

use pilotfish_crds::{ConfigSpec, Origin, load::load_object};
use serde::Deserialize;
use serde_json::Value;

use crate::error::RegistryError;
use crate::model::{
    Endpoint, Health, Labels, Protocol, RegistryKind, RegistrySnapshot, Resolution, Service,
    ServicePort,
};
use crate::service_entry::add_service_entry;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileDocument {
    #[serde(default)]
    #[allow(dead_code)]
    kind: Option<String>,
    services: Vec<FileService>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileService {
    hostname: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    addresses: Vec<IpAddr>,
    #[serde(default)]
    ports: Vec<FilePort>,
    #[serde(default)]
    endpoints: Vec<FileEndpoint>,
    #[serde(default)]
    created: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FilePort {
    #[serde(default)]
    name: Option<String>,
    port: u16,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileEndpoint {
    address: String,
    #[serde(default)]
    ports: BTreeMap<String, u16>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    locality: Option<String>,
    #[serde(default)]
    health: Health,
    #[serde(default)]
    weight: Option<u32>,
}

/// What a registry file yielded: a snapshot plus non-fatal warnings.
#[derive(Debug, Default)]
pub struct FileRegistryOutcome {
    pub snapshot: RegistrySnapshot,
    pub warnings: Vec<String>,
}

/// Parses a registry file. A syntax error or a schema error fails the whole
/// file, so that a half-read registry is never served.
pub fn parse_registry_file(source: &str, text: &str) -> Result<FileRegistryOutcome, RegistryError> {
    let documents: Vec<Value> =
        pilotfish_crds::load::parse_documents(text).map_err(|e| RegistryError::File {
            source_name: source.to_string(),
            message: format!("invalid YAML: {e}"),
        })?;
    let mut out = FileRegistryOutcome::default();
    for (index, doc) in documents.into_iter().enumerate() {
        let origin = Origin {
            source: source.to_string(),
            document: Some(index),
        };
        let fail = |message: String| RegistryError::File {
            source_name: origin.to_string(),
            message,
        };
        if doc.is_null() {
            continue;
        }
        if doc.get("services").is_some() {
            let parsed: FileDocument = serde_path_to_error::deserialize(doc)
                .map_err(|e| fail(format!("field {}: {}", e.path(), e.inner())))?;
            for (i, svc) in parsed.services.into_iter().enumerate() {
                add_file_service(svc, &mut out.snapshot)
                    .map_err(|m| fail(format!("field services[{i}].{m}")))?;
            }
            continue;
        }
        match load_object(&origin, doc, "default", "") {
            Ok(Some(obj)) => match &obj.spec {
                ConfigSpec::ServiceEntry(spec) => {
                    let warnings = add_service_entry(
                        &obj.key(),
                        obj.meta.creation_timestamp.as_deref(),
                        spec,
                        &mut out.snapshot,
                    );
                    out.warnings.extend(warnings.into_iter().map(|w| {
                        format!("{origin}: {}: field {}: {}", w.object, w.field, w.message)
                    }));
                }
                _ => out.warnings.push(format!(
                    "{origin}: {} belongs in the config directory, not the registry file; ignored",
                    obj.key()
                )),
            },
            Ok(None) => out.warnings.push(format!(
                "{origin}: neither a `services:` document nor a ServiceEntry; ignored"
            )),
            Err(e) => {
                return Err(RegistryError::File {
                    source_name: source.to_string(),
                    message: e.to_string(),
                });
            }
        }
    }
    out.snapshot.normalize();
    Ok(out)
}

fn add_file_service(svc: FileService, out: &mut RegistrySnapshot) -> Result<(), String> {
    let mut ports = Vec::new();
    for (i, p) in svc.ports.iter().enumerate() {
        let name = p.name.clone().unwrap_or_else(|| p.port.to_string());
        let protocol = match &p.protocol {
            Some(proto) => Protocol::parse(proto).ok_or_else(|| {
                format!(
                    "ports[{i}].protocol: unknown protocol {proto:?} (HTTP, HTTP2, GRPC, TCP, TLS)"
                )
            })?,
            None => Protocol::from_port_name(&name),
        };
        ports.push(ServicePort {
            name,
            port: p.port,
            protocol,
        });
    }
    let mut endpoints = Vec::new();
    for (i, ep) in svc.endpoints.into_iter().enumerate() {
        if ep.address.parse::<IpAddr>().is_err() {
            return Err(format!(
                "endpoints[{i}].address: {:?} is not an IP address",
                ep.address
            ));
        }
        for name in ep.ports.keys() {
            if !ports.iter().any(|p| &p.name == name) {
                return Err(format!(
                    "endpoints[{i}].ports.{name}: the service has no port named {name:?}"
                ));
            }
        }
        for port in &ports {
            endpoints.push(Endpoint {
                address: ep.address.clone(),
                port: ep.ports.get(&port.name).copied().unwrap_or(port.port),
                service_port: port.port,
                labels: ep.labels.clone(),
                locality: ep.locality.clone(),
                health: ep.health,
                weight: ep.weight,
            });
        }
    }
    out.endpoints
        .entry(svc.hostname.clone())
        .or_default()
        .extend(endpoints);
    out.services.push(Service {
        hostname: svc.hostname,
        namespace: svc.namespace.unwrap_or_else(|| "default".to_string()),
        vips: svc.addresses,
        ports,
        registry: RegistryKind::File,
        created: svc.created,
        resolution: Resolution::Static,
        mesh_external: false,
        export_to: Vec::new(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
services:
- hostname: reviews.default.svc.cluster.local
  addresses: [10.96.0.12]
  ports:
  - {name: http, port: 9080}
  endpoints:
  - address: 127.0.0.12
    ports: {http: 19080}
    labels: {version: v1}
- hostname: db.service.consul
  ports: [{name: db, port: 9080}]
  endpoints: [{address: 127.0.0.20}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.30}]
"#;

    #[test]
    fn reads_own_format_and_service_entries() {
        let out = parse_registry_file("reg.yaml", FILE).expect("parses");
        let hosts: Vec<&str> = out
            .snapshot
            .services
            .iter()
            .map(|s| s.hostname.as_str())
            .collect();
        assert_eq!(
            hosts,
            [
                "api.example.com",
                "db.service.consul",
                "reviews.default.svc.cluster.local"
            ]
        );
        let reviews = &out.snapshot.services[2];
        assert_eq!(reviews.ports[0].protocol, Protocol::Http);
        assert_eq!(
            out.snapshot.endpoints["reviews.default.svc.cluster.local"][0].port,
            19080
        );
        // A port named "db" says nothing about its protocol: it is sniffed.
        assert_eq!(
            out.snapshot.services[1].ports[0].protocol,
            Protocol::Unknown
        );
        assert!(out.snapshot.services[1].vips.is_empty());
        assert_eq!(
            out.snapshot.services[0].registry,
            RegistryKind::ServiceEntry
        );
    }

    #[test]
    fn bad_registry_file_names_document_and_field() {
        let err =
            parse_registry_file("reg.yaml", "services:\n- hostname: a\n  portz: []\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("reg.yaml (document 0)")
                && msg.contains("services[0]")
                && msg.contains("portz"),
            "{msg}"
        );
        let err = parse_registry_file(
            "reg.yaml",
            "services:\n- hostname: a\n  ports: [{port: 80, protocol: QUIC}]\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("services[0].ports[0].protocol"),
            "{err}"
        );
    }
}
