//! Image files: copied under `data_dir/images/NAME/` with their sha256, so the
//! inventory never points at a file someone may move or change.

use crate::model::Image;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image name {0:?} must be 1-64 characters of letters, digits, '.', '_' or '-', not starting with '.'"
    )]
    BadName(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub fn validate_name(name: &str) -> Result<(), ImageError> {
    if crate::validate::valid_image_name(name) {
        Ok(())
    } else {
        Err(ImageError::BadName(name.to_string()))
    }
}

/// Copies `source` to `dest` (through a temporary file, renamed when complete and
/// synced) and returns the sha256 of what was written.
fn copy_with_digest(source: &Path, dest: &Path) -> Result<String, ImageError> {
    let io_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| ImageError::Io { path, source }
    };
    let mut input = std::fs::File::open(source).map_err(io_err(source))?;
    let partial = dest.with_extension("partial");
    let mut output = std::fs::File::create(&partial).map_err(io_err(&partial))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input.read(&mut buf).map_err(io_err(source))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        output.write_all(&buf[..n]).map_err(io_err(&partial))?;
    }
    output.sync_all().map_err(io_err(&partial))?;
    std::fs::rename(&partial, dest).map_err(io_err(dest))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Where an image's unattended-install templates live.
pub fn files_dir(data_dir: &Path, image: &str) -> PathBuf {
    data_dir.join("images").join(image).join("files")
}

/// Copies an install template into an image. Blocking.
pub fn add_file(data_dir: &Path, image: &str, source: &Path) -> Result<String, ImageError> {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| ImageError::BadName(source.display().to_string()))?;
    validate_name(&name)?;
    let dir = files_dir(data_dir, image);
    std::fs::create_dir_all(&dir).map_err(|source| ImageError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    copy_with_digest(source, &dir.join(&name))?;
    Ok(name)
}

