//! Mesh mTLS between real Envoy sidecars, pods in network namespaces on a
//! bridge (see support/mesh.rs), Consul as the registry:
//!
//! - `productpage-v1` (service account `productpage`) and `reviews-v1`
//!   (`reviews`) have sidecars on the secure xDS port, each proving its own
//!   identity with a certificate from the mesh CA, so pilotfish serves each
//!   its SPIFFE workload certificate over SDS and mesh TLS in its config;
//!   `reviews-v1` is registered with the tag
//!   `security.istio.io/tlsMode|istio` (the label auto mTLS looks for);
//! - `details-v1` is an app without a sidecar (no Envoy, no interception),
//!   registered without that label;
//! - `legacy-v1` is a client without a sidecar, not registered.
//!
//! Every request is a real one: from a pod's namespace to the callee's pod
//! IP, captured by the caller's iptables to its sidecar (meshed callers)
//! and by the callee's to its sidecar's inbound side (`reviews`). The
//! `reviews` app reports the `x-forwarded-client-cert` its sidecar set,
//! which only the mesh TLS chains set, naming the caller's SPIFFE id.
//!
//! Needs root (network namespaces, uid 1337 for Envoy).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::app::AppAnswer;
use support::mesh::{HTTP_PORT, Mesh, MeshPod, PodSpec, host};
use support::{PROPAGATION, STARTUP, outbound_cluster, wait_until};

const CLIENT: &str = "productpage-v1";
const CLIENT_SA: &str = "productpage";
const SERVER: &str = "reviews-v1";
const SERVER_SA: &str = "reviews";
/// An app without a sidecar that meshed clients call.
const PLAIN_BACKEND: &str = "details-v1";
/// A client without a sidecar.
const PLAIN_CLIENT: &str = "legacy-v1";
const TLS_MODE_TAG: &str = "security.istio.io/tlsMode|istio";
/// Requests per assertion.
const REQUESTS: usize = 20;
/// The inbound listener's stats: TLS handshakes it terminated.
const INBOUND_HANDSHAKES: &str = "listener.0.0.0.0_15006.ssl.handshake";

fn spiffe(service_account: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{service_account}")
}

fn reviews_cluster() -> String {
    outbound_cluster(HTTP_PORT, "", &host("reviews"))
}

fn details_cluster() -> String {
    outbound_cluster(HTTP_PORT, "", &host("details"))
}

/// The four pods, registered and converged; the first mTLS request from
/// the meshed client to `reviews` has succeeded.
fn start(name: &str, extra_args: &[&str]) -> Mesh {
    let mut mesh = Mesh::start_secure(name, &[], extra_args);
    mesh.add_pod(PodSpec::http("productpage", "v1").service_account(CLIENT_SA));
    mesh.add_pod(PodSpec::http("reviews", "v1").service_account(SERVER_SA));
    mesh.add_pod(PodSpec::http("details", "v1").without_sidecar());
    mesh.add_pod(PodSpec::http("legacy", "v1").without_sidecar());
    for pod in [CLIENT, SERVER] {
        let instance = mesh.pod(pod).instance(Some("http")).tag(TLS_MODE_TAG);
        mesh.consul.register(&instance);
    }
    mesh.register(PLAIN_BACKEND, Some("http"));
    mesh.start_sidecars();
    mesh.wait_converged(&[CLIENT, SERVER, PLAIN_BACKEND]);
    wait_until(
        "the meshed client's first mTLS request to reviews",
        STARTUP,
        || mtls_call(mesh.pod(CLIENT), CLIENT_SA),
    );
    mesh
}

