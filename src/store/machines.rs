//! Machines in the inventory: their details (with the current lease), search and
//! counts, the rows the service layer writes (insert, adopt, patch, mode, image,
//! delete, done), image use, the audit log and boot timelines. SQL only: the rules
//! and the audit events are the service layer's.

use crate::lifecycle::{self, ExitMethod, Loader, MachineLife, Mode};
use crate::mac::MacAddr;
use crate::model::Machine;
use crate::store::Db;
use crate::store::{self, StoreError, ip_from_db, ip_to_db, parse_mac};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use std::net::Ipv4Addr;

/// Everything the panel and API show about one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MachineDetail {
    pub mac: String,
    pub hostname: Option<String>,
    pub image: Option<String>,
    /// The fixed address, if any.
    pub ip: Option<Ipv4Addr>,
    /// The address of its current lease, if any.
    pub lease_ip: Option<Ipv4Addr>,
    pub lease_expires_at: Option<i64>,
    pub arch: Option<String>,
    pub mode: Mode,
    pub exit_method: ExitMethod,
    /// The first program its firmware loads; `None`: the default for its architecture.
    pub loader: Option<Loader>,
    pub ssh_keys: String,
    pub rack: Option<String>,
    pub position: Option<String>,
    pub first_seen_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
    pub installed_ms: Option<i64>,
    pub wiped_ms: Option<i64>,
    /// Option 60 of its last PXE request.
    pub vendor_class: Option<String>,
    /// Added by the DHCP server (an unknown PXE client), not yet by an operator.
    pub discovered: bool,
    #[serde(skip)]
    pub token: Option<String>,
    #[serde(skip)]
    pub token_expires_ms: Option<i64>,
}

impl MachineDetail {
    pub fn life(&self) -> MachineLife {
        MachineLife {
            mode: self.mode,
            image: self.image.clone(),
            token: self.token.clone(),
            token_expires_ms: self.token_expires_ms,
        }
    }

    /// The address a booting machine is expected to come from.
    pub fn current_ip(&self) -> Option<Ipv4Addr> {
        self.lease_ip.or(self.ip)
    }
}

const DETAIL_SELECT: &str = "SELECT m.mac, m.hostname, m.image, m.ip, l.ip, l.expires_at, m.arch,
    m.mode, m.exit_method, m.ssh_keys, m.rack, m.position, m.first_seen_ms, m.last_seen_ms,
    m.installed_ms, m.wiped_ms, m.token, m.token_expires_ms, m.vendor_class, m.discovered,
    m.loader
    FROM machines m LEFT JOIN leases l ON l.mac = m.mac AND l.state IN ('bound', 'observed')";

fn detail_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDetail> {
    Ok(RawDetail {
        mac: r.get(0)?,
        hostname: r.get(1)?,
        image: r.get(2)?,
        ip: r.get(3)?,
        lease_ip: r.get(4)?,
        lease_expires_at: r.get(5)?,
        arch: r.get(6)?,
        mode: r.get(7)?,
        exit_method: r.get(8)?,
        ssh_keys: r.get(9)?,
        rack: r.get(10)?,
        position: r.get(11)?,
        first_seen_ms: r.get(12)?,
        last_seen_ms: r.get(13)?,
        installed_ms: r.get(14)?,
        wiped_ms: r.get(15)?,
        token: r.get(16)?,
        token_expires_ms: r.get(17)?,
        vendor_class: r.get(18)?,
        discovered: r.get(19)?,
        loader: r.get(20)?,
    })
}

struct RawDetail {
    mac: String,
    hostname: Option<String>,
    image: Option<String>,
    ip: Option<i64>,
    lease_ip: Option<i64>,
    lease_expires_at: Option<i64>,
    arch: Option<String>,
    mode: String,
    exit_method: String,
    ssh_keys: String,
    rack: Option<String>,
    position: Option<String>,
    first_seen_ms: Option<i64>,
    last_seen_ms: Option<i64>,
    installed_ms: Option<i64>,
    wiped_ms: Option<i64>,
    token: Option<String>,
    token_expires_ms: Option<i64>,
    vendor_class: Option<String>,
    discovered: bool,
    loader: Option<String>,
}

