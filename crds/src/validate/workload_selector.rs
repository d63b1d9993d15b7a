//! `selector.matchLabels` of the security kinds, as their CRDs' CEL rules
//! check it (the API server does; objects from files need it too).

use std::collections::BTreeMap;

use super::Report;

impl Report {
    /// No empty keys, no `*` in keys or values (a selector matches labels
    /// exactly; a wildcard would never match and hides a typo).
    pub(super) fn match_labels(&mut self, at: &str, labels: &BTreeMap<String, String>) {
        for (key, value) in labels {
            let field = format!("{at}.matchLabels.{key}");
            if key.is_empty() {
                self.error(field, "a label key must not be empty");
            } else if key.contains('*') {
                self.error(field, "wildcard not allowed in label key match");
            } else if value.contains('*') {
                self.error(field, "wildcard not allowed in label value match");
            }
        }
    }
}
