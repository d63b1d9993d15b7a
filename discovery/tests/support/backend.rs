//! Test backends: one small server per endpoint address, all driven by one
//! current-thread tokio runtime on a thread inside the pod's namespace.
//!
//! A backend looks at the first bytes of each connection: an HTTP/1.x request
//! gets `{"service":..,"version":..,"path":..}` (keep-alive, as Envoy pools
//! upstream connections); anything else is echoed line by line, prefixed with
//! the backend's name ("db v1: ping"), so raw TCP can be checked too.
//! How it answers HTTP (delay, failures, extra headers) is its
//! [`Behaviour`], which a test may change at any time; the body also
//! echoes the method, Host and headers the backend saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::behaviours::{Behaviour, SeenRequest};
use super::http::label;
use super::netns::{self, Netns};

/// One listening backend and what it has served.
pub struct Backend {
    pub addr: SocketAddr,
    pub service: String,
    pub version: String,
    connections: AtomicU64,
    requests: AtomicU64,
    behaviour: Mutex<Behaviour>,
    /// HTTP requests since the behaviour was last set.
    attempts: AtomicU64,
    seen: Mutex<Vec<SeenRequest>>,
}

impl Backend {
    pub fn label(&self) -> String {
        label(&self.service, &self.version)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// HTTP requests answered plus TCP lines echoed.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Answers HTTP from now on as `behaviour` says; restarts the count
    /// that `Behaviour::fail_first` and [`Backend::attempts`] use.
    pub fn behave(&self, behaviour: Behaviour) {
        let mut current = self.behaviour.lock().expect("behaviour lock");
        *current = behaviour;
        self.attempts.store(0, Ordering::Relaxed);
    }

    /// HTTP requests received since the behaviour was last set (all of
    /// them if it never was), failed answers included.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Every HTTP request received so far, oldest first.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("seen lock").clone()
    }
}

