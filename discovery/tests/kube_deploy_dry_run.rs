//! deploy/kubernetes/ against a real kube-apiserver: every object passes
//! server-side validation and admission (dry run), a real apply is
//! idempotent, the ServiceAccount's RBAC is exactly the least privilege
//! Pilotfish needs, and the sidecar template merges into a workload as
//! documented. The scale-out objects fit the Deployment: the autoscaler
//! scales it on CPU, the disruption budget and the spread constraints count
//! its pods (the API server's own selectors and eviction say so), and the
//! grace period outlasts the preStop sleep plus pilotfish's shutdown bound.
//! Also: deploy/kubernetes/crds.yaml is the generated crds/manifests/all.yaml.
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

/// Every CRD Established. kubectl's wait, on a CRD it lists before the
/// server has given it any condition, fails with ".status.conditions
/// accessor error" instead of waiting (seen on a loaded machine right after
/// the CRDs were created): it is asked again then.
fn wait_crds_established(server: &KubeApiServer) {
    let started = std::time::Instant::now();
    loop {
        let out = server.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ]);
        if out.success()
            || !out.stderr.contains(".status.conditions accessor error")
            || started.elapsed() > std::time::Duration::from_secs(60)
        {
            out.expect_success("CRDs Established");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
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
    wait_crds_established(server);
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
const OBJECTS: [&str; 21] = [
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
    HPA,
    PDB,
];

const HPA: &str = "horizontalpodautoscaler.autoscaling/pilotfish";
const PDB: &str = "poddisruptionbudget.policy/pilotfish";

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

    // The objects as the server would store them (defaults filled in).
    let stored = server
        .kubectl(&[
            "apply",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            &deploy_dir(),
        ])
        .expect_success("server dry run of deploy/kubernetes/, as JSON");
    let stored: Value = serde_json::from_str(&stored.stdout).unwrap();
    let find = |kind: &str, name: &str| {
        stored["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in the dry run"))
            .clone()
    };
    check_scale_out(
        &find("Deployment", "pilotfish"),
        &find("HorizontalPodAutoscaler", "pilotfish"),
        &find("PodDisruptionBudget", "pilotfish"),
        &find("Deployment", "pilotfish-ingressgateway"),
    );
}

/// Whether a LabelSelector (matchLabels and matchExpressions, ANDed)
/// selects a pod with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let by_labels = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| label(k) == v.as_str()));
    let by_expressions = selector["matchExpressions"].as_array().is_none_or(|e| {
        e.iter().all(|e| {
            let key = e["key"].as_str().unwrap();
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap() {
                "In" => label(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => !label(key).is_some_and(|v| values.contains(&v)),
                "Exists" => label(key).is_some(),
                "DoesNotExist" => label(key).is_none(),
                other => panic!("selector operator {other}"),
            }
        })
    });
    by_labels && by_expressions
}

