//! DHCP on the wire: decoding a request into a `ClientRequest`, encoding a reply, and
//! where the reply goes (RFC 2131 §4.1); decoding another server's reply into a
//! `ServerReply` (who answered whom). No sockets here.
//!
//! Requests are read with a bounds-checked option scanner of our own rather than
//! dhcproto's decoder: dhcproto 0.15 panics in `Message::chaddr()` when hlen > 16, stops
//! reading options (silently) at the first one it cannot type, and keeps only the first
//! entry of an option 93 list. Replies are encoded here too: dhcproto keeps options in a
//! map ordered by code, and clients want the options they asked for in the order of
//! their option 55 (some old PXE ROMs read only the first few).

use crate::mac::MacAddr;
use std::borrow::Cow;
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
    #[error("not a BOOTREPLY (op {0})")]
    NotReply(u8),
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

/// DHCP message types (option 53), RFC 2132 §9.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
}

impl MessageType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            _ => return None,
        })
    }

    pub fn code(self) -> u8 {
        match self {
            MessageType::Discover => 1,
            MessageType::Offer => 2,
            MessageType::Request => 3,
            MessageType::Decline => 4,
            MessageType::Ack => 5,
            MessageType::Nak => 6,
            MessageType::Release => 7,
            MessageType::Inform => 8,
        }
    }
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
    /// Option 61, at least two bytes (type and identifier).
    pub client_id: Option<Vec<u8>>,
    /// Option 118 (RFC 3011): the subnet to allocate from, set by a client or relay.
    pub subnet_selection: Option<Ipv4Addr>,
    /// Sub-option 5 of option 82 (RFC 3527): the relay's link, when giaddr is only
    /// the address the relay can be reached at.
    pub link_selection: Option<Ipv4Addr>,
    /// Option 93, every entry of the list (RFC 4578 allows several).
    pub archs: Vec<u16>,
    /// Option 60, lossily decoded.
    pub vendor_class: Option<String>,
    /// Option 77 carries "iPXE": the request comes from iPXE, not from firmware.
    pub is_ipxe: bool,
    pub hostname: Option<String>,
    pub param_request_list: Vec<u8>,
    /// Option 57: the longest IP datagram the client takes (RFC 2132 §9.10).
    pub max_message_size: Option<u16>,
    /// Raw values of options echoed back unchanged: 94 and 97 (PXE, RFC 4578) at
    /// their defined lengths only, 118 (RFC 3011) and 82 (RFC 3046, kept last).
    pub echo: Vec<(u8, Vec<u8>)>,
}

impl ClientRequest {
    pub fn broadcast_flag(&self) -> bool {
        self.flags & 0x8000 != 0
    }
}

/// The options of one message, by code. A value borrows from the packet unless the
/// option came in several parts (RFC 3396), which are joined. A fixed table rather
/// than a map: no allocation per option on the server's hot path.
struct Options<'a> {
    slots: [Option<Cow<'a, [u8]>>; 256],
}

impl<'a> Options<'a> {
    fn new() -> Self {
        Options {
            slots: std::array::from_fn(|_| None),
        }
    }

    fn add(&mut self, code: u8, value: &'a [u8]) {
        match &mut self.slots[code as usize] {
            slot @ None => *slot = Some(Cow::Borrowed(value)),
            Some(existing) => existing.to_mut().extend_from_slice(value),
        }
    }

    fn get(&self, code: u8) -> Option<&[u8]> {
        self.slots[code as usize].as_deref()
    }

    fn ipv4(&self, code: u8) -> Result<Option<Ipv4Addr>, Malformed> {
        self.get(code)
            .map(|v| {
                <[u8; 4]>::try_from(v)
                    .map(Ipv4Addr::from)
                    .map_err(|_| Malformed::BadLength { code, len: v.len() })
            })
            .transpose()
    }
}

/// Scans the options area, joining repeated options (RFC 3396) and following option
/// overload (52) into the `file` and `sname` fields.
fn scan_options(packet: &[u8]) -> Result<Options<'_>, Malformed> {
    let mut options = Options::new();
    let main = packet.get(HEADER_LEN + 4..).unwrap_or(&[]);
    scan_area(main, &mut options)?;
    let overload = options
        .get(52)
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

fn scan_area<'a>(area: &'a [u8], options: &mut Options<'a>) -> Result<(), Malformed> {
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
                options.add(code, value);
                at += 2 + len;
            }
        }
    }
    Ok(())
}

fn header_ip(packet: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3])
}

/// Sub-option 5 (link selection) of a relay agent information option, if present and
/// well formed. A malformed option 82 is still echoed; only this reading is skipped.
fn link_selection(relay_info: &[u8]) -> Option<Ipv4Addr> {
    let mut at = 0;
    while let (Some(&code), Some(&len)) = (relay_info.get(at), relay_info.get(at + 1)) {
        let value = relay_info.get(at + 2..at + 2 + len as usize)?;
        if code == 5 {
            let octets: [u8; 4] = value.try_into().ok()?;
            return Some(Ipv4Addr::from(octets));
        }
        at += 2 + len as usize;
    }
    None
}

