//! The DHCP socket loop: receive, decode, ask the inventory, decide, commit, send.
//! One task handles packets in order, so two clients can never race for an address.

use crate::clock;
use crate::config::Subnet;
use crate::dhcp::boot::{self, BootConfig};
use crate::dhcp::leases::LeaseBook;
use crate::dhcp::policy::{self, Context};
use crate::dhcp::wire::{self, CLIENT_PORT, ClientRequest, Destination, SERVER_PORT};
use crate::netif;
use crate::store::{self, Store, StoreError};
use dhcproto::v4::MessageType;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use tokio::net::UdpSocket;

pub struct DhcpServer {
    socket: UdpSocket,
    interface: String,
    server_ip: Ipv4Addr,
    subnets: Vec<Subnet>,
    boot: BootConfig,
    store: Store,
    book: LeaseBook,
    arp_failure_logged: bool,
}

/// Binds port 67 on `interface` only: rackboot never answers on an interface nobody
/// named. Needs CAP_NET_BIND_SERVICE (port 67) and CAP_NET_RAW (SO_BINDTODEVICE).
pub fn bind(interface: &str) -> std::io::Result<UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.bind(&SocketAddr::from(([0, 0, 0, 0], SERVER_PORT)).into())?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

impl DhcpServer {
    pub async fn new(
        socket: UdpSocket,
        interface: String,
        server_ip: Ipv4Addr,
        subnets: Vec<Subnet>,
        boot: BootConfig,
        store: Store,
    ) -> Result<Self, StoreError> {
        let records = store.call(|conn| store::list_leases(conn)).await?;
        tracing::info!(leases = records.len(), "lease book loaded");
        Ok(DhcpServer {
            socket,
            interface,
            server_ip,
            subnets,
            boot,
            store,
            book: LeaseBook::load(records),
            arp_failure_logged: false,
        })
    }

    pub async fn run(mut self) -> std::io::Result<()> {
        let mut buf = vec![0u8; 4096];
        loop {
            let (len, peer) = self.socket.recv_from(&mut buf).await?;
            let packet = buf[..len].to_vec();
            self.handle(&packet, peer).await;
        }
    }

    async fn handle(&mut self, packet: &[u8], peer: SocketAddr) {
        let request = match wire::parse_request(packet) {
            Ok(request) => request,
            Err(why) => {
                tracing::warn!(%peer, len = packet.len(), "dropped malformed DHCP packet: {why}");
                return;
            }
        };
        let Some(subnet) = policy::select_subnet(&request, &self.subnets, self.server_ip).cloned()
        else {
            tracing::warn!(
                mac = %request.mac,
                giaddr = %request.giaddr,
                "dropped DHCP {:?}: no configured subnet for it",
                request.msg_type
            );
            return;
        };
        let now_ms = clock::now_ms();
        let mac = request.mac;
        let pxe = boot::is_pxe_client(&request);
        let firmware = boot::firmware(&request).map(|f| f.name());
        let seen_arch = firmware.clone();
        let lookup = self
            .store
            .call(move |conn| {
                let machine = store::get_machine(conn, mac)?;
                if machine.is_some() && pxe {
                    store::touch_machine(conn, mac, seen_arch.as_deref(), now_ms)?;
                }
                let fixed: HashMap<Ipv4Addr, _> =
                    store::fixed_addresses(conn)?.into_iter().collect();
                Ok((machine, fixed))
            })
            .await;
        let (machine, fixed) = match lookup {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(%mac, "DHCP request not answered: inventory unavailable: {e}");
                return;
            }
        };
        let ctx = Context {
            server_ip: self.server_ip,
            subnet: &subnet,
            machine: machine.as_ref(),
            fixed: &fixed,
            boot: &self.boot,
            now: now_ms / 1000,
        };
        let decision = policy::decide(&request, &ctx, &self.book);
        if let Some(reason) = &decision.no_boot_file {
            tracing::warn!(%mac, ?reason, "PXE client gets an address but no boot file");
        }

        if let Some(record) = decision.commit.clone() {
            // The binding is on disk before the client hears of it (RFC 2131 §4.3.1).
            let saved = record.clone();
            if let Err(e) = self
                .store
                .call(move |conn| store::save_lease(conn, &saved, now_ms))
                .await
            {
                tracing::error!(%mac, ip = %record.ip, "lease not committed, no reply sent: {e}");
                return;
            }
            self.book.apply(record);
        }
        if let Some((ip, until)) = decision.hold_offer {
            self.book.hold_offer(ip, mac, until);
        }
        if decision.forget_offer {
            self.book.forget_offer(mac);
        }

        let Some(reply) = decision.reply else {
            tracing::debug!(%mac, "no reply to {:?}: {}", request.msg_type, decision.why);
            if pxe {
                self.store.record_event(
                    now_ms,
                    Some(mac),
                    "dhcp.ignored",
                    format!("{:?}: {}", request.msg_type, decision.why),
                );
            }
            return;
        };
        if reply.msg_type == MessageType::Nak {
            tracing::info!(%mac, "NAK: {}", decision.why);
        }
        let bytes = match wire::encode_reply(&request, &reply) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(%mac, "{e}");
                return;
            }
        };
        let target = self.target(&request, wire::destination(&request, &reply));
        if let Err(e) = self.socket.send_to(&bytes, target).await {
            tracing::warn!(%mac, %target, "could not send DHCP reply: {e}");
            return;
        }
        tracing::debug!(%mac, %target, "{:?} sent: {}", reply.msg_type, decision.why);
        if pxe {
            let kind = match reply.msg_type {
                MessageType::Offer => "dhcp.offer",
                MessageType::Ack => "dhcp.ack",
                MessageType::Nak => "dhcp.nak",
                _ => "dhcp.reply",
            };
            let detail = format!(
                "{} firmware={} ipxe={} ip={} file={}",
                describe(&request),
                firmware.as_deref().unwrap_or("-"),
                request.is_ipxe,
                reply.yiaddr,
                reply.boot.as_ref().map_or("-", |b| b.filename.as_str()),
            );
            self.store.record_event(now_ms, Some(mac), kind, detail);
        }
    }

    fn target(&mut self, request: &ClientRequest, destination: Destination) -> SocketAddr {
        let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT).into();
        match destination {
            Destination::Relay(relay) => SocketAddrV4::new(relay, SERVER_PORT).into(),
            Destination::Unicast(ip) => SocketAddrV4::new(ip, CLIENT_PORT).into(),
            Destination::Broadcast => broadcast,
            Destination::UnicastNoArp(ip, mac) => {
                match netif::set_arp_entry(&self.socket, &self.interface, ip, mac.0) {
                    Ok(()) => SocketAddrV4::new(ip, CLIENT_PORT).into(),
                    Err(e) => {
                        // Without CAP_NET_ADMIN, broadcasting still reaches the client.
                        if !self.arp_failure_logged {
                            tracing::warn!(
                                mac = %request.mac,
                                "cannot add ARP entry ({e}); broadcasting replies instead"
                            );
                            self.arp_failure_logged = true;
                        }
                        broadcast
                    }
                }
            }
        }
    }
}

fn describe(request: &ClientRequest) -> String {
    format!("{:?}", request.msg_type).to_lowercase()
}
