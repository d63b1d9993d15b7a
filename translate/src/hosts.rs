//! Host names: expanding short names from config, wildcard matching, and the
//! domains a service answers to in a route configuration.

use std::cmp::Reverse;

use pilotfish_model::Service;

use crate::names;

/// Expands a host written in a config object of `namespace`: `reviews`
/// becomes `reviews.<namespace>.svc.<suffix>`; names with dots and `*` stay
/// as written (lower-cased, since DNS names are case-insensitive).
pub fn resolve(host: &str, namespace: &str, domain_suffix: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    if host.contains('.') || host == "*" || host.is_empty() {
        host
    } else {
        format!("{host}.{namespace}.svc.{domain_suffix}")
    }
}

/// Whether `pattern` (an exact host, `*.example.com` or `*`) covers `hostname`.
pub fn matches(pattern: &str, hostname: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => hostname.len() > suffix.len() && hostname.ends_with(suffix),
        None => pattern == hostname,
    }
}

/// Sort key of a matching pattern: exact hosts first, then longer (more
/// specific) wildcards; `*` last.
pub fn specificity(pattern: &str) -> (bool, Reverse<usize>) {
    (pattern.starts_with('*'), Reverse(pattern.len()))
}

/// `(service, namespace)` of a Kubernetes-style `<svc>.<ns>.svc.<suffix>` host.
pub fn kubernetes_parts<'h>(hostname: &'h str, domain_suffix: &str) -> Option<(&'h str, &'h str)> {
    let rest = hostname
        .strip_suffix(domain_suffix)?
        .strip_suffix(".svc.")?;
    let (service, namespace) = rest.split_once('.')?;
    let valid = !service.is_empty() && !namespace.is_empty() && !namespace.contains('.');
    valid.then_some((service, namespace))
}

/// The names a workload in `proxy_namespace` may use for `service`: its
/// hostname (lowercase) and, for `<name>.<ns>.svc.<suffix>`, the shorter
/// forms Kubernetes' search path resolves (`<name>.<ns>.svc`,
/// `<name>.<ns>`, and `<name>` within its own namespace).
pub fn names(service: &Service, proxy_namespace: &str, domain_suffix: &str) -> Vec<String> {
    let host = service.hostname.to_ascii_lowercase();
    let mut names = vec![host.clone()];
    if let Some((svc, ns)) = kubernetes_parts(&host, domain_suffix) {
        names.push(format!("{svc}.{ns}.svc"));
        names.push(format!("{svc}.{ns}"));
        if ns == proxy_namespace {
            names.push(svc.to_string());
        }
    }
    names
}

/// Istio's domain set for a service port, as seen from `proxy_namespace`:
/// the FQDN, the shorter Kubernetes forms (the bare name only from the same
/// namespace), and every VIP, each also with `:port`.
pub fn domains(
    service: &Service,
    port: u16,
    proxy_namespace: &str,
    domain_suffix: &str,
) -> Vec<String> {
    let names = names(service, proxy_namespace, domain_suffix);
    let mut out = Vec::with_capacity(names.len() * 2 + service.vips.len() * 2);
    for name in names {
        let with_port = names::host_port(&name, port);
        out.push(name);
        out.push(with_port);
    }
    for vip in service.vips.iter().filter(|ip| !ip.is_unspecified()) {
        out.push(match vip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        });
        out.push(names::host_port(vip, port));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::service;
    use pilotfish_model::Protocol;

    #[test]
    fn short_names_resolve_against_the_config_namespace() {
        assert_eq!(
            resolve("reviews", "default", "cluster.local"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resolve("db.service.consul", "default", "cluster.local"),
            "db.service.consul"
        );
        assert_eq!(
            resolve("*.example.com", "default", "cluster.local"),
            "*.example.com"
        );
        assert_eq!(resolve("*", "default", "cluster.local"), "*");
    }

    #[test]
    fn wildcards_match_suffixes_only() {
        assert!(matches("*.example.com", "a.example.com"));
        assert!(!matches("*.example.com", "example.com"));
        assert!(matches("*", "anything"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "x.a.b"));
    }

    #[test]
    fn exact_hosts_are_more_specific_than_wildcards() {
        let mut patterns = vec!["*", "*.example.com", "a.example.com", "*.a.example.com"];
        patterns.sort_by_key(|p| specificity(p));
        assert_eq!(
            patterns,
            ["a.example.com", "*.a.example.com", "*.example.com", "*"]
        );
    }

    #[test]
    fn domains_for_same_namespace_include_the_short_name() {
        let svc = service(
            "reviews.default.svc.cluster.local",
            &["10.0.0.5"],
            &[(9080, Protocol::Http)],
        );
        let got = domains(&svc, 9080, "default", "cluster.local");
        for expected in [
            "reviews.default.svc.cluster.local",
            "reviews.default.svc.cluster.local:9080",
            "reviews.default.svc",
            "reviews.default.svc:9080",
            "reviews.default",
            "reviews.default:9080",
            "reviews",
            "reviews:9080",
            "10.0.0.5",
            "10.0.0.5:9080",
        ] {
            assert!(
                got.contains(&expected.to_string()),
                "missing {expected} in {got:?}"
            );
        }
        assert_eq!(got.len(), 10);
    }

    #[test]
    fn domains_for_other_namespace_omit_the_short_name() {
        let svc = service(
            "reviews.default.svc.cluster.local",
            &[],
            &[(9080, Protocol::Http)],
        );
        let got = domains(&svc, 9080, "other", "cluster.local");
        assert!(!got.contains(&"reviews".to_string()));
        assert!(!got.contains(&"reviews:9080".to_string()));
        assert!(got.contains(&"reviews.default".to_string()));
        assert_eq!(got.len(), 6);
    }

    #[test]
    fn domains_of_non_kubernetes_hosts_are_the_fqdn_and_vips() {
        let svc = service("db.service.consul", &["fd00::1"], &[(80, Protocol::Http)]);
        let got = domains(&svc, 80, "default", "cluster.local");
        assert_eq!(
            got,
            [
                "db.service.consul",
                "db.service.consul:80",
                "[fd00::1]",
                "[fd00::1]:80"
            ]
        );
    }
}
