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
//! - `legacy-v1` is a client without a sidecar, not registered;
//! - `ratings-v1` (`ratings`) is a second meshed client, not registered,
//!   for AuthorizationPolicies that tell identities apart.
//!
//! Every request is a real one: from a pod's namespace to the callee's pod
//! IP, captured by the caller's iptables to its sidecar (meshed callers)
//! and by the callee's to its sidecar's inbound side (`reviews`). The
//! `reviews` app reports the `x-forwarded-client-cert` its sidecar set,
//! which only the mesh TLS chains set, naming the caller's SPIFFE id.
//!
//! Covered: auto mTLS (and plaintext to a workload without a sidecar),
//! PERMISSIVE by default, DestinationRule ISTIO_MUTUAL and its
//! `subjectAltNames`, certificate rotation under traffic, PeerAuthentication
//! STRICT, AuthorizationPolicy ALLOW by principal, DENY by path and method,
//! and a `request.headers` condition.
//!
//! Needs root (network namespaces, uid 1337 for Envoy).

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::app::AppAnswer;
use support::mesh::{HTTP_PORT, Mesh, MeshPod, PodSpec, host};
use support::{PROPAGATION, Request, STARTUP, outbound_cluster, wait_until};

const CLIENT: &str = "productpage-v1";
const CLIENT_SA: &str = "productpage";
const SERVER: &str = "reviews-v1";
const SERVER_SA: &str = "reviews";
/// An app without a sidecar that meshed clients call.
const PLAIN_BACKEND: &str = "details-v1";
/// A client without a sidecar.
const PLAIN_CLIENT: &str = "legacy-v1";
/// A second meshed client, of another identity.
const OTHER_CLIENT: &str = "ratings-v1";
const OTHER_SA: &str = "ratings";
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
    mesh.add_pod(PodSpec::http("ratings", "v1").service_account(OTHER_SA));
    for pod in [CLIENT, SERVER] {
        let instance = mesh.pod(pod).instance(Some("http")).tag(TLS_MODE_TAG);
        mesh.consul.register(&instance);
    }
    mesh.register(PLAIN_BACKEND, Some("http"));
    mesh.start_sidecars();
    mesh.wait_converged(&[CLIENT, SERVER, PLAIN_BACKEND]);
    for (client, sa) in [(CLIENT, CLIENT_SA), (OTHER_CLIENT, OTHER_SA)] {
        wait_until(
            &format!("{client}'s first mTLS request to reviews"),
            STARTUP,
            || mtls_call(mesh.pod(client), sa),
        );
    }
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

