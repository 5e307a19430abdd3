//! The admin panel (axum + askama, server-rendered, no JavaScript): login, dashboard,
//! machines, a machine, images, leases and pools, audit log, bulk import/export, users
//! and tokens. `selection`: actions on many machines ticked on the machines list. Every route needs a session but login and the one-time setup link; every
//! state-changing form carries the session's CSRF token. The JSON API (`api`) is
//! mounted here too, behind bearer tokens.

use crate::auth::{self, Principal, Role};
use crate::clock;
use crate::http::AppState;
use crate::inventory::{self, AuditEvent, MachineDetail, MachinePatch, MachineQuery, SortBy};
use crate::lifecycle::{self, EXIT_METHODS, ExitMethod, MODES, Mode};
use crate::mac::MacAddr;
use crate::store::{self, StoreError};
use askama::Template;
use axum::Form;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Multipart, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::net::{Ipv4Addr, SocketAddr};

mod selection;

pub const SESSION_COOKIE: &str = "rackboot_session";
const PAGE_SIZE: u32 = 100;

pub fn router(state: AppState) -> Router {
    let pages = Router::new()
        .route("/", get(dashboard))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/setup/{token}", get(setup_page).post(setup))
        .route("/machines", get(machines))
        .route("/machines/new", get(new_machine_page).post(new_machine))
        .route("/machines/selection", post(selection::confirm))
        .route("/machines/selection/run", post(selection::run))
        .route("/machines/{mac}", get(machine_page))
        .route("/machines/{mac}/mode", post(set_mode))
        .route("/machines/{mac}/image", post(set_image))
        .route("/machines/{mac}/settings", post(save_settings))
        .route("/machines/{mac}/delete", post(delete_machine))
        .route("/machines/{mac}/wipe", get(wipe_confirm))
        .route("/machines/{mac}/power", post(power_action))
        .route("/machines/{mac}/power/controller", post(power_controller))
        .route("/images", get(images).post(upload_image))
        .route("/images/{name}/delete", post(delete_image))
        .route("/leases", get(leases))
        .route("/audit", get(audit))
        .route("/import", get(import_page).post(import_preview))
        .route("/import/commit", post(import_commit))
        .route("/export.csv", get(export_csv))
        .route("/export.xlsx", get(export_xlsx))
        .route("/admin", get(admin_page))
        .route("/admin/users", post(admin_add_user))
        .route("/admin/users/{name}/delete", post(admin_delete_user))
        .route("/admin/tokens", post(admin_create_token))
        .route("/admin/tokens/{name}/revoke", post(admin_revoke_token))
        .route("/static/panel.css", get(stylesheet))
        // Image uploads are gigabytes; they are streamed to disk, never held.
        .layer(axum::extract::DefaultBodyLimit::disable());
    pages
        .merge(crate::api::router())
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

// ---- request ids, headers, errors ----

#[derive(Clone)]
pub struct RequestId(pub String);

/// Security headers on every panel and API response, and a request id that error
/// pages show and logs carry.
async fn security_headers(mut request: Request, next: Next) -> Response {
    let id = hex::encode(rand::random::<[u8; 6]>());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if response.extensions().get::<ErrorMarker>().is_some() {
        response = fill_request_id(response, &id).await;
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", value);
    }
    response
}

/// Error pages are rendered before the request id is at hand; it is filled in here.
async fn fill_request_id(response: Response, id: &str) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return (parts.status, "error").into_response();
    };
    let text =
        String::from_utf8_lossy(&bytes).replace("<code>-</code>", &format!("<code>{id}</code>"));
    tracing::info!(
        request_id = id,
        status = parts.status.as_u16(),
        "error page shown"
    );
    Response::from_parts(parts, axum::body::Body::from(text))
}

/// An error shown to a user: a status and a message meant for them. Internal details
/// go to the log with the request id, never to the page.
pub struct PanelError {
    pub status: StatusCode,
    pub message: String,
}

impl PanelError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PanelError {
            status,
            message: message.into(),
        }
    }
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "You are not allowed to do this.")
    }
    pub fn internal(what: impl std::fmt::Display) -> Self {
        tracing::error!("panel: {what}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on the server.",
        )
    }
}

impl From<StoreError> for PanelError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => PanelError::new(StatusCode::CONFLICT, m),
            StoreError::NotFound(m) => PanelError::new(StatusCode::NOT_FOUND, m),
            other => PanelError::internal(other),
        }
    }
}

impl From<crate::service::ServiceError> for PanelError {
    fn from(e: crate::service::ServiceError) -> Self {
        let status = crate::api::status_for(e.kind());
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            return PanelError::internal(e);
        }
        PanelError::new(status, e.to_string())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    status: u16,
    reason: String,
    message: String,
    request_id: String,
}

impl IntoResponse for PanelError {
    fn into_response(self) -> Response {
        // The request id is attached by `with_request_id` below when available.
        let page = ErrorPage {
            nav: None,
            notice: None,
            error: None,
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("").to_string(),
            message: self.message,
            request_id: "-".into(),
        };
        let mut response = (self.status, render(&page)).into_response();
        response.extensions_mut().insert(ErrorMarker);
        response
    }
}

#[derive(Clone)]
struct ErrorMarker;

pub fn render<T: Template>(page: &T) -> Html<String> {
    match page.render() {
        Ok(html) => Html(html),
        Err(e) => {
            tracing::error!("template: {e}");
            Html("<!doctype html><title>error</title><p>Page could not be rendered.</p>".into())
        }
    }
}

type PanelResult = Result<Response, PanelError>;

async fn call<R, F>(app: &AppState, f: F) -> Result<R, PanelError>
where
    F: FnOnce(&mut rusqlite::Connection) -> Result<R, StoreError> + Send + 'static,
    R: Send + 'static,
{
    app.store.call(f).await.map_err(PanelError::from)
}

// ---- sessions ----

/// The logged-in user of a page request; redirects to the login page when absent.
pub struct User(pub Principal);

pub struct LoginRedirect(String);

impl IntoResponse for LoginRedirect {
    fn into_response(self) -> Response {
        Redirect::to(&format!("/login?next={}", urlencode(&self.0))).into_response()
    }
}

fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

impl FromRequestParts<AppState> for User {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string());
        let Some(id) = cookie_value(&parts.headers, SESSION_COOKIE) else {
            return Err(LoginRedirect(next).into_response());
        };
        let now = clock::now_ms();
        match app
            .store
            .call(move |conn| auth::session(conn, &id, now))
            .await
        {
            Ok(Some(principal)) => Ok(User(principal)),
            Ok(None) => Err(LoginRedirect(next).into_response()),
            Err(e) => Err(PanelError::internal(e).into_response()),
        }
    }
}

