//! The Consul registry against a real Consul agent (1.8, from
//! scripts/install-consul.sh), on loopback ports picked per test.

use std::collections::BTreeMap;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pilotfish_registries::consul::{
    BackoffConfig, ConsulConfig, ConsulRegistry, ConsulSnapshot, ConsulStatus, ConsulUpdate,
    ConsulUpdates,
};
use pilotfish_registries::{Endpoint, Health, Protocol, RegistryKind, Service};
use serde_json::{Value, json};
use tokio::sync::watch;

/// Generous: a blocking query wakes within milliseconds, but CI machines
/// are slow and the agent may be electing itself.
const DEADLINE: Duration = Duration::from_secs(20);
/// A change must arrive well before a blocking query would time out on its
/// own (`wait` is 30 s here), proving that the query woke up.
const QUICK: Duration = Duration::from_secs(5);

// --- Consul agent ------------------------------------------------------------

/// `$PILOTFISH_CONSUL`, else `$PILOTFISH_TEST_ROOT/bin/consul` (default root
/// /opt/pilotfish-test), where scripts/install-consul.sh puts it.
fn consul_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PILOTFISH_CONSUL") {
        return PathBuf::from(path);
    }
    let root =
        std::env::var_os("PILOTFISH_TEST_ROOT").unwrap_or_else(|| "/opt/pilotfish-test".into());
    let path = PathBuf::from(root).join("bin/consul");
    assert!(
        path.exists(),
        "no Consul at {}: run scripts/install-consul.sh (or set PILOTFISH_CONSUL)",
        path.display()
    );
    path
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "pilotfish-consul-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loopback ports free for TCP and UDP (Serf uses both), handed out once
/// per process from below Linux's ephemeral range (32768+): a port taken
/// from the ephemeral range and released could be reused by any outgoing
/// connection before Consul binds it.
fn free_ports(n: usize) -> Vec<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = 20_000 + (std::process::id() % 90) * 100;
    let mut out = Vec::new();
    while out.len() < n {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(start + offset % 3_000).expect("port in range");
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            out.push(port);
        }
    }
    out
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// In-memory, instantly leader; loses everything on restart.
    Dev,
    /// A one-server cluster with a data dir: registrations survive restarts.
    Server,
}

struct Agent {
    mode: Mode,
    dir: TempDir,
    http_port: u16,
    child: Option<Child>,
}

