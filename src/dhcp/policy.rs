//! DHCP policy: given a decoded request, the inventory's view of the client, the lease
//! book and the time, decide what to answer and what to commit. Pure: no sockets, no
//! database, no clock; the server loop carries the decision out (commit first, then
//! send).

use crate::config::Subnet;
use crate::dhcp::boot::{self, BootConfig, NoBootFile};
use crate::dhcp::leases::{LeaseBook, OFFER_HOLD_SECS};
use crate::dhcp::wire::{ClientRequest, ReplySpec};
use crate::mac::MacAddr;
use crate::store::{LeaseRecord, LeaseState, Machine};
use dhcproto::v4::MessageType;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// How long a declined address stays out of the pool.
pub const DECLINE_PROBATION_SECS: i64 = 600;

pub struct Context<'a> {
    pub server_ip: Ipv4Addr,
    pub subnet: &'a Subnet,
    /// The inventory's record of this client, if it is a known machine.
    pub machine: Option<&'a Machine>,
    /// Every fixed address in the inventory and its owner.
    pub fixed: &'a HashMap<Ipv4Addr, MacAddr>,
    pub boot: &'a BootConfig,
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
}

impl Decision {
    fn silent(why: impl Into<String>) -> Self {
        Decision {
            why: why.into(),
            ..Decision::default()
        }
    }
}

/// The subnet a request belongs to: the relay's (giaddr) when relayed, else the one
/// the serving interface's address is in.
pub fn select_subnet<'a>(
    request: &ClientRequest,
    subnets: &'a [Subnet],
    server_ip: Ipv4Addr,
) -> Option<&'a Subnet> {
    let anchor = if request.giaddr.is_unspecified() {
        server_ip
    } else {
        request.giaddr
    };
    subnets.iter().find(|s| s.contains(anchor))
}

pub fn decide(request: &ClientRequest, ctx: &Context<'_>, book: &LeaseBook) -> Decision {
    match request.msg_type {
        MessageType::Discover => discover(request, ctx, book),
        MessageType::Request => dhcp_request(request, ctx, book),
        MessageType::Release => release(request, ctx, book),
        MessageType::Decline => decline(request, ctx, book),
        MessageType::Inform => inform(request, ctx),
        other => Decision::silent(format!("{other:?} is not a client message")),
    }
}

/// The fixed address of this client when it has one in this subnet.
fn fixed_for(request: &ClientRequest, ctx: &Context<'_>) -> Option<Ipv4Addr> {
    ctx.machine
        .and_then(|m| m.ip)
        .filter(|ip| ctx.subnet.contains(*ip))
        .filter(|_| ctx.machine.is_some_and(|m| m.mac == request.mac))
}

/// Whether `ip` may be bound to this client at all, ignoring who holds it now.
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
        None => subnet.in_pool(ip) && fixed_for(request, ctx).is_none(),
    }
}

fn available(ip: Ipv4Addr, request: &ClientRequest, ctx: &Context<'_>, book: &LeaseBook) -> bool {
    assignable(ip, request, ctx) && book.is_free_for(ip, request.mac, ctx.now)
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
    let previous = book.of_client(request.mac).map(|r| r.ip);
    let candidates = previous.into_iter().chain(request.requested_ip);
    if let Some(ip) = candidates
        .into_iter()
        .find(|ip| available(*ip, request, ctx, book))
    {
        return Some(ip);
    }
    // Prefer addresses never handed out, so a returning client finds its old one.
    let fresh = ctx
        .subnet
        .pool()
        .find(|ip| !book.was_used(*ip) && available(*ip, request, ctx, book));
    fresh.or_else(|| {
        ctx.subnet
            .pool()
            .filter(|ip| available(*ip, request, ctx, book))
            .min_by_key(|ip| book.record(*ip).map_or(i64::MIN, |r| r.expires_at))
    })
}

