//! `exportTo` and selector semantics: what a proxy may see.

use std::collections::BTreeMap;

/// An object of `owner_namespace` exported to `export_to` is visible from
/// `proxy_namespace` when the list is empty, holds `*`, the proxy namespace,
/// or `.` (the owner's own namespace) and the proxy lives there.
pub fn is_exported(export_to: &[String], owner_namespace: &str, proxy_namespace: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|entry| match entry.as_str() {
            "*" => true,
            "." => owner_namespace == proxy_namespace,
            ns => ns == proxy_namespace,
        })
}

/// Whether every `selector` label is present with the same value in `labels`.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn export_to_semantics() {
        assert!(is_exported(&[], "a", "b"));
        assert!(is_exported(&list(&["*"]), "a", "b"));
        assert!(is_exported(&list(&["."]), "a", "a"));
        assert!(!is_exported(&list(&["."]), "a", "b"));
        assert!(is_exported(&list(&["b"]), "a", "b"));
        assert!(!is_exported(&list(&["c"]), "a", "b"));
        assert!(!is_exported(&list(&["~"]), "a", "a"));
    }

    #[test]
    fn selector_is_a_subset_of_labels() {
        let labels: BTreeMap<_, _> = [
            ("app".to_string(), "x".to_string()),
            ("v".to_string(), "1".to_string()),
        ]
        .into();
        let selector: BTreeMap<_, _> = [("app".to_string(), "x".to_string())].into();
        assert!(labels_match(&selector, &labels));
        assert!(labels_match(&BTreeMap::new(), &labels));
        assert!(!labels_match(&labels, &selector));
    }
}
