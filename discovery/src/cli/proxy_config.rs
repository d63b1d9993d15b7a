//! `pilotfish proxy-config {clusters|listeners|routes|endpoints|secrets}
//! PROXY`: what a running server serves one proxy (its
//! `/debug/config_dump`), as istioctl's tables, or the resources as JSON or
//! YAML. Secrets show names, validity and fingerprints, never keys.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Output;
use super::debug_client::{self, DEFAULT_ADDRESS, encode_query_value};
use super::proxy_status;
use super::table::Table;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConfigKind {
    #[value(alias = "cluster", alias = "c")]
    Clusters,
    #[value(alias = "listener", alias = "l")]
    Listeners,
    #[value(alias = "route", alias = "r")]
    Routes,
    #[value(alias = "endpoint", alias = "ep")]
    Endpoints,
    #[value(alias = "secret", alias = "s")]
    Secrets,
}

impl ConfigKind {
    /// The type's key in `/debug/config_dump`.
    fn dump_key(self) -> &'static str {
        match self {
            ConfigKind::Clusters => "cds",
            ConfigKind::Listeners => "lds",
            ConfigKind::Routes => "rds",
            ConfigKind::Endpoints => "eds",
            ConfigKind::Secrets => "sds",
        }
    }
}

#[derive(Args, Debug)]
pub struct ProxyConfigArgs {
    pub kind: ConfigKind,
    /// The proxy: node id, or pod name as `name` or `name.namespace`.
    pub proxy: String,
    /// The server's debug address (`serve --http-address`).
    #[arg(long, default_value = DEFAULT_ADDRESS)]
    pub server: String,
    /// Only the resource of this name.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: Output,
}

pub fn run(args: ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    let syncz = proxy_status::parse(debug_client::get_json(&args.server, "/debug/syncz")?)?;
    let matching: Vec<_> = syncz.proxies.iter().filter(|p| p.is(&args.proxy)).collect();
    let node_id = match matching.as_slice() {
        [one] => one.identity.node_id.clone(),
        [] => bail!(
            "no connected proxy {:?} (see `pilotfish proxy-status`)",
            args.proxy
        ),
        _ => bail!(
            "{:?} names {} connected proxies; give a node id",
            args.proxy,
            matching.len()
        ),
    };
    let dump = debug_client::get_json(
        &args.server,
        &format!("/debug/config_dump?proxy={}", encode_query_value(&node_id)),
    )?;
    let resources = resources(&dump, args.kind, args.name.as_deref())?;
    let structured = match args.kind {
        ConfigKind::Secrets => Value::Array(resources.iter().map(secret_summary).collect()),
        _ => Value::Array(resources.iter().map(|r| r["resource"].clone()).collect()),
    };
    if !args.output.print_structured(&structured)? {
        print!("{}", render(args.kind, &resources));
    }
    Ok(ExitCode::SUCCESS)
}

/// The dump's entries (`{name, bytes, resource}`) of one kind.
pub fn resources(dump: &Value, kind: ConfigKind, name: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let list = dump["types"][kind.dump_key()]["resources"]
        .as_array()
        .with_context(|| format!("config dump without {}", kind.dump_key()))?;
    Ok(list
        .iter()
        .filter(|r| name.is_none_or(|n| r["name"] == n))
        .cloned()
        .collect())
}

