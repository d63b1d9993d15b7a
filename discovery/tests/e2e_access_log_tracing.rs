//! A mesh config file (`--mesh-config`) asking for an access log file and
//! Zipkin tracing: a real Envoy sidecar, calling Bookinfo's reviews through
//! pilotfish's config, writes an access log line for the call and reports
//! its spans as Zipkin v2 JSON to a collector listening where
//! `defaultConfig.tracing.zipkin.address` says. (The log is a file, not
//! `/dev/stdout`: Envoy runs as uid 1337 with its stdout on a root-owned
//! log file here, which it may not reopen.)
//!
//! Needs root (network namespaces, iptables, uid 1337 for Envoy).

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::bookinfo;
use support::testdir::TestDir;
use support::wait_until;

const COLLECTOR: &str = "127.0.0.1:9411";
/// Envoy's Zipkin tracer flushes every 5 s by default.
const SPANS_ARRIVE: Duration = Duration::from_secs(20);

/// A Zipkin collector that keeps the path and body of every POST.
#[derive(Clone, Default)]
struct Collector {
    posts: Arc<Mutex<Vec<(String, String)>>>,
}

impl Collector {
    fn serve(&self, listener: TcpListener) {
        let posts = self.posts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(post) = read_post(stream) {
                    posts.lock().expect("posts").push(post);
                }
            }
        });
    }

    fn posts(&self) -> Vec<(String, String)> {
        self.posts.lock().expect("posts").clone()
    }
}

/// Reads one HTTP/1.1 request (body by Content-Length or chunked) and
/// answers 202.
fn read_post(mut stream: TcpStream) -> Option<(String, String)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let path = request_line.split_whitespace().nth(1)?.to_string();
    let mut length = 0;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let Some((name, value)) = header.trim_end().split_once(':') else {
            break;
        };
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let body = match chunked {
        true => read_chunks(&mut reader)?,
        false => read_exactly(&mut reader, length)?,
    };
    stream
        .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .ok()?;
    Some((path, String::from_utf8_lossy(&body).into_owned()))
}

fn read_exactly(reader: &mut impl Read, length: usize) -> Option<Vec<u8>> {
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

fn read_chunks(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        let chunk = read_exactly(reader, size + 2)?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

#[test]
fn a_mesh_config_with_access_log_and_zipkin_makes_the_sidecar_log_calls_and_report_spans() {
    let files = TestDir::new("mesh-config-observability");
    let mesh_config = files.path().join("mesh.yaml");
    let access_log = files.path().join("access.log");
    // Envoy (uid 1337) creates the access log in this directory.
    std::fs::set_permissions(files.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::write(
        &mesh_config,
        format!(
            "accessLogFile: {}\nenableTracing: true\ndefaultConfig:\n  tracing:\n    zipkin:\n      address: {COLLECTOR}\n",
            access_log.display()
        ),
    )
    .expect("mesh config");
    let pod = bookinfo::pod("observability")
        .pilotfish_arg("--mesh-config")
        .pilotfish_arg(mesh_config.to_str().expect("utf-8 path"))
        .start();
    let collector = Collector::default();
    collector.serve(
        pod.ns()
            .run(|| TcpListener::bind(COLLECTOR))
            .expect("bind collector"),
    );
    bookinfo::wait_served(&pod);

    let reviews = bookinfo::reviews();
    let spans = wait_until("Zipkin v2 spans at the collector", SPANS_ARRIVE, || {
        pod.send(&reviews);
        collector
            .posts()
            .into_iter()
            .find(|(_, body)| body.contains("traceId"))
            .ok_or_else(|| format!("posts so far: {:?}", collector.posts()))
    });
    assert_eq!(spans.0, "/api/v2/spans", "collector path");
    let parsed: serde_json::Value = serde_json::from_str(&spans.1)
        .unwrap_or_else(|e| panic!("spans not JSON ({e}): {}", spans.1));
    assert!(parsed.as_array().is_some_and(|a| !a.is_empty()), "{parsed}");

    wait_until(
        "an access log line for the reviews call",
        SPANS_ARRIVE,
        || {
            let log = std::fs::read_to_string(&access_log).unwrap_or_default();
            log.lines()
                .find(|line| {
                    line.contains("\"GET / HTTP/1.1\" 200") && line.contains("\"reviews:9080\"")
                })
                .map(|_| ())
                .ok_or_else(|| "no access log line yet".to_string())
        },
    );
    pod.envoy.assert_no_rejected_updates();
}