/// The CSRF token a form carried must be the session's.
fn check_csrf(user: &Principal, token: Option<&str>) -> Result<(), PanelError> {
    let expected = user.csrf.as_deref().unwrap_or("");
    let given = token.unwrap_or("");
    if expected.is_empty() || !lifecycle::constant_time_eq(expected.as_bytes(), given.as_bytes()) {
        return Err(PanelError::new(
            StatusCode::FORBIDDEN,
            "The form was stale or did not come from this panel. Reload the page and try again.",
        ));
    }
    Ok(())
}

fn require_change(user: &Principal) -> Result<(), PanelError> {
    if user.role.can_change() {
        Ok(())
    } else {
        Err(PanelError::forbidden())
    }
}

fn require_admin(user: &Principal) -> Result<(), PanelError> {
    if user.role.can_admin() {
        Ok(())
    } else {
        Err(PanelError::forbidden())
    }
}

pub struct Nav {
    user: String,
    role: &'static str,
    csrf: String,
    is_admin: bool,
}

fn nav(user: &Principal) -> Option<Nav> {
    Some(Nav {
        user: user.name.clone(),
        role: user.role.as_str(),
        csrf: user.csrf.clone().unwrap_or_default(),
        is_admin: user.role.can_admin(),
    })
}

fn session_cookie(app: &AppState, id: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if app.secure_cookies { "; Secure" } else { "" };
    let text = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

fn with_notice(path: &str, notice: &str) -> Response {
    see_other(&format!("{path}?notice={}", urlencode(notice)))
}

#[derive(serde::Deserialize, Default)]
struct NoticeQuery {
    notice: Option<String>,
}

fn fmt_ms(ms: Option<i64>) -> String {
    crate::text::format_ms(ms)
}

// ---- login, logout, setup ----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    next: String,
    user: String,
}

#[derive(serde::Deserialize, Default)]
struct NextQuery {
    next: Option<String>,
    notice: Option<String>,
}

/// Only local paths are followed after login: no open redirect.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".into(),
    }
}

async fn login_page(Query(q): Query<NextQuery>) -> Response {
    render(&LoginPage {
        nav: None,
        notice: q.notice,
        error: None,
        next: safe_next(q.next.as_deref()),
        user: String::new(),
    })
    .into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    next: Option<String>,
}

async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> PanelResult {
    let now = clock::now_ms();
    let ip_key = format!("ip:{}", peer.ip());
    let user_key = format!("user:{}", form.user);
    let keys = [ip_key.as_str(), user_key.as_str()];
    let retry = |error: &str, status: StatusCode| {
        (
            status,
            render(&LoginPage {
                nav: None,
                notice: None,
                error: Some(error.to_string()),
                next: safe_next(form.next.as_deref()),
                user: form.user.clone(),
            }),
        )
            .into_response()
    };
    if !app.limiter.allowed(&keys, now) {
        tracing::warn!(%peer, user = form.user, "login refused: too many failures");
        return Ok(retry(
            "Too many failed attempts. Wait a minute and try again.",
            StatusCode::TOO_MANY_REQUESTS,
        ));
    }
    let name = form.user.clone();
    let record = call(&app, move |conn| auth::login_record(conn, &name)).await?;
    let password = form.password.clone();
    // argon2 is deliberately slow: off the async workers and off the database thread.
    let role = tokio::task::spawn_blocking(move || auth::check_password(record, &password))
        .await
        .map_err(PanelError::internal)?;
    let lookup = match role {
        Some(_) => {
            let name = form.user.clone();
            Some(call(&app, move |conn| auth::create_session(conn, &name, now)).await?)
        }
        None => None,
    };
    match lookup {
        Some((id, _csrf)) => {
            app.limiter.succeeded(&[user_key.as_str()]);
            tracing::info!(user = form.user, %peer, "logged in");
            let mut response = see_other(&safe_next(form.next.as_deref()));
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(&app, &id, auth::SESSION_TTL_MS / 1000),
            );
            Ok(response)
        }
        None => {
            app.limiter.failed(&keys, now);
            tracing::warn!(user = form.user, %peer, "failed login");
            Ok(retry(
                "Wrong user name or password.",
                StatusCode::UNAUTHORIZED,
            ))
        }
    }
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
    User(user): User,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    if let Some(id) = cookie_value(&headers, SESSION_COOKIE) {
        call(&app, move |conn| auth::end_session(conn, &id)).await?;
    }
    let mut response = see_other("/login?notice=Logged%20out.");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&app, "", 0));
    Ok(response)
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    user: String,
}

fn setup_token_matches(app: &AppState, token: &str) -> bool {
    let current = app.setup_token.lock().unwrap_or_else(|p| p.into_inner());
    current
        .as_deref()
        .is_some_and(|t| lifecycle::constant_time_eq(t.as_bytes(), token.as_bytes()))
}

async fn setup_page(State(app): State<AppState>, Path(token): Path<String>) -> PanelResult {
    if !setup_token_matches(&app, &token) {
        return Err(PanelError::new(
            StatusCode::NOT_FOUND,
            "This setup link is not valid (it works once).",
        ));
    }
    Ok(render(&SetupPage {
        nav: None,
        notice: None,
        error: None,
        user: "admin".into(),
    })
    .into_response())
}

#[derive(serde::Deserialize)]
struct SetupForm {
    user: String,
    password: String,
    password2: String,
}

async fn setup(
    State(app): State<AppState>,
    Path(token): Path<String>,
    Form(form): Form<SetupForm>,
) -> PanelResult {
    if !setup_token_matches(&app, &token) {
        return Err(PanelError::new(
            StatusCode::NOT_FOUND,
            "This setup link is not valid (it works once).",
        ));
    }
    let problem = auth::validate_user_name(&form.user)
        .err()
        .or_else(|| auth::validate_password(&form.password).err())
        .or_else(|| (form.password != form.password2).then(|| "the passwords differ".to_string()));
    if let Some(problem) = problem {
        return Ok((
            StatusCode::BAD_REQUEST,
            render(&SetupPage {
                nav: None,
                notice: None,
                error: Some(problem),
                user: form.user,
            }),
        )
            .into_response());
    }
    let password = form.password.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(PanelError::internal)?
        .map_err(PanelError::internal)?;
    let name = form.user.clone();
    let now = clock::now_ms();
    call(&app, move |conn| {
        if auth::user_count(conn)? > 0 {
            return Err(StoreError::Conflict("an admin already exists".into()));
        }
        auth::add_user(conn, &name, &hash, Role::Admin, "setup-link", now)
    })
    .await?;
    *app.setup_token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    tracing::info!(
        user = form.user,
        "first admin created through the setup link"
    );
    Ok(see_other("/login?notice=Admin%20created.%20Log%20in."))
}

// ---- dashboard ----

pub struct EventView {
    time: String,
    mac: Option<String>,
    kind: String,
    detail: String,
    actor: String,
    class: &'static str,
}