pub fn render(kind: ConfigKind, resources: &[Value]) -> String {
    let table = match kind {
        ConfigKind::Clusters => clusters(resources),
        ConfigKind::Listeners => listeners(resources),
        ConfigKind::Routes => routes(resources),
        ConfigKind::Endpoints => endpoints(resources),
        ConfigKind::Secrets => secrets(resources),
    };
    table.render()
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The Istio objects a resource names in its `istio`/`config` metadata,
/// as `name.namespace` (istioctl's form).
fn istio_objects(metadata: &Value) -> String {
    let config = &metadata["filterMetadata"]["istio"]["config"];
    let paths: Vec<String> = match config {
        Value::String(s) => vec![s.clone()],
        Value::Array(list) => list.iter().map(text).collect(),
        _ => Vec::new(),
    };
    paths
        .iter()
        .map(|p| match pilotfish_translate::provenance::parse(p) {
            Some(key) => format!("{}.{}", key.name, key.namespace),
            None => p.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn clusters(resources: &[Value]) -> Table {
    let mut t = Table::new([
        "SERVICE FQDN",
        "PORT",
        "SUBSET",
        "DIRECTION",
        "TYPE",
        "DESTINATION RULE",
    ]);
    for r in resources {
        let c = &r["resource"];
        let name = text(&c["name"]);
        // outbound|9080|v1|reviews.default.svc.cluster.local
        let parts: Vec<&str> = name.split('|').collect();
        let (fqdn, port, subset, direction) = match parts.as_slice() {
            [direction, port, subset, fqdn] => (
                fqdn.to_string(),
                port.to_string(),
                subset.to_string(),
                direction.to_string(),
            ),
            _ => (name.clone(), "-".into(), "-".into(), "-".into()),
        };
        let ty = match &c["type"] {
            Value::Null if c["clusterType"].is_object() => text(&c["clusterType"]["name"]),
            Value::Null => "EDS".into(),
            other => text(other),
        };
        t.row(vec![
            fqdn,
            port,
            subset,
            direction,
            ty,
            istio_objects(&c["metadata"]),
        ]);
    }
    t
}

fn socket_address(address: &Value) -> (String, String) {
    let socket = &address["socketAddress"];
    (
        text(&socket["address"]),
        match &socket["portValue"] {
            Value::Null => "-".into(),
            port => text(port),
        },
    )
}

fn listeners(resources: &[Value]) -> Table {
    let mut t = Table::new(["NAME", "ADDRESS", "PORT", "MATCH", "DESTINATION"]);
    for r in resources {
        let l = &r["resource"];
        let name = text(&l["name"]);
        let (address, port) = socket_address(&l["address"]);
        let chains = l["filterChains"].as_array().cloned().unwrap_or_default();
        for chain in &chains {
            t.row(vec![
                name.clone(),
                address.clone(),
                port.clone(),
                chain_match(&chain["filterChainMatch"]),
                destination(chain),
            ]);
        }
        if l["defaultFilterChain"].is_object() {
            t.row(vec![
                name.clone(),
                address.clone(),
                port.clone(),
                "(default)".into(),
                destination(&l["defaultFilterChain"]),
            ]);
        }
        if chains.is_empty() && !l["defaultFilterChain"].is_object() {
            // UDP listeners (the DNS proxy) have listener filters only.
            let filters: Vec<String> = l["listenerFilters"]
                .as_array()
                .map(|f| f.iter().map(|f| text(&f["name"])).collect())
                .unwrap_or_default();
            t.row(vec![name, address, port, "ALL".into(), filters.join(",")]);
        }
    }
    t
}

/// `Addr: 127.1.0.30/32; App: http/1.1,h2c`, or `ALL`.
fn chain_match(m: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(ranges) = m["prefixRanges"].as_array() {
        let cidrs: Vec<String> = ranges
            .iter()
            .map(|r| {
                let prefix = text(&r["addressPrefix"]);
                match &r["prefixLen"] {
                    Value::Null => format!("{prefix}/0"),
                    len => format!("{prefix}/{}", text(len)),
                }
            })
            .collect();
        parts.push(format!("Addr: {}", cidrs.join(",")));
    }
    let lists = [
        ("serverNames", "SNI"),
        ("applicationProtocols", "App"),
        ("sourcePrefixRanges", "Src"),
    ];
    for (field, label) in lists {
        if let Some(items) = m[field].as_array() {
            let items: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Value::Object(_) => {
                        format!("{}/{}", text(&i["addressPrefix"]), text(&i["prefixLen"]))
                    }
                    other => text(other),
                })
                .collect();
            parts.push(format!("{label}: {}", items.join(",")));
        }
    }
    for (field, label) in [("transportProtocol", "Trans"), ("destinationPort", "Port")] {
        if !m[field].is_null() {
            parts.push(format!("{label}: {}", text(&m[field])));
        }
    }
    match parts.is_empty() {
        true => "ALL".into(),
        false => parts.join("; "),
    }
}

/// Where a filter chain sends traffic: `Route: 9080`, `Cluster: ...`.
fn destination(chain: &Value) -> String {
    let filters = chain["filters"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for f in &filters {
        let config = &f["typedConfig"];
        if let Some(name) = config["rds"]["routeConfigName"].as_str() {
            out.push(format!("Route: {name}"));
        } else if config["routeConfig"].is_object() {
            out.push(format!(
                "Inline Route: {}",
                text(&config["routeConfig"]["name"])
            ));
        } else if let Some(cluster) = config["cluster"].as_str() {
            out.push(format!("Cluster: {cluster}"));
        } else if let Some(weighted) = config["weightedClusters"]["clusters"].as_array() {
            let clusters: Vec<String> = weighted
                .iter()
                .map(|c| format!("{}({})", text(&c["name"]), text(&c["weight"])))
                .collect();
            out.push(format!("Clusters: {}", clusters.join(",")));
        }
    }
    match out.is_empty() {
        true => filters
            .iter()
            .map(|f| text(&f["name"]))
            .collect::<Vec<_>>()
            .join(","),
        false => out.join("; "),
    }
}

fn routes(resources: &[Value]) -> Table {
    let mut t = Table::new(["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"]);
    for r in resources {
        let rc = &r["resource"];
        let name = text(&rc["name"]);
        for vhost in rc["virtualHosts"].as_array().into_iter().flatten() {
            let domains: Vec<String> = vhost["domains"]
                .as_array()
                .map(|d| d.iter().map(text).collect())
                .unwrap_or_default();
            // istioctl shows the first domain and how many follow.
            let shown = match domains.len() {
                0 => String::new(),
                1 => domains[0].clone(),
                n => format!("{} + {} more...", domains[0], n - 1),
            };
            for route in vhost["routes"].as_array().into_iter().flatten() {
                t.row(vec![
                    name.clone(),
                    text(&vhost["name"]),
                    shown.clone(),
                    route_match(&route["match"]),
                    istio_objects(&route["metadata"]),
                ]);
            }
        }
    }
    t
}

fn route_match(m: &Value) -> String {
    let mut out = match () {
        _ if !m["prefix"].is_null() => format!("{}*", text(&m["prefix"])),
        _ if !m["path"].is_null() => text(&m["path"]),
        _ if !m["safeRegex"].is_null() => format!("~{}", text(&m["safeRegex"]["regex"])),
        _ if !m["pathSeparatedPrefix"].is_null() => {
            format!("{}/*", text(&m["pathSeparatedPrefix"]))
        }
        _ => "*".into(),
    };
    if let Some(headers) = m["headers"].as_array() {
        let names: Vec<String> = headers.iter().map(|h| text(&h["name"])).collect();
        out.push_str(&format!(" (headers: {})", names.join(",")));
    }
    out
}

fn endpoints(resources: &[Value]) -> Table {
    let mut t = Table::new(["ENDPOINT", "HEALTH", "WEIGHT", "LOCALITY", "CLUSTER"]);
    for r in resources {
        let cla = &r["resource"];
        let cluster = text(&cla["clusterName"]);
        for group in cla["endpoints"].as_array().into_iter().flatten() {
            let locality = ["region", "zone", "subZone"]
                .iter()
                .map(|k| text(&group["locality"][k]))
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("/");
            for lb in group["lbEndpoints"].as_array().into_iter().flatten() {
                let (address, port) = socket_address(&lb["endpoint"]["address"]);
                t.row(vec![
                    format!("{address}:{port}"),
                    match &lb["healthStatus"] {
                        Value::Null => "UNKNOWN".into(),
                        h => text(h),
                    },
                    match &lb["loadBalancingWeight"] {
                        Value::Null => "1".into(),
                        w => text(w),
                    },
                    locality.clone(),
                    cluster.clone(),
                ]);
            }
        }
    }
    t
}

/// A secret as names, kind, validity and fingerprint; nothing secret.
pub fn secret_summary(entry: &Value) -> Value {
    let secret = &entry["resource"];
    let name = text(&secret["name"]);
    let (kind, pem) = if secret["tlsCertificate"].is_object() {
        (
            "Cert Chain",
            data_source(&secret["tlsCertificate"]["certificateChain"]),
        )
    } else if secret["validationContext"].is_object() {
        ("CA", data_source(&secret["validationContext"]["trustedCa"]))
    } else {
        ("Other", None)
    };
    let certificate = pem.as_deref().and_then(first_certificate);
    json!({
        "name": name,
        "type": kind,
        "not_before": certificate.as_ref().map(|c| c.not_before.clone()),
        "not_after": certificate.as_ref().map(|c| c.not_after.clone()),
        "valid_now": certificate.as_ref().map(|c| c.valid_now),
        "serial": certificate.as_ref().map(|c| c.serial.clone()),
        "sha256_fingerprint": certificate.as_ref().map(|c| c.fingerprint.clone()),
    })
}

fn secrets(resources: &[Value]) -> Table {
    let mut t = Table::new([
        "RESOURCE NAME",
        "TYPE",
        "VALID",
        "NOT BEFORE",
        "NOT AFTER",
        "SHA-256 FINGERPRINT",
    ]);
    for r in resources {
        let s = secret_summary(r);
        t.row(vec![
            text(&s["name"]),
            text(&s["type"]),
            match s["valid_now"].as_bool() {
                Some(true) => "true".into(),
                Some(false) => "false".into(),
                None => "-".into(),
            },
            text(&s["not_before"]),
            text(&s["not_after"]),
            text(&s["sha256_fingerprint"]),
        ]);
    }
    t
}

/// The PEM of a DataSource as the config dump shows it (inline string, or
/// base64 inline bytes); a file name is not read.
fn data_source(source: &Value) -> Option<String> {
    if let Some(s) = source["inlineString"].as_str() {
        return Some(s.to_string());
    }
    let bytes = source["inlineBytes"].as_str()?;
    let decoded = base64_decode(bytes)?;
    String::from_utf8(decoded).ok()
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((buffer >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

struct CertificateFacts {
    not_before: String,
    not_after: String,
    valid_now: bool,
    serial: String,
    fingerprint: String,
}

fn first_certificate(pem: &str) -> Option<CertificateFacts> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let validity = cert.validity();
    Some(CertificateFacts {
        not_before: validity.not_before.to_string(),
        not_after: validity.not_after.to_string(),
        valid_now: validity.is_valid(),
        serial: cert.raw_serial_as_string(),
        fingerprint: hex::encode(Sha256::digest(&pem.contents)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(resource: Value) -> Value {
        json!({"name": resource["name"].clone(), "resource": resource})
    }

    #[test]
    fn clusters_show_fqdn_port_subset_and_their_destination_rule() {
        let c = entry(json!({
            "name": "outbound|9080|v1|reviews.default.svc.cluster.local",
            "type": "EDS",
            "metadata": {"filterMetadata": {"istio": {"config":
                "/apis/networking.istio.io/v1/namespaces/default/destination-rule/reviews"}}}
        }));
        let text = render(ConfigKind::Clusters, &[c]);
        let row = text.lines().nth(1).expect("a row");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "reviews.default.svc.cluster.local",
                "9080",
                "v1",
                "outbound",
                "EDS",
                "reviews.default"
            ]
        );
    }

    #[test]
    fn listeners_show_one_row_per_filter_chain_and_the_default() {
        let l = entry(json!({
            "name": "0.0.0.0_9080",
            "address": {"socketAddress": {"address": "0.0.0.0", "portValue": 9080}},
            "filterChains": [
                {"filterChainMatch": {"applicationProtocols": ["http/1.1", "h2c"]},
                 "filters": [{"name": "hcm", "typedConfig": {"rds": {"routeConfigName": "9080"}}}]},
                {"filterChainMatch": {"prefixRanges": [{"addressPrefix": "127.1.0.50", "prefixLen": 32}]},
                 "filters": [{"name": "tcp", "typedConfig": {"cluster": "outbound|9080||db"}}]}
            ],
            "defaultFilterChain": {"filters": [{"name": "tcp", "typedConfig": {"cluster": "PassthroughCluster"}}]}
        }));
        let text = render(ConfigKind::Listeners, &[l]);
        assert!(text.contains("App: http/1.1,h2c"), "{text}");
        assert!(text.contains("Route: 9080"), "{text}");
        assert!(text.contains("Addr: 127.1.0.50/32"), "{text}");
        assert!(text.contains("(default)"), "{text}");
        assert!(text.contains("Cluster: PassthroughCluster"), "{text}");
    }

    #[test]
    fn secrets_show_validity_and_fingerprint_never_keys() {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let s = entry(json!({
            "name": "default",
            "tlsCertificate": {
                "certificateChain": {"inlineString": cert.pem()},
                "privateKey": {"inlineString": "[redacted]"}
            }
        }));
        let summary = secret_summary(&s);
        assert_eq!(summary["type"], "Cert Chain");
        assert_eq!(summary["valid_now"], true);
        assert_eq!(
            summary["sha256_fingerprint"],
            hex::encode(Sha256::digest(cert.der()))
        );
        assert!(!summary.to_string().contains("redacted"), "{summary}");
    }

    #[test]
    fn base64_inline_bytes_decode() {
        assert_eq!(base64_decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
    }
}
