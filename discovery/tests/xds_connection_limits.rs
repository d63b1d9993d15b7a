//! What a careless or hostile client can make the xDS listeners do: connections
//! over the per-address limit are closed at once, and a process out of file
//! descriptors backs off instead of spinning on accept. Runs the real
//! `pilotfish serve` in its own network namespace (needs root).

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use support::netns::Netns;
use support::pilotfish::{HTTP_ADDRESS, Pilotfish, XDS_ADDRESS};
use support::testdir::TestDir;
use support::{STARTUP, repo_path, wait_until};

fn start(name: &str, extra: &[&str]) -> (Pilotfish, std::sync::Arc<Netns>, TestDir) {
    let dir = TestDir::new(name);
    let ns = std::sync::Arc::new(Netns::new());
    let mut args: Vec<String> = vec![
        "--config-dir".into(),
        repo_path("testdata/bookinfo/config").display().to_string(),
        "--registry-file".into(),
        repo_path("testdata/bookinfo/registry.yaml")
            .display()
            .to_string(),
        "--xds-address".into(),
        XDS_ADDRESS.into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let pilotfish = Pilotfish::serve(
        ns.clone(),
        &args,
        HTTP_ADDRESS,
        &dir.path().join("pilotfish.log"),
    );
    (pilotfish, ns, dir)
}

/// Whether the server closed `stream` (EOF or reset) within `wait`.
fn closed_by_server(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // HTTP/2 server preface (SETTINGS) from an accepted connection.
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn connections_over_the_per_address_limit_are_closed_and_slots_come_back() {
    let (pilotfish, ns, _dir) = start("peer-limit", &["--max-connections-per-peer", "3"]);
    ns.run(|| {
        let mut held: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect(XDS_ADDRESS).expect("connect"))
            .collect();
        for stream in &mut held {
            assert!(
                !closed_by_server(stream, Duration::from_millis(300)),
                "within the limit"
            );
        }
        let mut extra = TcpStream::connect(XDS_ADDRESS).expect("the kernel accepts");
        assert!(
            closed_by_server(&mut extra, Duration::from_secs(5)),
            "the fourth is closed"
        );
        drop(held.pop());
        // The closed connection's slot is released once the server sees it go.
        wait_until("a slot to come back", STARTUP, || {
            let mut again = TcpStream::connect(XDS_ADDRESS).map_err(|e| e.to_string())?;
            if closed_by_server(&mut again, Duration::from_millis(300)) {
                Err("still refused".to_string())
            } else {
                Ok(())
            }
        });
    });
    let metrics = pilotfish.metrics();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("pilotfish_xds_refused_connections_total ") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
}

/// The soft limit on open files of `pid`, from /proc.
fn soft_open_files_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    line.split_whitespace()
        .nth(3)
        .expect("soft limit")
        .to_string()
}

/// CPU ticks (user + system) the process has used, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').expect("comm").1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn accept_backs_off_instead_of_spinning_when_file_descriptors_run_out() {
    let (pilotfish, ns, _dir) = start("emfile", &[]);
    let pid = pilotfish.pid();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count();
    let original = soft_open_files_limit(pid);
    // Only the soft limit: raising it again needs no privilege.
    let limit = format!("--nofile={}:", open + 4);
    support::run_checked(std::process::Command::new("prlimit").args([
        "--pid",
        &pid.to_string(),
        &limit,
    ]));
    ns.run(|| {
        // More connections than descriptors are left: the listener stays
        // readable while accept fails with EMFILE.
        let held: Vec<TcpStream> = (0..32)
            .filter_map(|_| TcpStream::connect(XDS_ADDRESS).ok())
            .collect();
        wait_until("accept to back off", STARTUP, || {
            let log = pilotfish.log();
            log.contains("backing off")
                .then_some(())
                .ok_or("no back-off logged yet".to_string())
        });
        // Not a wait for a condition: the window the CPU use is measured over.
        let before = cpu_ticks(pid);
        std::thread::sleep(Duration::from_secs(2));
        let used = cpu_ticks(pid) - before;
        // 2 s are 200 ticks of one core at the usual 100 Hz; a spinning
        // accept loop uses nearly all of them.
        assert!(
            used < 40,
            "pilotfish used {used} ticks in 2 s while out of descriptors"
        );
        drop(held);
    });
    // Descriptors back: it serves again.
    let restore = format!("--nofile={original}:");
    support::run_checked(std::process::Command::new("prlimit").args([
        "--pid",
        &pid.to_string(),
        &restore,
    ]));
    ns.run(|| {
        wait_until("an accepted connection", STARTUP, || {
            let mut stream = TcpStream::connect(XDS_ADDRESS).map_err(|e| e.to_string())?;
            if closed_by_server(&mut stream, Duration::from_millis(300)) {
                Err("closed".into())
            } else {
                Ok(())
            }
        });
    });
    assert!(
        pilotfish
            .metrics()
            .contains("pilotfish_xds_accept_backoffs_total")
    );
}
