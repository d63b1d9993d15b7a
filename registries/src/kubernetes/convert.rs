//! Kubernetes objects → the service model. Pure functions over what the
//! reflectors hold; no I/O.
//!
//! - Hostname `<service>.<namespace>.svc.<domain suffix>`.
//! - VIPs from `spec.clusterIPs` (else `spec.clusterIP`); a headless service
//!   (`None`) has none and is reached by its endpoints' addresses.
//! - `type: ExternalName`: DNS resolution, one endpoint per port whose
//!   address is the external name.
//! - Ports with protocol UDP or SCTP are skipped (Envoy's listeners here are
//!   TCP). A port's protocol comes from `appProtocol` (`http`, `http2`,
//!   `grpc`, `tcp`, `tls`, `https`, `kubernetes.io/h2c`, `kubernetes.io/ws`,
//!   `kubernetes.io/wss`...), else from Istio's port-name convention
//!   (`http-web`, `grpc-api`, `tcp-db`), else `Unknown`: sniffed, never
//!   assumed to be TCP.
//! - Endpoints from the EndpointSlices labelled `kubernetes.io/service-name`
//!   in the service's namespace; a slice port belongs to the service port of
//!   the same name (the unnamed port of a single-port service matches the
//!   unnamed slice port). Only the first address of an endpoint is used (the
//!   only one with defined meaning); FQDN slices are skipped.
//! - Health: `ready` → Healthy; not ready but `serving` and `terminating` →
//!   Draining; otherwise Unhealthy. A missing `ready`/`serving` means true,
//!   a missing `terminating` false (the API's documented defaults).
//! - Endpoint labels: the labels of the Pod named by the endpoint's
//!   `targetRef` (kind Pod), which DestinationRule subsets select on.
//! - Locality: `<region>/<zone>`: the zone from the endpoint, the region from
//!   its node's `topology.kubernetes.io/region` label when Nodes are read
//!   (else empty: `/<zone>`).
//! - `created` is the service's creationTimestamp; the annotation
//!   `networking.istio.io/exportTo` (comma-separated) gives `export_to`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service as K8sService;
use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::{
    Endpoint, Health, Labels, Protocol, RegistryKind, RegistrySnapshot, Resolution, Service,
    ServicePort,
};

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Node label carrying the region part of an endpoint's locality.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Istio's annotation restricting where a service is visible.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// The registry's view plus what could not be used, each warning naming the
/// object at fault.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Converted {
    pub snapshot: RegistrySnapshot,
    pub warnings: Vec<String>,
}

/// What the endpoints refer to: Pods (for labels) and Nodes (for regions),
/// by metadata only.
#[derive(Default)]
pub struct Workloads<'a> {
    pods: HashMap<(&'a str, &'a str), &'a BTreeMap<String, String>>,
    node_regions: HashMap<&'a str, &'a str>,
}

impl<'a> Workloads<'a> {
    pub fn new(
        pods: impl IntoIterator<Item = &'a ObjectMeta>,
        nodes: impl IntoIterator<Item = &'a ObjectMeta>,
    ) -> Self {
        let mut w = Workloads::default();
        for pod in pods {
            if let (Some(ns), Some(name)) = (pod.namespace.as_deref(), pod.name.as_deref()) {
                static EMPTY: BTreeMap<String, String> = BTreeMap::new();
                w.pods
                    .insert((ns, name), pod.labels.as_ref().unwrap_or(&EMPTY));
            }
        }
        for node in nodes {
            let region = node.labels.as_ref().and_then(|l| l.get(REGION_LABEL));
            if let (Some(name), Some(region)) = (node.name.as_deref(), region) {
                w.node_regions.insert(name, region);
            }
        }
        w
    }

    fn pod_labels(&self, namespace: &str, name: &str) -> Option<&BTreeMap<String, String>> {
        self.pods.get(&(namespace, name)).copied()
    }
}

