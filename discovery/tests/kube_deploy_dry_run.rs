//! deploy/kubernetes/ against a real kube-apiserver: every object passes
//! server-side validation and admission (dry run), a real apply is
//! idempotent, the ServiceAccount's RBAC is exactly the least privilege
//! Pilotfish needs, and the sidecar template merges into a workload as
//! documented. Also: deploy/kubernetes/crds.yaml is the generated
//! crds/manifests/all.yaml.
//!
//! Needs scripts/install-kube-apiserver.sh (run by scripts/setup.sh); no root.
//! (The image these manifests name, deploy/docker/Dockerfile, cannot be built
//! here: there is no Docker on the development machine.)

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};
use support::kube_apiserver::KubeApiServer;
use support::process::Process;
use support::{free_loopback_address, repo_path, wait_until};

const NAMESPACE: &str = "pilotfish-system";
const SERVICE_ACCOUNT: &str = "pilotfish";

fn deploy_dir() -> String {
    repo_path("deploy/kubernetes").display().to_string()
}

/// The CRDs, then the namespace, for real: a server-side dry run persists
/// nothing, so objects in a namespace created by the same dry run would be
/// refused (NotFound), and custom resources need their CRDs.
fn prepare(server: &KubeApiServer) {
    server
        .kubectl(&[
            "apply",
            "-f",
            repo_path("crds/manifests/all.yaml").to_str().unwrap(),
        ])
        .expect_success("apply CRDs");
    server
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ])
        .expect_success("CRDs Established");
    server
        .kubectl(&[
            "apply",
            "-f",
            repo_path("deploy/kubernetes/00-namespace.yaml")
                .to_str()
                .unwrap(),
        ])
        .expect_success("apply namespace");
}

/// Every object deploy/kubernetes/ should create, as kubectl names them.
const OBJECTS: [&str; 19] = [
    "namespace/pilotfish-system",
    "serviceaccount/pilotfish",
    "clusterrole.rbac.authorization.k8s.io/pilotfish",
    "clusterrolebinding.rbac.authorization.k8s.io/pilotfish",
    "role.rbac.authorization.k8s.io/pilotfish-ca",
    "rolebinding.rbac.authorization.k8s.io/pilotfish-ca",
    "configmap/pilotfish-mesh",
    "customresourcedefinition.apiextensions.k8s.io/virtualservices.networking.istio.io",
    "customresourcedefinition.apiextensions.k8s.io/destinationrules.networking.istio.io",
    "customresourcedefinition.apiextensions.k8s.io/gateways.networking.istio.io",
    "deployment.apps/pilotfish",
    "service/pilotfish",
    "podtemplate/pilotfish-sidecar",
    "serviceaccount/pilotfish-ingressgateway",
    "deployment.apps/pilotfish-ingressgateway",
    "service/pilotfish-ingressgateway",
    "customresourcedefinition.apiextensions.k8s.io/serviceentries.networking.istio.io",
    "customresourcedefinition.apiextensions.k8s.io/peerauthentications.security.istio.io",
    "customresourcedefinition.apiextensions.k8s.io/authorizationpolicies.security.istio.io",
];

#[test]
fn deploy_crds_yaml_is_the_generated_all_yaml() {
    let generated = std::fs::read_to_string(repo_path("crds/manifests/all.yaml")).unwrap();
    let deployed = std::fs::read_to_string(repo_path("deploy/kubernetes/crds.yaml")).unwrap();
    assert!(
        generated == deployed,
        "deploy/kubernetes/crds.yaml differs from crds/manifests/all.yaml; refresh it with\n  \
         cp crds/manifests/all.yaml deploy/kubernetes/crds.yaml"
    );
}

#[test]
fn deploy_manifests_pass_server_dry_run() {
    let server = KubeApiServer::start("deploy-dry-run");
    prepare(&server);
    let out = server
        .kubectl(&[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            &deploy_dir(),
        ])
        .expect_success("server dry run of deploy/kubernetes/");
    for object in OBJECTS {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{object} ")) && l.ends_with("(server dry run)")),
            "dry run did not cover {object}:\n{}",
            out.stdout
        );
    }
    // No deprecation or Pod Security warnings (see 00-namespace.yaml).
    assert!(
        !out.stderr.contains("Warning"),
        "dry run warned:\n{}",
        out.stderr
    );
    // Nothing was created.
    server
        .kubectl(&["get", "deployment/pilotfish", "-n", NAMESPACE])
        .expect_failure("a dry run must not create the Deployment");
}

