//! The TFTP server (async-tftp): the iPXE binaries, read-only, from `ipxe_dir`.
//! async-tftp runs its own executor, so it gets its own thread.

use crate::clock;
use crate::mac::MacAddr;
use crate::store::{self, Store};
use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use futures_lite::io::{Cursor, Sink};
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Longest path a client may ask for; firmware asks for short names.
const MAX_PATH_LEN: usize = 255;

pub struct IpxeHandler {
    dir: PathBuf,
    store: Store,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PathRefusal {
    TooLong,
    NotRelative,
    Backslash,
    Nul,
}

/// A requested path, confined to the served tree: no `..`, no absolute paths, no
/// backslashes (Windows-style traversal), no NUL, nothing over-long.
pub fn confined_path(requested: &Path) -> Result<PathBuf, PathRefusal> {
    let text = requested.to_string_lossy();
    if text.len() > MAX_PATH_LEN {
        return Err(PathRefusal::TooLong);
    }
    if text.contains('\\') {
        return Err(PathRefusal::Backslash);
    }
    if text.contains('\0') {
        return Err(PathRefusal::Nul);
    }
    let mut clean = PathBuf::new();
    for component in requested.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(PathRefusal::NotRelative);
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(PathRefusal::NotRelative);
    }
    Ok(clean)
}

impl IpxeHandler {
    pub fn new(dir: PathBuf, store: Store) -> Self {
        IpxeHandler { dir, store }
    }

    async fn mac_of(&self, client: &SocketAddr) -> Option<MacAddr> {
        let IpAddr::V4(ip) = client.ip() else {
            return None;
        };
        self.store
            .call(move |conn| store::mac_for_ip(conn, ip))
            .await
            .ok()
            .flatten()
    }
}

impl Handler for IpxeHandler {
    type Reader = Cursor<Arc<[u8]>>;
    type Writer = Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Self::Reader, Option<u64>), packet::Error> {
        let mac = self.mac_of(client).await;
        let relative = match confined_path(path) {
            Ok(p) => p,
            Err(why) => {
                tracing::warn!(%client, ?path, ?why, "TFTP request refused");
                return Err(packet::Error::PermissionDenied);
            }
        };
        let full = self.dir.join(&relative);
        // Confinement again after symlinks: the file must really be inside the tree.
        let dir = self.dir.clone();
        let read = blocking::unblock(move || -> std::io::Result<Option<Vec<u8>>> {
            let canonical = match std::fs::canonicalize(&full) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let root = std::fs::canonicalize(&dir)?;
            if !canonical.starts_with(&root) || !canonical.is_file() {
                return Ok(None);
            }
            std::fs::read(&canonical).map(Some)
        })
        .await;
        let data: Arc<[u8]> = match read {
            Ok(Some(bytes)) => bytes.into(),
            Ok(None) => {
                tracing::info!(%client, file = %relative.display(), "TFTP file not found");
                return Err(packet::Error::FileNotFound);
            }
            Err(e) => {
                tracing::warn!(%client, file = %relative.display(), "TFTP read failed: {e}");
                return Err(packet::Error::UnknownError);
            }
        };
        let size = data.len() as u64;
        tracing::info!(%client, file = %relative.display(), size, "TFTP read");
        if mac.is_some() {
            self.store.record_event(
                clock::now_ms(),
                mac,
                "tftp.read",
                format!("file={} size={size} client={client}", relative.display()),
            );
        }
        Ok((Cursor::new(data), Some(size)))
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Self::Writer, packet::Error> {
        tracing::warn!(%client, ?path, "TFTP write request refused: rackboot serves read-only");
        Err(packet::Error::IllegalOperation)
    }
}

/// Binds the TFTP socket and serves on a thread of its own. Returns once bound, so
/// a bind failure (port in use, no permission) is reported at start.
pub fn spawn(listen: SocketAddr, dir: PathBuf, store: Store) -> anyhow::Result<SocketAddr> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("rackboot-tftp".into())
        .spawn(move || {
            futures_lite::future::block_on(async move {
                let server = TftpServerBuilder::with_handler(IpxeHandler::new(dir, store))
                    .bind(listen)
                    .build()
                    .await;
                let server = match server {
                    Ok(server) => server,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::anyhow!("TFTP on {listen}: {e}")));
                        return;
                    }
                };
                let bound = server.listen_addr().unwrap_or(listen);
                let _ = ready_tx.send(Ok(bound));
                if let Err(e) = server.serve().await {
                    tracing::error!("TFTP server stopped: {e}");
                }
            })
        })?;
    ready_rx
        .recv()
        .map_err(|_| anyhow::anyhow!("TFTP thread ended before binding"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_tree_are_refused() {
        let refused = [
            ("../etc/passwd", PathRefusal::NotRelative),
            ("ipxe/../../etc/passwd", PathRefusal::NotRelative),
            ("/etc/passwd", PathRefusal::NotRelative),
            ("..\\windows", PathRefusal::Backslash),
            ("a\0b", PathRefusal::Nul),
            ("", PathRefusal::NotRelative),
        ];
        for (path, why) in refused {
            assert_eq!(confined_path(Path::new(path)), Err(why), "{path:?}");
        }
        assert_eq!(
            confined_path(Path::new(&"a".repeat(300))),
            Err(PathRefusal::TooLong)
        );
        assert_eq!(
            confined_path(Path::new("./arm64-efi/snponly.efi")),
            Ok(PathBuf::from("arm64-efi/snponly.efi"))
        );
    }
}
