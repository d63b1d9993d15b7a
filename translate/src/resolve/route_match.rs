//! VirtualService `HTTPMatchRequest` → Envoy `RouteMatch`.

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RouteMatch, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use pilotfish_crds::validate::headers::is_header_name;
use pilotfish_crds::{HttpMatchRequest, StringMatch};

use crate::diagnostics::Diagnostic;
use crate::protobuf;

/// Prefix `/`: every request.
pub fn match_all() -> RouteMatch {
    RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix("/".into())),
        ..Default::default()
    }
}

/// Translates one match (`None`: the rule has no match, i.e. everything).
/// `field` is the match's path, e.g. `spec.http[0].match[1]`.
pub fn route_match(
    m: Option<&HttpMatchRequest>,
    object: &str,
    field: &str,
) -> Result<RouteMatch, Diagnostic> {
    let mut out = match_all();
    let Some(m) = m else {
        return Ok(out);
    };
    if let Some(uri) = &m.uri {
        out.path_specifier = Some(path_specifier(uri, object, &format!("{field}.uri"))?);
    }
    if m.ignore_uri_case == Some(true) {
        out.case_sensitive = Some(protobuf::bool_value(false));
    }
    let pseudo = [
        (":method", &m.method, "method"),
        (":authority", &m.authority, "authority"),
        (":scheme", &m.scheme, "scheme"),
    ];
    for (name, value, key) in pseudo {
        if let Some(sm) = value {
            out.headers.push(header_matcher(
                name,
                sm,
                false,
                object,
                &format!("{field}.{key}"),
            )?);
        }
    }
    for (name, sm) in &m.headers {
        out.headers.push(header_matcher(
            name,
            sm,
            false,
            object,
            &format!("{field}.headers.{name}"),
        )?);
    }
    for (name, sm) in &m.without_headers {
        let field = format!("{field}.withoutHeaders.{name}");
        out.headers
            .push(header_matcher(name, sm, true, object, &field)?);
    }
    for (name, sm) in &m.query_params {
        let field = format!("{field}.queryParams.{name}");
        out.query_parameters
            .push(query_matcher(name, sm, object, &field)?);
    }
    Ok(out)
}

fn path_specifier(
    uri: &StringMatch,
    object: &str,
    field: &str,
) -> Result<PathSpecifier, Diagnostic> {
    if let Some(path) = &uri.exact {
        Ok(PathSpecifier::Path(path.clone()))
    } else if let Some(prefix) = &uri.prefix {
        Ok(PathSpecifier::Prefix(prefix.clone()))
    } else if let Some(regex) = &uri.regex {
        let regex = regex_matcher(regex, object, &format!("{field}.regex"))?;
        Ok(PathSpecifier::SafeRegex(regex))
    } else {
        Err(Diagnostic::invalid(
            object,
            field,
            "uri match needs exact, prefix or regex",
        ))
    }
}

/// An empty `StringMatch` (`{}`) on a header means "present" (or "absent"
/// under `withoutHeaders`), as in Istio. Under `withoutHeaders` a value
/// match also holds for a request that lacks the header: Envoy never
/// matches a missing header, even inverted, unless told to read it as
/// empty (a presence match must not be: "" would count as present).
fn header_matcher(
    name: &str,
    sm: &StringMatch,
    invert: bool,
    object: &str,
    field: &str,
) -> Result<HeaderMatcher, Diagnostic> {
    if !is_header_name(name) {
        return Err(Diagnostic::invalid(
            object,
            field,
            format!("{name:?} is not a header name"),
        ));
    }
    let specifier = match string_matcher(sm, object, field)? {
        Some(matcher) => HeaderMatchSpecifier::StringMatch(matcher),
        None => HeaderMatchSpecifier::PresentMatch(true),
    };
    let value_match = matches!(specifier, HeaderMatchSpecifier::StringMatch(_));
    Ok(HeaderMatcher {
        name: name.to_ascii_lowercase(),
        invert_match: invert,
        treat_missing_header_as_empty: invert && value_match,
        header_match_specifier: Some(specifier),
    })
}

fn query_matcher(
    name: &str,
    sm: &StringMatch,
    object: &str,
    field: &str,
) -> Result<QueryParameterMatcher, Diagnostic> {
    if name.is_empty() {
        return Err(Diagnostic::invalid(
            object,
            field,
            "empty query parameter name",
        ));
    }
    let specifier = match string_matcher(sm, object, field)? {
        Some(matcher) => QueryParameterMatchSpecifier::StringMatch(matcher),
        None => QueryParameterMatchSpecifier::PresentMatch(true),
    };
    Ok(QueryParameterMatcher {
        name: name.to_string(),
        query_parameter_match_specifier: Some(specifier),
    })
}