/// A call to `reviews` that must have come over mesh mTLS from
/// `client_sa`: its sidecar delivered it (peer 127.0.0.1) with an XFCC
/// naming both identities.
fn mtls_call(from: &MeshPod, client_sa: &str) -> Result<AppAnswer, String> {
    let answer = from.call("reviews", &[])?;
    let xfcc = answer.xfcc.as_deref().ok_or_else(|| {
        format!(
            "{} -> reviews: no x-forwarded-client-cert: not over mesh TLS",
            from.name()
        )
    })?;
    let expected = [
        format!("By={}", spiffe(SERVER_SA)),
        format!("URI={}", spiffe(client_sa)),
    ];
    if answer.service != "reviews"
        || answer.peer != "127.0.0.1"
        || expected
            .iter()
            .any(|e| !xfcc.split(';').any(|part| part == e))
    {
        return Err(format!(
            "{} -> reviews: {} from {} with XFCC {xfcc:?}, wanted {expected:?}",
            from.name(),
            answer.label(),
            answer.peer
        ));
    }
    Ok(answer)
}

/// A plaintext call to `service` that no sidecar on the callee's side
/// terminated TLS for: no XFCC, and the app saw `peer`.
fn plaintext_call(from: &MeshPod, service: &str, peer: &str) -> Result<AppAnswer, String> {
    let answer = from.call(service, &[])?;
    if answer.service != service || answer.xfcc.is_some() || answer.peer != peer {
        return Err(format!(
            "{} -> {service}: {} from {} with XFCC {:?}, wanted a plaintext request from {peer}",
            from.name(),
            answer.label(),
            answer.peer,
            answer.xfcc
        ));
    }
    Ok(answer)
}

/// Sends `n` calls with `call`, panicking with every failure if any failed.
fn all_succeed(what: &str, n: usize, mut call: impl FnMut() -> Result<AppAnswer, String>) {
    let failures: Vec<String> = (0..n).filter_map(|_| call().err()).collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {n} failed: {failures:#?}",
        failures.len()
    );
}

/// `cluster.<cluster>.ssl.<stat>` of a pod's sidecar (Envoy's TLS stats of
/// a cluster's transport socket; 0 when not created).
fn cluster_ssl(pod: &MeshPod, cluster: &str, stat: &str) -> u64 {
    pod.cluster_stat(cluster, &format!("ssl.{stat}"))
}

#[test]
fn auto_mtls_to_a_sidecar_and_plaintext_to_a_workload_without_one() {
    let mesh = start("mtls-auto", &[]);
    let client = mesh.pod(CLIENT);
    let server = mesh.pod(SERVER);
    let details = mesh.pod(PLAIN_BACKEND);
    let served = server.served();

    all_succeed("productpage -> reviews over auto mTLS", REQUESTS, || {
        mtls_call(client, CLIENT_SA)
    });
    assert_eq!(server.served(), served + REQUESTS as u64);
    assert!(
        cluster_ssl(client, &reviews_cluster(), "handshake") > 0,
        "the client's reviews cluster made no TLS handshake: {:?}",
        ssl_stats(client)
    );
    assert!(
        server.envoy().stat(INBOUND_HANDSHAKES) > 0,
        "the server's inbound listener terminated no TLS: {:?}",
        ssl_stats(server)
    );

    // details has no sidecar: its app parses the client sidecar's request
    // itself, so it was plaintext, straight from the client pod's IP.
    let served = details.served();
    all_succeed("productpage -> details in plaintext", REQUESTS, || {
        plaintext_call(client, "details", &client.ip)
    });
    assert_eq!(details.served(), served + REQUESTS as u64);
    assert_eq!(
        cluster_ssl(client, &details_cluster(), "handshake"),
        0,
        "no TLS to a workload without the tlsMode label"
    );
    assert_eq!(
        details.app().peers().keys().collect::<Vec<_>>(),
        [&client.ip]
    );
    mesh.assert_no_rejected_updates();
}

