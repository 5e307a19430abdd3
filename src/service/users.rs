//! Panel users, their sessions, and API tokens: adding and deleting users (admins
//! only), the first admin through the one-time setup link, logging in with the
//! failure limit and a bound on password checks at once, and creating, listing and
//! revoking tokens.

use super::{Caller, Need, ServiceError, Services};
use crate::auth::{self, ApiToken, LoginRecord, Principal, Role, User};
use crate::lifecycle::constant_time_eq;
use crate::store::Db;
use crate::store::{self, auth as rows};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A session just opened: the cookie's value and the session's CSRF token.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub csrf: String,
    pub role: Role,
}

/// Why a login did not open a session; none of them says which of the user or the
/// password was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    WrongCredentials,
    TooManyFailures,
    /// Too many password checks running and waiting: try again shortly. The
    /// attempt is not counted against the limit.
    Busy,
}

/// How a password is checked against a user's record (`auth::check_password`;
/// tests put a counting or blocking one in its place).
pub type CheckPassword = dyn Fn(Option<&LoginRecord>, &str) -> Option<Role> + Send + Sync;

/// Bounds the argon2 work in flight. Each check holds about 19 MiB on a blocking
/// thread for a noticeable time, so unbounded, a burst of anonymous logins exhausts
/// memory. A few run at once, a short queue waits behind them with a deadline, and
/// anything beyond is turned away at once rather than held.
pub struct PasswordChecks {
    /// Checks running plus waiting; when none is left a login is refused as busy.
    admitted: Arc<Semaphore>,
    /// Checks (and hashes) running.
    running: Arc<Semaphore>,
    /// How long a login waits in the queue before it is refused as busy.
    wait: Duration,
    check: Arc<CheckPassword>,
}

impl PasswordChecks {
    pub const RUNNING: usize = 2;
    pub const QUEUED: usize = 32;
    pub const WAIT: Duration = Duration::from_secs(5);

    /// `running + queued` logins are admitted at once; hashing a new password
    /// always gets one running place, or adding a user would wait forever.
    pub fn new(running: usize, queued: usize, wait: Duration) -> Self {
        PasswordChecks {
            admitted: Arc::new(Semaphore::new(running + queued)),
            running: Arc::new(Semaphore::new(running.max(1))),
            wait,
            check: Arc::new(auth::check_password),
        }
    }

    /// The same bounds around another check (for tests).
    pub fn with_check(mut self, check: Arc<CheckPassword>) -> Self {
        self.check = check;
        self
    }

    /// A place among the running checks, or `None` when the queue is full or the
    /// wait passed its deadline.
    async fn admit(&self) -> Option<CheckPermit> {
        let admitted = self.admitted.clone().try_acquire_owned().ok()?;
        let running = tokio::time::timeout(self.wait, self.running.clone().acquire_owned())
            .await
            .ok()?
            .ok()?;
        Some(CheckPermit {
            _admitted: admitted,
            _running: running,
        })
    }
}

impl Default for PasswordChecks {
    fn default() -> Self {
        PasswordChecks::new(Self::RUNNING, Self::QUEUED, Self::WAIT)
    }
}

/// Held by the blocking thread for as long as its argon2 work runs, so the bound
/// holds even when the request that asked has gone away.
struct CheckPermit {
    _admitted: OwnedSemaphorePermit,
    _running: OwnedSemaphorePermit,
}

fn checked_name(name: &str) -> Result<(), ServiceError> {
    auth::validate_user_name(name).map_err(|why| ServiceError::invalid("user", why))
}

/// Adds a user inside the caller's transaction, with its audit event.
fn add_user_in(
    tx: &Db,
    name: &str,
    password_hash: &str,
    role: Role,
    actor: &str,
    now_ms: i64,
) -> Result<(), ServiceError> {
    checked_name(name)?;
    if rows::user_exists(tx, name)? {
        return Err(ServiceError::Conflict(format!(
            "user {name} already exists"
        )));
    }
    rows::insert_user(tx, name, password_hash, role, now_ms)?;
    store::insert_event_by(
        tx,
        now_ms,
        None,
        "user.added",
        format!("{name} role={}", role.as_str()),
        Some(actor),
    )?;
    Ok(())
}

