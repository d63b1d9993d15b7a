//! Reading xDS responses as Envoy must to follow them: which EDS names the
//! clusters need, which route configurations the listeners' HTTP connection
//! managers name, and whether a response carries an awaited change.
//!
//! Thousands of simulated proxies receive identical responses (one per view
//! and generation), and the load generator shares the server's CPUs, so each
//! distinct content is decoded once and the result shared: the server's load
//! is what is measured, not ours.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

/// The xDS types a sidecar subscribes to, in Envoy's order. Our own rather
/// than the server's `xds_types`: the load generator checks the server from
/// the outside, as Envoy does, and does not link it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum XdsType {
    Cluster,
    Endpoint,
    Listener,
    Route,
}

impl XdsType {
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

    pub fn short(self) -> &'static str {
        match self {
            XdsType::Cluster => "CDS",
            XdsType::Endpoint => "EDS",
            XdsType::Listener => "LDS",
            XdsType::Route => "RDS",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A change the driver made, as it shows in a response.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Probe {
    /// An endpoint with this address in a ClusterLoadAssignment.
    EndpointAddress(String),
    /// A weighted cluster of this name with this weight in a RouteConfiguration.
    RouteWeight { cluster: String, weight: u32 },
}

impl Probe {
    /// The type of response that can carry the change.
    pub fn carried_by(&self) -> XdsType {
        match self {
            Probe::EndpointAddress(_) => XdsType::Endpoint,
            Probe::RouteWeight { .. } => XdsType::Route,
        }
    }

    fn found_in(&self, any: &Any) -> bool {
        match self {
            Probe::EndpointAddress(wanted) => {
                // Cheap pre-check: the address is a plain string in the bytes.
                contains(&any.value, wanted.as_bytes())
                    && decode::<ClusterLoadAssignment>(any)
                        .is_some_and(|cla| endpoint_addresses(&cla).any(|a| a == wanted))
            }
            Probe::RouteWeight { cluster, weight } => decode::<RouteConfiguration>(any)
                .is_some_and(|rc| route_weights(&rc).any(|(c, w)| c == cluster && w == *weight)),
        }
    }
}

/// A resource and the names of the resources of the next type it needs: an
/// EDS cluster's endpoint name, a listener's route configuration names.
pub type References = Vec<(String, Vec<String>)>;

/// Identifies the content of a response, so equal responses are decoded once.
pub fn content_key<'a>(
    type_url: &str,
    version: &str,
    resources: impl Iterator<Item = (&'a str, &'a str)>,
    removed: &[String],
) -> u64 {
    let mut hasher = DefaultHasher::new();
    type_url.hash(&mut hasher);
    version.hash(&mut hasher);
    for resource in resources {
        resource.hash(&mut hasher);
    }
    removed.hash(&mut hasher);
    hasher.finish()
}

/// Shared by every client: decoded results by content key.
#[derive(Default)]
pub struct Inspector {
    references: Mutex<HashMap<u64, Arc<References>>>,
    probes: Mutex<HashMap<(u64, Probe), bool>>,
}

impl Inspector {
    /// What the clusters or listeners in a response reference (empty for
    /// other types).
    pub fn references<'a>(
        &self,
        key: u64,
        ty: XdsType,
        resources: impl Iterator<Item = &'a Any>,
    ) -> Arc<References> {
        if let Some(found) = lock(&self.references).get(&key) {
            return found.clone();
        }
        let refs: References = match ty {
            XdsType::Cluster => resources
                .filter_map(decode::<Cluster>)
                .map(|c| {
                    let eds = eds_name(&c).into_iter().collect();
                    (c.name, eds)
                })
                .collect(),
            XdsType::Listener => resources
                .filter_map(decode::<Listener>)
                .map(|l| {
                    let routes = route_config_names(&l);
                    (l.name, routes)
                })
                .collect(),
            XdsType::Endpoint | XdsType::Route => Vec::new(),
        };
        let refs = Arc::new(refs);
        lock(&self.references).insert(key, refs.clone());
        refs
    }

