//! The mapping is the one Envoy reads: a bootstrap built with envoy-types,
//! converted to JSON, passes the real `envoy --mode validate`; and every
//! resource of a real translation (the repository's Bookinfo) converts.
//! The Envoy binary is `$ENVOY_BIN`, else the one `scripts/setup.sh`
//! installs, else `envoy` on PATH.

use std::path::Path;
use std::process::Command;

use envoy_types::pb::envoy::config::bootstrap::v3::{Bootstrap, bootstrap};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteAction;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager;
use envoy_types::pb::google::protobuf::Duration;
use pilotfish_model::Protocol;
use pilotfish_translate::{InboundPort, MeshState, ProxyView};
use pilotfish_xds_json::message_to_json;
use serde_json::Value;

mod support;

use support::{connection_manager, listener, routes_to, seconds, socket};

fn http_listener() -> Listener {
    let routes = routes_to("local", ("backend", "*"), "backend", |action| RouteAction {
        timeout: seconds(15, 0),
        ..action
    });
    let hcm = connection_manager("ingress", http_connection_manager::CodecType::Auto, routes);
    listener("ingress", socket("127.0.0.1", 10080), hcm)
}

fn static_cluster() -> Cluster {
    Cluster {
        name: "backend".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 500_000_000,
        }),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: "backend".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket("127.0.0.1", 18080)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn bootstrap() -> Bootstrap {
    Bootstrap {
        node: Some(Node {
            id: "json-check".into(),
            cluster: "json-check".into(),
            ..Default::default()
        }),
        static_resources: Some(bootstrap::StaticResources {
            listeners: vec![http_listener()],
            clusters: vec![static_cluster()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `$ENVOY_BIN`, else the installed test Envoy, else `envoy` on PATH.
fn envoy_binary() -> String {
    let installed = "/opt/pilotfish-test/bin/envoy";
    std::env::var("ENVOY_BIN").unwrap_or_else(|_| {
        if Path::new(installed).exists() {
            installed.into()
        } else {
            "envoy".into()
        }
    })
}

/// Runs `envoy --mode validate` on `json` (as a .json file, so Envoy reads
/// it as JSON); `Err` holds Envoy's output.
fn envoy_validate(json: &Value, label: &str) -> Result<(), String> {
    let path = std::env::temp_dir().join(format!(
        "pilotfish-xds-json-{}-{label}.json",
        std::process::id()
    ));
    std::fs::write(&path, json.to_string()).expect("write the bootstrap");
    let envoy = envoy_binary();
    let output = Command::new(&envoy)
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {envoy}: {e} (scripts/setup.sh installs it)"));
    let _ = std::fs::remove_file(&path);
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

#[test]
fn envoy_validates_a_bootstrap_given_as_our_json() {
    let json = message_to_json(&bootstrap()).expect("bootstrap converts");
    if let Err(output) = envoy_validate(&json, "bootstrap") {
        panic!("Envoy rejected the JSON bootstrap:\n{output}\n{json:#}");
    }
}

/// Guards the test above: validate mode does read the typed config, so a
/// wrong `"@type"` is refused.
#[test]
fn envoy_refuses_the_same_bootstrap_with_a_wrong_type_on_the_hcm() {
    let mut json = message_to_json(&bootstrap()).expect("bootstrap converts");
    json["staticResources"]["listeners"][0]["filterChains"][0]["filters"][0]["typedConfig"]["@type"] =
        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router".into();
    assert!(envoy_validate(&json, "wrong-type").is_err());
}

/// The repository's Bookinfo (testdata/bookinfo) as the discovery server
/// loads it.
fn testdata_bookinfo() -> MeshState {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/bookinfo");
    let registry = std::fs::read_to_string(root.join("registry.yaml")).expect("read registry");
    let snapshot = pilotfish_registries::file::parse_registry_file("registry.yaml", &registry)
        .expect("testdata registry parses")
        .snapshot;
    let mut files: Vec<_> = std::fs::read_dir(root.join("config"))
        .expect("testdata config directory")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let mut objects = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read testdata config");
        let outcome = pilotfish_crds::load_yaml(&path.display().to_string(), &text, "default");
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        objects.extend(outcome.objects);
    }
    MeshState::of(snapshot.services, snapshot.endpoints, objects)
}

fn all_convert<M: prost::Message + prost::Name>(resources: &[M]) -> usize {
    for resource in resources {
        if let Err(e) = message_to_json(resource) {
            panic!("{} does not convert: {e}", M::full_name());
        }
    }
    resources.len()
}

#[test]
fn every_resource_of_the_bookinfo_translation_converts() {
    let proxy = ProxyView {
        namespace: "default".into(),
        inbound: vec![InboundPort {
            port: 9080,
            protocol: Protocol::Http,
        }],
        ..Default::default()
    };
    let resources = pilotfish_translate::translate(&testdata_bookinfo(), &proxy).resources;
    let converted = all_convert(&resources.clusters)
        + all_convert(&resources.endpoints)
        + all_convert(&resources.listeners)
        + all_convert(&resources.routes)
        + all_convert(&resources.secrets);
    assert!(converted > 10, "only {converted} resources translated");
}
