//! Kubernetes and Consul in one mesh: `--registry kubernetes --registry
//! consul --config-source kubernetes`. Kubernetes Services and Consul
//! services are both routed by one Envoy, and Istio config stored in the
//! API server (the "Istio on Consul" setup, where the API server only holds
//! config) routes a Consul service by subsets built from Consul tags.
//!
//! Needs root, scripts/install-kube-apiserver.sh and scripts/install-consul.sh.

mod support;

use std::time::Instant;

use support::consul::Instance;
use support::http::Request;
use support::kube_apiserver::KubeApiServer;
use support::kube_mesh::{
    KubePod, KubePodOptions, PORT, apply, apply_bookinfo_config, bookinfo_workloads, install_crds,
    request,
};
use support::{PROPAGATION, outbound_cluster};

const N: usize = 30;
const WEB_V1: &str = "10.244.0.51";
const WEB_V2: &str = "10.244.0.52";
const WEB_HOST: &str = "web.service.consul";

const WEB_CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web.service.consul
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web.service.consul]
  http:
  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: web.service.consul, subset: v2}
  - route:
    - destination: {host: web.service.consul, subset: v1}
"#;

#[test]
fn kubernetes_and_consul_registries_with_config_from_the_api_server() {
    let started = Instant::now();
    let server = KubeApiServer::start("kube-consul");
    install_crds(&server);
    apply(&server, &bookinfo_workloads());
    apply_bookinfo_config(&server);
    apply(&server, WEB_CONFIG);

    let mut opts = KubePodOptions::new("kube-consul");
    opts.consul = true;
    opts.extra_ips = vec![WEB_V1, WEB_V2];
    opts.pilotfish_args.extend(
        [
            "--registry",
            "consul",
            "--consul-address",
            "http://127.0.0.1:8500",
        ]
        .map(String::from),
    );
    let mut pod = KubePod::start(&server, opts);
    pod.add_backend(WEB_V1, "web", "v1");
    pod.add_backend(WEB_V2, "web", "v2");
    let consul = pod.consul.as_ref().expect("consul");
    for (id, ip, version) in [("web-v1", WEB_V1, "v1"), ("web-v2", WEB_V2, "v2")] {
        consul.register(
            &Instance::new(id, "web", ip, PORT)
                .tag(&format!("version|{version}"))
                .protocol(Some("http")),
        );
    }
    pod.wait_bookinfo_served();
    pod.envoy
        .wait_cluster(&outbound_cluster(PORT, "v2", WEB_HOST), 1);

    // The Consul service, routed by config from the API server. It has no
    // VIP: a client reaches it through an instance address and its name.
    let web = Request::get(&format!("{WEB_V1}:{PORT}"), WEB_HOST);
    pod.wait_all(
        &web.clone().header("end-user", "jason"),
        N,
        "web v2",
        PROPAGATION,
    );
    pod.tally(N, &web).assert_all("web v1", "web, no end-user");
    // The Kubernetes services, in the same Envoy.
    pod.tally(N, &request("reviews").header("end-user", "jason"))
        .assert_all("reviews v2", "reviews, jason");
    pod.tally(N, &request("details"))
        .assert_all("details v1", "details");

    let registries = pod.pilotfish.get_json("/debug/registries");
    for name in ["kubernetes", "consul", "kubernetes-config"] {
        let status = pod.registry_status(name);
        assert_eq!(status["connected"], true, "{name}: {registries}");
        assert_eq!(status["synced"], true, "{name}: {registries}");
    }
    pod.envoy.assert_no_rejected_updates();
    println!("whole test {:.1?}", started.elapsed());
}
