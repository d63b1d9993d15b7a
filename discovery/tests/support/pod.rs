//! A test "pod": namespace + iptables capture + backends + pilotfish + Envoy,
//! and the client-side helpers tests use to send traffic through it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::{Backend, Backends};
use super::envoy::{Envoy, gateway_bootstrap, sidecar_bootstrap};
use super::http::{Request, Response};
use super::netns::Netns;
use super::pilotfish::{self, Launch, Pilotfish};
use super::process::write_world_readable;
use super::secure_xds;
use super::testdir::TestDir;
use super::{repo_path, tcp, wait_until};

/// Admin port of gateway Envoys, apart from the sidecar's 15000 so both
/// can share a namespace.
pub const GATEWAY_ADMIN_PORT: u16 = 15100;

#[derive(Default)]
pub struct PodBuilder {
    name: String,
    registry: String,
    config: Vec<(String, String)>,
    pilotfish_args: Vec<String>,
    /// Set: the pod is a gateway with these labels (no capture, router Envoy).
    gateway_labels: Option<Vec<(String, String)>>,
    /// Extra `pilotfish bootstrap` arguments for the pod's Envoy.
    bootstrap_args: Vec<String>,
    /// Envoys use the secure xDS port (also with PILOTFISH_TEST_SECURE_XDS=1).
    secure_xds: bool,
    /// The sidecar runs without interception (`INTERCEPTION_MODE` NONE, no
    /// iptables): clients dial its listeners on 127.0.0.1 themselves.
    without_interception: bool,
    /// Runtime keys set in the Envoy bootstrap's static layer, over what
    /// `pilotfish bootstrap` put there.
    envoy_runtime: Vec<(String, serde_json::Value)>,
    /// The pod's DNS is captured to its sidecar, which asks for DNS
    /// proxying (`--capture-dns`, `pilotfish bootstrap --dns-proxy`).
    dns_proxy: bool,
    /// Names the pod's resolver answers (a test DNS server in the
    /// namespace): what Envoy resolves DNS ServiceEntries through.
    resolver: Option<Vec<(String, std::net::Ipv4Addr)>>,
    /// Envoy's bootstrap also lists [`SECOND_REPLICA_XDS`].
    second_replica: bool,
}

/// The second replica's xDS address (plaintext, or the secure port when
/// the pod's Envoys use it) and HTTP address, beside the first's.
pub const SECOND_REPLICA_XDS: &str = "127.0.0.1:15020";
pub const SECOND_REPLICA_SECURE_XDS: &str = "127.0.0.1:15022";
pub const SECOND_REPLICA_HTTP: &str = "127.0.0.1:15024";

impl PodBuilder {
    /// The registry file's contents; a backend is started for every endpoint.
    pub fn registry(mut self, yaml: &str) -> Self {
        self.registry = yaml.to_string();
        self
    }

    /// A registry file from the repository, e.g. `testdata/bookinfo/registry.yaml`.
    pub fn registry_from(self, relative: &str) -> Self {
        let yaml = read(&repo_path(relative));
        self.registry(&yaml)
    }

    /// One file of the config directory.
    pub fn config(mut self, file_name: &str, yaml: &str) -> Self {
        self.config.retain(|(name, _)| name != file_name);
        self.config.push((file_name.to_string(), yaml.to_string()));
        self
    }

