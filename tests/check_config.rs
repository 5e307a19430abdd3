//! `rackboot check-config` against real environments inside a private network
//! namespace: a good one passes; a missing interface, a missing iPXE directory and an
//! unwritable data directory are problems named by their keys (exit 1); a port held
//! by another process is a warning.

use harness::{Netns, should_run, udp_socket_in};
use std::fs;
use std::path::Path;
use std::process::Output;

const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

/// Writes (over the last one) the config a check reads.
fn config(dir: &Path, interface: &str, ipxe_dir: &str, data_dir: &Path) -> std::path::PathBuf {
    let path = dir.join("rackboot.toml");
    fs::write(
        &path,
        format!(
            r#"data_dir = "{}"
[dhcp]
interface = "{interface}"
[[dhcp.subnets]]
cidr = "198.18.0.0/24"
pool = "198.18.0.100-198.18.0.200"
router = "198.18.0.1"
[http]
listen = "0.0.0.0:8080"
url = "http://198.18.0.1:8080"
[tftp]
listen = "0.0.0.0:69"
ipxe_dir = "{ipxe_dir}"
"#,
            data_dir.display()
        ),
    )
    .expect("write config");
    path
}

fn check(ns: &Netns, config: &Path) -> (bool, String) {
    let out: Output = ns
        .command(RACKBOOT)
        .arg("--config")
        .arg(config)
        .arg("check-config")
        .output()
        .expect("run rackboot");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_config_names_what_would_stop_a_start() {
    if !should_run("check_config", &["ip"]) {
        return;
    }
    let ns = Netns::new("chkcfg");
    ns.ip(&["link", "add", "rbc0", "type", "bridge"]);
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", "rbc0"]);
    ns.ip(&["link", "set", "rbc0", "up"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");

    let good = config(dir.path(), "rbc0", "/usr/lib/ipxe", &data);
    let (ok, text) = check(&ns, &good);
    assert!(ok, "{text}");
    assert!(text.contains("no problems"), "{text}");
    assert!(!text.contains("problem:"), "{text}");

    let no_interface = config(dir.path(), "rbnone0", "/usr/lib/ipxe", &data);
    let (ok, text) = check(&ns, &no_interface);
    assert!(!ok, "{text}");
    assert!(
        text.contains("problem: dhcp.interface") && text.contains("rbnone0"),
        "{text}"
    );

    let no_ipxe = config(dir.path(), "rbc0", "/nonexistent/ipxe", &data);
    let (ok, text) = check(&ns, &no_ipxe);
    assert!(!ok, "{text}");
    assert!(text.contains("problem: tftp.ipxe_dir"), "{text}");

    // A regular file where the data directory should be.
    let blocked = dir.path().join("not-a-dir");
    fs::write(&blocked, b"x").expect("write");
    let unwritable = config(dir.path(), "rbc0", "/usr/lib/ipxe", &blocked);
    let (ok, text) = check(&ns, &unwritable);
    assert!(!ok, "{text}");
    assert!(text.contains("problem: data_dir"), "{text}");

    // Another process holds TFTP's port: said, but not a failure (it may be the
    // rackboot already serving this data directory).
    let held = udp_socket_in(&ns, "0.0.0.0:69");
    let good = config(dir.path(), "rbc0", "/usr/lib/ipxe", &data);
    let (ok, text) = check(&ns, &good);
    assert!(ok, "{text}");
    assert!(
        text.contains("warning: tftp.listen") && text.contains("in use"),
        "{text}"
    );
    drop(held);
}
