//! Debian packages: finding a package in a `Packages` index, comparing Debian
//! versions the way dpkg does, and reading one file out of a `.deb`.
//!
//! [`find`] walks a `Packages` text (deb822, read with `catalog::release`'s line
//! reader) without copying it, and returns the stanza of the package asked for; where
//! the index lists it more than once, the highest [`Version`] wins.
//!
//! [`extract`] streams: the `.deb`'s `ar` archive is read by hand (a magic, 60-byte
//! headers, `debian-binary` first), its `data.tar.{xz,gz,zst}` (or plain `data.tar`)
//! goes through the decompressor into a small tar reader of our own, and the one
//! entry asked for is copied to the caller's writer. Nothing is buffered beyond fixed
//! blocks and the bounded tar name records.
//!
//! Decompressors, all pure Rust, so the appliance links no C library for them:
//! - gzip: `flate2` on its `zlib-rs` backend (the one the crate already uses for XLSX).
//! - xz: `lzma-rust2`, a port of XZ for Java maintained for the `zip` and 7z crates; it
//!   checks each block's dictionary against a memory limit *before* allocating it,
//!   which is the bound a hostile `.deb` needs ([`MAX_DECODER_MEMORY`]), and shares the
//!   crate's `sha2` version.
//! - zstd: `ruzstd`, whose frame decoder refuses windows over [`MAX_DECODER_MEMORY`]
//!   (its default, 128 MiB).
//!
//! Why not the `tar` crate: it reads GNU long-name and PAX records whole into memory
//! (`read_all`, unbounded), so a data.tar could make it allocate as much as it
//! decompresses to. The reader here takes only the shapes dpkg-deb and GNU tar write
//! (ustar with its prefix, GNU `L`/`K` long names, PAX `path`/`linkpath`/`size`),
//! checks every header's checksum, and refuses GNU sparse and multi-volume entries.
//!
//! Bounds: a `Packages` index holds at most [`MAX_STANZAS`] stanzas and lines of at
//! most `release::MAX_LINE_BYTES`; a decompressed data.tar is read for at most
//! [`MAX_DATA_TAR_BYTES`]; long names are at most [`MAX_TAR_NAME_BYTES`] and PAX
//! records [`MAX_PAX_BYTES`]; the entry itself at most the caller's `max_bytes`
//! (checked against its header before a byte is written).
//!
//! The `.deb`'s integrity is the caller's: check its sha256 against the signed
//! `Packages` entry first. This reader stops at the first entry of the name asked for.

use std::cmp::Ordering;
use std::io::{self, Read, Write};

use super::release::{Deb822Line, Deb822Lines, parse_decimal, sha256_hex};

/// The most stanzas read from a `Packages` index (bookworm's main/amd64 has 64 000).
pub const MAX_STANZAS: usize = 1_000_000;
/// The most bytes a data.tar is read for, decompressed.
pub const MAX_DATA_TAR_BYTES: u64 = 4 << 30;
/// The most memory a decompressor may ask for (xz dictionary, zstd window).
pub const MAX_DECODER_MEMORY: u64 = 128 << 20;
/// The longest GNU long name (`L`, `K`) taken.
pub const MAX_TAR_NAME_BYTES: u64 = 4096;
/// The largest PAX extended header (`x`, `g`) taken.
pub const MAX_PAX_BYTES: u64 = 64 << 10;
/// The largest `debian-binary` member taken (it holds `2.0\n`).
const MAX_DEBIAN_BINARY: u64 = 64;

