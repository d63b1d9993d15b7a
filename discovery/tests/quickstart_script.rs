//! The README's first command, scripts/quickstart.sh, run as a user runs it:
//! it must bring up pilotfish, a real Envoy and the backends, show the
//! testdata routing (jason to reviews v2, everyone else to v1), apply its
//! routing change (50% v1, 50% v3) and show the traffic move, then exit 0
//! having removed everything it started.
//!
//! The script builds the release binary when run by hand; here it is given
//! the binary this test run built (PILOTFISH_BIN), because a nested
//! `cargo build --release` would wait on this cargo's lock and compile the
//! workspace a second time. As root (CI) it runs in a network namespace of
//! its own, named after its pid, so it cannot clash with other tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Start-up, four tallies of 30 requests and the routing change take about
/// 15 s on a loaded two-core machine; this bounds a hung run.
const TIMEOUT: Duration = Duration::from_secs(180);
const REQUESTS: usize = 30;

#[test]
fn quickstart_script_shows_jason_on_v2_then_moves_reviews_to_a_v1_v3_split() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(repo.join("scripts/quickstart.sh"));
    cmd.args(["--requests", &REQUESTS.to_string()])
        .env("PILOTFISH_BIN", env!("CARGO_BIN_EXE_pilotfish"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The suite's second round runs every end-to-end test on state-of-the-world ADS.
    if let Ok(protocol) = std::env::var("PILOTFISH_TEST_XDS_PROTOCOL")
        && !protocol.is_empty()
    {
        cmd.args(["--xds-protocol", &protocol]);
    }
    let mut child = cmd.spawn().expect("run scripts/quickstart.sh");

    // Both streams, line by line, into one channel: the output reads as the
    // user sees it, and a hung script can be stopped after TIMEOUT.
    let (tx, rx) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ]
    .into_iter()
    .map(|stream| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })
    })
    .collect();
    drop(tx);

    let mut deadline = Instant::now() + TIMEOUT;
    let mut output = Vec::new();
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => output.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) if !timed_out => {
                // SIGTERM first: the script's trap stops what it started.
                timed_out = true;
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                deadline = Instant::now() + Duration::from_secs(20);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().expect("wait for scripts/quickstart.sh");
    if !timed_out {
        for reader in readers {
            let _ = reader.join();
        }
    }
    let text = output.join("\n");
    println!("{text}");
    assert!(
        !timed_out,
        "scripts/quickstart.sh still ran after {TIMEOUT:?}:\n{text}"
    );
    assert!(
        status.success(),
        "scripts/quickstart.sh failed ({status}):\n{text}"
    );

    // Each step said what it started.
    for step in ["started backends", "started pilotfish", "started Envoy"] {
        assert!(
            text.contains(&format!("==> {step}")),
            "no progress line for {step}:\n{text}"
        );
    }

    // Tallies: before the change, then after it.
    let tallies = |who: &str| -> Vec<String> {
        output
            .iter()
            .filter_map(|line| line.trim_start().strip_prefix(who))
            .map(|rest| rest.trim().to_string())
            .collect()
    };
    let normal = tallies("normal user");
    let jason = tallies("end-user: jason");
    assert_eq!(normal.len(), 2, "two tallies for a normal user:\n{text}");
    assert_eq!(jason.len(), 2, "two tallies for jason:\n{text}");
    assert_eq!(normal[0], format!("reviews v1: {REQUESTS}"), "{text}");
    assert_eq!(jason[0], format!("reviews v2: {REQUESTS}"), "{text}");
    for after in [&normal[1], &jason[1]] {
        let counts = split_counts(after);
        assert_eq!(
            counts.iter().map(|(_, n)| n).sum::<usize>(),
            REQUESTS,
            "every request answered after the change: {after}\n{text}"
        );
        let mut versions: Vec<&str> = counts.iter().map(|(v, _)| v.as_str()).collect();
        versions.sort();
        assert_eq!(
            versions,
            ["reviews v1", "reviews v3"],
            "a v1/v3 split after the change:\n{text}"
        );
    }
    assert!(text.contains("==> traffic moved"), "{text}");

    // Nothing left behind: the namespace (named in the output) is gone.
    if let Some(ns) = text
        .split_whitespace()
        .find(|word| word.starts_with("pf-quickstart-"))
    {
        let list = Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list");
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            !list.split_whitespace().any(|name| name == ns),
            "network namespace {ns} still exists:\n{list}"
        );
    }
    assert!(text.contains("==> stopped everything"), "{text}");
}

/// "reviews v3: 17, reviews v1: 13" → [("reviews v3", 17), ("reviews v1", 13)].
fn split_counts(tally: &str) -> Vec<(String, usize)> {
    tally
        .split(", ")
        .map(|part| {
            let (version, count) = part
                .rsplit_once(": ")
                .unwrap_or_else(|| panic!("not a tally: {tally}"));
            let count = count
                .parse()
                .unwrap_or_else(|_| panic!("not a tally: {tally}"));
            (version.to_string(), count)
        })
        .collect()
}
