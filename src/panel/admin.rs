//! Users and API tokens, for admins: add and delete users, create tokens (the secret
//! shown once) and revoke them.

use super::csrf::{CsrfForm, NoFields};
use super::errors::PanelError;
use super::page::{
    Nav, NoticeQuery, PanelResult, call, csrf_of, fmt_ms, nav, render, status_for, with_notice,
};
use super::session::Admin;
use crate::auth::{self, Principal, Role};
use crate::clock;
use crate::http::AppState;
use crate::store::StoreError;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;

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

/// The admin page; its callers have an `Admin`.
async fn admin_view(
    app: &AppState,
    user: &Principal,
    notice: Option<String>,
    error: Option<String>,
    new_secret: Option<(String, String)>,
) -> PanelResult {
    let (users, tokens) = call(app, |conn| {
        Ok((auth::list_users(conn)?, auth::list_tokens(conn)?))
    })
    .await?;
    let status = status_for(&error);
    Ok((
        status,
        render(&AdminPage {
            nav: nav(user),
            notice,
            error,
            csrf: csrf_of(user),
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

pub async fn page(
    State(app): State<AppState>,
    Admin(user): Admin,
    Query(q): Query<NoticeQuery>,
) -> PanelResult {
    admin_view(&app, &user, q.notice, None, None).await
}

#[derive(serde::Deserialize)]
pub struct AddUserForm {
    user: String,
    password: String,
    role: String,
}

pub async fn add_user(
    State(app): State<AppState>,
    Admin(user): Admin,
    CsrfForm(form): CsrfForm<AddUserForm>,
) -> PanelResult {
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

pub async fn delete_user(
    State(app): State<AppState>,
    Admin(user): Admin,
    Path(name): Path<String>,
    _: CsrfForm<NoFields>,
) -> PanelResult {
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
pub struct TokenForm {
    name: String,
    role: String,
}

pub async fn create_token(
    State(app): State<AppState>,
    Admin(user): Admin,
    CsrfForm(form): CsrfForm<TokenForm>,
) -> PanelResult {
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

pub async fn revoke_token(
    State(app): State<AppState>,
    Admin(user): Admin,
    Path(name): Path<String>,
    _: CsrfForm<NoFields>,
) -> PanelResult {
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
