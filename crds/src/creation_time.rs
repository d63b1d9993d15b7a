//! Creation times as Istio orders objects by them: as instants, so that a
//! UTC offset or a fraction of a second compares as a time, not as text.
//!
//! The rule for an object without one (a plain file, or a registry that
//! does not record it): it ranks after every dated object, as if newest.
//! Istio reads a missing time as the zero time, which makes an undated file
//! outrank everything the API server recorded; here a file cannot claim to
//! be older than what Kubernetes saw created. Ties (and undated objects
//! among themselves) fall to namespace and name.

use std::cmp::Ordering;
use std::str::FromStr;

use jiff::Timestamp;

/// A creation time, ordered oldest first, missing last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreationTime(Option<Timestamp>);

impl CreationTime {
    /// Reads RFC 3339 text (`None`, or text that is not a time, is
    /// undated; loading rejects the latter with its field).
    pub fn of(text: Option<&str>) -> Self {
        CreationTime(text.and_then(|t| parse(t).ok()))
    }
}

/// Parses an RFC 3339 time, as Kubernetes writes `creationTimestamp`.
pub fn parse(text: &str) -> Result<Timestamp, String> {
    Timestamp::from_str(text.trim()).map_err(|e| format!("{text:?} is not an RFC 3339 time: {e}"))
}

impl Ord for CreationTime {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.0, other.0) {
            (Some(a), Some(b)) => a.cmp(&b),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
}

impl PartialOrd for CreationTime {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> CreationTime {
        CreationTime::of(Some(text))
    }

    #[test]
    fn times_compare_as_instants_not_as_text() {
        // As text "2024-01-01T01:00:00+02:00" sorts after the UTC time it precedes.
        assert!(at("2024-01-01T01:00:00+02:00") < at("2024-01-01T00:00:00Z"));
        assert!(at("2024-01-01T00:00:00Z") < at("2024-01-01T00:00:00.5Z"));
        assert!(at("2024-01-01T00:00:00.5Z") < at("2024-01-01T00:00:01Z"));
        assert_eq!(at("2024-01-01T00:00:00Z"), at("2024-01-01T02:00:00+02:00"));
    }

    #[test]
    fn undated_objects_rank_after_dated_ones() {
        assert!(at("2099-12-31T23:59:59Z") < CreationTime::of(None));
        assert_eq!(CreationTime::of(None), CreationTime::of(Some("yesterday")));
        assert!(parse("yesterday").is_err());
    }
}
