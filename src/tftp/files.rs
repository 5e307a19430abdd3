//! Which file a request gets, and the shared copy of its bytes.
//!
//! Lookup order for a relative path `p` from a client whose lease names MAC `m`:
//! `root/<m>/p` (per machine, `m` written `52-54-00-12-34-56`), then `root/p`, then
//! `ipxe_dir/p`. Each candidate is resolved through symlinks and must still lie
//! inside its base directory. A file that resolves into a machine's directory
//! (`root/<mac>/...`, however it was reached) carries that machine as its owner, so
//! the server can hold it to the secrets rule.
//!
//! A boot storm asks for the same file hundreds of times at once: each file is read
//! once and shared (`SharedBytes`) by every transfer, keyed by path and by the file's
//! identity (device, inode, size, mtime) so a replaced file is read afresh. While one
//! request reads, the others for the same file wait for it instead of reading too.
//! Small files stay cached within a budget; larger ones are kept only while some
//! transfer uses them.

use super::SharedBytes;
use super::request::Mode;
use crate::mac::MacAddr;
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use tokio::sync::watch;

/// TFTP is for small boot files; kernels and images belong on HTTP. The cap keeps a
/// request for a huge file from pulling it into memory.
pub const MAX_FILE_LEN: u64 = 1 << 30;
/// Bytes of files kept cached after their last transfer ends, least recently used
/// evicted first. A file in use by a transfer stays in memory regardless (shared).
const PIN_BUDGET: usize = 128 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `root/<mac>/`
    Machine,
    /// `root/`
    Root,
    /// `ipxe_dir/`
    Ipxe,
    /// rackboot's own files (`service::boot`): shim, grub, an image's kernel or
    /// initrd, from the paths the configuration and the inventory name.
    Boot,
    /// Rendered for the request (grub configurations).
    Generated,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Machine => "machine",
            Source::Root => "root",
            Source::Ipxe => "ipxe_dir",
            Source::Boot => "boot",
            Source::Generated => "generated",
        }
    }
}

pub struct Opened {
    pub data: SharedBytes,
    pub source: Source,
}

/// A file found for a request, not read yet.
#[derive(Debug)]
pub struct Located {
    path: PathBuf,
    stamp: Stamp,
    pub source: Source,
    /// The machine whose directory under `root` holds the file: only that machine
    /// may have it.
    pub owner: Option<MacAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("file not found")]
    NotFound,
    #[error("file of {0} bytes is over the TFTP limit of {MAX_FILE_LEN}; serve it over HTTP")]
    TooLarge(u64),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

enum SlotState {
    /// Someone is reading it; the sender is dropped when done (or abandoned).
    Loading(watch::Receiver<()>),
    Ready {
        weak: Weak<Box<[u8]>>,
        pinned: Option<SharedBytes>,
        /// `Cache::tick` at the last use, for eviction.
        used: u64,
    },
}

struct Slot {
    stamp: Stamp,
    state: SlotState,
}

struct Cache {
    /// `PIN_BUDGET`, smaller in tests.
    budget: usize,
    slots: HashMap<(PathBuf, Mode), Slot>,
    pinned_bytes: usize,
    /// Counts uses: a logical clock for least-recently-used.
    tick: u64,
}

impl Cache {
    /// Keeps `data` (the file at `key`) cached, evicting the least recently used
    /// files until it fits the budget.
    fn pin(&mut self, key: &(PathBuf, Mode), data: &SharedBytes) {
        // A file over half the budget is never kept: it would evict everything else.
        if data.len() > self.budget / 2 {
            return;
        }
        while self.pinned_bytes + data.len() > self.budget {
            let oldest = self
                .slots
                .iter_mut()
                .filter_map(|(_, slot)| match &mut slot.state {
                    SlotState::Ready {
                        pinned: pinned @ Some(_),
                        used,
                        ..
                    } => Some((*used, pinned)),
                    _ => None,
                })
                .min_by_key(|(used, _)| *used);
            let Some((_, pinned)) = oldest else {
                return;
            };
            if let Some(evicted) = pinned.take() {
                self.pinned_bytes -= evicted.len();
            }
        }
        if let Some(Slot {
            state: SlotState::Ready { pinned, .. },
            ..
        }) = self.slots.get_mut(key)
            && pinned.is_none()
        {
            *pinned = Some(Arc::clone(data));
            self.pinned_bytes += data.len();
        }
    }

