//! One rule for who may fetch a machine's secrets: its done-URL (in a boot script or
//! an install file), its install files, its per-machine TFTP files, and whatever
//! secret later routes serve (grub configurations, agent tokens). Every such route
//! asks `Rule::check` (or `Rule::machine_at`, when only the address is known), and
//! both come down to `decide`.
//!
//! The rule: the request must come from the machine's fixed address, or from an
//! address with a current, unexpired lease rackboot bound to it. In proxy mode
//! rackboot leases nothing and only *observes* addresses in PXE packets (`observed`
//! leases). Anyone can write such a packet (victim's MAC as chaddr, own address as
//! ciaddr), so an observed address counts only when the kernel's neighbour entry for
//! it names the machine's MAC (the link itself answered for the address, not the
//! packet; rackboot writes no neighbour entries in proxy mode, whose replies carry no
//! yiaddr), or when the operator opted in with `[dhcp] trust_observed_addresses`,
//! which is spoofable by anyone on the link. A neighbour entry naming another MAC
//! refuses even then: that is what a spoofed packet looks like.
//!
//! `decide` is pure (evidence and time in, verdict out); `Rule` gathers the evidence
//! through the store and the neighbour table.

use crate::mac::MacAddr;
use crate::store::{self, LeaseRecord, LeaseState, Store, StoreError};
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// What is known about the address a request came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The machine whose fixed address this is.
    pub fixed_owner: Option<MacAddr>,
    /// The lease recorded on this address, in any state, expired or not.
    pub lease: Option<LeaseRecord>,
    /// The MAC the kernel's neighbour entry for this address names (looked up only
    /// where it matters: for an observed lease).
    pub neighbour: Option<MacAddr>,
}

/// The operator's choices that bear on the rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// `[dhcp] trust_observed_addresses`: an observed address counts without a
    /// neighbour entry. Spoofable.
    pub trust_observed: bool,
}

/// Why a request may have the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    FixedAddress,
    BoundLease,
    /// Observed in proxy mode, and the neighbour entry names the machine.
    ObservedConfirmed,
    /// Observed in proxy mode, trusted by `trust_observed_addresses`.
    ObservedTrusted,
}

/// Why a request may not have the secret (for the log; the client is told less).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    FixedAddressOfAnother(MacAddr),
    NoRecord,
    LeaseOfAnother(MacAddr),
    Expired,
    NotHeld(LeaseState),
    ObservedUnconfirmed,
    NeighbourNamesAnother(MacAddr),
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Grant::FixedAddress => "the machine's fixed address",
            Grant::BoundLease => "the machine's current lease",
            Grant::ObservedConfirmed => "observed, and the neighbour entry names the machine",
            Grant::ObservedTrusted => "observed (trust_observed_addresses)",
        })
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::FixedAddressOfAnother(mac) => write!(f, "the fixed address of {mac}"),
            Refusal::NoRecord => f.write_str("no lease or fixed address"),
            Refusal::LeaseOfAnother(mac) => write!(f, "leased to {mac}"),
            Refusal::Expired => f.write_str("its lease has expired"),
            Refusal::NotHeld(state) => write!(f, "its lease is {state:?}, not bound"),
            Refusal::ObservedUnconfirmed => f.write_str(
                "only observed in a packet, and no neighbour entry confirms it \
                 (see [dhcp] trust_observed_addresses)",
            ),
            Refusal::NeighbourNamesAnother(mac) => {
                write!(f, "observed, but the neighbour entry names {mac}")
            }
        }
    }
}

/// The rule: may a request from the address described by `evidence` have the secrets
/// of `mac`, at `now` (Unix seconds)?
pub fn decide(
    mac: MacAddr,
    evidence: &Evidence,
    policy: Policy,
    now: i64,
) -> Result<Grant, Refusal> {
    // A fixed address belongs to its machine only, whatever lease an older
    // assignment left on it.
    if let Some(owner) = evidence.fixed_owner {
        return if owner == mac {
            Ok(Grant::FixedAddress)
        } else {
            Err(Refusal::FixedAddressOfAnother(owner))
        };
    }
    let lease = evidence.lease.as_ref().ok_or(Refusal::NoRecord)?;
    if lease.mac != mac {
        return Err(Refusal::LeaseOfAnother(lease.mac));
    }
    if lease.expires_at <= now {
        return Err(Refusal::Expired);
    }
    match lease.state {
        LeaseState::Bound => Ok(Grant::BoundLease),
        LeaseState::Observed => match evidence.neighbour {
            Some(seen) if seen == mac => Ok(Grant::ObservedConfirmed),
            Some(other) => Err(Refusal::NeighbourNamesAnother(other)),
            None if policy.trust_observed => Ok(Grant::ObservedTrusted),
            None => Err(Refusal::ObservedUnconfirmed),
        },
        state @ (LeaseState::Released | LeaseState::Declined) => Err(Refusal::NotHeld(state)),
    }
}

/// Who the kernel says is at an address. A trait so tests supply the table.
pub trait Neighbours: Send + Sync {
    fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr>;
}

