//! DHCP policy: given a decoded request, the inventory's view of the client, the lease
//! book and the time, decide what to answer and what to commit. Pure: no sockets, no
//! database, no clock; the server loop carries the decision out (commit first, then
//! send).

use crate::config::{AnswerPolicy, Subnet};
use crate::dhcp::boot::{self, BootConfig, NoBootFile};
use crate::dhcp::leases::{ClientKey, LeaseBook, OFFER_HOLD_SECS};
use crate::dhcp::wire::{BootReply, ClientRequest, LeaseTimes, MessageType, ReplySpec};
use crate::mac::MacAddr;
use crate::model::{Discovered, LeaseRecord, LeaseState, Machine};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// How long a declined address stays out of the pool.
pub const DECLINE_PROBATION_SECS: i64 = 600;

pub struct Context<'a> {
    pub server_ip: Ipv4Addr,
    pub subnet: &'a Subnet,
    /// The inventory's record of this client, if it has one.
    pub machine: Option<&'a Machine>,
    /// Every fixed address in the inventory and its owner.
    pub fixed: &'a HashMap<Ipv4Addr, MacAddr>,
    pub boot: &'a BootConfig,
    pub policy: AnswerPolicy,
    /// Unix seconds.
    pub now: i64,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub reply: Option<ReplySpec>,
    /// Persist this before the reply leaves.
    pub commit: Option<LeaseRecord>,
    pub hold_offer: Option<(Ipv4Addr, i64)>,
    pub forget_offer: bool,
    /// Why this was decided, for the log (and the reason for silence).
    pub why: String,
    /// Set when a PXE client gets no boot file, and why.
    pub no_boot_file: Option<NoBootFile>,
    /// An unknown PXE client to add to the inventory (`policy = "all"`).
    pub discovered: Option<Discovered>,
    /// The client got nothing because its pool has no free address.
    pub pool_full: bool,
    /// proxyDHCP: the address this client uses, learned from its request.
    pub observed: Option<Ipv4Addr>,
}

impl Decision {
    fn silent(why: impl Into<String>) -> Self {
        Decision {
            why: why.into(),
            ..Decision::default()
        }
    }
}

/// The subnet a request belongs to (RFC 3011, RFC 3527, RFC 2131): option 118, else
/// the link-selection sub-option of option 82, else the relay's address (giaddr),
/// else the client's own address (a renewal unicast straight to us, perhaps from a
/// relayed subnet), else the subnet of the serving interface.
/// Returns the subnet's position in `subnets`.
pub fn select_subnet(
    request: &ClientRequest,
    subnets: &[Subnet],
    server_ip: Ipv4Addr,
) -> Option<usize> {
    let anchor = request
        .subnet_selection
        .or(request.link_selection)
        .or_else(|| (!request.giaddr.is_unspecified()).then_some(request.giaddr))
        .or_else(|| (!request.ciaddr.is_unspecified()).then_some(request.ciaddr))
        .unwrap_or(server_ip);
    subnets.iter().position(|s| s.contains(anchor))
}

pub fn decide(request: &ClientRequest, ctx: &Context<'_>, book: &LeaseBook) -> Decision {
    let discovered = match request.msg_type {
        MessageType::Discover | MessageType::Request | MessageType::Inform => {
            match admit(request, ctx.machine, ctx.policy) {
                Ok(discovered) => discovered,
                Err(why) => return Decision::silent(why),
            }
        }
        _ => None,
    };
    let mut decision = match request.msg_type {
        MessageType::Discover => discover(request, ctx, book),
        MessageType::Request => dhcp_request(request, ctx, book),
        MessageType::Release => release(request, ctx, book),
        MessageType::Decline => decline(request, ctx, book),
        MessageType::Inform => inform(request, ctx),
        other => Decision::silent(format!("{other:?} is not a client message")),
    };
    decision.discovered = discovered;
    decision
}

/// Who gets an answer (`[dhcp] policy`). Ok carries an unknown PXE client to add to
/// the inventory; Err says why the client gets no answer.
fn admit(
    request: &ClientRequest,
    machine: Option<&Machine>,
    policy: AnswerPolicy,
) -> Result<Option<Discovered>, String> {
    let pxe = boot::is_pxe_client(request);
    match (policy, machine) {
        // A discovered machine waits for an operator to adopt it.
        (AnswerPolicy::KnownOnly, None) => Err(format!(
            "{} is not in the inventory (policy known_only)",
            request.mac
        )),
        (AnswerPolicy::KnownOnly, Some(m)) if m.discovered => Err(format!(
            "{} is only discovered, not added (policy known_only)",
            request.mac
        )),
        (AnswerPolicy::All, None) if pxe => Ok(Some(Discovered {
            mac: request.mac,
            arch: boot::firmware(request).map(|f| f.name()),
            vendor_class: request.vendor_class.clone(),
        })),
        _ => Ok(None),
    }
}

fn key_of(request: &ClientRequest, book: &LeaseBook) -> ClientKey {
    book.key_of(request.mac, request.client_id.as_deref())
}

/// The fixed address of this client when it has one in this subnet.
fn fixed_for(request: &ClientRequest, ctx: &Context<'_>) -> Option<Ipv4Addr> {
    ctx.machine
        .filter(|m| m.mac == request.mac)
        .and_then(|m| m.ip)
        .filter(|ip| ctx.subnet.contains(*ip))
}

/// Whether `ip` may be bound to this client at all, ignoring who holds it now. Fixed
/// addresses belong to their machine only, so no flood of new clients can take them.
fn assignable(ip: Ipv4Addr, request: &ClientRequest, ctx: &Context<'_>) -> bool {
    let subnet = ctx.subnet;
    if !subnet.contains(ip)
        || ip == subnet.network
        || ip == subnet.broadcast()
        || ip == ctx.server_ip
        || Some(ip) == subnet.router
    {
        return false;
    }
    match ctx.fixed.get(&ip) {
        Some(owner) => *owner == request.mac,
        None => {
            (subnet.in_pool(ip) || (subnet.in_known_pool(ip) && is_inventory_machine(ctx)))
                && fixed_for(request, ctx).is_none()
        }
    }
}

