//! Wake-on-LAN: the magic packet (six 0xff bytes, then the MAC sixteen times) as a
//! UDP broadcast out of the boot network's interface. It can only power on, and
//! nothing answers it.

use super::PowerError;
use crate::mac::MacAddr;
use std::net::{Ipv4Addr, SocketAddr};

/// The magic packet for `mac` (pure).
pub fn magic_packet(mac: MacAddr) -> [u8; 102] {
    let mut packet = [0xffu8; 102];
    for chunk in packet[6..].chunks_exact_mut(6) {
        chunk.copy_from_slice(&mac.0);
    }
    packet
}

/// Sends the packet three times (UDP may drop one; a NIC wakes on the first).
pub async fn send(
    mac: MacAddr,
    broadcast: Ipv4Addr,
    port: u16,
    interface: Option<&str>,
) -> Result<(), PowerError> {
    let local = |e: std::io::Error| PowerError::Local(format!("Wake-on-LAN socket: {e}"));
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(local)?;
    socket.set_broadcast(true).map_err(local)?;
    if let Some(name) = interface {
        // The limited broadcast leaves through the boot network, not the default route.
        socket.bind_device(Some(name.as_bytes())).map_err(|e| {
            PowerError::Local(format!(
                "Wake-on-LAN: cannot send out of {name} (needs root or CAP_NET_RAW): {e}"
            ))
        })?;
    }
    socket.set_nonblocking(true).map_err(local)?;
    let socket = tokio::net::UdpSocket::from_std(socket.into()).map_err(local)?;
    let packet = magic_packet(mac);
    let to = SocketAddr::from((broadcast, port));
    for _ in 0..3 {
        socket
            .send_to(&packet, to)
            .await
            .map_err(|e| PowerError::Unreachable(format!("Wake-on-LAN to {to}: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_magic_packet_is_sync_then_sixteen_macs() {
        let mac = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        let p = magic_packet(mac);
        assert_eq!(&p[..6], &[0xff; 6]);
        for i in 0..16 {
            assert_eq!(&p[6 + 6 * i..12 + 6 * i], &mac.0, "copy {i}");
        }
    }
}
