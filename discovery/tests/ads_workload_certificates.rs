//! Workload certificates over SDS, in process, both ADS variants: a proxy
//! authenticated on the secure port that asks for `default` and `ROOTCA`
//! gets its identity's certificate (shared by its identity's streams, not
//! by others), a delta reconnect reporting the versions it holds is not
//! sent them again, renewals are pushed without any mesh change, and a
//! plaintext stream gets nothing.

mod ads_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ads_support::{Credential, Harness, expect_silence, next_message, node, open_delta, open_sotw};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest,
};
use pilotfish_discovery::security::ca::CertificateAuthority;
use pilotfish_discovery::security::{WorkloadCertificates, WorkloadIdentity};
use pilotfish_discovery::xds_types::XdsType;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::Channel;

const NAMES: [&str; 2] = ["default", "ROOTCA"];

/// A harness serving workload certificates living `ttl`, renewed by the
/// store's scheduler until the returned token is cancelled.
async fn harness(ttl: Duration) -> (Harness, CancellationToken) {
    let ca = CertificateAuthority::generate("cluster.local").expect("CA");
    let store = WorkloadCertificates::new(Arc::new(ca), ttl);
    let stop = CancellationToken::new();
    tokio::spawn(store.clone().run(stop.clone()));
    let h = ads_support::start_with_context(|ctx| ctx.with_workload_certificates(store)).await;
    (h, stop)
}

/// The identity of the harness's node (namespace default).
fn identity(sa: &str) -> WorkloadIdentity {
    WorkloadIdentity::new("cluster.local", "default", sa)
}

async fn secure(h: &Harness, sa: &str) -> Channel {
    h.secure_channel(Credential::Certificate(&identity(sa)))
        .await
        .expect("TLS with a mesh certificate")
}

fn delta_subscribe(initial: HashMap<String, String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: node(),
        type_url: XdsType::Secret.type_url(),
        resource_names_subscribe: NAMES.map(String::from).to_vec(),
        initial_resource_versions: initial,
        ..Default::default()
    }
}

/// Opens a delta stream asking for `default` and `ROOTCA`; its first
/// response's versions by name.
async fn delta_versions(
    channel: Channel,
    initial: HashMap<String, String>,
) -> (
    HashMap<String, String>,
    tokio::sync::mpsc::Sender<DeltaDiscoveryRequest>,
    Streaming<DeltaDiscoveryResponse>,
) {
    let (tx, mut responses) = open_delta(channel).await.expect("stream");
    tx.send(delta_subscribe(initial)).await.expect("send");
    let response = next_message(&mut responses).await;
    let versions = response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    (versions, tx, responses)
}

#[tokio::test]
async fn one_identity_shares_its_certificate_and_a_delta_reconnect_is_not_sent_it_again() {
    let (h, _stop) = harness(Duration::from_secs(3600)).await;
    let (first, _tx, _responses) =
        delta_versions(secure(&h, "reviews").await, HashMap::new()).await;
    assert_eq!(first.len(), 2, "{first:?}");
    let (second, _tx2, _r2) = delta_versions(secure(&h, "reviews").await, HashMap::new()).await;
    assert_eq!(first, second, "the same certificate for the same identity");
    let (other, _tx3, _r3) = delta_versions(secure(&h, "ratings").await, HashMap::new()).await;
    assert_ne!(first["default"], other["default"]);
    assert_eq!(first["ROOTCA"], other["ROOTCA"]);

    let (again, _tx4, _r4) = delta_versions(secure(&h, "reviews").await, first.clone()).await;
    assert!(
        again.is_empty(),
        "a reconnect holding them is sent {again:?}"
    );
}

#[tokio::test]
async fn renewals_are_pushed_to_delta_and_sotw_streams_without_a_mesh_change() {
    // Renewed at half life: every second.
    let (h, _stop) = harness(Duration::from_secs(2)).await;
    let (first, _tx, mut delta) = delta_versions(secure(&h, "reviews").await, HashMap::new()).await;
    let (sotw_tx, mut sotw) = open_sotw(secure(&h, "reviews").await)
        .await
        .expect("stream");
    sotw_tx
        .send(DiscoveryRequest {
            node: node(),
            type_url: XdsType::Secret.type_url(),
            resource_names: NAMES.map(String::from).to_vec(),
            ..Default::default()
        })
        .await
        .expect("send");
    let sotw_first = next_message(&mut sotw).await;
    assert_eq!(sotw_first.resources.len(), 2);

    let renewed = next_message(&mut delta).await;
    let names: Vec<&str> = renewed.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["default"], "only the renewed certificate");
    assert_ne!(renewed.resources[0].version, first["default"]);
    let sotw_renewed = next_message(&mut sotw).await;
    assert_ne!(sotw_renewed.version_info, sotw_first.version_info);
    assert_eq!(sotw_renewed.resources.len(), 2, "state of the world: all");
}

#[tokio::test]
async fn a_plaintext_stream_asking_for_the_workload_certificate_gets_nothing() {
    let (h, _stop) = harness(Duration::from_secs(3600)).await;
    let (_tx, mut responses) = {
        let (tx, responses) = open_delta(h.plaintext_channel().await)
            .await
            .expect("stream");
        tx.send(delta_subscribe(HashMap::new()))
            .await
            .expect("send");
        (tx, responses)
    };
    let response = next_message(&mut responses).await;
    assert!(response.resources.is_empty(), "{response:?}");
    expect_silence(&mut responses, Duration::from_millis(300)).await;
}
