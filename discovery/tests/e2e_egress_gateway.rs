//! The egress gateway pattern: an application's request for an external
//! host leaves the mesh through a dedicated gateway. One VirtualService,
//! bound to both `mesh` and the egress Gateway, sends the sidecar's
//! requests for `edition.example.com` to the egress gateway, and the
//! gateway's to the external host (a ServiceEntry whose endpoint is our
//! backend). Sidecar and gateway are two stock Envoys in one namespace,
//! fed by one pilotfish; their cluster stats prove the path taken.

mod support;

use support::Request;
use support::gateway;
use support::{Pod, outbound_cluster};

const EXTERNAL_HOST: &str = "edition.example.com";
const EGRESS_HOST: &str = "istio-egressgateway.istio-system.svc.cluster.local";
/// Where the external site's backend listens (the ServiceEntry's endpoint,
/// on another port: a socket on 127.0.0.95:80 would keep the gateway from
/// binding 0.0.0.0:80).
const EXTERNAL_ENDPOINT: &str = "127.0.0.95:8081";
/// An address the application connects to; the sidecar captures it and
/// routes by Host.
const EXTERNAL_ADDRESS: &str = "127.1.0.95:80";
const N: usize = 50;

const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: edition}
spec:
  hosts: [edition.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: 127.0.0.95, ports: {http: 8081}}]
---
# The egress gateway's own Service, as the mesh sees it.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: istio-egressgateway, namespace: istio-system}
spec:
  hosts: [istio-egressgateway.istio-system.svc.cluster.local]
  addresses: [127.1.0.90]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.90}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [edition.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: direct-edition-through-egress-gateway}
spec:
  hosts: [edition.example.com]
  gateways: [istio-egressgateway, mesh]
  http:
  - match: [{gateways: [mesh], port: 80}]
    route:
    - destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: 80}}
  - match: [{gateways: [istio-egressgateway], port: 80}]
    route:
    - destination: {host: edition.example.com, port: {number: 80}}
"#;

#[test]
fn sidecar_reaches_an_external_host_through_the_egress_gateway() {
    let mut pod = Pod::builder("egress-gw")
        .registry("services: []\n")
        .config("egress.yaml", CONFIG)
        .start();
    let external = pod.add_backend(EXTERNAL_ENDPOINT, "edition", "external");
    // The gateway binds port 80 as uid 1337, like Istio's gateway pods.
    pod.allow_low_ports();
    let gateway = pod.start_gateway("egress", &[("istio", "egressgateway")]);
    gateway.wait_listener("0.0.0.0_80");
    let via_gateway = outbound_cluster(80, "", EGRESS_HOST);
    let to_external = outbound_cluster(80, "", EXTERNAL_HOST);
    pod.envoy.wait_cluster(&via_gateway, 1);
    pod.envoy.wait_route_domain("80", EXTERNAL_HOST);
    gateway.wait_cluster(&to_external, 1);

    pod.tally(
        N,
        &Request::get(EXTERNAL_ADDRESS, EXTERNAL_HOST).path("/news"),
    )
    .assert_all(
        "edition external",
        "the application's requests for edition.example.com",
    );
    assert_eq!(external.requests(), N as u64);
    // Sidecar → egress gateway → external host, never sidecar → external.
    assert_eq!(
        pod.envoy.cluster_stat(&via_gateway, "upstream_rq_total"),
        N as u64
    );
    assert_eq!(pod.envoy.cluster_stat(&to_external, "upstream_rq_total"), 0);
    assert_eq!(
        gateway.cluster_stat(&to_external, "upstream_rq_total"),
        N as u64
    );
    for envoy in [&pod.envoy, &gateway] {
        gateway::assert_clean_gateway(&pod, envoy);
    }
}
