//! Leases and what the DHCP server writes in one group commit (leases, discovered
//! and seen machines, events), the inventory snapshot it decides with, pool usage,
//! and which machine an address belongs to.

use super::{Db, StoreError, ip_from_db, ip_to_db, parse_mac};
use crate::mac::MacAddr;
use crate::model::*;
use rusqlite::{OptionalExtension, params};
use std::net::Ipv4Addr;

use super::insert_event_by;
use super::machines::list_machines;

type LeaseRow = (i64, String, i64, String, Option<String>, Option<Vec<u8>>);

fn lease_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<LeaseRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn lease_from_row(row: LeaseRow) -> Result<LeaseRecord, StoreError> {
    let (ip, mac, expires_at, state, hostname, client_id) = row;
    Ok(LeaseRecord {
        ip: ip_from_db(Some(ip))?.ok_or(StoreError::Corrupt {
            column: "leases.ip",
            value: String::new(),
        })?,
        mac: parse_mac(mac)?,
        expires_at,
        state: LeaseState::parse(&state).ok_or(StoreError::Corrupt {
            column: "leases.state",
            value: state.clone(),
        })?,
        hostname,
        client_id,
    })
}

pub fn list_leases(conn: &Db) -> Result<Vec<LeaseRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT ip, mac, expires_at, state, hostname, client_id FROM leases ORDER BY ip",
    )?;
    let rows = stmt.query_map([], lease_row)?;
    rows.map(|row| lease_from_row(row?)).collect()
}

fn apply_lease_op(conn: &Db, op: &LeaseOp, now_ms: i64) -> Result<(), StoreError> {
    match op {
        LeaseOp::Put(lease) => {
            conn.prepare_cached(
                "INSERT INTO leases (ip, mac, expires_at, state, hostname, updated_ms, client_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(ip) DO UPDATE SET mac = excluded.mac,
                   expires_at = excluded.expires_at, state = excluded.state,
                   hostname = excluded.hostname, updated_ms = excluded.updated_ms,
                   client_id = excluded.client_id",
            )?
            .execute(params![
                ip_to_db(lease.ip),
                lease.mac.to_string(),
                lease.expires_at,
                lease.state.as_str(),
                lease.hostname,
                now_ms,
                lease.client_id,
            ])?;
        }
        LeaseOp::Delete(ip) => {
            conn.prepare_cached("DELETE FROM leases WHERE ip = ?1")?
                .execute([ip_to_db(*ip)])?;
        }
    }
    Ok(())
}

/// Returns the inventory generation before and after: when `before` is the one the
/// caller knew, the only inventory changes since are the batch's own.
pub fn commit_dhcp_batch(
    conn: &mut Db,
    batch: &DhcpBatch,
    now_ms: i64,
) -> Result<(i64, i64), StoreError> {
    conn.atomically(|tx| {
        let before = inventory_generation(tx)?;
        for op in &batch.leases {
            apply_lease_op(tx, op, now_ms)?;
        }
        for d in &batch.discovered {
            tx.prepare_cached(
                "INSERT INTO machines (mac, arch, vendor_class, discovered, first_seen_ms,
               last_seen_ms, created_ms)
             VALUES (?1, ?2, ?3, 1, ?4, ?4, ?4) ON CONFLICT(mac) DO NOTHING",
            )?
            .execute(params![d.mac.to_string(), d.arch, d.vendor_class, now_ms])?;
        }
        for seen in &batch.seen {
            tx.prepare_cached(
            "UPDATE machines SET last_seen_ms = ?2, first_seen_ms = COALESCE(first_seen_ms, ?2),
             arch = COALESCE(?3, arch), vendor_class = COALESCE(?4, vendor_class)
             WHERE mac = ?1",
        )?
        .execute(params![
            seen.mac.to_string(),
            seen.at_ms,
            seen.arch,
            seen.vendor_class
        ])?;
        }
        for e in &batch.events {
            insert_event_by(
                tx,
                e.at_ms,
                e.mac,
                e.kind,
                e.detail.clone(),
                Some("machine"),
            )?;
        }
        let after = if batch.discovered.is_empty() {
            before
        } else {
            inventory_generation(tx)?
        };
        Ok((before, after))
    })
}

pub fn inventory_generation(conn: &Db) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT generation FROM dhcp_inventory_generation WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

