//! The pilotfish binary under test, running inside the pod's namespace.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::http::control_get;
use super::netns::Netns;
use super::process::Process;
use super::{PROPAGATION, STARTUP, wait_until};

pub const XDS_ADDRESS: &str = "127.0.0.1:15010";
pub const HTTP_ADDRESS: &str = "127.0.0.1:15014";

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_pilotfish")
}

/// What a pod started its pilotfish with, kept to start a replacement (a
/// restarted replica) on the same sources with the same arguments.
pub struct Launch {
    pub config_dir: PathBuf,
    pub registry_file: PathBuf,
    /// The arguments beside the config directory and registry file.
    pub args: Vec<String>,
    /// How many pilotfish processes have been started.
    starts: usize,
}

impl Launch {
    /// The launch of a pod's first pilotfish.
    pub fn new(config_dir: PathBuf, registry_file: PathBuf, args: Vec<String>) -> Launch {
        Launch {
            config_dir,
            registry_file,
            args,
            starts: 1,
        }
    }

    /// Starts pilotfish again, logging to `dir/pilotfish-<n>.log` (the
    /// previous one must have exited: it held the ports); waits until it is
    /// ready.
    pub fn restart(&mut self, ns: Arc<Netns>, dir: &Path) -> Pilotfish {
        self.starts += 1;
        Pilotfish::start(
            ns,
            &self.config_dir,
            &self.registry_file,
            &dir.join(format!("pilotfish-{}.log", self.starts)),
            &self.args,
        )
    }
}

pub struct Pilotfish {
    ns: Arc<Netns>,
    process: Process,
    /// Where its HTTP (ready, debug, metrics) port listens.
    http_address: String,
}

/// How a `pilotfish serve` that refused to start ended: its exit status
/// and everything it wrote.
pub struct Refusal {
    pub status: std::process::ExitStatus,
    pub log: String,
}

impl Refusal {
    /// Panics unless pilotfish failed and one line of its output names
    /// every one of `parts` (an error split over lines or lacking the
    /// path, flag or address does not count).
    pub fn assert_one_line_names(&self, parts: &[&str]) {
        assert!(
            !self.status.success(),
            "pilotfish exited successfully; output:\n{}",
            self.log
        );
        assert!(
            self.log
                .lines()
                .any(|line| parts.iter().all(|part| line.contains(part))),
            "no line of pilotfish's output names all of {parts:?}; output:\n{}",
            self.log
        );
    }
}

impl Pilotfish {
    /// Starts `pilotfish serve` on `config_dir` and `registry_file` and waits
    /// until its `/ready` answers 200.
    pub fn start(
        ns: Arc<Netns>,
        config_dir: &Path,
        registry_file: &Path,
        log: &Path,
        extra_args: &[String],
    ) -> Pilotfish {
        let mut pilotfish =
            Pilotfish::start_unready(ns, config_dir, registry_file, log, extra_args);
        pilotfish.wait_ready();
        pilotfish
    }

    /// [`Pilotfish::start`] without waiting for readiness: returns once its
    /// HTTP port answers, whatever `/ready` says.
    pub fn start_unready(
        ns: Arc<Netns>,
        config_dir: &Path,
        registry_file: &Path,
        log: &Path,
        extra_args: &[String],
    ) -> Pilotfish {
        let mut args: Vec<String> = vec![
            "--config-dir".into(),
            config_dir.to_str().expect("utf-8 path").into(),
            "--registry-file".into(),
            registry_file.to_str().expect("utf-8 path").into(),
            "--xds-address".into(),
            XDS_ADDRESS.into(),
            "--debounce-ms".into(),
            "100".into(),
        ];
        args.extend(extra_args.iter().cloned());
        Pilotfish::spawn(ns, &args, HTTP_ADDRESS, log)
    }

    /// Starts `pilotfish serve <args> --http-address <http_address>` (the
    /// caller picks sources, registries and the xDS address) and waits until
    /// its `/ready` answers 200.
    pub fn serve(ns: Arc<Netns>, args: &[String], http_address: &str, log: &Path) -> Pilotfish {
        let mut pilotfish = Pilotfish::spawn(ns, args, http_address, log);
        pilotfish.wait_ready();
        pilotfish
    }

