//! The run's results: summarised from the stream records, printed as
//! Markdown tables (ready for docs/benchmarks.md) and optionally as JSON.

use std::fmt::Write as _;
use std::time::Instant;

use serde::Serialize;

use crate::change::ChangeKind;
use crate::client::record::Traffic;
use crate::client::{Protocol, StreamRecord};
use crate::inspect::XdsType;

/// p50, p99 and max of a sample (nearest rank); zeros when empty.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    /// "p50 / p99 / max" with each value formatted by `f`.
    fn format(&self, f: impl Fn(f64) -> String) -> String {
        format!("{} / {} / {}", f(self.p50), f(self.p99), f(self.max))
    }

    /// "p50 / max" in bytes.
    fn format_bytes(&self) -> String {
        format!("{} / {}", bytes(self.p50), bytes(self.max))
    }

    pub fn of(mut values: Vec<f64>) -> Spread {
        if values.is_empty() {
            return Spread::default();
        }
        values.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let i = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[i - 1]
        };
        Spread {
            p50: rank(0.50),
            p99: rank(0.99),
            max: values[values.len() - 1],
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct ServerFigures {
    pub pid: u32,
    pub rss_idle_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_after_disconnect_mib: f64,
    pub hwm_mib: f64,
    pub input_problems: Option<usize>,
}

#[derive(Debug, Serialize)]
pub struct SyncFigures {
    pub synced: usize,
    /// From the first connect to the last stream synced.
    pub wall_s: f64,
    pub server_cpu_s: f64,
    pub sync_ms: Spread,
    pub bytes_per_proxy: Spread,
    /// Responses of each type (CDS, EDS, LDS, RDS) over all proxies.
    pub responses: [u64; 4],
}

#[derive(Debug, Serialize)]
pub struct ChangeFigures {
    pub kind: ChangeKind,
    pub round: usize,
    pub service: usize,
    pub server_cpu_s: f64,
    /// Proxies that received the change.
    pub received: usize,
    /// Proxies synced when the change was made.
    pub expected: usize,
    pub fanout_ms: Spread,
    pub bytes_per_proxy: Spread,
    /// Responses of each type (CDS, EDS, LDS, RDS) over all proxies during the round.
    pub responses: [u64; 4],
}

/// How the proxies that lost their server synced again, whatever took it
/// away (`--restart`, `--kill-replica`).
#[derive(Debug, Serialize)]
pub struct ResyncFigures {
    /// Proxies synced on the server that went.
    pub expected: usize,
    /// Of those, synced again.
    pub resynced: usize,
    /// From the signal to the last proxy resynced (or the round timeout).
    pub wall_s: f64,
    /// Per proxy, from losing its stream to being synced again.
    pub resync_ms: Spread,
    pub reconnects: u64,
    /// Connects that failed while the proxies reconnected.
    pub reconnect_errors: u64,
    /// CPU of the server(s) the proxies resynced on, meanwhile.
    pub server_cpu_s: f64,
    /// What each resynced proxy received from losing its stream until
    /// synced again.
    pub bytes_per_proxy: Spread,
    /// Responses and resources of each type (CDS, EDS, LDS, RDS) over the
    /// resynced proxies.
    pub responses: [u64; 4],
    pub resources: [u64; 4],
}

/// A restart of the server under the synced proxies (`--restart`).
#[derive(Debug, Serialize)]
pub struct RestartFigures {
    #[serde(flatten)]
    pub resync: ResyncFigures,
    /// From SIGTERM to the new process ready.
    pub ready_s: f64,
}

/// A replica killed under its synced proxies, which move to the others
/// (`--kill-replica`).
#[derive(Debug, Serialize)]
pub struct FailoverFigures {
    /// Index of the killed replica (its figures are in `other_replicas`).
    pub killed_replica: usize,
    #[serde(flatten)]
    pub resync: ResyncFigures,
    /// The surviving replicas' RSS just before the kill, and its peak
    /// until the proxies resynced (the largest replica's, with several).
    pub survivor_rss_before_mib: f64,
    pub survivor_rss_peak_mib: f64,
}

/// What the driver measured while proxies resynced.
pub struct ResyncMeasure {
    pub expected: usize,
    pub wall_s: f64,
    pub server_cpu_s: f64,
}

/// What the driver measured around the restart.
pub struct RestartMeasure {
    pub resync: ResyncMeasure,
    pub ready_s: f64,
}

/// What the driver measured around the killed replica.
pub struct FailoverMeasure {
    pub resync: ResyncMeasure,
    pub killed_replica: usize,
    pub survivor_rss_before_kib: u64,
    pub survivor_rss_peak_kib: u64,
}

fn resync_figures(records: &[StreamRecord], measure: ResyncMeasure) -> ResyncFigures {
    let resynced: Vec<&StreamRecord> = records.iter().filter(|r| r.resync_time.is_some()).collect();
    let times = resynced
        .iter()
        .filter_map(|r| r.resync_time)
        .map(|t| t.as_secs_f64() * 1000.0)
        .collect();
    let traffic = || resynced.iter().map(|r| &r.resync);
    ResyncFigures {
        expected: measure.expected,
        resynced: resynced.len(),
        wall_s: measure.wall_s,
        resync_ms: Spread::of(times),
        reconnects: records.iter().map(|r| u64::from(r.reconnects)).sum(),
        reconnect_errors: records.iter().map(|r| u64::from(r.reconnect_errors)).sum(),
        server_cpu_s: measure.server_cpu_s,
        bytes_per_proxy: Spread::of(traffic().map(|t| t.bytes as f64).collect()),
        responses: sum_per_type(traffic().map(|t| &t.responses)),
        resources: sum_per_type(traffic().map(|t| &t.resources)),
    }
}

pub fn restart_figures(records: &[StreamRecord], measure: RestartMeasure) -> RestartFigures {
    RestartFigures {
        resync: resync_figures(records, measure.resync),
        ready_s: measure.ready_s,
    }
}

pub fn failover_figures(records: &[StreamRecord], measure: FailoverMeasure) -> FailoverFigures {
    FailoverFigures {
        killed_replica: measure.killed_replica,
        resync: resync_figures(records, measure.resync),
        survivor_rss_before_mib: mib(measure.survivor_rss_before_kib),
        survivor_rss_peak_mib: mib(measure.survivor_rss_peak_kib),
    }
}

/// Streams whose first sync was on each replica.
pub fn proxies_per_replica(records: &[StreamRecord], replicas: usize) -> Vec<usize> {
    let mut counts = vec![0; replicas];
    for replica in records.iter().filter_map(|r| r.first_replica) {
        if let Some(count) = counts.get_mut(replica) {
            *count += 1;
        }
    }
    counts
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub proxies: usize,
    pub protocol: Protocol,
    pub views: usize,
    pub services: usize,
    pub endpoints: usize,
    pub virtual_services: usize,
    pub destination_rules: usize,
    /// The server, or replica 0 with `--replicas`.
    pub server: ServerFigures,
    /// Replicas 1.. with `--replicas` (a killed one read until its end).
    pub other_replicas: Vec<ServerFigures>,
    /// Streams whose first sync was on each replica.
    pub proxies_per_replica: Vec<usize>,
    pub initial_sync: SyncFigures,
    pub changes: Vec<ChangeFigures>,
    pub restart: Option<RestartFigures>,
    pub failover: Option<FailoverFigures>,
    pub connect_errors: u64,
    pub stream_errors: u64,
    pub loadgen_cpu_s: f64,
    /// One-minute load average before the streams connected and at the end.
    pub load_average: (Option<f64>, Option<f64>),
}

/// What the driver measured around one change round.
pub struct RoundMeasure {
    pub kind: ChangeKind,
    pub number: usize,
    pub service: usize,
    pub written_at: Instant,
    pub expected: usize,
    pub server_cpu_s: f64,
}

fn sum_per_type<'a>(counts: impl Iterator<Item = &'a [u32; 4]>) -> [u64; 4] {
    counts.fold([0; 4], |mut sum, counts| {
        for (s, n) in sum.iter_mut().zip(counts) {
            *s += u64::from(*n);
        }
        sum
    })
}

