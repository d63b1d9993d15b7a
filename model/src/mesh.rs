//! The translator's input: merged registries, valid config and mesh settings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pilotfish_crds::ConfigObject;
use serde::Serialize;

use crate::service::{Endpoint, Service};

/// A Zipkin collector, `host:port` as MeshConfig writes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct ZipkinCollector {
    pub host: String,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum OutboundTrafficPolicy {
    /// Unknown destinations pass through (Istio's default).
    #[default]
    AllowAny,
    /// Unknown destinations are blocked.
    RegistryOnly,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MeshConfig {
    /// Istio's PILOT_SCOPE_GATEWAY_TO_NAMESPACE: a Gateway applies only to
    /// gateway proxies in its own namespace.
    pub scope_gateway_to_namespace: bool,
    /// Kubernetes cluster domain used to expand short names.
    pub domain_suffix: String,
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    pub connect_timeout: Duration,
    /// Name of the bootstrap cluster that points at Pilotfish.
    pub xds_cluster: String,
    /// Istio's `accessLogFile`: every generated HTTP connection manager and
    /// TCP proxy logs there (`/dev/stdout`).
    pub access_log_file: Option<String>,
    /// Istio's `enableTracing` with `defaultConfig.tracing.zipkin.address`:
    /// generated HTTP connection managers report spans there.
    pub zipkin: Option<ZipkinCollector>,
    /// The mesh CA's trust domain: mesh mTLS accepts peers whose SPIFFE id
    /// is `spiffe://<trust_domain>/...`.
    pub trust_domain: String,
    /// Istio's `rootNamespace`: security policies here without a selector
    /// apply to the whole mesh.
    pub root_namespace: String,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            scope_gateway_to_namespace: false,
            domain_suffix: "cluster.local".into(),
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
            connect_timeout: Duration::from_secs(10),
            xds_cluster: "xds-grpc".into(),
            access_log_file: None,
            zipkin: None,
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
        }
    }
}

/// One consistent view of the mesh. Built by the discovery server from all
/// registries and config sources; immutable once built. Its parts are
/// shared: a generation in which one service's endpoints changed holds the
/// same services, config and other endpoint lists as the one before.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshState {
    /// Services sorted by hostname; one per hostname.
    pub services: Arc<Vec<Service>>,
    /// Endpoints by service hostname.
    pub endpoints: BTreeMap<String, Arc<Vec<Endpoint>>>,
    /// Valid config objects only (invalid ones are reported at load time).
    pub config: Arc<Vec<ConfigObject>>,
    /// TLS credentials (Kubernetes Secrets) that gateway servers name with
    /// `credentialName`, by namespace and name.
    pub credentials: BTreeMap<CredentialKey, TlsCredential>,
    pub mesh: MeshConfig,
}

impl MeshState {
    /// A mesh from owned parts (the rest default).
    pub fn of(
        services: Vec<Service>,
        endpoints: BTreeMap<String, Vec<Endpoint>>,
        config: Vec<ConfigObject>,
    ) -> Self {
        MeshState {
            services: Arc::new(services),
            endpoints: shared_endpoints(endpoints),
            config: Arc::new(config),
            ..Default::default()
        }
    }
}

/// Endpoint lists by hostname, each shareable between generations.
pub fn shared_endpoints(
    endpoints: impl IntoIterator<Item = (String, Vec<Endpoint>)>,
) -> BTreeMap<String, Arc<Vec<Endpoint>>> {
    endpoints
        .into_iter()
        .map(|(host, list)| (host, Arc::new(list)))
        .collect()
}

/// `(namespace, name)` of a credential.
pub type CredentialKey = (String, String);

/// Certificate and key of a gateway server, and optionally the CA that
/// verifies clients (MUTUAL). PEM bytes, as stored in the Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsCredential {
    pub certificate_chain: Vec<u8>,
    pub private_key: Vec<u8>,
    pub ca_certificates: Option<Vec<u8>>,
}

/// Never prints key material.
impl std::fmt::Debug for TlsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCredential")
            .field(
                "certificate_chain",
                &format_args!("{} bytes", self.certificate_chain.len()),
            )
            .field("private_key", &"<redacted>")
            .field(
                "ca_certificates",
                &self
                    .ca_certificates
                    .as_ref()
                    .map(|c| format!("{} bytes", c.len())),
            )
            .finish()
    }
}
