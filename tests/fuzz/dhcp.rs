//! DHCP: the decoder with a re-encoding round trip, and the whole policy step (decode,
//! subnet, decide or decide in proxy mode, carry the decision out on the lease book,
//! encode), over a sequence of packets.

use crate::engine::{quietly, sig};
use dhcproto::Decodable;
use rackboot::config::{AnswerPolicy, Subnet};
use rackboot::dhcp::boot::BootConfig;
use rackboot::dhcp::leases::LeaseBook;
use rackboot::dhcp::policy::{self, Context, ProxyContext, ProxyPort};
use rackboot::dhcp::wire::{self, BootReply, ClientRequest, LeaseTimes, MessageType, ReplySpec};
use rackboot::mac::MacAddr;
use rackboot::model::Machine;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A reply must fit one Ethernet frame (1500 bytes less the IP and UDP headers):
/// PXE ROMs do not reassemble fragments. Asserted for requests of at most
/// `MIN_MESSAGE` bytes: a larger request can carry up to 1.2 KB of options that come
/// back unchanged (82, 61, 94, 97), so its reply can be larger than one frame (a
/// 1472-byte relayed DISCOVER gets a 1732-byte OFFER, which its relay strips).
pub const MAX_REPLY: usize = 1500 - 20 - 8;
/// The message every DHCP client must accept (RFC 2131 section 2), without option 57.
pub const MIN_MESSAGE: usize = 576;

/// The longest reply to a request of at most `MIN_MESSAGE` bytes, for the report.
static LONGEST: AtomicUsize = AtomicUsize::new(0);

pub fn report() -> String {
    format!(
        "longest reply to a request of at most {MIN_MESSAGE} bytes: {} bytes",
        LONGEST.load(Ordering::Relaxed)
    )
}

fn put(buf: &mut Vec<u8>, code: u8, value: &[u8]) {
    if value.is_empty() {
        buf.extend_from_slice(&[code, 0]);
    }
    for chunk in value.chunks(255) {
        buf.push(code);
        buf.push(chunk.len() as u8);
        buf.extend_from_slice(chunk);
    }
}

/// A request as a client would send it: the header, then every option the decoded
/// request holds (long ones split, RFC 3396).
pub fn encode_request(r: &ClientRequest) -> Vec<u8> {
    let mut b = vec![1, 1, 6, 0];
    b.extend_from_slice(&r.xid.to_be_bytes());
    b.extend_from_slice(&r.secs.to_be_bytes());
    b.extend_from_slice(&r.flags.to_be_bytes());
    b.extend_from_slice(&r.ciaddr.octets());
    b.extend_from_slice(&[0; 8]); // yiaddr, siaddr
    b.extend_from_slice(&r.giaddr.octets());
    b.extend_from_slice(&r.mac.0);
    b.resize(236, 0);
    b.extend_from_slice(&[99, 130, 83, 99]);
    put(&mut b, 53, &[r.msg_type.code()]);
    if let Some(ip) = r.requested_ip {
        put(&mut b, 50, &ip.octets());
    }
    if let Some(ip) = r.server_id {
        put(&mut b, 54, &ip.octets());
    }
    if let Some(id) = &r.client_id {
        put(&mut b, 61, id);
    }
    // 82, 94, 97 and 118 are in `echo` as sent; 118 and 82 are also read.
    for (code, value) in &r.echo {
        put(&mut b, *code, value);
    }
    if !r.archs.is_empty() {
        let list: Vec<u8> = r.archs.iter().flat_map(|a| a.to_be_bytes()).collect();
        put(&mut b, 93, &list);
    }
    let text = |b: &mut Vec<u8>, code, s: &Option<String>| {
        if let Some(s) = s {
            // An empty text came as NULs only.
            put(b, code, if s.is_empty() { b"\0" } else { s.as_bytes() });
        }
    };
    text(&mut b, 60, &r.vendor_class);
    text(&mut b, 12, &r.hostname);
    if r.is_ipxe {
        put(&mut b, 77, b"iPXE");
    }
    if !r.param_request_list.is_empty() {
        put(&mut b, 55, &r.param_request_list);
    }
    if let Some(size) = r.max_message_size {
        put(&mut b, 57, &size.to_be_bytes());
    }
    b.push(255);
    b
}