/// Builds the whole snapshot from the current objects.
pub fn build_snapshot<'a>(
    services: impl IntoIterator<Item = &'a K8sService>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    workloads: &Workloads<'_>,
    domain_suffix: &str,
) -> Converted {
    let mut out = Converted::default();
    let mut slices_by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
        let service = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL));
        if let Some(service) = service {
            slices_by_service
                .entry((ns, service.as_str()))
                .or_default()
                .push(slice);
        }
    }
    for k8s in services {
        let (Some(ns), Some(name)) = (
            k8s.metadata.namespace.as_deref(),
            k8s.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let Some((service, ports)) = convert_service(k8s, domain_suffix, &mut out.warnings) else {
            continue;
        };
        let endpoints = match service.resolution {
            Resolution::Dns => external_name_endpoints(k8s, &service),
            _ => slice_endpoints(
                &ports,
                slices_by_service
                    .get(&(ns, name))
                    .map(Vec::as_slice)
                    .unwrap_or_default(),
                workloads,
                &mut out.warnings,
            ),
        };
        out.snapshot
            .endpoints
            .insert(service.hostname.clone(), endpoints);
        out.snapshot.services.push(service);
    }
    out.snapshot.normalize();
    out
}

pub fn hostname(name: &str, namespace: &str, domain_suffix: &str) -> String {
    format!("{name}.{namespace}.svc.{}", domain_suffix.trim_matches('.'))
}

/// The protocol of a service port: `appProtocol` first, then the port name.
pub fn port_protocol(port_name: &str, app_protocol: Option<&str>) -> Protocol {
    app_protocol
        .and_then(parse_app_protocol)
        .unwrap_or_else(|| Protocol::from_port_name(port_name))
}

/// `appProtocol` values: Istio's protocol names and Kubernetes' standard
/// `kubernetes.io/*` ones. Anything else (a vendor's own name) is `None`,
/// so the port name decides.
pub fn parse_app_protocol(value: &str) -> Option<Protocol> {
    match value.to_ascii_lowercase().as_str() {
        "kubernetes.io/h2c" => Some(Protocol::Http2),
        "kubernetes.io/ws" => Some(Protocol::Http),
        "kubernetes.io/wss" => Some(Protocol::Tls),
        other => Protocol::parse(other),
    }
}

/// A service port as Kubernetes declares it, kept for matching slice ports.
#[derive(Clone, Debug)]
struct K8sPort {
    name: String,
    port: u16,
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|p| p.eq_ignore_ascii_case("TCP"))
}

fn convert_service(
    k8s: &K8sService,
    domain_suffix: &str,
    warnings: &mut Vec<String>,
) -> Option<(Service, Vec<K8sPort>)> {
    let meta = &k8s.metadata;
    let ns = meta.namespace.as_deref()?;
    let name = meta.name.as_deref()?;
    let spec = k8s.spec.clone().unwrap_or_default();
    let object = format!("Service {ns}/{name}");
    let external = spec.type_.as_deref() == Some("ExternalName");

    let mut ports = Vec::new();
    let mut k8s_ports = Vec::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        if !is_tcp(port.protocol.as_deref()) {
            continue; // UDP, SCTP: not proxied
        }
        let Some(number) = u16::try_from(port.port).ok().filter(|p| *p != 0) else {
            warnings.push(format!(
                "{object}: field spec.ports[{i}].port: {} is not a valid port; skipped",
                port.port
            ));
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        ports.push(ServicePort {
            name: port_name.clone(),
            port: number,
            protocol: port_protocol(&port_name, port.app_protocol.as_deref()),
        });
        k8s_ports.push(K8sPort {
            name: port_name,
            port: number,
        });
    }

    let vips = if external {
        Vec::new()
    } else {
        let ips: Vec<String> = match (&spec.cluster_ips, &spec.cluster_ip) {
            (Some(ips), _) if !ips.is_empty() => ips.clone(),
            (_, Some(ip)) => vec![ip.clone()],
            _ => Vec::new(),
        };
        ips.iter()
            .filter(|ip| !ip.is_empty() && !ip.eq_ignore_ascii_case("None"))
            .filter_map(|ip| match ip.parse::<IpAddr>() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    warnings.push(format!(
                        "{object}: field spec.clusterIPs: {ip:?} is not an IP address; ignored"
                    ));
                    None
                }
            })
            .collect()
    };

    let resolution = if external {
        match spec.external_name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => Resolution::Dns,
            _ => {
                warnings.push(format!(
                    "{object}: field spec.externalName: an ExternalName service needs a name; skipped"
                ));
                return None;
            }
        }
    } else {
        Resolution::Static
    };

    let export_to = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();

    let service = Service {
        hostname: hostname(name, ns, domain_suffix),
        namespace: ns.to_string(),
        vips,
        ports,
        registry: RegistryKind::Kubernetes,
        created: meta.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        resolution,
        mesh_external: false,
        export_to,
    };
    Some((service, k8s_ports))
}

