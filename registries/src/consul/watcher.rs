//! The watch loops.
//!
//! One task long-polls `/v1/catalog/services`; one task per service
//! long-polls `/v1/health/service/<name>` and converts the answer. Both send
//! events to a single coordinator that owns the state, starts and stops the
//! per-service tasks as services come and go, and publishes a new snapshot
//! only when something changed. Nothing is published before every service
//! was read once (no half mesh at start-up), and a failing Consul changes
//! nothing: the last snapshot stays until Consul answers again.
//!
//! Each loop backs off on its own after failures, up to
//! `BackoffConfig::max`. When any query gets through again, the coordinator
//! bumps a recovery generation that cuts every pending back-off short: once
//! Consul is back, the catalog (new services) and every service are read
//! again at once, not each after its own, possibly long, back-off.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::ConsulSnapshot;
use super::api::ConsulClient;
use super::backoff::Backoff;
use super::config::{ConsulConfig, valid_service_name};
use super::convert::{ConvertedService, convert_service};
use super::error::ConsulError;
use super::index::next_index;
use super::status::StatusTracker;
use crate::model::{RegistrySnapshot, ServicePort};

/// Pause after a blocking query that made no progress (see `IndexStep::pace`).
const PACE: Duration = Duration::from_millis(100);

/// Aborts the task when dropped, so that dropping the coordinator (or the
/// registry) stops every loop under it.
pub(crate) struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum Event {
    Catalog(Result<Vec<String>, ConsulError>),
    Service {
        name: String,
        task: u64,
        result: Result<ConvertedService, ConsulError>,
    },
}

struct ServiceTask {
    id: u64,
    _handle: AbortOnDrop,
    /// The last successful read; `None` until the first one.
    state: Option<ConvertedService>,
    /// Counts towards the initial sync: read once, or refused by Consul (a
    /// service Consul will not show us must not hold back all others).
    settled: bool,
}

struct Coordinator {
    client: ConsulClient,
    config: Arc<ConsulConfig>,
    events: mpsc::Sender<Event>,
    /// Bumped when Consul answers again after failing; see [`back_off`].
    recovered: watch::Sender<u64>,
    tasks: BTreeMap<String, ServiceTask>,
    next_task: u64,
    catalog_read: bool,
    /// Names already warned about (invalid, colliding), to warn once.
    warned: BTreeSet<String>,
    published: ConsulSnapshot,
    snapshots: watch::Sender<ConsulSnapshot>,
    status: StatusTracker,
}

pub(crate) async fn run(
    client: ConsulClient,
    config: Arc<ConsulConfig>,
    snapshots: watch::Sender<ConsulSnapshot>,
    status: StatusTracker,
) {
    let (events, mut inbox) = mpsc::channel(64);
    let (recovered, recovery) = watch::channel(0u64);
    let _catalog = AbortOnDrop(tokio::spawn(catalog_loop(
        client.clone(),
        config.clone(),
        events.clone(),
        recovery,
    )));
    let mut coordinator = Coordinator {
        client,
        config,
        events,
        recovered,
        tasks: BTreeMap::new(),
        next_task: 0,
        catalog_read: false,
        warned: BTreeSet::new(),
        published: ConsulSnapshot::default(),
        snapshots,
        status,
    };
    // The coordinator holds a sender itself, so the inbox never closes.
    while let Some(event) = inbox.recv().await {
        coordinator.handle(event);
    }
}

impl Coordinator {
    fn handle(&mut self, event: Event) {
        let was_connected = self.status.connected();
        match event {
            Event::Catalog(Ok(names)) => {
                self.status.success();
                self.catalog_read = true;
                self.reconcile(names);
            }
            Event::Catalog(Err(error)) => self.status.failure(&error, None),
            Event::Service { name, task, result } => {
                let Some(entry) = self.tasks.get_mut(&name).filter(|t| t.id == task) else {
                    // From a task stopped after it sent this: stale.
                    return;
                };
                match result {
                    Ok(converted) => {
                        self.status.success();
                        entry.state = Some(converted);
                        entry.settled = true;
                    }
                    Err(error) => {
                        entry.settled |= error.is_http_status();
                        self.status.failure(&error, Some(&name));
                    }
                }
            }
        }
        if !was_connected && self.status.connected() {
            // Consul answers again: every loop still backing off retries now.
            self.recovered.send_modify(|generation| *generation += 1);
        }
        self.publish();
    }

