//! DestinationRule traffic policy applied to a cluster (load balancing,
//! connection pool, outlier detection, upstream protocol, TLS origination)
//! and to routes (consistent-hash keys).

use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection as EnvoyOutlierDetection, UpstreamConnectionOptions,
    circuit_breakers::Thresholds,
    cluster::{
        ClusterDiscoveryType, CommonLbConfig, DiscoveryType, LbConfig, LbPolicy, MaglevLbConfig,
        RingHashLbConfig,
    },
};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpProtocolOptions,
    TcpKeepalive, UpstreamHttpProtocolOptions,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{HashPolicy, hash_policy};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
        explicit_http_config::ProtocolConfig,
    },
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{UInt32Value, UInt64Value};
use pilotfish_crds::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, ConsistentHashLb, H2UpgradePolicy,
    HttpSettings, LoadBalancerSettings, OutlierDetection, SimpleLb, TcpSettings,
};
use pilotfish_model::Protocol;

use crate::diagnostics::Diagnostic;
use crate::emit::envoy::mesh_tls;
use crate::emit::policy::destination_rules::{EffectivePolicy, Sourced};
use crate::emit::policy::locality;
use crate::emit::policy::upstream_tls;
use crate::names;
use crate::protobuf::{self, count, u32_value};

/// Envoy's default circuit breakers (1024 connections, 3 retries...) are far
/// too low for a mesh; like Istio, lift them unless a rule sets them.
pub fn default_circuit_breakers() -> CircuitBreakers {
    let max = Some(u32_value(u32::MAX));
    CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: max,
            max_pending_requests: max,
            max_requests: max,
            max_retries: max,
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Applies `policy` to `cluster`, whose service port speaks `protocol`.
pub fn apply(
    cluster: &mut Cluster,
    policy: &EffectivePolicy,
    protocol: Protocol,
    diags: &mut Vec<Diagnostic>,
) {
    if locality::is_passthrough(policy.locality_policy()) {
        make_passthrough(cluster);
    }
    // ORIGINAL_DST clusters must keep CLUSTER_PROVIDED.
    if let Some(lb) = &policy.load_balancer
        && cluster.lb_policy != LbPolicy::ClusterProvided as i32
    {
        apply_load_balancer(cluster, lb);
    }
    if let Some(pool) = &policy.connection_pool {
        apply_connection_pool(cluster, pool, diags);
    }
    if let Some(od) = &policy.outlier_detection {
        apply_outlier_detection(cluster, od, diags);
    }
    let proxy_locality = policy.proxy_locality.as_ref();
    locality::apply_cluster(cluster, proxy_locality, policy.locality_policy());
    if let Some(assignment) = cluster.load_assignment.as_mut() {
        // DNS clusters carry their endpoints inline.
        locality::apply(assignment, proxy_locality, policy.locality_policy());
    }
    let http = (policy.connection_pool.as_ref())
        .and_then(|pool| pool.value.http.as_ref().map(|h| pool.nested(h, "http")));
    let mut options = http_protocol_options(protocol, http.as_ref(), diags);
    let upstream = upstream(protocol, http.as_ref().map(|h| h.value));
    match (&policy.tls, &policy.mesh_tls) {
        (Some(tls), Some(mesh)) if tls.value.mode == Some(ClientTlsMode::IstioMutual) => {
            let sni = tls
                .value
                .sni
                .clone()
                .unwrap_or_else(|| mesh_tls::sni_for_cluster(&cluster.name));
            cluster.transport_socket =
                Some(mesh.upstream(mesh_alpn(upstream), sni, &tls.value.subject_alt_names));
        }
        (Some(tls), _) => {
            let credential = policy.tls_credential.as_ref();
            apply_tls(cluster, &mut options, tls.value, upstream, credential);
        }
        // No TLS settings: Istio's auto mTLS, for the mesh's own clusters.
        (None, Some(mesh)) if auto_mtls_applies(cluster) => {
            let sni = mesh_tls::sni_for_cluster(&cluster.name);
            cluster.transport_socket_matches = mesh.auto(mesh_alpn(upstream), sni);
        }
        (None, _) => {}
    }
    if let Some(options) = options {
        cluster.typed_extension_protocol_options.insert(
            names::UPSTREAM_HTTP_PROTOCOL_OPTIONS.to_string(),
            protobuf::any(options),
        );
    }
}

/// What a mesh client offers: whether the stream inside is HTTP, so that
/// the server's sidecar picks its HTTP chain.
fn mesh_alpn(upstream: Option<Upstream>) -> &'static [&'static str] {
    match upstream {
        Some(Upstream::Http2) => &mesh_tls::H2_ALPN,
        Some(Upstream::Http1 | Upstream::Downstream) => &mesh_tls::HTTP11_ALPN,
        None => &mesh_tls::TCP_ALPN,
    }
}