/// `kubectl auth can-i` as the ServiceAccount itself (a real token, so RBAC
/// decides exactly as it would for the pod).
fn can_i(server: &KubeApiServer, kubeconfig: &std::path::Path, verb: &str, resource: &str) -> bool {
    let out = server.kubectl_as(
        kubeconfig,
        &["auth", "can-i", verb, resource, "--all-namespaces"],
    );
    match out.stdout.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("can-i {verb} {resource}: {other:?} {}", out.stderr),
    }
}

#[test]
fn deploy_manifests_apply_and_grant_only_reads() {
    let server = KubeApiServer::start("deploy-rbac");
    // On its own, on an empty cluster: the directory installs the CRDs too.
    let first = server
        .kubectl(&["apply", "-f", &deploy_dir()])
        .expect_success("apply deploy/kubernetes/");
    for object in OBJECTS {
        assert!(
            first.stdout.contains(&format!("{object} created")),
            "{object} not created:\n{}",
            first.stdout
        );
    }
    let again = server
        .kubectl(&["apply", "-f", &deploy_dir()])
        .expect_success("apply deploy/kubernetes/ again");
    for object in OBJECTS {
        assert!(
            again.stdout.contains(&format!("{object} unchanged")),
            "second apply changed {object}:\n{}",
            again.stdout
        );
    }

    // pilotfish-system enforces the "restricted" Pod Security Standard: the
    // control plane's pod is admitted, and the enforcement is real (the
    // sidecar's privileged init step is refused there).
    let pod_from = |template: &Value, name: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
        })
        .to_string()
    };
    // The control plane and the ingress gateway run unprivileged.
    for (deployment, pod) in [
        ("pilotfish", "pilotfish-0"),
        ("pilotfish-ingressgateway", "ingressgateway-0"),
    ] {
        let object = format!("deployment/{deployment}");
        let found = server
            .kubectl(&["get", &object, "-n", NAMESPACE, "-o", "json"])
            .expect_success(&format!("get {object}"));
        let found: Value = serde_json::from_str(&found.stdout).unwrap();
        server
            .kubectl_stdin(
                &["create", "--dry-run=server", "-f", "-"],
                &pod_from(&found["spec"]["template"], pod),
            )
            .expect_success(&format!("{deployment} pod under enforce=restricted"));
    }
    let sidecar = server
        .kubectl(&[
            "get",
            "podtemplate/pilotfish-sidecar",
            "-n",
            NAMESPACE,
            "-o",
            "json",
        ])
        .expect_success("get podtemplate");
    let sidecar: Value = serde_json::from_str(&sidecar.stdout).unwrap();
    // ServiceAccount admission (off here) would name the account.
    let mut template = sidecar["template"].clone();
    template["spec"]["serviceAccountName"] = json!("default");
    let refused = server
        .kubectl_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            &pod_from(&template, "sidecar-0"),
        )
        .expect_failure("a privileged pod in pilotfish-system");
    assert!(
        refused.stderr.contains("violates PodSecurity \"restricted"),
        "{}",
        refused.stderr
    );

    let sa = server.kubeconfig_for_service_account(NAMESPACE, SERVICE_ACCOUNT);
    // What Pilotfish reads: get, list and watch, cluster-wide.
    let reads = [
        "services",
        "pods",
        "endpointslices.discovery.k8s.io",
        "virtualservices.networking.istio.io",
        "destinationrules.networking.istio.io",
        "gateways.networking.istio.io",
        "serviceentries.networking.istio.io",
        "peerauthentications.security.istio.io",
        "authorizationpolicies.security.istio.io",
        // Gateway credentials (credentialName), read like istiod does.
        "secrets",
    ];
    for resource in reads {
        for verb in ["get", "list", "watch"] {
            assert!(
                can_i(&server, &sa, verb, resource),
                "pilotfish cannot {verb} {resource}"
            );
        }
    }
    // And nothing else: no writes to what it reads (secrets included), no
    // status, no events, no configmaps, nothing it does not watch.
    let denied = [
        ("create", "virtualservices.networking.istio.io"),
        ("update", "virtualservices.networking.istio.io"),
        ("patch", "virtualservices.networking.istio.io/status"),
        ("delete", "serviceentries.networking.istio.io"),
        ("update", "services"),
        ("delete", "pods"),
        ("create", "pods/exec"),
        ("create", "events"),
        ("create", "events.events.k8s.io"),
        ("create", "secrets"),
        ("update", "secrets"),
        ("patch", "secrets"),
        ("delete", "secrets"),
        ("deletecollection", "secrets"),
        ("list", "configmaps"),
        ("list", "endpoints"),
        ("list", "namespaces"),
        ("list", "nodes"),
        ("create", "leases.coordination.k8s.io"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
        ("update", "authorizationpolicies.security.istio.io"),
        ("patch", "peerauthentications.security.istio.io/status"),
        // Not served by Pilotfish, so not read.
        ("list", "requestauthentications.security.istio.io"),
    ];
    for (verb, resource) in denied {
        assert!(
            !can_i(&server, &sa, verb, resource),
            "pilotfish may {verb} {resource}: more than it needs"
        );
    }
    // The real thing, not just the RBAC answer: a list works, a write is Forbidden.
    server
        .kubectl_as(
            &sa,
            &[
                "get",
                "virtualservices,endpointslices,services,pods,secrets",
                "-A",
            ],
        )
        .expect_success("list as pilotfish");
    for (write, what) in [
        (
            &[
                "create",
                "secret",
                "generic",
                "planted",
                "-n",
                "default",
                "--from-literal=a=b",
            ][..],
            "a secret written as pilotfish",
        ),
        (&["get", "configmaps", "-A"][..], "configmaps as pilotfish"),
    ] {
        let forbidden = server.kubectl_as(&sa, write).expect_failure(what);
        // kubectl says "Forbidden" for reads, "is forbidden" for creates.
        assert!(
            forbidden.stderr.to_lowercase().contains("forbidden"),
            "{}",
            forbidden.stderr
        );
    }
}

