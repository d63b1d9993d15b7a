//! Bookinfo from a real kube-apiserver through a real Envoy: Services,
//! Pods and EndpointSlices (written by hand: no controllers run) and Istio
//! config, all applied with kubectl; pilotfish runs `--registry kubernetes
//! --config-source kubernetes`. Checks which backend answered.
//!
//! Needs root (network namespaces, iptables) and
//! scripts/install-kube-apiserver.sh.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::config_dump;
use support::kube_apiserver::KubeApiServer;
use support::kube_mesh::{
    KubePod, KubePodOptions, PORT, apply, apply_bookinfo_config, bookinfo_workloads, fqdn,
    install_crds, pod_yaml, request, slice_yaml,
};
use support::{PROPAGATION, outbound_cluster, wait_until};

/// Requests per routing check.
const N: usize = 30;

fn start(name: &str, extra_ips: Vec<&str>) -> (KubeApiServer, KubePod) {
    let server = KubeApiServer::start(name);
    install_crds(&server);
    apply(&server, &bookinfo_workloads());
    apply_bookinfo_config(&server);
    let mut opts = KubePodOptions::new(name);
    opts.extra_ips = extra_ips;
    let pod = KubePod::start(&server, opts);
    pod.wait_bookinfo_served();
    (server, pod)
}

fn eds_hosts(pod: &KubePod, cluster: &str) -> Vec<String> {
    let (_, body) = pod
        .envoy
        .admin_get("/clusters?format=json")
        .expect("clusters");
    let clusters = serde_json::from_str(&body).expect("clusters JSON");
    config_dump::cluster_hosts(&clusters, cluster).unwrap_or_default()
}

#[test]
fn kubectl_applied_bookinfo_is_routed_and_follows_deletes_and_new_endpoints() {
    let started = Instant::now();
    let (server, mut pod) = start("kube-bookinfo", vec!["10.244.0.34"]);
    let served = started.elapsed();

    // Every service through its VIP reaches its own backends.
    for service in ["productpage", "details", "ratings"] {
        pod.tally(10, &request(service))
            .assert_all(&format!("{service} v1"), service);
    }
    // The VirtualService from kubectl: jason → v2, everyone else → v1.
    pod.tally(N, &request("reviews").header("end-user", "jason"))
        .assert_all("reviews v2", "end-user: jason");
    pod.tally(N, &request("reviews"))
        .assert_all("reviews v1", "no end-user header");
    let status = pod.registry_status("kubernetes");
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["synced"], true, "{status}");
    let config_status = pod.registry_status("kubernetes-config");
    assert_eq!(config_status["synced"], true, "{config_status}");
    assert_eq!(config_status["objects"], 5, "{config_status}");

    // kubectl delete of the VirtualService: back to plain round robin over
    // every reviews endpoint.
    let delete = Instant::now();
    server
        .kubectl(&["delete", "virtualservice", "reviews", "-n", "default"])
        .expect_success("delete VirtualService reviews");
    let spread = wait_until(
        "jason's requests to spread over v1..v3",
        PROPAGATION,
        || {
            let tally = pod.tally(N, &request("reviews").header("end-user", "jason"));
            let seen: BTreeSet<&str> = ["reviews v1", "reviews v2", "reviews v3"]
                .into_iter()
                .filter(|v| tally.count(v) > 0)
                .collect();
            if seen.len() == 3
                && tally.total() == seen.iter().map(|v| tally.count(v)).sum::<usize>()
            {
                Ok(tally)
            } else {
                Err(tally.to_string())
            }
        },
    );
    println!(
        "VirtualService deleted: routing reverted within {:.1?}: {spread}",
        delete.elapsed()
    );

    // An endpoint added in a new EndpointSlice appears in Envoy's EDS, with
    // its Pod's labels (so its subset cluster too), and takes traffic.
    pod.add_backend("10.244.0.34", "reviews", "v4");
    apply(
        &server,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: default}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n  - {name: v3, labels: {version: v3}}\n  - {name: v4, labels: {version: v4}}\n",
    );
    let add = Instant::now();
    apply(
        &server,
        &format!(
            "{}---\n{}",
            pod_yaml("reviews", "v4"),
            slice_yaml("reviews", "reviews-2", &[("v4", "10.244.0.34")])
        ),
    );
    let all = outbound_cluster(PORT, "", &fqdn("reviews"));
    wait_until("10.244.0.34 in EDS", PROPAGATION, || {
        let hosts = eds_hosts(&pod, &all);
        if hosts.iter().any(|h| h.starts_with("10.244.0.34")) {
            Ok(())
        } else {
            Err(format!("{hosts:?}"))
        }
    });
    println!("new endpoint in Envoy's EDS within {:.1?}", add.elapsed());
    pod.envoy
        .wait_cluster(&outbound_cluster(PORT, "v4", &fqdn("reviews")), 1);
    wait_until("v4 to answer", PROPAGATION, || {
        let tally = pod.tally(N, &request("reviews"));
        if tally.count("reviews v4") > 0 {
            Ok(())
        } else {
            Err(tally.to_string())
        }
    });
    // And removed again.
    server
        .kubectl(&["delete", "endpointslice", "reviews-2", "-n", "default"])
        .expect_success("delete slice");
    wait_until("10.244.0.34 gone from EDS", PROPAGATION, || {
        let hosts = eds_hosts(&pod, &all);
        if hosts.iter().any(|h| h.starts_with("10.244.0.34")) || hosts.len() != 3 {
            Err(format!("{hosts:?}"))
        } else {
            Ok(())
        }
    });
    pod.envoy.assert_no_rejected_updates();
    println!(
        "served {served:.1?} after start; whole test {:.1?}",
        started.elapsed()
    );
}

