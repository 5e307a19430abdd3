//! The domain's types: machines, images, leases, events and what a batch of DHCP
//! decisions writes. Pure data, shared by the decisions that read them and the
//! store that keeps them; nothing here touches a database.

use crate::mac::MacAddr;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub mac: MacAddr,
    pub hostname: Option<String>,
    pub image: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub arch: Option<String>,
    pub first_seen_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    /// Option 60 of its last PXE request.
    pub vendor_class: Option<String>,
    /// Added by the DHCP server (an unknown PXE client under `policy = "all"`), not yet
    /// by an operator.
    pub discovered: bool,
    /// The first program its firmware loads; `None`: the default for its architecture.
    pub loader: Option<crate::lifecycle::Loader>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub kernel_path: String,
    pub kernel_sha256: String,
    pub initrd_path: String,
    pub initrd_sha256: String,
    pub cmdline: String,
    /// The architectures its kernel runs on (a machine of another one is refused).
    pub arches: Vec<crate::lifecycle::Arch>,
}

/// Where a catalog image came from; uploaded images have none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageSource {
    pub name: String,
    /// The definition it was fetched by (`debian-12`).
    pub definition: String,
    /// The primary key fingerprint that verified its chain; `None` for a pinned sha256.
    pub verified_by: Option<String>,
    /// What verified what, in words.
    pub provenance: String,
    /// Values fixed per image for its command line and templates (`mirror`, `iso_url`,
    /// parameters such as Fedora's `release`).
    pub vars: std::collections::BTreeMap<String, String>,
    pub fetched_ms: i64,
}

/// The date of a signed suite file (Debian's `InRelease`) by its signer and path: an
/// older one than already seen is refused (no replay of an old suite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseStamp {
    pub key: String,
    /// Unix seconds, from the file's `Date:`.
    pub date: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Bound,
    Released,
    Declined,
    /// proxyDHCP mode: an address another server gave this MAC, learned from the
    /// traffic, so TFTP and HTTP requests can be tied to the machine.
    Observed,
}

impl LeaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseState::Bound => "bound",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
            LeaseState::Observed => "observed",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "bound" => Some(LeaseState::Bound),
            "released" => Some(LeaseState::Released),
            "declined" => Some(LeaseState::Declined),
            "observed" => Some(LeaseState::Observed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// Unix seconds.
    pub expires_at: i64,
    pub state: LeaseState,
    pub hostname: Option<String>,
    /// Option 61 of the request that made the lease, when it had one.
    pub client_id: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at_ms: i64,
    pub mac: Option<MacAddr>,
    pub kind: String,
    pub detail: String,
    /// Who caused it: `machine`, `user:NAME`, `token:NAME`, `cli:USER`; none for
    /// rackboot's own events.
    pub actor: Option<String>,
}

/// A change to the `leases` table. The DHCP server's lease book decides them (it is
/// the only writer), so the table stays a copy of the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOp {
    Put(LeaseRecord),
    /// The address is no longer recorded for anyone (its client moved on).
    Delete(Ipv4Addr),
}

/// A machine the DHCP server met that the inventory did not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub mac: MacAddr,
    pub arch: Option<String>,
    pub vendor_class: Option<String>,
}

/// A machine in the inventory sent a PXE request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub mac: MacAddr,
    pub at_ms: i64,
    pub arch: Option<String>,
    pub vendor_class: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub at_ms: i64,
    pub mac: Option<MacAddr>,
    pub kind: &'static str,
    pub detail: String,
}

/// Everything a batch of DHCP decisions writes, committed in one transaction: one
/// fsync for the whole batch, before any of its acknowledgements is sent.
#[derive(Debug, Default, Clone)]
pub struct DhcpBatch {
    pub leases: Vec<LeaseOp>,
    pub discovered: Vec<Discovered>,
    pub seen: Vec<Seen>,
    pub events: Vec<NewEvent>,
}

impl DhcpBatch {
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
            && self.discovered.is_empty()
            && self.seen.is_empty()
            && self.events.is_empty()
    }
}

/// The parts of the inventory the DHCP server decides with, cached in its task and
/// reloaded when `generation` moves.
#[derive(Debug, Clone, Default)]
pub struct InventorySnapshot {
    pub generation: i64,
    pub machines: std::collections::HashMap<MacAddr, Machine>,
    /// Every fixed address and its owner: the pool never hands these out.
    pub fixed: std::collections::HashMap<Ipv4Addr, MacAddr>,
}

/// How full one subnet's pool is: what the panel shows, and what the log reports when
/// a pool runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUsage {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
    pub pool_start: Ipv4Addr,
    pub pool_end: Ipv4Addr,
    /// Addresses in the pool.
    pub size: u64,
    /// Pool addresses that are some inventory machine's fixed address.
    pub reserved: u64,
    /// Pool addresses bound to a client right now (unexpired).
    pub bound: u64,
    /// Pool addresses declined by a client and held back for probation.
    pub declined: u64,
    /// The subnet's `known_pool` (inventory machines only), not its shared pool.
    pub known_only: bool,
}

impl PoolUsage {
    /// Addresses a new client could get (offers in flight are not counted).
    pub fn free(&self) -> u64 {
        self.size
            .saturating_sub(self.reserved + self.bound + self.declined)
    }
}
