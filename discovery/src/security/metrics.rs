//! Counters of what the security layer refused, so an operator sees attacks
//! and misconfigured proxies without reading logs.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Default)]
pub struct SecurityMetrics {
    pub accept_backoffs: Counter,
    pub refused_connections: Counter,
    pub tls_handshake_failures: Counter,
    pub authentication_failures: Family<ReasonLabel, Counter>,
    pub secret_refusals: Family<ReasonLabel, Counter>,
}

impl SecurityMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "xds_accept_backoffs",
            "Times accepting xDS connections backed off (out of file descriptors or buffers)",
            self.accept_backoffs.clone(),
        );
        registry.register(
            "xds_refused_connections",
            "xDS connections closed at once: over the per-address limit",
            self.refused_connections.clone(),
        );
        registry.register(
            "xds_tls_handshake_failures",
            "TLS handshakes on the secure xDS port that failed or named no workload identity",
            self.tls_handshake_failures.clone(),
        );
        registry.register(
            "xds_authentication_failures",
            "xDS and certificate requests refused, by reason",
            self.authentication_failures.clone(),
        );
        registry.register(
            "sds_refusals",
            "Secret (SDS) requests answered without secrets, by reason",
            self.secret_refusals.clone(),
        );
    }

    pub fn authentication_failed(&self, reason: &str) {
        self.authentication_failures
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn secret_refused(&self, reason: &str) {
        self.secret_refusals
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }
}
