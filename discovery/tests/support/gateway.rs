//! Shared by the gateway tests (`e2e_gateway_*.rs`): a Bookinfo gateway pod
//! (Envoy as proxy type `router` with Istio's ingress labels, no capture)
//! and what a client outside the mesh sends it.

use super::bookinfo;
use super::pod::{Pod, PodBuilder};
use super::{Request, outbound_cluster, repo_path};

/// The labels of Istio's ingress gateway pods, which Bookinfo's Gateway selects.
pub const INGRESS_LABELS: [(&str, &str); 1] = [("istio", "ingressgateway")];

/// Istio's own Bookinfo sample, read unchanged from shared/istio-samples.
pub fn istio_sample(file: &str) -> String {
    let path = repo_path(&format!(
        "../shared/istio-samples/bookinfo-networking/{file}"
    ));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A gateway pod serving testdata/bookinfo's services (and their
/// DestinationRules) plus whatever config the test adds.
pub fn ingress_pod(name: &str) -> PodBuilder {
    bookinfo::pod(name).gateway(&INGRESS_LABELS)
}

/// `GET path` to the gateway's `port` on 127.0.0.1 with Host `host`.
pub fn to_gateway(port: u16, host: &str, path: &str) -> Request {
    Request::get(&format!("127.0.0.1:{port}"), host).path(path)
}

/// Waits until the gateway listens on `port` and `service`'s cluster (with
/// `subset`, "" for none) has its endpoint.
pub fn wait_gateway_serves(pod: &Pod, port: u16, service: &str, subset: &str) {
    pod.envoy.wait_listener(&format!("0.0.0.0_{port}"));
    pod.envoy.wait_cluster(
        &outbound_cluster(bookinfo::PORT, subset, &bookinfo::fqdn(service)),
        1,
    );
}

/// Panics unless the gateway proxy acked everything without a NACK, and
/// pilotfish found nothing wrong with the input or the translation (a
/// Gateway or VirtualService the test relies on was not half-applied).
pub fn assert_clean_gateway(pod: &Pod, envoy: &super::envoy::Envoy) {
    envoy.assert_no_rejected_updates();
    pod.pilotfish.wait_synced_without_nack(envoy.node_id());
    let diagnostics = pod.pilotfish.diagnostics();
    for key in ["input_problems", "translation"] {
        let found = &diagnostics[key];
        assert!(
            found.as_array().is_some_and(|a| a.is_empty()),
            "pilotfish reports {key}: {found:#}"
        );
    }
}
