//! Power control through a machine's BMC: IPMI over LAN (`ipmitool`), Redfish
//! (HTTPS + JSON) and Wake-on-LAN, and the one-action reinstall/rescue/wipe that
//! sets the mode, asks for a network boot and power-cycles.
//!
//! - `ipmi`, `redfish`, `wol`: each protocol's pure request building and output
//!   parsing, and the thin code that sends it.
//! - here: controllers and their secrets in the inventory, the status cache, the
//!   verbs with their audit events, the reprovision step plan, and the poller.
//!
//! Passwords live in the database only. `Secret` has no `Display` and no
//! `Serialize`, and its `Debug` prints `set`, so a stray `{:?}` in a log or an
//! API response cannot leak one; views carry `password: "set"` instead.

pub mod ipmi;
pub mod redfish;
pub mod wol;

#[cfg(test)]
pub mod fake_redfish;

use crate::inventory::{self, MachineDetail};
use crate::lifecycle::{LifecycleConfig, Mode};
use crate::mac::MacAddr;
use crate::store::{Store, StoreError, insert_event_by, parse_mac};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The `[power]` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerConfig {
    /// How often every machine's power state is read; `None` turns polling off.
    pub poll_interval: Option<Duration>,
    /// BMC calls in flight at once, across the poller, the CLI and the panel.
    pub concurrency: usize,
    /// One attempt of one BMC call (an `ipmitool` run, a Redfish request).
    pub timeout: Duration,
    /// Further attempts after a timeout or an unreachable BMC (never after a
    /// refused password: that only locks accounts).
    pub retries: u32,
    pub ipmitool: PathBuf,
    /// Where magic packets go: the limited broadcast by default, sent out of
    /// `wol_interface` (the DHCP interface, the machines' boot network).
    pub wol_broadcast: Ipv4Addr,
    pub wol_port: u16,
    pub wol_interface: Option<String>,
    /// Extra CAs (PEM) trusted for Redfish BMCs with `verify_tls`, beside the
    /// system's: most BMCs carry certificates from a site's own CA.
    pub redfish_ca_pem: Option<Vec<u8>>,
}

impl Default for PowerConfig {
    fn default() -> Self {
        PowerConfig {
            poll_interval: Some(Duration::from_secs(60)),
            concurrency: 8,
            timeout: Duration::from_secs(15),
            retries: 2,
            ipmitool: PathBuf::from("ipmitool"),
            wol_broadcast: Ipv4Addr::BROADCAST,
            wol_port: 9,
            wol_interface: None,
            redfish_ca_pem: None,
        }
    }
}

/// A password or other secret. Never displayed, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: String) -> Self {
        Secret(text)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("set")
    }
}

/// How rackboot reaches a machine's power.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Controller {
    Ipmi {
        host: String,
        port: u16,
        user: String,
        password: Secret,
        cipher_suite: u8,
    },
    Redfish {
        /// `https://bmc.example` (no path): requests go to `/redfish/v1/...`.
        url: String,
        user: String,
        password: Secret,
        system_id: String,
        verify_tls: bool,
    },
    /// Power on only: a magic packet to the machine's MAC on the boot network.
    Wol,
}

impl Controller {
    pub fn kind(&self) -> &'static str {
        match self {
            Controller::Ipmi { .. } => "ipmi",
            Controller::Redfish { .. } => "redfish",
            Controller::Wol => "wol",
        }
    }

    /// What an operator may see: everything but the password.
    pub fn view(&self) -> ControllerView {
        match self {
            Controller::Ipmi {
                host,
                port,
                user,
                cipher_suite,
                ..
            } => ControllerView {
                kind: "ipmi",
                host: Some(host.clone()),
                port: Some(*port),
                user: Some(user.clone()),
                password: Some("set"),
                cipher_suite: Some(*cipher_suite),
                ..ControllerView::default()
            },
            Controller::Redfish {
                url,
                user,
                system_id,
                verify_tls,
                ..
            } => ControllerView {
                kind: "redfish",
                url: Some(url.clone()),
                user: Some(user.clone()),
                password: Some("set"),
                system_id: Some(system_id.clone()),
                verify_tls: Some(*verify_tls),
                ..ControllerView::default()
            },
            Controller::Wol => ControllerView {
                kind: "wol",
                ..ControllerView::default()
            },
        }
    }

    /// One line for events and the CLI; no secret in it.
    pub fn summary(&self) -> String {
        match self {
            Controller::Ipmi {
                host,
                port,
                user,
                cipher_suite,
                ..
            } => format!("ipmi {host}:{port} user={user} cipher={cipher_suite}"),
            Controller::Redfish {
                url,
                user,
                system_id,
                verify_tls,
                ..
            } => format!(
                "redfish {url} system={} user={user} verify_tls={verify_tls}",
                if system_id.is_empty() {
                    "(the only one)"
                } else {
                    system_id
                }
            ),
            Controller::Wol => "wol".into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ControllerView {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_tls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `"set"` when a password is stored; the password itself never leaves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<u8>,
}

/// A controller as submitted by the API, the panel or the CLI. A missing password
/// keeps the stored one (forms never get it back to resubmit).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ControllerSpec {
    Ipmi {
        host: String,
        port: Option<u16>,
        user: String,
        password: Option<String>,
        cipher_suite: Option<u8>,
    },
    Redfish {
        url: String,
        user: String,
        password: Option<String>,
        system_id: Option<String>,
        verify_tls: Option<bool>,
    },
    Wol,
}

fn plain_token(what: &str, text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if text.starts_with('-') || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} {text:?} must not start with '-' or contain spaces"
        ));
    }
    Ok(())
}