#[test]
fn sidecar_template_merges_into_a_deployment() {
    let server = KubeApiServer::start("deploy-sidecar");
    prepare(&server);
    server
        .kubectl(&[
            "apply",
            "-f",
            repo_path("deploy/kubernetes/sidecar-template.yaml")
                .to_str()
                .unwrap(),
        ])
        .expect_success("apply sidecar template");
    server
        .kubectl(&["create", "namespace", "shop"])
        .expect_success("namespace");
    server
        .kubectl(&[
            "create",
            "deployment",
            "reviews",
            "-n",
            "shop",
            "--image=example/reviews:1",
            "--port=9080",
        ])
        .expect_success("app deployment");

    // What the template's header documents with jq, in Rust.
    let template = server
        .kubectl(&[
            "get",
            "podtemplate",
            "pilotfish-sidecar",
            "-n",
            NAMESPACE,
            "-o",
            "json",
        ])
        .expect_success("get podtemplate");
    let template: Value = serde_json::from_str(&template.stdout).unwrap();
    let patch = json!({"spec": {"template": {"spec": {
        "initContainers": template["template"]["spec"]["initContainers"],
        "volumes": template["template"]["spec"]["volumes"],
    }}}});
    let patch_file = server.path().join("sidecar-patch.json");
    std::fs::write(&patch_file, patch.to_string()).unwrap();
    server
        .kubectl(&[
            "patch",
            "deployment",
            "reviews",
            "-n",
            "shop",
            "--patch-file",
            patch_file.to_str().unwrap(),
        ])
        .expect_success("patch the sidecar in");

    let deployment = server
        .kubectl(&["get", "deployment", "reviews", "-n", "shop", "-o", "json"])
        .expect_success("get deployment");
    let deployment: Value = serde_json::from_str(&deployment.stdout).unwrap();
    let spec = &deployment["spec"]["template"]["spec"];
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .map(|a| {
                a.iter()
                    .map(|c| c["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        names(&spec["initContainers"]),
        [
            "pilotfish-init",
            "pilotfish-certificate",
            "pilotfish-certificate-renewer",
            "pilotfish-bootstrap",
            "pilotfish-proxy"
        ]
    );
    assert_eq!(
        names(&spec["containers"]),
        ["reviews"],
        "the app container is kept, alone"
    );
    let mut volumes = names(&spec["volumes"]);
    volumes.sort();
    assert_eq!(
        volumes,
        [
            "pilotfish-certs",
            "pilotfish-init-run",
            "pilotfish-podinfo",
            "pilotfish-proxy",
            "pilotfish-root",
            "pilotfish-token"
        ]
    );
    let proxy = &spec["initContainers"][4];
    assert_eq!(
        proxy["restartPolicy"], "Always",
        "Envoy is a native sidecar"
    );
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    let init = &spec["initContainers"][0];
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    let renewer = &spec["initContainers"][2];
    assert_eq!(
        renewer["restartPolicy"], "Always",
        "the renewer runs beside Envoy"
    );
    assert!(renewer["args"].to_string().contains("--renew"));
    let bootstrap = spec["initContainers"][3]["args"][0].as_str().unwrap();
    assert!(
        bootstrap.contains("--xds-address pilotfish.pilotfish-system.svc:15012")
            && bootstrap.contains("--cert-dir /etc/pilotfish/certs")
            && bootstrap.contains(r#"--ip "$(POD_IP)""#),
        "{bootstrap}"
    );

    // A Pod with that spec is valid too (and admitted: ServiceAccount
    // admission is off, no controller needed; it would name the account
    // the projected token is for, as here).
    let mut spec = spec.clone();
    spec["serviceAccountName"] = json!("default");
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "reviews-0", "namespace": "shop", "labels": {"app": "reviews"}},
        "spec": spec,
    });
    server
        .kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &pod.to_string())
        .expect_success("pod with the sidecar");
}

