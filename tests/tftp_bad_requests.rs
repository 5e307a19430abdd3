//! Bad TFTP requests from a raw UDP socket in a client namespace: each gets the
//! right ERROR or a clean refusal, the server never panics, and the next normal
//! request is served. Also the transfer rules a well-behaved client never tests:
//! a client ERROR ends the transfer at once (the UEFI tsize probe), a packet from a
//! wrong port gets ERROR 5 without disturbing the transfer, and an ICMP port
//! unreachable from the client is a lost packet, not the end of the transfer.

use harness::{
    FILES_CLIENT_IP, FILES_SERVER_IP, FileNet, should_run, tail, test_bytes, udp_socket_in,
};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const SMALL_LEN: usize = 5000;

/// A request as a client would send it: opcode, then NUL-terminated fields.
fn request(opcode: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut bytes = vec![0, opcode];
    for field in fields {
        bytes.extend_from_slice(field);
        bytes.push(0);
    }
    bytes
}

fn rrq(file: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut fields: Vec<&[u8]> = vec![file.as_bytes(), b"octet"];
    for (name, value) in options {
        fields.push(name.as_bytes());
        fields.push(value.as_bytes());
    }
    request(1, &fields)
}

fn ack(block: u16) -> [u8; 4] {
    let [hi, lo] = block.to_be_bytes();
    [0, 4, hi, lo]
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Data(u16, Vec<u8>),
    Oack(Vec<(String, String)>),
    Error(u16),
    Other(Vec<u8>),
}

fn parse(bytes: &[u8]) -> Reply {
    match bytes {
        [0, 3, hi, lo, data @ ..] => Reply::Data(u16::from_be_bytes([*hi, *lo]), data.to_vec()),
        [0, 5, hi, lo, ..] => Reply::Error(u16::from_be_bytes([*hi, *lo])),
        [0, 6, rest @ ..] => {
            let fields: Vec<String> = rest
                .split(|&b| b == 0)
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect();
            Reply::Oack(
                fields
                    .chunks_exact(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect(),
            )
        }
        other => Reply::Other(other.to_vec()),
    }
}

/// A client socket in the client namespace.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Client {
    fn new(net: &FileNet) -> Self {
        let socket = udp_socket_in(&net.client_ns, &format!("{FILES_CLIENT_IP}:0"));
        Client {
            socket,
            server: format!("{FILES_SERVER_IP}:69").parse().expect("address"),
        }
    }

    fn send_to(&self, bytes: &[u8], to: SocketAddr) {
        self.socket.send_to(bytes, to).expect("send");
    }

    fn request(&self, bytes: &[u8]) {
        self.send_to(bytes, self.server);
    }

    fn recv(&self, wait: Duration) -> Option<(Reply, SocketAddr)> {
        self.socket.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 65536];
        match self.socket.recv_from(&mut buf) {
            Ok((len, from)) => Some((parse(&buf[..len]), from)),
            Err(_) => None,
        }
    }

    fn expect_reply(&self, what: &str) -> (Reply, SocketAddr) {
        self.recv(Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{what}: no reply"))
    }

    /// A whole transfer, answering OACK and DATA as a client should.
    fn fetch(&self, file: &str, options: &[(&str, &str)]) -> Vec<u8> {
        self.request(&rrq(file, options));
        let blksize: usize = options
            .iter()
            .find(|(n, _)| *n == "blksize")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(512);
        let mut data = Vec::new();
        let mut expected: u16 = 1;
        loop {
            let (reply, from) = self.expect_reply(file);
            match reply {
                Reply::Oack(_) => self.send_to(&ack(0), from),
                Reply::Data(block, bytes) => {
                    if block == expected {
                        data.extend_from_slice(&bytes);
                        expected = expected.wrapping_add(1);
                    }
                    self.send_to(&ack(block), from);
                    if block == expected.wrapping_sub(1) && bytes.len() < blksize {
                        return data;
                    }
                }
                other => panic!("{file}: unexpected {other:?}"),
            }
        }
    }
}

