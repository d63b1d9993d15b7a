//! ADS protocol behaviour (nonces, ACK, NACK, subscriptions, pushes on
//! change), driven by a gRPC client that plays Envoy's part.
//!
//! A stand-in client is used here only because a correct control plane never
//! sends Envoy a config it rejects, so real Envoy cannot be made to NACK; the
//! end-to-end tests cover the same server with real Envoy.

mod ads_support;

use std::time::Duration;

use ads_support::{Credential, Harness, REVIEWS, SotwClient, node, start};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use pilotfish_discovery::mesh_store::Credentials;
use pilotfish_discovery::security::WorkloadIdentity;
use pilotfish_discovery::xds_types::XdsType;
use pilotfish_translate::TlsCredential;
use prost::Message;

type Client = SotwClient;

impl SotwClient {
    /// Subscribes to CDS and ACKs it, then subscribes to the reviews
    /// cluster's endpoints, as Envoy does while a cluster warms.
    async fn cds_then_eds(&mut self) -> (DiscoveryResponse, DiscoveryResponse) {
        self.send(request(XdsType::Cluster, &[], "", "")).await;
        let cds = self.next().await;
        self.send(request(
            XdsType::Cluster,
            &[],
            &cds.version_info,
            &cds.nonce,
        ))
        .await;
        self.send(request(XdsType::Endpoint, &[REVIEWS], "", ""))
            .await;
        let eds = self.next().await;
        (cds, eds)
    }
}

fn request(ty: XdsType, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: node(),
        type_url: ty.type_url(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn ads_sends_cds_then_answers_eds_for_subscribed_names() {
    let h = start().await;
    let mut c = Client::connect(h.addr).await;
    let (cds, eds) = c.cds_then_eds().await;
    assert_eq!(cds.type_url, XdsType::Cluster.type_url());
    assert!(!cds.nonce.is_empty() && !cds.version_info.is_empty());
    assert_eq!(eds.type_url, XdsType::Endpoint.type_url());
    assert_eq!(
        eds.resources.len(),
        1,
        "only the subscribed cluster's endpoints"
    );
    let status = h.ctx.status.list();
    let cds_status = &status[0].types[&XdsType::Cluster];
    assert_eq!(
        cds_status.acked_version.as_deref(),
        Some(cds.version_info.as_str())
    );
}

#[tokio::test]
async fn ads_nack_is_recorded_and_not_resent_in_a_loop() {
    let h = start().await;
    let mut c = Client::connect(h.addr).await;
    c.send(request(XdsType::Cluster, &[], "", "")).await;
    let cds = c.next().await;
    let mut nack = request(XdsType::Cluster, &[], "", &cds.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "test: cluster rejected".into(),
        details: vec![],
    });
    c.send(nack).await;
    c.expect_silence(Duration::from_millis(500)).await;
    let status = &h.ctx.status.list()[0].types[&XdsType::Cluster];
    assert_eq!(status.last_nack.as_deref(), Some("test: cluster rejected"));
    assert_eq!(status.nacks, 1);
    assert_eq!(status.pushes, 1, "the rejected version is not pushed again");
}

#[tokio::test]
async fn ads_pushes_only_changed_types_on_a_new_generation() {
    let mut h = start().await;
    let mut c = Client::connect(h.addr).await;
    let (_, eds) = c.cds_then_eds().await;
    c.send(request(
        XdsType::Endpoint,
        &[REVIEWS],
        &eds.version_info,
        &eds.nonce,
    ))
    .await;

    // Same content again: a rebuild with nothing changed pushes nothing.
    h.publish();
    c.expect_silence(Duration::from_millis(300)).await;

    // A new endpoint: only EDS changes.
    h.set_registry(&ads_support::REGISTRY.replace(
        "[{address: 127.0.0.11, labels: {version: v1}}]",
        "[{address: 127.0.0.11}, {address: 127.0.0.12}]",
    ));
    let update = c.next().await;
    assert_eq!(update.type_url, XdsType::Endpoint.type_url());
    assert_ne!(update.version_info, eds.version_info);
    c.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn ads_stale_nonce_is_ignored() {
    let h = start().await;
    let mut c = Client::connect(h.addr).await;
    c.send(request(XdsType::Cluster, &[], "", "")).await;
    let _ = c.next().await;
    c.send(request(
        XdsType::Cluster,
        &["something-else"],
        "",
        "not-a-nonce-we-sent",
    ))
    .await;
    c.expect_silence(Duration::from_millis(300)).await;
    let status = &h.ctx.status.list()[0].types[&XdsType::Cluster];
    assert!(status.acked_version.is_none());
}

#[tokio::test]
async fn ads_rejects_a_stream_without_a_valid_node() {
    let h = start().await;
    let mut c = Client::connect(h.addr).await;
    let mut req = request(XdsType::Cluster, &[], "", "");
    req.node = Some(Node {
        id: "not-istio-form".into(),
        ..Default::default()
    });
    c.send(req).await;
    let err = tokio::time::timeout(Duration::from_secs(5), c.responses.message())
        .await
        .expect("an answer")
        .expect_err("the stream fails");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("not-istio-form"));
}

/// A Gateway for every gateway proxy whose HTTPS server takes its
/// certificate from credential `gw-cert`.
const GATEWAY_WITH_CREDENTIAL: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: gw-cert}
"#;