/// The scale-out objects (autoscaling.yaml, deployment.yaml), as the server
/// stores them, fit the Deployment; `other` is a Deployment whose pods they
/// must not count.
fn check_scale_out(deployment: &Value, hpa: &Value, pdb: &Value, other: &Value) {
    let namespace = &deployment["metadata"]["namespace"];
    let template = &deployment["spec"]["template"];
    let labels = &template["metadata"]["labels"];
    let other_labels = &other["spec"]["template"]["metadata"]["labels"];

    // The autoscaler scales this Deployment, 1 to 5 replicas at 80 % CPU
    // (istiod's chart), and the CPU it measures is requested by every
    // container (utilization is relative to the request).
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["metadata"]["namespace"], *namespace);
    assert_eq!(
        hpa["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment["metadata"]["name"]})
    );
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(hpa["spec"]["maxReplicas"], 5);
    assert_eq!(
        hpa["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}])
    );
    for container in template["spec"]["containers"].as_array().unwrap() {
        assert!(
            container["resources"]["requests"]["cpu"].is_string()
                && container["resources"]["limits"]["memory"].is_string(),
            "container {} needs a CPU request (and a memory limit)",
            container["name"]
        );
    }
    // The replica count is the autoscaler's: the manifest leaves it out, so
    // a `kubectl apply` does not reset it (the server defaults it to 1).
    assert!(
        deploy_documents("deployment.yaml")[0]["spec"]
            .get("replicas")
            .is_none(),
        "deployment.yaml sets spec.replicas, which the autoscaler owns"
    );
    assert_eq!(deployment["spec"]["replicas"], 1);

    // The disruption budget keeps one of these pods, and counts no others.
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["metadata"]["namespace"], *namespace);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let budget = &pdb["spec"]["selector"];
    assert!(
        selects(budget, labels) && selects(&deployment["spec"]["selector"], labels),
        "the budget does not select the Deployment's pods: {budget} vs {labels}"
    );
    assert!(
        !selects(budget, other_labels),
        "the budget also counts {other_labels}"
    );

    // Spread over nodes and zones, never refusing to schedule, counting
    // only these pods.
    let spread = template["spec"]["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints");
    let keys: Vec<&str> = spread
        .iter()
        .map(|c| c["topologyKey"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    for constraint in spread {
        assert_eq!(constraint["whenUnsatisfiable"], "ScheduleAnyway");
        assert!(
            selects(&constraint["labelSelector"], labels)
                && !selects(&constraint["labelSelector"], other_labels),
            "{constraint}"
        );
    }

    // Deletion: the preStop sleep, then SIGTERM and at most
    // --shutdown-timeout-seconds until pilotfish exits; the grace period
    // (which counts the hook's time too) must outlast both, or the kubelet
    // kills pilotfish before its proxies were told to go.
    let container = &template["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let shutdown: u64 = args
        .windows(2)
        .find(|w| w[0] == "--shutdown-timeout-seconds")
        .map(|w| w[1].parse().unwrap())
        .expect("--shutdown-timeout-seconds");
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("a preStop sleep");
    let grace = template["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace > pre_stop + shutdown,
        "terminationGracePeriodSeconds {grace} <= preStop {pre_stop} s + shutdown {shutdown} s"
    );
    // Only synced replicas receive proxies, and connections age out so that
    // proxies spread over replicas added later.
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--max-connection-age" && w[1] != "off" && w[1] != "0"),
        "{args:?}"
    );
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
    let resource_version = |object: &str| {
        server
            .kubectl(&[
                "get",
                object,
                "-n",
                NAMESPACE,
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ])
            .expect_success(&format!("get {object}"))
            .stdout
    };
    let budget_version = resource_version(PDB);
    let again = server
        .kubectl(&["apply", "-f", &deploy_dir()])
        .expect_success("apply deploy/kubernetes/ again");
    for object in OBJECTS {
        if object == PDB {
            // kubectl's client-side apply always sends a budget's selector
            // (its patch strategy is "replace") and so reports
            // "configured"; the server stored nothing new.
            assert_eq!(
                resource_version(PDB),
                budget_version,
                "second apply changed {object}:\n{}",
                again.stdout
            );
            continue;
        }
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
    // The control plane and the ingress gateway run unprivileged. (Created
    // for real: the scale-out checks below select them.)
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
                &["create", "-f", "-"],
                &pod_from(&found["spec"]["template"], pod),
            )
            .expect_success(&format!("{deployment} pod under enforce=restricted"));
    }

    // The autoscaler finds the Deployment's pods through the selector of
    // its scale subresource, the disruption budget through its own: as the
    // server evaluates them, both select the control plane's pod and not
    // the gateway's. (No controllers run here: the pods were made from the
    // templates above.)
    let selected = |selector: &str| {
        server
            .kubectl(&["get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "name"])
            .expect_success(&format!("pods selected by {selector}"))
            .stdout
            .trim()
            .to_string()
    };
    let scale = server
        .kubectl(&[
            "get",
            "--raw",
            &format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/pilotfish/scale"),
        ])
        .expect_success("the Deployment's scale subresource");
    let scale: Value = serde_json::from_str(&scale.stdout).unwrap();
    assert_eq!(
        selected(scale["status"]["selector"].as_str().unwrap()),
        "pod/pilotfish-0"
    );
    let budget = server
        .kubectl(&["get", PDB, "-n", NAMESPACE, "-o", "json"])
        .expect_success("get the budget");
    let budget: Value = serde_json::from_str(&budget.stdout).unwrap();
    assert!(budget["spec"]["selector"].get("matchExpressions").is_none());
    let budget_selector: Vec<String> = budget["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    assert_eq!(selected(&budget_selector.join(",")), "pod/pilotfish-0");
    // What `kubectl drain` meets, through the eviction API (dry run): the
    // only ready pilotfish pod is kept (one replica: the budget allows no
    // disruption, which is also where its status stays without the
    // disruption controller), the gateway's ready pod is not covered, and a
    // pilotfish pod that is not ready may go (unhealthyPodEvictionPolicy
    // AlwaysAllow: it protects nothing).
    let set_ready = |pod: &str, ready: bool| {
        let ready = if ready { "True" } else { "False" };
        let status = json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": ready}]}});
        server
            .kubectl(&[
                "patch",
                "pod",
                pod,
                "-n",
                NAMESPACE,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ])
            .expect_success(&format!("status of {pod}"));
    };
    let evict = |pod: &str| {
        let eviction = json!({
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": pod, "namespace": NAMESPACE},
            "deleteOptions": {"dryRun": ["All"]},
        });
        server.kubectl_stdin(
            &[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}/eviction"),
                "-f",
                "-",
            ],
            &eviction.to_string(),
        )
    };
    set_ready("pilotfish-0", true);
    set_ready("ingressgateway-0", true);
    let kept = evict("pilotfish-0").expect_failure("evicting the only ready pilotfish pod");
    assert!(kept.stderr.contains("disruption budget"), "{}", kept.stderr);
    evict("ingressgateway-0").expect_success("evicting the gateway's pod");
    set_ready("pilotfish-0", false);
    evict("pilotfish-0").expect_success("evicting a pilotfish pod that is not ready");
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
    wait_crds_established(&server);
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
