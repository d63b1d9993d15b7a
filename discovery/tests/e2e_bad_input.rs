//! Bad config files while a good config is being served: each is reported
//! in `/debug/diagnostics` with where it came from, traffic to everything
//! else keeps flowing, nothing reaches Envoy that it would reject, and what
//! was served before is not lost.

mod support;

use support::bookinfo::{self, MISSPELT_REGISTRY_FIELD, REVIEWS_VS_FILE};
use support::{PROPAGATION, Pod, Request};

const MALFORMED: &str =
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken\nspec: [\n";

const UNKNOWN_FIELD: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: details-typo
spec:
  host: details
  trafficPolicy:
    loadBalancer:
      simpel: ROUND_ROBIN
"#;

const MISSING_SUBSET: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings-v9
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings, subset: v9}
"#;

/// Panics unless `entry` (a diagnostic as JSON text) names all of `parts`.
fn assert_names(entry: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            entry.contains(part),
            "diagnostic should name {part:?}: {entry}"
        );
    }
}

/// The Bookinfo routing that was served before anything went wrong.
fn assert_bookinfo_still_served(pod: &Pod) {
    pod.tally(20, &bookinfo::reviews().header("end-user", "jason"))
        .assert_all("reviews v2", "jason");
    pod.tally(20, &bookinfo::reviews())
        .assert_all("reviews v1", "anonymous");
    pod.tally(10, &Request::get(bookinfo::DETAILS_VIP, "details"))
        .assert_all("details v1", "details");
    pod.tally(10, &Request::get(bookinfo::PRODUCTPAGE_VIP, "productpage"))
        .assert_all("productpage v1", "productpage");
}

#[test]
fn bad_files_are_diagnosed_while_the_rest_keeps_serving() {
    let pod = bookinfo::pod("bad-input").start();
    bookinfo::wait_served(&pod);
    assert_bookinfo_still_served(&pod);

    pod.write_config("broken.yaml", MALFORMED);
    pod.write_config("typo.yaml", UNKNOWN_FIELD);
    pod.write_config("ratings-v9.yaml", MISSING_SUBSET);

    let malformed = pod.pilotfish.wait_diagnostic("broken.yaml");
    println!("malformed YAML: {malformed}");
    let unknown = pod.pilotfish.wait_diagnostic("details-typo");
    assert_names(
        &unknown,
        &[
            "typo.yaml",
            "DestinationRule",
            "default",
            "spec.trafficPolicy.loadBalancer",
            "simpel",
        ],
    );
    let missing = pod.pilotfish.wait_diagnostic("ratings-v9");
    assert_names(
        &missing,
        &[
            "VirtualService",
            "default",
            "spec.http[0].route[0].destination.subset",
            "v9",
        ],
    );

    // The missing subset is a route to a cluster that does not exist: Envoy
    // accepts it and answers 503, as Istio's sidecars do.
    let ratings = Request::get(bookinfo::RATINGS_VIP, "ratings");
    let latency = pod.wait_for_switch(&ratings, "ratings v1", "status 503", PROPAGATION);
    pod.tally(20, &ratings)
        .assert_all("status 503", "ratings routed to missing subset v9");
    println!(
        "missing-subset route served (503) after {} ms",
        latency.as_millis()
    );

    assert_bookinfo_still_served(&pod);
    pod.envoy.assert_no_rejected_updates();
    pod.pilotfish.wait_synced_without_nack(pod.envoy.node_id());
}

/// Marks a point in pilotfish's processing: a VirtualService sending
/// requests with `x-marker: <n>` for productpage to details instead.
fn marker(n: u32) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: marker}}\nspec:\n  hosts: [productpage]\n  http:\n  - match: [{{headers: {{x-marker: {{exact: \"{n}\"}}}}}}]\n    route: [{{destination: {{host: details}}}}]\n  - route: [{{destination: {{host: productpage}}}}]\n"
    )
}

#[test]
fn a_served_file_turned_bad_keeps_its_last_good_config() {
    let pod = bookinfo::pod("last-good").start();
    bookinfo::wait_served(&pod);
    assert_bookinfo_still_served(&pod);

    pod.write_config(REVIEWS_VS_FILE, MALFORMED);
    pod.pilotfish.wait_diagnostic(REVIEWS_VS_FILE);
    // A valid edit made after the bad one: once Envoy routes by it, every
    // push that could have dropped the reviews VirtualService has happened.
    pod.write_config("marker.yaml", &marker(1));
    let probe = Request::get(bookinfo::PRODUCTPAGE_VIP, "productpage").header("x-marker", "1");
    pod.wait_for_switch(&probe, "productpage v1", "details v1", PROPAGATION);

    assert_bookinfo_still_served(&pod);
    pod.envoy.assert_no_rejected_updates();
}

#[test]
fn a_served_registry_file_turned_unparseable_keeps_its_last_good_services() {
    let pod = bookinfo::pod("registry-last-good").start();
    bookinfo::wait_served(&pod);
    assert_bookinfo_still_served(&pod);

    let (_, broken) = bookinfo::registry_and_misspelt();
    pod.write_registry(&broken);
    let problem = pod.pilotfish.wait_diagnostic(MISSPELT_REGISTRY_FIELD);
    assert_names(&problem, &["registry.yaml", "last good version"]);
    // Once Envoy routes by an edit made after the bad one, every push that
    // could have dropped the registry's services has happened.
    pod.write_config("marker.yaml", &marker(2));
    let probe = Request::get(bookinfo::PRODUCTPAGE_VIP, "productpage").header("x-marker", "2");
    pod.wait_for_switch(&probe, "productpage v1", "details v1", PROPAGATION);

    assert_bookinfo_still_served(&pod);
    assert_eq!(
        pod.pilotfish.get("/ready").map(|(status, _)| status),
        Ok(200),
        "a registry file that breaks while serving leaves pilotfish ready"
    );
    pod.envoy.assert_no_rejected_updates();
}
