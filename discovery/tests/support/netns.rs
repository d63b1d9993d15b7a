//! A network namespace per test "pod", so that every test has its own
//! loopback, its own iptables rules and its own ports 15000/15001/15010.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{repo_path, run_checked};

const PREFIX: &str = "pf-e2e-";

pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a fresh namespace with `lo` up.
    pub fn new() -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        remove_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run_checked(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        run_checked(&mut ns.command("ip", &["link", "set", "lo", "up"]));
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program args...` to be run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Installs the sidecar's iptables capture (deploy/scripts/pilotfish-iptables.sh)
    /// with its defaults: all outbound TCP except uid 1337 and 127.0.0.1 goes
    /// to 15001; with `dns`, also DNS (UDP 53) to 15053.
    pub fn capture_outbound(&self, dns: bool) {
        let script = repo_path("deploy/scripts/pilotfish-iptables.sh");
        let args: &[&str] = if dns { &["--capture-dns"] } else { &[] };
        run_checked(&mut self.command(script.to_str().expect("utf-8 path"), args));
    }

    /// Programs started in the namespace (`ip netns exec`, which mounts
    /// /etc/netns/<name>/resolv.conf over /etc/resolv.conf) resolve names
    /// through `nameserver`.
    pub fn use_resolver(&self, nameserver: std::net::Ipv4Addr) {
        let dir = std::path::Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<name>");
        std::fs::write(
            dir.join("resolv.conf"),
            format!("nameserver {nameserver}\noptions timeout:1 attempts:2\n"),
        )
        .expect("write the namespace's resolv.conf");
    }

    /// Runs `f` on a thread that has joined the namespace: every socket it
    /// opens lives there. Panics in `f` propagate to the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                self.enter_current_thread();
                f()
            });
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Moves the calling thread (only it: namespaces are per thread) into the
    /// namespace. Threads it spawns afterwards are born there too.
    pub fn enter_current_thread(&self) {
        enter(&self.name);
    }
}

/// Moves the calling thread into the namespace called `name`.
pub fn enter(name: &str) {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: a valid fd for the call's duration; setns changes only this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&self.name));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Deletes namespaces left behind by test processes that died (SIGKILL,
/// abort) before their `Drop` ran; their names carry the owner's pid.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
