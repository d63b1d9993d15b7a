//! Incremental (delta) ADS behaviour — wildcard and named subscriptions,
//! only changed resources sent, removals, reconnects with
//! `initial_resource_versions`, ACK/NACK in the sync status — driven by a
//! gRPC client that plays Envoy's part (Envoy itself never NACKs a correct
//! config; `e2e_delta_ads.rs` covers real Envoy on the same server).

mod ads_support;

use std::collections::HashMap;
use std::time::Duration;

use ads_support::{REVIEWS, expect_silence, next_message, node, start, start_with};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use pilotfish_discovery::xds_types::XdsType;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Reviews plus ratings, so one service can change or go while the other stays.
const TWO_SERVICES: &str = r#"
services:
- hostname: reviews.default.svc.cluster.local
  addresses: [127.1.0.1]
  ports: [{name: http, port: 9080}]
  endpoints: [{address: 127.0.0.11, labels: {version: v1}}]
- hostname: ratings.default.svc.cluster.local
  addresses: [127.1.0.2]
  ports: [{name: http, port: 9080}]
  endpoints: [{address: 127.0.0.21}]
"#;

const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";
const SILENCE: Duration = Duration::from_millis(300);

struct DeltaClient {
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
}

impl DeltaClient {
    async fn connect(addr: std::net::SocketAddr) -> DeltaClient {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect to ADS");
        let (requests, rx) = mpsc::channel(16);
        let responses = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("open delta stream")
            .into_inner();
        DeltaClient {
            requests,
            responses,
        }
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.requests.send(request).await.expect("send request");
    }

    async fn next(&mut self) -> DeltaDiscoveryResponse {
        next_message(&mut self.responses).await
    }

    /// Subscribes (`[]` on a first CDS/LDS request: the legacy wildcard)
    /// and returns the answer.
    async fn subscribe(&mut self, ty: XdsType, names: &[&str]) -> DeltaDiscoveryResponse {
        self.send(subscribe(ty, names)).await;
        let response = self.next().await;
        assert_eq!(response.type_url, ty.type_url());
        response
    }

    async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    async fn expect_silence(&mut self) {
        expect_silence(&mut self.responses, SILENCE).await
    }
}

