//! A real Kubernetes API server for tests: etcd plus kube-apiserver on
//! 127.0.0.1, with no controllers, no nodes and no kubelet — objects are
//! stored, validated (schemas, RBAC, admission) and watched exactly as in a
//! cluster, but nothing acts on them.
//!
//! Binaries come from `scripts/install-kube-apiserver.sh`: kube-apiserver and
//! kubectl in `$PILOTFISH_TEST_ROOT/bin` (default /opt/pilotfish-test/bin,
//! overridable one by one with `PILOTFISH_KUBE_APISERVER` and
//! `PILOTFISH_KUBECTL`), etcd on PATH (or `PILOTFISH_ETCD`).
//!
//! Each [`KubeApiServer`] has its own etcd (data in /dev/shm, removed on
//! drop), its own certificates (made with the `openssl` CLI: a CA, a serving
//! certificate for 127.0.0.1, an admin client certificate in
//! `system:masters`, a service-account signing key), a static admin token,
//! and a kubeconfig. Both processes die with the test (on drop, and through
//! `PR_SET_PDEATHSIG` if the test process is killed). [`KubeApiServer::restart`]
//! restarts only the apiserver, on the same port and the same etcd, so
//! watchers see a real server outage and every object survives.
//!
//! Server settings that matter to tests:
//! - `--authorization-mode=RBAC`: the admin (client certificate and token)
//!   is in `system:masters`; anything else needs RBAC rules, so
//!   [`KubeApiServer::kubeconfig_for_service_account`] gives real
//!   least-privilege credentials;
//! - `--service-cluster-ip-range=10.96.0.0/16`: Services get ClusterIPs
//!   (allocated inside the API only; nothing routes them);
//! - admission plugin `ServiceAccount` disabled: Pods can be created without
//!   the token controller having made a `default` ServiceAccount;
//! - `--endpoint-reconciler-type=none`: the apiserver would otherwise keep
//!   trying to publish its loopback address in the `kubernetes` Endpoints,
//!   which validation refuses.
//!
//! etcd is Debian bookworm's 3.4.23. The apiserver accepts it; it logs
//! `RequestWatchProgress feature is not supported`, so consistent LISTs are
//! served from etcd instead of the watch cache. Watches and their semantics
//! are unaffected.
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that spawned a process exits:
//! start (and restart) the server on a thread that outlives its use — the
//! test's own thread, not a short-lived helper thread.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::process::Process;
use super::testdir::TestDir;
use super::{run_checked, wait_until};

/// How long etcd plus the apiserver may take to become ready on a loaded
/// 2-core machine (typically 2.5–5 s).
pub const KUBE_STARTUP: Duration = Duration::from_secs(90);
/// ClusterIPs are allocated from here.
pub const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/16";
/// The admin user of the client certificate and the static token.
pub const ADMIN_USER: &str = "pilotfish-test-admin";

fn test_root() -> PathBuf {
    std::env::var_os("PILOTFISH_TEST_ROOT")
        .unwrap_or_else(|| "/opt/pilotfish-test".into())
        .into()
}

fn tool(env: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    assert!(
        path.exists(),
        "no {} at {}: run scripts/install-kube-apiserver.sh (or set {env})",
        path.file_name().unwrap_or_default().to_string_lossy(),
        path.display()
    );
    path
}

/// kube-apiserver, as installed by scripts/install-kube-apiserver.sh.
pub fn kube_apiserver_binary() -> PathBuf {
    tool(
        "PILOTFISH_KUBE_APISERVER",
        test_root().join("bin/kube-apiserver"),
    )
}

/// kubectl, as installed by scripts/install-kube-apiserver.sh.
pub fn kubectl_binary() -> PathBuf {
    tool("PILOTFISH_KUBECTL", test_root().join("bin/kubectl"))
}

/// etcd (Debian's etcd-server).
pub fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PILOTFISH_ETCD") {
        return tool("PILOTFISH_ETCD", path.into());
    }
    let found = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("etcd"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.exists());
    tool(
        "PILOTFISH_ETCD",
        found.unwrap_or_else(|| "/usr/bin/etcd".into()),
    )
}

