//! A whole mesh on one machine, for the Consul tests: a "host" network
//! namespace holding a Linux bridge, the Consul agent and pilotfish, and one
//! namespace per pod joined to the bridge by a veth pair, each with its own
//! IP in a private subnet that exists only inside these namespaces
//! (10.77.0.0/24; nothing is routed anywhere else).
//!
//! A pod runs its application on 0.0.0.0 (an [`App`] for HTTP, an echo
//! [`Backends`] for TCP), a real Envoy sidecar as uid 1337 whose bootstrap
//! comes from `pilotfish bootstrap --ip <pod ip>`, and the interception of
//! deploy/scripts/pilotfish-iptables.sh: outbound TCP to 15001, inbound TCP
//! for the app's port (or, with [`PodSpec::capture_all_inbound`], every port
//! but Envoy's own) to 15006. Apps and test clients find services by name
//! through Consul's DNS on the bridge address. Processes (Consul,
//! pilotfish, Envoy) are spawned from the test's own thread: their
//! parent-death signal fires when the spawning thread ends.
//!
//! ```text
//!  host ns: pfbr0 10.77.0.1 ── consul :8500 (HTTP) :8600 (DNS), pilotfish :15010 (xDS) :15014
//!    ├─ veth ── pod ns productpage-v1 10.77.0.10: app :9080, envoy, iptables
//!    ├─ veth ── pod ns details-v1     10.77.0.11: ...
//!    └─ ...
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::app::{App, AppAnswer, AppSpec};
use super::backend::Backends;
use super::config_dump;
use super::consul::{Consul, Instance};
use super::dns::Resolver;
use super::envoy::Envoy;
use super::http::{Request, Response};
use super::netns::Netns;
use super::pilotfish::{self, Pilotfish};
use super::process::write_world_readable;
use super::testdir::TestDir;
use super::{STARTUP, repo_path, run_checked, tcp, wait_until};

pub const BRIDGE: &str = "pfbr0";
pub const SUBNET_PREFIX: &str = "10.77.0";
pub const BRIDGE_IP: &str = "10.77.0.1";
/// Pod IPs are 10.77.0.<FIRST_POD_HOST + n>.
const FIRST_POD_HOST: usize = 10;
pub const XDS_PORT: u16 = 15010;
/// Pilotfish's secure xDS port ([`Mesh::start_secure`]).
pub const SECURE_XDS_PORT: u16 = 15012;
pub const PILOTFISH_HTTP_PORT: u16 = 15014;
pub const HTTP_PORT: u16 = 9080;
/// Consul's DNS domain: service `details` is `details.service.consul`.
pub const DOMAIN: &str = "service.consul";

/// `details` → `details.service.consul`.
pub fn host(service: &str) -> String {
    format!("{service}.{DOMAIN}")
}

/// What runs in a pod.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    /// The `app` label and Consul service name.
    pub service: String,
    pub version: String,
    pub kind: PodKind,
    /// The `-b` of pilotfish-iptables.sh: the app's port unless set
    /// (`*` captures every port but Envoy's own).
    pub inbound_capture: Option<String>,
    /// False for a pod without a sidecar: no Envoy, no interception.
    pub sidecar: bool,
    /// The sidecar connects to the secure xDS port with a workload
    /// certificate of `default/<service account>` (needs
    /// [`Mesh::start_secure`]).
    pub service_account: Option<String>,
}

#[derive(Clone, Debug)]
pub enum PodKind {
    /// An [`App`] on :9080 calling these `(host, port)`s.
    Http { callees: Vec<(String, u16)> },
    /// A TCP echo server on this port ("echo-a v1: <line>").
    TcpEcho { port: u16 },
}

impl PodSpec {
    /// `reviews`, `v2` → pod `reviews-v2` serving HTTP on 9080.
    pub fn http(service: &str, version: &str) -> PodSpec {
        PodSpec {
            name: format!("{service}-{version}"),
            service: service.to_string(),
            version: version.to_string(),
            kind: PodKind::Http {
                callees: Vec::new(),
            },
            inbound_capture: None,
            sidecar: true,
            service_account: None,
        }
    }

