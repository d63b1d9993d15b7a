//! CDS: a cluster per service port and DestinationRule subset, plus
//! `PassthroughCluster` and `BlackHoleCluster`.

use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy},
};
use pilotfish_model::{Endpoint, Resolution};

use crate::diagnostics::Diagnostic;
use crate::emit::context::Context;
use crate::emit::endpoints::{self, AddressKind};
use crate::emit::envoy::observability;
use crate::emit::policy::traffic_policy;
use crate::emit::service_clusters::{self, ServiceCluster};
use crate::emit::sidecar::inbound;
use crate::names;
use crate::protobuf;
use crate::provenance;

/// Every cluster the proxy may route to, sorted by name.
pub fn build(ctx: &Context, diags: &mut Vec<Diagnostic>) -> Vec<Cluster> {
    diags.extend(ctx.destination_rules.unsupported());
    let mut out: Vec<Cluster> = service_clusters::list(ctx)
        .iter()
        .map(|sc| service_cluster(ctx, sc, diags))
        .collect();
    out.push(passthrough_cluster(ctx));
    out.push(blackhole_cluster(ctx));
    out.extend(inbound::clusters(ctx));
    out.extend(zipkin_cluster(ctx));
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// What every cluster starts from: the mesh connect timeout and lifted
/// circuit breakers.
fn base_cluster(ctx: &Context, name: &str) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(protobuf::duration(ctx.mesh.mesh.connect_timeout)),
        circuit_breakers: Some(traffic_policy::default_circuit_breakers()),
        ..Default::default()
    }
}

fn service_cluster(ctx: &Context, sc: &ServiceCluster, diags: &mut Vec<Diagnostic>) -> Cluster {
    let mut cluster = base_cluster(ctx, &sc.name);
    match sc.service.resolution {
        Resolution::Static => make_eds(&mut cluster),
        Resolution::Dns => make_strict_dns(&mut cluster, sc, &sc.endpoints(ctx)),
        Resolution::Passthrough => make_original_dst(&mut cluster),
    }
    let policy = ctx
        .destination_rules
        .policy(&sc.service.hostname, sc.port.port, sc.subset_name());
    traffic_policy::apply(&mut cluster, &policy, sc.port.protocol, diags);
    let subset_rule = sc.subset.as_ref().map(|s| s.object);
    cluster.metadata = provenance::metadata(policy.objects().chain(subset_rule));
    cluster
}

fn discovery_type(kind: DiscoveryType) -> Option<ClusterDiscoveryType> {
    Some(ClusterDiscoveryType::Type(kind as i32))
}

fn make_eds(cluster: &mut Cluster) {
    cluster.cluster_discovery_type = discovery_type(DiscoveryType::Eds);
    cluster.eds_cluster_config = Some(EdsClusterConfig {
        eds_config: Some(protobuf::ads_config_source()),
        service_name: cluster.name.clone(),
    });
}

/// DNS services carry their endpoints inline; with none known, the proxy
/// resolves the service hostname itself.
fn make_strict_dns(cluster: &mut Cluster, sc: &ServiceCluster, endpoints: &[&Endpoint]) {
    cluster.cluster_discovery_type = discovery_type(DiscoveryType::StrictDns);
    cluster.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
    let fallback;
    let endpoints = if endpoints.is_empty() && sc.subset.is_none() {
        fallback = Endpoint {
            address: sc.service.hostname.clone(),
            port: sc.port.port,
            service_port: sc.port.port,
            labels: Default::default(),
            locality: None,
            health: Default::default(),
            weight: None,
        };
        vec![&fallback]
    } else {
        endpoints.to_vec()
    };
    let assignment =
        endpoints::load_assignment(&cluster.name, &endpoints, AddressKind::IpOrHostname);
    cluster.load_assignment = Some(assignment);
}

fn make_original_dst(cluster: &mut Cluster) {
    cluster.cluster_discovery_type = discovery_type(DiscoveryType::OriginalDst);
    cluster.lb_policy = LbPolicy::ClusterProvided as i32;
}

