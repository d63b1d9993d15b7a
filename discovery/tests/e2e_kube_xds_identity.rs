//! Proxy identity against a real kube-apiserver: ServiceAccount tokens
//! (audience `istio-ca`) checked with TokenReview on the secure xDS port.
//!
//! - A valid token of the Secret's namespace receives the Secret over SDS.
//! - A token of another namespace, with a node claiming the Secret's
//!   namespace, is refused (PERMISSION_DENIED); a token for another audience
//!   is refused (UNAUTHENTICATED); plaintext gets no secret.
//! - `pilotfish certificate request` trades a token for a workload
//!   certificate (Istio's CreateCertificate); a stock Envoy gateway presents
//!   it on 15012, receives its credentials over SDS and serves HTTPS.
//!
//! The refusals use a gRPC client that lies about itself (Envoy cannot be
//! made to); the accepted paths use real Envoy. Needs root and
//! scripts/install-kube-apiserver.sh.

mod support;

use std::path::Path;
use std::process::Command;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use support::gateway::{INGRESS_LABELS, https_tally};
use support::kube_apiserver::KubeApiServer;
use support::kube_mesh::{
    KubePod, KubePodOptions, apply, apply_bookinfo_config, bookinfo_workloads, install_crds,
    secret_yaml, service_account_token,
};
use support::netns::Netns;
use support::pilotfish;
use support::secure_xds::{self, SECURE_XDS_ADDRESS};
use support::tls::TestCa;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [secure]
  http:
  - route: [{destination: {host: productpage, port: {number: 9080}}}]
"#;

const SECRET: &str = "kubernetes://shop-cert";

/// An SDS request for the shop certificate from a gateway that says it is
/// in namespace `default`, sent with `token` over TLS (or plaintext);
/// the first answer or the status that ended the stream.
fn ask_for_the_secret(
    ns: &Netns,
    dir: &Path,
    token: Option<&str>,
    secure: bool,
) -> Result<DiscoveryResponse, tonic::Status> {
    let root = std::fs::read_to_string(secure_xds::ca_dir(dir).join("ca-cert.pem"))
        .expect("mesh CA certificate");
    ns.run(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let channel = if secure {
                let tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(root))
                    .domain_name(secure_xds::SERVER_NAME);
                Channel::from_shared(format!("https://{SECURE_XDS_ADDRESS}"))
                    .expect("uri")
                    .tls_config(tls)
                    .expect("tls")
                    .connect()
                    .await
            } else {
                Channel::from_shared(format!("http://{}", pilotfish::XDS_ADDRESS))
                    .expect("uri")
                    .connect()
                    .await
            }
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let text = |v: &str| Value {
                kind: Some(Kind::StringValue(v.into())),
            };
            // A gateway the Gateway selects, so its view holds the secret.
            let mut labels = Struct::default();
            labels.fields.insert("istio".into(), text("ingressgateway"));
            let mut metadata = Struct::default();
            metadata.fields.insert("NAMESPACE".into(), text("default"));
            metadata.fields.insert(
                "LABELS".into(),
                Value {
                    kind: Some(Kind::StructValue(labels)),
                },
            );
            let (tx, rx) = mpsc::channel(2);
            tx.send(DiscoveryRequest {
                node: Some(Node {
                    id: "router~127.0.0.250~intruder.default~default.svc.cluster.local".into(),
                    metadata: Some(metadata),
                    ..Default::default()
                }),
                type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
                    .into(),
                resource_names: vec![SECRET.into()],
                ..Default::default()
            })
            .await
            .expect("queue");
            let mut request = tonic::Request::new(ReceiverStream::new(rx));
            if let Some(token) = token {
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}").parse().expect("ascii"),
                );
            }
            let mut responses = AggregatedDiscoveryServiceClient::new(channel)
                .stream_aggregated_resources(request)
                .await?
                .into_inner();
            let answer = responses.message().await?;
            drop(tx);
            answer.ok_or_else(|| tonic::Status::cancelled("no answer"))
        })
    })
}