/// Why a `Packages` index, a version or a `.deb` was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("Packages line {line}: {what}")]
    Line { line: usize, what: String },
    #[error("Packages has more than {0} stanzas")]
    TooManyStanzas(usize),
    #[error("package {0} is not in the index")]
    PackageNotFound(String),
    #[error("package {package} (line {line}) has no {field} field")]
    MissingField {
        package: String,
        line: usize,
        field: &'static str,
    },
    #[error("package {package} is listed twice at version {version} with different files")]
    Ambiguous { package: String, version: String },
    #[error("version {version:?}: {what}")]
    Version { version: String, what: &'static str },
    #[error("not a .deb: {0}")]
    NotDeb(&'static str),
    #[error(".deb ar header at byte {offset}: {what}")]
    ArHeader { offset: u64, what: String },
    #[error(".deb ends inside {0}")]
    ArTruncated(String),
    #[error(".deb is format {0:?}, not 2.x")]
    DebVersion(String),
    #[error(".deb has no data.tar member")]
    NoDataTar,
    #[error(".deb's {0} is compressed in a way this reader does not take")]
    Compression(String),
    #[error("{member}: {source}")]
    Data {
        member: String,
        #[source]
        source: io::Error,
    },
    #[error("{member} ends early")]
    DataTruncated { member: String },
    #[error("{member} decompresses to more than {limit} bytes")]
    DataTooLarge { member: String, limit: u64 },
    #[error("{member} at byte {offset}: {what}")]
    Tar {
        member: String,
        offset: u64,
        what: String,
    },
    #[error("invalid member path {0:?}")]
    InvalidMember(String),
    #[error("{0} is not in the package")]
    MemberNotFound(String),
    #[error("{member} is a symlink to {target}")]
    Symlink { member: String, target: String },
    #[error("{member} is a hard link to {target}")]
    HardLink { member: String, target: String },
    #[error("{member} is a {kind}, not a regular file")]
    NotAFile { member: String, kind: &'static str },
    #[error("{member} is {size} bytes, more than the {max_bytes} allowed")]
    TooLarge {
        member: String,
        size: u64,
        max_bytes: u64,
    },
    #[error("writing {member}: {source}")]
    Write {
        member: String,
        #[source]
        source: io::Error,
    },
}

/// A package's stanza in a `Packages` index, the fields a fetch needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageEntry {
    pub package: String,
    pub version: String,
    /// The `.deb`'s path under the mirror's root, e.g. `pool/main/m/memtest86+/...`.
    /// Relative, with no `..` component (checked).
    pub filename: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// The fields of the stanza being read, as slices of the text.
#[derive(Default)]
struct Stanza<'a> {
    start: usize,
    package: Option<&'a str>,
    version: Option<(usize, &'a str)>,
    filename: Option<(usize, &'a str)>,
    size: Option<(usize, &'a str)>,
    sha256: Option<(usize, &'a str)>,
    any: bool,
}

/// The stanza for `package` in a `Packages` text; the highest version where there are
/// several.
pub fn find(text: &str, package: &str) -> Result<PackageEntry, FormatError> {
    let mut best: Option<(PackageEntry, usize)> = None;
    let mut stanza = Stanza::default();
    let mut stanzas = 0usize;
    let mut lines = Deb822Lines::new(text);
    loop {
        let item = lines
            .next()
            .transpose()
            .map_err(|(line, what)| FormatError::Line { line, what })?;
        let end_of_stanza = matches!(item, None | Some(Deb822Line::Blank { .. }));
        if end_of_stanza {
            if stanza.any {
                stanzas += 1;
                if stanzas > MAX_STANZAS {
                    return Err(FormatError::TooManyStanzas(MAX_STANZAS));
                }
                if stanza.package == Some(package) {
                    let entry = entry_of(&stanza, package)?;
                    best = Some(better(best, entry, stanza.start)?);
                }
            }
            stanza = Stanza::default();
            if item.is_none() {
                break;
            }
            continue;
        }
        match item {
            Some(Deb822Line::Field { line, name, value }) => {
                if !stanza.any {
                    stanza.any = true;
                    stanza.start = line;
                }
                let slot = if name.eq_ignore_ascii_case("Package") {
                    if stanza.package.replace(value).is_some() {
                        return Err(twice(line, name));
                    }
                    continue;
                } else if name.eq_ignore_ascii_case("Version") {
                    &mut stanza.version
                } else if name.eq_ignore_ascii_case("Filename") {
                    &mut stanza.filename
                } else if name.eq_ignore_ascii_case("Size") {
                    &mut stanza.size
                } else if name.eq_ignore_ascii_case("SHA256") {
                    &mut stanza.sha256
                } else {
                    continue;
                };
                if slot.replace((line, value)).is_some() {
                    return Err(twice(line, name));
                }
            }
            Some(Deb822Line::Continuation { line, .. }) if !stanza.any => {
                return Err(FormatError::Line {
                    line,
                    what: "a continuation line before any field".into(),
                });
            }
            _ => {}
        }
    }
    best.map(|(entry, _)| entry)
        .ok_or_else(|| FormatError::PackageNotFound(package.to_string()))
}

fn twice(line: usize, name: &str) -> FormatError {
    FormatError::Line {
        line,
        what: format!("field {name} given twice in one stanza"),
    }
}

fn entry_of<'a>(stanza: &Stanza<'a>, package: &str) -> Result<PackageEntry, FormatError> {
    let need = |field: Option<(usize, &'a str)>, name: &'static str| {
        field.ok_or_else(|| FormatError::MissingField {
            package: package.to_string(),
            line: stanza.start,
            field: name,
        })
    };
    let (_, version) = need(stanza.version, "Version")?;
    Version::parse(version)?;
    let (line, filename) = need(stanza.filename, "Filename")?;
    let unsafe_path = filename.is_empty()
        || filename.starts_with('/')
        || filename.split('/').any(|c| c == ".." || c.is_empty());
    if unsafe_path || filename.contains(char::is_whitespace) {
        return Err(FormatError::Line {
            line,
            what: format!("Filename {filename:?} is not a relative path"),
        });
    }
    let (line, size) = need(stanza.size, "Size")?;
    let size = parse_decimal(size).ok_or_else(|| FormatError::Line {
        line,
        what: format!("Size {size:?} is not a number"),
    })?;
    let (line, sha256) = need(stanza.sha256, "SHA256")?;
    let sha256 = sha256_hex(sha256).ok_or_else(|| FormatError::Line {
        line,
        what: format!("SHA256 {sha256:?} is not a sha256 in hex"),
    })?;
    Ok(PackageEntry {
        package: package.to_string(),
        version: version.to_string(),
        filename: filename.to_string(),
        size,
        sha256,
    })
}

fn better(
    best: Option<(PackageEntry, usize)>,
    entry: PackageEntry,
    line: usize,
) -> Result<(PackageEntry, usize), FormatError> {
    let Some((known, known_line)) = best else {
        return Ok((entry, line));
    };
    match Version::parse(&entry.version)?.cmp(&Version::parse(&known.version)?) {
        Ordering::Greater => Ok((entry, line)),
        Ordering::Less => Ok((known, known_line)),
        Ordering::Equal if known.sha256 == entry.sha256 => Ok((known, known_line)),
        Ordering::Equal => Err(FormatError::Ambiguous {
            package: entry.package,
            version: entry.version,
        }),
    }
}

/// A Debian version, `[epoch:]upstream[-revision]`, ordered as dpkg orders them
/// (`deb-version(7)`): epochs by number, then upstream and revision each by
/// alternating runs of non-digits (letters before other characters, `~` before
/// everything, even the end) and of digits (by value).
#[derive(Debug, Clone, Copy)]
pub struct Version<'a> {
    pub epoch: u32,
    pub upstream: &'a str,
    /// Empty where the version has none (dpkg compares it as empty).
    pub revision: &'a str,
}

impl<'a> Version<'a> {
    /// Checks a version the way dpkg's `parseversion` does.
    pub fn parse(text: &'a str) -> Result<Version<'a>, FormatError> {
        let bad = |what| FormatError::Version {
            version: text.to_string(),
            what,
        };
        if text.is_empty() {
            return Err(bad("empty"));
        }
        if text.contains(char::is_whitespace) {
            return Err(bad("contains whitespace"));
        }
        let (epoch, rest) = match text.split_once(':') {
            Some((epoch, rest)) => {
                if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("the epoch is not a number"));
                }
                let epoch: u32 = epoch
                    .parse()
                    .ok()
                    .filter(|e| *e <= i32::MAX as u32)
                    .ok_or_else(|| bad("the epoch is too large"))?;
                (epoch, rest)
            }
            None => (0, text),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((_, "")) => return Err(bad("the revision is empty")),
            Some((upstream, revision)) => (upstream, revision),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(bad("the upstream version is empty"));
        }
        let upstream_ok = upstream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-+~:".contains(&b));
        let revision_ok = revision
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".+~".contains(&b));
        if !upstream_ok || !revision_ok {
            return Err(bad("invalid character"));
        }
        Ok(Version {
            epoch,
            upstream,
            revision,
        })
    }
}

impl Ord for Version<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| verrevcmp(self.upstream, other.upstream))
            .then_with(|| verrevcmp(self.revision, other.revision))
    }
}

