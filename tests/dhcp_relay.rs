//! Relayed DHCP: perfdhcp plays a top-of-rack relay (giaddr set, port 67). Leases
//! come from the subnet the relay's address is in, or the one the link-selection
//! sub-option of option 82 names; replies go back to the relay on port 67 with
//! option 82 echoed unchanged, last.

use harness::{Capture, DhcpNet, read_dhcp, read_pcap_udp, should_run};
use std::net::{Ipv4Addr, SocketAddrV4};

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const DHCP: &str = r#"
[[dhcp.subnets]]
cidr = "192.0.2.0/24"
pool = "192.0.2.100-192.0.2.200"
[[dhcp.subnets]]
cidr = "198.18.0.0/24"
pool = "198.18.0.10-198.18.0.250"
router = "198.18.0.1"
[[dhcp.subnets]]
cidr = "198.18.1.0/24"
pool = "198.18.1.10-198.18.1.250"
router = "198.18.1.1"
"#;

const RELAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const CLIENTS: usize = 30;

/// Runs perfdhcp as a relay at 198.18.0.1 and returns the ACKs it counted.
fn perfdhcp(net: &DhcpNet, base_mac: &str, relay_info: &str) -> usize {
    // Exit status 3 means some requests went unanswered; the counts below judge.
    let run = net
        .client_ns
        .command("perfdhcp")
        .args([
            "-4",
            "-l",
            "198.18.0.1",
            "-r",
            "50",
            "-n",
            &CLIENTS.to_string(),
            "-R",
            &CLIENTS.to_string(),
            "-b",
            &format!("mac={base_mac}"),
            "-o",
            &format!("82,{relay_info}"),
            "-W",
            "1000000",
            "192.0.2.1",
        ])
        .output()
        .expect("run perfdhcp");
    assert!(matches!(run.status.code(), Some(0 | 3)), "{run:?}");
    let out = String::from_utf8_lossy(&run.stdout);
    let ack_section = out
        .split("Statistics for: REQUEST-ACK")
        .nth(1)
        .unwrap_or_else(|| panic!("no REQUEST-ACK section:\n{out}"));
    ack_section
        .lines()
        .find_map(|l| l.strip_prefix("received packets: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ACK count:\n{out}"))
}

fn in_range(ip: &str, start: [u8; 4], end: [u8; 4]) -> bool {
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|ip| (Ipv4Addr::from(start)..=Ipv4Addr::from(end)).contains(&ip))
}

#[test]
fn relayed_clients_get_leases_from_the_relays_subnet() {
    if !should_run("dhcp_relay", &["ip", "perfdhcp", "tcpdump"]) {
        return;
    }
    let mut net = DhcpNet::new(RACKBOOT, "relay", DHCP);
    // The relay's own address on the rack network, and the route back to it.
    net.client_ns
        .ip(&["addr", "add", "198.18.0.1/24", "dev", "rbc"]);
    net.server_ns.ip(&[
        "route",
        "add",
        "198.18.0.0/23",
        "via",
        "192.0.2.2",
        "dev",
        "rbs",
    ]);
    net.start();
    let pcap = net.dir.path().join("relay.pcap");
    let mut capture = Capture::start(&net.server_ns, "rbs", "udp port 67", &pcap);

    // Rack A: the subnet is the relay's (giaddr).
    let circuit_a = "0104deadbeef";
    let acked_a = perfdhcp(&net, "00:0c:0a:00:00:00", circuit_a);
    // Rack B behind the same relay address: link selection (sub-option 5) names it.
    let circuit_b = "0104cafef00d0504c6120100";
    let acked_b = perfdhcp(&net, "00:0c:0b:00:00:00", circuit_b);
    capture.stop();
    // perfdhcp's very first packet can go out before its receiver is up.
    assert!(acked_a >= CLIENTS - 2, "rack A: {acked_a} ACKs");
    assert!(acked_b >= CLIENTS - 2, "rack B: {acked_b} ACKs");

    let leases = net.leases();
    let bound: Vec<_> = leases.iter().filter(|(_, _, s)| s == "bound").collect();
    assert_one_address_per_client(&bound);
    let rack_a: Vec<_> = bound
        .iter()
        .filter(|(_, mac, _)| mac.starts_with("00:0c:0a"))
        .collect();
    let rack_b: Vec<_> = bound
        .iter()
        .filter(|(_, mac, _)| mac.starts_with("00:0c:0b"))
        .collect();
    // perfdhcp may count an ACK twice (a retransmitted REQUEST); leases are per client.
    for rack in [&rack_a, &rack_b] {
        assert!((CLIENTS - 2..=CLIENTS).contains(&rack.len()), "{leases:?}");
    }
    assert!(
        rack_a
            .iter()
            .all(|(ip, _, _)| in_range(ip, [198, 18, 0, 10], [198, 18, 0, 250])),
        "rack A leases outside 198.18.0.0/24: {rack_a:?}"
    );
    assert!(
        rack_b
            .iter()
            .all(|(ip, _, _)| in_range(ip, [198, 18, 1, 10], [198, 18, 1, 250])),
        "rack B leases outside 198.18.1.0/24: {rack_b:?}"
    );

    // On the wire: every reply went to the relay's port 67, with option 82 as the
    // relay sent it, as the last option.
    let datagrams = read_pcap_udp(&pcap);
    let server = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 67);
    let replies: Vec<_> = datagrams.iter().filter(|d| d.src == server).collect();
    assert!(
        replies.len() >= 2 * (acked_a + acked_b),
        "{} replies",
        replies.len()
    );
    for reply in replies {
        assert_eq!(reply.dst, SocketAddrV4::new(RELAY, 67));
        let dhcp = read_dhcp(&reply.payload).expect("a DHCP reply");
        let (code, value) = dhcp.options.last().expect("options");
        assert_eq!(*code, 82, "option 82 is last: {:?}", dhcp.options);
        let sent = if dhcp.chaddr[2] == 0x0a {
            circuit_a
        } else {
            circuit_b
        };
        assert_eq!(hex(value), sent);
    }
}

