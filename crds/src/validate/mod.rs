//! Semantic checks the CRD schema cannot express (regexes, durations, ranges,
//! cross-field rules). Each error names the object and the field path in the
//! loader's style (`spec.http[0].match[0].uri.regex`).
//!
//! Checks follow what Istio itself rejects; an object with errors is not
//! served, so a check stricter than Istio would drop valid config.

mod authorization_policy;
mod destination_rule;
mod gateway;
pub mod headers;
pub mod hosts;
mod peer_authentication;
mod re2;
mod service_entry;
pub mod virtual_service;
mod workload_selector;

use crate::common::{Percent, StringMatch};
use crate::duration::parse_duration;
use crate::error::ConfigError;
use crate::object::{ConfigKey, ConfigObject, ConfigSpec, Origin};

/// Every semantic problem in `obj`; empty when it is fine to serve.
pub fn validate(obj: &ConfigObject) -> Vec<ConfigError> {
    let mut report = Report::new(obj.origin.clone(), obj.key());
    metadata(obj, &mut report);
    match &obj.spec {
        ConfigSpec::VirtualService(spec) => virtual_service::check(spec, &mut report),
        ConfigSpec::DestinationRule(spec) => destination_rule::check(spec, &mut report),
        ConfigSpec::Gateway(spec) => gateway::check(spec, &mut report),
        ConfigSpec::ServiceEntry(spec) => service_entry::check(spec, &mut report),
        ConfigSpec::PeerAuthentication(spec) => peer_authentication::check(spec, &mut report),
        ConfigSpec::AuthorizationPolicy(spec) => authorization_policy::check(spec, &mut report),
    }
    report.errors
}

/// Names as Kubernetes accepts them: an object that could not exist in the
/// API server is not accepted from a file either, and never takes
/// precedence over one that could.
fn metadata(obj: &ConfigObject, r: &mut Report) {
    if !is_dns1123_subdomain(&obj.meta.name) {
        r.error(
            "metadata.name",
            format!(
                "{:?} is not a valid name (lower-case letters, digits, '-' and '.', at most 253)",
                obj.meta.name
            ),
        );
    }
    if !is_dns1123_label(&obj.meta.namespace) {
        r.error(
            "metadata.namespace",
            format!(
                "{:?} is not a valid namespace (lower-case letters, digits and '-', at most 63)",
                obj.meta.namespace
            ),
        );
    }
    for (key, value) in &obj.meta.labels {
        if !is_label_key(key) {
            r.error(
                format!("metadata.labels.{key}"),
                format!("{key:?} is not a valid label key"),
            );
        } else if !value.is_empty() && !is_label_name(value) {
            r.error(
                format!("metadata.labels.{key}"),
                format!("{value:?} is not a valid label value"),
            );
        }
    }
}

/// RFC 1123 label: lower-case alphanumerics and '-', alphanumeric at both
/// ends, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A label name (or value): alphanumerics, '-', '_' and '.', alphanumeric
/// at both ends, at most 63 characters.
fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// A label key: a name, optionally behind a DNS subdomain prefix and '/'.
fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns1123_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    }
}

/// Collects the errors of one object.
struct Report {
    origin: Origin,
    key: ConfigKey,
    errors: Vec<ConfigError>,
}

impl Report {
    fn new(origin: Origin, key: ConfigKey) -> Self {
        Report {
            origin,
            key,
            errors: Vec::new(),
        }
    }

    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        let err = ConfigError::new(self.origin.clone(), message)
            .for_object(self.key.clone())
            .at_field(field);
        self.errors.push(err);
    }

    /// A Go-style duration string.
    fn duration(&mut self, field: &str, value: Option<&String>) {
        if let Some(Err(e)) = value.map(|v| parse_duration(v)) {
            self.error(field, e);
        }
    }

    /// A duration Istio's CRD requires to be at least 1ms.
    fn duration_min_1ms(&mut self, field: &str, value: Option<&String>) {
        match value.map(|v| (v, parse_duration(v))) {
            Some((_, Err(e))) => self.error(field, e),
            Some((v, Ok(d))) if d.as_nanos() < 1_000_000 => {
                self.error(field, format!("duration {v:?} must be at least 1ms"))
            }
            _ => {}
        }
    }

    /// A regex in RE2 syntax (Envoy's engine); Rust's `regex` accepts the
    /// same language apart from rarely used corners.
    fn regex(&mut self, field: &str, pattern: &str) {
        if let Err(e) = regex::Regex::new(pattern) {
            let detail = e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string();
            self.error(field, format!("invalid regex {pattern:?}: {detail}"));
        } else if let Err(e) = re2::check(pattern) {
            self.error(field, format!("regex {pattern:?} is refused by RE2: {e}"));
        }
    }

    /// At most one of exact/prefix/regex; none is allowed only where an
    /// empty match means "present" (headers, query parameters).
    fn string_match(&mut self, field: &str, m: &StringMatch, empty_ok: bool) {
        let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()];
        match set.iter().filter(|s| **s).count() {
            0 if !empty_ok => self.error(field, "must set one of exact, prefix or regex"),
            0 | 1 => {}
            _ => self.error(field, "must set only one of exact, prefix or regex"),
        }
        if let Some(re) = &m.regex {
            self.regex(&format!("{field}.regex"), re);
        }
    }

    /// Mirrors a oneOf rule of the CRD schema, for config read from files.
    fn at_most_one(&mut self, field: &str, fields: &[(&str, bool)]) {
        let set: Vec<&str> = fields
            .iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| *name)
            .collect();
        if set.len() > 1 {
            self.error(field, format!("only one of {} may be set", set.join(", ")));
        }
    }

    fn number_range(&mut self, field: &str, value: Option<f64>, min: f64, max: f64) {
        if let Some(v) = value
            && !(min..=max).contains(&v)
        {
            self.error(field, format!("{v} must be in {min}..={max}"));
        }
    }

    fn percentage(&mut self, field: &str, p: Option<&Percent>) {
        self.percent(&format!("{field}.value"), p.map(|p| p.value));
    }

    fn int_range(&mut self, field: &str, value: Option<i64>, min: i64, max: i64) {
        if let Some(v) = value
            && !(min..=max).contains(&v)
        {
            self.error(field, format!("{v} must be in {min}..={max}"));
        }
    }

    /// A 0..=100 percent; integer fields give the same message as floats.
    fn percent(&mut self, field: &str, value: Option<impl Into<f64>>) {
        self.number_range(field, value.map(Into::into), 0.0, 100.0);
    }

    /// Checks of the fields below `at`, named by their last path segment.
    fn at(&mut self, at: impl Into<String>) -> At<'_> {
        At {
            report: self,
            at: at.into(),
        }
    }

    /// `exportTo` entries: `.`, `*`, `~` or a namespace name.
    fn export_to(&mut self, values: &[String]) {
        for (i, ns) in values.iter().enumerate() {
            if !matches!(ns.as_str(), "." | "*" | "~") && !is_dns1123_label(ns) {
                self.error(
                    format!("spec.exportTo[{i}]"),
                    format!("{ns:?} is not '.', '*', '~' or a namespace name"),
                );
            }
        }
    }

    fn port(&mut self, field: &str, number: Option<u32>) {
        match number {
            None | Some(0) => self.error(field, "a port number in 1..=65535 is required"),
            Some(n) if n > 65535 => self.error(field, format!("port {n} must be in 1..=65535")),
            Some(_) => {}
        }
    }
}

