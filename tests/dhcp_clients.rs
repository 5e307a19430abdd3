//! Real DHCP clients (ISC dhclient, busybox udhcpc) get a lease from rackboot, renew
//! it (dhclient at T1, two seconds here; udhcpc on SIGUSR1) and release it, across a
//! veth pair between two namespaces.

use harness::{DhcpNet, Proc, should_run, tail, wait_until};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const DHCP: &str = r#"
[[dhcp.subnets]]
cidr = "192.0.2.0/24"
pool = "192.0.2.100-192.0.2.150"
router = "192.0.2.1"
dns = ["192.0.2.1"]
lease_secs = 60
renew_secs = 2
rebind_secs = 50
"#;

/// A client hook script that records each event and configures the address in the
/// client namespace only (the stock scripts would rewrite the host's resolv.conf).
fn write_script(path: &Path, events: &Path, body: &str) {
    fs::write(
        path,
        format!(
            "#!/bin/sh\nexec >>{events} 2>&1\n{body}\n",
            events = events.display()
        ),
    )
    .expect("write script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// The client's lease on the server: (ip, state), read with the CLI.
fn lease_of(net: &DhcpNet, mac: &str) -> Option<(String, String)> {
    net.leases()
        .into_iter()
        .find(|(_, m, _)| m == mac)
        .map(|(ip, _, state)| (ip, state))
}

fn mac_of(net: &DhcpNet) -> String {
    let out = harness::run(
        net.client_ns
            .command("cat")
            .arg("/sys/class/net/rbc/address"),
    );
    out.trim().to_string()
}

fn server_acks(net: &DhcpNet, mac: &str, kind: &str) -> usize {
    net.server_log()
        .lines()
        .filter(|l| l.contains(mac) && l.contains(kind))
        .count()
}

#[test]
fn dhclient_gets_renews_and_releases_a_lease() {
    if !should_run("dhcp_clients dhclient", &["ip", "dhclient"]) {
        return;
    }
    let mut net = DhcpNet::new(RACKBOOT, "dhcl", DHCP);
    // The client starts without an address; only DHCP gives it one.
    net.client_ns.ip(&["addr", "flush", "dev", "rbc"]);
    net.start();
    let mac = mac_of(&net);
    let dir = net.dir.path().to_path_buf();
    let events = dir.join("dhclient.events");
    let script = dir.join("dhclient-script");
    write_script(
        &script,
        &events,
        r#"echo "$reason ip=$new_ip_address mask=$new_subnet_mask"
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT) ip addr replace "$new_ip_address/24" dev "$interface" ;;
  RELEASE|EXPIRE|STOP) [ -n "$old_ip_address" ] && ip addr del "$old_ip_address/24" dev "$interface" ;;
esac
exit 0"#,
    );
    let conf = dir.join("dhclient.conf");
    fs::write(
        &conf,
        "request subnet-mask, broadcast-address, routers, domain-name-servers, host-name;\n",
    )
    .expect("conf");
    let common = |cmd: &mut std::process::Command| {
        cmd.arg("-4")
            .arg("-sf")
            .arg(&script)
            .arg("-cf")
            .arg(&conf)
            .arg("-lf")
            .arg(dir.join("dhclient.leases"))
            .arg("-pf")
            .arg(dir.join("dhclient.pid"));
    };
    let mut cmd = net.client_ns.command("dhclient");
    common(&mut cmd);
    cmd.args(["-d", "-v", "rbc"]);
    let client = Proc::spawn(cmd, &dir.join("dhclient.log"));
    let read_events = || fs::read_to_string(&events).unwrap_or_default();
    let report = |what: &str| {
        format!(
            "{what}\n--- events ---\n{}\n--- dhclient ---\n{}\n--- server ---\n{}",
            read_events(),
            tail(&client.log_text(), 20),
            tail(&net.server_log(), 30)
        )
    };

    assert!(
        wait_until(Duration::from_secs(30), || read_events().contains("BOUND")),
        "{}",
        report("no lease")
    );
    let (ip, state) = lease_of(&net, &mac).expect("lease on the server");
    assert_eq!(state, "bound");
    assert!(read_events().contains(&format!("BOUND ip={ip} mask=255.255.255.0")));

    // T1 = 2 s: dhclient renews by unicast, and the server acknowledges a renewal.
    assert!(
        wait_until(Duration::from_secs(20), || read_events().contains("RENEW")
            && server_acks(&net, &mac, "(renewing)") > 0),
        "{}",
        report("no renewal")
    );
    assert_eq!(lease_of(&net, &mac).map(|l| l.0), Some(ip.clone()));

    // Release: dhclient -r stops the running client and sends DHCPRELEASE.
    let mut release = net.client_ns.command("dhclient");
    common(&mut release);
    release.args(["-r", "-v", "rbc"]);
    harness::run(&mut release);
    assert!(
        wait_until(Duration::from_secs(10), || lease_of(&net, &mac)
            .is_some_and(|(_, s)| s == "released")),
        "{}",
        report("not released")
    );
}

#[test]
fn udhcpc_gets_renews_and_releases_a_lease() {
    if !should_run("dhcp_clients udhcpc", &["ip", "udhcpc"]) {
        return;
    }
    let mut net = DhcpNet::new(RACKBOOT, "udhc", DHCP);
    net.client_ns.ip(&["addr", "flush", "dev", "rbc"]);
    net.start();
    let mac = mac_of(&net);
    let dir = net.dir.path().to_path_buf();
    let events = dir.join("udhcpc.events");
    let script = dir.join("udhcpc-script");
    write_script(
        &script,
        &events,
        r#"echo "$1 ip=$ip mask=$subnet"
case "$1" in
  bound|renew) ip addr replace "$ip/24" dev "$interface" ;;
  deconfig) ip addr flush dev "$interface" ;;
esac
exit 0"#,
    );
    let mut cmd = net.client_ns.command("udhcpc");
    cmd.args(["-f", "-i", "rbc", "-t", "10", "-T", "1", "-s"])
        .arg(&script);
    let mut client = Proc::spawn(cmd, &dir.join("udhcpc.log"));
    let read_events = || fs::read_to_string(&events).unwrap_or_default();
    let report = |what: &str, client: &Proc| {
        format!(
            "{what}\n--- events ---\n{}\n--- udhcpc ---\n{}\n--- server ---\n{}",
            read_events(),
            tail(&client.log_text(), 20),
            tail(&net.server_log(), 30)
        )
    };
    assert!(
        wait_until(Duration::from_secs(30), || read_events()
            .contains("bound ip=")),
        "{}",
        report("no lease", &client)
    );
    let (ip, state) = lease_of(&net, &mac).expect("lease on the server");
    assert_eq!(state, "bound");
    assert!(read_events().contains(&format!("bound ip={ip} mask=255.255.255.0")));

    // busybox udhcpc renews at half the lease whatever T1 says; SIGUSR1 renews now.
    let pid = client.child.id().to_string();
    harness::run(std::process::Command::new("kill").args(["-USR1", &pid]));
    assert!(
        wait_until(Duration::from_secs(20), || read_events()
            .contains("renew ip=")
            && server_acks(&net, &mac, "(renewing)") > 0),
        "{}",
        report("no renewal", &client)
    );

    // SIGUSR2: udhcpc releases its lease.
    harness::run(std::process::Command::new("kill").args(["-USR2", &pid]));
    assert!(
        wait_until(Duration::from_secs(10), || lease_of(&net, &mac)
            .is_some_and(|(_, s)| s == "released")),
        "{}",
        report("not released", &client)
    );
    assert!(!client.exited());
}
