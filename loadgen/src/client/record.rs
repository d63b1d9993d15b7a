//! What one stream observed: when it synced, the bytes it received for the
//! initial sync, for each change round and for a resync after losing its
//! server, and when each change arrived. Counters shared with the driver
//! say how many streams got that far, and how many each replica holds.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::inspect::{Probe, XdsType};

/// The change the driver is waiting for, announced before it is made.
#[derive(Debug)]
pub struct ActiveChange {
    pub round: usize,
    pub probe: Probe,
}

pub type ChangeWatch = watch::Receiver<Option<Arc<ActiveChange>>>;

/// How far the streams got, for the driver to wait on.
pub struct Progress {
    synced: AtomicUsize,
    ended: AtomicUsize,
    seen: Vec<AtomicUsize>,
    /// Streams synced again after losing their server (`--restart`,
    /// `--kill-replica`).
    resynced: AtomicUsize,
    /// Per replica, the streams synced on it right now.
    holding: Vec<AtomicUsize>,
}

impl Progress {
    pub fn new(rounds: usize, replicas: usize) -> Progress {
        Progress {
            synced: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            seen: (0..rounds).map(|_| AtomicUsize::new(0)).collect(),
            resynced: AtomicUsize::new(0),
            holding: (0..replicas).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    pub fn synced(&self) -> usize {
        self.synced.load(Ordering::Relaxed)
    }

    /// Streams that ended (failed, or closed by the server) before being stopped.
    pub fn ended(&self) -> usize {
        self.ended.load(Ordering::Relaxed)
    }

    pub fn seen(&self, round: usize) -> usize {
        self.seen
            .get(round)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    pub fn resynced(&self) -> usize {
        self.resynced.load(Ordering::Relaxed)
    }

    /// Streams synced on `replica` and still connected to it.
    pub fn holding(&self, replica: usize) -> usize {
        self.holding
            .get(replica)
            .map_or(0, |count| count.load(Ordering::Relaxed))
    }

    fn note_ended(&self) {
        self.ended.fetch_add(1, Ordering::Relaxed);
    }

    fn hold(&self, replica: usize) {
        if let Some(count) = self.holding.get(replica) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn let_go(&self, replica: usize) {
        if let Some(count) = self.holding.get(replica) {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Responses, resources and bytes received in one phase.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Traffic {
    pub bytes: u64,
    /// Responses per type: CDS, EDS, LDS, RDS.
    pub responses: [u32; 4],
    /// Resources in those responses, per type.
    pub resources: [u32; 4],
}

impl Traffic {
    fn add(&mut self, response: &ResponseSize) {
        let i = response.ty.index();
        self.bytes += response.bytes as u64;
        self.responses[i] += 1;
        self.resources[i] += response.resources as u32;
    }
}

/// A response's type and size, as the recorder files it.
pub struct ResponseSize {
    pub ty: XdsType,
    /// Encoded bytes.
    pub bytes: usize,
    pub resources: usize,
}

#[derive(Clone, Debug, Default)]
pub struct RoundRecord {
    pub traffic: Traffic,
    /// When the response showing the change arrived.
    pub seen_at: Option<Instant>,
}

#[derive(Clone, Debug, Default)]
pub struct StreamRecord {
    pub started: Option<Instant>,
    pub sync_time: Option<Duration>,
    pub initial: Traffic,
    pub rounds: Vec<RoundRecord>,
    /// Received after sync and outside change rounds and the resync.
    pub other: Traffic,
    pub connect_errors: u32,
    /// Of those, the failed connects after the stream was lost.
    pub reconnect_errors: u32,
    /// Why the stream ended before it was told to stop.
    pub error: Option<String>,
    /// Streams the server ended that this proxy opened again (`--restart`,
    /// `--kill-replica`).
    pub reconnects: u32,
    /// From losing the stream to being synced on the new one.
    pub resync_time: Option<Duration>,
    /// Received from losing the stream until synced again.
    pub resync: Traffic,
    /// The replica the proxy first synced on (an index into the replicas).
    pub first_replica: Option<usize>,
}

/// Files each response of a stream under its phase.
pub struct Recorder {
    pub record: StreamRecord,
    progress: Arc<Progress>,
    change: ChangeWatch,
    /// The replica the current stream is (being) opened on.
    replica: usize,
    /// Set once the current stream synced: the replica counted as holding it.
    holder: Option<usize>,
    /// When the first stream was lost (the resync is timed from there).
    lost_at: Option<Instant>,
}

impl Recorder {
    pub fn new(rounds: usize, progress: Arc<Progress>, change: ChangeWatch) -> Recorder {
        Recorder {
            record: StreamRecord {
                rounds: vec![RoundRecord::default(); rounds],
                ..Default::default()
            },
            progress,
            change,
            replica: 0,
            holder: None,
            lost_at: None,
        }
    }

    pub fn start(&mut self) {
        self.record.started = Some(Instant::now());
    }

    /// The next stream is opened on `replica`.
    pub fn connected_to(&mut self, replica: usize) {
        self.replica = replica;
    }

    /// A connect failed (after a lost stream, a reconnect error too).
    pub fn connect_failed(&mut self) {
        self.record.connect_errors += 1;
        if self.lost_at.is_some() {
            self.record.reconnect_errors += 1;
        }
    }

    /// The server ended a synced stream; the proxy will open another.
    pub fn lost(&mut self) {
        self.lost_at.get_or_insert_with(Instant::now);
        self.record.reconnects += 1;
        self.release();
    }

    /// The stream ended for good with `error`.
    pub fn ended(&mut self, error: String) {
        self.record.error = Some(error);
        self.progress.note_ended();
        self.release();
    }

    /// The replica no longer holds this stream.
    fn release(&mut self) {
        if let Some(replica) = self.holder.take() {
            self.progress.let_go(replica);
        }
    }

    fn resyncing(&self) -> bool {
        self.lost_at.is_some() && self.record.resync_time.is_none()
    }

    /// Records a response; `shows` tells whether it carries a change
    /// (asked only while one is awaited).
    pub fn received(&mut self, response: ResponseSize, shows: impl FnOnce(&Probe) -> bool) {
        if self.record.sync_time.is_none() {
            self.record.initial.add(&response);
            return;
        }
        if self.resyncing() {
            self.record.resync.add(&response);
            return;
        }
        let change = self.change.borrow().clone();
        let Some(change) = change else {
            self.record.other.add(&response);
            return;
        };
        let Some(round) = self.record.rounds.get_mut(change.round) else {
            return;
        };
        round.traffic.add(&response);
        let carries = response.ty == change.probe.carried_by();
        if round.seen_at.is_none() && carries && shows(&change.probe) {
            round.seen_at = Some(Instant::now());
            if let Some(seen) = self.progress.seen.get(change.round) {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Once per stream, when `synced` first holds: counts the stream as
    /// held by its replica, and marks the proxy synced (its first stream)
    /// or resynced (the first stream after one was lost).
    pub fn check_synced(&mut self, synced: bool) {
        if !synced || self.holder.is_some() {
            return;
        }
        self.holder = Some(self.replica);
        self.progress.hold(self.replica);
        self.record.first_replica.get_or_insert(self.replica);
        if self.record.sync_time.is_none() {
            self.record.sync_time = self.record.started.map(|s| s.elapsed());
            self.progress.synced.fetch_add(1, Ordering::Relaxed);
        } else if let Some(lost) = self.lost_at
            && self.record.resync_time.is_none()
        {
            self.record.resync_time = Some(lost.elapsed());
            self.progress.resynced.fetch_add(1, Ordering::Relaxed);
        }
    }
}
