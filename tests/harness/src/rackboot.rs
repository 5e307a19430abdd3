//! rackboot itself: `rackboot serve` started (inside a namespace or not) and waited
//! for until it logs that it is ready, and CLI commands run against a config.
//!
//! Public: `spawn_ready`, for tests that start rackboot outside a test network (the
//! panel over TLS, the browser), and `serve_on_loopback`, for those that want it on
//! 127.0.0.1 with a config of their own (the memory and HTTP-limit tests).
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

/// `rackboot serve` over a data directory in `dir`, its HTTP listener on a loopback
/// port the kernel picks, with `extra` appended to its config (an `[http]` key goes
/// first, since the config ends inside `[http]`). Returns the server and its port.
pub fn serve_on_loopback(rackboot: &str, dir: &Path, extra: &str) -> (Proc, u16) {
    let config = dir.join("rackboot.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n{extra}\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(rackboot);
    cmd.arg("--config").arg(&config).arg("serve");
    let server = spawn_ready(cmd, &dir.join("serve.log"));
    let log = server.log_text();
    let port = log
        .split_once("http=127.0.0.1:")
        .map(|(_, rest)| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no port in:\n{log}"));
    (server, port)
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
