//! Moving a proxy between replicas costs nothing when their input is the
//! same: resource versions are content hashes, so a delta Envoy that
//! reconnects to another `pilotfish serve` process given the same config
//! directory and registry file, announcing what it holds
//! (`initial_resource_versions`), is sent no resource: the new process's
//! `pilotfish_xds_resources_sent_total` and
//! `pilotfish_xds_resource_bytes_sent_total` stay 0 for every type of
//! config, and Envoy modifies no cluster or listener. The one exception is
//! the workload certificate on the secure port (SDS `default`): the new
//! process issues its own. A later edit is still pushed, and counted.
//!
//! The replica here replaces the first on the same address (SIGTERM, then
//! a new process), as a rolling update moves proxies.
//!
//! Needs root (network namespaces, iptables, uid 1337 for Envoy).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::bookinfo::{self, REVIEWS_VS_FILE};
use support::pod::Pod;
use support::traffic::ms;
use support::{PROPAGATION, wait_until};

/// pilotfish's shutdown bound plus slack for a loaded machine.
const SHUTDOWN_BOUND: Duration = Duration::from_secs(12);

/// `pilotfish_<name>{type="<t>"} <value>` from `/metrics`, by type.
fn by_type(pod: &Pod, name: &str) -> BTreeMap<String, u64> {
    let prefix = format!("pilotfish_{name}{{type=\"");
    pod.pilotfish
        .metrics()
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (ty, value) = rest.split_once("\"} ")?;
            Some((ty.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Clusters and listeners Envoy added or modified so far.
fn envoy_changes(pod: &Pod) -> u64 {
    [
        "cluster_manager.cluster_added",
        "cluster_manager.cluster_modified",
        "listener_manager.listener_added",
        "listener_manager.listener_modified",
    ]
    .iter()
    .map(|stat| pod.envoy.stat(stat))
    .sum()
}

#[test]
fn a_delta_envoy_moved_to_a_replica_with_the_same_input_is_sent_no_resources() {
    let mut pod = bookinfo::pod("delta-move")
        .delta_xds()
        .config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v1", 100)]))
        .start();
    bookinfo::wait_served(&pod);
    let node = pod.envoy.node_id().to_string();
    pod.pilotfish.wait_synced_without_nack(&node);
    let reviews = bookinfo::reviews();
    pod.tally(10, &reviews)
        .assert_all("reviews v1", "on the first replica");
    let first = by_type(&pod, "xds_resources_sent_total");
    let first_bytes = by_type(&pod, "xds_resource_bytes_sent_total");
    assert!(
        first.get("cds").copied().unwrap_or(0) > 0,
        "the first replica sent the clusters: {first:?}"
    );
    let changes = envoy_changes(&pod);

    let (took, _) = pod
        .pilotfish
        .terminate(SHUTDOWN_BOUND)
        .expect("pilotfish exited within its shutdown bound");
    pod.restart_pilotfish();
    let restarted = Instant::now();
    wait_until(
        &format!("{node} on the new replica"),
        PROPAGATION * 4,
        || {
            let syncz = pod.pilotfish.syncz();
            if syncz.to_string().contains(&node) {
                Ok(())
            } else {
                Err(format!("not connected yet: {syncz}"))
            }
        },
    );
    let reconnected = restarted.elapsed();
    pod.pilotfish.wait_synced_without_nack(&node);
    let sent = by_type(&pod, "xds_resources_sent_total");
    let bytes = by_type(&pod, "xds_resource_bytes_sent_total");
    println!(
        "first replica sent {first:?} resources, {first_bytes:?} bytes; moved (shutdown {}, reconnected {} after the new replica was ready): it sent {sent:?} resources, {bytes:?} bytes",
        ms(took),
        ms(reconnected)
    );
    for (ty, count) in &sent {
        if ty != "sds" {
            assert_eq!(*count, 0, "{ty} resources sent after the move: {sent:?}");
            assert_eq!(
                bytes.get(ty).copied().unwrap_or(0),
                0,
                "{ty} bytes: {bytes:?}"
            );
        }
    }
    assert_eq!(
        envoy_changes(&pod),
        changes,
        "Envoy added or modified clusters or listeners after the move"
    );
    pod.tally(10, &reviews)
        .assert_all("reviews v1", "after the move");

    // The counters count: an edit is pushed, and only its route.
    pod.write_config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v2", 100)]));
    pod.wait_for_switch(&reviews, "reviews v1", "reviews v2", PROPAGATION);
    let after_edit = by_type(&pod, "xds_resources_sent_total");
    assert!(
        after_edit.get("rds").copied().unwrap_or(0) > 0,
        "the edited route was sent: {after_edit:?}"
    );
    pod.pilotfish.wait_synced_without_nack(&node);
    pod.envoy.assert_no_rejected_updates();
}
