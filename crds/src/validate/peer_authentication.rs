//! PeerAuthentication checks, as Istio's webhook makes them.

use super::Report;
use crate::peer_authentication::PeerAuthenticationSpec;

pub(super) fn check(spec: &PeerAuthenticationSpec, r: &mut Report) {
    let selector = spec.selector.as_ref();
    if let Some(selector) = selector {
        r.match_labels("spec.selector", &selector.match_labels);
    }
    // A namespace- or mesh-wide policy has no workload whose ports it could name.
    let selects_workloads = selector.is_some_and(|s| !s.match_labels.is_empty());
    if !spec.port_level_mtls.is_empty() && !selects_workloads {
        r.error(
            "spec.portLevelMtls",
            "portLevelMtls requires a selector with matchLabels (a mesh- or namespace-wide policy cannot set port-level mTLS)",
        );
    }
    for port in spec.port_level_mtls.keys() {
        let field = format!("spec.portLevelMtls.{port}");
        match port.parse::<u32>() {
            Ok(number) => r.port(&field, Some(number)),
            Err(_) => r.error(field, format!("{port:?} is not a port number (1..=65535)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::{assert_one, errors_of, fields};

    fn pa(spec: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: pa}}\nspec:\n{spec}"
        )
    }

    #[test]
    fn valid_policies_pass() {
        for spec in [
            "  mtls: {mode: STRICT}\n",
            "  selector: {matchLabels: {app: reviews}}\n  mtls: {mode: PERMISSIVE}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n    \"9080\": {mode: STRICT}\n",
        ] {
            let errors = errors_of(&pa(spec));
            assert!(errors.is_empty(), "{spec}: {errors:?}");
        }
    }

    #[test]
    fn port_level_mtls_needs_a_selector() {
        assert_one(
            &pa("  portLevelMtls:\n    8080: {mode: DISABLE}\n"),
            "spec.portLevelMtls",
            "requires a selector",
        );
        assert_one(
            &pa("  selector: {matchLabels: {}}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n"),
            "spec.portLevelMtls",
            "requires a selector",
        );
    }

    #[test]
    fn port_level_ports_are_1_to_65535() {
        let with_ports = |ports: &str| {
            pa(&format!(
                "  selector: {{matchLabels: {{app: r}}}}\n  portLevelMtls:\n{ports}"
            ))
        };
        let got = fields(&errors_of(&with_ports(
            "    0: {mode: DISABLE}\n    65536: {mode: DISABLE}\n    http: {mode: DISABLE}\n",
        )));
        let paths: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.portLevelMtls.0",
                "spec.portLevelMtls.65536",
                "spec.portLevelMtls.http"
            ],
            "{got:?}"
        );
    }

    #[test]
    fn selector_labels_take_no_wildcards() {
        assert_one(
            &pa("  selector: {matchLabels: {app: \"rev*\"}}\n"),
            "spec.selector.matchLabels.app",
            "wildcard",
        );
    }
}
