//! DHCP messages by hand, independent of rackboot's own codec (which is what is under
//! test): reading the fields tests look at, building client and relay messages byte
//! by byte (including ones no real client would send), and one exchange from a
//! socket inside a namespace. Real clients (dhclient, udhcpc, perfdhcp) are run by
//! the tests themselves, through `Netns::command`.

use crate::netns::{Netns, in_netns};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

/// The fields of a DHCP message that tests look at, read by hand (not by rackboot's
/// own decoder, which is what is under test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpSeen {
    pub op: u8,
    pub msg_type: Option<u8>,
    pub xid: u32,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub file: String,
    /// Options in wire order.
    pub options: Vec<(u8, Vec<u8>)>,
}

pub fn read_dhcp(payload: &[u8]) -> Option<DhcpSeen> {
    if payload.len() < 240 || payload[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let mut options = Vec::new();
    let mut at = 240;
    while let Some(&code) = payload.get(at) {
        match code {
            0 => at += 1,
            255 => break,
            _ => {
                let len = *payload.get(at + 1)? as usize;
                options.push((code, payload.get(at + 2..at + 2 + len)?.to_vec()));
                at += 2 + len;
            }
        }
    }
    let ip = |o: usize| Ipv4Addr::new(payload[o], payload[o + 1], payload[o + 2], payload[o + 3]);
    let file = payload[108..236]
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    Some(DhcpSeen {
        op: payload[0],
        msg_type: options
            .iter()
            .find(|(c, _)| *c == 53)
            .and_then(|(_, v)| v.first().copied()),
        xid: u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]),
        yiaddr: ip(16),
        siaddr: ip(20),
        chaddr: payload[28..34].try_into().ok()?,
        file,
        options,
    })
}

/// A DHCP client message built byte by byte, for tests that must send what no real
/// client would.
pub struct RawDhcp {
    pub bytes: Vec<u8>,
}

impl RawDhcp {
    /// A message of `msg_type` from `mac` with the broadcast flag set (replies come
    /// back broadcast, so a client without an address hears them).
    pub fn new(msg_type: u8, mac: [u8; 6], xid: u32) -> Self {
        let mut bytes = vec![0u8; 236];
        bytes[0] = 1;
        bytes[1] = 1;
        bytes[2] = 6;
        bytes[4..8].copy_from_slice(&xid.to_be_bytes());
        bytes[10] = 0x80;
        bytes[28..34].copy_from_slice(&mac);
        bytes.extend_from_slice(&[99, 130, 83, 99, 53, 1, msg_type]);
        RawDhcp { bytes }
    }

    pub fn option(mut self, code: u8, value: &[u8]) -> Self {
        self.bytes.push(code);
        self.bytes.push(value.len() as u8);
        self.bytes.extend_from_slice(value);
        self
    }

    pub fn giaddr(mut self, ip: Ipv4Addr) -> Self {
        self.bytes[24..28].copy_from_slice(&ip.octets());
        self
    }

    pub fn end(mut self) -> Vec<u8> {
        self.bytes.push(255);
        self.bytes
    }
}

/// Sends `packet` from `interface` in the client namespace and returns the first
/// DHCP reply for `xid` (none if nothing comes within `wait`). As a client (port 68, broadcast) when
/// `relay` is None; as a relay agent at that address (port 67, unicast to `server`)
/// otherwise.
pub fn dhcp_exchange(
    ns: &Netns,
    interface: &str,
    relay: Option<Ipv4Addr>,
    server: Ipv4Addr,
    packet: Vec<u8>,
    xid: u32,
    wait: Duration,
) -> Vec<DhcpSeen> {
    let (bind, to) = match relay {
        None => (
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
        ),
        Some(relay) => (SocketAddrV4::new(relay, 67), SocketAddrV4::new(server, 67)),
    };
    dhcp_send_from(ns, interface, bind, to, packet, xid, wait)
}

/// Sends `packet` from `bind` to `to` on `interface` in `ns` and returns the first
/// DHCP reply for `xid` that comes back to `bind` within `wait`.
pub fn dhcp_send_from(
    ns: &Netns,
    interface: &str,
    bind: SocketAddrV4,
    to: SocketAddrV4,
    packet: Vec<u8>,
    xid: u32,
    wait: Duration,
) -> Vec<DhcpSeen> {
    let interface = interface.to_string();
    in_netns(ns, move || {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .expect("socket");
        socket.set_reuse_address(true).expect("reuse");
        socket.set_broadcast(true).expect("broadcast");
        socket
            .bind_device(Some(interface.as_bytes()))
            .expect("bind device");
        socket.bind(&bind.into()).expect("bind");
        let socket: UdpSocket = socket.into();
        socket.send_to(&packet, to).expect("send");
        let end = Instant::now() + wait;
        let mut replies = Vec::new();
        let mut buf = [0u8; 2048];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left)).expect("timeout");
            match socket.recv_from(&mut buf) {
                Ok((len, _)) => {
                    if let Some(seen) = read_dhcp(&buf[..len])
                        && seen.op == 2
                        && seen.xid == xid
                    {
                        replies.push(seen);
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        replies
    })
}
