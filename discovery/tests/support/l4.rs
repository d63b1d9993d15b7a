//! Helpers of the L4 and egress tests (`e2e_l4_*.rs`, `e2e_egress_*.rs`):
//! what Envoy's listeners hold, and many raw TCP or TLS connections counted
//! by who answered.

use serde_json::Value;

use super::pod::{Pod, Tally};
use super::tls::{self, TestCa};
use super::{STARTUP, tcp, wait_until};

/// Names of the filter chains of active listener `listener`, the default
/// chain last (prefixed `default:`).
pub fn chain_names(dump: &Value, listener: &str) -> Option<Vec<String>> {
    let section = dump.get("configs")?.as_array()?.iter().find(|c| {
        c.get("@type").and_then(Value::as_str)
            == Some("type.googleapis.com/envoy.admin.v3.ListenersConfigDump")
    })?;
    let active = section
        .get("dynamic_listeners")?
        .as_array()?
        .iter()
        .find(|l| l.get("name").and_then(Value::as_str) == Some(listener))?
        .pointer("/active_state/listener")?;
    let mut names: Vec<String> = active
        .get("filter_chains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    if let Some(default) = active
        .pointer("/default_filter_chain/name")
        .and_then(Value::as_str)
    {
        names.push(format!("default:{default}"));
    }
    Some(names)
}

/// Waits until Envoy's listener `listener` has (or, with `present` false,
/// no longer has) a filter chain named `chain`.
pub fn wait_chain(pod: &Pod, listener: &str, chain: &str, present: bool) {
    let what = if present { "with" } else { "without" };
    wait_until(
        &format!("listener {listener} {what} chain {chain}"),
        STARTUP,
        || {
            let names = chain_names(&pod.envoy.config_dump(), listener)
                .ok_or_else(|| "listener not active yet".to_string())?;
            if names.iter().any(|n| n == chain) == present {
                Ok(())
            } else {
                Err(format!("chains: {names:?}"))
            }
        },
    );
}

/// Who answered a line: "db v1" for "db v1: ping", else the error kind.
fn outcome(reply: std::io::Result<String>) -> String {
    match reply {
        Ok(line) => line
            .split_once(": ")
            .map_or(line.clone(), |(who, _)| who.to_string()),
        Err(e) => format!("error {}", e.kind()),
    }
}

/// `n` raw TCP connections to `addr`, one line each.
pub fn tcp_tally(pod: &Pod, addr: &str, n: usize) -> Tally {
    pod.ns().run(|| {
        let mut tally = Tally::default();
        for i in 0..n {
            let reply = tcp::exchange_line(addr, &format!("ping {i}"));
            tally.add(outcome(reply));
        }
        tally
    })
}

/// `n` TLS connections to `addr` with SNI `server_name`, verified against
/// `ca` for that name, one line each.
pub fn tls_tally(pod: &Pod, addr: &str, server_name: &str, ca: &TestCa, n: usize) -> Tally {
    pod.ns().run(|| {
        let mut tally = Tally::default();
        for i in 0..n {
            let reply = tls::exchange_line(addr, server_name, ca, &format!("hello {i}"));
            tally.add(outcome(reply));
        }
        tally
    })
}