/// Outbound clusters with endpoints of their own (not ORIGINAL_DST).
fn auto_mtls_applies(cluster: &Cluster) -> bool {
    let original_dst = cluster.cluster_discovery_type
        == Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        ));
    cluster.name.starts_with("outbound|") && !original_dst
}

/// TLS origination; HTTP clusters without an explicit SNI take it from the
/// request's Host (which needs upstream HTTP options even for HTTP/1.1).
fn apply_tls(
    cluster: &mut Cluster,
    options: &mut Option<HttpProtocolOptions>,
    tls: &ClientTlsSettings,
    upstream: Option<Upstream>,
    credential: Option<&upstream_tls::FoundCredential>,
) {
    let alpn: &[&str] = match upstream {
        Some(Upstream::Http2) => &["h2"],
        _ => &[],
    };
    let Some(origination) = upstream_tls::origination(tls, alpn, credential) else {
        return;
    };
    cluster.transport_socket = Some(origination.transport_socket);
    if origination.auto_sni && upstream.is_some() {
        let options = options.get_or_insert_with(|| HttpProtocolOptions {
            upstream_protocol_options: Some(explicit(ProtocolConfig::HttpProtocolOptions(
                Http1ProtocolOptions::default(),
            ))),
            ..Default::default()
        });
        options.upstream_http_protocol_options = Some(UpstreamHttpProtocolOptions {
            auto_sni: true,
            auto_san_validation: origination.auto_san_validation,
            ..Default::default()
        });
    }
}

/// `simple: PASSTHROUGH`: connect to the address the caller dialled, like
/// Istio: ORIGINAL_DST with the cluster-provided load balancer and no
/// endpoints of its own.
fn make_passthrough(cluster: &mut Cluster) {
    cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
        DiscoveryType::OriginalDst as i32,
    ));
    cluster.lb_policy = LbPolicy::ClusterProvided as i32;
    cluster.lb_config = None;
    cluster.eds_cluster_config = None;
    cluster.load_assignment = None;
    cluster.dns_lookup_family = 0;
}

fn apply_load_balancer(cluster: &mut Cluster, lb: &Sourced<LoadBalancerSettings>) {
    if let Some(hash) = &lb.value.consistent_hash {
        apply_consistent_hash(cluster, hash);
        return;
    }
    let policy = match lb.value.simple {
        Some(SimpleLb::LeastRequest | SimpleLb::LeastConn) => LbPolicy::LeastRequest,
        Some(SimpleLb::Random) => LbPolicy::Random,
        // PASSTHROUGH clusters are CLUSTER_PROVIDED (see make_passthrough).
        Some(SimpleLb::RoundRobin | SimpleLb::Unspecified | SimpleLb::Passthrough) | None => {
            LbPolicy::RoundRobin
        }
    };
    cluster.lb_policy = policy as i32;
}

