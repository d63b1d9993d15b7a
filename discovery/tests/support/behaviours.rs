//! What a test backend does with each HTTP request, set per instance through
//! [`Backend::behave`](super::backend::Backend::behave): answer after a fixed
//! delay, fail the first N requests (then succeed), always fail, add
//! response headers. Whatever it does, a backend counts its requests, keeps
//! what it saw of each (method, path, Host, headers) and echoes that in the
//! JSON body of its answer, so a test can check what reached it.

use std::time::Duration;

use serde_json::Value;

use super::http::Response;

/// How a backend answers; the default answers 200 at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behaviour {
    /// Waits this long before answering (the request is read first).
    pub delay: Duration,
    /// Answers the first `fail_first` requests (counted from when the
    /// behaviour was set) with `fail_status`, the later ones with 200.
    pub fail_first: u64,
    pub fail_status: u16,
    /// Answers every request with this status.
    pub always_fail: Option<u16>,
    /// Extra headers on every answer (e.g. one a route should strip).
    pub response_headers: Vec<(String, String)>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            delay: Duration::ZERO,
            fail_first: 0,
            fail_status: 503,
            always_fail: None,
            response_headers: Vec::new(),
        }
    }
}

impl Behaviour {
    /// Answers 200 at once.
    pub fn healthy() -> Behaviour {
        Behaviour::default()
    }

    /// Answers 200 after `delay`.
    pub fn slow(delay: Duration) -> Behaviour {
        Behaviour {
            delay,
            ..Behaviour::default()
        }
    }

    /// Answers the first `n` requests with `status`, then 200.
    pub fn fail_first(n: u64, status: u16) -> Behaviour {
        Behaviour {
            fail_first: n,
            fail_status: status,
            ..Behaviour::default()
        }
    }

    /// Answers every request with `status`.
    pub fn always_fail(status: u16) -> Behaviour {
        Behaviour {
            always_fail: Some(status),
            ..Behaviour::default()
        }
    }

    pub fn with_response_header(mut self, name: &str, value: &str) -> Behaviour {
        self.response_headers
            .push((name.to_string(), value.to_string()));
        self
    }

    /// The status of the answer to request number `attempt` (0 for the
    /// first request since the behaviour was set).
    pub fn status_for(&self, attempt: u64) -> u16 {
        match self.always_fail {
            Some(status) => status,
            None if attempt < self.fail_first => self.fail_status,
            None => 200,
        }
    }
}

/// One HTTP request as a backend received it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub host: String,
    /// Every header in order, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl SeenRequest {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        super::http::first_header(&self.headers, name)
    }

    /// Every value of header `name`, in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The JSON the backend puts in its answer's body (with its own name).
    pub fn to_json(&self, service: &str, version: &str, status: u16) -> Value {
        serde_json::json!({
            "service": service,
            "version": version,
            "status": status,
            "method": self.method,
            "path": self.path,
            "host": self.host,
            "headers": self.headers,
        })
    }
}

/// What the backend that answered `response` saw of the request (`None`
/// when no test backend wrote the body: a redirect, a local reply...).
pub fn echo(response: &Response) -> Option<SeenRequest> {
    let json: Value = serde_json::from_str(&response.body).ok()?;
    let text = |key: &str| json.get(key)?.as_str().map(str::to_string);
    let headers = json
        .get("headers")?
        .as_array()?
        .iter()
        .filter_map(|pair| {
            let pair = pair.as_array()?;
            Some((
                pair.first()?.as_str()?.to_string(),
                pair.get(1)?.as_str()?.to_string(),
            ))
        })
        .collect();
    Some(SeenRequest {
        method: text("method")?,
        path: text("path")?,
        host: text("host")?,
        headers,
    })
}
