//! The xDS resource types Pilotfish serves, in the order Envoy wants them
//! pushed: clusters before their endpoints, listeners before their routes,
//! and the secrets those name last (Envoy waits for them while it warms).

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use prost::Name;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum XdsType {
    Cluster,
    Endpoint,
    Listener,
    Route,
    /// SDS: certificates and keys that listeners name (gateway credentials).
    Secret,
}

impl XdsType {
    /// Push order.
    pub const ALL: [XdsType; 5] = [
        XdsType::Cluster,
        XdsType::Endpoint,
        XdsType::Listener,
        XdsType::Route,
        XdsType::Secret,
    ];

    /// The resource name that subscribes to every resource of a wildcard type.
    pub const WILDCARD: &'static str = "*";

    pub fn type_url(self) -> String {
        match self {
            XdsType::Cluster => Cluster::type_url(),
            XdsType::Endpoint => ClusterLoadAssignment::type_url(),
            XdsType::Listener => Listener::type_url(),
            XdsType::Route => RouteConfiguration::type_url(),
            XdsType::Secret => Secret::type_url(),
        }
    }

    pub fn from_type_url(url: &str) -> Option<XdsType> {
        XdsType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name for logs and metric labels (Istio's: cds, eds, lds, rds, sds).
    pub fn short(self) -> &'static str {
        match self {
            XdsType::Cluster => "cds",
            XdsType::Endpoint => "eds",
            XdsType::Listener => "lds",
            XdsType::Route => "rds",
            XdsType::Secret => "sds",
        }
    }

    /// CDS and LDS are wildcard subscriptions; EDS, RDS and SDS name their
    /// resources.
    pub fn is_wildcard(self) -> bool {
        matches!(self, XdsType::Cluster | XdsType::Listener)
    }
}

/// The ADS variant a proxy speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XdsProtocol {
    /// State of the world: every response carries all resources of its type.
    #[default]
    Sotw,
    /// Incremental: responses carry changed and removed resources only.
    Delta,
}

impl XdsProtocol {
    /// Envoy's `ads_config.api_type` for this variant.
    pub fn api_type(self) -> &'static str {
        match self {
            XdsProtocol::Sotw => "GRPC",
            XdsProtocol::Delta => "DELTA_GRPC",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_type_url_round_trips_and_is_named_by_the_proxy() {
        let url = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
        assert_eq!(XdsType::Secret.type_url(), url);
        assert_eq!(XdsType::from_type_url(url), Some(XdsType::Secret));
        assert_eq!(XdsType::Secret.short(), "sds");
        assert!(!XdsType::Secret.is_wildcard());
    }

    #[test]
    fn every_type_round_trips_with_a_distinct_short_name() {
        let shorts: std::collections::BTreeSet<_> =
            XdsType::ALL.iter().map(|t| t.short()).collect();
        assert_eq!(shorts.len(), XdsType::ALL.len());
        for ty in XdsType::ALL {
            assert_eq!(XdsType::from_type_url(&ty.type_url()), Some(ty));
        }
    }

    #[test]
    fn secrets_are_pushed_after_the_listeners_and_routes_that_name_them() {
        let position = |t| XdsType::ALL.iter().position(|x| *x == t);
        assert!(position(XdsType::Secret) > position(XdsType::Listener));
        assert!(position(XdsType::Secret) > position(XdsType::Route));
    }
}
