//! The verified fetch: follows a definition's chain from the distribution's signature
//! down to each file, downloading (with resume) or copying from a local directory,
//! and leaves the verified kernel, initrd and templates in a staging directory.
//! Nothing is registered here; the service layer registers the staged result, so a
//! mismatch, a bad signature or a broken download leaves nothing half-registered.
//!
//! Files whose digest is known before they are fetched (everything below the signed
//! file) are cached by sha256 under `data_dir/cache/sha256/`; a download that broke
//! off is kept under `data_dir/cache/partial/` and resumed with Range. Signed files
//! are small and fetched afresh each time, so a newer suite is always seen.

use super::debpkg;
use super::definition::{Chain, Definition};
use super::iso9660::Iso;
use super::openpgp::{self, Keyring};
use super::release::Release;
use super::sums::Sums;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Signed lists and signatures are small; more is not what the chain expects.
const MAX_SIGNED_BYTES: u64 = 64 << 20;
/// The largest single file taken (a DVD-sized ISO).
const MAX_FILE_BYTES: u64 = 16 << 30;
/// A kernel, an initrd or a file read out of a package or an ISO.
const MAX_MEMBER_BYTES: u64 = 2 << 30;
/// Left free on the data directory's filesystem: the database lives there too.
const RESERVE_BYTES: u64 = 256 << 20;
/// A download that breaks off is resumed this many times before the fetch gives up.
const ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The definition or the request cannot be followed (missing keys, a bad path).
    #[error("{0}")]
    Request(String),
    #[error("download of {url} failed: {message}")]
    Download { url: String, message: String },
    /// The chain did not hold: a signature, a digest or a list said no.
    #[error("{what} refused: {message}")]
    Verify { what: String, message: String },
    #[error(
        "not enough free space in {dir}: {needed} bytes needed, {free} free ({RESERVE_BYTES} are kept free)"
    )]
    NoSpace { dir: String, needed: u64, free: u64 },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn refused(what: impl Into<String>, message: impl Into<String>) -> FetchError {
    FetchError::Verify {
        what: what.into(),
        message: message.into(),
    }
}

/// Where the files come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A mirror's base URL (upstream or a site mirror).
    Http(String),
    /// A directory laid out as the mirror is, for machines without a network.
    Dir(PathBuf),
}

impl Source {
    fn describe(&self, relative: &str) -> String {
        match self {
            Source::Http(base) => format!("{}/{relative}", base.trim_end_matches('/')),
            Source::Dir(dir) => dir.join(relative).display().to_string(),
        }
    }
}

/// What the caller asks for.
#[derive(Clone)]
pub struct Request {
    pub definition: Definition,
    pub source: Source,
    /// Replaces the definition's trusted keys (a site mirror that re-signs).
    pub keyring: Option<Vec<u8>>,
    pub parameters: BTreeMap<String, String>,
}

/// A step of the fetch, for a progress bar or the panel.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Progress {
    /// What is being fetched or checked now.
    pub step: String,
    pub done_bytes: u64,
    pub total_bytes: Option<u64>,
}

pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

pub use crate::model::ReleaseStamp;

/// The verified result, in a staging directory the service layer moves into place.
#[derive(Debug)]
pub struct Fetched {
    pub staging: PathBuf,
    pub kernel_sha256: String,
    /// `None` when the image has no initrd (memtest86+).
    pub initrd_sha256: Option<String>,
    /// Install templates written under `staging/files/`.
    pub templates: Vec<String>,
    /// The primary key that verified the chain (none for a pinned chain).
    pub fingerprint: Option<String>,
    /// What verified what, for the image's record and the audit event.
    pub provenance: String,
    pub stamp: Option<ReleaseStamp>,
    /// Values fixed per image that the command line and templates use (`mirror`,
    /// `iso_url`, the parameters).
    pub vars: BTreeMap<String, String>,
}

pub struct Fetcher {
    client: reqwest::Client,
    data_dir: PathBuf,
    progress: ProgressSink,
}

/// Bytes available to unprivileged writers on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    crate::limits::free_bytes(dir)
}

fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = std::fs::File::open(path).map_err(io_at(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_at(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// `pattern` with one `*` matched against `names`; the newest (highest in version
/// order) match wins, so a point release is picked up without editing a definition.
fn newest_match<'a>(pattern: &str, names: impl Iterator<Item = &'a str>) -> Option<String> {
    let Some((prefix, suffix)) = pattern.split_once('*') else {
        return names
            .into_iter()
            .find(|n| *n == pattern)
            .map(str::to_string);
    };
    names
        .filter(|n| n.len() >= prefix.len() + suffix.len())
        .filter(|n| n.starts_with(prefix) && n.ends_with(suffix))
        .filter(|n| !n[prefix.len()..n.len() - suffix.len()].contains('/'))
        .max_by(|a, b| debpkg::compare_versions(a, b).unwrap_or_else(|_| a.cmp(b)))
        .map(str::to_string)
}

/// An error with its causes (reqwest's own says only "error sending request").
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
}

fn join(dir: &str, relative: &str) -> String {
    let relative = relative.trim_start_matches("./");
    if dir.is_empty() {
        relative.to_string()
    } else {
        format!("{dir}/{relative}")
    }
}

impl Fetcher {
    pub fn new(
        data_dir: &Path,
        proxy: Option<&str>,
        progress: ProgressSink,
    ) -> Result<Self, FetchError> {
        // rackboot links rustls with the ring provider only; reqwest needs it installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // reqwest takes HTTP(S)_PROXY and NO_PROXY from the environment by itself;
        // `[images] proxy` names one explicitly.
        let mut builder = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(20))
            .read_timeout(std::time::Duration::from_secs(60));
        if let Some(proxy) = proxy {
            let proxy = reqwest::Proxy::all(proxy)
                .map_err(|e| FetchError::Request(format!("[images] proxy = {proxy:?}: {e}")))?;
            builder = builder.proxy(proxy);
        }
        let client = builder
            .build()
            .map_err(|e| FetchError::Request(format!("cannot build the HTTP client: {e}")))?;
        Ok(Fetcher {
            client,
            data_dir: data_dir.to_path_buf(),
            progress,
        })
    }

    fn cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache")
    }

    fn report(&self, step: &str, done_bytes: u64, total_bytes: Option<u64>) {
        (self.progress)(Progress {
            step: step.to_string(),
            done_bytes,
            total_bytes,
        });
    }

    fn check_space(&self, needed: u64) -> Result<(), FetchError> {
        let dir = self.data_dir.clone();
        let free = free_bytes(&dir).map_err(io_at(&dir))?;
        if free < needed.saturating_add(RESERVE_BYTES) {
            return Err(FetchError::NoSpace {
                dir: dir.display().to_string(),
                needed,
                free,
            });
        }
        Ok(())
    }

    /// A small file fetched afresh (a signed list, a signature), into memory.
    async fn fetch_small(&self, source: &Source, relative: &str) -> Result<Vec<u8>, FetchError> {
        self.report(relative, 0, None);
        let bytes = match source {
            Source::Dir(dir) => {
                let path = dir.join(relative);
                let file = std::fs::File::open(&path).map_err(io_at(&path))?;
                let mut bytes = Vec::new();
                file.take(MAX_SIGNED_BYTES + 1)
                    .read_to_end(&mut bytes)
                    .map_err(io_at(&path))?;
                bytes
            }
            Source::Http(_) => {
                let url = source.describe(relative);
                let download = |message: String| FetchError::Download {
                    url: url.clone(),
                    message,
                };
                let mut response = self
                    .client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| download(causes(&e)))?;
                if !response.status().is_success() {
                    return Err(download(format!("HTTP {}", response.status())));
                }
                let mut bytes = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(|e| download(causes(&e)))? {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() as u64 > MAX_SIGNED_BYTES {
                        break;
                    }
                }
                bytes
            }
        };
        if bytes.len() as u64 > MAX_SIGNED_BYTES {
            return Err(refused(
                relative,
                format!("it is larger than {MAX_SIGNED_BYTES} bytes, which no signed list is"),
            ));
        }
        self.report(relative, bytes.len() as u64, Some(bytes.len() as u64));
        Ok(bytes)
    }

    /// A file whose sha256 is known: from the cache, or fetched (resuming a partial
    /// download) and checked before it enters the cache. Returns its cache path.
    async fn fetch_known(
        &self,
        source: &Source,
        relative: &str,
        sha256: &str,
        size: Option<u64>,
    ) -> Result<PathBuf, FetchError> {
        let sha256 = sha256.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refused(relative, format!("{sha256:?} is not a sha256")));
        }
        let cached = self.cache_dir().join("sha256").join(&sha256);
        if cached.is_file() {
            self.report(&format!("{relative} (cached)"), 1, Some(1));
            return Ok(cached);
        }
        let partial_dir = self.cache_dir().join("partial");
        std::fs::create_dir_all(&partial_dir).map_err(io_at(&partial_dir))?;
        std::fs::create_dir_all(cached.parent().unwrap_or(&partial_dir)).map_err(io_at(&cached))?;
        let partial = partial_dir.join(&sha256);
        match source {
            Source::Dir(dir) => {
                let from = dir.join(relative);
                let length = std::fs::metadata(&from).map_err(io_at(&from))?.len();
                self.check_space(length)?;
                self.report(relative, 0, Some(length));
                let (from2, partial2) = (from.clone(), partial.clone());
                tokio::task::spawn_blocking(move || std::fs::copy(&from2, &partial2))
                    .await
                    .map_err(|e| FetchError::Request(format!("copy task: {e}")))?
                    .map_err(io_at(&from))?;
                self.report(relative, length, Some(length));
            }
            Source::Http(_) => {
                let url = source.describe(relative);
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match self.download_resuming(&url, relative, &partial, size).await {
                        Ok(()) => break,
                        Err(e @ FetchError::Download { .. }) if attempt < ATTEMPTS => {
                            tracing::warn!("{e}; resuming (attempt {} of {ATTEMPTS})", attempt + 1);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let partial2 = partial.clone();
        self.report(&format!("{relative}: checking sha256"), 0, None);
        let actual = tokio::task::spawn_blocking(move || sha256_file(&partial2))
            .await
            .map_err(|e| FetchError::Request(format!("hash task: {e}")))??;
        let length = std::fs::metadata(&partial).map_err(io_at(&partial))?.len();
        if actual != sha256 {
            // A changed or cut file is not resumed next time: start it over.
            let _ = std::fs::remove_file(&partial);
            let cut = match size {
                Some(size) if length < size => {
                    format!(" (it is cut short: {length} of {size} bytes)")
                }
                Some(size) if length > size => {
                    format!(" (it is longer than listed: {length} of {size} bytes)")
                }
                _ => format!(" ({length} bytes; changed or cut short)"),
            };
            return Err(refused(
                relative,
                format!("its sha256 is {actual}, but the signed list says {sha256}{cut}"),
            ));
        }
        std::fs::rename(&partial, &cached).map_err(io_at(&cached))?;
        Ok(cached)
    }

    async fn download_resuming(
        &self,
        url: &str,
        relative: &str,
        partial: &Path,
        size: Option<u64>,
    ) -> Result<(), FetchError> {
        let download = |message: String| FetchError::Download {
            url: url.to_string(),
            message,
        };
        let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if size.is_some_and(|size| have >= size) {
            return Ok(());
        }
        let mut request = self.client.get(url);
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let mut response = request.send().await.map_err(|e| download(causes(&e)))?;
        let status = response.status();
        let (mut file, mut done) = match status {
            reqwest::StatusCode::PARTIAL_CONTENT if have > 0 => (
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(partial)
                    .map_err(io_at(partial))?,
                have,
            ),
            // The whole file is what the partial one holds already.
            reqwest::StatusCode::RANGE_NOT_SATISFIABLE if have > 0 => return Ok(()),
            s if s.is_success() => (std::fs::File::create(partial).map_err(io_at(partial))?, 0),
            s => return Err(download(format!("HTTP {s}"))),
        };
        let total = response
            .content_length()
            .map(|length| length + done)
            .or(size);
        let limit = size.unwrap_or(MAX_FILE_BYTES).min(MAX_FILE_BYTES);
        if total.is_some_and(|t| t > limit) {
            return Err(refused(
                relative,
                format!(
                    "the mirror offers {} bytes, more than the {limit} expected",
                    total.unwrap_or(0)
                ),
            ));
        }
        self.check_space(total.unwrap_or(0).saturating_sub(done))?;
        let mut last_report = std::time::Instant::now();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            download(format!(
                "broke off after {done} bytes ({e}); the next fetch resumes it"
            ))
        })? {
            done += chunk.len() as u64;
            if done > limit {
                drop(file);
                let _ = std::fs::remove_file(partial);
                return Err(refused(
                    relative,
                    format!("the mirror sent more than the {limit} bytes expected"),
                ));
            }
            file.write_all(&chunk).map_err(io_at(partial))?;
            if last_report.elapsed() > std::time::Duration::from_millis(250) {
                self.report(relative, done, total);
                last_report = std::time::Instant::now();
            }
        }
        file.sync_all().map_err(io_at(partial))?;
        self.report(relative, done, total);
        Ok(())
    }

    fn keyring(
        &self,
        request: &Request,
        catalog: &super::definition::Catalog,
    ) -> Result<Keyring, FetchError> {
        let definition = &request.definition;
        if let Some(bytes) = &request.keyring {
            return Keyring::from_bytes(bytes)
                .map_err(|e| FetchError::Request(format!("--keyring: {e}")));
        }
        if definition.keys.is_empty() {
            return Err(FetchError::Request(format!(
                "{} ships no trusted key{}; give the distribution's signing key with --keyring \
                 (checked by its fingerprint against the one the distribution publishes)",
                definition.name,
                definition
                    .notes
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            )));
        }
        let mut keyring: Option<Keyring> = None;
        for path in &definition.keys {
            let bytes = catalog
                .side_file(path)
                .map_err(|e| FetchError::Request(e.to_string()))?;
            let keys = Keyring::from_bytes(&bytes)
                .map_err(|e| FetchError::Request(format!("{path}: {e}")))?;
            match &mut keyring {
                Some(all) => all.merge(keys),
                None => keyring = Some(keys),
            }
        }
        keyring.ok_or_else(|| FetchError::Request("no trusted keys".into()))
    }

    /// Follows the chain and stages the image. `catalog` gives the key and template
    /// files.
    pub async fn fetch(
        &self,
        catalog: &super::definition::Catalog,
        request: Request,
    ) -> Result<Fetched, FetchError> {
        let definition = &request.definition;
        let parameters = definition
            .parameters_with(&request.parameters)
            .map_err(FetchError::Request)?;
        let expand = |path: &str| definition.expand(path, &parameters);
        let source = &request.source;
        let mut vars: BTreeMap<String, String> = parameters.clone();
        if let Source::Http(base) = source {
            vars.insert("mirror".into(), base.trim_end_matches('/').to_string());
        } else {
            vars.insert("mirror".into(), definition.mirror.clone());
        }
        let mut fingerprint = None;
        let mut stamp = None;
        let mut provenance = Vec::new();
        // Each slot's file (kernel, initrd, shim, grub), once verified.
        let mut slots: BTreeMap<&'static str, PathBuf> = BTreeMap::new();
        let staging = crate::images::new_staging_dir(&self.data_dir)
            .map_err(|e| FetchError::Request(e.to_string()))?;
        let result: Result<(), FetchError> = async {
            match &definition.chain {
                Chain::DebianInstaller { release, sums } => {
                    let keyring = self.keyring(&request, catalog)?;
                    let sums_path = expand(sums);
                    let (sums_file, signer, signed_stamp, lines) = self
                        .listed_by_release(source, &keyring, &expand(release), &sums_path)
                        .await?;
                    fingerprint = Some(signer);
                    stamp = Some(signed_stamp);
                    provenance.extend(lines);
                    let text = std::fs::read_to_string(&sums_file).map_err(io_at(&sums_file))?;
                    let list =
                        Sums::parse(&text).map_err(|e| refused(&sums_path, e.to_string()))?;
                    let sums_dir = dir_of(&sums_path);
                    let fetch_listed = |path: String| {
                        let list = &list;
                        let sums_path = &sums_path;
                        async move {
                            let relative = path
                                .strip_prefix(&format!("{sums_dir}/"))
                                .unwrap_or(&path)
                                .to_string();
                            let sha = list
                                .get(&relative)
                                .ok_or_else(|| {
                                    refused(
                                        sums_path.as_str(),
                                        format!("it does not list {relative}"),
                                    )
                                })?
                                .to_string();
                            let cached = self.fetch_known(source, &path, &sha, None).await?;
                            Ok::<_, FetchError>((cached, format!("{path} sha256 {sha}")))
                        }
                    };
                    for (slot, path) in definition.members() {
                        let (file, line) = fetch_listed(expand(&path)).await?;
                        provenance.push(line);
                        slots.insert(slot, file);
                    }
                }
                Chain::DebianPackage {
                    release,
                    packages,
                    package,
                } => {
                    let keyring = self.keyring(&request, catalog)?;
                    let packages_path = expand(packages);
                    let (index, signer, signed_stamp, lines) = self
                        .listed_by_release(source, &keyring, &expand(release), &packages_path)
                        .await?;
                    fingerprint = Some(signer);
                    stamp = Some(signed_stamp);
                    provenance.extend(lines);
                    let (index2, name) = (index.clone(), packages_path.clone());
                    let text = tokio::task::spawn_blocking(move || read_index(&index2, &name))
                        .await
                        .map_err(|e| FetchError::Request(format!("index task: {e}")))?
                        .map_err(|e| refused(&packages_path, e.to_string()))?;
                    let found = debpkg::find(&text, package)
                        .map_err(|e| refused(&packages_path, e.to_string()))?;
                    let deb = self
                        .fetch_known(source, &found.filename, &found.sha256, Some(found.size))
                        .await?;
                    provenance.push(format!(
                        "{} {} sha256 {}",
                        package, found.version, found.sha256
                    ));
                    let members: Vec<_> = definition
                        .members()
                        .into_iter()
                        .map(|(slot, path)| (slot, expand(&path)))
                        .collect();
                    for (slot, member) in members {
                        let out_path = staging.join(slot);
                        let (deb2, member2, out2) = (deb.clone(), member.clone(), out_path.clone());
                        tokio::task::spawn_blocking(move || {
                            let input = std::fs::File::open(&deb2).map_err(io_at(&deb2))?;
                            let out = std::fs::File::create(&out2).map_err(io_at(&out2))?;
                            debpkg::extract(
                                std::io::BufReader::new(input),
                                &member2,
                                std::io::BufWriter::new(out),
                                MAX_MEMBER_BYTES,
                            )
                            .map_err(|e| {
                                refused(format!("{member2} in {}", deb2.display()), e.to_string())
                            })
                        })
                        .await
                        .map_err(|e| FetchError::Request(format!("extract task: {e}")))??;
                        provenance.push(format!("{member} from the package"));
                        slots.insert(slot, out_path);
                    }
                }
                Chain::SignedChecksums {
                    checksums,
                    signature,
                    iso,
                } => {
                    let keyring = self.keyring(&request, catalog)?;
                    let checksums_path = expand(checksums);
                    let signed_bytes = self.fetch_small(source, &checksums_path).await?;
                    let (text, verified) = match signature {
                        Some(signature) => {
                            let signature_path = expand(signature);
                            let sig = self.fetch_small(source, &signature_path).await?;
                            let verified =
                                openpgp::verify_detached(&keyring, &signed_bytes[..], &sig)
                                    .map_err(|e| refused(&checksums_path, e.to_string()))?;
                            let text = String::from_utf8(signed_bytes)
                                .map_err(|_| refused(&checksums_path, "it is not UTF-8"))?;
                            (text, verified)
                        }
                        None => openpgp::verify_cleartext(&keyring, &signed_bytes)
                            .map_err(|e| refused(&checksums_path, e.to_string()))?,
                    };
                    fingerprint = Some(verified.fingerprint.clone());
                    provenance.push(format!(
                        "{checksums_path} signed by {}",
                        verified.fingerprint
                    ));
                    let list =
                        Sums::parse(&text).map_err(|e| refused(&checksums_path, e.to_string()))?;
                    let list_dir = dir_of(&checksums_path).to_string();
                    match iso {
                        Some(pattern) => {
                            let pattern = expand(pattern);
                            let name = newest_match(&pattern, list.iter().map(|(path, _)| path))
                                .ok_or_else(|| {
                                    refused(
                                        &checksums_path,
                                        format!("it lists no file matching {pattern}"),
                                    )
                                })?;
                            let sha = list.get(&name).unwrap_or_default().to_string();
                            let iso_path = join(&list_dir, &name);
                            // Casper fetches the ISO itself: from the mirror, or from
                            // upstream when the files came from a local directory.
                            let iso_url = match source {
                                Source::Http(_) => source.describe(&iso_path),
                                Source::Dir(_) => format!("{}/{iso_path}", definition.mirror),
                            };
                            vars.insert("iso_url".into(), iso_url);
                            let iso_file = self.fetch_known(source, &iso_path, &sha, None).await?;
                            provenance.push(format!("{iso_path} sha256 {sha}"));
                            let members: Vec<_> = definition
                                .members()
                                .into_iter()
                                .map(|(slot, path)| (slot, expand(&path)))
                                .collect();
                            for (slot, member) in members {
                                let out_path = staging.join(slot);
                                let (iso2, member2, out2) =
                                    (iso_file.clone(), member.clone(), out_path.clone());
                                tokio::task::spawn_blocking(move || {
                                    let input = std::fs::File::open(&iso2).map_err(io_at(&iso2))?;
                                    let out = std::fs::File::create(&out2).map_err(io_at(&out2))?;
                                    let mut image = Iso::open(input).map_err(|e| {
                                        refused(iso2.display().to_string(), e.to_string())
                                    })?;
                                    image
                                        .extract(
                                            &member2,
                                            std::io::BufWriter::new(out),
                                            MAX_MEMBER_BYTES,
                                        )
                                        .map_err(|e| {
                                            refused(format!("{member2} in the ISO"), e.to_string())
                                        })
                                })
                                .await
                                .map_err(|e| FetchError::Request(format!("extract task: {e}")))??;
                                provenance.push(format!("{member} from the ISO"));
                                slots.insert(slot, out_path);
                            }
                        }
                        None => {
                            let files: Vec<_> = definition
                                .members()
                                .into_iter()
                                .map(|(slot, path)| (slot, expand(&path)))
                                .collect();
                            for (slot, path) in files {
                                let relative =
                                    path.strip_prefix(&format!("{list_dir}/")).unwrap_or(&path);
                                let sha = list
                                    .get(relative)
                                    .ok_or_else(|| {
                                        refused(
                                            &checksums_path,
                                            format!("it does not list {relative}"),
                                        )
                                    })?
                                    .to_string();
                                let cached = self.fetch_known(source, &path, &sha, None).await?;
                                provenance.push(format!("{path} sha256 {sha}"));
                                slots.insert(slot, cached);
                            }
                        }
                    }
                }
                Chain::DetachedSignatures => {
                    let keyring = Arc::new(self.keyring(&request, catalog)?);
                    let files: Vec<_> = definition
                        .members()
                        .into_iter()
                        .map(|(slot, path)| (slot, expand(&path)))
                        .collect();
                    for (slot, path) in files {
                        let sig = self.fetch_small(source, &format!("{path}.sig")).await?;
                        // The digest is not known before the signature is checked: the
                        // file is fetched whole, then checked, then cached by digest.
                        let out_path = staging.join(slot);
                        self.fetch_unknown(source, &path, &out_path).await?;
                        let (out2, keyring2) = (out_path.clone(), Arc::clone(&keyring));
                        let verified = tokio::task::spawn_blocking(move || {
                            let file = std::fs::File::open(&out2).map_err(io_at(&out2))?;
                            openpgp::verify_detached(&keyring2, std::io::BufReader::new(file), &sig)
                                .map_err(|e| FetchError::Verify {
                                    what: out2.display().to_string(),
                                    message: e.to_string(),
                                })
                        })
                        .await
                        .map_err(|e| FetchError::Request(format!("verify task: {e}")))?
                        .map_err(|e| match e {
                            FetchError::Verify { message, .. } => refused(path.as_str(), message),
                            other => other,
                        })?;
                        provenance.push(format!("{path} signed by {}", verified.fingerprint));
                        fingerprint = Some(verified.fingerprint);
                        slots.insert(slot, out_path);
                    }
                }
                Chain::Pinned { sha256 } => {
                    let files = definition.members();
                    for (slot, path) in files {
                        let sha = sha256.get(&path).cloned().unwrap_or_default();
                        let cached = self.fetch_known(source, &expand(&path), &sha, None).await?;
                        provenance.push(format!("{path} sha256 {sha} (pinned)"));
                        slots.insert(slot, cached);
                    }
                }
            }
            Ok(())
        }
        .await;
        let staged = result.and_then(|()| self.stage(catalog, definition, &staging, slots));
        match staged {
            Ok((kernel_sha256, initrd_sha256, templates)) => Ok(Fetched {
                staging,
                kernel_sha256,
                initrd_sha256,
                templates,
                fingerprint,
                provenance: provenance.join("; "),
                stamp,
                vars,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
    }

    /// Puts the verified kernel and initrd (and the definition's templates, checked
    /// for syntax) into the staging directory.
    fn stage(
        &self,
        catalog: &super::definition::Catalog,
        definition: &Definition,
        staging: &Path,
        mut found: BTreeMap<&'static str, PathBuf>,
    ) -> Result<(String, Option<String>, Vec<String>), FetchError> {
        let place = |from: Option<PathBuf>, slot: &str| -> Result<Option<String>, FetchError> {
            let Some(from) = from else { return Ok(None) };
            let to = staging.join(slot);
            if from != to {
                // A hard link costs no space; across filesystems, a copy.
                if std::fs::hard_link(&from, &to).is_err() {
                    std::fs::copy(&from, &to).map_err(io_at(&to))?;
                }
            }
            sha256_file(&to).map(Some)
        };
        let kernel_sha256 = place(found.remove("kernel"), "kernel")?
            .ok_or_else(|| FetchError::Request("the chain gave no kernel".into()))?;
        let initrd_sha256 = place(found.remove("initrd"), "initrd")?;
        // The distribution's own shim and grub go under the names rackboot serves
        // them by, for the one architecture the definition has.
        let arm64 = definition
            .architectures
            .iter()
            .any(|a| a.parse::<crate::lifecycle::Arch>() == Ok(crate::lifecycle::Arch::Arm64));
        let (shim_name, grub_name) = if arm64 {
            crate::lifecycle::Arch::Arm64
        } else {
            crate::lifecycle::Arch::Amd64
        }
        .loader_names();
        place(found.remove("shim"), shim_name)?;
        place(found.remove("grub"), grub_name)?;
        let mut templates = Vec::new();
        for (served, path) in &definition.templates {
            let bytes = catalog
                .side_file(path)
                .map_err(|e| FetchError::Request(e.to_string()))?;
            let text = String::from_utf8(bytes).map_err(|_| {
                FetchError::Request(format!("{}: template {path} is not UTF-8", definition.name))
            })?;
            crate::script::check_syntax(served, &text).map_err(|e| {
                FetchError::Request(format!("image {}: template {path}: {e}", definition.name))
            })?;
            let to = staging.join("files").join(served);
            std::fs::write(&to, text).map_err(io_at(&to))?;
            templates.push(served.clone());
        }
        Ok((kernel_sha256, initrd_sha256, templates))
    }

    /// A file whose digest is not known in advance (its signature vouches for it):
    /// fetched whole into `out`.
    async fn fetch_unknown(
        &self,
        source: &Source,
        relative: &str,
        out: &Path,
    ) -> Result<(), FetchError> {
        match source {
            Source::Dir(dir) => {
                let from = dir.join(relative);
                let length = std::fs::metadata(&from).map_err(io_at(&from))?.len();
                self.check_space(length)?;
                std::fs::copy(&from, out).map_err(io_at(&from))?;
                Ok(())
            }
            Source::Http(_) => {
                let url = source.describe(relative);
                let _ = std::fs::remove_file(out);
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match self.download_resuming(&url, relative, out, None).await {
                        Ok(()) => return Ok(()),
                        Err(e @ FetchError::Download { .. }) if attempt < ATTEMPTS => {
                            tracing::warn!("{e}; resuming (attempt {} of {ATTEMPTS})", attempt + 1);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Follows a Debian suite's signed `InRelease` to one file it lists (`SHA256SUMS`,
    /// a `Packages` index), fetched and checked against its listed sha256 and size:
    /// that file's cache path, the signer, the replay stamp and the provenance lines.
    async fn listed_by_release(
        &self,
        source: &Source,
        keyring: &Keyring,
        release_path: &str,
        listed_path: &str,
    ) -> Result<(PathBuf, String, ReleaseStamp, [String; 2]), FetchError> {
        let (body, (signer, stamp)) = self.verified_release(source, keyring, release_path).await?;
        let signed_line = format!(
            "{release_path} signed by {signer} (Date {})",
            crate::text::format_ms(Some(body.date * 1000))
        );
        // Release lists its files relative to its own directory.
        let relative = listed_path
            .strip_prefix(&format!("{}/", dir_of(release_path)))
            .unwrap_or(listed_path);
        let entry = body
            .sha256(relative)
            .ok_or_else(|| refused(release_path, format!("it does not list {relative}")))?;
        let file = self
            .fetch_known(source, listed_path, &entry.sha256, Some(entry.size))
            .await?;
        let listed_line = format!("{listed_path} sha256 {}", entry.sha256);
        Ok((file, signer, stamp, [signed_line, listed_line]))
    }

    /// Fetches and verifies a clearsigned `InRelease`, parses it, and refuses one past
    /// its `Valid-Until`. Returns the parsed body, the signer and the replay stamp.
    async fn verified_release(
        &self,
        source: &Source,
        keyring: &Keyring,
        release_path: &str,
    ) -> Result<(Release, (String, ReleaseStamp)), FetchError> {
        let bytes = self.fetch_small(source, release_path).await?;
        let (text, verified) = openpgp::verify_cleartext(keyring, &bytes)
            .map_err(|e| refused(release_path, e.to_string()))?;
        // The signed text comes in OpenPGP's canonical form, CRLF line ends.
        let text = text.replace("\r\n", "\n");
        let release = Release::parse(&text).map_err(|e| refused(release_path, e.to_string()))?;
        let now = crate::clock::now_ms() / 1000;
        if let Some(until) = release.valid_until
            && until < now
        {
            return Err(refused(
                release_path,
                format!(
                    "it expired at {} (Valid-Until): an old copy is being replayed, or the mirror is stale",
                    crate::text::format_ms(Some(until * 1000))
                ),
            ));
        }
        let stamp = ReleaseStamp {
            key: format!("{}:{release_path}", verified.fingerprint),
            date: release.date,
        };
        Ok((release, (verified.fingerprint, stamp)))
    }
}

/// The largest `Packages` index taken once decompressed (Debian 12's main amd64 is
/// about 46 MB).
const MAX_INDEX_BYTES: u64 = 256 << 20;

/// A `Packages` index, decompressed by its file name's suffix, within bounds.
fn read_index(path: &Path, name: &str) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let input = std::io::BufReader::new(file);
    let mut reader: Box<dyn Read> = if name.ends_with(".xz") {
        // 64 MiB is far more than any xz preset's dictionary.
        Box::new(lzma_rust2::XzReader::new_mem_limit(input, true, 64 * 1024))
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut bytes = Vec::new();
    (&mut reader)
        .take(MAX_INDEX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot decompress: {e}"))?;
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(format!(
            "it decompresses to more than {MAX_INDEX_BYTES} bytes"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_point_release_is_picked() {
        let names = [
            "ubuntu-24.04.1-live-server-amd64.iso",
            "ubuntu-24.04.10-live-server-amd64.iso",
            "ubuntu-24.04.2-desktop-amd64.iso",
            "ubuntu-24.04.3-live-server-amd64.iso",
        ];
        assert_eq!(
            newest_match("ubuntu-24.04*-live-server-amd64.iso", names.into_iter()).as_deref(),
            Some("ubuntu-24.04.10-live-server-amd64.iso")
        );
        assert_eq!(newest_match("other-*.iso", names.into_iter()), None);
        assert_eq!(
            newest_match("ubuntu-24.04.1-live-server-amd64.iso", names.into_iter()).as_deref(),
            Some("ubuntu-24.04.1-live-server-amd64.iso")
        );
    }

    #[test]
    fn list_relative_paths_join() {
        assert_eq!(dir_of("dists/bookworm/InRelease"), "dists/bookworm");
        assert_eq!(join("a/b", "./c/d"), "a/b/c/d");
        assert_eq!(join("", "c"), "c");
    }
}
