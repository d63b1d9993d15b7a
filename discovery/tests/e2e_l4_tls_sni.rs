//! VirtualService `tls` routes: TLS passed through Envoy by SNI. Three TLS
//! services share port 443 (ServiceEntries with VIPs); `front`'s
//! VirtualService (whose hosts cover its SNI hosts, as Istio requires) sends
//! SNI `a.example.com` to service a and `b.example.com` to service b. The client verifies the server certificate
//! against the test CA for the SNI it sent, so the certificate that answers
//! proves which backend took the connection, and that Envoy did not
//! terminate TLS (it has no certificate for those names); each backend also
//! records the SNI it received.

mod support;

use support::l4::{tls_tally, wait_chain};
use support::tls::{ClientAuth, TestCa, TlsBackends};
use support::{Pod, outbound_cluster};

const FRONT_VIP: &str = "127.1.0.60:443";
const A_VIP: &str = "127.1.0.61:443";

/// Three TLS ServiceEntries on 443; their endpoints are our TLS backends.
const SERVICES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: front}
spec:
  hosts: [front.example.com]
  addresses: [127.1.0.60]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.60}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [a.example.com]
  addresses: [127.1.0.61]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.61}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b}
spec:
  hosts: [b.example.com]
  addresses: [127.1.0.62]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.62}]
"#;

const ROUTES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front}
spec:
  hosts: [front.example.com, a.example.com, b.example.com]
  tls:
  - match: [{sniHosts: [a.example.com]}]
    route: [{destination: {host: a.example.com}}]
  - match: [{sniHosts: [b.example.com]}]
    route: [{destination: {host: b.example.com}}]
"#;

const N: usize = 20;

#[test]
fn tls_routes_pass_connections_through_by_sni() {
    let ca = TestCa::new("l4-tls-sni");
    let pod = Pod::builder("l4-tls-sni")
        .registry("services: []\n")
        .config("services.yaml", SERVICES)
        .config("front-routes.yaml", ROUTES)
        .start();
    let mut tls = TlsBackends::start(pod.ns());
    let backends: Vec<_> = [
        ("front", "127.0.0.60:443"),
        ("a", "127.0.0.61:443"),
        ("b", "127.0.0.62:443"),
    ]
    .into_iter()
    .map(|(name, addr)| {
        let identity = ca.issue(&format!("{name}.example.com"));
        tls.add(addr, name, &identity, &ca, ClientAuth::None)
    })
    .collect();
    for host in ["front", "a", "b"] {
        pod.envoy.wait_cluster(
            &outbound_cluster(443, "", &format!("{host}.example.com")),
            1,
        );
    }
    let front = outbound_cluster(443, "", "front.example.com");
    wait_chain(
        &pod,
        "0.0.0.0_443",
        &format!("tls|{front}|spec.tls[1].match[0]"),
        true,
    );

    // Same VIP, the SNI decides.
    for (sni, expected) in [
        ("a.example.com", "a"),
        ("b.example.com", "b"),
        ("front.example.com", "front"),
    ] {
        tls_tally(&pod, FRONT_VIP, sni, &ca, N)
            .assert_all(expected, &format!("TLS to front's VIP with SNI {sni}"));
    }
    // a is also reachable as itself.
    tls_tally(&pod, A_VIP, "a.example.com", &ca, N).assert_all("a", "a's own VIP");

    for (backend, sni) in
        backends
            .iter()
            .zip(["front.example.com", "a.example.com", "b.example.com"])
    {
        let snis = backend.snis();
        assert!(!snis.is_empty(), "{} saw no handshake", backend.name);
        assert!(
            snis.iter().all(|s| s == sni),
            "{} saw SNIs {snis:?}: Envoy passes the client's TLS through untouched",
            backend.name
        );
        assert_eq!(backend.failed_handshakes(), 0, "{}", backend.name);
    }
    assert_eq!(
        backends[1].handshakes(),
        (2 * N) as u64,
        "a: via front and its own VIP"
    );
    // Envoy proxied bytes only: no TLS context anywhere on these clusters.
    for host in ["front", "a", "b"] {
        let cluster = outbound_cluster(443, "", &format!("{host}.example.com"));
        assert_eq!(
            pod.envoy.cluster_stat(&cluster, "ssl.handshake"),
            0,
            "{cluster}"
        );
    }
    pod.envoy.assert_no_rejected_updates();
}
