//! Settings of the Consul registry.

use std::collections::BTreeSet;
use std::time::Duration;

use super::backoff::BackoffConfig;

/// Consul's own upper bound for a blocking query's `wait`.
const MAX_WAIT: Duration = Duration::from_secs(600);
const MIN_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct ConsulConfig {
    /// Consul agent HTTP address: `http://127.0.0.1:8500` or `127.0.0.1:8500`.
    pub address: String,
    /// Hostnames are `<service>.<domain>`; see [`ConsulConfig::hostname`].
    pub domain: String,
    /// Datacenter to read (`?dc=`); `None` is the agent's own, and then the
    /// hostname carries no datacenter.
    pub datacenter: Option<String>,
    /// Namespace given to every Consul service (Consul OSS has none).
    pub namespace: String,
    /// Ask Consul for instances whose checks all pass (`?passing`). When
    /// false, failing instances are kept, marked unhealthy, so that Envoy
    /// sees but skips them.
    pub passing_only: bool,
    /// Longest a blocking query waits for a change (clamped to 1 s..10 min).
    pub wait: Duration,
    /// ACL token, sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// Retry delays after failed requests.
    pub backoff: BackoffConfig,
    /// Consul service names not to import. Default: `consul` itself (the
    /// servers' RPC port is nothing for the mesh to route to).
    pub exclude_services: BTreeSet<String>,
    pub connect_timeout: Duration,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            address: "http://127.0.0.1:8500".into(),
            domain: "service.consul".into(),
            datacenter: None,
            namespace: "default".into(),
            passing_only: false,
            wait: Duration::from_secs(30),
            token: None,
            backoff: BackoffConfig::default(),
            exclude_services: BTreeSet::from(["consul".to_string()]),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl ConsulConfig {
    pub fn new(address: impl Into<String>) -> ConsulConfig {
        ConsulConfig {
            address: address.into(),
            ..ConsulConfig::default()
        }
    }

    /// The mesh hostname of a Consul service, as Consul DNS spells it:
    /// `<name>.service.consul`, or with a datacenter
    /// `<name>.service.<dc>.consul`. A domain not starting with `service.`
    /// gets the datacenter in front: `<name>.<dc>.<domain>`. Names are
    /// lower-cased (DNS is case-insensitive).
    pub fn hostname(&self, service: &str) -> String {
        let domain = self.domain.trim_matches('.');
        let name = service.to_ascii_lowercase();
        match self
            .datacenter
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            None => format!("{name}.{domain}"),
            Some(dc) => {
                let dc = dc.to_ascii_lowercase();
                match domain.strip_prefix("service.") {
                    Some(rest) => format!("{name}.service.{dc}.{rest}"),
                    None => format!("{name}.{dc}.{domain}"),
                }
            }
        }
    }

    pub(crate) fn effective_wait(&self) -> Duration {
        self.wait.clamp(MIN_WAIT, MAX_WAIT)
    }
}

/// Whether a Consul service name can be a DNS label of a mesh hostname.
/// Consul accepts more (dots, spaces); such services are skipped.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_follow_consul_dns() {
        let mut config = ConsulConfig::default();
        assert_eq!(config.hostname("Reviews"), "reviews.service.consul");
        config.datacenter = Some("dc2".into());
        assert_eq!(config.hostname("reviews"), "reviews.service.dc2.consul");
        config.domain = "mesh.example.".into();
        assert_eq!(config.hostname("reviews"), "reviews.dc2.mesh.example");
        config.datacenter = None;
        assert_eq!(config.hostname("reviews"), "reviews.mesh.example");
    }

    #[test]
    fn service_names_must_be_dns_labels() {
        assert!(valid_service_name("reviews"));
        assert!(valid_service_name("web_api-2"));
        assert!(!valid_service_name(""));
        assert!(!valid_service_name("a.b"));
        assert!(!valid_service_name("has space"));
        assert!(!valid_service_name("-x"));
        assert!(!valid_service_name(&"a".repeat(64)));
    }

    #[test]
    fn wait_is_clamped_to_consul_limits() {
        let mut config = ConsulConfig {
            wait: Duration::ZERO,
            ..ConsulConfig::default()
        };
        assert_eq!(config.effective_wait(), MIN_WAIT);
        config.wait = Duration::from_secs(3600);
        assert_eq!(config.effective_wait(), MAX_WAIT);
    }
}
