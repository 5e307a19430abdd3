//! Images: adding or replacing one whose files were staged on disk (by an upload or
//! by the CLI's copy), and deleting one no machine uses.

use super::{Caller, Need, ServiceError, Services};
use crate::images::{self, StagedImage};
use crate::inventory;
use crate::store::{self, Image};

/// The longest kernel command line taken: Linux's own limit on x86 is 2048 bytes.
pub const MAX_CMDLINE_BYTES: usize = 2048;

/// Whether an image of the same name may be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    Refuse,
    Replace,
}

pub fn check_name(name: &str) -> Result<(), ServiceError> {
    images::validate_name(name).map_err(|e| ServiceError::invalid("name", e.to_string()))
}

pub fn check_cmdline(cmdline: &str) -> Result<(), ServiceError> {
    if cmdline.len() > MAX_CMDLINE_BYTES {
        return Err(ServiceError::invalid(
            "cmdline",
            format!(
                "the kernel command line has {} bytes; at most {MAX_CMDLINE_BYTES} are taken",
                cmdline.len()
            ),
        ));
    }
    if cmdline.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "cmdline",
            "the kernel command line must be one line without control characters",
        ));
    }
    Ok(())
}

impl Services {
    /// Moves a staged image into `data_dir/images/NAME/` and records it, in one
    /// transaction with its audit event. The staging directory is consumed on
    /// success; on refusal it is left for the caller to remove.
    pub async fn add_image(
        &self,
        caller: &Caller,
        now_ms: i64,
        staged: StagedImage,
        existing: Existing,
    ) -> Result<Image, ServiceError> {
        self.register_image(caller, now_ms, staged, existing, None)
            .await
    }

    /// `add_image`, and for a catalog image the record of where it came from (and the
    /// signed suite's date, refused when older than one seen before), in the same
    /// transaction: an image is registered with its provenance or not at all.
    pub(crate) async fn register_image(
        &self,
        caller: &Caller,
        now_ms: i64,
        staged: StagedImage,
        existing: Existing,
        source: Option<(store::ImageSource, Option<store::ReleaseStamp>)>,
    ) -> Result<Image, ServiceError> {
        caller.require(Need::Change)?;
        check_name(&staged.name)?;
        check_cmdline(&staged.cmdline)?;
        let dir = self.data_dir.join("images").join(&staged.name);
        let actor = caller.actor_text();
        self.store
            .transaction(move |tx| {
                let replacing = store::get_image(tx, &staged.name)?.is_some();
                if replacing && existing == Existing::Refuse {
                    return Err(ServiceError::Conflict(format!(
                        "an image named {} exists; delete it first or choose another name",
                        staged.name
                    )));
                }
                if let Some((_, Some(stamp))) = &source
                    && let Some(seen) = store::release_stamp(tx, &stamp.key)?
                    && stamp.date < seen
                {
                    return Err(ServiceError::Upstream(format!(
                        "refused: the signed suite file is dated {}, older than the {} one \
                         already seen ({}): an old copy is being replayed, or the mirror is \
                         behind",
                        crate::text::format_ms(Some(stamp.date * 1000)),
                        crate::text::format_ms(Some(seen * 1000)),
                        stamp.key
                    )));
                }
                place(&staged.staging, &dir)?;
                let image = Image {
                    name: staged.name.clone(),
                    kernel_path: dir.join("kernel").display().to_string(),
                    kernel_sha256: staged.kernel_sha256.clone(),
                    // An image without an initrd (memtest86+) records none.
                    initrd_path: if staged.initrd_sha256.is_empty() {
                        String::new()
                    } else {
                        dir.join("initrd").display().to_string()
                    },
                    initrd_sha256: staged.initrd_sha256.clone(),
                    cmdline: staged.cmdline.clone(),
                    arches: staged.arches.clone(),
                };
                store::put_image(tx, &image, now_ms)?;
                match &source {
                    Some((image_source, stamp)) => {
                        store::put_image_source(tx, image_source)?;
                        if let Some(stamp) = stamp {
                            store::put_release_stamp(tx, &stamp.key, stamp.date, now_ms)?;
                        }
                    }
                    // Files replaced by hand are no longer what a chain verified.
                    None => store::delete_image_source(tx, &staged.name)?,
                }
                store::insert_event_by(
                    tx,
                    now_ms,
                    None,
                    if replacing {
                        "image.replaced"
                    } else {
                        "image.added"
                    },
                    format!(
                        "{} kernel={} files={}{}",
                        image.name,
                        image.kernel_sha256,
                        staged.files.join(","),
                        match &source {
                            Some((s, _)) => format!(
                                " from catalog {} verified by {}",
                                s.definition,
                                s.verified_by.as_deref().unwrap_or("pinned sha256")
                            ),
                            None => String::new(),
                        }
                    ),
                    Some(&actor),
                )?;
                Ok(image)
            })
            .await
    }

    /// Deletes an image that no machine uses and that is not the rescue or wipe
    /// image, then its files.
    pub async fn delete_image(
        &self,
        caller: &Caller,
        now_ms: i64,
        name: String,
    ) -> Result<Image, ServiceError> {
        caller.require(Need::Change)?;
        let (lifecycle, actor) = (self.lifecycle.clone(), caller.actor_text());
        let image = self
            .store
            .transaction(move |tx| delete_image_in(tx, &name, &lifecycle, &actor, now_ms))
            .await?;
        let dir = self.data_dir.join("images").join(&image.name);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), "image files not removed: {e}");
        }
        Ok(image)
    }
}

/// Deletes an image's record inside the caller's transaction, unless a machine uses
/// it or it is the rescue or wipe image.
pub fn delete_image_in(
    tx: &crate::store::Db,
    name: &str,
    lifecycle: &crate::lifecycle::LifecycleConfig,
    actor: &str,
    now_ms: i64,
) -> Result<Image, ServiceError> {
    let image = store::get_image(tx, name)?.ok_or(ServiceError::NoSuchImage(name.to_string()))?;
    let machines = inventory::image_users(tx, name)?;
    if machines > 0 {
        return Err(ServiceError::ImageInUse {
            name: name.to_string(),
            machines,
        });
    }
    if lifecycle.rescue_image.as_deref() == Some(name)
        || lifecycle.wipe_image.as_deref() == Some(name)
    {
        return Err(ServiceError::Conflict(format!(
            "image {name} is the configured rescue or wipe image and cannot be deleted"
        )));
    }
    inventory::delete_image_row(tx, name)?;
    store::insert_event_by(
        tx,
        now_ms,
        None,
        "image.deleted",
        name.to_string(),
        Some(actor),
    )?;
    Ok(image)
}

/// Puts the staged files where the image lives, replacing what was there. Runs on
/// the database thread inside the transaction, so the record and the files change
/// together as far as callers can see.
fn place(staging: &std::path::Path, dir: &std::path::Path) -> Result<(), ServiceError> {
    let io = |what: &str, e: std::io::Error| {
        ServiceError::Files(format!("cannot {what} {}: {e}", dir.display()))
    };
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io("create the parent of", e))?;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove the old files of", e)),
    }
    // The staging directory's owner mark does not belong with the image.
    let _ = std::fs::remove_file(staging.join("owner.pid"));
    std::fs::rename(staging, dir).map_err(|e| io("move the upload into", e))
}