/// What a reply must be, whoever decided it: a BOOTREPLY to this client, options
/// well formed and ended, option 53 first, within one frame when `bounded`; and read
/// by a second codec (dhcproto) whenever it reads the request (what comes back
/// unchanged is the client's or the relay's, well formed or not).
fn check_reply(raw: &[u8], request: &ClientRequest, spec: &ReplySpec, bytes: &[u8], bounded: bool) {
    assert!(
        bytes.len() >= wire::MIN_REPLY_LEN,
        "reply of {} bytes",
        bytes.len()
    );
    assert_eq!(bytes[0], 2, "op");
    assert_eq!(&bytes[4..8], &request.xid.to_be_bytes(), "xid");
    assert_eq!(&bytes[28..34], &request.mac.0, "chaddr");
    assert_eq!(&bytes[236..240], &[99, 130, 83, 99], "magic");
    assert_eq!(
        &bytes[240..243],
        &[53, 1, spec.msg_type.code()],
        "option 53 first"
    );
    let mut at = 240;
    let mut ended = false;
    while at < bytes.len() {
        match bytes[at] {
            0 => at += 1,
            255 => {
                ended = true;
                break;
            }
            code => {
                let len = *bytes.get(at + 1).expect("option length") as usize;
                assert!(
                    at + 2 + len <= bytes.len(),
                    "option {code} runs past the end"
                );
                at += 2 + len;
            }
        }
    }
    assert!(ended, "no end option");
    assert!(
        bytes[at + 1..].iter().all(|&b| b == 0),
        "bytes after the end option"
    );
    if let Some(boot) = &spec.boot
        && boot.filename.len() < 128
    {
        let file = &bytes[108..236];
        assert_eq!(
            &file[..boot.filename.len()],
            boot.filename.as_bytes(),
            "file"
        );
        assert_eq!(file[boot.filename.len()], 0, "file ends with a NUL");
    }
    // dhcproto 0.15 debug-asserts on some option lengths (80, 94): a request it
    // cannot read without panicking is left to us.
    let readable = quietly(|| dhcproto::v4::Message::from_bytes(raw).is_ok());
    if readable == Some(true) {
        // Options joined from several parts (RFC 3396) come back as one, which
        // can meet the same debug assertions: those are skipped too.
        if let Some(read) = quietly(|| dhcproto::v4::Message::from_bytes(bytes)) {
            let msg =
                read.unwrap_or_else(|e| panic!("dhcproto reads the request, not the reply: {e}"));
            assert_eq!(msg.xid(), request.xid);
        }
    }
    if bounded && raw.len() <= MIN_MESSAGE {
        LONGEST.fetch_max(bytes.len(), Ordering::Relaxed);
        assert!(
            bytes.len() <= MAX_REPLY,
            "reply of {} bytes to a {:?} (more than one frame)",
            bytes.len(),
            request.msg_type
        );
    }
}

/// Reply fields for the decoder target, drawn from the input's last bytes.
fn spec_for(data: &[u8]) -> ReplySpec {
    let pick = |i: usize| {
        data.get(data.len().wrapping_sub(i + 1))
            .copied()
            .unwrap_or(0)
    };
    let types = [MessageType::Offer, MessageType::Ack, MessageType::Nak];
    let long = "x".repeat(usize::from(pick(1)));
    ReplySpec {
        msg_type: types[usize::from(pick(0)) % 3],
        server_id: Ipv4Addr::new(192, 0, 2, 1),
        yiaddr: Ipv4Addr::new(192, 0, 2, pick(2)),
        ciaddr: Ipv4Addr::UNSPECIFIED,
        lease: (pick(3) & 1 == 1).then_some(LeaseTimes {
            lease_secs: 3600,
            renew_secs: 1800,
            rebind_secs: 3150,
        }),
        subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
        router: (pick(3) & 2 == 2).then_some(Ipv4Addr::new(192, 0, 2, 1)),
        dns: vec![Ipv4Addr::new(192, 0, 2, 1); usize::from(pick(4) % 4)],
        hostname: (pick(3) & 4 == 4).then(|| format!("node-{long}")),
        domain: Some("lab.example".into()),
        boot: (pick(3) & 8 == 8).then(|| BootReply {
            next_server: Ipv4Addr::new(192, 0, 2, 1),
            filename: format!("http://192.0.2.1:8080/boot/{long}"),
            vendor_class: (pick(3) & 16 == 16).then(|| "HTTPClient".into()),
        }),
        message: (pick(3) & 32 == 32).then(|| long.clone()),
        vendor_options: (pick(3) & 64 == 64).then(|| vec![6, 1, 8, 255]),
    }
}

