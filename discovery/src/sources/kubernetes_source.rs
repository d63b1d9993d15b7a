//! What the Kubernetes-backed config and credential sources share: the
//! namespaces they watch, their running tasks and status, and the loop
//! that publishes the reflectors' contents whenever they change.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pilotfish_registries::kubernetes::watch::{AbortOnDrop, probe_while_disconnected};
use pilotfish_registries::kubernetes::{ApiServer, KubernetesStatus, StatusTracker};
use tokio::sync::{Notify, mpsc, watch};

use crate::metrics::Metrics;
use crate::push::Change;

/// Wait after a watch event before publishing, so that a burst of events
/// (an initial list, `kubectl apply` of many objects) makes one change.
const COALESCE: Duration = Duration::from_millis(20);

/// One watch per namespace, or one cluster-wide (`None`) when none are given.
pub fn namespace_scopes(namespaces: &BTreeSet<String>) -> Vec<Option<&str>> {
    if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    }
}

/// A running source. Dropping it stops every watch.
pub struct KubernetesSource {
    status: watch::Receiver<KubernetesStatus>,
    _tasks: Vec<AbortOnDrop>,
}

impl KubernetesSource {
    /// Runs `publisher` (which turns watch contents into changes) with the
    /// probe that notices a lost API server and the task that mirrors the
    /// status into metrics under `name`.
    pub fn spawn(
        name: &'static str,
        api: &ApiServer,
        tracker: StatusTracker,
        status: watch::Receiver<KubernetesStatus>,
        publisher: impl Future<Output = ()> + Send + 'static,
        metrics: Arc<Metrics>,
    ) -> Self {
        let publisher = tokio::spawn(publisher);
        let probe = probe_while_disconnected(api.client.clone(), tracker);
        let metrics_task = tokio::spawn(report_status(name, status.clone(), metrics));
        KubernetesSource {
            status,
            _tasks: vec![AbortOnDrop(publisher), probe, AbortOnDrop(metrics_task)],
        }
    }

    pub fn status(&self) -> watch::Receiver<KubernetesStatus> {
        self.status.clone()
    }
}

async fn report_status(
    name: &'static str,
    mut status: watch::Receiver<KubernetesStatus>,
    metrics: Arc<Metrics>,
) {
    loop {
        let current = status.borrow_and_update().clone();
        metrics.set_registry_status(name, current.connected, current.consecutive_failures);
        if status.changed().await.is_err() {
            break;
        }
    }
}

/// Publishes `current()` (a value and the number of objects in it) as a
/// change each time it differs from the last one published, woken by
/// `changed`. Returns when nobody receives changes any more.
pub async fn publish_on_change<T: PartialEq>(
    changed: Arc<Notify>,
    changes: mpsc::UnboundedSender<Change>,
    tracker: StatusTracker,
    mut current: impl FnMut() -> (T, usize),
    to_change: impl Fn(&T) -> Change,
) {
    let mut last: Option<T> = None;
    loop {
        let (value, objects) = current();
        tracker.published(true, objects, Vec::new());
        if last.as_ref() != Some(&value) {
            if changes.send(to_change(&value)).is_err() {
                return;
            }
            last = Some(value);
        }
        changed.notified().await;
        tokio::time::sleep(COALESCE).await;
    }
}
