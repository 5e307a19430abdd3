//! The inventory: one SQLite file (WAL) holding machines, images, leases and events.
//!
//! rusqlite is blocking, so a connection never lives on an async worker: each `Store`
//! owns one thread that owns the connection and runs jobs sent over a channel, in
//! order. That thread is the process's single writer. The CLI opens its own `Store`
//! on the same file while `serve` runs; WAL and a busy timeout let both proceed, and
//! because every request reads the database, CLI changes apply to the next request.
//!
//! One module per table group, each with typed functions over `Db` and no rules:
//! `machines`, `images`, `leases` (and the DHCP group commit), `events`, `power`
//! (controllers and their last state), `auth` (users, sessions, tokens). Here: the
//! thread, `Db`, transactions and migrations.

pub mod auth;
pub mod events;
pub mod images;
pub mod leases;
pub mod machines;
pub mod power;

pub use events::*;
pub use images::*;
pub use leases::*;
pub use machines::{fixed_addresses, get_machine, list_machines};

use crate::mac::MacAddr;
pub use crate::model::{
    DhcpBatch, Discovered, Event, Image, ImageSource, InventorySnapshot, LeaseOp, LeaseRecord,
    LeaseState, Machine, NewEvent, PoolUsage, ReleaseStamp, Seen,
};
use rusqlite::Connection;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

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
    #[error(
        "database schema version {found} is newer than this rackboot ({known}); upgrade rackboot"
    )]
    SchemaTooNew { found: usize, known: usize },
    #[error("cannot start the {0} thread: {1}")]
    Thread(&'static str, std::io::Error),
}

type Job = Box<dyn FnOnce(&mut Db) + Send>;

/// The store as every store function sees it: one open database, in a transaction or
/// not. Services and surfaces hold only a `&Db` inside `Store::call` and
/// `Store::transaction` and pass it to the typed functions of the store's modules;
/// none of them names the engine (`tests/layers.rs` checks that nothing outside
/// `store` uses rusqlite). A second engine becomes a second representation here, with
/// the same functions over it.
pub struct Db {
    conn: Connection,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, migrated.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut db = Db {
            conn: Connection::open(path)?,
        };
        prepare(&mut db)?;
        Ok(db)
    }

    /// An in-memory database, migrated.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut db = Db {
            conn: Connection::open_in_memory()?,
        };
        prepare(&mut db)?;
        Ok(db)
    }
}

impl Db {
    /// Runs `f` in one transaction: committed when it returns `Ok`, rolled back when
    /// it returns an error or panics.
    ///
    /// The write lock is taken at the start (`BEGIN IMMEDIATE`). A deferred
    /// transaction that has read and then writes while another process (the CLI, a
    /// backup, an operator's `sqlite3`) holds the lock fails at once with "database
    /// is locked": SQLite does not wait there, whatever the busy timeout. Taken first,
    /// the lock is waited for, up to the busy timeout.
    pub fn atomically<R, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Db) -> Result<R, E>,
    ) -> Result<R, E> {
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )
        .map_err(StoreError::from)?;
        // Dropping the transaction on an error rolls it back.
        let value = f(self)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(value)
    }
}

