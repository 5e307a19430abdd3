//! The CSRF token every state-changing request carries: the session's, in the form's
//! `csrf` field (`CsrfForm`), or for a multipart upload in an `x-csrf-token` header
//! or the upload's first field (`CsrfMultipart`; the first field, so it is checked
//! before the files are read, and so the browser form needs no script). A handler
//! that takes one of these never sees a forged request.

use super::errors::PanelError;
use super::session::{Changer, User};
use crate::auth::Principal;
use crate::http::AppState;
use crate::lifecycle;
use axum::Form;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

pub const CSRF_HEADER: HeaderName = HeaderName::from_static("x-csrf-token");

/// Longer than any token we issue; a longer first field is not a token.
const MAX_TOKEN_BYTES: usize = 256;

/// The token given must be the session's.
fn check(user: &Principal, token: Option<&str>) -> Result<(), PanelError> {
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

/// A urlencoded form from the signed-in user, its `csrf` field checked before `T` is
/// read from it. A form with nothing but the token is `CsrfForm<NoFields>`.
pub struct CsrfForm<T>(pub T);

/// The fields of a form that only confirms (delete, revoke, log out).
#[derive(serde::Deserialize)]
pub struct NoFields {}

#[derive(serde::Deserialize)]
struct Token {
    csrf: Option<String>,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let User(user) = User::from_request_parts(&mut parts, app).await?;
        let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
        // Within the route's body limit (an over-long form is a 413 here).
        let bytes = Bytes::from_request(Request::from_parts(parts, body), app)
            .await
            .map_err(IntoResponse::into_response)?;
        // The form is decoded twice, as axum's `Form` decodes it: once for the token,
        // then (only when it matched) as `T`.
        let form = |bytes: Bytes| {
            let mut request = Request::new(Body::from(bytes));
            *request.method_mut() = axum::http::Method::POST;
            if let Some(value) = &content_type {
                request
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, value.clone());
            }
            request
        };
        let Form(token) = Form::<Token>::from_request(form(bytes.clone()), &())
            .await
            .map_err(IntoResponse::into_response)?;
        check(&user, token.csrf.as_deref()).map_err(IntoResponse::into_response)?;
        let Form(fields) = Form::<T>::from_request(form(bytes), &())
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(CsrfForm(fields))
    }
}

/// A multipart upload from a user who may change things, its CSRF token checked; the
/// `Multipart` continues after the token's field. Read within the route's body limit.
pub struct CsrfMultipart(pub Principal, pub Multipart);

impl FromRequest<AppState> for CsrfMultipart {
    type Rejection = Response;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let Changer(user) = Changer::from_request_parts(&mut parts, app).await?;
        let multipart = checked_multipart(&user, Request::from_parts(parts, body)).await?;
        Ok(CsrfMultipart(user, multipart))
    }
}

/// The upload's multipart fields, once its token (header or first field) matched
/// `user`'s session.
pub async fn checked_multipart(user: &Principal, request: Request) -> Result<Multipart, Response> {
    let header_token = request
        .headers()
        .get(CSRF_HEADER)
        .map(|v| v.to_str().unwrap_or("").to_string());
    if let Some(token) = &header_token {
        check(user, Some(token)).map_err(IntoResponse::into_response)?;
    }
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(IntoResponse::into_response)?;
    if header_token.is_none() {
        let token = first_field_token(&mut multipart).await;
        check(user, token.as_deref()).map_err(IntoResponse::into_response)?;
    }
    Ok(multipart)
}

/// The first field's value if it is named `csrf` and short; nothing after it is read.
async fn first_field_token(multipart: &mut Multipart) -> Option<String> {
    let mut field = multipart.next_field().await.ok()??;
    if field.name() != Some("csrf") {
        return None;
    }
    let mut token = Vec::new();
    while let Some(chunk) = field.chunk().await.ok()? {
        token.extend_from_slice(&chunk);
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
    }
    String::from_utf8(token).ok()
}
