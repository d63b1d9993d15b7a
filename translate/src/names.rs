//! Resource, filter and extension names. Cluster, listener and route names
//! follow Istio exactly so that dashboards, `istioctl`-style tooling and
//! operators' habits keep working.

use std::fmt::Display;

pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

pub const VIRTUAL_OUTBOUND_LISTENER: &str = "virtualOutbound";
pub const VIRTUAL_OUTBOUND_PORT: u16 = 15001;
pub const WILDCARD_ADDRESS: &str = "0.0.0.0";

/// Ports the sidecar itself uses (admin, outbound, inbound, HBONE, agent,
/// health, metrics, as in Istio): a service port listener there would clash.
pub const RESERVED_PORTS: [u16; 7] = [15000, 15001, 15006, 15008, 15020, 15021, 15090];

pub const ALLOW_ANY_VIRTUAL_HOST: &str = "allow_any";
pub const BLOCK_ALL_VIRTUAL_HOST: &str = "block_all";

pub const HTTP_CONNECTION_MANAGER: &str = "envoy.filters.network.http_connection_manager";
pub const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
pub const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
pub const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
pub const ROUTER: &str = "envoy.filters.http.router";
pub const FAULT: &str = "envoy.filters.http.fault";
pub const CORS: &str = "envoy.filters.http.cors";
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// Key of `Cluster.typed_extension_protocol_options` for upstream HTTP settings.
pub const UPSTREAM_HTTP_PROTOCOL_OPTIONS: &str =
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
pub const PREVIOUS_HOSTS_PREDICATE: &str = "envoy.retry_host_predicates.previous_hosts";
pub const PREVIOUS_PRIORITIES: &str = "envoy.retry_priorities.previous_priorities";

/// `outbound|9080|v1|reviews.default.svc.cluster.local`; no subset leaves the
/// field empty: `outbound|9080||reviews...`.
pub fn outbound_cluster(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// The service host of an [`outbound_cluster`] name.
pub fn outbound_cluster_host(cluster: &str) -> Option<&str> {
    let rest = cluster.strip_prefix("outbound|")?;
    rest.splitn(3, '|').nth(2)
}

/// Per-port listener, named by its address as Istio does: `0.0.0.0_9080`
/// (and `127.0.0.1_9080` for a sidecar without interception).
pub fn port_listener(address: impl Display, port: u16) -> String {
    format!("{address}_{port}")
}

/// Route configurations are shared by every HTTP service on a port: `"9080"`.
pub fn route_config(port: u16) -> String {
    port.to_string()
}

pub fn virtual_host(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

/// The stat prefix of a listener's HTTP connection manager: `outbound_<listener>`.
pub fn http_stat_prefix(listener: &str) -> String {
    format!("outbound_{listener}")
}

/// `host:port`, bracketing IPv6 literals as in a Host header.
pub fn host_port(host: impl Display, port: u16) -> String {
    let host = host.to_string();
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_istio() {
        let host = "reviews.default.svc.cluster.local";
        assert_eq!(
            outbound_cluster(9080, None, host),
            "outbound|9080||reviews.default.svc.cluster.local"
        );
        assert_eq!(
            outbound_cluster(9080, Some("v1"), host),
            "outbound|9080|v1|reviews.default.svc.cluster.local"
        );
        assert_eq!(port_listener(WILDCARD_ADDRESS, 9080), "0.0.0.0_9080");
        assert_eq!(port_listener("127.0.0.1", 9080), "127.0.0.1_9080");
        assert_eq!(http_stat_prefix("0.0.0.0_9080"), "outbound_0.0.0.0_9080");
        assert_eq!(route_config(9080), "9080");
    }

    #[test]
    fn host_port_brackets_ipv6() {
        assert_eq!(host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(host_port("fd00::1", 80), "[fd00::1]:80");
    }
}

#[cfg(test)]
mod cluster_name_tests {
    use super::*;

    #[test]
    fn an_outbound_cluster_names_its_host() {
        let name = outbound_cluster(9080, Some("v1"), "reviews.default.svc.cluster.local");
        assert_eq!(
            outbound_cluster_host(&name),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(outbound_cluster_host("outbound|80||a.b"), Some("a.b"));
        assert_eq!(outbound_cluster_host("inbound|80||"), None);
        assert_eq!(outbound_cluster_host("BlackHoleCluster"), None);
    }
}