impl PartialOrd for Version<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Equal as dpkg compares (`1.0` and `1.00` are equal), not as text.
impl PartialEq for Version<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Version<'_> {}

/// dpkg's `verrevcmp`, as in lib/dpkg/version.c.
fn verrevcmp(a: &str, b: &str) -> Ordering {
    /// The weight of a non-digit (0 is the end of the string).
    fn order(c: u8) -> i32 {
        match c {
            b'0'..=b'9' => 0,
            c if c.is_ascii_alphabetic() => i32::from(c),
            b'~' => -1,
            0 => 0,
            c => i32::from(c) + 256,
        }
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let mut first_diff = 0i32;
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ac, bc) = (order(at(a, i)), order(at(b, j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while at(a, i) == b'0' {
            i += 1;
        }
        while at(b, j) == b'0' {
            j += 1;
        }
        while at(a, i).is_ascii_digit() && at(b, j).is_ascii_digit() {
            if first_diff == 0 {
                first_diff = i32::from(at(a, i)) - i32::from(at(b, j));
            }
            i += 1;
            j += 1;
        }
        if at(a, i).is_ascii_digit() {
            return Ordering::Greater;
        }
        if at(b, j).is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != 0 {
            return first_diff.cmp(&0);
        }
    }
    Ordering::Equal
}

/// Compares two version strings as dpkg does (`dpkg --compare-versions`).
pub fn compare_versions(a: &str, b: &str) -> Result<Ordering, FormatError> {
    Ok(Version::parse(a)?.cmp(&Version::parse(b)?))
}

/// A member path as dpkg-deb writes it (`./usr/lib/x`) or as asked (`/usr/lib/x`,
/// `usr/lib/x`), reduced to `usr/lib/x`; a directory's trailing `/` taken off.
fn normalise_member(path: &[u8]) -> &[u8] {
    let mut path = path;
    loop {
        if let Some(rest) = path.strip_prefix(b"./") {
            path = rest;
        } else if let Some(rest) = path.strip_prefix(b"/") {
            path = rest;
        } else {
            break;
        }
    }
    while let Some(rest) = path.strip_suffix(b"/") {
        path = rest;
    }
    path
}

/// Where a symlink found by [`extract`] points, as a member path: `target` taken
/// relative to the link's directory (or from the root, if absolute), `.` and `..`
/// resolved. `None` if it climbs above the root. One level only: the result may be a
/// link itself.
pub fn resolve_symlink(member: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        let link = String::from_utf8_lossy(normalise_member(member.as_bytes())).into_owned();
        let dir: Vec<&str> = match link.rsplit_once('/') {
            Some((dir, _)) => dir.split('/').collect(),
            None => Vec::new(),
        };
        for part in dir {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop()?;
                }
                part => parts.push(part),
            }
        }
        let parts = parts.into_iter().map(str::to_string).collect::<Vec<_>>();
        return resolve_onto(parts, target);
    }
    resolve_onto(Vec::new(), target)
}

fn resolve_onto(mut parts: Vec<String>, target: &str) -> Option<String> {
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part.to_string()),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Copies the file `member` (e.g. `usr/lib/shim/shimx64.efi.signed`; `./` and a
/// leading `/` are ignored) out of the `.deb` read from `deb` into `out`; the bytes
/// written. Refuses a member over `max_bytes` before writing any of it, and names a
/// symlink's target ([`FormatError::Symlink`]; see [`resolve_symlink`]).
pub fn extract(
    mut deb: impl Read,
    member: &str,
    out: impl Write,
    max_bytes: u64,
) -> Result<u64, FormatError> {
    let want = normalise_member(member.as_bytes());
    if want.is_empty()
        || want
            .split(|b| *b == b'/')
            .any(|c| c == b".." || c.is_empty())
    {
        return Err(FormatError::InvalidMember(member.to_string()));
    }
    let mut magic = [0u8; 8];
    read_full(&mut deb, &mut magic)
        .map_err(|e| data_error("the ar magic", e))?
        .then_some(())
        .ok_or(FormatError::NotDeb("too short"))?;
    if &magic != b"!<arch>\n" {
        return Err(FormatError::NotDeb("no ar magic"));
    }
    let mut offset = 8u64;
    let mut first = true;
    loop {
        let Some((name, size)) = ar_header(&mut deb, offset)? else {
            return Err(if first {
                FormatError::NotDeb("no members")
            } else {
                FormatError::NoDataTar
            });
        };
        offset += 60;
        let padded = size + (size & 1);
        if first {
            if name != "debian-binary" {
                return Err(FormatError::NotDeb("the first member is not debian-binary"));
            }
            if size > MAX_DEBIAN_BINARY {
                return Err(FormatError::NotDeb("debian-binary is too large"));
            }
            let mut version = vec![0u8; padded as usize];
            if !read_full(&mut deb, &mut version).map_err(|e| data_error(&name, e))? {
                return Err(FormatError::ArTruncated(name));
            }
            version.truncate(size as usize);
            if !version.starts_with(b"2.") {
                let text = String::from_utf8_lossy(&version).trim().to_string();
                return Err(FormatError::DebVersion(text));
            }
            first = false;
        } else if let Some(suffix) = name.strip_prefix("data.tar") {
            let limited = (&mut deb).take(size);
            let data: Box<dyn Read + '_> = match suffix {
                "" => Box::new(limited),
                ".gz" => Box::new(flate2::read::GzDecoder::new(limited)),
                ".xz" => {
                    let kib = (MAX_DECODER_MEMORY / 1024) as u32;
                    Box::new(lzma_rust2::XzReader::new_mem_limit(limited, true, kib))
                }
                ".zst" => Box::new(ruzstd::decoding::StreamingDecoder::new(limited).map_err(
                    |e| FormatError::Data {
                        member: name.clone(),
                        source: io::Error::new(io::ErrorKind::InvalidData, e),
                    },
                )?),
                _ => return Err(FormatError::Compression(name)),
            };
            let mut tar = Tar {
                inner: data,
                name: &name,
                offset: 0,
                buf: vec![0u8; 64 << 10],
            };
            return tar.extract(want, member, out, max_bytes);
        } else {
            // control.tar.*, and the `_`-named members dpkg ignores.
            let skipped = io::copy(&mut (&mut deb).take(padded), &mut io::sink())
                .map_err(|e| data_error(&name, e))?;
            if skipped < size {
                return Err(FormatError::ArTruncated(name));
            }
        }
        offset += padded;
    }
}

