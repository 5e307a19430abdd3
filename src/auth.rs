//! Who may do what: users with argon2-hashed passwords and roles, browser sessions
//! (random ids stored hashed, each with its CSRF token), bearer API tokens (stored
//! hashed), and a login rate limiter.

use crate::lifecycle::constant_time_eq;
use crate::store::StoreError;
use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;

/// How long a panel session lasts without logging in again.
pub const SESSION_TTL_MS: i64 = 12 * 3600 * 1000;
/// Failed logins allowed per client address and per user name in `LOGIN_WINDOW_MS`.
pub const LOGIN_FAILURES_ALLOWED: usize = 5;
pub const LOGIN_WINDOW_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
    /// Operators and admins change machines and images; viewers only look.
    pub fn can_change(self) -> bool {
        self >= Role::Operator
    }
    /// Only admins manage users and tokens.
    pub fn can_admin(self) -> bool {
        self == Role::Admin
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}; expected admin, operator or viewer"
            )),
        }
    }
}

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// The session's CSRF token; `None` for API tokens (no cookies, no CSRF).
    pub csrf: Option<String>,
    pub via_token: bool,
}

impl Principal {
    /// How this principal appears in the audit log.
    pub fn actor(&self) -> String {
        if self.via_token {
            format!("token:{}", self.name)
        } else {
            format!("user:{}", self.name)
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash password: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

pub fn validate_user_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?} must be 1-64 letters, digits, '.', '_', '-' or '@'"
        ))
    }
}

pub fn validate_password(password: &str) -> Result<(), String> {
    if password.chars().count() < 10 {
        return Err("the password must have at least 10 characters".into());
    }
    Ok(())
}

// ---- users ----

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
}

pub fn user_count(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub fn add_user(
    conn: &Connection,
    name: &str,
    password_hash: &str,
    role: Role,
    actor: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    validate_user_name(name).map_err(StoreError::Conflict)?;
    let exists: Option<i64> = conn
        .query_row("SELECT 1 FROM users WHERE name = ?1", [name], |r| r.get(0))
        .optional()?;
    if exists.is_some() {
        return Err(StoreError::Conflict(format!("user {name} already exists")));
    }
    conn.execute(
        "INSERT INTO users (name, password_hash, role, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![name, password_hash, role.as_str(), now_ms],
    )?;
    crate::store::insert_event_by(
        conn,
        now_ms,
        None,
        "user.added",
        format!("{name} role={}", role.as_str()),
        Some(actor),
    )
}

pub fn list_users(conn: &Connection) -> Result<Vec<User>, StoreError> {
    let mut stmt = conn.prepare("SELECT name, role, created_ms FROM users ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    rows.map(|row| {
        let (name, role, created_ms) = row?;
        let role = role.parse().map_err(|_| StoreError::Corrupt {
            column: "users.role",
            value: role,
        })?;
        Ok(User {
            name,
            role,
            created_ms,
        })
    })
    .collect()
}

pub fn delete_user(
    conn: &Connection,
    name: &str,
    actor: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let admins: i64 = conn.query_row(
        "SELECT count(*) FROM users WHERE role = 'admin' AND name <> ?1",
        [name],
        |r| r.get(0),
    )?;
    if admins == 0 {
        return Err(StoreError::Conflict(
            "the last admin cannot be deleted".into(),
        ));
    }
    if conn.execute("DELETE FROM users WHERE name = ?1", [name])? == 0 {
        return Err(StoreError::NotFound(format!("no user {name}")));
    }
    crate::store::insert_event_by(
        conn,
        now_ms,
        None,
        "user.deleted",
        name.to_string(),
        Some(actor),
    )
}

/// A user's stored password hash and role, for checking a login off the database
/// thread (argon2 is deliberately slow).
pub fn login_record(conn: &Connection, name: &str) -> Result<Option<(String, Role)>, StoreError> {
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT password_hash, role FROM users WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(hash, role)| Some((hash, role.parse().ok()?))))
}

/// A hash to verify against when the user does not exist, so a missing user takes as
/// long as a wrong password.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Checks a password against a `login_record`; `None` for a wrong user or password
/// (which one is not said). Blocking.
pub fn check_password(record: Option<(String, Role)>, password: &str) -> Option<Role> {
    match record {
        Some((hash, role)) => verify_password(password, &hash).then_some(role),
        None => {
            let _ = verify_password(password, DECOY_HASH);
            None
        }
    }
}

#[cfg(test)]
fn check_login(conn: &Connection, name: &str, password: &str) -> Result<Option<Role>, StoreError> {
    Ok(check_password(login_record(conn, name)?, password))
}

