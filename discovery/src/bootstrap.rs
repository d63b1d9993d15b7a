//! `pilotfish bootstrap`: an Envoy bootstrap that takes everything else from
//! Pilotfish over ADS, with Istio's node identity and metadata.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::{Value, json};

use crate::xds_types::XdsProtocol;

#[derive(Clone, Debug)]
pub struct BootstrapOptions {
    /// `sidecar` or `router`.
    pub proxy_type: String,
    pub ip: String,
    pub name: String,
    pub namespace: String,
    pub domain_suffix: String,
    /// Overrides the node id built from the fields above.
    pub node_id: Option<String>,
    /// Pilotfish's xDS addresses, `HOST:PORT`: one (a Service), or each
    /// replica's; Envoy's `xds-grpc` cluster lists them all and reconnects
    /// to another when one goes.
    pub xds_addresses: Vec<String>,
    pub admin_port: u16,
    pub interception_mode: String,
    pub labels: BTreeMap<String, String>,
    /// `region/zone[/subzone]`: the node's locality.
    pub locality: Option<String>,
    /// The ADS variant Envoy speaks (`ads_config.api_type`).
    pub xds_protocol: XdsProtocol,
    /// Istio's readiness port: `GET /healthz/ready` answers 200 once Envoy
    /// has its initial configuration (its admin `/ready`). `None`: no listener.
    pub health_port: Option<u16>,
    /// Istio's Prometheus port: `GET /stats/prometheus`. `None`: no listener.
    pub stats_port: Option<u16>,
    /// Metadata `SERVICE_ACCOUNT`: checked against the proxy's verified identity.
    pub service_account: Option<String>,
    /// Connect to Pilotfish's secure port over TLS. `None`: plaintext.
    pub xds_tls: Option<XdsTls>,
    /// Ask for DNS proxying: metadata `DNS_CAPTURE` and `DNS_AUTO_ALLOCATE`
    /// (the sidecar answers the pod's captured DNS with service addresses,
    /// allocated ones for ServiceEntries without addresses).
    pub dns_proxy: bool,
}

/// How Envoy reaches the secure xDS port and proves who it is.
#[derive(Clone, Debug, Default)]
pub struct XdsTls {
    /// PEM file of the mesh CA root that signed Pilotfish's certificate.
    pub root_cert: String,
    /// The name Pilotfish's certificate must carry (SNI and SAN check).
    pub server_name: String,
    /// The proxy's own certificate (from the mesh CA), if it has one.
    pub client_certificate: Option<ClientCertificate>,
    /// A ServiceAccount token sent as `authorization: Bearer`, if no
    /// certificate. It is written into the bootstrap: keep the file private.
    pub token: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ClientCertificate {
    pub cert_chain: String,
    pub private_key: String,
    /// Envoy reloads both files when this directory is swapped (the
    /// `..data` symlink layout `pilotfish certificate` writes).
    pub watched_directory: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootstrapError {
    #[error("--xds-address {0:?}: expected HOST:PORT")]
    XdsAddress(String),
    #[error("--proxy-type {0:?}: expected sidecar or router")]
    ProxyType(String),
    #[error("--interception-mode {0:?}: expected REDIRECT, TPROXY or NONE")]
    InterceptionMode(String),
    #[error("--locality {0:?}: expected region/zone[/subzone]")]
    Locality(String),
}

impl BootstrapOptions {
    /// Istio's form: `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`.
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            format!(
                "{}~{}~{}.{}~{}.svc.{}",
                self.proxy_type,
                self.ip,
                self.name,
                self.namespace,
                self.namespace,
                self.domain_suffix
            )
        })
    }
}

