//! The translator's output.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

use crate::diagnostics::Diagnostic;

/// Resources of each xDS type, each list sorted by resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct XdsResources {
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
    /// SDS: the credentials gateway servers name (`kubernetes://<name>`,
    /// and `kubernetes://<name>-cacert` for client verification).
    pub secrets: Vec<Secret>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    pub resources: XdsResources,
    /// Sorted and de-duplicated.
    pub diagnostics: Vec<Diagnostic>,
}
