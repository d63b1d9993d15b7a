//! Gateway certificates from Kubernetes Secrets, delivered over SDS, end to
//! end: a real kube-apiserver holds the Secrets (made with kubectl from a
//! test CA), the Gateway names them with `credentialName`, pilotfish
//! (`--config-source kubernetes`) serves them to a stock Envoy running as
//! the ingress gateway, and a real TLS client checks what it gets:
//!
//! - SIMPLE: the Secret's certificate is presented for its host.
//! - MUTUAL: the CA of Secret `<name>-cacert` (Istio's separate CA Secret)
//!   verifies clients; no certificate, no entry.
//! - DestinationRule `credentialName`: the gateway originates mutual TLS to
//!   an external backend with the client certificate and CA of another
//!   Secret (the egress side of the same mechanism).
//! - Renewing the Secret (a certificate from a new CA) changes what Envoy
//!   presents, without a restart; deleting it stops the server and is
//!   reported naming the Gateway and field.
//!
//! The gateway connects to the secure xDS port (15012) with a ServiceAccount
//! token (audience `istio-ca`) that pilotfish checks with the API server's
//! TokenReview: secrets go only to a proxy authenticated in their namespace.
//!
//! Needs root (network namespaces) and scripts/install-kube-apiserver.sh.

mod support;

use std::time::Instant;

use support::gateway::{INGRESS_LABELS, https_tally, to_gateway};
use support::kube_apiserver::KubeApiServer;
use support::kube_mesh::{
    KubePod, KubePodOptions, apply, apply_bookinfo_config, bookinfo_workloads, install_crds,
    secret_yaml, service_account_token,
};
use support::tls::{ClientAuth, TestCa, TlsBackends};
use support::traffic::ms;
use support::{PROPAGATION, wait_until};

const PORT: u16 = 8443;
const N: usize = 20;

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
  - port: {number: 8443, name: mtls, protocol: HTTPS}
    hosts: [partner.example.com]
    tls: {mode: MUTUAL, credentialName: partner-cert}
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [vault.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com, partner.example.com]
  gateways: [secure]
  http:
  - route: [{destination: {host: productpage, port: {number: 9080}}}]
---
# An external service that demands a client certificate, reached from the
# gateway with mutual TLS whose certificate and CA come from Secret
# vault-client.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vault, namespace: default}
spec:
  hosts: [vault.internal.example.com]
  ports: [{number: 443, name: http, protocol: HTTP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: 127.0.0.71, ports: {http: 9443}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: vault, namespace: default}
spec:
  host: vault.internal.example.com
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: vault-client, sni: vault.internal.example.com}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vault, namespace: default}
spec:
  hosts: [vault.example.com]
  gateways: [secure]
  http:
  - route: [{destination: {host: vault.internal.example.com, port: {number: 443}}}]
"#;