// The store's own modules speak SQL through the connection; nothing outside them
// does, which `tests/layers.rs` checks.
impl std::ops::Deref for Db {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl std::ops::DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

#[derive(Clone)]
pub struct Store {
    jobs: mpsc::Sender<Job>,
    /// Boot events (TFTP and HTTP steps) not yet written. They are written in one
    /// transaction per turn of the database thread rather than one commit (one
    /// fsync) each: a boot storm makes thousands, and DHCP's commits wait behind
    /// them on the same thread.
    pending_events: Arc<Mutex<Vec<PendingEvent>>>,
    event_commits: Arc<AtomicU64>,
}

struct PendingEvent {
    at_ms: i64,
    mac: Option<MacAddr>,
    kind: String,
    detail: String,
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
    // 3, issue 4 (DHCP): client identifiers on leases (match_client_id), machines the
    // DHCP server discovered, and a counter the DHCP server watches to know when its
    // cached copy of the inventory is stale. The triggers fire only on the columns DHCP
    // reads, so noting that a machine was seen does not invalidate the cache. Leases
    // are written thousands of times a second under load and read by address only:
    // the by-MAC index cost a random page write per lease and is dropped.
    r#"
    DROP INDEX leases_by_mac;
    ALTER TABLE leases ADD COLUMN client_id BLOB;
    ALTER TABLE machines ADD COLUMN vendor_class TEXT;
    ALTER TABLE machines ADD COLUMN discovered INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE dhcp_inventory_generation (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        generation INTEGER NOT NULL
    );
    INSERT INTO dhcp_inventory_generation (id, generation) VALUES (1, 0);
    CREATE TRIGGER dhcp_inventory_insert AFTER INSERT ON machines BEGIN
        UPDATE dhcp_inventory_generation SET generation = generation + 1;
    END;
    CREATE TRIGGER dhcp_inventory_delete AFTER DELETE ON machines BEGIN
        UPDATE dhcp_inventory_generation SET generation = generation + 1;
    END;
    CREATE TRIGGER dhcp_inventory_update AFTER UPDATE OF mac, hostname, ip, discovered
    ON machines BEGIN
        UPDATE dhcp_inventory_generation SET generation = generation + 1;
    END;
    CREATE INDEX events_by_kind_time ON events(kind, at_ms);
"#,
    // 4: power controllers (IPMI, Redfish, Wake-on-LAN) with their secrets, and the
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
    // 5: where a catalog image came from (its definition, the key that verified its
    // chain, what verified what, the values its templates use), and the newest
    // signed suite date seen per signer and file, so an older one is refused.
    r#"
    CREATE TABLE image_sources (
        name TEXT PRIMARY KEY REFERENCES images(name) ON UPDATE CASCADE ON DELETE CASCADE,
        definition TEXT NOT NULL,
        verified_by TEXT,
        provenance TEXT NOT NULL,
        vars TEXT NOT NULL DEFAULT '{}',
        fetched_ms INTEGER NOT NULL
    );
    CREATE TABLE release_stamps (
        key TEXT PRIMARY KEY,
        date INTEGER NOT NULL,
        seen_ms INTEGER NOT NULL
    );
"#,
    // 6, issue 14 (every firmware): the first program each machine's firmware loads
    // (NULL: the default for its architecture), and the architectures each image's
    // kernel runs on. The DHCP server reads the loader, so its cache counter follows it.
    r#"
    ALTER TABLE machines ADD COLUMN loader TEXT;
    ALTER TABLE images ADD COLUMN arches TEXT NOT NULL DEFAULT 'amd64';
    DROP TRIGGER dhcp_inventory_update;
    CREATE TRIGGER dhcp_inventory_update AFTER UPDATE OF mac, hostname, ip, discovered, loader
    ON machines BEGIN
        UPDATE dhcp_inventory_generation SET generation = generation + 1;
    END;
"#,
];

impl Store {
    /// Opens (creating if needed) the database at `path` and starts its thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::start(Db::open(path)?)
    }

    /// An in-memory database, for tests (the in-process web tests in `tests/` too) and
    /// for embedding rackboot where nothing needs to persist.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::start(Db::open_in_memory()?)
    }

    fn start(mut conn: Db) -> Result<Self, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("rackboot-db".into())
            .spawn(move || {
                for job in queue {
                    job(&mut conn);
                }
            })
            .map_err(|e| StoreError::Thread("database", e))?;
        Ok(Store {
            jobs,
            pending_events: Arc::default(),
            event_commits: Arc::default(),
        })
    }

    /// Runs `f` on the database thread and waits for its result. Usable from any
    /// executor (tokio, or async-tftp's own).
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Db) -> Result<R, StoreError> + Send + 'static,
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

    /// Runs `f` inside one transaction on the database thread: committed when `f`
    /// returns `Ok`, rolled back when it returns an error (or panics). The error type
    /// is the caller's, so services return their own errors from inside.
    pub async fn transaction<R, E, F>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&Db) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |db: &mut Db| {
                let _ = reply.send(db.atomically(f));
            }))
            .map_err(|_| E::from(StoreError::Closed))?;
        result.await.map_err(|_| E::from(StoreError::Closed))?
    }

    /// Records a boot step a machine caused (actor `machine`), without waiting:
    /// events must never slow a boot down. Events recorded while the database
    /// thread is busy are written together, in order, in one transaction.
    pub fn record_event(&self, at_ms: i64, mac: Option<MacAddr>, kind: &str, detail: String) {
        let first = {
            // A panic elsewhere while holding the lock leaves a plain Vec behind:
            // still usable.
            let mut pending = self
                .pending_events
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            pending.push(PendingEvent {
                at_ms,
                mac,
                kind: kind.to_string(),
                detail,
            });
            pending.len() == 1
        };
        // Only the first event of a batch queues a job; the job takes every event
        // pending when it runs.
        if !first {
            return;
        }
        let (pending, commits) = (self.pending_events.clone(), self.event_commits.clone());
        let sent = self.jobs.send(Box::new(move |conn| {
            let batch = std::mem::take(
                &mut *pending
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            match write_events(conn, &batch) {
                Ok(()) => {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, events = batch.len(), "could not record events");
                }
            }
        }));
        if sent.is_err() {
            tracing::warn!("could not record event: database thread stopped");
        }
    }

    /// How many transactions boot events have taken so far.
    #[cfg(test)]
    pub fn event_commits(&self) -> u64 {
        self.event_commits.load(Ordering::Relaxed)
    }
}

