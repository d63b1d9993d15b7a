//! Reads a running server's debug port (`--http-address`, loopback by
//! default): the JSON pages the commands render.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Where `pilotfish serve` answers by default.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:15014";

/// Bounds a whole request: a wedged server fails the command, not hangs it.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET http://<address><path_and_query>` as JSON. `address` is
/// `host:port` or a URL.
pub fn get_json(address: &str, path_and_query: &str) -> anyhow::Result<Value> {
    let base = if address.contains("://") {
        address.trim_end_matches('/').to_string()
    } else {
        format!("http://{address}")
    };
    let url = format!("{base}{path_and_query}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting an HTTP client")?;
    // reqwest is built without a default TLS provider; the process uses
    // ring (a second install is refused, which is fine).
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .context("building an HTTP client")?;
        let response = client
            .get(&url)
            .send()
            .await
            .with_context(|| format!("cannot reach pilotfish at {base} (--server)"))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .with_context(|| format!("reading {url}"))?;
        if !status.is_success() {
            bail!("{url}: {status}: {}", body.trim());
        }
        serde_json::from_str(&body).with_context(|| format!("{url}: not JSON"))
    })
}

/// The percent-encoding a query value needs (RFC 3986 unreserved kept).
pub fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_encoded_for_a_query() {
        assert_eq!(
            encode_query_value("sidecar~10.0.0.1~a.default~default.svc.cluster.local"),
            "sidecar~10.0.0.1~a.default~default.svc.cluster.local"
        );
        assert_eq!(encode_query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
