//! Prometheus metrics, served on `/metrics`.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::security::metrics::SecurityMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabel {
    pub registry: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub pushes: Family<TypeLabel, Counter>,
    /// Resources in xDS responses, and their encoded bytes, by type.
    pub resources_sent: Family<TypeLabel, Counter>,
    pub resource_bytes_sent: Family<TypeLabel, Counter>,
    pub nacks: Family<TypeLabel, Counter>,
    pub connected_proxies: Gauge,
    pub config_errors: Gauge,
    pub listener_conflicts: Gauge,
    pub translation_diagnostics: Gauge,
    pub mesh_generation: Gauge,
    pub services: Gauge,
    /// Distinct proxy views in the snapshot cache.
    pub views: Gauge,
    pub view_cache_evictions: Counter,
    /// Clusters and endpoints built for a clusters key (shared by its views).
    pub cluster_part_builds: Counter,
    pub stalled_streams: Counter,
    /// xDS connections sent GOAWAY at their maximum age.
    pub connections_aged_out: Counter,
    /// Of those, connections still open after the grace, closed by force.
    pub connections_closed_after_grace: Counter,
    /// ADS streams refused because not every source had loaded yet.
    pub unready_refusals: Counter,
    /// Config objects left out because a proxy rejected them.
    pub config_quarantined: Gauge,
    pub config_quarantines: Counter,
    translation_seconds: Histogram,
    registry_connected: Family<RegistryLabel, Gauge>,
    registry_failures: Family<RegistryLabel, Gauge>,
    pub security: SecurityMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pilotfish");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            pushes: Family::default(),
            resources_sent: Family::default(),
            resource_bytes_sent: Family::default(),
            nacks: Family::default(),
            connected_proxies: Gauge::default(),
            config_errors: Gauge::default(),
            listener_conflicts: Gauge::default(),
            translation_diagnostics: Gauge::default(),
            mesh_generation: Gauge::default(),
            services: Gauge::default(),
            views: Gauge::default(),
            view_cache_evictions: Counter::default(),
            cluster_part_builds: Counter::default(),
            stalled_streams: Counter::default(),
            connections_aged_out: Counter::default(),
            connections_closed_after_grace: Counter::default(),
            unready_refusals: Counter::default(),
            config_quarantined: Gauge::default(),
            config_quarantines: Counter::default(),
            translation_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            registry_connected: Family::default(),
            registry_failures: Family::default(),
            security: SecurityMetrics::default(),
        };
        m.security.register(&mut registry);
        registry.register(
            "xds_pushes",
            "xDS responses sent, by type",
            m.pushes.clone(),
        );
        registry.register(
            "xds_resources_sent",
            "Resources carried by xDS responses, by type (a proxy reconnecting over delta xDS with the versions it holds is sent none that are unchanged)",
            m.resources_sent.clone(),
        );
        registry.register(
            "xds_resource_bytes_sent",
            "Encoded bytes of the resources carried by xDS responses, by type",
            m.resource_bytes_sent.clone(),
        );
        registry.register(
            "xds_nacks",
            "xDS responses rejected by proxies, by type",
            m.nacks.clone(),
        );
        registry.register(
            "xds_connected_proxies",
            "Proxies with an open ADS stream",
            m.connected_proxies.clone(),
        );
        registry.register(
            "config_errors",
            "Problems in the current config and registry inputs",
            m.config_errors.clone(),
        );
        registry.register(
            "listener_conflicts",
            "Services that lost a listener match to an older service",
            m.listener_conflicts.clone(),
        );
        registry.register(
            "translation_diagnostics",
            "Diagnostics of the current generation (all kinds)",
            m.translation_diagnostics.clone(),
        );
        registry.register(
            "mesh_generation",
            "Version of the published mesh state",
            m.mesh_generation.clone(),
        );
        registry.register(
            "services",
            "Services in the merged registry",
            m.services.clone(),
        );
        registry.register(
            "views",
            "Distinct proxy views with a cached snapshot",
            m.views.clone(),
        );
        registry.register(
            "view_cache_evictions",
            "Views evicted from the snapshot cache to stay within --max-views",
            m.view_cache_evictions.clone(),
        );
        registry.register(
            "cluster_part_builds",
            "Clusters and endpoints built for a clusters key (views differing only in labels no DestinationRule selects share one build per generation)",
            m.cluster_part_builds.clone(),
        );
        registry.register(
            "xds_stalled_streams",
            "ADS streams closed because the proxy left responses unread past --stream-send-timeout",
            m.stalled_streams.clone(),
        );
        registry.register(
            "xds_connections_aged_out",
            "xDS connections sent GOAWAY at their maximum age (--max-connection-age), their ADS streams ended so proxies reconnect, maybe to another replica",
            m.connections_aged_out.clone(),
        );
        registry.register(
            "xds_connections_closed_after_grace",
            "xDS connections past their maximum age still open after --max-connection-age-grace, closed by force",
            m.connections_closed_after_grace.clone(),
        );
        registry.register(
            "xds_streams_refused_unready",
            "ADS streams refused (UNAVAILABLE) because a registry or config source had not loaded yet",
            m.unready_refusals.clone(),
        );
        registry.register(
            "config_quarantined",
            "Config objects left out of pushes because a proxy rejected what they produced",
            m.config_quarantined.clone(),
        );
        registry.register(
            "config_quarantines",
            "Config objects left out of pushes after a proxy rejected them, since start",
            m.config_quarantines.clone(),
        );
        registry.register(
            "translation_duration_seconds",
            "Time to translate one proxy view",
            m.translation_seconds.clone(),
        );
        registry.register(
            "registry_connected",
            "1 while a pushing registry (Consul) answers; 0 while Pilotfish serves its last known state",
            m.registry_connected.clone(),
        );
        registry.register(
            "registry_consecutive_failures",
            "Failed requests to a pushing registry since its last success",
            m.registry_failures.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            ..m
        }
    }

    pub fn observe_translation(&self, elapsed: Duration) {
        self.translation_seconds.observe(elapsed.as_secs_f64());
    }

    pub fn set_registry_status(&self, registry: &str, connected: bool, failures: u32) {
        let label = RegistryLabel {
            registry: registry.to_string(),
        };
        self.registry_connected
            .get_or_create(&label)
            .set(i64::from(connected));
        self.registry_failures
            .get_or_create(&label)
            .set(i64::from(failures));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Encoding into a String cannot fail except on a formatter bug.
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

pub fn type_label(short: &str) -> TypeLabel {
    TypeLabel {
        r#type: short.to_string(),
    }
}
