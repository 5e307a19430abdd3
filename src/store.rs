//! The inventory: one SQLite file (WAL) holding machines, images, leases and events.
//!
//! rusqlite is blocking, so a connection never lives on an async worker: each `Store`
//! owns one thread that owns the connection and runs jobs sent over a channel, in
//! order. That thread is the process's single writer. The CLI opens its own `Store`
//! on the same file while `serve` runs; WAL and a busy timeout let both proceed, and
//! because every request reads the database, CLI changes apply to the next request.

use crate::mac::MacAddr;
use rusqlite::{Connection, OptionalExtension, params};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the database thread has stopped")]
    Closed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("corrupt value in column {column}: {value:?}")]
    Corrupt { column: &'static str, value: String },
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Job>,
}

/// Ordered migrations; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE images (
        name TEXT PRIMARY KEY,
        kernel_path TEXT NOT NULL,
        kernel_sha256 TEXT NOT NULL,
        initrd_path TEXT NOT NULL,
        initrd_sha256 TEXT NOT NULL,
        cmdline TEXT NOT NULL DEFAULT '',
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE machines (
        mac TEXT PRIMARY KEY,
        hostname TEXT,
        image TEXT REFERENCES images(name) ON UPDATE CASCADE ON DELETE RESTRICT,
        ip INTEGER UNIQUE,
        arch TEXT,
        first_seen_ms INTEGER,
        last_seen_ms INTEGER,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE leases (
        ip INTEGER PRIMARY KEY,
        mac TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        state TEXT NOT NULL,
        hostname TEXT,
        updated_ms INTEGER NOT NULL
    );
    CREATE INDEX leases_by_mac ON leases(mac);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at_ms INTEGER NOT NULL,
        mac TEXT,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_by_mac ON events(mac, id);
"#,
    // 2: the machine lifecycle (boot modes, done-URL tokens), who caused each event, and
    // the panel's users, sessions and API tokens.
    r#"
    ALTER TABLE machines ADD COLUMN mode TEXT NOT NULL DEFAULT 'local';
    ALTER TABLE machines ADD COLUMN exit_method TEXT NOT NULL DEFAULT 'exit';
    ALTER TABLE machines ADD COLUMN token TEXT;
    ALTER TABLE machines ADD COLUMN token_expires_ms INTEGER;
    ALTER TABLE machines ADD COLUMN ssh_keys TEXT NOT NULL DEFAULT '';
    ALTER TABLE machines ADD COLUMN rack TEXT;
    ALTER TABLE machines ADD COLUMN position TEXT;
    ALTER TABLE machines ADD COLUMN installed_ms INTEGER;
    ALTER TABLE machines ADD COLUMN wiped_ms INTEGER;
    CREATE UNIQUE INDEX machines_by_token ON machines(token) WHERE token IS NOT NULL;
    CREATE INDEX machines_by_hostname ON machines(hostname);
    CREATE INDEX machines_by_mode ON machines(mode);
    ALTER TABLE events ADD COLUMN actor TEXT;
    CREATE INDEX events_by_actor ON events(actor, id) WHERE actor IS NOT NULL;
    CREATE INDEX events_by_time ON events(at_ms);
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE TABLE api_tokens (
        name TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        created_by TEXT,
        revoked_ms INTEGER,
        last_used_ms INTEGER
    );
"#,
    // 3: power controllers (IPMI, Redfish, Wake-on-LAN) with their secrets, and the
    // last power state read from each BMC.
    r#"
    CREATE TABLE power_controllers (
        mac TEXT PRIMARY KEY REFERENCES machines(mac) ON UPDATE CASCADE ON DELETE CASCADE,
        kind TEXT NOT NULL,
        host TEXT,
        port INTEGER,
        username TEXT,
        secret TEXT,
        cipher_suite INTEGER,
        url TEXT,
        system_id TEXT,
        verify_tls INTEGER NOT NULL DEFAULT 1,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE power_status (
        mac TEXT PRIMARY KEY REFERENCES machines(mac) ON UPDATE CASCADE ON DELETE CASCADE,
        state TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        checked_ms INTEGER NOT NULL
    );
"#,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub mac: MacAddr,
    pub hostname: Option<String>,
    pub image: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub arch: Option<String>,
    pub first_seen_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub kernel_path: String,
    pub kernel_sha256: String,
    pub initrd_path: String,
    pub initrd_sha256: String,
    pub cmdline: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Bound,
    Released,
    Declined,
}

impl LeaseState {
    fn as_str(self) -> &'static str {
        match self {
            LeaseState::Bound => "bound",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
        }
    }
    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "bound" => Ok(LeaseState::Bound),
            "released" => Ok(LeaseState::Released),
            "declined" => Ok(LeaseState::Declined),
            other => Err(StoreError::Corrupt {
                column: "leases.state",
                value: other.to_string(),
            }),
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at_ms: i64,
    pub mac: Option<MacAddr>,
    pub kind: String,
    pub detail: String,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and starts its thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        Self::start(conn)
    }

    /// An in-memory database, for tests.
    #[cfg(test)]
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::start(Connection::open_in_memory()?)
    }

    fn start(mut conn: Connection) -> Result<Self, StoreError> {
        prepare(&mut conn)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("rackboot-db".into())
            .spawn(move || {
                for job in queue {
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError::Conflict(format!("cannot start database thread: {e}")))?;
        Ok(Store { jobs })
    }

    /// Runs `f` on the database thread and waits for its result. Usable from any
    /// executor (tokio, or async-tftp's own).
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = reply.send(f(conn));
            }))
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    /// Records an event without waiting: events must never slow a boot down.
    pub fn record_event(&self, at_ms: i64, mac: Option<MacAddr>, kind: &str, detail: String) {
        let kind = kind.to_string();
        let sent = self.jobs.send(Box::new(move |conn| {
            if let Err(e) = insert_event(conn, at_ms, mac, &kind, detail) {
                tracing::warn!(error = %e, kind, "could not record event");
            }
        }));
        if sent.is_err() {
            tracing::warn!("could not record event: database thread stopped");
        }
    }
}

