//! Events: the boot timeline and the audit trail, with who caused each.

use super::{Db, StoreError, parse_mac};
use crate::mac::MacAddr;
use crate::model::*;
use rusqlite::params;

#[cfg(test)]
pub fn insert_event(
    conn: &Db,
    at_ms: i64,
    mac: Option<MacAddr>,
    kind: &str,
    detail: String,
) -> Result<(), StoreError> {
    insert_event_by(conn, at_ms, mac, kind, detail, None)
}

/// An event with who caused it (`user:NAME`, `token:NAME`, `machine`): the audit log.
pub fn insert_event_by(
    conn: &Db,
    at_ms: i64,
    mac: Option<MacAddr>,
    kind: &str,
    detail: String,
    actor: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO events (at_ms, mac, kind, detail, actor) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        at_ms,
        mac.map(|m| m.to_string()),
        kind,
        detail,
        actor
    ])?;
    Ok(())
}

/// Events, oldest first; for one machine when `mac` is given.
pub fn list_events(conn: &Db, mac: Option<MacAddr>, limit: u32) -> Result<Vec<Event>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, mac, kind, detail, actor FROM (
           SELECT id, at_ms, mac, kind, detail, actor FROM events
           WHERE ?1 IS NULL OR mac = ?1 ORDER BY id DESC LIMIT ?2
         ) ORDER BY id",
    )?;
    let rows = stmt.query_map(params![mac.map(|m| m.to_string()), limit], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    rows.map(|row| {
        let (at_ms, mac, kind, detail, actor) = row?;
        Ok(Event {
            at_ms,
            mac: mac.map(parse_mac).transpose()?,
            kind,
            detail,
            actor,
        })
    })
    .collect()
}

/// `?1, ?2, ...` from `first`, one per kind: the kind lists are the callers' constants,
/// bound rather than spliced into the SQL.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("?{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Machines with events of `kinds` newer than event `after_id`, each with the time
/// of its newest such event, and the newest event id of all (where the next call
/// starts).
pub fn machines_with_events_after(
    conn: &Db,
    after_id: i64,
    kinds: &[&str],
) -> Result<(Vec<(MacAddr, i64)>, i64), StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT mac, max(at_ms) FROM events
         WHERE id > ?1 AND mac IS NOT NULL AND kind IN ({}) GROUP BY mac",
        placeholders(2, kinds.len())
    ))?;
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&after_id];
    values.extend(kinds.iter().map(|k| k as &dyn rusqlite::ToSql));
    let rows = stmt
        .query_map(values.as_slice(), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let machines = rows
        .into_iter()
        .map(|(mac, at_ms)| Ok((parse_mac(mac)?, at_ms)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let newest: Option<i64> = conn.query_row("SELECT max(id) FROM events", [], |r| r.get(0))?;
    Ok((machines, newest.unwrap_or(after_id).max(after_id)))
}

/// The id just before the first event at or after `since_ms`: where a sweep that
/// looks back to `since_ms` starts.
pub fn event_id_before(conn: &Db, since_ms: i64) -> Result<i64, StoreError> {
    let first: Option<i64> = conn.query_row(
        "SELECT min(id) FROM events WHERE at_ms >= ?1",
        [since_ms],
        |r| r.get(0),
    )?;
    match first {
        Some(id) => Ok(id - 1),
        None => Ok(conn
            .query_row("SELECT max(id) FROM events", [], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .unwrap_or(0)),
    }
}

/// One machine's last `limit` events of `kinds`, oldest first, as the timeline and
/// the diagnosis read them.
pub fn machine_events(
    conn: &Db,
    mac: MacAddr,
    kinds: &[&str],
    limit: u32,
) -> Result<Vec<crate::timeline::BootEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT at_ms, kind, detail FROM (
           SELECT id, at_ms, kind, detail FROM events
           WHERE mac = ?1 AND kind IN ({}) ORDER BY id DESC LIMIT ?2
         ) ORDER BY id",
        placeholders(3, kinds.len())
    ))?;
    let mac_text = mac.to_string();
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&mac_text, &limit];
    values.extend(kinds.iter().map(|k| k as &dyn rusqlite::ToSql));
    let rows = stmt.query_map(values.as_slice(), |r| {
        Ok(crate::timeline::BootEvent {
            at_ms: r.get(0)?,
            kind: r.get(1)?,
            detail: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