fn serve(tag: &str) -> FileNet {
    let mut net = FileNet::new(RACKBOOT, tag);
    net.put("root/small.bin", &test_bytes(SMALL_LEN, 11));
    net.put("secret", b"outside the served trees");
    net.start();
    net
}

/// After any refusal the server still serves a normal request.
fn still_serves(net: &mut FileNet, after: &str) {
    let got = Client::new(net).fetch("small.bin", &[]);
    assert_eq!(
        got,
        test_bytes(SMALL_LEN, 11),
        "after {after}: normal request not served\n{}",
        tail(&net.server_log(), 20)
    );
    net.assert_server_healthy();
}

#[test]
fn bad_requests_are_refused_cleanly_and_the_next_one_is_served() {
    if !should_run("tftp_bad_requests", &["ip"]) {
        return;
    }
    let mut net = serve("tbadreq");
    let long = "a".repeat(300);
    let refused: Vec<(&str, Vec<u8>, u16)> = vec![
        ("parent directory", rrq("../secret", &[]), 2),
        ("parent inside", rrq("sub/../../secret", &[]), 2),
        ("parent at the end", rrq("small.bin/..", &[]), 2),
        // A leading slash is the served tree's root (grub's requests have one), so
        // this is a file name under it, not found there.
        ("absolute", rrq("/etc/passwd", &[]), 1),
        ("absolute then parent", rrq("/../etc/passwd", &[]), 2),
        ("backslash traversal", rrq("..\\secret", &[]), 2),
        ("backslash", rrq("sub\\small.bin", &[]), 2),
        ("over-long name", rrq(&long, &[]), 2),
        ("not UTF-8", request(1, &[b"\xff\xfe", b"octet"]), 2),
        // A NUL inside the name splits it: the rest is read as the mode.
        (
            "NUL in the name",
            request(1, &[b"small", b"bin", b"octet"]),
            4,
        ),
        ("write request", request(2, &[b"upload.bin", b"octet"]), 2),
        (
            "no terminating NUL",
            b"\x00\x01small.bin\x00octet".to_vec(),
            4,
        ),
        ("no mode", b"\x00\x01small.bin\x00".to_vec(), 4),
        (
            "option without value",
            b"\x00\x01small.bin\x00octet\x00blksize\x00".to_vec(),
            4,
        ),
        ("mail mode", request(1, &[b"small.bin", b"mail"]), 4),
        (
            "duplicated option",
            rrq("small.bin", &[("blksize", "512"), ("blksize", "1468")]),
            8,
        ),
        (
            "duplicated option, other case",
            rrq("small.bin", &[("tsize", "0"), ("TSIZE", "0")]),
            8,
        ),
        ("missing file", rrq("no-such-file", &[]), 1),
        ("outside through the root", rrq("../../secret", &[]), 2),
    ];
    for (what, bytes, code) in refused {
        let client = Client::new(&net);
        client.request(&bytes);
        let (reply, _) = client.expect_reply(what);
        assert_eq!(reply, Reply::Error(code), "{what}");
        still_serves(&mut net, what);
    }

    // Not requests at all: dropped without an answer (an ERROR answered with an
    // ERROR can loop between two servers).
    let dropped: Vec<(&str, &[u8])> = vec![
        ("empty datagram", b""),
        ("one byte", b"\x00"),
        ("2-byte ERROR", b"\x00\x05"),
        ("3-byte ERROR", b"\x00\x05\x00"),
        ("4-byte ERROR", b"\x00\x05\x00\x08"),
        ("ACK", b"\x00\x04\x00\x01"),
        ("DATA", b"\x00\x03\x00\x01abc"),
        ("unknown opcode", b"\x00\x09abc\x00"),
    ];
    for (what, bytes) in dropped {
        let client = Client::new(&net);
        client.request(bytes);
        assert_eq!(client.recv(Duration::from_millis(500)), None, "{what}");
        still_serves(&mut net, what);
    }

    // Refusals of paths are logged.
    let log = net.server_log();
    for why in [
        "leaves the served tree",
        "backslash",
        "longer than 255",
        "not UTF-8",
        "read-only",
    ] {
        assert!(
            log.contains(why),
            "refusal not logged: {why}\n{}",
            tail(&log, 40)
        );
    }

    // A flood of refused requests is refused every time, but logged only a burst at
    // a time: it must not become a flood of log lines.
    let lines_before = net.server_log().lines().count();
    let client = Client::new(&net);
    for _ in 0..2_000 {
        client.request(&rrq("../secret", &[]));
    }
    still_serves(&mut net, "a flood of refused requests");
    let flood_lines = net.server_log().lines().count() - lines_before;
    assert!(
        flood_lines <= 60,
        "2,000 refusals wrote {flood_lines} log lines\n{}",
        tail(&net.server_log(), 20)
    );
}

