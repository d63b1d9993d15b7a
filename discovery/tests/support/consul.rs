//! A real Consul agent (1.8, from scripts/install-consul.sh) for the
//! Consul end-to-end tests: a one-server cluster with a data directory, so
//! that registrations survive a stop and restart (a `-dev` agent would lose
//! its catalog), with HTTP and DNS bound to one address in a namespace.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::netns::Netns;
use super::process::{Process, write_world_readable};
use super::{STARTUP, wait_until};

pub const HTTP_PORT: u16 = 8500;
pub const DNS_PORT: u16 = 8600;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// `$PILOTFISH_CONSUL`, else `$PILOTFISH_TEST_ROOT/bin/consul` (default root
/// /opt/pilotfish-test), where scripts/install-consul.sh puts it.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PILOTFISH_CONSUL") {
        return PathBuf::from(path);
    }
    let root =
        std::env::var_os("PILOTFISH_TEST_ROOT").unwrap_or_else(|| "/opt/pilotfish-test".into());
    let path = PathBuf::from(root).join("bin/consul");
    assert!(
        path.exists(),
        "no Consul at {}: run scripts/install-consul.sh (or set PILOTFISH_CONSUL)",
        path.display()
    );
    path
}

/// One service instance as registered through the agent API.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Instance id, unique on the agent (`reviews-v1`).
    pub id: String,
    /// Service name (`reviews`): the mesh host is `<name>.service.consul`.
    pub name: String,
    pub address: String,
    pub port: u16,
    /// `version|v1` style tags become labels.
    pub tags: Vec<String>,
    /// `protocol` here is what pilotfish reads; none means sniffed.
    pub meta: BTreeMap<String, String>,
}

impl Instance {
    pub fn new(id: &str, name: &str, address: &str, port: u16) -> Instance {
        Instance {
            id: id.to_string(),
            name: name.to_string(),
            address: address.to_string(),
            port,
            tags: Vec::new(),
            meta: BTreeMap::new(),
        }
    }

    pub fn tag(mut self, tag: &str) -> Instance {
        self.tags.push(tag.to_string());
        self
    }

    /// `ServiceMeta.protocol`, or nothing when `None`.
    pub fn protocol(mut self, protocol: Option<&str>) -> Instance {
        match protocol {
            Some(p) => self.meta.insert("protocol".into(), p.into()),
            None => self.meta.remove("protocol"),
        };
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "ID": self.id,
            "Name": self.name,
            "Address": self.address,
            "Port": self.port,
            "Tags": self.tags,
            "Meta": self.meta,
        })
    }
}

pub struct Consul {
    ns: Arc<Netns>,
    ip: String,
    dir: PathBuf,
    process: Option<Process>,
    starts: usize,
}

impl Consul {
    /// Starts a single-server Consul in `ns`, HTTP on `ip:8500` and DNS on
    /// `ip:8600`, keeping its config, data and log under `dir`; waits until
    /// it has elected itself leader.
    pub fn start(ns: Arc<Netns>, dir: &Path, ip: &str) -> Consul {
        let dir = dir.join("consul");
        std::fs::create_dir_all(dir.join("data")).expect("create consul data dir");
        let config = json!({
            "datacenter": "dc1",
            "node_name": "mesh-host",
            "data_dir": dir.join("data"),
            "server": true,
            "bootstrap_expect": 1,
            "bind_addr": ip,
            "advertise_addr": ip,
            "client_addr": ip,
            "disable_update_check": true,
            "performance": {"raft_multiplier": 1},
            "ports": {"http": HTTP_PORT, "dns": DNS_PORT, "grpc": -1, "https": -1},
            "log_level": "info",
        });
        write_world_readable(&dir.join("agent.json"), &config.to_string());
        let mut consul = Consul {
            ns,
            ip: ip.to_string(),
            dir,
            process: None,
            starts: 0,
        };
        consul.spawn();
        consul
    }

    /// `http://ip:8500`, as pilotfish's `--consul-address` wants it.
    pub fn url(&self) -> String {
        format!("http://{}:{HTTP_PORT}", self.ip)
    }

    pub fn dns_address(&self) -> SocketAddr {
        format!("{}:{DNS_PORT}", self.ip)
            .parse()
            .expect("dns address")
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// Kills the agent (SIGKILL: an outage, not a graceful leave).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts the agent again on the same data directory; returns how long
    /// it took to have a leader again.
    pub fn restart(&mut self) -> Duration {
        self.stop();
        let start = Instant::now();
        self.spawn();
        start.elapsed()
    }

    fn spawn(&mut self) {
        assert!(self.process.is_none(), "consul is already running");
        self.starts += 1;
        let mut cmd = self
            .ns
            .command(binary().to_str().expect("utf-8 path"), &["agent"]);
        cmd.arg("-config-file").arg(self.dir.join("agent.json"));
        self.process = Some(Process::spawn(
            &format!("consul (start {})", self.starts),
            cmd,
            &self.dir.join("consul.log"),
        ));
        wait_until("consul to elect a leader", STARTUP, || {
            if let Some(process) = self.process.as_mut() {
                process.assert_running();
            }
            match self.request("GET", "/v1/status/leader", None)? {
                (200, body) if body.trim().trim_matches('"').is_empty() => {
                    Err("no leader yet".into())
                }
                (200, _) => Ok(()),
                (status, body) => Err(format!("/v1/status/leader answered {status}: {body}")),
            }
        });
        // A fresh leader may still refuse writes for a moment.
        wait_until(
            "consul to accept reads of its catalog",
            STARTUP,
            || match self.request("GET", "/v1/catalog/services", None)? {
                (200, _) => Ok(()),
                (status, body) => Err(format!("{status}: {body}")),
            },
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("consul.log")).unwrap_or_default()
    }

    /// `PUT /v1/agent/service/register`.
    pub fn register(&self, instance: &Instance) {
        self.put(
            "/v1/agent/service/register",
            Some(&instance.to_json().to_string()),
        );
    }

    /// `PUT /v1/agent/service/deregister/<id>`.
    pub fn deregister(&self, id: &str) {
        self.put(&format!("/v1/agent/service/deregister/{id}"), None);
    }

    /// `GET path`, which must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Value {
        match self.request("GET", path, None) {
            Ok((200, body)) => serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("consul {path} is not JSON ({e}): {body}")),
            other => panic!("consul GET {path}: {other:?}"),
        }
    }

    fn put(&self, path: &str, body: Option<&str>) {
        // A leader elected a moment ago may answer 500 ("No cluster leader")
        // once; retry briefly.
        wait_until(&format!("consul PUT {path}"), STARTUP, || {
            match self.request("PUT", path, body)? {
                (200, _) => Ok(()),
                (status, text) => Err(format!("{status}: {text}")),
            }
        });
    }

    /// One HTTP/1.1 request on a new connection, from inside the namespace.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, String), String> {
        let addr: SocketAddr = format!("{}:{HTTP_PORT}", self.ip)
            .parse()
            .expect("consul address");
        let body = body.unwrap_or("");
        let exchange = || -> std::io::Result<Vec<u8>> {
            let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(head.as_bytes())?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw)?;
            Ok(raw)
        };
        let raw = self
            .ns
            .run(exchange)
            .map_err(|e| format!("consul {method} {path}: {e}"))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, rest) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("consul {method} {path}: bad answer {text:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("consul {method} {path}: bad status line {head:?}"))?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(rest)
        } else {
            rest.to_string()
        };
        Ok((status, body))
    }
}

fn dechunk(mut data: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = data.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        data = rest[size..].trim_start_matches("\r\n");
    }
    out
}
