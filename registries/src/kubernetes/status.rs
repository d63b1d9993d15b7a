//! Connection status of watches on a Kubernetes API server, for logs,
//! metrics, `/debug/registries` and readiness. Shared by the Kubernetes
//! registry and the Istio config source.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tracing::{debug, info, warn};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KubernetesStatus {
    /// What is watched (`kubernetes`, `kubernetes-config`), for messages.
    pub name: String,
    /// API server URL.
    pub api_server: String,
    /// The API server answered the last request (a list, a watch event, or
    /// the reachability probe run while watches are failing).
    pub connected: bool,
    /// Every watched collection was listed once, so the published state is
    /// complete (stays true: later outages keep the last state).
    pub synced: bool,
    /// The latest error, kept after recovery for diagnostics.
    pub last_error: Option<String>,
    pub last_success: Option<SystemTime>,
    /// Failed list/watch requests since the last success.
    pub consecutive_failures: u32,
    /// Services (registry) or config objects (config source) published.
    pub objects: usize,
    /// Objects that could not be used, each naming the object.
    pub warnings: Vec<String>,
}

/// Updates the status channel; logs once per state change rather than
/// once per failed request. Cheap to clone (one per watch).
#[derive(Clone)]
pub struct StatusTracker {
    tx: Arc<watch::Sender<KubernetesStatus>>,
}

impl StatusTracker {
    pub fn new(name: &str, api_server: &str) -> (StatusTracker, watch::Receiver<KubernetesStatus>) {
        let (tx, rx) = watch::channel(KubernetesStatus {
            name: name.to_string(),
            api_server: api_server.to_string(),
            ..KubernetesStatus::default()
        });
        (StatusTracker { tx: Arc::new(tx) }, rx)
    }

    pub fn connected(&self) -> bool {
        self.tx.borrow().connected
    }

    /// The API server answered.
    pub fn success(&self) {
        self.tx.send_if_modified(|s| {
            s.last_success = Some(SystemTime::now());
            let changed = !s.connected || s.consecutive_failures != 0;
            if !s.connected {
                if s.last_error.is_some() {
                    info!(source = %s.name, api_server = %s.api_server,
                        "kubernetes: reachable again after {} failed requests; watches resume",
                        s.consecutive_failures);
                } else {
                    info!(source = %s.name, api_server = %s.api_server, "kubernetes: connected");
                }
            }
            s.connected = true;
            s.consecutive_failures = 0;
            changed
        });
    }

    /// A list or watch of `what` failed; the watcher retries with back-off.
    pub fn failure(&self, what: &str, error: &str) {
        let message = format!("{what}: {error}");
        self.tx.send_if_modified(|s| {
            let was_connected = s.connected;
            s.connected = false;
            s.consecutive_failures = s.consecutive_failures.saturating_add(1);
            if was_connected || s.consecutive_failures == 1 || s.last_error.as_deref() != Some(&message) {
                warn!(source = %s.name, api_server = %s.api_server, error = %message,
                    "kubernetes: watch failing; keeping the last known state, retrying with back-off");
            } else {
                debug!(source = %s.name, error = %message, failures = s.consecutive_failures,
                    "kubernetes: still failing");
            }
            s.last_error = Some(message.clone());
            true
        });
    }

    /// The API server answered a list or watch of `what` with an error
    /// (403, 404...): it is reachable, so `connected` is unchanged; the
    /// error is recorded and logged once per distinct message.
    pub fn refused(&self, what: &str, error: &str) {
        let message = format!("{what}: {error}");
        self.tx.send_if_modified(|s| {
            if s.last_error.as_deref() == Some(message.as_str()) {
                debug!(source = %s.name, error = %message, "kubernetes: still refused");
                return false;
            }
            warn!(source = %s.name, api_server = %s.api_server, error = %message,
                "kubernetes: the API server refused a list or watch (RBAC? CRDs installed?); retrying with back-off");
            s.last_error = Some(message.clone());
            true
        });
    }

    /// A state was published; `warnings` replace the previous ones (new
    /// ones are logged).
    pub fn published(&self, synced: bool, objects: usize, warnings: Vec<String>) {
        self.tx.send_if_modified(|s| {
            for w in warnings.iter().filter(|w| !s.warnings.contains(w)) {
                warn!(source = %s.name, "{w}");
            }
            if synced && !s.synced {
                info!(source = %s.name, objects, "kubernetes: initial list complete");
            }
            let changed = s.synced != synced || s.objects != objects || s.warnings != warnings;
            s.synced = synced;
            s.objects = objects;
            s.warnings = warnings;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_flip_connected_until_a_success_and_keep_the_last_error() {
        let (tracker, rx) = StatusTracker::new("kubernetes", "https://127.0.0.1:6443");
        tracker.success();
        assert!(rx.borrow().connected);
        tracker.failure("Service (all namespaces)", "connection refused");
        tracker.failure("Pod (all namespaces)", "connection refused");
        let down = rx.borrow().clone();
        assert!(!down.connected);
        assert_eq!(down.consecutive_failures, 2);
        assert_eq!(
            down.last_error.as_deref(),
            Some("Pod (all namespaces): connection refused")
        );
        tracker.success();
        let up = rx.borrow().clone();
        assert!(up.connected && up.consecutive_failures == 0);
        assert!(up.last_error.is_some());
        tracker.refused("VirtualService", "404 not found");
        let refused = rx.borrow().clone();
        assert!(
            refused.connected,
            "an answer, even an error, means reachable"
        );
        assert_eq!(
            refused.last_error.as_deref(),
            Some("VirtualService: 404 not found")
        );
        tracker.published(true, 3, vec!["w".into()]);
        let s = rx.borrow().clone();
        assert!(s.synced);
        assert_eq!((s.objects, s.warnings.len()), (3, 1));
    }
}
