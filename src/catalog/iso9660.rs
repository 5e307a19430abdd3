//! Reading one file out of an ISO 9660 image, e.g. `casper/vmlinuz` and
//! `casper/initrd` out of Ubuntu's live-server ISO.
//!
//! The primary volume descriptor gives the root directory; directory records are
//! walked by path, one component at a time. A record's name is its Rock Ridge `NM`
//! where the image has Rock Ridge (an `SP` entry in the root's first record) and the
//! record an `NM`, compared exactly (POSIX names are case-sensitive); otherwise its
//! ISO 9660 identifier without the `;1` version and a trailing `.`, compared
//! case-insensitively. Rock Ridge `CE` continuation areas are followed, `CL` child
//! links (deep directories relocated by mkisofs) are followed, `RE` relocated
//! directories are skipped where they sit, and an `SL` symlink is reported with its
//! target rather than read as a file. Joliet and El Torito are not read.
//!
//! Refused with their own errors: multi-extent files (over 4 GiB, spread over
//! several records) and interleaved files, which Ubuntu's boot files are not.
//!
//! Bounds, so a hostile image gives an error, never a panic or a large allocation:
//! at most [`MAX_DESCRIPTORS`] volume descriptors are read, a path has at most
//! [`MAX_DEPTH`] components, a directory is at most [`MAX_DIR_BYTES`], a name at most
//! [`MAX_NAME_BYTES`] (symlink targets four times that), a directory lookup follows
//! at most [`MAX_CONTINUATIONS`] `CE` areas, and every extent must lie inside the
//! image file (a truncated image fails on the first extent past its end). The only
//! buffers are one sector, one copy buffer and the names being compared.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The logical sector (and the only block size taken).
pub const SECTOR: u64 = 2048;
/// The most volume descriptors read looking for the primary one.
pub const MAX_DESCRIPTORS: u64 = 64;
/// The most components of a path.
pub const MAX_DEPTH: usize = 64;
/// The largest directory read (Ubuntu's largest, `pool/`'s, is a few KB).
pub const MAX_DIR_BYTES: u64 = 16 << 20;
/// The longest Rock Ridge name assembled.
pub const MAX_NAME_BYTES: usize = 1024;
/// The most Rock Ridge continuation areas followed in one directory lookup.
pub const MAX_CONTINUATIONS: usize = 4096;

const DIRECTORY: u8 = 0x02;
const MULTI_EXTENT: u8 = 0x80;