    /// Starts a task for each new service and stops those of removed ones.
    fn reconcile(&mut self, names: Vec<String>) {
        let mut wanted = BTreeSet::new();
        for name in names {
            if self.config.exclude_services.contains(&name) {
                continue;
            }
            if !valid_service_name(&name) {
                if self.warned.insert(name.clone()) {
                    warn!(service = %name, "consul: service name is not a DNS label (letters, digits, '-', '_'; at most 63); service skipped");
                }
                continue;
            }
            wanted.insert(name);
        }
        let before = self.tasks.len();
        self.tasks.retain(|name, _| wanted.contains(name));
        if self.tasks.len() != before {
            debug!(
                "consul: stopped watching {} removed services",
                before - self.tasks.len()
            );
        }
        for name in wanted {
            if self.tasks.contains_key(&name) {
                continue;
            }
            self.next_task += 1;
            let id = self.next_task;
            let handle = tokio::spawn(service_loop(
                self.client.clone(),
                self.config.clone(),
                name.clone(),
                id,
                self.events.clone(),
                self.recovered.subscribe(),
            ));
            debug!(service = %name, "consul: watching service");
            self.tasks.insert(
                name,
                ServiceTask {
                    id,
                    _handle: AbortOnDrop(handle),
                    state: None,
                    settled: false,
                },
            );
        }
    }

    fn publish(&mut self) {
        let synced =
            self.published.synced || (self.catalog_read && self.tasks.values().all(|t| t.settled));
        if !synced {
            return;
        }
        let snapshot = self.build();
        let old = &self.published;
        let services_changed = !old.synced || old.snapshot.services != snapshot.services;
        let endpoints_changed = !old.synced || old.snapshot.endpoints != snapshot.endpoints;
        if !services_changed && !endpoints_changed {
            return;
        }
        let next = ConsulSnapshot {
            services_version: old.services_version + u64::from(services_changed),
            endpoints_version: old.endpoints_version + u64::from(endpoints_changed),
            synced: true,
            snapshot: Arc::new(snapshot),
        };
        debug!(
            services = next.snapshot.services.len(),
            services_changed, "consul: publishing snapshot"
        );
        self.status.published(true, next.snapshot.services.len());
        self.published = next.clone();
        self.snapshots.send_replace(next);
    }

    fn build(&mut self) -> RegistrySnapshot {
        let mut out = RegistrySnapshot::default();
        for (name, task) in &self.tasks {
            let Some(ConvertedService {
                service: Some(service),
                endpoints,
                ..
            }) = &task.state
            else {
                continue;
            };
            // `Web` and `web` are one DNS name: the first (in name order) wins.
            if out.endpoints.contains_key(&service.hostname) {
                if self.warned.insert(name.clone()) {
                    warn!(service = %name, hostname = %service.hostname,
                        "consul: another service already has this hostname (names differ only in case); service skipped");
                }
                continue;
            }
            out.endpoints
                .insert(service.hostname.clone(), endpoints.clone());
            out.services.push(service.clone());
        }
        out.normalize();
        out
    }
}

/// Sleeps `delay`, unless Consul was reached again (the recovery
/// generation differs from `seen`, read before the failed request), in
/// which case it returns at once.
async fn back_off(recovery: &mut watch::Receiver<u64>, delay: Duration, seen: u64) {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    tokio::select! {
        () = &mut sleep => {}
        woken = async { recovery.wait_for(|generation| *generation != seen).await.is_ok() } => {
            // The coordinator is gone (the loop is about to be aborted):
            // never spin, sleep the delay out.
            if !woken {
                sleep.await;
            }
        }
    }
}

async fn catalog_loop(
    client: ConsulClient,
    config: Arc<ConsulConfig>,
    events: mpsc::Sender<Event>,
    mut recovery: watch::Receiver<u64>,
) {
    let wait = config.effective_wait();
    let mut backoff = Backoff::new(config.backoff);
    let mut index = 0;
    loop {
        let seen = *recovery.borrow_and_update();
        match client.catalog_services(index, wait).await {
            Ok(answer) => {
                backoff.reset();
                let step = next_index(index, answer.index);
                if step.reset {
                    info!(
                        from = index,
                        to = answer.index,
                        "consul: catalog index went backwards; reading everything again"
                    );
                }
                if events.send(Event::Catalog(Ok(answer.value))).await.is_err() {
                    return;
                }
                index = step.next;
                if step.pace {
                    tokio::time::sleep(PACE).await;
                }
            }
            Err(error) => {
                if events.send(Event::Catalog(Err(error))).await.is_err() {
                    return;
                }
                // After any failure (Consul may have restarted with other
                // state) the next read is a plain one, not a wait on an
                // index that may no longer mean anything.
                index = 0;
                back_off(&mut recovery, backoff.next_delay(), seen).await;
            }
        }
    }
}

