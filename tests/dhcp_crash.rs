//! Durability: rackboot is killed with SIGKILL in the middle of a perfdhcp run, three
//! times. Every address it acknowledged on the wire (captured with tcpdump) is still
//! leased to the same client after the restarts, no address is held twice, no client
//! holds two, and a returning client is offered its address again.

use harness::{
    Capture, DhcpNet, Proc, RawDhcp, dhcp_exchange, read_dhcp, read_pcap_udp, should_run, tail,
    wait_until,
};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const DHCP: &str = r#"
[[dhcp.subnets]]
cidr = "198.18.0.0/20"
pool = "198.18.0.10-198.18.15.250"
lease_secs = 3600
"#;

const RELAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

#[test]
fn acknowledged_leases_survive_kill_9_under_load() {
    if !should_run("dhcp_crash", &["ip", "perfdhcp", "tcpdump"]) {
        return;
    }
    let mut net = DhcpNet::new(RACKBOOT, "crash", DHCP);
    net.server_ns
        .ip(&["addr", "add", "198.18.0.1/20", "dev", "rbs"]);
    net.client_ns
        .ip(&["addr", "add", "198.18.0.2/20", "dev", "rbc"]);
    net.start();

    // Three rounds of load, each ended by SIGKILL while leases are being committed:
    // an ACK sent before its commit would show up as a lost lease in one of them.
    let mut acked: HashMap<[u8; 6], Ipv4Addr> = HashMap::new();
    for round in 1..=3 {
        if round > 1 {
            net.start();
        }
        let pcap = net.dir.path().join(format!("crash-{round}.pcap"));
        let mut capture = Capture::start(&net.server_ns, "rbs", "udp port 67", &pcap);
        // Bounded load: 3,000 clients at 600 exchanges/s for at most 8 s, killed
        // midway; each round starts from another MAC so new leases are committed.
        let mut cmd = net.client_ns.command("perfdhcp");
        cmd.args([
            "-4",
            "-l",
            "198.18.0.2",
            "-r",
            "600",
            "-R",
            "3000",
            "-p",
            "8",
        ])
        .arg("-b")
        .arg(format!("mac=00:0c:0{round}:00:00:00"))
        .arg("192.0.2.1");
        let mut load = Proc::spawn(cmd, &net.dir.path().join(format!("perfdhcp-{round}.log")));
        let acks_seen = || {
            net.server_log()
                .lines()
                .filter(|l| l.contains("Ack: ack"))
                .count()
        };
        assert!(
            wait_until(Duration::from_secs(15), || acks_seen() >= 400),
            "round {round}: load did not get going:\n{}\n{}",
            tail(&load.log_text(), 20),
            tail(&net.server_log(), 20)
        );
        net.kill9();
        std::thread::sleep(Duration::from_millis(500));
        capture.stop();
        let _ = load.child.kill();
        assert!(wait_until(Duration::from_secs(20), || load.exited()));

        // Every ACK on the wire, by client: the address it was last acknowledged.
        let before = acked.len();
        for datagram in read_pcap_udp(&pcap) {
            if datagram.src.port() != 67 || *datagram.dst.ip() != RELAY {
                continue;
            }
            if let Some(reply) = read_dhcp(&datagram.payload)
                && reply.msg_type == Some(5)
            {
                acked.insert(reply.chaddr, reply.yiaddr);
            }
        }
        assert!(
            acked.len() - before >= 200,
            "round {round}: only {} ACKs captured",
            acked.len() - before
        );
    }

    net.start();
    let leases = net.leases();
    let mut bound_by_ip: HashMap<Ipv4Addr, String> = HashMap::new();
    let mut clients = HashSet::new();
    for (ip, mac, state) in &leases {
        if state != "bound" {
            continue;
        }
        let ip: Ipv4Addr = ip.parse().expect("ip");
        assert!(bound_by_ip.insert(ip, mac.clone()).is_none(), "{ip} twice");
        assert!(clients.insert(mac.clone()), "{mac} holds two addresses");
    }
    let mac_text = |mac: &[u8; 6]| {
        mac.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    for (mac, ip) in &acked {
        assert_eq!(
            bound_by_ip.get(ip),
            Some(&mac_text(mac)),
            "{ip} was acknowledged to {} before the crash",
            mac_text(mac)
        );
    }

    // Returning clients are offered the address they were acknowledged.
    for (n, (mac, ip)) in acked.iter().take(20).enumerate() {
        let xid = 0x00c0_ffee + n as u32;
        let discover = RawDhcp::new(1, *mac, xid).giaddr(RELAY).end();
        let replies = dhcp_exchange(
            &net.client_ns,
            "rbc",
            Some(RELAY),
            Ipv4Addr::new(192, 0, 2, 1),
            discover,
            xid,
            Duration::from_secs(3),
        );
        let offer = replies.first().unwrap_or_else(|| {
            panic!(
                "no offer for {} after restart\n{}",
                mac_text(mac),
                tail(&net.server_log(), 20)
            )
        });
        assert_eq!(offer.yiaddr, *ip, "{} got another address", mac_text(mac));
    }
}