/// A current-thread tokio runtime on a thread inside a namespace, running
/// until dropped; dropping it stops the thread and so closes its sockets.
pub struct NsRuntime {
    pub handle: tokio::runtime::Handle,
    what: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NsRuntime {
    /// `thread` names the thread (`<thread>-<namespace>`), `what` the
    /// runtime in panic messages ("backend", "TLS backend").
    pub fn start(ns: &Netns, thread: &str, what: &str) -> NsRuntime {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let ns_name = ns.name().to_string();
        let thread = std::thread::Builder::new()
            .name(format!("{thread}-{ns_name}"))
            .spawn(move || {
                netns::enter(&ns_name);
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                handle_tx
                    .send(runtime.handle().clone())
                    .expect("send runtime handle");
                runtime.block_on(async move {
                    let _ = stopped.await;
                });
            })
            .unwrap_or_else(|e| panic!("spawn {what} thread: {e:?}"));
        let handle = handle_rx
            .recv()
            .unwrap_or_else(|e| panic!("{what} runtime started: {e:?}"));
        NsRuntime {
            handle,
            what: what.to_string(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Binds `addr` on the runtime thread (the one inside the namespace)
    /// and, once bound, runs `serve` with the listener there.
    pub fn bind<F, Fut>(&self, addr: SocketAddr, serve: F) -> std::io::Result<()>
    where
        F: FnOnce(TcpListener) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        self.handle.spawn(async move {
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    let _ = bound_tx.send(Ok(()));
                    serve(listener).await;
                }
                Err(e) => {
                    let _ = bound_tx.send(Err(e));
                }
            }
        });
        bound_rx
            .recv()
            .unwrap_or_else(|e| panic!("{} task ended: {e:?}", self.what))
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The runtime thread; stopping it closes every backend socket.
pub struct Backends {
    // First, so that it stops before the backends are dropped.
    runtime: NsRuntime,
    started: Vec<Arc<Backend>>,
}

impl Backends {
    pub fn start(ns: &Netns) -> Backends {
        Backends {
            runtime: NsRuntime::start(ns, "backends", "backend"),
            started: Vec::new(),
        }
    }

    /// Started with a backend for every endpoint of the registry file
    /// `registry` (YAML).
    pub fn start_for_registry(ns: &Netns, registry: &str) -> Backends {
        let mut backends = Backends::start(ns);
        for spec in super::registry::backends_for(registry) {
            backends.add(spec.addr, &spec.service, &spec.version);
        }
        backends
    }

    /// Binds `addr` (inside the namespace) and serves as `service`/`version`.
    pub fn add(&mut self, addr: SocketAddr, service: &str, version: &str) -> Arc<Backend> {
        let backend = Arc::new(Backend {
            addr,
            service: service.to_string(),
            version: version.to_string(),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            behaviour: Mutex::new(Behaviour::default()),
            attempts: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let serving = backend.clone();
        self.runtime
            .bind(addr, |listener| accept_loop(listener, serving))
            .unwrap_or_else(|e| panic!("backend {service} {version}: bind {addr}: {e}"));
        self.started.push(backend.clone());
        backend
    }

    pub fn all(&self) -> &[Arc<Backend>] {
        &self.started
    }

    /// The backend serving `addr`.
    pub fn at(&self, addr: &str) -> &Arc<Backend> {
        let addr: SocketAddr = addr.parse().expect("socket address");
        self.started
            .iter()
            .find(|b| b.addr == addr)
            .unwrap_or_else(|| panic!("no backend at {addr}"))
    }
}

async fn accept_loop(listener: TcpListener, backend: Arc<Backend>) {
    while let Ok((stream, _)) = listener.accept().await {
        backend.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(serve(stream, backend.clone()));
    }
}

async fn serve(stream: TcpStream, backend: Arc<Backend>) {
    let mut reader = BufReader::new(stream);
    let Ok(first) = reader.fill_buf().await else {
        return;
    };
    let result = if looks_like_http(first) {
        serve_http(reader, &backend).await
    } else {
        serve_echo(reader, &backend).await
    };
    let _ = result;
}

fn looks_like_http(data: &[u8]) -> bool {
    const METHODS: [&str; 7] = [
        "GET ", "POST ", "PUT ", "DELETE ", "HEAD ", "PATCH ", "OPTIONS ",
    ];
    METHODS.iter().any(|m| data.starts_with(m.as_bytes()))
}

async fn serve_echo(mut reader: BufReader<TcpStream>, backend: &Backend) -> std::io::Result<()> {
    let mut line = String::new();
    while reader.read_line(&mut line).await? > 0 {
        backend.requests.fetch_add(1, Ordering::Relaxed);
        let reply = format!("{}: {}\n", backend.label(), line.trim_end());
        reader.get_mut().write_all(reply.as_bytes()).await?;
        line.clear();
    }
    Ok(())
}

async fn serve_http(mut reader: BufReader<TcpStream>, backend: &Backend) -> std::io::Result<()> {
    loop {
        let Some(request) = read_request_head(&mut reader).await? else {
            return Ok(());
        };
        if request.content_length > 0 {
            let mut body = vec![0; request.content_length];
            reader.read_exact(&mut body).await?;
        }
        backend.requests.fetch_add(1, Ordering::Relaxed);
        let attempt = backend.attempts.fetch_add(1, Ordering::Relaxed);
        let behaviour = backend.behaviour.lock().expect("behaviour lock").clone();
        backend
            .seen
            .lock()
            .expect("seen lock")
            .push(request.seen.clone());
        if !behaviour.delay.is_zero() {
            tokio::time::sleep(behaviour.delay).await;
        }
        let status = behaviour.status_for(attempt);
        let body = request
            .seen
            .to_json(&backend.service, &backend.version, status)
            .to_string();
        let connection = if request.close { "close" } else { "keep-alive" };
        let mut extra = String::new();
        for (name, value) in &behaviour.response_headers {
            extra.push_str(&format!("{name}: {value}\r\n"));
        }
        let response = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n{extra}\r\n{body}",
            reason(status),
            body.len()
        );
        reader.get_mut().write_all(response.as_bytes()).await?;
        if request.close {
            return Ok(());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

struct RequestHead {
    path: String,
    host: String,
    content_length: usize,
    close: bool,
    seen: SeenRequest,
}

/// Reads a request line and headers; `None` at a clean end of connection.
async fn read_request_head(
    reader: &mut BufReader<TcpStream>,
) -> std::io::Result<Option<RequestHead>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or("/").to_string();
    let mut head = RequestHead {
        path: path.clone(),
        host: String::new(),
        content_length: 0,
        close: false,
        seen: SeenRequest {
            method,
            path,
            ..SeenRequest::default()
        },
    };
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let header = line.trim_end();
        if header.is_empty() {
            head.seen.host = head.host.clone();
            return Ok(Some(head));
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        head.seen
            .headers
            .push((name.trim().to_ascii_lowercase(), value.to_string()));
        match name.trim().to_ascii_lowercase().as_str() {
            "host" => head.host = value.to_string(),
            "content-length" => head.content_length = value.parse().unwrap_or(0),
            "connection" => head.close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
}
