//! The admin panel (axum + askama, server-rendered, no JavaScript), and the layers it
//! shares with the JSON API (`api`), which is mounted here behind bearer tokens.
//!
//! Every route needs a session but login and the one-time setup link; every
//! state-changing form carries the session's CSRF token. Who may do what is said by
//! the extractor a handler takes (`session::User`, `Changer`, `Admin`), and a form's
//! token is checked by the one that reads it (`csrf::CsrfForm`, `csrf::CsrfMultipart`),
//! so no handler repeats either check.
//!
//! Files, one responsibility each:
//! - `middleware`: the request id (made here, never taken from the client), the log
//!   span that carries it, and the security headers.
//! - `errors`: `PanelError`, its status, and the error page with the request id.
//! - `page`: what every page shares (layout, rendering, redirects with a notice).
//! - `session`: cookies, and the signed-in user as an extractor, by role.
//! - `csrf`: the CSRF token of forms and multipart uploads, as extractors.
//! - `login`: login, logout and the first-admin setup link.
//! - `dashboard`, `machines` (list, new, a machine, its mode, image, settings, delete,
//!   wipe), `power` (power actions, the controller form), `selection` (actions on many
//!   machines at once), `images`, `upload` (the streamed image upload: size cap and
//!   free-space floor), `leases`, `audit`, `import` (import and export), `admin`
//!   (users and tokens).
//!
//! Request bodies are limited per route group (`router`): small for forms, login and
//! the API, a few MiB for the import preview, and large only for the image upload,
//! which checks the session and the CSRF token before it reads the body.

mod admin;
mod audit;
mod catalog;
mod csrf;
mod dashboard;
mod errors;
mod images;
mod import;
mod leases;
mod login;
mod machines;
mod middleware;
mod page;
mod power;
mod selection;
mod session;
mod upload;

pub use errors::PanelError;
pub use middleware::request_id;
pub use session::SESSION_COOKIE;

use crate::http::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::limit::RequestBodyLimitLayer;

/// The most a form (and the login form, which anyone may send) may carry: a page of
/// ticked machines or a long list of SSH keys fits many times over.
pub const FORM_BODY_LIMIT: usize = 64 << 10;

/// The most an import preview may carry: the largest accepted file, with room for the
/// multipart framing.
pub const IMPORT_BODY_LIMIT: usize = crate::bulk::MAX_IMPORT_BYTES + (1 << 20);

/// A layer pair for one limit: tower-http's refuses a `Content-Length` over it at once
/// (413) and cuts a longer body off; axum's tells its extractors the same limit
/// (theirs is 2 MiB by default, or none once disabled).
fn body_limit(bytes: usize) -> (RequestBodyLimitLayer, DefaultBodyLimit) {
    (
        RequestBodyLimitLayer::new(bytes),
        DefaultBodyLimit::max(bytes),
    )
}

pub fn router(state: AppState) -> Router {
    let forms = Router::new()
        .route("/", get(dashboard::page))
        .route("/login", get(login::page).post(login::login))
        .route("/logout", post(login::logout))
        .route("/setup/{token}", get(login::setup_page).post(login::setup))
        .route("/machines", get(machines::list))
        .route(
            "/machines/new",
            get(machines::new_page).post(machines::create),
        )
        .route("/machines/selection", post(selection::confirm))
        .route("/machines/selection/run", post(selection::run))
        .route("/machines/{mac}", get(machines::page))
        .route("/machines/{mac}/mode", post(machines::set_mode))
        .route("/machines/{mac}/image", post(machines::set_image))
        .route("/machines/{mac}/settings", post(machines::save_settings))
        .route("/machines/{mac}/delete", post(machines::delete))
        .route("/machines/{mac}/wipe", get(machines::wipe_confirm))
        .route("/machines/{mac}/power", post(power::action))
        .route("/machines/{mac}/power/controller", post(power::controller))
        .route("/images", get(images::list))
        .route("/images/{name}/delete", post(images::delete))
        .route("/catalog", get(catalog::page))
        .route("/catalog/{name}/fetch", post(catalog::fetch))
        .route("/catalog/fetches/{id}", get(catalog::job))
        .route("/leases", get(leases::page))
        .route("/audit", get(audit::page))
        .route("/import", get(import::page))
        .route("/import/commit", post(import::commit))
        .route("/export.csv", get(import::export_csv))
        .route("/export.xlsx", get(import::export_xlsx))
        .route("/admin", get(admin::page))
        .route("/admin/users", post(admin::add_user))
        .route("/admin/users/{name}/delete", post(admin::delete_user))
        .route("/admin/tokens", post(admin::create_token))
        .route("/admin/tokens/{name}/revoke", post(admin::revoke_token))
        .route("/static/panel.css", get(page::stylesheet))
        .layer(body_limit(FORM_BODY_LIMIT));
    let import = Router::new()
        .route("/import", post(import::preview))
        .layer(body_limit(IMPORT_BODY_LIMIT));
    // Image uploads are gigabytes: streamed to disk within `AppState::uploads` once
    // the session and the CSRF token have been checked (`upload`), never held.
    let upload = Router::new()
        .route("/images", post(images::upload))
        .layer(DefaultBodyLimit::disable());
    let pages = forms
        .merge(import)
        .merge(upload)
        .layer(axum::middleware::from_fn(errors::error_pages));
    middleware::around(pages.merge(crate::api::router())).with_state(state)
}

/// Boot files, panel and API on one listener.
pub fn app(state: AppState, ipxe_dir: std::path::PathBuf) -> Router {
    crate::http::boot_router(state.clone(), ipxe_dir).merge(router(state))
}