/// The header both directions share: long enough for the magic cookie, the `op`
/// expected (`wrong_op` names another), Ethernet addresses, the cookie itself.
fn check_frame(packet: &[u8], op: u8, wrong_op: fn(u8) -> Malformed) -> Result<(), Malformed> {
    if packet.len() < HEADER_LEN + 4 {
        return Err(Malformed::TooShort(packet.len()));
    }
    if packet[0] != op {
        return Err(wrong_op(packet[0]));
    }
    let (htype, hlen) = (packet[1], packet[2]);
    if htype != 1 || hlen != 6 {
        return Err(Malformed::NotEthernet { htype, hlen });
    }
    if packet[HEADER_LEN..HEADER_LEN + 4] != MAGIC {
        return Err(Malformed::NoMagic);
    }
    Ok(())
}

/// Option 53, which every DHCP message carries as one byte.
fn message_type(options: &Options<'_>) -> Result<MessageType, Malformed> {
    match options.get(53) {
        None | Some([]) => Err(Malformed::NoMessageType),
        Some([t]) => MessageType::from_code(*t).ok_or(Malformed::UnknownMessageType(*t)),
        Some(v) => Err(Malformed::BadLength {
            code: 53,
            len: v.len(),
        }),
    }
}

/// Decodes a client message. Never panics on any input.
pub fn parse_request(packet: &[u8]) -> Result<ClientRequest, Malformed> {
    check_frame(packet, 1, Malformed::NotRequest)?;
    let options = scan_options(packet)?;
    let msg_type = message_type(&options)?;
    let archs = match options.get(93) {
        // An odd-length list is malformed; treat it as absent rather than guess.
        Some(v) if v.len() % 2 == 0 => v
            .chunks_exact(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect(),
        _ => Vec::new(),
    };
    let text = |code: u8| {
        options.get(code).filter(|v| !v.is_empty()).map(|v| {
            String::from_utf8_lossy(v)
                .trim_end_matches('\0')
                .to_string()
        })
    };
    let is_ipxe = options
        .get(77)
        .is_some_and(|v| v.windows(4).any(|w| w == b"iPXE"));
    let client_id = match options.get(61) {
        None => None,
        // RFC 2132 §9.14: at least a type byte and one byte of identifier. A zero-length
        // identifier crashed other servers; here it drops the packet.
        Some(v) if v.len() < 2 => {
            return Err(Malformed::BadLength {
                code: 61,
                len: v.len(),
            });
        }
        Some(v) => Some(v.to_vec()),
    };
    if let Some(v) = options.get(52)
        && v.len() != 1
    {
        return Err(Malformed::BadLength {
            code: 52,
            len: v.len(),
        });
    }
    let link_selection = options.get(82).and_then(link_selection);
    // 94 is 3 bytes and 97 is 17 (RFC 4578): anything else is not echoed, so a client
    // cannot make a reply as long as it likes.
    let echo = [94u8, 97, 118, 82]
        .into_iter()
        .filter_map(|code| options.get(code).map(|v| (code, v)))
        .filter(|(code, v)| match code {
            94 => v.len() == 3,
            97 => v.len() == 17,
            _ => true,
        })
        .map(|(code, v)| (code, v.to_vec()))
        .collect();
    let max_message_size = options
        .get(57)
        .filter(|v| v.len() == 2)
        .map(|v| u16::from_be_bytes([v[0], v[1]]));
    let mac = MacAddr::from_chaddr(&packet[28..34]).ok_or(Malformed::TooShort(packet.len()))?;
    Ok(ClientRequest {
        msg_type,
        xid: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        secs: u16::from_be_bytes([packet[8], packet[9]]),
        flags: u16::from_be_bytes([packet[10], packet[11]]),
        mac,
        ciaddr: header_ip(packet, 12),
        giaddr: header_ip(packet, 24),
        requested_ip: options.ipv4(50)?,
        server_id: options.ipv4(54)?,
        client_id,
        subnet_selection: options.ipv4(118)?,
        link_selection,
        archs,
        vendor_class: text(60),
        is_ipxe,
        hostname: text(12),
        param_request_list: options.get(55).map(<[u8]>::to_vec).unwrap_or_default(),
        max_message_size,
        echo,
    })
}

/// The parts of a server's reply (another server's, seen by `dhcp::foreign`) that tell
/// who answered whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    pub msg_type: MessageType,
    pub xid: u32,
    /// The client answered (chaddr).
    pub mac: MacAddr,
    pub yiaddr: Ipv4Addr,
    /// Option 54; a BOOTP-style reply may have none.
    pub server_id: Option<Ipv4Addr>,
}