    fn remove(&mut self, key: &(PathBuf, Mode)) {
        if let Some(Slot {
            state: SlotState::Ready {
                pinned: Some(data), ..
            },
            ..
        }) = self.slots.remove(key)
        {
            self.pinned_bytes -= data.len();
        }
    }
}

pub struct Files {
    ipxe_dir: PathBuf,
    root: Option<PathBuf>,
    // A std mutex: held for a map lookup only, never across an await.
    cache: Mutex<Cache>,
}

impl Files {
    pub fn new(ipxe_dir: PathBuf, root: Option<PathBuf>) -> Self {
        Self::with_budget(ipxe_dir, root, PIN_BUDGET)
    }

    fn with_budget(ipxe_dir: PathBuf, root: Option<PathBuf>, budget: usize) -> Self {
        Files {
            ipxe_dir,
            root,
            cache: Mutex::new(Cache {
                budget,
                slots: HashMap::new(),
                pinned_bytes: 0,
                tick: 0,
            }),
        }
    }

    #[cfg(test)]
    fn cached_bytes(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pinned_bytes
    }

    fn candidates(&self, relative: &Path, mac: Option<MacAddr>) -> Vec<(PathBuf, PathBuf, Source)> {
        let mut list = Vec::with_capacity(3);
        if let Some(root) = &self.root {
            if let Some(mac) = mac {
                list.push((
                    root.clone(),
                    root.join(mac.dashed()).join(relative),
                    Source::Machine,
                ));
            }
            list.push((root.clone(), root.join(relative), Source::Root));
        }
        list.push((
            self.ipxe_dir.clone(),
            self.ipxe_dir.join(relative),
            Source::Ipxe,
        ));
        list
    }

    /// Finds `relative` for the machine `mac` and returns its shared bytes.
    pub async fn open(
        &self,
        relative: &Path,
        mac: Option<MacAddr>,
        mode: Mode,
    ) -> Result<Opened, OpenError> {
        let located = self.locate(relative, mac).await?;
        self.read(located, mode).await
    }

    /// Finds `relative` for the machine `mac`, without reading it.
    pub async fn locate(
        &self,
        relative: &Path,
        mac: Option<MacAddr>,
    ) -> Result<Located, OpenError> {
        let candidates = self.candidates(relative, mac);
        let (path, stamp, source, owner) =
            tokio::task::spawn_blocking(move || resolve(&candidates))
                .await
                .map_err(|e| io::Error::other(format!("file lookup task failed: {e}")))??;
        if stamp.len > MAX_FILE_LEN {
            return Err(OpenError::TooLarge(stamp.len));
        }
        Ok(Located {
            path,
            stamp,
            source,
            owner,
        })
    }

