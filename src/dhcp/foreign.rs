//! Other DHCP servers on the boot link: a listener for the DHCP replies broadcast on
//! the DHCP interface (port 68, where clients hear them) that records each OFFER or
//! ACK another server sent to a machine of the inventory as a `dhcp.foreign-server`
//! event, which the boot diagnosis turns into "another DHCP server answered on this
//! link".
//!
//! Started in full DHCP mode only: in proxy mode another server hands out the
//! addresses by design. It sees what a port-68 socket can: replies sent broadcast
//! (a client that sets the broadcast flag, as PXE firmware commonly does, or a server
//! that broadcasts anyway) and replies to this host. A reply unicast to another
//! client's hardware address never reaches this host on a switched link. Failing to
//! bind (a DHCP client on the same host holding port 68 without SO_REUSEADDR) leaves
//! the rest of rackboot running.
//!
//! The decisions (is this reply foreign, should it be recorded now) are plain
//! functions and a small state, tested without sockets.

use crate::clock;
use crate::dhcp::wire::{self, CLIENT_PORT, Malformed, MessageType, ServerReply};
use crate::diagnosis::FOREIGN_SERVER;
use crate::mac::MacAddr;
use crate::store::{self, Store};
use crate::throttle::Throttle;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

/// Per machine and server, one event per this long: a server answers every retry.
const EVENT_EVERY_MS: i64 = 60_000;
/// Entries kept in the per-(machine, server) memory before it is emptied: a flood of
/// made-up replies must not grow memory without bound.
const MEMORY_CAP: usize = 65_536;
/// How often a repeated condition is logged again.
const LOG_EVERY_MS: i64 = 60_000;

/// What a datagram on port 68 is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// rackboot's own reply (the kernel loops a broadcast back to local sockets).
    Ours,
    /// A reply that offers nothing (NAK, INFORM answer...), or a client's message.
    Other,
    /// Another server's OFFER or ACK.
    Foreign(Foreign),
}

/// Another server's OFFER or ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    /// Its server identifier (option 54), else the address it came from.
    pub server: Ipv4Addr,
    pub source: Ipv4Addr,
    /// The client it answered.
    pub mac: MacAddr,
    pub msg_type: MessageType,
    pub yiaddr: Ipv4Addr,
}

impl Foreign {
    /// The detail of its `dhcp.foreign-server` event.
    pub fn detail(&self) -> String {
        format!(
            "server={} source={} mac={} type={} ip={}",
            self.server,
            self.source,
            self.mac,
            format!("{:?}", self.msg_type).to_lowercase(),
            self.yiaddr
        )
    }
}

/// Judges a datagram that arrived on port 68 from `source`, rackboot serving as
/// `own`. A reply is rackboot's if its server identifier is `own`, or, without one,
/// if it came from `own`.
pub fn judge(packet: &[u8], source: Ipv4Addr, own: Ipv4Addr) -> Result<Seen, Malformed> {
    let reply: ServerReply = match wire::parse_reply(packet) {
        Ok(reply) => reply,
        // A client's broadcast seen here (another client's DISCOVER) is no reply.
        Err(Malformed::NotReply(_)) => return Ok(Seen::Other),
        Err(e) => return Err(e),
    };
    if !matches!(reply.msg_type, MessageType::Offer | MessageType::Ack) {
        return Ok(Seen::Other);
    }
    let server = reply.server_id.unwrap_or(source);
    if server == own {
        return Ok(Seen::Ours);
    }
    Ok(Seen::Foreign(Foreign {
        server,
        source,
        mac: reply.mac,
        msg_type: reply.msg_type,
        yiaddr: reply.yiaddr,
    }))
}

/// When a foreign reply is worth an event: once per machine and server per
/// `EVENT_EVERY_MS`.
#[derive(Debug, Default)]
pub struct Recent {
    recorded: HashMap<(MacAddr, Ipv4Addr), i64>,
}

impl Recent {
    /// Whether `reply` should be recorded at `now_ms` (and, if so, it counts as
    /// recorded).
    pub fn should_record(&mut self, reply: &Foreign, now_ms: i64) -> bool {
        let key = (reply.mac, reply.server);
        if self
            .recorded
            .get(&key)
            .is_some_and(|at| now_ms - at < EVENT_EVERY_MS)
        {
            return false;
        }
        if self.recorded.len() >= MEMORY_CAP {
            self.recorded.clear();
        }
        self.recorded.insert(key, now_ms);
        true
    }
}