/// Decodes a server's reply (op 2) with the same bounds-checked scanner as requests.
/// Never panics on any input.
pub fn parse_reply(packet: &[u8]) -> Result<ServerReply, Malformed> {
    check_frame(packet, 2, Malformed::NotReply)?;
    let options = scan_options(packet)?;
    let msg_type = message_type(&options)?;
    let mac = MacAddr::from_chaddr(&packet[28..34]).ok_or(Malformed::TooShort(packet.len()))?;
    Ok(ServerReply {
        msg_type,
        xid: u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]),
        mac,
        yiaddr: header_ip(packet, 16),
        server_id: options.ipv4(54)?,
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
    pub lease: Option<LeaseTimes>,
    pub subnet_mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    /// Option 15 (the subnet's `domain`): d-i and Anaconda build the FQDN with it.
    pub domain: Option<String>,
    pub boot: Option<BootReply>,
    pub message: Option<String>,
    /// Option 43, already encoded (PXE sub-options in proxy replies).
    pub vendor_options: Option<Vec<u8>>,
}

/// Options 51, 58 and 59 (RFC 2131 §4.4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    pub lease_secs: u32,
    pub renew_secs: u32,
    pub rebind_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootReply {
    /// `siaddr`: the TFTP server.
    pub next_server: Ipv4Addr,
    /// A TFTP path or an `http://` URL.
    pub filename: String,
    /// Option 60 in the reply: `HTTPClient` for UEFI HTTP boot, `PXEClient` in a
    /// proxyDHCP reply (that is how a PXE client tells a proxy offer apart).
    pub vendor_class: Option<String>,
}

/// Appends one option, split into several of the same code when longer than 255
/// bytes (RFC 3396).
fn put_option(buf: &mut Vec<u8>, code: u8, value: &[u8]) {
    if value.is_empty() {
        buf.extend_from_slice(&[code, 0]);
        return;
    }
    for chunk in value.chunks(255) {
        buf.push(code);
        buf.push(chunk.len() as u8);
        buf.extend_from_slice(chunk);
    }
}

/// A reply's options before they are put in order: the values side by side in one
/// buffer, (code, start, end) for each. Two allocations per reply instead of one per
/// option.
struct ReplyOptions {
    data: Vec<u8>,
    entries: Vec<(u8, usize, usize)>,
}

impl ReplyOptions {
    fn push(&mut self, code: u8, value: &[u8]) {
        // A relay's own option and our echo of it must not both appear.
        self.entries.retain(|(c, _, _)| *c != code);
        let start = self.data.len();
        self.data.extend_from_slice(value);
        self.entries.push((code, start, self.data.len()));
    }

    fn push_ips(&mut self, code: u8, list: &[Ipv4Addr]) {
        let start = self.data.len();
        for ip in list {
            self.data.extend_from_slice(&ip.octets());
        }
        self.entries.push((code, start, self.data.len()));
    }
}

fn reply_options(request: &ClientRequest, spec: &ReplySpec) -> ReplyOptions {
    let mut opts = ReplyOptions {
        data: Vec::with_capacity(256),
        entries: Vec::with_capacity(16),
    };
    opts.push(54, &spec.server_id.octets());
    if let Some(times) = spec.lease {
        opts.push(51, &times.lease_secs.to_be_bytes());
        opts.push(58, &times.renew_secs.to_be_bytes());
        opts.push(59, &times.rebind_secs.to_be_bytes());
    }
    if let Some(mask) = spec.subnet_mask {
        opts.push(1, &mask.octets());
    }
    if let Some(router) = spec.router {
        opts.push(3, &router.octets());
    }
    if !spec.dns.is_empty() {
        opts.push_ips(6, &spec.dns);
    }
    if let Some(hostname) = &spec.hostname {
        opts.push(12, hostname.as_bytes());
    }
    if let Some(domain) = &spec.domain {
        opts.push(15, domain.as_bytes());
    }
    if let Some(message) = &spec.message {
        opts.push(56, message.as_bytes());
    }
    if let Some(vendor) = &spec.vendor_options {
        opts.push(43, vendor);
    }
    if let Some(boot) = &spec.boot {
        opts.push(66, boot.next_server.to_string().as_bytes());
        opts.push(67, boot.filename.as_bytes());
        if let Some(class) = &boot.vendor_class {
            opts.push(60, class.as_bytes());
        }
    }
    if request.is_ipxe && spec.boot.is_some() {
        // iPXE's encapsulated option 175, sub-option 176 (no-pxedhcp): this answer is
        // complete, so iPXE need not wait ~3 s for ProxyDHCP offers before it requests.
        opts.push(175, &[176, 1, 1]);
    }
    for (code, value) in &request.echo {
        opts.push(*code, value);
    }
    // RFC 6842: a client identifier the client sent comes back in every reply, so a
    // client that shares its hardware address can tell the reply is its own.
    if let Some(client_id) = &request.client_id {
        opts.push(61, client_id);
    }
    opts
}

/// Where `sname` starts in the BOOTP header, and its length.
const SNAME_AT: usize = 44;
const SNAME_LEN: usize = 64;

/// Bytes an option takes encoded (split in parts of 255, RFC 3396).
fn option_len(value_len: usize) -> usize {
    if value_len == 0 {
        2
    } else {
        value_len + 2 * value_len.div_ceil(255)
    }
}