fn write_events(conn: &mut Db, batch: &[PendingEvent]) -> Result<(), StoreError> {
    conn.atomically(|tx| {
        for e in batch {
            insert_event_by(
                tx,
                e.at_ms,
                e.mac,
                &e.kind,
                e.detail.clone(),
                Some("machine"),
            )?;
        }
        Ok(())
    })
}

/// How often the background checkpointer runs, and the WAL size (in pages) at which
/// a commit checkpoints by itself anyway, should the background one fall behind.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
const CHECKPOINT_SAFETY_NET_PAGES: i64 = 20_000;

impl Store {
    /// Moves WAL checkpoints off this store's thread to a thread and connection of
    /// their own (for `serve`). SQLite otherwise checkpoints inside whichever commit
    /// takes the WAL past 1000 pages: copying pages into the database and an fsync of
    /// it, several milliseconds added to that commit, and to the DHCP ACKs waiting on
    /// it. A passive checkpoint runs beside the writer without blocking it.
    pub async fn checkpoint_in_background(&self, path: &Path) -> Result<(), StoreError> {
        let checkpointer = Connection::open(path)?;
        checkpointer.busy_timeout(std::time::Duration::from_secs(1))?;
        self.call(|conn| {
            conn.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_SAFETY_NET_PAGES)?;
            Ok(())
        })
        .await?;
        std::thread::Builder::new()
            .name("rackboot-wal".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    std::thread::sleep(CHECKPOINT_EVERY);
                    match checkpoint_once(&checkpointer) {
                        Ok(_) => failing = false,
                        // Once per failure streak: the safety net still checkpoints.
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!("background WAL checkpoint failed: {e}");
                        }
                        Err(_) => {}
                    }
                }
            })
            .map_err(|e| StoreError::Thread("checkpoint", e))?;
        Ok(())
    }
}

/// One passive checkpoint: (WAL frames, frames now in the database).
fn checkpoint_once(conn: &Connection) -> Result<(i64, i64), StoreError> {
    Ok(conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })?)
}

fn prepare(conn: &mut Db) -> Result<(), StoreError> {
    // WAL lets the CLI read and write while `serve` runs; synchronous=FULL makes every
    // commit durable (a lease is on disk before its ACK leaves).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // After a checkpoint the WAL file is cut back to this size: a burst of writes (a
    // boot storm, a flood of DHCP traffic) must not leave a large file behind.
    conn.pragma_update(None, "journal_size_limit", 16i64 << 20)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    migrate(conn)
}

fn migrate(conn: &mut Db) -> Result<(), StoreError> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::SchemaTooNew {
            found: applied,
            known: MIGRATIONS.len(),
        });
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

