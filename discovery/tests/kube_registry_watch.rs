//! The Kubernetes registry and the Kubernetes config source against a real
//! kube-apiserver, without Envoy (no root needed): the first full sync,
//! live changes (an endpoint added in a new EndpointSlice, a VirtualService
//! edited, an invalid one reported), and an API server restart in the
//! middle: the last state is kept while it is down, `connected` says so,
//! and watches resume with nothing lost and later changes still arriving.
//!
//! Needs scripts/install-kube-apiserver.sh (run by scripts/setup.sh).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pilotfish_crds::ConfigObject;
use pilotfish_discovery::metrics::Metrics;
use pilotfish_discovery::problems::InputProblem;
use pilotfish_discovery::push::Change;
use pilotfish_discovery::sources::kubernetes_config;
use pilotfish_registries::kubernetes::{
    ApiServer, KubernetesConfig, KubernetesRegistry, KubernetesSnapshot,
};
use pilotfish_registries::{Health, Protocol};
use support::kube_apiserver::KubeApiServer;
use support::kube_mesh::{
    apply, apply_bookinfo_config, bookinfo_workloads, fqdn, install_crds, pod_yaml, slice_yaml,
};
use support::wait_until;
use tokio::sync::mpsc;

/// Watches resume after the API server is back: client-go's back-off
/// (0.8 s doubling, jittered, at most 30 s) plus a fresh list.
const RESUME: Duration = Duration::from_secs(60);
const CHANGE: Duration = Duration::from_secs(10);

/// The latest `Change::Config` received so far.
struct ConfigChanges {
    rx: mpsc::UnboundedReceiver<Change>,
    latest: Option<(Vec<ConfigObject>, Vec<InputProblem>)>,
    count: usize,
}

impl ConfigChanges {
    fn drain(&mut self) {
        while let Ok(change) = self.rx.try_recv() {
            if let Change::Config {
                objects, problems, ..
            } = change
            {
                self.latest = Some((objects, problems));
                self.count += 1;
            }
        }
    }

    fn wait(
        &mut self,
        what: &str,
        check: impl FnMut(&[ConfigObject], &[InputProblem]) -> bool,
    ) -> (Vec<ConfigObject>, Vec<InputProblem>) {
        self.wait_for(what, CHANGE, check)
    }

    fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&[ConfigObject], &[InputProblem]) -> bool,
    ) -> (Vec<ConfigObject>, Vec<InputProblem>) {
        wait_until(what, timeout, || {
            self.drain();
            match &self.latest {
                Some((o, p)) if check(o, p) => Ok((o.clone(), p.clone())),
                Some((o, p)) => Err(format!(
                    "objects {:?}; problems {p:?}",
                    o.iter().map(|o| o.key().to_string()).collect::<Vec<_>>()
                )),
                None => Err("no config yet".into()),
            }
        })
    }
}

fn keys(objects: &[ConfigObject]) -> Vec<String> {
    objects.iter().map(|o| o.key().to_string()).collect()
}

fn wait_snapshot(
    registry: &KubernetesRegistry,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut(&KubernetesSnapshot) -> bool,
) -> KubernetesSnapshot {
    wait_until(what, timeout, || {
        let current = registry.current();
        if current.synced && check(&current) {
            Ok(current)
        } else {
            Err(format!("{current:?}"))
        }
    })
}

