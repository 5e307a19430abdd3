//! The DHCP socket loop: receive, decode, decide, commit, send.
//!
//! One task owns the lease book and handles packets in batches: it drains every packet
//! waiting on its sockets (up to `MAX_BATCH`), decides each in arrival order against
//! the book (so two clients can never race for an address) and sends the replies that
//! promise nothing (offers, NAKs, INFORM answers) at once. Leases wait in a group
//! that is committed in one SQLite transaction (one fsync) on the database thread;
//! only when that commit is done are its acknowledgements sent. While one group
//! commits, the task goes on receiving and deciding, and the leases decided meanwhile
//! form the next group: under load a group is what arrived during the previous
//! fsync, so the fsync's cost is shared instead of paid per lease, and offers never
//! wait for the disk. If a commit fails, its acknowledgements and those of the group
//! decided after it are dropped and the book is reloaded from the table.
//!
//! The server reaches the database only through `persist::DhcpPersistence` (load the
//! leases, the inventory if it changed, commit a group), so the engine is the caller's
//! choice and the tests below drive this loop over loopback sockets with a fake whose
//! commits fail or wait on command.
//!
//! The inventory is read through a cached snapshot that is reloaded when the
//! database's inventory generation moves (a trigger bumps it on every change of the
//! columns DHCP reads); every commit checks it, and between commits it is checked at
//! most every `INVENTORY_RECHECK`, so CLI and panel changes apply within milliseconds.

use crate::clock;
use crate::config::{DhcpConfig, DhcpMode, DiscoveryLimits, Subnet};
use crate::dhcp::boot::{self, BootConfig, NoBootFile};
use crate::dhcp::leases::LeaseBook;
use crate::dhcp::persist::{CommitOutcome, DhcpPersistence, PersistFuture};
use crate::dhcp::policy::{self, Context, Decision, ProxyContext, ProxyPort};
use crate::dhcp::wire::{self, CLIENT_PORT, ClientRequest, Destination, MessageType, SERVER_PORT};
use crate::diagnosis;
use crate::mac::MacAddr;
use crate::netif;
use crate::netif::MMSG_MAX;
use crate::store::{
    DhcpBatch, InventorySnapshot, LeaseOp, LeaseRecord, LeaseState, Machine, NewEvent, Seen,
    StoreError,
};
use crate::throttle::Throttle;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The PXE boot server port (proxyDHCP answers boot file requests here).
pub const BOOT_SERVER_PORT: u16 = 4011;
/// How stale the cached inventory may be when no commit brings news: a machine added
/// with the CLI is known to DHCP within this long.
const INVENTORY_RECHECK: std::time::Duration = std::time::Duration::from_millis(5);
/// Batches smaller than this, arriving within `COALESCE_WHEN_WITHIN` of the previous
/// one, make the loop pause `COALESCE_FOR` before looking again. The thread is the
/// DHCP server's own, so the pause holds up nothing else; it adds at most that much to
/// a reply under load and nothing when the server is quiet.
const COALESCE_BELOW: usize = 16;
const COALESCE_WHEN_WITHIN: std::time::Duration = std::time::Duration::from_micros(1000);
const COALESCE_FOR: std::time::Duration = std::time::Duration::from_micros(300);
/// Most packets handled in one pass of the loop.
const MAX_BATCH: usize = 512;
/// Commits start at least this far apart. Each fsync costs the kernel (and, in a VM,
/// the hypervisor) far more than the rows it writes: under load this trades a
/// fraction of a millisecond of ACK latency for far fewer of them. When the server is
/// quiet the previous commit is long past and a lease is committed at once.
const MIN_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_micros(1000);
/// Kernel receive buffer: room for the packets that arrive while the loop is held up
/// (other work on the same core), instead of dropping them.
const RECEIVE_BUFFER: usize = 16 << 20;
/// How often a repeated condition (full pool, malformed packets) is logged again.
const LOG_EVERY_MS: i64 = 10_000;
/// Per client, one `dhcp.ignored` event per this long: a PXE client that retries
/// every few seconds must not fill the event table.
const IGNORED_EVENT_EVERY_MS: i64 = 60_000;
/// Per client, one `dhcp.no-boot-file` event per this long: about once per boot
/// attempt, not once per retried DISCOVER.
const NO_BOOT_FILE_EVENT_EVERY_MS: i64 = 60_000;
/// Entries kept in the per-MAC caches (event throttling, learned addresses) before they
/// are emptied: a flood of made-up MACs must not grow memory without bound.
const MEMORY_CAP: usize = 65_536;
/// proxyDHCP: a learned address is written again after this long even if unchanged.
const OBSERVED_REFRESH_MS: i64 = 600_000;
/// proxyDHCP: how long a learned address is kept (rackboot does not know the real
/// server's lease time).
const OBSERVED_SECS: i64 = 3600;

/// Binds `port` on `interface` only: rackboot never answers on an interface nobody
/// named. Needs CAP_NET_BIND_SERVICE (ports below 1024) and CAP_NET_RAW
/// (SO_BINDTODEVICE).
pub fn bind(interface: &str, port: u16) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    netif::set_buffer_sizes(&socket, RECEIVE_BUFFER);
    socket.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DHCP socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error("loading leases: {0}")]
    Store(#[from] StoreError),
    #[error("the DHCP thread stopped while starting")]
    Thread,
}

/// Starts the DHCP server on a thread of its own, with a single-threaded runtime, and
/// returns once its lease book is loaded; the receiver resolves when it stops.
///
/// The server is one task that owns all its state. On the shared multi-threaded
/// runtime every wakeup (a packet, a finished commit) could land on the other worker
/// and its idle workers spin looking for work; measured under perfdhcp that was a
/// fifth of the CPU on two cores. Alone on one thread it is woken where it runs.
pub async fn spawn(
    socket: std::net::UdpSocket,
    boot_socket: Option<std::net::UdpSocket>,
    server_ip: Ipv4Addr,
    config: DhcpConfig,
    boot: BootConfig,
    persistence: Box<dyn DhcpPersistence>,
) -> Result<tokio::sync::oneshot::Receiver<std::io::Result<()>>, StartError> {
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("rackboot-dhcp".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started_tx.send(Err(StartError::Socket(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let server = async {
                    let socket = UdpSocket::from_std(socket)?;
                    let boot_socket = boot_socket.map(UdpSocket::from_std).transpose()?;
                    Ok::<_, StartError>(
                        DhcpServer::new(socket, boot_socket, server_ip, config, boot, persistence)
                            .await?,
                    )
                };
                match server.await {
                    Ok(server) => {
                        let _ = started_tx.send(Ok(()));
                        let _ = done_tx.send(server.run().await);
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                    }
                }
            });
        });
    if let Err(e) = thread {
        return Err(StartError::Socket(e));
    }
    started.await.map_err(|_| StartError::Thread)??;
    Ok(done)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Dhcp,
    BootServer,
}

struct Incoming {
    bytes: Vec<u8>,
    peer: SocketAddrV4,
    port: Port,
}

/// A reply ready to go, and whether it must wait for the batch's commit.
struct Outgoing {
    bytes: Vec<u8>,
    target: SocketAddrV4,
    port: Port,
    mac: MacAddr,
    kind: MessageType,
}

