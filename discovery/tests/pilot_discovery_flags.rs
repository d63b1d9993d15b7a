//! `pilotfish discovery`, the drop-in for Istio 1.1's `pilot-discovery
//! discovery` in docker-compose files.
//!
//! - The compose file's flags (`--registries Consul --consulserverURL URL
//!   --httpAddr :PORT --secureGrpcAddr ""`, here with `--configDir` and
//!   `--meshConfig` instead of a Kubernetes API server for config) start a
//!   server that reads the real Consul agent and reports ready, with the
//!   secure port off and monitoring on `--monitoringAddr`.
//! - Any other flag is refused by name, non-zero, before anything starts.
//!
//! Needs root (network namespaces).

mod support;

use std::net::TcpStream;
use std::sync::Arc;

use support::consul::{Consul, Instance};
use support::http::control_get;
use support::netns::Netns;
use support::pilotfish::Pilotfish;
use support::testdir::TestDir;
use support::{STARTUP, wait_until};

const HTTP_ADDRESS: &str = "127.0.0.1:15007";
const MONITORING_ADDRESS: &str = "127.0.0.1:15015";

fn words(text: &[&str]) -> Vec<String> {
    text.iter().map(|w| w.to_string()).collect()
}

#[test]
fn the_istio_1_1_consul_compose_flags_serve_consul_and_a_config_dir_with_the_secure_port_off() {
    let dir = TestDir::new("pilot-discovery-flags");
    let config = dir.path().join("config");
    std::fs::create_dir(&config).expect("config dir");
    let mesh = dir.path().join("mesh");
    std::fs::write(&mesh, "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n").expect("mesh");
    let ns = Arc::new(Netns::new());
    let consul = Consul::start(ns.clone(), dir.path(), "127.0.0.1");
    consul.register(&Instance::new("details-1", "details", "127.0.0.1", 9080));

    let args = words(&[
        "--httpAddr",
        HTTP_ADDRESS,
        "--registries",
        "Consul",
        "--consulserverURL",
        &consul.url(),
        "--configDir",
        config.to_str().expect("utf-8 path"),
        "--meshConfig",
        mesh.to_str().expect("utf-8 path"),
        "--monitoringAddr",
        MONITORING_ADDRESS,
        "--secureGrpcAddr",
        "",
    ]);
    let pilotfish = Pilotfish::discovery(
        ns.clone(),
        &args,
        HTTP_ADDRESS,
        &dir.path().join("pilotfish.log"),
    );

    wait_until("consul's details service in the registry", STARTUP, || {
        let registries = pilotfish.get_json("/debug/registries");
        let consul_status = registries
            .as_array()
            .and_then(|all| all.iter().find(|r| r["registry"] == "consul"))
            .ok_or_else(|| format!("no consul registry: {registries}"))?;
        match consul_status["connected"] == true && consul_status["synced"] == true {
            true => Ok(()),
            false => Err(format!("consul not synced: {registries}")),
        }
    });
    let monitoring = ns.run(|| control_get(MONITORING_ADDRESS, "/ready"));
    assert!(
        matches!(monitoring, Ok((200, _))),
        "--monitoringAddr /ready: {monitoring:?}"
    );
    let xds = ns.run(|| TcpStream::connect("127.0.0.1:15010"));
    assert!(
        xds.is_ok(),
        "default --grpcAddr :15010 not listening: {xds:?}"
    );
    let secure = ns.run(|| TcpStream::connect("127.0.0.1:15012"));
    assert!(
        secure.is_err(),
        "--secureGrpcAddr \"\" still listens on 15012"
    );
}

#[test]
fn a_flag_pilot_discovery_compose_files_did_not_use_is_refused_by_name() {
    let dir = TestDir::new("pilot-discovery-bogus-flag");
    let ns = Netns::new();
    let refusal = Pilotfish::subcommand_refused(
        &ns,
        "discovery",
        &words(&[
            "--registries",
            "Consul",
            "--consulserverURL",
            "http://127.0.0.1:8500",
            "--bogus",
            "x",
        ]),
        &dir.path().join("pilotfish.log"),
    );
    refusal.assert_one_line_names(&["unknown flag --bogus", "pilotfish discovery"]);
}
