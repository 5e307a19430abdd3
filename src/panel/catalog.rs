//! The catalog: every image definition in force, whether its chain was tested end
//! to end, whether it is registered and what verified it; "Fetch" starts a verified
//! fetch in the background, and its page shows the progress until it ends.

use super::csrf::CsrfForm;
use super::errors::{PanelError, shown};
use super::page::{Nav, NoticeQuery, PanelResult, csrf_of, nav, render, see_other, status_for};
use super::session::{Changer, User};
use crate::auth::Principal;
use crate::http::AppState;
use crate::service::Caller;
use crate::service::catalog::FetchImage;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use std::collections::BTreeMap;

pub struct DefinitionRow {
    name: String,
    os: String,
    version: String,
    kind: String,
    firmware: String,
    memory_mib: u32,
    chain: &'static str,
    tested: Option<String>,
    notes: String,
    ships_keys: bool,
    /// `release=41` and the like, for the form's fields.
    parameters: Vec<(String, String)>,
    registered: Option<String>,
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct CatalogPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    can_change: bool,
    is_admin: bool,
    definitions: Vec<DefinitionRow>,
    /// What the user typed, shown back with an error.
    typed_mirror: String,
}

async fn catalog_view(
    app: &AppState,
    user: &Principal,
    notice: Option<String>,
    error: Option<String>,
    typed_mirror: String,
) -> PanelResult {
    let entries = match app.services.catalog_entries().await {
        Ok(entries) => entries,
        Err(e) => return Err(PanelError::internal(e)),
    };
    let definitions = entries
        .into_iter()
        .map(|entry| {
            let d = entry.definition;
            let version = d.display_version();
            DefinitionRow {
                firmware: d
                    .firmware
                    .iter()
                    .map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                kind: format!("{:?}", d.kind).to_lowercase(),
                chain: d.chain.summary(),
                ships_keys: !d.keys.is_empty() || !d.chain.needs_keys(),
                parameters: d.parameters.clone().into_iter().collect(),
                registered: entry.registered.map(|s| {
                    format!(
                        "registered {} , verified by {}",
                        crate::text::format_ms(Some(s.fetched_ms)),
                        s.verified_by.as_deref().unwrap_or("its pinned sha256")
                    )
                }),
                notes: d.notes.unwrap_or_default(),
                tested: d.tested,
                memory_mib: d.memory_mib,
                name: d.name,
                os: d.os,
                version,
            }
        })
        .collect();
    let status = status_for(&error);
    Ok((
        status,
        render(&CatalogPage {
            nav: nav(user),
            notice,
            error,
            csrf: csrf_of(user),
            can_change: user.role.can_change(),
            is_admin: user.role.can_admin(),
            definitions,
            typed_mirror,
        }),
    )
        .into_response())
}

pub async fn page(
    State(app): State<AppState>,
    User(user): User,
    Query(q): Query<NoticeQuery>,
) -> PanelResult {
    catalog_view(&app, &user, q.notice, None, String::new()).await
}

#[derive(serde::Deserialize)]
pub struct FetchForm {
    #[serde(default)]
    mirror: String,
    /// Armoured OpenPGP keys that replace the definition's (admins only).
    #[serde(default)]
    keyring: String,
    /// Definition parameters, as `param.release=41`.
    #[serde(flatten)]
    rest: BTreeMap<String, String>,
}

/// The longest keyring text taken from the form (a few keys, armoured).
const MAX_KEYRING_FORM_BYTES: usize = 256 * 1024;

pub async fn fetch(
    State(app): State<AppState>,
    Changer(user): Changer,
    Path(name): Path<String>,
    CsrfForm(form): CsrfForm<FetchForm>,
) -> PanelResult {
    let mirror = form.mirror.trim().to_string();
    if form.keyring.len() > MAX_KEYRING_FORM_BYTES {
        return catalog_view(
            &app,
            &user,
            None,
            Some(format!(
                "The trusted keys are longer than {MAX_KEYRING_FORM_BYTES} bytes."
            )),
            mirror,
        )
        .await;
    }
    let parameters = form
        .rest
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("param.")
                .map(|k| (k.to_string(), v.trim().to_string()))
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let request = FetchImage {
        definition: name,
        mirror: (!mirror.is_empty()).then(|| mirror.clone()),
        from_dir: None,
        keyring: (!form.keyring.trim().is_empty()).then(|| form.keyring.into_bytes()),
        parameters,
    };
    match app
        .services
        .start_fetch(&Caller::from_principal(&user), request)
    {
        Ok(id) => Ok(see_other(&format!("/catalog/fetches/{id}"))),
        Err(e) => {
            let status = crate::http::status_for(e.kind());
            let mut page = catalog_view(&app, &user, None, Some(shown(e)?), mirror).await?;
            *page.status_mut() = status;
            Ok(page)
        }
    }
}

#[derive(Template)]
#[template(path = "fetch_job.html")]
struct FetchPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    definition: String,
    actor: String,
    step: String,
    done_mib: String,
    total_mib: Option<String>,
    percent: Option<u64>,
    running: bool,
    outcome: Option<Result<String, String>>,
}

pub async fn job(
    State(app): State<AppState>,
    User(user): User,
    Path(id): Path<u64>,
) -> PanelResult {
    let Some(job) = app.services.fetch_job(id) else {
        return Err(PanelError::new(
            axum::http::StatusCode::NOT_FOUND,
            "No such fetch (only the most recent ones are kept).",
        ));
    };
    let mib = |b: u64| format!("{:.1}", b as f64 / f64::from(1u32 << 20));
    let p = &job.progress;
    Ok(render(&FetchPage {
        nav: nav(&user),
        notice: None,
        error: None,
        definition: job.definition.clone(),
        actor: job.actor.clone(),
        step: p.step.clone(),
        done_mib: mib(p.done_bytes),
        total_mib: p.total_bytes.map(mib),
        percent: p
            .total_bytes
            .filter(|t| *t > 0)
            .map(|t| (p.done_bytes.min(t) * 100) / t),
        running: job.outcome.is_none(),
        outcome: job.outcome,
    })
    .into_response())
}
