//! Benchmark: what unauthenticated ADS clients can make `pilotfish serve`
//! hold. Starts the real binary on loopback with a generated mesh and runs
//! three attacks with its own gRPC clients, reading the server's memory
//! from /proc before, at peak and 3 s after the clients leave, while one
//! healthy client must still receive a push for a config change made
//! during the attack. Prints a table; the written report is
//! `docs/benchmarks.md` ("Hostile clients").
//!
//! Build the server first, then run:
//!
//! ```text
//! cargo build --release -p pilotfish-discovery
//! cargo bench -p pilotfish-discovery --bench hostile_clients
//! ```
//!
//! `PILOTFISH_BIN` overrides the binary (default: `release/pilotfish` under
//! `CARGO_TARGET_DIR`, else the workspace `target`). Only 127.0.0.1 is
//! contacted; every loop is bounded in count and in time.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

/// Services in the generated file registry (three endpoints each).
const SERVICES: usize = 300;
const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// How long the healthy client may wait for the push of a change.
const PUSH_DEADLINE: Duration = Duration::from_secs(30);
/// Streams opened per connection (below the server's per-connection limit).
const STREAMS_PER_CONNECTION: usize = 50;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let binary = pilotfish_binary();
    if !binary.exists() {
        return Err(format!(
            "{} not found: run `cargo build --release -p pilotfish-discovery` first, or set PILOTFISH_BIN",
            binary.display()
        )
        .into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(&binary))
}

/// Each scenario gets a fresh server, so that what one leaves behind
/// (or frees for reuse) does not blur the next one's numbers.
async fn run(binary: &Path) -> Result<(), BoxError> {
    println!("pilotfish {}, {SERVICES} services", binary.display());
    let rows = vec![
        measure(
            binary,
            "a) 3,000 short streams, unique LABELS",
            3,
            |xds, phases| unique_labels(xds, 3_000, Duration::from_secs(300), phases),
        )
        .await?,
        measure(
            binary,
            "b) 20 streams, 10 MB node metadata",
            3,
            |xds, phases| huge_nodes(xds, 20, 10 * 1024 * 1024, phases),
        )
        .await?,
        measure(
            binary,
            "c) 1,000 streams that never read",
            10,
            |xds, phases| never_read(xds, 1_000, Duration::from_secs(25), phases),
        )
        .await?,
    ];
    print_table(&rows);
    Ok(())
}

// ---------------------------------------------------------------- server

struct Server {
    child: Child,
    binary: PathBuf,
    dir: PathBuf,
    xds: SocketAddr,
    http: SocketAddr,
    edits: AtomicU64,
}