pub fn bootstrap(opts: &BootstrapOptions) -> Result<Value, BootstrapError> {
    if !matches!(opts.proxy_type.as_str(), "sidecar" | "router") {
        return Err(BootstrapError::ProxyType(opts.proxy_type.clone()));
    }
    let mode = opts.interception_mode.to_ascii_uppercase();
    if !matches!(mode.as_str(), "REDIRECT" | "TPROXY" | "NONE") {
        return Err(BootstrapError::InterceptionMode(
            opts.interception_mode.clone(),
        ));
    }
    if opts.xds_addresses.is_empty() {
        return Err(BootstrapError::XdsAddress(String::new()));
    }
    let mut xds_endpoints = Vec::new();
    let mut names = false;
    for address in &opts.xds_addresses {
        let (host, port) = address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| BootstrapError::XdsAddress(address.clone()))?;
        names |= host.parse::<IpAddr>().is_err();
        xds_endpoints.push(json!({"endpoint": {"address": {
            "socket_address": {"address": host, "port_value": port},
        }}}));
    }
    // IPs need no resolver; a name (a Kubernetes Service) is re-resolved.
    let discovery_type = if names { "STRICT_DNS" } else { "STATIC" };
    let locality = match opts.locality.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(parse_locality(text)?),
    };
    let app = opts
        .labels
        .get("app")
        .cloned()
        .unwrap_or_else(|| opts.name.clone());
    let mut out = json!({
        "node": {
            "id": opts.node_id(),
            "cluster": format!("{app}.{}", opts.namespace),
            "metadata": {
                "NAMESPACE": opts.namespace,
                "INTERCEPTION_MODE": mode,
                "LABELS": opts.labels,
                "NAME": opts.name,
                "INSTANCE_IPS": opts.ip,
            },
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": opts.admin_port}},
        },
        // Istio's limits: VirtualService regexes routinely exceed Envoy's
        // default RE2 program size of 100, which would NACK the routes.
        "layered_runtime": {"layers": [
            {"name": "static", "static_layer": {
                "re2.max_program_size.error_level": 32768,
                "overload.global_downstream_max_connections": 2147483647,
            }},
            {"name": "admin", "admin_layer": {}},
        ]},
        "dynamic_resources": {
            "ads_config": {
                "api_type": opts.xds_protocol.api_type(),
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                "set_node_on_first_message_only": true,
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [{
                "name": "xds-grpc",
                "type": discovery_type,
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": "xds-grpc",
                    "endpoints": [{"lb_endpoints": xds_endpoints}],
                },
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    },
                },
                "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
            }],
        },
    });
    if let Some(sa) = &opts.service_account {
        out["node"]["metadata"]["SERVICE_ACCOUNT"] = json!(sa);
    }
    if let Some(tls) = &opts.xds_tls {
        add_xds_tls(&mut out, tls);
    }
    if let Some((region, zone, sub_zone)) = locality {
        out["node"]["locality"] = json!({"region": region, "zone": zone, "sub_zone": sub_zone});
    }
    let admin_paths = [
        (opts.health_port, "health", "/healthz/ready", "/ready"),
        (
            opts.stats_port,
            "prometheus",
            "/stats/prometheus",
            "/stats/prometheus",
        ),
    ];
    let listeners: Vec<Value> = admin_paths
        .into_iter()
        .filter_map(|(port, name, path, admin_path)| {
            port.map(|port| admin_path_listener(name, port, path, admin_path))
        })
        .collect();
    if !listeners.is_empty() {
        out["static_resources"]["listeners"] = Value::Array(listeners);
        if let Some(clusters) = out["static_resources"]["clusters"].as_array_mut() {
            clusters.push(admin_cluster(opts.admin_port));
        }
    }
    if opts.dns_proxy {
        // As Istio's agent writes ISTIO_META_DNS_*.
        for flag in ["DNS_CAPTURE", "DNS_AUTO_ALLOCATE"] {
            out["node"]["metadata"][flag] = json!("true");
        }
    }
    Ok(out)
}

/// TLS to Pilotfish's secure port: the server's certificate is checked
/// against the mesh root and `server_name`; the proxy proves itself with a
/// client certificate or a token.
fn add_xds_tls(out: &mut Value, tls: &XdsTls) {
    let mut common = json!({
        "alpn_protocols": ["h2"],
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "validation_context": {
            "trusted_ca": {"filename": tls.root_cert},
            "match_typed_subject_alt_names": [
                {"san_type": "DNS", "matcher": {"exact": tls.server_name}},
            ],
        },
    });
    if let Some(cert) = &tls.client_certificate {
        let mut certificate = json!({
            "certificate_chain": {"filename": cert.cert_chain},
            "private_key": {"filename": cert.private_key},
        });
        if let Some(dir) = &cert.watched_directory {
            certificate["watched_directory"] = json!({"path": dir});
        }
        common["tls_certificates"] = json!([certificate]);
    }
    out["static_resources"]["clusters"][0]["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": tls.server_name,
            "common_tls_context": common,
        },
    });
    if let Some(token) = &tls.token {
        out["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"] =
            json!([{"key": "authorization", "value": format!("Bearer {token}")}]);
    }
}

/// The admin interface as a cluster, so that a few of its read-only pages
/// can be offered on other ports while admin itself stays on 127.0.0.1.
const ADMIN_CLUSTER: &str = "envoy-admin";

fn admin_cluster(admin_port: u16) -> Value {
    json!({
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": admin_port},
            }}}]}],
        },
    })
}

/// A listener on every address at `port` that answers `GET <path>` from
/// the admin page `admin_path`, and 404 for anything else (the rest of the
/// admin interface, which can change Envoy's state, is never exposed).
fn admin_path_listener(name: &str, port: u16, path: &str, admin_path: &str) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{
                    "name": name,
                    "domains": ["*"],
                    "routes": [{
                        "match": {"path": path, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
                        "route": {"cluster": ADMIN_CLUSTER, "prefix_rewrite": admin_path},
                    }],
                }]},
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    })
}