/// The documents of a file in deploy/kubernetes/.
fn deploy_documents(file: &str) -> Vec<Value> {
    let path = repo_path(&format!("deploy/kubernetes/{file}"));
    let text = std::fs::read_to_string(&path).unwrap();
    pilotfish_crds::load::parse_documents(&text).unwrap()
}

/// The Deployment's own command line, with the ConfigMap's values put in as
/// the kubelet would, run against the API server with the ServiceAccount's
/// credentials: the flags are accepted and the RBAC rules suffice for a full
/// sync (/ready). Only the listen addresses move to free loopback ports.
#[test]
fn deployment_command_line_syncs_with_its_own_rbac() {
    let server = KubeApiServer::start("deploy-contract");
    server
        .kubectl(&["apply", "-f", &deploy_dir()])
        .expect_success("apply deploy/kubernetes/");
    server
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ])
        .expect_success("CRDs Established");
    // Something of every watched kind, so each list returns items.
    let objects = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, image: example/reviews:1}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}
---
apiVersion: v1
kind: Secret
metadata: {name: gateway-cert, namespace: default}
type: kubernetes.io/tls
stringData: {tls.crt: not-a-real-certificate, tls.key: not-a-real-key}
"#;
    server
        .kubectl_stdin(&["apply", "-f", "-"], objects)
        .expect_success("mesh objects");

    let config: BTreeMap<String, String> =
        serde_json::from_value(deploy_documents("02-configmap.yaml")[0]["data"].clone()).unwrap();
    let deployment = deploy_documents("deployment.yaml").remove(0);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env_names: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let (xds, secure_xds) = (free_loopback_address(), free_loopback_address());
    let (monitoring, http) = (free_loopback_address(), free_loopback_address());
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mut arg = a.as_str().unwrap().to_string();
            for (key, value) in &config {
                assert!(env_names.contains(&key.as_str()), "{key} is not passed");
                arg = arg.replace(&format!("$({key})"), value);
            }
            assert!(!arg.contains("$("), "unexpanded {arg}");
            match arg.as_str() {
                "0.0.0.0:15010" => xds.clone(),
                "0.0.0.0:15012" => secure_xds.clone(),
                "0.0.0.0:15014" => monitoring.clone(),
                "127.0.0.1:8080" => http.clone(),
                _ => arg,
            }
        })
        .collect();

    let kubeconfig = server.kubeconfig_for_service_account(NAMESPACE, SERVICE_ACCOUNT);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pilotfish"));
    cmd.args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info");
    let mut pilotfish = Process::spawn("pilotfish", cmd, &server.path().join("pilotfish.log"));
    wait_until(
        "pilotfish /ready",
        std::time::Duration::from_secs(60),
        || {
            pilotfish.assert_running();
            match support::http::control_get(&monitoring, "/ready")? {
                (200, _) => Ok(()),
                (status, body) => Err(format!("/ready answered {status}: {body}")),
            }
        },
    );
    // /ready waits for the Secrets too; the TLS one is a gateway credential.
    let (_, credentials) =
        support::http::control_get(&http, "/debug/credentials").expect("/debug/credentials");
    assert!(
        credentials.contains(r#""name":"gateway-cert""#) && !credentials.contains("not-a-real-key"),
        "{credentials}"
    );
    // The monitoring port serves probes and metrics, not the debug pages.
    let (status, _) = support::http::control_get(&monitoring, "/debug/config_dump")
        .expect("monitoring port answers");
    assert_eq!(status, 404, "debug pages on the monitoring port");
    // The first replica created the mesh CA Secret, with its own RBAC.
    server
        .kubectl(&["get", "secret", "pilotfish-ca", "-n", NAMESPACE])
        .expect_success("the mesh CA Secret exists");
    let log = pilotfish.log();
    assert!(
        !log.contains("Forbidden") && !log.contains("forbidden"),
        "pilotfish was refused something by RBAC:\n{log}"
    );
}
