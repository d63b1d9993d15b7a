//! Checks of the test harness itself, with no pilotfish involved: the
//! namespace, the iptables capture and Envoy running as uid 1337. When an
//! end-to-end test fails, these say whether the ground under it holds.

mod support;

use std::sync::Arc;

use support::backend::Backends;
use support::envoy::Envoy;
use support::netns::Netns;
use support::testdir::TestDir;
use support::{Request, tcp};

/// Envoy with only a virtualOutbound listener that proxies every captured
/// connection to its original destination, as Istio's PassthroughCluster does.
const PASSTHROUGH_BOOTSTRAP: &str = r#"{
  "node": {"id": "harness", "cluster": "harness"},
  "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
  "static_resources": {
    "listeners": [{
      "name": "virtualOutbound",
      "address": {"socket_address": {"address": "0.0.0.0", "port_value": 15001}},
      "use_original_dst": true,
      "filter_chains": [{"filters": [{
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
          "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
          "stat_prefix": "passthrough", "cluster": "PassthroughCluster"
        }
      }]}]
    }],
    "clusters": [{
      "name": "PassthroughCluster", "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
      "connect_timeout": "1s"
    }]
  }
}"#;

#[test]
fn backends_answer_http_and_tcp_inside_their_namespace() {
    let ns = Netns::new();
    let mut backends = Backends::start(&ns);
    backends.add("127.0.0.11:9080".parse().unwrap(), "reviews", "v2");
    let response = ns
        .run(|| Request::get("127.0.0.11:9080", "reviews").path("/x").send())
        .expect("HTTP to backend");
    let answer = response.answer().expect("backend JSON body");
    assert_eq!(
        (answer.label().as_str(), answer.path.as_str()),
        ("reviews v2", "/x")
    );
    let reply = ns
        .run(|| tcp::exchange_line("127.0.0.11:9080", "ping"))
        .expect("TCP to backend");
    assert_eq!(reply, "reviews v2: ping");
    assert_eq!(backends.at("127.0.0.11:9080").requests(), 2);
    // Another namespace does not see it: each test's sockets are its own.
    let elsewhere = Netns::new().run(|| tcp::exchange_line("127.0.0.11:9080", "ping"));
    assert!(
        elsewhere.is_err(),
        "backend reachable from another namespace: {elsewhere:?}"
    );
}

#[test]
fn capture_sends_client_traffic_through_envoy_and_lets_envoy_out() {
    let dir = TestDir::new("harness");
    let ns = Arc::new(Netns::new());
    ns.capture_outbound(false);
    let mut backends = Backends::start(&ns);
    let backend = backends.add("127.0.0.11:9080".parse().unwrap(), "reviews", "v1");
    let envoy = Envoy::start_with_bootstrap(ns.clone(), dir.path(), PASSTHROUGH_BOOTSTRAP);

    let n = 20;
    let outcomes = ns.run(|| {
        (0..n)
            .map(|_| {
                Request::get("127.0.0.11:9080", "reviews")
                    .send()
                    .map(|r| r.outcome())
            })
            .collect::<Vec<_>>()
    });
    for outcome in outcomes {
        assert_eq!(outcome.expect("request through Envoy"), "reviews v1");
    }
    // Each client connection was captured by Envoy's 15001 listener, and
    // Envoy's own upstream connection (uid 1337) was not captured again.
    assert_eq!(
        envoy.stat("cluster.PassthroughCluster.upstream_cx_total"),
        n
    );
    assert_eq!(backend.connections(), n);
    // A VIP has no listener: only the capture makes it reachable (Envoy then
    // fails upstream, since the original destination has nothing either).
    let vip = ns.run(|| Request::get("127.1.0.9:9080", "x").send());
    assert!(vip.is_err(), "a VIP answered without a route: {vip:?}");
    assert_eq!(envoy.stat("tcp.passthrough.downstream_cx_total"), n + 1);
}
