//! Which backends a registry file calls for: one per endpoint address and
//! target port, named after the service's short name and `version` label.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub addr: SocketAddr,
    pub service: String,
    pub version: String,
}

/// Reads the `services:` documents of a registry file (ServiceEntry
/// documents are skipped: their endpoints are not ours to serve).
pub fn backends_for(registry_yaml: &str) -> Vec<BackendSpec> {
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(registry_yaml).expect("test registry YAML parses");
    let mut specs: Vec<BackendSpec> = Vec::new();
    for service in documents
        .iter()
        .filter_map(|d| d.get("services")?.as_array())
        .flatten()
    {
        let hostname = str_at(service, "hostname").expect("service hostname");
        let short = hostname.split('.').next().unwrap_or(hostname);
        let ports: BTreeMap<String, u16> = array(service, "ports")
            .map(|p| {
                let port = p.get("port").and_then(Value::as_u64).expect("port number") as u16;
                (
                    str_at(p, "name").map_or_else(|| port.to_string(), str::to_string),
                    port,
                )
            })
            .collect();
        for endpoint in array(service, "endpoints") {
            let address = str_at(endpoint, "address").expect("endpoint address");
            let version = endpoint
                .pointer("/labels/version")
                .and_then(Value::as_str)
                .unwrap_or_default();
            for (name, port) in &ports {
                let target = endpoint
                    .pointer(&format!("/ports/{name}"))
                    .and_then(Value::as_u64)
                    .map_or(*port, |p| p as u16);
                let addr: SocketAddr = format!("{address}:{target}")
                    .parse()
                    .expect("endpoint socket address");
                // Two services may share an endpoint; one server answers for it.
                if !specs.iter().any(|s| s.addr == addr) {
                    specs.push(BackendSpec {
                        addr,
                        service: short.to_string(),
                        version: version.to_string(),
                    });
                }
            }
        }
    }
    specs
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn array<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}