    /// A file rackboot names itself (a configured loader, an image's kernel), by its
    /// full path: not a client's path, so no containment check applies.
    pub async fn locate_path(&self, path: PathBuf) -> Result<Located, OpenError> {
        let (path, meta) = tokio::task::spawn_blocking(move || {
            let meta = std::fs::metadata(&path)?;
            Ok::<_, io::Error>((path, meta))
        })
        .await
        .map_err(|e| io::Error::other(format!("file lookup task failed: {e}")))?
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => OpenError::NotFound,
            _ => OpenError::Io(e),
        })?;
        if !meta.is_file() {
            return Err(OpenError::NotFound);
        }
        if meta.len() > MAX_FILE_LEN {
            return Err(OpenError::TooLarge(meta.len()));
        }
        Ok(Located {
            path,
            stamp: Stamp::of(&meta),
            source: Source::Boot,
            owner: None,
        })
    }

    /// The shared bytes of a located file.
    pub async fn read(&self, located: Located, mode: Mode) -> Result<Opened, OpenError> {
        let data = self.load((located.path, mode), located.stamp).await?;
        Ok(Opened {
            data,
            source: located.source,
        })
    }

    async fn load(&self, key: (PathBuf, Mode), stamp: Stamp) -> Result<SharedBytes, OpenError> {
        enum Next {
            Wait(watch::Receiver<()>),
            Load(watch::Sender<()>),
        }
        // The sender is never sent on: dropping it (done, failed or cancelled) is the
        // signal that wakes the waiters, who then look again.
        let _loading = loop {
            let next = {
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                cache.tick += 1;
                let tick = cache.tick;
                let waiting = match cache.slots.get_mut(&key) {
                    Some(slot) if slot.stamp == stamp => match &mut slot.state {
                        SlotState::Ready {
                            weak, pinned, used, ..
                        } => match weak.upgrade() {
                            Some(data) => {
                                *used = tick;
                                // In use but evicted earlier: cache it again.
                                if pinned.is_none() {
                                    cache.pin(&key, &data);
                                }
                                return Ok(data);
                            }
                            None => None,
                        },
                        // A closed channel: the loader was cancelled; take over.
                        SlotState::Loading(rx) if rx.has_changed().is_ok() => Some(rx.clone()),
                        SlotState::Loading(_) => None,
                    },
                    _ => None,
                };
                match waiting {
                    Some(rx) => Next::Wait(rx),
                    None => {
                        let (tx, rx) = watch::channel(());
                        cache.remove(&key);
                        let state = SlotState::Loading(rx);
                        cache.slots.insert(key.clone(), Slot { stamp, state });
                        Next::Load(tx)
                    }
                }
            };
            match next {
                Next::Wait(mut rx) => {
                    let _ = rx.changed().await;
                }
                Next::Load(tx) => break tx,
            }
        };
        let (path, mode) = key.clone();
        let read = tokio::task::spawn_blocking(move || read_shared(&path, stamp.len, mode))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(format!("file read task failed: {e}"))));
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let ours = cache
            .slots
            .get(&key)
            .is_some_and(|slot| slot.stamp == stamp && matches!(slot.state, SlotState::Loading(_)));
        match read {
            Ok(data) => {
                // A newer version loaded meanwhile keeps its place.
                if ours {
                    cache.tick += 1;
                    let state = SlotState::Ready {
                        weak: Arc::downgrade(&data),
                        pinned: None,
                        used: cache.tick,
                    };
                    cache.slots.insert(key.clone(), Slot { stamp, state });
                    // Netascii is for the odd text file: its converted copy lives
                    // only while a transfer uses it, never beside the octet one.
                    if mode == Mode::Octet {
                        cache.pin(&key, &data);
                    }
                }
                Ok(data)
            }
            Err(e) => {
                if ours {
                    cache.slots.remove(&key);
                }
                Err(e.into())
            }
        }
    }
}