impl Agent {
    async fn start(mode: Mode) -> Agent {
        let dir = TempDir::new("agent");
        let ports = free_ports(4);
        let config = format!(
            "disable_update_check = true\n\
             performance {{ raft_multiplier = 1 }}\n\
             ports {{ http = {}, server = {}, serf_lan = {}, serf_wan = {}, dns = -1, grpc = -1, https = -1 }}\n",
            ports[0], ports[1], ports[2], ports[3]
        );
        std::fs::write(dir.0.join("agent.hcl"), config).expect("write agent config");
        let mut agent = Agent {
            mode,
            dir,
            http_port: ports[0],
            child: None,
        };
        agent.spawn().await;
        agent
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.0.join("consul.log")
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(consul_binary());
        cmd.arg("agent")
            .args(["-bind", "127.0.0.1", "-client", "127.0.0.1"])
            .args(["-node", "pilotfish-test"])
            .arg("-config-file")
            .arg(self.dir.0.join("agent.hcl"));
        match self.mode {
            Mode::Dev => {
                cmd.arg("-dev");
            }
            Mode::Server => {
                cmd.args(["-server", "-bootstrap-expect", "1", "-data-dir"])
                    .arg(self.dir.0.join("data"));
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open agent log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        // The agent must not outlive a test process that is killed.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().expect("start consul"));
        self.wait_ready().await;
    }

    /// Until `/v1/status/leader` names a leader.
    async fn wait_ready(&mut self) {
        let client = http();
        let url = format!("{}/v1/status/leader", self.address());
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                panic!("consul exited ({exit}):\n{}", self.log());
            }
            if let Ok(resp) = client.get(&url).send().await
                && let Ok(leader) = resp.json::<String>().await
                && !leader.is_empty()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "consul has no leader after {DEADLINE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    async fn put(&self, path: &str, body: Option<Value>) {
        let url = format!("{}{path}", self.address());
        let mut req = http().put(&url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert!(status.is_success(), "PUT {url}: {status}: {text}");
    }

    async fn register(&self, service: Value) {
        self.put("/v1/agent/service/register", Some(service)).await;
    }

    async fn deregister(&self, id: &str) {
        self.put(&format!("/v1/agent/service/deregister/{id}"), None)
            .await;
    }

    /// `pass` or `fail` a TTL check.
    async fn ttl(&self, check: &str, verdict: &str) {
        self.put(&format!("/v1/agent/check/{verdict}/{check}"), None)
            .await;
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

// --- registry helpers ----------------------------------------------------------

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "pilotfish_registries=info".into()),
        )
        .try_init();
}

fn config(agent_address: &str) -> ConsulConfig {
    ConsulConfig {
        wait: Duration::from_secs(30),
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        ..ConsulConfig::new(agent_address)
    }
}

fn instance(id: &str, name: &str, address: &str, port: u16, tags: &[&str], meta: Value) -> Value {
    json!({"ID": id, "Name": name, "Address": address, "Port": port, "Tags": tags, "Meta": meta})
}

fn with_ttl_check(mut service: Value, check_id: &str) -> Value {
    service["Check"] = json!({"CheckID": check_id, "TTL": "300s", "Status": "passing"});
    service
}

/// reviews-v1 (`version|v1`, http) on 127.0.0.11:9080.
fn reviews_v1() -> Value {
    instance(
        "reviews-v1",
        "reviews",
        "127.0.0.11",
        9080,
        &["version|v1"],
        json!({"protocol": "http"}),
    )
}

/// Registers ratings-1 (http, 127.0.0.21:9080) with the passing TTL check
/// `ratings-1-ttl`.
async fn register_ratings_1_with_ttl(agent: &Agent) {
    agent
        .register(with_ttl_check(
            instance(
                "ratings-1",
                "ratings",
                "127.0.0.21",
                9080,
                &[],
                json!({"protocol": "http"}),
            ),
            "ratings-1-ttl",
        ))
        .await;
}

/// Until the watched value satisfies `pred`; `last` describes the value a
/// timeout ends on.
async fn wait_watch<T: Clone>(
    rx: &mut watch::Receiver<T>,
    what: &str,
    within: Duration,
    pred: impl Fn(&T) -> bool,
    last: impl Fn(&T) -> String,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        {
            let current = rx.borrow_and_update();
            if pred(&current) {
                return current.clone();
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("registry stopped while waiting for {what}"),
            Err(_) => panic!("no {what} within {within:?}; {}", last(&rx.borrow())),
        }
    }
}

async fn wait_snapshot(
    rx: &mut watch::Receiver<ConsulSnapshot>,
    what: &str,
    within: Duration,
    pred: impl Fn(&ConsulSnapshot) -> bool,
) -> ConsulSnapshot {
    wait_watch(rx, what, within, pred, |s| {
        format!("last snapshot: {:#?}", s.snapshot)
    })
    .await
}

async fn wait_status(
    rx: &mut watch::Receiver<ConsulStatus>,
    what: &str,
    pred: impl Fn(&ConsulStatus) -> bool,
) -> ConsulStatus {
    wait_watch(rx, what, DEADLINE, pred, |s| format!("status: {s:#?}")).await
}

/// Next updates until one satisfies `pred`; returns them all.
async fn updates_until(
    updates: &mut ConsulUpdates,
    what: &str,
    within: Duration,
    pred: impl Fn(&ConsulUpdate) -> bool,
) -> Vec<ConsulUpdate> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, updates.next()).await {
            Ok(Some(update)) => {
                let done = pred(&update);
                seen.push(update);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("registry stopped while waiting for {what}"),
            Err(_) => panic!(
                "no {what} within {within:?}; updates seen: {:#?}",
                seen.iter().map(|u| &u.snapshot).collect::<Vec<_>>()
            ),
        }
    }
}

fn service<'a>(snap: &'a ConsulSnapshot, host: &str) -> Option<&'a Service> {
    snap.snapshot.services.iter().find(|s| s.hostname == host)
}

fn endpoints<'a>(snap: &'a ConsulSnapshot, host: &str) -> &'a [Endpoint] {
    snap.snapshot
        .endpoints
        .get(host)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const REVIEWS: &str = "reviews.service.consul";
const RATINGS: &str = "ratings.service.consul";
const MONGO: &str = "mongodb.service.consul";
const DETAILS: &str = "details.service.consul";