fn data_error(member: &str, source: io::Error) -> FormatError {
    if source.kind() == io::ErrorKind::UnexpectedEof {
        return FormatError::DataTruncated {
            member: member.to_string(),
        };
    }
    FormatError::Data {
        member: member.to_string(),
        source,
    }
}

/// Fills `buf`; `Ok(false)` if the input ends before the first byte, an
/// `UnexpectedEof` error if it ends later.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The next ar member's name and size; `None` at the end of the archive.
fn ar_header(deb: &mut impl Read, offset: u64) -> Result<Option<(String, u64)>, FormatError> {
    let mut header = [0u8; 60];
    let bad = |what: &str| FormatError::ArHeader {
        offset,
        what: what.to_string(),
    };
    match read_full(deb, &mut header) {
        Ok(false) => return Ok(None),
        Ok(true) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(FormatError::ArTruncated("an ar header".into()));
        }
        Err(e) => return Err(data_error("the .deb", e)),
    }
    if &header[58..60] != b"`\n" {
        return Err(bad("no header terminator"));
    }
    let name = std::str::from_utf8(&header[..16])
        .map_err(|_| bad("the name is not text"))?
        .trim_end_matches(' ');
    let name = name.strip_suffix('/').unwrap_or(name);
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("the name is not printable"));
    }
    let size = std::str::from_utf8(&header[48..58])
        .ok()
        .map(|s| s.trim_end_matches(' '))
        .and_then(parse_decimal)
        .ok_or_else(|| bad("the size is not a decimal number"))?;
    Ok(Some((name.to_string(), size)))
}

/// A tar stream, read for at most [`MAX_DATA_TAR_BYTES`].
struct Tar<'n, R> {
    inner: R,
    /// The ar member, for messages.
    name: &'n str,
    /// Bytes read so far.
    offset: u64,
    /// The copy buffer.
    buf: Vec<u8>,
}

const BLOCK: u64 = 512;