pub fn wire(data: &[u8]) -> u64 {
    match wire::parse_request(data) {
        Err(e) => sig(&format!("{e:?}")),
        Ok(request) => {
            let again = wire::parse_request(&encode_request(&request))
                .unwrap_or_else(|e| panic!("a decoded request, re-encoded, fails: {e}"));
            assert_eq!(again, request, "decode(encode(decode(x))) != decode(x)");
            let spec = spec_for(data);
            let bytes = wire::encode_reply(&request, &spec);
            check_reply(data, &request, &spec, &bytes, false);
            let _ = wire::destination(&request, &spec);
            sig(&format!(
                "ok {:?} {} {} {} {}",
                request.msg_type,
                request.echo.len(),
                request.archs.len().min(3),
                request.is_ipxe,
                request.client_id.is_some()
            ))
        }
    }
}

// ---- Requests as clients send them: the seeds ----

pub struct Packet(Vec<u8>);

impl Packet {
    pub fn new(msg_type: u8, mac: [u8; 6]) -> Self {
        let mut b = vec![1, 1, 6, 0, 0x12, 0x34, 0x56, mac[5], 0, 4, 0, 0];
        b.resize(28, 0);
        b.extend_from_slice(&mac);
        b.resize(236, 0);
        b.extend_from_slice(&[99, 130, 83, 99, 53, 1, msg_type]);
        Packet(b)
    }
    pub fn opt(mut self, code: u8, value: &[u8]) -> Self {
        put(&mut self.0, code, value);
        self
    }
    pub fn at(mut self, offset: usize, ip: [u8; 4]) -> Self {
        self.0[offset..offset + 4].copy_from_slice(&ip);
        self
    }
    pub fn end(mut self) -> Vec<u8> {
        self.0.push(255);
        self.0
    }
}

const MACS: [[u8; 6]; 4] = [
    [0x52, 0x54, 0, 0, 0, 1],
    [0x52, 0x54, 0, 0, 0, 2],
    [0x52, 0x54, 0, 0, 0, 3],
    [0x52, 0x54, 0, 0, 0, 9],
];
const PRL: &[u8] = &[1, 3, 6, 12, 15, 28, 42, 43, 60, 66, 67, 119, 128, 175];

/// One client of each kind, each message type, relayed and not.
pub fn requests() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, mac) in MACS.iter().enumerate() {
        let pxe = |p: Packet| match i {
            0 => p
                .opt(60, b"PXEClient:Arch:00000:UNDI:002001")
                .opt(93, &[0, 0])
                .opt(94, &[1, 2, 1])
                .opt(97, &[0; 17]),
            1 => p
                .opt(60, b"PXEClient:Arch:00007:UNDI:003016")
                .opt(93, &[0, 7])
                .opt(61, &[1, 0x52, 0x54, 0, 0, 0, 2]),
            2 => p
                .opt(60, b"HTTPClient:Arch:00016:UNDI:003001")
                .opt(93, &[0, 16]),
            _ => p
                .opt(77, b"iPXE")
                .opt(60, b"PXEClient:Arch:00000")
                .opt(12, b"node9"),
        };
        out.push(pxe(Packet::new(1, *mac)).opt(55, PRL).end());
        out.push(
            pxe(Packet::new(3, *mac))
                .opt(50, &[192, 0, 2, 100])
                .opt(54, &[192, 0, 2, 1])
                .opt(55, PRL)
                .end(),
        );
    }
    let m = MACS[0];
    out.push(
        Packet::new(3, m)
            .at(12, [192, 0, 2, 100])
            .opt(55, PRL)
            .end(),
    ); // renew
    out.push(
        Packet::new(7, m)
            .at(12, [192, 0, 2, 100])
            .opt(54, &[192, 0, 2, 1])
            .end(),
    );
    out.push(
        Packet::new(4, m)
            .opt(50, &[192, 0, 2, 101])
            .opt(54, &[192, 0, 2, 1])
            .end(),
    );
    out.push(Packet::new(8, m).at(12, [192, 0, 2, 77]).opt(55, PRL).end());
    // Relayed, with option 82 (circuit id, link selection) and option 118.
    out.push(
        Packet::new(1, MACS[1])
            .at(24, [198, 18, 0, 1])
            .opt(60, b"PXEClient:Arch:00007")
            .opt(93, &[0, 7])
            .opt(82, &[1, 4, b'e', b't', b'h', b'0', 5, 4, 198, 18, 0, 0])
            .end(),
    );
    out.push(
        Packet::new(1, MACS[2])
            .opt(118, &[198, 18, 0, 0])
            .opt(52, &[3])
            .opt(93, &[0, 16])
            .end(),
    );
    out
}

