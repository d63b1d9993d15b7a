//! Bookinfo on a real kube-apiserver, for the Kubernetes registry and config
//! source tests: Services with fixed ClusterIPs, Pods (never scheduled: no
//! controllers run, the objects only carry labels), EndpointSlices written
//! by hand, and Istio config applied with kubectl.
//!
//! The API server listens on the host's loopback while a test pod is its
//! own network namespace. A [`Forwarder`] bridges the two: it listens on
//! `127.0.0.1:<apiserver port>` *inside* the pod namespace and connects each
//! connection to the same address on the host, so pilotfish uses the
//! harness's kubeconfig unchanged, and stopping the API server breaks
//! pilotfish's connections exactly as a real outage would.
//!
//! The API server refuses loopback endpoint addresses, so pod IPs are
//! 10.244.0.x, added to the pod namespace's `lo` (the backends bind there),
//! and the Service VIP range (10.96.0.0/16) is made local on `lo` like the
//! file-registry tests' 127.1.0.0/16: nothing listens on a VIP, iptables
//! hands the connection to Envoy.
//!
//! ```text
//!  host: etcd, kube-apiserver 127.0.0.1:P
//!    ^ forwarder
//!  pod ns: 127.0.0.1:P (forwarder) <- pilotfish :15010/:15014 <- envoy (uid 1337)
//!          lo: 10.244.0.10 productpage v1, .20 details v1, .31/.32/.33
//!          reviews v1/v2/v3, .40 ratings v1; local route 10.96.0.0/16
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::backend::{Backend, Backends};
use super::consul::Consul;
use super::envoy::{Envoy, pilotfish_bootstrap, sidecar_bootstrap_on};
use super::http::{Request, Response};
use super::kube_apiserver::KubeApiServer;
use super::netns::Netns;
use super::pilotfish::{self, Launch, Pilotfish};
use super::pod::{SECOND_REPLICA_HTTP, SECOND_REPLICA_XDS, second_replica_args};
use super::process::write_world_readable;
use super::testdir::TestDir;
use super::tls::{Identity, TestCa};
use super::{PROPAGATION, Tally, outbound_cluster, repo_path, run_checked, wait_until};

pub const PORT: u16 = 9080;
pub const VIP_RANGE: &str = "10.96.0.0/16";

/// (service, VIP, [(version, pod IP)]).
pub type ServiceSpec = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

pub const BOOKINFO: [ServiceSpec; 4] = [
    ("productpage", "10.96.0.10", &[("v1", "10.244.0.10")]),
    ("details", "10.96.0.20", &[("v1", "10.244.0.20")]),
    (
        "reviews",
        "10.96.0.30",
        &[
            ("v1", "10.244.0.31"),
            ("v2", "10.244.0.32"),
            ("v3", "10.244.0.33"),
        ],
    ),
    ("ratings", "10.96.0.40", &[("v1", "10.244.0.40")]),
];

/// Bootstrap arguments listing the second replica's xDS address after the
/// first's, when there is one.
fn replica_bootstrap_args(second_replica: bool) -> Vec<String> {
    match second_replica {
        true => vec!["--xds-address".into(), SECOND_REPLICA_XDS.into()],
        false => Vec::new(),
    }
}

pub fn fqdn(service: &str) -> String {
    format!("{service}.default.svc.cluster.local")
}

pub fn vip(service: &str) -> String {
    let (_, vip, _) = BOOKINFO
        .iter()
        .find(|(s, _, _)| *s == service)
        .unwrap_or_else(|| panic!("no Bookinfo service {service}"));
    format!("{vip}:{PORT}")
}

/// `GET /` to `service` through its VIP, Host `service:9080`.
pub fn request(service: &str) -> Request {
    Request::get(&vip(service), &format!("{service}:{PORT}"))
}

/// Applies crds/manifests/ and waits until every CRD is Established.
pub fn install_crds(server: &KubeApiServer) {
    let manifests = repo_path("crds/manifests/all.yaml");
    server
        .kubectl(&["apply", "-f", manifests.to_str().expect("utf-8 path")])
        .expect_success("apply crds/manifests/all.yaml");
    server
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/virtualservices.networking.istio.io",
            "crd/destinationrules.networking.istio.io",
            "crd/gateways.networking.istio.io",
            "crd/serviceentries.networking.istio.io",
        ])
        .expect_success("CRDs Established");
}

