//! Images: the list (with the machines using each, and which is the rescue or wipe
//! image), the upload, and deletion of an unused image with its files.

use super::csrf::{CsrfForm, NoFields};
use super::errors::{PanelError, shown};
use super::page::{
    Nav, NoticeQuery, PanelResult, call, csrf_of, nav, render, status_for, with_notice,
};
use super::session::{Changer, User};
use super::upload::ImageUpload;
use crate::auth::Principal;
use crate::clock;
use crate::http::AppState;
use crate::images::StagedImage;
use crate::inventory;
use crate::model::Image;
use crate::service::Caller;
use crate::service::images::{Existing, MAX_CMDLINE_BYTES};
use crate::store::{self, StoreError};
use askama::Template;
use axum::extract::Multipart;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

pub struct ImageRow {
    name: String,
    kernel_sha256: String,
    initrd_sha256: String,
    cmdline: String,
    files: String,
    machines: u64,
    deletable: bool,
    role: String,
}

#[derive(Template)]
#[template(path = "images.html")]
struct ImagesPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    can_change: bool,
    images: Vec<ImageRow>,
}

async fn images_view(
    app: &AppState,
    user: &Principal,
    notice: Option<String>,
    error: Option<String>,
) -> PanelResult {
    let listed = call(app, inventory_images).await?;
    let data_dir = app.data_dir.clone();
    let rescue = app.lifecycle.rescue_image.clone();
    let wipe = app.lifecycle.wipe_image.clone();
    let rows = tokio::task::spawn_blocking(move || {
        listed
            .into_iter()
            .map(|(image, machines)| {
                let role = if rescue.as_deref() == Some(image.name.as_str()) {
                    "rescue image"
                } else if wipe.as_deref() == Some(image.name.as_str()) {
                    "wipe image"
                } else {
                    ""
                };
                ImageRow {
                    files: crate::images::list_files(&data_dir, &image.name).join(", "),
                    deletable: machines == 0 && role.is_empty(),
                    role: role.to_string(),
                    name: image.name,
                    kernel_sha256: image.kernel_sha256,
                    initrd_sha256: image.initrd_sha256,
                    cmdline: image.cmdline,
                    machines,
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .map_err(PanelError::internal)?;
    let status = status_for(&error);
    Ok((
        status,
        render(&ImagesPage {
            nav: nav(user),
            notice,
            error,
            csrf: csrf_of(user),
            can_change: user.role.can_change(),
            images: rows,
        }),
    )
        .into_response())
}

fn inventory_images(conn: &mut crate::store::Db) -> Result<Vec<(store::Image, u64)>, StoreError> {
    inventory::images_with_use(conn)
}

pub async fn list(
    State(app): State<AppState>,
    User(user): User,
    Query(q): Query<NoticeQuery>,
) -> PanelResult {
    images_view(&app, &user, q.notice, None).await
}

/// POST /images: a multipart upload of an image (name, kernel, initrd, cmdline,
/// install files), each file streamed to disk as it arrives. `ImageUpload` has
/// checked the session, the role, the CSRF token and the limits first.
pub async fn upload(State(app): State<AppState>, upload: ImageUpload) -> PanelResult {
    let ImageUpload {
        user,
        multipart,
        refusal,
    } = upload;
    match receive_image(&app, multipart, &Caller::from_principal(&user)).await {
        Ok(image) => Ok(with_notice(
            "/images",
            &format!(
                "Image {} added (kernel sha256 {}).",
                image.name, image.kernel_sha256
            ),
        )),
        // Cut off by the size cap or the free-space floor: that is the reason to show.
        Err(why) => match refusal.take() {
            Some(refused) => {
                let mut response = images_view(&app, &user, None, Some(refused.message)).await?;
                *response.status_mut() = refused.status;
                Ok(response)
            }
            None => images_view(&app, &user, None, Some(why)).await,
        },
    }
}

pub async fn delete(
    State(app): State<AppState>,
    Changer(user): Changer,
    Path(name): Path<String>,
    _: CsrfForm<NoFields>,
) -> PanelResult {
    let result = app
        .services
        .delete_image(&Caller::from_principal(&user), clock::now_ms(), name)
        .await;
    match result {
        Ok(image) => Ok(with_notice(
            "/images",
            &format!("Image {} deleted.", image.name),
        )),
        Err(e) => images_view(&app, &user, None, Some(shown(e)?)).await,
    }
}

/// Streams one multipart file field to `dest`, returning its sha256 and size.
async fn stream_field(
    field: &mut axum::extract::multipart::Field<'_>,
    dest: &std::path::Path,
) -> Result<(String, u64), String> {
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| format!("upload interrupted: {e}"))?
    {
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    }
    file.sync_all()
        .await
        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// Receives an image upload (name, kernel, initrd, cmdline, install files), each file
/// streamed to a staging directory and moved into place once all arrived.
pub async fn receive_image(
    app: &AppState,
    mut multipart: Multipart,
    caller: &Caller,
) -> Result<Image, String> {
    let data_dir = app.data_dir.clone();
    let staging = tokio::task::spawn_blocking(move || crate::images::new_staging_dir(&data_dir))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let result = receive_into(app, &mut multipart, &staging, caller).await;
    if let Err(e) = tokio::fs::remove_dir_all(&staging).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %staging.display(), "upload staging not removed: {e}");
    }
    result
}

/// A text field read to at most `limit` bytes: the body as a whole may be gigabytes,
/// a name or command line is not.
async fn bounded_text(
    field: &mut axum::extract::multipart::Field<'_>,
    what: &str,
    limit: usize,
) -> Result<String, String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| format!("upload interrupted: {e}"))?
    {
        if bytes.len() + chunk.len() > limit {
            return Err(format!("the {what} field is longer than {limit} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes)
        .map(|text| text.trim().to_string())
        .map_err(|_| format!("the {what} field is not UTF-8 text"))
}

async fn receive_into(
    app: &AppState,
    multipart: &mut Multipart,
    staging: &std::path::Path,
    caller: &Caller,
) -> Result<Image, String> {
    let (mut name, mut cmdline) = (String::new(), String::new());
    let (mut kernel, mut initrd) = (None, None);
    let mut files = Vec::new();
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| format!("bad upload: {e}"))?;
        let Some(mut field) = field else { break };
        match field.name().unwrap_or("") {
            "name" => name = bounded_text(&mut field, "name", 256).await?,
            "cmdline" => {
                cmdline = bounded_text(&mut field, "cmdline", MAX_CMDLINE_BYTES + 1).await?
            }
            "kernel" => kernel = Some(stream_field(&mut field, &staging.join("kernel")).await?),
            "initrd" => initrd = Some(stream_field(&mut field, &staging.join("initrd")).await?),
            "files" => {
                let file_name = field.file_name().unwrap_or("").to_string();
                if file_name.is_empty() {
                    continue;
                }
                crate::images::validate_name(&file_name).map_err(|e| e.to_string())?;
                stream_field(&mut field, &staging.join("files").join(&file_name)).await?;
                files.push(file_name);
            }
            other => return Err(format!("unexpected form field {other:?}")),
        }
    }
    crate::images::validate_name(&name).map_err(|e| e.to_string())?;
    let (Some((kernel_sha256, kernel_size)), Some((initrd_sha256, _))) = (kernel, initrd) else {
        return Err("both a kernel and an initrd are needed".into());
    };
    if kernel_size == 0 {
        return Err("the kernel file is empty".into());
    }
    let staged = StagedImage {
        name,
        cmdline,
        staging: staging.to_path_buf(),
        kernel_sha256,
        initrd_sha256,
        files,
        arches: vec![crate::lifecycle::Arch::Amd64],
    };
    app.services
        .add_image(caller, crate::clock::now_ms(), staged, Existing::Refuse)
        .await
        .map_err(|e| e.to_string())
}