/// The install templates an image carries.
pub fn list_files(data_dir: &Path, image: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(files_dir(data_dir, image))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| validate_name(n).is_ok() && !n.ends_with(".partial"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Copies an image's files into `data_dir/images/NAME/`. Blocking.
pub fn import(
    data_dir: &Path,
    name: &str,
    kernel: &Path,
    initrd: &Path,
    cmdline: &str,
) -> Result<Image, ImageError> {
    validate_name(name)?;
    let dir: PathBuf = data_dir.join("images").join(name);
    std::fs::create_dir_all(&dir).map_err(|source| ImageError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let kernel_path = dir.join("kernel");
    let initrd_path = dir.join("initrd");
    let kernel_sha256 = copy_with_digest(kernel, &kernel_path)?;
    let initrd_sha256 = copy_with_digest(initrd, &initrd_path)?;
    Ok(Image {
        name: name.to_string(),
        kernel_path: kernel_path.display().to_string(),
        kernel_sha256,
        initrd_path: initrd_path.display().to_string(),
        initrd_sha256,
        cmdline: cmdline.to_string(),
        arches: vec![crate::lifecycle::Arch::Amd64],
    })
}

/// Adds an image's own signed shim and grub to its staging directory, under the
/// names of `arch`. Blocking.
pub fn stage_loader(
    staging: &Path,
    arch: crate::lifecycle::Arch,
    shim: &Path,
    grub: &Path,
) -> Result<(), ImageError> {
    let (shim_name, grub_name) = arch.loader_names();
    copy_with_digest(shim, &staging.join(shim_name))?;
    copy_with_digest(grub, &staging.join(grub_name))?;
    Ok(())
}

/// An image whose files wait in a staging directory (`kernel`, `initrd`, and
/// install templates under `files/`), with their digests.
#[derive(Debug, Clone)]
pub struct StagedImage {
    pub name: String,
    pub cmdline: String,
    pub staging: PathBuf,
    pub kernel_sha256: String,
    pub initrd_sha256: String,
    /// The install templates' names, for the audit event.
    pub files: Vec<String>,
    /// The architectures its kernel runs on; amd64 unless the caller says otherwise.
    pub arches: Vec<crate::lifecycle::Arch>,
}

/// The file in a staging directory naming the process that made it.
const OWNER_FILE: &str = "owner.pid";

/// A new staging directory under `data_dir/uploads/`, for one image's files, marked
/// with this process's id so a later start can tell it was abandoned.
pub fn new_staging_dir(data_dir: &Path) -> Result<PathBuf, ImageError> {
    let dir = data_dir
        .join("uploads")
        .join(hex::encode(rand::random::<[u8; 8]>()));
    let io = |source| ImageError::Io {
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir.join("files")).map_err(io)?;
    std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string()).map_err(io)?;
    Ok(dir)
}

/// Whether the process that made a staging directory is gone.
fn owner_gone(dir: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<libc::pid_t>().ok())
    else {
        return false;
    };
    if pid <= 0 || pid == std::process::id() as libc::pid_t {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Removes staging directories whose process is gone, or older than `max_age`: what
/// an upload or a fetch killed half-way left behind. Returns how many were removed.
/// Blocking.
pub fn remove_stale_staging(data_dir: &Path, max_age: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(data_dir.join("uploads")) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.filter_map(Result::ok) {
        let stale = owner_gone(&entry.path())
            || entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > max_age);
        if stale && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Copies an image's files from the local disk into a staging directory (the CLI's
/// `image add`); the service layer moves it into place. Blocking.
pub fn stage_files(
    data_dir: &Path,
    name: &str,
    cmdline: &str,
    kernel: &Path,
    initrd: &Path,
    templates: &[PathBuf],
) -> Result<StagedImage, ImageError> {
    validate_name(name)?;
    let staging = new_staging_dir(data_dir)?;
    let copied = (|| {
        let kernel_sha256 = copy_with_digest(kernel, &staging.join("kernel"))?;
        let initrd_sha256 = copy_with_digest(initrd, &staging.join("initrd"))?;
        let mut files = Vec::new();
        for source in templates {
            let file_name = source
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
                .ok_or_else(|| ImageError::BadName(source.display().to_string()))?;
            validate_name(&file_name)?;
            copy_with_digest(source, &staging.join("files").join(&file_name))?;
            files.push(file_name);
        }
        Ok((kernel_sha256, initrd_sha256, files))
    })();
    match copied {
        Ok((kernel_sha256, initrd_sha256, files)) => Ok(StagedImage {
            name: name.to_string(),
            cmdline: cmdline.to_string(),
            staging,
            kernel_sha256,
            initrd_sha256,
            files,
            arches: vec![crate::lifecycle::Arch::Amd64],
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_copies_files_and_records_sha256() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kernel = dir.path().join("vmlinuz");
        let initrd = dir.path().join("initrd.img");
        std::fs::write(&kernel, b"abc").expect("write");
        std::fs::write(&initrd, b"").expect("write");
        let data = dir.path().join("data");
        let image = import(&data, "debian-12", &kernel, &initrd, "console=ttyS0").expect("import");
        assert_eq!(
            image.kernel_sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            image.initrd_sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(std::fs::read(&image.kernel_path).expect("read"), b"abc");
        assert!(image.kernel_path.starts_with(data.to_str().expect("utf8")));
    }

    #[test]
    fn stale_staging_directories_are_removed_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = new_staging_dir(dir.path()).expect("staging");
        assert_eq!(
            remove_stale_staging(dir.path(), std::time::Duration::from_secs(3600)),
            0
        );
        assert!(fresh.exists());
        assert_eq!(
            remove_stale_staging(dir.path(), std::time::Duration::ZERO),
            1
        );
        assert!(!fresh.exists());
    }

    #[test]
    fn bad_names_and_missing_files_are_refused() {
        for name in ["", ".hidden", "a/b", "../x", "sp ace", &"x".repeat(65)] {
            assert!(validate_name(name).is_err(), "{name:?}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let err = import(
            dir.path(),
            "ok",
            Path::new("/nonexistent/k"),
            Path::new("/x"),
            "",
        )
        .expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/k"), "{err}");
    }
}