/// A migrated in-memory connection, for tests of modules that query the store.
#[cfg(test)]
pub fn open_connection_for_tests() -> Db {
    Db::open_in_memory().unwrap_or_else(|e| panic!("open: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Db {
        Db::open_in_memory().expect("open")
    }

    /// A machine written as the service layer writes one (a discovered one adopted).
    fn seed(
        conn: &Db,
        mac: MacAddr,
        hostname: Option<&str>,
        image: Option<&str>,
        ip: Option<Ipv4Addr>,
    ) {
        let row = machines::MachineRow {
            loader: None,
            mac,
            hostname: hostname.map(str::to_string),
            image: image.map(str::to_string),
            ip,
            rack: None,
            position: None,
            exit_method: crate::lifecycle::ExitMethod::Exit,
            ssh_keys: String::new(),
        };
        let adopting = get_machine(conn, mac).expect("get").is_some();
        if adopting {
            machines::adopt_row(conn, &row).expect("adopt");
        } else {
            machines::insert_row(conn, &row, 1).expect("insert");
        }
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, last])
    }

    fn image(name: &str) -> Image {
        Image {
            arches: vec![crate::lifecycle::Arch::Amd64],
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
        assert!(matches!(
            migrate(&mut conn),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }

    #[test]
    fn machines_round_trip_and_refuse_conflicts() {
        let mut conn = db();
        put_image(&conn, &image("debian"), 1).expect("image");
        seed(
            &conn,
            mac(1),
            Some("node1"),
            Some("debian"),
            Some(Ipv4Addr::new(192, 0, 2, 10)),
        );
        let got = get_machine(&conn, mac(1)).expect("get").expect("present");
        assert_eq!(got.hostname.as_deref(), Some("node1"));
        assert_eq!(got.ip, Some(Ipv4Addr::new(192, 0, 2, 10)));
        // Refusing a second machine with the same MAC or address, or an unknown
        // image, is the service layer's rule: `service::machines` tests it.
        assert_eq!(list_machines(&conn).expect("list").len(), 1);
        let snapshot = inventory_if_changed(&conn, None)
            .expect("snapshot")
            .expect("first load");
        assert_eq!(
            snapshot.fixed.into_iter().collect::<Vec<_>>(),
            vec![(Ipv4Addr::new(192, 0, 2, 10), mac(1))]
        );

        let seen = |at_ms, arch: Option<&str>| DhcpBatch {
            seen: vec![Seen {
                mac: mac(1),
                at_ms,
                arch: arch.map(str::to_string),
                vendor_class: None,
            }],
            ..DhcpBatch::default()
        };
        commit_dhcp_batch(&mut conn, &seen(100, Some("uefi-x64")), 100).expect("seen");
        commit_dhcp_batch(&mut conn, &seen(200, None), 200).expect("seen");
        let got = get_machine(&conn, mac(1)).expect("get").expect("present");
        assert_eq!(
            (got.first_seen_ms, got.last_seen_ms),
            (Some(100), Some(200))
        );
        assert_eq!(got.arch.as_deref(), Some("uefi-x64"));
    }

    fn lease(ip: u8, m: u8) -> LeaseRecord {
        LeaseRecord {
            ip: Ipv4Addr::new(192, 0, 2, ip),
            mac: mac(m),
            expires_at: 1000,
            state: LeaseState::Bound,
            hostname: None,
            client_id: Some(vec![1, m]),
        }
    }

    #[test]
    fn lease_ops_commit_in_one_batch() {
        let mut conn = db();
        let batch = DhcpBatch {
            leases: vec![LeaseOp::Put(lease(100, 1)), LeaseOp::Put(lease(101, 2))],
            ..DhcpBatch::default()
        };
        commit_dhcp_batch(&mut conn, &batch, 1).expect("commit");
        let moved = DhcpBatch {
            leases: vec![
                LeaseOp::Delete(lease(100, 1).ip),
                LeaseOp::Put(lease(102, 1)),
            ],
            ..DhcpBatch::default()
        };
        commit_dhcp_batch(&mut conn, &moved, 2).expect("commit");
        assert_eq!(
            list_leases(&conn).expect("list"),
            vec![lease(101, 2), lease(102, 1)]
        );
        assert_eq!(
            mac_for_ip(&conn, Ipv4Addr::new(192, 0, 2, 102)).expect("q"),
            Some(mac(1))
        );
        assert_eq!(
            mac_for_ip(&conn, Ipv4Addr::new(192, 0, 2, 100)).expect("q"),
            None
        );
    }

    #[test]
    fn inventory_generation_moves_only_on_what_dhcp_reads() {
        let mut conn = db();
        let first = inventory_if_changed(&conn, None).expect("q").expect("load");
        assert!(
            inventory_if_changed(&conn, Some(first.generation))
                .expect("q")
                .is_none()
        );
        let discovered = DhcpBatch {
            discovered: vec![Discovered {
                mac: mac(7),
                arch: Some("bios".into()),
                vendor_class: Some("PXEClient:Arch:00000".into()),
            }],
            ..DhcpBatch::default()
        };
        let (before, after) = commit_dhcp_batch(&mut conn, &discovered, 5).expect("commit");
        assert_eq!(before, first.generation);
        assert!(after > before);
        let reloaded = inventory_if_changed(&conn, Some(before))
            .expect("q")
            .expect("changed");
        let found = &reloaded.machines[&mac(7)];
        assert!(found.discovered);
        assert_eq!(found.vendor_class.as_deref(), Some("PXEClient:Arch:00000"));
        // Being seen again is not a change to the inventory.
        let seen = DhcpBatch {
            seen: vec![Seen {
                mac: mac(7),
                at_ms: 9,
                arch: None,
                vendor_class: None,
            }],
            ..DhcpBatch::default()
        };
        commit_dhcp_batch(&mut conn, &seen, 9).expect("commit");
        assert!(
            inventory_if_changed(&conn, Some(after))
                .expect("q")
                .is_none()
        );
        // An operator adopting it is, and it stops being discovered.
        seed(&conn, mac(7), Some("node7"), None, None);
        let adopted = inventory_if_changed(&conn, Some(after))
            .expect("q")
            .expect("changed");
        let machine = &adopted.machines[&mac(7)];
        assert!(!machine.discovered);
        assert_eq!(machine.hostname.as_deref(), Some("node7"));
        assert_eq!(
            machine.arch.as_deref(),
            Some("bios"),
            "what was seen is kept"
        );
    }

    #[test]
    fn unseen_discovered_machines_expire_and_adopted_ones_stay() {
        let mut conn = db();
        let discover = |mac| DhcpBatch {
            discovered: vec![Discovered {
                mac,
                arch: None,
                vendor_class: None,
            }],
            ..DhcpBatch::default()
        };
        commit_dhcp_batch(&mut conn, &discover(mac(1)), 100).expect("commit");
        commit_dhcp_batch(&mut conn, &discover(mac(2)), 100).expect("commit");
        commit_dhcp_batch(&mut conn, &discover(mac(3)), 900).expect("commit");
        seed(&conn, mac(2), Some("adopted"), None, None);
        assert_eq!(machines::expire_discovered(&conn, 500).expect("expire"), 1);
        let left: Vec<MacAddr> = list_machines(&conn)
            .expect("list")
            .into_iter()
            .map(|m| m.mac)
            .collect();
        assert_eq!(left, vec![mac(2), mac(3)]);
        let size_limit: i64 = conn
            .pragma_query_value(None, "journal_size_limit", |r| r.get(0))
            .expect("pragma");
        assert_eq!(
            size_limit,
            16 << 20,
            "the WAL is cut back after checkpoints"
        );
    }

    #[test]
    fn pool_usage_counts_bound_declined_and_reserved() {
        let mut conn = db();
        let subnet = crate::config::Subnet {
            network: Ipv4Addr::new(192, 0, 2, 0),
            prefix_len: 24,
            pool_start: Ipv4Addr::new(192, 0, 2, 100),
            pool_end: Ipv4Addr::new(192, 0, 2, 109),
            known_pool: Some((Ipv4Addr::new(192, 0, 2, 50), Ipv4Addr::new(192, 0, 2, 51))),
            router: None,
            dns: vec![],
            domain: None,
            lease_secs: 3600,
            renew_secs: 1800,
            rebind_secs: 3150,
        };
        seed(
            &conn,
            mac(9),
            None,
            None,
            Some(Ipv4Addr::new(192, 0, 2, 105)),
        );
        let declined = LeaseRecord {
            state: LeaseState::Declined,
            ..lease(102, 3)
        };
        let expired = LeaseRecord {
            expires_at: 10,
            ..lease(103, 4)
        };
        let outside = lease(50, 5);
        let batch = DhcpBatch {
            leases: [lease(100, 1), lease(101, 2), declined, expired, outside]
                .into_iter()
                .map(LeaseOp::Put)
                .collect(),
            ..DhcpBatch::default()
        };
        commit_dhcp_batch(&mut conn, &batch, 1).expect("commit");
        let usage = pool_usage(&conn, &[subnet], 100).expect("usage");
        assert_eq!(usage.len(), 2, "the shared pool and the known one");
        let u = &usage[0];
        assert!(!u.known_only);
        assert_eq!((u.size, u.bound, u.declined, u.reserved), (10, 2, 1, 1));
        assert_eq!(u.free(), 6);
        let known = &usage[1];
        assert!(known.known_only);
        assert_eq!((known.size, known.bound, known.free()), (2, 1, 1));
    }

    #[test]
    fn old_dhcp_events_are_pruned_and_others_kept() {
        let conn = db();
        for at in 0..10 {
            insert_event(&conn, at, Some(mac(1)), "dhcp.offer", String::new()).expect("e");
        }
        insert_event(&conn, 1, Some(mac(1)), "http.script", String::new()).expect("e");
        insert_event(&conn, 100, Some(mac(1)), "dhcp.ack", String::new()).expect("e");
        assert_eq!(prune_dhcp_events(&conn, 50, 4).expect("prune"), 4);
        assert_eq!(prune_dhcp_events(&conn, 50, 100).expect("prune"), 6);
        let kinds: Vec<String> = list_events(&conn, None, 100)
            .expect("list")
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["http.script", "dhcp.ack"]);
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

    #[test]
    fn a_passive_checkpoint_backfills_the_wal() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.db");
        let mut writer = Db::open(&path).expect("open");
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no autocheckpoint");
        let batch = DhcpBatch {
            leases: (0..200u8).map(|n| LeaseOp::Put(lease(n, n))).collect(),
            ..DhcpBatch::default()
        };
        commit_dhcp_batch(&mut writer, &batch, 1).expect("commit");
        let checkpointer = Connection::open(&path).expect("open");
        let (frames, done) = checkpoint_once(&checkpointer).expect("checkpoint");
        assert!(frames > 0);
        assert_eq!(frames, done, "every frame copied into the database");
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

    /// Events recorded while the database thread is busy wait, and are then
    /// written together in one transaction, all of them, in order.
    #[tokio::test]
    async fn events_recorded_while_busy_share_one_commit() {
        let store = Store::open_in_memory().expect("open");
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        store
            .jobs
            .send(Box::new(move |_| {
                let _ = started.send(());
                let _ = wait.recv();
            }))
            .expect("queue a long job");
        running.recv().expect("the database thread is busy");
        for at in 0..500 {
            store.record_event(at, Some(mac(9)), "tftp.read", format!("n={at}"));
        }
        release.send(()).expect("release");
        let events = store
            .call(move |conn| list_events(conn, Some(mac(9)), 1000))
            .await
            .expect("call");
        assert_eq!(events.len(), 500);
        let mut times: Vec<i64> = events.iter().map(|e| e.at_ms).collect();
        times.sort_unstable();
        assert_eq!(times, (0..500).collect::<Vec<i64>>());
        assert_eq!(store.event_commits(), 1, "500 events, one commit");
        // Afterwards, an event on an idle store is written at once, on its own.
        store.record_event(600, Some(mac(9)), "http.script", String::new());
        let n = store
            .call(move |conn| list_events(conn, Some(mac(9)), 1000))
            .await
            .expect("call")
            .len();
        assert_eq!(n, 501);
        assert_eq!(store.event_commits(), 2);
    }
}

#[cfg(test)]
mod throughput {
    use super::*;

    /// Not a test: the cost of committing leases in groups, with fsync (the real
    /// setting) and without. `cargo test --release -- --ignored commit_cost --nocapture`.
    #[test]
    #[ignore]
    fn commit_cost() {
        for (sync, group) in [("OFF", 10), ("FULL", 10), ("FULL", 50)] {
            let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).expect("dir");
            let mut conn = Db::open(&dir.path().join("t.db")).expect("open");
            conn.pragma_update(None, "synchronous", sync).expect("sync");
            let leases = 20_000u32;
            let started = std::time::Instant::now();
            for chunk in (0..leases).collect::<Vec<_>>().chunks(group) {
                let batch = DhcpBatch {
                    leases: chunk
                        .iter()
                        .map(|n| {
                            let b = n.to_be_bytes();
                            LeaseOp::Put(LeaseRecord {
                                ip: Ipv4Addr::new(198, 18, b[2], b[3]),
                                mac: MacAddr([0, 0x0c, b[1], b[2], b[3], 1]),
                                expires_at: 1_000_000,
                                state: LeaseState::Bound,
                                hostname: None,
                                client_id: Some(vec![1, 0, 0x0c, b[1], b[2], b[3], 1]),
                            })
                        })
                        .collect(),
                    ..DhcpBatch::default()
                };
                commit_dhcp_batch(&mut conn, &batch, 1).expect("commit");
            }
            let per = started.elapsed() / leases;
            eprintln!("synchronous={sync} group={group}: {per:?} per lease");
        }
    }
}
