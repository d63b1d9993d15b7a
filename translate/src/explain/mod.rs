//! `pilotfish explain`: the path a request would take through a proxy,
//! read from the proxy's own xDS resources (what Pilotfish sends it), the
//! way Envoy walks them: listener, filter chain, route configuration,
//! virtual host, route (and why the routes before it did not match),
//! clusters with their weights, endpoints, and the Istio objects behind
//! each step. Pure: no I/O, the caller passes the resources (an offline
//! translation or a server's snapshot) and, optionally, endpoint labels.

mod cluster;
mod labels;
mod listener;
mod matchers;
mod render;
mod request;
mod route;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use pilotfish_crds::ConfigKey;
use serde::Serialize;

use crate::resources::XdsResources;

pub use labels::{EndpointLabels, endpoint_labels, service_address};
pub use request::{ExplainRequest, Scheme};

/// A request that cannot be explained as given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExplainError {
    #[error("{0:?} is not a URL like http://host:port/path or tcp://ip:port")]
    BadUrl(String),
    #[error("unsupported scheme {0:?}: use http or tcp")]
    UnsupportedScheme(String),
    #[error("{0:?} is not a header (name: value)")]
    BadHeader(String),
    #[error("a tcp:// request needs a port: {0:?}")]
    MissingPort(String),
}

/// The answer: each step Envoy takes, then where the request ends up.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Explanation {
    pub request: ExplainRequest,
    pub steps: Vec<Step>,
    pub outcome: Outcome,
    /// Whether the request reaches a destination or gets a non-error
    /// answer from Envoy itself.
    pub succeeded: bool,
}

impl Outcome {
    /// Whether the request reaches a destination (or gets a non-error
    /// direct answer): the CLI's exit code.
    pub fn succeeds(&self) -> bool {
        match self {
            Outcome::Forwarded { destinations } => destinations.iter().any(|d| d.found),
            Outcome::Passthrough { .. } | Outcome::Redirect { .. } => true,
            Outcome::DirectResponse { status, .. } => *status < 400,
            Outcome::Blackhole { .. } | Outcome::Failed { .. } => false,
        }
    }
}

impl Explanation {
    /// Every config object that shaped the path, once.
    pub fn config(&self) -> BTreeSet<&ConfigKey> {
        let steps = self.steps.iter().flat_map(|s| &s.config);
        let destinations = match &self.outcome {
            Outcome::Forwarded { destinations } => destinations.as_slice(),
            _ => &[],
        };
        steps
            .chain(destinations.iter().flat_map(|d| &d.config))
            .collect()
    }
}

/// What kind of resource a step chose.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Listener,
    FilterChain,
    RouteConfiguration,
    VirtualHost,
    Route,
    Cluster,
}

/// One choice on the path: what was taken, and what was passed over.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Step {
    pub kind: StepKind,
    pub name: String,
    /// Why this one was taken, and what it does.
    pub notes: Vec<String>,
    /// Candidates considered before (or instead of) it, each with why not.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_matched: Vec<Miss>,
    /// The Istio objects that produced it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<ConfigKey>,
}

impl Step {
    fn new(kind: StepKind, name: impl Into<String>) -> Step {
        Step {
            kind,
            name: name.into(),
            notes: Vec::new(),
            not_matched: Vec::new(),
            config: Vec::new(),
        }
    }

    fn note(mut self, note: impl Into<String>) -> Step {
        self.notes.push(note.into());
        self
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Miss {
    pub name: String,
    pub reason: String,
}

/// Where the request ends up.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// To one cluster, or split over several by weight.
    Forwarded {
        destinations: Vec<Destination>,
    },
    /// To the original destination, unchanged (PassthroughCluster).
    Passthrough {
        cluster: String,
        address: String,
    },
    /// Dropped (BlackHoleCluster): the client sees a reset or a 502.
    Blackhole {
        cluster: String,
    },
    DirectResponse {
        status: u32,
        body: Option<String>,
    },
    Redirect {
        status: u32,
        location: String,
    },
    /// Envoy answers with an error or closes the connection.
    Failed {
        reason: String,
    },
}

/// One upstream cluster the request may go to.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Destination {
    pub cluster: String,
    /// Its weight when the route splits traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Whether Envoy has the cluster at all (else it answers 503).
    pub found: bool,
    /// How the cluster finds its hosts (EDS, STRICT_DNS, ORIGINAL_DST...).
    pub discovery: String,
    pub endpoints: Vec<EndpointInfo>,
    /// Its DestinationRules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<ConfigKey>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct EndpointInfo {
    pub address: String,
    pub port: u32,
    pub health: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// The workload's labels, from the registry (EDS carries none).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The path `request` takes through the proxy whose resources these are.
pub fn explain(
    resources: &XdsResources,
    labels: &EndpointLabels,
    request: &ExplainRequest,
) -> Explanation {
    let mut steps = Vec::new();
    let outcome = walk(resources, labels, request, &mut steps);
    Explanation {
        request: request.clone(),
        steps,
        succeeded: outcome.succeeds(),
        outcome,
    }
}

fn walk(
    resources: &XdsResources,
    labels: &EndpointLabels,
    request: &ExplainRequest,
    steps: &mut Vec<Step>,
) -> Outcome {
    let chosen = match listener::choose(resources, request, steps) {
        Ok(chosen) => chosen,
        Err(reason) => return Outcome::Failed { reason },
    };
    let targets = match chosen {
        listener::Handler::Tcp(targets) => targets,
        listener::Handler::Http(routes) => {
            match route::choose(resources, &routes, request, steps) {
                route::Routed::To(targets) => targets,
                route::Routed::Answered(outcome) => return outcome,
            }
        }
        listener::Handler::Unknown(reason) => return Outcome::Failed { reason },
    };
    cluster::outcome(resources, labels, request, &targets, steps)
}

/// A cluster a filter or route sends to, with its weight in a split.
#[derive(Clone, Debug, PartialEq)]
struct Target {
    cluster: String,
    weight: Option<u32>,
}

/// The config objects named by a resource's `istio`/`config` metadata.
fn config_of(
    metadata: Option<&envoy_types::pb::envoy::config::core::v3::Metadata>,
) -> Vec<ConfigKey> {
    let mut keys = BTreeSet::new();
    crate::provenance::read(metadata, &mut keys);
    keys.into_iter().collect()
}

/// An address's `ip` and port, when it is a socket address with a port.
fn socket_address(
    address: Option<&envoy_types::pb::envoy::config::core::v3::Address>,
) -> Option<(String, u32)> {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    match address?.address.as_ref()? {
        address::Address::SocketAddress(s) => match s.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(port)) => Some((s.address.clone(), port)),
            _ => None,
        },
        _ => None,
    }
}

/// [`explain`] with what the mesh knows: the endpoints' labels, and, when
/// the URL names a host rather than an IP, the address of the service that
/// name means to a proxy in `namespace`.
pub fn explain_in_mesh(
    resources: &XdsResources,
    mesh: &pilotfish_model::MeshState,
    namespace: &str,
    mut request: ExplainRequest,
) -> Explanation {
    if request.destination_ip.is_none() {
        request.destination_ip =
            service_address(mesh, &request.host, namespace, &mesh.mesh.domain_suffix);
    }
    explain(resources, &endpoint_labels(mesh), &request)
}