/// Deletes a user inside the caller's transaction, unless none would be left to
/// administer the rest.
fn delete_user_in(tx: &Db, name: &str, actor: &str, now_ms: i64) -> Result<(), ServiceError> {
    if !rows::user_exists(tx, name)? {
        return Err(ServiceError::NotFound(format!("no user {name}")));
    }
    if rows::count_other_admins(tx, name)? == 0 {
        return Err(ServiceError::Conflict(
            "the last admin cannot be deleted".into(),
        ));
    }
    rows::delete_user_row(tx, name)?;
    store::insert_event_by(
        tx,
        now_ms,
        None,
        "user.deleted",
        name.to_string(),
        Some(actor),
    )?;
    Ok(())
}

/// Opens a session for `user` (forgetting expired ones); its id and CSRF token.
fn open_session_in(tx: &Db, user: &str, now_ms: i64) -> Result<(String, String), ServiceError> {
    let (id, csrf) = auth::new_session_secrets();
    rows::delete_expired_sessions(tx, now_ms)?;
    rows::insert_session(
        tx,
        &auth::digest(&id),
        user,
        &csrf,
        now_ms,
        now_ms + auth::SESSION_TTL_MS,
    )?;
    Ok((id, csrf))
}

/// Creates a token inside the caller's transaction; its secret, shown once.
fn create_token_in(
    tx: &Db,
    name: &str,
    role: Role,
    actor: &str,
    now_ms: i64,
) -> Result<String, ServiceError> {
    checked_name(name)?;
    if rows::token_exists(tx, name)? {
        return Err(ServiceError::Conflict(format!(
            "a token named {name} already exists"
        )));
    }
    let secret = auth::new_token_secret();
    rows::insert_token(tx, name, &auth::digest(&secret), role, actor, now_ms)?;
    store::insert_event_by(
        tx,
        now_ms,
        None,
        "token.created",
        format!("{name} role={}", role.as_str()),
        Some(actor),
    )?;
    Ok(secret)
}

fn revoke_token_in(tx: &Db, name: &str, actor: &str, now_ms: i64) -> Result<(), ServiceError> {
    if !rows::revoke_token_row(tx, name, now_ms)? {
        return Err(ServiceError::NotFound(format!(
            "no live token named {name}"
        )));
    }
    store::insert_event_by(
        tx,
        now_ms,
        None,
        "token.revoked",
        name.to_string(),
        Some(actor),
    )?;
    Ok(())
}

/// The principal behind a bearer token, if it is live; notes when it was used.
fn token_principal_in(
    tx: &Db,
    secret: &str,
    now_ms: i64,
) -> Result<Option<Principal>, ServiceError> {
    let digest = auth::digest(secret);
    let Some((name, role, stored)) = rows::live_token_by_digest(tx, &digest)? else {
        return Ok(None);
    };
    if !constant_time_eq(stored.as_bytes(), digest.as_bytes()) {
        return Ok(None);
    }
    rows::touch_token(tx, &name, now_ms)?;
    Ok(Some(Principal {
        name,
        role,
        csrf: None,
        via_token: true,
    }))
}

