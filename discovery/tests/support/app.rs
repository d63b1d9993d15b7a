//! A Bookinfo-like application for the mesh tests: an HTTP/1.1 server on
//! `0.0.0.0:<port>` inside a pod's namespace that answers every request with
//! JSON naming its service, version and pod, after calling its callees by
//! name (`details.service.consul:9080`, resolved through Consul's DNS) the
//! way Bookinfo's productpage calls details and reviews. Each answer carries
//! what every callee answered, so one request through productpage shows the
//! whole call tree; the `end-user` header is passed on, as Bookinfo does.
//!
//! The answer also carries `peer`, the address the request came from: the
//! sidecar delivers from 127.0.0.1, so anything else means a request got
//! around it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

use super::dns::Resolver;
use super::http::{Request, Response};
use super::netns::{self, Netns};

/// Headers an app passes on to its callees.
const PROPAGATED: [&str; 2] = ["end-user", "x-request-id"];

#[derive(Clone, Debug)]
pub struct AppSpec {
    pub service: String,
    pub version: String,
    pub pod: String,
    pub port: u16,
    /// `(host, port)` called on every request, in order.
    pub callees: Vec<(String, u16)>,
}

impl AppSpec {
    pub fn new(service: &str, version: &str, pod: &str, port: u16) -> AppSpec {
        AppSpec {
            service: service.to_string(),
            version: version.to_string(),
            pod: pod.to_string(),
            port,
            callees: Vec::new(),
        }
    }

    pub fn calls(mut self, host: &str, port: u16) -> AppSpec {
        self.callees.push((host.to_string(), port));
        self
    }
}

struct Shared {
    spec: AppSpec,
    resolver: Arc<Resolver>,
    requests: AtomicU64,
    peers: Mutex<BTreeMap<String, u64>>,
    stopping: AtomicBool,
}

/// A running app; stops listening when dropped.
pub struct App {
    shared: Arc<Shared>,
    listener: TcpListener,
    thread: Option<JoinHandle<()>>,
}

impl App {
    /// Binds `0.0.0.0:<port>` in `ns` and serves on threads living there.
    pub fn start(ns: &Netns, spec: AppSpec, resolver: Arc<Resolver>) -> App {
        let listener = ns
            .run(|| TcpListener::bind(("0.0.0.0", spec.port)))
            .unwrap_or_else(|e| panic!("app {}: bind :{}: {e}", spec.pod, spec.port));
        let shared = Arc::new(Shared {
            spec,
            resolver,
            requests: AtomicU64::new(0),
            peers: Mutex::new(BTreeMap::new()),
            stopping: AtomicBool::new(false),
        });
        let accepting = listener.try_clone().expect("clone listener");
        let serving = shared.clone();
        let ns_name = ns.name().to_string();
        let thread = std::thread::Builder::new()
            .name(format!("app-{}", serving.spec.pod))
            .spawn(move || {
                // Connection threads are born here, so their outgoing calls
                // leave from the pod's namespace.
                netns::enter(&ns_name);
                while let Ok((stream, peer)) = accepting.accept() {
                    if serving.stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    let app = serving.clone();
                    std::thread::spawn(move || serve(stream, peer, &app));
                }
            })
            .expect("spawn app thread");
        App {
            shared,
            listener,
            thread: Some(thread),
        }
    }

    pub fn spec(&self) -> &AppSpec {
        &self.shared.spec
    }

    /// HTTP requests answered so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Requests by the IP they came from.
    pub fn peers(&self) -> BTreeMap<String, u64> {
        self.shared.peers.lock().expect("peers").clone()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        // Wakes the blocked accept(), which then fails.
        // SAFETY: a valid socket fd owned by self.listener.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, peer: SocketAddr, app: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    // Keep-alive: Envoy pools its connections to the app.
    while let Some(request) = read_request(&mut reader) {
        if app.stopping.load(Ordering::Relaxed) {
            return;
        }
        app.requests.fetch_add(1, Ordering::Relaxed);
        *app.peers
            .lock()
            .expect("peers")
            .entry(peer.ip().to_string())
            .or_default() += 1;
        let body = answer(app, &request, peer).to_string();
        let connection = if request.close { "close" } else { "keep-alive" };
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() || request.close {
            return;
        }
    }
}

struct IncomingRequest {
    path: String,
    host: String,
    headers: Vec<(String, String)>,
    close: bool,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<IncomingRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut request = IncomingRequest {
        path,
        host: String::new(),
        headers: Vec::new(),
        close: false,
    };
    let mut content_length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        match name.as_str() {
            "host" => request.host = value.clone(),
            "content-length" => content_length = value.parse().unwrap_or(0),
            "connection" => request.close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
        request.headers.push((name, value));
    }
    if content_length > 0 {
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).ok()?;
    }
    Some(request)
}

