//! A minimal IPv6 router advertisement, to end iPXE's wait. iPXE's "Configuring" step
//! waits about 13 s for an IPv6 router on a network that has none. A router
//! advertisement with router lifetime 0 and no prefix announces no route and no
//! address (RFC 4861 §6.2.3: lifetime 0 means "not a default router"), yet tells
//! iPXE the link has been configured, so it asks for its script at once.
//!
//! rackboot answers router solicitations on the DHCP interface only, and stays silent
//! while another router advertises on the link.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use tokio::net::UdpSocket;
use tokio::time::{Duration, Instant};

const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;
/// How long another router's advertisement keeps rackboot silent.
const OTHER_ROUTER_HOLD: Duration = Duration::from_secs(3600);
/// Answers wait this long, so a real router on the link answers first and is heard.
const ANSWER_DELAY: Duration = Duration::from_millis(100);

pub fn is_router_solicitation(packet: &[u8]) -> bool {
    packet.len() >= 8 && packet[0] == ROUTER_SOLICITATION && packet[1] == 0
}

pub fn is_router_advertisement(packet: &[u8]) -> bool {
    packet.len() >= 16 && packet[0] == ROUTER_ADVERTISEMENT && packet[1] == 0
}

/// Router lifetime 0, no flags, no prefix: nothing to configure. The source
/// link-layer option lets hosts answer without neighbour discovery. The checksum is
/// left zero: the kernel fills it in on ICMPv6 raw sockets.
pub fn router_advertisement(mac: [u8; 6]) -> Vec<u8> {
    let mut packet = vec![
        ROUTER_ADVERTISEMENT,
        0, // code
        0,
        0, // checksum
        0, // current hop limit: unspecified
        0, // M and O flags off: no DHCPv6 either
        0,
        0, // router lifetime 0: not a default router
        0,
        0,
        0,
        0, // reachable time: unspecified
        0,
        0,
        0,
        0, // retransmit timer: unspecified
        1, // option: source link-layer address
        1, // length in units of 8 bytes
    ];
    packet.extend_from_slice(&mac);
    packet
}

/// Whether to answer, given what has been heard on the link. Pure, with time given.
#[derive(Debug, Default)]
pub struct Responder {
    other_router_at: Option<Instant>,
    pending_since: Option<Instant>,
}

impl Responder {
    /// A solicitation arrived: when to answer, unless another router speaks first.
    pub fn solicited(&mut self, now: Instant) -> Option<Instant> {
        if self.other_router_recently(now) {
            return None;
        }
        let since = *self.pending_since.get_or_insert(now);
        Some(since + ANSWER_DELAY)
    }

    /// Another router advertised: stay silent for a while. Returns true the first
    /// time, for a log line.
    pub fn heard_other_router(&mut self, now: Instant) -> bool {
        let first = !self.other_router_recently(now);
        self.other_router_at = Some(now);
        self.pending_since = None;
        first
    }

    /// The answer's time came: answer if nothing changed the plan.
    pub fn due(&mut self, now: Instant) -> bool {
        let pending = self.pending_since.take();
        pending.is_some() && !self.other_router_recently(now)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending_since.map(|t| t + ANSWER_DELAY)
    }

    fn other_router_recently(&self, now: Instant) -> bool {
        self.other_router_at
            .is_some_and(|t| now.saturating_duration_since(t) < OTHER_ROUTER_HOLD)
    }
}

fn interface_index(interface: &str) -> std::io::Result<u32> {
    let name = std::ffi::CString::new(interface)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "interface name"))?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(index)
}

/// The interface's hardware address, for the source link-layer option.
fn interface_mac(interface: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address")).ok()?;
    crate::mac::MacAddr::parse(text.trim()).ok().map(|m| m.0)
}

