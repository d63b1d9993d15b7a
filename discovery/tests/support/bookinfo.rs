//! The Bookinfo mesh of testdata/bookinfo, which most tests start from.

use super::pod::{Pod, PodBuilder};
use super::{Request, outbound_cluster, repo_path};

pub const PORT: u16 = 9080;
pub const PRODUCTPAGE_VIP: &str = "127.1.0.10:9080";
pub const DETAILS_VIP: &str = "127.1.0.20:9080";
pub const REVIEWS_VIP: &str = "127.1.0.30:9080";
pub const RATINGS_VIP: &str = "127.1.0.40:9080";
/// The config file holding the `reviews` VirtualService; tests replace it.
pub const REVIEWS_VS_FILE: &str = "reviews-jason-v2.yaml";

/// Service short name and the subsets its DestinationRule defines.
pub const SERVICES: [(&str, &[&str]); 4] = [
    ("productpage", &["v1"]),
    ("details", &["v1"]),
    ("reviews", &["v1", "v2", "v3"]),
    ("ratings", &["v1"]),
];

pub fn fqdn(service: &str) -> String {
    format!("{service}.default.svc.cluster.local")
}

/// A pod serving testdata/bookinfo as it is.
pub fn pod(name: &str) -> PodBuilder {
    Pod::builder(name)
        .registry_from("testdata/bookinfo/registry.yaml")
        .config_from("testdata/bookinfo/config")
}

/// Waits until Envoy has the `9080` routes and every Bookinfo cluster,
/// subsets included, with its endpoints.
pub fn wait_served(pod: &Pod) {
    for (service, subsets) in SERVICES {
        let host = fqdn(service);
        pod.envoy.wait_route_domain(&PORT.to_string(), &host);
        pod.envoy
            .wait_cluster(&outbound_cluster(PORT, "", &host), 1);
        for subset in subsets {
            pod.envoy
                .wait_cluster(&outbound_cluster(PORT, subset, &host), 1);
        }
    }
}

/// `GET /` to reviews through its VIP.
pub fn reviews() -> Request {
    Request::get(REVIEWS_VIP, "reviews:9080")
}

/// A VirtualService sending all of reviews to weighted subsets.
pub fn reviews_weighted(weights: &[(&str, u32)]) -> String {
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n",
    );
    for (subset, weight) in weights {
        yaml.push_str(&format!(
            "    - destination: {{host: reviews, subset: {subset}}}\n      weight: {weight}\n"
        ));
    }
    yaml
}

/// The registry field [`registry_and_misspelt`] breaks, as pilotfish names it.
pub const MISSPELT_REGISTRY_FIELD: &str = "services[2].adresses";

/// The Bookinfo registry file, and the same file with a misspelt field in
/// reviews (its third service), which fails to parse.
pub fn registry_and_misspelt() -> (String, String) {
    let good = std::fs::read_to_string(repo_path("testdata/bookinfo/registry.yaml"))
        .expect("Bookinfo registry");
    let broken = good.replace("addresses: [127.1.0.30]", "adresses: [127.1.0.30]");
    assert_ne!(broken, good, "the Bookinfo registry changed shape");
    (good, broken)
}
