//! EDS: one ClusterLoadAssignment per EDS cluster, endpoints grouped by locality.

use std::collections::{BTreeMap, BTreeSet};

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use pilotfish_model::{Endpoint, Health, Resolution};

use crate::emit::context::Context;
use crate::emit::envoy::mesh_tls;
use crate::emit::policy::locality;
use crate::emit::service_clusters;
use crate::protobuf;

/// Load assignments for every EDS cluster (services with static
/// resolution), sorted by cluster name. Clusters without endpoints get an
/// empty assignment so that Envoy finishes warming them.
pub fn build(ctx: &Context) -> Vec<ClusterLoadAssignment> {
    build_where(ctx, |_| true)
}

/// [`build`] for the services of `hosts` only: what an endpoint change of
/// those services replaces.
pub fn build_for_hosts(ctx: &Context, hosts: &BTreeSet<String>) -> Vec<ClusterLoadAssignment> {
    build_where(ctx, |hostname| hosts.contains(hostname))
}

fn build_where(ctx: &Context, wanted: impl Fn(&str) -> bool) -> Vec<ClusterLoadAssignment> {
    service_clusters::list(ctx)
        .iter()
        .filter(|c| c.service.resolution == Resolution::Static && wanted(&c.service.hostname))
        .filter_map(|c| {
            let policy =
                ctx.destination_rules
                    .policy(&c.service.hostname, c.port.port, c.subset_name());
            // PASSTHROUGH clusters are ORIGINAL_DST: no EDS.
            if locality::is_passthrough(policy.locality_policy()) {
                return None;
            }
            let mut cla = load_assignment(&c.name, &c.endpoints(ctx), AddressKind::IpOnly);
            locality::apply(
                &mut cla,
                ctx.proxy.locality.as_ref(),
                policy.locality_policy(),
            );
            Some(cla)
        })
        .collect()
}

/// EDS only carries IPs; DNS clusters resolve hostnames themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressKind {
    IpOnly,
    IpOrHostname,
}

