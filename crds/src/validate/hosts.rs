//! Host names as Istio accepts them: DNS-1123 labels in lower case, a
//! wildcard only as the whole first label, a trailing dot allowed, and a
//! top-level label that is not all digits (so `10.0.0.5` is an IP address,
//! accepted only where Istio accepts addresses).

use std::net::IpAddr;

use super::{Report, is_dns1123_label};

/// Istio's longest host name.
const MAX_HOST: usize = 255;

/// `Ok` for `reviews`, `reviews.default.svc.cluster.local`, `*`,
/// `*.example.com`; the reason otherwise.
pub fn wildcard_domain(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host must not be empty".into());
    }
    if host.len() > MAX_HOST {
        return Err(format!("host is longer than {MAX_HOST} characters"));
    }
    let (first, rest) = match host.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (host, None),
    };
    if first != "*" && !is_dns1123_label(first) {
        return Err(format!(
            "{host:?} is not a valid host (label {first:?}: lower-case letters, digits and '-', or '*' as the whole first label)"
        ));
    }
    let Some(rest) = rest else {
        return Ok(());
    };
    if rest.is_empty() || rest == "." {
        return Err(format!(
            "{host:?} is not a valid host (nothing after the first label)"
        ));
    }
    let labels: Vec<&str> = rest.split('.').collect();
    let last = labels.len() - 1;
    for (i, label) in labels.iter().enumerate() {
        // `istio.io.` is a fully qualified name.
        if i == last && label.is_empty() {
            break;
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "{host:?} is not a valid host (label {label:?}: lower-case letters, digits and '-')"
            ));
        }
    }
    let top = labels.iter().rev().find(|l| !l.is_empty()).copied();
    if top.is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!(
            "{host:?} is not a valid host (the top-level label is all digits)"
        ));
    }
    Ok(())
}

/// A host name or an IP address (VirtualService and DestinationRule hosts).
pub fn host_or_ip(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    wildcard_domain(host)
}

/// Istio's `SubsetOf`: every name `sub` matches is matched by `of`.
pub fn is_subset_of(sub: &str, of: &str) -> bool {
    if sub == of {
        return true;
    }
    match of.strip_prefix('*') {
        Some(of_suffix) => match sub.strip_prefix('*') {
            Some(sub_suffix) => sub_suffix.ends_with(of_suffix),
            None => sub.ends_with(of_suffix),
        },
        None => false,
    }
}

/// A Gateway server host: `[namespace/]host`, where the namespace is a
/// DNS label, `.` (the Gateway's own) or `*` (any).
pub fn gateway_host(host: &str) -> Result<(), String> {
    let (namespace, name) = match host.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, host),
    };
    if let Some(ns) = namespace
        && ns != "."
        && ns != "*"
        && !is_dns1123_label(ns)
    {
        return Err(format!(
            "{host:?}: namespace {ns:?} must be '.', '*' or a namespace name"
        ));
    }
    wildcard_domain(name)
}

impl Report {
    pub(super) fn host(&mut self, field: &str, host: &str, check: fn(&str) -> Result<(), String>) {
        if let Err(e) = check(host) {
            self.error(field, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_follow_istios_rules() {
        for ok in [
            "reviews",
            "reviews.default.svc.cluster.local",
            "*",
            "*.example.com",
            "istio.io.",
            "a-b.c1",
        ] {
            assert_eq!(wildcard_domain(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "UPPER.example.com",
            "a..b",
            "ünï.example.com",
            "-bad-.com",
            "a*b.com",
            "*.",
            "host:80",
            "with space.com",
            "*.*.example.com",
            "10.0.0.5",
        ] {
            assert!(wildcard_domain(bad).is_err(), "{bad} must be refused");
        }
        assert_eq!(host_or_ip("10.0.0.5"), Ok(()));
        assert_eq!(host_or_ip("fd00::1"), Ok(()));
        assert!(wildcard_domain(&format!("{}.com", "a.".repeat(130))).is_err());
    }

    #[test]
    fn gateway_hosts_take_a_namespace_prefix() {
        for ok in [
            "*/*",
            "./*",
            "default/reviews",
            "*/api.example.com",
            "bookinfo.com",
        ] {
            assert_eq!(gateway_host(ok), Ok(()), "{ok}");
        }
        for bad in ["a/b/c", "Bad_NS/x.com", "/x.com", "ns/"] {
            assert!(gateway_host(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn subsets_follow_wildcards() {
        assert!(is_subset_of("a.example.com", "*.example.com"));
        assert!(is_subset_of("*.a.example.com", "*.example.com"));
        assert!(is_subset_of("*", "*"));
        assert!(!is_subset_of("*", "*.example.com"));
        assert!(!is_subset_of("example.com", "*.example.com"));
        assert!(!is_subset_of("b.com", "a.com"));
    }
}
