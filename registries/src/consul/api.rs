//! A small client for the few Consul HTTP API endpoints the registry reads,
//! with blocking-query support (`index` + `wait`, `X-Consul-Index`).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Url;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer};

use super::error::{ConsulError, error_chain};

/// A response body and the `X-Consul-Index` it came with (0 if absent).
#[derive(Clone, Debug, PartialEq)]
pub struct Indexed<T> {
    pub index: u64,
    pub value: T,
}

/// One entry of `/v1/health/service/<name>`: an instance, its node and the
/// checks (node-level and service-level) that decide its health.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthEntry {
    #[serde(default)]
    pub node: Node,
    #[serde(default)]
    pub service: AgentService,
    #[serde(default, deserialize_with = "null_as_default")]
    pub checks: Vec<HealthCheck>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub datacenter: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(default)]
    pub service: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    /// Empty when the instance uses its node's address.
    #[serde(default)]
    pub address: String,
    /// Wider than a port on purpose: bad values become warnings, not a
    /// failed read of the whole service.
    #[serde(default)]
    pub port: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta: BTreeMap<String, String>,
    /// Empty for ordinary services; `connect-proxy`, `mesh-gateway`... for
    /// Consul Connect's own proxies.
    #[serde(default)]
    pub kind: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    #[serde(default)]
    pub name: String,
    /// `passing`, `warning` or `critical`.
    #[serde(default)]
    pub status: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Connection settings for [`ConsulClient`].
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub address: String,
    pub token: Option<String>,
    pub datacenter: Option<String>,
    pub connect_timeout: Duration,
}

#[derive(Clone, Debug)]
pub struct ConsulClient {
    http: reqwest::Client,
    /// Always ends with `/`, so `join("v1/...")` keeps any path prefix.
    base: Url,
    token: Option<String>,
    datacenter: Option<String>,
}

