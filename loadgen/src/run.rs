//! One load test from start to end: generate the mesh, start (one or
//! several replicas) or attach to the server, connect every proxy, wait for
//! the initial sync, make the changes, restart the server or kill a replica
//! if asked, disconnect, and measure the servers throughout. Every wait is
//! bounded by its own limit and by the overall `--timeout-s`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::change::ChangeKind;
use crate::client::{self, ActiveChange, Progress, Protocol, Shared, StreamRecord};
use crate::inspect::Inspector;
use crate::memory_watch::MemoryWatch;
use crate::mesh::{MeshDir, MeshShape};
use crate::proc_stats;
use crate::report::{self, FailoverMeasure, Report, RestartMeasure, ResyncMeasure, RoundMeasure};
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
    /// A proxy reconnects as Envoy does: every subscription at once, and on
    /// delta naming what it holds (`initial_resource_versions`).
    #[arg(long, requires = "pilotfish")]
    pub restart: bool,
    /// Start this many `pilotfish serve` replicas on the same mesh, each on
    /// its own loopback ports (needs --pilotfish). Every proxy lists them
    /// all, as Envoy's xds-grpc cluster with several hosts, and the first
    /// connections alternate over them.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// After the changes, SIGKILL the last replica (a crash, no GOAWAY) and
    /// measure how its proxies reconnect to the other replicas and resync
    /// there (needs --replicas 2 or more).
    #[arg(long, conflicts_with = "restart")]
    pub kill_replica: bool,
    /// Upper bound of the whole run.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Args {
    /// What clap cannot say about combinations of flags.
    fn check(&self) -> anyhow::Result<()> {
        if self.proxies == 0 || self.views == 0 || self.replicas == 0 {
            bail!("--proxies, --views and --replicas must be at least 1");
        }
        if self.replicas > 1 && self.pilotfish.is_none() {
            bail!("--replicas starts the servers: it needs --pilotfish");
        }
        if self.kill_replica && self.replicas < 2 {
            bail!("--kill-replica needs --replicas 2 or more (one must survive)");
        }
        if self.restart && self.replicas > 1 {
            bail!("--restart restarts a single server; with --replicas, use --kill-replica");
        }
        Ok(())
    }

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
    args.check()?;
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
    let mut servers = match (&args.pilotfish, &args.target, args.pid) {
        (Some(binary), _, _) => spawn_replicas(binary, &mesh, &work_dir, args.replicas).await?,
        (None, Some(target), Some(pid)) => vec![Server::attach(target, pid)?],
        _ => bail!("say which server to load: --pilotfish BIN, or --target ADDR --pid PID"),
    };
    // Interrupted or not, the servers we started are stopped below.
    let bounded = tokio::time::timeout_at(
        deadline + GRACE,
        measure(&args, &mesh, &mut servers, deadline),
    );
    let outcome = tokio::select! {
        outcome = bounded => outcome.unwrap_or_else(|_| bail_timeout(args.timeout_s)),
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    for server in servers {
        server.stop().await?;
    }
    let report = outcome?;
    print!("{}", report.to_markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Some(report))
}

/// Starts `count` replicas on the mesh, one after the other: a replica
/// listens on its ports once ready, so the next one picks other free ports.
async fn spawn_replicas(
    binary: &Path,
    mesh: &MeshDir,
    work_dir: &Path,
    count: usize,
) -> anyhow::Result<Vec<Server>> {
    let mut servers = Vec::with_capacity(count);
    for replica in 0..count {
        let log = match count {
            1 => work_dir.join("pilotfish.log"),
            _ => work_dir.join(format!("pilotfish-{replica}.log")),
        };
        servers.push(Server::spawn(binary, mesh.path(), &log).await?);
    }
    Ok(servers)
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

/// CPU seconds some processes used from a moment on (a process that
/// exited meanwhile counts for nothing).
struct CpuSince {
    pids: Vec<u32>,
    start: f64,
}

impl CpuSince {
    fn now(pids: Vec<u32>) -> CpuSince {
        let start = total_cpu(&pids);
        CpuSince { pids, start }
    }

    fn seconds(&self) -> f64 {
        (total_cpu(&self.pids) - self.start).max(0.0)
    }
}

fn total_cpu(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|&pid| proc_stats::cpu_seconds(pid).unwrap_or(0.0))
        .sum()
}