fn prepare(conn: &mut Connection) -> Result<(), StoreError> {
    // WAL lets the CLI read and write while `serve` runs; synchronous=FULL makes every
    // commit durable (a lease is on disk before its ACK leaves).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    migrate(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Conflict(format!(
            "database schema version {applied} is newer than this rackboot ({}); upgrade rackboot",
            MIGRATIONS.len()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (index + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

pub(crate) fn parse_mac(text: String) -> Result<MacAddr, StoreError> {
    MacAddr::parse(&text).map_err(|_| StoreError::Corrupt {
        column: "mac",
        value: text,
    })
}

pub(crate) fn ip_from_db(value: Option<i64>) -> Result<Option<Ipv4Addr>, StoreError> {
    value
        .map(|v| {
            u32::try_from(v)
                .map(Ipv4Addr::from)
                .map_err(|_| StoreError::Corrupt {
                    column: "ip",
                    value: v.to_string(),
                })
        })
        .transpose()
}

pub(crate) fn ip_to_db(ip: Ipv4Addr) -> i64 {
    i64::from(u32::from(ip))
}

// ---- machines ----

const MACHINE_COLUMNS: &str = "mac, hostname, image, ip, arch, first_seen_ms, last_seen_ms";

type MachineRow = (
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

fn machine_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MachineRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
    ))
}

fn machine_from_row(row: MachineRow) -> Result<Machine, StoreError> {
    let (mac, hostname, image, ip, arch, first_seen_ms, last_seen_ms) = row;
    Ok(Machine {
        mac: parse_mac(mac)?,
        hostname,
        image,
        ip: ip_from_db(ip)?,
        arch,
        first_seen_ms,
        last_seen_ms,
    })
}

pub fn get_machine(conn: &Connection, mac: MacAddr) -> Result<Option<Machine>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {MACHINE_COLUMNS} FROM machines WHERE mac = ?1"
    ))?
    .query_row([mac.to_string()], machine_row)
    .optional()?
    .map(machine_from_row)
    .transpose()
}

#[cfg(test)]
pub fn list_machines(conn: &Connection) -> Result<Vec<Machine>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {MACHINE_COLUMNS} FROM machines ORDER BY mac"
    ))?;
    let rows = stmt.query_map([], machine_row)?;
    rows.map(|row| machine_from_row(row?)).collect()
}

