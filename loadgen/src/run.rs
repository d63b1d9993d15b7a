//! One load test from start to end: generate the mesh, start or attach to
//! the server, connect every proxy, wait for the initial sync, make the
//! changes, disconnect, and measure the server throughout. Every wait is
//! bounded by its own limit and by the overall `--timeout-s`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::change::ChangeKind;
use crate::client::{self, ActiveChange, Progress, Protocol, Shared, StreamRecord};
use crate::inspect::Inspector;
use crate::mesh::{MeshDir, MeshShape};
use crate::proc_stats;
use crate::report::{self, Report, RestartMeasure, RoundMeasure, ServerFigures};
use crate::rss_sampler::RssSampler;
use crate::server::Server;

/// How often the driver looks at the streams' progress.
const POLL: Duration = Duration::from_millis(20);
/// Time for the server to settle before the idle memory reading.
const IDLE_SETTLE: Duration = Duration::from_secs(1);
/// When the memory is read after every stream disconnected.
const AFTER_DISCONNECT: Duration = Duration::from_secs(3);
/// Beyond `--timeout-s`, time to disconnect and read the final memory.
const GRACE: Duration = Duration::from_secs(45);
/// How long stopped streams may take to finish.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Parser)]
#[command(
    name = "pilotfish-loadgen",
    about = "Many Envoy-like ADS streams against a Pilotfish on loopback: initial sync, change fan-out, server memory and CPU"
)]
pub struct Args {
    /// ServiceEntries in the generated mesh (hosts svc-N.mesh.local, port 8080).
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// Endpoints per service (labels version v1/v2 alternating).
    #[arg(long, default_value_t = 4)]
    pub endpoints: usize,
    /// VirtualServices with a weighted v1/v2 split (services 0..N).
    #[arg(long, default_value_t = 100)]
    pub virtual_services: usize,
    /// DestinationRules with subsets v1 and v2 (services 0..N).
    #[arg(long, default_value_t = 100)]
    pub destination_rules: usize,
    /// Where the mesh (`config/`) and the server's log go; default a new
    /// directory under /tmp.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Write the mesh and exit (to start a server on it yourself, then use --target).
    #[arg(long)]
    pub generate_only: bool,
    /// Start this pilotfish binary on the generated mesh (loopback ports).
    #[arg(long, conflicts_with_all = ["target", "pid"])]
    pub pilotfish: Option<PathBuf>,
    /// Plaintext ADS address of a running server (loopback only); it must
    /// serve the --work-dir's config/ for changes to reach it.
    #[arg(long, requires = "pid")]
    pub target: Option<String>,
    /// Process id of the --target server, to measure its memory and CPU.
    #[arg(long, requires = "target")]
    pub pid: Option<u32>,
    /// Concurrent ADS streams, each on its own HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    pub proxies: usize,
    #[arg(long, value_enum, default_value = "sotw")]
    pub protocol: Protocol,
    /// Distinct proxy views (namespaces loadgen-0..K).
    #[arg(long, default_value_t = 1)]
    pub views: usize,
    /// Spread the connects over this many milliseconds (0: all at once).
    #[arg(long, default_value_t = 0)]
    pub ramp_ms: u64,
    /// Changes to make after the initial sync, each in every round; repeatable.
    #[arg(long = "change", value_enum)]
    pub changes: Vec<ChangeKind>,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Quiet time before each change.
    #[arg(long, default_value_t = 2000)]
    pub round_gap_ms: u64,
    /// How long a change may take to reach every proxy.
    #[arg(long, default_value_t = 30)]
    pub round_timeout_s: u64,
    /// Time after a change reached every proxy during which further
    /// responses still count as the change's.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    /// After the changes, restart the server (SIGTERM, then start it again
    /// on the same ports) and measure how the proxies reconnect and resync.
    #[arg(long, requires = "pilotfish")]
    pub restart: bool,
    /// Upper bound of the whole run.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Args {
    fn shape(&self) -> MeshShape {
        MeshShape {
            services: self.services,
            endpoints: self.endpoints,
            virtual_services: self.virtual_services,
            destination_rules: self.destination_rules,
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<Option<Report>> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let shape = args.shape();
    shape.validate()?;
    for change in &args.changes {
        change.check(shape)?;
    }
    if let Some(target) = &args.target {
        // Refuse a non-loopback target before anything is written or started.
        crate::server::loopback_address(target)?;
    }
    if args.proxies == 0 || args.views == 0 {
        bail!("--proxies and --views must be at least 1");
    }
    let work_dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pilotfish-loadgen.{}", std::process::id()))
    });
    let mesh = MeshDir::generate(&work_dir.join("config"), shape)?;
    tracing::info!(dir = %mesh.path().display(), ?shape, "mesh written");
    if args.generate_only {
        println!("{}", mesh.path().display());
        return Ok(None);
    }
    let nofile = proc_stats::raise_nofile_limit().context("raising RLIMIT_NOFILE")?;
    if (nofile as usize) < args.proxies + 64 {
        tracing::warn!(
            nofile,
            proxies = args.proxies,
            "open-file limit may be too low"
        );
    }
    let mut server = match (&args.pilotfish, &args.target, args.pid) {
        (Some(binary), _, _) => {
            Server::spawn(binary, mesh.path(), &work_dir.join("pilotfish.log")).await?
        }
        (None, Some(target), Some(pid)) => Server::attach(target, pid)?,
        _ => bail!("say which server to load: --pilotfish BIN, or --target ADDR --pid PID"),
    };
    // Interrupted or not, the server we started is stopped below.
    let bounded = tokio::time::timeout_at(
        deadline + GRACE,
        measure(&args, &mesh, &mut server, deadline),
    );
    let outcome = tokio::select! {
        outcome = bounded => outcome.unwrap_or_else(|_| bail_timeout(args.timeout_s)),
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    server.stop().await?;
    let report = outcome?;
    print!("{}", report.to_markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Some(report))
}

fn bail_timeout(seconds: u64) -> anyhow::Result<Report> {
    bail!("the run did not finish within --timeout-s {seconds} (plus {GRACE:?} to disconnect)")
}

/// Waits until `done` holds, polling; false if `limit` passed first.
async fn wait_until(limit: Instant, mut done: impl FnMut() -> bool) -> bool {
    while !done() {
        if Instant::now() >= limit {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

fn cpu(pid: u32) -> f64 {
    proc_stats::cpu_seconds(pid).unwrap_or(0.0)
}

async fn measure(
    args: &Args,
    mesh: &MeshDir,
    server: &mut Server,
    deadline: Instant,
) -> anyhow::Result<Report> {
    let pid = server.pid;
    let input_problems = match server.input_problems().await {
        Some(Ok(problems)) => {
            for problem in &problems {
                tracing::warn!(%problem, "the server reports a problem with the generated mesh");
            }
            Some(problems.len())
        }
        Some(Err(error)) => {
            tracing::warn!(%error, "could not read the server's diagnostics");
            None
        }
        None => None,
    };
    tokio::time::sleep(IDLE_SETTLE).await;
    let idle = proc_stats::memory(pid).context("reading the server's memory")?;
    let sampler = RssSampler::start(pid);

    let total_rounds = args.rounds * args.changes.len();
    let progress = Arc::new(Progress::new(total_rounds));
    let (change_tx, change_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        target: server.xds,
        protocol: args.protocol,
        views: args.views,
        rounds: total_rounds,
        inspector: Inspector::default(),
        progress: progress.clone(),
        change: change_rx,
        stop: stop_rx,
        deadline,
        reconnect: args.restart,
    });

    let load_before = proc_stats::load_average();
    let own_cpu_start = proc_stats::own_cpu_seconds();
    let cpu_start = cpu(pid);
    let connect_start = Instant::now();
    let tasks = spawn_proxies(args, &shared);
    let proxies = args.proxies;
    let all_synced = wait_until(deadline, || progress.synced() + progress.ended() >= proxies).await;
    let sync_wall = connect_start.elapsed().as_secs_f64();
    let sync_cpu = cpu(pid) - cpu_start;
    tracing::info!(
        synced = progress.synced(),
        failed = progress.ended(),
        all_synced,
        seconds = sync_wall,
        "initial sync"
    );

    let driver = ChangeDriver {
        args,
        mesh,
        pid,
        progress: &progress,
        announce: change_tx,
        deadline,
    };
    let mut rounds = Vec::new();
    for number in 1..=args.rounds {
        for &kind in &args.changes {
            if Instant::now() >= deadline {
                tracing::warn!("overall timeout: skipping the remaining changes");
                break;
            }
            rounds.push(driver.round(kind, number, rounds.len()).await?);
        }
    }

    let (mut peak, mut samples) = (0, 0);
    let mut sampler = Some(sampler);
    let restart = if args.restart && Instant::now() < deadline {
        // The old process's peak, before it goes.
        if let Some(old) = sampler.take() {
            (peak, samples) = old.stop().await;
        }
        let measured = restart(args, server, &progress, deadline).await?;
        sampler = Some(RssSampler::start(server.pid));
        Some(measured)
    } else {
        None
    };

    let _ = stop_tx.send(true);
    let records = join_all(tasks).await;
    let loadgen_cpu_s = proc_stats::own_cpu_seconds() - own_cpu_start;
    tokio::time::sleep(AFTER_DISCONNECT).await;
    let after = proc_stats::memory(server.pid).unwrap_or_default();
    if let Some(sampler) = sampler {
        let (last_peak, last_samples) = sampler.stop().await;
        (peak, samples) = (peak.max(last_peak), samples + last_samples);
    }
    tracing::info!(samples, "memory sampled");

    let mut server_figures = ServerFigures::new(
        server.pid,
        idle.rss_kib,
        peak.max(after.rss_kib),
        after.rss_kib,
        after.hwm_kib,
    );
    server_figures.input_problems = input_problems;
    Ok(Report {
        proxies,
        protocol: args.protocol,
        views: args.views,
        services: args.services,
        endpoints: args.endpoints,
        virtual_services: args.virtual_services,
        destination_rules: args.destination_rules,
        server: server_figures,
        initial_sync: report::sync_figures(&records, sync_wall, sync_cpu),
        changes: rounds
            .iter()
            .enumerate()
            .map(|(i, m)| report::change_figures(&records, i, m))
            .collect(),
        restart: restart.map(|m| report::restart_figures(&records, m)),
        connect_errors: records.iter().map(|r| u64::from(r.connect_errors)).sum(),
        stream_errors: records.iter().filter(|r| r.error.is_some()).count() as u64,
        loadgen_cpu_s,
        load_average: (load_before, proc_stats::load_average()),
    })
}

/// Restarts the server under the synced streams and waits until every one
/// of them synced again on the new process (or the round timeout).
async fn restart(
    args: &Args,
    server: &mut Server,
    progress: &Progress,
    deadline: Instant,
) -> anyhow::Result<RestartMeasure> {
    tokio::time::sleep(Duration::from_millis(args.round_gap_ms)).await;
    let expected = progress.synced().saturating_sub(progress.ended());
    let started = Instant::now();
    server.restart().await?;
    let ready_s = started.elapsed().as_secs_f64();
    let cpu_start = cpu(server.pid);
    let limit = deadline.min(Instant::now() + Duration::from_secs(args.round_timeout_s));
    let complete = wait_until(limit, || progress.resynced() >= expected).await;
    let wall_s = started.elapsed().as_secs_f64();
    tracing::info!(
        resynced = progress.resynced(),
        expected,
        complete,
        seconds = wall_s,
        "restart"
    );
    Ok(RestartMeasure {
        expected,
        ready_s,
        wall_s,
        server_cpu_s: cpu(server.pid) - cpu_start,
    })
}

fn spawn_proxies(args: &Args, shared: &Arc<Shared>) -> Vec<JoinHandle<StreamRecord>> {
    (0..args.proxies)
        .map(|index| {
            let shared = shared.clone();
            let delay = Duration::from_millis(args.ramp_ms) * index as u32 / args.proxies as u32;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                client::run(index, shared).await
            })
        })
        .collect()
}

/// Makes the changes and measures each.
struct ChangeDriver<'a> {
    args: &'a Args,
    mesh: &'a MeshDir,
    pid: u32,
    progress: &'a Progress,
    announce: watch::Sender<Option<Arc<ActiveChange>>>,
    deadline: Instant,
}

