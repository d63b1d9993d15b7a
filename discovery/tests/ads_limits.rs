//! What one client can make the ADS server hold: oversized nodes and
//! requests are refused, and a client that stops reading is disconnected
//! without delaying anyone else's push.

mod ads_support;

use std::time::Duration;

use ads_support::{
    Harness, channel, narrow_channel, next_message, open_delta, open_sotw, start_with_limits,
    wait_for,
};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use pilotfish_discovery::ads::XdsLimits;
use pilotfish_discovery::xds_types::XdsType;
use tonic::Code;

const HEALTHY: &str = "sidecar~127.0.0.1~healthy.default~default.svc.cluster.local";
const STUCK: &str = "sidecar~127.0.0.2~stuck.default~default.svc.cluster.local";

/// A file registry of `count` HTTP services, so that CDS and LDS
/// responses are some hundred kilobytes.
fn registry(count: usize) -> String {
    let mut yaml = String::from("services:\n");
    for i in 0..count {
        yaml += &format!(
            "- hostname: svc-{i}.default.svc.cluster.local\n  addresses: [127.3.{}.{}]\n  ports: [{{name: http, port: 9080}}]\n  endpoints: [{{address: 127.4.{}.{}}}]\n",
            i / 250,
            i % 250 + 1,
            i / 250,
            i % 250 + 1
        );
    }
    yaml
}

fn node_with_blob(id: &str, blob_bytes: usize) -> Node {
    let mut metadata = Struct::default();
    metadata.fields.insert(
        "BLOB".into(),
        Value {
            kind: Some(Kind::StringValue("x".repeat(blob_bytes))),
        },
    );
    Node {
        id: id.into(),
        metadata: Some(metadata),
        ..Default::default()
    }
}

fn wildcard(ty: XdsType, id: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(node_with_blob(id, 0)),
        type_url: ty.type_url(),
        ..Default::default()
    }
}

/// Sends a CDS request carrying `node` and returns the error that ends the
/// stream (within 5 s).
async fn refused_cds_request(h: &Harness, node: Node) -> tonic::Status {
    let (requests, mut responses) = open_sotw(channel(h.addr).await).await.expect("open stream");
    let request = DiscoveryRequest {
        node: Some(node),
        type_url: XdsType::Cluster.type_url(),
        ..Default::default()
    };
    requests.send(request).await.expect("send");
    tokio::time::timeout(Duration::from_secs(5), responses.message())
        .await
        .expect("an answer within 5s")
        .expect_err("the request is refused")
}

#[tokio::test]
async fn a_node_over_max_node_bytes_is_refused_before_it_is_stored() {
    let limits = XdsLimits {
        max_node_bytes: 1024,
        ..XdsLimits::default()
    };
    let h = start_with_limits(&registry(1), limits).await;
    let node = node_with_blob(HEALTHY, 4096);
    let size = prost::Message::encoded_len(&node);
    let refused = refused_cds_request(&h, node).await;
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains(&size.to_string()) && refused.message().contains("1024"),
        "{}",
        refused.message()
    );
    assert!(h.ctx.status.is_empty());
    assert_eq!(h.ctx.metrics.connected_proxies.get(), 0);
}

#[tokio::test]
async fn a_request_over_max_request_bytes_is_refused() {
    let limits = XdsLimits {
        max_request_bytes: 64 * 1024,
        max_node_bytes: 1024 * 1024,
        ..XdsLimits::default()
    };
    let h = start_with_limits(&registry(1), limits).await;
    let refused = refused_cds_request(&h, node_with_blob(HEALTHY, 100 * 1024)).await;
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");
    assert!(h.ctx.status.is_empty());
}

