//! Several `pilotfish serve` replicas on the same sources: which proxies
//! each one holds, what it serves them, what it has sent.

use std::time::Duration;

use serde_json::Value;

use super::pilotfish::Pilotfish;
use super::wait_until;

/// The replicas' `--max-connection-age` in these tests.
pub const AGE: &str = "2s";

/// Three ages at their longest (+10 %), with Envoy's retry backoff after
/// each (up to 0.5 s) and slack for a loaded 2-core machine.
pub const THREE_AGES: Duration = Duration::from_millis(3 * (2200 + 500) + 3000);

pub fn age_args() -> Vec<String> {
    vec!["--max-connection-age".into(), AGE.into()]
}

/// The node ids of the proxies `pilotfish` holds (its `/debug/syncz`).
pub fn held(pilotfish: &Pilotfish) -> Vec<String> {
    pilotfish.syncz()["proxies"]
        .as_array()
        .map(|proxies| {
            proxies
                .iter()
                .filter_map(|p| p["identity"]["node_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

pub fn holds(pilotfish: &Pilotfish, node: &str) -> bool {
    held(pilotfish).iter().any(|held| held == node)
}

/// What `pilotfish` serves `node`, without what is per process: the
/// generation counter, and the workload certificate (`default`) and root
/// it hands the proxy on its stream. `None` unless it holds `node`.
pub fn served(pilotfish: &Pilotfish, node: &str) -> Option<Value> {
    let (200, body) = pilotfish
        .get(&format!("/debug/config_dump?proxy={node}"))
        .ok()?
    else {
        return None;
    };
    let mut dump: Value = serde_json::from_str(&body).ok()?;
    dump.as_object_mut()?.remove("mesh_version");
    if let Some(secrets) = dump["types"]["sds"]["resources"].as_array_mut() {
        secrets.retain(|s| s["name"] != "default" && s["name"] != "ROOTCA");
    }
    Some(dump)
}

/// [`served`], waiting for `node` to be connected to `pilotfish` (it may be
/// between connections when asked).
pub fn wait_served(pilotfish: &Pilotfish, node: &str) -> Value {
    wait_until(&format!("a config dump of {node}"), THREE_AGES, || {
        served(pilotfish, node).ok_or_else(|| "not connected".to_string())
    })
}

/// How many resources a [`served`] dump holds, all types.
pub fn resources(dump: &Value) -> usize {
    dump["types"]
        .as_object()
        .map(|types| {
            types
                .values()
                .map(|t| t["resources"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0)
}

/// Resources `pilotfish` has sent, all types but secrets (the workload
/// certificate each replica issues itself).
pub fn config_resources_sent(pilotfish: &Pilotfish) -> u64 {
    pilotfish
        .metrics()
        .lines()
        .filter(|line| line.starts_with("pilotfish_xds_resources_sent_total{"))
        .filter(|line| !line.contains("type=\"sds\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Whether the suite runs the sidecars on delta xDS (the bootstrap's default).
pub fn delta() -> bool {
    std::env::var("PILOTFISH_TEST_XDS_PROTOCOL").map_or(true, |p| p != "sotw")
}

/// SIGKILL: a replica crashes, nothing is said to its proxies.
pub fn kill(pilotfish: &Pilotfish) {
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe {
        libc::kill(pilotfish.pid() as libc::pid_t, libc::SIGKILL);
    }
}
