//! Who may do what, as types and rules without storage: roles, users with
//! argon2-hashed passwords, the secrets of browser sessions (random ids, stored only
//! as digests, each with its CSRF token) and of bearer API tokens, and the login
//! rate limiter. Their rows are `store::auth`'s; the actions are `service::users`'.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
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

/// What is stored of a session id or a token secret: a leaked database holds no
/// usable secret.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new session's id (for the cookie) and its CSRF token.
pub fn new_session_secrets() -> (String, String) {
    (random_hex(32), random_hex(32))
}

/// A new API token's secret, shown once.
pub fn new_token_secret() -> String {
    format!("rbt_{}", random_hex(32))
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

/// The longest user (and token) name.
pub const MAX_USER_NAME_CHARS: usize = 64;

pub fn validate_user_name(name: &str) -> Result<(), String> {
    let ok = (1..=MAX_USER_NAME_CHARS).contains(&name.len())
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

// ---- users and tokens ----

#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
    pub created_by: Option<String>,
    pub revoked_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
}

/// What a login is checked against: a user's stored password hash and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRecord {
    pub password_hash: String,
    pub role: Role,
}

/// A hash to verify against when the user does not exist, so a missing user takes as
/// long as a wrong password.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Checks a password against a user's `LoginRecord`; `None` for a wrong user or
/// password (which one is not said). Blocking, and about 19 MiB while it runs.
pub fn check_password(record: Option<&LoginRecord>, password: &str) -> Option<Role> {
    match record {
        Some(record) => verify_password(password, &record.password_hash).then_some(record.role),
        None => {
            let _ = verify_password(password, DECOY_HASH);
            None
        }
    }
}

// ---- login rate limiting ----

/// Counts login attempts per key (client address, user name) in a sliding window.
///
/// An attempt is counted before its password is checked (`try_attempt`), under the
/// lock, so parallel attempts cannot all pass the check before any is counted; one
/// that did not fail gives its slot back (`release`, `succeeded`).
/// The most keys the limiter keeps: a flood of logins must not grow it without end.
pub const LIMITER_KEYS: usize = 10_000;

#[derive(Default)]
pub struct LoginLimiter {
    attempts: Mutex<HashMap<String, Vec<i64>>>,
}

impl LoginLimiter {
    /// Whether another attempt would be allowed for every one of `keys`.
    pub fn allowed(&self, keys: &[&str], now_ms: i64) -> bool {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().all(|key| {
            attempts.get_mut(*key).is_none_or(|recent| {
                recent.retain(|t| now_ms - *t < LOGIN_WINDOW_MS);
                recent.len() < LOGIN_FAILURES_ALLOWED
            })
        })
    }

    /// Counts an attempt at `now_ms` against every one of `keys`, if each has room;
    /// otherwise counts nothing and says no.
    pub fn try_attempt(&self, keys: &[&str], now_ms: i64) -> bool {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        // Bound memory under a flood of made-up names or addresses: forget what is
        // past the window, and if that is not enough, the half attempted longest ago.
        if attempts.len() >= LIMITER_KEYS {
            attempts.retain(|_, times| times.iter().any(|t| now_ms - *t < LOGIN_WINDOW_MS));
        }
        if attempts.len() >= LIMITER_KEYS {
            let mut last: Vec<i64> = attempts
                .values()
                .map(|times| times.iter().copied().max().unwrap_or(i64::MIN))
                .collect();
            let cut = last.len() / 2;
            let (_, &mut median, _) = last.select_nth_unstable(cut);
            attempts.retain(|_, times| times.iter().any(|t| *t > median));
        }
        let room = keys.iter().all(|key| {
            attempts.get_mut(*key).is_none_or(|recent| {
                recent.retain(|t| now_ms - *t < LOGIN_WINDOW_MS);
                recent.len() < LOGIN_FAILURES_ALLOWED
            })
        });
        if room {
            for key in keys {
                attempts.entry((*key).to_string()).or_default().push(now_ms);
            }
        }
        room
    }

