//! HTTP features of VirtualService rules, each proved by what the client and
//! the backend see on real requests through Envoy: redirects, rewrites,
//! header changes, CORS, mirroring and direct responses.

mod support;

use support::behaviours::{Behaviour, echo};
use support::traffic::{self, REVIEWS_V1, REVIEWS_V2, assert_clean};
use support::{PROPAGATION, Pod, Request, Response, bookinfo, wait_until};

fn start(name: &str, virtual_service: &str) -> Pod {
    traffic::start_reviews_pod(name, virtual_service, &[("v1", 1), ("v2", 1)])
}

fn reviews(path: &str) -> Request {
    bookinfo::reviews().path(path)
}

/// The request as the backend that answered saw it.
fn seen_by_backend(response: &Response) -> support::behaviours::SeenRequest {
    echo(response).unwrap_or_else(|| panic!("no backend answered: {response:?}"))
}

const REDIRECTS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /old}
    redirect:
      uri: /new
      authority: reviews.example.com
  - match:
    - uri: {exact: /moved}
    redirect:
      uri: /elsewhere
      redirectCode: 302
  - route:
    - destination: {host: reviews, subset: v1}
"#;

#[test]
fn redirect_answers_301_by_default_and_302_when_configured_with_the_location_set() {
    let pod = start("redirect", REDIRECTS);

    let permanent = pod.send(&reviews("/old/page"));
    println!(
        "/old/page -> {} Location {:?}",
        permanent.status,
        permanent.header("location")
    );
    assert_eq!(permanent.status, 301, "{permanent:?}");
    assert_eq!(
        permanent.header("location"),
        Some("http://reviews.example.com/new"),
        "uri replaces the whole path, authority the host"
    );

    let found = pod.send(&reviews("/moved"));
    println!(
        "/moved -> {} Location {:?}",
        found.status,
        found.header("location")
    );
    assert_eq!(found.status, 302, "{found:?}");
    assert_eq!(
        found.header("location"),
        Some("http://reviews:9080/elsewhere"),
        "without authority the request's host is kept"
    );

    // Envoy answered both itself; other paths still reach the backend.
    let v1 = pod.backends.at(REVIEWS_V1);
    assert_eq!(v1.attempts(), 0, "a redirect reached the backend");
    assert_eq!(pod.send(&reviews("/older")).status, 301, "prefix match");
    assert_eq!(pod.send(&reviews("/moved/x")).outcome(), "reviews v1");
    assert_eq!(v1.attempts(), 1);
    assert_clean(&pod);
}

const REWRITES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /api/}
    rewrite:
      uri: /v1/
      authority: reviews-internal.example
    route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: v2}
"#;

#[test]
fn rewrite_replaces_the_uri_prefix_and_authority_the_backend_sees() {
    let pod = start("rewrite", REWRITES);

    let response = pod.send(&reviews("/api/reviews/7?full=1"));
    assert_eq!(response.outcome(), "reviews v1", "{response:?}");
    let seen = seen_by_backend(&response);
    println!(
        "/api/reviews/7?full=1 -> backend saw {} with Host {}",
        seen.path, seen.host
    );
    assert_eq!(seen.path, "/v1/reviews/7?full=1");
    assert_eq!(seen.host, "reviews-internal.example");

    // The other rule rewrites nothing.
    let plain = pod.send(&reviews("/reviews/7"));
    assert_eq!(plain.outcome(), "reviews v2", "{plain:?}");
    let seen = seen_by_backend(&plain);
    assert_eq!(
        (seen.path.as_str(), seen.host.as_str()),
        ("/reviews/7", "reviews:9080")
    );
    assert_clean(&pod);
}

const HEADER_RULES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - headers:
      request:
        set: {x-set: by-rule}
        add: {x-added: by-rule}
        remove: [x-secret]
      response:
        set: {x-response-set: by-rule}
        add: {x-response-added: by-rule}
        remove: [x-backend-internal]
    route:
    - destination: {host: reviews, subset: v1}
      headers:
        request:
          set: {x-destination: v1}
"#;

#[test]
fn header_rules_set_add_and_remove_headers_on_requests_and_responses() {
    let pod = start("headers", HEADER_RULES);
    pod.backends.at(REVIEWS_V1).behave(
        Behaviour::healthy()
            .with_response_header("x-backend-internal", "leak")
            .with_response_header("x-response-set", "by-backend")
            .with_response_header("x-response-added", "by-backend"),
    );
    let request = bookinfo::reviews()
        .header("x-set", "by-client")
        .header("x-added", "by-client")
        .header("x-secret", "s3cret");
    let response = pod.send(&request);
    assert_eq!(response.outcome(), "reviews v1", "{response:?}");

    let seen = seen_by_backend(&response);
    println!("backend saw headers {:?}", seen.headers);
    println!("client saw headers {:?}", response.headers);
    assert_eq!(seen.header_values("x-set"), ["by-rule"], "set overwrites");
    assert_eq!(
        seen.header_values("x-added"),
        ["by-client", "by-rule"],
        "add appends"
    );
    assert_eq!(seen.header("x-secret"), None, "remove strips the header");
    assert_eq!(
        seen.header_values("x-destination"),
        ["v1"],
        "the destination's own headers apply too"
    );

    let values = |name: &str| -> Vec<&str> {
        response
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("x-response-set"), ["by-rule"], "set overwrites");
    assert_eq!(
        values("x-response-added"),
        ["by-backend", "by-rule"],
        "add appends"
    );
    assert!(
        values("x-backend-internal").is_empty(),
        "remove strips the response header"
    );
    assert_clean(&pod);
}