pub fn service_yaml(name: &str, vip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n  labels: {{app: {name}}}\nspec:\n  clusterIP: {vip}\n  ports:\n  - name: http\n    port: {PORT}\n    targetPort: {PORT}\n"
    )
}

pub fn pod_name(service: &str, version: &str) -> String {
    format!("{service}-{version}")
}

pub fn pod_yaml(service: &str, version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: default\n  labels: {{app: {service}, version: {version}}}\nspec:\n  containers:\n  - name: app\n    image: example.invalid/{service}:{version}\n",
        pod_name(service, version)
    )
}

/// One EndpointSlice of `service` with the given (version, pod IP)
/// endpoints, each pointing at its Pod.
pub fn slice_yaml(service: &str, slice: &str, endpoints: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  namespace: default\n  labels:\n    kubernetes.io/service-name: {service}\naddressType: IPv4\nports:\n- name: http\n  port: {PORT}\n  protocol: TCP\nendpoints:\n"
    );
    for (version, ip) in endpoints {
        yaml.push_str(&format!(
            "- addresses: [\"{ip}\"]\n  conditions: {{ready: true}}\n  targetRef: {{kind: Pod, namespace: default, name: {}}}\n",
            pod_name(service, version)
        ));
    }
    yaml
}

/// Services, Pods and one EndpointSlice per service, as one YAML stream.
pub fn bookinfo_workloads() -> String {
    let mut docs = Vec::new();
    for (service, vip, endpoints) in BOOKINFO {
        docs.push(service_yaml(service, vip));
        for (version, _) in endpoints {
            docs.push(pod_yaml(service, version));
        }
        docs.push(slice_yaml(service, &format!("{service}-1"), endpoints));
    }
    docs.join("---\n")
}

/// `kubectl apply -f -` of `yaml`, which must succeed.
/// A token of ServiceAccount `namespace/name` (created if missing) for
/// `audience`, as a projected token volume would hold.
pub fn service_account_token(
    server: &KubeApiServer,
    namespace: &str,
    name: &str,
    audience: &str,
) -> String {
    apply(
        server,
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        ),
    );
    server
        .kubectl(&[
            "create",
            "token",
            name,
            "-n",
            namespace,
            "--audience",
            audience,
            "--duration=1h",
        ])
        .expect_success(&format!("token for serviceaccount {namespace}/{name}"))
        .stdout
        .trim()
        .to_string()
}

