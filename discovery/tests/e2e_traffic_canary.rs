//! Canary releases with VirtualService weights, proved on real requests
//! through Envoy: a 90/10 split lands within binomial bounds, and moving
//! the weight to 100% v2 moves every later request, without failing any
//! on the way.

mod support;

use support::bookinfo;
use support::traffic::{self, REVIEWS_VS_FILE, assert_clean, ms, reviews_cluster};

const CANARY_90_10: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
"#;

const ALL_TO_V2: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v2}
      weight: 100
"#;

#[test]
fn canary_90_10_split_holds_over_1000_requests_then_promotion_sends_all_to_v2() {
    const N: usize = 1000;
    let pod = traffic::start_reviews_pod("canary", CANARY_90_10, &[("v1", 1), ("v2", 1)]);

    let split = pod.tally(N, &bookinfo::reviews());
    let v1 = split.share("reviews v1");
    println!("90/10 canary over {N} requests: {split}; v1 share {v1:.3}");
    // Binomial(n=1000, p=0.9): sigma = sqrt(0.9 * 0.1 / 1000) ~ 0.0095;
    // [0.86, 0.94] is about +-4 sigma (a false failure ~1 run in 15,000).
    split.assert_split(
        N,
        ("reviews v1", "reviews v2"),
        0.86..=0.94,
        "v1",
        "only v1 and v2 may answer, and every request must succeed: ",
    );

    // Promote v2. Until Envoy has the new route, requests keep going to v1
    // or v2 — none may fail while the update lands.
    pod.replace_config(REVIEWS_VS_FILE, ALL_TO_V2);
    let v2_only = reviews_cluster("v2");
    let mut during = support::Tally::default();
    let pushed = traffic::wait_reviews_routes(&pod, "reviews routed to v2 only", |vh| {
        let outcome = pod.send(&bookinfo::reviews()).outcome();
        during.add(outcome);
        vh.pointer("/routes/0/route/cluster")
            .and_then(|c| c.as_str())
            == Some(v2_only.as_str())
    });
    assert_eq!(
        during.count("reviews v1") + during.count("reviews v2"),
        during.total(),
        "a request failed while the promotion landed: {during}"
    );

    let after = pod.tally(200, &bookinfo::reviews());
    println!(
        "promotion reached Envoy in {} ({during} meanwhile); after it: {after}",
        ms(pushed)
    );
    after.assert_all("reviews v2", "after promoting v2 to 100%");
    assert_clean(&pod);
}
