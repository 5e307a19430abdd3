//! DHCP on the wire: decoding a request into a `ClientRequest`, encoding a reply, and
//! where the reply goes (RFC 2131 §4.1). No sockets here.
//!
//! Requests are read with a bounds-checked option scanner of our own rather than
//! dhcproto's decoder: dhcproto 0.15 panics in `Message::chaddr()` when hlen > 16, stops
//! reading options (silently) at the first one it cannot type, and keeps only the first
//! entry of an option 93 list. Replies are built with dhcproto.

use crate::mac::MacAddr;
use dhcproto::v4::{
    DhcpOption, DhcpOptions, Flags, HType, Message, MessageType, Opcode, OptionCode, UnknownOption,
};
use dhcproto::{Encodable, Encoder};
use std::collections::HashMap;
use std::net::Ipv4Addr;

const HEADER_LEN: usize = 236;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Old PXE and BOOTP ROMs discard replies shorter than a BOOTP packet.
pub const MIN_REPLY_LEN: usize = 300;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// Why a packet was dropped without an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than a BOOTP header ({0} bytes)")]
    TooShort(usize),
    #[error("not a BOOTREQUEST (op {0})")]
    NotRequest(u8),
    #[error("not Ethernet (htype {htype}, hlen {hlen})")]
    NotEthernet { htype: u8, hlen: u8 },
    #[error("no DHCP magic cookie")]
    NoMagic,
    #[error("option {code} runs past the end of the packet")]
    OptionOverrun { code: u8 },
    #[error("no DHCP message type (option 53)")]
    NoMessageType,
    #[error("unknown DHCP message type {0}")]
    UnknownMessageType(u8),
    #[error("option {code} has a bad length {len}")]
    BadLength { code: u8, len: usize },
}

/// The parts of a client's message that policy looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    pub msg_type: MessageType,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub mac: MacAddr,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    /// Option 93, every entry of the list (RFC 4578 allows several).
    pub archs: Vec<u16>,
    /// Option 60, lossily decoded.
    pub vendor_class: Option<String>,
    /// Option 77 carries "iPXE": the request comes from iPXE, not from firmware.
    pub is_ipxe: bool,
    pub hostname: Option<String>,
    pub param_request_list: Vec<u8>,
    /// Raw values of options echoed back unchanged (82 relay info, 94, 97).
    pub echo: Vec<(u8, Vec<u8>)>,
}

impl ClientRequest {
    pub fn broadcast_flag(&self) -> bool {
        self.flags & 0x8000 != 0
    }
}

/// Scans the options area, joining repeated options (RFC 3396) and following option
/// overload (52) into the `file` and `sname` fields.
fn scan_options(packet: &[u8]) -> Result<HashMap<u8, Vec<u8>>, Malformed> {
    let mut options: HashMap<u8, Vec<u8>> = HashMap::new();
    let main = packet.get(HEADER_LEN + 4..).unwrap_or(&[]);
    scan_area(main, &mut options)?;
    let overload = options
        .get(&52)
        .and_then(|v| v.first().copied())
        .unwrap_or(0);
    if overload & 1 != 0 {
        scan_area(&packet[108..236], &mut options)?;
    }
    if overload & 2 != 0 {
        scan_area(&packet[44..108], &mut options)?;
    }
    Ok(options)
}

fn scan_area(area: &[u8], options: &mut HashMap<u8, Vec<u8>>) -> Result<(), Malformed> {
    let mut at = 0;
    while let Some(&code) = area.get(at) {
        match code {
            0 => at += 1,
            255 => break,
            _ => {
                let len = *area.get(at + 1).ok_or(Malformed::OptionOverrun { code })? as usize;
                let value = area
                    .get(at + 2..at + 2 + len)
                    .ok_or(Malformed::OptionOverrun { code })?;
                options.entry(code).or_default().extend_from_slice(value);
                at += 2 + len;
            }
        }
    }
    Ok(())
}

fn ipv4_option(options: &HashMap<u8, Vec<u8>>, code: u8) -> Result<Option<Ipv4Addr>, Malformed> {
    match options.get(&code) {
        None => Ok(None),
        Some(v) => {
            let octets: [u8; 4] = v
                .as_slice()
                .try_into()
                .map_err(|_| Malformed::BadLength { code, len: v.len() })?;
            Ok(Some(Ipv4Addr::from(octets)))
        }
    }
}