#[test]
fn permissive_by_default_mtls_and_plaintext_callers_share_the_server_port() {
    let mesh = start("mtls-permissive", &[]);
    let client = mesh.pod(CLIENT);
    let legacy = mesh.pod(PLAIN_CLIENT);
    let server = mesh.pod(SERVER);
    let served = server.served();
    // Interleaved, to the same pod IP and port: the inbound side tells them
    // apart by the TLS handshake and its ALPN.
    all_succeed(
        "meshed and sidecar-less clients to reviews:9080, interleaved",
        2 * REQUESTS,
        {
            let mut n = 0;
            move || {
                n += 1;
                if n % 2 == 0 {
                    mtls_call(client, CLIENT_SA)
                } else {
                    // Straight to the pod IP (no sidecar of its own), taken
                    // by the server's capture to its plaintext chain.
                    plaintext_call(legacy, "reviews", "127.0.0.1")
                }
            }
        },
    );
    assert_eq!(server.served(), served + 2 * REQUESTS as u64);
    mesh.assert_no_rejected_updates();
}

fn istio_mutual(subject_alt_names: &[&str]) -> String {
    let sans = match subject_alt_names {
        [] => String::new(),
        names => format!(
            "\n      subjectAltNames: [{}]",
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews-mtls
  namespace: default
spec:
  host: {host}
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL{sans}
",
        host = host("reviews")
    )
}

/// The client's reviews cluster as Envoy holds it (dynamic, active).
fn active_cluster(pod: &MeshPod, name: &str) -> Option<Value> {
    let dump = pod.envoy().config_dump();
    dump["configs"].as_array()?.iter().find(|c| {
        c["@type"]
            .as_str()
            .is_some_and(|t| t.ends_with("ClustersConfigDump"))
    })?["dynamic_active_clusters"]
        .as_array()?
        .iter()
        .map(|c| c["cluster"].clone())
        .find(|c| c["name"] == name)
}

/// Waits until the client's reviews cluster has one TLS socket for every
/// endpoint (a DestinationRule's, not auto mTLS's matches) whose
/// serialised form contains `needle`.
fn wait_reviews_cluster_tls(mesh: &Mesh, needle: &str) {
    let client = mesh.pod(CLIENT);
    wait_until(
        &format!("{CLIENT}'s reviews cluster with ISTIO_MUTUAL naming {needle:?}"),
        PROPAGATION,
        || {
            let cluster = active_cluster(client, &reviews_cluster()).ok_or("no cluster")?;
            let socket = cluster
                .get("transport_socket")
                .ok_or_else(|| format!("no transport_socket yet: {cluster}"))?;
            if cluster.get("transport_socket_matches").is_some() {
                return Err("still auto mTLS".into());
            }
            socket
                .to_string()
                .contains(needle)
                .then_some(())
                .ok_or_else(|| format!("socket: {socket}"))
        },
    );
    mesh.pilotfish()
        .wait_synced_without_nack(client.envoy().node_id());
}

#[test]
fn istio_mutual_destination_rule_verifies_the_servers_spiffe_id() {
    let mesh = start("mtls-istio-mutual", &[]);
    let client = mesh.pod(CLIENT);

    mesh.write_config("dr.yaml", &istio_mutual(&[]));
    wait_reviews_cluster_tls(&mesh, "spiffe://cluster.local/");
    all_succeed("ISTIO_MUTUAL to reviews", REQUESTS, || {
        mtls_call(client, CLIENT_SA)
    });

    let wrong = spiffe("not-reviews");
    mesh.write_config("dr.yaml", &istio_mutual(&[&wrong]));
    wait_reviews_cluster_tls(&mesh, &wrong);
    let served = mesh.pod(SERVER).served();
    let san_failures = cluster_ssl(client, &reviews_cluster(), "fail_verify_san");
    let mut statuses = BTreeSet::new();
    for _ in 0..REQUESTS {
        let response = client
            .get(&host("reviews"), HTTP_PORT, &[])
            .unwrap_or_else(|e| panic!("{e}"));
        statuses.insert(response.status);
        assert_eq!(
            response.status, 503,
            "a server whose certificate is not {wrong} must not be used: {}",
            response.body
        );
    }
    assert_eq!(statuses, BTreeSet::from([503]));
    assert_eq!(
        mesh.pod(SERVER).served(),
        served,
        "no request reached reviews"
    );
    assert!(
        cluster_ssl(client, &reviews_cluster(), "fail_verify_san") > san_failures,
        "the client refused the server's SAN: {:?}",
        ssl_stats(client)
    );

    // The right id again: the 503s were the SAN check, nothing else.
    mesh.write_config("dr.yaml", &istio_mutual(&[&spiffe(SERVER_SA)]));
    wait_reviews_cluster_tls(&mesh, &spiffe(SERVER_SA));
    all_succeed(
        "ISTIO_MUTUAL to reviews naming its SPIFFE id",
        REQUESTS,
        || mtls_call(client, CLIENT_SA),
    );
    mesh.assert_no_rejected_updates();
}

/// Envoy's `default` secret (its certificate chain; the key is redacted).
fn held_chain(pod: &MeshPod) -> Result<String, String> {
    let dump = pod.envoy().config_dump();
    let secrets = dump["configs"]
        .as_array()
        .and_then(|configs| {
            configs.iter().find(|c| {
                c["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("SecretsConfigDump"))
            })
        })
        .ok_or("no secrets in the config dump")?;
    secrets["dynamic_active_secrets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "default")
        .and_then(|s| {
            s.pointer("/secret/tls_certificate/certificate_chain/inline_string")
                .and_then(Value::as_str)
        })
        .map(str::to_string)
        .ok_or_else(|| "no active secret default".into())
}

#[test]
fn certificates_rotate_under_mtls_traffic_without_a_failed_request() {
    // Renewed every 2 s (half of 4 s); every request a new upstream
    // connection, so each one is a handshake with the certificates of
    // the moment.
    let mesh = start("mtls-rotation", &["--workload-cert-ttl-seconds", "4"]);
    mesh.write_config(
        "dr.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews-one-request-per-connection
  namespace: default
spec:
  host: {}
  trafficPolicy:
    connectionPool:
      http:
        maxRequestsPerConnection: 1
",
            host("reviews")
        ),
    );
    let client = mesh.pod(CLIENT);
    let server = mesh.pod(SERVER);
    wait_until(
        "one request per upstream connection on the client's reviews cluster",
        PROPAGATION,
        || {
            let cluster = active_cluster(client, &reviews_cluster()).ok_or("no cluster")?;
            cluster
                .to_string()
                .contains("\"max_requests_per_connection\":1")
                .then_some(())
                .ok_or_else(|| format!("cluster: {cluster}"))
        },
    );

    const RENEWALS: usize = 3;
    let mut seen: [BTreeSet<String>; 2] = Default::default();
    let handshakes = server.envoy().stat(INBOUND_HANDSHAKES);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut requests = 0;
    let mut failures = Vec::new();
    while seen.iter().any(|s| s.len() <= RENEWALS) {
        assert!(
            Instant::now() < deadline,
            "fewer than {RENEWALS} renewals in 30 s; certificates seen: client {}, server {}",
            seen[0].len(),
            seen[1].len()
        );
        for (i, pod) in [client, server].into_iter().enumerate() {
            if let Ok(chain) = held_chain(pod) {
                seen[i].insert(chain);
            }
        }
        for _ in 0..5 {
            requests += 1;
            if let Err(e) = mtls_call(client, CLIENT_SA) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed across the rotations: {failures:#?}",
        failures.len()
    );
    let new_handshakes = server.envoy().stat(INBOUND_HANDSHAKES) - handshakes;
    assert!(
        new_handshakes as usize >= requests,
        "{requests} requests, {new_handshakes} handshakes on the server"
    );
    eprintln!(
        "{requests} requests, {new_handshakes} handshakes, certificates: client {}, server {}",
        seen[0].len(),
        seen[1].len()
    );
    mesh.assert_no_rejected_updates();
}

/// The TLS stats of a pod's sidecar, for failure messages.
fn ssl_stats(pod: &MeshPod) -> Vec<(String, u64)> {
    pod.envoy()
        .stats()
        .into_iter()
        .filter(|(name, value)| name.contains("ssl.") && *value > 0)
        .collect()
}
