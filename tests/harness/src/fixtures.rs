//! Boot fixtures and test data: the Debian kernel and busybox initramfs images the
//! VM tests boot (built once per test process by `tests/fixtures/build-boot-fixtures.sh`),
//! deterministic file contents, and where rackboot's checkout is.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The root of rackboot's checkout: this crate lives at `tests/harness` in it.
pub(crate) fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/harness has two parents")
}

/// The kernel and initramfs images, built once per test process.
pub fn boot_fixtures() -> PathBuf {
    static FIXTURES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FIXTURES
        .get_or_init(|| {
            let out = repo_root().join("target/boot-fixtures");
            let script = repo_root().join("tests/fixtures/build-boot-fixtures.sh");
            let status = Command::new("bash")
                .arg(&script)
                .arg(&out)
                .status()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if status.success() {
                Ok(out)
            } else {
                Err(format!("{} failed: {status}", script.display()))
            }
        })
        .clone()
        .unwrap_or_else(|e| panic!("boot fixtures: {e}"))
}

/// Deterministic pseudo-random bytes (no CR/LF bias), for files whose every byte
/// must arrive.
pub fn test_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}