fn header_ip(packet: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3])
}

/// Decodes a client message. Never panics on any input.
pub fn parse_request(packet: &[u8]) -> Result<ClientRequest, Malformed> {
    if packet.len() < HEADER_LEN + 4 {
        return Err(Malformed::TooShort(packet.len()));
    }
    if packet[0] != 1 {
        return Err(Malformed::NotRequest(packet[0]));
    }
    let (htype, hlen) = (packet[1], packet[2]);
    if htype != 1 || hlen != 6 {
        return Err(Malformed::NotEthernet { htype, hlen });
    }
    if packet[HEADER_LEN..HEADER_LEN + 4] != MAGIC {
        return Err(Malformed::NoMagic);
    }
    let options = scan_options(packet)?;
    let msg_type = match options.get(&53).map(Vec::as_slice) {
        None | Some([]) => return Err(Malformed::NoMessageType),
        Some([t]) => match MessageType::from(*t) {
            MessageType::Unknown(n) => return Err(Malformed::UnknownMessageType(n)),
            known => known,
        },
        Some(v) => {
            return Err(Malformed::BadLength {
                code: 53,
                len: v.len(),
            });
        }
    };
    let archs = match options.get(&93) {
        // An odd-length list is malformed; treat it as absent rather than guess.
        Some(v) if v.len() % 2 == 0 => v
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect(),
        _ => Vec::new(),
    };
    let text = |code: u8| {
        options.get(&code).filter(|v| !v.is_empty()).map(|v| {
            String::from_utf8_lossy(v)
                .trim_end_matches('\0')
                .to_string()
        })
    };
    let is_ipxe = options
        .get(&77)
        .is_some_and(|v| v.windows(4).any(|w| w == b"iPXE"));
    let echo = [82u8, 94, 97]
        .into_iter()
        .filter_map(|code| options.get(&code).map(|v| (code, v.clone())))
        .collect();
    let mac = MacAddr::from_chaddr(&packet[28..34]).ok_or(Malformed::TooShort(packet.len()))?;
    Ok(ClientRequest {
        msg_type,
        xid: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        secs: u16::from_be_bytes([packet[8], packet[9]]),
        flags: u16::from_be_bytes([packet[10], packet[11]]),
        mac,
        ciaddr: header_ip(packet, 12),
        giaddr: header_ip(packet, 24),
        requested_ip: ipv4_option(&options, 50)?,
        server_id: ipv4_option(&options, 54)?,
        archs,
        vendor_class: text(60),
        is_ipxe,
        hostname: text(12),
        param_request_list: options.get(&55).cloned().unwrap_or_default(),
        echo,
    })
}

/// What a reply says, decided by policy; `encode_reply` turns it into bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplySpec {
    pub msg_type: MessageType,
    pub server_id: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    /// Copied from the request for INFORM and renewals.
    pub ciaddr: Ipv4Addr,
    pub lease_secs: Option<u32>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub boot: Option<BootReply>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootReply {
    /// `siaddr`: the TFTP server.
    pub next_server: Ipv4Addr,
    /// A TFTP path or an `http://` URL.
    pub filename: String,
    /// Option 60 in the reply: `HTTPClient` for UEFI HTTP boot.
    pub vendor_class: Option<String>,
}

