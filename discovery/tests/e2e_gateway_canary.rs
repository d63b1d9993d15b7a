//! A canary at the edge: a Gateway for every host (`hosts: ["*"]`) and a
//! VirtualService splitting its traffic 90/10 between reviews v1 and v2,
//! through a stock Envoy running as the ingress gateway.

mod support;

use support::gateway::{self, to_gateway, wait_gateway_serves};

const EDGE: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-edge}
spec:
  hosts: ["*"]
  gateways: [edge]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
"#;

/// 1,000 requests: the v1 share's standard deviation is 0.0095, so
/// [0.86, 0.94] is more than four of them either side of 0.9.
const N: usize = 1000;

#[test]
fn edge_canary_90_10_for_every_host_holds_over_1000_requests() {
    let pod = gateway::ingress_pod("gw-canary")
        .config("edge.yaml", EDGE)
        .start();
    wait_gateway_serves(&pod, 8080, "reviews", "v1");
    wait_gateway_serves(&pod, 8080, "reviews", "v2");

    // Any Host: the Gateway and VirtualService both take `*`.
    let hosts = ["shop.example.com", "10.1.2.3", "localhost:8080", "reviews"];
    let tally = pod.ns().run(|| {
        let mut tally = support::Tally::default();
        for i in 0..N {
            let request = to_gateway(8080, hosts[i % hosts.len()], "/");
            tally.add(
                request
                    .send()
                    .map_or_else(|e| format!("error {}", e.kind()), |r| r.outcome()),
            );
        }
        tally
    });
    tally.assert_split(
        N,
        ("reviews v1", "reviews v2"),
        0.86..=0.94,
        "v1",
        "every request reaches reviews v1 or v2: ",
    );
    println!("edge canary: {tally}");
    gateway::assert_clean_gateway(&pod, &pod.envoy);
}
