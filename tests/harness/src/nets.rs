//! The test networks rackboot serves on, each a set of namespaces wired together with
//! a rackboot config written for it: `BootNet` (a bridge with tap devices for VMs),
//! `FileNet` (TFTP and HTTP to a client namespace over a veth pair) and `DhcpNet`
//! (DHCP to a client namespace over a veth pair, with restarts and SIGKILL).
//!
//! Each takes the rackboot binary's path first (see `rackboot`, why).

use crate::netns::{Netns, veth_pair};
use crate::process::{Proc, read_lossy, tail};
use crate::rackboot::{cli, serve_command, spawn_ready};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The server's address on a `BootNet` bridge.
pub const SERVER_IP: &str = "192.0.2.1";

/// A rackboot instance serving DHCP, TFTP and HTTP on a bridge inside its own
/// namespace, with tap devices for VMs.
pub struct BootNet {
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub server: Option<Proc>,
    rackboot: PathBuf,
}

impl BootNet {
    pub fn new(rackboot: impl AsRef<Path>, tag: &str, taps: &[&str]) -> Self {
        let ns = Netns::new(tag);
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["addr", "add", &format!("{SERVER_IP}/24"), "dev", "br0"]);
        ns.ip(&["link", "set", "br0", "up"]);
        for tap in taps {
            ns.add_tap(tap, "br0");
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
router = "{SERVER_IP}"
dns = ["{SERVER_IP}"]
lease_secs = 3600
[http]
listen = "0.0.0.0:8080"
url = "http://{SERVER_IP}:8080"
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
            rackboot: rackboot.as_ref().to_path_buf(),
        }
    }

    /// Runs a rackboot CLI command against this instance's config (outside the
    /// namespace: the CLI only touches the database).
    pub fn cli(&self, args: &[&str]) -> String {
        cli(&self.rackboot, &self.config, args)
    }

    pub fn start(&mut self) {
        let cmd = serve_command(&self.ns, &self.rackboot, &self.config);
        self.server = Some(spawn_ready(cmd, &self.dir.path().join("serve.log")));
    }

    pub fn server_log(&self) -> String {
        self.server.as_ref().map(Proc::log_text).unwrap_or_default()
    }

    /// Appends TOML (a `[boot.amd64]` section...) to this instance's config, before
    /// `start`.
    pub fn append_config(&self, toml: &str) {
        let text = read_lossy(&self.config);
        fs::write(&self.config, format!("{text}\n{toml}\n")).expect("append config");
    }

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
        veth_pair(&self.ns, "veth-br", &other, "veth-r");
        self.ns.ip(&["link", "set", "veth-br", "master", "br0"]);
        self.ns.ip(&["link", "set", "veth-br", "up"]);
        other
    }
}

/// The server's address on a `FileNet` veth pair.
pub const FILES_SERVER_IP: &str = "198.18.0.1";
/// The client's address on a `FileNet` veth pair.
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
    rackboot: PathBuf,
}

impl FileNet {
    pub fn new(rackboot: impl AsRef<Path>, tag: &str) -> Self {
        let server_ns = Netns::new(&format!("{tag}-s"));
        let client_ns = Netns::new(&format!("{tag}-c"));
        veth_pair(&server_ns, "v0", &client_ns, "v1");
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
            rackboot: rackboot.as_ref().to_path_buf(),
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
        cli(&self.rackboot, &self.config, args)
    }

    pub fn start(&mut self) {
        let cmd = serve_command(&self.server_ns, &self.rackboot, &self.config);
        self.start_command(cmd);
    }

    /// Starts rackboot with the soft open-file limit at `soft` (as many systems
    /// ship: 1024), to show it raises the limit itself.
    pub fn start_with_soft_nofile(&mut self, soft: u32) {
        let mut cmd = self.server_ns.command("sh");
        cmd.arg("-c")
            .arg(format!("ulimit -Sn {soft} && exec \"$0\" \"$@\""))
            .arg(&self.rackboot)
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

    /// Drops `percent` of UDP packets arriving in each namespace, both ways.
    pub fn udp_loss(&self, percent: u32) {
        self.server_ns.udp_loss("v0", percent);
        self.client_ns.udp_loss("v1", percent);
    }
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
    rackboot: PathBuf,
    starts: u32,
}

impl DhcpNet {
    pub fn new(rackboot: impl AsRef<Path>, tag: &str, dhcp_section: &str) -> Self {
        let server_ns = Netns::new(&format!("{tag}-s"));
        let client_ns = Netns::new(&format!("{tag}-c"));
        veth_pair(&server_ns, "rbs", &client_ns, "rbc");
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
            rackboot: rackboot.as_ref().to_path_buf(),
            starts: 0,
        }
    }

    /// Starts `rackboot serve`; each start logs into its own `serve-N.log`.
    pub fn start(&mut self) {
        self.starts += 1;
        let cmd = serve_command(&self.server_ns, &self.rackboot, &self.config);
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
        cli(&self.rackboot, &self.config, args)
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