/// A field path prefix, so each check names only the last segment.
struct At<'r> {
    report: &'r mut Report,
    at: String,
}

impl At<'_> {
    fn field(&self, name: &str) -> String {
        format!("{}.{name}", self.at)
    }

    fn duration(&mut self, name: &str, value: Option<&String>) {
        let field = self.field(name);
        self.report.duration(&field, value);
    }

    fn duration_min_1ms(&mut self, name: &str, value: Option<&String>) {
        let field = self.field(name);
        self.report.duration_min_1ms(&field, value);
    }

    fn percent(&mut self, name: &str, value: Option<impl Into<f64>>) {
        let field = self.field(name);
        self.report.percent(&field, value);
    }

    fn percentage(&mut self, name: &str, p: Option<&Percent>) {
        let field = self.field(name);
        self.report.percentage(&field, p);
    }

    fn at_most_one(&mut self, name: &str, fields: &[(&str, bool)]) {
        let field = self.field(name);
        self.report.at_most_one(&field, fields);
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::error::ConfigError;
    use crate::load::load_yaml;

    use super::validate;

    /// Loads one object from YAML (which must load cleanly) and validates it.
    pub fn errors_of(yaml: &str) -> Vec<ConfigError> {
        let out = load_yaml("test.yaml", yaml, "default");
        assert!(out.errors.is_empty(), "fixture must load: {:?}", out.errors);
        assert_eq!(out.objects.len(), 1, "fixture must hold one object");
        validate(&out.objects[0])
    }

    /// The `(field, message)` pairs, for compact assertions.
    pub fn fields(errors: &[ConfigError]) -> Vec<(String, String)> {
        errors
            .iter()
            .map(|e| (e.field.clone().unwrap_or_default(), e.message.clone()))
            .collect()
    }

    /// Only the field paths of `yaml`'s errors, in order.
    pub fn field_paths(yaml: &str) -> Vec<String> {
        errors_of(yaml)
            .into_iter()
            .map(|e| e.field.unwrap_or_default())
            .collect()
    }

    #[test]
    fn names_namespaces_and_label_keys_kubernetes_would_refuse_are_refused() {
        let spec = "  host: reviews\n";
        let dr = |meta: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {meta}\nspec:\n{spec}"
            )
        };
        assert_one(
            &dr("{name: Reviews_1}"),
            "metadata.name",
            "not a valid name",
        );
        let bad_namespace = fields(&errors_of(&dr("{name: reviews, namespace: Shop}")));
        assert_eq!(bad_namespace.len(), 1, "{bad_namespace:?}");
        assert_eq!(bad_namespace[0].0, "metadata.namespace");
        assert_one(
            &dr("{name: reviews, labels: {\"bad key!\": x}}"),
            "metadata.labels.bad key!",
            "not a valid label key",
        );
        assert_one(
            &dr("{name: reviews, labels: {app: \"-x\"}}"),
            "metadata.labels.app",
            "not a valid label value",
        );
        let fine = dr(
            "{name: reviews.v1-2, namespace: shop-1, labels: {app.kubernetes.io/name: reviews, tier: \"\"}}",
        );
        assert!(errors_of(&fine).is_empty(), "{:?}", errors_of(&fine));
    }

    /// An Istio networking object of `kind` named `name`, `spec` indented.
    pub fn object(kind: &str, name: &str, spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n{spec}"
        )
    }

    /// Asserts exactly one error, at `field`, whose message contains `needle`.
    pub fn assert_one(yaml: &str, field: &str, needle: &str) {
        let errors = errors_of(yaml);
        let got = fields(&errors);
        assert_eq!(got.len(), 1, "expected one error at {field}, got {got:?}");
        assert_eq!(got[0].0, field, "{got:?}");
        assert!(got[0].1.contains(needle), "{:?} lacks {needle:?}", got[0].1);
        let shown = errors[0].to_string();
        assert!(
            shown.contains("default/"),
            "error must name the object: {shown}"
        );
    }
}
