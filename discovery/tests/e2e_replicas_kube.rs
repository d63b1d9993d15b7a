//! Two replicas on a real kube-apiserver (+ etcd): both `pilotfish serve`
//! processes watch the same API server (Services, EndpointSlices, Pods and
//! the Bookinfo routing applied with kubectl) and the same config
//! directory, with `--max-connection-age 2s`; every sidecar's bootstrap
//! lists both (`pilotfish bootstrap --xds-address A --xds-address B`).
//!
//! - Twenty sidecars: once the second replica starts, both hold some
//!   within three ages, and every sidecar is served byte-identical config
//!   by both (each replica's `/debug/config_dump?proxy=`), so all twenty
//!   hold the same resources at the same versions (Envoy's own config
//!   dumps). One replica
//!   SIGKILLed while requests flow: every sidecar moves to the other, no
//!   request fails, the config is unchanged (and, on delta, the move sends
//!   no config resource); the killed one, restarted, receives sidecars
//!   again.
//! - A replica started while the API server is down refuses ADS streams
//!   with UNAVAILABLE (a raw gRPC client, and the sidecar, which stays on
//!   the ready replica without a failed request) and answers `/ready` 503
//!   naming the source and its error; once the API server is back it
//!   becomes ready and serves the whole mesh, the same as the other.
//!
//! The twenty sidecars share one pod namespace and its capture: Envoy binds
//! its listeners with SO_REUSEPORT, so the kernel spreads the captured
//! connections over all of them (each one's stats show it routed some).
//! Plaintext xDS only (the secure port's replicas are covered by
//! `e2e_replicas`).
//!
//! Needs root (network namespaces, iptables) and
//! scripts/install-kube-apiserver.sh.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::ads_client::clusters_from_raw_client;
use support::config_dump::dynamic_config;
use support::kube_apiserver::KubeApiServer;
use support::kube_mesh::{
    KubePod, KubePodOptions, PORT, apply, apply_bookinfo_config, bookinfo_workloads, fqdn,
    install_crds, request,
};
use support::pod::SECOND_REPLICA_XDS;
use support::replicas::{
    THREE_AGES, age_args, config_resources_sent, delta, held, holds, kill, resources, served,
    wait_served,
};
use support::traffic::ms;
use support::{PROPAGATION, Request, Tally, outbound_cluster, wait_until};

/// The pod's own sidecar and this many more.
const MORE_SIDECARS: u16 = 19;
/// Admin ports of the extra sidecars, from here up.
const SIDECAR_ADMIN_PORT: u16 = 16100;
/// The watches' back-off after an outage (client-go's: 0.8 s doubling,
/// jittered, at most 30 s) plus a relist.
const RESUME: Duration = Duration::from_secs(60);

/// In the config directory (the routing in the API server comes from
/// testdata/bookinfo/config): jason's requests to ratings go to reviews
/// v3, which only this file can explain.
const RATINGS_FOR_JASON: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - route: [{destination: {host: ratings}}]
"#;