// --- tests ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_services_labels_and_protocols() {
    init_tracing();
    let agent = Agent::start(Mode::Dev).await;
    agent
        .register(instance(
            "reviews-v1",
            "reviews",
            "127.0.0.11",
            9080,
            &["version|v1", "primary"],
            json!({"protocol": "http"}),
        ))
        .await;
    agent
        .register(instance(
            "reviews-v2",
            "reviews",
            "127.0.0.12",
            9080,
            &["version=v2", "app|reviews"],
            json!({"protocol": "http"}),
        ))
        .await;
    // No protocol meta and no address: sniffed, on the node's address.
    agent
        .register(instance("ratings-1", "ratings", "", 9090, &[], json!({})))
        .await;
    agent
        .register(instance(
            "mongodb-1",
            "mongodb",
            "127.0.0.13",
            27017,
            &[],
            json!({"protocol": "mongo"}),
        ))
        .await;

    let started = Instant::now();
    let registry = ConsulRegistry::start(config(&agent.address())).expect("start");
    let mut rx = registry.snapshots();
    let snap = wait_snapshot(&mut rx, "initial sync", DEADLINE, |s| s.synced).await;
    eprintln!("initial sync after {:?}", started.elapsed());

    let hosts: Vec<&str> = snap
        .snapshot
        .services
        .iter()
        .map(|s| s.hostname.as_str())
        .collect();
    // `consul` itself is excluded by default.
    assert_eq!(hosts, [MONGO, RATINGS, REVIEWS]);

    let reviews = service(&snap, REVIEWS).expect("reviews");
    assert_eq!(reviews.registry, RegistryKind::Consul);
    assert_eq!(reviews.namespace, "default");
    assert!(reviews.vips.is_empty());
    assert_eq!(reviews.ports.len(), 1);
    assert_eq!(reviews.ports[0].port, 9080);
    assert_eq!(reviews.ports[0].protocol, Protocol::Http);
    assert_eq!(reviews.ports[0].name, "http");
    let eps = endpoints(&snap, REVIEWS);
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0].address, "127.0.0.11");
    assert_eq!(eps[0].labels, labels(&[("version", "v1")]));
    assert_eq!(eps[1].address, "127.0.0.12");
    assert_eq!(
        eps[1].labels,
        labels(&[("app", "reviews"), ("version", "v2")])
    );
    assert!(
        eps.iter()
            .all(|e| e.health == Health::Healthy && e.port == 9080 && e.service_port == 9080)
    );

    let ratings = service(&snap, RATINGS).expect("ratings");
    assert_eq!(ratings.ports[0].protocol, Protocol::Unknown);
    assert_eq!(endpoints(&snap, RATINGS)[0].address, "127.0.0.1");

    assert_eq!(
        service(&snap, MONGO).expect("mongodb").ports[0].protocol,
        Protocol::Tcp
    );

    let status = registry.status().borrow().clone();
    assert!(status.connected && status.synced, "{status:#?}");
    assert_eq!(status.services, 3);
    assert_eq!(status.consecutive_failures, 0);
    assert!(status.last_success.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_instance_changes_are_quick_endpoint_only_updates() {
    init_tracing();
    let agent = Agent::start(Mode::Dev).await;
    agent.register(reviews_v1()).await;
    let registry = ConsulRegistry::start(config(&agent.address())).expect("start");
    let mut updates = registry.updates();
    let first = updates_until(&mut updates, "initial update", DEADLINE, |_| true).await;
    assert!(first[0].services_changed);
    assert_eq!(first[0].snapshot.endpoints[REVIEWS].len(), 1);

    // A new instance of a known service: endpoints only.
    let t = Instant::now();
    agent
        .register(instance(
            "reviews-v2",
            "reviews",
            "127.0.0.12",
            9080,
            &["version|v2"],
            json!({"protocol": "http"}),
        ))
        .await;
    let seen = updates_until(&mut updates, "second reviews endpoint", QUICK, |u| {
        u.snapshot.endpoints[REVIEWS].len() == 2
    })
    .await;
    eprintln!("register → update in {:?}", t.elapsed());
    for u in &seen {
        assert!(u.endpoints_only(), "{u:#?}");
        assert_eq!(u.changed_hosts.iter().collect::<Vec<_>>(), [REVIEWS]);
    }

    // Deregistering one: endpoints only.
    let t = Instant::now();
    agent.deregister("reviews-v1").await;
    let seen = updates_until(&mut updates, "reviews-v1 gone", QUICK, |u| {
        u.snapshot.endpoints[REVIEWS].len() == 1
    })
    .await;
    eprintln!("deregister → update in {:?}", t.elapsed());
    assert!(seen.iter().all(ConsulUpdate::endpoints_only));
    assert_eq!(
        seen.last().expect("update").snapshot.endpoints[REVIEWS][0].address,
        "127.0.0.12"
    );

    // A new service: services changed.
    let t = Instant::now();
    agent
        .register(instance(
            "details-1",
            "details",
            "127.0.0.14",
            9080,
            &[],
            json!({"protocol": "grpc"}),
        ))
        .await;
    let seen = updates_until(&mut updates, "details service", QUICK, |u| {
        u.snapshot.endpoints.contains_key(DETAILS)
    })
    .await;
    eprintln!("new service → update in {:?}", t.elapsed());
    let last = seen.last().expect("update");
    assert!(last.services_changed);
    assert!(last.changed_hosts.contains(DETAILS));
    assert_eq!(
        last.snapshot
            .services
            .iter()
            .find(|s| s.hostname == DETAILS)
            .expect("details")
            .ports[0]
            .protocol,
        Protocol::Grpc
    );

    // Its last instance going: the service goes too.
    agent.deregister("details-1").await;
    let seen = updates_until(&mut updates, "details removed", QUICK, |u| {
        !u.snapshot.services.iter().any(|s| s.hostname == DETAILS)
    })
    .await;
    let last = seen.last().expect("update");
    assert!(last.services_changed);
    assert!(!last.snapshot.endpoints.contains_key(DETAILS));
    assert!(last.snapshot.endpoints.contains_key(REVIEWS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_failing_check_marks_endpoint_unhealthy() {
    init_tracing();
    let agent = Agent::start(Mode::Dev).await;
    register_ratings_1_with_ttl(&agent).await;
    agent
        .register(instance(
            "ratings-2",
            "ratings",
            "127.0.0.22",
            9080,
            &[],
            json!({"protocol": "http"}),
        ))
        .await;
    let registry = ConsulRegistry::start(config(&agent.address())).expect("start");
    let mut rx = registry.snapshots();
    let health = |s: &ConsulSnapshot| -> Vec<Health> {
        endpoints(s, RATINGS).iter().map(|e| e.health).collect()
    };
    wait_snapshot(&mut rx, "both healthy", DEADLINE, |s| {
        health(s) == [Health::Healthy, Health::Healthy]
    })
    .await;

    let t = Instant::now();
    agent.ttl("ratings-1-ttl", "fail").await;
    let snap = wait_snapshot(&mut rx, "ratings-1 unhealthy", QUICK, |s| {
        health(s) == [Health::Unhealthy, Health::Healthy]
    })
    .await;
    eprintln!("check fail → unhealthy in {:?}", t.elapsed());
    assert_eq!(endpoints(&snap, RATINGS)[0].address, "127.0.0.21");

    agent.ttl("ratings-1-ttl", "pass").await;
    wait_snapshot(&mut rx, "ratings-1 healthy again", QUICK, |s| {
        health(s) == [Health::Healthy, Health::Healthy]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_failing_check_removes_endpoint_when_passing_only() {
    init_tracing();
    let agent = Agent::start(Mode::Dev).await;
    register_ratings_1_with_ttl(&agent).await;
    let registry = ConsulRegistry::start(ConsulConfig {
        passing_only: true,
        ..config(&agent.address())
    })
    .expect("start");
    let mut rx = registry.snapshots();
    wait_snapshot(&mut rx, "one endpoint", DEADLINE, |s| {
        endpoints(s, RATINGS).len() == 1
    })
    .await;

    let t = Instant::now();
    agent.ttl("ratings-1-ttl", "fail").await;
    let snap = wait_snapshot(&mut rx, "endpoint removed", QUICK, |s| {
        s.synced && endpoints(s, RATINGS).is_empty()
    })
    .await;
    eprintln!("check fail → endpoint removed in {:?}", t.elapsed());
    // The service stays, with the port it had, so that callers get "no
    // healthy upstream" rather than an unknown host.
    let ratings = service(&snap, RATINGS).expect("ratings kept");
    assert_eq!(ratings.ports[0].port, 9080);
    assert_eq!(ratings.ports[0].protocol, Protocol::Http);

    agent.ttl("ratings-1-ttl", "pass").await;
    wait_snapshot(&mut rx, "endpoint back", QUICK, |s| {
        endpoints(s, RATINGS).len() == 1
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_outage_keeps_last_snapshot_and_recovers() {
    init_tracing();
    let mut agent = Agent::start(Mode::Server).await;
    agent.register(reviews_v1()).await;
    let registry = ConsulRegistry::start(config(&agent.address())).expect("start");
    let mut rx = registry.snapshots();
    let mut status = registry.status();
    let before = wait_snapshot(&mut rx, "reviews", DEADLINE, |s| {
        endpoints(s, REVIEWS).len() == 1
    })
    .await;

    let t = Instant::now();
    agent.stop();
    let down = wait_status(&mut status, "disconnected", |s| !s.connected).await;
    eprintln!("agent stopped → disconnected in {:?}", t.elapsed());
    let error = down.last_error.clone().expect("an error");
    assert!(
        error.contains(&format!("127.0.0.1:{}", agent.http_port)),
        "{error}"
    );
    // Several retries later, nothing was withdrawn.
    wait_status(&mut status, "repeated failures", |s| {
        s.consecutive_failures >= 3
    })
    .await;
    let during = registry.current();
    assert_eq!(during.snapshot, before.snapshot);
    assert_eq!(during.services_version, before.services_version);
    assert_eq!(during.endpoints_version, before.endpoints_version);
    assert!(during.synced && registry.status().borrow().synced);

    let t = Instant::now();
    agent.restart().await;
    eprintln!("agent restarted (leader elected) in {:?}", t.elapsed());
    let t = Instant::now();
    let up = wait_status(&mut status, "reconnected", |s| s.connected).await;
    eprintln!("agent up → connected in {:?}", t.elapsed());
    assert_eq!(up.consecutive_failures, 0);
    // A server agent keeps its registrations: still there.
    assert_eq!(endpoints(&registry.current(), REVIEWS).len(), 1);

    agent
        .register(instance(
            "details-1",
            "details",
            "127.0.0.14",
            9080,
            &[],
            json!({}),
        ))
        .await;
    let snap = wait_snapshot(&mut rx, "details after restart", DEADLINE, |s| {
        endpoints(s, DETAILS).len() == 1
    })
    .await;
    assert_eq!(endpoints(&snap, REVIEWS).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_unreachable_at_start_is_retried_until_it_answers() {
    init_tracing();
    // Reserve ports, start the registry against them before any agent runs.
    let mut agent = Agent::start(Mode::Dev).await;
    agent.stop();
    let registry = ConsulRegistry::start(config(&agent.address())).expect("start");
    let mut status = registry.status();
    let down = wait_status(&mut status, "a failure", |s| s.consecutive_failures >= 1).await;
    assert!(!down.connected && !down.synced, "{down:#?}");
    assert!(
        down.last_error
            .as_deref()
            .is_some_and(|e| e.contains("/v1/catalog/services")),
        "{down:#?}"
    );
    // Nothing published while nothing was read.
    assert!(!registry.current().synced);
    assert!(registry.current().snapshot.services.is_empty());

    agent.spawn().await;
    agent
        .register(instance(
            "ratings-1",
            "ratings",
            "127.0.0.21",
            9080,
            &[],
            json!({}),
        ))
        .await;
    let mut rx = registry.snapshots();
    wait_snapshot(&mut rx, "ratings", DEADLINE, |s| {
        endpoints(s, RATINGS).len() == 1
    })
    .await;
    let up = registry.status().borrow().clone();
    assert!(up.connected && up.synced, "{up:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_dropping_the_registry_stops_its_updates() {
    init_tracing();
    let agent = Agent::start(Mode::Dev).await;
    let registry = ConsulRegistry::start(config(&agent.address())).expect("start");
    let mut updates = registry.updates();
    let first = updates_until(&mut updates, "initial (empty) update", DEADLINE, |_| true).await;
    assert!(first[0].snapshot.services.is_empty());
    drop(registry);
    let end = tokio::time::timeout(QUICK, updates.next()).await;
    assert!(matches!(end, Ok(None)), "reader not closed");
}