fn answer(app: &Shared, request: &IncomingRequest, peer: SocketAddr) -> Value {
    let spec = &app.spec;
    let calls: Vec<Value> = spec
        .callees
        .iter()
        .map(|(host, port)| call(&app.resolver, host, *port, &request.headers))
        .collect();
    json!({
        "service": spec.service,
        "version": spec.version,
        "pod": spec.pod,
        "path": request.path,
        "host": request.host,
        "peer": peer.ip().to_string(),
        "end_user": request.headers.iter().find(|(n, _)| n == "end-user").map(|(_, v)| v),
        "xfcc": request.headers.iter().find(|(n, _)| n == "x-forwarded-client-cert").map(|(_, v)| v),
        "calls": calls,
    })
}

/// One call to a callee: `{"host", "status", "answer"}` or `{"host", "error"}`.
fn call(resolver: &Resolver, host: &str, port: u16, headers: &[(String, String)]) -> Value {
    let result = resolver.resolve(host).and_then(|ips| {
        let mut request = Request::get(&format!("{}:{port}", ips[0]), &format!("{host}:{port}"));
        for (name, value) in headers {
            if PROPAGATED.contains(&name.as_str()) {
                request = request.header(name, value);
            }
        }
        request.send()
    });
    match result {
        Ok(response) => json!({
            "host": host,
            "status": response.status,
            "answer": serde_json::from_str::<Value>(&response.body)
                .unwrap_or_else(|_| Value::String(response.body.clone())),
        }),
        Err(e) => json!({"host": host, "error": e.to_string()}),
    }
}

/// An app's answer, read back from a response body.
#[derive(Clone, Debug)]
pub struct AppAnswer {
    pub service: String,
    pub version: String,
    pub pod: String,
    pub peer: String,
    /// The `x-forwarded-client-cert` the app received: its sidecar took
    /// the request over mesh mTLS and names the caller's certificate.
    pub xfcc: Option<String>,
    /// Per callee: its answer, or what went wrong (status, error).
    pub calls: Vec<(String, Result<AppAnswer, String>)>,
}

impl AppAnswer {
    /// Parses a 200 response from an app; errors say what came instead.
    pub fn from_response(response: &Response) -> Result<AppAnswer, String> {
        if response.status != 200 {
            return Err(format!(
                "status {}: {}",
                response.status,
                response.body.trim()
            ));
        }
        let json: Value = serde_json::from_str(&response.body)
            .map_err(|e| format!("not an app answer ({e}): {}", response.body))?;
        AppAnswer::from_json(&json)
    }

    fn from_json(json: &Value) -> Result<AppAnswer, String> {
        let text = |key: &str| {
            json.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("no {key:?} in {json}"))
        };
        let calls = json
            .get("calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| {
                let host = c.get("host").and_then(Value::as_str).unwrap_or("?");
                let outcome = match (c.get("status").and_then(Value::as_u64), c.get("answer")) {
                    (Some(200), Some(answer)) => AppAnswer::from_json(answer),
                    (Some(status), answer) => Err(format!(
                        "status {status}: {}",
                        answer.map(Value::to_string).unwrap_or_default()
                    )),
                    _ => Err(c
                        .get("error")
                        .map(Value::to_string)
                        .unwrap_or_else(|| c.to_string())),
                };
                (host.to_string(), outcome)
            })
            .collect();
        Ok(AppAnswer {
            service: text("service")?,
            version: text("version")?,
            pod: text("pod")?,
            peer: text("peer")?,
            xfcc: json.get("xfcc").and_then(Value::as_str).map(str::to_string),
            calls,
        })
    }

    /// "reviews v2".
    pub fn label(&self) -> String {
        format!("{} {}", self.service, self.version)
    }

    /// The answer of the callee whose host starts with `service.`.
    pub fn callee(&self, service: &str) -> Result<&AppAnswer, String> {
        let prefix = format!("{service}.");
        let (_, outcome) = self
            .calls
            .iter()
            .find(|(host, _)| host.starts_with(&prefix))
            .ok_or_else(|| format!("{} did not call {service}", self.label()))?;
        outcome
            .as_ref()
            .map_err(|e| format!("{} -> {service}: {e}", self.label()))
    }

    /// The call tree on one line: `productpage v1 [details v1, reviews v2 [ratings v1]]`.
    pub fn tree(&self) -> String {
        if self.calls.is_empty() {
            return self.label();
        }
        let calls: Vec<String> = self
            .calls
            .iter()
            .map(|(host, outcome)| match outcome {
                Ok(answer) => answer.tree(),
                Err(e) => format!("{host}: {e}"),
            })
            .collect();
        format!("{} [{}]", self.label(), calls.join(", "))
    }

    /// Every answer in the tree (this one first) came through a sidecar:
    /// the app saw its request from 127.0.0.1.
    pub fn all_via_sidecar(&self) -> Result<(), String> {
        if self.peer != "127.0.0.1" {
            return Err(format!(
                "{} ({}) was reached from {}, not from its sidecar",
                self.label(),
                self.pod,
                self.peer
            ));
        }
        for (_, outcome) in &self.calls {
            if let Ok(answer) = outcome {
                answer.all_via_sidecar()?;
            }
        }
        Ok(())
    }
}