// ---- The policy step ----

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, n)
}

fn subnets() -> Vec<Subnet> {
    vec![
        Subnet {
            network: ip(0),
            prefix_len: 24,
            pool_start: ip(100),
            pool_end: ip(103),
            known_pool: Some((ip(50), ip(51))),
            router: Some(ip(1)),
            dns: vec![ip(1), ip(2)],
            domain: Some("lab.example".into()),
            lease_secs: 3600,
            renew_secs: 1800,
            rebind_secs: 3150,
        },
        Subnet {
            network: Ipv4Addr::new(198, 18, 0, 0),
            prefix_len: 24,
            pool_start: Ipv4Addr::new(198, 18, 0, 10),
            pool_end: Ipv4Addr::new(198, 18, 0, 20),
            known_pool: None,
            router: None,
            dns: vec![],
            domain: None,
            lease_secs: 600,
            renew_secs: 300,
            rebind_secs: 525,
        },
    ]
}

fn machines() -> Vec<Machine> {
    let m = |mac: [u8; 6], ip: Option<Ipv4Addr>, host: Option<&str>, discovered| Machine {
        loader: None,
        mac: MacAddr(mac),
        hostname: host.map(str::to_string),
        image: Some("debian-12".into()),
        ip,
        arch: None,
        first_seen_ms: None,
        last_seen_ms: None,
        vendor_class: None,
        discovered,
    };
    // The longest hostname the inventory takes (validate: 63-byte labels, 253 in all).
    let long = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".");
    vec![
        m(MACS[0], Some(ip(10)), Some("node1"), false),
        m(
            MACS[1],
            Some(Ipv4Addr::new(198, 18, 0, 5)),
            Some(&long),
            false,
        ),
        m(MACS[2], None, None, true),
    ]
}

fn boot_config(arm64: bool) -> BootConfig {
    BootConfig {
        default_loader_amd64: rackboot::lifecycle::Loader::Ipxe,
        default_loader_arm64: rackboot::lifecycle::Loader::Ipxe,
        server_ip: ip(1),
        http_url: "http://192.0.2.1:8080".into(),
        bios_file: "undionly.kpxe".into(),
        uefi_x64_file: "snponly.efi".into(),
        uefi_arm64_file: "arm64-efi/snponly.efi".into(),
        arm64_available: arm64,
    }
}

