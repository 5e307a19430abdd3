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