fn base_reply(msg_type: MessageType, request: &ClientRequest, ctx: &Context<'_>) -> ReplySpec {
    ReplySpec {
        msg_type,
        server_id: ctx.server_ip,
        yiaddr: Ipv4Addr::UNSPECIFIED,
        ciaddr: Ipv4Addr::UNSPECIFIED,
        lease_secs: None,
        subnet_mask: Some(ctx.subnet.mask()),
        router: ctx.subnet.router,
        dns: ctx.subnet.dns.clone(),
        hostname: ctx.machine.and_then(|m| m.hostname.clone()),
        boot: None,
        message: None,
    }
    .with_ciaddr_of(request, msg_type)
}

impl ReplySpec {
    fn with_ciaddr_of(mut self, request: &ClientRequest, msg_type: MessageType) -> Self {
        if msg_type == MessageType::Ack {
            self.ciaddr = request.ciaddr;
        }
        self
    }
}

fn add_boot(
    reply: &mut ReplySpec,
    decision: &mut Decision,
    request: &ClientRequest,
    ctx: &Context<'_>,
) {
    match boot::choose(request, ctx.boot) {
        Ok(boot) => reply.boot = Some(boot),
        Err(NoBootFile::NotPxe) => {}
        Err(reason) => decision.no_boot_file = Some(reason),
    }
}

fn nak(request: &ClientRequest, ctx: &Context<'_>, why: String) -> Decision {
    let mut reply = base_reply(MessageType::Nak, request, ctx);
    reply.subnet_mask = None;
    reply.router = None;
    reply.dns.clear();
    reply.hostname = None;
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
        let why = match fixed_for(request, ctx) {
            Some(fixed) => format!(
                "fixed address {fixed} of {} is held by {:?}",
                request.mac,
                book.holder(fixed, ctx.now)
            ),
            None => format!(
                "pool {}-{} is full: no address for {}",
                ctx.subnet.pool_start, ctx.subnet.pool_end, request.mac
            ),
        };
        return Decision::silent(why);
    };
    let mut reply = base_reply(MessageType::Offer, request, ctx);
    reply.yiaddr = ip;
    reply.lease_secs = Some(ctx.subnet.lease_secs);
    let mut decision = Decision {
        hold_offer: Some((ip, ctx.now + OFFER_HOLD_SECS)),
        why: format!("offer {ip}"),
        ..Decision::default()
    };
    add_boot(&mut reply, &mut decision, request, ctx);
    decision.reply = Some(reply);
    decision
}

fn ack(request: &ClientRequest, ctx: &Context<'_>, ip: Ipv4Addr) -> Decision {
    let lease_secs = ctx.subnet.lease_secs;
    let mut reply = base_reply(MessageType::Ack, request, ctx);
    reply.yiaddr = ip;
    reply.lease_secs = Some(lease_secs);
    let mut decision = Decision {
        commit: Some(LeaseRecord {
            ip,
            mac: request.mac,
            expires_at: ctx.now + i64::from(lease_secs),
            state: LeaseState::Bound,
            hostname: request.hostname.clone(),
        }),
        why: format!("ack {ip}"),
        ..Decision::default()
    };
    add_boot(&mut reply, &mut decision, request, ctx);
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
            ack(request, ctx, ip)
        } else {
            nak(
                request,
                ctx,
                format!("{ip} is not available to {}", request.mac),
            )
        };
    }
    // INIT-REBOOT: a client checking the address it remembers.
    if request.ciaddr.is_unspecified() {
        let Some(ip) = request.requested_ip else {
            return Decision::silent("INIT-REBOOT without a requested address");
        };
        if !ctx.subnet.contains(ip) {
            return nak(request, ctx, format!("{ip} is not on this network"));
        }
        if let Some(fixed) = fixed_for(request, ctx)
            && fixed != ip
        {
            return nak(
                request,
                ctx,
                format!("{} has fixed address {fixed}", request.mac),
            );
        }
        let ours = book.of_client(request.mac).map(|r| r.ip);
        return match ours {
            Some(known) if known == ip && available(ip, request, ctx, book) => {
                ack(request, ctx, ip)
            }
            Some(_) => nak(
                request,
                ctx,
                format!("{ip} is not {}'s address", request.mac),
            ),
            None if fixed_for(request, ctx) == Some(ip) && available(ip, request, ctx, book) => {
                ack(request, ctx, ip)
            }
            None if book.holder(ip, ctx.now).is_some() => {
                nak(request, ctx, format!("{ip} belongs to another client"))
            }
            // RFC 2131 §4.3.2: no record of this client, so stay silent.
            None => Decision::silent(format!(
                "INIT-REBOOT for {ip}: no record of {}",
                request.mac
            )),
        };
    }
    // RENEWING or REBINDING: the client has ciaddr configured.
    let ip = request.ciaddr;
    if available(ip, request, ctx, book) {
        ack(request, ctx, ip)
    } else {
        nak(
            request,
            ctx,
            format!("{ip} is not available to {}", request.mac),
        )
    }
}

