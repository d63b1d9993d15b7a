//! The clusters a request is sent to and their endpoints, or the special
//! clusters that pass it through unchanged or drop it.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};

use super::{
    Destination, EndpointInfo, EndpointLabels, ExplainRequest, Outcome, Step, StepKind, Target,
    config_of, socket_address,
};
use crate::names;
use crate::resources::XdsResources;

pub fn outcome(
    resources: &XdsResources,
    labels: &EndpointLabels,
    request: &ExplainRequest,
    targets: &[Target],
    steps: &mut Vec<Step>,
) -> Outcome {
    if let [target] = targets {
        let cluster = resources.clusters.iter().find(|c| c.name == target.cluster);
        let original_dst = cluster.is_some_and(|c| discovery(c) == "ORIGINAL_DST");
        if target.cluster == names::PASSTHROUGH_CLUSTER || original_dst {
            steps.push(
                Step::new(StepKind::Cluster, &target.cluster)
                    .note("forwards to the original destination, as the client addressed it"),
            );
            let address = match request.destination_ip {
                Some(ip) => names::host_port(ip, request.port),
                None => names::host_port(&request.host, request.port),
            };
            return Outcome::Passthrough {
                cluster: target.cluster.clone(),
                address,
            };
        }
        if target.cluster == names::BLACKHOLE_CLUSTER {
            steps.push(
                Step::new(StepKind::Cluster, &target.cluster).note(
                    "has no endpoints: the outbound policy (REGISTRY_ONLY) drops the request",
                ),
            );
            return Outcome::Blackhole {
                cluster: target.cluster.clone(),
            };
        }
    }
    if targets.is_empty() {
        return Outcome::Failed {
            reason: "the filter names no cluster".into(),
        };
    }
    let destinations: Vec<Destination> = targets
        .iter()
        .map(|t| destination(resources, labels, t))
        .collect();
    let total: u32 = destinations.iter().filter_map(|d| d.weight).sum();
    for d in &destinations {
        let mut step = Step::new(StepKind::Cluster, &d.cluster);
        if let Some(weight) = d.weight {
            step = step.note(format!("weight {weight} of {total}"));
        }
        step = match d.found {
            true => step.note(format!(
                "{}, {} endpoint(s)",
                d.discovery,
                d.endpoints.len()
            )),
            false => step.note("not sent to the proxy: Envoy answers 503 (no cluster)"),
        };
        step.config = d.config.clone();
        steps.push(step);
    }
    Outcome::Forwarded { destinations }
}

fn destination(resources: &XdsResources, labels: &EndpointLabels, target: &Target) -> Destination {
    let cluster = resources.clusters.iter().find(|c| c.name == target.cluster);
    let Some(cluster) = cluster else {
        return Destination {
            cluster: target.cluster.clone(),
            weight: target.weight,
            found: false,
            discovery: String::new(),
            endpoints: Vec::new(),
            config: Vec::new(),
        };
    };
    let discovery = discovery(cluster);
    let assignment = match discovery {
        "EDS" => {
            let service = cluster
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&cluster.name);
            resources
                .endpoints
                .iter()
                .find(|a| a.cluster_name == service)
        }
        _ => cluster.load_assignment.as_ref(),
    };
    Destination {
        cluster: cluster.name.clone(),
        weight: target.weight,
        found: true,
        discovery: discovery.to_string(),
        endpoints: assignment.map(|a| endpoints(a, labels)).unwrap_or_default(),
        config: config_of(cluster.metadata.as_ref()),
    }
}

fn discovery(cluster: &Cluster) -> &'static str {
    match &cluster.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) => cluster::DiscoveryType::try_from(*t)
            .map(|t| t.as_str_name())
            .unwrap_or("UNKNOWN"),
        Some(cluster::ClusterDiscoveryType::ClusterType(_)) => "CUSTOM",
        None => "STATIC",
    }
}

fn endpoints(assignment: &ClusterLoadAssignment, labels: &EndpointLabels) -> Vec<EndpointInfo> {
    let mut out = Vec::new();
    for group in &assignment.endpoints {
        let locality = group.locality.as_ref().map(|l| {
            [&l.region, &l.zone, &l.sub_zone]
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("/")
        });
        for lb in &group.lb_endpoints {
            let Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) = &lb.host_identifier else {
                continue;
            };
            let Some((address, port)) = socket_address(endpoint.address.as_ref()) else {
                continue;
            };
            let labels = u16::try_from(port)
                .ok()
                .and_then(|p| labels.get(&address, p))
                .cloned()
                .unwrap_or_default();
            out.push(EndpointInfo {
                health: HealthStatus::try_from(lb.health_status)
                    .map(|h| h.as_str_name().to_string())
                    .unwrap_or_default(),
                weight: lb.load_balancing_weight.as_ref().map(|w| w.value),
                locality: locality.clone().filter(|l| !l.is_empty()),
                address,
                port,
                labels,
            });
        }
    }
    out
}