impl RawDetail {
    fn validate(self) -> Result<MachineDetail, StoreError> {
        let corrupt = |column, value: &str| StoreError::Corrupt {
            column,
            value: value.to_string(),
        };
        Ok(MachineDetail {
            mac: parse_mac(self.mac)?.to_string(),
            hostname: self.hostname,
            image: self.image,
            ip: ip_from_db(self.ip)?,
            lease_ip: ip_from_db(self.lease_ip)?,
            lease_expires_at: self.lease_expires_at,
            arch: self.arch,
            mode: self
                .mode
                .parse()
                .map_err(|_| corrupt("machines.mode", &self.mode))?,
            exit_method: self
                .exit_method
                .parse()
                .map_err(|_| corrupt("machines.exit_method", &self.exit_method))?,
            loader: match &self.loader {
                Some(text) => Some(text.parse().map_err(|_| corrupt("machines.loader", text))?),
                None => None,
            },
            ssh_keys: self.ssh_keys,
            rack: self.rack,
            position: self.position,
            first_seen_ms: self.first_seen_ms,
            last_seen_ms: self.last_seen_ms,
            installed_ms: self.installed_ms,
            wiped_ms: self.wiped_ms,
            token: self.token,
            token_expires_ms: self.token_expires_ms,
            vendor_class: self.vendor_class,
            discovered: self.discovered,
        })
    }
}

pub fn machine(conn: &Db, mac: MacAddr) -> Result<Option<MachineDetail>, StoreError> {
    conn.prepare_cached(&format!("{DETAIL_SELECT} WHERE m.mac = ?1"))?
        .query_row([mac.to_string()], detail_row)
        .optional()?
        .map(RawDetail::validate)
        .transpose()
}

/// Sort orders the machines list offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    #[default]
    Mac,
    Hostname,
    Ip,
    Image,
    Mode,
    Seen,
}

impl SortBy {
    fn order_clause(self) -> &'static str {
        match self {
            SortBy::Mac => "m.mac",
            SortBy::Hostname => "m.hostname IS NULL, m.hostname, m.mac",
            SortBy::Ip => "COALESCE(m.ip, l.ip) IS NULL, COALESCE(m.ip, l.ip), m.mac",
            SortBy::Image => "m.image IS NULL, m.image, m.mac",
            SortBy::Mode => "m.mode, m.mac",
            SortBy::Seen => "m.last_seen_ms IS NULL, m.last_seen_ms DESC, m.mac",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct MachineQuery {
    /// Matches MAC, hostname, IP (fixed or leased), image, rack.
    pub search: Option<String>,
    pub mode: Option<Mode>,
    pub sort: SortBy,
    pub offset: u32,
    pub limit: u32,
}

/// A page of machines and the number matching in all.
pub fn search(conn: &Db, query: &MachineQuery) -> Result<(Vec<MachineDetail>, u64), StoreError> {
    let pattern = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            // Searching by MAC with '-' separators or in capitals finds the stored form.
            let normal = MacAddr::parse(s)
                .map(|m| m.to_string())
                .unwrap_or_else(|_| s.to_lowercase());
            format!("%{}%", normal.replace('%', "").replace('_', "\\_"))
        });
    let ip_exact: Option<i64> = query
        .search
        .as_deref()
        .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
        .map(ip_to_db);
    // LIKE is already case-insensitive for ASCII; NULL columns simply do not match.
    let where_clause = "WHERE (?1 IS NULL OR m.mac LIKE ?1 ESCAPE '\\'
            OR m.hostname LIKE ?1 ESCAPE '\\'
            OR m.image LIKE ?1 ESCAPE '\\'
            OR m.rack LIKE ?1 ESCAPE '\\'
            OR m.ip = ?2 OR l.ip = ?2)
          AND (?3 IS NULL OR m.mode = ?3)";
    let mode = query.mode.map(Mode::as_str);
    let total: i64 = conn
        .prepare_cached(&format!(
            "SELECT count(*) FROM machines m LEFT JOIN leases l ON l.mac = m.mac AND l.state IN ('bound', 'observed') {where_clause}"
        ))?
        .query_row(params![pattern, ip_exact, mode], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(&format!(
        "{DETAIL_SELECT} {where_clause} ORDER BY {} LIMIT ?4 OFFSET ?5",
        query.sort.order_clause()
    ))?;
    let rows = stmt.query_map(
        params![pattern, ip_exact, mode, query.limit.max(1), query.offset],
        detail_row,
    )?;
    let machines = rows
        .map(|r| r.map_err(StoreError::from).and_then(RawDetail::validate))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((machines, u64::try_from(total).unwrap_or(0)))
}