#[test]
fn service_account_tokens_are_reviewed_and_secrets_go_only_to_their_namespace() {
    let server = KubeApiServer::start("kube-xds-identity");
    install_crds(&server);
    apply(&server, &bookinfo_workloads());
    apply_bookinfo_config(&server);
    let ca = TestCa::new("kube-xds-identity");
    let shop = ca.issue("shop.example.com");
    apply(&server, &secret_yaml(&server, "shop-cert", &shop, None));
    apply(&server, GATEWAY);
    let pod = KubePod::start(&server, KubePodOptions::secure("kube-xds-id"));
    pod.wait_bookinfo_served();

    let ours = service_account_token(&server, "default", "ingress", "istio-ca");
    let theirs = service_account_token(&server, "guest", "ingress", "istio-ca");
    let other_audience = service_account_token(&server, "default", "ingress", "vault");

    let granted = ask_for_the_secret(pod.ns(), pod.path(), Some(&ours), true)
        .expect("a valid token of namespace default");
    assert_eq!(granted.resources.len(), 1, "{granted:?}");

    let refused = ask_for_the_secret(pod.ns(), pod.path(), Some(&theirs), true)
        .expect_err("a token of namespace guest claiming default");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("spiffe://cluster.local/ns/guest/sa/ingress"),
        "{refused:?}"
    );
    let refused = ask_for_the_secret(pod.ns(), pod.path(), Some(&other_audience), true)
        .expect_err("a token for another audience");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let plaintext = ask_for_the_secret(pod.ns(), pod.path(), None, false)
        .expect("plaintext answers, without secrets");
    assert!(plaintext.resources.is_empty(), "{plaintext:?}");
    let refused = ask_for_the_secret(pod.ns(), pod.path(), None, true)
        .expect_err("no credential on the secure port");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    let metrics = pod.pilotfish.metrics();
    for line in [
        r#"pilotfish_xds_authentication_failures_total{reason="identity_mismatch"} 1"#,
        r#"pilotfish_sds_refusals_total{reason="plaintext"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    let log = pod.pilotfish.log();
    assert!(
        !log.contains(&ours) && !log.contains(&theirs) && !log.contains("PRIVATE KEY"),
        "tokens or keys reached the log"
    );

    // A token traded for a workload certificate (CreateCertificate), which
    // a stock Envoy then presents.
    let token_file = pod.path().join("ingress.token");
    std::fs::write(&token_file, &ours).expect("write token");
    let certs = pod.path().join("ingress-certs");
    let root = secure_xds::ca_dir(pod.path()).join("ca-cert.pem");
    let request = pod.ns().run(|| {
        Command::new(pilotfish::binary())
            .args([
                "certificate",
                "request",
                "--xds-address",
                SECURE_XDS_ADDRESS,
            ])
            .args(["--root-cert", &root.display().to_string()])
            .args(["--token-file", &token_file.display().to_string()])
            .args(["--out-dir", &certs.display().to_string()])
            .output()
            .expect("run pilotfish certificate request")
    });
    assert!(
        request.status.success(),
        "pilotfish certificate request: {}",
        String::from_utf8_lossy(&request.stderr)
    );
    secure_xds::give_to_proxy(&certs);
    let bootstrap_args = vec![
        "--xds-root-cert".to_string(),
        certs.join("root-cert.pem").display().to_string(),
        "--cert-dir".into(),
        certs.display().to_string(),
        "--service-account".into(),
        "ingress".into(),
    ];
    let gateway = pod.start_secure_gateway("ingress", &INGRESS_LABELS, &bootstrap_args);
    gateway.wait_listener("0.0.0.0_8443");
    https_tally(pod.ns(), 8443, "shop.example.com", &ca, None, 10).assert_all(
        "productpage v1",
        "HTTPS with the Secret served to a certificate-authenticated gateway",
    );
    gateway.assert_no_rejected_updates();
    let synced = pod.pilotfish.wait_synced_without_nack(gateway.node_id());
    assert!(
        synced
            .to_string()
            .contains("spiffe://cluster.local/ns/default/sa/ingress"),
        "{synced}"
    );
}
