//! `rackboot check-config`: the configuration and the environment it names, checked
//! before a (re)start, so a typo or a missing package is found by the operator and not
//! by the first machine that fails to boot. The file itself is checked as `serve`
//! reads it (a bad key is named); then the data directory is written to, the DHCP
//! interface and its address looked up, the iPXE, shim, grub and EFI stub files
//! looked for, and each listening port bound for a moment.
//!
//! A problem would stop `serve` or every network boot; a warning names something a
//! part of the fleet needs (the grub pair of an architecture no machine boots yet, a
//! port another process holds, which may be the running rackboot itself).

use crate::config::Config;
use crate::lifecycle::Loader;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Problem,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The configuration key it is about.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Problem => "problem",
            Severity::Warning => "warning",
        };
        write!(f, "{label}: {}: {}", self.key, self.message)
    }
}

/// Everything found about `config` and this machine; empty when all is well.
/// Blocking (file system, sockets): not for an async worker.
pub fn check(config: &Config) -> Vec<Finding> {
    let mut found = Vec::new();
    let mut problem =
        |key: &str, message: String| push(&mut found, Severity::Problem, key, message);
    if let Err(e) = writable(&config.data_dir) {
        problem(
            "data_dir",
            format!("{} is not writable: {e}", config.data_dir.display()),
        );
    }
    if let Some(dhcp) = &config.dhcp {
        match crate::netif::ipv4_of(&dhcp.interface) {
            Err(e) => problem(
                "dhcp.interface",
                format!("cannot read the addresses of {:?}: {e}", dhcp.interface),
            ),
            Ok(None) => problem(
                "dhcp.interface",
                format!(
                    "{:?} does not exist or has no IPv4 address: DHCP answers from it",
                    dhcp.interface
                ),
            ),
            Ok(Some(_)) => {}
        }
    }
    if config.tftp.is_some() {
        let dir = &config.ipxe.dir;
        for (key, name) in [
            ("tftp.bios_file", &config.ipxe.bios),
            ("tftp.uefi_x64_file", &config.ipxe.uefi_x64),
        ] {
            let path = dir.join(name);
            if !path.is_file() {
                problem(
                    if dir.is_dir() { key } else { "tftp.ipxe_dir" },
                    format!(
                        "{} is missing: firmware PXE gets file-not-found (install Debian's \
                         `ipxe` package or set tftp.ipxe_dir)",
                        path.display()
                    ),
                );
            }
        }
    }
    for (arch, files) in [("amd64", &config.boot.amd64), ("arm64", &config.boot.arm64)] {
        for (what, path) in [("shim", &files.shim), ("grub", &files.grub)] {
            if !path.is_file() {
                let why = if files.loader == Loader::Grub {
                    "grub is this architecture's default loader: its machines will not boot"
                } else {
                    "machines given the grub loader will not boot"
                };
                push(
                    &mut found,
                    Severity::Warning,
                    &format!("boot.{arch}.{what}"),
                    format!("{} is missing; {why}", path.display()),
                );
            }
        }
        if files.loader == Loader::Uki && !files.uki_stub.is_file() {
            push(
                &mut found,
                Severity::Warning,
                &format!("boot.{arch}.uki_stub"),
                format!(
                    "{} is missing (systemd-boot-efi): no unified kernel images",
                    files.uki_stub.display()
                ),
            );
        }
    }
    let mut ports: Vec<(&str, SocketAddr, bool)> = vec![("http.listen", config.http.listen, true)];
    if let Some(panel) = config.panel.listen {
        ports.push(("panel.listen", panel, true));
    }
    if let Some(tftp) = &config.tftp {
        ports.push(("tftp.listen", tftp.listen, false));
    }
    if config.dhcp.is_some() {
        ports.push((
            "dhcp.interface",
            SocketAddr::from(([0, 0, 0, 0], crate::dhcp::wire::SERVER_PORT)),
            false,
        ));
    }
    for (key, addr, tcp) in ports {
        let bound = if tcp {
            std::net::TcpListener::bind(addr).map(drop)
        } else {
            std::net::UdpSocket::bind(addr).map(drop)
        };
        match bound {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => push(
                &mut found,
                Severity::Warning,
                key,
                format!(
                    "{addr} ({}) is in use: by another server, or by a rackboot already serving",
                    if tcp { "TCP" } else { "UDP" }
                ),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => push(
                &mut found,
                Severity::Problem,
                key,
                format!("cannot listen on {addr}: needs root or CAP_NET_BIND_SERVICE ({e})"),
            ),
            Err(e) => push(
                &mut found,
                Severity::Problem,
                key,
                format!("cannot listen on {addr}: {e}"),
            ),
        }
    }
    found
}

fn push(found: &mut Vec<Finding>, severity: Severity, key: &str, message: String) {
    found.push(Finding {
        severity,
        key: key.to_string(),
        message,
    });
}

/// Creates the directory if needed and writes and removes a file in it.
fn writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".rackboot-check-{}", std::process::id()));
    std::fs::write(&probe, b"rackboot check-config\n")?;
    std::fs::remove_file(&probe)
}
