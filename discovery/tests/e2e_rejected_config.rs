//! Config that pilotfish accepts but a proxy's Envoy rejects (NACK). The
//! pod's Envoy gets a stricter runtime than pilotfish's bootstrap (Envoy's
//! default RE2 program size limit, 100), so a VirtualService with a larger,
//! valid regex makes it reject the port's whole route configuration. The
//! bad object must be named and left out, so that every other route on the
//! port keeps updating, and come back once it is fixed.

mod support;

use support::bookinfo::{self, REVIEWS_VS_FILE};
use support::{PROPAGATION, Pod, Request, secure_xds, wait_until};

/// Envoy's own default, below the 32768 pilotfish's bootstrap sets.
const STRICT_RE2_PROGRAM_SIZE: u64 = 100;

const BAD_VS_FILE: &str = "ratings-by-path.yaml";

/// VirtualService `<service>-by-path`: requests for `service` whose path
/// matches `regex` go to `other` instead.
fn by_path(service: &str, other: &str, regex: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {service}-by-path}}
spec:
  hosts: [{service}]
  http:
  - match: [{{uri: {{regex: "{regex}"}}}}]
    route: [{{destination: {{host: {other}}}}}]
  - route: [{{destination: {{host: {service}}}}}]
"#
    )
}

fn ratings_by_path(regex: &str) -> String {
    by_path("ratings", "details", regex)
}

/// A pod whose Envoy rejects regexes larger than Envoy's default limit,
/// with pilotfish leaving out what such a rejection is down to.
fn strict_envoy_pod(name: &str) -> Pod {
    let mut pod = bookinfo::pod(name)
        .envoy_runtime("re2.max_program_size.error_level", STRICT_RE2_PROGRAM_SIZE);
    // Rejections leave config out when they come from proxies with a
    // verified identity (the secure port); on plaintext, only if allowed.
    if !secure_xds::enabled_for_suite() {
        pod = pod.pilotfish_arg("--quarantine-rejected-config=any");
    }
    let pod = pod.start();
    bookinfo::wait_served(&pod);
    pod
}

/// The rejections pilotfish shows for connected proxies.
fn rejected_by_proxies(pod: &Pod) -> Vec<serde_json::Value> {
    let diagnostics = pod.pilotfish.diagnostics();
    diagnostics["rejected_by_proxies"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A valid RE2 regex whose program is well over 100 instructions.
const LARGE_REGEX: &str = "/api/(users|orders|products|payments)/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/.*";
const SMALL_REGEX: &str = "/fixed.*";

/// Panics unless `entry` (a diagnostic as JSON text) names all of `parts`.
fn assert_names(entry: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            entry.contains(part),
            "diagnostic should name {part:?}: {entry}"
        );
    }
}

fn ratings(path: &str) -> Request {
    Request::get(bookinfo::RATINGS_VIP, "ratings").path(path)
}

/// Waits until Envoy has counted a rejected route configuration update.
fn wait_rejected_routes(pod: &Pod) {
    wait_until("Envoy to reject a route update", PROPAGATION, || {
        let rejected = pod.envoy.rejected_updates();
        match rejected.keys().any(|stat| stat.contains(".rds.")) {
            true => Ok(()),
            false => Err(format!("rejected so far: {rejected:?}")),
        }
    });
}

