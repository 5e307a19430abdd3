//! Panel users, browser sessions and API tokens: their rows, nothing more. Secrets
//! arrive here already digested (`auth::digest`); which action is allowed, and the
//! audit events, are the service layer's (`service::users`).

use crate::auth::{ApiToken, LoginRecord, Principal, Role, User};
use crate::store::Db;
use crate::store::StoreError;
use rusqlite::{OptionalExtension, params};

// ---- users ----

pub fn user_count(conn: &Db) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

pub fn user_exists(conn: &Db, name: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = conn
        .query_row("SELECT 1 FROM users WHERE name = ?1", [name], |r| r.get(0))
        .optional()?;
    Ok(found.is_some())
}

pub fn insert_user(
    conn: &Db,
    name: &str,
    password_hash: &str,
    role: Role,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO users (name, password_hash, role, created_ms) VALUES (?1, ?2, ?3, ?4)",
        params![name, password_hash, role.as_str(), now_ms],
    )?;
    Ok(())
}

pub fn list_users(conn: &Db) -> Result<Vec<User>, StoreError> {
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

/// Admins other than `name`.
pub fn count_other_admins(conn: &Db, name: &str) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM users WHERE role = 'admin' AND name <> ?1",
        [name],
        |r| r.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Deletes a user's row (its sessions go with it); whether one was there.
pub fn delete_user_row(conn: &Db, name: &str) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM users WHERE name = ?1", [name])? > 0)
}

/// A user's stored password hash and role, for checking a login off the database
/// thread (argon2 is deliberately slow). A row with an unknown role cannot log in.
pub fn login_record(conn: &Db, name: &str) -> Result<Option<LoginRecord>, StoreError> {
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT password_hash, role FROM users WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(password_hash, role)| {
        Some(LoginRecord {
            password_hash,
            role: role.parse().ok()?,
        })
    }))
}

// ---- sessions ----

/// Forgets sessions that have expired.
pub fn delete_expired_sessions(conn: &Db, now_ms: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM sessions WHERE expires_ms <= ?1", [now_ms])?;
    Ok(())
}

pub fn insert_session(
    conn: &Db,
    id_digest: &str,
    user: &str,
    csrf: &str,
    now_ms: i64,
    expires_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO sessions (id_hash, user, csrf, created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id_digest, user, csrf, now_ms, expires_ms],
    )?;
    Ok(())
}