    /// Whether any resource of a response shows `probe`'s change.
    pub fn shows<'a>(
        &self,
        key: u64,
        probe: &Probe,
        mut resources: impl Iterator<Item = &'a Any>,
    ) -> bool {
        let memo_key = (key, probe.clone());
        if let Some(found) = lock(&self.probes).get(&memo_key) {
            return *found;
        }
        let found = resources.any(|any| probe.found_in(any));
        lock(&self.probes).insert(memo_key, found);
        found
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Decodes `any` as `M` if its type URL says it is one.
fn decode<M: Message + Name + Default>(any: &Any) -> Option<M> {
    if any.type_url != M::type_url() {
        return None;
    }
    match M::decode(any.value.as_slice()) {
        Ok(message) => Some(message),
        Err(error) => {
            tracing::warn!(type_url = %any.type_url, %error, "undecodable resource");
            None
        }
    }
}

/// The name Envoy asks EDS for, if the cluster is an EDS cluster.
fn eds_name(cluster: &Cluster) -> Option<String> {
    let eds = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
    if cluster.cluster_discovery_type != eds {
        return None;
    }
    let service_name = cluster
        .eds_cluster_config
        .as_ref()
        .map(|c| c.service_name.as_str())
        .filter(|n| !n.is_empty());
    Some(service_name.unwrap_or(&cluster.name).to_string())
}

/// The RDS route configuration names of a listener's HTTP connection managers.
fn route_config_names(listener: &Listener) -> Vec<String> {
    let mut names: Vec<String> = listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.as_ref())
        .flat_map(|chain: &FilterChain| chain.filters.iter())
        .filter_map(|filter| match &filter.config_type {
            Some(ConfigType::TypedConfig(any)) => decode::<HttpConnectionManager>(any),
            _ => None,
        })
        .filter_map(|hcm| match hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => Some(rds.route_config_name),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn endpoint_addresses(cla: &ClusterLoadAssignment) -> impl Iterator<Item = &str> {
    cla.endpoints
        .iter()
        .flat_map(|locality| locality.lb_endpoints.iter())
        .filter_map(|lb| match &lb.host_identifier {
            Some(HostIdentifier::Endpoint(endpoint)) => endpoint.address.as_ref(),
            _ => None,
        })
        .filter_map(|address| match &address.address {
            Some(address::Address::SocketAddress(socket)) => Some(socket.address.as_str()),
            _ => None,
        })
}

fn route_weights(rc: &RouteConfiguration) -> impl Iterator<Item = (&str, u32)> {
    rc.virtual_hosts
        .iter()
        .flat_map(|vh| vh.routes.iter())
        .filter_map(|route| match &route.action {
            Some(Action::Route(action)) => match &action.cluster_specifier {
                Some(ClusterSpecifier::WeightedClusters(weighted)) => Some(&weighted.clusters),
                _ => None,
            },
            _ => None,
        })
        .flatten()
        .map(|c| (c.name.as_str(), c.weight.as_ref().map_or(0, |w| w.value)))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::EdsClusterConfig;
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
    use envoy_types::pb::envoy::config::endpoint::v3::{Endpoint, LbEndpoint, LocalityLbEndpoints};
    use envoy_types::pb::envoy::config::listener::v3::Filter;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;

    fn pack<M: Message + Name>(message: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: message.encode_to_vec(),
        }
    }

    #[test]
    fn finds_eds_names_and_route_names() {
        let eds = Cluster {
            name: "outbound|8080||a".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig::default()),
            ..Default::default()
        };
        let static_cluster = Cluster {
            name: "BlackHoleCluster".into(),
            ..Default::default()
        };
        let inspector = Inspector::default();
        let refs = inspector.references(
            1,
            XdsType::Cluster,
            [pack(&eds), pack(&static_cluster)].iter(),
        );
        assert_eq!(refs[0].1, vec!["outbound|8080||a".to_string()]);
        assert!(refs[1].1.is_empty());

        let hcm = HttpConnectionManager {
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: "8080".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let listener = Listener {
            name: "0.0.0.0_8080".into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(ConfigType::TypedConfig(pack(&hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let refs = inspector.references(2, XdsType::Listener, [pack(&listener)].iter());
        assert_eq!(refs[0], ("0.0.0.0_8080".into(), vec!["8080".into()]));
    }

    #[test]
    fn probe_finds_a_changed_endpoint_address() {
        let cla = ClusterLoadAssignment {
            cluster_name: "a".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(Address {
                            address: Some(address::Address::SocketAddress(SocketAddress {
                                address: "10.254.0.1".into(),
                                ..Default::default()
                            })),
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let inspector = Inspector::default();
        let any = [pack(&cla)];
        assert!(inspector.shows(1, &Probe::EndpointAddress("10.254.0.1".into()), any.iter()));
        assert!(!inspector.shows(1, &Probe::EndpointAddress("10.254.0.2".into()), any.iter()));
    }
}
