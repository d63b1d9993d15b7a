//! Network, HTTP and listener filters of sidecar and gateway listeners.

use envoy_types::pb::envoy::config::listener::v3::{
    Filter, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
    http_connection_manager::{
        ForwardClientCertDetails, RouteSpecifier, SetCurrentClientCertDetails, StripPortMode,
        UpgradeConfig,
    },
    http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::Any;

use crate::names;
use crate::protobuf;

/// ALPN values the HTTP inspector reports for plaintext HTTP.
pub const SNIFFED_HTTP_PROTOCOLS: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

/// The HTTP connection manager of listener `listener` on port `port`:
/// routes come over RDS from the route configuration named after the port.
pub fn http_connection_manager(listener: &str, port: u16) -> Filter {
    let rds = RouteSpecifier::Rds(Rds {
        config_source: Some(protobuf::ads_config_source()),
        route_config_name: names::route_config(port),
    });
    connection_manager(names::http_stat_prefix(listener), rds)
}

/// The HTTP connection manager of a gateway server: routes over RDS from
/// `route_config`. As the edge, it trusts no client's X-Forwarded-For and
/// ignores the port in Host (virtual hosts name hosts without ports).
pub fn gateway_connection_manager(port: u16, route_config: &str) -> Filter {
    let rds = RouteSpecifier::Rds(Rds {
        config_source: Some(protobuf::ads_config_source()),
        route_config_name: route_config.to_string(),
    });
    let listener = names::port_listener(names::WILDCARD_ADDRESS, port);
    let mut hcm = connection_manager_config(names::http_stat_prefix(&listener), rds);
    hcm.use_remote_address = Some(protobuf::bool_value(true));
    hcm.strip_port_mode = Some(StripPortMode::StripAnyHostPort(true));
    network_filter(names::HTTP_CONNECTION_MANAGER, protobuf::any(hcm))
}

/// An HTTP connection manager with its routes inline (the sidecar's inbound
/// side, where the routes never change independently of the listener);
/// `authorization` filters run first.
pub fn inline_http_connection_manager(
    stat_prefix: &str,
    routes: RouteConfiguration,
    authorization: Vec<HttpFilter>,
) -> Filter {
    let hcm = inline_connection_manager_config(stat_prefix, routes, authorization);
    network_filter(names::HTTP_CONNECTION_MANAGER, protobuf::any(hcm))
}

fn inline_connection_manager_config(
    stat_prefix: &str,
    routes: RouteConfiguration,
    authorization: Vec<HttpFilter>,
) -> HttpConnectionManager {
    let mut hcm =
        connection_manager_config(stat_prefix.to_string(), RouteSpecifier::RouteConfig(routes));
    hcm.http_filters.splice(0..0, authorization);
    hcm
}

/// The receiving side of mesh mTLS: the caller's SPIFFE id (and subject)
/// reach the application in `x-forwarded-client-cert`, as in Istio.
pub fn inline_mtls_http_connection_manager(
    stat_prefix: &str,
    routes: RouteConfiguration,
    authorization: Vec<HttpFilter>,
) -> Filter {
    let mut hcm = inline_connection_manager_config(stat_prefix, routes, authorization);
    hcm.forward_client_cert_details = ForwardClientCertDetails::AppendForward as i32;
    hcm.set_current_client_cert_details = Some(SetCurrentClientCertDetails {
        subject: Some(protobuf::bool_value(true)),
        uri: true,
        dns: true,
        ..Default::default()
    });
    network_filter(names::HTTP_CONNECTION_MANAGER, protobuf::any(hcm))
}

fn connection_manager(stat_prefix: String, routes: RouteSpecifier) -> Filter {
    let hcm = connection_manager_config(stat_prefix, routes);
    network_filter(names::HTTP_CONNECTION_MANAGER, protobuf::any(hcm))
}

fn connection_manager_config(stat_prefix: String, routes: RouteSpecifier) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix,
        route_specifier: Some(routes),
        http_filters: http_filters(),
        // Websockets through the mesh work out of the box, as with Istio.
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Fault and CORS are always present (inert without per-route config) so
/// that adding a fault or CORS rule to a VirtualService changes only RDS:
/// a listener update would drain every connection on the port.
pub fn http_filters() -> Vec<HttpFilter> {
    vec![
        http_filter(names::FAULT, protobuf::any(HttpFault::default())),
        http_filter(names::CORS, protobuf::any(Cors::default())),
        http_filter(names::ROUTER, protobuf::any(Router::default())),
    ]
}

pub fn tcp_proxy(cluster: &str) -> Filter {
    let proxy = TcpProxy {
        stat_prefix: cluster.to_string(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    };
    network_filter(names::TCP_PROXY, protobuf::any(proxy))
}

/// tcp_proxy splitting connections over `clusters` by weight.
pub fn weighted_tcp_proxy(stat_prefix: &str, clusters: &[(String, u32)]) -> Filter {
    let weighted = tcp_proxy::WeightedCluster {
        clusters: clusters
            .iter()
            .map(
                |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                    name: name.clone(),
                    weight: *weight,
                    ..Default::default()
                },
            )
            .collect(),
    };
    let proxy = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(weighted)),
        ..Default::default()
    };
    network_filter(names::TCP_PROXY, protobuf::any(proxy))
}

pub fn http_inspector() -> ListenerFilter {
    listener_filter(
        names::HTTP_INSPECTOR,
        protobuf::any(HttpInspector::default()),
    )
}

pub fn tls_inspector() -> ListenerFilter {
    listener_filter(names::TLS_INSPECTOR, protobuf::any(TlsInspector::default()))
}

fn listener_filter(name: &str, config: Any) -> ListenerFilter {
    ListenerFilter {
        name: name.to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

fn network_filter(name: &str, config: Any) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}
