//! Real Envoy bootstrapped with `api_type: DELTA_GRPC` (incremental ADS):
//! traffic routes, a VirtualService edit moves it, a DestinationRule edit
//! re-warms the clusters it changes, a removed service's clusters leave
//! Envoy, and no update is rejected on either side.

mod support;

use serde_json::Value;
use support::bookinfo::{self, REVIEWS_VS_FILE};
use support::config_dump::active_clusters;
use support::{PROPAGATION, wait_until};

/// Pilotfish's `/debug/syncz` entry for `node_id`.
fn proxy_status<'a>(syncz: &'a Value, node_id: &str) -> &'a Value {
    syncz["proxies"]
        .as_array()
        .and_then(|proxies| proxies.iter().find(|p| p["identity"]["node_id"] == node_id))
        .unwrap_or_else(|| panic!("{node_id} not in syncz: {syncz}"))
}

#[test]
fn delta_envoy_routes_and_follows_virtual_service_edits() {
    let pod = bookinfo::pod("delta-vs")
        .delta_xds()
        .config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v1", 100)]))
        .start();
    bookinfo::wait_served(&pod);
    let syncz = pod.pilotfish.syncz();
    assert_eq!(
        proxy_status(&syncz, pod.envoy.node_id())["protocol"],
        "delta",
        "Envoy speaks incremental ADS"
    );
    let reviews = bookinfo::reviews();
    pod.tally(20, &reviews)
        .assert_all("reviews v1", "before any edit");

    pod.write_config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v2", 100)]));
    pod.wait_for_switch(&reviews, "reviews v1", "reviews v2", PROPAGATION);
    pod.tally(50, &reviews)
        .assert_all("reviews v2", "after the edit");

    pod.envoy.assert_no_rejected_updates();
    let synced = pod.pilotfish.wait_synced_without_nack(pod.envoy.node_id());
    // The edit changed routes only: no cluster was resent after startup.
    let cds_pushes = &proxy_status(&synced, pod.envoy.node_id())["types"]["Cluster"]["pushes"];
    assert_eq!(cds_pushes, 1, "CDS pushed once: {synced}");
}

#[test]
fn delta_envoy_drops_the_clusters_of_a_removed_service() {
    let pod = bookinfo::pod("delta-removed").delta_xds().start();
    bookinfo::wait_served(&pod);
    let ratings = bookinfo::fqdn("ratings");
    let has_ratings = |dump: &Value| active_clusters(dump).iter().any(|c| c.ends_with(&ratings));
    assert!(has_ratings(&pod.envoy.config_dump()));

    let registry = std::fs::read_to_string(support::repo_path("testdata/bookinfo/registry.yaml"))
        .expect("registry");
    let without_ratings = registry
        .split("- hostname: ratings.default.svc.cluster.local")
        .next()
        .unwrap_or_default();
    assert_ne!(
        without_ratings, registry,
        "the Bookinfo registry changed shape; update this test"
    );
    pod.write_registry(without_ratings);
    wait_until("ratings clusters gone from Envoy", PROPAGATION, || {
        let dump = pod.envoy.config_dump();
        if has_ratings(&dump) {
            Err(format!("still active: {:?}", active_clusters(&dump)))
        } else {
            Ok(())
        }
    });
    // The rest of the mesh is untouched.
    pod.tally(20, &bookinfo::reviews())
        .assert_all("reviews v1", "after ratings left");
    let removed = pod.envoy.stat("cluster_manager.cluster_removed");
    assert!(removed > 0, "Envoy removed clusters: {removed}");

    pod.envoy.assert_no_rejected_updates();
    pod.pilotfish.wait_synced_without_nack(pod.envoy.node_id());
}

#[test]
fn delta_envoy_warms_clusters_a_destination_rule_edit_changed() {
    let pod = bookinfo::pod("delta-dr").delta_xds().start();
    bookinfo::wait_served(&pod);
    let rules = std::fs::read_to_string(support::repo_path(
        "testdata/bookinfo/config/destination-rules.yaml",
    ))
    .expect("destination rules");
    let limited = rules.replace(
        "  host: reviews\n",
        "  host: reviews\n  trafficPolicy: {connectionPool: {tcp: {maxConnections: 77}}}\n",
    );
    assert_ne!(
        limited, rules,
        "the Bookinfo rules changed shape; update this test"
    );
    pod.write_config("destination-rules.yaml", &limited);

    // Updated EDS clusters warm again: every reviews cluster must become
    // active with the new policy, none left warming.
    let reviews = bookinfo::fqdn("reviews");
    wait_until("updated reviews clusters active", PROPAGATION, || {
        let dump = pod.envoy.config_dump();
        let warming = warming_clusters(&dump);
        let updated = dump.to_string().matches("\"max_connections\":77").count();
        if warming.is_empty() && updated >= 4 {
            Ok(())
        } else {
            Err(format!("warming {warming:?}, {updated} limited"))
        }
    });
    assert!(
        active_clusters(&pod.envoy.config_dump())
            .iter()
            .any(|c| c.ends_with(&reviews))
    );
    pod.tally(20, &bookinfo::reviews())
        .assert_all("reviews v1", "after the edit");
    pod.envoy.assert_no_rejected_updates();
    pod.pilotfish.wait_synced_without_nack(pod.envoy.node_id());
}

/// Names of dynamic clusters still warming.
fn warming_clusters(dump: &Value) -> Vec<String> {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["dynamic_warming_clusters"].as_array())
        .flatten()
        .filter_map(|c| c.pointer("/cluster/name").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}