fn pids(servers: &[Server]) -> Vec<u32> {
    servers.iter().map(|server| server.pid).collect()
}

/// Problems the server reports with the generated mesh (logged), if it
/// can be asked.
async fn input_problems(server: &Server) -> Option<usize> {
    match server.input_problems().await {
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
    }
}

async fn measure(
    args: &Args,
    mesh: &MeshDir,
    servers: &mut [Server],
    deadline: Instant,
) -> anyhow::Result<Report> {
    let Some(first) = servers.first() else {
        bail!("no server to load");
    };
    // Every replica serves the same mesh: one answer is enough.
    let input_problems = input_problems(first).await;
    tokio::time::sleep(IDLE_SETTLE).await;
    let mut memory = Vec::with_capacity(servers.len());
    for server in servers.iter() {
        let idle = proc_stats::memory(server.pid).context("reading the server's memory")?;
        memory.push(MemoryWatch::start(server.pid, idle));
    }

    let total_rounds = args.rounds * args.changes.len();
    let progress = Arc::new(Progress::new(total_rounds, servers.len()));
    let (change_tx, change_rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        targets: servers.iter().map(|server| server.xds).collect(),
        protocol: args.protocol,
        views: args.views,
        rounds: total_rounds,
        inspector: Inspector::default(),
        progress: progress.clone(),
        change: change_rx,
        stop: stop_rx,
        deadline,
        reconnect: args.restart || args.kill_replica,
    });

    let load_before = proc_stats::load_average();
    let own_cpu_start = proc_stats::own_cpu_seconds();
    let sync_cpu = CpuSince::now(pids(servers));
    let connect_start = Instant::now();
    let tasks = spawn_proxies(args, &shared);
    let proxies = args.proxies;
    let all_synced = wait_until(deadline, || progress.synced() + progress.ended() >= proxies).await;
    let sync_wall = connect_start.elapsed().as_secs_f64();
    let sync_cpu = sync_cpu.seconds();
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
        pids: pids(servers),
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

    let resync = Resync {
        args,
        progress: &progress,
        deadline,
    };
    let restart = match (args.restart, servers.first_mut(), memory.first_mut()) {
        (true, Some(server), Some(watch)) if Instant::now() < deadline => {
            // The old process's peak, before it goes.
            watch.pause().await;
            let measured = resync.restart(server).await?;
            watch.resume(server.pid);
            Some(measured)
        }
        _ => None,
    };
    let failover = if args.kill_replica && Instant::now() < deadline {
        Some(resync.kill_last_replica(servers, &mut memory).await?)
    } else {
        None
    };

    let _ = stop_tx.send(true);
    let records = join_all(tasks).await;
    let loadgen_cpu_s = proc_stats::own_cpu_seconds() - own_cpu_start;
    tokio::time::sleep(AFTER_DISCONNECT).await;
    let mut figures = Vec::with_capacity(servers.len());
    for (watch, server) in memory.into_iter().zip(servers.iter()) {
        figures.push(watch.finish(server.pid).await);
    }
    let mut figures = figures.into_iter();
    let mut server_figures = figures.next().unwrap_or_default();
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
        other_replicas: figures.collect(),
        proxies_per_replica: report::proxies_per_replica(&records, servers.len()),
        initial_sync: report::sync_figures(&records, sync_wall, sync_cpu),
        changes: rounds
            .iter()
            .enumerate()
            .map(|(i, m)| report::change_figures(&records, i, m))
            .collect(),
        restart: restart.map(|m| report::restart_figures(&records, m)),
        failover: failover.map(|m| report::failover_figures(&records, m)),
        connect_errors: records.iter().map(|r| u64::from(r.connect_errors)).sum(),
        stream_errors: records.iter().filter(|r| r.error.is_some()).count() as u64,
        loadgen_cpu_s,
        load_average: (load_before, proc_stats::load_average()),
    })
}