/// The kernel's neighbour table, on the DHCP interface when one is configured (an
/// entry on another link says nothing about this one).
pub struct KernelNeighbours {
    pub interface: Option<String>,
}

impl Neighbours for KernelNeighbours {
    fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        match crate::netif::neighbour_mac(ip, self.interface.as_deref()) {
            Ok(mac) => mac.map(MacAddr),
            Err(e) => {
                tracing::warn!(%ip, "cannot read the neighbour table: {e}");
                None
            }
        }
    }
}

/// The rule with its evidence sources: cheap to clone, one per server.
#[derive(Clone)]
pub struct Rule {
    policy: Policy,
    neighbours: Arc<dyn Neighbours>,
}

impl Default for Rule {
    fn default() -> Self {
        Rule::new(Policy::default(), None)
    }
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("policy", &self.policy)
            .finish()
    }
}

impl Rule {
    /// The kernel's neighbour table, filtered to `interface` when given.
    pub fn new(policy: Policy, interface: Option<String>) -> Self {
        Rule::with_neighbours(policy, Arc::new(KernelNeighbours { interface }))
    }

    pub fn with_neighbours(policy: Policy, neighbours: Arc<dyn Neighbours>) -> Self {
        Rule { policy, neighbours }
    }

    /// What the inventory and the neighbour table say about `ip`.
    pub async fn evidence(
        &self,
        store: &Store,
        ip: Ipv4Addr,
        now: i64,
    ) -> Result<Evidence, StoreError> {
        let records = store
            .call(move |conn| store::address_records(conn, ip))
            .await?;
        // Only an unexpired observed lease needs it: spare the table read otherwise.
        let wanted = records.fixed_owner.is_none()
            && records
                .lease
                .as_ref()
                .is_some_and(|l| l.state == LeaseState::Observed && l.expires_at > now);
        let neighbour = if wanted {
            let neighbours = Arc::clone(&self.neighbours);
            // A /proc read: short, but file I/O all the same, so not on a worker.
            tokio::task::spawn_blocking(move || neighbours.mac_of(ip))
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(%ip, "neighbour lookup task failed: {e}");
                    None
                })
        } else {
            None
        };
        Ok(Evidence {
            fixed_owner: records.fixed_owner,
            lease: records.lease,
            neighbour,
        })
    }

    /// `decide` under this rule's policy.
    pub fn decide(&self, mac: MacAddr, evidence: &Evidence, now: i64) -> Result<Grant, Refusal> {
        decide(mac, evidence, self.policy, now)
    }

    /// `owner` under this rule's policy.
    pub fn owner(&self, evidence: &Evidence, now: i64) -> Option<(MacAddr, Grant)> {
        owner(evidence, self.policy, now)
    }

    /// May a request from `ip` have the secrets of `mac` at `now` (Unix seconds)?
    pub async fn check(
        &self,
        store: &Store,
        mac: MacAddr,
        ip: Ipv4Addr,
        now: i64,
    ) -> Result<Result<Grant, Refusal>, StoreError> {
        let evidence = self.evidence(store, ip, now).await?;
        Ok(self.decide(mac, &evidence, now))
    }

    /// The machine whose secrets a request from `ip` may have, if any: for TFTP,
    /// where a request names a file and not a machine.
    pub async fn machine_at(
        &self,
        store: &Store,
        ip: Ipv4Addr,
        now: i64,
    ) -> Result<Option<(MacAddr, Grant)>, StoreError> {
        let evidence = self.evidence(store, ip, now).await?;
        Ok(self.owner(&evidence, now))
    }
}