#[test]
fn credential_name_secrets_reach_envoy_over_sds_and_follow_renewal_and_deletion() {
    let server = KubeApiServer::start("kube-gw-sds");
    install_crds(&server);
    apply(&server, &bookinfo_workloads());
    apply_bookinfo_config(&server);
    let ca = TestCa::new("kube-gw-sds");
    apply(
        &server,
        &secret_yaml(&server, "shop-cert", &ca.issue("shop.example.com"), None),
    );
    // partner-cert's CA sits in its own Secret, `<name>-cacert`, as Istio allows.
    apply(
        &server,
        &secret_yaml(
            &server,
            "partner-cert",
            &ca.issue("partner.example.com"),
            None,
        ),
    );
    let ca_file = format!("--from-file=cacert={}", ca.cert.display());
    let ca_secret = server
        .kubectl(&[
            "create",
            "secret",
            "generic",
            "partner-cert-cacert",
            "-n",
            "default",
            &ca_file,
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .expect_success("kubectl create secret generic --dry-run")
        .stdout;
    apply(&server, &ca_secret);
    apply(
        &server,
        &secret_yaml(
            &server,
            "vault-client",
            &ca.issue("gateway.example.com"),
            Some(&ca),
        ),
    );
    apply(&server, GATEWAY);

    let pod = KubePod::start(&server, KubePodOptions::secure("kube-gw-sds"));
    pod.wait_bookinfo_served();
    let token = service_account_token(&server, "default", "ingress", "istio-ca");
    let gateway = pod.start_gateway_with_token("ingress", &INGRESS_LABELS, &token);
    // The listener only warms once Envoy has both secrets over SDS.
    gateway.wait_listener("0.0.0.0_8443");
    let dump = gateway.config_dump().to_string();
    for name in [
        "kubernetes://shop-cert",
        "kubernetes://partner-cert",
        "kubernetes://partner-cert-cacert",
    ] {
        assert!(dump.contains(name), "Envoy has no SDS secret {name}");
    }

    https_tally(pod.ns(), PORT, "shop.example.com", &ca, None, N)
        .assert_all("productpage v1", "SIMPLE with the Secret's certificate");
    let anonymous = https_tally(pod.ns(), PORT, "partner.example.com", &ca, None, 5);
    assert_eq!(
        anonymous.count("productpage v1"),
        0,
        "MUTUAL without a certificate: {anonymous}"
    );
    let client = ca.issue("client.example.com");
    https_tally(pod.ns(), PORT, "partner.example.com", &ca, Some(&client), N).assert_all(
        "productpage v1",
        "MUTUAL with a certificate partner-cert-cacert verifies",
    );

    // Origination: plaintext in, mutual TLS out with vault-client's
    // certificate; the backend requires it and the gateway verifies the
    // backend against the Secret's CA.
    let mut tls_backends = TlsBackends::start(pod.ns());
    let vault = tls_backends.add(
        "127.0.0.71:9443",
        "vault",
        &ca.issue("vault.internal.example.com"),
        &ca,
        ClientAuth::Required,
    );
    gateway.wait_listener("0.0.0.0_8080");
    let to_vault = to_gateway(8080, "vault.example.com", "/secret");
    pod.tally(N, &to_vault)
        .assert_all("vault", "mutual TLS from the gateway with vault-client");
    // Envoy pools upstream connections: count handshakes, not requests.
    assert!(vault.handshakes() >= 1);
    assert_eq!(
        vault.client_certs(),
        vault.handshakes(),
        "every handshake presented vault-client's certificate"
    );
    assert_eq!(vault.failed_handshakes(), 0);

    // Renewal: a certificate from another CA; clients trusting it get
    // through once Envoy presents it, without any restart.
    let renewed_ca = TestCa::new("kube-gw-sds-renewed");
    let renewed = renewed_ca.issue("shop.example.com");
    let started = Instant::now();
    apply(&server, &secret_yaml(&server, "shop-cert", &renewed, None));
    wait_until(
        "Envoy to present the renewed certificate",
        PROPAGATION,
        || {
            let tally = https_tally(pod.ns(), PORT, "shop.example.com", &renewed_ca, None, 1);
            (tally.count("productpage v1") == 1)
                .then_some(())
                .ok_or(format!("{tally}"))
        },
    );
    let took = started.elapsed();
    println!(
        "renewed certificate served {} after kubectl apply",
        ms(took)
    );
    https_tally(pod.ns(), PORT, "shop.example.com", &renewed_ca, None, N)
        .assert_all("productpage v1", "the renewed certificate");
    let old = https_tally(pod.ns(), PORT, "shop.example.com", &ca, None, 5);
    assert_eq!(
        old.count("productpage v1"),
        0,
        "the old certificate is gone: {old}"
    );

    // Deletion: the server that needs it is not served, and pilotfish says why.
    server
        .kubectl(&["delete", "secret", "shop-cert", "-n", "default"])
        .expect_success("delete Secret shop-cert");
    let diagnostic = pod.pilotfish.wait_diagnostic("no Secret default/shop-cert");
    assert!(
        diagnostic.contains("Gateway default/secure")
            && diagnostic.contains("spec.servers[0].tls.credentialName"),
        "{diagnostic}"
    );
    wait_until("shop.example.com to stop answering", PROPAGATION, || {
        let tally = https_tally(pod.ns(), PORT, "shop.example.com", &renewed_ca, None, 1);
        (tally.count("productpage v1") == 0)
            .then_some(())
            .ok_or(format!("{tally}"))
    });
    // The other server keeps working.
    https_tally(pod.ns(), PORT, "partner.example.com", &ca, Some(&client), N)
        .assert_all("productpage v1", "MUTUAL after shop-cert was deleted");
    gateway.assert_no_rejected_updates();
    pod.pilotfish.wait_synced_without_nack(gateway.node_id());
}