/// Machines per mode, for the dashboard.
pub fn count_by_mode(conn: &Db) -> Result<Vec<(Mode, u64)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT mode, count(*) FROM machines GROUP BY mode")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut counts: Vec<(Mode, u64)> = lifecycle::MODES.iter().map(|m| (*m, 0)).collect();
    for row in rows {
        let (mode, n) = row?;
        if let Ok(mode) = mode.parse::<Mode>()
            && let Some(slot) = counts.iter_mut().find(|(m, _)| *m == mode)
        {
            slot.1 = u64::try_from(n).unwrap_or(0);
        }
    }
    Ok(counts)
}

pub fn write_life(tx: &Db, mac: MacAddr, life: &MachineLife) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE machines SET mode = ?2, image = ?3, token = ?4, token_expires_ms = ?5 WHERE mac = ?1",
        params![
            mac.to_string(),
            life.mode.as_str(),
            life.image,
            life.token,
            life.token_expires_ms
        ],
    )?;
    Ok(())
}

/// A machine's row as the service layer writes it.
#[derive(Debug, Clone)]
pub struct MachineRow {
    pub mac: MacAddr,
    pub hostname: Option<String>,
    pub image: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub rack: Option<String>,
    pub position: Option<String>,
    pub exit_method: ExitMethod,
    pub loader: Option<Loader>,
    pub ssh_keys: String,
}

pub fn insert_row(tx: &Db, row: &MachineRow, now_ms: i64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO machines (mac, hostname, image, ip, rack, position, exit_method, ssh_keys, created_ms, loader)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            row.mac.to_string(),
            row.hostname,
            row.image,
            row.ip.map(ip_to_db),
            row.rack,
            row.position,
            row.exit_method.as_str(),
            row.ssh_keys,
            now_ms,
            row.loader.map(Loader::as_str)
        ],
    )?;
    Ok(())
}

/// Gives a discovered machine the operator's details, keeping what was seen of it.
pub fn adopt_row(tx: &Db, row: &MachineRow) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE machines SET hostname = ?2, image = ?3, ip = ?4, rack = ?5, position = ?6,
           exit_method = ?7, ssh_keys = ?8, discovered = 0, loader = ?9
         WHERE mac = ?1",
        params![
            row.mac.to_string(),
            row.hostname,
            row.image,
            row.ip.map(ip_to_db),
            row.rack,
            row.position,
            row.exit_method.as_str(),
            row.ssh_keys,
            row.loader.map(Loader::as_str)
        ],
    )?;
    Ok(())
}

/// The machine `ip` is the fixed address of.
pub fn fixed_owner(tx: &Db, ip: Ipv4Addr) -> Result<Option<MacAddr>, StoreError> {
    tx.prepare_cached("SELECT mac FROM machines WHERE ip = ?1")?
        .query_row([ip_to_db(ip)], |r| r.get::<_, String>(0))
        .optional()?
        .map(parse_mac)
        .transpose()
}