    /// A TCP echo service on `port`.
    pub fn tcp_echo(service: &str, version: &str, port: u16) -> PodSpec {
        PodSpec {
            name: format!("{service}-{version}"),
            service: service.to_string(),
            version: version.to_string(),
            kind: PodKind::TcpEcho { port },
            inbound_capture: None,
            sidecar: true,
            service_account: None,
        }
    }

    /// The app calls `http://<service>.service.consul:9080/` on every request.
    pub fn calls(mut self, service: &str) -> PodSpec {
        if let PodKind::Http { callees } = &mut self.kind {
            callees.push((host(service), HTTP_PORT));
        }
        self
    }

    /// Inbound capture of every port but the sidecar's own (`-b '*'`).
    pub fn capture_all_inbound(mut self) -> PodSpec {
        self.inbound_capture = Some("*".into());
        self
    }

    /// A pod without a sidecar and without interception: its app is
    /// reached, and calls, directly.
    pub fn without_sidecar(mut self) -> PodSpec {
        self.sidecar = false;
        self
    }

    /// Its sidecar proves `default/<service_account>` on the secure xDS
    /// port (a certificate from the mesh CA, see [`super::secure_xds`]).
    pub fn service_account(mut self, service_account: &str) -> PodSpec {
        self.service_account = Some(service_account.to_string());
        self
    }

    pub fn port(&self) -> u16 {
        match self.kind {
            PodKind::Http { .. } => HTTP_PORT,
            PodKind::TcpEcho { port } => port,
        }
    }
}

pub struct MeshPod {
    // Dropped in this order: the sidecar, then the apps, then the namespace.
    envoy: Option<Envoy>,
    app: Option<App>,
    echo: Option<Backends>,
    /// More apps on other ports ([`Mesh::add_app`]).
    extra_apps: Vec<App>,
    pub spec: PodSpec,
    pub ip: String,
    resolver: Arc<Resolver>,
    dir: PathBuf,
    ns: Arc<Netns>,
}

impl MeshPod {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    pub fn envoy(&self) -> &Envoy {
        self.envoy
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no sidecar started", self.spec.name))
    }

    pub fn app(&self) -> &App {
        self.app
            .as_ref()
            .unwrap_or_else(|| panic!("{}: not an HTTP app pod", self.spec.name))
    }

    /// The app [`Mesh::add_app`] started on `port`.
    pub fn extra_app(&self, port: u16) -> &App {
        self.extra_apps
            .iter()
            .find(|a| a.spec().port == port)
            .unwrap_or_else(|| panic!("{}: no app on port {port}", self.spec.name))
    }

    pub fn echo(&self) -> &Backends {
        self.echo
            .as_ref()
            .unwrap_or_else(|| panic!("{}: not a TCP echo pod", self.spec.name))
    }

    /// Requests (HTTP) or connections (TCP) its application has served.
    pub fn served(&self) -> u64 {
        match (&self.app, &self.echo) {
            (Some(app), _) => app.requests(),
            (_, Some(echo)) => echo.all().iter().map(|b| b.connections()).sum(),
            _ => 0,
        }
    }

    /// The Consul instance this pod registers: id = pod name, tag
    /// `version|<version>`, address = pod IP, and `protocol` meta if given.
    pub fn instance(&self, protocol: Option<&str>) -> Instance {
        Instance::new(
            &self.spec.name,
            &self.spec.service,
            &self.ip,
            self.spec.port(),
        )
        .tag(&format!("version|{}", self.spec.version))
        .protocol(protocol)
    }

