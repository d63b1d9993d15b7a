//! DestinationRule `tls` origination: the application speaks plain HTTP to
//! a service, Envoy opens TLS to the service's TLS backend, verifying the
//! backend's certificate against the test CA. The backend answers only
//! after a completed TLS handshake and reports the SNI it received (and
//! whether a client certificate came with it), so a 200 proves the TLS hop.
//!
//! - `secure`: SIMPLE with an explicit `sni`;
//! - `auto`: SIMPLE without `sni`: Envoy takes it from the Host header and
//!   checks the certificate against it;
//! - `mtls`: MUTUAL, the backend requires a client certificate from the CA;
//! - `plain`: no DestinationRule: plaintext to a TLS backend fails.

mod support;

use support::tls::{ClientAuth, TestCa, TlsBackends};
use support::{Pod, Request, outbound_cluster};

const N: usize = 20;

fn service_entry(name: &str, vip: &str, backend_ip: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}}}
spec:
  hosts: [{name}.example.com]
  addresses: [{vip}]
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {backend_ip}, ports: {{http: 8443}}}}]
---
"#
    )
}

fn rules(ca: &TestCa, client: &support::tls::Identity) -> String {
    let ca = ca.cert.display();
    let (cert, key) = (client.cert.display(), client.key.display());
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure}}
spec:
  host: secure.example.com
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}, sni: secure.example.com}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: auto}}
spec:
  host: auto.example.com
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: mtls}}
spec:
  host: mtls.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 80}}
      tls: {{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {cert}, privateKey: {key}}}
"#
    )
}

#[test]
fn envoy_originates_tls_for_plain_http_clients() {
    let ca = TestCa::new("egress-tls-origination");
    let client = ca.issue("client.example.com");
    let services = [
        ("secure", "127.1.0.70", "127.0.0.70"),
        ("auto", "127.1.0.71", "127.0.0.71"),
        ("mtls", "127.1.0.72", "127.0.0.72"),
        ("plain", "127.1.0.73", "127.0.0.73"),
    ];
    let entries: String = services
        .iter()
        .map(|(name, vip, ip)| service_entry(name, vip, ip))
        .collect();
    let pod = Pod::builder("egress-tls-origination")
        .registry("services: []\n")
        .config("services.yaml", &entries)
        .config("tls-rules.yaml", &rules(&ca, &client))
        .start();
    let mut tls = TlsBackends::start(pod.ns());
    let backends: Vec<_> = services
        .iter()
        .map(|(name, _, ip)| {
            let identity = ca.issue(&format!("{name}.example.com"));
            let auth = if *name == "mtls" {
                ClientAuth::Required
            } else {
                ClientAuth::None
            };
            tls.add(&format!("{ip}:8443"), name, &identity, &ca, auth)
        })
        .collect();
    for (name, _, _) in services {
        let host = format!("{name}.example.com");
        pod.envoy.wait_route_domain("80", &host);
        pod.envoy.wait_cluster(&outbound_cluster(80, "", &host), 1);
    }

    for (i, (name, vip, _)) in services.iter().take(3).enumerate() {
        let request = Request::get(&format!("{vip}:80"), &format!("{name}.example.com"));
        pod.tally(N, &request)
            .assert_all(name, &format!("plain HTTP to {name}, TLS from Envoy"));
        let response = pod.send(&request);
        let body: serde_json::Value = serde_json::from_str(&response.body).expect("JSON body");
        assert_eq!(
            body["sni"],
            format!("{name}.example.com"),
            "{name}: SNI sent by Envoy"
        );
        assert_eq!(
            body["client_cert"],
            *name == "mtls",
            "{name}: client certificate"
        );
        let backend = &backends[i];
        assert!(backend.handshakes() >= 1, "{name}: no TLS handshake");
        assert_eq!(backend.failed_handshakes(), 0, "{name}");
        assert_eq!(
            backend.requests(),
            (N + 1) as u64,
            "{name}: requests over TLS"
        );
        let cluster = outbound_cluster(80, "", &format!("{name}.example.com"));
        assert!(
            pod.envoy.cluster_stat(&cluster, "ssl.handshake") >= 1,
            "{cluster}: Envoy counted no TLS handshake"
        );
    }
    // Without a DestinationRule Envoy speaks plaintext, which a TLS server
    // rejects: the client gets an error status, never the backend's answer.
    let plain = pod.tally(5, &Request::get("127.1.0.73:80", "plain.example.com"));
    assert_eq!(plain.count("plain"), 0, "{plain}");
    assert_eq!(backends[3].handshakes(), 0);
    assert!(backends[3].failed_handshakes() >= 1);
    pod.envoy.assert_no_rejected_updates();
}