pub fn encode_reply(request: &ClientRequest, spec: &ReplySpec) -> Result<Vec<u8>, String> {
    let mut msg = Message::default();
    msg.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_chaddr(&request.mac.0)
        .set_xid(request.xid)
        .set_flags(Flags::new(request.flags))
        .set_giaddr(request.giaddr)
        .set_ciaddr(spec.ciaddr)
        .set_yiaddr(spec.yiaddr);
    let mut opts = DhcpOptions::new();
    opts.insert(DhcpOption::MessageType(spec.msg_type));
    opts.insert(DhcpOption::ServerIdentifier(spec.server_id));
    if let Some(secs) = spec.lease_secs {
        opts.insert(DhcpOption::AddressLeaseTime(secs));
        opts.insert(DhcpOption::Renewal(secs / 2));
        opts.insert(DhcpOption::Rebinding(secs / 8 * 7));
    }
    if let Some(mask) = spec.subnet_mask {
        opts.insert(DhcpOption::SubnetMask(mask));
    }
    if let Some(router) = spec.router {
        opts.insert(DhcpOption::Router(vec![router]));
    }
    if !spec.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(spec.dns.clone()));
    }
    if let Some(hostname) = &spec.hostname {
        opts.insert(DhcpOption::Hostname(hostname.clone()));
    }
    if let Some(message) = &spec.message {
        opts.insert(DhcpOption::Message(message.clone()));
    }
    if let Some(boot) = &spec.boot {
        msg.set_siaddr(boot.next_server);
        // The header field has 128 bytes; a longer URL goes in option 67 only.
        if boot.filename.len() < 128 {
            msg.set_fname_str(&boot.filename);
        }
        opts.insert(DhcpOption::BootfileName(boot.filename.as_bytes().to_vec()));
        opts.insert(DhcpOption::TFTPServerName(
            boot.next_server.to_string().into_bytes(),
        ));
        if let Some(class) = &boot.vendor_class {
            opts.insert(DhcpOption::ClassIdentifier(class.as_bytes().to_vec()));
        }
    }
    if request.is_ipxe && spec.boot.is_some() {
        // iPXE's encapsulated option 175, sub-option 176 (no-pxedhcp): this answer is
        // complete, so iPXE need not wait ~3 s for ProxyDHCP offers before it requests.
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(175),
            vec![176, 1, 1],
        )));
    }
    for (code, value) in &request.echo {
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(*code),
            value.clone(),
        )));
    }
    msg.set_opts(opts);
    let mut buf = Vec::with_capacity(MIN_REPLY_LEN + 64);
    msg.encode(&mut Encoder::new(&mut buf))
        .map_err(|e| format!("cannot encode reply: {e}"))?;
    if buf.len() < MIN_REPLY_LEN {
        buf.resize(MIN_REPLY_LEN, 0);
    }
    Ok(buf)
}

/// Where a reply goes (RFC 2131 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Through the relay agent, to its server port.
    Relay(Ipv4Addr),
    /// Unicast to an address the client already has configured.
    Unicast(Ipv4Addr),
    /// To 255.255.255.255 on the serving interface.
    Broadcast,
    /// Unicast to an address the client does not have yet: needs an ARP entry for
    /// `mac`, since the client cannot answer ARP for it.
    UnicastNoArp(Ipv4Addr, MacAddr),
}