/// A machine an operator added: it may take addresses from the subnet's
/// `known_pool`. Unknown clients and merely discovered ones may not.
fn is_inventory_machine(ctx: &Context<'_>) -> bool {
    ctx.machine.is_some_and(|m| !m.discovered)
}

fn available(ip: Ipv4Addr, request: &ClientRequest, ctx: &Context<'_>, book: &LeaseBook) -> bool {
    assignable(ip, request, ctx) && book.is_free_for(ip, &key_of(request, book), ctx.now)
}

fn choose_address(
    request: &ClientRequest,
    ctx: &Context<'_>,
    book: &LeaseBook,
) -> Option<Ipv4Addr> {
    if let Some(ip) = fixed_for(request, ctx) {
        // A fixed address is the machine's only address: never a pool one beside it.
        return available(ip, request, ctx, book).then_some(ip);
    }
    let key = key_of(request, book);
    let previous = book.of_client(&key).map(|r| r.ip);
    let candidates = previous.into_iter().chain(request.requested_ip);
    if let Some(ip) = candidates
        .into_iter()
        .find(|ip| available(*ip, request, ctx, book))
    {
        return Some(ip);
    }
    // Inventory machines take from their own pool first, leaving the shared one to
    // everybody else.
    let known_pool = ctx
        .subnet
        .known_pool
        .filter(|_| is_inventory_machine(ctx))
        .map(|(start, _)| start);
    known_pool
        .into_iter()
        .chain([ctx.subnet.pool_start])
        .find_map(|start| book.find_free(start, ctx.now, &key, |ip| assignable(ip, request, ctx)))
}

fn base_reply(msg_type: MessageType, ctx: &Context<'_>) -> ReplySpec {
    ReplySpec {
        msg_type,
        server_id: ctx.server_ip,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        lease: None,
        subnet_mask: Some(ctx.subnet.mask()),
        router: ctx.subnet.router,
        dns: ctx.subnet.dns.clone(),
        hostname: ctx.machine.and_then(|m| m.hostname.clone()),
        domain: ctx.subnet.domain.clone(),
        boot: None,
        message: None,
        vendor_options: None,
    }
}

fn lease_times(subnet: &Subnet) -> LeaseTimes {
    LeaseTimes {
        lease_secs: subnet.lease_secs,
        renew_secs: subnet.renew_secs,
        rebind_secs: subnet.rebind_secs,
    }
}

fn add_boot(
    reply: &mut ReplySpec,
    decision: &mut Decision,
    request: &ClientRequest,
    boot_config: &BootConfig,
    loader: Option<crate::lifecycle::Loader>,
) {
    match boot::choose(request, boot_config, loader) {
        Ok(boot) => reply.boot = Some(boot),
        Err(NoBootFile::NotPxe) => {}
        Err(reason) => decision.no_boot_file = Some(reason),
    }
}

fn nak(ctx: &Context<'_>, why: String) -> Decision {
    let mut reply = base_reply(MessageType::Nak, ctx);
    reply.subnet_mask = None;
    reply.router = None;
    reply.dns.clear();
    reply.hostname = None;
    reply.domain = None;
    reply.message = Some(why.clone());
    Decision {
        reply: Some(reply),
        forget_offer: true,
        why,
        ..Decision::default()
    }
}

fn discover(request: &ClientRequest, ctx: &Context<'_>, book: &LeaseBook) -> Decision {
    let Some(ip) = choose_address(request, ctx, book) else {
        return match fixed_for(request, ctx) {
            Some(fixed) => Decision::silent(format!(
                "fixed address {fixed} of {} is held by {:?}",
                request.mac,
                book.holder(fixed, ctx.now)
            )),
            None => Decision {
                pool_full: true,
                ..Decision::silent(format!(
                    "pool {}-{} is full: no address for {}",
                    ctx.subnet.pool_start, ctx.subnet.pool_end, request.mac
                ))
            },
        };
    };
    let mut reply = base_reply(MessageType::Offer, ctx);
    reply.yiaddr = ip;
    reply.lease = Some(lease_times(ctx.subnet));
    let mut decision = Decision {
        hold_offer: Some((ip, ctx.now + OFFER_HOLD_SECS)),
        why: format!("offer {ip}"),
        ..Decision::default()
    };
    add_boot(
        &mut reply,
        &mut decision,
        request,
        ctx.boot,
        ctx.machine.and_then(|m| m.loader),
    );
    decision.reply = Some(reply);
    decision
}

fn ack(request: &ClientRequest, ctx: &Context<'_>, ip: Ipv4Addr, state: &str) -> Decision {
    let times = lease_times(ctx.subnet);
    let mut reply = base_reply(MessageType::Ack, ctx);
    reply.yiaddr = ip;
    reply.ciaddr = request.ciaddr;
    reply.lease = Some(times);
    let mut decision = Decision {
        commit: Some(LeaseRecord {
            ip,
            mac: request.mac,
            expires_at: ctx.now + i64::from(times.lease_secs),
            state: LeaseState::Bound,
            hostname: request.hostname.clone(),
            client_id: request.client_id.clone(),
        }),
        why: format!("ack {ip} ({state})"),
        ..Decision::default()
    };
    add_boot(
        &mut reply,
        &mut decision,
        request,
        ctx.boot,
        ctx.machine.and_then(|m| m.loader),
    );
    decision.reply = Some(reply);
    decision
}