/// Binds port 68 on `interface` only, shared (SO_REUSEADDR) with any DHCP client of
/// this host, able to receive broadcasts. Needs CAP_NET_BIND_SERVICE and CAP_NET_RAW
/// (SO_BINDTODEVICE), as the DHCP server's own socket does.
pub fn bind(interface: &str) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.bind(&SocketAddr::from(([0, 0, 0, 0], CLIENT_PORT)).into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Receives on `socket` until it fails, recording foreign replies to machines of the
/// inventory. `own` is rackboot's server identifier.
pub async fn run(socket: std::net::UdpSocket, own: Ipv4Addr, store: Store) -> std::io::Result<()> {
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let mut recent = Recent::default();
    let mut malformed: u64 = 0;
    let mut malformed_log = Throttle::new(5, LOG_EVERY_MS);
    let mut foreign_log = Throttle::new(5, LOG_EVERY_MS);
    // Inventory look-ups are bounded too: made-up replies for made-up MACs must not
    // keep the database thread busy.
    let mut lookups = Throttle::new(50, 10_000);
    let mut buf = vec![0u8; 2048];
    loop {
        let (len, from) = socket.recv_from(&mut buf).await?;
        let SocketAddr::V4(from) = from else {
            continue;
        };
        let now_ms = clock::now_ms();
        let packet = buf.get(..len).unwrap_or(&[]);
        let reply = match judge(packet, *from.ip(), own) {
            Ok(Seen::Foreign(reply)) => reply,
            Ok(Seen::Ours | Seen::Other) => continue,
            Err(why) => {
                malformed += 1;
                if let Some(left_out) = malformed_log.hit(now_ms) {
                    tracing::debug!(%from, malformed, left_out, "malformed DHCP reply dropped: {why}");
                }
                continue;
            }
        };
        if let Some(left_out) = foreign_log.hit(now_ms) {
            tracing::warn!(
                server = %reply.server,
                source = %reply.source,
                mac = %reply.mac,
                kind = ?reply.msg_type,
                ip = %reply.yiaddr,
                left_out,
                "another DHCP server answered on the boot link"
            );
        }
        if !recent.should_record(&reply, now_ms) || lookups.hit(now_ms).is_none() {
            continue;
        }
        let mac = reply.mac;
        match store
            .call(move |db| store::get_machine(db, mac).map(|m| m.is_some()))
            .await
        {
            Ok(true) => store.record_event(now_ms, Some(mac), FOREIGN_SERVER, reply.detail()),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(%mac, "cannot look up the machine another DHCP server answered: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::wire::tests::Packet;

    const OWN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const OTHER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// A server's reply of `msg_type` to MAC, optionally with a server identifier.
    fn reply(msg_type: u8, server_id: Option<Ipv4Addr>) -> Vec<u8> {
        let mut packet = Packet::new(msg_type, MAC);
        if let Some(id) = server_id {
            packet = packet.option(54, &id.octets());
        }
        let mut bytes = packet.end();
        bytes[0] = 2;
        bytes[16..20].copy_from_slice(&[192, 0, 2, 120]);
        bytes
    }

    #[test]
    fn another_servers_offer_and_ack_are_foreign_ours_are_not() {
        let seen = judge(&reply(2, Some(OTHER)), OTHER, OWN).expect("decodes");
        let Seen::Foreign(foreign) = seen else {
            panic!("{seen:?}")
        };
        assert_eq!(foreign.server, OTHER);
        assert_eq!(foreign.mac, MacAddr(MAC));
        assert_eq!(
            foreign.detail(),
            "server=192.0.2.254 source=192.0.2.254 mac=52:54:00:12:34:56 type=offer ip=192.0.2.120"
        );
        assert!(matches!(
            judge(&reply(5, Some(OTHER)), OTHER, OWN),
            Ok(Seen::Foreign(_))
        ));
        // Relayed to us, its server identifier still names it.
        assert!(matches!(
            judge(&reply(5, Some(OTHER)), OWN, OWN),
            Ok(Seen::Foreign(f)) if f.server == OTHER && f.source == OWN
        ));
        // rackboot's own broadcasts, looped back.
        assert_eq!(judge(&reply(2, Some(OWN)), OWN, OWN), Ok(Seen::Ours));
        // Without a server identifier, the source decides.
        assert_eq!(judge(&reply(2, None), OWN, OWN), Ok(Seen::Ours));
        assert!(matches!(
            judge(&reply(2, None), OTHER, OWN),
            Ok(Seen::Foreign(f)) if f.server == OTHER
        ));
        // A NAK offers nothing; a client's DISCOVER is no reply.
        assert_eq!(judge(&reply(6, Some(OTHER)), OTHER, OWN), Ok(Seen::Other));
        assert_eq!(
            judge(&Packet::new(1, MAC).end(), OTHER, OWN),
            Ok(Seen::Other)
        );
    }

    #[test]
    fn malformed_replies_are_errors_never_panics() {
        let good = reply(2, Some(OTHER));
        for len in 0..good.len() {
            let _ = judge(&good[..len], OTHER, OWN);
        }
        assert!(judge(&good[..100], OTHER, OWN).is_err());
        let mut long_hlen = good.clone();
        long_hlen[2] = 17;
        assert!(judge(&long_hlen, OTHER, OWN).is_err());
        let mut overrun = good.clone();
        overrun.truncate(overrun.len() - 1);
        overrun.extend_from_slice(&[54, 200, 1]);
        assert!(judge(&overrun, OTHER, OWN).is_err());
        assert!(judge(&[2; 600], OTHER, OWN).is_err());
    }

    #[test]
    fn each_machine_and_server_is_recorded_once_a_minute() {
        let Ok(Seen::Foreign(offer)) = judge(&reply(2, Some(OTHER)), OTHER, OWN) else {
            panic!("foreign")
        };
        let mut recent = Recent::default();
        assert!(recent.should_record(&offer, 0));
        assert!(!recent.should_record(&offer, 1_000));
        let third = Foreign {
            server: Ipv4Addr::new(192, 0, 2, 253),
            ..offer.clone()
        };
        assert!(
            recent.should_record(&third, 1_000),
            "another server is news"
        );
        let other_client = Foreign {
            mac: MacAddr([2, 0, 0, 0, 0, 9]),
            ..offer.clone()
        };
        assert!(recent.should_record(&other_client, 1_000));
        assert!(recent.should_record(&offer, EVENT_EVERY_MS));
    }
}
