//! Login (rate-limited per address and per user name, only local `next` paths
//! followed), logout, and the one-time setup link that creates the first admin.

use super::csrf::{CsrfForm, NoFields};
use super::errors::{PanelError, shown};
use super::page::{Nav, PanelResult, render, see_other};
use super::session::{SESSION_COOKIE, cookie_value, session_cookie};
use crate::auth;
use crate::clock;
use crate::http::AppState;
use crate::lifecycle;
use crate::service::users::LoginRefused;
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
    /// The login form's own CSRF token, also in the `rackboot_login` cookie.
    login_csrf: String,
}

/// The cookie that carries the login form's token. A login posted from another site
/// lacks it (SameSite=Strict), so no one can sign a visitor in as themselves (login
/// CSRF); it is checked before the password, so a forged login costs no hashing.
const LOGIN_COOKIE: &str = "rackboot_login";

/// A login page with a fresh form token, and the cookie that matches it.
fn login_page(
    app: &AppState,
    status: StatusCode,
    notice: Option<String>,
    error: Option<String>,
    next: String,
    user: String,
) -> Response {
    let token = hex::encode(rand::random::<[u8; 16]>());
    let secure = if app.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{LOGIN_COOKIE}={token}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600{secure}"
    );
    let mut response = (
        status,
        render(&LoginPage {
            nav: None,
            notice,
            error,
            next,
            user,
            login_csrf: token,
        }),
    )
        .into_response();
    if let Ok(value) = axum::http::HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(serde::Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
    notice: Option<String>,
}

/// Only local paths are followed after login: no open redirect.
/// Where to go after logging in: a path of this panel only. Browsers drop tabs and
/// newlines from a URL and read `\\` as `/`, so `/%09/evil.example` would leave the
/// site: anything but plain visible characters is refused.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && n.chars().all(|c| c.is_ascii_graphic() && c != '\\') =>
        {
            n.to_string()
        }
        _ => "/".into(),
    }
}

/// A typed user name as logs show it: cut short, so a huge one cannot fill the log.
fn logged_name(name: &str) -> String {
    let short: String = name
        .chars()
        .take(crate::auth::MAX_USER_NAME_CHARS)
        .collect();
    if short.len() < name.len() {
        format!("{}...", crate::text::for_terminal(&short))
    } else {
        crate::text::for_terminal(&short).into_owned()
    }
}

pub async fn page(State(app): State<AppState>, Query(q): Query<NextQuery>) -> Response {
    login_page(
        &app,
        StatusCode::OK,
        q.notice,
        None,
        safe_next(q.next.as_deref()),
        String::new(),
    )
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    next: Option<String>,
    login_csrf: Option<String>,
}

pub async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> PanelResult {
    let retry = |error: &str, status: StatusCode| {
        login_page(
            &app,
            status,
            None,
            Some(error.to_string()),
            safe_next(form.next.as_deref()),
            form.user.clone(),
        )
    };
    let expected = cookie_value(&headers, LOGIN_COOKIE);
    let form_token_matches = match (expected.as_deref(), form.login_csrf.as_deref()) {
        (Some(cookie), Some(field)) => {
            !cookie.is_empty() && lifecycle::constant_time_eq(cookie.as_bytes(), field.as_bytes())
        }
        _ => false,
    };
    if !form_token_matches {
        tracing::warn!(%peer, "login refused: the form's token is missing or does not match (a stale page, or a form posted from another site)");
        return Ok(retry(
            "This login form has expired or was sent from another site. Log in again here.",
            StatusCode::FORBIDDEN,
        ));
    }
    let outcome = app
        .services
        .login(
            clock::now_ms(),
            form.user.clone(),
            form.password.clone(),
            peer.ip(),
        )
        .await?;
    match outcome {
        Ok(session) => {
            tracing::info!(user = logged_name(&form.user), %peer, "logged in");
            let mut response = see_other(&safe_next(form.next.as_deref()));
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(&app, &session.id, auth::SESSION_TTL_MS / 1000),
            );
            Ok(response)
        }
        Err(LoginRefused::TooManyFailures) => {
            tracing::warn!(%peer, user = logged_name(&form.user), "login refused: too many failures");
            Ok(retry(
                "Too many failed attempts. Wait a minute and try again.",
                StatusCode::TOO_MANY_REQUESTS,
            ))
        }
        Err(LoginRefused::Busy) => {
            tracing::warn!(%peer, user = logged_name(&form.user), "login refused: password checks busy");
            Ok(retry(
                "The server is busy checking other logins. Try again in a moment.",
                StatusCode::SERVICE_UNAVAILABLE,
            ))
        }
        Err(LoginRefused::WrongCredentials) => {
            tracing::warn!(user = logged_name(&form.user), %peer, "failed login");
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
        app.services.logout(id).await?;
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
    let refused = |problem: String| {
        (
            StatusCode::BAD_REQUEST,
            render(&SetupPage {
                nav: None,
                notice: None,
                error: Some(problem),
                user: form.user.clone(),
            }),
        )
            .into_response()
    };
    if form.password != form.password2 {
        return Ok(refused("the passwords differ".into()));
    }
    if let Err(e) = app
        .services
        .add_first_admin(clock::now_ms(), form.user.clone(), form.password.clone())
        .await
    {
        return Ok(refused(shown(e)?));
    }
    *app.setup_token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    tracing::info!(
        user = form.user,
        "first admin created through the setup link"
    );
    Ok(see_other("/login?notice=Admin%20created.%20Log%20in."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/machines?q=r1")), "/machines?q=r1");
        for off_site in [
            "//evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\\evil.example",
            "https://evil.example",
            "/ /evil.example",
            "evil.example",
        ] {
            assert_eq!(safe_next(Some(off_site)), "/", "{off_site:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn huge_user_names_are_cut_in_logs() {
        let logged = logged_name(&"x".repeat(1 << 20));
        assert!(logged.len() < 100, "{}", logged.len());
        assert_eq!(logged_name("ann"), "ann");
    }
}
