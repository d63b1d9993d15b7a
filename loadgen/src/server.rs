//! The server under test: a Pilotfish we start on loopback ports (and stop
//! at the end), or one already running that we only attach to. Either way we
//! know its pid, to read its memory and CPU time. Only loopback targets are
//! accepted: the load generator is a benchmark, not a tool to aim at others.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a spawned server may take to load the mesh and become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long SIGTERM may take before the server is killed (Pilotfish's own
/// shutdown timeout is 10 s).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}: only a loopback address (127.0.0.0/8 or ::1) may be targeted")]
    NotLoopback(String),
    #[error("{0:?} is not an IP:port address")]
    BadAddress(String),
    #[error("starting {path}: {source}")]
    Spawn { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("pilotfish exited before it was ready ({0}); {1} ends with:\n{2}")]
    Exited(String, PathBuf, String),
    #[error("pilotfish was not ready within {0:?}; see {1}")]
    NotReady(Duration, PathBuf),
    #[error("pid {0} is not a running process")]
    NoSuchPid(u32),
    #[error("only a server the load generator started can be restarted or killed (--pilotfish)")]
    NotOurs,
}

/// Parses `address` and refuses anything but a loopback IP.
pub fn loopback_address(address: &str) -> Result<SocketAddr, ServerError> {
    let parsed: SocketAddr = address
        .parse()
        .map_err(|_| ServerError::BadAddress(address.to_string()))?;
    if !parsed.ip().is_loopback() {
        return Err(ServerError::NotLoopback(address.to_string()));
    }
    Ok(parsed)
}

/// A Pilotfish process under test.
pub struct Server {
    pub xds: SocketAddr,
    pub pid: u32,
    /// Debug HTTP address, known when we started the server.
    pub http: Option<SocketAddr>,
    child: Option<Child>,
    /// Set when we started it (so can start it again).
    launch: Option<Launch>,
}

impl Server {
    /// Attaches to a running server at `target` with process id `pid`.
    pub fn attach(target: &str, pid: u32) -> Result<Server, ServerError> {
        let xds = loopback_address(target)?;
        if !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(ServerError::NoSuchPid(pid));
        }
        Ok(Server {
            xds,
            pid,
            http: None,
            child: None,
            launch: None,
        })
    }

    /// Starts `binary serve` on free loopback ports, serving `config_dir`,
    /// logging to `log`, and waits until it reports ready.
    pub async fn spawn(
        binary: &Path,
        config_dir: &Path,
        log: &Path,
    ) -> Result<Server, ServerError> {
        // A restarted server appends to the log; a new run starts it afresh.
        let _ = std::fs::remove_file(log);
        let launch = Launch {
            binary: binary.to_path_buf(),
            config_dir: config_dir.to_path_buf(),
            log: log.to_path_buf(),
            xds: free_loopback_port()?,
            http: free_loopback_port()?,
        };
        let mut server = launch.start()?;
        server.wait_ready().await?;
        Ok(server)
    }

    /// Stops a server we started and starts it again on the same ports (a
    /// control-plane restart, as a rollout does), waiting until it is ready.
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        let Some(launch) = self.launch.clone() else {
            return Err(ServerError::NotOurs);
        };
        self.terminate().await?;
        *self = launch.start()?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), ServerError> {
        let (Some(http), Some(launch)) = (self.http, self.launch.clone()) else {
            return Ok(());
        };
        let log = &launch.log;
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(ServerError::Exited(
                    status.to_string(),
                    log.to_path_buf(),
                    log_tail(log),
                ));
            }
            if matches!(http_get(http, "/ready").await, Ok((200, _))) {
                tracing::info!(pid = self.pid, xds = %self.xds, elapsed = ?started.elapsed(), "pilotfish ready");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ServerError::NotReady(READY_TIMEOUT, log.to_path_buf()))
    }

    /// Input problems the server reports for the generated mesh (`None`
    /// when attached to a server whose debug address we do not know).
    pub async fn input_problems(&self) -> Option<Result<Vec<String>, ServerError>> {
        let http = self.http?;
        Some(fetch_problems(http).await)
    }

    /// Kills a server we started with SIGKILL, as a crash or an OOM kill
    /// would: no GOAWAY, its connections simply end. Waits until it is gone.
    pub async fn kill(&mut self) -> Result<(), ServerError> {
        let Some(mut child) = self.child.take() else {
            return Err(ServerError::NotOurs);
        };
        child.kill().await?;
        tracing::info!(pid = self.pid, "pilotfish killed");
        Ok(())
    }

    /// Stops a server we started: SIGTERM, then SIGKILL after a grace period.
    /// An attached server is left alone.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        self.terminate().await
    }

    async fn terminate(&mut self) -> Result<(), ServerError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: signalling the child we spawned and still own.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(status) => {
                tracing::info!(status = %status?, "pilotfish stopped");
            }
            Err(_) => {
                tracing::warn!("pilotfish ignored SIGTERM; killing it");
                child.kill().await?;
            }
        }
        Ok(())
    }
}

/// How we start a server, to start it again the same way.
#[derive(Clone, Debug)]
struct Launch {
    binary: PathBuf,
    config_dir: PathBuf,
    log: PathBuf,
    xds: SocketAddr,
    http: SocketAddr,
}

impl Launch {
    fn start(&self) -> Result<Server, ServerError> {
        // Appended to: a restarted server's log follows the first one's.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--config-dir")
            .arg(&self.config_dir)
            .args(["--xds-address", &self.xds.to_string()])
            .args(["--secure-xds-address", "off"])
            .args(["--http-address", &self.http.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        let child = command.spawn().map_err(|source| ServerError::Spawn {
            path: self.binary.clone(),
            source,
        })?;
        let pid = child.id().ok_or_else(|| {
            ServerError::Exited("no pid".into(), self.log.clone(), log_tail(&self.log))
        })?;
        Ok(Server {
            xds: self.xds,
            pid,
            http: Some(self.http),
            child: Some(child),
            launch: Some(self.clone()),
        })
    }
}

async fn fetch_problems(http: SocketAddr) -> Result<Vec<String>, ServerError> {
    let (_, body) = http_get(http, "/debug/diagnostics").await?;
    let value: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| ServerError::Io(io::Error::other(e)))?;
    Ok(value["input_problems"]
        .as_array()
        .map(|problems| problems.iter().map(|p| p.to_string()).collect())
        .unwrap_or_default())
}

/// The last lines of the server's log, to say why it failed.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// A port on 127.0.0.1 nobody listens on right now.
fn free_loopback_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// A minimal HTTP/1.0 GET (no chunked bodies): status code and body.
async fn http_get(address: SocketAddr, path: &str) -> Result<(u16, String), ServerError> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(HTTP_TIMEOUT, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "HTTP request timed out"))??;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other("malformed HTTP response"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(loopback_address("127.0.0.1:15010").is_ok());
        assert!(loopback_address("[::1]:15010").is_ok());
        assert!(matches!(
            loopback_address("10.0.0.1:15010"),
            Err(ServerError::NotLoopback(_))
        ));
        assert!(matches!(
            loopback_address("0.0.0.0:15010"),
            Err(ServerError::NotLoopback(_))
        ));
        assert!(matches!(
            loopback_address("localhost:15010"),
            Err(ServerError::BadAddress(_))
        ));
    }
}