fn passthrough_cluster(ctx: &Context) -> Cluster {
    let mut cluster = base_cluster(ctx, names::PASSTHROUGH_CLUSTER);
    make_original_dst(&mut cluster);
    cluster
}

/// The Zipkin collector of the mesh's tracing, resolved by DNS (an IP
/// address works too).
fn zipkin_cluster(ctx: &Context) -> Option<Cluster> {
    let collector = ctx.mesh.mesh.zipkin.as_ref()?;
    let mut cluster = base_cluster(ctx, observability::ZIPKIN_CLUSTER);
    cluster.cluster_discovery_type = discovery_type(DiscoveryType::StrictDns);
    cluster.dns_lookup_family = DnsLookupFamily::V4Preferred as i32;
    let endpoint = Endpoint {
        address: collector.host.clone(),
        port: collector.port,
        service_port: collector.port,
        labels: Default::default(),
        locality: None,
        health: Default::default(),
        weight: None,
    };
    cluster.load_assignment = Some(endpoints::load_assignment(
        &cluster.name,
        &[&endpoint],
        AddressKind::IpOrHostname,
    ));
    Some(cluster)
}

/// A static cluster with no hosts: connections to it are refused.
fn blackhole_cluster(ctx: &Context) -> Cluster {
    Cluster {
        cluster_discovery_type: discovery_type(DiscoveryType::Static),
        ..base_cluster(ctx, names::BLACKHOLE_CLUSTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::DiagnosticKind;
    use crate::test_support::*;
    use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        HttpProtocolOptions,
        http_protocol_options::{UpstreamProtocolOptions, explicit_http_config::ProtocolConfig},
    };
    use pilotfish_model::Protocol;

    fn upstream_options(cluster: &Cluster) -> Option<HttpProtocolOptions> {
        let any = cluster
            .typed_extension_protocol_options
            .get(names::UPSTREAM_HTTP_PROTOCOL_OPTIONS)?;
        protobuf::unpack(any)
    }

    #[test]
    fn cluster_names_cover_ports_subsets_and_the_special_clusters() {
        let t = translate_for(&bookinfo(""), &sidecar("default"));
        assert_eq!(
            cluster_names(&t),
            [
                "BlackHoleCluster",
                "InboundPassthroughCluster",
                "PassthroughCluster",
                // Byte order: 'v' sorts before '|'.
                "outbound|9080|v1|reviews.default.svc.cluster.local",
                "outbound|9080|v2|reviews.default.svc.cluster.local",
                "outbound|9080|v3|reviews.default.svc.cluster.local",
                "outbound|9080||details.default.svc.cluster.local",
                "outbound|9080||productpage.default.svc.cluster.local",
                "outbound|9080||ratings.default.svc.cluster.local",
                "outbound|9080||reviews.default.svc.cluster.local",
            ]
        );
        assert_envoy_invariants(&t);
    }

    #[test]
    fn eds_clusters_use_ads_and_their_own_name() {
        let t = translate_for(&bookinfo(""), &sidecar("default"));
        let name = "outbound|9080|v1|reviews.default.svc.cluster.local";
        let cluster = cluster_named(&t, name);
        assert_eq!(
            cluster.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32))
        );
        let eds = cluster.eds_cluster_config.as_ref().unwrap();
        assert_eq!(eds.service_name, name);
        let source = eds.eds_config.as_ref().unwrap();
        assert!(matches!(
            source.config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        assert_eq!(
            source.resource_api_version,
            envoy_types::pb::envoy::config::core::v3::ApiVersion::V3 as i32
        );
        assert_eq!(cluster.connect_timeout, Some(protobuf::seconds(10)));
        assert!(
            upstream_options(cluster).is_none(),
            "HTTP/1.1 needs no protocol options"
        );
    }

    #[test]
    fn http2_and_grpc_ports_get_explicit_http2_upstreams_and_unknown_follows_downstream() {
        let m = mesh(
            vec![
                service(
                    "grpc.default.svc.cluster.local",
                    &[],
                    &[(50051, Protocol::Grpc)],
                ),
                service(
                    "h2.default.svc.cluster.local",
                    &[],
                    &[(8443, Protocol::Http2)],
                ),
                service(
                    "legacy.default.svc.cluster.local",
                    &[],
                    &[(7000, Protocol::Unknown)],
                ),
                service(
                    "db.default.svc.cluster.local",
                    &[],
                    &[(5432, Protocol::Tcp)],
                ),
            ],
            vec![],
            &[],
        );
        let t = translate_for(&m, &sidecar("default"));
        for name in [
            "outbound|50051||grpc.default.svc.cluster.local",
            "outbound|8443||h2.default.svc.cluster.local",
        ] {
            let Some(UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) =
                upstream_options(cluster_named(&t, name))
                    .unwrap()
                    .upstream_protocol_options
            else {
                panic!("{name} is not explicit")
            };
            assert!(matches!(
                explicit.protocol_config,
                Some(ProtocolConfig::Http2ProtocolOptions(_))
            ));
        }
        let legacy = upstream_options(cluster_named(
            &t,
            "outbound|7000||legacy.default.svc.cluster.local",
        ))
        .unwrap();
        assert!(matches!(
            legacy.upstream_protocol_options,
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_))
        ));
        assert!(
            upstream_options(cluster_named(
                &t,
                "outbound|5432||db.default.svc.cluster.local"
            ))
            .is_none()
        );
    }

    #[test]
    fn dns_services_are_strict_dns_with_inline_endpoints() {
        let mut svc = service("api.example.com", &[], &[(443, Protocol::Tls)]);
        svc.resolution = Resolution::Dns;
        let mut bare = service("bare.example.com", &[], &[(80, Protocol::Http)]);
        bare.resolution = Resolution::Dns;
        let m = mesh(
            vec![svc, bare],
            vec![(
                "api.example.com",
                vec![endpoint("eu.api.example.com", 443, 443, &[])],
            )],
            &[],
        );
        let t = translate_for(&m, &sidecar("default"));
        let cluster = cluster_named(&t, "outbound|443||api.example.com");
        assert_eq!(
            cluster.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::StrictDns as i32))
        );
        let inline = cluster.load_assignment.as_ref().unwrap();
        assert_eq!(
            endpoint_address(&inline.endpoints[0].lb_endpoints[0]),
            "eu.api.example.com:443"
        );
        let bare = cluster_named(&t, "outbound|80||bare.example.com")
            .load_assignment
            .clone()
            .unwrap();
        assert_eq!(
            endpoint_address(&bare.endpoints[0].lb_endpoints[0]),
            "bare.example.com:80"
        );
        assert!(
            t.resources
                .endpoints
                .iter()
                .all(|e| !e.cluster_name.ends_with("example.com")),
            "no EDS for DNS"
        );
    }

    #[test]
    fn passthrough_services_and_passthrough_cluster_are_original_dst() {
        let mut svc = service("any.example.com", &[], &[(443, Protocol::Tls)]);
        svc.resolution = Resolution::Passthrough;
        let t = translate_for(&mesh(vec![svc], vec![], &[]), &sidecar("default"));
        for name in ["outbound|443||any.example.com", "PassthroughCluster"] {
            let cluster = cluster_named(&t, name);
            assert_eq!(
                cluster.cluster_discovery_type,
                Some(ClusterDiscoveryType::Type(
                    DiscoveryType::OriginalDst as i32
                ))
            );
            assert_eq!(cluster.lb_policy, LbPolicy::ClusterProvided as i32);
        }
        let blackhole = cluster_named(&t, "BlackHoleCluster");
        assert_eq!(
            blackhole.cluster_discovery_type,
            Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32))
        );
        assert!(blackhole.load_assignment.is_none());
    }

    const POLICY: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 250ms}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 20, maxRequestsPerConnection: 5, maxRetries: 1}
    outlierDetection: {consecutive5xxErrors: 3, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  subsets:
  - name: fast
    labels: {tier: fast}
    trafficPolicy: {loadBalancer: {simple: RANDOM}}
"#;

    #[test]
    fn destination_rule_policy_maps_to_lb_circuit_breakers_and_outlier_detection() {
        let t = translate_for(&bookinfo(POLICY), &sidecar("default"));
        let cluster = cluster_named(&t, "outbound|9080||ratings.default.svc.cluster.local");
        assert_eq!(cluster.lb_policy, LbPolicy::LeastRequest as i32);
        assert_eq!(
            cluster.connect_timeout,
            Some(protobuf::duration(std::time::Duration::from_millis(250)))
        );
        let th = &cluster.circuit_breakers.as_ref().unwrap().thresholds[0];
        let values = [
            th.max_connections,
            th.max_pending_requests,
            th.max_requests,
            th.max_retries,
        ];
        assert_eq!(values.map(|v| v.unwrap().value), [100, 10, 20, 1]);
        let options = upstream_options(cluster).unwrap();
        let common = options.common_http_protocol_options.unwrap();
        assert_eq!(
            common.max_requests_per_connection,
            Some(protobuf::u32_value(5))
        );
        let od = cluster.outlier_detection.as_ref().unwrap();
        assert_eq!(od.consecutive_5xx, Some(protobuf::u32_value(3)));
        assert_eq!(od.base_ejection_time, Some(protobuf::seconds(30)));
        assert_eq!(od.max_ejection_percent, Some(protobuf::u32_value(50)));
        let fast = cluster_named(&t, "outbound|9080|fast|ratings.default.svc.cluster.local");
        assert_eq!(
            fast.lb_policy,
            LbPolicy::Random as i32,
            "subset policy overrides"
        );
        assert!(fast.outlier_detection.is_some(), "the rest is inherited");
    }

    #[test]
    fn bad_duration_in_destination_rule_is_reported_and_ignored() {
        let dr = POLICY.replace("connectTimeout: 250ms", "connectTimeout: soon");
        let t = translate_for(&bookinfo(&dr), &sidecar("default"));
        let cluster = cluster_named(&t, "outbound|9080||ratings.default.svc.cluster.local");
        assert_eq!(
            cluster.connect_timeout,
            Some(protobuf::seconds(10)),
            "mesh default kept"
        );
        assert_one_diagnostic(
            &t,
            DiagnosticKind::InvalidField,
            "DestinationRule default/ratings",
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        );
    }

    #[test]
    fn unsupported_destination_rule_fields_are_reported() {
        let dr = POLICY.replace(
            "loadBalancer: {simple: LEAST_REQUEST}",
            "loadBalancer: {simple: LEAST_REQUEST, warmupDurationSecs: 10s}",
        );
        let t = translate_for(&bookinfo(&dr), &sidecar("default"));
        assert_one_diagnostic(
            &t,
            DiagnosticKind::Unsupported,
            "DestinationRule default/ratings",
            "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
        );
    }
    fn tls_context(
        cluster: &Cluster,
    ) -> Option<envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext>
    {
        use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
        let socket = cluster.transport_socket.as_ref()?;
        assert_eq!(socket.name, "envoy.transport_sockets.tls");
        let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
            panic!("no typed config")
        };
        protobuf::unpack(any)
    }

    const TLS_RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-tls, namespace: default, creationTimestamp: "2023-01-01T00:00:00Z"}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: /etc/ca.pem}
    portLevelSettings:
    - port: {number: 9080}
      tls: {mode: SIMPLE, caCertificates: /etc/ca.pem, sni: reviews.internal}
  subsets:
  - name: plain
    labels: {version: v2}
    trafficPolicy: {tls: {mode: DISABLE}}
  - name: mutual
    labels: {version: v3}
    trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /etc/ca.pem}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: default}