fn apply_consistent_hash(cluster: &mut Cluster, hash: &ConsistentHashLb) {
    if let Some(maglev) = &hash.maglev {
        cluster.lb_policy = LbPolicy::Maglev as i32;
        cluster.lb_config = Some(LbConfig::MaglevLbConfig(MaglevLbConfig {
            table_size: maglev.table_size.map(|value| UInt64Value { value }),
        }));
        return;
    }
    let ring_size = hash
        .ring_hash
        .as_ref()
        .and_then(|r| r.minimum_ring_size)
        .or(hash.minimum_ring_size);
    cluster.lb_policy = LbPolicy::RingHash as i32;
    cluster.lb_config = Some(LbConfig::RingHashLbConfig(RingHashLbConfig {
        minimum_ring_size: ring_size.map(|value| UInt64Value { value }),
        ..Default::default()
    }));
}

fn apply_connection_pool(
    cluster: &mut Cluster,
    pool: &Sourced<ConnectionPoolSettings>,
    diags: &mut Vec<Diagnostic>,
) {
    let tcp = pool.value.tcp.as_ref();
    let http = pool.value.http.as_ref();
    let breakers = cluster
        .circuit_breakers
        .get_or_insert_with(default_circuit_breakers);
    if let Some(thresholds) = breakers.thresholds.first_mut() {
        override_count(
            &mut thresholds.max_connections,
            tcp.and_then(|t| t.max_connections),
        );
        override_count(
            &mut thresholds.max_pending_requests,
            http.and_then(|h| h.http1_max_pending_requests),
        );
        override_count(
            &mut thresholds.max_requests,
            http.and_then(|h| h.http2_max_requests),
        );
        override_count(
            &mut thresholds.max_retries,
            http.and_then(|h| h.max_retries),
        );
    }
    if let Some(tcp) = tcp {
        apply_tcp_settings(cluster, tcp, pool, diags);
    }
}

/// Istio reads 0 (the proto default) as "not set": Envoy's default stays.
fn override_count(slot: &mut Option<UInt32Value>, value: Option<i32>) {
    if let Some(value) = value.filter(|v| *v > 0) {
        *slot = Some(count(value));
    }
}

fn apply_tcp_settings(
    cluster: &mut Cluster,
    tcp: &TcpSettings,
    pool: &Sourced<ConnectionPoolSettings>,
    diags: &mut Vec<Diagnostic>,
) {
    if let Some(timeout) =
        pool.duration(tcp.connect_timeout.as_deref(), "tcp.connectTimeout", diags)
    {
        cluster.connect_timeout = Some(timeout);
    }
    let Some(keepalive) = &tcp.tcp_keepalive else {
        return;
    };
    let mut seconds = |text: &Option<String>, field: &str| {
        let parsed = pool.duration(text.as_deref(), field, diags);
        parsed.map(|d| u32_value(u32::try_from(d.seconds).unwrap_or(u32::MAX)))
    };
    let keepalive_time = seconds(&keepalive.time, "tcp.tcpKeepalive.time");
    let keepalive_interval = seconds(&keepalive.interval, "tcp.tcpKeepalive.interval");
    cluster.upstream_connection_options = Some(UpstreamConnectionOptions {
        tcp_keepalive: Some(TcpKeepalive {
            keepalive_probes: keepalive.probes.map(u32_value),
            keepalive_time,
            keepalive_interval,
        }),
        ..Default::default()
    });
}

