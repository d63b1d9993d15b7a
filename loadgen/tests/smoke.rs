//! Keeps the load generator working: a small run against the real
//! `pilotfish` binary for each ADS variant — every stream syncs and every
//! stream receives an endpoint change. Measurements themselves are never
//! asserted (see docs/benchmarks.md).
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

fn smoke(protocol: &str, restart: bool) {
    let work = std::env::temp_dir().join(format!(
        "pilotfish-loadgen-smoke-{protocol}{}-{}",
        if restart { "-restart" } else { "" },
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
        .args(restart.then_some("--restart"))
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
    if restart {
        assert_eq!(report["restart"]["resynced"], PROXIES, "{text}\n{stderr}");
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn state_of_the_world_streams_sync_and_receive_a_change() {
    smoke("sotw", false);
}

#[test]
fn delta_streams_sync_and_receive_a_change() {
    smoke("delta", false);
}

#[test]
fn streams_reconnect_and_resync_when_the_server_restarts() {
    smoke("sotw", true);
}
