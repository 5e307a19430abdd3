//! The lease book: who holds which address, in memory, as the DHCP server's working
//! copy of the `leases` table. The DHCP server is its only writer: every change the
//! book makes is returned as `LeaseOp`s, which the server commits (fsync) before it
//! acknowledges anything, so after a restart the book is loaded back from the table
//! and every client keeps its address.
//!
//! Clients are keyed by hardware address, or by client identifier (option 61) when
//! `match_client_id` is on. Finding a free address must stay cheap with 100,000
//! leases, so each pool keeps a cursor over addresses never handed out and an index
//! of the others by the time they became (or become) free.

use crate::mac::MacAddr;
use crate::model::{LeaseOp, LeaseRecord, LeaseState};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

/// How long an offered address is held for the client that was offered it.
pub const OFFER_HOLD_SECS: i64 = 60;

/// Who a lease belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Mac(MacAddr),
    Id(Box<[u8]>),
}

impl ClientKey {
    pub fn of(mac: MacAddr, client_id: Option<&[u8]>, match_client_id: bool) -> Self {
        match client_id {
            Some(id) if match_client_id => ClientKey::Id(id.into()),
            _ => ClientKey::Mac(mac),
        }
    }
}

/// One pool's allocation index.
#[derive(Debug, Clone)]
struct Pool {
    start: u32,
    end: u32,
    /// The cursor: every pool address below it has a record or an offer, is reserved,
    /// or is in `returned`.
    next: u64,
    /// Addresses below the cursor with neither record nor offer again (an offer
    /// nobody took, a client that moved on): as good as never handed out.
    returned: BTreeSet<Ipv4Addr>,
    /// (time the address is free from, address) for every pool address that has a
    /// record or an offer.
    by_free_time: BTreeSet<(i64, Ipv4Addr)>,
}

#[derive(Debug, Default, Clone)]
pub struct LeaseBook {
    match_client_id: bool,
    by_ip: HashMap<Ipv4Addr, LeaseRecord>,
    by_key: HashMap<ClientKey, Ipv4Addr>,
    /// Addresses offered and not yet requested: ip -> (client, hold until).
    offers: HashMap<Ipv4Addr, (ClientKey, i64)>,
    offer_of: HashMap<ClientKey, Ipv4Addr>,
    pools: Vec<Pool>,
    /// The current entry of each address in its pool's `by_free_time`.
    free_time: HashMap<Ipv4Addr, i64>,
    /// Addresses the pools skip (fixed addresses, the router...): only a shortcut for
    /// the cursor, policy still checks every candidate.
    reserved: HashSet<Ipv4Addr>,
}

impl LeaseBook {
    pub fn new(match_client_id: bool) -> Self {
        LeaseBook {
            match_client_id,
            ..LeaseBook::default()
        }
    }

    /// A book holding `records`, as loaded from the table at start. Proxy-mode
    /// observations are not leases of ours and are left out.
    pub fn load(
        match_client_id: bool,
        pools: &[(Ipv4Addr, Ipv4Addr)],
        reserved: HashSet<Ipv4Addr>,
        records: impl IntoIterator<Item = LeaseRecord>,
    ) -> Self {
        let mut book = LeaseBook::new(match_client_id);
        book.set_pools(pools, reserved);
        for record in records {
            if record.state != LeaseState::Observed {
                book.apply(record);
            }
        }
        book
    }

    pub fn key_of(&self, mac: MacAddr, client_id: Option<&[u8]>) -> ClientKey {
        ClientKey::of(mac, client_id, self.match_client_id)
    }

    fn record_key(&self, record: &LeaseRecord) -> ClientKey {
        self.key_of(record.mac, record.client_id.as_deref())
    }

    /// Sets the pools to allocate from and the addresses their cursors skip, and
    /// rebuilds their index. Called at start and when the inventory's fixed addresses
    /// change (an address that stops being reserved must become allocatable).
    pub fn set_pools(&mut self, pools: &[(Ipv4Addr, Ipv4Addr)], reserved: HashSet<Ipv4Addr>) {
        self.reserved = reserved;
        self.pools = pools
            .iter()
            .map(|(start, end)| Pool {
                start: u32::from(*start),
                end: u32::from(*end),
                next: u64::from(u32::from(*start)),
                returned: BTreeSet::new(),
                by_free_time: BTreeSet::new(),
            })
            .collect();
        self.free_time.clear();
        let held: Vec<Ipv4Addr> = self
            .by_ip
            .keys()
            .chain(self.offers.keys())
            .copied()
            .collect();
        for ip in held {
            self.refresh_free_time(ip);
        }
        for index in 0..self.pools.len() {
            self.advance_cursor(index);
        }
    }