    /// Runs `f` on a thread inside the pod's namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.ns.run(f)
    }

    /// Resolves `host` through Consul's DNS from inside the pod (the pod's
    /// resolver: stale answers while Consul is down).
    pub fn resolve(&self, host: &str) -> std::io::Result<Vec<Ipv4Addr>> {
        self.ns.run(|| self.resolver.resolve(host))
    }

    /// `GET http://<host>:<port>/` as an application in this pod sends it:
    /// the name resolved through Consul's DNS, the connection captured by
    /// iptables. Must run inside the namespace (see [`MeshPod::run`]).
    pub fn get_in_ns(
        &self,
        host: &str,
        port: u16,
        headers: &[(&str, &str)],
    ) -> Result<Response, String> {
        let ips = self
            .resolver
            .resolve(host)
            .map_err(|e| format!("resolve {host}: {e}"))?;
        let mut request = Request::get(&format!("{}:{port}", ips[0]), &format!("{host}:{port}"));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        request
            .send()
            .map_err(|e| format!("{} -> {request}: {e}", self.spec.name))
    }

    /// [`MeshPod::get_in_ns`] from a thread of its own.
    pub fn get(&self, host: &str, port: u16, headers: &[(&str, &str)]) -> Result<Response, String> {
        self.ns.run(|| self.get_in_ns(host, port, headers))
    }

    /// Calls an app by name and reads its answer.
    pub fn call(&self, service: &str, headers: &[(&str, &str)]) -> Result<AppAnswer, String> {
        let response = self.get(&host(service), HTTP_PORT, headers)?;
        AppAnswer::from_response(&response)
    }

    /// One line over TCP to `<host>:<port>` (resolved by name); the reply line.
    pub fn tcp_line(&self, host: &str, port: u16, line: &str) -> Result<String, String> {
        self.ns.run(|| {
            let ips = self
                .resolver
                .resolve(host)
                .map_err(|e| format!("resolve {host}: {e}"))?;
            let addr = format!("{}:{port}", ips[0]);
            tcp::exchange_line(&addr, line).map_err(|e| format!("TCP {host} ({addr}): {e}"))
        })
    }

    /// `cluster.<cluster>.<stat>` of the pod's sidecar.
    pub fn cluster_stat(&self, cluster: &str, stat: &str) -> u64 {
        self.envoy().cluster_stat(cluster, stat)
    }

    /// `ip:port` of every host the sidecar has for `cluster` (None: no such
    /// cluster).
    pub fn cluster_hosts(&self, cluster: &str) -> Result<Option<BTreeSet<String>>, String> {
        let (status, body) = self.envoy().admin_get("/clusters?format=json")?;
        if status != 200 {
            return Err(format!("/clusters answered {status}"));
        }
        let json: Value =
            serde_json::from_str(&body).map_err(|e| format!("/clusters not JSON: {e}"))?;
        Ok(config_dump::cluster_hosts(&json, cluster).map(|h| h.into_iter().collect()))
    }
}

pub struct Mesh {
    // Dropped in this order: pods (sidecars, apps, namespaces), pilotfish,
    // Consul, the host namespace, and last the directory with the logs.
    pods: Vec<MeshPod>,
    pilotfish: Option<Pilotfish>,
    pub consul: Consul,
    host: Arc<Netns>,
    config_dir: PathBuf,
    /// The secure xDS port is open, with the mesh CA in the test directory.
    secure: bool,
    dir: TestDir,
}

impl Mesh {
    /// The host namespace with its bridge, Consul (leader elected) and
    /// pilotfish watching Consul and a config directory holding `config`
    /// (file name, YAML); returns once pilotfish is ready.
    pub fn start(name: &str, config: &[(&str, &str)], extra_args: &[&str]) -> Mesh {
        Mesh::start_with(name, config, extra_args, false)
    }

    /// [`Mesh::start`] with the secure xDS port (`BRIDGE_IP:15012`) open and
    /// the mesh CA in the test directory, for pods with a
    /// [`PodSpec::service_account`].
    pub fn start_secure(name: &str, config: &[(&str, &str)], extra_args: &[&str]) -> Mesh {
        Mesh::start_with(name, config, extra_args, true)
    }

