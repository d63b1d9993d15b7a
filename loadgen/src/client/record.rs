//! What one stream observed: when it synced, the bytes it received for the
//! initial sync and for each change round, and when each change arrived.
//! Counters shared with the driver say how many streams got that far.

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
    /// Streams synced again after losing their server (`--restart`).
    resynced: AtomicUsize,
}

impl Progress {
    pub fn new(rounds: usize) -> Progress {
        Progress {
            synced: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            seen: (0..rounds).map(|_| AtomicUsize::new(0)).collect(),
            resynced: AtomicUsize::new(0),
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

    pub fn note_ended(&self) {
        self.ended.fetch_add(1, Ordering::Relaxed);
    }
}

/// Responses and bytes received in one phase.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Traffic {
    pub bytes: u64,
    /// Responses per type: CDS, EDS, LDS, RDS.
    pub responses: [u32; 4],
}

impl Traffic {
    fn add(&mut self, ty: XdsType, bytes: usize) {
        self.bytes += bytes as u64;
        self.responses[ty.index()] += 1;
    }
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
    /// Received after sync and outside change rounds.
    pub other: Traffic,
    pub connect_errors: u32,
    /// Why the stream ended before it was told to stop.
    pub error: Option<String>,
    /// Streams the server ended that this proxy opened again (`--restart`).
    pub reconnects: u32,
    /// From losing the stream to being synced on the new one.
    pub resync_time: Option<Duration>,
}

/// Files each response of a stream under its phase.
pub struct Recorder {
    pub record: StreamRecord,
    progress: Arc<Progress>,
    change: ChangeWatch,
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
        }
    }

    pub fn start(&mut self) {
        self.record.started = Some(Instant::now());
    }

    /// Records a response of `ty` of `bytes` encoded bytes; `shows` tells
    /// whether it carries a change (asked only while one is awaited).
    pub fn received(&mut self, ty: XdsType, bytes: usize, shows: impl FnOnce(&Probe) -> bool) {
        if self.record.sync_time.is_none() {
            self.record.initial.add(ty, bytes);
            return;
        }
        let change = self.change.borrow().clone();
        let Some(change) = change else {
            self.record.other.add(ty, bytes);
            return;
        };
        let Some(round) = self.record.rounds.get_mut(change.round) else {
            return;
        };
        round.traffic.add(ty, bytes);
        if round.seen_at.is_none() && ty == change.probe.carried_by() && shows(&change.probe) {
            round.seen_at = Some(Instant::now());
            if let Some(seen) = self.progress.seen.get(change.round) {
                seen.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Marks the stream synced the first time `synced` holds; on a stream
    /// opened again after `lost_at`, marks it resynced.
    pub fn check_synced(&mut self, synced: bool, lost_at: Option<Instant>) {
        if !synced {
            return;
        }
        if self.record.sync_time.is_none() {
            self.record.sync_time = self.record.started.map(|s| s.elapsed());
            self.progress.synced.fetch_add(1, Ordering::Relaxed);
        } else if let Some(lost) = lost_at
            && self.record.resync_time.is_none()
        {
            self.record.resync_time = Some(lost.elapsed());
            self.progress.resynced.fetch_add(1, Ordering::Relaxed);
        }
    }
}