fn apply_outlier_detection(
    cluster: &mut Cluster,
    od: &Sourced<OutlierDetection>,
    diags: &mut Vec<Diagnostic>,
) {
    let v = od.value;
    let full = Some(u32_value(100));
    let off = Some(u32_value(0));
    let consecutive_5xx = v
        .consecutive_5xx_errors
        .or(v.consecutive_errors.map(|n| u32::try_from(n).unwrap_or(0)));
    let mut out = EnvoyOutlierDetection {
        interval: od.duration(v.interval.as_deref(), "interval", diags),
        base_ejection_time: od.duration(v.base_ejection_time.as_deref(), "baseEjectionTime", diags),
        max_ejection_percent: v.max_ejection_percent.map(count),
        split_external_local_origin_errors: v.split_external_local_origin_errors.unwrap_or(false),
        // Istio never ejects on success-rate statistics.
        enforcing_success_rate: off,
        ..Default::default()
    };
    if let Some(n) = consecutive_5xx {
        out.consecutive_5xx = Some(u32_value(n));
        out.enforcing_consecutive_5xx = if n > 0 { full } else { off };
    } else if v.consecutive_gateway_errors.is_some() {
        // Only gateway errors asked for: Envoy's default 5xx ejection must not apply.
        out.enforcing_consecutive_5xx = off;
    }
    if let Some(n) = v.consecutive_gateway_errors {
        out.consecutive_gateway_failure = Some(u32_value(n));
        out.enforcing_consecutive_gateway_failure = if n > 0 { full } else { off };
    }
    if let Some(n) = v.consecutive_local_origin_failures {
        out.consecutive_local_origin_failure = Some(u32_value(n));
        out.enforcing_consecutive_local_origin_failure = full;
    }
    // Like Istio, outlier detection always sets the panic threshold, to
    // `minHealthPercent` or 0 (no panic): with Envoy's default of 50%,
    // ejecting 2 of 3 endpoints would send traffic to all of them again.
    let min_health = v.min_health_percent.unwrap_or(0);
    let threshold = Percent {
        value: f64::from(min_health.clamp(0, 100)),
    };
    cluster
        .common_lb_config
        .get_or_insert_with(CommonLbConfig::default)
        .healthy_panic_threshold = Some(threshold);
    cluster.outlier_detection = Some(out);
}

/// How the upstream connection speaks HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upstream {
    Http1,
    Http2,
    /// Same as the downstream: sniffed ports and `useClientProtocol`.
    Downstream,
}

fn upstream(protocol: Protocol, http: Option<&HttpSettings>) -> Option<Upstream> {
    if !(protocol.is_http() || protocol == Protocol::Unknown) {
        return None;
    }
    if http.is_some_and(|h| h.use_client_protocol == Some(true)) {
        return Some(Upstream::Downstream);
    }
    let upgrade = http.is_some_and(|h| h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade));
    Some(match protocol {
        Protocol::Http2 | Protocol::Grpc => Upstream::Http2,
        Protocol::Http if upgrade => Upstream::Http2,
        Protocol::Http => Upstream::Http1,
        _ => Upstream::Downstream,
    })
}

fn http_protocol_options(
    protocol: Protocol,
    http: Option<&Sourced<HttpSettings>>,
    diags: &mut Vec<Diagnostic>,
) -> Option<HttpProtocolOptions> {
    let upstream = upstream(protocol, http.map(|h| h.value))?;
    let common = http.and_then(|h| common_http_options(h, diags));
    if upstream == Upstream::Http1 && common.is_none() {
        return None;
    }
    let http2 = Http2ProtocolOptions {
        // Envoy refuses 0 streams; Istio reads 0 as "not set".
        max_concurrent_streams: http
            .and_then(|h| h.value.max_concurrent_streams)
            .filter(|n| *n > 0)
            .map(count),
        ..Default::default()
    };
    let protocol_options = match upstream {
        Upstream::Http1 => explicit(ProtocolConfig::HttpProtocolOptions(
            Http1ProtocolOptions::default(),
        )),
        Upstream::Http2 => explicit(ProtocolConfig::Http2ProtocolOptions(http2)),
        Upstream::Downstream => {
            UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(http2),
                ..Default::default()
            })
        }
    };
    Some(HttpProtocolOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: Some(protocol_options),
        ..Default::default()
    })
}

fn explicit(config: ProtocolConfig) -> UpstreamProtocolOptions {
    UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
        protocol_config: Some(config),
    })
}

fn common_http_options(
    http: &Sourced<HttpSettings>,
    diags: &mut Vec<Diagnostic>,
) -> Option<CommonHttpProtocolOptions> {
    let idle_timeout = http.duration(http.value.idle_timeout.as_deref(), "idleTimeout", diags);
    let max_requests = http
        .value
        .max_requests_per_connection
        .filter(|n| *n > 0)
        .map(count);
    if idle_timeout.is_none() && max_requests.is_none() {
        return None;
    }
    Some(CommonHttpProtocolOptions {
        idle_timeout,
        max_requests_per_connection: max_requests,
        ..Default::default()
    })
}