    /// Gives back the slot an attempt at `at_ms` took on each of `keys`: it was not
    /// a failure (it succeeded, or it was turned away before its check).
    pub fn release(&self, keys: &[&str], at_ms: i64) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            if let Some(recent) = attempts.get_mut(*key) {
                if let Some(at) = recent.iter().position(|t| *t == at_ms) {
                    recent.swap_remove(at);
                }
                if recent.is_empty() {
                    attempts.remove(*key);
                }
            }
        }
    }

    /// How many keys are kept.
    pub fn len(&self) -> usize {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` has attempts counted.
    pub fn counted(&self, key: &str) -> bool {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }

    /// Forgets every counted attempt of `keys`.
    pub fn succeeded(&self, keys: &[&str]) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            attempts.remove(*key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hashed_and_checked() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        let ann = LoginRecord {
            password_hash: hash,
            role: Role::Admin,
        };
        assert_eq!(
            check_password(Some(&ann), "correct horse battery"),
            Some(Role::Admin)
        );
        assert_eq!(check_password(Some(&ann), "wrong"), None);
        assert_eq!(check_password(None, "correct horse battery"), None);
    }

    #[test]
    fn secrets_are_random_and_stored_as_digests() {
        let (id, csrf) = new_session_secrets();
        assert_eq!((id.len(), csrf.len()), (64, 64));
        assert_ne!(id, csrf);
        let secret = new_token_secret();
        assert!(secret.starts_with("rbt_") && secret.len() > 60);
        assert_eq!(digest(&secret), digest(&secret));
        assert_ne!(digest(&secret), secret);
        assert_ne!(digest(&id), digest(&csrf));
    }

    #[test]
    fn names_and_passwords_are_validated() {
        assert!(validate_user_name("ann.b-c_d@x").is_ok());
        assert!(validate_user_name("").is_err());
        assert!(validate_user_name("a b").is_err());
        assert!(validate_user_name(&"a".repeat(65)).is_err());
        assert!(validate_password("0123456789").is_ok());
        assert!(validate_password("short").is_err());
    }

    #[test]
    fn login_limiter_blocks_after_repeated_failures() {
        let limiter = LoginLimiter::default();
        for _ in 0..LOGIN_FAILURES_ALLOWED {
            assert!(limiter.allowed(&["ip:1", "user:ann"], 0));
            assert!(limiter.try_attempt(&["ip:1", "user:ann"], 0));
        }
        assert!(!limiter.allowed(&["ip:1"], 1));
        assert!(!limiter.try_attempt(&["ip:1"], 1));
        assert!(!limiter.allowed(&["ip:2", "user:ann"], 1), "per user too");
        assert!(limiter.allowed(&["ip:2", "user:bob"], 1));
        assert!(limiter.allowed(&["ip:1", "user:ann"], LOGIN_WINDOW_MS + 1));
    }

    #[test]
    fn a_refused_attempt_counts_nothing_and_a_released_one_gives_its_slot_back() {
        let limiter = LoginLimiter::default();
        for _ in 0..LOGIN_FAILURES_ALLOWED {
            assert!(limiter.try_attempt(&["user:ann"], 0));
        }
        // Refused because of ann's count: the address is not charged for it.
        assert!(!limiter.try_attempt(&["ip:1", "user:ann"], 0));
        assert!(limiter.try_attempt(&["ip:1"], 0));
        limiter.release(&["user:ann"], 0);
        assert!(limiter.try_attempt(&["user:ann"], 0));
        assert!(!limiter.try_attempt(&["user:ann"], 0));
        limiter.succeeded(&["user:ann"]);
        assert!(limiter.try_attempt(&["user:ann"], 0));
    }

    #[test]
    fn roles_order_permissions() {
        assert!(!Role::Viewer.can_change());
        assert!(Role::Operator.can_change() && !Role::Operator.can_admin());
        assert!(Role::Admin.can_admin());
        assert!("root".parse::<Role>().is_err());
    }
}