/// Writes the fields a patch sets; returns what changed, for the audit event.
pub fn apply_patch(tx: &Db, mac: MacAddr, patch: &MachinePatch) -> Result<Vec<String>, StoreError> {
    let mac_text = mac.to_string();
    let mut changed = Vec::new();
    let set = |column: &str, value: &dyn rusqlite::ToSql| {
        tx.execute(
            &format!("UPDATE machines SET {column} = ?2 WHERE mac = ?1"),
            params![mac_text, value],
        )
        .map(|_| ())
    };
    if let Some(hostname) = &patch.hostname {
        set("hostname", hostname)?;
        changed.push(format!("hostname={}", hostname.as_deref().unwrap_or("-")));
    }
    if let Some(ip) = patch.ip {
        set("ip", &ip.map(ip_to_db))?;
        changed.push(format!("ip={}", ip.map_or("-".into(), |i| i.to_string())));
    }
    if let Some(method) = patch.exit_method {
        set("exit_method", &method.as_str())?;
        changed.push(format!("exit_method={}", method.as_str()));
    }
    if let Some(loader) = patch.loader {
        set("loader", &loader.map(Loader::as_str))?;
        changed.push(format!(
            "loader={}",
            loader.map_or("default", Loader::as_str)
        ));
    }
    if let Some(keys) = &patch.ssh_keys {
        set("ssh_keys", keys)?;
        changed.push("ssh_keys".into());
    }
    if let Some(rack) = &patch.rack {
        set("rack", rack)?;
        changed.push(format!("rack={}", rack.as_deref().unwrap_or("-")));
    }
    if let Some(position) = &patch.position {
        set("position", position)?;
        changed.push(format!("position={}", position.as_deref().unwrap_or("-")));
    }
    Ok(changed)
}

pub fn write_image(tx: &Db, mac: MacAddr, image: Option<&str>) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE machines SET image = ?2 WHERE mac = ?1",
        params![mac.to_string(), image],
    )?;
    Ok(())
}

/// Deletes a machine; false when there was none.
pub fn delete_row(tx: &Db, mac: MacAddr) -> Result<bool, StoreError> {
    Ok(tx.execute("DELETE FROM machines WHERE mac = ?1", [mac.to_string()])? > 0)
}

/// Deletes discovered machines (never adopted by an operator) last seen before
/// `before_ms`; returns how many.
pub fn expire_discovered(tx: &Db, before_ms: i64) -> Result<usize, StoreError> {
    Ok(tx.execute(
        "DELETE FROM machines WHERE discovered = 1
           AND coalesce(last_seen_ms, first_seen_ms, created_ms) < ?1",
        [before_ms],
    )?)
}

/// The machine whose done-URL token this is.
pub fn mac_by_token(tx: &Db, token: &str) -> Result<Option<MacAddr>, StoreError> {
    tx.query_row("SELECT mac FROM machines WHERE token = ?1", [token], |r| {
        r.get::<_, String>(0)
    })
    .optional()?
    .map(parse_mac)
    .transpose()
}

/// An install or wipe finished: back to local boot, the token spent.
pub fn finish(tx: &Db, mac: MacAddr, wiped: bool, now_ms: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE machines SET mode = 'local', token = NULL, token_expires_ms = NULL,
           installed_ms = CASE WHEN ?2 THEN installed_ms ELSE ?3 END,
           wiped_ms = CASE WHEN ?2 THEN ?3 ELSE wiped_ms END
         WHERE mac = ?1",
        params![mac.to_string(), wiped, now_ms],
    )?;
    Ok(())
}

/// Fields an update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct MachinePatch {
    /// `Some(None)` (JSON `null`): cleared.
    #[serde(default, deserialize_with = "present_or_null")]
    pub hostname: Option<Option<String>>,
    #[serde(default, deserialize_with = "present_or_null")]
    pub ip: Option<Option<Ipv4Addr>>,
    pub exit_method: Option<ExitMethod>,
    /// `Some(None)` (JSON `null`): back to the default for its architecture.
    #[serde(default, deserialize_with = "present_or_null")]
    pub loader: Option<Option<Loader>>,
    pub ssh_keys: Option<String>,
    #[serde(default, deserialize_with = "present_or_null")]
    pub rack: Option<Option<String>>,
    #[serde(default, deserialize_with = "present_or_null")]
    pub position: Option<Option<String>>,
}