const CORS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - corsPolicy:
      allowOrigins:
      - exact: https://shop.example
      allowMethods: [GET, POST]
      allowHeaders: [x-user]
      maxAge: 24h
    route:
    - destination: {host: reviews, subset: v1}
"#;

fn preflight(origin: &str) -> Request {
    bookinfo::reviews()
        .method("OPTIONS")
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "x-user")
}

#[test]
fn cors_preflight_is_answered_for_an_allowed_origin_and_not_for_another() {
    let pod = start("cors", CORS);
    let v1 = pod.backends.at(REVIEWS_V1);

    let allowed = pod.send(&preflight("https://shop.example"));
    println!(
        "preflight from allowed origin: {} {:?}",
        allowed.status, allowed.headers
    );
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    assert_eq!(
        allowed.header("access-control-allow-methods"),
        Some("GET,POST")
    );
    assert_eq!(
        allowed.header("access-control-allow-headers"),
        Some("x-user")
    );
    assert_eq!(allowed.header("access-control-max-age"), Some("86400"));
    assert_eq!(v1.attempts(), 0, "Envoy answers the preflight itself");

    let other = pod.send(&preflight("https://evil.example"));
    println!(
        "preflight from another origin: {} {:?}",
        other.status, other.headers
    );
    assert_eq!(
        other.header("access-control-allow-origin"),
        None,
        "{other:?}"
    );
    assert_eq!(
        other.header("access-control-allow-methods"),
        None,
        "{other:?}"
    );

    // Actual (non-preflight) requests: the allowed origin is echoed back.
    let get = |origin: &str| pod.send(&bookinfo::reviews().header("Origin", origin));
    let ok = get("https://shop.example");
    assert_eq!(ok.outcome(), "reviews v1");
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://shop.example")
    );
    let refused = get("https://evil.example");
    assert_eq!(refused.outcome(), "reviews v1");
    assert_eq!(refused.header("access-control-allow-origin"), None);
    assert_clean(&pod);
}

const MIRROR: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 100}
"#;

#[test]
fn mirror_copies_every_request_to_v2_while_v1_answers_the_client() {
    const N: usize = 100;
    let pod = start("mirror", MIRROR);
    let (v1, v2) = (pod.backends.at(REVIEWS_V1), pod.backends.at(REVIEWS_V2));
    let tally = pod.tally(N, &reviews("/mirrored"));
    tally.assert_all("reviews v1", "the primary answers every request");
    // Mirrored copies are fire-and-forget: wait for the last ones to land.
    wait_until(&format!("{N} copies at v2"), PROPAGATION, || {
        match v2.attempts() {
            n if n >= N as u64 => Ok(()),
            n => Err(format!("{n} copies so far")),
        }
    });
    let copies = v2.seen();
    println!(
        "mirror 100%: client {tally}; v1 served {}, v2 received {} copies (Host {:?})",
        v1.attempts(),
        copies.len(),
        copies.first().map(|c| c.host.as_str())
    );
    assert_eq!(copies.len(), N);
    assert_eq!(v1.attempts(), N as u64);
    for copy in &copies {
        assert_eq!(copy.path, "/mirrored");
        // Envoy marks shadowed requests by suffixing the host.
        assert!(copy.host.contains("-shadow"), "copy Host {}", copy.host);
    }
    assert_clean(&pod);
}

const DIRECT_RESPONSE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {prefix: /maintenance}
    directResponse:
      status: 503
      body:
        string: "reviews is down for maintenance"
  - match:
    - uri: {exact: /teapot}
    directResponse:
      status: 418
  - route:
    - destination: {host: reviews, subset: v1}
"#;

#[test]
fn direct_response_puts_the_configured_status_and_body_on_the_wire() {
    let pod = start("direct-response", DIRECT_RESPONSE);
    let maintenance = pod.send(&reviews("/maintenance/now"));
    println!("direct response: {maintenance:?}");
    assert_eq!(maintenance.status, 503);
    assert_eq!(maintenance.body, "reviews is down for maintenance");
    let teapot = pod.send(&reviews("/teapot"));
    assert_eq!(teapot.status, 418, "{teapot:?}");
    assert_eq!(teapot.body, "");
    let v1 = pod.backends.at(REVIEWS_V1);
    assert_eq!(v1.attempts(), 0, "Envoy answered without the backend");
    assert_eq!(pod.send(&reviews("/")).outcome(), "reviews v1");
    assert_clean(&pod);
}
