//! Consul tags → endpoint labels.
//!
//! Consul has no labels, so (as in Istio 1.1) instance tags carry them:
//! `version|v1` and `version=v1` both become the label `version: v1`. The
//! tag is split at its first `|` or `=`, so the value keeps any later
//! separators (`a|b|c` → `a: b|c`). Plain tags (`primary`) and tags with an
//! empty key (`|v1`) are ignored: a plain tag is not a key/value pair, and
//! turning it into `primary: ""` could collide with a real label. When two
//! tags give the same key, the first one wins.

use crate::model::Labels;

/// Splits one tag into a label, or `None` for tags that are not `key|value`
/// or `key=value` with a non-empty key.
pub fn parse_tag(tag: &str) -> Option<(&str, &str)> {
    let at = tag.find(['|', '='])?;
    let (key, value) = (tag[..at].trim(), &tag[at + 1..]);
    if key.is_empty() {
        return None;
    }
    Some((key, value.trim()))
}

/// Labels from all of an instance's tags.
pub fn labels_from_tags<'a>(tags: impl IntoIterator<Item = &'a String>) -> Labels {
    let mut labels = Labels::new();
    for tag in tags {
        if let Some((key, value)) = parse_tag(tag) {
            labels
                .entry(key.to_string())
                .or_insert_with(|| value.to_string());
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipe_and_equals_tags_become_labels() {
        assert_eq!(parse_tag("version|v1"), Some(("version", "v1")));
        assert_eq!(parse_tag("version=v1"), Some(("version", "v1")));
        assert_eq!(parse_tag("zone = a "), Some(("zone", "a")));
        // An empty value is still a label: `canary|` says canary="".
        assert_eq!(parse_tag("canary|"), Some(("canary", "")));
    }

    #[test]
    fn plain_and_keyless_tags_are_ignored() {
        assert_eq!(parse_tag("primary"), None);
        assert_eq!(parse_tag(""), None);
        assert_eq!(parse_tag("|v1"), None);
        assert_eq!(parse_tag("=v1"), None);
        assert_eq!(parse_tag(" |v1"), None);
    }

    #[test]
    fn split_is_at_the_first_separator() {
        assert_eq!(parse_tag("a|b|c"), Some(("a", "b|c")));
        assert_eq!(parse_tag("a=b|c"), Some(("a", "b|c")));
        assert_eq!(parse_tag("a|b=c"), Some(("a", "b=c")));
    }

    #[test]
    fn labels_from_tags_first_key_wins() {
        let tags: Vec<String> = ["version|v1", "primary", "version=v2", "app=web", "|x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let labels = labels_from_tags(&tags);
        assert_eq!(labels.len(), 2);
        assert_eq!(labels["version"], "v1");
        assert_eq!(labels["app"], "web");
    }
}