/// Takes a server away from the synced proxies, and measures how they
/// reconnect and sync again.
struct Resync<'a> {
    args: &'a Args,
    progress: &'a Progress,
    deadline: Instant,
}

impl Resync<'_> {
    /// Restarts the server under the synced streams and waits until every
    /// one of them synced again on the new process (or the round timeout).
    async fn restart(&self, server: &mut Server) -> anyhow::Result<RestartMeasure> {
        self.quiet().await;
        let expected = self.progress.holding(0);
        let started = Instant::now();
        server.restart().await?;
        let ready_s = started.elapsed().as_secs_f64();
        let cpu = CpuSince::now(vec![server.pid]);
        let resync = self.await_resync(started, expected, cpu).await;
        Ok(RestartMeasure { resync, ready_s })
    }

    /// Kills the last replica (SIGKILL: a crash) and waits until every
    /// proxy it held synced again on the others (or the round timeout),
    /// sampling the survivors' memory meanwhile.
    async fn kill_last_replica(
        &self,
        servers: &mut [Server],
        memory: &mut [MemoryWatch],
    ) -> anyhow::Result<FailoverMeasure> {
        self.quiet().await;
        let Some((killed, survivors)) = servers.split_last_mut() else {
            bail!("no replica to kill");
        };
        let killed_replica = survivors.len();
        let expected = self.progress.holding(killed_replica);
        if let Some(watch) = memory.get_mut(killed_replica) {
            watch.pause().await;
        }
        let survivor_pids = pids(survivors);
        let survivor_rss_before_kib = survivor_pids
            .iter()
            .filter_map(|&pid| proc_stats::memory(pid).ok())
            .map(|memory| memory.rss_kib)
            .max()
            .unwrap_or(0);
        let samplers: Vec<RssSampler> = survivor_pids
            .iter()
            .map(|&pid| RssSampler::start(pid))
            .collect();
        let cpu = CpuSince::now(survivor_pids);
        let started = Instant::now();
        killed.kill().await?;
        let resync = self.await_resync(started, expected, cpu).await;
        let mut survivor_rss_peak_kib = survivor_rss_before_kib;
        for sampler in samplers {
            survivor_rss_peak_kib = survivor_rss_peak_kib.max(sampler.stop().await.0);
        }
        Ok(FailoverMeasure {
            resync,
            killed_replica,
            survivor_rss_before_kib,
            survivor_rss_peak_kib,
        })
    }

    /// Quiet time before the event, as before a change.
    async fn quiet(&self) {
        tokio::time::sleep(Duration::from_millis(self.args.round_gap_ms)).await;
    }

    /// Waits until `expected` proxies synced again (or the round timeout);
    /// the time counts from `started`, the CPU is `cpu`'s processes'.
    async fn await_resync(
        &self,
        started: Instant,
        expected: usize,
        cpu: CpuSince,
    ) -> ResyncMeasure {
        let limit = self
            .deadline
            .min(Instant::now() + Duration::from_secs(self.args.round_timeout_s));
        let complete = wait_until(limit, || self.progress.resynced() >= expected).await;
        let wall_s = started.elapsed().as_secs_f64();
        tracing::info!(
            resynced = self.progress.resynced(),
            expected,
            complete,
            seconds = wall_s,
            "resync"
        );
        ResyncMeasure {
            expected,
            wall_s,
            server_cpu_s: cpu.seconds(),
        }
    }
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
    /// The servers (replicas) whose CPU a change costs.
    pids: Vec<u32>,
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
        let cpu = CpuSince::now(self.pids.clone());
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
        let server_cpu_s = cpu.seconds();
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
