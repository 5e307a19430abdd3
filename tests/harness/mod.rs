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

/// Starts `rackboot serve` (`cmd`, logging at debug into `log`) and waits until it
/// says it is ready.
pub fn spawn_ready(mut cmd: Command, log: &Path) -> Proc {
    cmd.env("RUST_LOG", "info,rackboot=debug");
    let mut proc = Proc::spawn(cmd, log);
    let ready = wait_until(Duration::from_secs(20), || {
        proc.log_text().contains("rackboot ready") || proc.exited()
    });
    assert!(
        ready && !proc.exited(),
        "rackboot serve did not become ready:\n{}",
        proc.log_text()
    );
    proc
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
        self.server = Some(spawn_ready(cmd, &self.dir.path().join("serve.log")));
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

// ---- Boot files over TFTP and HTTP (issue 5) ----

pub const FILES_SERVER_IP: &str = "198.18.0.1";
pub const FILES_CLIENT_IP: &str = "198.18.0.2";

/// rackboot serving TFTP and HTTP (no DHCP) in one namespace, clients in another,
/// joined by a veth pair created inside the namespaces (never on the host).
/// Served trees under `dir`: `ipxe/` (ipxe_dir), `root/` (tftp.root), `out/` for
/// what clients download.
pub struct FileNet {
    pub server_ns: Netns,
    pub client_ns: Netns,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub server: Option<Proc>,
}

impl FileNet {
    pub fn new(tag: &str) -> Self {
        let server_ns = Netns::new(&format!("{tag}-s"));
        let client_ns = Netns::new(&format!("{tag}-c"));
        server_ns.ip(&[
            "link",
            "add",
            "v0",
            "type",
            "veth",
            "peer",
            "name",
            "v1",
            "netns",
            &client_ns.name,
        ]);
        server_ns.ip(&["addr", "add", &format!("{FILES_SERVER_IP}/24"), "dev", "v0"]);
        client_ns.ip(&["addr", "add", &format!("{FILES_CLIENT_IP}/24"), "dev", "v1"]);
        server_ns.ip(&["link", "set", "v0", "up"]);
        client_ns.ip(&["link", "set", "v1", "up"]);
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["ipxe", "root", "out", "data"] {
            fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        let config = dir.path().join("rackboot.toml");
        fs::write(
            &config,
            format!(
                r#"data_dir = "{data}"
[http]
listen = "{FILES_SERVER_IP}:8080"
[tftp]
listen = "0.0.0.0:69"
ipxe_dir = "{ipxe}"
root = "{root}"
"#,
                data = dir.path().join("data").display(),
                ipxe = dir.path().join("ipxe").display(),
                root = dir.path().join("root").display(),
            ),
        )
        .expect("write config");
        FileNet {
            server_ns,
            client_ns,
            dir,
            config,
            server: None,
        }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Writes `bytes` at `sub` (under the temp dir), creating directories.
    pub fn put(&self, sub: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(sub);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&path, bytes).expect("write");
        path
    }

    pub fn cli(&self, args: &[&str]) -> String {
        run(Command::new(RACKBOOT)
            .arg("--config")
            .arg(&self.config)
            .args(args))
    }

    pub fn start(&mut self) {
        let mut cmd = self.server_ns.command(RACKBOOT);
        cmd.arg("--config").arg(&self.config).arg("serve");
        self.start_command(cmd);
    }

    /// Starts rackboot with the soft open-file limit at `soft` (as many systems
    /// ship: 1024), to show it raises the limit itself.
    pub fn start_with_soft_nofile(&mut self, soft: u32) {
        let mut cmd = self.server_ns.command("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -Sn {soft} && exec \"$0\" \"$@\""))
            .arg(RACKBOOT)
            .arg("--config")
            .arg(&self.config)
            .arg("serve");
        self.start_command(cmd);
    }

    fn start_command(&mut self, cmd: Command) {
        self.server = Some(spawn_ready(cmd, &self.path("serve.log")));
    }

    pub fn server_log(&self) -> String {
        self.server.as_ref().map(Proc::log_text).unwrap_or_default()
    }

    /// Fails the test if the server died or panicked.
    pub fn assert_server_healthy(&mut self) {
        let log = self.server_log();
        let server = self.server.as_mut().expect("server started");
        assert!(!server.exited(), "rackboot exited:\n{}", tail(&log, 40));
        assert!(!log.contains("panicked"), "rackboot panicked:\n{log}");
    }

    /// The server's pid (`ip netns exec` execs it in place).
    pub fn server_pid(&self) -> u32 {
        self.server.as_ref().expect("server started").child.id()
    }

    /// A command run inside the client namespace.
    pub fn client(&self, program: &str) -> Command {
        self.client_ns.command(program)
    }

    /// Drops `percent` of UDP packets arriving in each namespace, both ways. netem
    /// is used where the kernel has it; this machine kind's kernel does not
    /// (CONFIG_NET_SCH_NETEM unset), so nftables drops at random instead.
    pub fn udp_loss(&self, percent: u32) {
        for (ns, dev) in [(&self.server_ns, "v0"), (&self.client_ns, "v1")] {
            let netem = ns
                .command("tc")
                .args(["qdisc", "add", "dev", dev, "root", "netem", "loss"])
                .arg(format!("{percent}%"))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if netem {
                continue;
            }
            // Dropped on input: a drop on output would fail the sender's sendto
            // with EPERM, which is not what loss looks like.
            let rules = format!(
                "table inet rbtloss {{\n chain in {{\n  type filter hook input priority 0; \
                 policy accept;\n  meta l4proto udp numgen random mod 100 < {percent} drop\n }}\n}}\n"
            );
            let mut cmd = ns.command("nft");
            cmd.args(["-f", "-"]).stdin(Stdio::piped());
            let mut child = cmd.spawn().expect("run nft");
            {
                use std::io::Write;
                let stdin = child.stdin.as_mut().expect("nft stdin");
                stdin.write_all(rules.as_bytes()).expect("write nft rules");
            }
            let status = child.wait().expect("nft");
            assert!(status.success(), "nft loss rules failed in {}", ns.name);
        }
    }
}

/// A UDP socket created inside `ns`: a short-lived thread enters the namespace
/// (setns affects only the calling thread) and binds; the socket stays in that
/// namespace wherever it is used from.
pub fn udp_socket_in(ns: &Netns, bind: &str) -> std::net::UdpSocket {
    let path = format!("/var/run/netns/{}", ns.name);
    let bind = bind.to_string();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on a valid namespace fd; it changes only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        std::net::UdpSocket::bind(&bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"))
    })
    .join()
    .expect("socket thread")
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

/// Peak resident memory of a process in KiB (VmHWM).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    proc_status_field(pid, "VmHWM:")
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

// ---- DHCP tests (issue 4) ----

/// Runs `f` on a thread that has entered `ns`'s network namespace, so the sockets it
/// opens live there (the test process itself stays where it is).
pub fn in_netns<R: Send + 'static>(ns: &Netns, f: impl FnOnce() -> R + Send + 'static) -> R {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on this thread only, with a namespace fd we hold open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|_| panic!("thread in {} panicked", ns.name))
}