impl Server {
    fn start(binary: &Path) -> Result<Server, BoxError> {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pf-hostile-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        let config = dir.join("config");
        std::fs::create_dir_all(&config)?;
        std::fs::write(dir.join("registry.yaml"), registry(SERVICES))?;
        std::fs::write(config.join("policy.yaml"), policy(0))?;
        let xds = free_loopback_port()?;
        let http = free_loopback_port()?;
        let child = Command::new(binary)
            .args(["serve", "--config-dir"])
            .arg(&config)
            .arg("--registry-file")
            .arg(dir.join("registry.yaml"))
            .args(["--xds-address", &xds.to_string()])
            .args(["--secure-xds-address", "off"])
            .args(["--http-address", &http.to_string()])
            .args(["--debounce-ms", "50"])
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Server {
            child,
            binary: binary.to_path_buf(),
            dir,
            xds,
            http,
            edits: AtomicU64::new(0),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn memory(&self) -> Result<Memory, BoxError> {
        Memory::of(self.pid())
    }

    /// The value of each of `names` on `/metrics` ("-" when absent).
    async fn metrics(&self, names: &[&str]) -> Vec<String> {
        let text = http_get(self.http, "/metrics").await.unwrap_or_default();
        names
            .iter()
            .map(|name| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                    .unwrap_or("-")
                    .to_string()
            })
            .collect()
    }

    /// Edits a DestinationRule, which changes every proxy's clusters.
    fn edit_config(&self) -> Result<(), BoxError> {
        let n = self.edits.fetch_add(1, Ordering::Relaxed) + 1;
        std::fs::write(self.dir.join("config").join("policy.yaml"), policy(n))?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain HTTP/1.1 GET on loopback, one request per connection (no client
/// library for that; Envoy's admin refuses HTTP/1.0).
async fn http_get(addr: SocketAddr, path: &str) -> Result<String, BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut body)).await??;
    Ok(body)
}

fn free_loopback_port() -> Result<SocketAddr, BoxError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn registry(services: usize) -> String {
    let mut yaml = String::from("services:\n");
    for i in 0..services {
        let (hi, lo) = (i / 250, i % 250 + 1);
        yaml += &format!(
            "- hostname: svc-{i}.default.svc.cluster.local\n  addresses: [127.3.{hi}.{lo}]\n  ports: [{{name: http, port: 9080, protocol: HTTP}}]\n  endpoints:\n"
        );
        for e in 0..3 {
            yaml += &format!(
                "  - {{address: 127.{}.{hi}.{lo}, labels: {{version: v{e}}}}}\n",
                4 + e
            );
        }
    }
    yaml
}

/// A DestinationRule on one service; `n` changes its connection limit.
fn policy(n: u64) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc-0, namespace: default}}\nspec:\n  host: svc-0.default.svc.cluster.local\n  trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: {}}}}}}}\n",
        100 + n
    )
}

// ---------------------------------------------------------------- memory

#[derive(Clone, Copy, Debug, Default)]
struct Memory {
    rss_kb: u64,
    hwm_kb: u64,
}

impl Memory {
    fn of(pid: u32) -> Result<Memory, BoxError> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Memory {
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
        })
    }

    /// Resets VmHWM to the current RSS, so each scenario has its own peak.
    fn reset_peak(pid: u32) {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

fn mb(kb: u64) -> String {
    format!("{:.0} MB", kb as f64 / 1024.0)
}

// ---------------------------------------------------------------- clients

async fn connect(addr: SocketAddr, narrow: bool) -> Result<Channel, BoxError> {
    let mut endpoint =
        Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(Duration::from_secs(5));
    if narrow {
        // A client that does not read makes the server hold what it sends.
        endpoint = endpoint
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535);
    }
    Ok(endpoint.connect().await?)
}

type Stream = (mpsc::Sender<DiscoveryRequest>, Streaming<DiscoveryResponse>);

async fn open(channel: Channel) -> Result<Stream, tonic::Status> {
    let (tx, rx) = mpsc::channel(8);
    let responses = AggregatedDiscoveryServiceClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, responses))
}

fn node(id: &str, metadata: Struct) -> Node {
    Node {
        id: id.into(),
        metadata: Some(metadata),
        ..Default::default()
    }
}

fn string(v: String) -> Value {
    Value {
        kind: Some(Kind::StringValue(v)),
    }
}

fn labels(pairs: Vec<(String, String)>) -> Struct {
    let mut labels = Struct::default();
    for (k, v) in pairs {
        labels.fields.insert(k, string(v));
    }
    let mut metadata = Struct::default();
    metadata.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    metadata
}

fn request(type_url: &str, node: Option<Node>) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        type_url: type_url.into(),
        ..Default::default()
    }
}

fn sidecar_id(i: usize) -> String {
    format!(
        "sidecar~127.9.{}.{}~attacker-{i}.default~default.svc.cluster.local",
        i / 250,
        i % 250 + 1
    )
}

/// One client that reads every response and counts CDS pushes.
struct Healthy {
    pushes: Arc<AtomicU64>,
    _requests: mpsc::Sender<DiscoveryRequest>,
}