/// `region/zone[/subzone]`, every given part non-empty.
fn parse_locality(text: &str) -> Result<(String, String, String), BootstrapError> {
    let bad = || BootstrapError::Locality(text.to_string());
    let parts: Vec<&str> = text.split('/').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.trim().is_empty() || p.contains('*')) {
        return Err(bad());
    }
    let part = |i: usize| {
        parts
            .get(i)
            .map(|p| p.trim().to_string())
            .unwrap_or_default()
    };
    Ok((part(0), part(1), part(2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> BootstrapOptions {
        BootstrapOptions {
            proxy_type: "sidecar".into(),
            ip: "10.0.0.7".into(),
            name: "reviews-v1".into(),
            namespace: "default".into(),
            domain_suffix: "cluster.local".into(),
            node_id: None,
            xds_addresses: vec!["pilotfish.istio-system.svc:15010".into()],
            admin_port: 15000,
            interception_mode: "redirect".into(),
            labels: BTreeMap::from([("app".into(), "reviews".into())]),
            locality: None,
            xds_protocol: XdsProtocol::Sotw,
            health_port: Some(15021),
            stats_port: Some(15090),
            service_account: None,
            xds_tls: None,
            dns_proxy: false,
        }
    }

    #[test]
    fn dns_proxying_is_asked_for_in_the_node_metadata() {
        let mut o = options();
        let plain = bootstrap(&o).expect("bootstrap");
        assert_eq!(plain["node"]["metadata"].get("DNS_CAPTURE"), None);
        o.dns_proxy = true;
        let b = bootstrap(&o).expect("bootstrap");
        assert_eq!(b["node"]["metadata"]["DNS_CAPTURE"], "true");
        assert_eq!(b["node"]["metadata"]["DNS_AUTO_ALLOCATE"], "true");
    }

    #[test]
    fn secure_xds_checks_the_server_and_presents_a_certificate_or_a_token() {
        let mut o = options();
        o.service_account = Some("reviews".into());
        o.xds_tls = Some(XdsTls {
            root_cert: "/etc/certs/root-cert.pem".into(),
            server_name: "istiod.istio-system.svc".into(),
            client_certificate: Some(ClientCertificate {
                cert_chain: "/etc/certs/cert-chain.pem".into(),
                private_key: "/etc/certs/key.pem".into(),
                watched_directory: Some("/etc/certs".into()),
            }),
            token: None,
        });
        let b = bootstrap(&o).expect("valid");
        assert_eq!(b["node"]["metadata"]["SERVICE_ACCOUNT"], "reviews");
        let tls = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"], "istiod.istio-system.svc");
        let common = &tls["common_tls_context"];
        assert_eq!(
            common["validation_context"]["trusted_ca"]["filename"],
            "/etc/certs/root-cert.pem"
        );
        assert_eq!(
            common["validation_context"]["match_typed_subject_alt_names"][0]["matcher"]["exact"],
            "istiod.istio-system.svc"
        );
        assert_eq!(
            common["tls_certificates"][0]["watched_directory"]["path"],
            "/etc/certs"
        );
        let grpc = &b["dynamic_resources"]["ads_config"]["grpc_services"][0];
        assert!(grpc.get("initial_metadata").is_none());

        let mut o = options();
        o.xds_tls = Some(XdsTls {
            root_cert: "/r.pem".into(),
            server_name: "pilotfish".into(),
            client_certificate: None,
            token: Some("tok".into()),
        });
        let b = bootstrap(&o).expect("valid");
        let grpc = &b["dynamic_resources"]["ads_config"]["grpc_services"][0];
        assert_eq!(grpc["initial_metadata"][0]["value"], "Bearer tok");
        assert!(
            b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]
                ["common_tls_context"]
                .get("tls_certificates")
                .is_none()
        );
    }

    #[test]
    fn health_and_prometheus_ports_expose_two_admin_pages_only() {
        let b = bootstrap(&options()).expect("valid");
        let listeners = b["static_resources"]["listeners"]
            .as_array()
            .expect("listeners");
        let ports: Vec<_> = listeners
            .iter()
            .map(|l| l["address"]["socket_address"]["port_value"].clone())
            .collect();
        assert_eq!(ports, [json!(15021), json!(15090)]);
        let route = &listeners[0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
            ["virtual_hosts"][0]["routes"][0];
        assert_eq!(route["match"]["path"], "/healthz/ready");
        assert_eq!(route["route"]["prefix_rewrite"], "/ready");
        let admin = &b["static_resources"]["clusters"][1];
        assert_eq!(admin["name"], ADMIN_CLUSTER);
        let mut o = options();
        o.health_port = None;
        o.stats_port = None;
        let b = bootstrap(&o).expect("valid");
        assert!(b["static_resources"].get("listeners").is_none());
        assert_eq!(
            b["static_resources"]["clusters"].as_array().map(Vec::len),
            Some(1)
        );
    }

    #[test]
    fn node_id_follows_istio_form() {
        assert_eq!(
            options().node_id(),
            "sidecar~10.0.0.7~reviews-v1.default~default.svc.cluster.local"
        );
    }

    #[test]
    fn bootstrap_points_ads_at_pilotfish_with_metadata() {
        let b = bootstrap(&options()).expect("valid");
        assert_eq!(b["node"]["metadata"]["INTERCEPTION_MODE"], "REDIRECT");
        assert_eq!(b["node"]["metadata"]["LABELS"]["app"], "reviews");
        assert_eq!(b["static_resources"]["clusters"][0]["type"], "STRICT_DNS");
        let addr = &b["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
            [0]["endpoint"]["address"]["socket_address"];
        assert_eq!(addr["port_value"], 15010);
        assert_eq!(
            b["layered_runtime"]["layers"][0]["static_layer"]["re2.max_program_size.error_level"],
            32768
        );
    }

    #[test]
    fn ads_api_type_follows_the_protocol_option() {
        let b = bootstrap(&options()).expect("valid");
        assert_eq!(b["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
        let mut o = options();
        o.xds_protocol = XdsProtocol::Delta;
        let b = bootstrap(&o).expect("valid");
        let ads = &b["dynamic_resources"]["ads_config"];
        assert_eq!(ads["api_type"], "DELTA_GRPC");
        assert_eq!(ads["transport_api_version"], "V3");
        assert_eq!(b["dynamic_resources"]["cds_config"]["ads"], json!({}));
    }

    #[test]
    fn locality_goes_into_the_node() {
        let b = bootstrap(&options()).expect("valid");
        assert!(b["node"].get("locality").is_none());
        let mut o = options();
        o.locality = Some("us-east/zone-a/rack1".into());
        let b = bootstrap(&o).expect("valid");
        assert_eq!(
            b["node"]["locality"],
            json!({"region": "us-east", "zone": "zone-a", "sub_zone": "rack1"})
        );
        o.locality = Some("us-east/zone-a".into());
        let b = bootstrap(&o).expect("valid");
        assert_eq!(b["node"]["locality"]["zone"], "zone-a");
        assert_eq!(b["node"]["locality"]["sub_zone"], "");
        for bad in ["a/b/c/d", "a//b", "a/*"] {
            o.locality = Some(bad.into());
            assert!(
                matches!(bootstrap(&o), Err(BootstrapError::Locality(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn every_xds_address_is_an_endpoint_of_the_xds_cluster() {
        let mut o = options();
        o.xds_addresses = vec!["10.0.0.1:15010".into(), "10.0.0.2:15020".into()];
        let out = bootstrap(&o).expect("bootstrap");
        let cluster = &out["static_resources"]["clusters"][0];
        assert_eq!(cluster["name"], "xds-grpc");
        assert_eq!(cluster["type"], "STATIC", "IPs need no resolver");
        let endpoints: Vec<(String, u64)> =
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
                .as_array()
                .expect("endpoints")
                .iter()
                .map(|e| {
                    let socket = &e["endpoint"]["address"]["socket_address"];
                    (
                        socket["address"].as_str().unwrap_or_default().to_string(),
                        socket["port_value"].as_u64().unwrap_or_default(),
                    )
                })
                .collect();
        assert_eq!(
            endpoints,
            [
                ("10.0.0.1".to_string(), 15010),
                ("10.0.0.2".to_string(), 15020)
            ]
        );
        o.xds_addresses
            .push("pilotfish.istio-system.svc:15010".into());
        assert_eq!(
            bootstrap(&o).expect("bootstrap")["static_resources"]["clusters"][0]["type"],
            "STRICT_DNS",
            "a name is resolved"
        );
    }

    #[test]
    fn bad_options_are_rejected() {
        let mut o = options();
        o.xds_addresses = vec!["nohost".into()];
        assert!(matches!(bootstrap(&o), Err(BootstrapError::XdsAddress(_))));
        o.xds_addresses = vec!["10.0.0.1:15010".into(), "nohost".into()];
        assert!(matches!(bootstrap(&o), Err(BootstrapError::XdsAddress(a)) if a == "nohost"));
        let mut o = options();
        o.proxy_type = "gateway".into();
        assert!(matches!(bootstrap(&o), Err(BootstrapError::ProxyType(_))));
    }
}