fn external_name_endpoints(k8s: &K8sService, service: &Service) -> Vec<Endpoint> {
    let Some(external) = k8s.spec.as_ref().and_then(|s| s.external_name.as_deref()) else {
        return Vec::new();
    };
    let address = external.trim().trim_end_matches('.').to_string();
    service
        .ports
        .iter()
        .map(|p| Endpoint {
            address: address.clone(),
            port: p.port,
            service_port: p.port,
            labels: Labels::new(),
            locality: None,
            health: Health::Healthy,
            weight: None,
        })
        .collect()
}

fn slice_endpoints(
    ports: &[K8sPort],
    slices: &[&EndpointSlice],
    workloads: &Workloads<'_>,
    warnings: &mut Vec<String>,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for slice in slices {
        let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
        let object = format!(
            "EndpointSlice {ns}/{}",
            slice.metadata.name.as_deref().unwrap_or_default()
        );
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            warnings.push(format!(
                "{object}: field addressType: {:?} endpoints are not supported (only IPv4 and IPv6); slice skipped",
                slice.address_type
            ));
            continue;
        }
        for slice_port in slice.ports.iter().flatten() {
            if !is_tcp(slice_port.protocol.as_deref()) {
                continue;
            }
            let name = slice_port.name.as_deref().unwrap_or_default();
            let Some(service_port) = ports.iter().find(|p| p.name == name) else {
                continue; // a port of the service we skipped (UDP), or stale
            };
            let Some(target) = slice_port
                .port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
            else {
                continue;
            };
            for ep in slice.endpoints.iter().flatten() {
                if let Some(endpoint) = convert_endpoint(
                    ep,
                    ns,
                    target,
                    service_port.port,
                    workloads,
                    &object,
                    warnings,
                ) {
                    out.push(endpoint);
                }
            }
        }
    }
    out
}

fn convert_endpoint(
    ep: &SliceEndpoint,
    slice_namespace: &str,
    target_port: u16,
    service_port: u16,
    workloads: &Workloads<'_>,
    object: &str,
    warnings: &mut Vec<String>,
) -> Option<Endpoint> {
    let address = ep.addresses.first()?;
    if address.parse::<IpAddr>().is_err() {
        warnings.push(format!(
            "{object}: endpoint {address:?} is not an IP address; skipped"
        ));
        return None;
    }
    let labels = ep
        .target_ref
        .as_ref()
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .and_then(|r| {
            let ns = r.namespace.as_deref().unwrap_or(slice_namespace);
            workloads.pod_labels(ns, r.name.as_deref()?)
        })
        .cloned()
        .unwrap_or_default();
    let locality = ep.zone.as_deref().filter(|z| !z.is_empty()).map(|zone| {
        let region = ep
            .node_name
            .as_deref()
            .and_then(|n| workloads.node_regions.get(n).copied())
            .unwrap_or_default();
        format!("{region}/{zone}")
    });
    Some(Endpoint {
        address: address.clone(),
        port: target_port,
        service_port,
        labels,
        locality,
        health: health(ep),
        weight: None,
    })
}

