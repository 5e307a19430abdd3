//! Network namespaces: a private namespace per test side (deleted with every process
//! in it on drop), veth pairs and tap devices created inside namespaces (never in the
//! host's own), threads and sockets that live in a namespace, and random UDP loss.

use crate::process::run;
use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

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
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// A tap device `tap` (for a VM), up and enslaved to `bridge`.
    pub fn add_tap(&self, tap: &str, bridge: &str) {
        self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
        self.ip(&["link", "set", tap, "master", bridge]);
        self.ip(&["link", "set", tap, "up"]);
    }

    /// Drops `percent` of UDP packets arriving on `dev`. netem is used where the
    /// kernel has it; this machine kind's kernel does not (CONFIG_NET_SCH_NETEM
    /// unset), so nftables drops at random instead (on every input of the namespace).
    pub fn udp_loss(&self, dev: &str, percent: u32) {
        let netem = self
            .command("tc")
            .args(["qdisc", "add", "dev", dev, "root", "netem", "loss"])
            .arg(format!("{percent}%"))
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if netem {
            return;
        }
        // Dropped on input: a drop on output would fail the sender's sendto
        // with EPERM, which is not what loss looks like.
        let rules = format!(
            "table inet rbtloss {{\n chain in {{\n  type filter hook input priority 0; \
             policy accept;\n  meta l4proto udp numgen random mod 100 < {percent} drop\n }}\n}}\n"
        );
        self.nft(&rules);
    }

    /// Loads nftables `rules` in this namespace (gone with it).
    pub fn nft(&self, rules: &str) {
        let mut cmd = self.command("nft");
        cmd.args(["-f", "-"]).stdin(Stdio::piped());
        let mut child = cmd.spawn().expect("run nft");
        {
            use std::io::Write;
            let stdin = child.stdin.as_mut().expect("nft stdin");
            stdin.write_all(rules.as_bytes()).expect("write nft rules");
        }
        let status = child.wait().expect("nft");
        assert!(
            status.success(),
            "nft rules failed in {}:\n{rules}",
            self.name
        );
    }

    /// The packets each counted rule of `lossy_tap` hit: (dropped from the VM,
    /// dropped towards it, duplicated towards it).
    pub fn lossy_tap_counts(&self) -> Vec<u64> {
        let out = self
            .command("nft")
            .args(["list", "table", "netdev", "rbchaos"])
            .output()
            .expect("nft list");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split("packets ").nth(1))
            .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// Drops `percent` of the frames a VM's `tap` sends and receives, and duplicates
    /// `percent` of those it receives (nftables netdev ingress and egress hooks: this
    /// kernel has no netem). DHCP, TFTP and HTTP all cross it.
    pub fn lossy_tap(&self, tap: &str, percent: u32) {
        self.nft(&format!(
            "table netdev rbchaos {{\n chain from_vm {{\n  type filter hook ingress device \"{tap}\" priority 0;\n  numgen random mod 100 < {percent} counter drop\n }}\n chain to_vm {{\n  type filter hook egress device \"{tap}\" priority 0;\n  numgen random mod 100 < {percent} counter drop\n  numgen random mod 100 < {percent} counter dup to \"{tap}\"\n }}\n}}\n"
        ));
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

/// A veth pair whose ends are created straight in their namespaces: `a_end` in `a`,
/// `b_end` in `b`, both down and without addresses.
pub(crate) fn veth_pair(a: &Netns, a_end: &str, b: &Netns, b_end: &str) {
    run(Command::new("ip").args([
        "link", "add", a_end, "netns", &a.name, "type", "veth", "peer", "name", b_end, "netns",
        &b.name,
    ]));
}

/// Runs `f` on a thread that has entered `ns`'s network namespace, so the sockets it
/// opens live there (the test process itself stays where it is).
pub fn in_netns<R: Send + 'static>(ns: &Netns, f: impl FnOnce() -> R + Send + 'static) -> R {
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

/// A UDP socket created inside `ns`: a short-lived thread enters the namespace
/// (setns affects only the calling thread) and binds; the socket stays in that
/// namespace wherever it is used from.
pub fn udp_socket_in(ns: &Netns, bind: &str) -> std::net::UdpSocket {
    let bind = bind.to_string();
    in_netns(ns, move || {
        std::net::UdpSocket::bind(&bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"))
    })
}
