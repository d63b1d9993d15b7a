//! Config edits reach a connected Envoy quickly and cleanly: traffic moves
//! within the promised deadline, no request fails on the way, and neither
//! Envoy nor pilotfish records a rejected (NACKed) update.

mod support;

use std::time::Duration;

use support::bookinfo::{self, REVIEWS_VS_FILE};
use support::{PROPAGATION, Request};

#[test]
fn virtual_service_edits_move_traffic_within_5s_without_nack() {
    let pod = bookinfo::pod("live-update")
        .config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v1", 100)]))
        .start();
    bookinfo::wait_served(&pod);
    let reviews = bookinfo::reviews();
    pod.tally(20, &reviews)
        .assert_all("reviews v1", "before any edit");

    // An in-place edit (truncate and write), then an atomic replace (rename
    // over the file): pilotfish must notice both.
    pod.write_config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v2", 100)]));
    let in_place = pod.wait_for_switch(&reviews, "reviews v1", "reviews v2", PROPAGATION);
    pod.tally(50, &reviews)
        .assert_all("reviews v2", "after the in-place edit");
    pod.replace_config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v3", 100)]));
    let replaced = pod.wait_for_switch(&reviews, "reviews v2", "reviews v3", PROPAGATION);
    pod.tally(50, &reviews)
        .assert_all("reviews v3", "after the atomic replace");
    println!(
        "edit -> traffic moved: in-place write {}, atomic rename {}",
        ms(in_place),
        ms(replaced)
    );

    pod.envoy.assert_no_rejected_updates();
    pod.pilotfish.wait_synced_without_nack(pod.envoy.node_id());
}

#[test]
fn registry_edit_moves_endpoints_within_5s_without_nack() {
    let mut pod = bookinfo::pod("registry-edit").start();
    bookinfo::wait_served(&pod);
    let ratings = Request::get(bookinfo::RATINGS_VIP, "ratings");
    pod.tally(20, &ratings)
        .assert_all("ratings v1", "before the edit");

    // ratings' only endpoint moves to a new address, served by a new version.
    pod.add_backend("127.0.0.41:9080", "ratings", "v2");
    let registry = std::fs::read_to_string(support::repo_path("testdata/bookinfo/registry.yaml"))
        .expect("registry");
    let moved = registry.replace(
        "address: 127.0.0.40\n    labels: {app: ratings, version: v1}",
        "address: 127.0.0.41\n    labels: {app: ratings, version: v2}",
    );
    assert_ne!(
        moved, registry,
        "the Bookinfo registry changed shape; update this test"
    );
    pod.write_registry(&moved);
    let latency = pod.wait_for_switch(&ratings, "ratings v1", "ratings v2", PROPAGATION);
    pod.tally(50, &ratings)
        .assert_all("ratings v2", "after the edit");
    println!("registry edit -> traffic moved in {}", ms(latency));

    pod.envoy.assert_no_rejected_updates();
    pod.pilotfish.wait_synced_without_nack(pod.envoy.node_id());
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
