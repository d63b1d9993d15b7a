//! A child process whose output goes to a log file; killed on drop, with
//! the end of its log printed when the test is failing.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Lines of a log printed when a test fails.
const LOG_TAIL_LINES: usize = 150;

pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Spawns `cmd` with stdout and stderr appended to `log` (created
    /// world-readable: the process may run as another uid).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Process {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(log)
            .unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = file.try_clone().expect("clone log fd");
        cmd.stdin(Stdio::null()).stdout(file).stderr(err);
        // If the test process dies without running Drop (SIGKILL, abort),
        // the child must not outlive it. (A uid change clears this again;
        // Envoy sets it anew through `setpriv --pdeathsig`.)
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Process {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits up to `limit` for the process to exit;
    /// returns how long it took and its exit status, `None` if it was still
    /// running at `limit` (it is killed on drop).
    pub fn terminate(
        &mut self,
        limit: std::time::Duration,
    ) -> Option<(std::time::Duration, std::process::ExitStatus)> {
        let started = std::time::Instant::now();
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.wait_exit(limit)
            .map(|status| (started.elapsed(), status))
    }

    /// Waits up to `limit` for the process to exit by itself; its exit
    /// status, or `None` if it was still running at `limit`.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        None
    }

    /// Panics, with the log, if the process has exited: waits on a dead
    /// process would otherwise only report a timeout.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); its log:\n{}",
                self.name,
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- {} log ({}), last {LOG_TAIL_LINES} lines -----\n{}",
                self.name,
                self.log.display(),
                tail(&self.log(), LOG_TAIL_LINES)
            );
        }
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A file that the process under test will read as another uid.
pub fn write_world_readable(path: &Path, contents: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o644)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