/// `kubectl create secret` for `identity`, optionally with the CA that
/// verifies clients, as YAML to apply (so it can also renew).
pub fn secret_yaml(
    server: &KubeApiServer,
    name: &str,
    identity: &Identity,
    ca: Option<&TestCa>,
) -> String {
    let mut args = vec![
        "create".to_string(),
        "secret".into(),
        "generic".into(),
        name.into(),
        "-n".into(),
        "default".into(),
        "--type=kubernetes.io/tls".into(),
        format!("--from-file=tls.crt={}", identity.cert.display()),
        format!("--from-file=tls.key={}", identity.key.display()),
        "--dry-run=client".into(),
        "-o".into(),
        "yaml".into(),
    ];
    if let Some(ca) = ca {
        args.push(format!("--from-file=ca.crt={}", ca.cert.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    server
        .kubectl(&args)
        .expect_success("kubectl create secret --dry-run")
        .stdout
}

pub fn apply(server: &KubeApiServer, yaml: &str) -> String {
    server
        .kubectl_stdin(&["apply", "-f", "-"], yaml)
        .expect_success("kubectl apply")
        .stdout
}

/// Applies testdata/bookinfo/config (DestinationRules, the jason→v2 VirtualService).
pub fn apply_bookinfo_config(server: &KubeApiServer) {
    let dir = repo_path("testdata/bookinfo/config");
    server
        .kubectl(&[
            "apply",
            "-n",
            "default",
            "-f",
            dir.to_str().expect("utf-8 path"),
        ])
        .expect_success("apply testdata/bookinfo/config");
}

/// Connections to `127.0.0.1:port` inside a namespace, forwarded to the
/// same address on the host. Stops accepting on drop.
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Must be called from a thread in the host namespace (a test's main
    /// thread is).
    pub fn start(ns: &Netns, port: u16) -> Forwarder {
        // Bound inside the namespace; the socket stays there whichever
        // thread uses it afterwards.
        let listener = ns
            .run(|| TcpListener::bind(("127.0.0.1", port)))
            .unwrap_or_else(|e| panic!("forwarder: bind 127.0.0.1:{port} in the pod: {e}"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // Spawned from this (host) thread: connections it opens are the host's.
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        std::thread::spawn(move || forward(inbound, port));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Forwarder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn forward(inbound: TcpStream, port: u16) {
    let _ = inbound.set_nonblocking(false);
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", port)) else {
        // API server down: the client sees the connection closed at once.
        let _ = inbound.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(in2), Ok(out2)) = (inbound.try_clone(), outbound.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || pipe(inbound, outbound));
    pipe(out2, in2);
    let _ = up.join();
}

/// Copies until either side ends, then closes both, so the other direction
/// ends too (an API server killed mid-watch must look like one to the client).
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A pod watching a real API server: namespace with capture, pod IPs on a
/// dummy interface, a forwarder to the API server, backends for every
/// Bookinfo endpoint, pilotfish (`--registry kubernetes --config-source
/// kubernetes` plus `extra_args`) and an Envoy sidecar.
pub struct KubePod {
    pub envoy: Envoy,
    pub pilotfish: Pilotfish,
    pub backends: Backends,
    /// A Consul server on 127.0.0.1:8500 in the pod, when asked for.
    pub consul: Option<Consul>,
    _forwarder: Forwarder,
    launch: Launch,
    dir: TestDir,
    ns: Arc<Netns>,
}

pub struct KubePodOptions<'a> {
    pub name: &'a str,
    pub pilotfish_args: Vec<String>,
    /// Files for pilotfish's --registry-file (empty: an empty registry).
    pub registry_file: String,
    /// Extra pod IPs to put on the namespace's `lo` (for endpoints added later).
    pub extra_ips: Vec<&'a str>,
    /// Start a Consul server on 127.0.0.1:8500 in the pod before pilotfish
    /// (give pilotfish `--registry consul` to use it).
    pub consul: bool,
    /// Serve the secure xDS port with a mesh CA in the test directory and
    /// ServiceAccount tokens checked by TokenReview.
    pub secure_xds: bool,
    /// The sidecar's bootstrap also lists [`SECOND_REPLICA_XDS`] (see
    /// [`KubePod::spawn_second_replica`]).
    pub second_replica: bool,
}

impl<'a> KubePodOptions<'a> {
    /// [`KubePodOptions::new`] with the secure xDS port and token review on.
    pub fn secure(name: &'a str) -> Self {
        KubePodOptions {
            secure_xds: true,
            ..KubePodOptions::new(name)
        }
    }

    pub fn new(name: &'a str) -> Self {
        KubePodOptions {
            name,
            pilotfish_args: vec![
                "--registry".into(),
                "kubernetes".into(),
                "--config-source".into(),
                "kubernetes".into(),
            ],
            registry_file: String::new(),
            extra_ips: Vec::new(),
            consul: false,
            secure_xds: false,
            second_replica: false,
        }
    }
}

impl KubePod {
    pub fn start(server: &KubeApiServer, opts: KubePodOptions<'_>) -> KubePod {
        let dir = TestDir::new(opts.name);
        let config_dir = dir.path().join("config");
        std::fs::create_dir(&config_dir).expect("create config dir");
        let registry_dir = dir.path().join("registry");
        std::fs::create_dir(&registry_dir).expect("create registry dir");
        let registry_file = registry_dir.join("registry.yaml");
        write_world_readable(&registry_file, &opts.registry_file);

        let ns = Arc::new(Netns::new());
        ns.capture_outbound(false);
        let mut ips: Vec<&str> = BOOKINFO
            .iter()
            .flat_map(|(_, _, eps)| eps.iter().map(|(_, ip)| *ip))
            .collect();
        ips.extend(opts.extra_ips.iter().copied());
        for ip in &ips {
            run_checked(&mut ns.command("ip", &["addr", "add", &format!("{ip}/32"), "dev", "lo"]));
        }
        run_checked(&mut ns.command(
            "ip",
            &[
                "route", "add", "local", VIP_RANGE, "dev", "lo", "table", "local",
            ],
        ));

        let forwarder = Forwarder::start(&ns, server.port());
        let mut backends = Backends::start(&ns);
        for (service, _, endpoints) in BOOKINFO {
            for (version, ip) in endpoints {
                backends.add(
                    format!("{ip}:{PORT}").parse().expect("address"),
                    service,
                    version,
                );
            }
        }
        let consul = opts
            .consul
            .then(|| Consul::start(ns.clone(), dir.path(), "127.0.0.1"));
        let mut args = opts.pilotfish_args.clone();
        if opts.secure_xds {
            args.extend(super::secure_xds::pilotfish_args(dir.path()));
            args.push("--token-review".into());
        }
        args.push("--kubeconfig".into());
        args.push(server.kubeconfig().display().to_string());
        let pilotfish = Pilotfish::start(
            ns.clone(),
            &config_dir,
            &registry_file,
            &dir.path().join("pilotfish.log"),
            &args,
        );
        let envoy = Envoy::start_with_bootstrap(
            ns.clone(),
            dir.path(),
            &pilotfish_bootstrap(
                opts.name,
                pilotfish::XDS_ADDRESS,
                &replica_bootstrap_args(opts.second_replica),
            ),
        );
        KubePod {
            envoy,
            pilotfish,
            backends,
            consul,
            _forwarder: forwarder,
            launch: Launch::new(config_dir, registry_file, args),
            dir,
            ns,
        }
    }

    /// Starts a second `pilotfish serve` on the same API server, config
    /// directory and registry file, on [`SECOND_REPLICA_XDS`] and
    /// [`SECOND_REPLICA_HTTP`] (plaintext only), with `extra_args`; returns
    /// once its HTTP port answers, ready or not.
    pub fn spawn_second_replica(&self, extra_args: &[String], log_name: &str) -> Pilotfish {
        let mut args =
            second_replica_args(&self.launch.config_dir, &self.launch.registry_file, None);
        args.extend(self.launch.args.iter().cloned());
        args.extend(extra_args.iter().cloned());
        Pilotfish::spawn(
            self.ns.clone(),
            &args,
            SECOND_REPLICA_HTTP,
            &self.dir.path().join(log_name),
        )
    }

    /// Starts the first replica again with the same arguments (the previous
    /// one must have exited: it held the ports) and waits until it is ready.
    pub fn restart_pilotfish(&mut self) {
        self.pilotfish = self.launch.restart(self.ns.clone(), self.dir.path());
    }

    /// `n` more sidecars in the pod, `<prefix>-1`…`<prefix>-n`, with their admin
    /// ports from `admin_port` up (health and Prometheus beside them, see
    /// [`sidecar_bootstrap_on`]), each in its own directory, listing the
    /// second replica when the pod's sidecar does; waits until all are
    /// LIVE. They share the pod's capture: Envoy binds its listeners with
    /// SO_REUSEPORT, so the kernel spreads captured connections over every
    /// sidecar of the namespace.
    pub fn start_sidecars(
        &self,
        prefix: &str,
        n: u16,
        admin_port: u16,
        second_replica: bool,
    ) -> Vec<Envoy> {
        // Spawned from this thread (Envoy's parent-death signal follows
        // it), then awaited together.
        let mut envoys: Vec<Envoy> = (1..=n)
            .map(|i| {
                let dir = self.dir.path().join(format!("sidecar-{i}"));
                std::fs::create_dir_all(&dir).expect("create sidecar dir");
                let bootstrap = sidecar_bootstrap_on(
                    &format!("{prefix}-{i}"),
                    pilotfish::XDS_ADDRESS,
                    "REDIRECT",
                    admin_port + i - 1,
                    &replica_bootstrap_args(second_replica),
                );
                Envoy::spawn_with_bootstrap(self.ns.clone(), &dir, &bootstrap)
            })
            .collect();
        for envoy in &mut envoys {
            envoy.wait_live();
        }
        envoys
    }

    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// A gateway Envoy in this pod's namespace (see [`super::gateway::start_envoy`]).
    pub fn start_gateway(&self, name: &str, labels: &[(&str, &str)]) -> Envoy {
        super::gateway::start_envoy(&self.ns, self.dir.path(), name, labels)
    }

    /// A gateway Envoy on the secure xDS port, proving itself with `token`
    /// (needs [`KubePodOptions::secure_xds`]).
    pub fn start_gateway_with_token(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        token: &str,
    ) -> Envoy {
        let args = super::secure_xds::token_bootstrap_args(self.dir.path(), name, token);
        self.start_secure_gateway(name, labels, &args)
    }

    /// A gateway Envoy on the secure xDS port with these credentials
    /// (bootstrap arguments, see [`super::secure_xds`]).
    pub fn start_secure_gateway(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        bootstrap_args: &[String],
    ) -> Envoy {
        super::gateway::start_envoy_with(
            &self.ns,
            self.dir.path(),
            name,
            labels,
            super::secure_xds::SECURE_XDS_ADDRESS,
            bootstrap_args,
        )
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts a backend on `ip:9080` (the IP must be one of `extra_ips`).
    pub fn add_backend(&mut self, ip: &str, service: &str, version: &str) -> Arc<Backend> {
        let addr: SocketAddr = format!("{ip}:{PORT}").parse().expect("address");
        self.backends.add(addr, service, version)
    }

    pub fn try_send(&self, request: &Request) -> std::io::Result<Response> {
        self.ns.run(|| request.send())
    }

    pub fn tally(&self, n: usize, request: &Request) -> Tally {
        self.ns.run(|| {
            let mut tally = Tally::default();
            for _ in 0..n {
                let outcome = match request.send() {
                    Ok(response) => response.outcome(),
                    Err(e) => format!("error {}", e.kind()),
                };
                *tally.counts.entry(outcome).or_default() += 1;
            }
            tally
        })
    }

    /// Sends `request` until every one of `n` in a row has `outcome`.
    pub fn wait_all(&self, request: &Request, n: usize, outcome: &str, timeout: Duration) -> Tally {
        wait_until(
            &format!("{request} to reach only {outcome}"),
            timeout,
            || {
                let tally = self.tally(n, request);
                if tally.count(outcome) == n {
                    Ok(tally)
                } else {
                    Err(tally.to_string())
                }
            },
        )
    }

    /// Waits until Envoy has the `9080` routes and every Bookinfo cluster
    /// (subsets included) with its endpoints.
    pub fn wait_bookinfo_served(&self) {
        for (service, _, endpoints) in BOOKINFO {
            let host = fqdn(service);
            self.envoy.wait_route_domain(&PORT.to_string(), &host);
            self.envoy
                .wait_cluster(&outbound_cluster(PORT, "", &host), endpoints.len());
            for (version, _) in endpoints {
                self.envoy
                    .wait_cluster(&outbound_cluster(PORT, version, &host), 1);
            }
        }
    }

    /// pilotfish's `/debug/registries` entry named `name`.
    pub fn registry_status(&self, name: &str) -> Value {
        let all = self.pilotfish.get_json("/debug/registries");
        all.as_array()
            .and_then(|a| a.iter().find(|r| r["registry"] == name).cloned())
            .unwrap_or_else(|| panic!("no registry {name} in /debug/registries: {all}"))
    }

    /// Waits until `/debug/registries` shows `name` with `connected`.
    pub fn wait_connected(&self, name: &str, connected: bool, timeout: Duration) -> Value {
        wait_until(
            &format!("{name} connected={connected} in /debug/registries"),
            timeout,
            || {
                let status = self.registry_status(name);
                if status["connected"] == connected {
                    Ok(status)
                } else {
                    Err(status.to_string())
                }
            },
        )
    }

    /// Input problems in `/debug/diagnostics` mentioning `needle`.
    pub fn problems_mentioning(&self, needle: &str) -> Vec<Value> {
        let diagnostics = self.pilotfish.diagnostics();
        diagnostics["input_problems"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|p| p.to_string().contains(needle))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn wait_problem(&self, needle: &str) -> Vec<Value> {
        wait_until(
            &format!("an input problem mentioning {needle:?}"),
            PROPAGATION,
            || {
                let found = self.problems_mentioning(needle);
                if found.is_empty() {
                    Err(self.pilotfish.diagnostics().to_string())
                } else {
                    Ok(found)
                }
            },
        )
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }
}

/// `pilotfish serve` with its config from `server` only (no registry, no
/// netns), logging at `rust_log`, once `/ready`: the process and its HTTP
/// address on loopback.
pub fn serve_config_from(
    server: &KubeApiServer,
    rust_log: &str,
) -> (super::process::Process, String) {
    let http = super::free_loopback_address();
    let mut cmd = std::process::Command::new(pilotfish::binary());
    cmd.args(["serve", "--config-source", "kubernetes", "--kubeconfig"])
        .arg(server.kubeconfig())
        .args(["--xds-address", &super::free_loopback_address()])
        .args(["--http-address", &http, "--debounce-ms", "50"])
        .env("RUST_LOG", rust_log);
    let mut process =
        super::process::Process::spawn("pilotfish", cmd, &server.path().join("pilotfish.log"));
    wait_until("pilotfish /ready", super::STARTUP, || {
        process.assert_running();
        match super::http::control_get(&http, "/ready")? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("/ready answered {status}: {body}")),
        }
    });
    (process, http)
}