/// A server namespace and a client namespace joined by a veth pair: `rbs`
/// (192.0.2.1/24) on the server side, `rbc` (192.0.2.2/24) on the client side, and a
/// rackboot config whose `[dhcp]` section (after `interface = "rbs"`) the test gives.
pub struct DhcpNet {
    pub server_ns: Netns,
    pub client_ns: Netns,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub server: Option<Proc>,
    starts: u32,
}

impl DhcpNet {
    pub fn new(tag: &str, dhcp_section: &str) -> Self {
        let server_ns = Netns::new(&format!("{tag}-s"));
        let client_ns = Netns::new(&format!("{tag}-c"));
        run(Command::new("ip").args([
            "link",
            "add",
            "rbs",
            "netns",
            &server_ns.name,
            "type",
            "veth",
            "peer",
            "name",
            "rbc",
            "netns",
            &client_ns.name,
        ]));
        server_ns.ip(&["addr", "add", "192.0.2.1/24", "dev", "rbs"]);
        server_ns.ip(&["link", "set", "rbs", "up"]);
        client_ns.ip(&["addr", "add", "192.0.2.2/24", "dev", "rbc"]);
        client_ns.ip(&["link", "set", "rbc", "up"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("rackboot.toml");
        fs::write(
            &config,
            format!(
                "data_dir = \"{data}\"\n[dhcp]\ninterface = \"rbs\"\n{dhcp_section}\n\
                 [http]\nlisten = \"192.0.2.1:8080\"\n[tftp]\nlisten = \"192.0.2.1:69\"\n\
                 ipxe_dir = \"/usr/lib/ipxe\"\n",
                data = dir.path().join("data").display()
            ),
        )
        .expect("write config");
        DhcpNet {
            server_ns,
            client_ns,
            dir,
            config,
            server: None,
            starts: 0,
        }
    }

    pub fn start(&mut self) {
        self.starts += 1;
        let mut cmd = self.server_ns.command(RACKBOOT);
        cmd.arg("--config").arg(&self.config).arg("serve");
        let log = self.dir.path().join(format!("serve-{}.log", self.starts));
        self.server = Some(spawn_ready(cmd, &log));
    }

    /// SIGKILL: no shutdown path runs, as in a power cut of the process.
    pub fn kill9(&mut self) {
        if let Some(mut proc) = self.server.take() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }

    pub fn server_log(&self) -> String {
        self.server.as_ref().map(Proc::log_text).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> String {
        run(Command::new(RACKBOOT)
            .arg("--config")
            .arg(&self.config)
            .args(args))
    }

    /// `rackboot lease list` as (ip, mac, state) rows.
    pub fn leases(&self) -> Vec<(String, String, String)> {
        self.cli(&["lease", "list"])
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut f = line.split_whitespace();
                Some((
                    f.next()?.to_string(),
                    f.next()?.to_string(),
                    f.next()?.to_string(),
                ))
            })
            .collect()
    }
}

/// A tcpdump capture into a pcap file, stopped (and flushed) on `stop` or drop.
pub struct Capture {
    proc: Option<Proc>,
    pub file: PathBuf,
}

impl Capture {
    pub fn start(ns: &Netns, interface: &str, filter: &str, file: &Path) -> Self {
        let mut cmd = ns.command("tcpdump");
        cmd.args(["-i", interface, "-n", "-U", "-s", "0", "-w"])
            .arg(file)
            .args(filter.split_whitespace());
        let log = file.with_extension("log");
        let mut proc = Proc::spawn(cmd, &log);
        let listening = wait_until(Duration::from_secs(10), || {
            proc.log_text().contains("listening on") || proc.exited()
        });
        assert!(listening && !proc.exited(), "tcpdump: {}", proc.log_text());
        Capture {
            proc: Some(proc),
            file: file.to_path_buf(),
        }
    }