impl ControllerSpec {
    /// Validates and resolves the password against the stored controller.
    pub fn resolve(self, stored: Option<&Controller>) -> Result<Controller, String> {
        let kept = |kind: &str| match stored {
            Some(Controller::Ipmi { password, .. }) if kind == "ipmi" => Some(password.clone()),
            Some(Controller::Redfish { password, .. }) if kind == "redfish" => {
                Some(password.clone())
            }
            _ => None,
        };
        let password = |given: Option<String>, kind: &str| match given.filter(|p| !p.is_empty()) {
            Some(p) if p.contains('\0') || p.contains('\n') => {
                Err("the password must be one line".to_string())
            }
            Some(p) => Ok(Secret::new(p)),
            None => kept(kind).ok_or_else(|| "a password is required".to_string()),
        };
        match self {
            ControllerSpec::Ipmi {
                host,
                port,
                user,
                password: given,
                cipher_suite,
            } => {
                let host = host.trim().to_string();
                plain_token("host", &host)?;
                plain_token("user", &user)?;
                let cipher_suite = cipher_suite.unwrap_or(3);
                if cipher_suite > 17 {
                    return Err(format!("cipher suite {cipher_suite} is not 0 to 17"));
                }
                Ok(Controller::Ipmi {
                    host,
                    port: port.unwrap_or(623),
                    user,
                    password: password(given, "ipmi")?,
                    cipher_suite,
                })
            }
            ControllerSpec::Redfish {
                url,
                user,
                password: given,
                system_id,
                verify_tls,
            } => {
                let url = url.trim().trim_end_matches('/').to_string();
                let parsed = reqwest::Url::parse(&url)
                    .map_err(|e| format!("url {url:?} is not a URL: {e}"))?;
                if !matches!(parsed.scheme(), "https" | "http") || parsed.host().is_none() {
                    return Err(format!("url {url:?} must be https://HOST[:PORT]"));
                }
                // The URL is shown in events and logs: credentials belong in user and
                // password, never in it.
                if !parsed.username().is_empty() || parsed.password().is_some() {
                    return Err("the url must not carry a user or password".into());
                }
                plain_token("user", &user)?;
                // Empty: the BMC's only system, found at each call (most BMCs have
                // one, named `1`, `System.Embedded.1`, a serial number...).
                let system_id = system_id.map(|s| s.trim().to_string()).unwrap_or_default();
                if !system_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                {
                    return Err(format!(
                        "system id {system_id:?} must be letters, digits, . _ -"
                    ));
                }
                Ok(Controller::Redfish {
                    url,
                    user,
                    password: password(given, "redfish")?,
                    system_id,
                    verify_tls: verify_tls.unwrap_or(true),
                })
            }
            ControllerSpec::Wol => Ok(Controller::Wol),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    On,
    Off,
}

impl PowerState {
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::On => "on",
            PowerState::Off => "off",
        }
    }
}

/// What an operator can ask of a BMC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    On,
    Off,
    Cycle,
    Status,
    /// Next boot from the network (once).
    Pxe,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::On => "on",
            Verb::Off => "off",
            Verb::Cycle => "cycle",
            Verb::Status => "status",
            Verb::Pxe => "pxe",
        }
    }

    pub fn parse(text: &str) -> Option<Verb> {
        [Verb::On, Verb::Off, Verb::Cycle, Verb::Status, Verb::Pxe]
            .into_iter()
            .find(|v| v.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowerError {
    #[error("the BMC refused the credentials: {0}")]
    Auth(String),
    #[error("the BMC did not answer: {0}")]
    Unreachable(String),
    #[error("the BMC did not answer within {0} s")]
    Timeout(u64),
    #[error("the BMC refused the request: {0}")]
    Refused(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot run the BMC client: {0}")]
    Local(String),
    #[error(
        "the BMC's TLS certificate is not trusted ({0}): add its CA to [power] redfish_ca_file, or turn verify_tls off for this controller"
    )]
    Certificate(String),
}

impl PowerError {
    /// Worth another attempt: the BMC may answer next time. A refused password is
    /// not retried (BMCs lock accounts after a few failures).
    pub fn transient(&self) -> bool {
        matches!(self, PowerError::Unreachable(_) | PowerError::Timeout(_))
    }
}

/// What a BMC call achieved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub state: Option<PowerState>,
    /// Done, but not as asked (an IPMI BMC that refuses `bootdev pxe`).
    pub warning: Option<String>,
}

/// Sends verbs to BMCs, at most `concurrency` at a time.
pub struct Power {
    pub config: PowerConfig,
    limit: tokio::sync::Semaphore,
    clients: std::sync::OnceLock<Result<redfish::Clients, String>>,
    redfish_systems: redfish::FoundSystems,
}

impl Power {
    pub fn new(config: PowerConfig) -> Self {
        Power {
            limit: tokio::sync::Semaphore::new(config.concurrency.max(1)),
            config,
            clients: std::sync::OnceLock::new(),
            redfish_systems: redfish::FoundSystems::default(),
        }
    }

