//! The translator's input: merged registries, valid config and mesh settings.

use std::collections::BTreeMap;
use std::time::Duration;

use pilotfish_crds::ConfigObject;
use pilotfish_registries::{Endpoint, Service};
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum OutboundTrafficPolicy {
    /// Unknown destinations pass through (Istio's default).
    #[default]
    AllowAny,
    /// Unknown destinations are blocked.
    RegistryOnly,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MeshConfig {
    /// Kubernetes cluster domain used to expand short names.
    pub domain_suffix: String,
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    pub connect_timeout: Duration,
    /// Name of the bootstrap cluster that points at Pilotfish.
    pub xds_cluster: String,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            domain_suffix: "cluster.local".into(),
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
            connect_timeout: Duration::from_secs(10),
            xds_cluster: "xds-grpc".into(),
        }
    }
}

/// One consistent view of the mesh. Built by the discovery server from all
/// registries and config sources; immutable once built.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshState {
    /// Services sorted by hostname; one per hostname.
    pub services: Vec<Service>,
    /// Endpoints by service hostname.
    pub endpoints: BTreeMap<String, Vec<Endpoint>>,
    /// Valid config objects only (invalid ones are reported at load time).
    pub config: Vec<ConfigObject>,
    pub mesh: MeshConfig,
}