    fn start_with(name: &str, config: &[(&str, &str)], extra_args: &[&str], secure: bool) -> Mesh {
        let dir = TestDir::new(name);
        let config_dir = dir.path().join("config");
        std::fs::create_dir(&config_dir).expect("create config dir");
        for (file, yaml) in config {
            write_world_readable(&config_dir.join(file), yaml);
        }
        let host = Arc::new(Netns::new());
        let ip = |args: &[&str]| run_checked(&mut host.command("ip", args));
        ip(&["link", "add", BRIDGE, "type", "bridge"]);
        ip(&["addr", "add", &format!("{BRIDGE_IP}/24"), "dev", BRIDGE]);
        ip(&["link", "set", BRIDGE, "up"]);

        let consul = Consul::start(host.clone(), dir.path(), BRIDGE_IP);
        let mut args: Vec<String> = [
            "--registry",
            "consul",
            "--consul-address",
            &consul.url(),
            "--config-dir",
            config_dir.to_str().expect("utf-8 path"),
            "--xds-address",
            &format!("{BRIDGE_IP}:{XDS_PORT}"),
            "--debounce-ms",
            "100",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if secure {
            args.extend(super::secure_xds::pilotfish_args(dir.path()));
        }
        args.extend(extra_args.iter().map(|s| s.to_string()));
        let pilotfish = Pilotfish::serve(
            host.clone(),
            &args,
            &format!("{BRIDGE_IP}:{PILOTFISH_HTTP_PORT}"),
            &dir.path().join("pilotfish.log"),
        );
        Mesh {
            pods: Vec::new(),
            pilotfish: Some(pilotfish),
            consul,
            host,
            config_dir,
            secure,
            dir,
        }
    }

    pub fn pilotfish(&self) -> &Pilotfish {
        self.pilotfish.as_ref().expect("pilotfish running")
    }

    pub fn pilotfish_mut(&mut self) -> &mut Pilotfish {
        self.pilotfish.as_mut().expect("pilotfish running")
    }

    pub fn host_ns(&self) -> &Netns {
        &self.host
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates the pod's namespace, wires it to the bridge, installs the
    /// interception and starts its application (not yet its sidecar: see
    /// [`Mesh::start_sidecars`]).
    pub fn add_pod(&mut self, spec: PodSpec) -> &MeshPod {
        assert!(
            self.pods.iter().all(|p| p.spec.name != spec.name),
            "pod {} twice",
            spec.name
        );
        let index = self.pods.len();
        let ip = format!("{SUBNET_PREFIX}.{}", FIRST_POD_HOST + index);
        let ns = Arc::new(Netns::new());
        let veth = format!("vp{index}");
        run_checked(&mut self.host.command(
            "ip",
            &[
                "link",
                "add",
                &veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns.name(),
            ],
        ));
        run_checked(
            &mut self
                .host
                .command("ip", &["link", "set", "dev", &veth, "master", BRIDGE, "up"]),
        );
        let in_pod = |args: &[&str]| run_checked(&mut ns.command("ip", args));
        in_pod(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        in_pod(&["link", "set", "eth0", "up"]);
        in_pod(&["route", "add", "default", "via", BRIDGE_IP]);

        // proxy_init's job: outbound to 15001, the app's port inbound to 15006.
        if spec.sidecar {
            let script = repo_path("deploy/scripts/pilotfish-iptables.sh");
            let port = spec
                .inbound_capture
                .clone()
                .unwrap_or_else(|| spec.port().to_string());
            run_checked(&mut ns.command(
                script.to_str().expect("utf-8 path"),
                &["-p", "15001", "-z", "15006", "-u", "1337", "-b", &port],
            ));
        }

        let dir = self.dir.path().join(&spec.name);
        std::fs::create_dir(&dir).expect("create pod dir");
        let resolver = Arc::new(Resolver::new(self.consul.dns_address(), Duration::ZERO));
        let (app, echo) = match &spec.kind {
            PodKind::Http { callees } => {
                let mut app_spec =
                    AppSpec::new(&spec.service, &spec.version, &spec.name, HTTP_PORT);
                app_spec.callees = callees.clone();
                (Some(App::start(&ns, app_spec, resolver.clone())), None)
            }
            PodKind::TcpEcho { port } => {
                let mut echo = Backends::start(&ns);
                echo.add(
                    format!("0.0.0.0:{port}").parse().expect("address"),
                    &spec.service,
                    &spec.version,
                );
                (None, Some(echo))
            }
        };
        self.pods.push(MeshPod {
            envoy: None,
            app,
            echo,
            extra_apps: Vec::new(),
            spec,
            ip,
            resolver,
            dir,
            ns,
        });
        self.pods.last().expect("just pushed")
    }

    /// Starts the sidecar of every pod that has none yet, each on
    /// `pilotfish bootstrap --ip <pod ip> --name <pod> --label app=..
    /// --label version=..`, all at once, and waits until each says LIVE.
    pub fn start_sidecars(&mut self) {
        // Spawned from this thread: a process started from a short-lived
        // thread gets its parent-death signal when that thread ends.
        let mut started = Vec::new();
        for (i, pod) in self.pods.iter_mut().enumerate() {
            if pod.envoy.is_none() && pod.spec.sidecar {
                let bootstrap = match &pod.spec.service_account {
                    Some(service_account) => {
                        assert!(self.secure, "{}: use Mesh::start_secure", pod.spec.name);
                        let args = super::secure_xds::certificate_bootstrap_args(
                            self.dir.path(),
                            "default",
                            service_account,
                        );
                        sidecar_bootstrap(pod, &format!("{BRIDGE_IP}:{SECURE_XDS_PORT}"), &args)
                    }
                    None => sidecar_bootstrap(pod, &format!("{BRIDGE_IP}:{XDS_PORT}"), &[]),
                };
                pod.envoy = Some(Envoy::spawn_with_bootstrap(
                    pod.ns.clone(),
                    &pod.dir,
                    &bootstrap,
                ));
                started.push(i);
            }
        }
        for i in started {
            self.pods[i].envoy.as_mut().expect("spawned").wait_live();
        }
    }

    pub fn pods(&self) -> &[MeshPod] {
        &self.pods
    }

    pub fn pod(&self, name: &str) -> &MeshPod {
        self.pods
            .iter()
            .find(|p| p.spec.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Starts another app in `pod` on `port`, answering as `service`
    /// (unregistered unless the test registers it).
    pub fn add_app(&mut self, pod: &str, service: &str, port: u16) -> &App {
        let pod = self
            .pods
            .iter_mut()
            .find(|p| p.spec.name == pod)
            .unwrap_or_else(|| panic!("no pod {pod}"));
        let spec = AppSpec::new(service, &pod.spec.version, &pod.spec.name, port);
        let app = App::start(&pod.ns, spec, pod.resolver.clone());
        pod.extra_apps.push(app);
        pod.extra_apps.last().expect("just pushed")
    }

    /// Stops a pod's sidecar and application and removes its namespace.
    pub fn remove_pod(&mut self, name: &str) {
        self.pods.retain(|p| p.spec.name != name);
    }

    /// Registers `pod` in Consul with the given `protocol` meta (or none).
    pub fn register(&self, pod: &str, protocol: Option<&str>) {
        self.consul.register(&self.pod(pod).instance(protocol));
    }

    pub fn deregister(&self, pod: &str) {
        self.consul.deregister(pod);
    }

    pub fn write_config(&self, file: &str, yaml: &str) {
        write_world_readable(&self.config_dir.join(file), yaml);
    }

    pub fn remove_config(&self, file: &str) {
        std::fs::remove_file(self.config_dir.join(file)).expect("remove config file");
    }

    /// The pods that serve `service`, in the order they were added.
    pub fn instances_of(&self, service: &str) -> Vec<&MeshPod> {
        self.pods
            .iter()
            .filter(|p| p.spec.service == service)
            .collect()
    }

    /// Waits until `pod`'s sidecar has exactly `hosts` (`ip:port`) in
    /// `cluster`; returns how long that took.
    pub fn wait_cluster_hosts(
        &self,
        pod: &str,
        cluster: &str,
        hosts: &BTreeSet<String>,
        timeout: Duration,
    ) -> Duration {
        let pod = self.pod(pod);
        let start = Instant::now();
        wait_until(
            &format!("{}'s cluster {cluster} to have hosts {hosts:?}", pod.name()),
            timeout,
            || match pod.cluster_hosts(cluster)? {
                Some(found) if &found == hosts => Ok(()),
                Some(found) => Err(format!("hosts: {found:?}")),
                None => Err("no such cluster".into()),
            },
        );
        start.elapsed()
    }

    /// Waits until every sidecar has the outbound cluster of every
    /// registered service with exactly its instances, its own inbound
    /// cluster if it is registered, and has acknowledged everything
    /// pilotfish sent it without a NACK.
    pub fn wait_converged(&self, registered: &[&str]) {
        let registered: Vec<&MeshPod> = registered.iter().map(|name| self.pod(name)).collect();
        let mut services: BTreeMap<(&str, u16), BTreeSet<String>> = BTreeMap::new();
        for pod in &registered {
            services
                .entry((pod.spec.service.as_str(), pod.spec.port()))
                .or_default()
                .insert(format!("{}:{}", pod.ip, pod.spec.port()));
        }
        for pod in self.pods.iter().filter(|p| p.spec.sidecar) {
            for ((service, port), hosts) in &services {
                let cluster = super::outbound_cluster(*port, "", &host(service));
                self.wait_cluster_hosts(pod.name(), &cluster, hosts, STARTUP);
            }
            if registered.iter().any(|r| r.spec.name == pod.spec.name) {
                let inbound = format!("inbound|{}||", pod.spec.port());
                let local = BTreeSet::from([format!("127.0.0.1:{}", pod.spec.port())]);
                self.wait_cluster_hosts(pod.name(), &inbound, &local, STARTUP);
                pod.envoy().wait_listener("virtualInbound");
            }
            self.pilotfish()
                .wait_synced_without_nack(pod.envoy().node_id());
        }
    }

    /// `/debug/registries` of pilotfish: the Consul entry.
    pub fn consul_status(&self) -> Value {
        let all = self.pilotfish().get_json("/debug/registries");
        all.as_array()
            .and_then(|a| {
                a.iter()
                    .find(|r| r.get("registry").and_then(Value::as_str) == Some("consul"))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no consul in /debug/registries: {all}"))
    }

    /// The value of `pilotfish_registry_connected{registry="consul"}`.
    pub fn consul_connected_metric(&self) -> Option<f64> {
        metric_value(
            &self.pilotfish().metrics(),
            "pilotfish_registry_connected",
            "registry=\"consul\"",
        )
    }

    /// Panics, naming them, if any sidecar rejected an xDS update.
    pub fn assert_no_rejected_updates(&self) {
        for pod in &self.pods {
            if let Some(envoy) = &pod.envoy {
                envoy.assert_no_rejected_updates();
            }
        }
    }
}

/// A sample's value from Prometheus text: `name{...labels...} value`.
pub fn metric_value(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `pilotfish bootstrap` for a mesh pod: its IP (which is how pilotfish finds
/// its inbound ports in the registry), name and labels.
fn sidecar_bootstrap(pod: &MeshPod, xds: &str, extra_args: &[String]) -> String {
    let app = format!("app={}", pod.spec.service);
    let version = format!("version={}", pod.spec.version);
    let mut cmd = std::process::Command::new(pilotfish::binary());
    cmd.args([
        "bootstrap",
        "--xds-address",
        xds,
        "--proxy-type",
        "sidecar",
        "--ip",
        &pod.ip,
        "--name",
        &pod.spec.name,
        "--namespace",
        "default",
        "--label",
        &app,
        "--label",
        &version,
        "--admin-port",
        "15000",
        "--interception-mode",
        "REDIRECT",
    ]);
    super::envoy::add_args(&mut cmd, extra_args);
    run_checked(&mut cmd)
}