/// The requests sent through the sidecars, and who must answer each.
fn requests() -> [(Request, &'static str); 3] {
    [
        (request("reviews"), "reviews v1"),
        (request("reviews").header("end-user", "jason"), "reviews v2"),
        (request("ratings").header("end-user", "jason"), "reviews v3"),
    ]
}

/// One round of [`requests`], each outcome counted under its expectation.
fn send_round(pod: &KubePod, tallies: &mut BTreeMap<&'static str, Tally>) {
    for (request, expected) in requests() {
        let outcome = match pod.try_send(&request) {
            Ok(response) => response.outcome(),
            Err(e) => format!("error {}", e.kind()),
        };
        tallies.entry(expected).or_default().add(outcome);
    }
}

fn assert_all_answered(tallies: &BTreeMap<&'static str, Tally>, what: &str) -> usize {
    for (expected, tally) in tallies {
        tally.assert_all(expected, what);
    }
    tallies.values().map(Tally::total).sum()
}

/// Waits until the pod's first replica (called `which`) holds some
/// sidecars, sending requests meanwhile.
fn wait_holding_some(pod: &KubePod, tallies: &mut BTreeMap<&'static str, Tally>, which: &str) {
    wait_until(&format!("{which} to hold sidecars"), THREE_AGES, || {
        send_round(pod, tallies);
        match held(&pod.pilotfish).len() {
            0 => Err("none".to_string()),
            n => Ok(n),
        }
    });
}

/// Bookinfo with its routing in the API server and [`RATINGS_FOR_JASON`]
/// in the config directory, a pod watching both with one replica
/// (`--max-connection-age 2s`) whose sidecar lists both replicas.
fn bookinfo_on_the_api_server(name: &str) -> (KubeApiServer, KubePod) {
    let server = KubeApiServer::start(name);
    install_crds(&server);
    apply(&server, &bookinfo_workloads());
    apply_bookinfo_config(&server);
    let mut opts = KubePodOptions::new(name);
    opts.second_replica = true;
    opts.pilotfish_args.extend(age_args());
    let pod = KubePod::start(&server, opts);
    pod.wait_bookinfo_served();
    std::fs::write(
        pod.path().join("config/ratings-for-jason.yaml"),
        RATINGS_FOR_JASON,
    )
    .expect("write the config directory");
    let (ratings, v3) = &requests()[2];
    pod.wait_all(ratings, 10, v3, PROPAGATION);
    (server, pod)
}

#[test]
fn two_replicas_on_the_api_server_share_twenty_sidecars_serve_them_identical_config_and_survive_a_sigkill()
 {
    let (_server, mut pod) = bookinfo_on_the_api_server("replicas-kube");
    let sidecars = pod.start_sidecars("replicas-kube", MORE_SIDECARS, SIDECAR_ADMIN_PORT, true);
    let mut nodes: Vec<String> = sidecars.iter().map(|e| e.node_id().to_string()).collect();
    nodes.push(pod.envoy.node_id().to_string());
    let mut tallies = BTreeMap::new();

    // The second replica starts; within three ages both hold sidecars,
    // and each sidecar's config is dumped from both.
    let mut second = pod.spawn_second_replica(&[], "pilotfish-b.log");
    second.wait_ready();
    let started = Instant::now();
    let mut first_dumps: BTreeMap<String, Value> = BTreeMap::new();
    let mut second_dumps: BTreeMap<String, Value> = BTreeMap::new();
    let mut held_by_both_after = None;
    wait_until(
        "both replicas to hold sidecars, and every sidecar dumped by both",
        THREE_AGES + THREE_AGES,
        || {
            send_round(&pod, &mut tallies);
            let (on_first, on_second) = (held(&pod.pilotfish), held(&second));
            if held_by_both_after.is_none() && !on_first.is_empty() && !on_second.is_empty() {
                held_by_both_after = Some(started.elapsed());
            }
            for (replica, held, dumps) in [
                (&pod.pilotfish, on_first, &mut first_dumps),
                (&second, on_second, &mut second_dumps),
            ] {
                for node in held {
                    if !dumps.contains_key(&node)
                        && let Some(dump) = served(replica, &node)
                    {
                        dumps.insert(node, dump);
                    }
                }
            }
            let missing: Vec<&String> = nodes
                .iter()
                .filter(|n| !first_dumps.contains_key(*n) || !second_dumps.contains_key(*n))
                .collect();
            match missing.is_empty() {
                true => Ok(()),
                false => Err(format!("not yet dumped by both: {missing:?}")),
            }
        },
    );
    let held_by_both_after = held_by_both_after.unwrap_or_default();
    assert!(
        held_by_both_after <= THREE_AGES,
        "both replicas held sidecars only after {}",
        ms(held_by_both_after)
    );
    for node in &nodes {
        let (first, second) = (&first_dumps[node], &second_dumps[node]);
        assert!(resources(first) > 0, "an empty dump for {node}: {first}");
        assert!(
            first == second,
            "the replicas serve {node} different config:\nfirst:  {first}\nsecond: {second}"
        );
    }
    // And Envoy's side: every sidecar, whichever replica it last synced
    // from, holds the same resources at the same versions.
    let reference = dynamic_config(&pod.envoy.config_dump());
    let count = |kind: &str| reference[kind].as_array().map_or(0, Vec::len);
    assert!(
        count("clusters") > 0 && count("listeners") > 0 && count("routes") > 0,
        "{reference}"
    );
    for envoy in &sidecars {
        let held = dynamic_config(&envoy.config_dump());
        assert!(
            held == reference,
            "{} holds other config than {}:\n{held}\n{reference}",
            envoy.node_id(),
            pod.envoy.node_id()
        );
    }
    println!(
        "both replicas held sidecars {} after the second started; all {} sidecars were served the same {} resources by both",
        ms(held_by_both_after),
        nodes.len(),
        resources(&first_dumps[&nodes[0]])
    );

    // SIGKILL the first replica while it holds sidecars: all move.
    wait_holding_some(&pod, &mut tallies, "the first replica");
    let sent_before = config_resources_sent(&second);
    kill(&pod.pilotfish);
    let killed = Instant::now();
    // Connections still age out every 2 s (and then try the dead replica
    // first, in turn), so the sidecars are never all listed at one
    // instant: each must have been seen on the second since the kill.
    let mut seen_on_second = BTreeSet::new();
    wait_until(
        "every sidecar to reconnect to the second replica",
        PROPAGATION * 4,
        || {
            send_round(&pod, &mut tallies);
            seen_on_second.extend(held(&second));
            match nodes
                .iter()
                .filter(|n| !seen_on_second.contains(*n))
                .count()
            {
                0 => Ok(()),
                left => Err(format!("{left} not seen on the second replica")),
            }
        },
    );
    let all_moved = killed.elapsed();
    // Every stream's responses acknowledged, none rejected.
    second.wait_synced_without_nack(&nodes[0]);
    for node in &nodes {
        assert!(
            wait_served(&second, node) == first_dumps[node],
            "the config of {node} changed on the move"
        );
    }
    let sent_on_move = config_resources_sent(&second) - sent_before;
    println!(
        "SIGKILL: all {} sidecars on the second replica after {}; the moves (and the second's own aged connections) cost {sent_on_move} config resources (delta: {})",
        nodes.len(),
        ms(all_moved),
        delta()
    );
    if delta() {
        assert_eq!(
            sent_on_move, 0,
            "delta sidecars moved to a replica with the same input are sent nothing"
        );
    }

    // The killed replica, restarted, receives sidecars again.
    pod.restart_pilotfish();
    let restarted = Instant::now();
    wait_holding_some(&pod, &mut tallies, "the restarted replica");
    println!(
        "the restarted replica held sidecars after {}",
        ms(restarted.elapsed())
    );
    // Enough requests that every sidecar carries some: the kernel picks
    // among 20 sockets per connection, so one of 600 requests or more is
    // missed by a given sidecar with probability 0.95^600 < 1e-13.
    while tallies.values().map(Tally::total).sum::<usize>() < 600 {
        send_round(&pod, &mut tallies);
    }
    let sent = assert_all_answered(
        &tallies,
        "through twenty sidecars while replicas started, aged out, died and came back",
    );

    // Every sidecar carried some of the requests and took every update.
    let clusters = ["v1", "v2", "v3"].map(|v| outbound_cluster(PORT, v, &fqdn("reviews")));
    let routed: Vec<u64> = sidecars
        .iter()
        .chain([&pod.envoy])
        .map(|envoy| {
            clusters
                .iter()
                .map(|cluster| envoy.cluster_stat(cluster, "upstream_rq_total"))
                .sum()
        })
        .collect();
    println!("{sent} requests; routed per sidecar: {routed:?}");
    assert!(
        routed.iter().all(|&n| n > 0),
        "a sidecar routed no request: {routed:?}"
    );
    for envoy in sidecars.iter().chain([&pod.envoy]) {
        envoy.assert_no_rejected_updates();
    }
    second.assert_running();
}

#[test]
fn a_replica_started_while_the_api_server_is_down_refuses_ads_until_it_syncs_then_serves_the_full_mesh()
 {
    let (mut server, pod) = bookinfo_on_the_api_server("replica-unsynced");
    let node = pod.envoy.node_id().to_string();
    let mut tallies = BTreeMap::new();
    let full_mesh = wait_served(&pod.pilotfish, &node);

    server.stop_apiserver();
    let second = pod.spawn_second_replica(&[], "pilotfish-b.log");
    let body = wait_until(
        "/ready to refuse, naming the source and its error",
        PROPAGATION * 2,
        || match second.get("/ready")? {
            (503, body) if body.contains("kubernetes") && body.contains("last_error=") => Ok(body),
            (status, body) => Err(format!("/ready answered {status}: {body}")),
        },
    );
    println!("unsynced replica /ready: {body}");
    let refused = clusters_from_raw_client(pod.ns(), SECOND_REPLICA_XDS)
        .expect_err("a replica whose sources have not synced must not serve a mesh");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("kubernetes"),
        "the refusal says what it waits for: {refused:?}"
    );

    // The sidecar's connection ages out; it tries the unsynced replica,
    // is refused, and goes back to the ready one, routing all along.
    wait_until(
        "the sidecar to be refused by the unsynced replica",
        THREE_AGES,
        || {
            send_round(&pod, &mut tallies);
            match second.metric("xds_streams_refused_unready_total") {
                n if n >= 2.0 => Ok(n),
                n => Err(format!("{n} streams refused")),
            }
        },
    );
    assert!(
        held(&second).is_empty(),
        "an unsynced replica holds a proxy"
    );
    assert_eq!(second.get("/ready").map(|(status, _)| status), Ok(503));

    // The API server back: ready, and the sidecar served the whole mesh.
    server.start_again();
    let back = Instant::now();
    wait_until("the second replica to be ready", RESUME, || {
        send_round(&pod, &mut tallies);
        match second.get("/ready")? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("/ready answered {status}: {body}")),
        }
    });
    let ready_after = back.elapsed();
    wait_until(
        &format!("the second replica to hold {node}"),
        THREE_AGES,
        || {
            send_round(&pod, &mut tallies);
            holds(&second, &node)
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        },
    );
    second.wait_synced_without_nack(&node);
    assert!(
        wait_served(&second, &node) == full_mesh,
        "the replica serves the whole mesh once synced"
    );
    for _ in 0..10 {
        send_round(&pod, &mut tallies);
    }
    let sent = assert_all_answered(
        &tallies,
        "while a replica started without its API server and synced later",
    );
    println!(
        "the unsynced replica refused {} streams; ready {} after the API server returned; {sent} requests, none failed; it served {node} the same {} resources",
        second.metric("xds_streams_refused_unready_total"),
        ms(ready_after),
        resources(&full_mesh)
    );
    pod.envoy.assert_no_rejected_updates();
}