    /// One verb on one controller, with the configured timeout and retries.
    pub async fn execute(
        &self,
        mac: MacAddr,
        controller: &Controller,
        verb: Verb,
    ) -> Result<Outcome, PowerError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| PowerError::Local("shutting down".into()))?;
        let mut attempt = 0;
        loop {
            let result = self.attempt(mac, controller, verb).await;
            match result {
                Err(e) if e.transient() && attempt < self.config.retries => {
                    attempt += 1;
                    tracing::debug!(%mac, verb = verb.as_str(), attempt, "BMC call failed, retrying: {e}");
                    tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        mac: MacAddr,
        controller: &Controller,
        verb: Verb,
    ) -> Result<Outcome, PowerError> {
        let timeout = self.config.timeout;
        match controller {
            Controller::Ipmi {
                host,
                port,
                user,
                password,
                cipher_suite,
            } => {
                let target = ipmi::Target {
                    host,
                    port: *port,
                    user,
                    cipher_suite: *cipher_suite,
                };
                ipmi::run(&self.config.ipmitool, &target, password, verb, timeout).await
            }
            Controller::Redfish {
                url,
                user,
                password,
                system_id,
                verify_tls,
            } => {
                let clients = self
                    .clients
                    .get_or_init(|| redfish::Clients::new(self.config.redfish_ca_pem.as_deref()))
                    .as_ref()
                    .map_err(|e| PowerError::Local(e.clone()))?;
                let client = if *verify_tls {
                    &clients.verified
                } else {
                    &clients.insecure
                };
                let target = redfish::Target {
                    url,
                    user,
                    system_id,
                };
                redfish::run(
                    client,
                    &self.redfish_systems,
                    &target,
                    password,
                    verb,
                    timeout,
                )
                .await
            }
            Controller::Wol => match verb {
                Verb::On => {
                    wol::send(
                        mac,
                        self.config.wol_broadcast,
                        self.config.wol_port,
                        self.config.wol_interface.as_deref(),
                    )
                    .await?;
                    Ok(Outcome::default())
                }
                other => Err(PowerError::Unsupported(format!(
                    "Wake-on-LAN can only power on, not {}",
                    other.as_str()
                ))),
            },
        }
    }
}

// ---- the inventory side ----

pub fn get_controller(conn: &Connection, mac: MacAddr) -> Result<Option<Controller>, StoreError> {
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

pub fn put_controller(
    conn: &mut Connection,
    mac: MacAddr,
    spec: ControllerSpec,
    actor: &str,
    now_ms: i64,
) -> Result<Controller, StoreError> {
    let tx = conn.transaction()?;
    if inventory::machine(&tx, mac)?.is_none() {
        return Err(StoreError::NotFound(format!("no machine {mac}")));
    }
    let stored = get_controller(&tx, mac)?;
    let controller = spec
        .resolve(stored.as_ref())
        .map_err(StoreError::Conflict)?;
    let (host, port, user, secret, cipher, url, system, verify) = match &controller {
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
    insert_event_by(
        &tx,
        now_ms,
        Some(mac),
        "power.controller",
        controller.summary(),
        Some(actor),
    )?;
    tx.commit()?;
    Ok(controller)
}

pub fn remove_controller(
    conn: &mut Connection,
    mac: MacAddr,
    actor: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let tx = conn.transaction()?;
    let gone = tx.execute(
        "DELETE FROM power_controllers WHERE mac = ?1",
        [mac.to_string()],
    )?;
    if gone == 0 {
        return Err(StoreError::NotFound(format!(
            "{mac} has no power controller"
        )));
    }
    tx.execute("DELETE FROM power_status WHERE mac = ?1", [mac.to_string()])?;
    insert_event_by(
        &tx,
        now_ms,
        Some(mac),
        "power.controller",
        "removed".into(),
        Some(actor),
    )?;
    tx.commit()?;
    Ok(())
}

/// Controllers of the named machines, or of every machine in `rack`, or all.
pub fn controllers(
    conn: &Connection,
    macs: &[MacAddr],
    rack: Option<&str>,
) -> Result<Vec<(MacAddr, Option<Controller>)>, StoreError> {
    let mut found = Vec::new();
    if !macs.is_empty() {
        for mac in macs {
            if inventory::machine(conn, *mac)?.is_none() {
                return Err(StoreError::NotFound(format!("no machine {mac}")));
            }
            found.push((*mac, get_controller(conn, *mac)?));
        }
        return Ok(found);
    }
    let mut stmt =
        conn.prepare_cached("SELECT mac FROM machines WHERE ?1 IS NULL OR rack = ?1 ORDER BY mac")?;
    let rows = stmt
        .query_map([rack], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    for mac in rows {
        let mac = parse_mac(mac)?;
        found.push((mac, get_controller(conn, mac)?));
    }
    Ok(found)
}

/// The machines named by MAC (each must exist), or every machine of `rack`: the
/// targets of an action on many machines.
pub fn targets(
    conn: &Connection,
    macs: &[MacAddr],
    rack: Option<&str>,
) -> Result<Vec<MacAddr>, StoreError> {
    if macs.is_empty() && rack.is_none() {
        return Err(StoreError::Conflict(
            "name machines by MAC, or a rack".into(),
        ));
    }
    let found = controllers(conn, macs, rack)?;
    if found.is_empty() {
        return Err(StoreError::NotFound(format!(
            "no machine in rack {}",
            rack.unwrap_or_default()
        )));
    }
    Ok(found.into_iter().map(|(mac, _)| mac).collect())
}

/// The last power state read, with when, or the error that read ended in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedStatus {
    /// `on`, `off`, or `error`.
    pub state: String,
    pub detail: String,
    pub checked_ms: i64,
}

pub fn save_statuses(
    conn: &mut Connection,
    statuses: &[(MacAddr, CachedStatus)],
) -> Result<(), StoreError> {
    // One transaction per poll round: a commit per machine would make the poller
    // the database's busiest writer.
    let tx = conn.transaction()?;
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
    tx.commit()?;
    Ok(())
}

pub fn cached_status(conn: &Connection, mac: MacAddr) -> Result<Option<CachedStatus>, StoreError> {
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
pub fn power_column(
    conn: &Connection,
) -> Result<std::collections::HashMap<String, String>, StoreError> {
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

async fn record_now(store: &Store, mac: MacAddr, kind: &'static str, detail: String, actor: &str) {
    let actor = actor.to_string();
    let now = crate::clock::now_ms();
    if let Err(e) = store
        .call(move |conn| insert_event_by(conn, now, Some(mac), kind, detail, Some(&actor)))
        .await
    {
        tracing::warn!(%mac, kind, "could not record power event: {e}");
    }
}

async fn cache(store: &Store, mac: MacAddr, state: &str, detail: String) {
    let status = CachedStatus {
        state: state.to_string(),
        detail,
        checked_ms: crate::clock::now_ms(),
    };
    if let Err(e) = store
        .call(move |conn| save_statuses(conn, &[(mac, status)]))
        .await
    {
        tracing::warn!(%mac, "could not cache power status: {e}");
    }
}

/// Why a verb could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum VerbError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} has no power controller")]
    NoController(MacAddr),
    #[error("{mac}: power {verb}: {error}")]
    Power {
        mac: MacAddr,
        verb: &'static str,
        error: PowerError,
    },
}

/// The event kind and detail for a verb that succeeded.
fn verb_event(verb: Verb, outcome: &Outcome) -> (&'static str, String) {
    match (verb, &outcome.warning) {
        (_, Some(w)) => ("power.warning", w.clone()),
        (Verb::On, None) => ("power.on", "powered on".into()),
        (Verb::Off, None) => ("power.off", "powered off".into()),
        (Verb::Cycle, None) => ("power.cycle", "power-cycled".into()),
        (Verb::Pxe, None) => ("power.pxe", "next boot: network".into()),
        (Verb::Status, None) => (
            "power.status",
            outcome
                .state
                .map_or("unknown", PowerState::as_str)
                .to_string(),
        ),
    }
}

/// One verb for one machine from a person or token: run, record, cache.
pub async fn run_verb(
    store: &Store,
    power: &Power,
    mac: MacAddr,
    verb: Verb,
    actor: &str,
) -> Result<Outcome, VerbError> {
    let controller = store
        .call(move |conn| {
            if inventory::machine(conn, mac)?.is_none() {
                return Err(StoreError::NotFound(format!("no machine {mac}")));
            }
            get_controller(conn, mac)
        })
        .await?
        .ok_or(VerbError::NoController(mac))?;
    run_with(store, power, mac, &controller, verb, actor).await
}

async fn run_with(
    store: &Store,
    power: &Power,
    mac: MacAddr,
    controller: &Controller,
    verb: Verb,
    actor: &str,
) -> Result<Outcome, VerbError> {
    match power.execute(mac, controller, verb).await {
        Ok(outcome) => {
            let (kind, detail) = verb_event(verb, &outcome);
            if let Some(w) = &outcome.warning {
                tracing::warn!(%mac, verb = verb.as_str(), "{w}");
            }
            record_now(store, mac, kind, detail, actor).await;
            let state = match verb {
                Verb::Status => outcome.state,
                Verb::On | Verb::Cycle => Some(PowerState::On),
                Verb::Off => Some(PowerState::Off),
                Verb::Pxe => None,
            };
            if let Some(state) = state
                && !matches!(controller, Controller::Wol)
            {
                cache(store, mac, state.as_str(), String::new()).await;
            }
            Ok(outcome)
        }
        Err(error) => {
            tracing::warn!(%mac, verb = verb.as_str(), controller = controller.summary(), "power call failed: {error}");
            record_now(
                store,
                mac,
                "power.failed",
                format!("{}: {error}", verb.as_str()),
                actor,
            )
            .await;
            Err(VerbError::Power {
                mac,
                verb: verb.as_str(),
                error,
            })
        }
    }
}

// ---- reinstall, rescue, wipe in one action ----

/// The power steps that follow a mode change, before the BMC is asked anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Next boot from the network.
    Pxe,
    /// Read the power state: it decides between `On` and `Cycle`.
    Status,
    /// Power on if off, else power-cycle.
    OnOrCycle,
    /// Wake-on-LAN: can only power on; a running machine must be rebooted by hand.
    Wake,
}

/// The plan for a controller kind (pure).
pub fn plan(controller: Option<&Controller>) -> Vec<Step> {
    match controller {
        None => vec![],
        Some(Controller::Wol) => vec![Step::Wake],
        Some(_) => vec![Step::Pxe, Step::Status, Step::OnOrCycle],
    }
}

/// On or cycle, by the state just read (pure).
pub fn restart_verb(state: Option<PowerState>) -> Verb {
    match state {
        Some(PowerState::Off) => Verb::On,
        _ => Verb::Cycle,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    pub step: String,
    /// `ok`, `warning` or `failed`.
    pub result: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reprovision {
    #[serde(flatten)]
    pub machine: MachineDetail,
    pub steps: Vec<StepReport>,
    /// Set when a power step failed. The mode change is kept (see `reprovision`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_error: Option<String>,
}

impl Reprovision {
    /// One line per step, for the CLI and the panel's notice.
    pub fn describe(&self) -> String {
        self.steps
            .iter()
            .map(|s| format!("{} {}: {}", s.step, s.result, s.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Reinstall, rescue or wipe as one action: set the mode, then (with a power
/// controller) ask for a network boot and power-cycle, or power on a machine that
/// is off. Each step is an event by `actor`.
///
/// When a power step fails, the mode change is KEPT and the failure reported
/// (`power_error`, a `power.failed` event), not rolled back: the mode is what the
/// operator asked for and is right whatever the BMC does; the machine acts on it at
/// its next network boot, however that boot comes (a retry, a hand on the power
/// button). Rolling back would also race a machine that the BMC did reboot before
/// the error surfaced, and throw away the install's done-URL token.
pub async fn reprovision(
    store: &Store,
    power: &Power,
    life: &LifecycleConfig,
    mac: MacAddr,
    mode: Mode,
    actor: &str,
) -> Result<Reprovision, StoreError> {
    let (life, who) = (life.clone(), actor.to_string());
    let (machine, controller) = store
        .call(move |conn| {
            let machine =
                inventory::set_mode(conn, mac, mode, &life, &who, crate::clock::now_ms())?;
            Ok((machine, get_controller(conn, mac)?))
        })
        .await?;
    let mut report = Reprovision {
        machine,
        steps: vec![StepReport {
            step: "mode".into(),
            result: "ok",
            detail: format!("mode set to {mode}"),
        }],
        power_error: None,
    };
    let Some(controller) = controller else {
        report.steps.push(StepReport {
            step: "power".into(),
            result: "ok",
            detail: "no power controller: the machine acts on its next network boot".into(),
        });
        return Ok(report);
    };
    let mut state = None;
    for step in plan(Some(&controller)) {
        let verb = match step {
            Step::Pxe => Verb::Pxe,
            Step::Status => Verb::Status,
            Step::OnOrCycle => restart_verb(state),
            Step::Wake => Verb::On,
        };
        match run_with(store, power, mac, &controller, verb, actor).await {
            Ok(outcome) => {
                state = outcome.state.or(state);
                report.steps.push(StepReport {
                    step: verb.as_str().into(),
                    result: if outcome.warning.is_some() {
                        "warning"
                    } else {
                        "ok"
                    },
                    detail: outcome.warning.clone().unwrap_or_else(|| match verb {
                        Verb::Status => format!(
                            "power is {}",
                            outcome.state.map_or("unknown", PowerState::as_str)
                        ),
                        Verb::Pxe => "next boot from the network".into(),
                        Verb::On if step == Step::Wake => {
                            "magic packet sent (a running machine must be rebooted by hand)".into()
                        }
                        Verb::On => "powered on".into(),
                        Verb::Cycle => "power-cycled".into(),
                        Verb::Off => "powered off".into(),
                    }),
                });
            }
            Err(e) => {
                let why = match &e {
                    VerbError::Power { error, .. } => error.to_string(),
                    other => other.to_string(),
                };
                report.steps.push(StepReport {
                    step: verb.as_str().into(),
                    result: "failed",
                    detail: why.clone(),
                });
                report.power_error = Some(format!(
                    "mode {mode} is set, but power {} failed: {why}. The machine {mode}s on its next network boot; reboot it by hand or retry",
                    verb.as_str()
                ));
                break;
            }
        }
    }
    Ok(report)
}

/// Reinstall, rescue or wipe many machines at once (the CLI's `--rack`, the panel's
/// selection): each as `reprovision`, all concurrently (BMC calls stay within
/// `concurrency`), every result in the order given.
pub async fn reprovision_many(
    store: &Store,
    power: &Arc<Power>,
    life: &LifecycleConfig,
    macs: &[MacAddr],
    mode: Mode,
    actor: &str,
) -> Vec<(MacAddr, Result<Reprovision, StoreError>)> {
    for_each_machine(
        macs,
        |mac| {
            let (store, power, life, actor) = (
                store.clone(),
                power.clone(),
                life.clone(),
                actor.to_string(),
            );
            async move { reprovision(&store, &power, &life, mac, mode, &actor).await }
        },
        || Err(StoreError::Conflict("the action ended abnormally".into())),
    )
    .await
}

/// Runs `action` for every machine at once, each in a task of its own, and returns
/// every result in the order given. A task that panicked is reported through
/// `ended_abnormally`, never dropped: the operator hears about every machine.
async fn for_each_machine<T, Fut>(
    macs: &[MacAddr],
    action: impl Fn(MacAddr) -> Fut,
    ended_abnormally: impl Fn() -> T,
) -> Vec<(MacAddr, T)>
where
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (index, mac) in macs.iter().copied().enumerate() {
        let work = action(mac);
        tasks.spawn(async move { (index, work.await) });
    }
    let mut slots: Vec<Option<T>> = macs.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, result)) => {
                if let Some(slot) = slots.get_mut(index) {
                    *slot = Some(result);
                }
            }
            Err(e) => tracing::error!("the action on one machine ended abnormally: {e}"),
        }
    }
    macs.iter()
        .copied()
        .zip(slots)
        .map(|(mac, result)| (mac, result.unwrap_or_else(&ended_abnormally)))
        .collect()
}

// ---- polling ----

/// Reads every controllable machine's power state each `poll_interval` (at most
/// `concurrency` BMCs at once) and caches it for the panel and API.
pub async fn poll_loop(store: Store, power: Arc<Power>) {
    let Some(interval) = power.config.poll_interval else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = poll_once(&store, &power).await {
            tracing::warn!("power poll: {e}");
        }
    }
}

pub async fn poll_once(store: &Store, power: &Arc<Power>) -> Result<usize, StoreError> {
    let all = store.call(|conn| controllers(conn, &[], None)).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for (mac, controller) in all {
        let Some(controller) = controller.filter(|c| !matches!(c, Controller::Wol)) else {
            continue;
        };
        let power = power.clone();
        tasks.spawn(async move {
            let result = power.execute(mac, &controller, Verb::Status).await;
            (mac, result)
        });
    }
    let mut statuses = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((mac, result)) = joined else { continue };
        let now = crate::clock::now_ms();
        let status = match result {
            Ok(Outcome {
                state: Some(state), ..
            }) => CachedStatus {
                state: state.as_str().into(),
                detail: String::new(),
                checked_ms: now,
            },
            Ok(_) => CachedStatus {
                state: "error".into(),
                detail: "no power state in the answer".into(),
                checked_ms: now,
            },
            Err(e) => {
                tracing::warn!(%mac, "power status: {e}");
                CachedStatus {
                    state: "error".into(),
                    detail: e.to_string(),
                    checked_ms: now,
                }
            }
        };
        statuses.push((mac, status));
    }
    let n = statuses.len();
    store
        .call(move |conn| save_statuses(conn, &statuses))
        .await?;
    Ok(n)
}

/// One verb across many machines at once (the CLI's `power VERB --rack R`):
/// every result, in the order given.
pub async fn run_many(
    store: &Store,
    power: &Arc<Power>,
    macs: Vec<MacAddr>,
    verb: Verb,
    actor: &str,
) -> Vec<(MacAddr, Result<Outcome, VerbError>)> {
    for_each_machine(
        &macs,
        |mac| {
            let (store, power, actor) = (store.clone(), power.clone(), actor.to_string());
            async move { run_verb(&store, &power, mac, verb, &actor).await }
        },
        || {
            Err(VerbError::Store(StoreError::Conflict(
                "the action ended abnormally".into(),
            )))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Controller::Ipmi {
            host: "192.0.2.9".into(),
            port: 623,
            user: "admin".into(),
            password: Secret::new("hunter2".into()),
            cipher_suite: 3,
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.summary().contains("hunter2"));
        let json = serde_json::to_string(&c.view()).expect("json");
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains(r#""password":"set""#), "{json}");
    }

    #[test]
    fn specs_validate_and_keep_the_stored_password() {
        let spec = |password: Option<&str>| ControllerSpec::Ipmi {
            host: "192.0.2.9".into(),
            port: None,
            user: "admin".into(),
            password: password.map(str::to_string),
            cipher_suite: None,
        };
        assert!(
            spec(None).resolve(None).is_err(),
            "new controller needs one"
        );
        let first = spec(Some("pw1")).resolve(None).expect("valid");
        let kept = spec(None).resolve(Some(&first)).expect("kept");
        assert_eq!(kept, first);
        let Controller::Ipmi {
            port, cipher_suite, ..
        } = kept
        else {
            panic!("ipmi")
        };
        assert_eq!((port, cipher_suite), (623, 3));
        let bad_host = ControllerSpec::Ipmi {
            host: "-oProxyCommand=x".into(),
            port: None,
            user: "a".into(),
            password: Some("p".into()),
            cipher_suite: None,
        };
        assert!(bad_host.resolve(None).is_err());
        let redfish = ControllerSpec::Redfish {
            url: "https://bmc.example/".into(),
            user: "root".into(),
            password: Some("p".into()),
            system_id: None,
            verify_tls: None,
        }
        .resolve(None)
        .expect("valid");
        assert_eq!(
            redfish.view().verify_tls,
            Some(true),
            "TLS verification is on by default"
        );
        let bad_url = ControllerSpec::Redfish {
            url: "ftp://bmc".into(),
            user: "root".into(),
            password: Some("p".into()),
            system_id: None,
            verify_tls: None,
        };
        assert!(bad_url.resolve(None).is_err());
        let userinfo = ControllerSpec::Redfish {
            url: "https://root:calvin@bmc".into(),
            user: "root".into(),
            password: Some("p".into()),
            system_id: None,
            verify_tls: None,
        };
        assert!(userinfo.resolve(None).is_err(), "no password in the URL");
    }

    #[test]
    fn the_step_plan_follows_the_controller_and_the_state() {
        assert_eq!(plan(None), vec![]);
        assert_eq!(plan(Some(&Controller::Wol)), vec![Step::Wake]);
        let ipmi = Controller::Ipmi {
            host: "h".into(),
            port: 623,
            user: "u".into(),
            password: Secret::new("p".into()),
            cipher_suite: 3,
        };
        assert_eq!(
            plan(Some(&ipmi)),
            vec![Step::Pxe, Step::Status, Step::OnOrCycle]
        );
        assert_eq!(restart_verb(Some(PowerState::Off)), Verb::On);
        assert_eq!(restart_verb(Some(PowerState::On)), Verb::Cycle);
        assert_eq!(restart_verb(None), Verb::Cycle);
    }

    async fn store_with_machine() -> Store {
        let store = Store::open_in_memory().expect("store");
        add_machine(&store, MacAddr([0x52, 0x54, 0, 0, 0, 1])).await;
        store
    }

    async fn add_machine(store: &Store, mac: MacAddr) {
        store
            .call(move |conn| {
                let new = crate::store::NewMachine {
                    mac: Some(mac),
                    ..Default::default()
                };
                inventory::add(
                    conn,
                    &new,
                    &inventory::MachineExtra::default(),
                    &LifecycleConfig::default(),
                    "test",
                    0,
                )?;
                Ok(())
            })
            .await
            .expect("machine");
    }

    async fn set_redfish(store: &Store, mac: MacAddr, url: &str, password: &str, verify: bool) {
        let spec = ControllerSpec::Redfish {
            url: url.into(),
            user: "root".into(),
            password: Some(password.into()),
            system_id: Some("1".into()),
            verify_tls: Some(verify),
        };
        store
            .call(move |conn| put_controller(conn, mac, spec, "test", 0))
            .await
            .expect("controller");
    }

    fn life() -> LifecycleConfig {
        LifecycleConfig {
            rescue_image: Some("rescue".into()),
            ..LifecycleConfig::default()
        }
    }

    async fn with_redfish(store: &Store, url: &str, password: &str) {
        set_redfish(
            store,
            MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            url,
            password,
            true,
        )
        .await;
        store
            .call(|conn| {
                crate::store::put_image(
                    conn,
                    &crate::store::Image {
                        name: "rescue".into(),
                        kernel_path: "k".into(),
                        kernel_sha256: String::new(),
                        initrd_path: "i".into(),
                        initrd_sha256: String::new(),
                        cmdline: String::new(),
                    },
                    0,
                )
            })
            .await
            .expect("image");
    }

    /// The exact requests a rescue sends to a Redfish BMC that is on: PATCH the boot
    /// override, read the state, ForceRestart; each with basic auth.
    #[tokio::test]
    async fn redfish_requests_are_exactly_these() {
        let bmc = fake_redfish::FakeRedfish::start().await;
        *bmc.bmc.power_on.lock().expect("lock") = true;
        let store = store_with_machine().await;
        with_redfish(&store, &bmc.url, "calvin").await;
        let power = Power::new(PowerConfig::default());
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let report = reprovision(&store, &power, &life(), mac, Mode::Rescue, "user:ann")
            .await
            .expect("reprovision");
        assert_eq!(report.power_error, None, "{report:?}");
        let seen = bmc.seen();
        let expected = [
            (
                "PATCH",
                "/redfish/v1/Systems/1",
                Some(
                    serde_json::json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}}),
                ),
            ),
            ("GET", "/redfish/v1/Systems/1", None),
            (
                "POST",
                "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                Some(serde_json::json!({"ResetType": "ForceRestart"})),
            ),
        ];
        assert_eq!(seen.len(), expected.len(), "{seen:?}");
        for (got, (method, path, body)) in seen.iter().zip(expected) {
            assert_eq!(got.method, method);
            assert_eq!(got.path, path);
            assert_eq!(got.body, body);
            assert_eq!(got.authorization.as_deref(), Some(fake_redfish::GOOD_AUTH));
        }
        assert_eq!(*bmc.bmc.boot_target.lock().expect("lock"), "Pxe");
        let kinds: Vec<String> = store
            .call(move |conn| inventory::events(conn, Some(mac), true, 10))
            .await
            .expect("events")
            .into_iter()
            .rev()
            .filter(|e| e.actor.as_deref() == Some("user:ann"))
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            ["mode.set", "power.pxe", "power.status", "power.cycle"]
        );
    }

    /// A BMC slower than the timeout: a clear timeout error within
    /// (retries + 1) x timeout plus backoff, the mode kept and said so.
    #[tokio::test]
    async fn a_slow_redfish_bmc_times_out_and_the_mode_is_kept() {
        let bmc = fake_redfish::FakeRedfish::start().await;
        *bmc.bmc.delay.lock().expect("lock") = Duration::from_secs(30);
        let store = store_with_machine().await;
        with_redfish(&store, &bmc.url, "calvin").await;
        let power = Power::new(PowerConfig {
            timeout: Duration::from_secs(1),
            retries: 1,
            ..PowerConfig::default()
        });
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let started = std::time::Instant::now();
        let report = reprovision(&store, &power, &life(), mac, Mode::Rescue, "user:ann")
            .await
            .expect("reprovision");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        let why = report.power_error.expect("power failed");
        assert!(why.contains("did not answer within 1 s"), "{why}");
        assert_eq!(report.machine.mode, Mode::Rescue, "mode kept");
        assert_eq!(bmc.seen().len(), 2, "one attempt and one retry");
    }

    /// Redfish over HTTPS: a BMC certificate from an unknown CA is refused with a
    /// clear error before any request is sent (and not retried); trusting its CA
    /// through `redfish_ca_file`, or turning `verify_tls` off for the controller,
    /// lets the same call through.
    #[tokio::test]
    async fn redfish_over_https_verifies_the_bmc_certificate() {
        let bmc = fake_redfish::FakeRedfish::start_tls().await;
        assert!(bmc.url.starts_with("https://127.0.0.1:"), "{}", bmc.url);
        let store = store_with_machine().await;
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        set_redfish(&store, mac, &bmc.url, "calvin", true).await;

        let untrusting = Arc::new(Power::new(PowerConfig::default()));
        let started = std::time::Instant::now();
        let refused = run_verb(&store, &untrusting, mac, Verb::Status, "user:ann")
            .await
            .expect_err("an unknown CA must be refused");
        let VerbError::Power { error, .. } = &refused else {
            panic!("{refused:?}");
        };
        assert!(matches!(error, PowerError::Certificate(_)), "{error:?}");
        let said = refused.to_string();
        assert!(
            said.contains("not trusted") && said.contains("redfish_ca_file"),
            "{said}"
        );
        assert!(
            said.contains("UnknownIssuer"),
            "the reason is named: {said}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "not retried");
        assert!(
            bmc.seen().is_empty(),
            "no request may reach an untrusted BMC"
        );

        let trusting = Arc::new(Power::new(PowerConfig {
            redfish_ca_pem: Some(include_bytes!("testdata/ca.pem").to_vec()),
            ..PowerConfig::default()
        }));
        let outcome = run_verb(&store, &trusting, mac, Verb::Status, "user:ann")
            .await
            .expect("a BMC signed by the configured CA");
        assert_eq!(outcome.state, Some(PowerState::Off));
        assert_eq!(bmc.seen().len(), 1);
        assert_eq!(
            bmc.seen()[0].authorization.as_deref(),
            Some(fake_redfish::GOOD_AUTH)
        );

        set_redfish(&store, mac, &bmc.url, "calvin", false).await;
        let outcome = run_verb(&store, &untrusting, mac, Verb::On, "user:ann")
            .await
            .expect("verify_tls off");
        assert_eq!(outcome.warning, None);
        assert!(*bmc.bmc.power_on.lock().expect("lock"));
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_an_error() {
        assert!(redfish::parse_ca_bundle(include_bytes!("testdata/ca.pem")).is_ok());
        let why = redfish::parse_ca_bundle(b"not a certificate\n").expect_err("empty");
        assert!(why.contains("no PEM certificate"), "{why}");
    }

    /// One poll reads every BMC-backed machine (not Wake-on-LAN ones, not those
    /// without a controller), caches each state or error, and never has more than
    /// `concurrency` BMC calls in flight.
    #[tokio::test]
    async fn a_poll_caches_every_state_within_the_concurrency_limit() {
        let bmc = fake_redfish::FakeRedfish::start().await;
        *bmc.bmc.power_on.lock().expect("lock") = true;
        *bmc.bmc.delay.lock().expect("lock") = Duration::from_millis(200);
        let store = store_with_machine().await;
        let mac = |n: u8| MacAddr([0x52, 0x54, 0, 0, 1, n]);
        for n in 1..=8 {
            add_machine(&store, mac(n)).await;
        }
        for n in 1..=5 {
            set_redfish(&store, mac(n), &bmc.url, "calvin", true).await;
        }
        set_redfish(&store, mac(6), &bmc.url, "wrong", true).await;
        store
            .call(move |conn| put_controller(conn, mac(7), ControllerSpec::Wol, "test", 0))
            .await
            .expect("wol");
        let power = Arc::new(Power::new(PowerConfig {
            concurrency: 2,
            ..PowerConfig::default()
        }));
        let polled = poll_once(&store, &power).await.expect("poll");
        assert_eq!(polled, 6, "five good BMCs and one refusing");
        assert_eq!(
            bmc.bmc
                .most_in_flight
                .load(std::sync::atomic::Ordering::SeqCst),
            2,
            "at most (and, with six to read, exactly) two BMC calls at once"
        );
        for n in 1..=8 {
            let status = store
                .call(move |conn| cached_status(conn, mac(n)))
                .await
                .expect("status");
            match n {
                1..=5 => assert_eq!(status.map(|s| s.state), Some("on".into()), "{n}"),
                6 => {
                    let status = status.expect("an error is cached too");
                    assert_eq!(status.state, "error");
                    assert!(status.detail.contains("credentials"), "{}", status.detail);
                    assert!(!status.detail.contains("wrong"), "{}", status.detail);
                }
                _ => assert_eq!(status, None, "{n} has no BMC to poll"),
            }
        }
        // The panel's column reads the same cache (Wake-on-LAN machines say so).
        let column = store.call(|conn| power_column(conn)).await.expect("column");
        assert_eq!(
            column.get(&mac(1).to_string()).map(String::as_str),
            Some("on")
        );
        assert_eq!(
            column.get(&mac(6).to_string()).map(String::as_str),
            Some("error")
        );
        assert_eq!(
            column.get(&mac(7).to_string()).map(String::as_str),
            Some("wol")
        );
        assert_eq!(column.get(&mac(8).to_string()), None);
    }

    /// Without a system id the BMC's only system is looked up first, then used.
    #[tokio::test]
    async fn without_a_system_id_the_only_system_is_used() {
        let bmc = fake_redfish::FakeRedfish::start().await;
        let store = store_with_machine().await;
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let spec = ControllerSpec::Redfish {
            url: bmc.url.clone(),
            user: "root".into(),
            password: Some("calvin".into()),
            system_id: None,
            verify_tls: None,
        };
        let controller = store
            .call(move |conn| put_controller(conn, mac, spec, "test", 0))
            .await
            .expect("controller");
        assert!(controller.summary().contains("system=(the only one)"));
        let power = Arc::new(Power::new(PowerConfig::default()));
        let outcome = run_verb(&store, &power, mac, Verb::Status, "user:ann")
            .await
            .expect("status");
        assert_eq!(outcome.state, Some(PowerState::Off));
        let paths: Vec<String> = bmc.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(paths, ["/redfish/v1/Systems", "/redfish/v1/Systems/1"]);
        // Found once: the next call goes straight to the system.
        run_verb(&store, &power, mac, Verb::Status, "user:ann")
            .await
            .expect("status again");
        assert_eq!(bmc.seen().len(), 3);
        assert_eq!(bmc.seen()[2].path, "/redfish/v1/Systems/1");
    }
}