    /// Every file of a repository directory, e.g. `testdata/bookinfo/config`.
    pub fn config_from(mut self, relative: &str) -> Self {
        let dir = repo_path(relative);
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            self = self.config(&name, &read(&path));
        }
        self
    }

    /// Makes the pod an Istio-style gateway: its Envoy is a `router` with
    /// workload `labels` and nothing is captured, so clients in the
    /// namespace reach its listeners directly.
    pub fn gateway(mut self, labels: &[(&str, &str)]) -> Self {
        self.gateway_labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }

    /// The pod's Envoy lists a second replica's xDS address after the
    /// first (see [`Pod::start_second_replica`]): its `xds-grpc` cluster
    /// has both.
    pub fn second_replica(mut self) -> Self {
        self.second_replica = true;
        self
    }

    /// The pod's Envoy speaks incremental ADS (`api_type: DELTA_GRPC`,
    /// from `pilotfish bootstrap --xds-protocol delta`).
    pub fn delta_xds(mut self) -> Self {
        self.bootstrap_args
            .extend(["--xds-protocol".to_string(), "delta".to_string()]);
        self
    }

    /// Envoy connects to the secure xDS port with a workload certificate
    /// from pilotfish's CA (see [`super::secure_xds`]).
    pub fn secure_xds(mut self) -> Self {
        self.secure_xds = true;
        self
    }

    /// The namespace's resolver (programs started in it use it) answers
    /// `records`, name → IPv4 address, and nothing else.
    pub fn resolver(mut self, records: &[(&str, &str)]) -> Self {
        self.resolver = Some(
            records
                .iter()
                .map(|(name, ip)| (name.to_string(), ip.parse().expect("IPv4 address")))
                .collect(),
        );
        self
    }

    /// DNS proxying: the pod's DNS queries go to its sidecar, which answers
    /// service names with their (possibly allocated) addresses.
    pub fn dns_proxy(mut self) -> Self {
        self.dns_proxy = true;
        self.bootstrap_args.push("--dns-proxy".to_string());
        self
    }

    /// A sidecar without interception: no iptables rules, and its
    /// bootstrap says `--interception-mode NONE`.
    pub fn without_interception(mut self) -> Self {
        self.without_interception = true;
        self
    }

    /// Sets runtime `key` of the pod's Envoy to `value`, overriding the
    /// bootstrap's (e.g. a stricter `re2.max_program_size.error_level`, so
    /// that this Envoy rejects what pilotfish accepts).
    pub fn envoy_runtime(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.envoy_runtime.push((key.to_string(), value.into()));
        self
    }

    pub fn pilotfish_arg(mut self, arg: &str) -> Self {
        self.pilotfish_args.push(arg.to_string());
        self
    }

    /// Starts the pod: pilotfish ready, then Envoy LIVE.
    pub fn start(self) -> Pod {
        self.launch(true)
    }

    /// Starts pilotfish and Envoy without waiting for pilotfish to be
    /// ready or Envoy to be LIVE (a pod whose sources are broken at start).
    pub fn start_unready(self) -> Pod {
        self.launch(false)
    }

    fn launch(self, wait: bool) -> Pod {
        let dir = TestDir::new(&self.name);
        let config_dir = dir.path().join("config");
        std::fs::create_dir(&config_dir).expect("create config dir");
        for (name, yaml) in &self.config {
            write_world_readable(&config_dir.join(name), yaml);
        }
        let registry_file = write_registry_file(dir.path(), &self.registry);

        let ns = Arc::new(Netns::new());
        let dns_server = self.resolver.as_ref().map(|records| {
            ns.use_resolver(TEST_RESOLVER);
            super::dns::DnsServer::start(&ns, (TEST_RESOLVER, 53).into(), records)
        });
        if self.gateway_labels.is_none() && !self.without_interception {
            ns.capture_outbound(self.dns_proxy);
        }
        let backends = Backends::start_for_registry(&ns, &self.registry);
        let secure = self.secure_xds || secure_xds::enabled_for_suite();
        let mut pilotfish_args = self.pilotfish_args.clone();
        if secure {
            pilotfish_args.extend(secure_xds::pilotfish_args(dir.path()));
        }
        let mut pilotfish = Pilotfish::start_unready(
            ns.clone(),
            &config_dir,
            &registry_file,
            &dir.path().join("pilotfish.log"),
            &pilotfish_args,
        );
        if wait {
            pilotfish.wait_ready();
        }
        let (xds_address, mut bootstrap_args) = if secure {
            let args = secure_xds::certificate_bootstrap_args(dir.path(), "default", &self.name);
            (secure_xds::SECURE_XDS_ADDRESS, args)
        } else {
            (pilotfish::XDS_ADDRESS, Vec::new())
        };
        bootstrap_args.extend(self.bootstrap_args.iter().cloned());
        if self.second_replica {
            let second = match secure {
                true => SECOND_REPLICA_SECURE_XDS,
                false => SECOND_REPLICA_XDS,
            };
            bootstrap_args.extend(["--xds-address".to_string(), second.to_string()]);
        }
        let mut envoy = match &self.gateway_labels {
            None => {
                let mode = if self.without_interception {
                    "NONE"
                } else {
                    "REDIRECT"
                };
                let bootstrap = sidecar_bootstrap(&self.name, xds_address, mode, &bootstrap_args);
                let bootstrap = with_runtime(&bootstrap, &self.envoy_runtime);
                Envoy::spawn_with_bootstrap(ns.clone(), dir.path(), &bootstrap)
            }
            Some(labels) => {
                let labels: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let bootstrap = gateway_bootstrap(
                    &self.name,
                    xds_address,
                    &labels,
                    GATEWAY_ADMIN_PORT,
                    &bootstrap_args,
                );
                let bootstrap = with_runtime(&bootstrap, &self.envoy_runtime);
                Envoy::spawn_with_bootstrap(ns.clone(), dir.path(), &bootstrap)
            }
        };
        if wait {
            envoy.wait_live();
        }
        Pod {
            envoy,
            pilotfish,
            backends,
            launch: Launch::new(config_dir, registry_file, pilotfish_args),
            secure,
            _dns_server: dns_server,
            dir,
            ns,
        }
    }
}

