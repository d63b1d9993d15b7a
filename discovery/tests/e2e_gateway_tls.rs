//! TLS at the gateway, through a stock Envoy running as the ingress
//! gateway, with a test CA and a real TLS client (rustls) that verifies the
//! certificate it gets for the SNI it sends:
//!
//! - HTTPS `SIMPLE`: the gateway presents the host's certificate (files on
//!   the proxy) for its SNI and routes the decrypted requests; other SNI
//!   gets no handshake.
//! - HTTPS `MUTUAL`: a client without a certificate (or with one from
//!   another CA) is refused; one with a certificate from the CA gets in.
//! - `PASSTHROUGH`: connections go by SNI to two TLS backends, untouched
//!   (the client verifies the backend's own certificate).
//! - `protocol: TLS` with SIMPLE: TLS is terminated with the host's
//!   certificate and the bytes forwarded per the VirtualService `tcp` rule.
//! - `httpsRedirect`: plaintext requests get a 301 to https.

mod support;

use support::gateway::{self, to_gateway, wait_gateway_serves};
use support::l4::tls_tally;
use support::tls::{self, ClientAuth, TestCa, TlsBackends};
use support::{Pod, Tally, outbound_cluster};

const HTTPS_PORT: u16 = 8443;
const PASSTHROUGH_PORT: u16 = 9443;
const TERMINATED_TCP_PORT: u16 = 9444;
const N: usize = 20;

/// The edge Gateway and its routes; certificate paths filled in per test.
fn edge_config(ca: &TestCa) -> String {
    let shop = ca.issue("shop.example.com");
    let partner = ca.issue("partner.example.com");
    let db = ca.issue("db.example.com");
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [shop.example.com]
    tls: {{httpsRedirect: true}}
  - port: {{number: {HTTPS_PORT}, name: https, protocol: HTTPS}}
    hosts: [shop.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {shop_cert}, privateKey: {shop_key}}}
  - port: {{number: {HTTPS_PORT}, name: mtls, protocol: HTTPS}}
    hosts: [partner.example.com]
    tls:
      mode: MUTUAL
      serverCertificate: {partner_cert}
      privateKey: {partner_key}
      caCertificates: {ca_cert}
  - port: {{number: {PASSTHROUGH_PORT}, name: tls, protocol: TLS}}
    hosts: ["*.internal.example.com"]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: {TERMINATED_TCP_PORT}, name: tls-term, protocol: TLS}}
    hosts: [db.example.com]
    tls: {{mode: SIMPLE, serverCertificate: {db_cert}, privateKey: {db_key}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: db}}
spec:
  hosts: [db.example.com]
  gateways: [edge]
  tcp:
  - route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop}}
spec:
  hosts: [shop.example.com, partner.example.com]
  gateways: [edge]
  http:
  - route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: internal}}
spec:
  hosts: ["*.internal.example.com"]
  gateways: [edge]
  tls:
  - match: [{{sniHosts: [a.internal.example.com]}}]
    route: [{{destination: {{host: a.internal.example.com}}}}]
  - match: [{{sniHosts: [b.internal.example.com]}}]
    route: [{{destination: {{host: b.internal.example.com}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: internal-a}}
spec:
  hosts: [a.internal.example.com]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.61}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: internal-b}}
spec:
  hosts: [b.internal.example.com]
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.62}}]
"#,
        shop_cert = shop.cert.display(),
        shop_key = shop.key.display(),
        partner_cert = partner.cert.display(),
        partner_key = partner.key.display(),
        db_cert = db.cert.display(),
        db_key = db.key.display(),
        ca_cert = ca.cert.display(),
    )
}

fn edge_pod(name: &str, ca: &TestCa) -> Pod {
    let pod = gateway::ingress_pod(name)
        .config("edge.yaml", &edge_config(ca))
        .start();
    wait_gateway_serves(&pod, HTTPS_PORT, "productpage", "");
    pod.envoy
        .wait_listener(&format!("0.0.0.0_{PASSTHROUGH_PORT}"));
    pod.envoy.wait_listener("0.0.0.0_8080");
    pod
}

fn https_tally(
    pod: &Pod,
    host: &str,
    ca: &TestCa,
    client: Option<&tls::Identity>,
    n: usize,
) -> Tally {
    gateway::https_tally(pod.ns(), HTTPS_PORT, host, ca, client, n)
}

#[test]
fn https_simple_presents_the_hosts_certificate_and_routes_by_sni() {
    let ca = TestCa::new("gw-https-simple");
    let pod = edge_pod("gw-https-simple", &ca);
    https_tally(&pod, "shop.example.com", &ca, None, N)
        .assert_all("productpage v1", "HTTPS for shop.example.com");
    // No server takes this SNI: the connection is closed, no handshake.
    let other = https_tally(&pod, "unknown.example.com", &ca, None, 5);
    assert_eq!(other.count("productpage v1"), 0, "{other}");
    // The certificate is the one for the SNI: a client expecting
    // shop.example.com's certificate under another SNI would fail above,
    // and the partner certificate is not shop's.
    let handshakes = pod.envoy.stat("listener.0.0.0.0_8443.ssl.handshake");
    assert!(
        handshakes >= N as u64,
        "{handshakes} handshakes at the gateway"
    );
    gateway::assert_clean_gateway(&pod, &pod.envoy);
}

