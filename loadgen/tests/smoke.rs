//! Keeps the load generator working: a small run against the real
//! `pilotfish` binary for each ADS variant — every stream syncs and every
//! stream receives an endpoint change; after a restart, or after one of two
//! replicas is killed, every stream that lost its server syncs again.
//! Measurements themselves are never asserted (see docs/benchmarks.md).
//!
//! Needs the pilotfish binary: `PILOTFISH_BIN`, or the one built next to the
//! load generator (`cargo test --workspace` builds it; otherwise run
//! `cargo build -p pilotfish-discovery --bin pilotfish` first).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

const PROXIES: u64 = 20;

fn pilotfish_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PILOTFISH_BIN") {
        return PathBuf::from(path);
    }
    let loadgen = PathBuf::from(env!("CARGO_BIN_EXE_pilotfish-loadgen"));
    let sibling = loadgen.with_file_name("pilotfish");
    assert!(
        sibling.exists(),
        "no pilotfish binary at {}: set PILOTFISH_BIN or run `cargo build -p pilotfish-discovery --bin pilotfish` with the same profile",
        sibling.display()
    );
    sibling
}

/// What happens to the server after the change.
#[derive(Clone, Copy, PartialEq)]
enum Event {
    None,
    /// `--restart`.
    Restart,
    /// `--replicas 2 --kill-replica`.
    KillReplica,
}

impl Event {
    fn args(self) -> &'static [&'static str] {
        match self {
            Event::None => &[],
            Event::Restart => &["--restart"],
            Event::KillReplica => &["--replicas", "2", "--kill-replica"],
        }
    }

    fn label(self) -> &'static str {
        match self {
            Event::None => "",
            Event::Restart => "-restart",
            Event::KillReplica => "-kill-replica",
        }
    }
}

/// Runs the load generator and returns its JSON report.
fn smoke(protocol: &str, event: Event) -> Value {
    let work = std::env::temp_dir().join(format!(
        "pilotfish-loadgen-smoke-{protocol}{}-{}",
        event.label(),
        std::process::id()
    ));
    let json = work.join("report.json");
    std::fs::create_dir_all(&work).expect("work dir");
    let output = Command::new(env!("CARGO_BIN_EXE_pilotfish-loadgen"))
        .arg("--pilotfish")
        .arg(pilotfish_binary())
        .arg("--work-dir")
        .arg(&work)
        .arg("--json")
        .arg(&json)
        .args(["--protocol", protocol, "--proxies", &PROXIES.to_string()])
        .args(["--services", "50", "--endpoints", "2"])
        .args(["--virtual-services", "5", "--destination-rules", "5"])
        .args(["--change", "endpoint", "--rounds", "1"])
        .args(event.args())
        .args([
            "--round-gap-ms",
            "200",
            "--settle-ms",
            "200",
            "--timeout-s",
            "40",
        ])
        .output()
        .expect("run pilotfish-loadgen");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadgen failed:\n{stderr}");
    let text = std::fs::read_to_string(&json).expect("report written");
    let report: Value = serde_json::from_str(&text).expect("report is JSON");
    assert_eq!(report["server"]["input_problems"], 0, "{text}");
    assert_eq!(
        report["initial_sync"]["synced"], PROXIES,
        "{text}\n{stderr}"
    );
    assert_eq!(report["stream_errors"], 0, "{text}\n{stderr}");
    let change = &report["changes"][0];
    assert_eq!(change["kind"], "endpoint");
    assert_eq!(change["received"], PROXIES, "{text}\n{stderr}");
    if event == Event::Restart {
        assert_eq!(report["restart"]["resynced"], PROXIES, "{text}\n{stderr}");
    }
    if event == Event::KillReplica {
        let spread = report["proxies_per_replica"]
            .as_array()
            .expect("per replica");
        let counts: Vec<u64> = spread.iter().filter_map(Value::as_u64).collect();
        assert_eq!(counts.iter().sum::<u64>(), PROXIES, "{text}");
        assert!(
            counts.iter().all(|&n| n > 0),
            "both replicas hold proxies: {text}"
        );
        let failover = &report["failover"];
        assert_eq!(failover["killed_replica"], 1, "{text}");
        assert_eq!(failover["expected"], counts[1], "{text}");
        assert_eq!(failover["resynced"], counts[1], "{text}\n{stderr}");
    }
    let _ = std::fs::remove_dir_all(&work);
    report
}

/// Config resources the moved proxies received while resyncing.
fn resources_resent(report: &Value) -> u64 {
    report["failover"]["resources"]
        .as_array()
        .expect("resources per type")
        .iter()
        .filter_map(Value::as_u64)
        .sum()
}

#[test]
fn state_of_the_world_streams_sync_and_receive_a_change() {
    smoke("sotw", Event::None);
}

#[test]
fn delta_streams_sync_and_receive_a_change() {
    smoke("delta", Event::None);
}

#[test]
fn streams_reconnect_and_resync_when_the_server_restarts() {
    smoke("sotw", Event::Restart);
}

#[test]
fn sotw_streams_move_to_the_surviving_replica_and_get_everything_again() {
    let report = smoke("sotw", Event::KillReplica);
    assert!(resources_resent(&report) > 0, "{report}");
}

#[test]
fn delta_streams_move_to_the_surviving_replica_and_get_no_config_again() {
    // They tell the replica what they hold (initial_resource_versions),
    // and it has the same input.
    let report = smoke("delta", Event::KillReplica);
    assert_eq!(resources_resent(&report), 0, "{report}");
}