#[test]
fn out_of_range_and_unknown_options_are_left_out_of_the_oack() {
    if !should_run("tftp_bad_requests", &["ip"]) {
        return;
    }
    let mut net = serve("tbadopt");
    // Alone, a refused option means no OACK at all: DATA 1 of 512 bytes.
    for option in [
        ("blksize", "0"),
        ("blksize", "7"),
        ("blksize", "65465"),
        ("blksize", "abc"),
        ("windowsize", "0"),
        ("timeout", "0"),
        ("timeout", "256"),
        ("foo", "bar"),
    ] {
        let client = Client::new(&net);
        client.request(&rrq("small.bin", &[option]));
        let (reply, from) = client.expect_reply(option.0);
        let Reply::Data(1, data) = reply else {
            panic!("{option:?}: expected DATA 1, got {reply:?}");
        };
        assert_eq!(data.len(), 512, "{option:?}");
        client.send_to(&b"\x00\x05\x00\x00done\x00"[..], from);
        still_serves(&mut net, &format!("{option:?}"));
    }
    // Beside a good option, the bad one is left out.
    let client = Client::new(&net);
    client.request(&rrq(
        "small.bin",
        &[("tsize", "0"), ("blksize", "0"), ("windowsize", "0")],
    ));
    let (reply, from) = client.expect_reply("tsize with bad options");
    assert_eq!(
        reply,
        Reply::Oack(vec![("tsize".into(), SMALL_LEN.to_string())])
    );
    client.send_to(&b"\x00\x05\x00\x08\x00"[..], from);
    // blksize 8 with every other option (a crasher elsewhere) is a normal transfer.
    let options = [
        ("blksize", "8"),
        ("tsize", "0"),
        ("windowsize", "4"),
        ("timeout", "1"),
    ];
    let got = Client::new(&net).fetch("small.bin", &options);
    assert_eq!(got, test_bytes(SMALL_LEN, 11));
    net.assert_server_healthy();
}

#[test]
fn a_client_error_ends_the_transfer_at_once() {
    if !should_run("tftp_bad_requests", &["ip"]) {
        return;
    }
    let mut net = serve("tbaderr");
    // The UEFI probe: tsize in, OACK out, ERROR 8 back. The OACK must not be
    // retransmitted (the first retransmission would come after 1 s).
    let client = Client::new(&net);
    client.request(&rrq("small.bin", &[("tsize", "0"), ("blksize", "1468")]));
    let (reply, from) = client.expect_reply("tsize probe");
    assert_eq!(
        reply,
        Reply::Oack(vec![
            ("tsize".into(), SMALL_LEN.to_string()),
            ("blksize".into(), "1468".into())
        ])
    );
    client.send_to(&b"\x00\x05\x00\x08tsize probe\x00"[..], from);
    assert_eq!(
        client.recv(Duration::from_millis(2500)),
        None,
        "OACK resent after ERROR 8"
    );
    // Then the real download, as the firmware does next.
    let got = Client::new(&net).fetch("small.bin", &[("tsize", "0"), ("blksize", "1468")]);
    assert_eq!(got, test_bytes(SMALL_LEN, 11));

    // ERROR packets of 4 bytes and fewer end a transfer just the same.
    for error in [&b"\x00\x05\x00\x00"[..], b"\x00\x05\x00", b"\x00\x05"] {
        let client = Client::new(&net);
        client.request(&rrq("small.bin", &[]));
        let (reply, from) = client.expect_reply("plain request");
        assert!(matches!(reply, Reply::Data(1, _)), "{reply:?}");
        client.send_to(error, from);
        assert_eq!(
            client.recv(Duration::from_millis(2500)),
            None,
            "DATA resent after ERROR {error:?}"
        );
        still_serves(&mut net, &format!("ERROR {error:?}"));
    }
    let log = net.server_log();
    assert!(
        log.contains("TFTP transfer ended by the client"),
        "{}",
        tail(&log, 20)
    );
}

