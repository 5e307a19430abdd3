//! Login (rate-limited per address and per user name, only local `next` paths
//! followed), logout, and the one-time setup link that creates the first admin.

use super::csrf::{CsrfForm, NoFields};
use super::errors::PanelError;
use super::page::{Nav, PanelResult, call, render, see_other};
use super::session::{SESSION_COOKIE, cookie_value, session_cookie};
use crate::auth::{self, Role};
use crate::clock;
use crate::http::AppState;
use crate::lifecycle;
use crate::store::StoreError;
use askama::Template;
use axum::Form;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

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
pub struct NextQuery {
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

pub async fn page(Query(q): Query<NextQuery>) -> Response {
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
pub struct LoginForm {
    user: String,
    password: String,
    next: Option<String>,
}

pub async fn login(
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

pub async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
    // The signed-in user's own form: a forged one cannot log them out.
    _: CsrfForm<NoFields>,
) -> PanelResult {
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

pub async fn setup_page(State(app): State<AppState>, Path(token): Path<String>) -> PanelResult {
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
pub struct SetupForm {
    user: String,
    password: String,
    password2: String,
}

pub async fn setup(
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
