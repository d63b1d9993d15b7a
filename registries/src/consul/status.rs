//! Connection status of the Consul registry, for logs, metrics and readiness.

use std::time::SystemTime;

use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::error::ConsulError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsulStatus {
    /// The last request to Consul got an answer with data. False before the
    /// first answer and while Consul is unreachable or failing.
    pub connected: bool,
    /// Every service was read at least once, so the published snapshot is
    /// the whole catalog (stays true once reached: later outages keep the
    /// last snapshot).
    pub synced: bool,
    /// The latest error, kept after recovery for diagnostics.
    pub last_error: Option<String>,
    pub last_success: Option<SystemTime>,
    /// Failed requests since the last success (connection-level failures:
    /// the catalog query, or any query that got no answer).
    pub consecutive_failures: u32,
    /// Services in the published snapshot.
    pub services: usize,
}

/// Updates the status channel and logs once per state change rather than
/// once per failed request.
pub(crate) struct StatusTracker {
    tx: watch::Sender<ConsulStatus>,
    address: String,
}

impl StatusTracker {
    pub fn new(tx: watch::Sender<ConsulStatus>, address: String) -> StatusTracker {
        StatusTracker { tx, address }
    }

    /// Whether the last request got an answer (see [`ConsulStatus::connected`]).
    pub fn connected(&self) -> bool {
        self.tx.borrow().connected
    }

    pub fn success(&self) {
        let address = &self.address;
        // last_success alone changes on every answer; subscribers are woken
        // only for changes of state.
        self.tx.send_if_modified(|s| {
            s.last_success = Some(SystemTime::now());
            let changed = !s.connected || s.consecutive_failures != 0;
            if !s.connected {
                if s.last_error.is_some() {
                    info!(consul = %address, "consul: reachable again after {} failed requests", s.consecutive_failures);
                } else {
                    info!(consul = %address, "consul: connected");
                }
            }
            s.connected = true;
            s.consecutive_failures = 0;
            changed
        });
    }

    /// A failed request. `service` names the per-service query that failed,
    /// `None` for the catalog query. A service query that Consul answered
    /// with an error status (ACL denied, say) says nothing about the
    /// connection: it is recorded and logged by the service's loop.
    pub fn failure(&self, error: &ConsulError, service: Option<&str>) {
        let address = &self.address;
        let message = error.to_string();
        self.tx.send_if_modified(|s| {
            let changed = s.last_error.as_deref() != Some(message.as_str());
            s.last_error = Some(message.clone());
            if service.is_some() && error.is_http_status() {
                return changed;
            }
            let was_connected = s.connected;
            s.connected = false;
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            if was_connected || s.consecutive_failures == 1 {
                warn!(consul = %address, error = %message,
                    "consul: unreachable or failing; keeping the last known services and endpoints, retrying with back-off");
            } else {
                debug!(consul = %address, error = %message, failures = s.consecutive_failures, "consul: still failing");
            }
            true
        });
    }

    pub fn published(&self, synced: bool, services: usize) {
        self.tx.send_if_modified(|s| {
            let changed = s.synced != synced || s.services != services;
            if synced && !s.synced {
                info!(consul = %self.address, services, "consul: initial read complete");
            }
            s.synced = synced;
            s.services = services;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport() -> ConsulError {
        ConsulError::Transport {
            url: "http://127.0.0.1:8500/v1/catalog/services".into(),
            message: "connection refused".into(),
        }
    }

    #[test]
    fn failures_flip_connected_and_count_until_a_success() {
        let (tx, rx) = watch::channel(ConsulStatus::default());
        let tracker = StatusTracker::new(tx, "http://127.0.0.1:8500/".into());
        tracker.success();
        assert!(rx.borrow().connected);
        tracker.failure(&transport(), None);
        tracker.failure(&transport(), Some("web"));
        let down = rx.borrow().clone();
        assert!(!down.connected);
        assert_eq!(down.consecutive_failures, 2);
        assert!(
            down.last_error
                .as_deref()
                .is_some_and(|e| e.contains("/v1/catalog/services"))
        );
        tracker.success();
        let up = rx.borrow().clone();
        assert!(up.connected);
        assert_eq!(up.consecutive_failures, 0);
        assert!(
            up.last_error.is_some(),
            "the last error is kept for diagnostics"
        );
    }

    #[test]
    fn a_refused_service_query_does_not_mean_disconnected() {
        let (tx, rx) = watch::channel(ConsulStatus::default());
        let tracker = StatusTracker::new(tx, "http://127.0.0.1:8500/".into());
        tracker.success();
        tracker.failure(
            &ConsulError::Status {
                url: "http://127.0.0.1:8500/v1/health/service/web".into(),
                status: 403,
                body: "Permission denied".into(),
            },
            Some("web"),
        );
        let status = rx.borrow().clone();
        assert!(status.connected);
        assert_eq!(status.consecutive_failures, 0);
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("403"))
        );
    }
}