    /// Starts `pilotfish serve <args> --http-address <http_address>` and
    /// waits until its HTTP port answers `/ready`, with any status.
    pub fn spawn(ns: Arc<Netns>, args: &[String], http_address: &str, log: &Path) -> Pilotfish {
        let mut cmd = command(&ns, "serve", args);
        cmd.args(["--http-address", http_address]);
        Pilotfish::spawn_command(ns, cmd, http_address, log)
    }

    /// Starts `pilotfish discovery <args>` (pilot-discovery's flags; `args`
    /// put its HTTP port on `http_address`) and waits until its `/ready`
    /// answers 200.
    pub fn discovery(ns: Arc<Netns>, args: &[String], http_address: &str, log: &Path) -> Pilotfish {
        let cmd = command(&ns, "discovery", args);
        let mut pilotfish = Pilotfish::spawn_command(ns, cmd, http_address, log);
        pilotfish.wait_ready();
        pilotfish
    }

    /// Runs `cmd` and waits until its HTTP port answers `/ready`, with any status.
    fn spawn_command(
        ns: Arc<Netns>,
        cmd: std::process::Command,
        http_address: &str,
        log: &Path,
    ) -> Pilotfish {
        let mut pilotfish = Pilotfish {
            process: Process::spawn("pilotfish", cmd, log),
            ns,
            http_address: http_address.to_string(),
        };
        wait_until("pilotfish to answer /ready", STARTUP, || {
            pilotfish.process.assert_running();
            pilotfish.get("/ready").map(|_| ())
        });
        pilotfish
    }

    /// Runs `pilotfish serve <args>`, which must exit by itself within the
    /// start-up bound (it is killed, and the test fails, if it serves).
    pub fn refused(ns: &Netns, args: &[String], log: &Path) -> Refusal {
        Pilotfish::subcommand_refused(ns, "serve", args, log)
    }

    /// Runs `pilotfish <subcommand> <args>`, which must exit by itself
    /// within the start-up bound.
    pub fn subcommand_refused(
        ns: &Netns,
        subcommand: &str,
        args: &[String],
        log: &Path,
    ) -> Refusal {
        let mut process = Process::spawn("pilotfish", command(ns, subcommand, args), log);
        let status = process.wait_exit(STARTUP).unwrap_or_else(|| {
            panic!(
                "pilotfish {subcommand} {args:?} still runs after {STARTUP:?}; its log:\n{}",
                process.log()
            )
        });
        Refusal {
            status,
            log: process.log(),
        }
    }

    /// Waits until `/ready` answers 200.
    pub fn wait_ready(&mut self) {
        wait_until("pilotfish /ready", STARTUP, || {
            self.process.assert_running();
            match self.get("/ready")? {
                (200, _) => Ok(()),
                (status, body) => Err(format!("/ready answered {status}: {body}")),
            }
        });
    }

    /// The debug/metrics address (in the pod's namespace), what the
    /// operator commands take as `--server`.
    pub fn http_address(&self) -> &str {
        &self.http_address
    }

