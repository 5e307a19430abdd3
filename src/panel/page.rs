//! What every page shares: the layout's navigation bar, rendering a template,
//! redirects with a notice, a database call as a page result, the stylesheet.

use super::errors::PanelError;
use crate::auth::Principal;
use crate::http::AppState;
use crate::mac::MacAddr;
use crate::store::StoreError;
use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

pub type PanelResult = Result<Response, PanelError>;

/// The layout's top bar: who is signed in, and the logout form's token.
pub struct Nav {
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
    pub is_admin: bool,
}

pub fn nav(user: &Principal) -> Option<Nav> {
    Some(Nav {
        user: user.name.clone(),
        role: user.role.as_str(),
        csrf: csrf_of(user),
        is_admin: user.role.can_admin(),
    })
}

/// The session's CSRF token, for the forms a page carries.
pub fn csrf_of(user: &Principal) -> String {
    user.csrf.clone().unwrap_or_default()
}

pub fn render<T: Template>(page: &T) -> Html<String> {
    match page.render() {
        Ok(html) => Html(html),
        Err(e) => {
            tracing::error!("template: {e}");
            Html("<!doctype html><title>error</title><p>Page could not be rendered.</p>".into())
        }
    }
}

/// Runs `f` on the database thread; its domain errors become the page's.
pub async fn call<R, F>(app: &AppState, f: F) -> Result<R, PanelError>
where
    F: FnOnce(&mut crate::store::Db) -> Result<R, StoreError> + Send + 'static,
    R: Send + 'static,
{
    app.store.call(f).await.map_err(PanelError::from)
}

pub fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

pub fn with_notice(path: &str, notice: &str) -> Response {
    see_other(&format!("{path}?notice={}", urlencode(notice)))
}

/// The status of a page shown again with an error in its form.
pub fn status_for(error: &Option<String>) -> StatusCode {
    if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    }
}

#[derive(serde::Deserialize, Default)]
pub struct NoticeQuery {
    pub notice: Option<String>,
}

pub fn fmt_ms(ms: Option<i64>) -> String {
    crate::text::format_ms(ms)
}

pub fn parse_mac(text: &str) -> Result<MacAddr, PanelError> {
    MacAddr::parse(text).map_err(|e| PanelError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// A form field, trimmed; `None` when left empty.
pub fn optional(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|s| !s.is_empty())
}

pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/panel.css"),
    )
        .into_response()
}
