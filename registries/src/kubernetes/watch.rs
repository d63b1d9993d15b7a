//! Reflectors: one `watcher(...).default_backoff().reflect(writer)` stream
//! per watched collection, each driven by its own task (a store fills only
//! while its stream is polled). Every change wakes one [`Notify`]; whoever
//! builds state from the stores waits on it.
//!
//! Recovery is kube-runtime's: a broken watch is resumed from the last
//! resource version; when that version is gone (API server restarted with a
//! new watch cache, or compacted) the collection is listed again and the
//! store is swapped in one step at the end of the list, so readers never see
//! a half-listed store. Failed requests are retried with client-go's
//! back-off (0.8 s doubling to 30 s, jittered).

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::status::StatusTracker;
use crate::consul::error::error_chain;

/// How often the API server is probed while watches are failing, so that
/// `connected` turns true again once it answers (a resumed watch emits no
/// event until something changes).
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Aborts a task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running reflector: its store and the task feeding it.
pub struct Reflector<K: Resource + 'static>
where
    K::DynamicType: Eq + Hash,
{
    pub store: Store<K>,
    /// `Service (namespace default)`, for messages.
    pub what: String,
    _task: AbortOnDrop,
}

impl<K: Resource + Clone + 'static> Reflector<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    /// Waits until the first list has completed; `false` if the reflector
    /// task is gone.
    pub async fn ready(&self) -> bool {
        self.store.wait_until_ready().await.is_ok()
    }
}

/// Where a collection is watched: the whole cluster or one namespace.
pub fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

pub fn describe(kind: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{kind} (namespace {ns})"),
        None => format!("{kind} (all namespaces)"),
    }
}

/// Starts reflecting `api` into a new store. `strip` trims each object
/// before it is stored (managed fields, the last-applied annotation...).
/// Must be called inside a Tokio runtime.
pub fn reflect<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    what: String,
    strip: fn(&mut K),
    tracker: StatusTracker,
    changed: Arc<Notify>,
) -> Reflector<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    reflect_selected(
        api,
        dyntype,
        what,
        watcher::Config::default(),
        strip,
        tracker,
        changed,
    )
}

/// [`reflect`], listing and watching only what `selection` selects (a
/// field or label selector evaluated by the API server).
pub fn reflect_selected<K>(
    api: Api<K>,
    dyntype: K::DynamicType,
    what: String,
    selection: watcher::Config,
    strip: fn(&mut K),
    tracker: StatusTracker,
    changed: Arc<Notify>,
) -> Reflector<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let writer = reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let stream = watcher::watcher(api, selection)
        .modify(strip)
        .default_backoff()
        .reflect(writer);
    let label = what.clone();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                // `Init` is emitted before the list is even tried.
                Ok(Event::Init) => {}
                Ok(Event::InitApply(_)) => tracker.success(),
                Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_)) => {
                    tracker.success();
                    changed.notify_one();
                }
                Err(e) => match classify(&e) {
                    Failure::Expired => {
                        tracing::debug!(what = %label, "watch expired; listing again")
                    }
                    Failure::Refused => tracker.refused(&label, &error_chain(&e)),
                    Failure::Unreachable => tracker.failure(&label, &error_chain(&e)),
                },
            }
        }
    });
    Reflector {
        store,
        what,
        _task: AbortOnDrop(task),
    }
}

enum Failure {
    /// The resource version is too old (410 Gone): the watcher lists again;
    /// routine after a long disconnection or an API server restart.
    Expired,
    /// The API server answered with an error (403 without RBAC, 404 without
    /// the CRDs): it is reachable, the request is not allowed or not served.
    Refused,
    /// No answer: connection refused or reset, TLS, timeouts.
    Unreachable,
}

fn classify(error: &watcher::Error) -> Failure {
    use kube::Error as E;
    match error {
        watcher::Error::WatchError(status) if status.code == 410 => Failure::Expired,
        watcher::Error::WatchError(_) => Failure::Refused,
        watcher::Error::InitialListFailed(E::Api(_))
        | watcher::Error::WatchStartFailed(E::Api(_))
        | watcher::Error::WatchFailed(E::Api(_)) => Failure::Refused,
        _ => Failure::Unreachable,
    }
}

/// While the tracker says disconnected, asks the API server for its version
/// every couple of seconds and records a success when it answers.
pub fn probe_while_disconnected(client: Client, tracker: StatusTracker) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            if !tracker.connected() && client.apiserver_version().await.is_ok() {
                tracker.success();
            }
        }
    }))
}

/// Drops what Pilotfish never reads and that can be large: managed fields
/// and kubectl's copy of the whole object in an annotation.
pub fn strip_metadata(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}