/// A field given as `null` is `Some(None)` (clear it), one left out is `None` (keep
/// it): serde alone reads both as `None`.
fn present_or_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}

/// How many machines are assigned `image`.
pub fn image_users(tx: &Db, image: &str) -> Result<u64, StoreError> {
    let n: i64 = tx.query_row(
        "SELECT count(*) FROM machines WHERE image = ?1",
        [image],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub fn delete_image_row(tx: &Db, image: &str) -> Result<(), StoreError> {
    tx.execute("DELETE FROM images WHERE name = ?1", [image])?;
    Ok(())
}

/// Images with how many machines use each.
pub fn images_with_use(conn: &Db) -> Result<Vec<(store::Image, u64)>, StoreError> {
    let images = store::list_images(conn)?;
    let mut stmt = conn.prepare_cached("SELECT count(*) FROM machines WHERE image = ?1")?;
    images
        .into_iter()
        .map(|image| {
            let n: i64 = stmt.query_row([&image.name], |r| r.get(0))?;
            Ok((image, u64::try_from(n).unwrap_or(0)))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    pub at_ms: i64,
    pub mac: Option<String>,
    pub kind: String,
    pub detail: String,
    pub actor: Option<String>,
}

/// Events, newest first, for one machine or all; `audit_only` keeps changes made by
/// people and tokens (panel users, API tokens, the CLI), not by machines.
pub fn events(
    conn: &Db,
    mac: Option<MacAddr>,
    audit_only: bool,
    limit: u32,
) -> Result<Vec<AuditEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, mac, kind, detail, actor FROM events
         WHERE (?1 IS NULL OR mac = ?1)
           AND (?2 = 0 OR (actor IS NOT NULL AND actor <> 'machine'))
         ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![mac.map(|m| m.to_string()), audit_only, limit],
        |r| {
            Ok(AuditEvent {
                at_ms: r.get(0)?,
                mac: r.get(1)?,
                kind: r.get(2)?,
                detail: r.get(3)?,
                actor: r.get(4)?,
            })
        },
    )?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Boots (script fetches) since `since_ms`, for the dashboard.
pub fn boots_since(conn: &Db, since_ms: i64) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM events WHERE kind = 'http.script' AND at_ms >= ?1",
        [since_ms],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

const BOOT_KINDS: &str = "'dhcp.offer','dhcp.ack','tftp.read','http.script','tftp.script','http.kernel','http.initrd','install.done','wipe.done'";

fn boot_events(rows: Vec<(i64, String, String)>) -> Vec<crate::timeline::BootEvent> {
    rows.into_iter()
        .map(|(at_ms, kind, detail)| crate::timeline::BootEvent {
            at_ms,
            kind,
            detail,
        })
        .collect()
}

/// A machine's last `limit` boots, newest first.
pub fn boots(
    conn: &Db,
    mac: MacAddr,
    limit: usize,
) -> Result<Vec<crate::timeline::Boot>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT at_ms, kind, detail FROM (
           SELECT id, at_ms, kind, detail FROM events
           WHERE mac = ?1 AND kind IN ({BOOT_KINDS}) ORDER BY id DESC LIMIT 2000
         ) ORDER BY id"
    ))?;
    let rows = stmt
        .query_map([mac.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut all = crate::timeline::boots(&boot_events(rows));
    all.reverse();
    all.truncate(limit);
    Ok(all)
}

/// Median and slowest boot (to the initrd request) of every machine since `since_ms`.
pub fn boot_summary(conn: &Db, since_ms: i64) -> Result<Option<(i64, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        // By time (its index), grouped by machine here: cheaper than an ORDER BY mac.
        "SELECT mac, at_ms, kind, detail FROM events
         WHERE at_ms >= ?1 AND kind IN ({BOOT_KINDS}) ORDER BY at_ms, id"
    ))?;
    let rows = stmt.query_map([since_ms], |r| {
        Ok((
            r.get::<_, Option<String>>(0)?,
            (r.get(1)?, r.get(2)?, r.get(3)?),
        ))
    })?;
    let mut by_mac: std::collections::BTreeMap<String, Vec<(i64, String, String)>> =
        Default::default();
    for row in rows {
        if let (Some(mac), event) = row? {
            by_mac.entry(mac).or_default().push(event);
        }
    }
    let all: Vec<crate::timeline::Boot> = by_mac
        .into_values()
        .flat_map(|events| crate::timeline::boots(&boot_events(events)))
        .collect();
    Ok(crate::timeline::summary(&all))
}