impl<R: Read> Tar<'_, R> {
    fn error(&self, what: impl Into<String>) -> FormatError {
        FormatError::Tar {
            member: self.name.to_string(),
            offset: self.offset,
            what: what.into(),
        }
    }

    fn read_error(&self, e: io::Error) -> FormatError {
        data_error(self.name, e)
    }

    fn reserve(&mut self, n: u64) -> Result<(), FormatError> {
        match self.offset.checked_add(n) {
            Some(end) if end <= MAX_DATA_TAR_BYTES => Ok(()),
            _ => Err(FormatError::DataTooLarge {
                member: self.name.to_string(),
                limit: MAX_DATA_TAR_BYTES,
            }),
        }
    }

    /// The next header block; `None` where the stream ends cleanly between entries.
    fn header(&mut self) -> Result<Option<[u8; 512]>, FormatError> {
        self.reserve(BLOCK)?;
        let mut block = [0u8; 512];
        match read_full(&mut self.inner, &mut block) {
            Ok(true) => {
                self.offset += BLOCK;
                Ok(Some(block))
            }
            Ok(false) => Ok(None),
            Err(e) => Err(self.read_error(e)),
        }
    }

    /// Reads a bounded record (a long name, PAX headers) of `size` bytes and its padding.
    fn record(&mut self, size: u64, max: u64, what: &str) -> Result<Vec<u8>, FormatError> {
        if size > max {
            return Err(self.error(format!("{what} of {size} bytes, over {max}")));
        }
        let padded = padded(size);
        self.reserve(padded)?;
        let mut data = vec![0u8; padded as usize];
        if !read_full(&mut self.inner, &mut data).map_err(|e| self.read_error(e))? {
            return Err(self.read_error(io::ErrorKind::UnexpectedEof.into()));
        }
        self.offset += padded;
        data.truncate(size as usize);
        Ok(data)
    }

    /// Copies `size` bytes (then skips the padding) into `out`, or discards them.
    fn copy(
        &mut self,
        size: u64,
        mut out: Option<&mut dyn Write>,
        member: &str,
    ) -> Result<(), FormatError> {
        let padded = padded(size);
        self.reserve(padded)?;
        let mut left = padded;
        let mut data_left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match self.inner.read(&mut self.buf[..want]) {
                Ok(0) => return Err(self.read_error(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.read_error(e)),
            };
            let data = (n as u64).min(data_left) as usize;
            if let Some(out) = out.as_mut() {
                out.write_all(&self.buf[..data])
                    .map_err(|source| FormatError::Write {
                        member: member.to_string(),
                        source,
                    })?;
            }
            data_left -= data as u64;
            left -= n as u64;
            self.offset += n as u64;
        }
        Ok(())
    }

    fn extract(
        &mut self,
        want: &[u8],
        member: &str,
        mut out: impl Write,
        max_bytes: u64,
    ) -> Result<u64, FormatError> {
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax = Pax::default();
        loop {
            let header_offset = self.offset;
            let Some(header) = self.header()? else {
                return Err(FormatError::MemberNotFound(member.to_string()));
            };
            if header.iter().all(|b| *b == 0) {
                return Err(FormatError::MemberNotFound(member.to_string()));
            }
            let checksum = octal(&header[148..156])
                .ok_or_else(|| self.error("the header checksum is not octal"))?;
            let sum: u64 = header
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u64::from(*b)
                    }
                })
                .sum();
            if sum != checksum {
                self.offset = header_offset;
                return Err(self.error("header checksum mismatch"));
            }
            let size = match pax.size.take() {
                Some(size) => size,
                None => header_size(&header[124..136])
                    .ok_or_else(|| self.error("the size field is not a number"))?,
            };
            let kind = header[156];
            match kind {
                b'L' => {
                    long_name = Some(cstr(&self.record(
                        size,
                        MAX_TAR_NAME_BYTES,
                        "a long name",
                    )?));
                    continue;
                }
                b'K' => {
                    long_link = Some(cstr(&self.record(
                        size,
                        MAX_TAR_NAME_BYTES,
                        "a long link",
                    )?));
                    continue;
                }
                b'x' => {
                    let data = self.record(size, MAX_PAX_BYTES, "a PAX header")?;
                    pax = Pax::parse(&data).map_err(|what| self.error(what))?;
                    continue;
                }
                b'g' => {
                    self.record(size, MAX_PAX_BYTES, "a global PAX header")?;
                    continue;
                }
                b'S' | b'M' => {
                    return Err(self.error("a GNU sparse or multi-volume entry"));
                }
                _ => {}
            }
            let path = match (pax.path.take(), long_name.take()) {
                (Some(path), _) | (None, Some(path)) => path,
                (None, None) => ustar_name(&header),
            };
            let link = pax
                .linkpath
                .take()
                .or(long_link.take())
                .unwrap_or_else(|| cstr(&header[157..257]));
            if normalise_member(&path) != want {
                self.copy(size, None, member)?;
                continue;
            }
            let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            let not_a_file = |kind| FormatError::NotAFile {
                member: member.to_string(),
                kind,
            };
            return match kind {
                b'0' | 0 | b'7' => {
                    if size > max_bytes {
                        return Err(FormatError::TooLarge {
                            member: member.to_string(),
                            size,
                            max_bytes,
                        });
                    }
                    self.copy(size, Some(&mut out), member)?;
                    out.flush().map_err(|source| FormatError::Write {
                        member: member.to_string(),
                        source,
                    })?;
                    Ok(size)
                }
                b'2' => Err(FormatError::Symlink {
                    member: member.to_string(),
                    target: text(&link),
                }),
                b'1' => Err(FormatError::HardLink {
                    member: member.to_string(),
                    target: text(&link),
                }),
                b'5' => Err(not_a_file("directory")),
                b'3' | b'4' => Err(not_a_file("device")),
                b'6' => Err(not_a_file("fifo")),
                _ => Err(not_a_file("tar entry of an unknown type")),
            };
        }
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK).saturating_mul(BLOCK)
}

/// The bytes before the first NUL.
fn cstr(field: &[u8]) -> Vec<u8> {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    field[..end].to_vec()
}

/// The name field, with the ustar prefix where the header is POSIX ustar (GNU tar
/// uses those bytes for other things).
fn ustar_name(header: &[u8; 512]) -> Vec<u8> {
    let name = cstr(&header[..100]);
    if &header[257..263] == b"ustar\0" {
        let prefix = cstr(&header[345..500]);
        if !prefix.is_empty() {
            let mut path = prefix;
            path.push(b'/');
            path.extend_from_slice(&name);
            return path;
        }
    }
    name
}

/// An octal field (spaces and NULs around the digits).
fn octal(field: &[u8]) -> Option<u64> {
    let digits = field
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| **b != 0 && **b != b' ');
    let mut value = 0u64;
    for b in digits {
        if !(b'0'..=b'7').contains(b) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

/// The size field: octal, or GNU's base-256 (the high bit of its first byte set).
fn header_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 == 0 {
        return octal(field);
    }
    let mut value = u64::from(field[0] & 0x7f);
    for b in &field[1..] {
        value = value.checked_mul(256)?.checked_add(u64::from(*b))?;
    }
    Some(value)
}

/// The PAX keys that change where or what an entry is.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