/// `request` from a gateway proxy (node type `router`).
fn gateway_request(ty: XdsType, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: "router~127.0.0.1~gw.default~default.svc.cluster.local".into(),
            ..Default::default()
        }),
        ..request(ty, names, version, nonce)
    }
}

fn set_credential(h: &mut Harness, chain: &str) {
    let credential = TlsCredential {
        certificate_chain: chain.as_bytes().to_vec(),
        private_key: b"KEY".to_vec(),
        ca_certificates: None,
    };
    h.store.set_dynamic_credentials(
        "test-secrets",
        Credentials::from([(("default".into(), "gw-cert".into()), credential)]),
        Vec::new(),
    );
    assert!(h.publish(), "a new generation");
}

fn certificate_chain(response: &DiscoveryResponse) -> Vec<u8> {
    assert_eq!(response.resources.len(), 1, "{response:?}");
    let secret = Secret::decode(response.resources[0].value.as_slice()).expect("a Secret");
    assert_eq!(secret.name, "kubernetes://gw-cert");
    match secret.r#type {
        Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain:
                Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineBytes(chain)),
                    ..
                }),
            ..
        })) => chain,
        other => panic!("not an inline TLS certificate: {other:?}"),
    }
}

#[tokio::test]
async fn ads_serves_named_secrets_and_pushes_a_rotated_certificate() {
    let mut h = start().await;
    h.set_config("gateway.yaml", GATEWAY_WITH_CREDENTIAL);
    set_credential(&mut h, "CERT-1");
    // Secrets go only to a proxy authenticated in their namespace.
    let gateway = WorkloadIdentity::new("cluster.local", "default", "gw");
    let channel = h
        .secure_channel(Credential::Certificate(&gateway))
        .await
        .expect("TLS with a mesh certificate");
    let mut c = Client::on(channel).await;

    // SDS names its resources: an unknown name gets an empty answer, the
    // known one its secret.
    c.send(gateway_request(
        XdsType::Secret,
        &["kubernetes://nope"],
        "",
        "",
    ))
    .await;
    let empty = c.next().await;
    assert_eq!(empty.type_url, XdsType::Secret.type_url());
    assert!(empty.resources.is_empty());
    c.send(gateway_request(
        XdsType::Secret,
        &["kubernetes://gw-cert"],
        &empty.version_info,
        &empty.nonce,
    ))
    .await;
    let sds = c.next().await;
    assert_eq!(certificate_chain(&sds), b"CERT-1");
    c.send(gateway_request(
        XdsType::Secret,
        &["kubernetes://gw-cert"],
        &sds.version_info,
        &sds.nonce,
    ))
    .await;
    c.expect_silence(Duration::from_millis(300)).await;
    let status = &h.ctx.status.list()[0].types[&XdsType::Secret];
    assert_eq!(
        status.acked_version.as_deref(),
        Some(sds.version_info.as_str())
    );
    assert_eq!(status.resource_names.to_vec(), ["kubernetes://gw-cert"]);

    // The Secret is renewed: a new generation pushes the new certificate.
    set_credential(&mut h, "CERT-2");
    let rotated = c.next().await;
    assert_eq!(rotated.type_url, XdsType::Secret.type_url());
    assert_ne!(rotated.version_info, sds.version_info);
    assert_eq!(certificate_chain(&rotated), b"CERT-2");

    // A NACK of a secret is tracked like any other type's.
    let mut nack = gateway_request(
        XdsType::Secret,
        &["kubernetes://gw-cert"],
        "",
        &rotated.nonce,
    );
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "test: bad certificate".into(),
        details: vec![],
    });
    c.send(nack).await;
    c.expect_silence(Duration::from_millis(300)).await;
    let status = &h.ctx.status.list()[0].types[&XdsType::Secret];
    assert_eq!(status.last_nack.as_deref(), Some("test: bad certificate"));
    let metrics = h.ctx.metrics.encode();
    assert!(
        metrics.contains(r#"pilotfish_xds_pushes_total{type="sds"} 3"#)
            && metrics.contains(r#"pilotfish_xds_nacks_total{type="sds"} 1"#),
        "{metrics}"
    );
}
