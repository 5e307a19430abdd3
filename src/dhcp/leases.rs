//! The lease book: who holds which address, in memory, as the DHCP server's working
//! copy of the `leases` table. The DHCP server is its only writer and persists every
//! binding before it acknowledges it, so after a restart the book is loaded back
//! from the table and every client keeps its address.

use crate::mac::MacAddr;
use crate::store::{LeaseRecord, LeaseState};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// How long an offered address is held for the client that was offered it.
pub const OFFER_HOLD_SECS: i64 = 60;

#[derive(Debug, Default, Clone)]
pub struct LeaseBook {
    by_ip: HashMap<Ipv4Addr, LeaseRecord>,
    by_mac: HashMap<MacAddr, Ipv4Addr>,
    /// Addresses offered and not yet requested: ip -> (client, hold until).
    offers: HashMap<Ipv4Addr, (MacAddr, i64)>,
}

impl LeaseBook {
    pub fn load(records: impl IntoIterator<Item = LeaseRecord>) -> Self {
        let mut book = LeaseBook::default();
        for record in records {
            book.apply(record);
        }
        book
    }

    /// Records a binding that has been persisted.
    pub fn apply(&mut self, record: LeaseRecord) {
        if record.state == LeaseState::Declined {
            // A declined address is a hold on the address, not the client's binding.
            if self.by_mac.get(&record.mac) == Some(&record.ip) {
                self.by_mac.remove(&record.mac);
            }
            self.offers.remove(&record.ip);
            self.by_ip.insert(record.ip, record);
            return;
        }
        if let Some(old_ip) = self.by_mac.insert(record.mac, record.ip)
            && old_ip != record.ip
            && self
                .by_ip
                .get(&old_ip)
                .is_some_and(|r| r.mac == record.mac && r.state != LeaseState::Declined)
        {
            self.by_ip.remove(&old_ip);
        }
        if let Some(previous) = self.by_ip.get(&record.ip)
            && previous.mac != record.mac
            && self.by_mac.get(&previous.mac) == Some(&record.ip)
        {
            self.by_mac.remove(&previous.mac);
        }
        self.offers.remove(&record.ip);
        self.by_ip.insert(record.ip, record);
    }

    pub fn hold_offer(&mut self, ip: Ipv4Addr, mac: MacAddr, until: i64) {
        self.offers.retain(|_, (holder, _)| *holder != mac);
        self.offers.insert(ip, (mac, until));
    }

    pub fn forget_offer(&mut self, mac: MacAddr) {
        self.offers.retain(|_, (holder, _)| *holder != mac);
    }

    /// The address this client holds or last held, with its record.
    pub fn of_client(&self, mac: MacAddr) -> Option<&LeaseRecord> {
        self.by_mac.get(&mac).and_then(|ip| self.by_ip.get(ip))
    }

    pub fn record(&self, ip: Ipv4Addr) -> Option<&LeaseRecord> {
        self.by_ip.get(&ip)
    }

    /// The client that holds `ip` right now (a bound, unexpired lease or an offer
    /// still held), if any. A declined address in probation is held by its decliner,
    /// so nobody gets it.
    pub fn holder(&self, ip: Ipv4Addr, now: i64) -> Option<MacAddr> {
        if let Some((mac, until)) = self.offers.get(&ip)
            && *until > now
        {
            return Some(*mac);
        }
        let record = self.by_ip.get(&ip)?;
        let active = match record.state {
            LeaseState::Bound | LeaseState::Declined => record.expires_at > now,
            LeaseState::Released => false,
        };
        active.then_some(record.mac)
    }

    /// Whether `mac` may be given `ip`: nobody else holds it, and it is not a declined
    /// address in probation.
    pub fn is_free_for(&self, ip: Ipv4Addr, mac: MacAddr, now: i64) -> bool {
        let declined = self
            .by_ip
            .get(&ip)
            .is_some_and(|r| r.state == LeaseState::Declined && r.expires_at > now);
        !declined && self.holder(ip, now).is_none_or(|holder| holder == mac)
    }

    /// Whether the address was ever recorded (a returning client may want it back).
    pub fn was_used(&self, ip: Ipv4Addr) -> bool {
        self.by_ip.contains_key(&ip)
    }

    #[cfg(test)]
    pub fn records(&self) -> impl Iterator<Item = &LeaseRecord> {
        self.by_ip.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
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
        }
    }

    #[test]
    fn bound_lease_is_held_until_expiry() {
        let book = LeaseBook::load([bound(100, 1, 50)]);
        assert_eq!(book.holder(ip(100), 49), Some(mac(1)));
        assert_eq!(book.holder(ip(100), 50), None);
        assert!(!book.is_free_for(ip(100), mac(2), 49));
        assert!(book.is_free_for(ip(100), mac(1), 49));
        assert!(book.is_free_for(ip(100), mac(2), 51));
    }

    #[test]
    fn moving_a_client_frees_its_old_address() {
        let mut book = LeaseBook::load([bound(100, 1, 50)]);
        book.apply(bound(101, 1, 50));
        assert_eq!(book.holder(ip(100), 0), None);
        assert_eq!(book.of_client(mac(1)).map(|r| r.ip), Some(ip(101)));
    }

    #[test]
    fn reassigning_an_expired_address_detaches_the_old_client() {
        let mut book = LeaseBook::load([bound(100, 1, 50)]);
        book.apply(bound(100, 2, 500));
        assert!(book.of_client(mac(1)).is_none());
        assert_eq!(book.holder(ip(100), 100), Some(mac(2)));
    }

    #[test]
    fn offers_hold_an_address_briefly() {
        let mut book = LeaseBook::default();
        book.hold_offer(ip(100), mac(1), 60);
        assert!(!book.is_free_for(ip(100), mac(2), 10));
        assert!(book.is_free_for(ip(100), mac(2), 61));
        book.hold_offer(ip(101), mac(1), 60);
        assert!(
            book.is_free_for(ip(100), mac(2), 10),
            "a new offer replaces the old"
        );
        book.forget_offer(mac(1));
        assert!(book.is_free_for(ip(101), mac(2), 10));
    }

    #[test]
    fn declined_address_is_free_for_nobody_during_probation() {
        let mut book = LeaseBook::default();
        book.apply(LeaseRecord {
            state: LeaseState::Declined,
            ..bound(100, 1, 600)
        });
        assert!(!book.is_free_for(ip(100), mac(1), 10));
        assert!(!book.is_free_for(ip(100), mac(2), 10));
        assert!(book.is_free_for(ip(100), mac(2), 601));
    }
}
