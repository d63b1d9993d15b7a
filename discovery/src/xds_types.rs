//! The xDS resource types Pilotfish serves, in the order Envoy wants them
//! pushed: clusters before their endpoints, listeners before their routes.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use prost::Name;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum XdsType {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl XdsType {
    /// Push order.
    pub const ALL: [XdsType; 4] = [
        XdsType::Cluster,
        XdsType::Endpoint,
        XdsType::Listener,
        XdsType::Route,
    ];

    pub fn type_url(self) -> String {
        match self {
            XdsType::Cluster => Cluster::type_url(),
            XdsType::Endpoint => ClusterLoadAssignment::type_url(),
            XdsType::Listener => Listener::type_url(),
            XdsType::Route => RouteConfiguration::type_url(),
        }
    }

    pub fn from_type_url(url: &str) -> Option<XdsType> {
        XdsType::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Short name for logs and metric labels (Istio's: cds, eds, lds, rds).
    pub fn short(self) -> &'static str {
        match self {
            XdsType::Cluster => "cds",
            XdsType::Endpoint => "eds",
            XdsType::Listener => "lds",
            XdsType::Route => "rds",
        }
    }

    /// CDS and LDS are wildcard subscriptions; EDS and RDS name their resources.
    pub fn is_wildcard(self) -> bool {
        matches!(self, XdsType::Cluster | XdsType::Listener)
    }
}