pub fn destination(request: &ClientRequest, spec: &ReplySpec) -> Destination {
    if !request.giaddr.is_unspecified() {
        return Destination::Relay(request.giaddr);
    }
    if spec.msg_type == MessageType::Nak {
        return Destination::Broadcast;
    }
    if !request.ciaddr.is_unspecified() {
        return Destination::Unicast(request.ciaddr);
    }
    if request.broadcast_flag() || spec.yiaddr.is_unspecified() {
        return Destination::Broadcast;
    }
    Destination::UnicastNoArp(spec.yiaddr, request.mac)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Builds a raw client message: the tests' packet builder.
    pub struct Packet {
        pub bytes: Vec<u8>,
    }

    impl Packet {
        pub fn new(msg_type: u8, mac: [u8; 6]) -> Self {
            let mut bytes = vec![0u8; HEADER_LEN];
            bytes[0] = 1;
            bytes[1] = 1;
            bytes[2] = 6;
            bytes[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
            bytes[28..34].copy_from_slice(&mac);
            bytes.extend_from_slice(&MAGIC);
            bytes.extend_from_slice(&[53, 1, msg_type]);
            Packet { bytes }
        }
        pub fn option(mut self, code: u8, value: &[u8]) -> Self {
            self.bytes.push(code);
            self.bytes.push(value.len() as u8);
            self.bytes.extend_from_slice(value);
            self
        }
        pub fn ciaddr(mut self, ip: [u8; 4]) -> Self {
            self.bytes[12..16].copy_from_slice(&ip);
            self
        }
        pub fn giaddr(mut self, ip: [u8; 4]) -> Self {
            self.bytes[24..28].copy_from_slice(&ip);
            self
        }
        pub fn broadcast(mut self) -> Self {
            self.bytes[10] = 0x80;
            self
        }
        pub fn end(mut self) -> Vec<u8> {
            self.bytes.push(255);
            self.bytes
        }
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    #[test]
    fn parses_a_uefi_firmware_discover() {
        let raw = Packet::new(1, MAC)
            .broadcast()
            .option(93, &[0, 7])
            .option(60, b"PXEClient:Arch:00007:UNDI:003000")
            .option(55, &[1, 3, 6, 66, 67])
            .option(94, &[1, 3, 0])
            .end();
        let req = parse_request(&raw).expect("parses");
        assert_eq!(req.msg_type, MessageType::Discover);
        assert_eq!(req.mac, MacAddr(MAC));
        assert_eq!(req.archs, vec![7]);
        assert!(req.broadcast_flag());
        assert!(!req.is_ipxe);
        assert_eq!(
            req.vendor_class.as_deref(),
            Some("PXEClient:Arch:00007:UNDI:003000")
        );
        assert_eq!(req.param_request_list, vec![1, 3, 6, 66, 67]);
        assert_eq!(req.echo, vec![(94, vec![1, 3, 0])]);
    }

    #[test]
    fn option_93_list_and_ipxe_user_class() {
        let raw = Packet::new(3, MAC)
            .option(93, &[0, 16, 0, 7])
            .option(77, b"iPXE")
            .option(50, &[192, 0, 2, 100])
            .option(54, &[192, 0, 2, 1])
            .end();
        let req = parse_request(&raw).expect("parses");
        assert_eq!(req.archs, vec![16, 7]);
        assert!(req.is_ipxe);
        assert_eq!(req.requested_ip, Some(Ipv4Addr::new(192, 0, 2, 100)));
        assert_eq!(req.server_id, Some(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn repeated_options_are_concatenated() {
        let raw = Packet::new(1, MAC)
            .option(60, b"PXEClient:")
            .option(60, b"Arch:00011")
            .end();
        let req = parse_request(&raw).expect("parses");
        assert_eq!(req.vendor_class.as_deref(), Some("PXEClient:Arch:00011"));
    }

    #[test]
    fn known_crashers_are_refused_not_panicking() {
        let base = Packet::new(1, MAC).end();
        let mut hlen0 = base.clone();
        hlen0[2] = 0;
        let mut hlen17 = base.clone();
        hlen17[2] = 17;
        let mut overrun = Packet::new(1, MAC).bytes;
        overrun.extend_from_slice(&[61, 40, 1, 2]);
        let zero_client_id = Packet::new(1, MAC).option(61, &[]).end();
        let mut overload_garbage = Packet::new(1, MAC).option(52, &[3]).end();
        overload_garbage[108..236].fill(0x42);
        let no_type = {
            let mut p = Packet::new(1, MAC).end();
            p[HEADER_LEN + 4] = 0; // turn option 53's code into a pad
            p
        };
        assert_eq!(parse_request(&base[..100]), Err(Malformed::TooShort(100)));
        assert!(matches!(
            parse_request(&hlen0),
            Err(Malformed::NotEthernet { .. })
        ));
        assert!(matches!(
            parse_request(&hlen17),
            Err(Malformed::NotEthernet { .. })
        ));
        assert_eq!(
            parse_request(&overrun),
            Err(Malformed::OptionOverrun { code: 61 })
        );
        assert!(parse_request(&zero_client_id).is_ok());
        assert!(matches!(
            parse_request(&overload_garbage),
            Err(Malformed::OptionOverrun { .. })
        ));
        assert!(parse_request(&no_type).is_err());
        let bad_requested_ip = Packet::new(3, MAC).option(50, &[1, 2, 3]).end();
        assert_eq!(
            parse_request(&bad_requested_ip),
            Err(Malformed::BadLength { code: 50, len: 3 })
        );
    }

    #[test]
    fn every_truncation_and_byte_flip_is_handled() {
        let raw = Packet::new(1, MAC)
            .option(93, &[0, 7])
            .option(60, b"PXEClient")
            .option(82, &[1, 4, 0, 0, 0, 1])
            .end();
        for len in 0..raw.len() {
            let _ = parse_request(&raw[..len]);
        }
        for at in 0..raw.len() {
            for value in [0u8, 1, 52, 255] {
                let mut flipped = raw.clone();
                flipped[at] = value;
                let _ = parse_request(&flipped);
            }
        }
    }

    fn spec(msg_type: MessageType) -> ReplySpec {
        ReplySpec {
            msg_type,
            server_id: Ipv4Addr::new(192, 0, 2, 1),
            yiaddr: Ipv4Addr::new(192, 0, 2, 100),
            ciaddr: Ipv4Addr::UNSPECIFIED,
            lease_secs: Some(3600),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            router: Some(Ipv4Addr::new(192, 0, 2, 1)),
            dns: vec![Ipv4Addr::new(192, 0, 2, 1)],
            hostname: Some("node1".into()),
            boot: Some(BootReply {
                next_server: Ipv4Addr::new(192, 0, 2, 1),
                filename: "snponly.efi".into(),
                vendor_class: None,
            }),
            message: None,
        }
    }

    #[test]
    fn reply_is_padded_and_carries_options_a_client_reads() {
        let raw = Packet::new(1, MAC)
            .option(82, &[1, 3, b'e', b't', b'h'])
            .end();
        let req = parse_request(&raw).expect("parses");
        let bytes = encode_reply(&req, &spec(MessageType::Offer)).expect("encodes");
        assert!(bytes.len() >= MIN_REPLY_LEN);
        let msg = <Message as dhcproto::Decodable>::decode(&mut dhcproto::Decoder::new(&bytes))
            .expect("decodes");
        assert_eq!(msg.opcode(), Opcode::BootReply);
        assert_eq!(msg.xid(), 0x1234_5678);
        assert_eq!(msg.chaddr(), &MAC);
        assert_eq!(msg.yiaddr(), Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(msg.siaddr(), Ipv4Addr::new(192, 0, 2, 1));
        let fname = msg
            .fname_str()
            .and_then(Result::ok)
            .map(|f| f.trim_end_matches('\0'));
        assert_eq!(fname, Some("snponly.efi"));
        assert!(msg.opts().has_msg_type(MessageType::Offer));
        assert_eq!(
            msg.opts().get(OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(3600))
        );
        assert_eq!(
            msg.opts().get(OptionCode::Renewal),
            Some(&DhcpOption::Renewal(1800))
        );
        assert_eq!(
            msg.opts().get(OptionCode::Rebinding),
            Some(&DhcpOption::Rebinding(3150))
        );
        // Option 82 goes back to the relay byte for byte.
        let at = bytes.windows(5).position(|w| w == [82, 5, 1, 3, b'e']);
        assert!(at.is_some(), "option 82 echoed unchanged");
    }

    #[test]
    fn ipxe_is_told_not_to_wait_for_proxydhcp() {
        let ipxe = parse_request(&Packet::new(1, MAC).option(77, b"iPXE").end()).expect("parses");
        let firmware =
            parse_request(&Packet::new(1, MAC).option(93, &[0, 7]).end()).expect("parses");
        let no_pxedhcp = [175u8, 3, 176, 1, 1];
        let has = |bytes: &[u8]| bytes.windows(5).any(|w| w == no_pxedhcp);
        assert!(has(
            &encode_reply(&ipxe, &spec(MessageType::Offer)).expect("encodes")
        ));
        assert!(!has(
            &encode_reply(&firmware, &spec(MessageType::Offer)).expect("encodes")
        ));
    }

    #[test]
    fn reply_addressing_follows_rfc2131() {
        let offer = spec(MessageType::Offer);
        let nak = spec(MessageType::Nak);
        let parse = |p: Vec<u8>| parse_request(&p).expect("parses");
        let relayed = parse(Packet::new(1, MAC).giaddr([198, 18, 0, 1]).end());
        assert_eq!(
            destination(&relayed, &nak),
            Destination::Relay(Ipv4Addr::new(198, 18, 0, 1))
        );
        let renewing = parse(
            Packet::new(3, MAC)
                .ciaddr([192, 0, 2, 50])
                .broadcast()
                .end(),
        );
        assert_eq!(
            destination(&renewing, &offer),
            Destination::Unicast(Ipv4Addr::new(192, 0, 2, 50))
        );
        assert_eq!(destination(&renewing, &nak), Destination::Broadcast);
        let flagged = parse(Packet::new(1, MAC).broadcast().end());
        assert_eq!(destination(&flagged, &offer), Destination::Broadcast);
        let plain = parse(Packet::new(1, MAC).end());
        assert_eq!(
            destination(&plain, &offer),
            Destination::UnicastNoArp(Ipv4Addr::new(192, 0, 2, 100), MacAddr(MAC))
        );
    }
}