impl ConsulClient {
    pub fn new(settings: &ClientSettings) -> Result<ConsulClient, ConsulError> {
        let base = parse_base_url(&settings.address)?;
        ensure_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            // Consul is reached directly; a proxy from the environment would
            // also break long-polling with its own timeouts.
            .no_proxy()
            .build()
            .map_err(|e| ConsulError::Client(error_chain(&e)))?;
        Ok(ConsulClient {
            http,
            base,
            token: settings.token.clone(),
            datacenter: settings.datacenter.clone(),
        })
    }

    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `/v1/catalog/services`: the names of all services (with at least one
    /// instance) in the datacenter.
    pub async fn catalog_services(
        &self,
        index: u64,
        wait: Duration,
    ) -> Result<Indexed<Vec<String>>, ConsulError> {
        let url = self.url(&["catalog", "services"])?;
        let got: Indexed<BTreeMap<String, IgnoredAny>> =
            self.get_blocking(url, index, wait, &[]).await?;
        Ok(Indexed {
            index: got.index,
            value: got.value.into_keys().collect(),
        })
    }

    /// `/v1/health/service/<name>`: the instances of one service with their
    /// nodes and checks; `passing_only` lets Consul drop unhealthy ones.
    pub async fn health_service(
        &self,
        service: &str,
        passing_only: bool,
        index: u64,
        wait: Duration,
    ) -> Result<Indexed<Vec<HealthEntry>>, ConsulError> {
        let url = self.url(&["health", "service", service])?;
        let extra: &[(&str, &str)] = if passing_only {
            &[("passing", "true")]
        } else {
            &[]
        };
        self.get_blocking(url, index, wait, extra).await
    }

    /// `/v1/status/leader`: the leader's address, empty while there is none.
    pub async fn leader(&self) -> Result<String, ConsulError> {
        let url = self.url(&["status", "leader"])?;
        Ok(self.get_blocking(url, 0, Duration::ZERO, &[]).await?.value)
    }

    fn url(&self, segments: &[&str]) -> Result<Url, ConsulError> {
        let mut url = self.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| ConsulError::InvalidAddress {
                    address: self.base.to_string(),
                    reason: "cannot hold a path".into(),
                })?;
            // Pushed as segments so that a service name is percent-encoded.
            path.pop_if_empty().push("v1").extend(segments);
        }
        Ok(url)
    }

    async fn get_blocking<T: DeserializeOwned>(
        &self,
        mut url: Url,
        index: u64,
        wait: Duration,
        extra: &[(&str, &str)],
    ) -> Result<Indexed<T>, ConsulError> {
        {
            let mut query = url.query_pairs_mut();
            if let Some(dc) = &self.datacenter {
                query.append_pair("dc", dc);
            }
            if index > 0 {
                query.append_pair("index", &index.to_string());
                query.append_pair("wait", &format!("{}ms", wait.as_millis()));
            }
            for (key, value) in extra {
                query.append_pair(key, value);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        let shown = url.to_string();
        let mut request = self.http.get(url).timeout(request_timeout(index, wait));
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        let response = request.send().await.map_err(|e| ConsulError::Transport {
            url: shown.clone(),
            message: error_chain(&e.without_url()),
        })?;
        let status = response.status();
        let consul_index = response
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let body = response.bytes().await.map_err(|e| ConsulError::Transport {
            url: shown.clone(),
            message: error_chain(&e.without_url()),
        })?;
        if !status.is_success() {
            return Err(ConsulError::Status {
                url: shown,
                status: status.as_u16(),
                body: shorten(&String::from_utf8_lossy(&body)),
            });
        }
        let mut json = serde_json::Deserializer::from_slice(&body);
        let value =
            serde_path_to_error::deserialize(&mut json).map_err(|e| ConsulError::Decode {
                url: shown,
                message: format!("at {}: {}", e.path(), e.inner()),
            })?;
        Ok(Indexed {
            index: consul_index,
            value,
        })
    }
}

/// Consul adds up to `wait/16` of jitter to a blocking query; beyond that
/// (plus slack for a slow answer) the request is considered lost.
fn request_timeout(index: u64, wait: Duration) -> Duration {
    let slack = Duration::from_secs(10);
    if index == 0 {
        slack
    } else {
        wait + wait / 16 + slack
    }
}

/// Accepts `http://host:port[/prefix]` or a bare `host:port`.
pub fn parse_base_url(address: &str) -> Result<Url, ConsulError> {
    let invalid = |reason: String| ConsulError::InvalidAddress {
        address: address.to_string(),
        reason,
    };
    let trimmed = address.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| invalid(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment".into()));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// reqwest is built with rustls and no default crypto provider, and panics
/// when building a client without one, even for plain HTTP. Installs ring
/// unless the process already chose a provider.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn shorten(body: &str) -> String {
    const MAX: usize = 300;
    let body = body.trim();
    match body.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &body[..at]),
        None => body.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_accepts_bare_host_port_and_keeps_prefixes() {
        assert_eq!(
            parse_base_url("127.0.0.1:8500").map(|u| u.to_string()).ok(),
            Some("http://127.0.0.1:8500/".to_string())
        );
        assert_eq!(
            parse_base_url("http://consul.local:8500/prefix")
                .map(|u| u.to_string())
                .ok(),
            Some("http://consul.local:8500/prefix/".to_string())
        );
        assert!(parse_base_url("ftp://x").is_err());
        assert!(parse_base_url("http://").is_err());
        assert!(parse_base_url("http://h:8500/?x=1").is_err());
    }

    #[test]
    fn urls_are_built_from_segments() {
        let client = ConsulClient::new(&ClientSettings {
            address: "http://127.0.0.1:8500/prefix".into(),
            token: None,
            datacenter: None,
            connect_timeout: Duration::from_secs(1),
        })
        .expect("client");
        let url = client.url(&["health", "service", "we b/x"]).expect("url");
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8500/prefix/v1/health/service/we%20b%2Fx"
        );
    }

    #[test]
    fn health_entries_tolerate_nulls_and_missing_fields() {
        let json = r#"[{
            "Node": {"Node": "n1", "Address": "127.0.0.1", "Datacenter": "dc1"},
            "Service": {"ID": "web-1", "Service": "web", "Tags": null, "Address": "",
                        "Port": 9080, "Meta": null},
            "Checks": [{"CheckID": "serfHealth", "Status": "passing", "ServiceID": ""}]
        }, {"Service": {"Service": "web"}, "Checks": null}]"#;
        let entries: Vec<HealthEntry> = serde_json::from_str(json).expect("parses");
        assert_eq!(entries[0].service.port, 9080);
        assert!(entries[0].service.tags.is_empty());
        assert!(entries[0].service.meta.is_empty());
        assert_eq!(entries[0].checks[0].check_id, "serfHealth");
        assert!(entries[1].checks.is_empty());
        assert_eq!(entries[1].node.address, "");
    }

    #[test]
    fn request_timeout_covers_consul_jitter() {
        let wait = Duration::from_secs(32);
        assert!(request_timeout(7, wait) > wait + wait / 16);
        assert_eq!(request_timeout(0, wait), Duration::from_secs(10));
    }
}
