//! Processes: running a command to completion, spawning one that is killed when the
//! test ends (even when it fails) with its output in a log file, waiting for a
//! condition with a deadline instead of sleeping, and reading what a process left
//! (its log, its peak memory, its thread count).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` to completion, fails the test unless it succeeds, and returns its
/// standard output.
pub fn run(cmd: &mut Command) -> String {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr into `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Self {
        let file = fs::File::create(log).expect("create log");
        let err = file.try_clone().expect("clone log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log_text(&self) -> String {
        read_lossy(&self.log)
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of a file, empty if it cannot be read, invalid UTF-8 replaced.
pub fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The last `n` lines of `text`, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Polls `check` every 200 ms until it returns true or `deadline` passes.
pub fn wait_until(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    check()
}

/// Peak resident memory of a process in KiB (VmHWM).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    proc_status_field(pid, "VmHWM:")
}

/// The resident memory of a process now (VmRSS), KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    proc_status_field(pid, "VmRSS:")
}

/// Threads of a process.
pub fn thread_count(pid: u32) -> Option<u64> {
    proc_status_field(pid, "Threads:")
}

fn proc_status_field(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
