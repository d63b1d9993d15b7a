//! Shared by the gateway tests (`e2e_gateway_*.rs`): a Bookinfo gateway pod
//! (Envoy as proxy type `router` with Istio's ingress labels, no capture)
//! and what a client outside the mesh sends it.

use std::path::Path;
use std::sync::Arc;

use super::bookinfo;
use super::envoy::{Envoy, gateway_bootstrap};
use super::netns::Netns;
use super::pilotfish;
use super::pod::{GATEWAY_ADMIN_PORT, Pod, PodBuilder};
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

/// Starts a gateway Envoy (proxy type `router`, workload `labels`) in `ns`
/// beside whatever runs there, fed by the pilotfish of that namespace; its
/// files go to `<dir>/<name>` and its admin listens on
/// [`GATEWAY_ADMIN_PORT`]. Call it from the test's thread (Envoy dies with
/// the thread that spawned it).
pub fn start_envoy(ns: &Arc<Netns>, dir: &Path, name: &str, labels: &[(&str, &str)]) -> Envoy {
    start_envoy_with(ns, dir, name, labels, pilotfish::XDS_ADDRESS, &[])
}

/// [`start_envoy`] on `xds_address` with more bootstrap arguments (e.g.
/// the secure port's credentials, see [`super::secure_xds`]).
pub fn start_envoy_with(
    ns: &Arc<Netns>,
    dir: &Path,
    name: &str,
    labels: &[(&str, &str)],
    xds_address: &str,
    bootstrap_args: &[String],
) -> Envoy {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).expect("create gateway dir");
    let bootstrap = gateway_bootstrap(
        name,
        xds_address,
        labels,
        GATEWAY_ADMIN_PORT,
        bootstrap_args,
    );
    Envoy::start_with_bootstrap(ns.clone(), &dir, &bootstrap)
}

/// `n` HTTPS requests with SNI and Host `host` to the gateway's `port`,
/// verifying the server certificate against `ca` and presenting `client`
/// when given: "productpage v1", "status 404", "error ...".
pub fn https_tally(
    ns: &Netns,
    port: u16,
    host: &str,
    ca: &super::tls::TestCa,
    client: Option<&super::tls::Identity>,
    n: usize,
) -> super::Tally {
    let request = to_gateway(port, host, "/productpage");
    ns.run(|| {
        let mut tally = super::Tally::default();
        for _ in 0..n {
            let outcome = match super::tls::https(&request, host, ca, client) {
                Ok(response) => response.outcome(),
                Err(e) => format!("error {}", e.kind()),
            };
            tally.add(outcome);
        }
        tally
    })
}
