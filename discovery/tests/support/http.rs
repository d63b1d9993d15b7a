//! A deliberately small HTTP/1.1 client on std's TcpStream: one request per
//! connection (`Connection: close`), so every request is a new connection
//! that iptables sends through Envoy.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Request {
    /// `GET` unless changed with [`Request::method`].
    pub method: String,
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// `GET /` to `addr` (a VIP or endpoint, or 127.0.0.1 for control
    /// traffic) with the given Host header.
    pub fn get(addr: &str, host: &str) -> Request {
        Request {
            method: "GET".to_string(),
            addr: addr
                .parse()
                .unwrap_or_else(|e| panic!("bad address {addr}: {e}")),
            host: host.to_string(),
            path: "/".to_string(),
            headers: Vec::new(),
        }
    }

    pub fn path(mut self, path: &str) -> Request {
        self.path = path.to_string();
        self
    }

    /// Another method than `GET` (`OPTIONS` for a CORS preflight...); no body.
    pub fn method(mut self, method: &str) -> Request {
        self.method = method.to_string();
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends the request; must run inside the namespace (see `Netns::run`).
    pub fn send(&self) -> std::io::Result<Response> {
        let mut stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        self.send_over(&mut stream)
    }

    /// Writes the request to an open connection (plain or TLS) and reads
    /// the response.
    pub fn send_over<S: Read + Write>(&self, stream: &mut S) -> std::io::Result<Response> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.method, self.path, self.host
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.flush()?;
        // Stop at the end of the response rather than at EOF: Envoy delays
        // closing after its own (local) replies, by up to a second.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = stream.read(&mut chunk)?;
            raw.extend_from_slice(&chunk[..n]);
            let eof = n == 0;
            if let Some(response) = Response::parse(&raw, eof) {
                return Ok(response);
            }
            if eof {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("incomplete response: {:?}", String::from_utf8_lossy(&raw)),
                ));
            }
        }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} http://{}{} via {}",
            self.method, self.host, self.path, self.addr
        )?;
        for (name, value) in &self.headers {
            write!(f, " [{name}: {value}]")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// Parses a complete response; `None` while more bytes are needed.
    /// Without a length or chunking, the body runs to `eof`.
    fn parse(raw: &[u8], eof: bool) -> Option<Response> {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&raw[..split]).ok()?;
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            body = dechunk(&body)?;
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if body.len() < len {
                return None;
            }
            body.truncate(len);
        } else if !eof {
            return None;
        }
        Some(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }

    /// Which test backend produced the body, if one did.
    pub fn answer(&self) -> Option<Answer> {
        let json: Value = serde_json::from_str(&self.body).ok()?;
        Some(Answer {
            service: json.get("service")?.as_str()?.to_string(),
            version: json.get("version")?.as_str()?.to_string(),
            path: json
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// "reviews v2" for a backend's answer, "status 503" for anything else:
    /// the key used when counting where requests went.
    pub fn outcome(&self) -> String {
        match self.answer() {
            Some(answer) if self.status == 200 => answer.label(),
            _ => format!("status {}", self.status),
        }
    }
}

/// What a test backend says about itself in every HTTP response body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub service: String,
    pub version: String,
    /// The request path the backend saw.
    pub path: String,
}

impl Answer {
    pub fn label(&self) -> String {
        label(&self.service, &self.version)
    }
}

/// "reviews v2", or "reviews" for a backend without a version.
pub fn label(service: &str, version: &str) -> String {
    if version.is_empty() {
        service.to_string()
    } else {
        format!("{service} {version}")
    }
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// `GET path` on a control address (Envoy admin, pilotfish's HTTP port),
/// returning the status and body; errors as text, for wait loops.
pub fn control_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let response = Request::get(addr, addr)
        .path(path)
        .send()
        .map_err(|e| format!("GET {addr}{path}: {e}"))?;
    Ok((response.status, response.body))
}

/// The first value of header `name` (any case) in `headers`, whose names
/// are lowercase.
pub fn first_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}
