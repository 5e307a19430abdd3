//! `PanelError`, the status each kind of failure gets, and the error page. A handler
//! returns the error; `error_pages` renders it with the request id and logs it in
//! the request's span, so no conversion logs as a side effect and no page is
//! rewritten after rendering. Internal details go to the log, never to the page.

use super::middleware::request_id;
use super::page::{Nav, render};
use crate::store::StoreError;
use askama::Template;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// An error shown to a user: a status and a message meant for them.
#[derive(Clone, Debug)]
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

    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The request is larger than this page accepts.",
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
        let status = crate::http::status_for(e.kind());
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            return PanelError::internal(e);
        }
        PanelError::new(status, e.to_string())
    }
}

/// A refusal to show on the page the form came from (the user can fix it), or an
/// internal error to report as such.
pub fn shown(e: crate::service::ServiceError) -> Result<String, PanelError> {
    match e.kind() {
        crate::service::ErrorKind::Internal => Err(e.into()),
        _ => Ok(e.to_string()),
    }
}

/// The status only; the page is made by `error_pages`, which knows the request id.
impl IntoResponse for PanelError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
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

/// Renders a `PanelError` a handler or extractor returned. A 413 without one is the
/// body limit's (tower-http's, or an extractor's): it gets the same page.
pub(super) async fn error_pages(request: Request, next: Next) -> Response {
    let id = request_id(request.extensions());
    let mut response = next.run(request).await;
    let error = match response.extensions_mut().remove::<PanelError>() {
        Some(error) => error,
        None if response.status() == StatusCode::PAYLOAD_TOO_LARGE => PanelError::too_large(),
        None => return response,
    };
    tracing::info!(
        status = error.status.as_u16(),
        message = error.message,
        "error page shown"
    );
    let (mut parts, _) = response.into_parts();
    parts.status = error.status;
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    let page = ErrorPage {
        nav: None,
        notice: None,
        error: None,
        status: error.status.as_u16(),
        reason: error.status.canonical_reason().unwrap_or("").to_string(),
        message: error.message,
        request_id: id,
    };
    (parts, render(&page)).into_response()
}