/// Options a reply keeps whatever its size: the server identifier and lease time
/// (RFC 2131 table 3), the client identifier (RFC 6842) and the relay's option 82
/// (RFC 3046).
fn required_in_reply(code: u8) -> bool {
    matches!(code, 51 | 54 | 61 | 82)
}

/// The most a reply's DHCP message may be: the client's option 57 (an IP datagram
/// size, so IP and UDP headers come off), 576 without it (RFC 2131 §2), and never
/// more than fits an Ethernet frame unfragmented, which PXE ROMs cannot reassemble.
pub fn reply_limit(request: &ClientRequest) -> usize {
    const IP_UDP_HEADERS: usize = 28;
    let datagram = request
        .max_message_size
        .map_or(576, usize::from)
        .clamp(576, 1500);
    datagram - IP_UDP_HEADERS
}

/// Encodes a reply. Option 53 comes first, then the options the client asked for in
/// the order of its option 55, then the rest by code, and option 82 last (RFC 3046:
/// the relay strips it from the end).
pub fn encode_reply(request: &ClientRequest, spec: &ReplySpec) -> Vec<u8> {
    let mut buf = Vec::with_capacity(MIN_REPLY_LEN + 128);
    buf.extend_from_slice(&[2, 1, 6, 0]);
    buf.extend_from_slice(&request.xid.to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
    // RFC 2131 4.3.2: a NAK sent through a relay has the broadcast bit set, so the
    // relay broadcasts it to a client whose address is no longer valid.
    let flags = if spec.msg_type == MessageType::Nak && !request.giaddr.is_unspecified() {
        request.flags | 0x8000
    } else {
        request.flags
    };
    buf.extend_from_slice(&flags.to_be_bytes());
    buf.extend_from_slice(&spec.ciaddr.octets());
    buf.extend_from_slice(&spec.yiaddr.octets());
    let siaddr = spec
        .boot
        .as_ref()
        .map_or(Ipv4Addr::UNSPECIFIED, |b| b.next_server);
    buf.extend_from_slice(&siaddr.octets());
    buf.extend_from_slice(&request.giaddr.octets());
    buf.extend_from_slice(&request.mac.0);
    buf.resize(buf.len() + 10 + 64, 0); // rest of chaddr, sname
    let file_at = buf.len();
    buf.resize(file_at + 128, 0);
    if let Some(boot) = &spec.boot
        // The header field holds 127 bytes and a NUL; a longer URL goes in option 67 only.
        && boot.filename.len() < 128
    {
        buf[file_at..file_at + boot.filename.len()].copy_from_slice(boot.filename.as_bytes());
    }
    buf.extend_from_slice(&MAGIC);
    put_option(&mut buf, 53, &[spec.msg_type.code()]);

    let opts = reply_options(request, spec);
    let requested = |code: u8| request.param_request_list.contains(&code);
    // Requested options in the order of option 55, then the rest by code, 82 last.
    let mut order: Vec<(u8, usize, usize)> = Vec::with_capacity(opts.entries.len());
    for &code in &request.param_request_list {
        if code != 82
            && let Some(entry) = opts.entries.iter().find(|(c, _, _)| *c == code)
            && !order.iter().any(|(c, _, _)| *c == code)
        {
            order.push(*entry);
        }
    }
    let mut rest: Vec<_> = opts
        .entries
        .iter()
        .filter(|(c, _, _)| !order.iter().any(|(o, _, _)| o == c))
        .copied()
        .collect();
    rest.sort_by_key(|(code, _, _)| (*code == 82, *code));
    order.extend(rest);
    // siaddr and `file` already carry 66 and 67: sent again only when asked for.
    let file_carries_name = spec.boot.as_ref().is_some_and(|b| b.filename.len() < 128);
    order.retain(|(code, _, _)| match code {
        66 => requested(66),
        67 => requested(67) || !file_carries_name,
        _ => true,
    });

    // A boot file name too long for `file` exists only as option 67: never dropped.
    let required = |code: u8| required_in_reply(code) || (code == 67 && !file_carries_name);
    let limit = reply_limit(request);
    let base = buf.len() + 1; // the options so far and the end option
    let total = |order: &[(u8, usize, usize)]| -> usize {
        base + order
            .iter()
            .map(|(_, s, e)| option_len(e - s))
            .sum::<usize>()
    };
    // Over the limit: options the client did not ask for go first, the newest-coded
    // first; then, if still too long, options move into `sname` (overload, RFC 2132
    // §9.3; never into `file`, which PXE ROMs read the boot file from); then the
    // requested options asked for last go.
    while total(&order) > limit {
        match order
            .iter()
            .rposition(|(code, _, _)| !required(*code) && !requested(*code))
        {
            Some(at) => {
                order.remove(at);
            }
            None => break,
        }
    }
    // Then 66 and 67 even when asked for, when siaddr and `file` carry them anyway.
    while total(&order) > limit {
        match order
            .iter()
            .rposition(|(code, _, _)| *code == 66 || (*code == 67 && file_carries_name))
        {
            Some(at) => {
                order.remove(at);
            }
            None => break,
        }
    }
    let mut in_sname: Vec<(u8, usize, usize)> = Vec::new();
    let before_overload = order.clone();
    if total(&order) > limit {
        // 64 bytes, the last for the end option; option 52 itself costs 3.
        let mut room = SNAME_LEN - 1;
        let mut at = 0;
        while at < order.len() && total(&order) + 3 > limit {
            let (code, start, end) = order[at];
            let size = option_len(end - start);
            // The message type and what a client cannot do without stay in the
            // options field, for clients that ignore option 52.
            if code != 53 && !required(code) && size <= room {
                room -= size;
                in_sname.push(order.remove(at));
            } else {
                at += 1;
            }
        }
    }
    while total(&order) + if in_sname.is_empty() { 0 } else { 3 } > limit {
        match order.iter().rposition(|(code, _, _)| !required(*code)) {
            Some(at) => {
                order.remove(at);
            }
            None => break,
        }
    }
    // What was dropped may have made room: options moved to `sname` come back to
    // the options field when all that is left fits there, since some clients
    // ignore option 52.
    if !in_sname.is_empty() {
        let merged: Vec<_> = before_overload
            .iter()
            .filter(|entry| order.contains(entry) || in_sname.contains(entry))
            .copied()
            .collect();
        if total(&merged) <= limit {
            order = merged;
            in_sname.clear();
        }
    }
    if !in_sname.is_empty() {
        put_option(&mut buf, 52, &[2]);
    }
    for &(code, start, end) in &order {
        put_option(&mut buf, code, &opts.data[start..end]);
    }
    if !in_sname.is_empty() {
        let mut sname = Vec::with_capacity(SNAME_LEN);
        for &(code, start, end) in &in_sname {
            put_option(&mut sname, code, &opts.data[start..end]);
        }
        sname.push(255);
        buf[SNAME_AT..SNAME_AT + sname.len()].copy_from_slice(&sname);
    }
    buf.push(255);
    if buf.len() < MIN_REPLY_LEN {
        buf.resize(MIN_REPLY_LEN, 0);
    }
    buf
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
    // A zero, broadcast or multicast hardware address is no station's: a neighbour
    // entry for it would be nonsense, so such a client is answered by broadcast.
    let [first, ..] = request.mac.0;
    let no_station = request.mac.0 == [0; 6] || first & 1 == 1;
    if request.broadcast_flag() || spec.yiaddr.is_unspecified() || no_station {
        return Destination::Broadcast;
    }
    Destination::UnicastNoArp(spec.yiaddr, request.mac)
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use dhcproto::v4::{DhcpOption, Message, Opcode, OptionCode};

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
        assert_eq!(
            parse_request(&zero_client_id),
            Err(Malformed::BadLength { code: 61, len: 0 })
        );
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
            lease: Some(LeaseTimes {
                lease_secs: 3600,
                renew_secs: 1800,
                rebind_secs: 3150,
            }),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            router: Some(Ipv4Addr::new(192, 0, 2, 1)),
            dns: vec![Ipv4Addr::new(192, 0, 2, 1)],
            domain: Some("lab.example".into()),
            hostname: Some("node1".into()),
            boot: Some(BootReply {
                next_server: Ipv4Addr::new(192, 0, 2, 1),
                filename: "snponly.efi".into(),
                vendor_class: None,
            }),
            message: None,
            vendor_options: None,
        }
    }

    #[test]
    fn reply_is_padded_and_carries_options_a_client_reads() {
        let raw = Packet::new(1, MAC)
            .option(82, &[1, 3, b'e', b't', b'h'])
            .end();
        let req = parse_request(&raw).expect("parses");
        let bytes = encode_reply(&req, &spec(MessageType::Offer));
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
        assert!(msg.opts().has_msg_type(dhcproto::v4::MessageType::Offer));
        assert_eq!(
            msg.opts().get(OptionCode::DomainName),
            Some(&DhcpOption::DomainName("lab.example".into()))
        );
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
        assert!(has(&encode_reply(&ipxe, &spec(MessageType::Offer))));
        assert!(!has(&encode_reply(&firmware, &spec(MessageType::Offer))));
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
        for no_station in [[0u8; 6], [0xff; 6], [0x01, 0, 0x5e, 0, 0, 1]] {
            let odd = parse(Packet::new(1, no_station).end());
            assert_eq!(
                destination(&odd, &offer),
                Destination::Broadcast,
                "{no_station:02x?}"
            );
        }
    }

    #[test]
    fn a_nak_through_a_relay_has_the_broadcast_bit() {
        let relayed =
            parse_request(&Packet::new(3, MAC).giaddr([198, 18, 0, 1]).end()).expect("parses");
        let flags = |bytes: &[u8]| u16::from_be_bytes([bytes[10], bytes[11]]);
        let nak = encode_reply(&relayed, &spec(MessageType::Nak));
        assert_eq!(flags(&nak) & 0x8000, 0x8000);
        let ack = encode_reply(&relayed, &spec(MessageType::Ack));
        assert_eq!(flags(&ack), 0, "other replies keep the client's flags");
        let direct = parse_request(&Packet::new(3, MAC).end()).expect("parses");
        assert_eq!(flags(&encode_reply(&direct, &spec(MessageType::Nak))), 0);
    }

    #[test]
    fn the_client_identifier_is_echoed() {
        let id = [1, 0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let with = parse_request(&Packet::new(1, MAC).option(61, &id).end()).expect("parses");
        for msg_type in [MessageType::Offer, MessageType::Ack, MessageType::Nak] {
            let reply = encode_reply(&with, &spec(msg_type));
            assert!(
                options_of(&reply).contains(&(61, id.to_vec())),
                "{msg_type:?}"
            );
        }
        let without = parse_request(&Packet::new(1, MAC).end()).expect("parses");
        let reply = encode_reply(&without, &spec(MessageType::Offer));
        assert!(options_of(&reply).iter().all(|(code, _)| *code != 61));
    }

    /// The option codes of an encoded reply, in order, and their values.
    fn options_of(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut found = Vec::new();
        let mut at = HEADER_LEN + 4;
        while let Some(&code) = bytes.get(at) {
            match code {
                0 => at += 1,
                255 => break,
                _ => {
                    let len = bytes[at + 1] as usize;
                    found.push((code, bytes[at + 2..at + 2 + len].to_vec()));
                    at += 2 + len;
                }
            }
        }
        found
    }

    #[test]
    fn options_follow_the_order_of_option_55_and_82_comes_last() {
        let raw = Packet::new(1, MAC)
            .option(55, &[67, 6, 3, 1, 51, 66])
            .option(82, &[1, 2, b'p', b'1'])
            .option(97, &[0; 17])
            .end();
        let req = parse_request(&raw).expect("parses");
        let codes: Vec<u8> = options_of(&encode_reply(&req, &spec(MessageType::Offer)))
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(codes[0], 53);
        assert_eq!(&codes[1..7], &[67, 6, 3, 1, 51, 66]);
        assert_eq!(codes.last(), Some(&82));
        // The ones not asked for follow by code: 12, 15, 54, 58, 59, then the echoed 97.
        assert_eq!(&codes[7..codes.len() - 1], &[12, 15, 54, 58, 59, 97]);
    }

    /// Options in a region (the options field, or `sname` when overloaded).
    fn options_in(region: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut found = Vec::new();
        let mut at = 0;
        while let Some(&code) = region.get(at) {
            match code {
                0 => at += 1,
                255 => break,
                _ => {
                    let len = region[at + 1] as usize;
                    found.push((code, region[at + 2..at + 2 + len].to_vec()));
                    at += 2 + len;
                }
            }
        }
        found
    }

    fn many_dns(n: u8) -> Vec<Ipv4Addr> {
        (1..=n).map(|i| Ipv4Addr::new(198, 18, 1, i)).collect()
    }

    #[test]
    fn a_reply_fits_576_bytes_without_option_57_and_the_clients_limit_with_it() {
        let mut big = spec(MessageType::Offer);
        big.dns = many_dns(90); // 360 bytes of option 6
        let asked = Packet::new(1, MAC).option(55, &[1, 3, 6, 67]);
        let plain = parse_request(&asked.end()).expect("parses");
        let bytes = encode_reply(&plain, &big);
        assert!(
            bytes.len() <= 548,
            "{} bytes without option 57",
            bytes.len()
        );
        let codes: Vec<u8> = options_of(&bytes)
            .into_iter()
            .chain(options_in(&bytes[44..108]))
            .map(|(c, _)| c)
            .collect();
        for must in [53, 54, 51] {
            assert!(codes.contains(&must), "{must} kept: {codes:?}");
        }
        // Not asked for: dropped before anything asked for.
        assert!(!codes.contains(&12) && !codes.contains(&15), "{codes:?}");
        let msg = <Message as dhcproto::Decodable>::decode(&mut dhcproto::Decoder::new(&bytes))
            .expect("another decoder reads it");
        assert!(msg.opts().has_msg_type(dhcproto::v4::MessageType::Offer));

        let roomy = Packet::new(1, MAC)
            .option(55, &[1, 3, 6, 67])
            .option(57, &1500u16.to_be_bytes());
        let bytes = encode_reply(&parse_request(&roomy.end()).expect("parses"), &big);
        assert!(
            bytes.len() > 548 && bytes.len() <= 1472,
            "{} bytes",
            bytes.len()
        );
        let dns: Vec<u8> = options_of(&bytes)
            .into_iter()
            .filter(|(c, _)| *c == 6)
            .flat_map(|(_, v)| v)
            .collect();
        assert_eq!(dns.len(), 360, "every name server, with room for them");
        // A client's limit above an Ethernet frame is held to one frame.
        let huge = Packet::new(1, MAC).option(57, &9000u16.to_be_bytes()).end();
        assert_eq!(reply_limit(&parse_request(&huge).expect("parses")), 1472);
        let tiny = Packet::new(1, MAC).option(57, &100u16.to_be_bytes()).end();
        assert_eq!(reply_limit(&parse_request(&tiny).expect("parses")), 548);
    }

    #[test]
    fn pxe_options_are_echoed_only_at_their_defined_lengths() {
        let long97 = vec![0u8; 255];
        let raw = Packet::new(1, MAC)
            .option(97, &long97)
            .option(97, &long97)
            .option(97, &long97)
            .option(94, &[1, 2, 1, 0])
            .end();
        let req = parse_request(&raw).expect("parses");
        assert!(req.echo.is_empty(), "{:?}", req.echo);
        let bytes = encode_reply(&req, &spec(MessageType::Offer));
        assert!(bytes.len() <= 548, "{} bytes", bytes.len());
        let raw = Packet::new(1, MAC)
            .option(97, &[0; 17])
            .option(94, &[1, 2, 1])
            .end();
        let req = parse_request(&raw).expect("parses");
        let codes: Vec<u8> = req.echo.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, vec![94, 97]);
    }

    #[test]
    fn options_66_and_67_are_sent_when_asked_for_or_needed() {
        let unasked = parse_request(&Packet::new(1, MAC).option(55, &[1, 3]).end()).expect("p");
        let bytes = encode_reply(&unasked, &spec(MessageType::Offer));
        let codes: Vec<u8> = options_of(&bytes).iter().map(|(c, _)| *c).collect();
        assert!(!codes.contains(&66) && !codes.contains(&67), "{codes:?}");
        assert_eq!(&bytes[108..119], b"snponly.efi", "file carries the name");
        assert_eq!(&bytes[20..24], &[192, 0, 2, 1], "siaddr the server");
        let asked = parse_request(&Packet::new(1, MAC).option(55, &[66, 67]).end()).expect("p");
        let codes: Vec<u8> = options_of(&encode_reply(&asked, &spec(MessageType::Offer)))
            .iter()
            .map(|(c, _)| *c)
            .collect();
        assert!(codes.contains(&66) && codes.contains(&67), "{codes:?}");
    }

    #[test]
    fn no_overload_when_dropping_a_long_option_leaves_room_in_the_options_field() {
        // Seen with OVMF: 350 DNS servers cannot fit whatever is done, so option 6 is
        // dropped; the small options moved to sname on the way come back, since
        // some clients ignore option 52.
        let mut big = spec(MessageType::Offer);
        big.dns = many_dns(150); // 600 bytes: more than the whole budget
        let raw = Packet::new(1, MAC).option(55, &[1, 3, 6]).end();
        let bytes = encode_reply(&parse_request(&raw).expect("parses"), &big);
        assert!(bytes.len() <= 548, "{} bytes", bytes.len());
        let main = options_of(&bytes);
        let codes: Vec<u8> = main.iter().map(|(c, _)| *c).collect();
        assert!(!codes.contains(&52), "no overload needed: {codes:?}");
        assert!(!codes.contains(&6), "the list that cannot fit is left out");
        for kept in [1, 3, 53, 54, 51] {
            assert!(
                codes.contains(&kept),
                "{kept} in the options field: {codes:?}"
            );
        }
        assert!(options_in(&bytes[44..108]).is_empty(), "sname unused");
    }

    #[test]
    fn a_reply_still_too_long_overloads_sname_never_file() {
        let mut big = spec(MessageType::Offer);
        big.dns = many_dns(60); // 240 bytes
        big.hostname = Some("h".repeat(40));
        big.domain = Some("d".repeat(40));
        let raw = Packet::new(1, MAC).option(55, &[1, 3, 6, 12, 15, 67]).end();
        let bytes = encode_reply(&parse_request(&raw).expect("parses"), &big);
        assert!(bytes.len() <= 548, "{} bytes", bytes.len());
        let main = options_of(&bytes);
        let overload = main.iter().find(|(c, _)| *c == 52).map(|(_, v)| v.clone());
        assert_eq!(
            overload,
            Some(vec![2]),
            "option 52 says: sname holds options"
        );
        let in_sname = options_in(&bytes[44..108]);
        assert!(!in_sname.is_empty(), "options were moved into sname");
        assert_eq!(
            &bytes[108..119],
            b"snponly.efi",
            "file still holds the boot file"
        );
        let mut all: Vec<u8> = main.iter().chain(&in_sname).map(|(c, _)| *c).collect();
        all.sort();
        for asked in [1, 3, 6, 12, 15] {
            assert!(all.contains(&asked), "{asked} sent somewhere: {all:?}");
        }
        let main_codes: Vec<u8> = main.iter().map(|(c, _)| *c).collect();
        for kept in [53, 54, 51] {
            assert!(
                main_codes.contains(&kept),
                "{kept} stays in the options field"
            );
        }
    }

    #[test]
    fn long_options_are_split_per_rfc3396() {
        let raw = Packet::new(1, MAC).end();
        let req = parse_request(&raw).expect("parses");
        let mut long = spec(MessageType::Ack);
        let url = format!("http://192.0.2.1/{}", "x".repeat(300));
        if let Some(boot) = long.boot.as_mut() {
            boot.filename = url.clone();
        }
        let bytes = encode_reply(&req, &long);
        let parts: Vec<Vec<u8>> = options_of(&bytes)
            .into_iter()
            .filter(|(c, _)| *c == 67)
            .map(|(_, v)| v)
            .collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts.concat(), url.as_bytes());
        // Too long for the header field: left empty there.
        assert!(bytes[108..236].iter().all(|b| *b == 0));
        // And our own decoder reads it back whole.
        let mut as_request = bytes.clone();
        as_request[0] = 1;
        let decoded = scan_options(&as_request).expect("scans");
        assert_eq!(decoded.get(67), Some(url.as_bytes()));
    }

    #[test]
    fn subnet_selection_and_link_selection_are_read() {
        let raw = Packet::new(1, MAC)
            .giaddr([203, 0, 113, 1])
            .option(118, &[198, 18, 1, 0])
            .option(82, &[1, 2, b'p', b'1', 5, 4, 198, 18, 2, 0])
            .end();
        let req = parse_request(&raw).expect("parses");
        assert_eq!(req.subnet_selection, Some(Ipv4Addr::new(198, 18, 1, 0)));
        assert_eq!(req.link_selection, Some(Ipv4Addr::new(198, 18, 2, 0)));
        // Both are echoed unchanged (RFC 3011 §2, RFC 3046).
        let echoed: Vec<u8> = req.echo.iter().map(|(c, _)| *c).collect();
        assert_eq!(echoed, vec![118, 82]);
        // A truncated sub-option is ignored, the option still echoed.
        let bad = Packet::new(1, MAC).option(82, &[5, 9, 1, 2]).end();
        let req = parse_request(&bad).expect("parses");
        assert_eq!(req.link_selection, None);
        assert_eq!(req.echo, vec![(82, vec![5, 9, 1, 2])]);
        let short_118 = Packet::new(1, MAC).option(118, &[198, 18]).end();
        assert_eq!(
            parse_request(&short_118),
            Err(Malformed::BadLength { code: 118, len: 2 })
        );
    }

    #[test]
    fn client_identifier_is_read() {
        let raw = Packet::new(1, MAC)
            .option(61, &[1, 0x52, 0x54, 0, 0x12, 0x34, 0x56])
            .end();
        let req = parse_request(&raw).expect("parses");
        assert_eq!(
            req.client_id,
            Some(vec![1, 0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        let one_byte = Packet::new(1, MAC).option(61, &[1]).end();
        assert!(parse_request(&one_byte).is_err());
    }

    #[test]
    fn nak_carries_no_lease_and_no_boot_file() {
        let raw = Packet::new(3, MAC).option(55, &[1, 3, 51]).end();
        let req = parse_request(&raw).expect("parses");
        let nak = ReplySpec {
            msg_type: MessageType::Nak,
            server_id: Ipv4Addr::new(192, 0, 2, 1),
            yiaddr: Ipv4Addr::UNSPECIFIED,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            lease: None,
            subnet_mask: None,
            router: None,
            dns: vec![],
            domain: None,
            hostname: None,
            boot: None,
            message: Some("wrong address".into()),
            vendor_options: None,
        };
        let codes: Vec<u8> = options_of(&encode_reply(&req, &nak))
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        assert_eq!(codes, vec![53, 54, 56]);
    }

    #[test]
    fn a_reply_reads_back_who_answered_whom() {
        let req = parse_request(&Packet::new(1, MAC).broadcast().end()).expect("request");
        let offer = ReplySpec {
            msg_type: MessageType::Offer,
            server_id: Ipv4Addr::new(192, 0, 2, 254),
            yiaddr: Ipv4Addr::new(192, 0, 2, 120),
            ciaddr: Ipv4Addr::UNSPECIFIED,
            lease: None,
            subnet_mask: None,
            router: None,
            dns: vec![],
            domain: None,
            hostname: None,
            boot: None,
            message: None,
            vendor_options: None,
        };
        let bytes = encode_reply(&req, &offer);
        let reply = parse_reply(&bytes).expect("reply");
        assert_eq!(reply.msg_type, MessageType::Offer);
        assert_eq!(reply.mac, MacAddr(MAC));
        assert_eq!(reply.xid, 0x1234_5678);
        assert_eq!(reply.yiaddr, Ipv4Addr::new(192, 0, 2, 120));
        assert_eq!(reply.server_id, Some(Ipv4Addr::new(192, 0, 2, 254)));
        // A request is not a reply, and no prefix of a reply makes the decoder panic.
        assert_eq!(
            parse_reply(&Packet::new(1, MAC).end()),
            Err(Malformed::NotReply(1))
        );
        for len in 0..bytes.len() {
            let _ = parse_reply(&bytes[..len]);
        }
        // A server identifier of the wrong length is malformed, not misread.
        let mut bad = Packet::new(2, MAC).option(54, &[192, 0, 2]).end();
        bad[0] = 2;
        assert_eq!(
            parse_reply(&bad),
            Err(Malformed::BadLength { code: 54, len: 3 })
        );
    }
}