fn sum_responses<'a>(traffic: impl Iterator<Item = &'a Traffic>) -> [u64; 4] {
    sum_per_type(traffic.map(|t| &t.responses))
}

pub fn sync_figures(records: &[StreamRecord], wall_s: f64, server_cpu_s: f64) -> SyncFigures {
    let synced: Vec<&StreamRecord> = records.iter().filter(|r| r.sync_time.is_some()).collect();
    SyncFigures {
        synced: synced.len(),
        wall_s,
        server_cpu_s,
        sync_ms: Spread::of(
            synced
                .iter()
                .filter_map(|r| r.sync_time)
                .map(|d| d.as_secs_f64() * 1e3)
                .collect(),
        ),
        bytes_per_proxy: Spread::of(synced.iter().map(|r| r.initial.bytes as f64).collect()),
        responses: sum_responses(synced.iter().map(|r| &r.initial)),
    }
}

pub fn change_figures(records: &[StreamRecord], index: usize, m: &RoundMeasure) -> ChangeFigures {
    let rounds: Vec<_> = records.iter().filter_map(|r| r.rounds.get(index)).collect();
    let fanout: Vec<f64> = rounds
        .iter()
        .filter_map(|r| r.seen_at)
        .map(|t| t.saturating_duration_since(m.written_at).as_secs_f64() * 1e3)
        .collect();
    ChangeFigures {
        kind: m.kind,
        round: m.number,
        service: m.service,
        server_cpu_s: m.server_cpu_s,
        received: fanout.len(),
        expected: m.expected,
        fanout_ms: Spread::of(fanout),
        bytes_per_proxy: Spread::of(
            records
                .iter()
                .filter(|r| r.sync_time.is_some())
                .filter_map(|r| r.rounds.get(index))
                .map(|r| r.traffic.bytes as f64)
                .collect(),
        ),
        responses: sum_responses(rounds.iter().map(|r| &r.traffic)),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl ServerFigures {
    pub fn new(pid: u32, idle_kib: u64, peak_kib: u64, after_kib: u64, hwm_kib: u64) -> Self {
        ServerFigures {
            pid,
            rss_idle_mib: mib(idle_kib),
            rss_peak_mib: mib(peak_kib),
            rss_after_disconnect_mib: mib(after_kib),
            hwm_mib: mib(hwm_kib),
            input_problems: None,
        }
    }
}

fn bytes(b: f64) -> String {
    if b >= 1e6 {
        format!("{:.2} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{b:.0} B")
    }
}

fn responses(counts: [u64; 4], proxies: usize) -> String {
    let per = |n: u64| n as f64 / proxies.max(1) as f64;
    XdsType::ALL
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .map(|(ty, n)| format!("{} {:.2}", ty.short(), per(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A table of one resync (a restart or a failover): `ready` is when the
/// server the proxies reconnect to was ready.
fn resync_table(out: &mut String, event: &str, ready: &str, r: &ResyncFigures) {
    let _ = writeln!(
        out,
        "\n| event | resynced | server ready | all resynced | resync p50 / p99 / max | reconnects / errors | server CPU | bytes/proxy p50 / max | resources per proxy |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let row = [
        event.to_string(),
        format!("{} / {}", r.resynced, r.expected),
        ready.to_string(),
        format!("{:.2} s", r.wall_s),
        format!("{} ms", r.resync_ms.format(|v| format!("{v:.0}"))),
        format!("{} / {}", r.reconnects, r.reconnect_errors),
        format!("{:.2} s", r.server_cpu_s),
        r.bytes_per_proxy.format_bytes(),
        per_type_or_none(r.resources, r.resynced),
    ];
    let _ = writeln!(out, "| {} |", row.join(" | "));
    let _ = writeln!(
        out,
        "\nResync responses per proxy: {}",
        per_type_or_none(r.responses, r.resynced)
    );
}

/// As [`responses`], "0" when every count is zero.
fn per_type_or_none(counts: [u64; 4], proxies: usize) -> String {
    match counts.iter().all(|&n| n == 0) {
        true => "0".to_string(),
        false => responses(counts, proxies),
    }
}

impl Report {
    /// Markdown tables: the run, the initial sync, and every change round.
    pub fn to_markdown(&self) -> String {
        let s = &self.server;
        let sync = &self.initial_sync;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| proxies | protocol | views | synced | sync wall | sync p50 / p99 / max | bytes/proxy p50 / max | server CPU (sync) | RSS idle / peak / after | VmHWM | conn. errors / resets | loadgen CPU |"
        );
        let _ = writeln!(
            out,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        let row = [
            self.proxies.to_string(),
            self.protocol.label().to_string(),
            self.views.to_string(),
            sync.synced.to_string(),
            format!("{:.2} s", sync.wall_s),
            format!("{} ms", sync.sync_ms.format(|v| format!("{v:.0}"))),
            sync.bytes_per_proxy.format_bytes(),
            format!("{:.2} s", sync.server_cpu_s),
            format!(
                "{:.0} / {:.0} / {:.0} MiB",
                s.rss_idle_mib, s.rss_peak_mib, s.rss_after_disconnect_mib
            ),
            format!("{:.0} MiB", s.hwm_mib),
            format!("{} / {}", self.connect_errors, self.stream_errors),
            format!("{:.2} s", self.loadgen_cpu_s),
        ];
        let _ = writeln!(out, "| {} |", row.join(" | "));
        for (index, r) in self.other_replicas.iter().enumerate() {
            let _ = writeln!(
                out,
                "\nReplica {} (pid {}) RSS idle / peak / after: {:.0} / {:.0} / {:.0} MiB",
                index + 1,
                r.pid,
                r.rss_idle_mib,
                r.rss_peak_mib,
                r.rss_after_disconnect_mib
            );
        }
        if self.proxies_per_replica.len() > 1 {
            let counts: Vec<String> = self
                .proxies_per_replica
                .iter()
                .map(|n| n.to_string())
                .collect();
            let _ = writeln!(
                out,
                "\nProxies per replica at the initial sync: {}",
                counts.join(" / ")
            );
        }
        let _ = writeln!(
            out,
            "\nInitial sync responses per proxy: {}\n",
            responses(sync.responses, sync.synced)
        );
        let load = |l: Option<f64>| l.map_or("?".into(), |l| format!("{l:.2}"));
        let _ = writeln!(
            out,
            "Machine load average (1 min) before / after: {} / {}\n",
            load(self.load_average.0),
            load(self.load_average.1)
        );
        let _ = writeln!(
            out,
            "| change | round | received | fan-out p50 / p99 / max | bytes/proxy p50 / max | responses per proxy | server CPU |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---:|");
        for c in &self.changes {
            let row = [
                c.kind.label().to_string(),
                c.round.to_string(),
                format!("{} / {}", c.received, c.expected),
                format!("{} ms", c.fanout_ms.format(|v| format!("{v:.0}"))),
                c.bytes_per_proxy.format_bytes(),
                responses(c.responses, c.expected),
                format!("{:.2} s", c.server_cpu_s),
            ];
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        if let Some(r) = &self.restart {
            let ready = format!("{:.2} s", r.ready_s);
            resync_table(&mut out, "SIGTERM, start again", &ready, &r.resync);
        }
        if let Some(f) = &self.failover {
            let event = format!("SIGKILL replica {}", f.killed_replica);
            resync_table(&mut out, &event, "–", &f.resync);
            let _ = writeln!(
                out,
                "\nSurviving replica RSS before the kill / peak until resynced: {:.0} / {:.0} MiB",
                f.survivor_rss_before_mib, f.survivor_rss_peak_mib
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let spread = Spread::of((1..=100).map(f64::from).collect());
        assert_eq!((spread.p50, spread.p99, spread.max), (50.0, 99.0, 100.0));
        let one = Spread::of(vec![7.0]);
        assert_eq!((one.p50, one.p99, one.max), (7.0, 7.0, 7.0));
        assert_eq!(Spread::of(Vec::new()).max, 0.0);
    }
}
