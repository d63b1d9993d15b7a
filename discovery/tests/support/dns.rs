//! A minimal DNS client (A records over UDP), enough to resolve
//! `<name>.service.consul` through Consul's DNS interface the way an
//! application in the mesh would, plus a small cache that keeps serving the
//! last answer when the DNS server is down (as caching resolvers do).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

/// Asks `server` for the A records of `name`. Must run in the namespace
/// that reaches the server. An NXDOMAIN or an empty answer is an error.
pub fn resolve_a(server: SocketAddr, name: &str, timeout: Duration) -> io::Result<Vec<Ipv4Addr>> {
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; 1 question
    for label in name.trim_end_matches('.').split('.') {
        query.push(u8::try_from(label.len()).map_err(|_| invalid("label too long"))?);
        query.extend_from_slice(label.as_bytes());
    }
    query.push(0);
    query.extend_from_slice(&TYPE_A.to_be_bytes());
    query.extend_from_slice(&CLASS_IN.to_be_bytes());

    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(timeout))?;
    // Connected, so that a server that is down answers "refused" at once
    // (ICMP port unreachable) rather than after the timeout.
    socket.connect(server)?;
    socket.send(&query)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.recv(&mut buf)?;
        if n >= 12 && buf[..2] == id.to_be_bytes() {
            return parse_answer(&buf[..n], name);
        }
    }
}

fn parse_answer(msg: &[u8], name: &str) -> io::Result<Vec<Ipv4Addr>> {
    let u16_at = |at: usize| -> io::Result<u16> {
        msg.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| invalid("truncated message"))
    };
    let rcode = msg[3] & 0x0f;
    if rcode != 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("DNS {name}: rcode {rcode}"),
        ));
    }
    let (questions, answers) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let (rtype, class, len) = (u16_at(at)?, u16_at(at + 2)?, usize::from(u16_at(at + 8)?));
        let data = msg
            .get(at + 10..at + 10 + len)
            .ok_or_else(|| invalid("truncated record"))?;
        if rtype == TYPE_A && class == CLASS_IN && len == 4 {
            out.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    if out.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("DNS {name}: no A record"),
        ));
    }
    Ok(out)
}

/// The offset just past a (possibly compressed) name.
fn skip_name(msg: &[u8], mut at: usize) -> io::Result<usize> {
    loop {
        let len = *msg.get(at).ok_or_else(|| invalid("truncated name"))?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => return Ok(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("DNS: {what}"))
}

/// Resolves through one server, caching answers for `ttl` and serving the
/// last answer (however old) while the server does not answer.
pub struct Resolver {
    server: SocketAddr,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Vec<Ipv4Addr>, Instant)>>,
}

impl Resolver {
    pub fn new(server: SocketAddr, ttl: Duration) -> Resolver {
        Resolver {
            server,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn resolve(&self, name: &str) -> io::Result<Vec<Ipv4Addr>> {
        let cached = self.cache.lock().expect("dns cache").get(name).cloned();
        if let Some((ips, at)) = &cached
            && at.elapsed() < self.ttl
        {
            return Ok(ips.clone());
        }
        match resolve_a(self.server, name, Duration::from_secs(1)) {
            Ok(ips) => {
                self.cache
                    .lock()
                    .expect("dns cache")
                    .insert(name.to_string(), (ips.clone(), Instant::now()));
                Ok(ips)
            }
            // A server that does not answer (timeout, refused) gets the
            // stale answer; a definite "no such name" does not.
            Err(e) if e.kind() != io::ErrorKind::NotFound => match cached {
                Some((ips, _)) => Ok(ips),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

/// A small authoritative DNS server for tests: answers A queries for the
/// names it was given (NOERROR with no answer for other types, NXDOMAIN for
/// other names), on UDP in a namespace, until dropped. What a pod's real
/// resolver is to the Envoy resolving a ServiceEntry's host.
pub struct DnsServer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    pub fn start(
        ns: &super::netns::Netns,
        addr: SocketAddr,
        records: &[(String, Ipv4Addr)],
    ) -> DnsServer {
        let records: HashMap<String, Ipv4Addr> = records
            .iter()
            .map(|(name, ip)| (name.to_ascii_lowercase(), *ip))
            .collect();
        let socket = ns
            .run(|| UdpSocket::bind(addr))
            .expect("bind the test DNS server");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stopping.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..n], &records) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        DnsServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reply to one query, `None` for what is not a one-question query.
fn answer(query: &[u8], records: &HashMap<String, Ipv4Addr>) -> Option<Vec<u8>> {
    if query.len() < 12 || query[4..6] != [0, 1] {
        return None;
    }
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + len)?).to_ascii_lowercase());
        at += 1 + len;
    }
    let question_end = at + 5;
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let found = records.get(&labels.join("."));
    let mut reply = query.get(..question_end)?.to_vec();
    // QR, RD copied, RA; NXDOMAIN for unknown names.
    reply[2] = 0x80 | (query[2] & 0x01);
    reply[3] = if found.is_some() { 0x80 } else { 0x83 };
    reply[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
    if let (Some(ip), TYPE_A) = (found, qtype) {
        reply[7] = 1;
        reply.extend_from_slice(&[0xc0, 0x0c]);
        reply.extend_from_slice(&TYPE_A.to_be_bytes());
        reply.extend_from_slice(&CLASS_IN.to_be_bytes());
        reply.extend_from_slice(&30u32.to_be_bytes());
        reply.extend_from_slice(&4u16.to_be_bytes());
        reply.extend_from_slice(&ip.octets());
    }
    Some(reply)
}
