//! Gateway TLS credentials from Kubernetes Secrets, end to end against a
//! real kube-apiserver and the real `pilotfish` binary (no Envoy, no root):
//! `kubernetes.io/tls` and Istio's Opaque `cert`/`key`/`cacert` Secrets
//! become credentials, unrelated Secrets are ignored, a certificate without
//! its key is reported naming the Secret and the key; renewing a Secret
//! publishes a new generation with the new certificate, deleting it removes
//! it; key material appears in no debug output and no log line.
//!
//! Observed through `/debug/credentials` (names, sizes, certificate
//! digests), `/debug/diagnostics` and `/debug/registries`.
//!
//! Needs scripts/install-kube-apiserver.sh (run by scripts/setup.sh).

mod support;

use serde_json::Value;
use support::http::control_get;
use support::kube_apiserver::KubeApiServer;
use support::kube_mesh::{apply, install_crds, serve_config_from};
use support::process::Process;
use support::{PROPAGATION, wait_until};

const NAMESPACE: &str = "istio-system";

/// A kubernetes.io/tls Secret; `stringData` so the YAML stays readable.
fn tls_secret(name: &str, cert: &str, key: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: {cert}, tls.key: {key}, ca.crt: CLIENT-CA}}\n"
    )
}

fn opaque_secret(name: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\ntype: Opaque\nstringData: {{{data}}}\n"
    )
}

struct Pilotfish {
    process: Process,
    http: String,
}

impl Pilotfish {
    fn start(server: &KubeApiServer) -> Pilotfish {
        let (process, http) =
            serve_config_from(server, "debug,kube=info,hyper=info,tower=info,h2=info");
        Pilotfish { process, http }
    }

    fn get(&self, path: &str) -> (String, Value) {
        match control_get(&self.http, path) {
            Ok((200, body)) => {
                let json = serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"));
                (body, json)
            }
            other => panic!("pilotfish {path}: {other:?}"),
        }
    }

    /// `/debug/credentials` once `check` accepts it; also asserts that no
    /// key material is in it.
    fn wait_credentials(&self, what: &str, check: impl Fn(&[Value]) -> bool) -> Value {
        wait_until(what, PROPAGATION, || {
            let (body, json) = self.get("/debug/credentials");
            assert!(!body.contains("KEY-MATERIAL"), "key material: {body}");
            let list = json["credentials"].as_array().cloned().unwrap_or_default();
            if check(&list) { Ok(json) } else { Err(body) }
        })
    }
}

fn find<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|c| c["name"] == name)
}

fn names(json: &Value) -> Vec<String> {
    json["credentials"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    format!(
                        "{}/{}",
                        c["namespace"].as_str().unwrap_or(""),
                        c["name"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn gateway_credentials_follow_secret_create_renew_and_delete() {
    let server = KubeApiServer::start("gateway-credentials");
    install_crds(&server);
    server
        .kubectl(&["create", "namespace", NAMESPACE])
        .expect_success("namespace");
    apply(
        &server,
        &[
            tls_secret("gw-cert", "CERT-1", "KEY-MATERIAL-1"),
            opaque_secret(
                "gw-generic",
                "cert: CERT-G, key: KEY-MATERIAL-G, cacert: CA-G",
            ),
            opaque_secret("db-password", "password: hunter2"),
            opaque_secret("no-key", "cert: CERT-X"),
        ]
        .join("---\n"),
    );

    let pilotfish = Pilotfish::start(&server);

    // Both layouts are credentials; the password and the keyless cert are not.
    let first = pilotfish.wait_credentials("the two credentials", |list| list.len() == 2);
    assert_eq!(
        names(&first),
        ["istio-system/gw-cert", "istio-system/gw-generic"]
    );
    let list = first["credentials"].as_array().expect("list");
    let gw = find(list, "gw-cert").expect("gw-cert");
    assert_eq!(gw["certificate_chain_bytes"], "CERT-1".len());
    assert_eq!(gw["ca_certificates_bytes"], "CLIENT-CA".len());
    assert_eq!(
        find(list, "gw-generic").expect("gw-generic")["ca_certificates_bytes"],
        "CA-G".len()
    );

    // The keyless Secret is reported, naming the Secret and the missing key.
    let (_, diagnostics) = pilotfish.get("/debug/diagnostics");
    let problems = diagnostics["input_problems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let problem = problems
        .iter()
        .find(|p| p["object"] == "Secret istio-system/no-key")
        .unwrap_or_else(|| panic!("no problem for the keyless Secret: {problems:?}"));
    assert_eq!(problem["field"], "data.key");
    assert!(
        !problems
            .iter()
            .any(|p| p.to_string().contains("db-password")),
        "unrelated Secrets are not reported: {problems:?}"
    );

    // The source is listed with the registries, with its credential count.
    let (_, registries) = pilotfish.get("/debug/registries");
    let status = registries
        .as_array()
        .and_then(|a| a.iter().find(|r| r["registry"] == "kubernetes-secrets"))
        .unwrap_or_else(|| panic!("no kubernetes-secrets in {registries}"))
        .clone();
    assert_eq!(status["connected"], true);
    assert_eq!(status["objects"], 2);

    // Renewed: a new generation carries the new certificate.
    let old_digest = gw["certificate_chain_sha256"].clone();
    let old_version = first["mesh_version"].as_u64().expect("version");
    apply(
        &server,
        &tls_secret("gw-cert", "CERT-2-RENEWED", "KEY-MATERIAL-2"),
    );
    let renewed = pilotfish.wait_credentials("the renewed certificate", |list| {
        find(list, "gw-cert").is_some_and(|c| c["certificate_chain_sha256"] != old_digest)
    });
    assert!(renewed["mesh_version"].as_u64().expect("version") > old_version);
    let list = renewed["credentials"].as_array().expect("list");
    assert_eq!(
        find(list, "gw-cert").expect("gw-cert")["certificate_chain_bytes"],
        "CERT-2-RENEWED".len()
    );

    // Fixed: the key is added, the credential appears and the problem goes.
    apply(
        &server,
        &opaque_secret("no-key", "cert: CERT-X, key: KEY-MATERIAL-X"),
    );
    pilotfish.wait_credentials("the fixed Secret", |list| find(list, "no-key").is_some());
    let (_, diagnostics) = pilotfish.get("/debug/diagnostics");
    assert!(
        !diagnostics
            .to_string()
            .contains("Secret istio-system/no-key"),
        "{diagnostics}"
    );

    // Deleted: gone from the mesh.
    server
        .kubectl(&["delete", "secret", "gw-cert", "-n", NAMESPACE])
        .expect_success("delete the Secret");
    let deleted = pilotfish.wait_credentials("gw-cert removed", |list| {
        find(list, "gw-cert").is_none() && list.len() == 2
    });
    assert_eq!(
        names(&deleted),
        ["istio-system/gw-generic", "istio-system/no-key"]
    );

    // Debug logging on, and still no key bytes in any log line.
    let log = pilotfish.process.log();
    assert!(log.contains("published mesh generation"), "{log}");
    assert!(!log.contains("KEY-MATERIAL"), "key material logged:\n{log}");
}
