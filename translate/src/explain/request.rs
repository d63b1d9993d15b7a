//! The request to explain, parsed from a URL and `name: value` headers.

use std::net::IpAddr;

use serde::Serialize;

use super::ExplainError;

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    Http,
    Tcp,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ExplainRequest {
    pub scheme: Scheme,
    /// The URL's host: a name or an IP.
    pub host: String,
    pub port: u16,
    /// Path and query (`/` when the URL has none); unused for TCP.
    pub path: String,
    /// Request headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Where the client connects: the host when it is an IP, else what the
    /// caller resolved it to (a service's VIP).
    pub destination_ip: Option<IpAddr>,
}

impl ExplainRequest {
    /// `http://reviews:9080/path?x=1` or `tcp://10.0.0.5:9000`, with
    /// headers as `name: value` (or `name:value`).
    pub fn parse(url: &str, headers: &[String]) -> Result<ExplainRequest, ExplainError> {
        let bad = || ExplainError::BadUrl(url.to_string());
        let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "tcp" => Scheme::Tcp,
            other => return Err(ExplainError::UnsupportedScheme(other.to_string())),
        };
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let (host, port) = split_host_port(authority).ok_or_else(bad)?;
        let port = match (port, scheme) {
            (Some(port), _) => port,
            (None, Scheme::Http) => 80,
            (None, Scheme::Tcp) => return Err(ExplainError::MissingPort(url.to_string())),
        };
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        let headers = headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ExplainRequest {
            scheme,
            destination_ip: host.parse().ok(),
            host,
            port,
            path,
            headers,
        })
    }

    /// The Host (`:authority`) Envoy sees: a `host` header if given, else
    /// the URL's host with its port unless it is 80, as curl sends it.
    pub fn authority(&self) -> String {
        if let Some(host) = self
            .given_header("host")
            .or_else(|| self.given_header(":authority"))
        {
            return host;
        }
        let host = match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.host.clone(),
        };
        match self.port {
            80 => host,
            port => format!("{host}:{port}"),
        }
    }

    /// A header's value (repeated headers joined with `,` as Envoy does);
    /// pseudo-headers (`:path`, `:method`...) are derived from the request.
    pub fn header(&self, name: &str) -> Option<String> {
        let name = name.to_ascii_lowercase();
        if let Some(value) = self.given_header(&name) {
            return Some(value);
        }
        match name.as_str() {
            ":authority" => Some(self.authority()),
            ":path" => Some(self.path.clone()),
            ":method" => Some("GET".into()),
            ":scheme" => Some("http".into()),
            _ => None,
        }
    }

    /// A header as given (no pseudo-header derived), `name` lower-case.
    fn given_header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split(['?', '#']).next().unwrap_or("")
    }

    /// The query's parameters, in order, percent-decoded.
    pub fn query(&self) -> Vec<(String, String)> {
        let Some((_, query)) = self.path.split_once('?') else {
            return Vec::new();
        };
        let query = query.split('#').next().unwrap_or("");
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }
}

fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if authority.is_empty() {
        return None;
    }
    // [v6]:port
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            Some((host.to_string(), Some(port.parse().ok()?)))
        }
        _ => Some((authority.to_string(), None)),
    }
}

fn parse_header(text: &str) -> Result<(String, String), ExplainError> {
    // A leading ':' belongs to a pseudo-header's name.
    let start = usize::from(text.starts_with(':'));
    let colon = text[start..]
        .find(':')
        .map(|i| i + start)
        .ok_or_else(|| ExplainError::BadHeader(text.to_string()))?;
    let (name, value) = (text[..colon].trim(), text[colon + 1..].trim());
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(ExplainError::BadHeader(text.to_string()));
    }
    Ok((name.to_ascii_lowercase(), value.to_string()))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_scheme_host_port_and_path() {
        let r = ExplainRequest::parse("http://reviews:9080/api?x=1", &["end-user: jason".into()])
            .expect("parses");
        assert_eq!(
            (r.scheme, r.host.as_str(), r.port),
            (Scheme::Http, "reviews", 9080)
        );
        assert_eq!((r.path.as_str(), r.path_only()), ("/api?x=1", "/api"));
        assert_eq!(r.query(), [("x".to_string(), "1".to_string())]);
        assert_eq!(r.authority(), "reviews:9080");
        assert_eq!(r.header("End-User").as_deref(), Some("jason"));
        assert_eq!(r.destination_ip, None);
        let tcp = ExplainRequest::parse("tcp://10.0.0.5:9000", &[]).expect("parses");
        assert_eq!(tcp.destination_ip, "10.0.0.5".parse().ok());
        assert_eq!(
            ExplainRequest::parse("http://a", &[]).map(|r| r.authority()),
            Ok("a".into())
        );
    }

    #[test]
    fn bad_urls_and_headers_are_refused() {
        assert!(matches!(
            ExplainRequest::parse("reviews:9080", &[]),
            Err(ExplainError::BadUrl(_))
        ));
        assert!(matches!(
            ExplainRequest::parse("ftp://a:1", &[]),
            Err(ExplainError::UnsupportedScheme(_))
        ));
        assert!(matches!(
            ExplainRequest::parse("tcp://a", &[]),
            Err(ExplainError::MissingPort(_))
        ));
        assert!(matches!(
            ExplainRequest::parse("http://a", &["novalue".into()]),
            Err(ExplainError::BadHeader(_))
        ));
        let r = ExplainRequest::parse("http://a", &["x:1".into(), "x: 2".into()]).expect("parses");
        assert_eq!(r.header("x").as_deref(), Some("1,2"));
    }
}
