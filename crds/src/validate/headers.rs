//! Header names and values as Envoy takes them. Istio passes header values
//! to Envoy unchanged, and Envoy reads them as format strings: `%%` is a
//! literal percent sign and `%COMMAND%` or `%COMMAND(arg)%` inserts request
//! data, so a lone `%` or an unknown command makes Envoy reject the whole
//! route configuration.

use super::Report;

/// Envoy's command operators, with whether they take `(arguments)`.
/// Operators outside this list are refused, though Envoy may know them:
/// a refusal here is reported, a rejection by Envoy freezes a port.
const COMMANDS: &[(&str, Args)] = &[
    ("REQ", Args::Required),
    ("RESP", Args::Required),
    ("TRAILER", Args::Required),
    ("ENVIRONMENT", Args::Required),
    ("DYNAMIC_METADATA", Args::Required),
    ("CLUSTER_METADATA", Args::Required),
    ("UPSTREAM_METADATA", Args::Required),
    ("FILTER_STATE", Args::Required),
    ("UPSTREAM_FILTER_STATE", Args::Required),
    ("START_TIME", Args::Optional),
    ("PROTOCOL", Args::None),
    ("UPSTREAM_PROTOCOL", Args::None),
    ("RESPONSE_CODE", Args::None),
    ("RESPONSE_CODE_DETAILS", Args::None),
    ("RESPONSE_FLAGS", Args::None),
    ("ROUTE_NAME", Args::None),
    ("UPSTREAM_HOST", Args::None),
    ("UPSTREAM_CLUSTER", Args::None),
    ("UPSTREAM_LOCAL_ADDRESS", Args::None),
    ("UPSTREAM_REMOTE_ADDRESS", Args::None),
    ("UPSTREAM_TRANSPORT_FAILURE_REASON", Args::None),
    ("DOWNSTREAM_REMOTE_ADDRESS", Args::None),
    ("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", Args::None),
    ("DOWNSTREAM_REMOTE_PORT", Args::None),
    ("DOWNSTREAM_DIRECT_REMOTE_ADDRESS", Args::None),
    ("DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", Args::None),
    ("DOWNSTREAM_LOCAL_ADDRESS", Args::None),
    ("DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", Args::None),
    ("DOWNSTREAM_LOCAL_PORT", Args::None),
    ("DOWNSTREAM_LOCAL_URI_SAN", Args::None),
    ("DOWNSTREAM_PEER_URI_SAN", Args::None),
    ("DOWNSTREAM_LOCAL_SUBJECT", Args::None),
    ("DOWNSTREAM_PEER_SUBJECT", Args::None),
    ("DOWNSTREAM_PEER_ISSUER", Args::None),
    ("DOWNSTREAM_TLS_SESSION_ID", Args::None),
    ("DOWNSTREAM_TLS_CIPHER", Args::None),
    ("DOWNSTREAM_TLS_VERSION", Args::None),
    ("DOWNSTREAM_PEER_FINGERPRINT_256", Args::None),
    ("DOWNSTREAM_PEER_SERIAL", Args::None),
    ("DOWNSTREAM_PEER_CERT", Args::None),
    ("REQUESTED_SERVER_NAME", Args::None),
    ("HOSTNAME", Args::None),
    ("CONNECTION_ID", Args::None),
    ("BYTES_RECEIVED", Args::None),
    ("BYTES_SENT", Args::None),
    ("DURATION", Args::None),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Args {
    None,
    Optional,
    Required,
}

/// Envoy's header name syntax (RFC 7230 token), with a leading `:` for
/// pseudo-headers.
pub fn is_header_name(name: &str) -> bool {
    let bare = name.strip_prefix(':').unwrap_or(name);
    !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header a route may set, add or remove: Envoy refuses to modify
/// pseudo-headers and `host`.
pub fn modifiable(name: &str) -> Result<(), String> {
    if !is_header_name(name) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        return Err(format!(
            "header {name:?} cannot be modified (Envoy refuses pseudo-headers and host)"
        ));
    }
    Ok(())
}

/// A header value: no NUL, CR or LF, and a well-formed Envoy format string.
pub fn header_value(value: &str) -> Result<(), String> {
    if value.contains(['\0', '\r', '\n']) {
        return Err("header value contains NUL, CR or LF".into());
    }
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            rest = after;
            continue;
        }
        rest = command(rest).map_err(|e| format!("{e} in {value:?} (write %% for a literal %)"))?;
    }
    Ok(())
}

