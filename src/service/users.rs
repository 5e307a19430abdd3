//! Panel users, their sessions, and API tokens: adding and deleting users (admins
//! only), the first admin through the one-time setup link, logging in with the
//! failure limit, and creating, listing and revoking tokens.

use super::{Caller, Need, ServiceError, Services};
use crate::auth::{self, ApiToken, Principal, Role, User};
use std::net::IpAddr;

/// A session just opened: the cookie's value and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub csrf: String,
    pub role: Role,
}

/// Why a login did not open a session; both are said without naming which of the
/// user or the password was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    WrongCredentials,
    TooManyFailures,
}

fn checked_name(name: &str) -> Result<(), ServiceError> {
    auth::validate_user_name(name).map_err(|why| ServiceError::invalid("user", why))
}

async fn hash(password: String) -> Result<String, ServiceError> {
    auth::validate_password(&password).map_err(|why| ServiceError::invalid("password", why))?;
    // argon2 is deliberately slow: off the async workers and off the database thread.
    tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(|e| ServiceError::Files(format!("password hashing stopped: {e}")))?
        .map_err(ServiceError::Files)
}

impl Services {
    pub async fn add_user(
        &self,
        caller: &Caller,
        now_ms: i64,
        name: String,
        password: String,
        role: Role,
    ) -> Result<(), ServiceError> {
        caller.require(Need::Admin)?;
        checked_name(&name)?;
        let hash = hash(password).await?;
        let actor = caller.actor_text();
        self.store
            .transaction(move |tx| Ok(auth::add_user(tx, &name, &hash, role, &actor, now_ms)?))
            .await
    }

    /// The first admin, through the one-time setup link, while no user exists.
    pub async fn add_first_admin(
        &self,
        now_ms: i64,
        name: String,
        password: String,
    ) -> Result<(), ServiceError> {
        checked_name(&name)?;
        let hash = hash(password).await?;
        self.store
            .transaction(move |tx| {
                if auth::user_count(tx)? > 0 {
                    return Err(ServiceError::Conflict("an admin already exists".into()));
                }
                Ok(auth::add_user(
                    tx,
                    &name,
                    &hash,
                    Role::Admin,
                    "setup-link",
                    now_ms,
                )?)
            })
            .await
    }

    pub async fn delete_user(
        &self,
        caller: &Caller,
        now_ms: i64,
        name: String,
    ) -> Result<(), ServiceError> {
        caller.require(Need::Admin)?;
        let actor = caller.actor_text();
        self.store
            .transaction(move |tx| Ok(auth::delete_user(tx, &name, &actor, now_ms)?))
            .await
    }

    pub async fn users(&self, caller: &Caller) -> Result<Vec<User>, ServiceError> {
        caller.require(Need::Admin)?;
        Ok(self.store.call(|conn| auth::list_users(conn)).await?)
    }

    pub async fn user_count(&self) -> Result<u64, ServiceError> {
        Ok(self.store.call(|conn| auth::user_count(conn)).await?)
    }

    /// Checks a user name and password from `peer` and opens a session. Failures
    /// are counted per address and per user name; past the limit, attempts are
    /// refused without checking the password.
    pub async fn login(
        &self,
        now_ms: i64,
        name: String,
        password: String,
        peer: IpAddr,
    ) -> Result<Result<NewSession, LoginRefused>, ServiceError> {
        let ip_key = format!("ip:{peer}");
        let user_key = format!("user:{name}");
        let keys = [ip_key.as_str(), user_key.as_str()];
        if !self.limiter.allowed(&keys, now_ms) {
            return Ok(Err(LoginRefused::TooManyFailures));
        }
        let who = name.clone();
        let record = self
            .store
            .call(move |conn| auth::login_record(conn, &who))
            .await?;
        let role = tokio::task::spawn_blocking(move || auth::check_password(record, &password))
            .await
            .map_err(|e| ServiceError::Files(format!("password check stopped: {e}")))?;
        let Some(role) = role else {
            self.limiter.failed(&keys, now_ms);
            return Ok(Err(LoginRefused::WrongCredentials));
        };
        let (id, csrf) = self
            .store
            .call(move |conn| auth::create_session(conn, &name, now_ms))
            .await?;
        self.limiter.succeeded(&[user_key.as_str()]);
        Ok(Ok(NewSession { id, csrf, role }))
    }

    /// The signed-in user of a session cookie, if the session is live.
    pub async fn session(
        &self,
        now_ms: i64,
        id: String,
    ) -> Result<Option<Principal>, ServiceError> {
        Ok(self
            .store
            .call(move |conn| auth::session(conn, &id, now_ms))
            .await?)
    }

    pub async fn logout(&self, id: String) -> Result<(), ServiceError> {
        Ok(self
            .store
            .call(move |conn| auth::end_session(conn, &id))
            .await?)
    }

    /// Creates a token; its secret is returned once and stored only as a digest.
    pub async fn create_token(
        &self,
        caller: &Caller,
        now_ms: i64,
        name: String,
        role: Role,
    ) -> Result<String, ServiceError> {
        caller.require(Need::Admin)?;
        checked_name(&name)?;
        let actor = caller.actor_text();
        self.store
            .transaction(move |tx| Ok(auth::create_token(tx, &name, role, &actor, now_ms)?))
            .await
    }

    pub async fn tokens(&self, caller: &Caller) -> Result<Vec<ApiToken>, ServiceError> {
        caller.require(Need::Admin)?;
        Ok(self.store.call(|conn| auth::list_tokens(conn)).await?)
    }

    pub async fn revoke_token(
        &self,
        caller: &Caller,
        now_ms: i64,
        name: String,
    ) -> Result<(), ServiceError> {
        caller.require(Need::Admin)?;
        let actor = caller.actor_text();
        self.store
            .transaction(move |tx| Ok(auth::revoke_token(tx, &name, &actor, now_ms)?))
            .await
    }

    /// The caller behind a bearer token, if it is live.
    pub async fn token_principal(
        &self,
        now_ms: i64,
        secret: String,
    ) -> Result<Option<Principal>, ServiceError> {
        Ok(self
            .store
            .call(move |conn| auth::token_principal(conn, &secret, now_ms))
            .await?)
    }
}
