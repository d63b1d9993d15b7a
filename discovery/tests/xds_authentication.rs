//! Who may receive what over ADS: the secure port verifies a client
//! certificate from the mesh CA (tokens are checked against a real
//! kube-apiserver in `e2e_kube_xds_identity.rs`), a node that claims another
//! namespace than it proved is refused, and secrets never go to an anonymous
//! or plaintext stream. Both ports run the server's own accept loops and TLS
//! setup in-process; the client is a gRPC stand-in for Envoy because the
//! tests need a client that lies about itself.

mod ads_support;

use ads_support::{Credential, Harness, next_message, start};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use pilotfish_discovery::mesh_store::Credentials;
use pilotfish_discovery::security::WorkloadIdentity;
use pilotfish_discovery::xds_types::XdsType;
use pilotfish_translate::TlsCredential;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: shop-cert}
"#;

const SECRET_NAME: &str = "kubernetes://shop-cert";

/// A harness whose namespace `shop` holds credential `shop-cert`.
async fn shop_with_a_secret() -> Harness {
    let mut h = start().await;
    h.set_config("gateway.yaml", GATEWAY);
    h.store.set_dynamic_credentials(
        "test-secrets",
        Credentials::from([(
            ("shop".into(), "shop-cert".into()),
            TlsCredential {
                certificate_chain: b"CHAIN".to_vec(),
                private_key: b"PRIVATE-KEY-MATERIAL".to_vec(),
                ca_certificates: None,
            },
        )]),
        Vec::new(),
    );
    assert!(h.publish(), "a new generation");
    h
}

/// A gateway node of namespace `claimed_namespace` (in its id and metadata).
fn gateway_node(claimed_namespace: &str) -> Option<Node> {
    let mut metadata = Struct::default();
    metadata.fields.insert(
        "NAMESPACE".into(),
        Value {
            kind: Some(Kind::StringValue(claimed_namespace.into())),
        },
    );
    Some(Node {
        id: format!("router~10.0.0.9~gw.{claimed_namespace}~{claimed_namespace}.svc.cluster.local"),
        metadata: Some(metadata),
        ..Default::default()
    })
}

fn sds_request(claimed_namespace: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: gateway_node(claimed_namespace),
        type_url: XdsType::Secret.type_url(),
        resource_names: vec![SECRET_NAME.into()],
        ..Default::default()
    }
}

/// Opens a SotW stream on `channel` and sends `first`; the first answer,
/// or the status that ended the stream.
async fn first_answer(
    channel: Channel,
    first: DiscoveryRequest,
) -> Result<DiscoveryResponse, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(first).await.expect("queue request");
    let mut responses = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let answer = responses.message().await?;
    drop(tx);
    answer.ok_or_else(|| tonic::Status::cancelled("stream ended without an answer"))
}

fn shop_gateway() -> WorkloadIdentity {
    WorkloadIdentity::new("cluster.local", "shop", "gateway")
}

#[tokio::test]
async fn authenticated_gateway_of_the_secret_namespace_receives_it_over_tls() {
    let h = shop_with_a_secret().await;
    let identity = shop_gateway();
    let channel = h
        .secure_channel(Credential::Certificate(&identity))
        .await
        .expect("TLS with a mesh certificate");
    let sds = first_answer(channel, sds_request("shop"))
        .await
        .expect("answered");
    assert_eq!(sds.resources.len(), 1, "{sds:?}");
    let syncz = serde_json::to_string(&h.ctx.status.list()[0].verified_identity).expect("json");
    assert!(
        syncz.contains("spiffe://cluster.local/ns/shop/sa/gateway"),
        "{syncz}"
    );
}

#[tokio::test]
async fn plaintext_stream_claiming_the_secret_namespace_gets_config_but_no_secret() {
    let h = shop_with_a_secret().await;
    let sds = first_answer(h.plaintext_channel().await, sds_request("shop"))
        .await
        .expect("answered");
    assert!(sds.resources.is_empty(), "plaintext got a secret: {sds:?}");
    // Config itself is still served on plaintext, as Istio's 15010 does.
    let cds = first_answer(
        h.plaintext_channel().await,
        DiscoveryRequest {
            type_url: XdsType::Cluster.type_url(),
            resource_names: vec![],
            ..sds_request("shop")
        },
    )
    .await
    .expect("answered");
    assert!(!cds.resources.is_empty());
    let metrics = h.ctx.metrics.encode();
    assert!(
        metrics.contains(r#"pilotfish_sds_refusals_total{reason="plaintext"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains("PRIVATE-KEY"), "{metrics}");
}

#[tokio::test]
async fn plaintext_delta_stream_gets_no_secret_either() {
    let h = shop_with_a_secret().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: gateway_node("shop"),
        type_url: XdsType::Secret.type_url(),
        resource_names_subscribe: vec![SECRET_NAME.into()],
        ..Default::default()
    })
    .await
    .expect("queue");
    let mut responses = AggregatedDiscoveryServiceClient::new(h.plaintext_channel().await)
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let answer = next_message(&mut responses).await;
    assert!(answer.resources.is_empty(), "{answer:?}");
}

#[tokio::test]
async fn node_claiming_another_namespace_than_its_certificate_is_refused() {
    let h = shop_with_a_secret().await;
    let intruder = WorkloadIdentity::new("cluster.local", "guest", "gateway");
    let channel = h
        .secure_channel(Credential::Certificate(&intruder))
        .await
        .expect("TLS with a mesh certificate");
    let status = first_answer(channel, sds_request("shop"))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("\"shop\"")
            && status
                .message()
                .contains("spiffe://cluster.local/ns/guest/sa/gateway"),
        "{status:?}"
    );
    assert!(
        h.ctx.status.list().is_empty(),
        "a refused stream holds no state"
    );
    let metrics = h.ctx.metrics.encode();
    assert!(
        metrics.contains(
            r#"pilotfish_xds_authentication_failures_total{reason="identity_mismatch"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn secure_port_refuses_a_stream_without_credential() {
    let h = shop_with_a_secret().await;
    let channel = h
        .secure_channel(Credential::None)
        .await
        .expect("TLS without a client certificate");
    let status = first_answer(channel, sds_request("shop"))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn certificate_from_another_ca_fails_the_handshake() {
    let h = shop_with_a_secret().await;
    let forged = shop_gateway();
    let outcome = match h
        .secure_channel(Credential::ForeignCertificate(&forged))
        .await
    {
        Err(e) => Err(e.to_string()),
        Ok(channel) => first_answer(channel, sds_request("shop"))
            .await
            .map_err(|s| s.to_string()),
    };
    assert!(
        outcome.is_err(),
        "a forged certificate got through: {outcome:?}"
    );
    assert!(h.ctx.status.list().is_empty());
}

#[tokio::test]
async fn bearer_token_on_plaintext_is_refused() {
    let h = shop_with_a_secret().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(sds_request("shop")).await.expect("queue");
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", "Bearer stolen".parse().expect("ascii"));
    let status = AggregatedDiscoveryServiceClient::new(h.plaintext_channel().await)
        .stream_aggregated_resources(request)
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("TLS"), "{status:?}");
}