fn subscribe(ty: XdsType, names: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: node(),
        type_url: ty.type_url(),
        resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn names(response: &DeltaDiscoveryResponse) -> Vec<&str> {
    response.resources.iter().map(|r| r.name.as_str()).collect()
}

fn versions(response: &DeltaDiscoveryResponse) -> HashMap<String, String> {
    response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

#[tokio::test]
async fn delta_initial_wildcard_cds_and_lds_send_everything_once() {
    let h = start().await;
    let mut c = DeltaClient::connect(h.addr).await;
    let cds = c.subscribe(XdsType::Cluster, &[]).await;
    assert!(names(&cds).contains(&REVIEWS), "{:?}", names(&cds));
    assert!(cds.resources.iter().all(|r| {
        !r.version.is_empty()
            && r.resource
                .as_ref()
                .is_some_and(|any| any.type_url == XdsType::Cluster.type_url())
    }));
    assert!(cds.removed_resources.is_empty());
    assert!(!cds.nonce.is_empty() && !cds.system_version_info.is_empty());
    c.ack(&cds).await;

    let lds = c.subscribe(XdsType::Listener, &[]).await;
    assert!(!lds.resources.is_empty(), "listeners for the mesh");
    c.ack(&lds).await;
    c.expect_silence().await;

    let proxy = &h.ctx.status.list()[0];
    let status = serde_json::to_value(proxy).expect("status as /debug/syncz shows it");
    assert_eq!(status["protocol"], "delta");
    for (ty, response) in [(XdsType::Cluster, &cds), (XdsType::Listener, &lds)] {
        let s = &proxy.types[&ty];
        assert_eq!(
            s.sent_version.as_deref(),
            Some(response.system_version_info.as_str())
        );
        assert_eq!(s.acked_version, s.sent_version, "{ty:?} acked");
        assert_eq!(s.pushes, 1);
    }

    // Re-publishing the same inputs sends nothing.
    let mut h = h;
    h.publish();
    c.expect_silence().await;
}

#[tokio::test]
async fn delta_named_eds_and_rds_subscribe_and_unsubscribe() {
    let mut h = start_with(TWO_SERVICES).await;
    let mut c = DeltaClient::connect(h.addr).await;
    let missing = "outbound|9080||nope.default.svc.cluster.local";
    let eds = c.subscribe(XdsType::Endpoint, &[REVIEWS, missing]).await;
    assert_eq!(names(&eds), [REVIEWS], "only the subscribed, existing name");
    assert_eq!(
        eds.removed_resources,
        [missing],
        "a missing name is reported"
    );
    c.ack(&eds).await;

    // Subscribing to one more name sends just that one.
    c.send(subscribe(XdsType::Endpoint, &[RATINGS])).await;
    let more = c.next().await;
    assert_eq!(names(&more), [RATINGS]);
    c.ack(&more).await;

    let rds = c.subscribe(XdsType::Route, &["9080"]).await;
    assert_eq!(names(&rds), ["9080"]);
    c.ack(&rds).await;

    // Unsubscribing needs no answer, and later changes of that name are not sent.
    c.send(DeltaDiscoveryRequest {
        type_url: XdsType::Endpoint.type_url(),
        resource_names_unsubscribe: vec![REVIEWS.into()],
        ..Default::default()
    })
    .await;
    c.expect_silence().await;
    h.set_registry(&TWO_SERVICES.replace("127.0.0.11", "127.0.0.12"));
    c.expect_silence().await;
    let status = &h.ctx.status.list()[0].types[&XdsType::Endpoint];
    assert_eq!(status.resource_names.to_vec(), [RATINGS]);
}

#[tokio::test]
async fn delta_config_change_sends_only_the_changed_resource() {
    let mut h = start_with(TWO_SERVICES).await;
    let mut c = DeltaClient::connect(h.addr).await;
    let cds = c.subscribe(XdsType::Cluster, &[]).await;
    c.ack(&cds).await;
    let eds = c.subscribe(XdsType::Endpoint, &[REVIEWS, RATINGS]).await;
    assert_eq!(names(&eds), [RATINGS, REVIEWS]);
    c.ack(&eds).await;

    // reviews gets a second endpoint: one ClusterLoadAssignment, nothing else.
    h.set_registry(&TWO_SERVICES.replace(
        "[{address: 127.0.0.11, labels: {version: v1}}]",
        "[{address: 127.0.0.11}, {address: 127.0.0.12}]",
    ));
    let update = c.next().await;
    assert_eq!(update.type_url, XdsType::Endpoint.type_url());
    assert_eq!(names(&update), [REVIEWS]);
    assert!(update.removed_resources.is_empty());
    assert_ne!(update.resources[0].version, versions(&eds)[REVIEWS]);
    assert_ne!(update.system_version_info, eds.system_version_info);
    c.ack(&update).await;
    c.expect_silence().await;
    let metrics = h.ctx.metrics.encode();
    assert!(
        metrics.contains(r#"pilotfish_xds_pushes_total{type="eds"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn delta_removed_service_arrives_in_removed_resources_clusters_after_the_rest() {
    let mut h = start_with(TWO_SERVICES).await;
    let mut c = DeltaClient::connect(h.addr).await;
    let cds = c.subscribe(XdsType::Cluster, &[]).await;
    assert!(names(&cds).contains(&RATINGS));
    c.ack(&cds).await;
    let eds = c.subscribe(XdsType::Endpoint, &[REVIEWS, RATINGS]).await;
    c.ack(&eds).await;

    let reviews_only = TWO_SERVICES
        .split("- hostname: ratings")
        .next()
        .unwrap_or_default();
    h.set_registry(reviews_only);
    // Its endpoints go first; the cluster last, once the routes and
    // listeners that named it have changed (make before break).
    let eds_update = c.next().await;
    assert_eq!(eds_update.type_url, XdsType::Endpoint.type_url());
    assert_eq!(eds_update.removed_resources, [RATINGS]);
    assert!(eds_update.resources.is_empty());
    c.ack(&eds_update).await;
    let cds_update = c.next().await;
    assert_eq!(cds_update.type_url, XdsType::Cluster.type_url());
    assert!(
        cds_update.removed_resources.contains(&RATINGS.to_string()),
        "{:?}",
        cds_update.removed_resources
    );
    assert!(
        !names(&cds_update).contains(&REVIEWS),
        "the unchanged reviews cluster is not resent"
    );
    c.ack(&cds_update).await;
    let status = &h.ctx.status.list()[0].types[&XdsType::Cluster];
    assert!(!status.resource_names.to_vec().iter().any(|n| n == RATINGS));
}

#[tokio::test]
async fn delta_reconnect_with_initial_versions_sends_only_what_differs() {
    let mut h = start_with(TWO_SERVICES).await;
    let held = {
        let mut c = DeltaClient::connect(h.addr).await;
        let cds = c.subscribe(XdsType::Cluster, &[]).await;
        c.ack(&cds).await;
        versions(&cds)
    };

    // Nothing changed: the first request is answered, with nothing in it.
    let mut c = DeltaClient::connect(h.addr).await;
    c.send(DeltaDiscoveryRequest {
        initial_resource_versions: held.clone(),
        ..subscribe(XdsType::Cluster, &[])
    })
    .await;
    let same = c.next().await;
    assert!(same.resources.is_empty() && same.removed_resources.is_empty());
    drop(c);

    // While away: ratings is gone, and the proxy claims a cluster that
    // never existed and an outdated reviews cluster.
    let reviews_only = TWO_SERVICES
        .split("- hostname: ratings")
        .next()
        .unwrap_or_default();
    h.set_registry(reviews_only);
    let mut stale = held.clone();
    stale.insert("outbound|1||ghost".into(), "v0".into());
    stale.insert(REVIEWS.into(), "outdated".into());
    let mut c = DeltaClient::connect(h.addr).await;
    c.send(DeltaDiscoveryRequest {
        initial_resource_versions: stale,
        ..subscribe(XdsType::Cluster, &[])
    })
    .await;
    let delta = c.next().await;
    assert_eq!(names(&delta), [REVIEWS], "only what differs is sent");
    let mut removed = delta.removed_resources.clone();
    removed.sort();
    assert!(
        removed.contains(&"outbound|1||ghost".to_string()),
        "{removed:?}"
    );
    assert!(removed.contains(&RATINGS.to_string()), "{removed:?}");
    assert!(
        held.keys()
            .filter(|n| n.as_str() != REVIEWS)
            .all(|n| !names(&delta).contains(&n.as_str())),
        "clusters the proxy holds at their version are not resent"
    );
}

#[tokio::test]
async fn delta_nack_is_recorded_and_not_resent_in_a_loop() {
    let h = start().await;
    let mut c = DeltaClient::connect(h.addr).await;
    let cds = c.subscribe(XdsType::Cluster, &[]).await;
    c.send(DeltaDiscoveryRequest {
        type_url: XdsType::Cluster.type_url(),
        response_nonce: cds.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "test: cluster rejected".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    c.expect_silence().await;

    let syncz = serde_json::to_value(h.ctx.status.list()).expect("syncz proxies");
    let cds_status = &syncz[0]["types"]["Cluster"];
    assert_eq!(cds_status["last_nack"], "test: cluster rejected", "{syncz}");
    assert_eq!(cds_status["nacks"], 1);
    assert_eq!(
        cds_status["pushes"], 1,
        "the rejected content is not pushed again"
    );
    assert!(cds_status["acked_version"].is_null());
    let metrics = h.ctx.metrics.encode();
    assert!(
        metrics.contains(r#"pilotfish_xds_nacks_total{type="cds"} 1"#),
        "{metrics}"
    );

    // A reply to a nonce never sent is ignored, not taken for an ACK.
    c.send(DeltaDiscoveryRequest {
        type_url: XdsType::Cluster.type_url(),
        response_nonce: "not-a-nonce-we-sent".into(),
        ..Default::default()
    })
    .await;
    c.expect_silence().await;
    let status = &h.ctx.status.list()[0].types[&XdsType::Cluster];
    assert!(status.acked_version.is_none());
}

#[tokio::test]
async fn delta_stream_without_a_valid_node_is_rejected() {
    let h = start().await;
    let mut c = DeltaClient::connect(h.addr).await;
    let mut request = subscribe(XdsType::Cluster, &[]);
    if let Some(node) = request.node.as_mut() {
        node.id = "not-istio-form".into();
    }
    c.send(request).await;
    let err = tokio::time::timeout(Duration::from_secs(5), c.responses.message())
        .await
        .expect("an answer")
        .expect_err("the stream fails");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
