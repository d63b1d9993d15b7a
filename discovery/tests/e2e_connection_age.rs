//! `--max-connection-age` with a real Envoy: its xDS connection is sent
//! GOAWAY every couple of seconds (the age ± 10 %), its ADS stream ends once
//! what is queued is written, and it reconnects on a new connection each
//! time (a new connection id in `/debug/syncz`, Envoy's own count of
//! connections to `xds-grpc`, `pilotfish_xds_connections_aged_out_total`),
//! keeping its configuration throughout: requests through it never fail
//! and nothing is rejected. No connection needs the grace to be closed.
//!
//! Needs root (network namespaces, iptables, uid 1337 for Envoy).

mod support;

use std::time::{Duration, Instant};

use support::bookinfo::{self, REVIEWS_VS_FILE};
use support::pod::Pod;
use support::traffic::ms;
use support::{Tally, wait_until};

const AGE: &str = "2s";
/// The grace is longer than an age: an Envoy that had to be cut off would
/// show as a closed-after-grace count, not as a quick reconnect.
const GRACE: &str = "10s";
/// Reconnections to see: three ages, each up to 2.2 s, plus Envoy's retry
/// backoff (up to 0.5 s after a stream that had answers) on a loaded
/// 2-core machine.
const RECONNECTIONS: usize = 3;
const RECONNECTIONS_WITHIN: Duration = Duration::from_secs(40);

/// The connection id syncz lists for `node`, if it is connected.
fn connection_of(pod: &Pod, node: &str) -> Option<u64> {
    let syncz = pod.pilotfish.syncz();
    syncz["proxies"]
        .as_array()?
        .iter()
        .find(|proxy| proxy["identity"]["node_id"] == node)
        .and_then(|proxy| proxy["connection_id"].as_u64())
}

#[test]
fn an_envoy_whose_xds_connection_ages_out_reconnects_each_time_and_no_request_fails() {
    let pod = bookinfo::pod("connection-age")
        .config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v1", 100)]))
        .pilotfish_arg("--max-connection-age")
        .pilotfish_arg(AGE)
        .pilotfish_arg("--max-connection-age-grace")
        .pilotfish_arg(GRACE)
        .start();
    bookinfo::wait_served(&pod);
    let node = pod.envoy.node_id().to_string();
    let reviews = bookinfo::reviews();
    let connections_before = pod.envoy.cluster_stat("xds-grpc", "upstream_cx_total");

    let mut seen: Vec<u64> = Vec::new();
    let mut tally = Tally::default();
    let mut moves = Vec::new();
    let mut last_change = Instant::now();
    wait_until(
        &format!("{RECONNECTIONS} reconnections of {node}"),
        RECONNECTIONS_WITHIN,
        || {
            // Traffic all the while.
            for _ in 0..5 {
                let outcome = match pod.try_send(&reviews) {
                    Ok(response) => response.outcome(),
                    Err(e) => format!("error {}", e.kind()),
                };
                tally.add(outcome);
            }
            if let Some(id) = connection_of(&pod, &node)
                && seen.last() != Some(&id)
            {
                if !seen.is_empty() {
                    moves.push(last_change.elapsed());
                }
                last_change = Instant::now();
                seen.push(id);
            }
            if seen.len() > RECONNECTIONS {
                Ok(())
            } else {
                Err(format!("connections so far: {seen:?}"))
            }
        },
    );
    println!(
        "{} requests while {node} reconnected {RECONNECTIONS} times (connections {seen:?}, between changes: {})",
        tally.total(),
        moves.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
    );
    tally.assert_all("reviews v1", "while the xDS connection aged out");
    let aged = pod.pilotfish.metric("xds_connections_aged_out_total");
    assert!(
        aged >= RECONNECTIONS as f64,
        "pilotfish_xds_connections_aged_out_total = {aged}"
    );
    assert_eq!(
        pod.pilotfish
            .metric("xds_connections_closed_after_grace_total"),
        0.0,
        "an aged connection had to be cut off: Envoy did not leave on GOAWAY"
    );
    let connections = pod.envoy.cluster_stat("xds-grpc", "upstream_cx_total") - connections_before;
    assert!(
        connections >= RECONNECTIONS as u64,
        "Envoy opened {connections} new xDS connections"
    );
    pod.pilotfish.wait_synced_without_nack(&node);
    pod.envoy.assert_no_rejected_updates();
}