/// The one machine (if any) the rule lets the address described by `evidence` act
/// for: the fixed owner, else the lease holder.
pub fn owner(evidence: &Evidence, policy: Policy, now: i64) -> Option<(MacAddr, Grant)> {
    let candidate = evidence
        .fixed_owner
        .or(evidence.lease.as_ref().map(|l| l.mac))?;
    decide(candidate, evidence, policy, now)
        .ok()
        .map(|grant| (candidate, grant))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;
    const VICTIM: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const OTHER: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
    const STRICT: Policy = Policy {
        trust_observed: false,
    };
    const TRUSTING: Policy = Policy {
        trust_observed: true,
    };

    fn lease(mac: MacAddr, state: LeaseState, expires_at: i64) -> Option<LeaseRecord> {
        Some(LeaseRecord {
            ip: Ipv4Addr::new(192, 0, 2, 50),
            mac,
            expires_at,
            state,
            hostname: None,
            client_id: None,
        })
    }

    fn both(evidence: &Evidence) -> [Result<Grant, Refusal>; 2] {
        [
            decide(VICTIM, evidence, STRICT, NOW),
            decide(VICTIM, evidence, TRUSTING, NOW),
        ]
    }

    #[test]
    fn the_machines_fixed_address() {
        let own = Evidence {
            fixed_owner: Some(VICTIM),
            ..Evidence::default()
        };
        assert_eq!(
            both(&own),
            [Ok(Grant::FixedAddress), Ok(Grant::FixedAddress)]
        );
        // Someone else's fixed address, even with a lease left on it for the machine.
        let theirs = Evidence {
            fixed_owner: Some(OTHER),
            lease: lease(VICTIM, LeaseState::Bound, NOW + 60),
            neighbour: Some(VICTIM),
        };
        assert_eq!(
            decide(VICTIM, &theirs, TRUSTING, NOW),
            Err(Refusal::FixedAddressOfAnother(OTHER))
        );
    }

    #[test]
    fn the_machines_bound_lease_until_it_expires() {
        let bound = Evidence {
            lease: lease(VICTIM, LeaseState::Bound, NOW + 1),
            ..Evidence::default()
        };
        assert_eq!(both(&bound), [Ok(Grant::BoundLease), Ok(Grant::BoundLease)]);
        for expires_at in [NOW, NOW - 3600] {
            let expired = Evidence {
                lease: lease(VICTIM, LeaseState::Bound, expires_at),
                ..Evidence::default()
            };
            assert_eq!(
                both(&expired),
                [Err(Refusal::Expired), Err(Refusal::Expired)]
            );
        }
        for state in [LeaseState::Released, LeaseState::Declined] {
            let gone = Evidence {
                lease: lease(VICTIM, state, NOW + 60),
                ..Evidence::default()
            };
            assert_eq!(
                decide(VICTIM, &gone, TRUSTING, NOW),
                Err(Refusal::NotHeld(state))
            );
        }
    }

    #[test]
    fn another_address() {
        assert_eq!(
            both(&Evidence::default()),
            [Err(Refusal::NoRecord), Err(Refusal::NoRecord)]
        );
        let others = Evidence {
            lease: lease(OTHER, LeaseState::Bound, NOW + 60),
            ..Evidence::default()
        };
        assert_eq!(
            decide(VICTIM, &others, TRUSTING, NOW),
            Err(Refusal::LeaseOfAnother(OTHER))
        );
        let observed_for_other = Evidence {
            lease: lease(OTHER, LeaseState::Observed, NOW + 60),
            neighbour: Some(VICTIM),
            ..Evidence::default()
        };
        assert_eq!(
            decide(VICTIM, &observed_for_other, TRUSTING, NOW),
            Err(Refusal::LeaseOfAnother(OTHER))
        );
    }

    #[test]
    fn an_observed_address_needs_the_neighbour_entry_or_the_opt_in() {
        let observed = Evidence {
            lease: lease(VICTIM, LeaseState::Observed, NOW + 60),
            ..Evidence::default()
        };
        assert_eq!(
            both(&observed),
            [
                Err(Refusal::ObservedUnconfirmed),
                Ok(Grant::ObservedTrusted)
            ]
        );
        let confirmed = Evidence {
            neighbour: Some(VICTIM),
            ..observed.clone()
        };
        assert_eq!(
            both(&confirmed),
            [Ok(Grant::ObservedConfirmed), Ok(Grant::ObservedConfirmed)]
        );
        // The link says someone else is at the address: a spoofed packet, refused
        // even where observed addresses are trusted.
        let contradicted = Evidence {
            neighbour: Some(OTHER),
            ..observed.clone()
        };
        assert_eq!(
            both(&contradicted),
            [
                Err(Refusal::NeighbourNamesAnother(OTHER)),
                Err(Refusal::NeighbourNamesAnother(OTHER))
            ]
        );
        let expired = Evidence {
            lease: lease(VICTIM, LeaseState::Observed, NOW),
            neighbour: Some(VICTIM),
            ..Evidence::default()
        };
        assert_eq!(
            both(&expired),
            [Err(Refusal::Expired), Err(Refusal::Expired)]
        );
    }

    #[test]
    fn the_owner_of_an_address_is_the_one_the_rule_allows() {
        let fixed = Evidence {
            fixed_owner: Some(OTHER),
            lease: lease(VICTIM, LeaseState::Bound, NOW + 60),
            ..Evidence::default()
        };
        assert_eq!(
            owner(&fixed, STRICT, NOW),
            Some((OTHER, Grant::FixedAddress))
        );
        let bound = Evidence {
            lease: lease(VICTIM, LeaseState::Bound, NOW + 60),
            ..Evidence::default()
        };
        assert_eq!(
            owner(&bound, STRICT, NOW),
            Some((VICTIM, Grant::BoundLease))
        );
        let observed = Evidence {
            lease: lease(VICTIM, LeaseState::Observed, NOW + 60),
            ..Evidence::default()
        };
        assert_eq!(owner(&observed, STRICT, NOW), None);
        assert_eq!(
            owner(&observed, TRUSTING, NOW),
            Some((VICTIM, Grant::ObservedTrusted))
        );
        let expired = Evidence {
            lease: lease(VICTIM, LeaseState::Bound, NOW - 1),
            ..Evidence::default()
        };
        assert_eq!(owner(&expired, TRUSTING, NOW), None);
        assert_eq!(owner(&Evidence::default(), TRUSTING, NOW), None);
    }
}