/// A fresh snapshot when the inventory changed since `known` (a generation), else None.
pub fn inventory_if_changed(
    conn: &Db,
    known: Option<i64>,
) -> Result<Option<InventorySnapshot>, StoreError> {
    let generation = inventory_generation(conn)?;
    if known == Some(generation) {
        return Ok(None);
    }
    let machines: std::collections::HashMap<MacAddr, Machine> = list_machines(conn)?
        .into_iter()
        .map(|m| (m.mac, m))
        .collect();
    let fixed = machines
        .values()
        .filter_map(|m| m.ip.map(|ip| (ip, m.mac)))
        .collect();
    Ok(Some(InventorySnapshot {
        generation,
        machines,
        fixed,
    }))
}

/// Pool usage for each configured subnet at `now` (Unix seconds).
pub fn pool_usage(
    conn: &Db,
    subnets: &[crate::config::Subnet],
    now: i64,
) -> Result<Vec<PoolUsage>, StoreError> {
    let mut usage = Vec::with_capacity(subnets.len());
    for subnet in subnets {
        for (pool_start, pool_end) in subnet.pools() {
            let (start, end) = (ip_to_db(pool_start), ip_to_db(pool_end));
            let count = |state: &str| -> Result<u64, StoreError> {
                let n: i64 = conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM leases WHERE ip BETWEEN ?1 AND ?2
                         AND state = ?3 AND expires_at > ?4
                         AND ip NOT IN (SELECT ip FROM machines WHERE ip IS NOT NULL AND mac <> leases.mac)",
                    )?
                    .query_row(params![start, end, state, now], |r| r.get(0))?;
                Ok(u64::try_from(n).unwrap_or(0))
            };
            let reserved: i64 = conn
                .prepare_cached(
                    "SELECT COUNT(*) FROM machines WHERE ip BETWEEN ?1 AND ?2
                     AND ip NOT IN (SELECT ip FROM leases WHERE state IN ('bound', 'declined')
                                    AND expires_at > ?3)",
                )?
                .query_row(params![start, end, now], |r| r.get(0))?;
            usage.push(PoolUsage {
                network: subnet.network,
                prefix_len: subnet.prefix_len,
                pool_start,
                pool_end,
                size: u64::from(u32::from(pool_end) - u32::from(pool_start)) + 1,
                reserved: u64::try_from(reserved).unwrap_or(0),
                bound: count("bound")?,
                declined: count("declined")?,
                known_only: subnet.known_pool == Some((pool_start, pool_end)),
            });
        }
    }
    Ok(usage)
}

/// Deletes DHCP events (kind `dhcp.*`) older than `before_ms`, at most `limit` of them
/// so a long backlog is pruned in steps that do not hold the database for long.
pub fn prune_dhcp_events(conn: &Db, before_ms: i64, limit: u32) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached(
            "DELETE FROM events WHERE id IN (
               SELECT id FROM events WHERE kind >= 'dhcp.' AND kind < 'dhcp/' AND at_ms < ?1
               LIMIT ?2)",
        )?
        .execute(params![before_ms, limit])?)
}

/// The MAC that holds (or last held) `ip`, by lease or fixed address: how TFTP and
/// HTTP requests, which carry only an address, are tied to a machine.
pub fn mac_for_ip(conn: &Db, ip: Ipv4Addr) -> Result<Option<MacAddr>, StoreError> {
    let mac: Option<String> = conn
        .prepare_cached(
            "SELECT mac FROM leases WHERE ip = ?1
             UNION ALL SELECT mac FROM machines WHERE ip = ?1 LIMIT 1",
        )?
        .query_row([ip_to_db(ip)], |r| r.get(0))
        .optional()?;
    mac.map(parse_mac).transpose()
}

/// What the inventory says about one address: the machine whose fixed address it is,
/// and the lease recorded on it (any state, expired or not: `secrets` judges).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressRecords {
    pub fixed_owner: Option<MacAddr>,
    pub lease: Option<LeaseRecord>,
}

pub fn address_records(conn: &Db, ip: Ipv4Addr) -> Result<AddressRecords, StoreError> {
    let fixed_owner: Option<String> = conn
        .prepare_cached("SELECT mac FROM machines WHERE ip = ?1")?
        .query_row([ip_to_db(ip)], |r| r.get(0))
        .optional()?;
    let lease = conn
        .prepare_cached(
            "SELECT ip, mac, expires_at, state, hostname, client_id FROM leases WHERE ip = ?1",
        )?
        .query_row([ip_to_db(ip)], lease_row)
        .optional()?
        .map(lease_from_row)
        .transpose()?;
    Ok(AddressRecords {
        fixed_owner: fixed_owner.map(parse_mac).transpose()?,
        lease,
    })
}
