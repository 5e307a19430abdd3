//! Linux interface plumbing the DHCP server needs: an interface's IPv4 address, an ARP
//! entry for a client that cannot answer ARP yet (RFC 2131 §4.1 unicast to yiaddr),
//! the kernel's neighbour entry for an address (evidence for the secrets rule),
//! socket buffer sizes, and batched datagram I/O (recvmmsg/sendmmsg).

use std::net::{Ipv4Addr, SocketAddrV4};
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

/// Most datagrams moved per recvmmsg/sendmmsg call.
pub const MMSG_MAX: usize = 64;

fn sockaddr_v4(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Receives up to `bufs.len()` (at most `MMSG_MAX`) waiting datagrams with one
/// recvmmsg call, without blocking, appending (buffer index, length, sender) to `got`. A busy DHCP
/// server moves dozens of packets per wakeup; one system call for all of them is a
/// large part of its throughput. WouldBlock when nothing is waiting.
pub fn recv_many(
    socket: &impl AsRawFd,
    bufs: &mut [[u8; 2048]],
    got: &mut Vec<(usize, usize, SocketAddrV4)>,
) -> std::io::Result<()> {
    let n = bufs.len().min(MMSG_MAX);
    // SAFETY: plain old data; all-zero is a valid starting value for each.
    let mut addrs: [libc::sockaddr_in; MMSG_MAX] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; MMSG_MAX] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; MMSG_MAX] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iovs[i] = libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast(),
            iov_len: bufs[i].len(),
        };
        msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
        msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `n` headers point at live buffers and addresses of the sizes
    // given, which outlive the call.
    let rc = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    for i in 0..rc as usize {
        let addr = &addrs[i];
        if i32::from(addr.sin_family) != libc::AF_INET {
            continue;
        }
        let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        let len = (msgs[i].msg_len as usize).min(bufs[i].len());
        got.push((i, len, SocketAddrV4::new(ip, u16::from_be(addr.sin_port))));
    }
    Ok(())
}

/// Sends `datagrams` (at most `MMSG_MAX`) with one sendmmsg call, without blocking.
/// Returns how many went out; an error means the first one could not be sent.
pub fn send_many(
    socket: &impl AsRawFd,
    datagrams: &[(&[u8], SocketAddrV4)],
) -> std::io::Result<usize> {
    let n = datagrams.len().min(MMSG_MAX);
    if n == 0 {
        return Ok(0);
    }
    let mut addrs: [libc::sockaddr_in; MMSG_MAX] =
        [sockaddr_v4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)); MMSG_MAX];
    // SAFETY: plain old data; all-zero is a valid starting value for each.
    let mut iovs: [libc::iovec; MMSG_MAX] = unsafe { std::mem::zeroed() };
    let mut msgs: [libc::mmsghdr; MMSG_MAX] = unsafe { std::mem::zeroed() };
    for (i, (bytes, to)) in datagrams.iter().take(n).enumerate() {
        addrs[i] = sockaddr_v4(*to);
        // sendmmsg only reads through iov_base.
        iovs[i] = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        msgs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_in).cast();
        msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `n` headers point at live buffers and addresses of the sizes
    // given, which outlive the call.
    let rc = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc as usize)
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

/// `ATF_COM` in `/proc/net/arp`: the entry is resolved (not incomplete or failed).
const ATF_COM: u32 = 0x02;
/// `ATF_PUBL`: a published (proxy ARP) entry, which names this host, not the owner.
const ATF_PUBL: u32 = 0x08;

/// The hardware address the kernel's neighbour table holds for `ip`, on `interface`
/// when one is named. Reads `/proc/net/arp` of this network namespace.
pub fn neighbour_mac(ip: Ipv4Addr, interface: Option<&str>) -> std::io::Result<Option<[u8; 6]>> {
    let table = std::fs::read_to_string("/proc/net/arp")?;
    Ok(parse_arp_table(&table, ip, interface))
}

