//! Errors of the Consul registry, each naming what failed.

/// One failed step. `Status` means Consul answered (so it is reachable) but
/// refused or failed the request; the others mean it did not answer usably.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsulError {
    #[error("invalid Consul address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error("cannot build the HTTP client for Consul: {0}")]
    Client(String),
    #[error("GET {url}: {message}")]
    Transport { url: String, message: String },
    #[error("GET {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("GET {url}: unexpected response: {message}")]
    Decode { url: String, message: String },
}

impl ConsulError {
    /// Consul answered, just not with data: the connection itself is fine.
    pub fn is_http_status(&self) -> bool {
        matches!(self, ConsulError::Status { .. })
    }
}

/// An error and its causes on one line: reqwest's top-level message alone
/// ("error sending request") hides the useful part ("connection refused").
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