#[test]
fn a_virtual_service_envoy_rejects_is_left_out_so_the_rest_of_its_port_keeps_updating() {
    let pod = strict_envoy_pod("rejected-config");

    pod.write_config(BAD_VS_FILE, &ratings_by_path(LARGE_REGEX));
    wait_rejected_routes(&pod);

    // Another VirtualService on the same port (9080) changes: it reaches
    // Envoy although the bad one shares its route configuration.
    pod.write_config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v3", 100)]));
    pod.wait_for_switch(
        &bookinfo::reviews(),
        "reviews v1",
        "reviews v3",
        PROPAGATION,
    );
    pod.tally(20, &bookinfo::reviews())
        .assert_all("reviews v3", "reviews after its edit");

    let reported = pod.pilotfish.wait_diagnostic("rejected by Envoy");
    assert_names(
        &reported,
        &[
            "VirtualService default/ratings-by-path",
            BAD_VS_FILE,
            pod.envoy.node_id(),
            "program size",
            "left out of pushes until it changes",
        ],
    );
    println!("reported: {reported}");
    // Later edits on the port keep flowing while the object is left out.
    pod.write_config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v2", 100)]));
    pod.wait_for_switch(
        &bookinfo::reviews(),
        "reviews v3",
        "reviews v2",
        PROPAGATION,
    );
    let metrics = pod.pilotfish.metrics();
    assert!(
        metrics.contains("pilotfish_config_quarantined 1"),
        "one object left out: {metrics}"
    );
    // Left out: ratings is routed as if it had no VirtualService.
    pod.tally(10, &ratings("/fixed"))
        .assert_all("ratings v1", "ratings without the rejected VirtualService");

    // Fixed: the object is served again and the report goes away.
    pod.write_config(BAD_VS_FILE, &ratings_by_path(SMALL_REGEX));
    pod.wait_for_switch(&ratings("/fixed"), "ratings v1", "details v1", PROPAGATION);
    pod.tally(10, &ratings("/other"))
        .assert_all("ratings v1", "ratings for other paths");
    wait_until("the rejection reports to go away", PROPAGATION, || {
        let diagnostics = pod.pilotfish.diagnostics().to_string();
        match diagnostics.contains("rejected by Envoy") || !rejected_by_proxies(&pod).is_empty() {
            true => Err(diagnostics),
            false => Ok(()),
        }
    });
    let metrics = pod.pilotfish.metrics();
    for line in [
        "pilotfish_config_quarantined 0",
        "pilotfish_config_quarantines_total 1",
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
    pod.tally(20, &bookinfo::reviews())
        .assert_all("reviews v2", "reviews after the fix");
}

#[test]
fn two_objects_changed_in_one_rejected_update_are_both_named_and_neither_is_left_out() {
    let pod = strict_envoy_pod("rejected-pair");
    let both = format!(
        "{}---\n{}",
        by_path("ratings", "details", LARGE_REGEX),
        by_path("details", "ratings", LARGE_REGEX)
    );
    // Atomically: both objects appear in one generation.
    pod.replace_config("by-path.yaml", &both);
    wait_rejected_routes(&pod);

    let rejection = wait_until("the rejection in /debug/diagnostics", PROPAGATION, || {
        let rejected = rejected_by_proxies(&pod);
        rejected
            .first()
            .cloned()
            .ok_or_else(|| "no rejection shown yet".to_string())
    });
    println!("rejection: {rejection}");
    assert_eq!(rejection["proxy"], pod.envoy.node_id());
    assert_eq!(rejection["type"], "rds");
    let details = &rejection["rejection"];
    assert_eq!(details["resources"], serde_json::json!(["9080"]));
    assert_eq!(details["verdict"], "unattributed");
    assert_eq!(
        details["changed"],
        serde_json::json!([
            "VirtualService default/details-by-path",
            "VirtualService default/ratings-by-path"
        ])
    );
    assert_names(
        &details.to_string(),
        &["VirtualService default/reviews", "program size"],
    );
    let diagnostics = pod.pilotfish.diagnostics().to_string();
    assert!(
        !diagnostics.contains("rejected by Envoy"),
        "nothing is left out: {diagnostics}"
    );

    // Both fixed: accepted, and the report goes away.
    let fixed = format!(
        "{}---\n{}",
        by_path("ratings", "details", SMALL_REGEX),
        by_path("details", "ratings", SMALL_REGEX)
    );
    pod.replace_config("by-path.yaml", &fixed);
    pod.wait_for_switch(&ratings("/fixed"), "ratings v1", "details v1", PROPAGATION);
    wait_until(
        "the rejection to go away",
        PROPAGATION,
        || match rejected_by_proxies(&pod).as_slice() {
            [] => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let metrics = pod.pilotfish.metrics();
    assert!(
        metrics.contains("pilotfish_config_quarantines_total 0"),
        "{metrics}"
    );
}
