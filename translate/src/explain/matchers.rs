//! Envoy's request matchers (string, header, query parameter), each giving
//! the reason when it does not match.

use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};

use super::ExplainRequest;

/// `Err(why)` when the request does not match.
pub type Matched = Result<(), String>;

/// Whether `regex` matches all of `value` (Envoy's safe_regex is a full match).
pub fn full_regex_match(regex: &RegexMatcher, value: &str) -> bool {
    regex::Regex::new(&format!("^(?:{})$", regex.regex)).is_ok_and(|r| r.is_match(value))
}

/// A StringMatcher against `value`.
pub fn string_matches(matcher: &StringMatcher, value: &str) -> bool {
    let fold = |s: &str| match matcher.ignore_case {
        true => s.to_lowercase(),
        false => s.to_string(),
    };
    let value_folded = fold(value);
    match &matcher.match_pattern {
        Some(MatchPattern::Exact(e)) => value_folded == fold(e),
        Some(MatchPattern::Prefix(p)) => value_folded.starts_with(&fold(p)),
        Some(MatchPattern::Suffix(s)) => value_folded.ends_with(&fold(s)),
        Some(MatchPattern::Contains(c)) => value_folded.contains(&fold(c)),
        Some(MatchPattern::SafeRegex(r)) => full_regex_match(r, value),
        // A custom matcher is an extension Envoy would run; not modelled.
        Some(MatchPattern::Custom(_)) | None => false,
    }
}

/// `exact "jason"`, `prefix "/api"`, `regex "v[0-9]"`...
pub fn describe_string(matcher: &StringMatcher) -> String {
    let case = match matcher.ignore_case {
        true => " (ignoring case)",
        false => "",
    };
    let pattern = match &matcher.match_pattern {
        Some(MatchPattern::Exact(e)) => format!("exact {e:?}"),
        Some(MatchPattern::Prefix(p)) => format!("prefix {p:?}"),
        Some(MatchPattern::Suffix(s)) => format!("suffix {s:?}"),
        Some(MatchPattern::Contains(c)) => format!("contains {c:?}"),
        Some(MatchPattern::SafeRegex(r)) => format!("regex {:?}", r.regex),
        Some(MatchPattern::Custom(c)) => format!("custom matcher {}", c.name),
        None => "nothing".into(),
    };
    format!("{pattern}{case}")
}

/// One header matcher, with Envoy's rules for a missing header: it matches
/// only a `present: false` matcher (or an inverted `present: true`),
/// unless the matcher treats a missing header as empty.
pub fn header_matches(matcher: &HeaderMatcher, request: &ExplainRequest) -> Matched {
    let name = &matcher.name;
    let value = request.header(name);
    let expectation = describe_header(matcher);
    let Some(value) = value.or_else(|| matcher.treat_missing_header_as_empty.then(String::new))
    else {
        let present = matches!(
            matcher.header_match_specifier,
            Some(HeaderMatchSpecifier::PresentMatch(p)) if p == matcher.invert_match
        );
        return match present {
            true => Ok(()),
            false => Err(format!(
                "header {name} is missing; the route needs {expectation}"
            )),
        };
    };
    let matched = match &matcher.header_match_specifier {
        Some(HeaderMatchSpecifier::StringMatch(sm)) => string_matches(sm, &value),
        #[allow(deprecated)]
        Some(HeaderMatchSpecifier::ExactMatch(e)) => value == *e,
        #[allow(deprecated)]
        Some(HeaderMatchSpecifier::PrefixMatch(p)) => value.starts_with(p.as_str()),
        #[allow(deprecated)]
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => value.ends_with(s.as_str()),
        #[allow(deprecated)]
        Some(HeaderMatchSpecifier::ContainsMatch(c)) => value.contains(c.as_str()),
        #[allow(deprecated)]
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => full_regex_match(r, &value),
        Some(HeaderMatchSpecifier::RangeMatch(range)) => value
            .parse::<i64>()
            .is_ok_and(|v| range.start <= v && v < range.end),
        Some(HeaderMatchSpecifier::PresentMatch(present)) => *present,
        None => true,
    };
    match matched != matcher.invert_match {
        true => Ok(()),
        false => Err(format!(
            "header {name}: {value:?} does not match {expectation}"
        )),
    }
}

fn describe_header(matcher: &HeaderMatcher) -> String {
    #[allow(deprecated)]
    let what = match &matcher.header_match_specifier {
        Some(HeaderMatchSpecifier::StringMatch(sm)) => describe_string(sm),
        Some(HeaderMatchSpecifier::ExactMatch(e)) => format!("exact {e:?}"),
        Some(HeaderMatchSpecifier::PrefixMatch(p)) => format!("prefix {p:?}"),
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => format!("suffix {s:?}"),
        Some(HeaderMatchSpecifier::ContainsMatch(c)) => format!("contains {c:?}"),
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => format!("regex {:?}", r.regex),
        Some(HeaderMatchSpecifier::RangeMatch(r)) => {
            format!("a number in [{}, {})", r.start, r.end)
        }
        Some(HeaderMatchSpecifier::PresentMatch(true)) | None => "presence".into(),
        Some(HeaderMatchSpecifier::PresentMatch(false)) => "absence".into(),
    };
    match matcher.invert_match {
        true => format!("not {what}"),
        false => what,
    }
}

/// One query parameter matcher (its first value, percent-decoded).
pub fn query_matches(matcher: &QueryParameterMatcher, request: &ExplainRequest) -> Matched {
    let name = &matcher.name;
    let query = request.query();
    let value = query.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    match (&matcher.query_parameter_match_specifier, value) {
        (Some(QueryParameterMatchSpecifier::PresentMatch(true)) | None, Some(_)) => Ok(()),
        (Some(QueryParameterMatchSpecifier::PresentMatch(false)), None) => Ok(()),
        (Some(QueryParameterMatchSpecifier::StringMatch(sm)), Some(v)) => {
            match string_matches(sm, v) {
                true => Ok(()),
                false => Err(format!(
                    "query parameter {name}: {v:?} does not match {}",
                    describe_string(sm)
                )),
            }
        }
        (_, None) => Err(format!("query parameter {name} is missing")),
        (Some(QueryParameterMatchSpecifier::PresentMatch(false)), Some(_)) => {
            Err(format!("query parameter {name} must be absent"))
        }
    }
}
