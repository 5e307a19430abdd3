//! Who is asking: the session cookie, and the signed-in user as extractors by what
//! they may do. `User` may read (or is sent to the login page), `Changer` may also
//! change machines and images, `Admin` may also manage users and tokens; a handler
//! names the one it needs and never checks a role itself. All read the cookie and
//! the database before any of the request body.

use super::errors::PanelError;
use super::page::urlencode;
use crate::auth::{Principal, Role};
use crate::clock;
use crate::http::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

pub const SESSION_COOKIE: &str = "rackboot_session";

pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The `Set-Cookie` value for session `id` (empty with age 0 to end it). `Secure`
/// only over TLS: a browser drops a Secure cookie sent over plain http.
pub fn session_cookie(app: &AppState, id: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if app.secure_cookies { "; Secure" } else { "" };
    let text = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

struct LoginRedirect(String);

impl IntoResponse for LoginRedirect {
    fn into_response(self) -> Response {
        Redirect::to(&format!("/login?next={}", urlencode(&self.0))).into_response()
    }
}

/// The signed-in user of a page request; without a valid session, a redirect to the
/// login page that returns here.
pub struct User(pub Principal);

impl FromRequestParts<AppState> for User {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Looked up once per request, whichever extractors ask.
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(User(principal.clone()));
        }
        let next = parts
            .uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string());
        let Some(id) = cookie_value(&parts.headers, SESSION_COOKIE) else {
            return Err(LoginRedirect(next).into_response());
        };
        let now = clock::now_ms();
        match app.services.session(now, id).await {
            Ok(Some(principal)) => {
                parts.extensions.insert(principal.clone());
                Ok(User(principal))
            }
            Ok(None) => Err(LoginRedirect(next).into_response()),
            Err(e) => Err(PanelError::internal(e).into_response()),
        }
    }
}

/// The signed-in user, if their role passes `allowed`; else 403.
async fn signed_in_as(
    parts: &mut Parts,
    app: &AppState,
    allowed: fn(Role) -> bool,
) -> Result<Principal, Response> {
    let User(user) = User::from_request_parts(parts, app).await?;
    if allowed(user.role) {
        Ok(user)
    } else {
        Err(PanelError::forbidden().into_response())
    }
}

/// A signed-in user who may change machines and images (operator or admin).
pub struct Changer(pub Principal);

impl FromRequestParts<AppState> for Changer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        signed_in_as(parts, app, Role::can_change)
            .await
            .map(Changer)
    }
}

/// A signed-in admin.
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        signed_in_as(parts, app, Role::can_admin).await.map(Admin)
    }
}
