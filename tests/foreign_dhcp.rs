//! Another DHCP server on the boot link: rackboot serves a bridge in full mode, a real
//! dnsmasq (its own namespace and address on the same bridge) serves it too, and a
//! real DHCP client (busybox udhcpc, as a PXE client asking for broadcast replies)
//! whose MAC is in the inventory asks. rackboot records dnsmasq's answer for that
//! machine (`dhcp.foreign-server`, naming dnsmasq's address), never its own, and its
//! boot diagnosis says another DHCP server answered.

use harness::{BootNet, Netns, Proc, should_run, tail, wait_until};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const CLIENT_MAC: &str = "52:54:00:f0:0d:01";
const DNSMASQ_IP: &str = "192.0.2.254";
/// The diagnosis sweeps every 5 s; the client's exchange takes a few more.
const DEADLINE: Duration = Duration::from_secs(40);

#[test]
fn another_dhcp_server_on_the_link_is_recorded_and_diagnosed() {
    if !should_run("foreign_dhcp", &["ip", "dnsmasq", "udhcpc"]) {
        return;
    }
    let mut net = BootNet::new(RACKBOOT, "fdhcp", &[]);

    // The other server: dnsmasq with its own address and range on the same bridge.
    let other = net.attach_namespace("fdhcp-d");
    other.ip(&["addr", "add", &format!("{DNSMASQ_IP}/24"), "dev", "veth-r"]);
    other.ip(&["link", "set", "veth-r", "up"]);
    let mut dnsmasq_cmd = other.command("dnsmasq");
    dnsmasq_cmd
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--interface=veth-r",
            "--bind-interfaces",
            "--no-ping",
            "--log-dhcp",
            "--dhcp-range=192.0.2.210,192.0.2.220,255.255.255.0,1h",
        ])
        .arg(format!(
            "--dhcp-leasefile={}",
            net.dir.path().join("dnsmasq.leases").display()
        ))
        .arg(format!(
            "--pid-file={}",
            net.dir.path().join("dnsmasq.pid").display()
        ));
    let dnsmasq = Proc::spawn(dnsmasq_cmd, &net.dir.path().join("dnsmasq.log"));

    // The client: a namespace of its own, joined to the bridge, with the machine's MAC.
    let client = Netns::new("fdhcp-c");
    net.ns.ip(&[
        "link",
        "add",
        "veth-c",
        "type",
        "veth",
        "peer",
        "name",
        "cl0",
        "netns",
        &client.name,
    ]);
    net.ns.ip(&["link", "set", "veth-c", "master", "br0"]);
    net.ns.ip(&["link", "set", "veth-c", "up"]);
    client.ip(&["link", "set", "cl0", "address", CLIENT_MAC]);
    client.ip(&["link", "set", "cl0", "up"]);

    net.cli(&["machine", "add", CLIENT_MAC]);
    net.start();

    // A script that configures nothing: only the exchange matters here.
    let script = net.dir.path().join("udhcpc-script");
    fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut udhcpc_cmd = client.command("udhcpc");
    udhcpc_cmd
        .args([
            "-f",
            "-i",
            "cl0",
            // The broadcast flag, as PXE firmware sets it: both servers broadcast.
            "-B",
            "-V",
            "PXEClient:Arch:00007:UNDI:003016",
            "-t",
            "20",
            "-T",
            "2",
            "-s",
        ])
        .arg(&script);
    let udhcpc = Proc::spawn(udhcpc_cmd, &net.dir.path().join("udhcpc.log"));

    let events = || net.cli(&["event", "list", "--mac", CLIENT_MAC]);
    let report = |what: &str| {
        format!(
            "{what}\n--- events ---\n{}\n--- rackboot ---\n{}\n--- dnsmasq ---\n{}\n--- udhcpc ---\n{}",
            events(),
            tail(&net.server_log(), 40),
            tail(&dnsmasq.log_text(), 20),
            tail(&udhcpc.log_text(), 20)
        )
    };
    let foreign = format!("dhcp.foreign-server server={DNSMASQ_IP} ");
    assert!(
        wait_until(DEADLINE, || events().contains(&foreign)),
        "{}",
        report("no dhcp.foreign-server event naming dnsmasq")
    );
    let diagnosed =
        format!("boot.diagnosis another DHCP server answered on this link ({DNSMASQ_IP})");
    assert!(
        wait_until(DEADLINE, || events().contains(&diagnosed)),
        "{}",
        report("no diagnosis")
    );
    let all = events();
    let line = all
        .lines()
        .find(|l| l.contains(&foreign))
        .unwrap_or_default();
    assert!(line.contains(&format!("mac={CLIENT_MAC}")), "{line}");
    // rackboot answered too, and its own replies were not taken for another server's.
    assert!(all.contains("dhcp.offer"), "{all}");
    assert!(!all.contains("server=192.0.2.1 "), "{all}");
    // Said once for the boot, however many replies dnsmasq sent. (Other findings may
    // follow: if the client took rackboot's offer, it never fetched its boot file.)
    assert_eq!(
        all.matches(&diagnosed).count(),
        1,
        "{}",
        report("diagnosed more than once")
    );
}
