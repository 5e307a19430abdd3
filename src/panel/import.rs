//! Import and export: a CSV or XLSX upload checked row by row into a preview, staged
//! until the operator confirms it (then written in one transaction), and the
//! inventory exported as CSV or XLSX.

use super::csrf::{CsrfForm, CsrfMultipart};
use super::errors::{PanelError, shown};
use super::page::{Nav, PanelResult, call, csrf_of, nav, render, status_for, with_notice};
use super::session::{Changer, User};
use crate::auth::Principal;
use crate::clock;
use crate::http::AppState;
use crate::service::Caller;
use askama::Template;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Template)]
#[template(path = "import.html")]
struct ImportPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    rows: Vec<crate::bulk::CheckedRow>,
    ok_count: usize,
    error_count: usize,
    staged: String,
}

fn import_view(
    user: &Principal,
    rows: Vec<crate::bulk::CheckedRow>,
    staged: String,
    error: Option<String>,
) -> Response {
    let error_count = rows.iter().filter(|r| !r.errors.is_empty()).count();
    let status = status_for(&error);
    (
        status,
        render(&ImportPage {
            nav: nav(user),
            notice: None,
            error,
            csrf: csrf_of(user),
            ok_count: rows.len() - error_count,
            error_count,
            rows,
            staged,
        }),
    )
        .into_response()
}

pub async fn page(Changer(user): Changer) -> PanelResult {
    Ok(import_view(&user, Vec::new(), String::new(), None))
}

/// At most two files are parsed at once: each may take tens of MiB while it is checked
/// (within the limits of `bulk`), and parsing is CPU work for the blocking pool.
static PARSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

fn refused(user: &Principal, status: StatusCode, why: String) -> Response {
    let mut response = import_view(user, Vec::new(), String::new(), Some(why));
    *response.status_mut() = status;
    response
}

/// Reads the file field chunk by chunk, stopping at the limit: a larger file is never
/// held whole. `Ok(None)`: the field went past the limit.
async fn read_limited(
    field: &mut axum::extract::multipart::Field<'_>,
) -> Result<Option<Vec<u8>>, axum::extract::multipart::MultipartError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await? {
        if bytes.len() + chunk.len() > crate::bulk::MAX_IMPORT_BYTES {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

/// POST /import: the checked preview of an uploaded CSV or XLSX file, staged for the
/// commit; nothing is written.
pub async fn preview(
    State(app): State<AppState>,
    CsrfMultipart(user, mut multipart): CsrfMultipart,
) -> PanelResult {
    let mut upload = None;
    while let Ok(Some(mut field)) = multipart.next_field().await {
        if field.name() == Some("file") {
            let name = field.file_name().unwrap_or("").to_string();
            match read_limited(&mut field).await {
                Ok(Some(bytes)) => upload = Some((name, bytes)),
                // The panel's 413 page, as for image uploads.
                Ok(None) => {
                    return Err(PanelError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "The file was refused: {}.",
                            crate::bulk::SheetError::UploadTooLarge
                        ),
                    ));
                }
                Err(e) => {
                    return Ok(refused(
                        &user,
                        e.status(),
                        format!("Upload failed: {}", e.body_text()),
                    ));
                }
            }
        }
    }
    let Some((name, bytes)) = upload else {
        return Ok(import_view(
            &user,
            Vec::new(),
            String::new(),
            Some("Choose a CSV or XLSX file.".into()),
        ));
    };
    let parsed = {
        let _slot = PARSING.acquire().await.map_err(PanelError::internal)?;
        tokio::task::spawn_blocking(move || crate::bulk::parse_upload(&name, &bytes))
            .await
            .map_err(PanelError::internal)?
    };
    let raw = match parsed {
        Ok(rows) => rows,
        Err(why) => {
            return Ok(import_view(
                &user,
                Vec::new(),
                String::new(),
                Some(format!("The file was refused: {why}.")),
            ));
        }
    };
    let checked = app
        .services
        .check_import(&Caller::from_principal(&user), raw)
        .await?;
    match app
        .imports
        .stage(&user.name, checked.clone(), clock::now_ms())
    {
        Ok(staged) => Ok(import_view(&user, checked, staged, None)),
        Err(full) => Ok(refused(
            &user,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("The preview was not kept: {full}."),
        )),
    }
}

#[derive(serde::Deserialize)]
pub struct CommitForm {
    staged: String,
}

pub async fn commit(
    State(app): State<AppState>,
    Changer(user): Changer,
    CsrfForm(form): CsrfForm<CommitForm>,
) -> PanelResult {
    let Some(rows) = app.imports.take(&form.staged, &user.name, clock::now_ms()) else {
        return Ok(import_view(
            &user,
            Vec::new(),
            String::new(),
            Some("This preview has expired; upload the file again.".into()),
        ));
    };
    let result = app
        .services
        .apply_import(&Caller::from_principal(&user), clock::now_ms(), rows)
        .await;
    match result {
        Ok(imported) => Ok(with_notice("/machines", &imported.to_string())),
        Err(e) => Ok(import_view(
            &user,
            Vec::new(),
            String::new(),
            Some(format!("Nothing imported: {}", shown(e)?)),
        )),
    }
}

pub async fn export_csv(State(app): State<AppState>, User(_user): User) -> PanelResult {
    let machines = call(&app, crate::bulk::all_machines).await?;
    let body = crate::bulk::to_csv(&machines).map_err(PanelError::internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"rackboot-machines.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

pub async fn export_xlsx(State(app): State<AppState>, User(_user): User) -> PanelResult {
    let machines = call(&app, crate::bulk::all_machines).await?;
    let body = tokio::task::spawn_blocking(move || crate::bulk::to_xlsx(&machines))
        .await
        .map_err(PanelError::internal)?
        .map_err(PanelError::internal)?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            ),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"rackboot-machines.xlsx\"",
            ),
        ],
        body,
    )
        .into_response())
}