fn dhcp_request(request: &ClientRequest, ctx: &Context<'_>, book: &LeaseBook) -> Decision {
    // SELECTING: the client names the server it chose.
    if let Some(server_id) = request.server_id {
        if server_id != ctx.server_ip {
            return Decision {
                forget_offer: true,
                ..Decision::silent(format!("client chose server {server_id}"))
            };
        }
        let Some(ip) = request
            .requested_ip
            .or_else(|| (!request.ciaddr.is_unspecified()).then_some(request.ciaddr))
        else {
            return Decision::silent("REQUEST without a requested address");
        };
        return if available(ip, request, ctx, book) {
            ack(request, ctx, ip, "selecting")
        } else {
            nak(ctx, format!("{ip} is not available to {}", request.mac))
        };
    }
    // INIT-REBOOT: a client checking the address it remembers.
    if request.ciaddr.is_unspecified() {
        let Some(ip) = request.requested_ip else {
            return Decision::silent("INIT-REBOOT without a requested address");
        };
        if !ctx.subnet.contains(ip) {
            return nak(ctx, format!("{ip} is not on this network"));
        }
        if let Some(fixed) = fixed_for(request, ctx)
            && fixed != ip
        {
            return nak(ctx, format!("{} has fixed address {fixed}", request.mac));
        }
        let key = key_of(request, book);
        let ours = book.of_client(&key).map(|r| r.ip);
        return match ours {
            Some(known) if known == ip && available(ip, request, ctx, book) => {
                ack(request, ctx, ip, "init-reboot")
            }
            Some(_) => nak(ctx, format!("{ip} is not {}'s address", request.mac)),
            None if fixed_for(request, ctx) == Some(ip) && available(ip, request, ctx, book) => {
                ack(request, ctx, ip, "init-reboot")
            }
            None if book.holder(ip, ctx.now).is_some() => {
                nak(ctx, format!("{ip} belongs to another client"))
            }
            // RFC 2131 §4.3.2: no record of this client, so stay silent.
            None => Decision::silent(format!(
                "INIT-REBOOT for {ip}: no record of {}",
                request.mac
            )),
        };
    }
    // RENEWING (unicast to us) or REBINDING (broadcast): the client has ciaddr.
    let ip = request.ciaddr;
    if available(ip, request, ctx, book) {
        ack(request, ctx, ip, "renewing")
    } else {
        nak(ctx, format!("{ip} is not available to {}", request.mac))
    }
}

fn release(request: &ClientRequest, ctx: &Context<'_>, book: &LeaseBook) -> Decision {
    match book.of_client(&key_of(request, book)) {
        Some(record) if record.ip == request.ciaddr && record.state == LeaseState::Bound => {
            Decision {
                commit: Some(LeaseRecord {
                    state: LeaseState::Released,
                    expires_at: ctx.now,
                    ..record.clone()
                }),
                ..Decision::silent(format!("released {}", record.ip))
            }
        }
        _ => Decision::silent(format!(
            "RELEASE of {} by {}: not its lease",
            request.ciaddr, request.mac
        )),
    }
}

fn decline(request: &ClientRequest, ctx: &Context<'_>, book: &LeaseBook) -> Decision {
    let Some(ip) = request.requested_ip else {
        return Decision::silent("DECLINE without an address");
    };
    // Only the client the address was given to can take it out of the pool.
    if !ctx.subnet.contains(ip) || book.holder(ip, ctx.now) != Some(key_of(request, book)) {
        return Decision::silent(format!(
            "DECLINE of {ip} by {}: not its address",
            request.mac
        ));
    }
    Decision {
        commit: Some(LeaseRecord {
            ip,
            mac: request.mac,
            expires_at: ctx.now + DECLINE_PROBATION_SECS,
            state: LeaseState::Declined,
            hostname: None,
            client_id: request.client_id.clone(),
        }),
        forget_offer: true,
        ..Decision::silent(format!(
            "{ip} declined: held back {DECLINE_PROBATION_SECS} s"
        ))
    }
}

/// RFC 2131 §3.4: a client with an address configured asks for the rest; no lease
/// time, no yiaddr, and the answer goes to ciaddr.
fn inform(request: &ClientRequest, ctx: &Context<'_>) -> Decision {
    if request.ciaddr.is_unspecified() {
        return Decision::silent("INFORM without ciaddr");
    }
    let mut reply = base_reply(MessageType::Ack, ctx);
    reply.ciaddr = request.ciaddr;
    let mut decision = Decision::silent(format!("inform {}", request.ciaddr));
    add_boot(
        &mut reply,
        &mut decision,
        request,
        ctx.boot,
        ctx.machine.and_then(|m| m.loader),
    );
    decision.reply = Some(reply);
    decision
}

// ---- proxyDHCP ----

/// Where a proxyDHCP request arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyPort {
    /// Port 67, beside the network's DHCP server: answer DISCOVERs with a proxy offer.
    Dhcp,
    /// Port 4011, the PXE boot server port: the client, which has its address by now,
    /// asks for its boot file.
    BootServer,
}

/// Option 43 of a proxy reply: PXE discovery control (sub-option 6) = 8, "boot the
/// file named in this offer" (PXE 2.1 §2.4), so a BIOS PXE ROM downloads it instead of
/// starting boot server discovery. UEFI firmware, which has no boot menu here, still
/// asks port 4011 for the file, and gets the same answer there.
const PXE_USE_OFFERED_FILE: [u8; 4] = [6, 1, 8, 255];

pub struct ProxyContext<'a> {
    pub server_ip: Ipv4Addr,
    pub machine: Option<&'a Machine>,
    pub boot: &'a BootConfig,
    pub policy: AnswerPolicy,
    pub port: ProxyPort,
}

/// proxyDHCP (PXE specification 2.1, as pixiecore and dnsmasq do it): PXE clients get
/// boot information, never an address (yiaddr stays 0); everyone else gets nothing.
/// The address each PXE client uses is learned from its requests.
pub fn decide_proxy(request: &ClientRequest, ctx: &ProxyContext<'_>) -> Decision {
    if !boot::is_pxe_client(request) {
        return Decision::silent("proxy mode answers PXE clients only");
    }
    let observed = if !request.ciaddr.is_unspecified() {
        Some(request.ciaddr)
    } else {
        // A REQUEST to the network's server names the address it is taking.
        request
            .requested_ip
            .filter(|_| request.msg_type == MessageType::Request)
            .filter(|_| request.server_id.is_none_or(|s| s != ctx.server_ip))
    };
    let mut decision = proxy_answer(request, ctx);
    decision.observed = observed;
    decision
}