fn endpoint_addresses(snapshot: &KubernetesSnapshot, service: &str) -> Vec<String> {
    snapshot
        .snapshot
        .endpoints
        .get(&fqdn(service))
        .map(|eps| eps.iter().map(|e| e.address.clone()).collect())
        .unwrap_or_default()
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

#[test]
fn registry_and_config_source_follow_the_api_server_through_a_restart() {
    let started = Instant::now();
    let mut server = KubeApiServer::start("registry-watch");
    install_crds(&server);
    apply(&server, &bookinfo_workloads());
    apply_bookinfo_config(&server);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter();
    let api = runtime
        .block_on(ApiServer::connect(Some(server.kubeconfig())))
        .expect("client");
    assert_eq!(api.url.trim_end_matches('/'), server.server_url());
    let registry = KubernetesRegistry::start(&api, KubernetesConfig::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let source = kubernetes_config::start(&api, &BTreeSet::new(), tx, Arc::new(Metrics::new()));
    let mut config = ConfigChanges {
        rx,
        latest: None,
        count: 0,
    };

    // First full sync.
    let first = wait_snapshot(&registry, "registry synced", CHANGE, |s| {
        endpoint_addresses(s, "reviews").len() == 3
    });
    let reviews = first
        .snapshot
        .services
        .iter()
        .find(|s| s.hostname == fqdn("reviews"))
        .expect("reviews");
    assert_eq!(
        reviews.vips,
        ["10.96.0.30".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(reviews.ports[0].protocol, Protocol::Http);
    assert!(reviews.created.is_some());
    let eps = &first.snapshot.endpoints[&fqdn("reviews")];
    let versions: BTreeSet<&str> = eps.iter().map(|e| e.labels["version"].as_str()).collect();
    assert_eq!(
        versions,
        BTreeSet::from(["v1", "v2", "v3"]),
        "labels from the Pods"
    );
    assert!(
        eps.iter()
            .all(|e| e.health == Health::Healthy && e.port == 9080)
    );
    // The API server's own `kubernetes` Service is there too.
    assert!(
        first
            .snapshot
            .services
            .iter()
            .any(|s| s.hostname == "kubernetes.default.svc.cluster.local")
    );
    let status = registry.status().borrow().clone();
    assert!(status.connected && status.synced, "{status:?}");

    let (objects, problems) = config.wait("config synced", |o, _| o.len() == 5);
    assert!(problems.is_empty(), "{problems:?}");
    assert!(keys(&objects).contains(&"VirtualService default/reviews".to_string()));
    assert!(objects.iter().all(|o| o.origin.source == "kubernetes"));
    println!("first sync after {:.1?}", started.elapsed());

    // An endpoint added in a second slice, with its Pod.
    apply(
        &server,
        &format!(
            "{}---\n{}",
            pod_yaml("reviews", "v4"),
            slice_yaml("reviews", "reviews-2", &[("v4", "10.244.0.34")])
        ),
    );
    let added = wait_snapshot(&registry, "the new endpoint", CHANGE, |s| {
        endpoint_addresses(s, "reviews").contains(&"10.244.0.34".to_string())
    });
    let v4 = added.snapshot.endpoints[&fqdn("reviews")]
        .iter()
        .find(|e| e.address == "10.244.0.34")
        .expect("v4");
    assert_eq!(v4.labels["version"], "v4");

    // An invalid VirtualService: reported with namespace/name and field, the
    // rest still served.
    apply(&server, BAD_REGEX_VS);
    let (objects, problems) = config.wait("the bad regex reported", |_, p| !p.is_empty());
    assert_eq!(objects.len(), 5, "{:?}", keys(&objects));
    assert_eq!(
        problems[0].object.as_deref(),
        Some("VirtualService default/ratings-bad")
    );
    assert_eq!(
        problems[0].field.as_deref(),
        Some("spec.http[0].match[0].uri.regex")
    );

    // Outage: the last state stays, the status says disconnected.
    let before_outage = registry.current();
    let config_count = config.count;
    let outage = Instant::now();
    server.stop_apiserver();
    wait_until("registry status: disconnected", RESUME, || {
        let s = registry.status().borrow().clone();
        if s.connected {
            Err(format!("{s:?}"))
        } else {
            Ok(())
        }
    });
    wait_until("config status: disconnected", RESUME, || {
        let s = source.status().borrow().clone();
        if s.connected {
            Err(format!("{s:?}"))
        } else {
            Ok(())
        }
    });
    let during = registry.current();
    assert_eq!(
        during.snapshot, before_outage.snapshot,
        "last snapshot kept"
    );
    let last_error = registry.status().borrow().last_error.clone();
    println!("while down: {last_error:?}");
    assert!(last_error.is_some());

    server.start_again();
    wait_until("registry reconnected", RESUME, || {
        let s = registry.status().borrow().clone();
        if s.connected {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    println!(
        "registry reconnected {:.1?} after the outage began",
        outage.elapsed()
    );
    // Nothing lost: whatever the watches did (resume or relist), the state
    // is the same.
    assert_eq!(
        registry.current().snapshot,
        before_outage.snapshot,
        "no service or endpoint lost across the restart"
    );
    config.drain();
    assert_eq!(
        config.latest.as_ref().map(|(o, _)| o.len()),
        Some(5),
        "no config lost"
    );
    let _ = config_count;

    // Later changes still arrive, on every watch.
    let resumed = Instant::now();
    server
        .kubectl(&["delete", "endpointslice", "reviews-2", "-n", "default"])
        .expect_success("delete slice");
    wait_snapshot(
        &registry,
        "endpoint removed after the restart",
        RESUME,
        |s| endpoint_addresses(s, "reviews").len() == 3,
    );
    server
        .kubectl(&["delete", "virtualservice", "ratings-bad", "-n", "default"])
        .expect_success("delete bad VS");
    apply(
        &server,
        &support::bookinfo::reviews_weighted(&[("v3", 100)])
            .replace("name: reviews", "name: reviews\n  namespace: default"),
    );
    let (objects, problems) = config.wait("VirtualService edit after the restart", |o, p| {
        p.is_empty()
            && o.iter().any(|o| {
                o.key().to_string() == "VirtualService default/reviews"
                    && format!("{:?}", o.spec).contains("\"v3\"")
            })
    });
    assert_eq!(objects.len(), 5);
    assert!(problems.is_empty());
    println!(
        "changes after the restart arrived within {:.1?}; total {:.1?}",
        resumed.elapsed(),
        started.elapsed()
    );
    drop(source);
    drop(registry);
}

#[test]
fn restricted_namespaces_see_only_their_own_objects() {
    let server = KubeApiServer::start("registry-namespaces");
    install_crds(&server);
    server
        .kubectl(&["create", "namespace", "shop"])
        .expect_success("namespace shop");
    apply(&server, &bookinfo_workloads());
    apply(
        &server,
        &support::kube_mesh::service_yaml("cart", "10.96.1.10").replace("default", "shop"),
    );
    apply(
        &server,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: cart, namespace: shop}\nspec: {host: cart}\n",
    );
    apply_bookinfo_config(&server);

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter();
    let api = runtime
        .block_on(ApiServer::connect(Some(server.kubeconfig())))
        .expect("client");
    let namespaces = BTreeSet::from(["shop".to_string()]);
    let registry = KubernetesRegistry::start(
        &api,
        KubernetesConfig {
            namespaces: namespaces.clone(),
            ..KubernetesConfig::default()
        },
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let _source = kubernetes_config::start(&api, &namespaces, tx, Arc::new(Metrics::new()));
    let mut config = ConfigChanges {
        rx,
        latest: None,
        count: 0,
    };
    let snapshot = wait_snapshot(&registry, "registry synced", CHANGE, |_| true);
    let hosts: Vec<&str> = snapshot
        .snapshot
        .services
        .iter()
        .map(|s| s.hostname.as_str())
        .collect();
    assert_eq!(hosts, ["cart.shop.svc.cluster.local"]);
    let (objects, _) = config.wait("config synced", |_, _| true);
    assert_eq!(keys(&objects), ["DestinationRule shop/cart"]);
}

#[test]
fn config_source_without_crds_says_so_and_syncs_once_they_are_installed() {
    let server = KubeApiServer::start("config-no-crds");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter();
    let api = runtime
        .block_on(ApiServer::connect(Some(server.kubeconfig())))
        .expect("client");
    let (tx, rx) = mpsc::unbounded_channel();
    let source = kubernetes_config::start(&api, &BTreeSet::new(), tx, Arc::new(Metrics::new()));
    let mut config = ConfigChanges {
        rx,
        latest: None,
        count: 0,
    };
    // The API server answers 404 for the CRDs' paths: reachable, refused,
    // not synced (so pilotfish is not ready).
    let status = wait_until("a 404 recorded", CHANGE, || {
        let s = source.status().borrow().clone();
        match &s.last_error {
            Some(e) if e.contains("404") => Ok(s),
            _ => Err(format!("{s:?}")),
        }
    });
    println!("without CRDs: {:?}", status.last_error);
    assert!(!status.synced, "{status:?}");
    // The reachability probe sees the server answer even though the list is refused.
    wait_until("the probe saw the server answer", CHANGE, || {
        let s = source.status().borrow().clone();
        if s.connected {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    config.drain();
    assert!(
        config.latest.is_none(),
        "nothing published before a full list"
    );

    install_crds(&server);
    apply_bookinfo_config(&server);
    // The watches retry with back-off (up to 30 s between attempts).
    let (objects, _) = config.wait_for("config synced after the CRDs", RESUME, |o, _| o.len() == 5);
    assert_eq!(objects.len(), 5);
    assert!(source.status().borrow().synced);
}
