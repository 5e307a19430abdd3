//! Users and API tokens, for admins: add and delete users, create tokens (the secret
//! shown once) and revoke them.

use super::csrf::{CsrfForm, NoFields};
use super::errors::shown;
use super::page::{
    Nav, NoticeQuery, PanelResult, csrf_of, fmt_ms, nav, render, status_for, with_notice,
};
use super::session::Admin;
use crate::auth::{Principal, Role};
use crate::clock;
use crate::http::AppState;
use crate::service::Caller;
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
    let caller = Caller::from_principal(user);
    let users = app.services.users(&caller).await?;
    let tokens = app.services.tokens(&caller).await?;
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
    let caller = Caller::from_principal(&user);
    match app
        .services
        .add_user(
            &caller,
            clock::now_ms(),
            form.user.clone(),
            form.password,
            role,
        )
        .await
    {
        Ok(()) => Ok(with_notice("/admin", &format!("User {} added.", form.user))),
        Err(e) => admin_view(&app, &user, None, Some(shown(e)?), None).await,
    }
}

pub async fn delete_user(
    State(app): State<AppState>,
    Admin(user): Admin,
    Path(name): Path<String>,
    _: CsrfForm<NoFields>,
) -> PanelResult {
    let caller = Caller::from_principal(&user);
    match app
        .services
        .delete_user(&caller, clock::now_ms(), name.clone())
        .await
    {
        Ok(()) => Ok(with_notice("/admin", &format!("User {name} deleted."))),
        Err(e) => admin_view(&app, &user, None, Some(shown(e)?), None).await,
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
    let caller = Caller::from_principal(&user);
    match app
        .services
        .create_token(&caller, clock::now_ms(), form.name.clone(), role)
        .await
    {
        Ok(secret) => admin_view(&app, &user, None, None, Some((form.name, secret))).await,
        Err(e) => admin_view(&app, &user, None, Some(shown(e)?), None).await,
    }
}

pub async fn revoke_token(
    State(app): State<AppState>,
    Admin(user): Admin,
    Path(name): Path<String>,
    _: CsrfForm<NoFields>,
) -> PanelResult {
    let caller = Caller::from_principal(&user);
    match app
        .services
        .revoke_token(&caller, clock::now_ms(), name.clone())
        .await
    {
        Ok(()) => Ok(with_notice("/admin", &format!("Token {name} revoked."))),
        Err(e) => admin_view(&app, &user, None, Some(shown(e)?), None).await,
    }
}