// ---- sessions ----

/// Starts a session; returns its id (for the cookie) and its CSRF token.
pub fn create_session(
    conn: &Connection,
    user: &str,
    now_ms: i64,
) -> Result<(String, String), StoreError> {
    let id = random_hex(32);
    let csrf = random_hex(32);
    conn.execute("DELETE FROM sessions WHERE expires_ms <= ?1", [now_ms])?;
    conn.execute(
        "INSERT INTO sessions (id_hash, user, csrf, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![digest(&id), user, csrf, now_ms, now_ms + SESSION_TTL_MS],
    )?;
    Ok((id, csrf))
}

pub fn session(conn: &Connection, id: &str, now_ms: i64) -> Result<Option<Principal>, StoreError> {
    let row: Option<(String, String, String)> = conn
        .prepare_cached(
            "SELECT s.user, u.role, s.csrf FROM sessions s JOIN users u ON u.name = s.user
             WHERE s.id_hash = ?1 AND s.expires_ms > ?2",
        )?
        .query_row(params![digest(id), now_ms], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    Ok(row.and_then(|(name, role, csrf)| {
        Some(Principal {
            name,
            role: role.parse().ok()?,
            csrf: Some(csrf),
            via_token: false,
        })
    }))
}

pub fn end_session(conn: &Connection, id: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM sessions WHERE id_hash = ?1", [digest(id)])?;
    Ok(())
}

// ---- API tokens ----

#[derive(Debug, Clone, Serialize)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
    pub created_by: Option<String>,
    pub revoked_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
}

/// Creates a token and returns its secret, shown once.
pub fn create_token(
    conn: &Connection,
    name: &str,
    role: Role,
    actor: &str,
    now_ms: i64,
) -> Result<String, StoreError> {
    validate_user_name(name).map_err(StoreError::Conflict)?;
    let exists: Option<i64> = conn
        .query_row("SELECT 1 FROM api_tokens WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?;
    if exists.is_some() {
        return Err(StoreError::Conflict(format!(
            "a token named {name} already exists"
        )));
    }
    let secret = format!("rbt_{}", random_hex(32));
    conn.execute(
        "INSERT INTO api_tokens (name, token_hash, role, created_ms, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, digest(&secret), role.as_str(), now_ms, actor],
    )?;
    crate::store::insert_event_by(
        conn,
        now_ms,
        None,
        "token.created",
        format!("{name} role={}", role.as_str()),
        Some(actor),
    )?;
    Ok(secret)
}

pub fn list_tokens(conn: &Connection) -> Result<Vec<ApiToken>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT name, role, created_ms, created_by, revoked_ms, last_used_ms FROM api_tokens ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<i64>>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ))
    })?;
    rows.map(|row| {
        let (name, role, created_ms, created_by, revoked_ms, last_used_ms) = row?;
        Ok(ApiToken {
            name,
            role: role.parse().map_err(|_| StoreError::Corrupt {
                column: "api_tokens.role",
                value: role,
            })?,
            created_ms,
            created_by,
            revoked_ms,
            last_used_ms,
        })
    })
    .collect()
}

pub fn revoke_token(
    conn: &Connection,
    name: &str,
    actor: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let changed = conn.execute(
        "UPDATE api_tokens SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms IS NULL",
        params![name, now_ms],
    )?;
    if changed == 0 {
        return Err(StoreError::NotFound(format!("no live token named {name}")));
    }
    crate::store::insert_event_by(
        conn,
        now_ms,
        None,
        "token.revoked",
        name.to_string(),
        Some(actor),
    )
}

/// The principal behind a bearer token, if it is live.
pub fn token_principal(
    conn: &Connection,
    secret: &str,
    now_ms: i64,
) -> Result<Option<Principal>, StoreError> {
    let hash = digest(secret);
    let row: Option<(String, String, String)> = conn
        .prepare_cached("SELECT name, role, token_hash FROM api_tokens WHERE token_hash = ?1 AND revoked_ms IS NULL")?
        .query_row([&hash], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((name, role, stored)) = row else {
        return Ok(None);
    };
    if !constant_time_eq(stored.as_bytes(), hash.as_bytes()) {
        return Ok(None);
    }
    conn.prepare_cached("UPDATE api_tokens SET last_used_ms = ?2 WHERE name = ?1")?
        .execute(params![name, now_ms])?;
    Ok(role.parse().ok().map(|role| Principal {
        name,
        role,
        csrf: None,
        via_token: true,
    }))
}

// ---- login rate limiting ----

/// Counts failed logins per key (client address, user name) in a sliding window.
#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<i64>>>,
}