/// Route hash keys for a consistent-hash load balancer.
pub fn hash_policies(
    lb: &Sourced<LoadBalancerSettings>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<HashPolicy> {
    let Some(hash) = &lb.value.consistent_hash else {
        return Vec::new();
    };
    let specifier = if let Some(header) = &hash.http_header_name {
        hash_policy::PolicySpecifier::Header(hash_policy::Header {
            header_name: header.clone(),
            ..Default::default()
        })
    } else if let Some(cookie) = &hash.http_cookie {
        let ttl = lb.duration(
            cookie.ttl.as_deref(),
            "consistentHash.httpCookie.ttl",
            diags,
        );
        hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
            name: cookie.name.clone(),
            ttl,
            path: cookie.path.clone().unwrap_or_default(),
            attributes: cookie
                .attributes
                .iter()
                .map(|a| hash_policy::CookieAttribute {
                    name: a.name.clone(),
                    value: a.value.clone().unwrap_or_default(),
                })
                .collect(),
        })
    } else if let Some(name) = &hash.http_query_parameter_name {
        hash_policy::PolicySpecifier::QueryParameter(hash_policy::QueryParameter {
            name: name.clone(),
        })
    } else if hash.use_source_ip == Some(true) {
        hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
            source_ip: true,
        })
    } else {
        return Vec::new();
    };
    vec![HashPolicy {
        policy_specifier: Some(specifier),
        ..Default::default()
    }]
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    const EJECT_ON_5XX: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}
"#;

    fn panic_threshold(dr: &str) -> Option<f64> {
        let t = translate_for(&bookinfo(dr), &sidecar("default"));
        let cluster = cluster_named(&t, "outbound|9080||reviews.default.svc.cluster.local");
        cluster
            .common_lb_config
            .as_ref()
            .and_then(|c| c.healthy_panic_threshold.as_ref())
            .map(|p| p.value)
    }

    #[test]
    fn outlier_detection_disables_the_panic_threshold_unless_min_health_percent_is_set() {
        // Envoy's default (50%) would route to ejected hosts once half are out.
        assert_eq!(panic_threshold(EJECT_ON_5XX), Some(0.0));
        let with_min = EJECT_ON_5XX.replace(
            "maxEjectionPercent: 100",
            "maxEjectionPercent: 100, minHealthPercent: 40",
        );
        assert_eq!(panic_threshold(&with_min), Some(40.0));
        let without = EJECT_ON_5XX.replace(
            "outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}",
            "loadBalancer: {simple: RANDOM}",
        );
        assert_eq!(
            panic_threshold(&without),
            None,
            "no outlier detection: Envoy's default"
        );
    }

    #[test]
    fn zero_connection_pool_limits_keep_envoys_defaults_as_istio_reads_them() {
        let dr = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 0}
      http: {http2MaxRequests: 0, maxConcurrentStreams: 0, h2UpgradePolicy: UPGRADE}
"#;
        let t = translate_for(&bookinfo(dr), &sidecar("default"));
        let cluster = cluster_named(&t, "outbound|9080||reviews.default.svc.cluster.local");
        let defaults = super::default_circuit_breakers();
        assert_eq!(cluster.circuit_breakers.as_ref(), Some(&defaults));
        let streams = cluster
            .typed_extension_protocol_options
            .values()
            .filter_map(crate::protobuf::unpack::<super::HttpProtocolOptions>)
            .filter_map(|o| o.upstream_protocol_options)
            .filter_map(|u| match u {
                super::UpstreamProtocolOptions::ExplicitHttpConfig(e) => e.protocol_config,
                _ => None,
            })
            .filter_map(|c| match c {
                super::ProtocolConfig::Http2ProtocolOptions(h2) => Some(h2.max_concurrent_streams),
                _ => None,
            })
            .collect::<Vec<_>>();
        assert_eq!(streams, [None], "0 streams would be refused by Envoy");
    }
}
