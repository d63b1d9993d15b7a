//! The Kubernetes test harness itself (support/kube_apiserver.rs): the
//! server is the pinned release, both credentials work, Services and Pods
//! can be created without controllers, and a restart keeps every object
//! while the API is really gone in between.
//!
//! Needs scripts/install-kube-apiserver.sh (run by scripts/setup.sh); no root.

mod support;

use serde_json::Value;
use support::kube_apiserver::{ADMIN_USER, KubeApiServer};

#[test]
fn harness_serves_objects_and_survives_restart() {
    let mut server = KubeApiServer::start("harness");

    let version = server
        .kubectl(&["version", "-o", "json"])
        .expect_success("kubectl version");
    let version: Value = serde_json::from_str(&version.stdout).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.36.3");
    assert_eq!(version["clientVersion"]["gitVersion"], "v1.36.3");

    // Both admin credentials: client certificate (the kubeconfig) and token.
    let whoami = server
        .kubectl(&[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .expect_success("whoami (certificate)");
    assert_eq!(whoami.stdout, ADMIN_USER);
    let token_config = server.kubeconfig_with_token("admin-token", server.admin_token());
    let whoami = server
        .kubectl_as(
            &token_config,
            &["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"],
        )
        .expect_success("whoami (token)");
    assert!(
        whoami.stdout.contains("system:masters"),
        "{}",
        whoami.stdout
    );
    let bad = server.kubeconfig_with_token("bad-token", "not-a-token");
    server
        .kubectl_as(&bad, &["get", "namespaces"])
        .expect_failure("an unknown token");

    // A Service gets a ClusterIP from the range; a Pod needs no
    // ServiceAccount controller.
    server
        .kubectl(&[
            "create",
            "service",
            "clusterip",
            "reviews",
            "--tcp=9080:9080",
        ])
        .expect_success("create service");
    let ip = server
        .kubectl(&[
            "get",
            "service",
            "reviews",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .expect_success("service IP")
        .stdout;
    assert!(ip.starts_with("10.96."), "ClusterIP {ip}");
    server
        .kubectl(&[
            "run",
            "reviews-v1",
            "--image=example/reviews:1",
            "--labels=app=reviews,version=v1",
        ])
        .expect_success("create pod");

    // Down: the API is unreachable; up again on the same URL and etcd.
    let url = server.server_url();
    server.stop_apiserver();
    server
        .kubectl(&["get", "pods", "--request-timeout=2s"])
        .expect_failure("the API while stopped");
    server.start_again();
    server.restart();
    assert_eq!(server.server_url(), url);
    let pods = server
        .kubectl(&[
            "get",
            "pod",
            "reviews-v1",
            "-o",
            "jsonpath={.metadata.labels.version}",
        ])
        .expect_success("pod after restart");
    assert_eq!(pods.stdout, "v1");
    let ip_after = server
        .kubectl(&[
            "get",
            "service",
            "reviews",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .expect_success("service after restart")
        .stdout;
    assert_eq!(ip_after, ip);
    assert!(
        server.apiserver_log().contains("Serving securely"),
        "apiserver log kept"
    );
}