/// Parses `NAME[(args)][:len]%` after a `%`; returns what follows it.
fn command(text: &str) -> Result<&str, String> {
    let name_len = text
        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    let name = &text[..name_len];
    let mut rest = &text[name_len..];
    let Some((_, args)) = COMMANDS.iter().find(|(n, _)| *n == name) else {
        return Err(if name.is_empty() {
            "a lone %".to_string()
        } else {
            format!("unknown Envoy command %{name}%")
        });
    };
    let has_args = rest.starts_with('(');
    if has_args {
        let close = rest
            .find(')')
            .ok_or_else(|| format!("%{name}( is not closed"))?;
        if close == 1 {
            return Err(format!("%{name}() has empty arguments"));
        }
        rest = &rest[close + 1..];
    }
    match (args, has_args) {
        (Args::Required, false) => return Err(format!("%{name}% needs (arguments)")),
        (Args::None, true) => return Err(format!("%{name}% takes no arguments")),
        _ => {}
    }
    if let Some(after) = rest.strip_prefix(':') {
        let digits = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        if digits == 0 {
            return Err(format!("%{name}:% needs a length"));
        }
        rest = &after[digits..];
    }
    rest.strip_prefix('%')
        .ok_or_else(|| format!("%{name} is not closed with %"))
}

impl Report {
    /// A match on a header by name (pseudo-headers allowed).
    pub(super) fn header_name(&mut self, field: &str, name: &str) {
        if !is_header_name(name) {
            self.error(field, format!("{name:?} is not a valid header name"));
        }
    }

    /// `set`, `add` and `remove` of a route's header operations.
    pub(super) fn header_operations(&mut self, at: &str, ops: &crate::HeaderOperations) {
        for (name, value) in ops
            .set
            .iter()
            .map(|kv| ("set", kv))
            .chain(ops.add.iter().map(|kv| ("add", kv)))
        {
            let (key, value) = value;
            let field = format!("{at}.{name}.{key}");
            match modifiable(key).and_then(|()| header_value(value)) {
                Ok(()) => {}
                Err(e) => self.error(field, e),
            }
        }
        for (i, key) in ops.remove.iter().enumerate() {
            if let Err(e) = modifiable(key) {
                self.error(format!("{at}.remove[{i}]"), e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_are_envoy_format_strings() {
        for ok in [
            "v",
            "",
            "100%%",
            "%DOWNSTREAM_REMOTE_ADDRESS%",
            "%REQ(x-user)%",
            "%REQ(x-user):10%",
            "%START_TIME%",
            "%START_TIME(%s)%",
            "a %% b %UPSTREAM_HOST% c",
        ] {
            assert_eq!(header_value(ok), Ok(()), "{ok}");
        }
        for bad in [
            "100%",
            "%BOGUS%",
            "%REQ(%",
            "a%b",
            "%REQ%",
            "%PROTOCOL(x)%",
            "%REQ()%",
            "two\nlines",
            "%UPSTREAM_HOST",
        ] {
            assert!(header_value(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn pseudo_headers_and_host_cannot_be_modified() {
        assert!(modifiable("x-user").is_ok());
        for bad in [":path", ":authority", "Host", "", "x y"] {
            assert!(modifiable(bad).is_err(), "{bad:?}");
        }
        assert!(is_header_name(":authority"));
        assert!(!is_header_name("x\ny"));
    }
}