fn release(request: &ClientRequest, ctx: &Context<'_>, book: &LeaseBook) -> Decision {
    match book.of_client(request.mac) {
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
    if !ctx.subnet.contains(ip) || book.holder(ip, ctx.now) != Some(request.mac) {
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
        }),
        forget_offer: true,
        ..Decision::silent(format!(
            "{ip} declined: held back {DECLINE_PROBATION_SECS} s"
        ))
    }
}

fn inform(request: &ClientRequest, ctx: &Context<'_>) -> Decision {
    if request.ciaddr.is_unspecified() {
        return Decision::silent("INFORM without ciaddr");
    }
    let mut reply = base_reply(MessageType::Ack, request, ctx);
    reply.ciaddr = request.ciaddr;
    let mut decision = Decision::silent("inform");
    add_boot(&mut reply, &mut decision, request, ctx);
    decision.reply = Some(reply);
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::wire::{parse_request, tests::Packet};

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
            router: Some(ip(1)),
            dns: vec![ip(1)],
            lease_secs: 3600,
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
        }
    }

    /// A test world: the config, the inventory and the lease book, with a clock.
    struct World {
        subnet: Subnet,
        boot: BootConfig,
        machines: Vec<Machine>,
        fixed: HashMap<Ipv4Addr, MacAddr>,
        book: LeaseBook,
        now: i64,
    }

    impl World {
        fn new() -> Self {
            World {
                subnet: subnet(),
                boot: boot_config(),
                machines: Vec::new(),
                fixed: HashMap::new(),
                book: LeaseBook::default(),
                now: 1_000_000,
            }
        }

        fn machine(mut self, mac: [u8; 6], fixed: Option<Ipv4Addr>) -> Self {
            let mac = MacAddr(mac);
            if let Some(ip) = fixed {
                self.fixed.insert(ip, mac);
            }
            self.machines.push(Machine {
                mac,
                hostname: Some(format!("node{}", mac.0[5])),
                image: None,
                ip: fixed,
                arch: None,
                first_seen_ms: None,
                last_seen_ms: None,
            });
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
                now: self.now,
            };
            let decision = decide(&request, &ctx, &self.book);
            if let Some(record) = &decision.commit {
                self.book.apply(record.clone());
            }
            if let Some((ip, until)) = decision.hold_offer {
                self.book.hold_offer(ip, request.mac, until);
            }
            if decision.forget_offer {
                self.book.forget_offer(request.mac);
            }
            decision
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
        assert_eq!(reply.lease_secs, Some(3600));
        assert_eq!(reply.router, Some(ip(1)));
        assert_eq!(reply.dns, vec![ip(1)]);
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
        let record = world.book.of_client(MacAddr(MAC1)).expect("lease");
        assert_eq!(record.ip, got);
        assert_eq!(record.expires_at, world.now + 3600);
        world.now += 1800;
        let renew = world.send(Packet::new(3, MAC1).ciaddr(got.octets()));
        assert_eq!(kind(&renew), Some(MessageType::Ack));
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
        assert!(world.book.is_free_for(mine, MacAddr(MAC2), world.now));
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
    fn inform_gets_options_without_lease_time() {
        let mut world = World::new();
        let decision = world.send(Packet::new(8, MAC1).ciaddr([192, 0, 2, 77]));
        let reply = decision.reply.expect("ack");
        assert_eq!(reply.msg_type, MessageType::Ack);
        assert_eq!(reply.lease_secs, None);
        assert_eq!(reply.yiaddr, Ipv4Addr::UNSPECIFIED);
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
    fn subnet_is_chosen_by_relay_address() {
        let local = subnet();
        let remote = Subnet {
            network: Ipv4Addr::new(198, 18, 0, 0),
            prefix_len: 24,
            pool_start: Ipv4Addr::new(198, 18, 0, 10),
            pool_end: Ipv4Addr::new(198, 18, 0, 20),
            router: None,
            dns: vec![],
            lease_secs: 600,
        };
        let subnets = [local.clone(), remote.clone()];
        let direct = parse_request(&Packet::new(1, MAC1).end()).expect("parses");
        let relayed =
            parse_request(&Packet::new(1, MAC1).giaddr([198, 18, 0, 1]).end()).expect("parses");
        let unknown =
            parse_request(&Packet::new(1, MAC1).giaddr([198, 19, 0, 1]).end()).expect("parses");
        assert_eq!(select_subnet(&direct, &subnets, ip(1)), Some(&local));
        assert_eq!(select_subnet(&relayed, &subnets, ip(1)), Some(&remote));
        assert_eq!(select_subnet(&unknown, &subnets, ip(1)), None);
    }

    /// Random sequences of client actions never leave one address bound to two
    /// clients, and never bind outside what the client may hold.
    #[test]
    fn no_address_is_ever_held_by_two_clients() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _round in 0..200 {
            let mut world = World::new().machine([2, 0, 0, 0, 0, 1], Some(ip(101)));
            for _step in 0..60 {
                let mac = [2, 0, 0, 0, 0, 1 + next(5) as u8];
                let target = ip(99 + next(5) as u8);
                let packet = match next(7) {
                    0 => Packet::new(1, mac),
                    1 => Packet::new(3, mac)
                        .option(54, &SERVER)
                        .option(50, &target.octets()),
                    2 => Packet::new(3, mac).option(50, &target.octets()),
                    3 => Packet::new(3, mac).ciaddr(target.octets()),
                    4 => Packet::new(7, mac).ciaddr(target.octets()),
                    5 => Packet::new(4, mac).option(50, &target.octets()),
                    _ => {
                        world.now += next(4000) as i64;
                        // A restart: the book is rebuilt from what was committed.
                        let records: Vec<_> = world.book.records().cloned().collect();
                        world.book = LeaseBook::load(records);
                        continue;
                    }
                };
                world.send(packet);
                let mut holders: HashMap<Ipv4Addr, MacAddr> = HashMap::new();
                for record in world.book.records() {
                    if record.state == LeaseState::Bound && record.expires_at > world.now {
                        let previous = holders.insert(record.ip, record.mac);
                        assert!(previous.is_none(), "{} bound twice", record.ip);
                        let fixed_owner = world.fixed.get(&record.ip);
                        assert!(fixed_owner.is_none_or(|m| *m == record.mac));
                    }
                }
                let mut by_mac: HashMap<MacAddr, Ipv4Addr> = HashMap::new();
                for (ip, mac) in holders {
                    assert!(
                        by_mac.insert(mac, ip).is_none(),
                        "{mac} holds two addresses"
                    );
                }
            }
        }
    }
}