/// A DestinationRule for reviews (no TLS settings: auto mTLS stays) with
/// one request per upstream connection, then waits until both meshed
/// clients have it: every request is then a new mTLS connection to the
/// server's sidecar, a handshake with the certificates of the moment,
/// judged by the inbound chains of the moment. (A kept-alive connection
/// stays on the filter chain it was accepted by until Envoy drains it.)
fn one_request_per_connection(mesh: &Mesh) {
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
    for client in [CLIENT, OTHER_CLIENT] {
        let client = mesh.pod(client);
        wait_until(
            &format!(
                "one request per connection on {}'s reviews cluster",
                client.name()
            ),
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
    }
}

#[test]
fn certificates_rotate_under_mtls_traffic_without_a_failed_request() {
    // Renewed every 2 s (half of 4 s); every request a new upstream
    // connection, so each one is a handshake with the certificates of
    // the moment.
    let mesh = start("mtls-rotation", &["--workload-cert-ttl-seconds", "4"]);
    one_request_per_connection(&mesh);
    let client = mesh.pod(CLIENT);
    let server = mesh.pod(SERVER);

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

/// Writes a policy, then waits until the server's sidecar has applied it:
/// until `probe` (a request whose answer the policy changes) succeeds.
fn apply_policy(
    mesh: &Mesh,
    file: &str,
    yaml: &str,
    what: &str,
    probe: impl FnMut() -> Result<(), String>,
) {
    mesh.write_config(file, yaml);
    wait_until(what, PROPAGATION, probe);
    mesh.pilotfish()
        .wait_synced_without_nack(mesh.pod(SERVER).envoy().node_id());
}

/// `method path` to reviews from `from` (its pod IP, found by name;
/// captured by `from`'s sidecar if it has one); the status, or the I/O
/// error when no HTTP answer came.
fn request(
    from: &MeshPod,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<u16, String> {
    let ips = from
        .resolve(&host("reviews"))
        .map_err(|e| format!("resolve reviews: {e}"))?;
    let mut request = Request::get(
        &format!("{}:{HTTP_PORT}", ips[0]),
        &format!("{}:{HTTP_PORT}", host("reviews")),
    )
    .method(method)
    .path(path);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    from.run(|| request.send())
        .map(|response| response.status)
        .map_err(|e| format!("{} -> {request}: {e}", from.name()))
}

/// Sends `n` requests, each of which must get `status`.
fn all_get(
    from: &MeshPod,
    (method, path): (&str, &str),
    headers: &[(&str, &str)],
    status: u16,
    n: usize,
) {
    let wrong: Vec<String> = (0..n)
        .filter_map(|_| match request(from, method, path, headers) {
            Ok(s) if s == status => None,
            other => Some(format!("{other:?}")),
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} {method} {path} {headers:?}: {} of {n} did not get {status}: {wrong:?}",
        from.name(),
        wrong.len()
    );
}

fn peer_authentication(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: reviews-peer-authentication
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  mtls:
    mode: {mode}
"
    )
}

#[test]
fn strict_peer_authentication_refuses_plaintext_callers_and_keeps_mtls_ones() {
    let mesh = start("mtls-strict", &[]);
    let client = mesh.pod(CLIENT);
    let legacy = mesh.pod(PLAIN_CLIENT);
    let server = mesh.pod(SERVER);
    plaintext_call(legacy, "reviews", "127.0.0.1").expect("PERMISSIVE before the policy");

    apply_policy(
        &mesh,
        "peer-authentication.yaml",
        &peer_authentication("STRICT"),
        "reviews to refuse plaintext",
        || match legacy.call("reviews", &[]) {
            Err(_) => Ok(()),
            Ok(answer) => Err(format!("still answered: {answer:?}")),
        },
    );
    let served = server.served();
    let refused: Vec<String> = (0..REQUESTS)
        .filter_map(|_| request(legacy, "GET", "/", &[]).err())
        .collect();
    assert_eq!(
        refused.len(),
        REQUESTS,
        "every plaintext request must be refused without an HTTP answer: {refused:?}"
    );
    assert_eq!(
        server.served(),
        served,
        "no plaintext request reached the app"
    );
    all_succeed("productpage -> reviews under STRICT", REQUESTS, || {
        mtls_call(client, CLIENT_SA)
    });
    assert_eq!(server.served(), served + REQUESTS as u64);

    // Back to PERMISSIVE: the refusals were the policy's.
    apply_policy(
        &mesh,
        "peer-authentication.yaml",
        &peer_authentication("PERMISSIVE"),
        "reviews to take plaintext again",
        || plaintext_call(legacy, "reviews", "127.0.0.1").map(drop),
    );
    all_succeed("legacy -> reviews under PERMISSIVE", REQUESTS, || {
        plaintext_call(legacy, "reviews", "127.0.0.1")
    });
    mesh.assert_no_rejected_updates();
}

fn authorization_policy(name: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: {name}
  namespace: default
spec:
  selector:
    matchLabels:
      app: reviews
  action: {action}
  rules:
{rules}"
    )
}

#[test]
fn authorization_policy_allows_only_the_named_principal() {
    let source = format!("principals: [\"cluster.local/ns/default/sa/{CLIENT_SA}\"]");
    let mesh = with_allow_policy("mtls-authz-principal", &source, OTHER_CLIENT);
    all_succeed("productpage, the allowed principal", REQUESTS, || {
        mtls_call(mesh.pod(CLIENT), CLIENT_SA)
    });
    all_get(mesh.pod(OTHER_CLIENT), ("GET", "/"), &[], 403, REQUESTS);
    // No certificate, no principal.
    all_get(mesh.pod(PLAIN_CLIENT), ("GET", "/"), &[], 403, REQUESTS);
    mesh.assert_no_rejected_updates();
}

#[test]
fn authorization_policy_allows_by_source_namespace() {
    let source = "namespaces: [\"default\"]";
    let mesh = with_allow_policy("mtls-authz-namespace", source, PLAIN_CLIENT);
    // Both meshed clients are workloads of namespace default.
    all_succeed("productpage, of namespace default", REQUESTS, || {
        mtls_call(mesh.pod(CLIENT), CLIENT_SA)
    });
    all_succeed("ratings, of namespace default", REQUESTS, || {
        mtls_call(mesh.pod(OTHER_CLIENT), OTHER_SA)
    });
    // A namespace comes from the caller's certificate: none, no namespace.
    all_get(mesh.pod(PLAIN_CLIENT), ("GET", "/"), &[], 403, REQUESTS);
    mesh.assert_no_rejected_updates();
}

/// A mesh whose reviews workload allows only callers matching `source` (a
/// line under `source:`), in force once `refused` is answered 403.
fn with_allow_policy(test: &str, source: &str, refused: &str) -> Mesh {
    let mesh = start(test, &[]);
    one_request_per_connection(&mesh);
    let refused_pod = mesh.pod(refused);
    apply_policy(
        &mesh,
        "authz.yaml",
        &authorization_policy(
            "reviews-allow",
            "ALLOW",
            &format!("  - from:\n    - source:\n        {source}\n"),
        ),
        &format!("reviews to refuse {refused}"),
        || match request(refused_pod, "GET", "/", &[])? {
            403 => Ok(()),
            s => Err(format!("{refused} got {s}")),
        },
    );
    mesh
}

#[test]
fn authorization_policy_denies_a_path_and_a_method_and_allows_the_rest() {
    let mesh = start("mtls-authz-deny", &[]);
    one_request_per_connection(&mesh);
    let client = mesh.pod(CLIENT);
    let legacy = mesh.pod(PLAIN_CLIENT);
    apply_policy(
        &mesh,
        "authz.yaml",
        &authorization_policy(
            "reviews-deny-admin-and-delete",
            "DENY",
            "  - to:\n    - operation:\n        paths: [\"/admin\", \"/admin/*\"]\n  - to:\n    - operation:\n        methods: [\"DELETE\"]\n",
        ),
        "reviews to deny /admin",
        || match request(client, "GET", "/admin", &[])? {
            403 => Ok(()),
            s => Err(format!("GET /admin got {s}")),
        },
    );
    for from in [client, legacy] {
        all_get(from, ("GET", "/admin"), &[], 403, REQUESTS);
        all_get(from, ("GET", "/admin/users"), &[], 403, REQUESTS);
        all_get(from, ("DELETE", "/reviews/1"), &[], 403, REQUESTS);
        all_get(from, ("GET", "/reviews/1"), &[], 200, REQUESTS);
        all_get(from, ("POST", "/administrator"), &[], 200, REQUESTS);
    }
    mesh.assert_no_rejected_updates();
}

#[test]
fn authorization_policy_header_condition_needs_the_header_value() {
    let mesh = start("mtls-authz-header", &[]);
    one_request_per_connection(&mesh);
    let client = mesh.pod(CLIENT);
    apply_policy(
        &mesh,
        "authz.yaml",
        &authorization_policy(
            "reviews-with-token",
            "ALLOW",
            "  - when:\n    - key: request.headers[x-token]\n      values: [\"ok\"]\n",
        ),
        "reviews to refuse a request without x-token",
        || match request(client, "GET", "/", &[])? {
            403 => Ok(()),
            s => Err(format!("got {s}")),
        },
    );
    all_get(client, ("GET", "/"), &[], 403, REQUESTS);
    all_get(client, ("GET", "/"), &[("x-token", "wrong")], 403, REQUESTS);
    all_get(client, ("GET", "/"), &[("x-token", "ok")], 200, REQUESTS);
    mesh.assert_no_rejected_updates();
}
