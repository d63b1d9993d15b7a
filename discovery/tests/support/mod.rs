//! End-to-end harness: each test builds a "pod" — a network namespace with
//! iptables interception, pilotfish, a stock Envoy sidecar running as uid
//! 1337, test backends on 127.0.0.x and a client — and checks behaviour by
//! sending real traffic through Envoy.
//!
//! Addresses: backends on 127.0.0.x (x >= 2), service VIPs in 127.1.0.0/16
//! (nothing listens there: iptables hands the connection to Envoy), control
//! traffic (xDS, admin, pilotfish HTTP) on 127.0.0.1, which is not captured.
#![allow(dead_code, unused_imports)]

pub mod ads_client;
pub mod app;
pub mod backend;
pub mod behaviours;
pub mod bookinfo;
pub mod config_dump;
pub mod consul;
pub mod dns;
pub mod envoy;
pub mod gateway;
pub mod http;
pub mod kube_apiserver;
pub mod kube_mesh;
pub mod l4;
pub mod mesh;
pub mod netns;
pub mod pilotfish;
pub mod pod;
pub mod process;
pub mod registry;
pub mod replicas;
pub mod secure_xds;
pub mod tcp;
pub mod testdir;
pub mod tls;
pub mod traffic;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub use http::{Request, Response};
pub use pod::{Pod, Tally};

/// How long start-up steps may take on a loaded 2-core machine.
pub const STARTUP: Duration = Duration::from_secs(30);
/// How long a config change may take to reach Envoy (the project's promise).
pub const PROPAGATION: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `probe` until it returns `Ok`, or panics after `timeout` with the
/// last reason it gave.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(value) => return value,
            Err(reason) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {reason}")
            }
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// Runs a command that must succeed, panicking with its output otherwise.
pub fn run_checked(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A path in the repository, e.g. `repo_path("testdata/bookinfo")`.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Istio's cluster name: `outbound|9080|v2|reviews.default.svc.cluster.local`.
pub fn outbound_cluster(port: u16, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

/// A loopback `127.0.0.1:<port>` for a process the test starts to listen
/// on. Ports are handed out once per test process from below Linux's
/// ephemeral range (32768+): a port taken from that range and released
/// could be reused by any outgoing connection before the process binds it.
pub fn free_loopback_address() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = 23_000 + (std::process::id() % 90) * 100;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(start + offset % 800).expect("port in range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return format!("127.0.0.1:{port}");
        }
    }
}
