//! Config that pilotfish accepts but a proxy's Envoy rejects (NACK). The
//! pod's Envoy gets a stricter runtime than pilotfish's bootstrap (Envoy's
//! default RE2 program size limit, 100), so a VirtualService with a larger,
//! valid regex makes it reject the port's whole route configuration. The
//! bad object must be named and left out, so that every other route on the
//! port keeps updating, and come back once it is fixed.

mod support;

use support::bookinfo::{self, REVIEWS_VS_FILE};
use support::{PROPAGATION, Pod, Request, wait_until};

/// Envoy's own default, below the 32768 pilotfish's bootstrap sets.
const STRICT_RE2_PROGRAM_SIZE: u64 = 100;

const BAD_VS_FILE: &str = "ratings-by-path.yaml";

/// Requests for ratings whose path matches `regex` go to details instead.
fn ratings_by_path(regex: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings-by-path}}
spec:
  hosts: [ratings]
  http:
  - match: [{{uri: {{regex: "{regex}"}}}}]
    route: [{{destination: {{host: details}}}}]
  - route: [{{destination: {{host: ratings}}}}]
"#
    )
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
    let pod = bookinfo::pod("rejected-config")
        .envoy_runtime(
            "re2.max_program_size.error_level",
            STRICT_RE2_PROGRAM_SIZE,
        )
        .start();
    bookinfo::wait_served(&pod);

    pod.write_config(BAD_VS_FILE, &ratings_by_path(LARGE_REGEX));
    wait_rejected_routes(&pod);

    // Another VirtualService on the same port (9080) changes: it reaches
    // Envoy although the bad one shares its route configuration.
    pod.write_config(
        REVIEWS_VS_FILE,
        &bookinfo::reviews_weighted(&[("v3", 100)]),
    );
    pod.wait_for_switch(&bookinfo::reviews(), "reviews v1", "reviews v3", PROPAGATION);
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
    wait_until("the rejection report to go away", PROPAGATION, || {
        let diagnostics = pod.pilotfish.diagnostics().to_string();
        match diagnostics.contains("rejected by Envoy") {
            true => Err(diagnostics),
            false => Ok(()),
        }
    });
    pod.tally(20, &bookinfo::reviews())
        .assert_all("reviews v3", "reviews after the fix");
}
