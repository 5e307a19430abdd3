//! Packets that crashed other DHCP servers are dropped and logged, and the server
//! still answers a normal DISCOVER after each one.

use harness::{DhcpNet, RawDhcp, dhcp_exchange, should_run, tail};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x53, 0x01];
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

fn discover(xid: u32) -> Vec<u8> {
    RawDhcp::new(1, MAC, xid).option(55, &[1, 3, 6]).end()
}

#[test]
fn malformed_packets_are_dropped_logged_and_survived() {
    if !should_run("dhcp_malformed", &["ip"]) {
        return;
    }
    let mut net = DhcpNet::new(
        RACKBOOT,
        "malf",
        "[[dhcp.subnets]]\ncidr = \"192.0.2.0/24\"\npool = \"192.0.2.100-192.0.2.120\"\n",
    );
    net.start();

    let truncated = discover(1)[..100].to_vec();
    let mut past_end = RawDhcp::new(1, MAC, 2).bytes;
    past_end.extend_from_slice(&[60, 200, b'P', b'X', b'E']);
    let zero_client_id = RawDhcp::new(1, MAC, 3).option(61, &[]).end();
    let mut overload_garbage = RawDhcp::new(1, MAC, 4).option(52, &[3]).end();
    overload_garbage[44..236].fill(0x42);
    let mut hlen0 = discover(5);
    hlen0[2] = 0;
    let mut hlen17 = discover(6);
    hlen17[2] = 17;
    let bad_requested_ip = RawDhcp::new(3, MAC, 7).option(50, &[192, 0, 2]).end();
    let cases: [(&str, Vec<u8>, &str); 7] = [
        (
            "truncated",
            truncated,
            "shorter than a BOOTP header (100 bytes)",
        ),
        (
            "option past the end",
            past_end,
            "option 60 runs past the end",
        ),
        (
            "zero-length client id",
            zero_client_id,
            "option 61 has a bad length 0",
        ),
        (
            "overload garbage",
            overload_garbage,
            "option 66 runs past the end",
        ),
        ("hlen 0", hlen0, "not Ethernet (htype 1, hlen 0)"),
        ("hlen 17", hlen17, "not Ethernet (htype 1, hlen 17)"),
        (
            "bad requested ip",
            bad_requested_ip,
            "option 50 has a bad length 3",
        ),
    ];
    for (n, (name, packet, reason)) in cases.into_iter().enumerate() {
        let xid = 0x1000 + n as u32;
        let mut bad = packet;
        bad[4..8].copy_from_slice(&xid.to_be_bytes());
        let replies = dhcp_exchange(
            &net.client_ns,
            "rbc",
            None,
            SERVER,
            bad,
            xid,
            Duration::from_millis(500),
        );
        assert!(replies.is_empty(), "{name}: answered {replies:?}");
        let answered = dhcp_exchange(
            &net.client_ns,
            "rbc",
            None,
            SERVER,
            discover(xid + 0x100),
            xid + 0x100,
            Duration::from_secs(3),
        );
        assert!(
            answered.iter().any(|r| r.msg_type == Some(2)),
            "{name}: no OFFER to a normal DISCOVER afterwards\n{}",
            tail(&net.server_log(), 20)
        );
        let log = net.server_log();
        assert!(
            log.contains("dropped malformed DHCP packet") && log.contains(reason),
            "{name}: expected a log line with {reason:?}\n{}",
            tail(&log, 20)
        );
    }
    assert!(
        !net.server.as_mut().expect("server").exited(),
        "server exited"
    );
    assert!(!net.server_log().contains("panicked"));
}