spec:
  host: details
  trafficPolicy: {tls: {mode: SIMPLE, caCertificates: /etc/ca.pem}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
"#;

    #[test]
    fn destination_rule_tls_originates_tls_with_port_and_subset_overrides() {
        let t = translate_for(&bookinfo(TLS_RULES), &sidecar("default"));
        let top = tls_context(cluster_named(&t, &reviews_cluster(""))).unwrap();
        assert_eq!(
            top.sni, "reviews.internal",
            "port level replaces the top level"
        );
        assert!(tls_context(cluster_named(&t, &reviews_cluster("plain"))).is_none());
        let mutual = tls_context(cluster_named(&t, &reviews_cluster("mutual"))).unwrap();
        assert_eq!(mutual.common_tls_context.unwrap().tls_certificates.len(), 1);
        assert_eq!(
            mutual.sni, "",
            "the subset's own tls replaces the whole section"
        );
        let v2 = tls_context(cluster_named(&t, &reviews_cluster("v2"))).unwrap();
        assert_eq!(v2.sni, "reviews.internal", "subsets without tls inherit it");
        assert!(
            tls_context(cluster_named(
                &t,
                "outbound|9080||ratings.default.svc.cluster.local"
            ))
            .is_none()
        );
        assert_one_diagnostic(
            &t,
            DiagnosticKind::Unsupported,
            "DestinationRule default/ratings",
            "spec.trafficPolicy.tls.mode",
        );
        assert_envoy_invariants(&t);
    }

    #[test]
    fn http_clusters_without_sni_take_it_from_the_host_header() {
        let t = translate_for(&bookinfo(TLS_RULES), &sidecar("default"));
        let details = cluster_named(&t, "outbound|9080||details.default.svc.cluster.local");
        assert_eq!(tls_context(details).unwrap().sni, "");
        let options = upstream_options(details).expect("HTTP options for auto SNI");
        let upstream = options.upstream_http_protocol_options.unwrap();
        assert!(upstream.auto_sni && upstream.auto_san_validation);
        assert!(matches!(
            options.upstream_protocol_options,
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(_))
        ));
        let mutual = cluster_named(&t, &reviews_cluster("mutual"));
        let upstream = upstream_options(mutual)
            .unwrap()
            .upstream_http_protocol_options
            .unwrap();
        assert!(upstream.auto_sni && upstream.auto_san_validation);
        let explicit = cluster_named(&t, &reviews_cluster(""));
        assert!(
            upstream_options(explicit).is_none(),
            "explicit sni: no auto SNI"
        );
    }

    #[test]
    fn http2_upstreams_offer_h2_and_tcp_ones_no_alpn_or_auto_sni() {
        let dr = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all, namespace: default}
