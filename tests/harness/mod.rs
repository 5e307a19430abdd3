//! Test harness for whole-system tests: private network namespaces, processes that
//! are killed when the test ends (even when it fails), readiness by log line with a
//! deadline, and the boot fixtures (Debian kernel, busybox initramfs).

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

/// Whether a test that cannot run must fail (CI) rather than skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Returns why this machine cannot run namespace tests, if it cannot.
pub fn missing_prerequisites(tools: &[&str]) -> Option<String> {
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

/// A network namespace, deleted (with every process in it) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("rbt-{}-{tag}", std::process::id());
        // A namespace left by a killed earlier run of this same pid is removed first.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn ip(&self, args: &[&str]) {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
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

/// The kernel and initramfs images, built once per test process.
pub fn boot_fixtures() -> PathBuf {
    static FIXTURES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FIXTURES
        .get_or_init(|| {
            let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/boot-fixtures");
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build-boot-fixtures.sh");
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

/// A rackboot instance serving DHCP, TFTP and HTTP on a bridge inside its own
/// namespace, with tap devices for VMs.
pub struct BootNet {
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub server: Option<Proc>,
}

pub const SERVER_IP: &str = "192.0.2.1";

impl BootNet {
    pub fn new(tag: &str, taps: &[&str]) -> Self {
        let ns = Netns::new(tag);
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "br0"]);
        ns.ip(&["link", "set", "br0", "up"]);
        for tap in taps {
            ns.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
            ns.ip(&["link", "set", tap, "master", "br0"]);
            ns.ip(&["link", "set", tap, "up"]);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("rackboot.toml");
        fs::write(
            &config,
            format!(
                r#"data_dir = "{data}"
[dhcp]
interface = "br0"
[[dhcp.subnets]]
cidr = "192.0.2.0/24"
pool = "192.0.2.100-192.0.2.200"
router = "192.0.2.1"
dns = ["192.0.2.1"]
lease_secs = 3600
[http]
listen = "0.0.0.0:8080"
url = "http://192.0.2.1:8080"
[tftp]
listen = "0.0.0.0:69"
ipxe_dir = "/usr/lib/ipxe"
"#,
                data = dir.path().join("data").display()
            ),
        )
        .expect("write config");
        BootNet {
            ns,
            dir,
            config,
            server: None,
        }
    }

    /// Runs a rackboot CLI command against this instance's config (outside the
    /// namespace: the CLI only touches the database).
    pub fn cli(&self, args: &[&str]) -> String {
        run(Command::new(RACKBOOT)
            .arg("--config")
            .arg(&self.config)
            .args(args))
    }

    pub fn start(&mut self) {
        let mut cmd = self.ns.command(RACKBOOT);
        cmd.arg("--config").arg(&self.config).arg("serve");
        cmd.env("RUST_LOG", "info,rackboot=debug");
        let mut proc = Proc::spawn(cmd, &self.dir.path().join("serve.log"));
        let ready = wait_until(Duration::from_secs(20), || {
            proc.log_text().contains("rackboot ready") || proc.exited()
        });
        assert!(
            ready && !proc.exited(),
            "rackboot serve did not become ready:\n{}",
            proc.log_text()
        );
        self.server = Some(proc);
    }

    pub fn server_log(&self) -> String {
        self.server.as_ref().map(Proc::log_text).unwrap_or_default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with QEMU's iPXE option ROM on an e1000.
    Bios,
    /// OVMF's own PXE on virtio-net (no option ROM): firmware DHCP, TFTP snponly.efi,
    /// then iPXE.
    Uefi,
}

/// A QEMU VM on a tap device of a `BootNet`, with its serial console in a file.
pub struct Vm {
    pub proc: Proc,
    pub serial: PathBuf,
    _vars: Option<tempfile::NamedTempFile>,
}

impl Vm {
    pub fn start(net: &BootNet, firmware: Firmware, tap: &str, mac: &str, name: &str) -> Self {
        let serial = net.dir.path().join(format!("{name}.serial.log"));
        let mut cmd = net.ns.command("qemu-system-x86_64");
        cmd.args([
            "-accel", "tcg", "-m", "512", "-display", "none", "-monitor", "none",
        ]);
        cmd.arg("-serial").arg(format!("file:{}", serial.display()));
        cmd.args(["-no-reboot", "-boot", "n"]);
        cmd.arg("-netdev")
            .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"));
        let mut vars = None;
        match firmware {
            Firmware::Bios => {
                cmd.arg("-device").arg(format!("e1000,netdev=n0,mac={mac}"));
            }
            Firmware::Uefi => {
                let copy = tempfile::NamedTempFile::new().expect("vars file");
                fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", copy.path()).expect("copy OVMF vars");
                cmd.args(["-machine", "q35"]);
                cmd.arg("-drive")
                    .arg("if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd");
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,file={}",
                    copy.path().display()
                ));
                cmd.arg("-device")
                    .arg(format!("virtio-net-pci,netdev=n0,mac={mac},romfile="));
                vars = Some(copy);
            }
        }
        let proc = Proc::spawn(cmd, &net.dir.path().join(format!("{name}.qemu.log")));
        Vm {
            proc,
            serial,
            _vars: vars,
        }
    }

    pub fn serial_text(&self) -> String {
        read_lossy(&self.serial)
    }

    /// Waits for `marker` on the serial console.
    pub fn wait_for(&mut self, marker: &str, deadline: Duration) -> bool {
        wait_until(deadline, || self.serial_text().contains(marker))
    }
}