/// Large meshes subscribe to thousands of names in one delta request.
#[tokio::test]
async fn a_delta_request_for_ten_thousand_names_fits_the_default_limits() {
    let h = start_with_limits(&registry(1), XdsLimits::default()).await;
    let (requests, mut responses) = open_delta(channel(h.addr).await)
        .await
        .expect("open stream");
    let names: Vec<String> = (0..10_000)
        .map(|i| format!("outbound|9080||svc-{i}.namespace-{i:05}.svc.cluster.local"))
        .chain(["outbound|9080||svc-0.default.svc.cluster.local".to_string()])
        .collect();
    requests
        .send(DeltaDiscoveryRequest {
            node: Some(node_with_blob(HEALTHY, 0)),
            type_url: XdsType::Endpoint.type_url(),
            resource_names_subscribe: names,
            ..Default::default()
        })
        .await
        .expect("send");
    let eds = next_message(&mut responses).await;
    assert_eq!(
        eds.resources.len(),
        1,
        "the one subscribed name that exists"
    );
}

/// Order-based: the stuck stream stops reading, generations keep coming,
/// the healthy stream receives each of them while the stuck one's session
/// still lags behind; then the stuck one is closed and released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_delay_others_and_is_disconnected() {
    let limits = XdsLimits {
        stream_send_timeout: Duration::from_secs(5),
        ..XdsLimits::default()
    };
    let mut services = 300;
    let mut h = start_with_limits(&registry(services), limits).await;

    // Each on its own connection, as two Envoys would be.
    let (stuck_requests, mut stuck_responses) = open_sotw(narrow_channel(h.addr).await)
        .await
        .expect("open the stuck stream");
    for ty in [XdsType::Cluster, XdsType::Listener] {
        stuck_requests
            .send(wildcard(ty, STUCK))
            .await
            .expect("send");
    }
    let (healthy_requests, mut healthy_responses) = open_sotw(channel(h.addr).await)
        .await
        .expect("open the healthy stream");
    healthy_requests
        .send(wildcard(XdsType::Cluster, HEALTHY))
        .await
        .expect("send");
    let mut healthy_version = next_message(&mut healthy_responses).await.version_info;
    wait_for(
        "both proxies connected",
        Duration::from_secs(10),
        || match h.ctx.status.find(STUCK) {
            Some(_) => Ok(()),
            None => Err("the stuck proxy has not registered".into()),
        },
    )
    .await;

    // Generations outgrow what the stuck stream's buffers can hold (the
    // response channel, HTTP/2's send buffer and the client's window); the
    // healthy stream receives each of them meanwhile.
    let mut current = h.ctx.generations.borrow().version;
    for _ in 0..40 {
        let stuck = h
            .ctx
            .status
            .find(STUCK)
            .expect("the stuck stream is still open (within its send timeout)");
        if stuck.mesh_version + 3 <= current {
            break;
        }
        services += 1;
        h.set_registry(&registry(services));
        let cds = next_message(&mut healthy_responses).await;
        assert_ne!(cds.version_info, healthy_version, "a push per generation");
        healthy_version = cds.version_info;
        current = h.ctx.generations.borrow().version;
    }
    let stuck = h.ctx.status.find(STUCK).expect("the stuck stream is open");
    assert!(
        stuck.mesh_version + 3 <= current,
        "the stuck stream lags behind: at {} while the healthy one has {current}",
        stuck.mesh_version
    );

    wait_for(
        "the stuck stream to be closed",
        Duration::from_secs(15),
        || match h.ctx.status.find(STUCK) {
            None => Ok(()),
            Some(s) => Err(format!("still registered at generation {}", s.mesh_version)),
        },
    )
    .await;
    assert_eq!(h.ctx.metrics.stalled_streams.get(), 1);
    assert_eq!(
        h.ctx.metrics.connected_proxies.get(),
        1,
        "only the healthy one"
    );
    assert!(h.ctx.status.find(HEALTHY).is_some());

    // The stuck client, once it reads again, finds what was buffered and
    // then the end of its stream.
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = stuck_responses.message().await {}
    })
    .await
    .expect("the stuck stream ends");

    // The healthy stream keeps receiving pushes.
    h.set_registry(&registry(services + 1));
    let cds = next_message(&mut healthy_responses).await;
    assert_ne!(cds.version_info, healthy_version);
}
