//! Images: the list (with the machines using each, and which is the rescue or wipe
//! image), the upload, and deletion of an unused image with its files.

use super::csrf::{CsrfForm, NoFields};
use super::errors::PanelError;
use super::page::{
    Nav, NoticeQuery, PanelResult, call, csrf_of, nav, render, status_for, with_notice,
};
use super::session::{Changer, User};
use super::upload::ImageUpload;
use crate::auth::Principal;
use crate::clock;
use crate::http::AppState;
use crate::inventory;
use crate::store::{self, StoreError};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;

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

fn inventory_images(
    conn: &mut rusqlite::Connection,
) -> Result<Vec<(store::Image, u64)>, StoreError> {
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
    match crate::bulk::receive_image(&app, multipart, &user.actor()).await {
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
    let config = (*app.lifecycle).clone();
    let actor = user.actor();
    let now = clock::now_ms();
    let result = app
        .store
        .call(move |conn| inventory::delete_image(conn, &name, &config, &actor, now))
        .await;
    match result {
        Ok(image) => {
            let dir = app.data_dir.join("images").join(&image.name);
            if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
                tracing::warn!(dir = %dir.display(), "image files not removed: {e}");
            }
            Ok(with_notice(
                "/images",
                &format!("Image {} deleted.", image.name),
            ))
        }
        Err(StoreError::Conflict(why) | StoreError::NotFound(why)) => {
            images_view(&app, &user, None, Some(why)).await
        }
        Err(e) => Err(e.into()),
    }
}
