//! State of the world sends ClusterLoadAssignments and RouteConfigurations
//! incrementally, as Envoy allows for these non-wildcard types: a change to
//! one service's endpoints carries only that service's assignment, a change
//! to one port's routes only that route configuration, and a cluster that
//! was updated gets its (unchanged) assignment again so that Envoy can warm
//! it. A gRPC client stands in for Envoy to see exactly what is sent; the
//! end-to-end tests run the same server with real Envoy on SotW.

mod ads_support;

use std::collections::BTreeSet;
use std::time::Duration;

use ads_support::{SotwClient, node, start_with};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use pilotfish_discovery::xds_types::XdsType;
use prost::Message;

const REGISTRY: &str = r#"
services:
- hostname: reviews.default.svc.cluster.local
  addresses: [127.1.0.1]
  ports: [{name: http, port: 9080}]
  endpoints: [{address: 127.0.0.11, labels: {version: v1}}]
- hostname: ratings.default.svc.cluster.local
  addresses: [127.1.0.2]
  ports: [{name: http, port: 9080}]
  endpoints: [{address: 127.0.0.21}]
- hostname: web.default.svc.cluster.local
  addresses: [127.1.0.3]
  ports: [{name: http, port: 8080}]
  endpoints: [{address: 127.0.0.31}]
"#;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";
const WEB: &str = "outbound|8080||web.default.svc.cluster.local";

fn request(ty: XdsType, names: &[&str], ack: Option<&DiscoveryResponse>) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node(),
        type_url: ty.type_url(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        version_info: ack.map(|r| r.version_info.clone()).unwrap_or_default(),
        response_nonce: ack.map(|r| r.nonce.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

impl SotwClient {
    async fn ask(&mut self, ty: XdsType, names: &[&str], ack: Option<&DiscoveryResponse>) {
        self.send(request(ty, names, ack)).await;
    }

    /// As Envoy: clusters, their endpoints, listeners, their routes; every
    /// response ACKed.
    async fn sync(&mut self) {
        self.ask(XdsType::Cluster, &[], None).await;
        let cds = self.next().await;
        self.ask(XdsType::Cluster, &[], Some(&cds)).await;
        self.ask(XdsType::Endpoint, &[REVIEWS, RATINGS, WEB], None)
            .await;
        let eds = self.next().await;
        assert_eq!(eds.resources.len(), 3, "the first answer has them all");
        self.ask(XdsType::Endpoint, &[REVIEWS, RATINGS, WEB], Some(&eds))
            .await;
        self.ask(XdsType::Listener, &[], None).await;
        let lds = self.next().await;
        assert!(lds.resources.iter().any(|l| {
            Listener::decode(l.value.as_slice()).is_ok_and(|l| l.name == "0.0.0.0_9080")
        }));
        self.ask(XdsType::Listener, &[], Some(&lds)).await;
        self.ask(XdsType::Route, &["9080", "8080"], None).await;
        let rds = self.next().await;
        assert_eq!(rds.resources.len(), 2);
        self.ask(XdsType::Route, &["9080", "8080"], Some(&rds))
            .await;
        self.expect_silence(Duration::from_millis(200)).await;
    }

    /// ACKs `response` as Envoy would, with its own subscription.
    async fn ack(&mut self, response: &DiscoveryResponse, names: &[&str]) {
        let ty = XdsType::from_type_url(&response.type_url).expect("known type");
        self.ask(ty, names, Some(response)).await;
    }
}

fn assignment_names(response: &DiscoveryResponse) -> BTreeSet<String> {
    response
        .resources
        .iter()
        .map(|any| {
            ClusterLoadAssignment::decode(any.value.as_slice())
                .expect("an assignment")
                .cluster_name
        })
        .collect()
}

#[tokio::test]
async fn endpoint_change_of_one_service_sends_only_its_assignment() {
    let mut h = start_with(REGISTRY).await;
    let mut proxy = SotwClient::connect(h.addr).await;
    proxy.sync().await;
    h.set_registry(&REGISTRY.replace("127.0.0.21", "127.0.0.22"));
    let eds = proxy.next().await;
    assert_eq!(eds.type_url, XdsType::Endpoint.type_url());
    assert_eq!(
        assignment_names(&eds),
        BTreeSet::from([RATINGS.to_string()]),
        "only ratings changed"
    );
    proxy.ack(&eds, &[REVIEWS, RATINGS, WEB]).await;
    proxy.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn route_change_on_one_port_sends_only_that_route_configuration() {
    let mut h = start_with(REGISTRY).await;
    let mut proxy = SotwClient::connect(h.addr).await;
    proxy.sync().await;
    h.set_config(
        "web.yaml",
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web.default.svc.cluster.local]
  http:
  - timeout: 3s
    route: [{destination: {host: web.default.svc.cluster.local}}]
"#,
    );
    let rds = proxy.next().await;
    assert_eq!(rds.type_url, XdsType::Route.type_url());
    assert_eq!(rds.resources.len(), 1, "{rds:?}");
    let route = envoy_types::pb::envoy::config::route::v3::RouteConfiguration::decode(
        rds.resources[0].value.as_slice(),
    )
    .expect("a route configuration");
    assert_eq!(route.name, "8080");
    proxy.ack(&rds, &["9080", "8080"]).await;
    proxy.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn updated_cluster_gets_its_unchanged_assignment_again() {
    let mut h = start_with(REGISTRY).await;
    let mut proxy = SotwClient::connect(h.addr).await;
    proxy.sync().await;
    // A DestinationRule changes the reviews cluster, not its endpoints.
    h.set_config(
        "reviews.yaml",
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}
"#,
    );
    let cds = proxy.next().await;
    assert_eq!(cds.type_url, XdsType::Cluster.type_url());
    assert!(
        cds.resources.len() > 3,
        "CDS is state of the world: every cluster"
    );
    let eds = proxy.next().await;
    assert_eq!(eds.type_url, XdsType::Endpoint.type_url());
    assert_eq!(
        assignment_names(&eds),
        BTreeSet::from([REVIEWS.to_string()]),
        "the updated cluster's assignment, so Envoy can warm it"
    );
}