/// Input: a flags byte (policy, proxy mode, client-id keys, arm64), then frames of
/// [seconds to advance, port, length (2 bytes, big-endian), packet].
pub fn policy(data: &[u8]) -> u64 {
    let Some((&flags, mut rest)) = data.split_first() else {
        return 0;
    };
    let answer = if flags & 1 == 0 {
        AnswerPolicy::All
    } else {
        AnswerPolicy::KnownOnly
    };
    let proxy = flags & 2 != 0;
    let subnets = subnets();
    let machines = machines();
    let boot = boot_config(flags & 8 != 0);
    let fixed: HashMap<Ipv4Addr, MacAddr> = machines
        .iter()
        .filter_map(|m| m.ip.map(|ip| (ip, m.mac)))
        .collect();
    let pools: Vec<_> = subnets.iter().flat_map(Subnet::pools).collect();
    let reserved: HashSet<Ipv4Addr> = fixed.keys().copied().collect();
    let mut book = LeaseBook::load(flags & 4 != 0, &pools, reserved, Vec::new());
    let mut now: i64 = 1_700_000_000;
    let mut outcome = String::new();
    while let [dt, port, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        now += i64::from(*dt) * 7;
        let Ok(request) = wire::parse_request(packet) else {
            outcome.push('m');
            continue;
        };
        let machine = machines.iter().find(|m| m.mac == request.mac);
        let decision = if proxy {
            let ctx = ProxyContext {
                server_ip: ip(1),
                machine,
                boot: &boot,
                policy: answer,
                port: if port & 1 == 0 {
                    ProxyPort::Dhcp
                } else {
                    ProxyPort::BootServer
                },
            };
            let decision = policy::decide_proxy(&request, &ctx);
            if let Some(reply) = &decision.reply {
                assert!(
                    reply.yiaddr.is_unspecified(),
                    "a proxy reply leases nothing"
                );
                assert!(decision.commit.is_none());
            }
            decision
        } else {
            let Some(at) = policy::select_subnet(&request, &subnets, ip(1)) else {
                outcome.push('s');
                continue;
            };
            let subnet = &subnets[at];
            let ctx = Context {
                server_ip: ip(1),
                subnet,
                machine,
                fixed: &fixed,
                boot: &boot,
                policy: answer,
                now,
            };
            let decision = policy::decide(&request, &ctx, &book);
            let key = book.key_of(request.mac, request.client_id.as_deref());
            if let Some(record) = decision.commit.clone() {
                if let Some(reply) = &decision.reply
                    && reply.msg_type == MessageType::Ack
                    && !reply.yiaddr.is_unspecified()
                {
                    assert_eq!(record.ip, reply.yiaddr, "commit and ACK name one address");
                }
                book.apply(record);
            }
            if let Some((ip, until)) = decision.hold_offer {
                book.hold_offer(ip, key.clone(), until);
            }
            if decision.forget_offer {
                book.forget_offer(&key);
            }
            if let Some(reply) = &decision.reply
                && matches!(reply.msg_type, MessageType::Offer | MessageType::Ack)
                && !reply.yiaddr.is_unspecified()
            {
                assert!(
                    subnet.contains(reply.yiaddr),
                    "{} offered outside {}/{}",
                    reply.yiaddr,
                    subnet.network,
                    subnet.prefix_len
                );
                let owner = fixed.get(&reply.yiaddr);
                assert!(
                    owner.is_none_or(|m| *m == request.mac),
                    "{} is another machine's fixed address",
                    reply.yiaddr
                );
            }
            decision
        };
        match &decision.reply {
            None => outcome.push_str(&decision.why),
            Some(reply) => {
                let bytes = wire::encode_reply(&request, reply);
                check_reply(packet, &request, reply, &bytes, true);
                let _ = wire::destination(&request, reply);
                outcome.push_str(&format!("{:?}", reply.msg_type));
            }
        }
        outcome.push(';');
    }
    sig(&outcome)
}

fn frames(flags: u8, packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![flags];
    for (i, p) in packets.iter().enumerate() {
        out.extend_from_slice(&[(i % 3) as u8, (i % 2) as u8]);
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Each client's exchange on its own and all of them together, under each mode.
pub fn policy_seeds() -> Vec<Vec<u8>> {
    let mut all = requests();
    all.extend(crate::engine::corpus_files("dhcp_wire"));
    let mut out = Vec::new();
    for flags in [0u8, 1, 2, 4, 11] {
        out.push(frames(flags, &all));
        for pair in all.chunks(2) {
            out.push(frames(flags, pair));
        }
    }
    out
}

pub const WIRE_DICT: &[&[u8]] = &[
    &[99, 130, 83, 99],
    &[53, 1, 1],
    &[52, 1, 3],
    &[255],
    &[82, 0],
    &[61, 1],
];
pub const POLICY_DICT: &[&[u8]] = &[
    &[99, 130, 83, 99],
    &[53, 1, 3],
    &[82, 255],
    &[61, 7, 1],
    &[50, 4, 192, 0, 2],
];
