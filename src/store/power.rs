//! Power controllers (with their secrets) and the last power state read of each
//! machine.

use crate::mac::MacAddr;
use crate::power::{CachedStatus, Controller, Secret};
use crate::store::Db;
use crate::store::{StoreError, parse_mac};
use rusqlite::{OptionalExtension, params};

pub fn get_controller(conn: &Db, mac: MacAddr) -> Result<Option<Controller>, StoreError> {
    conn.prepare_cached(
        "SELECT kind, host, port, username, secret, cipher_suite, url, system_id, verify_tls
         FROM power_controllers WHERE mac = ?1",
    )?
    .query_row([mac.to_string()], controller_row)
    .optional()?
    .transpose()
}

type RawController = Result<Controller, StoreError>;

fn controller_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawController> {
    let kind: String = r.get(0)?;
    let text = |i: usize| -> rusqlite::Result<String> {
        Ok(r.get::<_, Option<String>>(i)?.unwrap_or_default())
    };
    Ok(match kind.as_str() {
        "ipmi" => Ok(Controller::Ipmi {
            host: text(1)?,
            port: u16::try_from(r.get::<_, Option<i64>>(2)?.unwrap_or(623)).unwrap_or(623),
            user: text(3)?,
            password: Secret::new(text(4)?),
            cipher_suite: u8::try_from(r.get::<_, Option<i64>>(5)?.unwrap_or(3)).unwrap_or(3),
        }),
        "redfish" => Ok(Controller::Redfish {
            url: text(6)?,
            user: text(3)?,
            password: Secret::new(text(4)?),
            system_id: text(7)?,
            verify_tls: r.get::<_, Option<bool>>(8)?.unwrap_or(true),
        }),
        "wol" => Ok(Controller::Wol),
        other => Err(StoreError::Corrupt {
            column: "power_controllers.kind",
            value: other.to_string(),
        }),
    })
}

/// Writes a machine's controller (replacing any) and forgets its cached state.
pub fn write_controller(
    tx: &Db,
    mac: MacAddr,
    controller: &Controller,
    now_ms: i64,
) -> Result<(), StoreError> {
    let (host, port, user, secret, cipher, url, system, verify) = match controller {
        Controller::Ipmi {
            host,
            port,
            user,
            password,
            cipher_suite,
        } => (
            Some(host.as_str()),
            Some(i64::from(*port)),
            Some(user.as_str()),
            Some(password.expose()),
            Some(i64::from(*cipher_suite)),
            None,
            None,
            true,
        ),
        Controller::Redfish {
            url,
            user,
            password,
            system_id,
            verify_tls,
        } => (
            None,
            None,
            Some(user.as_str()),
            Some(password.expose()),
            None,
            Some(url.as_str()),
            Some(system_id.as_str()),
            *verify_tls,
        ),
        Controller::Wol => (None, None, None, None, None, None, None, true),
    };
    tx.execute(
        "INSERT INTO power_controllers
           (mac, kind, host, port, username, secret, cipher_suite, url, system_id, verify_tls, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(mac) DO UPDATE SET kind = excluded.kind, host = excluded.host,
           port = excluded.port, username = excluded.username, secret = excluded.secret,
           cipher_suite = excluded.cipher_suite, url = excluded.url,
           system_id = excluded.system_id, verify_tls = excluded.verify_tls,
           updated_ms = excluded.updated_ms",
        params![
            mac.to_string(),
            controller.kind(),
            host,
            port,
            user,
            secret,
            cipher,
            url,
            system,
            verify,
            now_ms
        ],
    )?;
    tx.execute("DELETE FROM power_status WHERE mac = ?1", [mac.to_string()])?;
    Ok(())
}

/// Removes a machine's controller and its cached state; false when it had none.
pub fn delete_controller(tx: &Db, mac: MacAddr) -> Result<bool, StoreError> {
    let gone = tx.execute(
        "DELETE FROM power_controllers WHERE mac = ?1",
        [mac.to_string()],
    )?;
    tx.execute("DELETE FROM power_status WHERE mac = ?1", [mac.to_string()])?;
    Ok(gone > 0)
}

/// Every machine's controller (or none), by MAC: what the poller reads.
pub fn all_controllers(conn: &Db) -> Result<Vec<(MacAddr, Option<Controller>)>, StoreError> {
    machines_in(conn, None)?
        .into_iter()
        .map(|mac| Ok((mac, get_controller(conn, mac)?)))
        .collect()
}

/// The machines of `rack`, or all of them, by MAC.
pub fn machines_in(conn: &Db, rack: Option<&str>) -> Result<Vec<MacAddr>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT mac FROM machines WHERE ?1 IS NULL OR rack = ?1 ORDER BY mac")?;
    let rows = stmt
        .query_map([rack], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(parse_mac).collect()
}

pub fn save_statuses(
    conn: &mut Db,
    statuses: &[(MacAddr, CachedStatus)],
) -> Result<(), StoreError> {
    // One transaction per poll round: a commit per machine would make the poller
    // the database's busiest writer.
    conn.atomically(|tx| {
        for (mac, s) in statuses {
            // A machine deleted while its BMC was being asked is skipped (no row to join).
            tx.prepare_cached(
                "INSERT INTO power_status (mac, state, detail, checked_ms)
             SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM machines WHERE mac = ?1)
             ON CONFLICT(mac) DO UPDATE SET state = excluded.state, detail = excluded.detail,
               checked_ms = excluded.checked_ms",
            )?
            .execute(params![mac.to_string(), s.state, s.detail, s.checked_ms])?;
        }
        Ok(())
    })
}

pub fn cached_status(conn: &Db, mac: MacAddr) -> Result<Option<CachedStatus>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT state, detail, checked_ms FROM power_status WHERE mac = ?1")?
        .query_row([mac.to_string()], |r| {
            Ok(CachedStatus {
                state: r.get(0)?,
                detail: r.get(1)?,
                checked_ms: r.get(2)?,
            })
        })
        .optional()?)
}

/// Every machine's power column for the machines list: the cached state, `wol`
/// (no state to read) or nothing (no controller).
pub fn power_column(conn: &Db) -> Result<std::collections::HashMap<String, String>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.mac, c.kind, s.state FROM power_controllers c
         LEFT JOIN power_status s ON s.mac = c.mac",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    let mut column = std::collections::HashMap::new();
    for row in rows {
        let (mac, kind, state) = row?;
        let text = match (kind.as_str(), state) {
            ("wol", _) => "wol".to_string(),
            (_, Some(state)) => state,
            (_, None) => "?".to_string(),
        };
        column.insert(mac, text);
    }
    Ok(column)
}