/// The signed-in user of a live session.
pub fn session_by_digest(
    conn: &Db,
    id_digest: &str,
    now_ms: i64,
) -> Result<Option<Principal>, StoreError> {
    let row: Option<(String, String, String)> = conn
        .prepare_cached(
            "SELECT s.user, u.role, s.csrf FROM sessions s JOIN users u ON u.name = s.user
             WHERE s.id_hash = ?1 AND s.expires_ms > ?2",
        )?
        .query_row(params![id_digest, now_ms], |r| {
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

pub fn delete_session(conn: &Db, id_digest: &str) -> Result<(), StoreError> {
    conn.execute("DELETE FROM sessions WHERE id_hash = ?1", [id_digest])?;
    Ok(())
}

// ---- API tokens ----

pub fn token_exists(conn: &Db, name: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = conn
        .query_row("SELECT 1 FROM api_tokens WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(found.is_some())
}

pub fn insert_token(
    conn: &Db,
    name: &str,
    secret_digest: &str,
    role: Role,
    created_by: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO api_tokens (name, token_hash, role, created_ms, created_by) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![name, secret_digest, role.as_str(), now_ms, created_by],
    )?;
    Ok(())
}

pub fn list_tokens(conn: &Db) -> Result<Vec<ApiToken>, StoreError> {
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

/// Marks a live token revoked; whether there was one.
pub fn revoke_token_row(conn: &Db, name: &str, now_ms: i64) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE api_tokens SET revoked_ms = ?2 WHERE name = ?1 AND revoked_ms IS NULL",
        params![name, now_ms],
    )?;
    Ok(changed > 0)
}

/// A live token with this digest: its name, role and stored digest. A row with an
/// unknown role is not a live token.
pub fn live_token_by_digest(
    conn: &Db,
    secret_digest: &str,
) -> Result<Option<(String, Role, String)>, StoreError> {
    let row: Option<(String, String, String)> = conn
        .prepare_cached("SELECT name, role, token_hash FROM api_tokens WHERE token_hash = ?1 AND revoked_ms IS NULL")?
        .query_row([secret_digest], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(row.and_then(|(name, role, stored)| Some((name, role.parse().ok()?, stored))))
}

pub fn touch_token(conn: &Db, name: &str, now_ms: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE api_tokens SET last_used_ms = ?2 WHERE name = ?1")?
        .execute(params![name, now_ms])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Db {
        crate::store::open_connection_for_tests()
    }

    #[test]
    fn users_are_stored_listed_and_deleted() {
        let conn = db();
        assert_eq!(user_count(&conn).expect("count"), 0);
        insert_user(&conn, "ann", "$hash", Role::Admin, 5).expect("insert");
        insert_user(&conn, "bob", "$hash2", Role::Viewer, 6).expect("insert");
        assert!(
            insert_user(&conn, "ann", "$x", Role::Viewer, 7).is_err(),
            "unique"
        );
        assert_eq!(user_count(&conn).expect("count"), 2);
        assert!(user_exists(&conn, "ann").expect("q"));
        assert!(!user_exists(&conn, "carl").expect("q"));
        let users = list_users(&conn).expect("list");
        assert_eq!(
            users
                .iter()
                .map(|u| (u.name.as_str(), u.role, u.created_ms))
                .collect::<Vec<_>>(),
            [("ann", Role::Admin, 5), ("bob", Role::Viewer, 6)]
        );
        assert_eq!(count_other_admins(&conn, "ann").expect("q"), 0);
        assert_eq!(count_other_admins(&conn, "bob").expect("q"), 1);
        let record = login_record(&conn, "bob").expect("q").expect("there");
        assert_eq!(
            (record.password_hash.as_str(), record.role),
            ("$hash2", Role::Viewer)
        );
        assert!(login_record(&conn, "carl").expect("q").is_none());
        assert!(delete_user_row(&conn, "bob").expect("delete"));
        assert!(!delete_user_row(&conn, "bob").expect("delete"));
        assert_eq!(user_count(&conn).expect("count"), 1);
    }

    #[test]
    fn sessions_are_found_by_digest_until_they_expire_or_end() {
        let conn = db();
        insert_user(&conn, "ann", "$hash", Role::Operator, 0).expect("insert");
        insert_session(&conn, "d1", "ann", "c1", 1000, 5000).expect("session");
        let who = session_by_digest(&conn, "d1", 2000)
            .expect("q")
            .expect("live");
        assert_eq!((who.name.as_str(), who.role), ("ann", Role::Operator));
        assert_eq!(who.csrf.as_deref(), Some("c1"));
        assert!(!who.via_token);
        assert!(session_by_digest(&conn, "d1", 5000).expect("q").is_none());
        assert!(session_by_digest(&conn, "d2", 2000).expect("q").is_none());
        delete_expired_sessions(&conn, 5000).expect("prune");
        assert!(session_by_digest(&conn, "d1", 2000).expect("q").is_none());
        insert_session(&conn, "d3", "ann", "c3", 1000, 5000).expect("session");
        delete_session(&conn, "d3").expect("end");
        assert!(session_by_digest(&conn, "d3", 2000).expect("q").is_none());
    }

    #[test]
    fn tokens_are_found_by_digest_until_revoked() {
        let conn = db();
        assert!(!token_exists(&conn, "ci").expect("q"));
        insert_token(&conn, "ci", "digest", Role::Operator, "user:ann", 0).expect("insert");
        assert!(token_exists(&conn, "ci").expect("q"));
        let (name, role, stored) = live_token_by_digest(&conn, "digest")
            .expect("q")
            .expect("live");
        assert_eq!(
            (name.as_str(), role, stored.as_str()),
            ("ci", Role::Operator, "digest")
        );
        assert!(live_token_by_digest(&conn, "other").expect("q").is_none());
        touch_token(&conn, "ci", 5).expect("touch");
        assert!(revoke_token_row(&conn, "ci", 6).expect("revoke"));
        assert!(!revoke_token_row(&conn, "ci", 7).expect("revoke"), "once");
        assert!(live_token_by_digest(&conn, "digest").expect("q").is_none());
        let tokens = list_tokens(&conn).expect("list");
        assert_eq!(tokens[0].last_used_ms, Some(5));
        assert_eq!(tokens[0].revoked_ms, Some(6));
        assert_eq!(tokens[0].created_by.as_deref(), Some("user:ann"));
    }
}