fn proxy_answer(request: &ClientRequest, ctx: &ProxyContext<'_>) -> Decision {
    let msg_type = match (ctx.port, request.msg_type) {
        (ProxyPort::Dhcp, MessageType::Discover) => MessageType::Offer,
        (ProxyPort::Dhcp, MessageType::Request) if request.server_id == Some(ctx.server_ip) => {
            MessageType::Ack
        }
        (ProxyPort::BootServer, MessageType::Request | MessageType::Inform) => MessageType::Ack,
        (_, other) => {
            return Decision::silent(format!("proxy mode: {other:?} is the DHCP server's"));
        }
    };
    let discovered = match admit(request, ctx.machine, ctx.policy) {
        Ok(discovered) => discovered,
        Err(why) => return Decision::silent(why),
    };
    let boot = match boot::choose(request, ctx.boot, ctx.machine.and_then(|m| m.loader)) {
        Ok(boot) => boot,
        Err(reason) => {
            return Decision {
                no_boot_file: Some(reason),
                discovered,
                ..Decision::silent("proxy mode: no boot file for this client")
            };
        }
    };
    let vendor_class = boot
        .vendor_class
        .clone()
        .unwrap_or_else(|| "PXEClient".into());
    let reply = ReplySpec {
        msg_type,
        server_id: ctx.server_ip,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        ciaddr: if msg_type == MessageType::Ack {
            request.ciaddr
        } else {
            Ipv4Addr::UNSPECIFIED
        },
        lease: None,
        subnet_mask: None,
        router: None,
        dns: Vec::new(),
        hostname: None,
        domain: None,
        boot: Some(BootReply {
            vendor_class: Some(vendor_class),
            ..boot
        }),
        message: None,
        vendor_options: Some(PXE_USE_OFFERED_FILE.to_vec()),
    };
    Decision {
        why: format!(
            "proxy {} {}",
            if msg_type == MessageType::Offer {
                "offer"
            } else {
                "ack"
            },
            reply.boot.as_ref().map_or("-", |b| b.filename.as_str())
        ),
        reply: Some(reply),
        discovered,
        ..Decision::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::wire::{parse_request, tests::Packet};
    use crate::model::LeaseOp;
    use std::collections::{BTreeMap, HashSet};

    const MAC1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const MAC2: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
    const SERVER: [u8; 4] = [192, 0, 2, 1];

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, n)
    }

    fn subnet() -> Subnet {
        Subnet {
            network: ip(0),
            prefix_len: 24,
            pool_start: ip(100),
            pool_end: ip(102),
            known_pool: None,
            router: Some(ip(1)),
            dns: vec![ip(1)],
            domain: Some("lab.example".into()),
            lease_secs: 3600,
            renew_secs: 1800,
            rebind_secs: 3150,
        }
    }

    fn remote_subnet() -> Subnet {
        Subnet {
            network: Ipv4Addr::new(198, 18, 0, 0),
            prefix_len: 24,
            pool_start: Ipv4Addr::new(198, 18, 0, 10),
            pool_end: Ipv4Addr::new(198, 18, 0, 20),
            known_pool: None,
            router: None,
            dns: vec![],
            domain: None,
            lease_secs: 600,
            renew_secs: 100,
            rebind_secs: 500,
        }
    }

    fn boot_config() -> BootConfig {
        BootConfig {
            server_ip: ip(1),
            http_url: "http://192.0.2.1:8080".into(),
            bios_file: "undionly.kpxe".into(),
            uefi_x64_file: "snponly.efi".into(),
            uefi_arm64_file: "arm64-efi/snponly.efi".into(),
            arm64_available: false,
            default_loader_amd64: crate::lifecycle::Loader::Ipxe,
            default_loader_arm64: crate::lifecycle::Loader::Ipxe,
        }
    }

    fn machine(mac: MacAddr, fixed: Option<Ipv4Addr>) -> Machine {
        Machine {
            loader: None,
            mac,
            hostname: Some(format!("node{}", mac.0[5])),
            image: None,
            ip: fixed,
            arch: None,
            first_seen_ms: None,
            last_seen_ms: None,
            vendor_class: None,
            discovered: false,
        }
    }

    /// A test world: the config, the inventory, the lease book and a copy of the
    /// `leases` table kept the way the server keeps it, with a clock.
    struct World {
        subnet: Subnet,
        boot: BootConfig,
        policy: AnswerPolicy,
        machines: Vec<Machine>,
        fixed: HashMap<Ipv4Addr, MacAddr>,
        book: LeaseBook,
        table: BTreeMap<Ipv4Addr, LeaseRecord>,
        now: i64,
    }

    impl World {
        fn new() -> Self {
            Self::with(false, AnswerPolicy::All)
        }

        fn with(match_client_id: bool, policy: AnswerPolicy) -> Self {
            let subnet = subnet();
            let book =
                LeaseBook::load(match_client_id, &subnet.pools(), HashSet::new(), Vec::new());
            World {
                subnet,
                boot: boot_config(),
                policy,
                machines: Vec::new(),
                fixed: HashMap::new(),
                book,
                table: BTreeMap::new(),
                now: 1_000_000,
            }
        }

        fn machine(mut self, mac: [u8; 6], fixed: Option<Ipv4Addr>) -> Self {
            let mac = MacAddr(mac);
            if let Some(ip) = fixed {
                self.fixed.insert(ip, mac);
            }
            self.machines.push(machine(mac, fixed));
            let reserved = self.fixed.keys().copied().collect();
            self.book.set_pools(&self.subnet.pools(), reserved);
            self
        }

        /// Gives the subnet a pool for inventory machines only.
        fn known_pool(mut self, start: Ipv4Addr, end: Ipv4Addr) -> Self {
            self.subnet.known_pool = Some((start, end));
            let reserved = self.fixed.keys().copied().collect();
            self.book.set_pools(&self.subnet.pools(), reserved);
            self
        }

        /// Decides, then carries the decision out as the server does.
        fn send(&mut self, packet: Packet) -> Decision {
            let request = parse_request(&packet.end()).expect("test packet parses");
            let machine = self.machines.iter().find(|m| m.mac == request.mac);
            let ctx = Context {
                server_ip: ip(1),
                subnet: &self.subnet,
                machine,
                fixed: &self.fixed,
                boot: &self.boot,
                policy: self.policy,
                now: self.now,
            };
            let decision = decide(&request, &ctx, &self.book);
            let key = self.book.key_of(request.mac, request.client_id.as_deref());
            if let Some(record) = &decision.commit {
                for op in self.book.apply(record.clone()) {
                    match op {
                        LeaseOp::Put(r) => self.table.insert(r.ip, r),
                        LeaseOp::Delete(ip) => self.table.remove(&ip),
                    };
                }
            }
            if let Some((ip, until)) = decision.hold_offer {
                self.book.hold_offer(ip, key.clone(), until);
            }
            if decision.forget_offer {
                self.book.forget_offer(&key);
            }
            decision
        }

        /// A restart: the book is rebuilt from the table alone.
        fn restart(&mut self) {
            let reserved = self.fixed.keys().copied().collect();
            self.book = LeaseBook::load(
                self.book_matches_client_id(),
                &self.subnet.pools(),
                reserved,
                self.table.values().cloned(),
            );
        }

        fn book_matches_client_id(&self) -> bool {
            self.book.key_of(MacAddr([0; 6]), Some(&[1, 1])) != ClientKey::Mac(MacAddr([0; 6]))
        }

        fn dora(&mut self, mac: [u8; 6]) -> Ipv4Addr {
            let offer = self.send(Packet::new(1, mac));
            let offered = offer.reply.expect("offer").yiaddr;
            let ack = self.send(
                Packet::new(3, mac)
                    .option(54, &SERVER)
                    .option(50, &offered.octets()),
            );
            let reply = ack.reply.expect("ack");
            assert_eq!(reply.msg_type, MessageType::Ack);
            assert_eq!(reply.yiaddr, offered);
            offered
        }
    }

    fn kind(decision: &Decision) -> Option<MessageType> {
        decision.reply.as_ref().map(|r| r.msg_type)
    }

    #[test]
    fn discover_offers_a_pool_address_with_options() {
        let mut world = World::new();
        let decision = world.send(Packet::new(1, MAC1).option(93, &[0, 7]));
        let reply = decision.reply.expect("offer");
        assert_eq!(reply.msg_type, MessageType::Offer);
        assert_eq!(reply.yiaddr, ip(100));
        assert_eq!(
            reply.lease,
            Some(LeaseTimes {
                lease_secs: 3600,
                renew_secs: 1800,
                rebind_secs: 3150
            })
        );
        assert_eq!(reply.router, Some(ip(1)));
        assert_eq!(reply.dns, vec![ip(1)]);
        assert_eq!(reply.domain.as_deref(), Some("lab.example"));
        assert_eq!(reply.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(reply.boot.expect("boot").filename, "snponly.efi");
        assert!(decision.commit.is_none(), "an offer commits nothing");
    }

    #[test]
    fn two_clients_never_get_the_same_offer() {
        let mut world = World::new();
        let a = world
            .send(Packet::new(1, MAC1))
            .reply
            .expect("offer")
            .yiaddr;
        let b = world
            .send(Packet::new(1, MAC2))
            .reply
            .expect("offer")
            .yiaddr;
        assert_ne!(a, b);
    }

    #[test]
    fn full_dora_commits_a_lease_and_renewal_keeps_it() {
        let mut world = World::new();
        let got = world.dora(MAC1);
        let record = world
            .book
            .of_client(&ClientKey::Mac(MacAddr(MAC1)))
            .expect("lease");
        assert_eq!(record.ip, got);
        assert_eq!(record.expires_at, world.now + 3600);
        world.now += 1800;
        let renew = world.send(Packet::new(3, MAC1).ciaddr(got.octets()));
        assert_eq!(kind(&renew), Some(MessageType::Ack));
        assert_eq!(renew.reply.expect("ack").ciaddr, got);
        assert_eq!(renew.commit.expect("commit").expires_at, world.now + 3600);
        // Rediscovering gives the same address back.
        let again = world.send(Packet::new(1, MAC1)).reply.expect("offer");
        assert_eq!(again.yiaddr, got);
    }

    #[test]
    fn known_machine_gets_its_fixed_address_and_hostname() {
        let mut world = World::new().machine(MAC1, Some(ip(50)));
        let reply = world.send(Packet::new(1, MAC1)).reply.expect("offer");
        assert_eq!(reply.yiaddr, ip(50));
        assert_eq!(reply.hostname.as_deref(), Some("node1"));
        // Nobody else is ever offered it, even by asking for it.
        let other = world
            .send(Packet::new(1, MAC2).option(50, &ip(50).octets()))
            .reply
            .expect("offer");
        assert_ne!(other.yiaddr, ip(50));
    }

    #[test]
    fn fixed_address_inside_the_pool_is_reserved() {
        let mut world = World::new().machine(MAC1, Some(ip(100)));
        let other = world.send(Packet::new(1, MAC2)).reply.expect("offer");
        assert_eq!(other.yiaddr, ip(101));
    }

    #[test]
    fn random_macs_cannot_starve_inventory_machines_of_their_addresses() {
        let mut world = World::new().machine(MAC1, Some(ip(101)));
        let mut got = HashSet::new();
        for n in 0..50u8 {
            let mac = [0x02, 0xee, 0, 0, n, n];
            let offer = world.send(Packet::new(1, mac).option(50, &ip(101).octets()));
            if let Some(reply) = offer.reply {
                world.send(
                    Packet::new(3, mac)
                        .option(54, &SERVER)
                        .option(50, &reply.yiaddr.octets()),
                );
                got.insert(reply.yiaddr);
            } else {
                assert!(offer.pool_full, "{}", offer.why);
            }
        }
        assert_eq!(got, [ip(100), ip(102)].into_iter().collect());
        assert_eq!(world.dora(MAC1), ip(101));
    }

    /// With a `known_pool`, inventory machines without a fixed address still get an
    /// address after new MACs have taken the whole shared pool; those MACs can never
    /// get a known-pool address, not even by asking for one; a discovered (not yet
    /// adopted) machine is not an inventory machine.
    #[test]
    fn random_macs_cannot_take_the_pool_kept_for_inventory_machines() {
        let mut world = World::new()
            .machine(MAC1, None)
            .machine(MAC2, None)
            .known_pool(ip(50), ip(51));
        let mut discovered = machine(MacAddr([0x02, 0xdd, 0, 0, 0, 1]), None);
        discovered.discovered = true;
        world.machines.push(discovered);
        let mut flood = HashSet::new();
        for n in 0..20u8 {
            let mac = [0x02, 0xee, 0, 0, n, n];
            let offer = world.send(Packet::new(1, mac).option(50, &ip(50).octets()));
            match offer.reply {
                Some(reply) => {
                    world.send(
                        Packet::new(3, mac)
                            .option(54, &SERVER)
                            .option(50, &reply.yiaddr.octets()),
                    );
                    flood.insert(reply.yiaddr);
                }
                None => assert!(offer.pool_full, "{}", offer.why),
            }
        }
        assert_eq!(flood, [ip(100), ip(101), ip(102)].into_iter().collect());
        // Asking for a known-pool address outright gets a NAK for a stranger.
        let grab = world.send(
            Packet::new(3, [0x02, 0xee, 0, 0, 99, 99])
                .option(54, &SERVER)
                .option(50, &ip(51).octets()),
        );
        assert_eq!(
            grab.reply.map(|r| r.msg_type),
            Some(MessageType::Nak),
            "{}",
            grab.why
        );
        let adopted = world.send(Packet::new(1, [0x02, 0xdd, 0, 0, 0, 1]));
        assert!(
            adopted.reply.is_none() && adopted.pool_full,
            "{}",
            adopted.why
        );
        assert_eq!(world.dora(MAC1), ip(50));
        assert_eq!(world.dora(MAC2), ip(51));
        // After a restart, each keeps its address.
        world.restart();
        assert_eq!(world.dora(MAC1), ip(50));
    }

    #[test]
    fn request_for_another_server_is_ignored_and_frees_the_offer() {
        let mut world = World::new();
        world.send(Packet::new(1, MAC1));
        let decision = world.send(
            Packet::new(3, MAC1)
                .option(54, &[192, 0, 2, 250])
                .option(50, &ip(100).octets()),
        );
        assert_eq!(decision.reply, None);
        assert!(decision.forget_offer);
        let other = world.send(Packet::new(1, MAC2)).reply.expect("offer");
        assert_eq!(other.yiaddr, ip(100));
    }

    #[test]
    fn selecting_an_address_held_by_another_is_nakked() {
        let mut world = World::new();
        let taken = world.dora(MAC1);
        let decision = world.send(
            Packet::new(3, MAC2)
                .option(54, &SERVER)
                .option(50, &taken.octets()),
        );
        assert_eq!(kind(&decision), Some(MessageType::Nak));
        assert!(decision.commit.is_none());
    }

    #[test]
    fn init_reboot_acks_own_naks_wrong_and_is_silent_without_record() {
        let mut world = World::new();
        let mine = world.dora(MAC1);
        let ok = world.send(Packet::new(3, MAC1).option(50, &mine.octets()));
        assert_eq!(kind(&ok), Some(MessageType::Ack));
        let wrong = world.send(Packet::new(3, MAC1).option(50, &ip(102).octets()));
        assert_eq!(kind(&wrong), Some(MessageType::Nak));
        let off_net = world.send(Packet::new(3, MAC2).option(50, &[198, 18, 0, 5]));
        assert_eq!(kind(&off_net), Some(MessageType::Nak));
        let unknown = world.send(Packet::new(3, MAC2).option(50, &ip(102).octets()));
        assert_eq!(unknown.reply, None, "no record: stay silent");
    }

    #[test]
    fn release_frees_the_address_for_others() {
        let mut world = World::new();
        let mine = world.dora(MAC1);
        let released = world.send(Packet::new(7, MAC1).ciaddr(mine.octets()));
        assert_eq!(released.reply, None);
        assert_eq!(released.commit.expect("commit").state, LeaseState::Released);
        assert!(
            world
                .book
                .is_free_for(mine, &ClientKey::Mac(MacAddr(MAC2)), world.now)
        );
        // A release by someone else changes nothing.
        let mut world = World::new();
        let mine = world.dora(MAC1);
        let spoof = world.send(Packet::new(7, MAC2).ciaddr(mine.octets()));
        assert!(spoof.commit.is_none());
    }

    #[test]
    fn declined_address_is_held_back_then_returns() {
        let mut world = World::new();
        let got = world.dora(MAC1);
        let decision = world.send(Packet::new(4, MAC1).option(50, &got.octets()));
        assert_eq!(decision.commit.expect("commit").state, LeaseState::Declined);
        assert_ne!(world.dora(MAC1), got);
        assert_ne!(world.dora(MAC2), got);
        // The pool is now full but for the declined address: nobody gets it yet.
        let late = [2, 0, 0, 0, 0, 9];
        assert_eq!(world.send(Packet::new(1, late)).reply, None);
        world.now += DECLINE_PROBATION_SECS + 1;
        let reply = world.send(Packet::new(1, late)).reply.expect("offer");
        assert_eq!(reply.yiaddr, got, "after probation it returns to the pool");
    }

    #[test]
    fn full_pool_stays_silent_and_steals_nothing() {
        let mut world = World::new();
        for n in 1..=3 {
            world.dora([2, 0, 0, 0, 0, n]);
        }
        let decision = world.send(Packet::new(1, [2, 0, 0, 0, 0, 9]));
        assert_eq!(decision.reply, None);
        assert!(decision.pool_full);
        assert!(decision.why.contains("full"), "{}", decision.why);
        // Once a lease expires its address is reclaimed.
        world.now += 3601;
        let reply = world
            .send(Packet::new(1, [2, 0, 0, 0, 0, 9]))
            .reply
            .expect("offer");
        assert!(world.subnet.in_pool(reply.yiaddr));
    }

    #[test]
    fn expired_leases_are_reclaimed_longest_expired_first() {
        let mut world = World::new();
        let first = world.dora([2, 0, 0, 0, 0, 1]);
        world.now += 10;
        world.dora([2, 0, 0, 0, 0, 2]);
        world.dora([2, 0, 0, 0, 0, 3]);
        world.now += 3600 + 5;
        // Only the first lease has expired.
        let reply = world
            .send(Packet::new(1, [2, 0, 0, 0, 0, 9]))
            .reply
            .expect("offer");
        assert_eq!(reply.yiaddr, first);
    }

    #[test]
    fn inform_gets_options_without_lease_time() {
        let mut world = World::new();
        let decision = world.send(Packet::new(8, MAC1).ciaddr([192, 0, 2, 77]));
        let reply = decision.reply.expect("ack");
        assert_eq!(reply.msg_type, MessageType::Ack);
        assert_eq!(reply.lease, None);
        assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(reply.ciaddr, Ipv4Addr::new(192, 0, 2, 77));
        assert_eq!(reply.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert!(decision.commit.is_none());
    }

    #[test]
    fn ipxe_request_gets_script_url_in_ack() {
        let mut world = World::new();
        world.send(Packet::new(1, MAC1).option(77, b"iPXE"));
        let ack = world.send(
            Packet::new(3, MAC1)
                .option(54, &SERVER)
                .option(50, &ip(100).octets())
                .option(77, b"iPXE"),
        );
        let boot = ack.reply.expect("ack").boot.expect("boot");
        assert_eq!(
            boot.filename,
            "http://192.0.2.1:8080/boot/52-54-00-00-00-01.ipxe"
        );
    }

    #[test]
    fn subnet_is_chosen_by_118_then_link_selection_then_giaddr_then_ciaddr() {
        let local = subnet();
        let remote = remote_subnet();
        let subnets = [local.clone(), remote.clone()];
        let pick = |packet: Packet| {
            let request = parse_request(&packet.end()).expect("parses");
            select_subnet(&request, &subnets, ip(1)).map(|at| subnets[at].clone())
        };
        assert_eq!(pick(Packet::new(1, MAC1)), Some(local.clone()));
        assert_eq!(
            pick(Packet::new(1, MAC1).giaddr([198, 18, 0, 1])),
            Some(remote.clone())
        );
        assert_eq!(pick(Packet::new(1, MAC1).giaddr([198, 19, 0, 1])), None);
        // The relay is reachable at an address of another network; 118 and the
        // link-selection sub-option name the client's link.
        assert_eq!(
            pick(
                Packet::new(1, MAC1)
                    .giaddr([192, 0, 2, 254])
                    .option(118, &[198, 18, 0, 0])
            ),
            Some(remote.clone())
        );
        assert_eq!(
            pick(
                Packet::new(1, MAC1)
                    .giaddr([192, 0, 2, 254])
                    .option(82, &[1, 1, 7, 5, 4, 198, 18, 0, 0])
            ),
            Some(remote.clone())
        );
        // A renewal unicast straight to us from a relayed subnet.
        assert_eq!(
            pick(Packet::new(3, MAC1).ciaddr([198, 18, 0, 12])),
            Some(remote.clone())
        );
        // From an address no subnet holds: nothing to answer with.
        assert_eq!(pick(Packet::new(3, MAC1).ciaddr([203, 0, 113, 9])), None);
    }

    #[test]
    fn known_only_answers_inventory_machines_only() {
        let mut world = World::with(false, AnswerPolicy::KnownOnly).machine(MAC1, None);
        assert_eq!(
            kind(&world.send(Packet::new(1, MAC1))),
            Some(MessageType::Offer)
        );
        let stranger = world.send(Packet::new(1, MAC2).option(93, &[0, 7]));
        assert_eq!(stranger.reply, None);
        assert!(stranger.why.contains("known_only"), "{}", stranger.why);
        assert_eq!(stranger.discovered, None);
        // A machine that was only discovered is not known yet.
        world.machines.push(Machine {
            discovered: true,
            ..machine(MacAddr(MAC2), None)
        });
        assert_eq!(world.send(Packet::new(1, MAC2)).reply, None);
    }

    #[test]
    fn policy_all_discovers_pxe_clients_and_leaves_phones_out() {
        let mut world = World::new();
        let pxe = world.send(
            Packet::new(1, MAC1)
                .option(93, &[0, 7])
                .option(60, b"PXEClient:Arch:00007:UNDI:003000"),
        );
        assert_eq!(kind(&pxe), Some(MessageType::Offer));
        assert_eq!(
            pxe.discovered,
            Some(Discovered {
                mac: MacAddr(MAC1),
                arch: Some("uefi-x64".into()),
                vendor_class: Some("PXEClient:Arch:00007:UNDI:003000".into()),
            })
        );
        let phone = world.send(Packet::new(1, MAC2).option(60, b"android-dhcp-14"));
        assert_eq!(kind(&phone), Some(MessageType::Offer));
        assert_eq!(phone.discovered, None);
        assert!(phone.reply.expect("offer").boot.is_none());
    }

    #[test]
    fn match_client_id_keys_leases_by_option_61() {
        // Off (the default): firmware and OS of one machine share one address.
        let mut world = World::new();
        let firmware = world.dora_with_id(MAC1, &[0, 1]);
        let os = world.dora_with_id(MAC1, &[1, 0x52, 0x54, 0, 0, 0, 1]);
        assert_eq!(firmware, os);
        // On: each identifier holds its own lease.
        let mut world = World::with(true, AnswerPolicy::All);
        let firmware = world.dora_with_id(MAC1, &[0, 1]);
        let os = world.dora_with_id(MAC1, &[1, 0x52, 0x54, 0, 0, 0, 1]);
        assert_ne!(firmware, os);
    }

    impl World {
        fn dora_with_id(&mut self, mac: [u8; 6], id: &[u8]) -> Ipv4Addr {
            let offer = self.send(Packet::new(1, mac).option(61, id));
            let offered = offer.reply.expect("offer").yiaddr;
            let ack = self.send(
                Packet::new(3, mac)
                    .option(61, id)
                    .option(54, &SERVER)
                    .option(50, &offered.octets()),
            );
            assert_eq!(kind(&ack), Some(MessageType::Ack));
            offered
        }
    }

    fn proxy(packet: Packet, port: ProxyPort, machine: Option<&Machine>) -> Decision {
        let request = parse_request(&packet.end()).expect("parses");
        let boot = boot_config();
        let ctx = ProxyContext {
            server_ip: ip(1),
            machine,
            boot: &boot,
            policy: AnswerPolicy::All,
            port,
        };
        decide_proxy(&request, &ctx)
    }

    #[test]
    fn proxy_offers_boot_information_and_never_an_address() {
        let known = machine(MacAddr(MAC1), None);
        let offer = proxy(
            Packet::new(1, MAC1)
                .option(93, &[0, 7])
                .option(60, b"PXEClient:Arch:00007:UNDI:003000")
                .option(97, &[0; 17]),
            ProxyPort::Dhcp,
            Some(&known),
        );
        let reply = offer.reply.expect("proxy offer");
        assert_eq!(reply.msg_type, MessageType::Offer);
        assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(reply.lease, None);
        assert_eq!(reply.subnet_mask, None);
        let boot = reply.boot.expect("boot");
        assert_eq!(boot.filename, "snponly.efi");
        assert_eq!(boot.vendor_class.as_deref(), Some("PXEClient"));
        assert_eq!(reply.vendor_options, Some(vec![6, 1, 8, 255]));
        assert!(offer.commit.is_none() && offer.hold_offer.is_none());

        // The boot server port answers the client's request, now from its address.
        let ack = proxy(
            Packet::new(3, MAC1)
                .ciaddr([192, 0, 2, 150])
                .option(93, &[0, 7])
                .option(60, b"PXEClient:Arch:00007:UNDI:003000"),
            ProxyPort::BootServer,
            Some(&known),
        );
        let reply = ack.reply.expect("proxy ack");
        assert_eq!(reply.msg_type, MessageType::Ack);
        assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(ack.observed, Some(Ipv4Addr::new(192, 0, 2, 150)));

        // iPXE gets its script, and the loop is broken as in full mode.
        let ipxe = proxy(
            Packet::new(1, MAC1).option(77, b"iPXE").option(93, &[0, 0]),
            ProxyPort::Dhcp,
            Some(&known),
        );
        assert!(
            ipxe.reply
                .expect("offer")
                .boot
                .expect("boot")
                .filename
                .ends_with("/boot/52-54-00-00-00-01.ipxe")
        );
    }

    #[test]
    fn proxy_ignores_non_pxe_clients_and_the_real_servers_business() {
        let phone = proxy(Packet::new(1, MAC2), ProxyPort::Dhcp, None);
        assert_eq!(phone.reply, None);
        assert_eq!(phone.observed, None);
        // A PXE client's REQUEST to the network's server: no answer, but its address
        // is learned.
        let request = proxy(
            Packet::new(3, MAC2)
                .option(60, b"PXEClient")
                .option(54, &[192, 0, 2, 254])
                .option(50, &[192, 0, 2, 160]),
            ProxyPort::Dhcp,
            None,
        );
        assert_eq!(request.reply, None);
        assert_eq!(request.observed, Some(Ipv4Addr::new(192, 0, 2, 160)));
        // An unknown PXE client is discovered under policy all.
        let unknown = proxy(
            Packet::new(1, MAC2).option(60, b"PXEClient:Arch:00000:UNDI:002001"),
            ProxyPort::Dhcp,
            None,
        );
        assert!(unknown.reply.is_some());
        assert_eq!(unknown.discovered.map(|d| d.mac), Some(MacAddr(MAC2)));
    }

    /// Random sequences of client actions (DISCOVER, REQUEST in every state, RELEASE,
    /// DECLINE, time passing, restarts from the table) never leave one address bound
    /// to two clients, never bind a fixed address to anyone but its owner, never give
    /// one client two addresses, and the table always reloads into the same book.
    #[test]
    fn no_address_is_ever_held_by_two_clients() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..400 {
            let match_client_id = round % 2 == 1;
            let mut world = World::with(match_client_id, AnswerPolicy::All)
                .machine([2, 0, 0, 0, 0, 1], Some(ip(101)));
            for _step in 0..80 {
                let mac = [2, 0, 0, 0, 0, 1 + next(5) as u8];
                let target = ip(99 + next(5) as u8);
                let mut packet = match next(9) {
                    0 | 1 => Packet::new(1, mac),
                    2 => Packet::new(3, mac)
                        .option(54, &SERVER)
                        .option(50, &target.octets()),
                    3 => Packet::new(3, mac).option(50, &target.octets()),
                    4 => Packet::new(3, mac).ciaddr(target.octets()),
                    5 => Packet::new(7, mac).ciaddr(target.octets()),
                    6 => Packet::new(4, mac).option(50, &target.octets()),
                    7 => {
                        world.now += next(4000) as i64;
                        continue;
                    }
                    _ => {
                        world.restart();
                        continue;
                    }
                };
                if next(3) == 0 {
                    // Firmware, iPXE and OS of one machine: different identifiers.
                    packet = packet.option(61, &[0, next(3) as u8]);
                }
                world.send(packet);
                check_invariants(&world);
            }
        }
    }

    fn check_invariants(world: &World) {
        let mut holders: HashMap<Ipv4Addr, ClientKey> = HashMap::new();
        let mut by_client: HashMap<ClientKey, Ipv4Addr> = HashMap::new();
        for record in world.table.values() {
            if record.state != LeaseState::Bound || record.expires_at <= world.now {
                continue;
            }
            let key = world.book.key_of(record.mac, record.client_id.as_deref());
            assert!(
                holders.insert(record.ip, key.clone()).is_none(),
                "{} bound twice",
                record.ip
            );
            let fixed_owner = world.fixed.get(&record.ip);
            assert!(fixed_owner.is_none_or(|m| *m == record.mac));
            if let Some(other) = by_client.insert(key.clone(), record.ip) {
                panic!("{key:?} holds {other} and {}", record.ip);
            }
        }
        // The allocation index agrees with a scan of the whole pool.
        for n in 0..6u8 {
            let key = ClientKey::Mac(MacAddr([2, 0, 0, 0, 0, n]));
            let acceptable = |ip: Ipv4Addr| !world.fixed.contains_key(&ip);
            let start = world.subnet.pool_start;
            assert_eq!(
                world.book.find_free(start, world.now, &key, acceptable),
                world
                    .book
                    .find_free_slow(start, world.now, &key, acceptable)
            );
        }
        // The table is exactly the book: what a restart would load.
        let mut in_book: Vec<_> = world.book.records().cloned().collect();
        in_book.sort_by_key(|r| r.ip);
        let in_table: Vec<_> = world.table.values().cloned().collect();
        assert_eq!(in_book, in_table);
    }
}