impl ChangeDriver<'_> {
    /// Streams synced and still connected: those a change must reach.
    fn live(&self) -> usize {
        self.progress.synced().saturating_sub(self.progress.ended())
    }

    /// One change: announce it to the streams, write it, wait until every
    /// live stream saw it (or the round timeout), let trailing pushes land.
    async fn round(
        &self,
        kind: ChangeKind,
        number: usize,
        index: usize,
    ) -> anyhow::Result<RoundMeasure> {
        tokio::time::sleep(Duration::from_millis(self.args.round_gap_ms)).await;
        let change = kind.plan(self.mesh.shape(), number);
        let expected = self.live();
        let cpu_start = cpu(self.pid);
        let _ = self.announce.send(Some(Arc::new(ActiveChange {
            round: index,
            probe: change.probe.clone(),
        })));
        let written_at = std::time::Instant::now();
        change.apply(self.mesh)?;
        let limit = self
            .deadline
            .min(Instant::now() + Duration::from_secs(self.args.round_timeout_s));
        let complete = wait_until(limit, || self.progress.seen(index) >= self.live()).await;
        tokio::time::sleep(Duration::from_millis(self.args.settle_ms)).await;
        let _ = self.announce.send(None);
        let server_cpu_s = cpu(self.pid) - cpu_start;
        tracing::info!(
            change = kind.label(),
            round = number,
            service = change.service,
            received = self.progress.seen(index),
            expected,
            complete,
            "change round"
        );
        Ok(RoundMeasure {
            kind,
            number,
            service: change.service,
            written_at,
            expected,
            server_cpu_s,
        })
    }
}

/// Collects every stream's record; a stream that does not finish in time
/// (or panicked) counts as one that recorded nothing.
async fn join_all(tasks: Vec<JoinHandle<StreamRecord>>) -> Vec<StreamRecord> {
    let limit = Instant::now() + JOIN_TIMEOUT;
    let mut records = Vec::with_capacity(tasks.len());
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(limit, task).await {
            Ok(Ok(record)) => records.push(record),
            Ok(Err(error)) => records.push(StreamRecord {
                error: Some(format!("task failed: {error}")),
                ..Default::default()
            }),
            Err(_) => {
                abort.abort();
                records.push(StreamRecord {
                    error: Some("did not stop in time".into()),
                    ..Default::default()
                });
            }
        }
    }
    records
}