const BAD_REGEX_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings-bad, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match:
    - uri: {regex: "(unclosed"}
    route:
    - destination: {host: ratings}
"#;

const REVIEWS_BAD_REGEX: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {regex: "[z-a]"}
    route:
    - destination: {host: reviews, subset: v3}
"#;

#[test]
fn invalid_virtual_service_from_kubectl_is_reported_and_other_routes_stay() {
    let (server, pod) = start("kube-invalid", Vec::new());
    pod.tally(N, &request("reviews").header("end-user", "jason"))
        .assert_all("reviews v2", "end-user: jason before");

    // Schema-valid (the API server accepts it), semantically wrong.
    apply(&server, BAD_REGEX_VS);
    let problems = pod.wait_problem("VirtualService default/ratings-bad");
    let problem = &problems[0];
    assert_eq!(problem["source"], "kubernetes", "{problem}");
    assert_eq!(
        problem["field"], "spec.http[0].match[0].uri.regex",
        "{problem}"
    );
    println!("reported: {problem}");
    let metrics = pod.pilotfish.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("pilotfish_config_errors") && !l.ends_with(" 0")),
        "pilotfish_config_errors should count it:\n{metrics}"
    );
    // Everything else still routed as before.
    pod.tally(N, &request("reviews").header("end-user", "jason"))
        .assert_all(
            "reviews v2",
            "end-user: jason with a bad VirtualService around",
        );
    pod.tally(N, &request("ratings"))
        .assert_all("ratings v1", "ratings");

    // A served VirtualService turned invalid keeps its last valid version.
    apply(&server, REVIEWS_BAD_REGEX);
    let kept = pod.wait_problem("last valid version");
    assert!(
        kept.iter()
            .any(|p| p["object"] == "VirtualService default/reviews"),
        "{kept:?}"
    );
    pod.wait_problem("[z-a]");
    pod.tally(N, &request("reviews").header("end-user", "jason"))
        .assert_all("reviews v2", "jason, last valid reviews VirtualService");
    pod.tally(N, &request("reviews"))
        .assert_all("reviews v1", "others, last valid reviews VirtualService");

    // Fixed with kubectl: the fix is served and the problems go away.
    apply(
        &server,
        &support::bookinfo::reviews_weighted(&[("v3", 100)])
            .replace("name: reviews", "name: reviews\n  namespace: default"),
    );
    server
        .kubectl(&["delete", "virtualservice", "ratings-bad", "-n", "default"])
        .expect_success("delete ratings-bad");
    pod.wait_all(&request("reviews"), N, "reviews v3", PROPAGATION);
    wait_until("no input problems left", PROPAGATION, || {
        let d = pod.pilotfish.diagnostics();
        match d["input_problems"].as_array() {
            Some(a) if a.is_empty() => Ok(()),
            _ => Err(d["input_problems"].to_string()),
        }
    });
    pod.envoy.assert_no_rejected_updates();
    let _ = Duration::ZERO;
}