async fn service_loop(
    client: ConsulClient,
    config: Arc<ConsulConfig>,
    name: String,
    task: u64,
    events: mpsc::Sender<Event>,
    mut recovery: watch::Receiver<u64>,
) {
    let wait = config.effective_wait();
    let mut backoff = Backoff::new(config.backoff);
    let mut index = 0;
    let mut previous_port: Option<ServicePort> = None;
    let mut last_warnings: Vec<String> = Vec::new();
    // Consul refused the last read (as opposed to not answering).
    let mut refused = false;
    loop {
        let seen = *recovery.borrow_and_update();
        let result = match client
            .health_service(&name, config.passing_only, index, wait)
            .await
        {
            Ok(answer) => {
                backoff.reset();
                if refused {
                    info!(service = %name, "consul: reading service again");
                    refused = false;
                }
                let step = next_index(index, answer.index);
                if step.reset {
                    info!(service = %name, from = index, to = answer.index, "consul: index went backwards; reading the service again");
                }
                index = step.next;
                let converted =
                    convert_service(&config, &name, &answer.value, previous_port.as_ref());
                // Warn when the problems change, not on every read.
                if converted.warnings != last_warnings {
                    for warning in &converted.warnings {
                        warn!("{warning}");
                    }
                    last_warnings = converted.warnings.clone();
                }
                previous_port = converted
                    .service
                    .as_ref()
                    .and_then(|s| s.ports.first().cloned());
                if events
                    .send(Event::Service {
                        name: name.clone(),
                        task,
                        result: Ok(converted),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                if step.pace {
                    tokio::time::sleep(PACE).await;
                }
                continue;
            }
            Err(error) => error,
        };
        // Connection failures are the catalog loop's to report; a service
        // that Consul refuses is this loop's.
        if result.is_http_status() && !refused {
            warn!(service = %name, error = %result, "consul: cannot read service; keeping its last endpoints, retrying");
        } else {
            debug!(service = %name, error = %result, "consul: cannot read service");
        }
        refused = result.is_http_status();
        if events
            .send(Event::Service {
                name: name.clone(),
                task,
                result: Err(result),
            })
            .await
            .is_err()
        {
            return;
        }
        index = 0;
        back_off(&mut recovery, backoff.next_delay(), seen).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::consul::api::ClientSettings;
    use crate::consul::status::ConsulStatus;

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn back_off_sleeps_its_delay_when_nothing_recovers() {
        let (_tx, mut rx) = watch::channel(0u64);
        let start = Instant::now();
        back_off(&mut rx, Duration::from_millis(50), 0).await;
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn back_off_ends_at_once_if_consul_was_reached_since_the_request() {
        // Recovered between the failed request (seen = 0) and the back-off.
        let (tx, mut rx) = watch::channel(0u64);
        tx.send_replace(1);
        let start = Instant::now();
        back_off(&mut rx, LONG, 0).await;
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn back_off_is_cut_short_by_a_recovery() {
        let (tx, mut rx) = watch::channel(0u64);
        let start = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send_modify(|g| *g += 1);
            // Keep the sender: a dropped one must not be what ends the wait.
            tokio::time::sleep(LONG).await;
        });
        back_off(&mut rx, LONG, 0).await;
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn back_off_without_a_coordinator_still_sleeps() {
        let (tx, mut rx) = watch::channel(0u64);
        drop(tx);
        let start = Instant::now();
        back_off(&mut rx, Duration::from_millis(50), 0).await;
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    fn coordinator() -> (Coordinator, watch::Receiver<u64>) {
        let config = Arc::new(ConsulConfig::default());
        let client = ConsulClient::new(&ClientSettings {
            address: config.address.clone(),
            token: None,
            datacenter: None,
            connect_timeout: config.connect_timeout,
        })
        .expect("client");
        let (events, _inbox) = mpsc::channel(1);
        let (recovered, recovery) = watch::channel(0u64);
        let (snapshots, _) = watch::channel(ConsulSnapshot::default());
        let (status, _) = watch::channel(ConsulStatus::default());
        let coordinator = Coordinator {
            status: StatusTracker::new(status, client.base_url().to_string()),
            client,
            config,
            events,
            recovered,
            tasks: BTreeMap::new(),
            next_task: 0,
            catalog_read: false,
            warned: BTreeSet::new(),
            published: ConsulSnapshot::default(),
            snapshots,
        };
        (coordinator, recovery)
    }

    fn unreachable() -> ConsulError {
        ConsulError::Transport {
            url: "http://127.0.0.1:8500/v1/catalog/services".into(),
            message: "connection refused".into(),
        }
    }

    #[tokio::test]
    async fn consul_answering_again_wakes_every_backing_off_loop() {
        let (mut coordinator, recovery) = coordinator();
        coordinator.handle(Event::Catalog(Ok(Vec::new())));
        let first = *recovery.borrow();
        assert_eq!(first, 1, "the first answer ends start-up back-offs too");
        coordinator.handle(Event::Catalog(Ok(Vec::new())));
        assert_eq!(
            *recovery.borrow(),
            first,
            "answers while connected wake nobody"
        );
        coordinator.handle(Event::Catalog(Err(unreachable())));
        coordinator.handle(Event::Catalog(Err(unreachable())));
        assert_eq!(*recovery.borrow(), first, "failures wake nobody");
        coordinator.handle(Event::Catalog(Ok(Vec::new())));
        assert_eq!(
            *recovery.borrow(),
            first + 1,
            "the way back wakes every loop"
        );
    }
}