fn event_views(events: Vec<AuditEvent>) -> Vec<EventView> {
    events
        .into_iter()
        .map(|e| EventView {
            time: fmt_ms(Some(e.at_ms)),
            class: if e.kind.ends_with(".done") {
                "done"
            } else if e.kind.ends_with(".failed") || e.kind == "dhcp.nak" {
                "failed"
            } else {
                "plain"
            },
            mac: e.mac,
            kind: e.kind,
            detail: e.detail,
            actor: e.actor.unwrap_or_default(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    total: u64,
    by_mode: Vec<(&'static str, u64)>,
    boots_last_hour: u64,
    /// Median and slowest boot of the last day, in seconds.
    boot_times: Option<(String, String)>,
    /// Address ranges with nothing left for a new client.
    full_pools: Vec<String>,
    events: Vec<EventView>,
}

async fn dashboard(
    State(app): State<AppState>,
    User(user): User,
    Query(q): Query<NoticeQuery>,
) -> PanelResult {
    let now = clock::now_ms();
    let subnets = app.subnets.clone();
    let (by_mode, boots, times, events, pools) = call(&app, move |conn| {
        Ok((
            inventory::count_by_mode(conn)?,
            inventory::boots_since(conn, now - 3_600_000)?,
            inventory::boot_summary(conn, now - 86_400_000)?,
            inventory::events(conn, None, false, 25)?,
            store::pool_usage(conn, &subnets, now / 1000)?,
        ))
    })
    .await?;
    Ok(render(&DashboardPage {
        nav: nav(&user),
        notice: q.notice,
        error: None,
        total: by_mode.iter().map(|(_, n)| n).sum(),
        by_mode: by_mode.into_iter().map(|(m, n)| (m.as_str(), n)).collect(),
        boots_last_hour: boots,
        boot_times: times.map(|(median, slowest)| {
            (
                format!("{:.1}", median as f64 / 1000.0),
                format!("{:.1}", slowest as f64 / 1000.0),
            )
        }),
        full_pools: pools
            .iter()
            .filter(|p| p.free() == 0)
            .map(pool_label)
            .collect(),
        events: event_views(events),
    })
    .into_response())
}

fn pool_label(p: &store::PoolUsage) -> String {
    format!(
        "{}-{}{}",
        p.pool_start,
        p.pool_end,
        if p.known_only {
            " (inventory machines)"
        } else {
            ""
        }
    )
}

// ---- machines ----

pub struct MachineRow {
    mac: String,
    hostname: String,
    ip: String,
    image: String,
    mode: &'static str,
    arch: String,
    rack: String,
    last_seen: String,
    /// The last power state read (`on`, `off`, `error`), `wol`, or empty.
    power: String,
}

#[derive(Template)]
#[template(path = "machines.html")]
struct MachinesPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    can_change: bool,
    csrf: String,
    /// Every machine shown starts ticked (`?select=all`: no script in the panel).
    select_all: bool,
    select_all_url: String,
    select_none_url: String,
    actions: Vec<(&'static str, &'static str)>,
    machines: Vec<MachineRow>,
    total: u64,
    first: u64,
    last: u64,
    q: String,
    mode: String,
    sort: String,
    modes: Vec<&'static str>,
    sorts: Vec<(&'static str, &'static str)>,
    prev_url: Option<String>,
    next_url: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct MachinesQuery {
    q: Option<String>,
    mode: Option<String>,
    sort: Option<String>,
    page: Option<u32>,
    select: Option<String>,
    notice: Option<String>,
}

const SORTS: [(&str, &str); 6] = [
    ("mac", "MAC"),
    ("hostname", "hostname"),
    ("ip", "IP"),
    ("image", "image"),
    ("mode", "mode"),
    ("seen", "last seen"),
];

async fn machines(
    State(app): State<AppState>,
    User(user): User,
    Query(q): Query<MachinesQuery>,
) -> PanelResult {
    let mode = q
        .mode
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(str::parse::<Mode>)
        .transpose()
        .map_err(|e| PanelError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let sort_name = q.sort.clone().unwrap_or_else(|| "mac".into());
    let sort: SortBy = serde_json::from_value(serde_json::Value::String(sort_name.clone()))
        .map_err(|_| {
            PanelError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown sort {sort_name:?}"),
            )
        })?;
    let page = q.page.unwrap_or(0);
    let query = MachineQuery {
        search: q.q.clone(),
        mode,
        sort,
        offset: page.saturating_mul(PAGE_SIZE),
        limit: PAGE_SIZE,
    };
    let (found, total, mut power) = call(&app, move |conn| {
        let (found, total) = inventory::search(conn, &query)?;
        Ok((found, total, crate::power::power_column(conn)?))
    })
    .await?;
    let link = |page: u32| {
        format!(
            "/machines?q={}&mode={}&sort={}&page={page}",
            urlencode(q.q.as_deref().unwrap_or("")),
            mode.map_or("", Mode::as_str),
            sort_name
        )
    };
    let first = u64::from(page) * u64::from(PAGE_SIZE);
    let shown = found.len() as u64;
    Ok(render(&MachinesPage {
        nav: nav(&user),
        notice: q.notice.clone(),
        error: None,
        can_change: user.role.can_change(),
        csrf: user.csrf.clone().unwrap_or_default(),
        select_all: q.select.as_deref() == Some("all"),
        select_all_url: format!("{}&select=all", link(page)),
        select_none_url: link(page),
        actions: selection::offered(),
        machines: found
            .into_iter()
            .map(|m| MachineRow {
                power: power.remove(&m.mac).unwrap_or_default(),
                ip: m.current_ip().map(|ip| ip.to_string()).unwrap_or_default(),
                mac: m.mac,
                hostname: m.hostname.unwrap_or_default(),
                image: m.image.unwrap_or_default(),
                mode: m.mode.as_str(),
                arch: m.arch.unwrap_or_default(),
                rack: m.rack.unwrap_or_default(),
                last_seen: fmt_ms(m.last_seen_ms),
            })
            .collect(),
        total,
        first: if shown == 0 { 0 } else { first + 1 },
        last: first + shown,
        q: q.q.clone().unwrap_or_default(),
        mode: mode.map_or(String::new(), |m| m.as_str().to_string()),
        sort: sort_name.clone(),
        modes: MODES.iter().map(|m| m.as_str()).collect(),
        sorts: SORTS.to_vec(),
        prev_url: (page > 0).then(|| link(page - 1)),
        next_url: (first + shown < total).then(|| link(page + 1)),
    })
    .into_response())
}

#[derive(Template)]
#[template(path = "machine.html")]
struct MachinePage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    can_change: bool,
    m: MachineDetail,
    image_label: String,
    fixed_ip: String,
    fixed_ip_input: String,
    hostname: String,
    lease: String,
    arch: String,
    first_seen: String,
    last_seen: String,
    installed: String,
    wiped: String,
    exit_command: &'static str,
    rack: String,
    rack_input: String,
    position: String,
    position_input: String,
    token_expires: Option<String>,
    images: Vec<String>,
    exit_methods: Vec<(&'static str, &'static str)>,
    events: Vec<EventView>,
    /// Server-rendered SVG of the last boots (numbers and fixed labels only).
    timeline_svg: String,
    boot_count: usize,
    power: PowerPanel,
}

/// The machine page's power section: the controller without its password, the
/// last state read, and the form's current values.
#[derive(Default)]
pub struct PowerPanel {
    kind: String,
    summary: String,
    state: String,
    checked: String,
    detail: String,
    host: String,
    port: String,
    user: String,
    cipher_suite: String,
    url: String,
    system_id: String,
    verify_tls: bool,
}

fn power_panel(
    controller: Option<crate::power::Controller>,
    status: Option<crate::power::CachedStatus>,
) -> PowerPanel {
    let mut p = PowerPanel {
        verify_tls: true,
        port: "623".into(),
        cipher_suite: "3".into(),
        ..PowerPanel::default()
    };
    if let Some(s) = status {
        p.state = s.state;
        p.checked = fmt_ms(Some(s.checked_ms));
        p.detail = s.detail;
    }
    let Some(c) = controller else { return p };
    p.kind = c.kind().into();
    p.summary = c.summary();
    let v = c.view();
    p.host = v.host.unwrap_or_default();
    p.port = v.port.map_or(p.port, |n| n.to_string());
    p.user = v.user.unwrap_or_default();
    p.cipher_suite = v.cipher_suite.map_or(p.cipher_suite, |n| n.to_string());
    p.url = v.url.unwrap_or_default();
    p.system_id = v.system_id.unwrap_or(p.system_id);
    p.verify_tls = v.verify_tls.unwrap_or(true);
    p
}

fn parse_mac(text: &str) -> Result<MacAddr, PanelError> {
    MacAddr::parse(text).map_err(|e| PanelError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn machine_view(
    app: &AppState,
    user: &Principal,
    mac: MacAddr,
    notice: Option<String>,
    error: Option<String>,
) -> PanelResult {
    let (machine, images, events, boots, power) = call(app, move |conn| {
        let machine = inventory::machine(conn, mac)?;
        let power = (
            crate::power::get_controller(conn, mac)?,
            crate::power::cached_status(conn, mac)?,
        );
        let images = store::list_images(conn)?
            .into_iter()
            .map(|i| i.name)
            .collect::<Vec<_>>();
        let events = inventory::events(conn, Some(mac), false, 200)?;
        let boots = inventory::boots(conn, mac, 8)?;
        Ok((machine, images, events, boots, power))
    })
    .await?;
    let Some(m) = machine else {
        return Err(PanelError::new(
            StatusCode::NOT_FOUND,
            format!("No machine {mac}."),
        ));
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let image_label = match (m.mode, &m.image) {
        (Mode::Rescue, _) => format!(
            "{} (booting rescue image {})",
            m.image.as_deref().unwrap_or("-"),
            app.lifecycle.rescue_image.as_deref().unwrap_or("-")
        ),
        (Mode::Wipe, _) => format!(
            "{} (booting wipe image {})",
            m.image.as_deref().unwrap_or("-"),
            app.lifecycle.wipe_image.as_deref().unwrap_or("-")
        ),
        (_, Some(image)) => image.clone(),
        (_, None) => "-".into(),
    };
    let page = MachinePage {
        nav: nav(user),
        notice,
        error,
        csrf: user.csrf.clone().unwrap_or_default(),
        can_change: user.role.can_change(),
        image_label,
        fixed_ip: m.ip.map_or("-".into(), |ip| ip.to_string()),
        fixed_ip_input: m.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        hostname: m.hostname.clone().unwrap_or_default(),
        lease: match (m.lease_ip, m.lease_expires_at) {
            (Some(ip), Some(exp)) => format!("{ip} until {}", fmt_ms(Some(exp * 1000))),
            _ => "-".into(),
        },
        arch: m.arch.clone().unwrap_or_else(|| "-".into()),
        first_seen: fmt_ms(m.first_seen_ms),
        last_seen: fmt_ms(m.last_seen_ms),
        installed: fmt_ms(m.installed_ms),
        wiped: fmt_ms(m.wiped_ms),
        exit_command: m.exit_method.command(),
        rack: m.rack.clone().unwrap_or_else(|| "-".into()),
        rack_input: m.rack.clone().unwrap_or_default(),
        position: m.position.clone().unwrap_or_else(|| "-".into()),
        position_input: m.position.clone().unwrap_or_default(),
        token_expires: m
            .token_expires_ms
            .filter(|_| m.mode.takes_token())
            .map(|t| fmt_ms(Some(t))),
        images,
        exit_methods: EXIT_METHODS
            .iter()
            .map(|e| (e.as_str(), e.command()))
            .collect(),
        events: event_views(events),
        timeline_svg: crate::timeline::svg(&boots, |ms| {
            fmt_ms(Some(ms)).get(5..19).unwrap_or("").to_string()
        }),
        boot_count: boots.len(),
        power: power_panel(power.0, power.1),
        m,
    };
    Ok((status, render(&page)).into_response())
}

async fn machine_page(
    State(app): State<AppState>,
    User(user): User,
    Path(mac): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> PanelResult {
    machine_view(&app, &user, parse_mac(&mac)?, q.notice, None).await
}

#[derive(serde::Deserialize)]
struct ModeForm {
    csrf: Option<String>,
    mode: String,
    confirm: Option<String>,
}

async fn set_mode(
    State(app): State<AppState>,
    User(user): User,
    Path(mac_text): Path<String>,
    Form(form): Form<ModeForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_change(&user)?;
    let mac = parse_mac(&mac_text)?;
    let mode: Mode = match form.mode.parse() {
        Ok(mode) => mode,
        Err(e) => return machine_view(&app, &user, mac, None, Some(e.to_string())).await,
    };
    if mode == Mode::Wipe {
        let confirmed = form
            .confirm
            .as_deref()
            .and_then(|c| MacAddr::parse(c.trim()).ok())
            == Some(mac);
        if !confirmed {
            return machine_view(
                &app,
                &user,
                mac,
                None,
                Some("Wipe not confirmed: type the machine's MAC address to confirm.".into()),
            )
            .await;
        }
    }
    if matches!(mode, Mode::Install | Mode::Rescue | Mode::Wipe) {
        // One action: the mode, then (with a power controller) a network boot and a
        // power-cycle. A failed power step keeps the mode and is shown as an error.
        let result = crate::power::reprovision(
            &app.store,
            &app.power,
            &app.lifecycle,
            mac,
            mode,
            &user.actor(),
        )
        .await;
        return match result {
            Ok(report) => match &report.power_error {
                None if report.steps.len() > 2 => Ok(with_notice(
                    &format!("/machines/{mac}"),
                    &format!(
                        "{} started through the BMC: {}.",
                        mode_action(mode),
                        report.describe()
                    ),
                )),
                None => Ok(with_notice(&format!("/machines/{mac}"), &mode_notice(mode))),
                Some(why) => {
                    let mut response = machine_view(
                        &app,
                        &user,
                        mac,
                        None,
                        Some(format!("{why}. Steps: {}.", report.describe())),
                    )
                    .await?;
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                    Ok(response)
                }
            },
            Err(StoreError::Conflict(why)) => machine_view(&app, &user, mac, None, Some(why)).await,
            Err(e) => Err(e.into()),
        };
    }
    let config = (*app.lifecycle).clone();
    let actor = user.actor();
    let now = clock::now_ms();
    let result = app
        .store
        .call(move |conn| inventory::set_mode(conn, mac, mode, &config, &actor, now))
        .await;
    match result {
        Ok(_) => Ok(with_notice(&format!("/machines/{mac}"), &mode_notice(mode))),
        Err(StoreError::Conflict(why)) => machine_view(&app, &user, mac, None, Some(why)).await,
        Err(e) => Err(e.into()),
    }
}

fn mode_action(mode: Mode) -> &'static str {
    match mode {
        Mode::Install => "Reinstall",
        Mode::Rescue => "Rescue",
        Mode::Wipe => "Wipe",
        Mode::Boot => "Boot image",
        Mode::Local => "Local boot",
    }
}

fn mode_notice(mode: Mode) -> String {
    match mode {
        Mode::Install => "Reinstall set: the machine installs its image on its next boot.".into(),
        Mode::Wipe => "Wipe set: the machine is wiped on its next boot.".into(),
        other => format!("Mode set to {other}."),
    }
}

#[derive(serde::Deserialize)]
struct PowerForm {
    csrf: Option<String>,
    action: String,
}

async fn power_action(
    State(app): State<AppState>,
    User(user): User,
    Path(mac_text): Path<String>,
    Form(form): Form<PowerForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_change(&user)?;
    let mac = parse_mac(&mac_text)?;
    let Some(verb) = crate::power::Verb::parse(&form.action) else {
        return machine_view(
            &app,
            &user,
            mac,
            None,
            Some(format!("Unknown power action {:?}.", form.action)),
        )
        .await;
    };
    match crate::power::run_verb(&app.store, &app.power, mac, verb, &user.actor()).await {
        Ok(outcome) => {
            let notice = match (&outcome.warning, outcome.state) {
                (Some(w), _) => format!("Power {}: warning: {w}", verb.as_str()),
                (None, Some(state)) => format!("Power {}: {}.", verb.as_str(), state.as_str()),
                (None, None) => format!("Power {}: done.", verb.as_str()),
            };
            Ok(with_notice(&format!("/machines/{mac}"), &notice))
        }
        Err(crate::power::VerbError::Store(e)) => Err(e.into()),
        Err(e) => {
            let mut response = machine_view(&app, &user, mac, None, Some(e.to_string())).await?;
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(response)
        }
    }
}

#[derive(serde::Deserialize)]
struct ControllerForm {
    csrf: Option<String>,
    kind: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    cipher_suite: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    system_id: String,
    verify_tls: Option<String>,
}

fn controller_spec(form: &ControllerForm) -> Result<Option<crate::power::ControllerSpec>, String> {
    let number = |text: &str, what: &str| -> Result<Option<u16>, String> {
        optional(text)
            .map(|t| {
                t.parse::<u16>()
                    .map_err(|_| format!("{what} {t:?} is not a number."))
            })
            .transpose()
    };
    let password = optional(&form.password);
    Ok(match form.kind.as_str() {
        "none" => None,
        "ipmi" => Some(crate::power::ControllerSpec::Ipmi {
            host: form.host.clone(),
            port: number(&form.port, "Port")?,
            user: form.user.trim().to_string(),
            password,
            cipher_suite: number(&form.cipher_suite, "Cipher suite")?
                .map(|n| u8::try_from(n).unwrap_or(u8::MAX)),
        }),
        "redfish" => Some(crate::power::ControllerSpec::Redfish {
            url: form.url.clone(),
            user: form.user.trim().to_string(),
            password,
            system_id: optional(&form.system_id),
            verify_tls: Some(form.verify_tls.is_some()),
        }),
        "wol" => Some(crate::power::ControllerSpec::Wol),
        other => return Err(format!("Unknown controller kind {other:?}.")),
    })
}

async fn power_controller(
    State(app): State<AppState>,
    User(user): User,
    Path(mac_text): Path<String>,
    Form(form): Form<ControllerForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_change(&user)?;
    let mac = parse_mac(&mac_text)?;
    let spec = match controller_spec(&form) {
        Ok(spec) => spec,
        Err(why) => return machine_view(&app, &user, mac, None, Some(why)).await,
    };
    let (caller, now) = (
        crate::service::Caller::from_principal(&user),
        clock::now_ms(),
    );
    let result = match spec {
        Some(spec) => app
            .services
            .set_controller(&caller, now, mac, spec)
            .await
            .map(Some),
        None => app
            .services
            .remove_controller(&caller, now, mac)
            .await
            .map(|()| None),
    };
    match result {
        Ok(Some(c)) => Ok(with_notice(
            &format!("/machines/{mac}"),
            &format!("Power controller set: {}.", c.summary()),
        )),
        Ok(None) => Ok(with_notice(
            &format!("/machines/{mac}"),
            "Power controller removed.",
        )),
        Err(e) if e.kind() != crate::service::ErrorKind::Internal => {
            machine_view(&app, &user, mac, None, Some(e.to_string())).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(serde::Deserialize)]
struct ImageForm {
    csrf: Option<String>,
    image: String,
}

async fn set_image(
    State(app): State<AppState>,
    User(user): User,
    Path(mac_text): Path<String>,
    Form(form): Form<ImageForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_change(&user)?;
    let mac = parse_mac(&mac_text)?;
    let image = Some(form.image.trim().to_string()).filter(|s| !s.is_empty());
    let actor = user.actor();
    let now = clock::now_ms();
    let result = app
        .store
        .call(move |conn| inventory::set_image(conn, mac, image.as_deref(), &actor, now))
        .await;
    match result {
        Ok(m) => Ok(with_notice(
            &format!("/machines/{mac}"),
            &format!("Image set to {}.", m.image.as_deref().unwrap_or("none")),
        )),
        Err(StoreError::Conflict(why) | StoreError::NotFound(why)) => {
            machine_view(&app, &user, mac, None, Some(why)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(serde::Deserialize)]
struct SettingsForm {
    csrf: Option<String>,
    hostname: String,
    ip: String,
    exit_method: String,
    rack: String,
    position: String,
    ssh_keys: String,
}

fn optional(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|s| !s.is_empty())
}

fn validate_settings(form: &SettingsForm) -> Result<MachinePatch, String> {
    let hostname = optional(&form.hostname);
    if let Some(h) = &hostname
        && !crate::validate::valid_hostname(h)
    {
        return Err(format!("Hostname {h:?} is not a valid host name."));
    }
    let ip = optional(&form.ip)
        .map(|t| {
            t.parse::<Ipv4Addr>()
                .map_err(|_| format!("Fixed IP {t:?} is not an IPv4 address."))
        })
        .transpose()?;
    let exit_method: ExitMethod = form
        .exit_method
        .parse()
        .map_err(|e: lifecycle::ParseError| e.to_string())?;
    for key in form
        .ssh_keys
        .lines()
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        if !key.starts_with("ssh-") && !key.starts_with("ecdsa-") && !key.starts_with("sk-") {
            return Err(format!(
                "{key:.30}... does not look like an SSH public key."
            ));
        }
    }
    Ok(MachinePatch {
        hostname: Some(hostname),
        ip: Some(ip),
        exit_method: Some(exit_method),
        ssh_keys: Some(form.ssh_keys.trim().to_string()),
        rack: Some(optional(&form.rack)),
        position: Some(optional(&form.position)),
    })
}

async fn save_settings(
    State(app): State<AppState>,
    User(user): User,
    Path(mac_text): Path<String>,
    Form(form): Form<SettingsForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_change(&user)?;
    let mac = parse_mac(&mac_text)?;
    let patch = match validate_settings(&form) {
        Ok(patch) => patch,
        Err(why) => return machine_view(&app, &user, mac, None, Some(why)).await,
    };
    let actor = user.actor();
    let now = clock::now_ms();
    match app
        .store
        .call(move |conn| inventory::update(conn, mac, &patch, &actor, now))
        .await
    {
        Ok(_) => Ok(with_notice(&format!("/machines/{mac}"), "Settings saved.")),
        Err(StoreError::Conflict(why)) => machine_view(&app, &user, mac, None, Some(why)).await,
        Err(e) => Err(e.into()),
    }
}

async fn delete_machine(
    State(app): State<AppState>,
    User(user): User,
    Path(mac_text): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_change(&user)?;
    let mac = parse_mac(&mac_text)?;
    let actor = user.actor();
    let now = clock::now_ms();
    call(&app, move |conn| inventory::delete(conn, mac, &actor, now)).await?;
    Ok(with_notice("/machines", &format!("Machine {mac} deleted.")))
}

#[derive(Template)]
#[template(path = "wipe_confirm.html")]
struct WipePage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    mac: String,
    csrf: String,
    wipe_image: String,
}

async fn wipe_confirm(
    State(app): State<AppState>,
    User(user): User,
    Path(mac_text): Path<String>,
) -> PanelResult {
    require_change(&user)?;
    let mac = parse_mac(&mac_text)?;
    let Some(wipe_image) = app.lifecycle.wipe_image.clone() else {
        return machine_view(
            &app,
            &user,
            mac,
            None,
            Some("No wipe image is configured ([lifecycle] wipe_image).".into()),
        )
        .await;
    };
    Ok(render(&WipePage {
        nav: nav(&user),
        notice: None,
        error: None,
        mac: mac.to_string(),
        csrf: user.csrf.clone().unwrap_or_default(),
        wipe_image,
    })
    .into_response())
}

#[derive(Template)]
#[template(path = "machine_new.html")]
struct NewMachinePage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    images: Vec<String>,
    form: NewMachineForm,
}

#[derive(serde::Deserialize, Default, Clone)]
struct NewMachineForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    rack: String,
    #[serde(default)]
    position: String,
}

async fn image_names(app: &AppState) -> Result<Vec<String>, PanelError> {
    call(app, |conn| {
        Ok(store::list_images(conn)?
            .into_iter()
            .map(|i| i.name)
            .collect())
    })
    .await
}

async fn new_machine_page(State(app): State<AppState>, User(user): User) -> PanelResult {
    require_change(&user)?;
    Ok(render(&NewMachinePage {
        nav: nav(&user),
        notice: None,
        error: None,
        csrf: user.csrf.clone().unwrap_or_default(),
        images: image_names(&app).await?,
        form: NewMachineForm::default(),
    })
    .into_response())
}

async fn new_machine(
    State(app): State<AppState>,
    User(user): User,
    Form(form): Form<NewMachineForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_change(&user)?;
    let row = crate::bulk::RawRow {
        line: 1,
        mac: form.mac.clone(),
        hostname: form.hostname.clone(),
        ip: form.ip.clone(),
        image: form.image.clone(),
        rack: form.rack.clone(),
        position: form.position.clone(),
    };
    let config = (*app.lifecycle).clone();
    let actor = user.actor();
    let now = clock::now_ms();
    let result = app
        .store
        .call(move |conn| {
            let checked = crate::bulk::check_rows(conn, vec![row])?;
            let first = checked.into_iter().next();
            match first {
                Some(r) if r.errors.is_empty() => {
                    if r.action == crate::bulk::Action::Update {
                        return Ok(Err(format!("Machine {} already exists.", r.mac)));
                    }
                    inventory::add(conn, &r.new_machine(), &r.extra(), &config, &actor, now)?;
                    Ok(Ok(r.mac))
                }
                Some(r) => Ok(Err(r.errors.join("; "))),
                None => Ok(Err("nothing to add".into())),
            }
        })
        .await?;
    match result {
        Ok(mac) => Ok(with_notice(&format!("/machines/{mac}"), "Machine added.")),
        Err(why) => Ok((
            StatusCode::BAD_REQUEST,
            render(&NewMachinePage {
                nav: nav(&user),
                notice: None,
                error: Some(why),
                csrf: user.csrf.clone().unwrap_or_default(),
                images: image_names(&app).await?,
                form,
            }),
        )
            .into_response()),
    }
}

// ---- images ----

pub struct ImageRow {
    name: String,
    kernel_sha256: String,
    initrd_sha256: String,
    cmdline: String,
    files: String,
    machines: u64,
    deletable: bool,
    role: String,
}

#[derive(Template)]
#[template(path = "images.html")]
struct ImagesPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    can_change: bool,
    images: Vec<ImageRow>,
}

async fn images_view(
    app: &AppState,
    user: &Principal,
    notice: Option<String>,
    error: Option<String>,
) -> PanelResult {
    let listed = call(app, inventory_images).await?;
    let data_dir = app.data_dir.clone();
    let rescue = app.lifecycle.rescue_image.clone();
    let wipe = app.lifecycle.wipe_image.clone();
    let rows = tokio::task::spawn_blocking(move || {
        listed
            .into_iter()
            .map(|(image, machines)| {
                let role = if rescue.as_deref() == Some(image.name.as_str()) {
                    "rescue image"
                } else if wipe.as_deref() == Some(image.name.as_str()) {
                    "wipe image"
                } else {
                    ""
                };
                ImageRow {
                    files: crate::images::list_files(&data_dir, &image.name).join(", "),
                    deletable: machines == 0 && role.is_empty(),
                    role: role.to_string(),
                    name: image.name,
                    kernel_sha256: image.kernel_sha256,
                    initrd_sha256: image.initrd_sha256,
                    cmdline: image.cmdline,
                    machines,
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(PanelError::internal)?;
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        render(&ImagesPage {
            nav: nav(user),
            notice,
            error,
            csrf: user.csrf.clone().unwrap_or_default(),
            can_change: user.role.can_change(),
            images: rows,
        }),
    )
        .into_response())
}

fn inventory_images(
    conn: &mut rusqlite::Connection,
) -> Result<Vec<(store::Image, u64)>, StoreError> {
    inventory::images_with_use(conn)
}

async fn images(
    State(app): State<AppState>,
    User(user): User,
    Query(q): Query<NoticeQuery>,
) -> PanelResult {
    images_view(&app, &user, q.notice, None).await
}

#[derive(serde::Deserialize)]
struct UploadQuery {
    csrf: Option<String>,
}

/// Multipart upload of an image: each file is streamed to disk as it arrives.
/// The CSRF token comes in the query string so it is checked before the body is read.
async fn upload_image(
    State(app): State<AppState>,
    User(user): User,
    Query(q): Query<UploadQuery>,
    multipart: Multipart,
) -> PanelResult {
    check_csrf(&user, q.csrf.as_deref())?;
    require_change(&user)?;
    match crate::bulk::receive_image(&app, multipart, &user.actor()).await {
        Ok(image) => Ok(with_notice(
            "/images",
            &format!(
                "Image {} added (kernel sha256 {}).",
                image.name, image.kernel_sha256
            ),
        )),
        Err(why) => images_view(&app, &user, None, Some(why)).await,
    }
}

async fn delete_image(
    State(app): State<AppState>,
    User(user): User,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_change(&user)?;
    let config = (*app.lifecycle).clone();
    let actor = user.actor();
    let now = clock::now_ms();
    let result = app
        .store
        .call(move |conn| inventory::delete_image(conn, &name, &config, &actor, now))
        .await;
    match result {
        Ok(image) => {
            let dir = app.data_dir.join("images").join(&image.name);
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                tracing::warn!(dir = %dir.display(), "image files not removed: {e}");
            }
            Ok(with_notice(
                "/images",
                &format!("Image {} deleted.", image.name),
            ))
        }
        Err(StoreError::Conflict(why) | StoreError::NotFound(why)) => {
            images_view(&app, &user, None, Some(why)).await
        }
        Err(e) => Err(e.into()),
    }
}

// ---- leases, audit ----

pub struct LeaseRow {
    ip: String,
    mac: String,
    state: &'static str,
    expires: String,
    hostname: String,
}

#[derive(Template)]
#[template(path = "leases.html")]
struct LeasesPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    pools: Vec<PoolRow>,
    leases: Vec<LeaseRow>,
}

pub struct PoolRow {
    subnet: String,
    range: String,
    size: u64,
    bound: u64,
    declined: u64,
    reserved: u64,
    free: u64,
}

async fn leases(State(app): State<AppState>, User(user): User) -> PanelResult {
    let now = clock::now_ms() / 1000;
    let subnets = app.subnets.clone();
    let (leases, pools) = call(&app, move |conn| {
        Ok((
            store::list_leases(conn)?,
            store::pool_usage(conn, &subnets, now)?,
        ))
    })
    .await?;
    let full: Vec<String> = pools
        .iter()
        .filter(|p| p.free() == 0)
        .map(pool_label)
        .collect();
    Ok(render(&LeasesPage {
        nav: nav(&user),
        notice: None,
        error: (!full.is_empty()).then(|| {
            format!(
                "Full: {}. New clients get no address there (no existing lease is taken).",
                full.join(", ")
            )
        }),
        pools: pools
            .iter()
            .map(|p| PoolRow {
                subnet: format!("{}/{}", p.network, p.prefix_len),
                range: pool_label(p),
                size: p.size,
                bound: p.bound,
                declined: p.declined,
                reserved: p.reserved,
                free: p.free(),
            })
            .collect(),
        leases: leases
            .into_iter()
            .map(|l| LeaseRow {
                ip: l.ip.to_string(),
                mac: l.mac.to_string(),
                state: match l.state {
                    store::LeaseState::Bound if l.expires_at <= now => "expired",
                    store::LeaseState::Bound => "bound",
                    store::LeaseState::Released => "released",
                    store::LeaseState::Declined => "declined",
                    store::LeaseState::Observed => "observed",
                },
                expires: fmt_ms(Some(l.expires_at * 1000)),
                hostname: l.hostname.unwrap_or_default(),
            })
            .collect(),
    })
    .into_response())
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    events: Vec<EventView>,
}

async fn audit(State(app): State<AppState>, User(user): User) -> PanelResult {
    let events = call(&app, |conn| inventory::events(conn, None, true, 500)).await?;
    Ok(render(&AuditPage {
        nav: nav(&user),
        notice: None,
        error: None,
        events: event_views(events),
    })
    .into_response())
}

// ---- import / export ----

#[derive(Template)]
#[template(path = "import.html")]
struct ImportPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    rows: Vec<crate::bulk::CheckedRow>,
    ok_count: usize,
    error_count: usize,
    staged: String,
}

fn import_view(
    user: &Principal,
    rows: Vec<crate::bulk::CheckedRow>,
    staged: String,
    error: Option<String>,
) -> Response {
    let error_count = rows.iter().filter(|r| !r.errors.is_empty()).count();
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (
        status,
        render(&ImportPage {
            nav: nav(user),
            notice: None,
            error,
            csrf: user.csrf.clone().unwrap_or_default(),
            ok_count: rows.len() - error_count,
            error_count,
            rows,
            staged,
        }),
    )
        .into_response()
}

async fn import_page(User(user): User) -> PanelResult {
    require_change(&user)?;
    Ok(import_view(&user, Vec::new(), String::new(), None))
}

async fn import_preview(
    State(app): State<AppState>,
    User(user): User,
    Query(q): Query<UploadQuery>,
    mut multipart: Multipart,
) -> PanelResult {
    check_csrf(&user, q.csrf.as_deref())?;
    require_change(&user)?;
    let mut upload = None;
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some("file") {
            let name = field.file_name().unwrap_or("").to_string();
            match field.bytes().await {
                Ok(bytes) if bytes.len() <= crate::bulk::MAX_IMPORT_BYTES => {
                    upload = Some((name, bytes))
                }
                Ok(_) => {
                    return Ok(import_view(
                        &user,
                        Vec::new(),
                        String::new(),
                        Some("The file is larger than 20 MiB.".into()),
                    ));
                }
                Err(e) => {
                    return Ok(import_view(
                        &user,
                        Vec::new(),
                        String::new(),
                        Some(format!("Upload failed: {e}")),
                    ));
                }
            }
        }
    }
    let Some((name, bytes)) = upload else {
        return Ok(import_view(
            &user,
            Vec::new(),
            String::new(),
            Some("Choose a CSV or XLSX file.".into()),
        ));
    };
    let raw = match crate::bulk::parse_upload(&name, &bytes) {
        Ok(rows) => rows,
        Err(why) => return Ok(import_view(&user, Vec::new(), String::new(), Some(why))),
    };
    let checked = call(&app, move |conn| crate::bulk::check_rows(conn, raw)).await?;
    let staged = app
        .imports
        .stage(&user.name, checked.clone(), clock::now_ms());
    Ok(import_view(&user, checked, staged, None))
}

#[derive(serde::Deserialize)]
struct CommitForm {
    csrf: Option<String>,
    staged: String,
}

async fn import_commit(
    State(app): State<AppState>,
    User(user): User,
    Form(form): Form<CommitForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_change(&user)?;
    let Some(rows) = app.imports.take(&form.staged, &user.name, clock::now_ms()) else {
        return Ok(import_view(
            &user,
            Vec::new(),
            String::new(),
            Some("This preview has expired; upload the file again.".into()),
        ));
    };
    let config = (*app.lifecycle).clone();
    let actor = user.actor();
    let now = clock::now_ms();
    let result = app
        .store
        .call(move |conn| crate::bulk::apply_rows(conn, &rows, &config, &actor, now))
        .await;
    match result {
        Ok(summary) => Ok(with_notice("/machines", &summary)),
        Err(StoreError::Conflict(why)) => Ok(import_view(
            &user,
            Vec::new(),
            String::new(),
            Some(format!("Nothing imported: {why}")),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn export_csv(State(app): State<AppState>, User(_user): User) -> PanelResult {
    let machines = call(&app, crate::bulk::all_machines).await?;
    let body = crate::bulk::to_csv(&machines).map_err(PanelError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"rackboot-machines.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

async fn export_xlsx(State(app): State<AppState>, User(_user): User) -> PanelResult {
    let machines = call(&app, crate::bulk::all_machines).await?;
    let body = tokio::task::spawn_blocking(move || crate::bulk::to_xlsx(&machines))
        .await
        .map_err(PanelError::internal)?
        .map_err(PanelError::internal)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            ),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"rackboot-machines.xlsx\"",
            ),
        ],
        body,
    )
        .into_response())
}

// ---- users and tokens ----

pub struct UserRow {
    name: String,
    role: &'static str,
    created: String,
}

pub struct TokenRow {
    name: String,
    role: &'static str,
    created: String,
    last_used: String,
    revoked: bool,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    users: Vec<UserRow>,
    tokens: Vec<TokenRow>,
    new_secret: Option<(String, String)>,
}

async fn admin_view(
    app: &AppState,
    user: &Principal,
    notice: Option<String>,
    error: Option<String>,
    new_secret: Option<(String, String)>,
) -> PanelResult {
    require_admin(user)?;
    let (users, tokens) = call(app, |conn| {
        Ok((auth::list_users(conn)?, auth::list_tokens(conn)?))
    })
    .await?;
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        render(&AdminPage {
            nav: nav(user),
            notice,
            error,
            csrf: user.csrf.clone().unwrap_or_default(),
            users: users
                .into_iter()
                .map(|u| UserRow {
                    name: u.name,
                    role: u.role.as_str(),
                    created: fmt_ms(Some(u.created_ms)),
                })
                .collect(),
            tokens: tokens
                .into_iter()
                .map(|t| TokenRow {
                    name: t.name,
                    role: t.role.as_str(),
                    created: fmt_ms(Some(t.created_ms)),
                    last_used: fmt_ms(t.last_used_ms),
                    revoked: t.revoked_ms.is_some(),
                })
                .collect(),
            new_secret,
        }),
    )
        .into_response())
}

async fn admin_page(
    State(app): State<AppState>,
    User(user): User,
    Query(q): Query<NoticeQuery>,
) -> PanelResult {
    admin_view(&app, &user, q.notice, None, None).await
}

#[derive(serde::Deserialize)]
struct AddUserForm {
    csrf: Option<String>,
    user: String,
    password: String,
    role: String,
}

async fn admin_add_user(
    State(app): State<AppState>,
    User(user): User,
    Form(form): Form<AddUserForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_admin(&user)?;
    let role: Role = match form.role.parse() {
        Ok(role) => role,
        Err(why) => return admin_view(&app, &user, None, Some(why), None).await,
    };
    if let Err(why) =
        auth::validate_user_name(&form.user).and(auth::validate_password(&form.password))
    {
        return admin_view(&app, &user, None, Some(why), None).await;
    }
    let password = form.password.clone();
    let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
        .await
        .map_err(PanelError::internal)?
        .map_err(PanelError::internal)?;
    let (name, actor, now) = (form.user.clone(), user.actor(), clock::now_ms());
    match app
        .store
        .call(move |conn| auth::add_user(conn, &name, &hash, role, &actor, now))
        .await
    {
        Ok(()) => Ok(with_notice("/admin", &format!("User {} added.", form.user))),
        Err(StoreError::Conflict(why)) => admin_view(&app, &user, None, Some(why), None).await,
        Err(e) => Err(e.into()),
    }
}

async fn admin_delete_user(
    State(app): State<AppState>,
    User(user): User,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_admin(&user)?;
    let (actor, now, who) = (user.actor(), clock::now_ms(), name.clone());
    match app
        .store
        .call(move |conn| auth::delete_user(conn, &who, &actor, now))
        .await
    {
        Ok(()) => Ok(with_notice("/admin", &format!("User {name} deleted."))),
        Err(StoreError::Conflict(why) | StoreError::NotFound(why)) => {
            admin_view(&app, &user, None, Some(why), None).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(serde::Deserialize)]
struct TokenForm {
    csrf: Option<String>,
    name: String,
    role: String,
}

async fn admin_create_token(
    State(app): State<AppState>,
    User(user): User,
    Form(form): Form<TokenForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_admin(&user)?;
    let role: Role = match form.role.parse() {
        Ok(role) => role,
        Err(why) => return admin_view(&app, &user, None, Some(why), None).await,
    };
    let (name, actor, now) = (form.name.clone(), user.actor(), clock::now_ms());
    match app
        .store
        .call(move |conn| auth::create_token(conn, &name, role, &actor, now))
        .await
    {
        Ok(secret) => admin_view(&app, &user, None, None, Some((form.name, secret))).await,
        Err(StoreError::Conflict(why)) => admin_view(&app, &user, None, Some(why), None).await,
        Err(e) => Err(e.into()),
    }
}

async fn admin_revoke_token(
    State(app): State<AppState>,
    User(user): User,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PanelResult {
    check_csrf(&user, form.csrf.as_deref())?;
    require_admin(&user)?;
    let (actor, now, which) = (user.actor(), clock::now_ms(), name.clone());
    match app
        .store
        .call(move |conn| auth::revoke_token(conn, &which, &actor, now))
        .await
    {
        Ok(()) => Ok(with_notice("/admin", &format!("Token {name} revoked."))),
        Err(StoreError::NotFound(why)) => admin_view(&app, &user, None, Some(why), None).await,
        Err(e) => Err(e.into()),
    }
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../static/panel.css"),
    )
        .into_response()
}