/// `pilotfish serve` arguments of a second replica on `config_dir` and
/// `registry_file`, on [`SECOND_REPLICA_XDS`] (and, with the mesh CA in
/// `ca_dir`, [`SECOND_REPLICA_SECURE_XDS`]); the caller adds the HTTP port
/// ([`SECOND_REPLICA_HTTP`]) and anything else.
pub fn second_replica_args(
    config_dir: &Path,
    registry_file: &Path,
    ca_dir: Option<PathBuf>,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--config-dir".into(),
        config_dir.display().to_string(),
        "--registry-file".into(),
        registry_file.display().to_string(),
        "--xds-address".into(),
        SECOND_REPLICA_XDS.into(),
        "--debounce-ms".into(),
        "100".into(),
    ];
    match ca_dir {
        Some(ca_dir) => args.extend([
            "--ca-dir".into(),
            ca_dir.display().to_string(),
            "--secure-xds-address".into(),
            SECOND_REPLICA_SECURE_XDS.into(),
        ]),
        None => args.extend(["--secure-xds-address".into(), "off".into()]),
    }
    args
}

/// Where a pod's test resolver listens.
pub const TEST_RESOLVER: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 54);

/// Fields drop in order: Envoy and pilotfish are killed before the
/// backends stop and the namespace goes.
pub struct Pod {
    pub envoy: Envoy,
    pub pilotfish: Pilotfish,
    pub backends: Backends,
    launch: Launch,
    /// Envoys of this pod use the secure xDS port.
    secure: bool,
    _dns_server: Option<super::dns::DnsServer>,
    dir: TestDir,
    ns: Arc<Netns>,
}

impl Pod {
    /// `name` labels the namespace, temp dir and the Envoy node (`name.default`).
    pub fn builder(name: &str) -> PodBuilder {
        PodBuilder {
            name: name.to_string(),
            ..PodBuilder::default()
        }
    }

    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    pub fn try_send(&self, request: &Request) -> std::io::Result<Response> {
        self.ns.run(|| request.send())
    }

    pub fn send(&self, request: &Request) -> Response {
        self.try_send(request)
            .unwrap_or_else(|e| panic!("{request}: {e}"))
    }