impl Healthy {
    async fn connect(addr: SocketAddr) -> Result<Healthy, BoxError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let channel = loop {
            match connect(addr, false).await {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        let (requests, mut responses) = open(channel).await?;
        let healthy_node = node(
            "sidecar~127.8.0.1~healthy.default~default.svc.cluster.local",
            labels(vec![("app".into(), "healthy".into())]),
        );
        requests.send(request(CDS, Some(healthy_node))).await?;
        let pushes = Arc::new(AtomicU64::new(0));
        let counter = pushes.clone();
        tokio::spawn(async move {
            while let Ok(Some(_)) = responses.message().await {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        let healthy = Healthy {
            pushes,
            _requests: requests,
        };
        healthy.wait_for_push(0).await?;
        Ok(healthy)
    }

    async fn wait_for_push(&self, seen: u64) -> Result<Duration, BoxError> {
        let started = Instant::now();
        while self.pushes.load(Ordering::Relaxed) <= seen {
            if started.elapsed() > PUSH_DEADLINE {
                return Err("the healthy client received no push".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(started.elapsed())
    }

    /// Edits the config and times the push that follows.
    async fn push_after_edit(&self, server: &Server) -> Result<Duration, BoxError> {
        let seen = self.pushes.load(Ordering::Relaxed);
        server.edit_config()?;
        self.wait_for_push(seen).await
    }
}

/// How an attack and the measurement meet: the attack says when it is in
/// full swing, and holds its streams until the healthy client was checked.
struct Phases {
    midpoint: Option<tokio::sync::oneshot::Sender<()>>,
    release: tokio::sync::oneshot::Receiver<()>,
}

impl Phases {
    fn reached_midpoint(&mut self) {
        if let Some(tx) = self.midpoint.take() {
            let _ = tx.send(());
        }
    }

    /// Keeps the caller's streams for at least `min` and until released
    /// (at most two minutes).
    async fn hold(mut self, min: Duration) {
        self.reached_midpoint();
        let started = Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(120), &mut self.release).await;
        tokio::time::sleep(min.saturating_sub(started.elapsed())).await;
    }
}

/// Sequential short streams, each with labels no other stream has; each
/// waits for its clusters (so its view was built) and leaves.
async fn unique_labels(
    addr: SocketAddr,
    count: usize,
    time_limit: Duration,
    mut phases: Phases,
) -> Result<usize, BoxError> {
    let started = Instant::now();
    let mut channel = connect(addr, false).await?;
    let mut done = 0;
    for i in 0..count {
        if started.elapsed() > time_limit {
            break;
        }
        if i % STREAMS_PER_CONNECTION == 0 {
            channel = connect(addr, false).await?;
        }
        let metadata = labels(vec![
            ("app".into(), "attacker".into()),
            ("pod-template-hash".into(), format!("{i:08x}")),
        ]);
        let (tx, mut responses) = open(channel.clone()).await?;
        tx.send(request(CDS, Some(node(&sidecar_id(i), metadata))))
            .await?;
        let _ = tokio::time::timeout(Duration::from_secs(10), responses.message()).await;
        done += 1;
        if i == count / 2 {
            phases.reached_midpoint();
        }
    }
    phases.hold(Duration::ZERO).await;
    Ok(done)
}

/// Concurrent streams whose first request carries a huge node.
async fn huge_nodes(
    addr: SocketAddr,
    count: usize,
    bytes: usize,
    phases: Phases,
) -> Result<usize, BoxError> {
    let mut streams = Vec::new();
    for i in 0..count {
        let channel = connect(addr, false).await?;
        let mut metadata = Struct::default();
        metadata
            .fields
            .insert("BLOB".into(), string("x".repeat(bytes)));
        streams.push(tokio::spawn(async move {
            let (tx, mut responses) = open(channel).await.ok()?;
            tx.send(request(CDS, Some(node(&sidecar_id(i), metadata))))
                .await
                .ok()?;
            let _ = tokio::time::timeout(Duration::from_secs(30), responses.message()).await;
            Some((tx, responses))
        }));
    }
    let mut open_streams = Vec::new();
    for stream in streams {
        open_streams.push(stream.await?);
    }
    // Everyone stays connected while the healthy client is checked.
    phases.hold(Duration::ZERO).await;
    Ok(open_streams.iter().filter(|s| s.is_some()).count())
}

/// Streams that subscribe to clusters, listeners and routes and never read
/// a response; they stay for `hold`, during which the config changes.
async fn never_read(
    addr: SocketAddr,
    count: usize,
    hold: Duration,
    phases: Phases,
) -> Result<usize, BoxError> {
    let mut held = Vec::new();
    let mut channel = connect(addr, true).await?;
    for i in 0..count {
        if i % STREAMS_PER_CONNECTION == 0 {
            channel = connect(addr, true).await?;
        }
        let Ok(Ok((tx, responses))) =
            tokio::time::timeout(Duration::from_secs(5), open(channel.clone())).await
        else {
            continue;
        };
        let first = node(&sidecar_id(i), labels(vec![]));
        let _ = tx.send(request(CDS, Some(first))).await;
        let _ = tx.send(request(LDS, None)).await;
        let _ = tx.send(request(RDS, None)).await;
        held.push((tx, responses));
    }
    phases.hold(hold).await;
    Ok(held.len())
}

// ---------------------------------------------------------------- measuring

struct Row {
    scenario: &'static str,
    streams: usize,
    before: Memory,
    peak_kb: u64,
    after: Memory,
    push: Result<Duration, String>,
    alive: bool,
    /// A real Envoy on the same server applied every change made during
    /// the attack ("-" without an Envoy binary).
    envoy: Option<Result<u64, String>>,
    /// Server metrics 3 s after: views, stalled streams, connected proxies.
    metrics: Vec<String>,
}

const REPORTED_METRICS: [&str; 3] = [
    "pilotfish_views",
    "pilotfish_xds_stalled_streams_total",
    "pilotfish_xds_connected_proxies",
];

/// Runs one attack against a fresh server, sampling its RSS, changing the
/// config `edits` times in the middle of the attack (more pushes for slow
/// readers to fall behind on), and checking the healthy client's pushes.
async fn measure<F, Fut>(
    binary: &Path,
    scenario: &'static str,
    edits: usize,
    attack: F,
) -> Result<Row, BoxError>
where
    F: FnOnce(SocketAddr, Phases) -> Fut,
    Fut: Future<Output = Result<usize, BoxError>> + Send + 'static,
{
    println!("running {scenario} ...");
    let server = Server::start(binary)?;
    let healthy = Healthy::connect(server.xds).await?;
    let envoy = HealthyEnvoy::start(&server).await?;
    let envoy_before = match &envoy {
        Some(e) => e.cds_updates().await?,
        None => 0,
    };
    let pid = server.pid();
    let before = server.memory()?;
    Memory::reset_peak(pid);
    let peak = Arc::new(AtomicU64::new(before.rss_kb));
    let sampler = tokio::spawn(sample_peak(pid, peak.clone()));
    let (mid_tx, mid_rx) = tokio::sync::oneshot::channel();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel();
    let attack = tokio::spawn(attack(
        server.xds,
        Phases {
            midpoint: Some(mid_tx),
            release: release_rx,
        },
    ));
    let _ = mid_rx.await;
    let mut push = healthy.push_after_edit(&server).await;
    for _ in 1..edits {
        if push.is_ok() {
            push = healthy.push_after_edit(&server).await;
        }
    }
    let envoy_result = match &envoy {
        Some(e) => Some(e.wait_updates(envoy_before + edits as u64).await),
        None => None,
    };
    let _ = release_tx.send(());
    let streams = attack.await??;
    sampler.abort();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = server.memory()?;
    let peak_kb = peak.load(Ordering::Relaxed).max(after.hwm_kb);
    let metrics = server.metrics(&REPORTED_METRICS).await;
    let alive = healthy.push_after_edit(&server).await.is_ok();
    Ok(Row {
        scenario,
        streams,
        before,
        peak_kb,
        after,
        push: push.map_err(|e| e.to_string()),
        alive,
        envoy: envoy_result.map(|r| r.map(|n| n - envoy_before)),
        metrics,
    })
}

/// A stock Envoy sidecar on the server under attack (REDIRECT mode, so its
/// listeners bind nothing but 15001/15006 on loopback-only admin ports): its
/// own CDS update counter shows whether it kept getting pushes.
struct HealthyEnvoy {
    child: Child,
    admin: SocketAddr,
    _dir: PathBuf,
}

impl HealthyEnvoy {
    /// `None` when no Envoy binary is installed (scripts/setup.sh puts one
    /// at /opt/pilotfish-test/bin/envoy).
    async fn start(server: &Server) -> Result<Option<HealthyEnvoy>, BoxError> {
        let binary = std::env::var_os("PILOTFISH_ENVOY")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/opt/pilotfish-test/bin/envoy"));
        if !binary.exists() {
            println!(
                "  (no Envoy at {}: the Envoy column is skipped)",
                binary.display()
            );
            return Ok(None);
        }
        let admin = free_loopback_port()?;
        let dir = server.dir.join("envoy");
        std::fs::create_dir_all(&dir)?;
        let bootstrap = Command::new(&server.binary)
            .args(["bootstrap", "--xds-address", &server.xds.to_string()])
            .args(["--name", "envoy-healthy", "--ip", "127.8.0.2"])
            .args(["--admin-port", &admin.port().to_string()])
            .args(["--health-port", "0", "--stats-port", "0"])
            .output()?;
        if !bootstrap.status.success() {
            return Err(String::from_utf8_lossy(&bootstrap.stderr)
                .into_owned()
                .into());
        }
        std::fs::write(dir.join("bootstrap.json"), &bootstrap.stdout)?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(dir.join("bootstrap.json"))
            .args([
                "--concurrency",
                "1",
                "--disable-hot-restart",
                "--log-level",
                "error",
            ])
            .args(["--base-id", &admin.port().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let envoy = HealthyEnvoy {
            child,
            admin,
            _dir: dir,
        };
        envoy.wait_updates(1).await?;
        Ok(Some(envoy))
    }

    async fn cds_updates(&self) -> Result<u64, BoxError> {
        let body = http_get(
            self.admin,
            "/stats?filter=cluster_manager.cds.update_success",
        )
        .await?;
        Ok(body
            .lines()
            .find_map(|l| l.strip_prefix("cluster_manager.cds.update_success: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Waits (bounded) until Envoy applied `count` CDS updates in all.
    async fn wait_updates(&self, count: u64) -> Result<u64, String> {
        let deadline = tokio::time::Instant::now() + PUSH_DEADLINE;
        loop {
            let seen = self.cds_updates().await.unwrap_or(0);
            if seen >= count {
                return Ok(seen);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "Envoy applied {seen} CDS updates, expected {count}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for HealthyEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sample_peak(pid: u32, peak: Arc<AtomicU64>) {
    // Bounded: aborted by the caller, and at most 10 minutes anyway.
    for _ in 0..6_000 {
        if let Ok(m) = Memory::of(pid) {
            peak.fetch_max(m.rss_kb.max(m.hwm_kb), Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| scenario | streams | RSS before | peak RSS | RSS 3 s after | healthy push during attack | healthy push after | real Envoy: changes applied during attack | views, stalled, connected after |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---|---|");
    for r in rows {
        let push = match &r.push {
            Ok(d) => format!("{:.0} ms", d.as_secs_f64() * 1000.0),
            Err(e) => format!("FAILED ({e})"),
        };
        let envoy = match &r.envoy {
            None => "-".to_string(),
            Some(Ok(n)) => format!("{n} of {n}"),
            Some(Err(e)) => format!("FAILED ({e})"),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.streams,
            mb(r.before.rss_kb),
            mb(r.peak_kb),
            mb(r.after.rss_kb),
            push,
            if r.alive { "yes" } else { "NO" },
            envoy,
            r.metrics.join(", ")
        );
    }
}

fn pilotfish_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PILOTFISH_BIN") {
        return PathBuf::from(path);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release").join("pilotfish")
}