#[test]
fn https_mutual_refuses_clients_without_a_certificate_from_the_ca() {
    let ca = TestCa::new("gw-https-mutual");
    let pod = edge_pod("gw-https-mutual", &ca);
    let anonymous = https_tally(&pod, "partner.example.com", &ca, None, 5);
    assert_eq!(
        anonymous.count("productpage v1"),
        0,
        "without a certificate: {anonymous}"
    );

    let stranger_ca = TestCa::new("gw-https-mutual-stranger");
    let stranger = stranger_ca.issue("client.example.com");
    let foreign = https_tally(&pod, "partner.example.com", &ca, Some(&stranger), 5);
    assert_eq!(
        foreign.count("productpage v1"),
        0,
        "another CA's certificate: {foreign}"
    );

    let client = ca.issue("client.example.com");
    https_tally(&pod, "partner.example.com", &ca, Some(&client), N)
        .assert_all("productpage v1", "MUTUAL with a certificate from the CA");
    // The SIMPLE server on the same port still takes anonymous clients.
    https_tally(&pod, "shop.example.com", &ca, None, 5)
        .assert_all("productpage v1", "SIMPLE next to MUTUAL");
    assert!(
        pod.envoy
            .stat("listener.0.0.0.0_8443.ssl.fail_verify_no_cert")
            >= 5
    );
    gateway::assert_clean_gateway(&pod, &pod.envoy);
}

#[test]
fn passthrough_sends_tls_by_sni_to_two_backends_untouched() {
    let ca = TestCa::new("gw-passthrough");
    let pod = edge_pod("gw-passthrough", &ca);
    let mut backends = TlsBackends::start(pod.ns());
    let a = backends.add(
        "127.0.0.61:443",
        "a",
        &ca.issue("a.internal.example.com"),
        &ca,
        ClientAuth::None,
    );
    let b = backends.add(
        "127.0.0.62:443",
        "b",
        &ca.issue("b.internal.example.com"),
        &ca,
        ClientAuth::None,
    );
    for host in ["a", "b"] {
        let cluster = outbound_cluster(443, "", &format!("{host}.internal.example.com"));
        pod.envoy.wait_cluster(&cluster, 1);
    }
    let gateway = format!("127.0.0.1:{PASSTHROUGH_PORT}");
    tls_tally(&pod, &gateway, "a.internal.example.com", &ca, N).assert_all("a", "SNI a");
    tls_tally(&pod, &gateway, "b.internal.example.com", &ca, N).assert_all("b", "SNI b");
    let unrouted = tls_tally(&pod, &gateway, "c.internal.example.com", &ca, 5);
    assert_eq!(unrouted.count("a") + unrouted.count("b"), 0, "{unrouted}");
    assert_eq!(a.handshakes(), N as u64);
    assert_eq!(b.handshakes(), N as u64);
    assert!(a.snis().iter().all(|s| s == "a.internal.example.com"));
    assert_eq!(
        pod.envoy.stat("listener.0.0.0.0_9443.ssl.handshake"),
        0,
        "the gateway terminated no TLS"
    );
    gateway::assert_clean_gateway(&pod, &pod.envoy);
}

#[test]
fn https_redirect_answers_plaintext_with_301_to_https() {
    let ca = TestCa::new("gw-redirect");
    let pod = edge_pod("gw-redirect", &ca);
    let response = pod.send(&to_gateway(8080, "shop.example.com", "/productpage?x=1"));
    assert_eq!(response.status, 301, "{response:?}");
    let location = response.header("location").unwrap_or_default();
    assert!(
        location.starts_with("https://shop.example.com") && location.ends_with("/productpage?x=1"),
        "location {location:?}"
    );
    // Hosts the redirecting server does not take get no redirect.
    assert_eq!(
        pod.send(&to_gateway(8080, "other.example.com", "/")).status,
        404
    );
    gateway::assert_clean_gateway(&pod, &pod.envoy);
}

#[test]
fn tls_server_terminates_and_forwards_the_bytes_over_tcp() {
    let ca = TestCa::new("gw-tls-tcp");
    let pod = edge_pod("gw-tls-tcp", &ca);
    pod.envoy
        .wait_listener(&format!("0.0.0.0_{TERMINATED_TCP_PORT}"));
    // The client verifies the gateway's certificate for db.example.com;
    // behind the gateway, productpage gets the request in plaintext.
    gateway::https_tally(
        pod.ns(),
        TERMINATED_TCP_PORT,
        "db.example.com",
        &ca,
        None,
        N,
    )
    .assert_all("productpage v1", "TLS terminated, then TCP to productpage");
    let handshakes = pod.envoy.stat(&format!(
        "listener.0.0.0.0_{TERMINATED_TCP_PORT}.ssl.handshake"
    ));
    assert_eq!(handshakes, N as u64);
    gateway::assert_clean_gateway(&pod, &pod.envoy);
}