    /// Sends `request` `n` times (a new connection each) and counts outcomes.
    pub fn tally(&self, n: usize, request: &Request) -> Tally {
        self.ns.run(|| {
            let mut tally = Tally::default();
            for _ in 0..n {
                let outcome = match request.send() {
                    Ok(response) => response.outcome(),
                    Err(e) => format!("error {}", e.kind()),
                };
                tally.add(outcome);
            }
            tally
        })
    }

    /// Sends `request` over and over until `to` answers it, and returns how
    /// long that took. Meanwhile only `from` may answer: a config change
    /// must not drop or fail requests on its way.
    pub fn wait_for_switch(
        &self,
        request: &Request,
        from: &str,
        to: &str,
        timeout: Duration,
    ) -> Duration {
        let start = Instant::now();
        wait_until(&format!("{to:?} to answer {request}"), timeout, || {
            let outcome = match self.try_send(request) {
                Ok(response) => response.outcome(),
                Err(e) => format!("error {e}"),
            };
            assert!(
                outcome == from || outcome == to,
                "{request} got {outcome} while moving from {from} to {to}"
            );
            if outcome == to {
                Ok(())
            } else {
                Err(format!("still {outcome}"))
            }
        });
        start.elapsed()
    }

    /// One line over raw TCP to `addr`; returns the reply line.
    pub fn tcp_line(&self, addr: &str, line: &str) -> String {
        self.ns
            .run(|| tcp::exchange_line(addr, line))
            .unwrap_or_else(|e| panic!("TCP {addr}: {e}"))
    }

    /// Rewrites a config file in place (truncate and write), as an editor might.
    pub fn write_config(&self, file_name: &str, yaml: &str) {
        write_world_readable(&self.launch.config_dir.join(file_name), yaml);
    }

    /// Replaces a config file atomically (write elsewhere, then rename), as
    /// `kubectl`-style tools and ConfigMap mounts do.
    pub fn replace_config(&self, file_name: &str, yaml: &str) {
        let staged = self.dir.path().join(format!("{file_name}.staged"));
        write_world_readable(&staged, yaml);
        std::fs::rename(&staged, self.launch.config_dir.join(file_name))
            .expect("rename staged config file");
    }

    pub fn remove_config(&self, file_name: &str) {
        std::fs::remove_file(self.launch.config_dir.join(file_name)).expect("remove config file");
    }

    /// Starts a gateway Envoy (proxy type `router`, workload `labels`) in
    /// this pod's namespace, fed by the same pilotfish: an egress gateway
    /// next to the sidecar. See [`super::gateway::start_envoy`].
    pub fn start_gateway(&self, name: &str, labels: &[(&str, &str)]) -> Envoy {
        if !self.secure {
            return super::gateway::start_envoy(&self.ns, self.dir.path(), name, labels);
        }
        let args = secure_xds::certificate_bootstrap_args(self.dir.path(), "default", name);
        super::gateway::start_envoy_with(
            &self.ns,
            self.dir.path(),
            name,
            labels,
            secure_xds::SECURE_XDS_ADDRESS,
            &args,
        )
    }

    /// Starts pilotfish again with the same arguments (the previous one
    /// must have exited: it held the ports), as a replacement replica.
    pub fn restart_pilotfish(&mut self) {
        self.pilotfish = self.launch.restart(self.ns.clone(), self.dir.path());
    }

    /// Starts a second `pilotfish serve` on the pod's config directory and
    /// registry file (and CA, on the secure port), on
    /// [`SECOND_REPLICA_XDS`] (or [`SECOND_REPLICA_SECURE_XDS`]) and
    /// [`SECOND_REPLICA_HTTP`], with `extra_args`; waits until it is ready.
    pub fn start_second_replica(&self, extra_args: &[String], log_name: &str) -> Pilotfish {
        let ca_dir = self.secure.then(|| secure_xds::ca_dir(self.dir.path()));
        let mut args =
            second_replica_args(&self.launch.config_dir, &self.launch.registry_file, ca_dir);
        args.extend(extra_args.iter().cloned());
        Pilotfish::serve(
            self.ns.clone(),
            &args,
            SECOND_REPLICA_HTTP,
            &self.dir.path().join(log_name),
        )
    }