spec:
  host: "*.default.svc.cluster.local"
  trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true}}
"#;
        let m = mesh(
            vec![
                service(
                    "grpc.default.svc.cluster.local",
                    &["10.0.0.1"],
                    &[(50051, Protocol::Grpc)],
                ),
                service(
                    "db.default.svc.cluster.local",
                    &["10.0.0.2"],
                    &[(5432, Protocol::Tcp)],
                ),
            ],
            vec![],
            &config(dr),
        );
        let t = translate_for(&m, &sidecar("default"));
        let grpc = cluster_named(&t, "outbound|50051||grpc.default.svc.cluster.local");
        let alpn = tls_context(grpc)
            .unwrap()
            .common_tls_context
            .unwrap()
            .alpn_protocols;
        assert_eq!(alpn, ["h2"]);
        let upstream = upstream_options(grpc)
            .unwrap()
            .upstream_http_protocol_options
            .unwrap();
        assert!(
            upstream.auto_sni && !upstream.auto_san_validation,
            "nothing is verified"
        );
        let db = cluster_named(&t, "outbound|5432||db.default.svc.cluster.local");
        assert!(
            tls_context(db)
                .unwrap()
                .common_tls_context
                .unwrap()
                .alpn_protocols
                .is_empty()
        );
        assert!(upstream_options(db).is_none());
    }
}