impl LoginLimiter {
    /// Whether another attempt is allowed for every one of `keys`.
    pub fn allowed(&self, keys: &[&str], now_ms: i64) -> bool {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().all(|key| {
            let recent = failures.entry((*key).to_string()).or_default();
            recent.retain(|t| now_ms - *t < LOGIN_WINDOW_MS);
            recent.len() < LOGIN_FAILURES_ALLOWED
        })
    }

    pub fn failed(&self, keys: &[&str], now_ms: i64) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Bound memory under a flood of made-up user names.
        if failures.len() > 10_000 {
            failures.retain(|_, times| times.iter().any(|t| now_ms - *t < LOGIN_WINDOW_MS));
        }
        for key in keys {
            failures.entry((*key).to_string()).or_default().push(now_ms);
        }
    }

    pub fn succeeded(&self, keys: &[&str]) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            failures.remove(*key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        crate::store::open_connection_for_tests()
    }

    #[test]
    fn passwords_are_hashed_and_checked() {
        let conn = db();
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        add_user(&conn, "ann", &hash, Role::Admin, "cli", 0).expect("add");
        assert_eq!(
            check_login(&conn, "ann", "correct horse battery").expect("q"),
            Some(Role::Admin)
        );
        assert_eq!(check_login(&conn, "ann", "wrong").expect("q"), None);
        assert_eq!(
            check_login(&conn, "bob", "correct horse battery").expect("q"),
            None
        );
        assert!(add_user(&conn, "ann", &hash, Role::Viewer, "cli", 0).is_err());
        assert!(
            delete_user(&conn, "ann", "cli", 1).is_err(),
            "last admin stays"
        );
    }

    #[test]
    fn sessions_expire_and_end() {
        let conn = db();
        add_user(
            &conn,
            "ann",
            &hash_password("0123456789").expect("h"),
            Role::Operator,
            "cli",
            0,
        )
        .expect("add");
        let (id, csrf) = create_session(&conn, "ann", 1000).expect("session");
        let who = session(&conn, &id, 2000).expect("q").expect("valid");
        assert_eq!((who.name.as_str(), who.role), ("ann", Role::Operator));
        assert_eq!(who.csrf.as_deref(), Some(csrf.as_str()));
        assert_eq!(who.actor(), "user:ann");
        assert!(
            session(&conn, &id, 1000 + SESSION_TTL_MS)
                .expect("q")
                .is_none()
        );
        assert!(session(&conn, "forged", 2000).expect("q").is_none());
        end_session(&conn, &id).expect("end");
        assert!(session(&conn, &id, 2000).expect("q").is_none());
    }

    #[test]
    fn tokens_work_until_revoked() {
        let conn = db();
        let secret = create_token(&conn, "ci", Role::Operator, "user:ann", 0).expect("token");
        assert!(secret.starts_with("rbt_") && secret.len() > 60);
        let who = token_principal(&conn, &secret, 5)
            .expect("q")
            .expect("live");
        assert_eq!(who.actor(), "token:ci");
        assert_eq!(who.csrf, None);
        assert!(
            token_principal(&conn, "rbt_forged", 5)
                .expect("q")
                .is_none()
        );
        revoke_token(&conn, "ci", "user:ann", 6).expect("revoke");
        assert!(token_principal(&conn, &secret, 7).expect("q").is_none());
        assert_eq!(list_tokens(&conn).expect("list")[0].last_used_ms, Some(5));
    }

    #[test]
    fn login_limiter_blocks_after_repeated_failures() {
        let limiter = LoginLimiter::default();
        for _ in 0..LOGIN_FAILURES_ALLOWED {
            assert!(limiter.allowed(&["ip:1", "user:ann"], 0));
            limiter.failed(&["ip:1", "user:ann"], 0);
        }
        assert!(!limiter.allowed(&["ip:1"], 1));
        assert!(!limiter.allowed(&["ip:2", "user:ann"], 1), "per user too");
        assert!(limiter.allowed(&["ip:2", "user:bob"], 1));
        assert!(limiter.allowed(&["ip:1", "user:ann"], LOGIN_WINDOW_MS + 1));
    }

    #[test]
    fn roles_order_permissions() {
        assert!(!Role::Viewer.can_change());
        assert!(Role::Operator.can_change() && !Role::Operator.can_admin());
        assert!(Role::Admin.can_admin());
        assert!("root".parse::<Role>().is_err());
    }
}
