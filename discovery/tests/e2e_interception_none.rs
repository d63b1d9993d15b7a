//! A sidecar without interception (`INTERCEPTION_MODE` NONE, no iptables):
//! the application dials the sidecar's per-port listeners on 127.0.0.1
//! itself, as with Istio. Backends run in the same namespace ("the same
//! host") on the very ports the sidecar listens on: Envoy must bind its
//! listeners to loopback only, so that those backends can bind their own
//! addresses and Envoy's upstream connections reach them instead of looping
//! back into Envoy's own listener until it runs out of file descriptors.

mod support;

use support::{PROPAGATION, Pod, Request, outbound_cluster, wait_until};

const HTTP_PORT: u16 = 9080;
const TCP_PORT: u16 = 9090;
const N: u64 = 10;

/// Backends on this host, on the ports the sidecar listens on.
const SAME_HOST: &str = r#"
services:
- hostname: web.default.svc.cluster.local
  addresses: [127.1.0.60]
  ports: [{name: http, port: 9080, protocol: HTTP}]
  endpoints: [{address: 127.0.0.61, labels: {version: v1}}]
- hostname: db.default.svc.cluster.local
  addresses: [127.1.0.62]
  ports: [{name: tcp, port: 9090, protocol: TCP}]
  endpoints: [{address: 127.0.0.63, labels: {version: v1}}]
"#;

/// The sidecar's own workload (the pod IP the bootstrap gives pilotfish,
/// 127.0.0.250) is the endpoint of a service on a port the sidecar also
/// listens on; the workload is not serving yet when the test starts.
const OWN_WORKLOAD: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: own-app}
spec:
  hosts: [app.example.internal]
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints: [{address: 127.0.0.250}]
"#;

const OWN_ADDRESS: &str = "127.0.0.250:9080";

/// Where the application dials the sidecar for `port`.
fn sidecar_address(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Connections Envoy accepted on its listeners (every
/// `listener.<address>_<port>.downstream_cx_total` but the admin's, without
/// the per-worker copies): one per client connection, unless Envoy's
/// upstream connections come back in.
fn accepted_connections(pod: &Pod) -> u64 {
    pod.envoy
        .stats()
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with("listener.")
                && !name.starts_with("listener.admin.")
                && !name.contains(".worker_")
                && name.ends_with(".downstream_cx_total")
        })
        .map(|(_, value)| value)
        .sum()
}

/// Sends `request` until `expected` answers it (the listener and the
/// cluster's endpoints may still be on their way), within the propagation
/// bound.
fn wait_answer(pod: &Pod, request: &Request, expected: &str) {
    wait_until(
        &format!("{expected} to answer {request}"),
        PROPAGATION,
        || match pod.try_send(request) {
            Ok(response) if response.outcome() == expected => Ok(()),
            Ok(response) => Err(response.outcome()),
            Err(e) => Err(format!("error {e}")),
        },
    );
}

#[test]
fn a_sidecar_without_interception_reaches_backends_on_its_own_host_at_its_listener_ports() {
    let pod = Pod::builder("none-same-host")
        .without_interception()
        .registry(SAME_HOST)
        .start();
    let web = Request::get(&sidecar_address(HTTP_PORT), "web.default.svc.cluster.local");
    wait_answer(&pod, &web, "web v1");

    let web_cluster = outbound_cluster(HTTP_PORT, "", "web.default.svc.cluster.local");
    let accepted_before = accepted_connections(&pod);
    let upstream_before = pod.envoy.cluster_stat(&web_cluster, "upstream_rq_total");
    pod.tally(N as usize, &web)
        .assert_all("web v1", "HTTP through the sidecar's 127.0.0.1 listener");
    assert_eq!(
        accepted_connections(&pod) - accepted_before,
        N,
        "Envoy accepted only the client's connections"
    );
    assert_eq!(
        pod.envoy.cluster_stat(&web_cluster, "upstream_rq_total") - upstream_before,
        N,
        "one upstream request per client request"
    );

    // TCP: the destination Envoy sees is its own listener address.
    let db_cluster = outbound_cluster(TCP_PORT, "", "db.default.svc.cluster.local");
    for i in 0..N {
        let reply = pod.tcp_line(&sidecar_address(TCP_PORT), &format!("ping {i}"));
        assert_eq!(reply, format!("db v1: ping {i}"));
    }
    assert_eq!(pod.envoy.cluster_stat(&db_cluster, "upstream_cx_total"), N);
    assert_eq!(pod.backends.at("127.0.0.63:9090").connections(), N);
    pod.envoy.assert_no_rejected_updates();
}

#[test]
fn a_sidecar_without_interception_never_sends_a_request_back_into_its_own_listener() {
    let mut pod = Pod::builder("none-own-workload")
        .without_interception()
        .config("own-app.yaml", OWN_WORKLOAD)
        .start();
    let cluster = outbound_cluster(HTTP_PORT, "", "app.example.internal");
    pod.envoy.wait_cluster(&cluster, 1);
    let request = Request::get(&sidecar_address(HTTP_PORT), "app.example.internal");

    // Nothing serves the workload's address yet: Envoy's connection to it
    // must be refused (503: one try and the two default retries), not land
    // in Envoy's own listener again.
    let accepted_before = accepted_connections(&pod);
    let outcome = match pod.try_send(&request) {
        Ok(response) => response.outcome(),
        Err(e) => format!("error {e}"),
    };
    let accepted = accepted_connections(&pod) - accepted_before;
    let upstream = pod.envoy.cluster_stat(&cluster, "upstream_cx_total");
    assert!(
        accepted == 1 && upstream <= 3,
        "Envoy accepted {accepted} connections for one request and opened {upstream} to {cluster} \
         (the request got {outcome}): its upstream connections came back into its own listener"
    );
    assert_eq!(
        outcome, "status 503",
        "the unserved workload's connection refused"
    );

    // The workload starts serving on its own address, beside Envoy's
    // listener on the same port, and answers through the sidecar.
    pod.add_backend(OWN_ADDRESS, "app", "v1");
    wait_answer(&pod, &request, "app v1");
    let accepted_before = accepted_connections(&pod);
    pod.tally(N as usize, &request)
        .assert_all("app v1", "HTTP to the sidecar's own workload");
    assert_eq!(accepted_connections(&pod) - accepted_before, N);
    pod.envoy.assert_no_rejected_updates();
}