/// What a kubectl run printed, and how it ended.
#[derive(Debug)]
pub struct KubectlOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The output, or a panic naming `what` with stdout and stderr.
    #[track_caller]
    pub fn expect_success(self, what: &str) -> KubectlOutput {
        assert!(
            self.status.success(),
            "{what}: kubectl failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The failure, or a panic naming `what` if kubectl succeeded.
    #[track_caller]
    pub fn expect_failure(self, what: &str) -> KubectlOutput {
        assert!(
            !self.status.success(),
            "{what}: kubectl succeeded but should have failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

pub struct KubeApiServer {
    // Dropped by hand in `Drop`: apiserver first, then etcd, then the files.
    apiserver: Option<Process>,
    etcd: Option<Process>,
    dir: Option<TestDir>,
    etcd_data: PathBuf,
    etcd_url: String,
    port: u16,
    kubeconfig: PathBuf,
    token: String,
    starts: usize,
}

impl KubeApiServer {
    /// Starts etcd and kube-apiserver and waits for `/readyz`. `name` names
    /// the test directory (/tmp/pilotfish-e2e-kube-<name>-…), kept with
    /// both logs when the test fails.
    pub fn start(name: &str) -> KubeApiServer {
        let apiserver_bin = kube_apiserver_binary();
        let _ = kubectl_binary();
        let etcd_bin = etcd_binary();
        let dir = TestDir::new(&format!("kube-{name}"));
        let d = dir.path().to_path_buf();

        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // etcd fsyncs every write; tmpfs keeps CRD-heavy tests fast.
        let shm = Path::new("/dev/shm");
        let etcd_data = if shm.is_dir() { shm } else { Path::new("/tmp") }.join(format!(
            "pilotfish-etcd-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&etcd_data);
        remove_orphaned_etcd_data(etcd_data.parent().expect("etcd data parent"));

        let certs = make_certificates(&d);
        let token = format!("pilotfish-test-token-{}", std::process::id());
        // token,user,uid,"group1,group2"
        std::fs::write(
            d.join("tokens.csv"),
            format!("{token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n"),
        )
        .expect("write tokens.csv");

        let [client_port, peer_port, port] = free_ports();
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd_cmd = Command::new(&etcd_bin);
        etcd_cmd
            .arg("--name=pilotfish-test")
            .arg(format!("--data-dir={}", etcd_data.display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=pilotfish-test={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-level=warn");
        // Debian's etcd package reads ETCD_* from the environment; keep ours clean.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD_") {
                etcd_cmd.env_remove(&key);
            }
        }
        let mut etcd = Process::spawn("etcd", etcd_cmd, &d.join("etcd.log"));
        wait_until("etcd to listen", KUBE_STARTUP, || {
            etcd.assert_running();
            TcpStream::connect(("127.0.0.1", client_port))
                .map(|_| ())
                .map_err(|e| e.to_string())
        });

        let kubeconfig = d.join("kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &format!("https://127.0.0.1:{port}"),
            &certs.ca,
            &User::ClientCert {
                cert: &certs.admin_cert,
                key: &certs.admin_key,
            },
        );

        let mut server = KubeApiServer {
            apiserver: None,
            etcd: Some(etcd),
            dir: Some(dir),
            etcd_data,
            etcd_url,
            port,
            kubeconfig,
            token,
            starts: 0,
        };
        server.start_apiserver(&apiserver_bin);
        server
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("test dir").path()
    }

    /// The test directory: certificates, kubeconfig, logs.
    pub fn path(&self) -> &Path {
        self.dir()
    }

    fn start_apiserver(&mut self, binary: &Path) {
        let d = self.dir().to_path_buf();
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--etcd-servers={}", self.etcd_url))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={}", self.port))
            .arg(format!(
                "--cert-dir={}",
                d.join("apiserver-certs").display()
            ))
            .arg(format!(
                "--tls-cert-file={}",
                d.join("serving.crt").display()
            ))
            .arg(format!(
                "--tls-private-key-file={}",
                d.join("serving.key").display()
            ))
            .arg(format!("--client-ca-file={}", d.join("ca.crt").display()))
            .arg(format!(
                "--token-auth-file={}",
                d.join("tokens.csv").display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!(
                "--service-account-key-file={}",
                d.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                d.join("sa.key").display()
            ))
            .arg("--authorization-mode=RBAC")
            .arg(format!(
                "--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"
            ))
            .arg("--disable-admission-plugins=ServiceAccount")
            .arg("--endpoint-reconciler-type=none")
            .arg("--allow-privileged=true")
            .arg("--profiling=false")
            .arg("--v=0");
        let log = d.join(format!("kube-apiserver.{}.log", self.starts));
        self.starts += 1;
        let mut process = Process::spawn("kube-apiserver", cmd, &log);
        let started = Instant::now();
        wait_until("kube-apiserver /readyz", KUBE_STARTUP, || {
            process.assert_running();
            let out = self.kubectl(&["get", "--raw=/readyz", "--request-timeout=5s"]);
            if out.success() && out.stdout.trim() == "ok" {
                Ok(())
            } else {
                std::thread::sleep(Duration::from_millis(200));
                Err(format!("{}{}", out.stdout, out.stderr))
            }
        });
        eprintln!(
            "kube-apiserver ready at {} after {:.1?} (start {})",
            self.server_url(),
            started.elapsed(),
            self.starts
        );
        self.apiserver = Some(process);
    }

    /// Stops the apiserver and starts it again on the same port and etcd;
    /// returns once `/readyz` is ok again. Stored objects survive.
    pub fn restart(&mut self) {
        self.stop_apiserver();
        self.start_apiserver(&kube_apiserver_binary());
    }

    /// Stops the apiserver only (etcd keeps the data); [`Self::restart`] or
    /// [`Self::start_again`] brings it back. Lets a test observe an outage.
    pub fn stop_apiserver(&mut self) {
        // Process's drop kills (SIGKILL) and reaps.
        drop(self.apiserver.take());
        wait_until(
            "kube-apiserver port to close",
            KUBE_STARTUP,
            || match TcpStream::connect(("127.0.0.1", self.port)) {
                Ok(_) => Err("still accepting".into()),
                Err(_) => Ok(()),
            },
        );
    }

    /// Starts the apiserver after [`Self::stop_apiserver`].
    pub fn start_again(&mut self) {
        assert!(self.apiserver.is_none(), "kube-apiserver is running");
        self.start_apiserver(&kube_apiserver_binary());
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A kubeconfig for the admin (client certificate, `system:masters`),
    /// with the CA and credentials inlined.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA that signed the serving certificate (PEM file).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir().join("ca.crt")
    }

    /// A bearer token for the admin (`system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.token
    }

    /// etcd's client URL (plain HTTP on loopback).
    pub fn etcd_url(&self) -> &str {
        &self.etcd_url
    }

    /// Runs kubectl with the admin kubeconfig; never panics on failure.
    pub fn kubectl(&self, args: &[&str]) -> KubectlOutput {
        self.kubectl_with_input(args, None)
    }

    /// Runs kubectl with `input` on stdin (e.g. `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> KubectlOutput {
        self.kubectl_with_input(args, Some(input))
    }

    fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> KubectlOutput {
        kubectl_run(
            &self.kubeconfig,
            &self.dir().join("kubectl-cache"),
            args,
            input,
        )
    }

    /// Runs kubectl with another kubeconfig (e.g. one from
    /// [`Self::kubeconfig_for_service_account`]).
    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> KubectlOutput {
        kubectl_run(kubeconfig, &self.dir().join("kubectl-cache"), args, None)
    }

    /// A kubeconfig authenticating as ServiceAccount `namespace/name` with a
    /// real token from the TokenRequest API (valid one hour): what a pod
    /// running as that account gets, so RBAC applies exactly. The
    /// ServiceAccount must exist.
    pub fn kubeconfig_for_service_account(&self, namespace: &str, name: &str) -> PathBuf {
        let token = self
            .kubectl(&["create", "token", name, "-n", namespace, "--duration=1h"])
            .expect_success(&format!("token for serviceaccount {namespace}/{name}"))
            .stdout
            .trim()
            .to_string();
        self.kubeconfig_with_token(&format!("sa-{namespace}-{name}"), &token)
    }

    /// A kubeconfig (named `kubeconfig-<label>` in the test directory) that
    /// authenticates with a bearer token, e.g. [`Self::admin_token`].
    pub fn kubeconfig_with_token(&self, label: &str, token: &str) -> PathBuf {
        let path = self.dir().join(format!("kubeconfig-{label}"));
        write_kubeconfig(
            &path,
            &self.server_url(),
            &std::fs::read_to_string(self.ca_cert()).expect("read ca.crt"),
            &User::Token(token),
        );
        path
    }

    /// The apiserver's log so far (all starts).
    pub fn apiserver_log(&self) -> String {
        (0..self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir().join(format!("kube-apiserver.{n}.log")))
                    .unwrap_or_default()
            })
            .collect()
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        drop(self.apiserver.take());
        drop(self.etcd.take());
        let _ = std::fs::remove_dir_all(&self.etcd_data);
        drop(self.dir.take());
    }
}

/// etcd data left by test processes that were killed before `Drop` ran
/// (PR_SET_PDEATHSIG stops the servers, but nothing removes the files).
fn remove_orphaned_etcd_data(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("pilotfish-etcd-") else {
            continue;
        };
        // pilotfish-etcd-<test name>-<pid>-<n>
        let Some(pid) = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn kubectl_run(
    kubeconfig: &Path,
    cache_dir: &Path,
    args: &[&str],
    input: Option<&str>,
) -> KubectlOutput {
    let mut cmd = Command::new(kubectl_binary());
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
        // A per-server discovery cache: a port reused by a later server
        // with other CRDs must not see stale discovery.
        .arg(format!("--cache-dir={}", cache_dir.display()))
        .args(args)
        .env_remove("KUBECONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn kubectl {args:?}: {e}"));
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("kubectl stdin");
        let input = input.to_string();
        // Written from a thread: kubectl may fill its stdout pipe first.
        std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wait for kubectl {args:?}: {e}"));
    KubectlOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Three distinct free loopback ports (see [`super::free_loopback_address`]).
fn free_ports() -> [u16; 3] {
    let port = || {
        let address = super::free_loopback_address();
        address
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .expect("a port")
    };
    [port(), port(), port()]
}

struct Certificates {
    ca: String,
    admin_cert: String,
    admin_key: String,
}

/// ECDSA P-256 throughout (fast to generate): CA, serving certificate for
/// 127.0.0.1/localhost/kubernetes.default.svc, admin client certificate
/// (O=system:masters), service-account signing key pair.
fn make_certificates(d: &Path) -> Certificates {
    let openssl = |args: &[&str]| {
        run_checked(Command::new("openssl").args(args).current_dir(d));
    };
    let key = |name: &str| {
        openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            name,
        ])
    };
    key("ca.key");
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-sha256",
        "-days",
        "2",
        "-subj",
        "/CN=pilotfish-test-ca",
        "-out",
        "ca.crt",
    ]);
    let sign = |name: &str, subject: &str, extensions: &str| {
        key(&format!("{name}.key"));
        std::fs::write(d.join(format!("{name}.ext")), extensions).expect("write extensions");
        openssl(&[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            subject,
            "-out",
            &format!("{name}.csr"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-sha256",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
    };
    sign(
        "serving",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\n\
         subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,\
         DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1\n",
    );
    sign(
        "admin",
        &format!("/O=system:masters/CN={ADMIN_USER}"),
        "basicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    );
    key("sa.key");
    openssl(&["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
    let read = |name: &str| {
        std::fs::read_to_string(d.join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    };
    Certificates {
        ca: read("ca.crt"),
        admin_cert: read("admin.crt"),
        admin_key: read("admin.key"),
    }
}

enum User<'a> {
    ClientCert { cert: &'a str, key: &'a str },
    Token(&'a str),
}

fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, user: &User) {
    let user = match user {
        User::ClientCert { cert, key } => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            base64(cert.as_bytes()),
            base64(key.as_bytes())
        ),
        User::Token(token) => format!("    token: {token}\n"),
    };
    let config = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: pilotfish-test\n  \
           cluster:\n    \
             server: {server}\n    \
             certificate-authority-data: {ca}\n\
         users:\n\
         - name: pilotfish-test\n  \
           user:\n{user}\
         contexts:\n\
         - name: pilotfish-test\n  \
           context:\n    \
             cluster: pilotfish-test\n    \
             user: pilotfish-test\n    \
             namespace: default\n\
         current-context: pilotfish-test\n",
        ca = base64(ca_pem.as_bytes()),
    );
    std::fs::write(path, config).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