// ---- the rows the DHCP server decides with ----

const MACHINE_COLUMNS: &str =
    "mac, hostname, image, ip, arch, first_seen_ms, last_seen_ms, vendor_class, discovered, loader";

type SnapshotRow = (
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    bool,
    Option<String>,
);

fn machine_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SnapshotRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
    ))
}

fn machine_from_row(row: SnapshotRow) -> Result<Machine, StoreError> {
    let (
        mac,
        hostname,
        image,
        ip,
        arch,
        first_seen_ms,
        last_seen_ms,
        vendor_class,
        discovered,
        loader,
    ) = row;
    let loader = match loader {
        Some(text) => Some(text.parse().map_err(|_| StoreError::Corrupt {
            column: "machines.loader",
            value: text,
        })?),
        None => None,
    };
    Ok(Machine {
        mac: parse_mac(mac)?,
        hostname,
        image,
        ip: ip_from_db(ip)?,
        arch,
        first_seen_ms,
        last_seen_ms,
        vendor_class,
        discovered,
        loader,
    })
}

pub fn get_machine(conn: &Db, mac: MacAddr) -> Result<Option<Machine>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {MACHINE_COLUMNS} FROM machines WHERE mac = ?1"
    ))?
    .query_row([mac.to_string()], machine_row)
    .optional()?
    .map(machine_from_row)
    .transpose()
}

pub fn list_machines(conn: &Db) -> Result<Vec<Machine>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MACHINE_COLUMNS} FROM machines ORDER BY mac"
    ))?;
    let rows = stmt.query_map([], machine_row)?;
    rows.map(|row| machine_from_row(row?)).collect()
}

/// Every fixed address in the inventory, with its owner: the pool never hands these out.
pub fn fixed_addresses(conn: &Db) -> Result<Vec<(Ipv4Addr, MacAddr)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT ip, mac FROM machines WHERE ip IS NOT NULL")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    rows.map(|row| {
        let (ip, mac) = row?;
        let ip = ip_from_db(Some(ip))?.ok_or(StoreError::Corrupt {
            column: "machines.ip",
            value: String::new(),
        })?;
        Ok((ip, parse_mac(mac)?))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_tells_a_null_field_from_one_left_out() {
        let patch = |json: &str| serde_json::from_str::<MachinePatch>(json).expect(json);
        assert_eq!(patch("{}").loader, None, "left out: kept");
        assert_eq!(
            patch(r#"{"loader": null}"#).loader,
            Some(None),
            "null: the default"
        );
        assert_eq!(
            patch(r#"{"loader": "grub"}"#).loader,
            Some(Some(Loader::Grub))
        );
        assert!(serde_json::from_str::<MachinePatch>(r#"{"loader": "pxelinux"}"#).is_err());
        // The same for the other fields that can be cleared.
        let cleared = patch(r#"{"hostname": null, "ip": null, "rack": null, "position": null}"#);
        assert_eq!(cleared.hostname, Some(None));
        assert_eq!(cleared.ip, Some(None));
        assert_eq!(cleared.rack, Some(None));
        assert_eq!(cleared.position, Some(None));
        assert_eq!(patch(r#"{"rack": "r2"}"#).rack, Some(Some("r2".into())));
    }
}
