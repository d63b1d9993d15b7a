//! A stock Envoy sidecar: bootstrap from `pilotfish bootstrap`, run as uid
//! 1337 (so iptables leaves its own upstream traffic alone) in the namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;

use super::config_dump;
use super::http::control_get;
use super::netns::Netns;
use super::process::{Process, write_world_readable};
use super::{STARTUP, run_checked, wait_until};

pub const PROXY_UID: &str = "1337";
/// The pod's own IP as told to pilotfish; no backend uses it.
pub const POD_IP: &str = "127.0.0.250";

/// The real Envoy binary, where scripts/setup.sh puts it for uid 1337:
/// `$PILOTFISH_TEST_ROOT/bin/envoy` (default root /opt/pilotfish-test), or
/// `PILOTFISH_ENVOY` if set.
pub fn binary() -> PathBuf {
    let root =
        std::env::var_os("PILOTFISH_TEST_ROOT").unwrap_or_else(|| "/opt/pilotfish-test".into());
    let path = std::env::var_os("PILOTFISH_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(root).join("bin/envoy"));
    assert!(
        path.exists(),
        "no Envoy at {}: run scripts/setup.sh (or set PILOTFISH_ENVOY)",
        path.display()
    );
    path
}

pub struct Envoy {
    ns: Arc<Netns>,
    process: Process,
    node_id: String,
    /// `127.0.0.1:<admin port>` from the bootstrap.
    admin_address: String,
}

impl Envoy {
    /// Starts Envoy on the bootstrap `pilotfish bootstrap` prints for pod `name`.
    pub fn start(ns: Arc<Netns>, dir: &Path, name: &str, xds_address: &str) -> Envoy {
        Envoy::start_with_bootstrap(ns, dir, &pilotfish_bootstrap(name, xds_address, &[]))
    }

    /// Writes `bootstrap` into `dir`, starts Envoy on it and waits until its
    /// admin `/ready` says LIVE (initial LDS/CDS done).
    pub fn start_with_bootstrap(ns: Arc<Netns>, dir: &Path, bootstrap: &str) -> Envoy {
        let mut envoy = Envoy::spawn_with_bootstrap(ns, dir, bootstrap);
        envoy.wait_live();
        envoy
    }

    /// [`Envoy::start_with_bootstrap`] without the wait, so that several
    /// Envoys can start at once. Call it on a thread that outlives the
    /// Envoy: the parent-death signal is tied to the spawning thread.
    pub fn spawn_with_bootstrap(ns: Arc<Netns>, dir: &Path, bootstrap: &str) -> Envoy {
        let parsed: Value = serde_json::from_str(bootstrap)
            .unwrap_or_else(|e| panic!("Envoy bootstrap is not JSON ({e}):\n{bootstrap}"));
        let node_id = parsed
            .pointer("/node/id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let admin_port = parsed
            .pointer("/admin/address/socket_address/port_value")
            .and_then(Value::as_u64)
            .unwrap_or(15000);
        let bootstrap_path = dir.join("envoy-bootstrap.json");
        write_world_readable(&bootstrap_path, bootstrap);

        let envoy = binary();
        let uid = format!("--reuid={PROXY_UID}");
        let gid = format!("--regid={PROXY_UID}");
        let mut cmd = ns.command(
            "setpriv",
            &[
                uid.as_str(),
                gid.as_str(),
                "--clear-groups",
                "--pdeathsig",
                "KILL",
            ],
        );
        cmd.arg(envoy)
            .arg("-c")
            .arg(&bootstrap_path)
            .args(["--concurrency", "1", "--disable-hot-restart"])
            .args([
                "--log-level",
                "info",
                "--component-log-level",
                "config:debug",
            ])
            .current_dir(dir);
        Envoy {
            process: Process::spawn("envoy", cmd, &dir.join("envoy.log")),
            ns,
            node_id,
            admin_address: format!("127.0.0.1:{admin_port}"),
        }
    }

    /// Waits until the admin `/ready` says LIVE (initial LDS/CDS done).
    pub fn wait_live(&mut self) {
        wait_until("Envoy admin /ready to say LIVE", STARTUP, || {
            self.process.assert_running();
            match self.admin_get("/ready")? {
                (200, _) => Ok(()),
                (status, body) => Err(format!("/ready answered {status}: {}", body.trim())),
            }
        });
    }

    /// The node id pilotfish knows this Envoy by.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        self.ns.run(|| control_get(&self.admin_address, path))
    }

    fn admin_json(&self, path: &str) -> Result<Value, String> {
        match self.admin_get(path)? {
            (200, body) => {
                serde_json::from_str(&body).map_err(|e| format!("admin {path}: not JSON: {e}"))
            }
            (status, body) => Err(format!("admin {path} answered {status}: {body}")),
        }
    }

    /// `/config_dump` including EDS.
    pub fn config_dump(&self) -> Value {
        self.admin_json("/config_dump?include_eds")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every counter and gauge from `/stats`.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        let (_, body) = self.admin_get("/stats").unwrap_or_else(|e| panic!("{e}"));
        body.lines()
            .filter_map(|line| line.rsplit_once(": "))
            .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
            .collect()
    }

    /// One stat; 0 when Envoy has not created it (yet).
    pub fn stat(&self, name: &str) -> u64 {
        self.stats().get(name).copied().unwrap_or(0)
    }

    /// `cluster.<cluster>.<stat>`, e.g. `upstream_cx_total` (connections Envoy
    /// opened to the cluster) or `upstream_rq_total` (HTTP requests it routed).
    pub fn cluster_stat(&self, cluster: &str, stat: &str) -> u64 {
        self.stat(&format!("cluster.{cluster}.{stat}"))
    }

    /// Every `*.update_rejected` stat (LDS, CDS, each RDS and EDS
    /// subscription) that is not 0: xDS responses Envoy NACKed.
    pub fn rejected_updates(&self) -> BTreeMap<String, u64> {
        self.stats()
            .into_iter()
            .filter(|(name, value)| name.ends_with("update_rejected") && *value > 0)
            .collect()
    }

    /// Panics unless Envoy has accepted every xDS update so far.
    pub fn assert_no_rejected_updates(&self) {
        let rejected = self.rejected_updates();
        assert!(
            rejected.is_empty(),
            "Envoy rejected xDS updates: {rejected:?}\nEnvoy log:\n{}",
            self.log()
        );
        let accepted = self.stat("listener_manager.lds.update_success")
            + self.stat("cluster_manager.cds.update_success");
        assert!(accepted > 0, "Envoy accepted no LDS/CDS update at all");
    }

    pub fn wait_listener(&self, name: &str) {
        self.wait_config(&format!("listener {name}"), |dump| {
            config_dump::active_listeners(dump)
                .contains(&name)
                .then_some(())
                .ok_or("not active yet".into())
        });
    }

    /// Waits for route configuration `route` to have a virtual host for `domain`.
    pub fn wait_route_domain(&self, route: &str, domain: &str) {
        self.wait_config(
            &format!("route config {route:?} with domain {domain}"),
            |dump| {
                let config =
                    config_dump::route_config(dump, route).ok_or("no such route config yet")?;
                config_dump::domains(config)
                    .contains(&domain)
                    .then_some(())
                    .ok_or("domain not there yet".into())
            },
        );
    }

    /// Waits until `cluster` is active and has at least `hosts` endpoints.
    pub fn wait_cluster(&self, cluster: &str, hosts: usize) {
        wait_until(
            &format!("cluster {cluster} with {hosts} host(s)"),
            STARTUP,
            || {
                let clusters = self.admin_json("/clusters?format=json")?;
                let found = config_dump::cluster_hosts(&clusters, cluster)
                    .ok_or("cluster not known yet")?;
                if found.len() >= hosts {
                    Ok(())
                } else {
                    Err(format!("hosts so far: {found:?}"))
                }
            },
        );
    }

    fn wait_config(&self, what: &str, mut check: impl FnMut(&Value) -> Result<(), String>) {
        wait_until(what, STARTUP, || {
            check(&self.admin_json("/config_dump?include_eds")?)
        });
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn assert_running(&mut self) {
        self.process.assert_running();
    }
}

/// `pilotfish bootstrap` for a gateway (proxy type `router`, no
/// interception) called `name` in namespace default, with workload
/// `labels` (what Gateway selectors match) and its admin on `admin_port`;
/// `extra_args` are passed on (e.g. `--xds-protocol delta`).
pub fn gateway_bootstrap(
    name: &str,
    xds_address: &str,
    labels: &[(&str, &str)],
    admin_port: u16,
    extra_args: &[String],
) -> String {
    let mut cmd = Command::new(super::pilotfish::binary());
    cmd.args([
        "bootstrap",
        "--xds-address",
        xds_address,
        "--proxy-type",
        "router",
    ])
    .args(["--ip", POD_IP, "--name", name, "--namespace", "default"])
    .args(["--interception-mode", "NONE"])
    .args(local_ports(admin_port));
    for (key, value) in labels {
        cmd.args(["--label", &format!("{key}={value}")]);
    }
    add_args(&mut cmd, extra_args);
    run_checked(&mut cmd)
}

/// Adds a test's own bootstrap arguments, and `--xds-protocol <p>` when
/// `PILOTFISH_TEST_XDS_PROTOCOL` is set and the test did not choose: that
/// runs the whole suite on one ADS variant (`sotw` or `delta`).
pub fn add_args(cmd: &mut Command, extra_args: &[String]) {
    cmd.args(extra_args);
    let chosen = extra_args.iter().any(|a| a == "--xds-protocol");
    match std::env::var("PILOTFISH_TEST_XDS_PROTOCOL") {
        Ok(protocol) if !protocol.is_empty() && !chosen => {
            cmd.args(["--xds-protocol", &protocol]);
        }
        _ => {}
    }
}

/// `pilotfish bootstrap` for a sidecar called `name` in namespace default
/// under iptables REDIRECT; `extra_args` are passed on (e.g.
/// `--xds-protocol delta`).
pub fn pilotfish_bootstrap(name: &str, xds_address: &str, extra_args: &[String]) -> String {
    sidecar_bootstrap(name, xds_address, "REDIRECT", extra_args)
}

/// Envoy's own ports: admin, and health and Prometheus beside it as 15021
/// and 15090 are beside 15000, so that several Envoys can share a namespace.
fn local_ports(admin_port: u16) -> Vec<String> {
    let ports = [admin_port, admin_port + 21, admin_port + 90].map(|p| p.to_string());
    ["--admin-port", "--health-port", "--stats-port"]
        .into_iter()
        .zip(ports)
        .flat_map(|(flag, port)| [flag.to_string(), port])
        .collect()
}

/// [`pilotfish_bootstrap`] with another `--interception-mode` (`NONE`:
/// the sidecar's listeners bind real sockets).
pub fn sidecar_bootstrap(
    name: &str,
    xds_address: &str,
    interception_mode: &str,
    extra_args: &[String],
) -> String {
    sidecar_bootstrap_on(name, xds_address, interception_mode, 15000, extra_args)
}

/// [`sidecar_bootstrap`] with Envoy's admin on `admin_port` (health and
/// Prometheus beside it): more sidecars in one namespace.
pub fn sidecar_bootstrap_on(
    name: &str,
    xds_address: &str,
    interception_mode: &str,
    admin_port: u16,
    extra_args: &[String],
) -> String {
    let mut cmd = Command::new(super::pilotfish::binary());
    cmd.args([
        "bootstrap",
        "--xds-address",
        xds_address,
        "--proxy-type",
        "sidecar",
        "--ip",
        POD_IP,
    ])
    .args([
        "--name",
        name,
        "--namespace",
        "default",
        "--interception-mode",
        interception_mode,
    ])
    .args(local_ports(admin_port));
    add_args(&mut cmd, extra_args);
    run_checked(&mut cmd)
}