/// `exact`, `prefix` or `regex` (checked, since Envoy NACKs a bad regex);
/// `None` when none is set or the prefix is empty (which matches anything).
pub fn string_matcher(
    sm: &StringMatch,
    object: &str,
    field: &str,
) -> Result<Option<StringMatcher>, Diagnostic> {
    let pattern = if let Some(exact) = &sm.exact {
        MatchPattern::Exact(exact.clone())
    } else if let Some(prefix) = sm.prefix.as_ref().filter(|p| !p.is_empty()) {
        MatchPattern::Prefix(prefix.clone())
    } else if let Some(regex) = &sm.regex {
        MatchPattern::SafeRegex(regex_matcher(regex, object, &format!("{field}.regex"))?)
    } else {
        return Ok(None);
    };
    Ok(Some(StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }))
}

/// An RE2 regex (Envoy's default engine, so none is named). The `regex`
/// crate accepts the RE2 syntax (no look-around, no backreferences), so it
/// is a faithful validity check.
pub fn regex_matcher(regex: &str, object: &str, field: &str) -> Result<RegexMatcher, Diagnostic> {
    if regex.is_empty() {
        return Err(Diagnostic::invalid(object, field, "empty regex"));
    }
    regex::Regex::new(regex)
        .map_err(|e| Diagnostic::invalid(object, field, format!("invalid regex: {e}")))?;
    Ok(RegexMatcher {
        regex: regex.to_string(),
        engine_type: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> HttpMatchRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn no_match_is_prefix_slash() {
        let m = route_match(None, "vs", "f").unwrap();
        assert_eq!(m.path_specifier, Some(PathSpecifier::Prefix("/".into())));
    }

    #[test]
    fn uri_kinds_map_to_path_prefix_and_safe_regex() {
        let exact = route_match(Some(&parse(r#"{"uri": {"exact": "/a"}}"#)), "vs", "f").unwrap();
        assert_eq!(exact.path_specifier, Some(PathSpecifier::Path("/a".into())));
        let regex = route_match(
            Some(&parse(
                r#"{"uri": {"regex": "/a/[0-9]+"}, "ignoreUriCase": true}"#,
            )),
            "vs",
            "f",
        )
        .unwrap();
        let Some(PathSpecifier::SafeRegex(r)) = regex.path_specifier else {
            panic!()
        };
        assert_eq!(r.regex, "/a/[0-9]+");
        assert_eq!(r.engine_type, None, "google_re2 is Envoy's default");
        assert_eq!(regex.case_sensitive, Some(protobuf::bool_value(false)));
    }

    #[test]
    fn method_authority_scheme_become_pseudo_headers() {
        let m = route_match(
            Some(&parse(r#"{"method": {"exact": "GET"}, "authority": {"prefix": "api."}, "scheme": {"exact": "http"}}"#)),
            "vs",
            "f",
        )
        .unwrap();
        let names: Vec<_> = m.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, [":method", ":authority", ":scheme"]);
    }

    #[test]
    fn without_headers_invert_and_query_params_match() {
        let m = route_match(
            Some(&parse(
                r#"{"withoutHeaders": {"x-debug": {}}, "queryParams": {"q": {"exact": "1"}}}"#,
            )),
            "vs",
            "f",
        )
        .unwrap();
        assert!(m.headers[0].invert_match);
        assert_eq!(
            m.headers[0].header_match_specifier,
            Some(HeaderMatchSpecifier::PresentMatch(true))
        );
        assert!(
            !m.headers[0].treat_missing_header_as_empty,
            "absent is not present"
        );
        assert_eq!(m.query_parameters[0].name, "q");
    }

    #[test]
    fn without_headers_value_match_holds_for_a_missing_header() {
        let m = route_match(
            Some(&parse(r#"{"withoutHeaders": {"x-tier": {"exact": "gold"}}, "headers": {"x-a": {"exact": "1"}}}"#)),
            "vs",
            "f",
        )
        .unwrap();
        let without = m
            .headers
            .iter()
            .find(|h| h.name == "x-tier")
            .expect("x-tier");
        assert!(without.invert_match && without.treat_missing_header_as_empty);
        let with = m.headers.iter().find(|h| h.name == "x-a").expect("x-a");
        assert!(!with.invert_match && !with.treat_missing_header_as_empty);
    }

    #[test]
    fn bad_regex_is_an_invalid_field() {
        let err = route_match(
            Some(&parse(r#"{"headers": {"x": {"regex": "("}}}"#)),
            "VirtualService d/r",
            "spec.http[0].match[0]",
        )
        .unwrap_err();
        assert_eq!(
            err.field.as_deref(),
            Some("spec.http[0].match[0].headers.x.regex")
        );
        assert_eq!(err.object, "VirtualService d/r");
    }
}
