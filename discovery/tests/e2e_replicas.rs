//! Two replicas, one mesh: two `pilotfish serve` processes on the same
//! config directory and registry file (and mesh CA on the secure port), and
//! a sidecar whose bootstrap lists both (`pilotfish bootstrap
//! --xds-address A --xds-address B`), both replicas with
//! `--max-connection-age 2s`.
//!
//! - Each replica holds the sidecar in turn within three ages (each one's
//!   `/debug/syncz`), and both serve it the same config, byte for byte
//!   (`/debug/config_dump?proxy=`; only the per-process generation counter
//!   and, on the secure port, the workload certificate each replica issues
//!   itself are left out of the comparison).
//! - One replica killed with SIGKILL while requests flow through the
//!   sidecar: it reconnects to the other, no request fails; the killed one,
//!   restarted, holds it again within three ages.
//!
//! One Envoy: the pod's namespace has one sidecar's interception, and the
//! behaviour shown is per proxy.
//!
//! Needs root (network namespaces, iptables, uid 1337 for Envoy).

mod support;

use std::time::{Duration, Instant};

use support::bookinfo::{self, REVIEWS_VS_FILE};
use support::pilotfish::Pilotfish;
use support::pod::Pod;
use support::replicas::{
    AGE, THREE_AGES, age_args, config_resources_sent, delta, holds, kill, resources, served,
};
use support::traffic::ms;
use support::{PROPAGATION, Tally, wait_until};

/// One request through the sidecar, its outcome counted.
fn send(pod: &Pod, tally: &mut Tally) {
    let outcome = match pod.try_send(&bookinfo::reviews()) {
        Ok(response) => response.outcome(),
        Err(e) => format!("error {}", e.kind()),
    };
    tally.add(outcome);
}

/// Waits until `replica` (called `which`) holds `node`, sending requests
/// meanwhile.
fn wait_held(
    pod: &Pod,
    tally: &mut Tally,
    (which, replica): (&str, &Pilotfish),
    node: &str,
    timeout: Duration,
) {
    wait_until(&format!("{which} to hold {node}"), timeout, || {
        send(pod, tally);
        holds(replica, node)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
}

#[test]
fn two_replicas_serve_the_same_config_share_the_proxy_and_take_over_from_a_killed_one() {
    let mut pod = bookinfo::pod("replicas")
        .second_replica()
        .config(REVIEWS_VS_FILE, &bookinfo::reviews_weighted(&[("v1", 100)]))
        .pilotfish_arg("--max-connection-age")
        .pilotfish_arg(AGE)
        .start();
    let second = pod.start_second_replica(&age_args(), "pilotfish-b.log");
    bookinfo::wait_served(&pod);
    let node = pod.envoy.node_id().to_string();
    let mut tally = Tally::default();

    // Each replica holds the sidecar in turn; each one's dump is taken
    // while it does.
    let (mut first_dump, mut second_dump) = (None, None);
    wait_until(&format!("each replica to hold {node}"), THREE_AGES, || {
        send(&pod, &mut tally);
        if first_dump.is_none() {
            first_dump = served(&pod.pilotfish, &node);
        }
        if second_dump.is_none() {
            second_dump = served(&second, &node);
        }
        match (&first_dump, &second_dump) {
            (Some(_), Some(_)) => Ok(()),
            _ => Err(format!(
                "first holds: {}, second holds: {}",
                first_dump.is_some(),
                second_dump.is_some()
            )),
        }
    });
    let (first_dump, second_dump) = (
        first_dump.unwrap_or_default(),
        second_dump.unwrap_or_default(),
    );
    assert!(resources(&first_dump) > 0, "an empty dump: {first_dump}");
    assert!(
        first_dump == second_dump,
        "the replicas serve {node} different config:\nfirst:  {first_dump}\nsecond: {second_dump}"
    );
    println!(
        "both replicas held {node} and served it the same {} resources",
        resources(&first_dump)
    );

    // SIGKILL the first replica once it holds the sidecar.
    let first = ("the first replica", &pod.pilotfish);
    wait_held(&pod, &mut tally, first, &node, THREE_AGES);
    let sent_before = config_resources_sent(&second);
    kill(&pod.pilotfish);
    let killed = Instant::now();
    let second_replica = ("the second replica", &second);
    wait_held(&pod, &mut tally, second_replica, &node, PROPAGATION * 2);
    let took_over = killed.elapsed();
    second.wait_synced_without_nack(&node);
    let sent_on_move = config_resources_sent(&second) - sent_before;
    println!(
        "the move to the second replica cost {sent_on_move} config resources (delta: {})",
        delta()
    );
    if delta() {
        assert_eq!(
            sent_on_move, 0,
            "a delta proxy moved to a replica with the same input is sent nothing"
        );
    }
    for _ in 0..20 {
        send(&pod, &mut tally);
    }

    // The killed replica restarted gets the sidecar back.
    pod.restart_pilotfish();
    let restarted = Instant::now();
    let restarted_replica = ("the restarted replica", &pod.pilotfish);
    wait_held(&pod, &mut tally, restarted_replica, &node, THREE_AGES);
    let back = restarted.elapsed();
    println!(
        "SIGKILL: the second replica held {node} after {}; the restarted one again after {}; {} requests",
        ms(took_over),
        ms(back),
        tally.total()
    );
    tally.assert_all("reviews v1", "while replicas aged out, died and came back");
    assert_eq!(
        served(&pod.pilotfish, &node).as_ref(),
        Some(&second_dump),
        "the restarted replica serves the same config"
    );
    pod.envoy.assert_no_rejected_updates();
}