impl Services {
    /// Hashes a new password, within the bound on argon2 work (no deadline: only
    /// admins and the one-time setup link get here).
    async fn hash(&self, password: String) -> Result<String, ServiceError> {
        auth::validate_password(&password).map_err(|why| ServiceError::invalid("password", why))?;
        let running = self
            .password_checks
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ServiceError::Files(format!("password hashing stopped: {e}")))?;
        // argon2 is deliberately slow: off the async workers and off the database thread.
        tokio::task::spawn_blocking(move || {
            let _running = running;
            auth::hash_password(&password)
        })
        .await
        .map_err(|e| ServiceError::Files(format!("password hashing stopped: {e}")))?
        .map_err(ServiceError::Files)
    }

    pub async fn add_user(
        &self,
        caller: &Caller,
        now_ms: i64,
        name: String,
        password: String,
        role: Role,
    ) -> Result<(), ServiceError> {
        caller.require(Need::Admin)?;
        // Before the slow hash, and again in the transaction.
        checked_name(&name)?;
        let hash = self.hash(password).await?;
        let actor = caller.actor_text();
        self.store
            .transaction(move |tx| add_user_in(tx, &name, &hash, role, &actor, now_ms))
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
        let hash = self.hash(password).await?;
        self.store
            .transaction(move |tx| {
                if rows::user_count(tx)? > 0 {
                    return Err(ServiceError::Conflict("an admin already exists".into()));
                }
                add_user_in(tx, &name, &hash, Role::Admin, "setup-link", now_ms)
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
            .transaction(move |tx| delete_user_in(tx, &name, &actor, now_ms))
            .await
    }

    pub async fn users(&self, caller: &Caller) -> Result<Vec<User>, ServiceError> {
        caller.require(Need::Admin)?;
        Ok(self.store.call(|conn| rows::list_users(conn)).await?)
    }

    pub async fn user_count(&self) -> Result<u64, ServiceError> {
        Ok(self.store.call(|conn| rows::user_count(conn)).await?)
    }

    /// Checks a user name and password from `peer` and opens a session.
    ///
    /// Each attempt is counted per address and per user name before its password
    /// is checked, so parallel attempts cannot outrun the limit; past it, attempts
    /// are refused without a check. A success gives its address slot back and
    /// clears the user's count. Checks wait for a place among the few that may
    /// run at once (`PasswordChecks`), or are refused as busy, uncounted.
    pub async fn login(
        &self,
        now_ms: i64,
        name: String,
        password: String,
        peer: IpAddr,
    ) -> Result<Result<NewSession, LoginRefused>, ServiceError> {
        // Failures count per address and per (user, address): one address cannot
        // lock a user out for everyone else. A name longer than any user's is cut
        // (no such user exists), so it cannot grow the limiter's memory either.
        let ip_key = format!("ip:{peer}");
        let short: String = name.chars().take(auth::MAX_USER_NAME_CHARS + 1).collect();
        let user_key = format!("user:{short}@{peer}");
        let keys = [ip_key.as_str(), user_key.as_str()];
        if !self.limiter.try_attempt(&keys, now_ms) {
            return Ok(Err(LoginRefused::TooManyFailures));
        }
        let Some(permit) = self.password_checks.admit().await else {
            self.limiter.release(&keys, now_ms);
            return Ok(Err(LoginRefused::Busy));
        };
        let who = name.clone();
        let record = self
            .store
            .call(move |conn| rows::login_record(conn, &who))
            .await?;
        let check = self.password_checks.check.clone();
        let role = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            check(record.as_ref(), &password)
        })
        .await
        .map_err(|e| ServiceError::Files(format!("password check stopped: {e}")))?;
        // A wrong password keeps the slot it took: that is the failure counted.
        let Some(role) = role else {
            return Ok(Err(LoginRefused::WrongCredentials));
        };
        let (id, csrf) = self
            .store
            .transaction(move |tx| open_session_in(tx, &name, now_ms))
            .await?;
        self.limiter.release(&[ip_key.as_str()], now_ms);
        self.limiter.succeeded(&[user_key.as_str()]);
        Ok(Ok(NewSession { id, csrf, role }))
    }

    /// The signed-in user of a session cookie, if the session is live.
    pub async fn session(
        &self,
        now_ms: i64,
        id: String,
    ) -> Result<Option<Principal>, ServiceError> {
        let digest = auth::digest(&id);
        Ok(self
            .store
            .call(move |conn| rows::session_by_digest(conn, &digest, now_ms))
            .await?)
    }

    pub async fn logout(&self, id: String) -> Result<(), ServiceError> {
        let digest = auth::digest(&id);
        Ok(self
            .store
            .call(move |conn| rows::delete_session(conn, &digest))
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
        let actor = caller.actor_text();
        self.store
            .transaction(move |tx| create_token_in(tx, &name, role, &actor, now_ms))
            .await
    }

    pub async fn tokens(&self, caller: &Caller) -> Result<Vec<ApiToken>, ServiceError> {
        caller.require(Need::Admin)?;
        Ok(self.store.call(|conn| rows::list_tokens(conn)).await?)
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
            .transaction(move |tx| revoke_token_in(tx, &name, &actor, now_ms))
            .await
    }

    /// The caller behind a bearer token, if it is live.
    pub async fn token_principal(
        &self,
        now_ms: i64,
        secret: String,
    ) -> Result<Option<Principal>, ServiceError> {
        self.store
            .transaction(move |tx| token_principal_in(tx, &secret, now_ms))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{LOGIN_FAILURES_ALLOWED, SESSION_TTL_MS};
    use crate::lifecycle::LifecycleConfig;
    use crate::store::Store;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};
    use tokio::task::JoinSet;

    fn db() -> Db {
        store::open_connection_for_tests()
    }

    fn services(checks: PasswordChecks) -> Services {
        let mut services = Services::new(
            Store::open_in_memory().expect("store"),
            LifecycleConfig::default(),
            Vec::new(),
            crate::power::PowerConfig::default(),
            std::env::temp_dir(),
        );
        services.password_checks = Arc::new(checks);
        services
    }

    fn check_login(conn: &Db, name: &str, password: &str) -> Option<Role> {
        let record = rows::login_record(conn, name).expect("q");
        auth::check_password(record.as_ref(), password)
    }

    fn kinds(conn: &Db) -> Vec<(String, String, Option<String>)> {
        store::list_events(conn, None, 100)
            .expect("events")
            .into_iter()
            .map(|e| (e.kind, e.detail, e.actor))
            .collect()
    }

    #[test]
    fn passwords_are_hashed_and_checked() {
        let conn = db();
        let hash = auth::hash_password("correct horse battery").expect("hash");
        assert!(hash.starts_with("$argon2id$"));
        add_user_in(&conn, "ann", &hash, Role::Admin, "cli", 0).expect("add");
        assert_eq!(
            check_login(&conn, "ann", "correct horse battery"),
            Some(Role::Admin)
        );
        assert_eq!(check_login(&conn, "ann", "wrong"), None);
        assert_eq!(check_login(&conn, "bob", "correct horse battery"), None);
        let again = add_user_in(&conn, "ann", &hash, Role::Viewer, "cli", 0);
        assert!(
            matches!(&again, Err(ServiceError::Conflict(why)) if why == "user ann already exists"),
            "{again:?}"
        );
        let last = delete_user_in(&conn, "ann", "cli", 1);
        assert!(
            matches!(&last, Err(ServiceError::Conflict(why)) if why == "the last admin cannot be deleted"),
            "last admin stays: {last:?}"
        );
    }

    #[test]
    fn users_are_checked_deleted_and_audited() {
        let conn = db();
        let bad = add_user_in(&conn, "a b", "$h", Role::Viewer, "cli:root", 0);
        assert!(matches!(
            bad,
            Err(ServiceError::Invalid { field: "user", .. })
        ));
        add_user_in(&conn, "ann", "$h", Role::Admin, "cli:root", 1).expect("add");
        add_user_in(&conn, "bea", "$h", Role::Admin, "user:ann", 2).expect("add");
        let missing = delete_user_in(&conn, "carl", "user:ann", 3);
        assert!(
            matches!(&missing, Err(ServiceError::NotFound(why)) if why == "no user carl"),
            "{missing:?}"
        );
        delete_user_in(&conn, "ann", "user:bea", 4).expect("another admin is left");
        assert_eq!(rows::user_count(&conn).expect("count"), 1);
        assert_eq!(
            kinds(&conn),
            [
                (
                    "user.added".into(),
                    "ann role=admin".into(),
                    Some("cli:root".into())
                ),
                (
                    "user.added".into(),
                    "bea role=admin".into(),
                    Some("user:ann".into())
                ),
                ("user.deleted".into(), "ann".into(), Some("user:bea".into())),
            ]
        );
    }

    #[test]
    fn sessions_expire_and_end() {
        let conn = db();
        add_user_in(
            &conn,
            "ann",
            &auth::hash_password("0123456789").expect("h"),
            Role::Operator,
            "cli",
            0,
        )
        .expect("add");
        let session = |id: &str, now_ms| {
            rows::session_by_digest(&conn, &auth::digest(id), now_ms).expect("q")
        };
        let (id, csrf) = open_session_in(&conn, "ann", 1000).expect("session");
        let who = session(&id, 2000).expect("valid");
        assert_eq!((who.name.as_str(), who.role), ("ann", Role::Operator));
        assert_eq!(who.csrf.as_deref(), Some(csrf.as_str()));
        assert_eq!(who.actor(), "user:ann");
        assert!(session(&id, 1000 + SESSION_TTL_MS).is_none());
        assert!(session("forged", 2000).is_none());
        rows::delete_session(&conn, &auth::digest(&id)).expect("end");
        assert!(session(&id, 2000).is_none());
    }

    #[test]
    fn tokens_work_until_revoked() {
        let conn = db();
        let secret = create_token_in(&conn, "ci", Role::Operator, "user:ann", 0).expect("token");
        assert!(secret.starts_with("rbt_") && secret.len() > 60);
        let who = token_principal_in(&conn, &secret, 5)
            .expect("q")
            .expect("live");
        assert_eq!(who.actor(), "token:ci");
        assert_eq!(who.csrf, None);
        assert!(
            token_principal_in(&conn, "rbt_forged", 5)
                .expect("q")
                .is_none()
        );
        let taken = create_token_in(&conn, "ci", Role::Viewer, "user:ann", 5);
        assert!(
            matches!(&taken, Err(ServiceError::Conflict(why)) if why == "a token named ci already exists"),
            "{taken:?}"
        );
        revoke_token_in(&conn, "ci", "user:ann", 6).expect("revoke");
        assert!(token_principal_in(&conn, &secret, 7).expect("q").is_none());
        let again = revoke_token_in(&conn, "ci", "user:ann", 8);
        assert!(
            matches!(&again, Err(ServiceError::NotFound(why)) if why == "no live token named ci"),
            "{again:?}"
        );
        assert_eq!(
            rows::list_tokens(&conn).expect("list")[0].last_used_ms,
            Some(5)
        );
        assert_eq!(
            kinds(&conn),
            [
                (
                    "token.created".into(),
                    "ci role=operator".into(),
                    Some("user:ann".into())
                ),
                ("token.revoked".into(), "ci".into(), Some("user:ann".into())),
            ]
        );
    }

    #[tokio::test]
    async fn a_login_opens_a_session_and_gives_its_address_slot_back() {
        let services = services(PasswordChecks::default());
        let admin = Caller::cli("root");
        services
            .add_user(
                &admin,
                0,
                "ann".into(),
                "a-long-password".into(),
                Role::Admin,
            )
            .await
            .expect("add");
        let peer: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..LOGIN_FAILURES_ALLOWED - 1 {
            let refused = services
                .login(10, "ann".into(), "wrong".into(), peer)
                .await
                .expect("login");
            assert_eq!(refused.err(), Some(LoginRefused::WrongCredentials));
        }
        let session = services
            .login(10, "ann".into(), "a-long-password".into(), peer)
            .await
            .expect("login")
            .expect("opened");
        assert_eq!(session.role, Role::Admin);
        let who = services
            .session(11, session.id.clone())
            .await
            .expect("q")
            .expect("live");
        assert_eq!(who.csrf.as_deref(), Some(session.csrf.as_str()));
        // The success was not counted: the address has one attempt left.
        assert!(services.limiter.try_attempt(&["ip:192.0.2.1"], 12));
        assert!(!services.limiter.try_attempt(&["ip:192.0.2.1"], 12));
        services.logout(session.id.clone()).await.expect("logout");
        assert!(services.session(13, session.id).await.expect("q").is_none());
    }

    /// Defect 9 of issue 17: five failures for a user from one address locked that
    /// user out from every address.
    #[tokio::test]
    async fn failures_from_one_address_do_not_lock_the_user_out_elsewhere() {
        let services = services(PasswordChecks::default());
        services
            .add_user(
                &Caller::cli("root"),
                0,
                "ann".into(),
                "a-long-password".into(),
                Role::Admin,
            )
            .await
            .expect("add");
        let attacker: IpAddr = [198, 51, 100, 9].into();
        for _ in 0..LOGIN_FAILURES_ALLOWED {
            let refused = services
                .login(10, "ann".into(), "guess".into(), attacker)
                .await
                .expect("login");
            assert_eq!(refused.err(), Some(LoginRefused::WrongCredentials));
        }
        let locked = services
            .login(11, "ann".into(), "a-long-password".into(), attacker)
            .await
            .expect("login");
        assert_eq!(locked.err(), Some(LoginRefused::TooManyFailures));
        let ann: IpAddr = [192, 0, 2, 20].into();
        let session = services
            .login(12, "ann".into(), "a-long-password".into(), ann)
            .await
            .expect("login");
        assert!(session.is_ok(), "ann logs in from her own address");
    }

    /// Defect 6 of issue 17: logins with made-up names (1 MiB each) grew the limiter
    /// without bound.
    #[test]
    fn the_limiter_keeps_a_bounded_number_of_keys() {
        let limiter = auth::LoginLimiter::default();
        for n in 0..(3 * auth::LIMITER_KEYS) {
            let key = format!("user:{n}@192.0.2.1");
            // All within one window: pruning by time alone would keep every one.
            limiter.try_attempt(&[key.as_str()], i64::try_from(n).unwrap_or(0));
        }
        assert!(limiter.len() <= auth::LIMITER_KEYS, "{}", limiter.len());
        // The newest attempts are the ones kept.
        let newest = format!("user:{}@192.0.2.1", 3 * auth::LIMITER_KEYS - 1);
        assert!(limiter.counted(&newest));
    }

    /// Defect 5 of issue 17: 40 parallel wrong passwords from one address were all
    /// checked, because each failure was counted only after its check.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parallel_wrong_passwords_from_one_address_are_checked_at_most_the_limit() {
        let checked = Arc::new(AtomicUsize::new(0));
        let counter = checked.clone();
        let services = services(PasswordChecks::default().with_check(Arc::new(
            move |record, password| {
                counter.fetch_add(1, Ordering::SeqCst);
                auth::check_password(record, password)
            },
        )));
        let peer: IpAddr = [192, 0, 2, 7].into();
        let mut logins = JoinSet::new();
        for n in 0..40 {
            let services = services.clone();
            // A different user each time: only the address limit holds them back.
            logins.spawn(async move {
                services
                    .login(0, format!("user{n}"), "wrong".into(), peer)
                    .await
                    .expect("login")
                    .err()
            });
        }
        let (mut wrong, mut too_many) = (0, 0);
        while let Some(outcome) = logins.join_next().await {
            match outcome.expect("task") {
                Some(LoginRefused::WrongCredentials) => wrong += 1,
                Some(LoginRefused::TooManyFailures) => too_many += 1,
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!(checked.load(Ordering::SeqCst), LOGIN_FAILURES_ALLOWED);
        assert_eq!(
            (wrong, too_many),
            (LOGIN_FAILURES_ALLOWED, 40 - LOGIN_FAILURES_ALLOWED)
        );
    }

    /// A password check that blocks until released, counting how many run at once.
    #[derive(Default)]
    struct HeldChecks {
        released: Mutex<bool>,
        wake: Condvar,
        running: AtomicUsize,
        most: AtomicUsize,
        done: AtomicUsize,
    }

    impl HeldChecks {
        fn check(self: &Arc<Self>) -> Arc<CheckPassword> {
            let held = self.clone();
            Arc::new(move |_, _| {
                let now = held.running.fetch_add(1, Ordering::SeqCst) + 1;
                held.most.fetch_max(now, Ordering::SeqCst);
                let mut released = held.released.lock().unwrap_or_else(|p| p.into_inner());
                while !*released {
                    released = held.wake.wait(released).unwrap_or_else(|p| p.into_inner());
                }
                drop(released);
                held.running.fetch_sub(1, Ordering::SeqCst);
                held.done.fetch_add(1, Ordering::SeqCst);
                None
            })
        }

        fn release(&self) {
            *self.released.lock().unwrap_or_else(|p| p.into_inner()) = true;
            self.wake.notify_all();
        }
    }

    /// Waits (bounded) until `ready` holds; a failure names what was awaited.
    async fn until(what: &str, ready: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !ready() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Defect 4 of issue 17: each check holds about 19 MiB, and 100 at once took
    /// 1.9 GB. With checks held, only two run, 32 wait, and the rest are refused as
    /// busy while the held ones are still running (so at once, not after a wait).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_checks_run_two_at_a_time_and_beyond_the_queue_are_busy_at_once() {
        let held = Arc::new(HeldChecks::default());
        let services = services(PasswordChecks::default().with_check(held.check()));
        let busy = Arc::new(AtomicUsize::new(0));
        let mut logins = JoinSet::new();
        let total = 50;
        for n in 0..total {
            let (services, busy) = (services.clone(), busy.clone());
            // Each from its own address, under its own name: the limiter stays out.
            let peer: IpAddr = [10, 0, 0, n].into();
            logins.spawn(async move {
                let outcome = services
                    .login(0, format!("user{n}"), "wrong".into(), peer)
                    .await
                    .expect("login")
                    .err();
                if outcome == Some(LoginRefused::Busy) {
                    busy.fetch_add(1, Ordering::SeqCst);
                }
                outcome
            });
        }
        let beyond = usize::from(total) - PasswordChecks::RUNNING - PasswordChecks::QUEUED;
        until(
            "two checks running and the rest beyond the queue refused",
            || {
                held.running.load(Ordering::SeqCst) == PasswordChecks::RUNNING
                    && busy.load(Ordering::SeqCst) == beyond
            },
        )
        .await;
        assert_eq!(held.done.load(Ordering::SeqCst), 0, "all still held");
        held.release();
        let mut wrong = 0;
        while let Some(outcome) = logins.join_next().await {
            match outcome.expect("task") {
                Some(LoginRefused::WrongCredentials) => wrong += 1,
                Some(LoginRefused::Busy) => {}
                other => panic!("unexpected outcome {other:?}"),
            }
        }
        assert_eq!(held.most.load(Ordering::SeqCst), PasswordChecks::RUNNING);
        assert_eq!(busy.load(Ordering::SeqCst), beyond);
        assert_eq!(wrong, PasswordChecks::RUNNING + PasswordChecks::QUEUED);
        assert_eq!(held.done.load(Ordering::SeqCst), wrong);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_waiting_past_its_deadline_is_busy_and_not_counted() {
        let held = Arc::new(HeldChecks::default());
        let wait = Duration::from_millis(100);
        let services = services(PasswordChecks::new(1, 1, wait).with_check(held.check()));
        let peer: IpAddr = [192, 0, 2, 9].into();
        let first = {
            let services = services.clone();
            tokio::spawn(async move { services.login(0, "ann".into(), "x".into(), peer).await })
        };
        until("the first check running", || {
            held.running.load(Ordering::SeqCst) == 1
        })
        .await;
        let started = tokio::time::Instant::now();
        let queued = {
            let services = services.clone();
            tokio::spawn(async move { services.login(0, "bea".into(), "x".into(), peer).await })
        };
        // Give the queued login time to take the one place in the queue.
        until("the queue full", || {
            services.password_checks.admitted.available_permits() == 0
        })
        .await;
        let beyond = services
            .login(0, "carl".into(), "x".into(), peer)
            .await
            .expect("login");
        assert_eq!(
            beyond.err(),
            Some(LoginRefused::Busy),
            "no place in the queue"
        );
        let queued = queued.await.expect("task").expect("login");
        assert_eq!(queued.err(), Some(LoginRefused::Busy), "waited too long");
        assert!(started.elapsed() >= wait);
        held.release();
        let first = first.await.expect("task").expect("login");
        assert_eq!(first.err(), Some(LoginRefused::WrongCredentials));
        // Only the checked attempt counts against the address.
        for _ in 1..LOGIN_FAILURES_ALLOWED {
            assert!(services.limiter.try_attempt(&["ip:192.0.2.9"], 0));
        }
        assert!(!services.limiter.try_attempt(&["ip:192.0.2.9"], 0));
    }
}