/// Reads a file of `len` bytes straight into the shared buffer transfers use: one
/// allocation of its final size, no second copy (a `Vec` turned into an `Arc` is
/// copied once more). Netascii is converted while reading, in two passes over the
/// file (counting the line ends first), so the raw bytes are never held beside it.
fn read_shared(path: &Path, len: u64, mode: Mode) -> io::Result<SharedBytes> {
    use std::io::Read;
    let too_long = || io::Error::other("the file grew while it was read");
    let mut file = std::fs::File::open(path)?;
    let mut chunk = vec![0u8; 64 << 10];
    let size = match mode {
        Mode::Octet => len,
        Mode::Netascii => {
            let mut extra = 0u64;
            let mut seen = 0u64;
            loop {
                let n = file.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                seen += n as u64;
                extra += chunk[..n]
                    .iter()
                    .filter(|&&b| b == b'\n' || b == b'\r')
                    .count() as u64;
            }
            if seen != len {
                return Err(too_long());
            }
            std::io::Seek::rewind(&mut file)?;
            len + extra
        }
    };
    let size = usize::try_from(size).map_err(|_| too_long())?;
    // Zeroed memory: the allocator takes it from the kernel lazily for large sizes,
    // so this costs no extra pass, and a `Vec` of its exact size becomes a `Box`
    // without a copy.
    let mut data = vec![0u8; size].into_boxed_slice();
    let buf = &mut data[..];
    match mode {
        Mode::Octet => {
            file.read_exact(buf)?;
        }
        Mode::Netascii => {
            let mut at = 0;
            loop {
                let n = file.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                for &b in &chunk[..n] {
                    let out: &[u8] = match b {
                        b'\n' => b"\r\n",
                        b'\r' => b"\r\0",
                        _ => std::slice::from_ref(&b),
                    };
                    let end = at + out.len();
                    buf.get_mut(at..end)
                        .ok_or_else(too_long)?
                        .copy_from_slice(out);
                    at = end;
                }
            }
            if at != size {
                return Err(io::Error::other("the file shrank while it was read"));
            }
        }
    }
    Ok(Arc::new(data))
}