    /// `GET path` on pilotfish's HTTP address.
    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.ns.run(|| control_get(&self.http_address, path))
    }

    /// `GET path`, which must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Value {
        match self.get(path) {
            Ok((200, body)) => serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("pilotfish {path} is not JSON ({e}): {body}")),
            other => panic!("pilotfish {path}: {other:?}"),
        }
    }

    pub fn diagnostics(&self) -> Value {
        self.get_json("/debug/diagnostics")
    }

    pub fn syncz(&self) -> Value {
        self.get_json("/debug/syncz")
    }

    /// Waits until `/debug/diagnostics` has an entry (an object with a
    /// `message`) mentioning `needle`; returns that entry as JSON text.
    pub fn wait_diagnostic(&self, needle: &str) -> String {
        wait_until(
            &format!("a diagnostic mentioning {needle:?}"),
            PROPAGATION,
            || {
                let diagnostics = self.diagnostics();
                let mut entries = Vec::new();
                collect_entries(&diagnostics, &mut entries);
                entries
                    .into_iter()
                    .find(|e| e.contains(needle))
                    .ok_or_else(|| format!("diagnostics: {diagnostics}"))
            },
        )
    }

    /// Waits until `/debug/syncz` shows proxy `node_id` with every type it
    /// was sent acknowledged (each `*sent*` field equal to its `*acked*`
    /// twin) and no NACK recorded, and returns that entry.
    pub fn wait_synced_without_nack(&self, node_id: &str) -> Value {
        wait_until(
            &format!("syncz: {node_id} acked everything, no NACK"),
            PROPAGATION,
            || {
                let syncz = self.syncz();
                let text = syncz.to_string();
                if !text.contains(node_id) {
                    return Err(format!("proxy not listed: {text}"));
                }
                let mut nacks = Vec::new();
                find_nacks(&syncz, "", &mut nacks);
                assert!(
                    nacks.is_empty(),
                    "pilotfish recorded NACKs: {nacks:?}\nsyncz: {text}"
                );
                let (pairs, unacked) = sent_vs_acked(&syncz);
                if pairs == 0 {
                    // Connected, nothing sent yet (a stream just opened).
                    return Err(format!("nothing sent yet: {text}"));
                }
                if unacked.is_empty() {
                    Ok(syncz)
                } else {
                    Err(format!("not acked yet: {unacked:?}"))
                }
            },
        )
    }

    pub fn metrics(&self) -> String {
        match self.get("/metrics") {
            Ok((200, body)) => body,
            other => panic!("pilotfish /metrics: {other:?}"),
        }
    }

    /// `pilotfish_<name>` (a metric without labels) from `/metrics`, 0 when
    /// absent.
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(&format!("pilotfish_{name} ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGTERM; how long the process took to exit and its status, `None`
    /// if it had not exited within `limit`.
    pub fn terminate(
        &mut self,
        limit: std::time::Duration,
    ) -> Option<(std::time::Duration, std::process::ExitStatus)> {
        self.process.terminate(limit)
    }

    pub fn assert_running(&mut self) {
        self.process.assert_running();
    }
}

/// `pilotfish serve <args>` in `ns`, logging at info unless RUST_LOG says
/// otherwise.
fn command(ns: &Netns, subcommand: &str, args: &[String]) -> std::process::Command {
    let mut cmd = ns.command(binary(), &[subcommand]);
    cmd.args(args);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd
}

/// True for a value that carries something: not null, "", 0, false, [] or {}.
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Every object with a `message` field, as JSON text.
fn collect_entries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if map.contains_key("message") => out.push(value.to_string()),
        Value::Object(map) => map.values().for_each(|v| collect_entries(v, out)),
        Value::Array(items) => items.iter().for_each(|v| collect_entries(v, out)),
        _ => {}
    }
}

/// Collects `path = value` for every set field whose name mentions a NACK.
fn find_nacks(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = format!("{path}/{key}");
                if key.to_ascii_lowercase().contains("nack") && !child.is_object() && is_set(child)
                {
                    out.push(format!("{child_path} = {child}"));
                }
                find_nacks(child, &child_path, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                find_nacks(child, &format!("{path}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Pairs every `...sent...` field with its `...acked...` (or `...ack...`)
/// twin in the same object; returns how many pairs there were and which differ.
fn sent_vs_acked(value: &Value) -> (usize, Vec<String>) {
    let mut pairs = 0;
    let mut differ = Vec::new();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                for (key, sent) in map.iter().filter(|(k, _)| k.contains("sent")) {
                    let twin = ["acked", "ack"]
                        .iter()
                        .find_map(|a| map.get(&key.replace("sent", a)));
                    if let Some(acked) = twin {
                        pairs += 1;
                        if acked != sent {
                            differ.push(format!("{key}={sent} vs acked {acked} in {value}"));
                        }
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    (pairs, differ)
}
