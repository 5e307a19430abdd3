//! Packet captures: tcpdump inside a namespace into a pcap file (started once it is
//! listening, stopped with SIGINT so it flushes), and the UDP datagrams read back out
//! of the file by hand.

use crate::netns::Netns;
use crate::process::{Proc, wait_until};
use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tcpdump capture into a pcap file, stopped (and flushed) on `stop` or drop.
pub struct Capture {
    proc: Option<Proc>,
    pub file: PathBuf,
}

impl Capture {
    pub fn start(ns: &Netns, interface: &str, filter: &str, file: &Path) -> Self {
        let mut cmd = ns.command("tcpdump");
        cmd.args(["-i", interface, "-n", "-U", "-s", "0", "-w"])
            .arg(file)
            .args(filter.split_whitespace());
        let log = file.with_extension("log");
        let mut proc = Proc::spawn(cmd, &log);
        let listening = wait_until(Duration::from_secs(10), || {
            proc.log_text().contains("listening on") || proc.exited()
        });
        assert!(listening && !proc.exited(), "tcpdump: {}", proc.log_text());
        Capture {
            proc: Some(proc),
            file: file.to_path_buf(),
        }
    }

    /// Stops tcpdump with SIGINT so it writes out what it has, and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            let pid = proc.child.id().to_string();
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let _ = wait_until(Duration::from_secs(10), || proc.exited());
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One UDP datagram from a pcap file.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub payload: Vec<u8>,
}

/// The IPv4 UDP datagrams of a pcap file (Ethernet or Linux cooked captures).
pub fn read_pcap_udp(path: &Path) -> Vec<Datagram> {
    let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(data.len() >= 24, "pcap too short");
    let little = data[..4] == [0xd4, 0xc3, 0xb2, 0xa1] || data[..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let u32_at = |at: usize| {
        let b = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let link_header = match u32_at(20) {
        1 => 14,   // Ethernet (no VLAN on our veths)
        113 => 16, // Linux cooked
        other => panic!("unsupported pcap link type {other}"),
    };
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32_at(at + 8) as usize;
        let Some(frame) = data.get(at + 16..at + 16 + caplen) else {
            break;
        };
        at += 16 + caplen;
        let Some(ip) = frame.get(link_header..) else {
            continue;
        };
        if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        if udp.len() < 8 {
            continue;
        }
        let addr = |o: usize| Ipv4Addr::new(ip[o], ip[o + 1], ip[o + 2], ip[o + 3]);
        let port = |o: usize| u16::from_be_bytes([udp[o], udp[o + 1]]);
        out.push(Datagram {
            src: SocketAddrV4::new(addr(12), port(0)),
            dst: SocketAddrV4::new(addr(16), port(2)),
            payload: udp[8..].to_vec(),
        });
    }
    out
}