#[test]
fn a_wrong_port_gets_error_5_and_the_transfer_goes_on() {
    if !should_run("tftp_bad_requests", &["ip"]) {
        return;
    }
    let mut net = serve("tbadtid");
    let client = Client::new(&net);
    let intruder = Client::new(&net);
    client.request(&rrq("small.bin", &[]));
    let (reply, transfer) = client.expect_reply("request");
    let Reply::Data(1, first) = reply else {
        panic!("expected DATA 1, got {reply:?}");
    };
    intruder.send_to(&ack(1), transfer);
    let (reply, from) = intruder.expect_reply("wrong port");
    assert_eq!((reply, from), (Reply::Error(5), transfer));
    // The transfer is undisturbed: ACK 1 from the right port brings DATA 2, and so
    // on to the end.
    let mut data = first;
    let mut block = 1u16;
    loop {
        client.send_to(&ack(block), transfer);
        let (reply, from) = client.expect_reply("next block");
        assert_eq!(from, transfer, "same transfer ID throughout");
        let Reply::Data(n, bytes) = reply else {
            panic!("expected DATA, got {reply:?}");
        };
        if n == block {
            continue; // a retransmission: acknowledge again
        }
        assert_eq!(n, block + 1);
        block = n;
        let last = bytes.len() < 512;
        data.extend_from_slice(&bytes);
        if last {
            client.send_to(&ack(block), transfer);
            break;
        }
    }
    assert_eq!(data, test_bytes(SMALL_LEN, 11));
    net.assert_server_healthy();
}

#[test]
fn a_port_unreachable_from_the_client_is_a_lost_packet() {
    if !should_run("tftp_bad_requests", &["ip"]) {
        return;
    }
    let mut net = serve("tbadicmp");
    // The client's port is closed for a moment: the server's retransmission draws an
    // ICMP port unreachable, which a connected UDP socket reports as ECONNREFUSED
    // on its next call. That is one lost packet, not the end of the transfer.
    let client = Client::new(&net);
    let bound = client.socket.local_addr().expect("address");
    client.request(&rrq("small.bin", &[]));
    let (reply, transfer) = client.expect_reply("request");
    let Reply::Data(1, first) = reply else {
        panic!("expected DATA 1, got {reply:?}");
    };
    drop(client);
    // The first retransmission comes after 1 s, the next 2 s later.
    std::thread::sleep(Duration::from_millis(1500));
    let client = Client {
        socket: udp_socket_in(&net.client_ns, &bound.to_string()),
        server: transfer,
    };
    let mut data = first;
    let mut block = 1u16;
    loop {
        client.send_to(&ack(block), transfer);
        let Some((reply, from)) = client.recv(Duration::from_secs(5)) else {
            panic!(
                "no DATA after ACK {block}:\n{}",
                tail(&net.server_log(), 20)
            );
        };
        assert_eq!(from, transfer, "same transfer ID throughout");
        let Reply::Data(n, bytes) = reply else {
            panic!("expected DATA, got {reply:?}");
        };
        if n == block {
            continue;
        }
        assert_eq!(n, block + 1);
        block = n;
        let last = bytes.len() < 512;
        data.extend_from_slice(&bytes);
        if last {
            client.send_to(&ack(block), transfer);
            break;
        }
    }
    assert_eq!(data, test_bytes(SMALL_LEN, 11));
    let log = net.server_log();
    assert!(!log.contains("socket failed"), "{}", tail(&log, 20));
    net.assert_server_healthy();
}