/// Why an image, or a path in it, was refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("reading the image: {0}")]
    Io(#[source] io::Error),
    #[error("not an ISO 9660 image: {0}")]
    NotIso(&'static str),
    #[error("volume descriptor at sector {sector}: {what}")]
    Descriptor { sector: u64, what: &'static str },
    #[error("directory {dir:?}, record at byte {offset}: {what}")]
    Record {
        dir: String,
        offset: u64,
        what: String,
    },
    #[error("{dir:?} is a directory of {size} bytes, more than the {max} read")]
    DirectoryTooLarge { dir: String, size: u64, max: u64 },
    #[error("{path:?}: {what} lies past the end of the image (is it truncated?)")]
    OutOfImage { path: String, what: &'static str },
    #[error(
        "invalid path {0:?} (relative to the image's root, no `..`, at most {MAX_DEPTH} parts)"
    )]
    InvalidPath(String),
    #[error("{0} is not in the image")]
    NotFound(String),
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error("{0} is a directory")]
    IsADirectory(String),
    #[error("{0} is a multi-extent file (over 4 GiB), which this reader does not take")]
    MultiExtent(String),
    #[error("{0} is an interleaved file, which this reader does not take")]
    Interleaved(String),
    #[error("{path} is a symlink to {target}")]
    Symlink { path: String, target: String },
    #[error("{path} is {size} bytes, more than the {max_bytes} allowed")]
    TooLarge {
        path: String,
        size: u64,
        max_bytes: u64,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// An opened image.
#[derive(Debug)]
pub struct Iso {
    file: File,
    /// The image file's length in bytes.
    len: u64,
    volume_id: String,
    root: Extent,
    /// Rock Ridge's SUSP skip (`SP`'s LEN_SKP), where the image has Rock Ridge.
    rock_ridge: Option<usize>,
}

/// Where a directory or file's data is.
#[derive(Debug, Clone, Copy)]
struct Extent {
    /// In sectors (the record's extent plus its extended attribute length).
    start: u64,
    size: u64,
}

/// A directory record, as far as a lookup needs it.
#[derive(Debug)]
struct Found {
    extent: Extent,
    flags: u8,
    interleaved: bool,
    symlink: Option<String>,
    /// A Rock Ridge `CL`: the relocated directory's sector.
    child_link: Option<u64>,
}

impl Iso {
    /// Reads the primary volume descriptor and the root directory.
    pub fn open(file: File) -> Result<Iso, FormatError> {
        Iso::open_with(file, true)
    }

    /// `rock_ridge: false` reads ISO 9660 names only (for tests of that path).
    fn open_with(file: File, rock_ridge: bool) -> Result<Iso, FormatError> {
        let len = file.metadata().map_err(FormatError::Io)?.len();
        let mut iso = Iso {
            file,
            len,
            volume_id: String::new(),
            root: Extent { start: 0, size: 0 },
            rock_ridge: None,
        };
        let mut sector = [0u8; SECTOR as usize];
        let mut pvd = None;
        for index in 16..16 + MAX_DESCRIPTORS {
            if (index + 1) * SECTOR > len {
                return Err(FormatError::NotIso(
                    "the image ends before a primary volume descriptor",
                ));
            }
            iso.read_sector(index, &mut sector)?;
            if &sector[1..6] != b"CD001" {
                return Err(if index == 16 {
                    FormatError::NotIso("no CD001 at sector 16")
                } else {
                    FormatError::Descriptor {
                        sector: index,
                        what: "no CD001 identifier",
                    }
                });
            }
            match sector[0] {
                1 => {
                    pvd = Some(index);
                    break;
                }
                255 => break,
                _ => {}
            }
        }
        let Some(pvd_sector) = pvd else {
            return Err(FormatError::NotIso("no primary volume descriptor"));
        };
        let bad = |what| FormatError::Descriptor {
            sector: pvd_sector,
            what,
        };
        if u16::from_le_bytes([sector[128], sector[129]]) as u64 != SECTOR {
            return Err(bad("the logical block size is not 2048"));
        }
        iso.volume_id = String::from_utf8_lossy(&sector[40..72])
            .trim_end()
            .to_string();
        let root = &sector[156..190];
        if root[0] != 34 || root[25] & DIRECTORY == 0 {
            return Err(bad("the root directory record is malformed"));
        }
        iso.root = Extent {
            start: u64::from(le32(&root[2..6])) + u64::from(root[1]),
            size: u64::from(le32(&root[10..14])),
        };
        iso.check_extent(iso.root, "/", "the root directory")?;
        if rock_ridge {
            iso.rock_ridge = iso.detect_rock_ridge()?;
        }
        Ok(iso)
    }

    /// The volume identifier (e.g. `Ubuntu-Server 24.04.2 LTS amd64`).
    pub fn volume_id(&self) -> &str {
        &self.volume_id
    }

    /// Copies the file at `path` (e.g. `casper/vmlinuz`; a leading `/` or `./` is
    /// ignored) into `out`; the bytes written. A file over `max_bytes` is refused
    /// before any of it is written.
    pub fn extract(
        &mut self,
        path: &str,
        mut out: impl Write,
        max_bytes: u64,
    ) -> Result<u64, FormatError> {
        let found = self.lookup(path)?;
        if found.flags & DIRECTORY != 0 || found.child_link.is_some() {
            return Err(FormatError::IsADirectory(path.to_string()));
        }
        if let Some(target) = found.symlink {
            return Err(FormatError::Symlink {
                path: path.to_string(),
                target,
            });
        }
        if found.flags & MULTI_EXTENT != 0 {
            return Err(FormatError::MultiExtent(path.to_string()));
        }
        if found.interleaved {
            return Err(FormatError::Interleaved(path.to_string()));
        }
        let extent = found.extent;
        if extent.size > max_bytes {
            return Err(FormatError::TooLarge {
                path: path.to_string(),
                size: extent.size,
                max_bytes,
            });
        }
        self.check_extent(extent, path, "the file's data")?;
        self.file
            .seek(SeekFrom::Start(extent.start * SECTOR))
            .map_err(FormatError::Io)?;
        let mut buf = vec![0u8; 64 << 10];
        let mut left = extent.size;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.file
                .read_exact(&mut buf[..n])
                .map_err(FormatError::Io)?;
            out.write_all(&buf[..n])
                .map_err(|source| FormatError::Write {
                    path: path.to_string(),
                    source,
                })?;
            left -= n as u64;
        }
        out.flush().map_err(|source| FormatError::Write {
            path: path.to_string(),
            source,
        })?;
        Ok(extent.size)
    }

    /// The record at `path`, walked from the root.
    fn lookup(&mut self, path: &str) -> Result<Found, FormatError> {
        let invalid = || FormatError::InvalidPath(path.to_string());
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.is_empty() || parts.len() > MAX_DEPTH || parts.contains(&"..") {
            return Err(invalid());
        }
        let mut dir = self.root;
        let mut walked = String::new();
        for (index, part) in parts.iter().enumerate() {
            let dir_name = if walked.is_empty() { "/" } else { &walked };
            let found = self
                .find_in(dir, dir_name, part)?
                .ok_or_else(|| FormatError::NotFound(path.to_string()))?;
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(part);
            if index + 1 == parts.len() {
                return Ok(found);
            }
            if let Some(sector) = found.child_link {
                dir = self.relocated(sector, &walked)?;
            } else if found.flags & DIRECTORY != 0 && found.symlink.is_none() {
                dir = found.extent;
            } else {
                return Err(FormatError::NotADirectory(walked));
            }
        }
        Err(invalid())
    }

    /// A relocated directory's extent, from its own `.` record.
    fn relocated(&mut self, sector: u64, dir: &str) -> Result<Extent, FormatError> {
        let mut buf = [0u8; SECTOR as usize];
        self.check_extent(
            Extent {
                start: sector,
                size: SECTOR,
            },
            dir,
            "a relocated directory",
        )?;
        self.read_sector(sector, &mut buf)?;
        let len = usize::from(buf[0]);
        if len < 34 || buf[25] & DIRECTORY == 0 {
            return Err(FormatError::Record {
                dir: dir.to_string(),
                offset: sector * SECTOR,
                what: "a relocated directory without its `.` record".into(),
            });
        }
        Ok(Extent {
            start: u64::from(le32(&buf[2..6])) + u64::from(buf[1]),
            size: u64::from(le32(&buf[10..14])),
        })
    }

    /// The record named `name` in the directory at `dir`.
    fn find_in(
        &mut self,
        dir: Extent,
        dir_name: &str,
        name: &str,
    ) -> Result<Option<Found>, FormatError> {
        if dir.size > MAX_DIR_BYTES {
            return Err(FormatError::DirectoryTooLarge {
                dir: dir_name.to_string(),
                size: dir.size,
                max: MAX_DIR_BYTES,
            });
        }
        self.check_extent(dir, dir_name, "a directory")?;
        let mut sector = [0u8; SECTOR as usize];
        let mut continuations = 0usize;
        for index in 0..dir.size.div_ceil(SECTOR) {
            self.read_sector(dir.start + index, &mut sector)?;
            let in_sector = (dir.size - index * SECTOR).min(SECTOR) as usize;
            let mut pos = 0usize;
            while pos < in_sector {
                let len = usize::from(sector[pos]);
                if len == 0 {
                    break; // the rest of the sector is padding
                }
                let offset = (dir.start + index) * SECTOR + pos as u64;
                let bad = |what: &str| FormatError::Record {
                    dir: dir_name.to_string(),
                    offset,
                    what: what.to_string(),
                };
                if len < 34 || pos + len > SECTOR as usize {
                    return Err(bad("a record of a bad length"));
                }
                let record = &sector[pos..pos + len];
                pos += len;
                let id_len = usize::from(record[32]);
                if id_len == 0 || 33 + id_len > len {
                    return Err(bad("a name longer than its record"));
                }
                let id = &record[33..33 + id_len];
                if id == [0] || id == [1] {
                    continue; // `.` and `..`
                }
                let system_use_start = 33 + id_len + usize::from(id_len % 2 == 0);
                let mut susp = Susp::default();
                if let Some(skip) = self.rock_ridge {
                    let area = record.get(system_use_start + skip..).unwrap_or(&[]);
                    self.system_use(area, &mut susp, &mut continuations)
                        .map_err(|what| bad(&what))?;
                }
                if susp.relocated {
                    continue;
                }
                let matches = match &susp.name {
                    Some(rr) => rr.as_slice() == name.as_bytes(),
                    None => iso_name_matches(id, name),
                };
                if !matches {
                    continue;
                }
                let symlink = susp
                    .symlink
                    .map(|target| String::from_utf8_lossy(&target).into_owned());
                return Ok(Some(Found {
                    extent: Extent {
                        start: u64::from(le32(&record[2..6])) + u64::from(record[1]),
                        size: u64::from(le32(&record[10..14])),
                    },
                    flags: record[25],
                    interleaved: record[26] != 0 || record[27] != 0,
                    symlink,
                    child_link: susp.child_link,
                }));
            }
        }
        Ok(None)
    }

    /// Reads the SUSP entries of one system use area and its continuation areas.
    fn system_use(
        &mut self,
        area: &[u8],
        susp: &mut Susp,
        continuations: &mut usize,
    ) -> Result<(), String> {
        let mut next = susp.parse(area)?;
        let mut buf = [0u8; SECTOR as usize];
        while let Some((sector, offset, length)) = next {
            *continuations += 1;
            if *continuations > MAX_CONTINUATIONS {
                return Err(format!(
                    "more than {MAX_CONTINUATIONS} Rock Ridge continuation areas"
                ));
            }
            let inside = offset + length <= SECTOR
                && sector
                    .checked_add(1)
                    .and_then(|end| end.checked_mul(SECTOR))
                    .is_some_and(|end| end <= self.len);
            if !inside {
                return Err("a Rock Ridge continuation area outside the image".into());
            }
            self.read_sector(sector, &mut buf)
                .map_err(|e| e.to_string())?;
            next = susp.parse(&buf[offset as usize..(offset + length) as usize])?;
        }
        Ok(())
    }

    /// Whether the root's `.` record starts its system use area with `SP`, and its
    /// skip length.
    fn detect_rock_ridge(&mut self) -> Result<Option<usize>, FormatError> {
        if self.root.size == 0 {
            return Ok(None);
        }
        let mut sector = [0u8; SECTOR as usize];
        self.read_sector(self.root.start, &mut sector)?;
        let len = usize::from(sector[0]);
        let id_len = usize::from(sector[32]);
        if len < 34 || 33 + id_len > len {
            return Ok(None);
        }
        let start = 33 + id_len + usize::from(id_len % 2 == 0);
        let area = &sector[start.min(len)..len];
        let sp = area.len() >= 7
            && &area[..2] == b"SP"
            && area[2] >= 7
            && area[4] == 0xbe
            && area[5] == 0xef;
        Ok(sp.then(|| usize::from(area[6])))
    }

    fn read_sector(
        &mut self,
        index: u64,
        buf: &mut [u8; SECTOR as usize],
    ) -> Result<(), FormatError> {
        self.file
            .seek(SeekFrom::Start(index * SECTOR))
            .map_err(FormatError::Io)?;
        self.file.read_exact(buf).map_err(FormatError::Io)
    }

    fn check_extent(
        &self,
        extent: Extent,
        path: &str,
        what: &'static str,
    ) -> Result<(), FormatError> {
        let end = extent
            .start
            .checked_mul(SECTOR)
            .and_then(|start| start.checked_add(extent.size));
        match end {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(FormatError::OutOfImage {
                path: path.to_string(),
                what,
            }),
        }
    }
}

/// What a record's Rock Ridge entries say.
#[derive(Default)]
struct Susp {
    name: Option<Vec<u8>>,
    name_done: bool,
    symlink: Option<Vec<u8>>,
    symlink_done: bool,
    /// The last `SL` component continues in the next one.
    component_open: bool,
    relocated: bool,
    child_link: Option<u64>,
}

impl Susp {
    /// Reads the entries of one area; a `CE` continuation (sector, offset, length).
    fn parse(&mut self, mut area: &[u8]) -> Result<Option<(u64, u64, u64)>, String> {
        let mut continuation = None;
        while area.len() >= 4 {
            let (signature, len) = (&area[..2], usize::from(area[2]));
            if len < 4 || len > area.len() {
                return Err("a Rock Ridge entry of a bad length".into());
            }
            let data = &area[4..len];
            area = &area[len..];
            match signature {
                b"ST" => break,
                b"CE" if data.len() >= 24 => {
                    continuation = Some((
                        u64::from(le32(&data[0..4])),
                        u64::from(le32(&data[8..12])),
                        u64::from(le32(&data[16..20])),
                    ));
                }
                b"NM" if !data.is_empty() && !self.name_done => {
                    let flags = data[0];
                    let name = self.name.get_or_insert_with(Vec::new);
                    match flags & 0x06 {
                        0x02 => name.push(b'.'),
                        0x04 => name.extend_from_slice(b".."),
                        _ => name.extend_from_slice(&data[1..]),
                    }
                    if name.len() > MAX_NAME_BYTES {
                        return Err(format!("a Rock Ridge name over {MAX_NAME_BYTES} bytes"));
                    }
                    self.name_done = flags & 0x01 == 0;
                }
                b"SL" if !data.is_empty() && !self.symlink_done => {
                    self.symlink_done = data[0] & 0x01 == 0;
                    self.symlink_components(&data[1..])?;
                }
                b"RE" => self.relocated = true,
                b"CL" if data.len() >= 4 => self.child_link = Some(u64::from(le32(&data[0..4]))),
                _ => {}
            }
        }
        Ok(continuation)
    }

    fn symlink_components(&mut self, mut data: &[u8]) -> Result<(), String> {
        let target = self.symlink.get_or_insert_with(Vec::new);
        while data.len() >= 2 {
            let (flags, len) = (data[0], usize::from(data[1]));
            let content = data
                .get(2..2 + len)
                .ok_or("a Rock Ridge SL component too long")?;
            data = &data[2 + len..];
            let continues_previous = self.component_open;
            if !continues_previous && !target.is_empty() && target.last() != Some(&b'/') {
                target.push(b'/');
            }
            match flags & 0x0e {
                0x02 => target.push(b'.'),
                0x04 => target.extend_from_slice(b".."),
                0x08 => {
                    target.clear();
                    target.push(b'/');
                }
                _ => target.extend_from_slice(content),
            }
            self.component_open = flags & 0x01 != 0;
            if target.len() > 4 * MAX_NAME_BYTES {
                return Err("a Rock Ridge symlink target too long".into());
            }
        }
        Ok(())
    }
}

/// An ISO 9660 identifier (`VMLINUZ.;1`) against a path component (`vmlinuz`).
fn iso_name_matches(id: &[u8], name: &str) -> bool {
    let id = match id.iter().position(|b| *b == b';') {
        Some(at) => &id[..at],
        None => id,
    };
    let id = id.strip_suffix(b".").unwrap_or(id);
    id.eq_ignore_ascii_case(name.as_bytes())
}

fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const LONG: &str = "casper/Long-Mixed-Case-Rock-Ridge-Name-That-ISO-Level-1-Cannot-Hold.efi";

    fn image() -> Vec<u8> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/catalog/iso/small.iso.gz"
        );
        let gz = std::fs::read(path).expect("fixture");
        let mut iso = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut iso)
            .expect("gunzip");
        iso
    }

    fn file_of(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(bytes).expect("write");
        file
    }

    fn read(iso: &mut Iso, path: &str) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::new();
        let n = iso.extract(path, &mut out, 1 << 20)?;
        assert_eq!(n, out.len() as u64);
        Ok(out)
    }

    fn initrd() -> Vec<u8> {
        let mut text = String::new();
        for n in 1.. {
            text.push_str(&format!("{n}\n"));
            if text.len() >= 5000 {
                break;
            }
        }
        text.truncate(5000);
        text.into_bytes()
    }

    #[test]
    fn extracts_casper_files_by_rock_ridge_name() {
        let mut iso = Iso::open(file_of(&image())).expect("opens");
        assert_eq!(iso.volume_id(), "RACKBOOT_FIXTURE");
        assert_eq!(
            read(&mut iso, "casper/vmlinuz").expect("vmlinuz"),
            b"not really a kernel\n"
        );
        assert_eq!(read(&mut iso, "/casper/initrd").expect("initrd"), initrd());
        assert_eq!(read(&mut iso, LONG).expect("long name"), b"a long name\n");
        assert_eq!(
            read(&mut iso, "./boot//grub/grub.cfg").expect("grub.cfg"),
            b"set timeout=1\n"
        );
        // Rock Ridge names are exact.
        assert!(matches!(
            read(&mut iso, "casper/VMLINUZ"),
            Err(FormatError::NotFound(_))
        ));
        assert!(matches!(
            read(&mut iso, "CASPER/vmlinuz"),
            Err(FormatError::NotFound(_))
        ));
    }

    #[test]
    fn without_rock_ridge_iso_names_match_case_insensitively() {
        let mut iso = Iso::open_with(file_of(&image()), false).expect("opens");
        assert_eq!(
            read(&mut iso, "CASPER/VMLINUZ").expect("vmlinuz"),
            b"not really a kernel\n"
        );
        assert_eq!(read(&mut iso, "casper/initrd").expect("initrd"), initrd());
        assert_eq!(
            read(&mut iso, "casper/long_mix.efi").expect("8.3 name"),
            b"a long name\n"
        );
        assert!(matches!(
            read(&mut iso, LONG),
            Err(FormatError::NotFound(_))
        ));
        assert!(iso_name_matches(b"VMLINUZ.;1", "vmlinuz"));
        assert!(iso_name_matches(b"GRUB.CFG;1", "grub.cfg"));
        assert!(iso_name_matches(b"CASPER", "Casper"));
        assert!(!iso_name_matches(b"VMLINUZ.;1", "vmlinuz."));
        assert!(!iso_name_matches(b"VMLINUZ_.;1", "vmlinuz"));
    }

    #[test]
    fn missing_and_wrong_kinds_of_path() {
        let mut iso = Iso::open(file_of(&image())).expect("opens");
        let err = read(&mut iso, "casper/filesystem.squashfs").unwrap_err();
        assert!(matches!(&err, FormatError::NotFound(p) if p == "casper/filesystem.squashfs"));
        assert_eq!(
            err.to_string(),
            "casper/filesystem.squashfs is not in the image"
        );
        assert!(matches!(
            read(&mut iso, "nope/vmlinuz"),
            Err(FormatError::NotFound(_))
        ));
        assert!(matches!(
            read(&mut iso, "casper/vmlinuz/x"),
            Err(FormatError::NotADirectory(p)) if p == "casper/vmlinuz"
        ));
        assert!(matches!(
            read(&mut iso, "casper"),
            Err(FormatError::IsADirectory(_))
        ));
        for bad in ["", "/", "casper/../casper/vmlinuz", "./."] {
            assert!(
                matches!(read(&mut iso, bad), Err(FormatError::InvalidPath(_))),
                "{bad:?}"
            );
        }
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert!(matches!(
            read(&mut iso, &deep),
            Err(FormatError::InvalidPath(_))
        ));
    }

    #[test]
    fn symlinks_are_reported_with_their_target() {
        let mut iso = Iso::open(file_of(&image())).expect("opens");
        let err = read(&mut iso, "casper/vmlinuz-link").unwrap_err();
        assert!(
            matches!(&err, FormatError::Symlink { path, target } if path == "casper/vmlinuz-link" && target == "vmlinuz"),
            "{err}"
        );
    }

    #[test]
    fn max_bytes_is_checked_before_writing() {
        let mut iso = Iso::open(file_of(&image())).expect("opens");
        let mut out = Vec::new();
        let err = iso.extract("casper/initrd", &mut out, 4999).unwrap_err();
        assert!(
            matches!(
                err,
                FormatError::TooLarge {
                    size: 5000,
                    max_bytes: 4999,
                    ..
                }
            ),
            "{err}"
        );
        assert!(out.is_empty());
        assert_eq!(
            iso.extract("casper/initrd", &mut out, 5000).expect("fits"),
            5000
        );
    }

    #[test]
    fn truncated_images_are_errors() {
        let image = image();
        // Before the volume descriptors: not an image at all.
        for len in [0, 100, 16 * 2048, 17 * 2048 - 1] {
            assert!(
                matches!(
                    Iso::open(file_of(&image[..len])),
                    Err(FormatError::NotIso(_))
                ),
                "{len}"
            );
        }
        // After the directories, before the files' data: the extent is past the end.
        let mut iso = Iso::open(file_of(&image[..30 * 2048])).expect("directories are there");
        let err = read(&mut iso, "casper/initrd").unwrap_err();
        assert!(matches!(err, FormatError::OutOfImage { .. }), "{err}");
        assert!(err.to_string().contains("truncated"), "{err}");
        // Every length: an error or the file, never a panic.
        for len in (0..image.len()).step_by(1009) {
            if let Ok(mut iso) = Iso::open(file_of(&image[..len]))
                && let Ok(data) = read(&mut iso, "casper/initrd")
            {
                assert_eq!(data, initrd());
            }
        }
    }

    #[test]
    fn corrupt_images_are_errors_not_panics() {
        let image = image();
        let file = file_of(&image);
        // Every byte of the primary descriptor's fields and of the root's and
        // casper/'s directory sectors and the root's continuation area, set one at a
        // time to a few values.
        let pvd = 16 * 2048..16 * 2048 + 256;
        let dirs = [19u64, 20, 23]
            .into_iter()
            .flat_map(|s| s * 2048..(s + 1) * 2048);
        for at in pvd.chain(dirs) {
            let original = image[at as usize];
            for value in [0x00, 0xff, original ^ 0x01] {
                file.write_all_at(&[value], at).expect("write");
                if let Ok(mut iso) = Iso::open(file.try_clone().expect("clone")) {
                    for path in ["casper/initrd", LONG, "casper/vmlinuz-link"] {
                        let _ = iso.extract(path, io::sink(), 1 << 20);
                    }
                }
            }
            file.write_all_at(&[original], at).expect("restore");
        }
    }

    #[test]
    fn not_an_image() {
        let zeros = vec![0u8; 40 * 2048];
        assert!(matches!(
            Iso::open(file_of(&zeros)),
            Err(FormatError::NotIso(_))
        ));
    }
}