/// Endpoint conditions → health; see the module documentation.
pub fn health(ep: &SliceEndpoint) -> Health {
    let conditions = ep.conditions.clone().unwrap_or_default();
    let ready = conditions.ready.unwrap_or(true);
    let serving = conditions.serving.unwrap_or(ready);
    let terminating = conditions.terminating.unwrap_or(false);
    if ready && !terminating {
        Health::Healthy
    } else if serving && terminating {
        Health::Draining
    } else {
        Health::Unhealthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SUFFIX: &str = "cluster.local";

    fn service(value: serde_json::Value) -> K8sService {
        serde_json::from_value(value).expect("Service")
    }

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).expect("EndpointSlice")
    }

    fn meta(value: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(value).expect("ObjectMeta")
    }

    fn reviews() -> K8sService {
        service(json!({
            "metadata": {"name": "reviews", "namespace": "default",
                         "creationTimestamp": "2024-05-01T10:00:00Z"},
            "spec": {
                "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"],
                "ports": [
                    {"name": "http", "port": 9080, "targetPort": 9080},
                    {"name": "web", "port": 8080, "appProtocol": "kubernetes.io/h2c"},
                    {"name": "metrics", "port": 9090},
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "grpc-api", "port": 7070, "appProtocol": "mycorp.example/custom"},
                    {"name": "tcp-db", "port": 5432, "appProtocol": "http"}
                ]
            }
        }))
    }

    fn reviews_slice(endpoints: serde_json::Value) -> EndpointSlice {
        slice(json!({
            "metadata": {"name": "reviews-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "reviews"}},
            "addressType": "IPv4",
            "ports": [
                {"name": "http", "port": 9081, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "other", "port": 1234}
            ],
            "endpoints": endpoints
        }))
    }

    fn one(services: &[K8sService], slices: &[EndpointSlice], pods: &[ObjectMeta]) -> Converted {
        let workloads = Workloads::new(pods, &[]);
        build_snapshot(services, slices, &workloads, SUFFIX)
    }

    #[test]
    fn cluster_ip_service_hostname_vips_ports_and_protocols() {
        let out = one(&[reviews()], &[], &[]);
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let svc = &out.snapshot.services[0];
        assert_eq!(svc.hostname, "reviews.default.svc.cluster.local");
        assert_eq!(svc.namespace, "default");
        assert_eq!(svc.registry, RegistryKind::Kubernetes);
        assert_eq!(svc.resolution, Resolution::Static);
        assert_eq!(
            svc.vips,
            vec![
                "10.96.0.20".parse::<IpAddr>().unwrap(),
                "fd00::20".parse().unwrap()
            ]
        );
        assert_eq!(svc.created.as_deref(), Some("2024-05-01T10:00:00Z"));
        let ports: Vec<(&str, u16, Protocol)> = svc
            .ports
            .iter()
            .map(|p| (p.name.as_str(), p.port, p.protocol))
            .collect();
        assert_eq!(
            ports,
            [
                // name prefix
                ("http", 9080, Protocol::Http),
                // appProtocol kubernetes.io/h2c
                ("web", 8080, Protocol::Http2),
                // neither: sniffed, never TCP
                ("metrics", 9090, Protocol::Unknown),
                // UDP `dns` skipped; a vendor appProtocol falls back to the name
                ("grpc-api", 7070, Protocol::Grpc),
                // appProtocol wins over the name
                ("tcp-db", 5432, Protocol::Http),
            ]
        );
    }

    #[test]
    fn app_protocol_names() {
        for (value, expected) in [
            ("http", Some(Protocol::Http)),
            ("HTTP2", Some(Protocol::Http2)),
            ("grpc", Some(Protocol::Grpc)),
            ("tcp", Some(Protocol::Tcp)),
            ("tls", Some(Protocol::Tls)),
            ("https", Some(Protocol::Tls)),
            ("kubernetes.io/h2c", Some(Protocol::Http2)),
            ("kubernetes.io/ws", Some(Protocol::Http)),
            ("kubernetes.io/wss", Some(Protocol::Tls)),
            ("example.com/thing", None),
        ] {
            assert_eq!(parse_app_protocol(value), expected, "{value}");
        }
        assert_eq!(port_protocol("", None), Protocol::Unknown);
        assert_eq!(port_protocol("tcp-x", Some("nope")), Protocol::Tcp);
    }

    #[test]
    fn headless_service_has_no_vips() {
        let svc = service(json!({
            "metadata": {"name": "db", "namespace": "data"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"],
                     "ports": [{"name": "tcp", "port": 5432}]}
        }));
        let out = one(&[svc], &[], &[]);
        let s = &out.snapshot.services[0];
        assert_eq!(s.hostname, "db.data.svc.cluster.local");
        assert!(s.vips.is_empty());
        assert_eq!(s.resolution, Resolution::Static);
        assert_eq!(out.snapshot.endpoints[&s.hostname], vec![]);
    }

    #[test]
    fn external_name_service_resolves_by_dns() {
        let svc = service(json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "api.example.com.",
                     "ports": [{"name": "https", "port": 443}]}
        }));
        let out = one(&[svc], &[], &[]);
        let s = &out.snapshot.services[0];
        assert_eq!(s.resolution, Resolution::Dns);
        assert!(s.vips.is_empty());
        assert_eq!(s.ports[0].protocol, Protocol::Tls);
        let eps = &out.snapshot.endpoints[&s.hostname];
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].address, "api.example.com");
        assert_eq!((eps[0].port, eps[0].service_port), (443, 443));

        let broken = service(json!({
            "metadata": {"name": "ext2", "namespace": "default"},
            "spec": {"type": "ExternalName", "ports": [{"port": 80}]}
        }));
        let out = one(&[broken], &[], &[]);
        assert!(out.snapshot.services.is_empty());
        assert!(
            out.warnings[0].contains("Service default/ext2: field spec.externalName"),
            "{:?}",
            out.warnings
        );
    }

    #[test]
    fn slice_ports_match_service_ports_by_name_and_udp_is_skipped() {
        let s = reviews_slice(json!([
            {"addresses": ["10.1.0.5"], "conditions": {"ready": true}}
        ]));
        let out = one(&[reviews()], &[s], &[]);
        let eps = &out.snapshot.endpoints["reviews.default.svc.cluster.local"];
        // Only `http` matches a service port; `dns` is UDP, `other` unknown.
        assert_eq!(eps.len(), 1, "{eps:?}");
        assert_eq!(eps[0].address, "10.1.0.5");
        assert_eq!(eps[0].port, 9081, "the slice gives the target port");
        assert_eq!(eps[0].service_port, 9080);
        assert_eq!(eps[0].health, Health::Healthy);
    }

    #[test]
    fn unnamed_single_port_matches_unnamed_slice_port() {
        let svc = service(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80, "targetPort": 8080}]}
        }));
        let sl = slice(json!({
            "metadata": {"name": "web-1", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"port": 8080}],
            "endpoints": [{"addresses": ["10.1.0.9"]}]
        }));
        let out = one(&[svc], &[sl], &[]);
        let eps = &out.snapshot.endpoints["web.default.svc.cluster.local"];
        assert_eq!(eps.len(), 1);
        assert_eq!((eps[0].port, eps[0].service_port), (8080, 80));
        assert_eq!(
            out.snapshot.services[0].ports[0].protocol,
            Protocol::Unknown
        );
    }

    #[test]
    fn slices_of_other_services_or_namespaces_are_not_mixed_in() {
        let mut other_ns = reviews_slice(json!([{"addresses": ["10.9.0.1"]}]));
        other_ns.metadata.namespace = Some("prod".into());
        let mut unlabelled = reviews_slice(json!([{"addresses": ["10.9.0.2"]}]));
        unlabelled.metadata.labels = None;
        let out = one(&[reviews()], &[other_ns, unlabelled], &[]);
        assert!(out.snapshot.endpoints["reviews.default.svc.cluster.local"].is_empty());
    }

    #[test]
    fn conditions_map_to_health() {
        let s = reviews_slice(json!([
            {"addresses": ["10.1.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false}},
            {"addresses": ["10.1.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.1.0.3"], "conditions": {"ready": false, "serving": false, "terminating": true}},
            {"addresses": ["10.1.0.4"], "conditions": {"ready": false}},
            {"addresses": ["10.1.0.5"]}
        ]));
        let out = one(&[reviews()], &[s], &[]);
        let health: BTreeMap<&str, Health> =
            out.snapshot.endpoints["reviews.default.svc.cluster.local"]
                .iter()
                .map(|e| (e.address.as_str(), e.health))
                .collect();
        assert_eq!(health["10.1.0.1"], Health::Healthy);
        assert_eq!(health["10.1.0.2"], Health::Draining);
        assert_eq!(health["10.1.0.3"], Health::Unhealthy);
        assert_eq!(health["10.1.0.4"], Health::Unhealthy);
        assert_eq!(health["10.1.0.5"], Health::Healthy, "no conditions: ready");
    }

    #[test]
    fn endpoint_labels_come_from_the_target_pod_and_locality_from_zone_and_node() {
        let s = reviews_slice(json!([
            {"addresses": ["10.1.0.1"], "zone": "zone-a", "nodeName": "node-1",
             "targetRef": {"kind": "Pod", "name": "reviews-v2-x", "namespace": "default"}},
            {"addresses": ["10.1.0.2"], "zone": "zone-b",
             "targetRef": {"kind": "Pod", "name": "reviews-v3-y"}},
            {"addresses": ["10.1.0.3"],
             "targetRef": {"kind": "Pod", "name": "gone"}},
            {"addresses": ["10.1.0.4"],
             "targetRef": {"kind": "Node", "name": "reviews-v2-x"}}
        ]));
        let pods = [
            meta(json!({"name": "reviews-v2-x", "namespace": "default",
                        "labels": {"app": "reviews", "version": "v2"}})),
            meta(json!({"name": "reviews-v3-y", "namespace": "default",
                        "labels": {"app": "reviews", "version": "v3"}})),
            meta(json!({"name": "reviews-v3-y", "namespace": "other",
                        "labels": {"version": "wrong"}})),
        ];
        let nodes = [meta(
            json!({"name": "node-1", "labels": {"topology.kubernetes.io/region": "eu"}}),
        )];
        let workloads = Workloads::new(&pods, &nodes);
        let out = build_snapshot(&[reviews()], &[s], &workloads, SUFFIX);
        let eps: BTreeMap<&str, &Endpoint> =
            out.snapshot.endpoints["reviews.default.svc.cluster.local"]
                .iter()
                .map(|e| (e.address.as_str(), e))
                .collect();
        assert_eq!(eps["10.1.0.1"].labels["version"], "v2");
        assert_eq!(eps["10.1.0.1"].locality.as_deref(), Some("eu/zone-a"));
        assert_eq!(eps["10.1.0.2"].labels["version"], "v3");
        assert_eq!(eps["10.1.0.2"].locality.as_deref(), Some("/zone-b"));
        assert!(eps["10.1.0.3"].labels.is_empty(), "pod not (yet) known");
        assert!(eps["10.1.0.3"].locality.is_none());
        assert!(eps["10.1.0.4"].labels.is_empty(), "not a Pod reference");
    }

    #[test]
    fn fqdn_slices_and_non_ip_addresses_are_skipped_with_warnings() {
        let mut fqdn = reviews_slice(json!([{"addresses": ["a.example.com"]}]));
        fqdn.address_type = "FQDN".into();
        let bad = reviews_slice(json!([{"addresses": ["not-an-ip"]}]));
        let out = one(&[reviews()], &[fqdn, bad], &[]);
        assert!(out.snapshot.endpoints["reviews.default.svc.cluster.local"].is_empty());
        assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
        assert!(out.warnings[0].contains("EndpointSlice default/reviews-abc: field addressType"));
    }

    #[test]
    fn export_to_annotation_and_domain_suffix() {
        let mut svc = reviews();
        svc.metadata.annotations = Some(BTreeMap::from([(
            EXPORT_TO_ANNOTATION.to_string(),
            " ., istio-system ".to_string(),
        )]));
        let workloads = Workloads::default();
        let out = build_snapshot(&[svc], &[], &workloads, "example.org.");
        let s = &out.snapshot.services[0];
        assert_eq!(s.hostname, "reviews.default.svc.example.org");
        assert_eq!(s.export_to, [".", "istio-system"]);
    }
}