    /// The pod's test directory (pilotfish's CA lives there on the secure port).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Lets unprivileged processes (Envoy as uid 1337) bind ports below
    /// 1024 in this namespace, as a gateway pod's securityContext would.
    pub fn allow_low_ports(&self) {
        super::run_checked(
            &mut self
                .ns
                .command("sysctl", &["-w", "net.ipv4.ip_unprivileged_port_start=0"]),
        );
    }

    /// Starts another backend (for endpoints a registry edit will add).
    pub fn add_backend(&mut self, addr: &str, service: &str, version: &str) -> Arc<Backend> {
        self.backends
            .add(addr.parse().expect("socket address"), service, version)
    }

    /// Rewrites the registry file in place.
    pub fn write_registry(&self, yaml: &str) {
        write_world_readable(&self.launch.registry_file, yaml);
    }
}

/// `bootstrap` (JSON) with `runtime` keys set in its first (static)
/// runtime layer.
fn with_runtime(bootstrap: &str, runtime: &[(String, serde_json::Value)]) -> String {
    if runtime.is_empty() {
        return bootstrap.to_string();
    }
    let mut parsed: serde_json::Value =
        serde_json::from_str(bootstrap).expect("pilotfish bootstrap is JSON");
    let layer = parsed
        .pointer_mut("/layered_runtime/layers/0/static_layer")
        .and_then(serde_json::Value::as_object_mut)
        .expect("the bootstrap has a static runtime layer");
    for (key, value) in runtime {
        layer.insert(key.clone(), value.clone());
    }
    parsed.to_string()
}

/// Writes `registry` to `<dir>/registry/registry.yaml` and returns its
/// path. Its own directory: a watcher of the file may see its whole
/// directory, and the logs written beside it must not look like edits.
pub fn write_registry_file(dir: &Path, registry: &str) -> PathBuf {
    let registry_dir = dir.join("registry");
    std::fs::create_dir(&registry_dir).expect("create registry dir");
    let registry_file = registry_dir.join("registry.yaml");
    write_world_readable(&registry_file, registry);
    registry_file
}

/// Where `n` requests went: "reviews v1" => 812, "status 503" => 3, ...
#[derive(Default, Debug)]
pub struct Tally {
    pub counts: BTreeMap<String, usize>,
}

impl Tally {
    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }

    pub fn count(&self, outcome: &str) -> usize {
        self.counts.get(outcome).copied().unwrap_or(0)
    }

    pub fn share(&self, outcome: &str) -> f64 {
        self.count(outcome) as f64 / self.total().max(1) as f64
    }

    /// Counts one more request, with this outcome.
    pub fn add(&mut self, outcome: String) {
        *self.counts.entry(outcome).or_default() += 1;
    }

    /// Panics unless each of `n` requests had outcome `a` or `b` (the
    /// message: `why` then the tally), and `a`'s share is within `range`
    /// (the message names it `<name> share`).
    pub fn assert_split(
        &self,
        n: usize,
        (a, b): (&str, &str),
        range: std::ops::RangeInclusive<f64>,
        name: &str,
        why: &str,
    ) {
        assert_eq!(self.count(a) + self.count(b), n, "{why}{self}");
        let share = self.share(a);
        assert!(
            range.contains(&share),
            "{name} share {share:.3} outside [{}, {}]: {self}",
            range.start(),
            range.end()
        );
    }

    /// Panics unless every request had this outcome.
    pub fn assert_all(&self, outcome: &str, what: &str) {
        assert_eq!(
            self.count(outcome),
            self.total(),
            "{what}: expected every request to reach {outcome}, got {self}"
        );
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        write!(f, "{{{}}} of {}", parts.join(", "), self.total())
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