/// No address bound twice, no client holding two: checked after every load.
fn assert_one_address_per_client(bound: &[&(String, String, String)]) {
    let ips: std::collections::HashSet<_> = bound.iter().map(|(ip, _, _)| ip).collect();
    let macs: std::collections::HashSet<_> = bound.iter().map(|(_, mac, _)| mac).collect();
    assert_eq!(ips.len(), bound.len(), "an address bound twice: {bound:?}");
    assert_eq!(
        macs.len(),
        bound.len(),
        "a client with two addresses: {bound:?}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A flood of new clients (perfdhcp, 60 MACs) fills a 20-address pool: the log says
/// the pool is full, `lease pools` shows it, no lease is taken from anyone, the
/// inventory machine whose fixed address lies inside the pool still gets it, and an
/// inventory machine without one gets an address from the subnet's `known_pool`,
/// which the flood could not touch.
#[test]
fn a_flood_fills_the_pool_but_never_takes_fixed_addresses() {
    if !should_run("dhcp_relay starvation", &["ip", "perfdhcp"]) {
        return;
    }
    let mut net = DhcpNet::new(
        RACKBOOT,
        "starve",
        "[[dhcp.subnets]]\ncidr = \"192.0.2.0/24\"\npool = \"192.0.2.100-192.0.2.119\"\n\
         known_pool = \"192.0.2.50-192.0.2.51\"\n",
    );
    let known = "52:54:00:aa:00:01";
    net.cli(&["machine", "add", known, "--ip", "192.0.2.110"]);
    net.cli(&["machine", "add", "52:54:00:aa:00:02"]);
    net.start();
    // perfdhcp exits 3 when requests went unanswered, which is the point here.
    let flood = net
        .client_ns
        .command("perfdhcp")
        .args([
            "-4",
            "-l",
            "192.0.2.2",
            "-r",
            "100",
            "-n",
            "60",
            "-R",
            "60",
            "-W",
            "1000000",
            "192.0.2.1",
        ])
        .output()
        .expect("run perfdhcp");
    assert!(
        matches!(flood.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&flood.stderr)
    );
    let leases = net.leases();
    let flood: Vec<_> = leases
        .iter()
        .filter(|(_, mac, s)| mac.starts_with("00:0c") && s == "bound")
        .collect();
    assert_one_address_per_client(&flood);
    assert_eq!(
        flood.len(),
        19,
        "the pool minus the fixed address: {leases:?}"
    );
    assert!(
        flood.iter().all(|(ip, _, _)| ip != "192.0.2.110"),
        "{leases:?}"
    );
    let log = net.server_log();
    assert!(
        log.contains("DHCP pool is full"),
        "{}",
        harness::tail(&log, 20)
    );
    let pools = net.cli(&["lease", "pools"]);
    let row: Vec<&str> = pools
        .lines()
        .nth(1)
        .expect("a pool row")
        .split_whitespace()
        .collect();
    // SUBNET POOL SIZE BOUND DECLINED RESERVED FREE
    assert_eq!(&row[2..], &["20", "19", "0", "1", "0"], "{pools}");
    let known_row: Vec<&str> = pools
        .lines()
        .nth(2)
        .expect("a known-pool row")
        .split_whitespace()
        .collect();
    assert_eq!(
        &known_row[1..],
        &["192.0.2.50-192.0.2.51", "known", "2", "0", "0", "0", "2"],
        "{pools}"
    );

    let xid = 0x5747;
    let mac = [0x52, 0x54, 0, 0xaa, 0, 1];
    let relay = Ipv4Addr::new(192, 0, 2, 2);
    let replies = harness::dhcp_exchange(
        &net.client_ns,
        "rbc",
        Some(relay),
        Ipv4Addr::new(192, 0, 2, 1),
        harness::RawDhcp::new(1, mac, xid).giaddr(relay).end(),
        xid,
        std::time::Duration::from_secs(3),
    );
    let offer = replies.first().expect("the known machine is answered");
    assert_eq!(offer.yiaddr, Ipv4Addr::new(192, 0, 2, 110));

    let xid = 0x5748;
    let replies = harness::dhcp_exchange(
        &net.client_ns,
        "rbc",
        Some(relay),
        Ipv4Addr::new(192, 0, 2, 1),
        harness::RawDhcp::new(1, [0x52, 0x54, 0, 0xaa, 0, 2], xid)
            .giaddr(relay)
            .end(),
        xid,
        std::time::Duration::from_secs(3),
    );
    let offer = replies
        .first()
        .expect("the inventory machine without a fixed address is answered");
    assert_eq!(offer.yiaddr, Ipv4Addr::new(192, 0, 2, 50));
}
