//! PeerAuthentication and AuthorizationPolicy (`security.istio.io`) from a
//! real kube-apiserver into the real `pilotfish` binary (no Envoy, no root):
//! the samples in testdata/security/ are served by the Kubernetes config
//! source, and an AuthorizationPolicy that the API server accepts but
//! Pilotfish cannot enforce is reported in `/debug/diagnostics` naming its
//! kind, namespace/name and field, and is not served; fixed, the problem
//! goes and it is served.
//!
//! Needs scripts/install-kube-apiserver.sh (run by scripts/setup.sh).

mod support;

use serde_json::Value;
use support::http::control_get;
use support::kube_apiserver::KubeApiServer;
use support::kube_mesh::{apply, install_crds, serve_config_from};
use support::process::Process;
use support::{PROPAGATION, repo_path, wait_until};

const BAD_PORTS_FIELD: &str = "spec.rules[0].to[0].operation.ports[0]";

/// A DENY policy whose port is a name: the CRD (strings) lets it through,
/// Istio's webhook and Pilotfish do not.
fn deny_policy(port: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {{name: deny-admin, namespace: default}}\nspec:\n  action: DENY\n  rules:\n  - to:\n    - operation: {{ports: [\"{port}\"], paths: [\"/admin*\"]}}\n"
    )
}

fn start_pilotfish(server: &KubeApiServer) -> (Process, String) {
    serve_config_from(server, "info")
}

fn get_json(http: &str, path: &str) -> Value {
    match control_get(http, path) {
        Ok((200, body)) => serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}")),
        other => panic!("pilotfish {path}: {other:?}"),
    }
}

/// The number of objects the Kubernetes config source serves.
fn served_objects(http: &str) -> Option<u64> {
    let registries = get_json(http, "/debug/registries");
    registries
        .as_array()?
        .iter()
        .find(|r| r["registry"] == "kubernetes-config")?["objects"]
        .as_u64()
}

fn problems(http: &str) -> Vec<Value> {
    get_json(http, "/debug/diagnostics")["input_problems"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn security_kinds_are_served_and_an_invalid_policy_is_reported_naming_its_field() {
    let server = KubeApiServer::start("security-config");
    install_crds(&server);
    for sample in ["peer-authentication.yaml", "authorization-policy.yaml"] {
        let path = repo_path("testdata/security").join(sample);
        server
            .kubectl(&["apply", "-f", path.to_str().expect("utf-8 path")])
            .expect_success(sample);
    }
    apply(&server, &deny_policy("http"));

    let (_process, http) = start_pilotfish(&server);

    // The two samples are served; the invalid policy is reported, not served.
    let problem = wait_until("the invalid policy reported", PROPAGATION, || {
        let all = problems(&http);
        all.iter()
            .find(|p| p["object"] == "AuthorizationPolicy default/deny-admin")
            .cloned()
            .ok_or_else(|| format!("{all:?}"))
    });
    assert_eq!(problem["field"], BAD_PORTS_FIELD, "{problem}");
    assert_eq!(problem["source"], "kubernetes", "{problem}");
    assert!(
        problem["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"http\"")),
        "{problem}"
    );
    assert_eq!(served_objects(&http), Some(2), "the two samples");
    assert_eq!(problems(&http).len(), 1, "{:?}", problems(&http));

    // Fixed: served, and nothing is reported any more.
    apply(&server, &deny_policy("8080"));
    wait_until("the fixed policy served", PROPAGATION, || {
        match (served_objects(&http), problems(&http)) {
            (Some(3), p) if p.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}