impl Pax {
    /// Records of `<length> <key>=<value>\n`.
    fn parse(mut data: &[u8]) -> Result<Pax, String> {
        let mut pax = Pax::default();
        while !data.is_empty() {
            let space = data
                .iter()
                .position(|b| *b == b' ')
                .ok_or("a PAX record without a length")?;
            let length = std::str::from_utf8(&data[..space])
                .ok()
                .and_then(parse_decimal)
                .and_then(|l| usize::try_from(l).ok())
                .filter(|l| *l > space + 1 && *l <= data.len())
                .ok_or("a PAX record of a bad length")?;
            let record = &data[space + 1..length];
            data = &data[length..];
            let record = record
                .strip_suffix(b"\n")
                .ok_or("a PAX record not ending in a newline")?;
            let eq = record
                .iter()
                .position(|b| *b == b'=')
                .ok_or("a PAX record without `=`")?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            match key {
                b"path" => pax.path = Some(value.to_vec()),
                b"linkpath" => pax.linkpath = Some(value.to_vec()),
                b"size" => {
                    let size = std::str::from_utf8(value)
                        .ok()
                        .and_then(parse_decimal)
                        .ok_or("a PAX size that is not a number")?;
                    pax.size = Some(size);
                }
                _ => {}
            }
        }
        Ok(pax)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(a: &str, b: &str) -> Ordering {
        compare_versions(a, b).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn versions_compare_as_dpkg_does() {
        use Ordering::{Equal, Greater, Less};
        let cases = [
            ("1.0~rc1", "1.0", Less),
            ("1:0.1", "2.0", Greater),
            ("1.0-1", "1.0-1+deb12u1", Less),
            ("1.0", "1.0-0", Equal),
            ("1.0", "1.00", Equal),
            ("1.0", "1.0.0", Less),
            ("1.0~", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1.0~~a", "1.0~~", Greater),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0a", "1.0", Greater),
            ("1.0a", "1.0+", Less),
            ("1.0+", "1.0.", Less),
            ("2.30-1", "2.4-1", Greater),
            ("0:1.2", "1.2", Equal),
            ("6.10-4", "6.10-3", Greater),
            ("15.8-1+deb12u1", "15.8-1", Greater),
            ("1.2.3-1~bpo12+1", "1.2.3-1", Less),
            ("7:1", "6:99", Greater),
            ("10", "9", Greater),
            ("a", "b", Less),
            ("1-1", "1-1", Equal),
        ];
        for (a, b, want) in cases {
            assert_eq!(cmp(a, b), want, "{a} vs {b}");
            assert_eq!(cmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn invalid_versions_are_refused() {
        for bad in [
            "",
            "1.0-",
            ":1.0",
            "a:1.0",
            "1:",
            "1.0 1",
            "1.0_1",
            "1.0-1:2",
            "99999999999:1",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?}");
        }
        let v = Version::parse("2:1.0-1-2").expect("parses");
        assert_eq!((v.epoch, v.upstream, v.revision), (2, "1.0-1", "2"));
    }

    /// Two stanzas verbatim from bookworm's main/binary-amd64/Packages, then a
    /// memtest86+ at a lower version, as an index with two versions might hold.
    const PACKAGES: &str = "\
Package: memtest86+
Version: 6.10-4
Installed-Size: 12685
Maintainer: Fabio Fantoni <fantonifabio@tiscali.it>
Architecture: amd64
Suggests: grub-efi | grub-pc | grub-legacy, memtester, mtools
Description: thorough real-mode memory tester
Homepage: https://www.memtest.org/
Description-md5: aa685f84801773ef97fdaba8eb26436a
Tag: admin::benchmarking, admin::boot, hardware::storage:floppy,
 interface::text-mode, role::program, scope::utility, use::checking
Section: misc
Priority: optional
Filename: pool/main/m/memtest86+/memtest86+_6.10-4_amd64.deb
Size: 122832
MD5sum: 76080d4754147dc838f1c4b7adf327e8
SHA256: 76a2939452a8b7dba642c97a63e42b985b76eba51ea1330038957239d4a47154

Package: shim-signed
Source: shim-signed (1.51~1+deb12u1)
Version: 1.51~1+deb12u1+16.1-2~deb12u1
Installed-Size: 1054
Maintainer: Debian EFI Team <debian-efi@lists.debian.org>
Architecture: amd64
Depends: debconf (>= 0.5) | debconf-2.0, mokutil, shim-signed-common (>= 1.51~1+deb12u1), grub-efi-amd64-bin, shim-helpers-amd64-signed (>= 1+15.8+1~deb12u1), grub2-common (>= 2.06-13+deb12u1)
Pre-Depends: debconf
Description: Secure Boot chain-loading bootloader (Microsoft-signed binary)
Multi-Arch: same
Built-Using: shim (= 16.1-2~deb12u1)
Description-md5: bb630091f4b18f9e79f41b63a3c3842e
Section: utils
Priority: optional
Filename: pool/main/s/shim-signed/shim-signed_1.51~1+deb12u1+16.1-2~deb12u1_amd64.deb
Size: 350384
MD5sum: d2c66aff486a5b784ca77a3a21a726fb
SHA256: c2acf5e559664bbadb7ce5789f9a321f39754a34854d3097b8cc0369df513b3b

Package: memtest86+
Version: 6.10-3
Filename: pool/main/m/memtest86+/memtest86+_6.10-3_amd64.deb
Size: 120000
SHA256: 0000000000000000000000000000000000000000000000000000000000000000
";

    #[test]
    fn find_picks_the_highest_version() {
        let entry = find(PACKAGES, "memtest86+").expect("found");
        assert_eq!(
            entry,
            PackageEntry {
                package: "memtest86+".into(),
                version: "6.10-4".into(),
                filename: "pool/main/m/memtest86+/memtest86+_6.10-4_amd64.deb".into(),
                size: 122_832,
                sha256: "76a2939452a8b7dba642c97a63e42b985b76eba51ea1330038957239d4a47154".into(),
            }
        );
        let shim = find(PACKAGES, "shim-signed").expect("found");
        assert_eq!(shim.version, "1.51~1+deb12u1+16.1-2~deb12u1");
        assert_eq!(shim.size, 350_384);
        // Order in the file does not matter.
        let (first, second) = PACKAGES.split_at(PACKAGES.find("Package: shim").unwrap_or(0));
        let swapped = format!("{second}\n{first}");
        assert_eq!(
            find(&swapped, "memtest86+").expect("found").version,
            "6.10-4"
        );
    }

    #[test]
    fn find_errors() {
        assert!(matches!(
            find(PACKAGES, "memtest86"),
            Err(FormatError::PackageNotFound(p)) if p == "memtest86"
        ));
        let no_sha = PACKAGES.replace(
            "SHA256: c2acf5e559664bbadb7ce5789f9a321f39754a34854d3097b8cc0369df513b3b\n",
            "",
        );
        let err = find(&no_sha, "shim-signed").unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::MissingField {
                    line: 19,
                    field: "SHA256",
                    ..
                }
            ),
            "{err}"
        );
        // Another package's stanza lacking a field is no concern of this lookup.
        assert!(find(&no_sha, "memtest86+").is_ok());
        let escape = PACKAGES.replace("pool/main/s/", "pool/../../s/");
        assert!(matches!(
            find(&escape, "shim-signed"),
            Err(FormatError::Line { line: 33, .. })
        ));
        let twice = PACKAGES.replace("Size: 350384\n", "Size: 350384\nSize: 1\n");
        assert!(matches!(
            find(&twice, "memtest86+"),
            Err(FormatError::Line { line: 35, .. })
        ));
        let same_version = PACKAGES.replace("Version: 6.10-3", "Version: 6.10-4");
        assert!(matches!(
            find(&same_version, "memtest86+"),
            Err(FormatError::Ambiguous { .. })
        ));
        let bad_version = PACKAGES.replace("Version: 6.10-3", "Version: 6.10 3");
        assert!(matches!(
            find(&bad_version, "memtest86+"),
            Err(FormatError::Version { .. })
        ));
        assert!(matches!(
            find("Package: a\nno colon\n", "a"),
            Err(FormatError::Line { line: 2, .. })
        ));
    }

    fn fixture(z: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/catalog/deb/fixture-{z}.deb",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    const COMPRESSIONS: [&str; 4] = ["xz", "gzip", "zstd", "none"];
    const HELLO: &str = "usr/lib/rackboot-fixture/hello.efi";

    fn big_bin() -> Vec<u8> {
        let mut text = String::new();
        for n in 1.. {
            text.push_str(&format!("{n}\n"));
            if text.len() >= 20_000 {
                break;
            }
        }
        text.truncate(20_000);
        text.into_bytes()
    }

    #[test]
    fn extract_from_each_compression() {
        for z in COMPRESSIONS {
            let deb = fixture(z);
            for name in [
                HELLO,
                "./usr/lib/rackboot-fixture/hello.efi",
                "/usr/lib/rackboot-fixture/hello.efi",
            ] {
                let mut out = Vec::new();
                let n =
                    extract(&deb[..], name, &mut out, 1024).unwrap_or_else(|e| panic!("{z}: {e}"));
                assert_eq!(
                    (n, out.as_slice()),
                    (23, &b"hello from the fixture\n"[..]),
                    "{z}"
                );
            }
            let mut out = Vec::new();
            let n = extract(
                &deb[..],
                "usr/lib/rackboot-fixture/big.bin",
                &mut out,
                20_000,
            )
            .unwrap_or_else(|e| panic!("{z}: {e}"));
            assert_eq!(n, 20_000);
            assert_eq!(out, big_bin(), "{z}");
            let long = "usr/lib/rackboot-fixture/a-directory-with-a-rather-long-name-to-need-gnu-long-names/and-a-file-name-that-pushes-the-path-past-one-hundred-bytes.txt";
            let mut out = Vec::new();
            extract(&deb[..], long, &mut out, 100).unwrap_or_else(|e| panic!("{z}: {e}"));
            assert_eq!(out, b"a long path\n", "{z}");
        }
    }

    #[test]
    fn extract_missing_member() {
        for z in COMPRESSIONS {
            let deb = fixture(z);
            let err = extract(
                &deb[..],
                "usr/lib/rackboot-fixture/nope.efi",
                io::sink(),
                1024,
            )
            .unwrap_err();
            assert!(
                matches!(&err, FormatError::MemberNotFound(m) if m == "usr/lib/rackboot-fixture/nope.efi"),
                "{z}: {err}"
            );
            assert_eq!(
                err.to_string(),
                "usr/lib/rackboot-fixture/nope.efi is not in the package"
            );
            // A control file is not in data.tar.
            assert!(matches!(
                extract(&deb[..], "control", io::sink(), 1024),
                Err(FormatError::MemberNotFound(_))
            ));
            let err = extract(&deb[..], "usr/lib/rackboot-fixture", io::sink(), 1024).unwrap_err();
            assert!(
                matches!(
                    err,
                    FormatError::NotAFile {
                        kind: "directory",
                        ..
                    }
                ),
                "{z}: {err}"
            );
        }
        for bad in ["", "/", "./", "usr/../etc/passwd", "usr//lib"] {
            assert!(
                matches!(
                    extract(&fixture("xz")[..], bad, io::sink(), 1024),
                    Err(FormatError::InvalidMember(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn extract_symlink_names_its_target() {
        for z in COMPRESSIONS {
            let deb = fixture(z);
            let link = "usr/lib/rackboot-fixture/current.efi";
            let mut out = Vec::new();
            let err = extract(&deb[..], link, &mut out, 1024).unwrap_err();
            let FormatError::Symlink { member, target } = &err else {
                panic!("{z}: {err}");
            };
            assert_eq!((member.as_str(), target.as_str()), (link, "hello.efi"));
            assert!(out.is_empty());
            assert_eq!(err.to_string(), format!("{link} is a symlink to hello.efi"));
            let resolved = resolve_symlink(member, target).expect("inside");
            assert_eq!(resolved, HELLO);
            extract(&deb[..], &resolved, &mut out, 1024).expect("target");
            assert_eq!(out, b"hello from the fixture\n");
        }
    }

    #[test]
    fn resolving_symlinks() {
        assert_eq!(
            resolve_symlink("./usr/lib/a/b.efi", "c.efi").as_deref(),
            Some("usr/lib/a/c.efi")
        );
        assert_eq!(
            resolve_symlink("usr/lib/a/b.efi", "../c/./d").as_deref(),
            Some("usr/lib/c/d")
        );
        assert_eq!(
            resolve_symlink("usr/lib/a/b.efi", "/boot/x").as_deref(),
            Some("boot/x")
        );
        assert_eq!(resolve_symlink("b.efi", "c").as_deref(), Some("c"));
        assert_eq!(resolve_symlink("usr/b", "../../etc/passwd"), None);
        assert_eq!(resolve_symlink("usr/b", ".."), None);
    }

    #[test]
    fn extract_refuses_more_than_max_bytes() {
        for z in COMPRESSIONS {
            let deb = fixture(z);
            let mut out = Vec::new();
            let err = extract(
                &deb[..],
                "usr/lib/rackboot-fixture/big.bin",
                &mut out,
                19_999,
            )
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    FormatError::TooLarge {
                        size: 20_000,
                        max_bytes: 19_999,
                        ..
                    }
                ),
                "{z}: {err}"
            );
            assert!(out.is_empty(), "nothing written");
        }
    }

    #[test]
    fn truncated_and_corrupt_debs_are_errors() {
        for z in COMPRESSIONS {
            let deb = fixture(z);
            let member = "usr/lib/rackboot-fixture/big.bin";
            // Every prefix: an error, never a panic, or (where only the end of the
            // compressed stream is cut, past the entry) the whole entry.
            for len in (0..deb.len()).step_by(97) {
                let mut out = Vec::new();
                if extract(&deb[..len], member, &mut out, 1 << 20).is_ok() {
                    assert!(len > deb.len() / 2 && out == big_bin(), "{z}: {len}");
                }
            }
            // Flipped bytes: an error or (where the byte did not matter) the file.
            for at in (0..deb.len()).step_by(89) {
                let mut bad = deb.clone();
                bad[at] ^= 0x5a;
                let _ = extract(&bad[..], member, io::sink(), 1 << 20);
            }
        }
        assert!(matches!(
            extract(&b"not a deb at all"[..], HELLO, io::sink(), 1),
            Err(FormatError::NotDeb(_))
        ));
    }

    /// A hand-built archive: ar of debian-binary and a data.tar given here.
    fn deb_with(data_name: &str, data: &[u8]) -> Vec<u8> {
        let mut deb = b"!<arch>\n".to_vec();
        for (name, body) in [("debian-binary", &b"2.0\n"[..]), (data_name, data)] {
            deb.extend_from_slice(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    100644,
                    body.len()
                )
                .as_bytes(),
            );
            deb.extend_from_slice(body);
            if body.len() % 2 == 1 {
                deb.push(b'\n');
            }
        }
        deb
    }

    fn tar_header(name: &str, kind: u8, size: u64, ustar_prefix: Option<&str>) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        match ustar_prefix {
            Some(prefix) => {
                h[257..263].copy_from_slice(b"ustar\0");
                h[263..265].copy_from_slice(b"00");
                h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
            }
            None => h[257..265].copy_from_slice(b"ustar  \0"),
        }
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn entry(tar: &mut Vec<u8>, header: [u8; 512], body: &[u8]) {
        tar.extend_from_slice(&header);
        tar.extend_from_slice(body);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }

    #[test]
    fn ustar_prefix_and_pax_paths() {
        let mut tar = Vec::new();
        entry(
            &mut tar,
            tar_header("b.efi", b'0', 3, Some("./usr/lib")),
            b"one",
        );
        let record = "path=./usr/lib/pax-named.efi\n";
        let record = format!("{} {record}", record.len() + 3);
        entry(
            &mut tar,
            tar_header("PaxHeaders/x", b'x', record.len() as u64, None),
            record.as_bytes(),
        );
        entry(&mut tar, tar_header("./short-name", b'0', 3, None), b"two");
        tar.extend_from_slice(&[0u8; 1024]);
        let deb = deb_with("data.tar", &tar);
        let mut out = Vec::new();
        extract(&deb[..], "usr/lib/b.efi", &mut out, 10).expect("prefixed");
        assert_eq!(out, b"one");
        out.clear();
        extract(&deb[..], "usr/lib/pax-named.efi", &mut out, 10).expect("pax path");
        assert_eq!(out, b"two");
        assert!(matches!(
            extract(&deb[..], "short-name", io::sink(), 10),
            Err(FormatError::MemberNotFound(_))
        ));
    }

    #[test]
    fn hostile_tar_records_are_bounded() {
        // A long name record claiming a gigabyte: refused before reading it.
        let mut tar = Vec::new();
        tar.extend_from_slice(&tar_header("././@LongLink", b'L', 1 << 30, None));
        let deb = deb_with("data.tar", &tar);
        let err = extract(&deb[..], HELLO, io::sink(), 10).unwrap_err();
        assert!(matches!(err, FormatError::Tar { .. }), "{err}");
        // A PAX size that is not a number.
        let mut tar = Vec::new();
        entry(&mut tar, tar_header("x", b'x', 10, None), b"10 size=z\n");
        let err = extract(&deb_with("data.tar", &tar)[..], HELLO, io::sink(), 10).unwrap_err();
        assert!(matches!(err, FormatError::Tar { .. }), "{err}");
        // A bad checksum.
        let mut header = tar_header("./a", b'0', 0, None);
        header[0] = b'b';
        let err = extract(&deb_with("data.tar", &header)[..], "b", io::sink(), 10).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        // An entry claiming more than the whole data.tar bound.
        let mut tar = Vec::new();
        let mut header = tar_header("./a", b'0', 0, None);
        header[124..136].fill(0);
        header[124] = 0x80;
        header[131] = 0x01; // 2^32 in base-256
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar.extend_from_slice(&header);
        let err = extract(&deb_with("data.tar", &tar)[..], "b", io::sink(), 10).unwrap_err();
        assert!(matches!(err, FormatError::DataTooLarge { .. }), "{err}");
        // An unknown compression.
        assert!(matches!(
            extract(&deb_with("data.tar.bz2", b"x")[..], "b", io::sink(), 10),
            Err(FormatError::Compression(_))
        ));
    }
}