/// Binds an ICMPv6 raw socket on `interface` that hears solicitations (all-routers
/// group) and other routers' advertisements. Needs CAP_NET_RAW.
pub fn bind(interface: &str) -> std::io::Result<(UdpSocket, u32)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let index = interface_index(interface)?;
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.join_multicast_v6(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2), index)?;
    // Neighbour discovery packets are dropped unless sent with hop limit 255.
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_multicast_loop_v6(false)?;
    socket.set_multicast_if_v6(index)?;
    socket.set_nonblocking(true)?;
    // A raw socket's fd takes recvfrom/sendto like a datagram socket; tokio's
    // UdpSocket only ever makes those calls on it.
    let std_socket: std::net::UdpSocket = socket.into();
    Ok((UdpSocket::from_std(std_socket)?, index))
}

/// Answers router solicitations on `interface` until the socket fails.
pub async fn run(socket: UdpSocket, interface: String, index: u32) -> std::io::Result<()> {
    let mac = interface_mac(&interface).unwrap_or_default();
    let advertisement = router_advertisement(mac);
    let all_nodes = SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
        0,
        0,
        index,
    ));
    let mut responder = Responder::default();
    let mut buf = [0u8; 1500];
    loop {
        let deadline = responder.next_deadline();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (len, from) = match received {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(interface, "router solicitation socket: {e}");
                        continue;
                    }
                };
                let packet = &buf[..len];
                let now = Instant::now();
                if is_router_solicitation(packet) {
                    if responder.solicited(now).is_some() {
                        tracing::debug!(interface, %from, "router solicitation: answering");
                    }
                } else if is_router_advertisement(packet) && responder.heard_other_router(now) {
                    tracing::info!(
                        interface,
                        %from,
                        "another IPv6 router advertises on this link: rackboot stays silent"
                    );
                }
            }
            () = sleep => {
                if responder.due(Instant::now())
                    && let Err(e) = socket.send_to(&advertisement, all_nodes).await
                {
                    tracing::warn!(interface, "router advertisement not sent: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_announces_no_router_and_no_prefix() {
        let ra = router_advertisement([0x52, 0x54, 0, 1, 2, 3]);
        assert!(is_router_advertisement(&ra));
        assert_eq!(ra.len(), 24);
        assert_eq!(&ra[6..8], &[0, 0], "router lifetime 0");
        assert_eq!(ra[5], 0, "no managed or other-config flag");
        assert_eq!(&ra[16..24], &[1, 1, 0x52, 0x54, 0, 1, 2, 3]);
        assert!(
            !ra.windows(2).any(|w| w == [3, 4]),
            "no prefix information option"
        );
    }

    #[test]
    fn solicitations_are_recognised_and_garbage_is_not() {
        assert!(is_router_solicitation(&[133, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_router_solicitation(&[133, 0, 0]));
        assert!(!is_router_solicitation(&[133, 1, 0, 0, 0, 0, 0, 0]));
        assert!(!is_router_advertisement(&[134, 0, 0, 0]));
        assert!(!is_router_solicitation(&[]));
    }

    #[test]
    fn answers_after_a_short_delay_once_per_burst() {
        let start = Instant::now();
        let mut responder = Responder::default();
        let at = responder.solicited(start).expect("answer");
        assert_eq!(at, start + ANSWER_DELAY);
        // A second solicitation in the same burst does not move the answer.
        assert_eq!(
            responder.solicited(start + Duration::from_millis(50)),
            Some(at)
        );
        assert!(responder.due(at));
        assert!(!responder.due(at), "one answer");
    }

    #[test]
    fn silent_while_another_router_advertises() {
        let start = Instant::now();
        let mut responder = Responder::default();
        assert!(responder.solicited(start).is_some());
        assert!(responder.heard_other_router(start + Duration::from_millis(20)));
        assert!(
            !responder.due(start + ANSWER_DELAY),
            "the real router answered"
        );
        assert_eq!(responder.solicited(start + Duration::from_secs(60)), None);
        assert!(
            !responder.heard_other_router(start + Duration::from_secs(61)),
            "logged once"
        );
        let later = start + Duration::from_secs(61) + OTHER_ROUTER_HOLD;
        assert!(
            responder.solicited(later).is_some(),
            "the other router went away"
        );
    }
}
