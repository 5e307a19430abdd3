//! Whether this machine can run a whole-system test: root and the tools it names.
//! A test that cannot run is skipped locally and fails under CI (`CI=true`).

use std::process::{Command, Stdio};

/// Whether a test that cannot run must fail (CI) rather than skip.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Returns why this machine cannot run namespace tests, if it cannot.
fn missing_prerequisites(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root for network namespaces".into());
    }
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    (!missing.is_empty()).then(|| format!("missing tools: {}", missing.join(" ")))
}

/// Skips (locally) or fails (CI) when prerequisites are missing. Returns true to run.
pub fn should_run(test: &str, tools: &[&str]) -> bool {
    match missing_prerequisites(tools) {
        None => true,
        Some(why) if in_ci() => panic!("{test} cannot run in CI: {why}"),
        Some(why) => {
            eprintln!("SKIPPED {test}: {why} (run scripts/test as root; CI=true makes this fail)");
            false
        }
    }
}