/// The first candidate that exists, is a regular file and resolves inside its base,
/// with the machine whose directory holds it.
fn resolve(
    candidates: &[(PathBuf, PathBuf, Source)],
) -> Result<(PathBuf, Stamp, Source, Option<MacAddr>), OpenError> {
    for (base, full, source) in candidates {
        let Ok(base) = std::fs::canonicalize(base) else {
            continue;
        };
        let canonical = match std::fs::canonicalize(full) {
            Ok(c) => c,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if !canonical.starts_with(&base) {
            tracing::warn!(
                path = %full.display(),
                target = %canonical.display(),
                "TFTP: symlink leads outside the served tree; not served"
            );
            continue;
        }
        let meta = std::fs::metadata(&canonical)?;
        if meta.is_file() {
            let owner = match source {
                Source::Machine | Source::Root => machine_dir(&base, &canonical),
                Source::Ipxe | Source::Boot | Source::Generated => None,
            };
            return Ok((canonical, Stamp::of(&meta), *source, owner));
        }
    }
    Err(OpenError::NotFound)
}

/// The machine a file under `root` belongs to: a first directory named like a MAC
/// (`52-54-00-12-34-56`, or any spelling `MacAddr::parse` takes).
fn machine_dir(root: &Path, file: &Path) -> Option<MacAddr> {
    let mut components = file.strip_prefix(root).ok()?.components();
    let first = components.next()?.as_os_str().to_str()?;
    // A file named like a MAC at the top of root is no machine's directory.
    components.next()?;
    MacAddr::parse(first).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> (tempfile::TempDir, Files) {
        let dir = tempfile::tempdir().expect("tempdir");
        let ipxe = dir.path().join("ipxe");
        let root = dir.path().join("root");
        std::fs::create_dir_all(ipxe.join("arm64-efi")).expect("mkdir");
        std::fs::create_dir_all(root.join("52-54-00-12-34-56")).expect("mkdir");
        std::fs::write(ipxe.join("snponly.efi"), b"IPXE").expect("write");
        std::fs::write(ipxe.join("both"), b"from ipxe").expect("write");
        std::fs::write(root.join("both"), b"from root").expect("write");
        std::fs::write(root.join("52-54-00-12-34-56/both"), b"for the machine").expect("write");
        std::fs::write(dir.path().join("secret"), b"SECRET").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape"))
            .expect("symlink");
        let files = Files::new(ipxe, Some(root));
        (dir, files)
    }

    async fn read(
        files: &Files,
        path: &str,
        mac: Option<&str>,
    ) -> Result<(String, Source), OpenError> {
        let mac = mac.map(|m| MacAddr::parse(m).expect("mac"));
        let opened = files.open(Path::new(path), mac, Mode::Octet).await?;
        Ok((
            String::from_utf8_lossy(&opened.data).into_owned(),
            opened.source,
        ))
    }

    #[tokio::test]
    async fn per_machine_file_first_then_root_then_ipxe() {
        let (_dir, files) = tree();
        let mac = Some("52:54:00:12:34:56");
        assert_eq!(
            read(&files, "both", mac).await.expect("found"),
            ("for the machine".into(), Source::Machine)
        );
        assert_eq!(
            read(&files, "both", Some("52:54:00:00:00:01"))
                .await
                .expect("found"),
            ("from root".into(), Source::Root)
        );
        assert_eq!(
            read(&files, "both", None).await.expect("found"),
            ("from root".into(), Source::Root)
        );
        assert_eq!(
            read(&files, "snponly.efi", mac).await.expect("found"),
            ("IPXE".into(), Source::Ipxe)
        );
        assert!(matches!(
            read(&files, "missing", mac).await,
            Err(OpenError::NotFound)
        ));
        // A directory is not a file.
        assert!(matches!(
            read(&files, "arm64-efi", None).await,
            Err(OpenError::NotFound)
        ));
    }

    #[tokio::test]
    async fn files_in_a_machines_directory_name_their_owner() {
        let (dir, files) = tree();
        let root = dir.path().join("root");
        std::fs::write(root.join("52-54-00-12-34-56/autoexec.ipxe"), b"SECRET").expect("write");
        std::fs::write(root.join("52-54-00-00-00-09"), b"a file, not a directory").expect("write");
        std::os::unix::fs::symlink(root.join("52-54-00-12-34-56"), root.join("node1"))
            .expect("symlink");
        let owner = |path: &'static str, mac: Option<&'static str>| {
            let files = &files;
            async move {
                let mac = mac.map(|m| MacAddr::parse(m).expect("mac"));
                files
                    .locate(Path::new(path), mac)
                    .await
                    .map(|l| (l.source, l.owner))
            }
        };
        let machine = MacAddr::parse("52:54:00:12:34:56").ok();
        // Asked for by the machine's own implicit lookup, by its directory, or
        // through a symlink: the owner is the machine every time.
        assert_eq!(
            owner("autoexec.ipxe", Some("52:54:00:12:34:56"))
                .await
                .expect("found"),
            (Source::Machine, machine)
        );
        assert_eq!(
            owner("52-54-00-12-34-56/autoexec.ipxe", None)
                .await
                .expect("found"),
            (Source::Root, machine)
        );
        assert_eq!(
            owner("node1/autoexec.ipxe", None).await.expect("found"),
            (Source::Root, machine)
        );
        assert_eq!(
            owner("both", None).await.expect("found"),
            (Source::Root, None)
        );
        assert_eq!(
            owner("52-54-00-00-00-09", None).await.expect("found"),
            (Source::Root, None)
        );
        assert_eq!(
            owner("snponly.efi", None).await.expect("found"),
            (Source::Ipxe, None)
        );
    }

    #[tokio::test]
    async fn symlinks_out_of_the_tree_are_not_followed() {
        let (_dir, files) = tree();
        assert!(matches!(
            read(&files, "escape", None).await,
            Err(OpenError::NotFound)
        ));
    }

    #[tokio::test]
    async fn one_copy_is_shared_and_a_changed_file_is_reread() {
        let (dir, files) = tree();
        let path = Path::new("snponly.efi");
        let a = files.open(path, None, Mode::Octet).await.expect("open");
        let b = files.open(path, None, Mode::Octet).await.expect("open");
        assert!(Arc::ptr_eq(&a.data, &b.data), "same bytes, read once");
        // Many at once on a cold cache still share one copy.
        let files = Arc::new(Files::new(dir.path().join("ipxe"), None));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let files = Arc::clone(&files);
            tasks.push(tokio::spawn(async move {
                files
                    .open(Path::new("snponly.efi"), None, Mode::Octet)
                    .await
                    .expect("open")
                    .data
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await.expect("task"));
        }
        assert!(all.iter().all(|d| Arc::ptr_eq(d, &all[0])));
        // Replaced on disk: the next request sees the new content.
        let new = dir.path().join("ipxe/snponly.efi.new");
        std::fs::write(&new, b"NEW IPXE").expect("write");
        std::fs::rename(&new, dir.path().join("ipxe/snponly.efi")).expect("rename");
        let c = files.open(path, None, Mode::Octet).await.expect("open");
        assert_eq!(&**c.data, b"NEW IPXE");
    }

    #[tokio::test]
    async fn cache_keeps_recent_files_within_its_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, len) in [("a", 40), ("b", 40), ("c", 40), ("huge", 60)] {
            std::fs::write(dir.path().join(name), vec![b'x'; len]).expect("write");
        }
        let files = Files::with_budget(dir.path().to_path_buf(), None, 100);
        let open = |name: &'static str| {
            let files = &files;
            async move {
                files
                    .open(Path::new(name), None, Mode::Octet)
                    .await
                    .expect("open")
                    .data
            }
        };
        let a = open("a").await;
        drop(open("b").await);
        assert_eq!(files.cached_bytes(), 80);
        // Using `a` again makes `b` the oldest: `c` evicts `b`.
        drop(open("a").await);
        drop(open("c").await);
        assert_eq!(files.cached_bytes(), 80);
        assert!(Arc::ptr_eq(&a, &open("a").await), "a stayed cached");
        // Over half the budget: served, never kept.
        let huge = open("huge").await;
        assert_eq!(huge.len(), 60);
        assert_eq!(files.cached_bytes(), 80);
        // While a transfer holds it, it is still shared.
        assert!(Arc::ptr_eq(&huge, &open("huge").await));
    }

    #[tokio::test]
    async fn netascii_is_converted_and_cached_apart() {
        let (dir, files) = tree();
        std::fs::write(dir.path().join("ipxe/text"), b"a\nb").expect("write");
        let text = Path::new("text");
        let ascii = files.open(text, None, Mode::Netascii).await.expect("open");
        assert_eq!(&**ascii.data, b"a\r\nb");
        let octet = files.open(text, None, Mode::Octet).await.expect("open");
        assert_eq!(&**octet.data, b"a\nb");
    }

    #[tokio::test]
    async fn a_netascii_copy_lives_only_while_used_and_octet_stays_cached() {
        let (dir, files) = tree();
        let raw: Vec<u8> = b"line\r\nbare\rend\n".repeat(1000);
        std::fs::write(dir.path().join("ipxe/text"), &raw).expect("write");
        let text = Path::new("text");
        let ascii = files.open(text, None, Mode::Netascii).await.expect("open");
        assert_eq!(
            &**ascii.data,
            crate::tftp::packet::to_netascii(&raw).as_slice()
        );
        assert_eq!(files.cached_bytes(), 0, "the netascii copy is not cached");
        drop(ascii);
        let octet = files.open(text, None, Mode::Octet).await.expect("open");
        assert_eq!(&**octet.data, raw.as_slice());
        drop(octet);
        assert_eq!(files.cached_bytes(), raw.len(), "the octet copy is");
    }

    #[test]
    fn a_file_that_changes_length_while_read_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc\n").expect("write");
        assert!(
            read_shared(&path, 10, Mode::Octet).is_err(),
            "shorter than stat said"
        );
        assert!(read_shared(&path, 2, Mode::Netascii).is_err());
        assert_eq!(
            &**read_shared(&path, 4, Mode::Netascii).expect("read"),
            b"abc\r\n"
        );
    }
}
