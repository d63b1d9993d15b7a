//! HTTP routing through a real Envoy sidecar configured by pilotfish:
//! several services on one port told apart by Host, header and URI matches
//! (with `withoutHeaders`), and weighted splits, each checked by which
//! backend answered.

mod support;

use support::Request;
use support::bookinfo::{self, REVIEWS_VIP, REVIEWS_VS_FILE};

#[test]
fn host_header_picks_the_service_among_several_on_one_port() {
    let pod = bookinfo::pod("host-routing").start();
    bookinfo::wait_served(&pod);
    // Every request goes to the same destination (reviews' VIP, port 9080):
    // only the Host header can tell Envoy which service is meant.
    let cases = [
        ("productpage", "productpage v1"),
        ("details:9080", "details v1"),
        ("reviews.default.svc.cluster.local", "reviews v1"),
        ("ratings.default.svc.cluster.local:9080", "ratings v1"),
    ];
    for (host, expected) in cases {
        pod.tally(20, &Request::get(REVIEWS_VIP, host))
            .assert_all(expected, &format!("Host: {host}"));
    }
    // And each service through its own VIP.
    let vips = [
        (bookinfo::PRODUCTPAGE_VIP, "productpage", "productpage v1"),
        (bookinfo::DETAILS_VIP, "details", "details v1"),
        (bookinfo::RATINGS_VIP, "ratings", "ratings v1"),
    ];
    for (vip, host, expected) in vips {
        pod.tally(20, &Request::get(vip, host))
            .assert_all(expected, &format!("{host} via {vip}"));
    }
    pod.envoy.assert_no_rejected_updates();
}

#[test]
fn end_user_jason_header_routes_reviews_to_v2_and_everyone_else_to_v1() {
    let pod = bookinfo::pod("header-match").start();
    bookinfo::wait_served(&pod);
    let jason = pod.tally(50, &bookinfo::reviews().header("end-user", "jason"));
    jason.assert_all("reviews v2", "end-user: jason");
    let anonymous = pod.tally(50, &bookinfo::reviews());
    anonymous.assert_all("reviews v1", "no end-user header");
    // `exact` means exact: neither another case nor a longer value matches.
    for near_miss in ["Jason", "jason2"] {
        pod.tally(20, &bookinfo::reviews().header("end-user", near_miss))
            .assert_all("reviews v1", &format!("end-user: {near_miss}"));
    }
    println!("end-user: jason -> {jason}; no header -> {anonymous}");
    pod.envoy.assert_no_rejected_updates();
}

const REVIEWS_API_PREFIX: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - uri:
        prefix: /api/
    route:
    - destination: {host: reviews, subset: v3}
  - route:
    - destination: {host: reviews, subset: v1}
"#;

#[test]
fn uri_prefix_routes_api_paths_to_v3_and_other_paths_to_v1() {
    let pod = bookinfo::pod("uri-prefix")
        .config(REVIEWS_VS_FILE, REVIEWS_API_PREFIX)
        .start();
    bookinfo::wait_served(&pod);
    let cases = [
        ("/api/v1/reviews/0", "reviews v3"),
        ("/api/", "reviews v3"),
        ("/reviews/0", "reviews v1"),
        ("/api", "reviews v1"),
        ("/apiary", "reviews v1"),
        ("/", "reviews v1"),
    ];
    for (path, expected) in cases {
        let request = bookinfo::reviews().path(path);
        pod.tally(10, &request)
            .assert_all(expected, &format!("path {path}"));
        // No rewrite was asked for: the backend sees the path as sent.
        let answer = pod.send(&request).answer().expect("backend answer");
        assert_eq!(answer.path, path, "path seen by {}", answer.label());
    }
    pod.envoy.assert_no_rejected_updates();
}

const REVIEWS_WITHOUT_HEADERS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /plain}
      withoutHeaders: {x-debug: {}}
    route:
    - destination: {host: reviews, subset: v3}
  - match:
    - withoutHeaders: {x-tier: {exact: gold}}
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
"#;

/// `withoutHeaders` holds for a request that lacks the header, as in Istio
/// (Envoy alone never matches a missing header, even inverted).
#[test]
fn without_headers_matches_requests_lacking_the_header_or_with_another_value() {
    let pod = bookinfo::pod("without-headers")
        .config(REVIEWS_VS_FILE, REVIEWS_WITHOUT_HEADERS)
        .start();
    bookinfo::wait_served(&pod);
    let cases = [
        ("/plain", None, "reviews v3"),
        ("/plain", Some(("x-debug", "1")), "reviews v2"),
        ("/", None, "reviews v2"),
        ("/", Some(("x-tier", "silver")), "reviews v2"),
        ("/", Some(("x-tier", "gold")), "reviews v1"),
    ];
    for (path, header, expected) in cases {
        let mut request = bookinfo::reviews().path(path);
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        pod.tally(10, &request)
            .assert_all(expected, &format!("{path} with {header:?}"));
    }
    pod.envoy.assert_no_rejected_updates();
}

/// A VirtualService `name` sending all of reviews to `subset`, created at
/// `created` (none: a plain file's object).
fn reviews_vs(name: &str, created: Option<&str>, subset: &str) -> String {
    let created = created
        .map(|t| format!("\n  creationTimestamp: \"{t}\""))
        .unwrap_or_default();
    bookinfo::reviews_weighted(&[(subset, 100)])
        .replace("  name: reviews\n", &format!("  name: {name}{created}\n"))
}

/// Istio's precedence: the oldest VirtualService for a host wins, by
/// creation time compared as a time; an undated one ranks after dated ones.
#[test]
fn the_older_virtual_service_wins_by_time_not_by_text_and_undated_ones_rank_last() {
    let pod = bookinfo::pod("vs-precedence")
        .config(REVIEWS_VS_FILE, &reviews_vs("reviews-a", None, "v1"))
        .config(
            "reviews-b.yaml",
            &reviews_vs("reviews-b", Some("2024-01-01T00:00:00Z"), "v3"),
        )
        .config(
            "reviews-c.yaml",
            &reviews_vs("reviews-c", Some("2024-01-01T01:00:00+02:00"), "v2"),
        )
        .start();
    bookinfo::wait_served(&pod);
    pod.tally(20, &bookinfo::reviews())
        .assert_all("reviews v2", "oldest VirtualService (reviews-c)");
    pod.envoy.assert_no_rejected_updates();
}

#[test]
fn weighted_route_splits_80_20_over_1000_requests() {
    const N: usize = 1000;
    let vs = bookinfo::reviews_weighted(&[("v1", 80), ("v3", 20)]);
    let pod = bookinfo::pod("weights")
        .config(REVIEWS_VS_FILE, &vs)
        .start();
    bookinfo::wait_served(&pod);
    let tally = pod.tally(N, &bookinfo::reviews());
    println!(
        "80/20 split over {N} requests: {tally}; v1 share {:.3}",
        tally.share("reviews v1")
    );
    assert_eq!(
        tally.count("reviews v1") + tally.count("reviews v3"),
        N,
        "only v1 and v3 may answer: {tally}"
    );
    // Binomial(n=1000, p=0.8): sigma = sqrt(p(1-p)/n) ~ 0.0126, so +-0.05 is
    // about 4 sigma (a false failure about once in 15,000 runs).
    let v1 = tally.share("reviews v1");
    assert!(
        (0.75..=0.85).contains(&v1),
        "v1 share {v1:.3} outside [0.75, 0.85]: {tally}"
    );
    pod.envoy.assert_no_rejected_updates();
}