/// Finds `ip` in the text of `/proc/net/arp`: resolved, unpublished Ethernet entries
/// only. Anything unexpected in a line makes it no match rather than an error.
pub fn parse_arp_table(table: &str, ip: Ipv4Addr, interface: Option<&str>) -> Option<[u8; 6]> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [addr, hw_type, flags, hw, _mask, device] = fields.as_slice() else {
            return None;
        };
        if addr.parse::<Ipv4Addr>().ok()? != ip || interface.is_some_and(|i| i != *device) {
            return None;
        }
        let hex = |text: &str| u32::from_str_radix(text.trim_start_matches("0x"), 16).ok();
        let flags = hex(flags)?;
        // Type 1 is Ethernet (ARPHRD_ETHER).
        if hex(hw_type)? != 1 || flags & ATF_COM == 0 || flags & ATF_PUBL != 0 {
            return None;
        }
        let mut mac = [0u8; 6];
        let mut parts = hw.split(':');
        for byte in &mut mac {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        (parts.next().is_none() && mac != [0; 6]).then_some(mac)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    #[test]
    fn datagrams_go_out_and_come_in_in_batches() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let SocketAddr::V4(to) = rx.local_addr().expect("addr") else {
            panic!("v4")
        };
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|n| vec![n; 10 + n as usize]).collect();
        let datagrams: Vec<(&[u8], SocketAddrV4)> =
            payloads.iter().map(|p| (p.as_slice(), to)).collect();
        assert_eq!(send_many(&tx, &datagrams).expect("send"), 5);
        let mut bufs = vec![[0u8; 2048]; 8];
        let mut got = Vec::new();
        let mut received = Vec::new();
        for _ in 0..100 {
            got.clear();
            match recv_many(&rx, &mut bufs, &mut got) {
                Ok(()) => {
                    for (i, len, sender) in &got {
                        received.push((bufs[*i][..*len].to_vec(), *sender));
                    }
                    if received.len() == 5 {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Err(e) => panic!("{e}"),
            }
        }
        let from = tx.local_addr().expect("addr");
        assert_eq!(received.len(), 5);
        for (i, (bytes, sender)) in received.iter().enumerate() {
            assert_eq!(bytes, &payloads[i]);
            assert_eq!(SocketAddr::V4(*sender), from);
        }
    }

    #[test]
    fn arp_table_names_resolved_entries_only() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device
192.0.2.1        0x1         0x2         02:fc:00:00:00:05     *        eth0
192.0.2.7        0x1         0x0         00:00:00:00:00:00     *        eth0
192.0.2.8        0x1         0xc         52:54:00:00:00:08     *        eth0
192.0.2.9        0x1         0x6         52:54:00:00:00:09     *        br0
192.0.2.10       0x1         0x2         52:54:00:00:00       *        eth0
";
        let ip = |d| Ipv4Addr::new(192, 0, 2, d);
        let mac = |d| [0x52, 0x54, 0, 0, 0, d];
        assert_eq!(
            parse_arp_table(table, ip(1), None),
            Some([2, 0xfc, 0, 0, 0, 5])
        );
        assert_eq!(parse_arp_table(table, ip(1), Some("br0")), None);
        assert_eq!(parse_arp_table(table, ip(7), None), None, "incomplete");
        assert_eq!(parse_arp_table(table, ip(8), None), None, "published");
        assert_eq!(parse_arp_table(table, ip(9), Some("br0")), Some(mac(9)));
        assert_eq!(parse_arp_table(table, ip(10), None), None, "short address");
        assert_eq!(parse_arp_table(table, ip(11), None), None);
        assert_eq!(parse_arp_table("", ip(1), None), None);
        // This namespace's own table reads without error.
        neighbour_mac(ip(1), None).expect("/proc/net/arp");
    }

    #[test]
    fn loopback_has_its_address() {
        let found = ipv4_of("lo").expect("getifaddrs");
        assert_eq!(found, Some((Ipv4Addr::LOCALHOST, 8)));
        assert_eq!(ipv4_of("no-such-if0").expect("getifaddrs"), None);
    }
}