    /// How many addresses have a record.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    fn pool_index(&self, ip: Ipv4Addr) -> Option<usize> {
        let n = u32::from(ip);
        self.pools
            .iter()
            .position(|p| (p.start..=p.end).contains(&n))
    }

    /// Re-files `ip` after its record or offer changed: by when it stops being held
    /// if it has either, else among the returned addresses.
    fn refresh_free_time(&mut self, ip: Ipv4Addr) {
        let Some(index) = self.pool_index(ip) else {
            return;
        };
        let record = self.by_ip.get(&ip).map(|r| r.expires_at);
        let offer = self.offers.get(&ip).map(|(_, until)| *until);
        let pool = &mut self.pools[index];
        if let Some(old) = self.free_time.remove(&ip) {
            pool.by_free_time.remove(&(old, ip));
        }
        if record.is_none() && offer.is_none() {
            if u64::from(u32::from(ip)) < pool.next {
                pool.returned.insert(ip);
            }
            return;
        }
        pool.returned.remove(&ip);
        let time = record.unwrap_or(i64::MIN).max(offer.unwrap_or(i64::MIN));
        pool.by_free_time.insert((time, ip));
        self.free_time.insert(ip, time);
        if u64::from(u32::from(ip)) == pool.next {
            self.advance_cursor(index);
        }
    }

    fn advance_cursor(&mut self, index: usize) {
        let pool = &self.pools[index];
        let mut next = pool.next;
        while next <= u64::from(pool.end) {
            let ip = Ipv4Addr::from(next as u32);
            if !(self.by_ip.contains_key(&ip)
                || self.offers.contains_key(&ip)
                || self.reserved.contains(&ip))
            {
                break;
            }
            next += 1;
        }
        self.pools[index].next = next;
    }

    /// Records a binding decided by policy, and returns the table changes that make
    /// the `leases` table match. The caller commits them before replying.
    pub fn apply(&mut self, record: LeaseRecord) -> Vec<LeaseOp> {
        let mut ops = Vec::with_capacity(2);
        let ip = record.ip;
        let key = self.record_key(&record);
        if let Some(previous) = self.by_ip.get(&ip) {
            let previous_key = self.record_key(previous);
            if previous_key != key && self.by_key.get(&previous_key) == Some(&ip) {
                self.by_key.remove(&previous_key);
            }
        }
        if record.state == LeaseState::Declined {
            // A declined address is a hold on the address, not the client's binding.
            if self.by_key.get(&key) == Some(&ip) {
                self.by_key.remove(&key);
            }
        } else if let Some(old_ip) = self.by_key.insert(key.clone(), ip)
            && old_ip != ip
            && self
                .by_ip
                .get(&old_ip)
                .is_some_and(|r| r.state != LeaseState::Declined)
        {
            // One client, one address: its old one is free from now on.
            self.by_ip.remove(&old_ip);
            self.refresh_free_time(old_ip);
            ops.push(LeaseOp::Delete(old_ip));
        }
        self.drop_offer_at(ip);
        if self.offer_of.get(&key).is_some_and(|o| *o != ip) {
            self.forget_offer(&key);
        }
        self.by_ip.insert(ip, record.clone());
        self.refresh_free_time(ip);
        ops.push(LeaseOp::Put(record));
        ops
    }

    fn drop_offer_at(&mut self, ip: Ipv4Addr) {
        if let Some((holder, _)) = self.offers.remove(&ip)
            && self.offer_of.get(&holder) == Some(&ip)
        {
            self.offer_of.remove(&holder);
        }
    }

    pub fn hold_offer(&mut self, ip: Ipv4Addr, key: ClientKey, until: i64) {
        self.forget_offer(&key);
        self.drop_offer_at(ip);
        self.offers.insert(ip, (key.clone(), until));
        self.offer_of.insert(key, ip);
        self.refresh_free_time(ip);
    }

    pub fn forget_offer(&mut self, key: &ClientKey) {
        if let Some(ip) = self.offer_of.remove(key) {
            self.offers.remove(&ip);
            self.refresh_free_time(ip);
        }
    }

    /// The address this client holds or last held, with its record.
    pub fn of_client(&self, key: &ClientKey) -> Option<&LeaseRecord> {
        self.by_key.get(key).and_then(|ip| self.by_ip.get(ip))
    }

    #[cfg(test)]
    pub fn record(&self, ip: Ipv4Addr) -> Option<&LeaseRecord> {
        self.by_ip.get(&ip)
    }

    /// The client that holds `ip` right now (a bound, unexpired lease or an offer
    /// still held), if any. A declined address in probation is held by its decliner,
    /// so nobody gets it.
    pub fn holder(&self, ip: Ipv4Addr, now: i64) -> Option<ClientKey> {
        if let Some((key, until)) = self.offers.get(&ip)
            && *until > now
        {
            return Some(key.clone());
        }
        let record = self.by_ip.get(&ip)?;
        let active = match record.state {
            LeaseState::Bound | LeaseState::Declined => record.expires_at > now,
            LeaseState::Released | LeaseState::Observed => false,
        };
        active.then(|| self.record_key(record))
    }

    /// Whether `key` may be given `ip`: nobody else holds it, and it is not a declined
    /// address in probation.
    pub fn is_free_for(&self, ip: Ipv4Addr, key: &ClientKey, now: i64) -> bool {
        let declined = self
            .by_ip
            .get(&ip)
            .is_some_and(|r| r.state == LeaseState::Declined && r.expires_at > now);
        if declined {
            return false;
        }
        if let Some((holder, until)) = self.offers.get(&ip)
            && *until > now
            && holder != key
        {
            return false;
        }
        match self.by_ip.get(&ip) {
            Some(r) if r.state == LeaseState::Bound && r.expires_at > now => {
                self.record_key(r) == *key
            }
            _ => true,
        }
    }

    /// A free address of the pool starting at `start` that `acceptable` allows: the
    /// lowest one with neither record nor offer, else the one free the longest. None
    /// when the pool is full.
    pub fn find_free(
        &self,
        start: Ipv4Addr,
        now: i64,
        key: &ClientKey,
        acceptable: impl Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let pool = &self.pools[self.pool_index(start)?];
        let usable = |ip: Ipv4Addr| acceptable(ip) && self.is_free_for(ip, key, now);
        if let Some(ip) = pool.returned.iter().copied().find(|ip| usable(*ip)) {
            return Some(ip);
        }
        let fresh = (pool.next..=u64::from(pool.end))
            .map(|n| Ipv4Addr::from(n as u32))
            .find(|ip| {
                !self.by_ip.contains_key(ip) && !self.offers.contains_key(ip) && usable(*ip)
            });
        fresh.or_else(|| {
            pool.by_free_time
                .range(..=(now, Ipv4Addr::BROADCAST))
                .map(|(_, ip)| *ip)
                .find(|ip| usable(*ip))
        })
    }

    /// How many addresses of the pool starting at `start` are held at `now`.
    pub fn held_in_pool(&self, start: Ipv4Addr, now: i64) -> usize {
        self.pool_index(start).map_or(0, |index| {
            self.pools[index]
                .by_free_time
                .range((now + 1, Ipv4Addr::UNSPECIFIED)..)
                .count()
        })
    }

    #[cfg(test)]
    pub fn records(&self) -> impl Iterator<Item = &LeaseRecord> {
        self.by_ip.values()
    }

    /// `find_free` by brute force over the whole pool, for tests of the index.
    #[cfg(test)]
    pub fn find_free_slow(
        &self,
        start: Ipv4Addr,
        now: i64,
        key: &ClientKey,
        acceptable: impl Fn(Ipv4Addr) -> bool,
    ) -> Option<Ipv4Addr> {
        let pool = &self.pools[self.pool_index(start)?];
        let all = (pool.start..=pool.end).map(Ipv4Addr::from);
        let usable = |ip: &Ipv4Addr| acceptable(*ip) && self.is_free_for(*ip, key, now);
        let untouched =
            |ip: &Ipv4Addr| !self.by_ip.contains_key(ip) && !self.offers.contains_key(ip);
        if let Some(ip) = all.clone().filter(untouched).find(usable) {
            return Some(ip);
        }
        all.filter(|ip| !untouched(ip))
            .map(|ip| {
                let record = self.by_ip.get(&ip).map_or(i64::MIN, |r| r.expires_at);
                let offer = self.offers.get(&ip).map_or(i64::MIN, |(_, until)| *until);
                (record.max(offer), ip)
            })
            .filter(|(time, ip)| *time <= now && usable(ip))
            .min()
            .map(|(_, ip)| ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }
    fn key(n: u8) -> ClientKey {
        ClientKey::Mac(mac(n))
    }
    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, n)
    }
    fn bound(n: u8, m: u8, expires_at: i64) -> LeaseRecord {
        LeaseRecord {
            ip: ip(n),
            mac: mac(m),
            expires_at,
            state: LeaseState::Bound,
            hostname: None,
            client_id: None,
        }
    }
    fn book(records: Vec<LeaseRecord>) -> LeaseBook {
        LeaseBook::load(false, &[(ip(100), ip(103))], HashSet::new(), records)
    }

    #[test]
    fn bound_lease_is_held_until_expiry() {
        let book = book(vec![bound(100, 1, 50)]);
        assert_eq!(book.holder(ip(100), 49), Some(key(1)));
        assert_eq!(book.holder(ip(100), 50), None);
        assert!(!book.is_free_for(ip(100), &key(2), 49));
        assert!(book.is_free_for(ip(100), &key(1), 49));
        assert!(book.is_free_for(ip(100), &key(2), 51));
    }

    #[test]
    fn moving_a_client_frees_its_old_address() {
        let mut book = book(vec![bound(100, 1, 50)]);
        let ops = book.apply(bound(101, 1, 50));
        assert_eq!(
            ops,
            vec![LeaseOp::Delete(ip(100)), LeaseOp::Put(bound(101, 1, 50))]
        );
        assert_eq!(book.holder(ip(100), 0), None);
        assert_eq!(book.of_client(&key(1)).map(|r| r.ip), Some(ip(101)));
    }

    #[test]
    fn reassigning_an_expired_address_detaches_the_old_client() {
        let mut book = book(vec![bound(100, 1, 50)]);
        book.apply(bound(100, 2, 500));
        assert!(book.of_client(&key(1)).is_none());
        assert_eq!(book.holder(ip(100), 100), Some(key(2)));
    }

    #[test]
    fn offers_hold_an_address_briefly() {
        let mut book = book(vec![]);
        book.hold_offer(ip(100), key(1), 60);
        assert!(!book.is_free_for(ip(100), &key(2), 10));
        assert!(book.is_free_for(ip(100), &key(2), 61));
        book.hold_offer(ip(101), key(1), 60);
        assert!(
            book.is_free_for(ip(100), &key(2), 10),
            "a new offer replaces the old"
        );
        book.forget_offer(&key(1));
        assert!(book.is_free_for(ip(101), &key(2), 10));
    }

    #[test]
    fn declined_address_is_free_for_nobody_during_probation() {
        let mut book = book(vec![]);
        book.apply(LeaseRecord {
            state: LeaseState::Declined,
            ..bound(100, 1, 600)
        });
        assert!(!book.is_free_for(ip(100), &key(1), 10));
        assert!(!book.is_free_for(ip(100), &key(2), 10));
        assert!(book.is_free_for(ip(100), &key(2), 601));
    }

    #[test]
    fn free_addresses_come_fresh_first_then_longest_free() {
        let mut book = book(vec![]);
        let any = |_| true;
        assert_eq!(book.find_free(ip(100), 0, &key(9), any), Some(ip(100)));
        book.apply(bound(100, 1, 500));
        book.apply(bound(101, 2, 300));
        book.hold_offer(ip(102), key(3), 60);
        assert_eq!(book.find_free(ip(100), 0, &key(9), any), Some(ip(103)));
        book.apply(bound(103, 4, 400));
        assert_eq!(book.held_in_pool(ip(100), 0), 4);
        assert_eq!(book.find_free(ip(100), 10, &key(9), any), None, "full");
        // The expired offer is free first, then 101 (expired at 300), then 103.
        assert_eq!(book.find_free(ip(100), 350, &key(9), any), Some(ip(102)));
        assert_eq!(
            book.find_free(ip(100), 350, &key(9), |ip| ip
                != Ipv4Addr::new(192, 0, 2, 102)),
            Some(ip(101))
        );
        assert_eq!(book.held_in_pool(ip(100), 350), 2);
    }

    #[test]
    fn reserved_addresses_are_skipped_until_released() {
        let reserved: HashSet<_> = [ip(100)].into_iter().collect();
        let mut book = LeaseBook::load(false, &[(ip(100), ip(101))], reserved, vec![]);
        let not_fixed = |ip: Ipv4Addr| ip != Ipv4Addr::new(192, 0, 2, 100);
        assert_eq!(
            book.find_free(ip(100), 0, &key(1), not_fixed),
            Some(ip(101))
        );
        book.apply(bound(101, 1, 100));
        assert_eq!(book.find_free(ip(100), 0, &key(2), not_fixed), None);
        // The machine that owned 100 is deleted: it returns to the pool.
        book.set_pools(&[(ip(100), ip(101))], HashSet::new());
        assert_eq!(book.find_free(ip(100), 0, &key(2), |_| true), Some(ip(100)));
    }

    #[test]
    fn client_identifiers_key_leases_only_when_asked() {
        let with_id = |n: u8, id: u8| LeaseRecord {
            client_id: Some(vec![1, id]),
            ..bound(n, 1, 500)
        };
        let mut by_mac = LeaseBook::new(false);
        by_mac.apply(with_id(100, 1));
        by_mac.apply(with_id(101, 2));
        assert_eq!(by_mac.of_client(&key(1)).map(|r| r.ip), Some(ip(101)));
        assert!(by_mac.record(ip(100)).is_none(), "one machine, one address");

        let mut by_id = LeaseBook::new(true);
        by_id.apply(with_id(100, 1));
        by_id.apply(with_id(101, 2));
        let id1 = ClientKey::Id(vec![1, 1].into());
        assert_eq!(by_id.of_client(&id1).map(|r| r.ip), Some(ip(100)));
        assert!(by_id.record(ip(100)).is_some());
    }
}