pub fn load_assignment(
    cluster_name: &str,
    endpoints: &[&Endpoint],
    kind: AddressKind,
) -> ClusterLoadAssignment {
    let mut sorted: Vec<&Endpoint> = endpoints
        .iter()
        .copied()
        .filter(|ep| match kind {
            AddressKind::IpOnly => ep.ip().is_some(),
            AddressKind::IpOrHostname => !ep.address.trim().is_empty(),
        })
        .collect();
    sorted.sort();
    let mut seen = BTreeSet::new();
    let mut by_locality: BTreeMap<&str, Vec<LbEndpoint>> = BTreeMap::new();
    for ep in sorted {
        // Envoy treats a repeated address as one host; keep the first.
        if seen.insert((ep.address.as_str(), ep.port)) {
            let key = ep.locality.as_deref().unwrap_or("");
            by_locality.entry(key).or_default().push(lb_endpoint(ep));
        }
    }
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: by_locality
            .into_iter()
            .map(|(key, lb_endpoints)| LocalityLbEndpoints {
                locality: locality(key),
                lb_endpoints,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn lb_endpoint(ep: &Endpoint) -> LbEndpoint {
    LbEndpoint {
        health_status: health(ep.health) as i32,
        // Envoy rejects a zero weight; zero means "unset" here.
        load_balancing_weight: ep.weight.filter(|w| *w > 0).map(protobuf::u32_value),
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(EnvoyEndpoint {
            address: Some(protobuf::socket_address(ep.address.trim(), ep.port)),
            ..Default::default()
        })),
        // What auto mTLS clusters match on (workloads with a sidecar).
        metadata: mesh_tls::endpoint_metadata(&ep.labels),
    }
}

fn health(health: Health) -> HealthStatus {
    match health {
        Health::Healthy => HealthStatus::Healthy,
        Health::Unhealthy => HealthStatus::Unhealthy,
        Health::Draining => HealthStatus::Draining,
    }
}

/// `region/zone/subzone`, any suffix of which may be missing.
fn locality(key: &str) -> Option<Locality> {
    if key.is_empty() {
        return None;
    }
    let mut parts = key.splitn(3, '/').map(str::to_string);
    Some(Locality {
        region: parts.next().unwrap_or_default(),
        zone: parts.next().unwrap_or_default(),
        sub_zone: parts.next().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use pilotfish_model::Protocol;

    const HOST: &str = "reviews.default.svc.cluster.local";

    fn reviews_mesh() -> crate::MeshState {
        let mut v1 = endpoint("10.1.0.1", 9080, 9080, &[("version", "v1")]);
        v1.locality = Some("us-east/us-east-1a".into());
        let mut v2 = endpoint("10.1.0.2", 9080, 9080, &[("version", "v2")]);
        v2.locality = Some("us-east/us-east-1b/rack7".into());
        v2.health = Health::Unhealthy;
        v2.weight = Some(3);
        let mut v2_draining = endpoint("10.1.0.3", 9080, 9080, &[("version", "v2")]);
        v2_draining.health = Health::Draining;
        let other_port = endpoint("10.1.0.4", 9090, 9090, &[("version", "v1")]);
        mesh(
            vec![service(
                HOST,
                &["10.0.0.9"],
                &[(9080, Protocol::Http), (9090, Protocol::Http)],
            )],
            vec![(HOST, vec![v2_draining, other_port, v2, v1])],
            &dr_subsets("reviews", &[("v1", "v1"), ("v2", "v2")]),
        )
    }

    fn addresses(cla: &ClusterLoadAssignment) -> Vec<String> {
        cla.endpoints
            .iter()
            .flat_map(|l| &l.lb_endpoints)
            .map(endpoint_address)
            .collect()
    }

    #[test]
    fn eds_subset_clusters_keep_only_endpoints_with_all_subset_labels() {
        let t = translate_for(&reviews_mesh(), &sidecar("default"));
        let all = load_assignment_named(&t, "outbound|9080||reviews.default.svc.cluster.local");
        assert_eq!(addresses(all).len(), 3, "port 9090 endpoint excluded");
        let v1 = load_assignment_named(&t, "outbound|9080|v1|reviews.default.svc.cluster.local");
        assert_eq!(addresses(v1), ["10.1.0.1:9080"]);
        let v2 = load_assignment_named(&t, "outbound|9080|v2|reviews.default.svc.cluster.local");
        assert_eq!(addresses(v2), ["10.1.0.3:9080", "10.1.0.2:9080"]);
        let p9090 = load_assignment_named(&t, "outbound|9090|v1|reviews.default.svc.cluster.local");
        assert_eq!(addresses(p9090), ["10.1.0.4:9090"]);
    }

    #[test]
    fn eds_groups_by_locality_and_maps_health_and_weight() {
        let t = translate_for(&reviews_mesh(), &sidecar("default"));
        let all = load_assignment_named(&t, "outbound|9080||reviews.default.svc.cluster.local");
        let localities: Vec<_> = all.endpoints.iter().map(|l| l.locality.clone()).collect();
        assert_eq!(localities[0], None);
        let zone = localities[1].clone().unwrap();
        assert_eq!(
            (
                zone.region.as_str(),
                zone.zone.as_str(),
                zone.sub_zone.as_str()
            ),
            ("us-east", "us-east-1a", "")
        );
        let rack = localities[2].clone().unwrap();
        assert_eq!(rack.sub_zone, "rack7");
        let draining = &all.endpoints[0].lb_endpoints[0];
        assert_eq!(draining.health_status, HealthStatus::Draining as i32);
        let unhealthy = &all.endpoints[2].lb_endpoints[0];
        assert_eq!(unhealthy.health_status, HealthStatus::Unhealthy as i32);
        assert_eq!(
            unhealthy.load_balancing_weight,
            Some(protobuf::u32_value(3))
        );
        assert_eq!(
            all.endpoints[1].lb_endpoints[0].health_status,
            HealthStatus::Healthy as i32
        );
    }

    #[test]
    fn eds_skips_hostname_endpoints_and_duplicates() {
        let eps = [
            endpoint("db.example.com", 5432, 5432, &[]),
            endpoint("10.0.0.1", 5432, 5432, &[]),
            endpoint("10.0.0.1", 5432, 5432, &[]),
        ];
        let refs: Vec<&Endpoint> = eps.iter().collect();
        let cla = load_assignment("c", &refs, AddressKind::IpOnly);
        assert_eq!(addresses(&cla), ["10.0.0.1:5432"]);
        let dns = load_assignment("c", &refs, AddressKind::IpOrHostname);
        assert_eq!(addresses(&dns), ["10.0.0.1:5432", "db.example.com:5432"]);
    }
}