    /// Stops tcpdump with SIGINT so it writes out what it has, and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            let pid = proc.child.id().to_string();
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let _ = wait_until(Duration::from_secs(10), || proc.exited());
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One UDP datagram from a pcap file.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub src: std::net::SocketAddrV4,
    pub dst: std::net::SocketAddrV4,
    pub payload: Vec<u8>,
}

/// The IPv4 UDP datagrams of a pcap file (Ethernet or Linux cooked captures).
pub fn read_pcap_udp(path: &Path) -> Vec<Datagram> {
    let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(data.len() >= 24, "pcap too short");
    let little = data[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || data[..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let u32_at = |at: usize| {
        let b = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let link_header = match u32_at(20) {
        1 => 14,   // Ethernet (no VLAN on our veths)
        113 => 16, // Linux cooked
        other => panic!("unsupported pcap link type {other}"),
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32_at(at + 8) as usize;
        let Some(frame) = data.get(at + 16..at + 16 + caplen) else {
            break;
        };
        at += 16 + caplen;
        let Some(ip) = frame.get(link_header..) else {
            continue;
        };
        if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        if udp.len() < 8 {
            continue;
        }
        let addr = |o: usize| std::net::Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
        let port = |o: usize| u16::from_be_bytes([udp[o], udp[o + 1]]);
        out.push(Datagram {
            src: std::net::SocketAddrV4::new(addr(12), port(0)),
            dst: std::net::SocketAddrV4::new(addr(16), port(2)),
            payload: udp[8..].to_vec(),
        });
    }
    out
}

/// The fields of a DHCP message that tests look at, read by hand (not by rackboot's
/// own decoder, which is what is under test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpSeen {
    pub op: u8,
    pub msg_type: Option<u8>,
    pub xid: u32,
    pub yiaddr: std::net::Ipv4Addr,
    pub siaddr: std::net::Ipv4Addr,
    pub chaddr: [u8; 6],
    pub file: String,
    /// Options in wire order.
    pub options: Vec<(u8, Vec<u8>)>,
}

pub fn read_dhcp(payload: &[u8]) -> Option<DhcpSeen> {
    if payload.len() < 240 || payload[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let mut options = Vec::new();
    let mut at = 240;
    while let Some(&code) = payload.get(at) {
        match code {
            0 => at += 1,
            255 => break,
            _ => {
                let len = *payload.get(at + 1)? as usize;
                options.push((code, payload.get(at + 2..at + 2 + len)?.to_vec()));
                at += 2 + len;
            }
        }
    }
    let ip = |o: usize| {
        std::net::Ipv4Addr::new(payload[o], payload[o + 1], payload[o + 2], payload[o + 3])
    };
    let file = payload[108..236]
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    Some(DhcpSeen {
        op: payload[0],
        msg_type: options
            .iter()
            .find(|(c, _)| *c == 53)
            .and_then(|(_, v)| v.first().copied()),
        xid: u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
        yiaddr: ip(16),
        siaddr: ip(20),
        chaddr: payload[28..34].try_into().ok()?,
        file,
        options,
    })
}

/// A DHCP client message built byte by byte, for tests that must send what no real
/// client would.
pub struct RawDhcp {
    pub bytes: Vec<u8>,
}

impl RawDhcp {
    /// A message of `msg_type` from `mac` with the broadcast flag set (replies come
    /// back broadcast, so a client without an address hears them).
    pub fn new(msg_type: u8, mac: [u8; 6], xid: u32) -> Self {
        let mut bytes = vec![0u8; 236];
        bytes[0] = 1;
        bytes[1] = 1;
        bytes[2] = 6;
        bytes[4..8].copy_from_slice(&xid.to_be_bytes());
        bytes[10] = 0x80;
        bytes[28..34].copy_from_slice(&mac);
        bytes.extend_from_slice(&[99, 130, 83, 99, 53, 1, msg_type]);
        RawDhcp { bytes }
    }

    pub fn option(mut self, code: u8, value: &[u8]) -> Self {
        self.bytes.push(code);
        self.bytes.push(value.len() as u8);
        self.bytes.extend_from_slice(value);
        self
    }

    pub fn giaddr(mut self, ip: std::net::Ipv4Addr) -> Self {
        self.bytes[24..28].copy_from_slice(&ip.octets());
        self
    }

    pub fn end(mut self) -> Vec<u8> {
        self.bytes.push(255);
        self.bytes
    }
}

/// Sends `packet` from `interface` in the client namespace and returns the first
/// DHCP reply for `xid` (none if nothing comes within `wait`). As a client (port 68, broadcast) when
/// `relay` is None; as a relay agent at that address (port 67, unicast to `server`)
/// otherwise.
pub fn dhcp_exchange(
    ns: &Netns,
    interface: &str,
    relay: Option<std::net::Ipv4Addr>,
    server: std::net::Ipv4Addr,
    packet: Vec<u8>,
    xid: u32,
    wait: Duration,
) -> Vec<DhcpSeen> {
    use std::net::{Ipv4Addr, SocketAddrV4};
    let (bind, to) = match relay {
        None => (
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        ),
        Some(relay) => (SocketAddrV4::new(relay, 67), SocketAddrV4::new(server, 67)),
    };
    dhcp_send_from(ns, interface, bind, to, packet, xid, wait)
}

/// Sends `packet` from `bind` to `to` on `interface` in `ns` and returns the first
/// DHCP reply for `xid` that comes back to `bind` within `wait`.
pub fn dhcp_send_from(
    ns: &Netns,
    interface: &str,
    bind: std::net::SocketAddrV4,
    to: std::net::SocketAddrV4,
    packet: Vec<u8>,
    xid: u32,
    wait: Duration,
) -> Vec<DhcpSeen> {
    let interface = interface.to_string();
    in_netns(ns, move || {
        use std::net::UdpSocket;
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .expect("socket");
        socket.set_reuse_address(true).expect("reuse");
        socket.set_broadcast(true).expect("broadcast");
        socket
            .bind_device(Some(interface.as_bytes()))
            .expect("bind device");
        socket.bind(&bind.into()).expect("bind");
        let socket: UdpSocket = socket.into();
        socket.send_to(&packet, to).expect("send");
        let end = Instant::now() + wait;
        let mut replies = Vec::new();
        let mut buf = [0u8; 2048];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left)).expect("timeout");
            match socket.recv_from(&mut buf) {
                Ok((len, _)) => {
                    if let Some(seen) = read_dhcp(&buf[..len])
                        && seen.op == 2
                        && seen.xid == xid
                    {
                        replies.push(seen);
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        replies
    })
}

impl BootNet {
    /// Replaces the `[dhcp]` section of this instance's config (before `start`), e.g.
    /// for proxy mode; HTTP and TFTP stay as `new` wrote them.
    pub fn set_dhcp_section(&self, dhcp_section: &str) {
        let text = read_lossy(&self.config);
        let start = text.find("[dhcp]").expect("a [dhcp] section");
        let end = text.find("[http]").expect("an [http] section");
        let rewritten = format!("{}{dhcp_section}\n{}", &text[..start], &text[end..]);
        fs::write(&self.config, rewritten).expect("rewrite config");
    }

    /// A second namespace joined to this instance's bridge by a veth pair: its end is
    /// `veth-r` (down, without an address); the bridge end is `veth-br`.
    pub fn attach_namespace(&self, tag: &str) -> Netns {
        let other = Netns::new(tag);
        run(Command::new("ip").args([
            "link",
            "add",
            "veth-br",
            "netns",
            &self.ns.name,
            "type",
            "veth",
            "peer",
            "name",
            "veth-r",
            "netns",
            &other.name,
        ]));
        self.ns.ip(&["link", "set", "veth-br", "master", "br0"]);
        self.ns.ip(&["link", "set", "veth-br", "up"]);
        other
    }
}