/// Leases decided and not yet committed, with the acknowledgements that wait for them.
#[derive(Default)]
struct Group {
    writes: DhcpBatch,
    acks: Vec<Outgoing>,
    now_ms: i64,
}

/// A group being committed.
struct Commit {
    future: PersistFuture<CommitOutcome>,
    acks: Vec<Outgoing>,
    leases: usize,
    started: std::time::Instant,
}

/// The running commit's outcome; never ready when nothing is committing.
async fn wait_commit(committing: &mut Option<Commit>) -> Result<CommitOutcome, StoreError> {
    match committing {
        Some(commit) => commit.future.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Counters behind the periodic "DHCP activity" log line.
#[derive(Default)]
struct Stats {
    since_ms: Option<i64>,
    batches: u64,
    packets: u64,
    sent: u64,
    naks: u64,
    commits: u64,
    leases: u64,
    commit_total: std::time::Duration,
    commit_max: std::time::Duration,
}

impl Stats {
    fn commit(&mut self, leases: usize, took: std::time::Duration) {
        self.commits += 1;
        self.leases += leases as u64;
        self.commit_total += took;
        self.commit_max = self.commit_max.max(took);
    }

    /// One info line per `LOG_EVERY_MS` while there is traffic: what an operator
    /// needs to see load and disk latency, without a line per packet.
    fn report(&mut self, now_ms: i64) {
        let since = *self.since_ms.get_or_insert(now_ms);
        let elapsed_ms = now_ms - since;
        if elapsed_ms < LOG_EVERY_MS {
            return;
        }
        if self.packets > 0 {
            let secs = elapsed_ms as f64 / 1000.0;
            tracing::info!(
                packets_per_s = format!("{:.0}", self.packets as f64 / secs),
                packets_per_batch =
                    format!("{:.1}", self.packets as f64 / self.batches.max(1) as f64),
                replies_per_s = format!("{:.0}", self.sent as f64 / secs),
                naks = self.naks,
                commits = self.commits,
                leases_per_commit =
                    format!("{:.1}", self.leases as f64 / self.commits.max(1) as f64),
                commit_avg_ms = format!(
                    "{:.2}",
                    self.commit_total.as_secs_f64() * 1000.0 / self.commits.max(1) as f64
                ),
                commit_max_ms = format!("{:.2}", self.commit_max.as_secs_f64() * 1000.0),
                "DHCP activity"
            );
        }
        *self = Stats {
            since_ms: Some(now_ms),
            ..Stats::default()
        };
    }
}

/// New discovered machines admitted: at most `per_second` in each second, and none
/// once `max` are waiting to be adopted.
struct DiscoveryBudget {
    limits: DiscoveryLimits,
    second: i64,
    used: u32,
}

impl DiscoveryBudget {
    fn new(limits: DiscoveryLimits) -> Self {
        DiscoveryBudget {
            limits,
            second: i64::MIN,
            used: 0,
        }
    }

    fn admit(&mut self, now_ms: i64, waiting: usize) -> Result<(), String> {
        if waiting >= usize::try_from(self.limits.max).unwrap_or(usize::MAX) {
            return Err(format!(
                "{waiting} discovered machines wait for an operator (dhcp.discovered_max)"
            ));
        }
        let second = now_ms.div_euclid(1000);
        if second != self.second {
            self.second = second;
            self.used = 0;
        }
        if self.used >= self.limits.per_second {
            return Err(format!(
                "more than {} new clients this second (dhcp.discover_per_second)",
                self.limits.per_second
            ));
        }
        self.used += 1;
        Ok(())
    }
}

pub struct DhcpServer {
    socket: UdpSocket,
    /// Port 4011, proxy mode only.
    boot_socket: Option<UdpSocket>,
    interface: String,
    server_ip: Ipv4Addr,
    config: DhcpConfig,
    boot: BootConfig,
    persistence: Box<dyn DhcpPersistence>,
    book: LeaseBook,
    inventory: InventorySnapshot,
    arp_failure_logged: bool,
    malformed_log: Throttle,
    send_error_log: Throttle,
    no_subnet_log: Throttle,
    no_boot_file_log: Throttle,
    pool_full_log: HashMap<Ipv4Addr, Throttle>,
    ignored_events: HashMap<MacAddr, i64>,
    no_boot_file_events: HashMap<MacAddr, i64>,
    ignored_event_budget: Throttle,
    /// How many new discovered machines may still be added, this second and in all.
    discovery: DiscoveryBudget,
    /// Discovered (not adopted) machines in the inventory, counted when a snapshot
    /// is installed and on each addition.
    discovered_waiting: usize,
    refused_discovery_log: Throttle,
    discovery_log: Throttle,
    /// The serving interface's address and prefix length.
    local_net: Option<(Ipv4Addr, u8)>,
    observed: HashMap<MacAddr, (Ipv4Addr, i64)>,
    stats: Stats,
    /// recvmmsg buffers, reused.
    recv_bufs: Vec<[u8; 2048]>,
    /// Where relayed replies go on the relay: `SERVER_PORT`, except in the tests, whose
    /// unprivileged relay socket cannot bind it.
    relay_port: u16,
}

/// Pools of `subnets` and the addresses their cursors skip: fixed addresses and the
/// ones a pool never hands out (network, broadcast, router, ourselves).
fn pools_and_reserved(
    subnets: &[Subnet],
    server_ip: Ipv4Addr,
    fixed: &HashMap<Ipv4Addr, MacAddr>,
) -> (Vec<(Ipv4Addr, Ipv4Addr)>, HashSet<Ipv4Addr>) {
    let pools = subnets.iter().flat_map(Subnet::pools).collect();
    let mut reserved: HashSet<Ipv4Addr> = fixed.keys().copied().collect();
    reserved.insert(server_ip);
    for s in subnets {
        reserved.insert(s.network);
        reserved.insert(s.broadcast());
        reserved.extend(s.router);
    }
    (pools, reserved)
}

impl DhcpServer {
    async fn new(
        socket: UdpSocket,
        boot_socket: Option<UdpSocket>,
        server_ip: Ipv4Addr,
        config: DhcpConfig,
        boot: BootConfig,
        persistence: Box<dyn DhcpPersistence>,
    ) -> Result<Self, StoreError> {
        let records = persistence.leases().await?;
        let inventory = persistence
            .inventory_if_changed(None)
            .await?
            .unwrap_or_default();
        let (pools, reserved) = pools_and_reserved(&config.subnets, server_ip, &inventory.fixed);
        let discovery_limits = config.discovery;
        let discovered_waiting = inventory.machines.values().filter(|m| m.discovered).count();
        let book = LeaseBook::load(config.match_client_id, &pools, reserved, records);
        let local_net = netif::ipv4_of(&config.interface).ok().flatten();
        tracing::info!(
            leases = book.len(),
            machines = inventory.machines.len(),
            "lease book loaded"
        );
        Ok(DhcpServer {
            socket,
            boot_socket,
            interface: config.interface.clone(),
            server_ip,
            config,
            boot,
            persistence,
            book,
            inventory,
            arp_failure_logged: false,
            malformed_log: Throttle::new(20, LOG_EVERY_MS),
            send_error_log: Throttle::new(5, LOG_EVERY_MS),
            no_subnet_log: Throttle::new(20, LOG_EVERY_MS),
            no_boot_file_log: Throttle::new(20, LOG_EVERY_MS),
            pool_full_log: HashMap::new(),
            ignored_events: HashMap::new(),
            no_boot_file_events: HashMap::new(),
            // One a second on average: enough to explain why a new machine is not
            // answered, not enough for a flood of made-up clients to grow the table.
            ignored_event_budget: Throttle::new(10, LOG_EVERY_MS),
            discovery: DiscoveryBudget::new(discovery_limits),
            discovered_waiting,
            discovery_log: Throttle::new(20, LOG_EVERY_MS),
            refused_discovery_log: Throttle::new(1, LOG_EVERY_MS),
            local_net,
            observed: HashMap::new(),
            stats: Stats::default(),
            recv_bufs: vec![[0u8; 2048]; MMSG_MAX],
            relay_port: SERVER_PORT,
        })
    }

    pub async fn run(mut self) -> std::io::Result<()> {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut next_group = Group::default();
        let mut committing: Option<Commit> = None;
        let start = tokio::time::Instant::now();
        let mut last_batch = start.into_std();
        let mut last_inventory_check = start
            .into_std()
            .checked_sub(INVENTORY_RECHECK)
            .unwrap_or(start.into_std());
        let mut last_commit = start.checked_sub(MIN_COMMIT_INTERVAL).unwrap_or(start);
        loop {
            let due = last_commit + MIN_COMMIT_INTERVAL;
            let waiting = committing.is_none() && !next_group.writes.is_empty();
            if waiting && tokio::time::Instant::now() >= due {
                last_commit = tokio::time::Instant::now();
                committing = Some(self.start_commit(std::mem::take(&mut next_group)));
            }
            let commit_timer = waiting && committing.is_none();
            tokio::select! {
                // A finished commit first: its clients are waiting for their ACKs.
                biased;
                outcome = wait_commit(&mut committing) => {
                    if let Some(commit) = committing.take() {
                        self.finish_commit(commit, outcome, &mut next_group).await;
                    }
                }
                () = tokio::time::sleep_until(due), if commit_timer => {}
                ready = self.receive(&mut batch) => {
                    ready?;
                    if !batch.is_empty() {
                        // During a commit the commit itself brings inventory changes
                        // back. Otherwise ask the idle database thread, but not for
                        // every packet: under load that round trip (two thread
                        // wakeups) cost more than the packets it came with.
                        if committing.is_none()
                            && last_inventory_check.elapsed() >= INVENTORY_RECHECK
                        {
                            last_inventory_check = std::time::Instant::now();
                            self.refresh_inventory().await;
                        }
                        let handled = batch.len();
                        self.process(&mut batch, &mut next_group).await;
                        // Under steady load, let a few packets gather before the next
                        // wakeup: each wakeup (and, in a VM, each interprocessor
                        // interrupt behind it) costs more than handling a packet. A
                        // lone request (an idle gap before it) is never delayed.
                        let steady = last_batch.elapsed() < COALESCE_WHEN_WITHIN;
                        last_batch = std::time::Instant::now();
                        if steady && handled < COALESCE_BELOW {
                            std::thread::sleep(COALESCE_FOR);
                        }
                    }
                }
            }
            self.stats.report(clock::now_ms());
        }
    }

    fn start_commit(&mut self, group: Group) -> Commit {
        let leases = group.writes.leases.len();
        let future = self
            .persistence
            .commit(group.writes, group.now_ms, self.inventory.generation);
        Commit {
            future,
            acks: group.acks,
            leases,
            started: std::time::Instant::now(),
        }
    }

    async fn finish_commit(
        &mut self,
        commit: Commit,
        outcome: Result<CommitOutcome, StoreError>,
        next_group: &mut Group,
    ) {
        self.stats.commit(commit.leases, commit.started.elapsed());
        match outcome {
            Ok(CommitOutcome {
                generation,
                snapshot,
            }) => {
                match snapshot {
                    Some(snapshot) => self.install_inventory(snapshot),
                    None => self.inventory.generation = generation,
                }
                self.send_all(&commit.acks).await;
            }
            Err(e) => {
                // The group decided meanwhile was decided on top of the failed one.
                let dropped = std::mem::take(next_group);
                tracing::error!(
                    unsent = commit.acks.len() + dropped.acks.len(),
                    "DHCP leases not committed, their acknowledgements are not sent: {e}"
                );
                self.reload_book().await;
            }
        }
    }

    /// Waits for a packet on any socket, then takes every packet already waiting.
    async fn receive(&mut self, batch: &mut Vec<Incoming>) -> std::io::Result<()> {
        match &self.boot_socket {
            None => self.socket.readable().await?,
            Some(boot_socket) => tokio::select! {
                ready = self.socket.readable() => ready?,
                ready = boot_socket.readable() => ready?,
            },
        }
        drain(&self.socket, Port::Dhcp, &mut self.recv_bufs, batch);
        if let Some(boot_socket) = &self.boot_socket {
            drain(boot_socket, Port::BootServer, &mut self.recv_bufs, batch);
        }
        Ok(())
    }

    /// Reloads the inventory snapshot if the database says it changed.
    async fn refresh_inventory(&mut self) {
        match self
            .persistence
            .inventory_if_changed(Some(self.inventory.generation))
            .await
        {
            Ok(None) => {}
            Ok(Some(snapshot)) => self.install_inventory(snapshot),
            Err(e) => tracing::error!("cannot reload the inventory, using the cached one: {e}"),
        }
    }

    fn install_inventory(&mut self, snapshot: InventorySnapshot) {
        if snapshot.fixed != self.inventory.fixed {
            let (pools, reserved) =
                pools_and_reserved(&self.config.subnets, self.server_ip, &snapshot.fixed);
            self.book.set_pools(&pools, reserved);
        }
        self.discovered_waiting = snapshot.machines.values().filter(|m| m.discovered).count();
        self.inventory = snapshot;
    }

    /// Decides a batch: replies that promise nothing go out now, leases and their
    /// acknowledgements join `group`, the next group to commit.
    async fn process(&mut self, batch: &mut Vec<Incoming>, group: &mut Group) {
        let now_ms = clock::now_ms();
        group.now_ms = now_ms;
        self.stats.packets += batch.len() as u64;
        self.stats.batches += 1;
        let mut now_replies = Vec::with_capacity(batch.len());
        for packet in batch.drain(..) {
            let (reply, needs_commit) = match self.config.mode {
                DhcpMode::Full => self.handle(&packet, now_ms, &mut group.writes),
                DhcpMode::Proxy => (self.handle_proxy(&packet, now_ms, &mut group.writes), false),
            };
            match reply {
                Some(out) if needs_commit => group.acks.push(out),
                Some(out) => now_replies.push(out),
                None => {}
            }
        }
        self.send_all(&now_replies).await;
    }

    /// After a failed commit the book holds bindings the table does not: start over
    /// from the table, the only truth that survives a restart.
    async fn reload_book(&mut self) {
        match self.persistence.leases().await {
            Ok(records) => {
                let (pools, reserved) =
                    pools_and_reserved(&self.config.subnets, self.server_ip, &self.inventory.fixed);
                self.book = LeaseBook::load(self.config.match_client_id, &pools, reserved, records);
            }
            Err(e) => tracing::error!("cannot reload leases after a failed commit: {e}"),
        }
    }

    fn parse(&mut self, packet: &Incoming, now_ms: i64) -> Option<ClientRequest> {
        match wire::parse_request(&packet.bytes) {
            Ok(request) => Some(request),
            Err(why) => {
                if let Some(suppressed) = self.malformed_log.hit(now_ms) {
                    tracing::warn!(
                        peer = %packet.peer,
                        len = packet.bytes.len(),
                        suppressed,
                        "dropped malformed DHCP packet: {why}"
                    );
                }
                None
            }
        }
    }

    /// Full mode: one request. Returns the reply and whether it waits for the commit.
    fn handle(
        &mut self,
        packet: &Incoming,
        now_ms: i64,
        writes: &mut DhcpBatch,
    ) -> (Option<Outgoing>, bool) {
        let Some(request) = self.parse(packet, now_ms) else {
            return (None, false);
        };
        let Some(subnet_at) = policy::select_subnet(&request, &self.config.subnets, self.server_ip)
        else {
            if let Some(suppressed) = self.no_subnet_log.hit(now_ms) {
                tracing::warn!(
                    mac = %request.mac,
                    giaddr = %request.giaddr,
                    ciaddr = %request.ciaddr,
                    suppressed,
                    "dropped DHCP {:?}: no configured subnet for it",
                    request.msg_type
                );
            }
            return (None, false);
        };
        let mac = request.mac;
        let pxe = boot::is_pxe_client(&request);
        let ctx = Context {
            server_ip: self.server_ip,
            subnet: &self.config.subnets[subnet_at],
            machine: self.inventory.machines.get(&mac),
            fixed: &self.inventory.fixed,
            boot: &self.boot,
            policy: self.config.policy,
            now: now_ms / 1000,
        };
        let decision = policy::decide(&request, &ctx, &self.book);
        let key = self.book.key_of(mac, request.client_id.as_deref());
        let needs_commit = decision.commit.is_some();
        if let Some(record) = decision.commit.clone() {
            writes.leases.extend(self.book.apply(record));
        }
        if let Some((ip, until)) = decision.hold_offer {
            self.book.hold_offer(ip, key.clone(), until);
        }
        if decision.forget_offer {
            self.book.forget_offer(&key);
        }
        if decision.pool_full {
            self.log_pool_full(subnet_at, now_ms);
        }
        self.note_machine(&request, &decision, pxe, now_ms, writes);
        let reply = self.finish(&request, decision, packet, pxe, now_ms, writes);
        (reply, needs_commit)
    }

    /// Inventory bookkeeping for a request: discovered machines are added (and known
    /// at once to the rest of the batch), known PXE machines are marked seen.
    fn note_machine(
        &mut self,
        request: &ClientRequest,
        decision: &Decision,
        pxe: bool,
        now_ms: i64,
        writes: &mut DhcpBatch,
    ) {
        let firmware = boot::firmware(request).map(|f| f.name());
        let admitted = match &decision.discovered {
            None => None,
            Some(found) => match self.discovery.admit(now_ms, self.discovered_waiting) {
                Ok(()) => Some(found),
                Err(why) => {
                    // Still answered (policy "all"), but not written down.
                    if let Some(left_out) = self.refused_discovery_log.hit(now_ms) {
                        tracing::warn!(
                            mac = %found.mac,
                            left_out,
                            "unknown PXE client not added to the inventory: {why}"
                        );
                    }
                    None
                }
            },
        };
        if let Some(found) = admitted {
            self.discovered_waiting += 1;
            if let Some(left_out) = self.discovery_log.hit(now_ms) {
                tracing::info!(
                    mac = %found.mac,
                    arch = found.arch.as_deref().unwrap_or("-"),
                    vendor_class = found.vendor_class.as_deref().unwrap_or("-"),
                    left_out,
                    "unknown PXE client added to the inventory as discovered"
                );
            }
            self.inventory.machines.insert(
                found.mac,
                Machine {
                    mac: found.mac,
                    hostname: None,
                    image: None,
                    ip: None,
                    arch: found.arch.clone(),
                    first_seen_ms: Some(now_ms),
                    last_seen_ms: Some(now_ms),
                    vendor_class: found.vendor_class.clone(),
                    discovered: true,
                    loader: None,
                },
            );
            writes.discovered.push(found.clone());
        } else if pxe && self.inventory.machines.contains_key(&request.mac) {
            writes.seen.push(Seen {
                mac: request.mac,
                at_ms: now_ms,
                arch: firmware,
                vendor_class: request.vendor_class.clone(),
            });
        }
    }

    /// A `dhcp.no-boot-file` event for a machine in the inventory, once per boot: a
    /// firmware repeats its DISCOVER and REQUEST several times in one attempt.
    fn no_boot_file_event(
        &mut self,
        request: &ClientRequest,
        reason: &NoBootFile,
        now_ms: i64,
        writes: &mut DhcpBatch,
    ) {
        let mac = request.mac;
        let recently = self
            .no_boot_file_events
            .get(&mac)
            .is_some_and(|at| now_ms - at < NO_BOOT_FILE_EVENT_EVERY_MS);
        if recently || !self.inventory.machines.contains_key(&mac) {
            return;
        }
        if self.no_boot_file_events.len() >= MEMORY_CAP {
            self.no_boot_file_events.clear();
        }
        self.no_boot_file_events.insert(mac, now_ms);
        let reason = match reason {
            NoBootFile::NoArm64Binary => format!(
                "no arm64 boot file: tftp.uefi_arm64_file ({}) is not in ipxe_dir; give the \
                 machine the grub loader",
                self.boot.uefi_arm64_file
            ),
            NoBootFile::GrubOverHttpBoot => reason.to_string(),
            NoBootFile::Unsupported(_) => "rackboot has no boot file for this firmware".into(),
            NoBootFile::NotPxe => "not a PXE client".into(),
        };
        writes.events.push(NewEvent {
            at_ms: now_ms,
            mac: Some(mac),
            kind: diagnosis::NO_BOOT_FILE,
            detail: format!(
                "firmware={} reason={reason}",
                boot::firmware(request).map_or("-".into(), |f| f.name()),
            ),
        });
    }

    /// Encodes the decision's reply, works out where it goes, and records the event.
    fn finish(
        &mut self,
        request: &ClientRequest,
        decision: Decision,
        packet: &Incoming,
        pxe: bool,
        now_ms: i64,
        writes: &mut DhcpBatch,
    ) -> Option<Outgoing> {
        let mac = request.mac;
        if let Some(reason) = &decision.no_boot_file {
            if let Some(suppressed) = self.no_boot_file_log.hit(now_ms) {
                tracing::warn!(%mac, ?reason, suppressed, "PXE client gets no boot file");
            }
            self.no_boot_file_event(request, reason, now_ms, writes);
        }
        let Some(reply) = decision.reply else {
            tracing::debug!(%mac, "no reply to {:?}: {}", request.msg_type, decision.why);
            let recently = self
                .ignored_events
                .get(&mac)
                .is_some_and(|at| now_ms - at < IGNORED_EVENT_EVERY_MS);
            // Per machine once a minute, and overall a burst per 10 s: a flood of
            // made-up PXE clients must not become a flood of rows.
            if pxe && !recently && self.ignored_event_budget.hit(now_ms).is_some() {
                if self.ignored_events.len() >= MEMORY_CAP {
                    self.ignored_events.clear();
                }
                self.ignored_events.insert(mac, now_ms);
                writes.events.push(NewEvent {
                    at_ms: now_ms,
                    mac: Some(mac),
                    kind: "dhcp.ignored",
                    detail: format!("{:?}: {}", request.msg_type, decision.why),
                });
            }
            return None;
        };
        // Per-packet lines are debug; NAKs are counted in the activity line.
        if reply.msg_type == MessageType::Nak {
            self.stats.naks += 1;
        }
        tracing::debug!(%mac, "{:?}: {}", reply.msg_type, decision.why);
        // Boot events belong to machines in the inventory: a client that was not
        // written down (the discovery budget was spent) leaves no rows either.
        if pxe && self.inventory.machines.contains_key(&mac) {
            let kind = match (self.config.mode, reply.msg_type) {
                (DhcpMode::Proxy, MessageType::Offer) => "dhcp.proxy-offer",
                (DhcpMode::Proxy, _) => "dhcp.proxy-ack",
                (_, MessageType::Offer) => "dhcp.offer",
                (_, MessageType::Ack) => "dhcp.ack",
                (_, MessageType::Nak) => "dhcp.nak",
                _ => "dhcp.reply",
            };
            let detail = format!(
                "{} firmware={} ipxe={} ip={} file={}",
                format!("{:?}", request.msg_type).to_lowercase(),
                boot::firmware(request).map_or("-".into(), |f| f.name()),
                request.is_ipxe,
                reply.yiaddr,
                reply.boot.as_ref().map_or("-", |b| b.filename.as_str()),
            );
            writes.events.push(NewEvent {
                at_ms: now_ms,
                mac: Some(mac),
                kind,
                detail,
            });
        }
        let bytes = wire::encode_reply(request, &reply);
        let target = match packet.port {
            // The boot server port answers whoever asked, where they asked from.
            Port::BootServer if !packet.peer.ip().is_unspecified() => packet.peer,
            _ => self.target(request, wire::destination(request, &reply)),
        };
        Some(Outgoing {
            bytes,
            target,
            port: packet.port,
            mac,
            kind: reply.msg_type,
        })
    }

    /// Proxy mode: boot information for PXE clients, addresses learned, nothing else.
    fn handle_proxy(
        &mut self,
        packet: &Incoming,
        now_ms: i64,
        writes: &mut DhcpBatch,
    ) -> Option<Outgoing> {
        let request = self.parse(packet, now_ms)?;
        let pxe = boot::is_pxe_client(&request);
        let ctx = ProxyContext {
            server_ip: self.server_ip,
            machine: self.inventory.machines.get(&request.mac),
            boot: &self.boot,
            policy: self.config.policy,
            port: match packet.port {
                Port::Dhcp => ProxyPort::Dhcp,
                Port::BootServer => ProxyPort::BootServer,
            },
        };
        let decision = policy::decide_proxy(&request, &ctx);
        if let Some(ip) = decision.observed {
            self.observe(request.mac, ip, now_ms, writes);
        }
        self.note_machine(&request, &decision, pxe, now_ms, writes);
        self.finish(&request, decision, packet, pxe, now_ms, writes)
    }

    /// Records the address a MAC uses (proxy mode), when new or due for a refresh.
    fn observe(&mut self, mac: MacAddr, ip: Ipv4Addr, now_ms: i64, writes: &mut DhcpBatch) {
        let fresh = self
            .observed
            .get(&mac)
            .is_some_and(|(known, at)| *known == ip && now_ms - at < OBSERVED_REFRESH_MS);
        // Only addresses of the link rackboot serves: made-up ones would add rows
        // without bound.
        let on_link = self
            .local_net
            .is_none_or(|(net, prefix)| same_network(net, ip, prefix));
        if fresh || !on_link {
            return;
        }
        if self.observed.len() >= MEMORY_CAP {
            self.observed.clear();
        }
        self.observed.insert(mac, (ip, now_ms));
        writes
            .leases
            .push(LeaseOp::Put(observed_lease(mac, ip, now_ms)));
    }

    fn log_pool_full(&mut self, subnet_at: usize, now_ms: i64) {
        let subnet = &self.config.subnets[subnet_at];
        let throttle = self
            .pool_full_log
            .entry(subnet.network)
            .or_insert_with(|| Throttle::new(1, LOG_EVERY_MS));
        if let Some(suppressed) = throttle.hit(now_ms) {
            let size = u64::from(u32::from(subnet.pool_end) - u32::from(subnet.pool_start)) + 1;
            tracing::warn!(
                subnet = %format!("{}/{}", subnet.network, subnet.prefix_len),
                pool = %format!("{}-{}", subnet.pool_start, subnet.pool_end),
                size,
                held = self.book.held_in_pool(subnet.pool_start, now_ms / 1000),
                refused_since_last_report = suppressed + 1,
                "DHCP pool is full: new clients get no address (no existing lease is taken); \
                 widen the pool, shorten lease_secs, or use policy = \"known_only\""
            );
        }
    }

    /// Sends replies in order, up to `MMSG_MAX` per system call. A reply the kernel
    /// refuses (no route to a relay...) is logged and skipped, not retried.
    async fn send_all(&mut self, outs: &[Outgoing]) {
        let mut at = 0;
        while at < outs.len() {
            let port = outs[at].port;
            let end = outs[at..]
                .iter()
                .take(MMSG_MAX)
                .position(|o| o.port != port)
                .map_or((at + MMSG_MAX).min(outs.len()), |n| at + n);
            let chunk = &outs[at..end];
            let datagrams: Vec<(&[u8], SocketAddrV4)> = chunk
                .iter()
                .map(|o| (o.bytes.as_slice(), o.target))
                .collect();
            let socket = match (port, &self.boot_socket) {
                (Port::BootServer, Some(boot_socket)) => boot_socket,
                _ => &self.socket,
            };
            let mut sent = 0;
            while sent < datagrams.len() {
                let rest = &datagrams[sent..];
                match socket.try_io(Interest::WRITABLE, || netif::send_many(socket, rest)) {
                    Ok(n) => sent += n.max(1),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if let Err(e) = socket.writable().await {
                            tracing::error!("DHCP socket unusable: {e}");
                            return;
                        }
                    }
                    Err(e) => {
                        let failed = &chunk[sent];
                        if let Some(suppressed) = self.send_error_log.hit(clock::now_ms()) {
                            tracing::warn!(
                                mac = %failed.mac,
                                target = %failed.target,
                                suppressed,
                                "could not send DHCP {:?}: {e}",
                                failed.kind
                            );
                        }
                        sent += 1;
                    }
                }
            }
            self.stats.sent += chunk.len() as u64;
            at = end;
        }
    }

    fn target(&mut self, request: &ClientRequest, destination: Destination) -> SocketAddrV4 {
        let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT);
        match destination {
            Destination::Relay(relay) => SocketAddrV4::new(relay, self.relay_port),
            Destination::Unicast(ip) => SocketAddrV4::new(ip, CLIENT_PORT),
            Destination::Broadcast => broadcast,
            Destination::UnicastNoArp(ip, mac) => {
                match netif::set_arp_entry(&self.socket, &self.interface, ip, mac.0) {
                    Ok(()) => SocketAddrV4::new(ip, CLIENT_PORT),
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

/// The record proxy mode keeps of an address seen in a MAC's packet: the client's
/// word only, which is why `secrets` wants more before it counts.
pub(crate) fn observed_lease(mac: MacAddr, ip: Ipv4Addr, now_ms: i64) -> LeaseRecord {
    LeaseRecord {
        ip,
        mac,
        expires_at: now_ms / 1000 + OBSERVED_SECS,
        state: LeaseState::Observed,
        hostname: None,
        client_id: None,
    }
}

fn same_network(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

/// Takes the packets waiting on `socket`, without blocking, a recvmmsg at a time.
fn drain(socket: &UdpSocket, port: Port, bufs: &mut [[u8; 2048]], batch: &mut Vec<Incoming>) {
    let mut got = Vec::with_capacity(MMSG_MAX);
    while batch.len() < MAX_BATCH {
        got.clear();
        let room = (MAX_BATCH - batch.len()).min(bufs.len());
        let received = socket.try_io(Interest::READABLE, || {
            netif::recv_many(socket, &mut bufs[..room], &mut got)
        });
        match received {
            Ok(()) => {
                for &(index, len, peer) in &got {
                    batch.push(Incoming {
                        bytes: bufs[index][..len].to_vec(),
                        peer,
                        port,
                    });
                }
                if got.len() < room {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                // An error on one datagram (ICMP feedback and the like) is no reason
                // to stop serving.
                tracing::debug!("DHCP receive error: {e}");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_is_held_to_a_rate_and_a_total() {
        let mut budget = DiscoveryBudget::new(DiscoveryLimits {
            per_second: 3,
            max: 5,
            expire_days: 30,
        });
        let admitted = (0..100).filter(|_| budget.admit(10_000, 0).is_ok()).count();
        assert_eq!(admitted, 3, "three in one second, whatever the flood");
        assert!(budget.admit(10_999, 0).is_err());
        assert!(budget.admit(11_000, 0).is_ok(), "the next second has room");
        let full = budget.admit(20_000, 5).expect_err("five wait already");
        assert!(full.contains("dhcp.discovered_max"), "{full}");
    }

    #[test]
    fn same_network_by_prefix() {
        let ip = |d| Ipv4Addr::new(192, 0, 2, d);
        assert!(same_network(ip(1), ip(200), 24));
        assert!(!same_network(ip(1), Ipv4Addr::new(192, 0, 3, 1), 24));
        assert!(same_network(ip(1), Ipv4Addr::new(10, 0, 0, 1), 0));
        assert!(!same_network(ip(1), ip(2), 32));
    }
}

#[cfg(test)]
mod throughput {
    use super::*;
    use crate::config::AnswerPolicy;
    use crate::dhcp::wire::tests::Packet;

    /// Not a test: the CPU cost of the pure path per DORA (decode, decide, apply,
    /// encode), without sockets or disk. `cargo test --release -- --ignored cpu_per_dora
    /// --nocapture`.
    #[test]
    #[ignore]
    fn cpu_per_dora() {
        let subnet = Subnet {
            network: Ipv4Addr::new(198, 18, 0, 0),
            prefix_len: 15,
            pool_start: Ipv4Addr::new(198, 18, 0, 10),
            pool_end: Ipv4Addr::new(198, 19, 255, 250),
            known_pool: None,
            router: None,
            dns: vec![],
            domain: None,
            lease_secs: 3600,
            renew_secs: 1800,
            rebind_secs: 3150,
        };
        let boot = BootConfig {
            server_ip: Ipv4Addr::new(198, 18, 0, 1),
            http_url: "http://198.18.0.1:8080".into(),
            bios_file: "undionly.kpxe".into(),
            uefi_x64_file: "snponly.efi".into(),
            uefi_arm64_file: "arm64-efi/snponly.efi".into(),
            arm64_available: false,
            default_loader_amd64: crate::lifecycle::Loader::Ipxe,
            default_loader_arm64: crate::lifecycle::Loader::Ipxe,
        };
        let fixed = HashMap::new();
        let (pools, reserved) = pools_and_reserved(
            std::slice::from_ref(&subnet),
            Ipv4Addr::new(198, 18, 0, 1),
            &fixed,
        );
        let mut book = LeaseBook::load(false, &pools, reserved, Vec::new());
        let clients = 100_000u32;
        let started = std::time::Instant::now();
        let mut ops = 0usize;
        for n in 0..clients {
            let b = n.to_be_bytes();
            let mac = [0, 0x0c, b[1], b[2], b[3], 1];
            let discover = Packet::new(1, mac)
                .giaddr([198, 18, 0, 2])
                .option(61, &[1, 0, 0x0c, b[1], b[2], b[3], 1])
                .option(55, &[1, 28, 2, 3, 15, 6, 12])
                .end();
            let ctx = Context {
                server_ip: Ipv4Addr::new(198, 18, 0, 1),
                subnet: &subnet,
                machine: None,
                fixed: &fixed,
                boot: &boot,
                policy: AnswerPolicy::All,
                now: 1_000_000,
            };
            let request = wire::parse_request(&discover).expect("parses");
            let decision = policy::decide(&request, &ctx, &book);
            let offer = decision.reply.expect("offer");
            let key = book.key_of(request.mac, request.client_id.as_deref());
            if let Some((ip, until)) = decision.hold_offer {
                book.hold_offer(ip, key, until);
            }
            std::hint::black_box(wire::encode_reply(&request, &offer));
            let req = Packet::new(3, mac)
                .giaddr([198, 18, 0, 2])
                .option(61, &[1, 0, 0x0c, b[1], b[2], b[3], 1])
                .option(54, &[198, 18, 0, 1])
                .option(50, &offer.yiaddr.octets())
                .option(55, &[1, 28, 2, 3, 15, 6, 12])
                .end();
            let request = wire::parse_request(&req).expect("parses");
            let decision = policy::decide(&request, &ctx, &book);
            let ack = decision.reply.expect("ack");
            ops += book.apply(decision.commit.expect("commit")).len();
            std::hint::black_box(wire::encode_reply(&request, &ack));
        }
        let per = started.elapsed() / clients;
        eprintln!("{per:?} per DORA (decode, decide, apply, encode), {ops} lease ops");
    }
}

#[cfg(test)]
mod loop_tests {
    //! The socket loop itself, with no root: the server listens on 127.0.0.1 at a port
    //! the kernel picks, the test plays a relay on another (so every reply comes back
    //! to it), and a fake persistence hands each commit to the test, which answers it
    //! when and how it likes. The relay's socket sees every reply in the order the
    //! server sent it, so "no ACK before X" is checked by what arrives first, not by
    //! waiting for a silence.
    use super::*;
    use crate::config::AnswerPolicy;
    use crate::dhcp::wire::tests::Packet;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::{mpsc, oneshot};

    /// How long any one expected step may take before the test fails.
    const DEADLINE: Duration = Duration::from_secs(10);
    const GIADDR: [u8; 4] = [127, 0, 0, 1];
    const OFFER: u8 = 2;
    const ACK: u8 = 5;
    const NAK: u8 = 6;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 0, last)
    }

    fn mac(last: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, last]
    }

    /// A commit the server started, waiting for the test's verdict.
    struct PendingCommit {
        batch: DhcpBatch,
        verdict: oneshot::Sender<Result<(), StoreError>>,
    }

    impl PendingCommit {
        fn lease_macs(&self) -> Vec<[u8; 6]> {
            self.batch
                .leases
                .iter()
                .filter_map(|op| match op {
                    LeaseOp::Put(record) => Some(record.mac.0),
                    LeaseOp::Delete(_) => None,
                })
                .collect()
        }

        fn answer(self, verdict: Result<(), StoreError>) {
            self.verdict
                .send(verdict)
                .expect("the server still waits for this commit");
        }
    }

    /// Commits wait for the test; `leases` returns `table` and reports each call.
    struct FakeDb {
        commits: mpsc::UnboundedSender<PendingCommit>,
        table: Arc<Mutex<Vec<LeaseRecord>>>,
        loads: mpsc::UnboundedSender<()>,
    }

    impl DhcpPersistence for FakeDb {
        fn leases(&self) -> PersistFuture<Vec<LeaseRecord>> {
            let rows = self.table.lock().expect("not poisoned").clone();
            let _ = self.loads.send(());
            Box::pin(async move { Ok(rows) })
        }

        fn inventory_if_changed(
            &self,
            known: Option<i64>,
        ) -> PersistFuture<Option<InventorySnapshot>> {
            // An empty inventory that never changes.
            let snapshot = (known != Some(1)).then(|| InventorySnapshot {
                generation: 1,
                ..InventorySnapshot::default()
            });
            Box::pin(async move { Ok(snapshot) })
        }

        fn commit(
            &self,
            batch: DhcpBatch,
            _now_ms: i64,
            known: i64,
        ) -> PersistFuture<CommitOutcome> {
            let (verdict, answer) = oneshot::channel();
            let handed = self.commits.send(PendingCommit { batch, verdict });
            Box::pin(async move {
                handed.map_err(|_| StoreError::Closed)?;
                answer.await.map_err(|_| StoreError::Closed)??;
                Ok(CommitOutcome {
                    generation: known,
                    snapshot: None,
                })
            })
        }
    }

    struct Reply {
        kind: u8,
        mac: [u8; 6],
        yiaddr: Ipv4Addr,
    }

    fn parse_reply(bytes: &[u8]) -> Reply {
        assert!(bytes.len() > 240 && bytes[0] == 2, "a BOOTREPLY");
        let mut kind = 0;
        let mut at = 240;
        while at + 1 < bytes.len() && bytes[at] != 255 {
            if bytes[at] == 0 {
                at += 1;
                continue;
            }
            let len = usize::from(bytes[at + 1]);
            if bytes[at] == 53 {
                kind = bytes[at + 2];
            }
            at += 2 + len;
        }
        let mut mac = [0; 6];
        mac.copy_from_slice(&bytes[28..34]);
        Reply {
            kind,
            mac,
            yiaddr: Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19]),
        }
    }

    struct Harness {
        /// The relay: requests leave from it, replies come back to it.
        relay: UdpSocket,
        server: SocketAddr,
        commits: mpsc::UnboundedReceiver<PendingCommit>,
        loads: mpsc::UnboundedReceiver<()>,
        table: Arc<Mutex<Vec<LeaseRecord>>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl Harness {
        async fn start() -> Harness {
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .expect("binds");
            let relay = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .expect("binds");
            let server = socket.local_addr().expect("has an address");
            let (commits_tx, commits) = mpsc::unbounded_channel();
            let (loads_tx, mut loads) = mpsc::unbounded_channel();
            let table = Arc::new(Mutex::new(Vec::new()));
            let db = FakeDb {
                commits: commits_tx,
                table: table.clone(),
                loads: loads_tx,
            };
            let config = DhcpConfig {
                interface: "lo".into(),
                ipv6_ra: false,
                mode: DhcpMode::Full,
                policy: AnswerPolicy::All,
                match_client_id: false,
                event_retention_days: 0,
                discovery: DiscoveryLimits::default(),
                trust_observed_addresses: false,
                subnets: vec![Subnet {
                    network: Ipv4Addr::new(127, 0, 0, 0),
                    prefix_len: 8,
                    pool_start: ip(10),
                    pool_end: ip(50),
                    known_pool: None,
                    router: None,
                    dns: vec![],
                    domain: None,
                    lease_secs: 3600,
                    renew_secs: 1800,
                    rebind_secs: 3150,
                }],
            };
            let boot = BootConfig {
                server_ip: Ipv4Addr::LOCALHOST,
                http_url: "http://127.0.0.1:8080".into(),
                bios_file: "undionly.kpxe".into(),
                uefi_x64_file: "snponly.efi".into(),
                uefi_arm64_file: "arm64-efi/snponly.efi".into(),
                arm64_available: false,
                default_loader_amd64: crate::lifecycle::Loader::Ipxe,
                default_loader_arm64: crate::lifecycle::Loader::Ipxe,
            };
            let mut dhcp = DhcpServer::new(
                socket,
                None,
                Ipv4Addr::LOCALHOST,
                config,
                boot,
                Box::new(db),
            )
            .await
            .expect("starts");
            dhcp.relay_port = relay.local_addr().expect("has an address").port();
            loads.try_recv().expect("the book was loaded at start");
            Harness {
                relay,
                server,
                commits,
                loads,
                table,
                task: tokio::spawn(dhcp.run()),
            }
        }

        async fn send(&self, packet: Vec<u8>) {
            self.relay
                .send_to(&packet, self.server)
                .await
                .expect("sent");
        }

        /// A relayed REQUEST (SELECTING) for `at`.
        async fn request(&self, client: [u8; 6], at: Ipv4Addr) {
            let packet = Packet::new(3, client)
                .giaddr(GIADDR)
                .option(54, &GIADDR)
                .option(50, &at.octets())
                .end();
            self.send(packet).await;
        }

        async fn discover(&self, client: [u8; 6]) {
            self.send(Packet::new(1, client).giaddr(GIADDR).end()).await;
        }

        /// The next reply the relay gets, which must be `kind` for `client`.
        async fn expect(&self, kind: u8, client: [u8; 6]) -> Reply {
            let mut buf = [0u8; 1500];
            let len = tokio::time::timeout(DEADLINE, self.relay.recv(&mut buf))
                .await
                .expect("a reply within the deadline")
                .expect("received");
            let reply = parse_reply(&buf[..len]);
            assert_eq!(
                (reply.kind, reply.mac),
                (kind, client),
                "next reply (message type, client)"
            );
            reply
        }

        async fn next_commit(&mut self) -> PendingCommit {
            tokio::time::timeout(DEADLINE, self.commits.recv())
                .await
                .expect("a commit within the deadline")
                .expect("the server is running")
        }

        async fn reloaded(&mut self) {
            tokio::time::timeout(DEADLINE, self.loads.recv())
                .await
                .expect("the book reloaded within the deadline")
                .expect("the server is running");
        }

        /// Every reply sent so far has been read: none was sent that the test did not
        /// expect. (Replies leave in order, so a stray one would have come first.)
        fn nothing_more(&self) {
            let mut buf = [0u8; 1500];
            match self.relay.try_recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Ok(len) => {
                    let stray = parse_reply(&buf[..len]);
                    panic!(
                        "unexpected reply type {} to {:?}",
                        stray.kind,
                        MacAddr(stray.mac)
                    );
                }
                Err(e) => panic!("relay socket: {e}"),
            }
            assert!(!self.task.is_finished(), "the server is still running");
        }
    }

    /// A flood of made-up PXE clients (more than the pool holds) is not written down
    /// beyond the discovery budget, and leaves no events for the rest.
    #[tokio::test]
    async fn a_flood_of_unknown_pxe_clients_adds_only_the_budget() {
        let mut h = Harness::start().await;
        let flood = 200u8;
        for n in 0..flood {
            let client = [0x02, 0xf1, 0, 0, 1, n];
            h.send(
                Packet::new(1, client)
                    .giaddr(GIADDR)
                    .option(60, b"PXEClient:Arch:00000:UNDI:002001")
                    .option(93, &[0, 0])
                    .end(),
            )
            .await;
        }
        let (mut discovered, mut events) = (0, 0);
        while let Ok(Some(commit)) =
            tokio::time::timeout(std::time::Duration::from_millis(700), h.commits.recv()).await
        {
            discovered += commit.batch.discovered.len();
            events += commit.batch.events.len();
            commit.answer(Ok(()));
        }
        let per_second = DiscoveryLimits::default().per_second as usize;
        assert!(discovered >= 1, "unknown PXE clients are still discovered");
        // The flood may straddle a second boundary: two seconds' worth at most.
        assert!(
            discovered <= 2 * per_second,
            "{discovered} of {flood} made-up clients were written down"
        );
        // One event per reply to a discovered machine, and a small burst of
        // `dhcp.ignored` for those the full pool left unanswered.
        assert!(
            events <= discovered + 10,
            "{events} events for {discovered} machines"
        );
    }

    /// An arm64 firmware (no arm64 boot file here) retrying its DISCOVER is written
    /// down as one `dhcp.no-boot-file` event naming its firmware, not one per packet.
    #[tokio::test]
    async fn a_firmware_without_a_boot_file_is_recorded_once_per_boot() {
        let mut h = Harness::start().await;
        let client = [0x02, 0xa6, 0, 0, 0, 1];
        for _ in 0..3 {
            h.send(
                Packet::new(1, client)
                    .giaddr(GIADDR)
                    .option(60, b"PXEClient:Arch:00011:UNDI:003000")
                    .option(93, &[0, 11])
                    .end(),
            )
            .await;
            h.expect(OFFER, client).await;
        }
        let mut events = Vec::new();
        while let Ok(Some(commit)) =
            tokio::time::timeout(std::time::Duration::from_millis(700), h.commits.recv()).await
        {
            events.extend(
                commit
                    .batch
                    .events
                    .iter()
                    .map(|e| (e.kind, e.detail.clone())),
            );
            commit.answer(Ok(()));
        }
        let refused: Vec<_> = events
            .iter()
            .filter(|(kind, _)| *kind == diagnosis::NO_BOOT_FILE)
            .collect();
        assert_eq!(refused.len(), 1, "{events:?}");
        assert!(
            refused[0]
                .1
                .starts_with("firmware=uefi-arm64 reason=no arm64 boot file"),
            "{refused:?}"
        );
        // Written before the offer it explains, which still goes out (without a file).
        let kinds: Vec<&str> = events.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(kinds.first(), Some(&diagnosis::NO_BOOT_FILE), "{kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == "dhcp.offer").count(), 3);
    }

    #[tokio::test]
    async fn acks_leave_only_after_their_groups_commit() {
        let mut h = Harness::start().await;
        h.request(mac(1), ip(40)).await;
        let first = h.next_commit().await;
        assert_eq!(first.lease_macs(), vec![mac(1)]);

        // The commit is still running: an OFFER decided after the REQUEST is the first
        // reply out, with no ACK before it.
        h.discover(mac(9)).await;
        h.expect(OFFER, mac(9)).await;

        // Two REQUESTs while the first group commits form the next group; the OFFER
        // after them shows both were decided.
        h.request(mac(2), ip(41)).await;
        h.request(mac(3), ip(42)).await;
        h.discover(mac(8)).await;
        h.expect(OFFER, mac(8)).await;

        first.answer(Ok(()));
        let ack = h.expect(ACK, mac(1)).await;
        assert_eq!(ack.yiaddr, ip(40));

        // The second group is one commit, and its ACKs wait for it too.
        let second = h.next_commit().await;
        assert_eq!(second.lease_macs(), vec![mac(2), mac(3)]);
        h.discover(mac(7)).await;
        h.expect(OFFER, mac(7)).await;
        second.answer(Ok(()));
        assert_eq!(h.expect(ACK, mac(2)).await.yiaddr, ip(41));
        assert_eq!(h.expect(ACK, mac(3)).await.yiaddr, ip(42));
        h.nothing_more();
    }

    #[tokio::test]
    async fn a_failed_commit_sends_no_ack_of_its_group_or_the_next_and_reloads_the_book() {
        let mut h = Harness::start().await;
        h.request(mac(1), ip(40)).await;
        let first = h.next_commit().await;
        assert_eq!(first.lease_macs(), vec![mac(1)]);
        // Decided on top of the first group while it commits.
        h.request(mac(2), ip(41)).await;
        h.discover(mac(9)).await;
        h.expect(OFFER, mac(9)).await;

        // What the table holds when the book is reloaded: an address the book has
        // never seen, held by another client.
        h.table.lock().expect("not poisoned").push(LeaseRecord {
            ip: ip(30),
            mac: MacAddr(mac(20)),
            expires_at: clock::now_ms() / 1000 + 3600,
            state: LeaseState::Bound,
            hostname: None,
            client_id: None,
        });
        first.answer(Err(StoreError::Closed));
        h.reloaded().await;

        // The book is now the table's: 127.0.0.30 is taken, and 127.0.0.40, bound in
        // the book by the failed group only, is free again.
        h.request(mac(3), ip(30)).await;
        h.expect(NAK, mac(3)).await;
        h.request(mac(4), ip(40)).await;
        let second = h.next_commit().await;
        // Nothing of the dropped second group (mac 2) is written either.
        assert_eq!(second.lease_macs(), vec![mac(4)]);
        second.answer(Ok(()));
        // The server serves again, and the ACKs of mac 1 and mac 2 never left: they
        // would have arrived before the NAK.
        assert_eq!(h.expect(ACK, mac(4)).await.yiaddr, ip(40));
        h.nothing_more();
    }
}
