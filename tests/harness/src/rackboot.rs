//! rackboot itself: `rackboot serve` started (inside a namespace or not) and waited
//! for until it logs that it is ready, and CLI commands run against a config.
//!
//! Only `spawn_ready` is public: tests that start rackboot outside a test network
//! (the panel over TLS, the memory test, the browser) use it directly.
//!
//! The binary's path is the test's to give: `env!("CARGO_BIN_EXE_rackboot")` is set
//! only while Cargo compiles rackboot's own test files, not this crate. Each test
//! file holds it in a `const RACKBOOT` and hands it to the test networks
//! (`BootNet::new(RACKBOOT, ...)`), which keep it.

use crate::netns::Netns;
use crate::process::{Proc, run, wait_until};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long `rackboot serve` may take to say it is ready.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// Starts `rackboot serve` (`cmd`, logging at debug into `log`) and waits until it
/// says it is ready.
pub fn spawn_ready(mut cmd: Command, log: &Path) -> Proc {
    cmd.env("RUST_LOG", "info,rackboot=debug");
    let mut proc = Proc::spawn(cmd, log);
    let ready = wait_until(READY_DEADLINE, || {
        proc.log_text().contains("rackboot ready") || proc.exited()
    });
    assert!(
        ready && !proc.exited(),
        "rackboot serve did not become ready:\n{}",
        proc.log_text()
    );
    proc
}

/// `rackboot --config CONFIG serve` as a command run inside `ns`.
pub(crate) fn serve_command(ns: &Netns, rackboot: &Path, config: &Path) -> Command {
    let mut cmd = ns.command(rackboot);
    cmd.arg("--config").arg(config).arg("serve");
    cmd
}

/// Runs a rackboot CLI command against `config` (outside any namespace: the CLI only
/// touches the database) and returns its output; fails the test if it fails.
pub(crate) fn cli(rackboot: &Path, config: &Path, args: &[&str]) -> String {
    run(Command::new(rackboot)
        .arg("--config")
        .arg(config)
        .args(args))
}
