//! DestinationRule `consistentHash.httpHeaderName`, proved on real requests
//! through Envoy over reviews' three endpoints: a header value always lands
//! on the same endpoint, and different values spread over several.

mod support;

use std::collections::BTreeMap;

use support::bookinfo;
use support::traffic::{self, REVIEWS_ALL_ENDPOINTS, assert_clean};

const HASH_ON_X_USER: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
  - name: v3
    labels: {version: v3}
"#;

const USERS: usize = 12;
const REQUESTS_PER_USER: usize = 50;

/// Sends 50 requests for each of 12 `x-user` values; checks each value
/// sticks to one endpoint and the values use more than one. Returns
/// endpoint => users.
fn assert_sticky_and_spread(pod: &support::Pod) -> BTreeMap<String, Vec<String>> {
    let mut placement: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..USERS {
        let user = format!("user-{i}");
        let tally = pod.tally(
            REQUESTS_PER_USER,
            &bookinfo::reviews().header("x-user", &user),
        );
        assert_eq!(
            tally.counts.len(),
            1,
            "x-user: {user} went to several endpoints: {tally}"
        );
        let (endpoint, _) = tally.counts.iter().next().expect("one outcome");
        assert!(endpoint.starts_with("reviews v"), "x-user: {user}: {tally}");
        placement.entry(endpoint.clone()).or_default().push(user);
    }
    assert!(
        placement.len() > 1,
        "all {USERS} users hashed to one endpoint: {placement:?}"
    );
    placement
}

#[test]
fn header_hash_pins_each_x_user_to_one_endpoint_and_spreads_users_over_several() {
    let pod =
        traffic::reviews_pod("hash-header", HASH_ON_X_USER, Some(REVIEWS_ALL_ENDPOINTS)).start();
    traffic::wait_reviews_served(&pod, &[("", 3)]);
    let placement = assert_sticky_and_spread(&pod);
    // Without the header there is nothing to hash: requests spread.
    let anonymous = pod.tally(60, &bookinfo::reviews());
    println!(
        "x-user placement ({REQUESTS_PER_USER} requests each): {placement:?}; no header: {anonymous}"
    );
    assert!(
        anonymous.counts.len() > 1,
        "requests without x-user all went to one endpoint: {anonymous}"
    );
    assert_clean(&pod);
}

#[test]
fn header_hash_also_applies_on_the_default_route_without_virtual_service() {
    let pod = traffic::reviews_pod("hash-default-route", HASH_ON_X_USER, None).start();
    traffic::wait_reviews_served(&pod, &[("", 3)]);
    let placement = assert_sticky_and_spread(&pod);
    println!("x-user placement without VirtualService: {placement:?}");
    assert_clean(&pod);
}