#[derive(Debug, Clone, Default)]
pub struct NewMachine {
    pub mac: Option<MacAddr>,
    pub hostname: Option<String>,
    pub image: Option<String>,
    pub ip: Option<Ipv4Addr>,
}

#[cfg(test)]
pub fn add_machine(conn: &mut Connection, new: &NewMachine, now_ms: i64) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    insert_machine(&tx, new, now_ms, None)?;
    tx.commit()?;
    Ok(())
}

/// Inserts a machine inside the caller's transaction, with its `machine.added` event.
pub fn insert_machine(
    tx: &Connection,
    new: &NewMachine,
    now_ms: i64,
    actor: Option<&str>,
) -> Result<(), StoreError> {
    let mac = new
        .mac
        .ok_or_else(|| StoreError::Conflict("a machine needs a MAC address".into()))?;
    if get_machine(tx, mac)?.is_some() {
        return Err(StoreError::Conflict(format!(
            "machine {mac} already exists"
        )));
    }
    if let Some(image) = &new.image
        && get_image(tx, image)?.is_none()
    {
        return Err(StoreError::NotFound(format!("no image named {image:?}")));
    }
    if let Some(ip) = new.ip {
        let owner: Option<String> = tx
            .query_row(
                "SELECT mac FROM machines WHERE ip = ?1",
                [ip_to_db(ip)],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(owner) = owner {
            return Err(StoreError::Conflict(format!(
                "{ip} is already the fixed address of {owner}"
            )));
        }
    }
    tx.execute(
        "INSERT INTO machines (mac, hostname, image, ip, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            mac.to_string(),
            new.hostname,
            new.image,
            new.ip.map(ip_to_db),
            now_ms
        ],
    )?;
    insert_event_by(
        tx,
        now_ms,
        Some(mac),
        "machine.added",
        format!(
            "hostname={} image={} ip={}",
            new.hostname.as_deref().unwrap_or("-"),
            new.image.as_deref().unwrap_or("-"),
            new.ip
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "-".into())
        ),
        actor,
    )?;
    Ok(())
}

/// A migrated in-memory connection, for tests of modules that query the store.
#[cfg(test)]
pub fn open_connection_for_tests() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap_or_else(|e| panic!("open: {e}"));
    prepare(&mut conn).unwrap_or_else(|e| panic!("migrate: {e}"));
    conn
}

/// Notes that a known machine was seen (first and last seen, and its firmware).
pub fn touch_machine(
    conn: &Connection,
    mac: MacAddr,
    arch: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE machines SET last_seen_ms = ?2, first_seen_ms = COALESCE(first_seen_ms, ?2),
         arch = COALESCE(?3, arch) WHERE mac = ?1",
    )?
    .execute(params![mac.to_string(), now_ms, arch])?;
    Ok(())
}

/// Every fixed address in the inventory, with its owner: the pool never hands these out.
pub fn fixed_addresses(conn: &Connection) -> Result<Vec<(Ipv4Addr, MacAddr)>, StoreError> {
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

// ---- images ----

pub fn get_image(conn: &Connection, name: &str) -> Result<Option<Image>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT name, kernel_path, kernel_sha256, initrd_path, initrd_sha256, cmdline
             FROM images WHERE name = ?1",
        )?
        .query_row([name], image_row)
        .optional()?)
}

fn image_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Image> {
    Ok(Image {
        name: r.get(0)?,
        kernel_path: r.get(1)?,
        kernel_sha256: r.get(2)?,
        initrd_path: r.get(3)?,
        initrd_sha256: r.get(4)?,
        cmdline: r.get(5)?,
    })
}

