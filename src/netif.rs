//! Linux interface plumbing the DHCP server needs: an interface's IPv4 address, and an
//! ARP entry for a client that cannot answer ARP yet (RFC 2131 §4.1 unicast to yiaddr).

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

/// The first IPv4 address and prefix length configured on `interface`.
pub fn ipv4_of(interface: &str) -> std::io::Result<Option<(Ipv4Addr, u8)>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut found = None;
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() || entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the stated family.
        let family = unsafe { (*entry.ifa_addr).sa_family };
        if name.to_bytes() != interface.as_bytes() || i32::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: family is AF_INET, so both point to sockaddr_in.
        let (addr, mask) = unsafe {
            let addr = &*(entry.ifa_addr as *const libc::sockaddr_in);
            let mask = if entry.ifa_netmask.is_null() {
                0
            } else {
                (*(entry.ifa_netmask as *const libc::sockaddr_in))
                    .sin_addr
                    .s_addr
            };
            (addr.sin_addr.s_addr, mask)
        };
        found = Some((
            Ipv4Addr::from(u32::from_be(addr)),
            u32::from_be(mask).count_ones() as u8,
        ));
        break;
    }
    // SAFETY: head came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    Ok(found)
}

/// Asks for `bytes` of socket buffer each way. As root (CAP_NET_ADMIN) the *FORCE
/// options go past `net.core.rmem_max`; otherwise the plain options are capped by it.
/// A smaller buffer only means more drops under load, so failures are ignored.
pub fn set_buffer_sizes(socket: &impl AsRawFd, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for (forced, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        for option in [forced, plain] {
            // SAFETY: setsockopt reads one c_int from a valid pointer of that size.
            let rc = unsafe {
                libc::setsockopt(
                    socket.as_raw_fd(),
                    libc::SOL_SOCKET,
                    option,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
    }
}

/// Adds (or replaces) a neighbour entry so a unicast reply can reach a client that has
/// no address yet. Needs CAP_NET_ADMIN.
pub fn set_arp_entry(
    socket: &impl AsRawFd,
    interface: &str,
    ip: Ipv4Addr,
    mac: [u8; 6],
) -> std::io::Result<()> {
    // SAFETY: arpreq is plain old data; all-zero is a valid starting value.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    let pa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in the sockaddr that arp_pa is.
    unsafe {
        std::ptr::write(
            &mut req.arp_pa as *mut libc::sockaddr as *mut libc::sockaddr_in,
            pa,
        )
    };
    req.arp_ha.sa_family = libc::ARPHRD_ETHER;
    for (slot, byte) in req.arp_ha.sa_data.iter_mut().zip(mac) {
        *slot = byte as libc::c_char;
    }
    req.arp_flags = libc::ATF_COM;
    let name = interface.as_bytes();
    if name.len() >= req.arp_dev.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (slot, byte) in req.arp_dev.iter_mut().zip(name) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCSARP reads one arpreq, which `req` is.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSARP, &req) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_its_address() {
        let found = ipv4_of("lo").expect("getifaddrs");
        assert_eq!(found, Some((Ipv4Addr::LOCALHOST, 8)));
        assert_eq!(ipv4_of("no-such-if0").expect("getifaddrs"), None);
    }
}