pub fn list_images(conn: &Connection) -> Result<Vec<Image>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, kernel_path, kernel_sha256, initrd_path, initrd_sha256, cmdline
         FROM images ORDER BY name",
    )?;
    let rows = stmt.query_map([], image_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Adds an image, or replaces the files of one with the same name.
pub fn put_image(conn: &Connection, image: &Image, now_ms: i64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO images (name, kernel_path, kernel_sha256, initrd_path, initrd_sha256, cmdline, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(name) DO UPDATE SET kernel_path = excluded.kernel_path,
           kernel_sha256 = excluded.kernel_sha256, initrd_path = excluded.initrd_path,
           initrd_sha256 = excluded.initrd_sha256, cmdline = excluded.cmdline",
        params![
            image.name,
            image.kernel_path,
            image.kernel_sha256,
            image.initrd_path,
            image.initrd_sha256,
            image.cmdline,
            now_ms
        ],
    )?;
    Ok(())
}

// ---- leases ----

fn lease_row(
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<(i64, String, i64, String, Option<String>)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn lease_from_row(
    row: (i64, String, i64, String, Option<String>),
) -> Result<LeaseRecord, StoreError> {
    let (ip, mac, expires_at, state, hostname) = row;
    Ok(LeaseRecord {
        ip: ip_from_db(Some(ip))?.ok_or(StoreError::Corrupt {
            column: "leases.ip",
            value: String::new(),
        })?,
        mac: parse_mac(mac)?,
        expires_at,
        state: LeaseState::parse(&state)?,
        hostname,
    })
}

pub fn list_leases(conn: &Connection) -> Result<Vec<LeaseRecord>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT ip, mac, expires_at, state, hostname FROM leases ORDER BY ip")?;
    let rows = stmt.query_map([], lease_row)?;
    rows.map(|row| lease_from_row(row?)).collect()
}

/// Writes a lease and, in the same transaction, drops any other address the same
/// client held: one machine, one address.
pub fn save_lease(
    conn: &mut Connection,
    lease: &LeaseRecord,
    now_ms: i64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    if lease.state == LeaseState::Bound {
        // Declined rows are holds on an address, kept through their probation.
        tx.prepare_cached(
            "DELETE FROM leases WHERE mac = ?1 AND ip <> ?2 AND state <> 'declined'",
        )?
        .execute(params![lease.mac.to_string(), ip_to_db(lease.ip)])?;
    }
    tx.prepare_cached(
        "INSERT INTO leases (ip, mac, expires_at, state, hostname, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(ip) DO UPDATE SET mac = excluded.mac, expires_at = excluded.expires_at,
           state = excluded.state, hostname = excluded.hostname, updated_ms = excluded.updated_ms",
    )?
    .execute(params![
        ip_to_db(lease.ip),
        lease.mac.to_string(),
        lease.expires_at,
        lease.state.as_str(),
        lease.hostname,
        now_ms
    ])?;
    tx.commit()?;
    Ok(())
}

/// The MAC that holds (or last held) `ip`, by lease or fixed address: how TFTP and
/// HTTP requests, which carry only an address, are tied to a machine.
pub fn mac_for_ip(conn: &Connection, ip: Ipv4Addr) -> Result<Option<MacAddr>, StoreError> {
    let mac: Option<String> = conn
        .prepare_cached(
            "SELECT mac FROM leases WHERE ip = ?1
             UNION ALL SELECT mac FROM machines WHERE ip = ?1 LIMIT 1",
        )?
        .query_row([ip_to_db(ip)], |r| r.get(0))
        .optional()?;
    mac.map(parse_mac).transpose()
}

// ---- events ----

pub fn insert_event(
    conn: &Connection,
    at_ms: i64,
    mac: Option<MacAddr>,
    kind: &str,
    detail: String,
) -> Result<(), StoreError> {
    insert_event_by(conn, at_ms, mac, kind, detail, None)
}

/// An event with who caused it (`user:NAME`, `token:NAME`, `machine`): the audit log.
pub fn insert_event_by(
    conn: &Connection,
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
pub fn list_events(
    conn: &Connection,
    mac: Option<MacAddr>,
    limit: u32,
) -> Result<Vec<Event>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, mac, kind, detail FROM (
           SELECT id, at_ms, mac, kind, detail FROM events
           WHERE ?1 IS NULL OR mac = ?1 ORDER BY id DESC LIMIT ?2
         ) ORDER BY id",
    )?;
    let rows = stmt.query_map(params![mac.map(|m| m.to_string()), limit], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    rows.map(|row| {
        let (at_ms, mac, kind, detail) = row?;
        Ok(Event {
            at_ms,
            mac: mac.map(parse_mac).transpose()?,
            kind,
            detail,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut conn = Connection::open_in_memory().expect("open");
        prepare(&mut conn).expect("migrate");
        conn
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, last])
    }

    fn image(name: &str) -> Image {
        Image {
            name: name.into(),
            kernel_path: "k".into(),
            kernel_sha256: "00".into(),
            initrd_path: "i".into(),
            initrd_sha256: "11".into(),
            cmdline: "console=ttyS0".into(),
        }
    }

    #[test]
    fn migrations_are_idempotent_and_versioned() {
        let mut conn = db();
        migrate(&mut conn).expect("second run is a no-op");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        conn.pragma_update(None, "user_version", 99).expect("set");
        assert!(matches!(migrate(&mut conn), Err(StoreError::Conflict(_))));
    }

    #[test]
    fn machines_round_trip_and_refuse_conflicts() {
        let mut conn = db();
        put_image(&conn, &image("debian"), 1).expect("image");
        let new = NewMachine {
            mac: Some(mac(1)),
            hostname: Some("node1".into()),
            image: Some("debian".into()),
            ip: Some(Ipv4Addr::new(192, 0, 2, 10)),
        };
        add_machine(&mut conn, &new, 5).expect("add");
        let got = get_machine(&conn, mac(1)).expect("get").expect("present");
        assert_eq!(got.hostname.as_deref(), Some("node1"));
        assert_eq!(got.ip, Some(Ipv4Addr::new(192, 0, 2, 10)));

        assert!(matches!(
            add_machine(&mut conn, &new, 6),
            Err(StoreError::Conflict(_))
        ));
        let same_ip = NewMachine {
            mac: Some(mac(2)),
            ..new.clone()
        };
        assert!(matches!(
            add_machine(&mut conn, &same_ip, 6),
            Err(StoreError::Conflict(_))
        ));
        let bad_image = NewMachine {
            mac: Some(mac(3)),
            image: Some("nope".into()),
            ip: None,
            hostname: None,
        };
        assert!(matches!(
            add_machine(&mut conn, &bad_image, 6),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(list_machines(&conn).expect("list").len(), 1);
        assert_eq!(
            fixed_addresses(&conn).expect("fixed"),
            vec![(Ipv4Addr::new(192, 0, 2, 10), mac(1))]
        );

        touch_machine(&conn, mac(1), Some("uefi-x64"), 100).expect("touch");
        touch_machine(&conn, mac(1), None, 200).expect("touch");
        let got = get_machine(&conn, mac(1)).expect("get").expect("present");
        assert_eq!(
            (got.first_seen_ms, got.last_seen_ms),
            (Some(100), Some(200))
        );
        assert_eq!(got.arch.as_deref(), Some("uefi-x64"));
    }

    #[test]
    fn a_client_holds_one_lease_row() {
        let mut conn = db();
        let lease = |ip: u8| LeaseRecord {
            ip: Ipv4Addr::new(192, 0, 2, ip),
            mac: mac(1),
            expires_at: 1000,
            state: LeaseState::Bound,
            hostname: None,
        };
        save_lease(&mut conn, &lease(100), 1).expect("save");
        save_lease(&mut conn, &lease(101), 2).expect("save");
        let leases = list_leases(&conn).expect("list");
        assert_eq!(leases, vec![lease(101)]);
        assert_eq!(
            mac_for_ip(&conn, Ipv4Addr::new(192, 0, 2, 101)).expect("q"),
            Some(mac(1))
        );
        assert_eq!(
            mac_for_ip(&conn, Ipv4Addr::new(192, 0, 2, 100)).expect("q"),
            None
        );
    }

    #[test]
    fn events_filter_by_machine_oldest_first() {
        let conn = db();
        insert_event(&conn, 1, Some(mac(1)), "dhcp.offer", "a".into()).expect("e");
        insert_event(&conn, 2, Some(mac(2)), "dhcp.offer", "b".into()).expect("e");
        insert_event(&conn, 3, Some(mac(1)), "dhcp.ack", "c".into()).expect("e");
        let events = list_events(&conn, Some(mac(1)), 10).expect("list");
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["dhcp.offer", "dhcp.ack"]);
        assert_eq!(list_events(&conn, None, 2).expect("list").len(), 2);
    }

    #[tokio::test]
    async fn store_thread_runs_jobs() {
        let store = Store::open_in_memory().expect("open");
        store.record_event(7, Some(mac(9)), "test", "x".into());
        let events = store
            .call(move |conn| list_events(conn, Some(mac(9)), 10))
            .await
            .expect("call");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].at_ms, 7);
    }
}
