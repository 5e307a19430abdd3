//! Unified kernel images (UKIs): systemd's EFI stub (`linuxx64.efi.stub`, Debian's
//! `systemd-boot-efi`) with the kernel, the initrd, the command line and an os-release
//! added as PE sections, so UEFI HTTP boot firmware, which runs one file by URL, boots
//! a machine's kernel with its command line.
//!
//! [`build`] is the pure part: it parses the stub's PE32+ headers (bounds-checked: the
//! stub is a file from disk), adds section headers in the stub's spare header room and
//! the sections' data after its own, as `objcopy --add-section` with
//! `--change-section-vma` does (the tests compare the two), so production needs no
//! binutils. [`UkiCache`] builds UKIs into `data_dir/cache/uki`, once per distinct
//! input, within a byte budget.
//!
//! rackboot's UKIs are unsigned: adding sections invalidates an Authenticode signature,
//! so the stub's certificate table is dropped. They are for machines with Secure Boot
//! off. (There the stub would also take a command line from its load options, but HTTP
//! boot passes none, so `.cmdline` is what the kernel gets.)

use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// What is wrong with a stub, an input or the cache directory.
#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error("not a PE file: {0}")]
    NotPe(&'static str),
    #[error("truncated PE file: {what} at byte {offset} runs past its end ({file_len} bytes)")]
    Truncated {
        what: String,
        offset: usize,
        file_len: usize,
    },
    #[error("a PE32 (32-bit) stub: only PE32+ stubs (x86-64, aarch64) are supported")]
    Pe32,
    #[error("unknown PE optional header magic {0:#06x} (PE32+ is 0x020b)")]
    UnknownMagic(u16),
    #[error("malformed PE header: {0}")]
    Malformed(String),
    #[error(
        "no room for {needed} more section headers: the section table ends at \
         {table_end:#x}, the headers must end by {limit:#x} (SizeOfHeaders or the first \
         section's data)"
    )]
    NoRoom {
        needed: usize,
        table_end: usize,
        limit: usize,
    },
    #[error("the stub already has a {0} section (is it a UKI already?)")]
    SectionExists(&'static str),
    #[error("the kernel is empty")]
    EmptyKernel,
    #[error("the UKI would not fit the 4 GiB a PE image can address")]
    TooLarge,
    #[error("sha256 {0:?} is not 64 hex digits")]
    BadDigest(String),
    #[error("{path}: sha256 {actual}, expected {expected}: the file changed?")]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: shorter than when the UKI was planned: the file changed?")]
    ShortRead { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> UkiError + '_ {
    move |source| UkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What goes into a UKI besides the stub.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// os-release text (`ID=...`), for boot menus; omitted when empty.
    pub osrel: &'a [u8],
    /// The kernel command line, without a trailing newline; omitted when empty.
    pub cmdline: &'a [u8],
    /// The kernel (an EFI-stub bzImage or arm64 Image).
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
}

/// A section of a PE image, as its header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// 8 bytes, NUL padded.
    pub name: [u8; 8],
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub raw_size: u32,
    pub raw_offset: u32,
    pub characteristics: u32,
}

impl Section {
    /// Where it ends in memory: a loader maps VirtualSize bytes (the raw data beyond is
    /// file padding), or SizeOfRawData where an old linker left VirtualSize zero.
    fn memory_end(&self) -> u64 {
        let size = match self.virtual_size {
            0 => self.raw_size,
            size => size,
        };
        u64::from(self.virtual_address) + u64::from(size)
    }

    /// The name without its NUL padding.
    pub fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(8);
        String::from_utf8_lossy(self.name.get(..end).unwrap_or_default()).into_owned()
    }
}

/// Builds a UKI in memory: `stub` with `.osrel`, `.cmdline`, `.linux` and `.initrd`
/// appended, in that order.
///
/// The new sections start after the stub's (at 4 KiB or SectionAlignment, whichever
/// is larger, in memory; at FileAlignment in the file). Whatever the stub has after
/// its last section's data (a COFF symbol table, a certificate table) is left out: the
/// firmware maps sections only, and a signature would no longer match (see the module
/// doc: rackboot's UKIs are unsigned). The CheckSum is recomputed, although UEFI
/// ignores it, so tools that check it (`pefile`, `sbverify`) see a consistent file.
pub fn build(stub: &[u8], parts: &Parts<'_>) -> Result<Vec<u8>, UkiError> {
    let sources = added_sections(
        Source::Bytes(parts.osrel),
        Source::Bytes(parts.cmdline),
        Source::Bytes(parts.kernel),
        parts.initrd.map(Source::Bytes),
    );
    let plan = plan(stub, &sources)?;
    let total = usize::try_from(plan.total_len).map_err(|_| UkiError::TooLarge)?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&plan.head);
    for ((_, source), placed) in sources.iter().zip(&plan.placed) {
        if let Source::Bytes(bytes) = source {
            out.extend_from_slice(bytes);
        }
        out.resize(out.len() + placed.padding(), 0);
    }
    let mut checksum = PeChecksum::default();
    checksum.update(&out);
    put(&mut out, plan.checksum_at, &checksum.finish().to_le_bytes())?;
    Ok(out)
}

/// The section table of a PE32+ image, checked as [`build`] checks a stub.
pub fn sections(image: &[u8]) -> Result<Vec<Section>, UkiError> {
    Ok(parse(image)?.sections)
}

/// The data of a section to add: in memory, or a file with its length and sha256.
enum Source<'a> {
    Bytes(&'a [u8]),
    File {
        path: &'a Path,
        len: u64,
        sha256: [u8; 32],
    },
}

impl Source<'_> {
    fn len(&self) -> u64 {
        match self {
            Source::Bytes(bytes) => bytes.len() as u64,
            Source::File { len, .. } => *len,
        }
    }
}

/// The sections a UKI adds, in the order of the team's objcopy recipe; an empty
/// os-release or command line is left out rather than added as an empty section.
fn added_sections<'a>(
    osrel: Source<'a>,
    cmdline: Source<'a>,
    kernel: Source<'a>,
    initrd: Option<Source<'a>>,
) -> Vec<(&'static str, Source<'a>)> {
    let mut sections = Vec::with_capacity(4);
    for (name, source) in [(".osrel", osrel), (".cmdline", cmdline)] {
        if source.len() > 0 {
            sections.push((name, source));
        }
    }
    sections.push((".linux", kernel));
    if let Some(initrd) = initrd {
        sections.push((".initrd", initrd));
    }
    sections
}

// PE/COFF layout (Microsoft's "PE Format"): the offsets used here.
const DOS_LFANEW: usize = 0x3c;
const COFF_LEN: usize = 20;
const COFF_NUMBER_OF_SECTIONS: usize = 2;
const COFF_POINTER_TO_SYMBOL_TABLE: usize = 8;
const COFF_NUMBER_OF_SYMBOLS: usize = 12;
const COFF_SIZE_OF_OPTIONAL_HEADER: usize = 16;
const PE32_MAGIC: u16 = 0x10b;
const PE32_PLUS_MAGIC: u16 = 0x20b;
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_CHECKSUM: usize = 64;
const OPT_NUMBER_OF_RVA_AND_SIZES: usize = 108;
/// The fixed part of a PE32+ optional header; the data directories follow.
const OPT_DATA_DIRECTORIES: usize = 112;
const DATA_DIRECTORY_LEN: usize = 8;
const CERTIFICATE_TABLE: usize = 4;
const SECTION_HEADER_LEN: usize = 40;
/// IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ: what objcopy (and ukify) mark
/// added data sections with.
const DATA_SECTION: u32 = 0x4000_0040;
/// The recipe places sections at page boundaries, whatever the stub's alignment.
const PAGE: u32 = 0x1000;
/// The PE format's largest FileAlignment; a larger one would only pad the file.
const MAX_FILE_ALIGNMENT: u32 = 0x1_0000;

fn bytes<'a>(data: &'a [u8], offset: usize, len: usize, what: &str) -> Result<&'a [u8], UkiError> {
    offset
        .checked_add(len)
        .and_then(|end| data.get(offset..end))
        .ok_or_else(|| UkiError::Truncated {
            what: what.to_string(),
            offset,
            file_len: data.len(),
        })
}

fn array<const N: usize>(data: &[u8], offset: usize, what: &str) -> Result<[u8; N], UkiError> {
    bytes(data, offset, N, what)?
        .try_into()
        .map_err(|_| UkiError::Malformed(format!("{what}: short read")))
}

fn u16_at(data: &[u8], offset: usize, what: &str) -> Result<u16, UkiError> {
    array(data, offset, what).map(u16::from_le_bytes)
}

fn u32_at(data: &[u8], offset: usize, what: &str) -> Result<u32, UkiError> {
    array(data, offset, what).map(u32::from_le_bytes)
}

/// Writes into a buffer this module made; the offsets were checked against the stub.
fn put(buf: &mut [u8], offset: usize, value: &[u8]) -> Result<(), UkiError> {
    let file_len = buf.len();
    offset
        .checked_add(value.len())
        .and_then(|end| buf.get_mut(offset..end))
        .ok_or_else(|| UkiError::Truncated {
            what: "a header field".into(),
            offset,
            file_len,
        })?
        .copy_from_slice(value);
    Ok(())
}

/// `value` rounded up to `align`, a power of two.
fn align_up(value: u64, align: u32) -> u64 {
    let mask = u64::from(align) - 1;
    (value + mask) & !mask
}

/// The header fields `build` reads and rewrites, as offsets into the file.
#[derive(Debug)]
struct Headers {
    /// The COFF file header (after `PE\0\0`).
    coff: usize,
    /// The optional header.
    opt: usize,
    /// The section table.
    table: usize,
    data_directories: usize,
    section_alignment: u32,
    file_alignment: u32,
    size_of_image: u32,
    size_of_headers: u32,
    size_of_initialized_data: u32,
    sections: Vec<Section>,
}

fn parse(data: &[u8]) -> Result<Headers, UkiError> {
    if data.get(..2) != Some(b"MZ") {
        return Err(UkiError::NotPe("no MZ signature"));
    }
    let pe = usize::try_from(u32_at(data, DOS_LFANEW, "the DOS header")?)
        .map_err(|_| UkiError::NotPe("PE header offset out of range"))?;
    if bytes(data, pe, 4, "the PE signature")? != b"PE\0\0" {
        return Err(UkiError::NotPe(
            "no PE signature where the DOS header points",
        ));
    }
    let coff = pe + 4;
    bytes(data, coff, COFF_LEN, "the COFF header")?;
    let count = usize::from(u16_at(
        data,
        coff + COFF_NUMBER_OF_SECTIONS,
        "the COFF header",
    )?);
    let opt_len = usize::from(u16_at(
        data,
        coff + COFF_SIZE_OF_OPTIONAL_HEADER,
        "the COFF header",
    )?);
    let opt = coff + COFF_LEN;
    if opt_len < 2 {
        return Err(UkiError::NotPe("no optional header (an object file?)"));
    }
    match u16_at(data, opt, "the optional header")? {
        PE32_PLUS_MAGIC => {}
        PE32_MAGIC => return Err(UkiError::Pe32),
        magic => return Err(UkiError::UnknownMagic(magic)),
    }
    if opt_len < OPT_DATA_DIRECTORIES {
        return Err(UkiError::Malformed(format!(
            "a PE32+ optional header of {opt_len} bytes, shorter than its fixed {OPT_DATA_DIRECTORIES}"
        )));
    }
    let optional = bytes(data, opt, opt_len, "the optional header")?;
    let field = |offset| u32_at(optional, offset, "the optional header");
    let data_directories = field(OPT_NUMBER_OF_RVA_AND_SIZES)? as usize;
    if data_directories > 16
        || OPT_DATA_DIRECTORIES + data_directories * DATA_DIRECTORY_LEN > opt_len
    {
        return Err(UkiError::Malformed(format!(
            "{data_directories} data directories do not fit an optional header of {opt_len} bytes"
        )));
    }
    let section_alignment = field(OPT_SECTION_ALIGNMENT)?;
    let file_alignment = field(OPT_FILE_ALIGNMENT)?;
    if !section_alignment.is_power_of_two()
        || !file_alignment.is_power_of_two()
        || file_alignment > MAX_FILE_ALIGNMENT
    {
        return Err(UkiError::Malformed(format!(
            "SectionAlignment {section_alignment:#x} and FileAlignment {file_alignment:#x} \
             must be powers of two, FileAlignment at most {MAX_FILE_ALIGNMENT:#x}"
        )));
    }
    let size_of_headers = field(OPT_SIZE_OF_HEADERS)?;
    let table = opt + opt_len;
    let table_end = table + count * SECTION_HEADER_LEN;
    if table_end > size_of_headers as usize {
        return Err(UkiError::Malformed(format!(
            "the section table ends at byte {table_end}, past SizeOfHeaders {size_of_headers}"
        )));
    }
    bytes(
        data,
        0,
        size_of_headers as usize,
        "the headers (SizeOfHeaders)",
    )?;
    let mut sections = Vec::with_capacity(count);
    for index in 0..count {
        let at = table + index * SECTION_HEADER_LEN;
        let header = bytes(data, at, SECTION_HEADER_LEN, "the section table")?;
        let word = |offset| u32_at(header, offset, "a section header");
        let section = Section {
            name: array(header, 0, "a section header")?,
            virtual_size: word(8)?,
            virtual_address: word(12)?,
            raw_size: word(16)?,
            raw_offset: word(20)?,
            characteristics: word(36)?,
        };
        if section.raw_size > 0 {
            bytes(
                data,
                section.raw_offset as usize,
                section.raw_size as usize,
                &format!("the data of section {:?}", section.name()),
            )?;
        }
        if section
            .virtual_address
            .checked_add(section.virtual_size.max(section.raw_size))
            .is_none()
        {
            return Err(UkiError::Malformed(format!(
                "section {:?} ends past 4 GiB",
                section.name()
            )));
        }
        sections.push(section);
    }
    Ok(Headers {
        coff,
        opt,
        table,
        data_directories,
        section_alignment,
        file_alignment,
        size_of_image: field(OPT_SIZE_OF_IMAGE)?,
        size_of_headers,
        size_of_initialized_data: field(OPT_SIZE_OF_INITIALIZED_DATA)?,
        sections,
    })
}

/// Where the added sections go: the stub's bytes with their headers patched (the
/// CheckSum left zero) and padded to the first added section's data, which follows,
/// each section padded to its SizeOfRawData.
struct Plan {
    head: Vec<u8>,
    placed: Vec<Placed>,
    checksum_at: usize,
    total_len: u64,
}

struct Placed {
    len: u32,
    raw_size: u32,
}

impl Placed {
    fn padding(&self) -> usize {
        (self.raw_size - self.len) as usize
    }
}

fn plan(stub: &[u8], added: &[(&'static str, Source<'_>)]) -> Result<Plan, UkiError> {
    let pe = parse(stub)?;
    if added
        .iter()
        .any(|(name, source)| *name == ".linux" && source.len() == 0)
    {
        return Err(UkiError::EmptyKernel);
    }
    for (name, _) in added {
        if pe.sections.iter().any(|s| s.name() == *name) {
            return Err(UkiError::SectionExists(name));
        }
    }
    // The new headers overwrite zeros between the table and the first section's data.
    let table_end = pe.table + pe.sections.len() * SECTION_HEADER_LEN;
    let new_table_end = table_end + added.len() * SECTION_HEADER_LEN;
    let limit = pe
        .sections
        .iter()
        .filter(|s| s.raw_size > 0)
        .map(|s| s.raw_offset as usize)
        .fold(pe.size_of_headers as usize, usize::min);
    if new_table_end > limit {
        return Err(UkiError::NoRoom {
            needed: added.len(),
            table_end,
            limit,
        });
    }
    let spare = bytes(stub, table_end, new_table_end - table_end, "the headers")?;
    if spare.iter().any(|&b| b != 0) {
        return Err(UkiError::Malformed(
            "the header space after the section table is not empty".into(),
        ));
    }
    let count = u16::try_from(pe.sections.len() + added.len())
        .map_err(|_| UkiError::Malformed("too many sections".into()))?;

    // In the file: after the last section's data (the stub's tail is left out).
    let data_end = pe
        .sections
        .iter()
        .filter(|s| s.raw_size > 0)
        .map(|s| u64::from(s.raw_offset) + u64::from(s.raw_size))
        .fold(u64::from(pe.size_of_headers), u64::max);
    let mut file_at = align_up(data_end, pe.file_alignment);
    // In memory: after the image the stub declares and every section's extent.
    let memory_align = pe.section_alignment.max(PAGE);
    let mut memory_at = pe
        .sections
        .iter()
        .map(Section::memory_end)
        .fold(u64::from(pe.size_of_image), u64::max);
    let too_large = |value: u64| u32::try_from(value).map_err(|_| UkiError::TooLarge);

    let mut headers = Vec::with_capacity(added.len() * SECTION_HEADER_LEN);
    let mut placed = Vec::with_capacity(added.len());
    let mut initialized = u64::from(pe.size_of_initialized_data);
    for (name, source) in added {
        let len = too_large(source.len())?;
        let raw_size = too_large(align_up(source.len(), pe.file_alignment))?;
        let address = too_large(align_up(memory_at, memory_align))?;
        let offset = too_large(file_at)?;
        let mut header = [0u8; SECTION_HEADER_LEN];
        put(&mut header, 0, &section_name(name))?;
        put(&mut header, 8, &len.to_le_bytes())?;
        put(&mut header, 12, &address.to_le_bytes())?;
        put(&mut header, 16, &raw_size.to_le_bytes())?;
        put(&mut header, 20, &offset.to_le_bytes())?;
        put(&mut header, 36, &DATA_SECTION.to_le_bytes())?;
        headers.extend_from_slice(&header);
        memory_at = u64::from(address) + u64::from(len);
        file_at = u64::from(offset) + u64::from(raw_size);
        initialized += u64::from(raw_size);
        placed.push(Placed { len, raw_size });
    }
    let size_of_image = too_large(align_up(memory_at, pe.section_alignment))?;
    too_large(file_at)?;

    let first_data =
        usize::try_from(align_up(data_end, pe.file_alignment)).map_err(|_| UkiError::TooLarge)?;
    let kept = bytes(stub, 0, data_end as usize, "the stub's section data")?;
    let mut head = Vec::with_capacity(first_data);
    head.extend_from_slice(kept);
    head.resize(first_data, 0);
    put(&mut head, table_end, &headers)?;
    put(
        &mut head,
        pe.coff + COFF_NUMBER_OF_SECTIONS,
        &count.to_le_bytes(),
    )?;
    // The symbol table lived in the tail that is left out (and is deprecated in images).
    put(&mut head, pe.coff + COFF_POINTER_TO_SYMBOL_TABLE, &[0; 4])?;
    put(&mut head, pe.coff + COFF_NUMBER_OF_SYMBOLS, &[0; 4])?;
    put(
        &mut head,
        pe.opt + OPT_SIZE_OF_INITIALIZED_DATA,
        &too_large(initialized)?.to_le_bytes(),
    )?;
    put(
        &mut head,
        pe.opt + OPT_SIZE_OF_IMAGE,
        &size_of_image.to_le_bytes(),
    )?;
    let checksum_at = pe.opt + OPT_CHECKSUM;
    put(&mut head, checksum_at, &[0; 4])?;
    if pe.data_directories > CERTIFICATE_TABLE {
        let entry = pe.opt + OPT_DATA_DIRECTORIES + CERTIFICATE_TABLE * DATA_DIRECTORY_LEN;
        put(&mut head, entry, &[0; DATA_DIRECTORY_LEN])?;
    }
    Ok(Plan {
        head,
        placed,
        checksum_at,
        total_len: file_at,
    })
}

fn section_name(name: &str) -> [u8; 8] {
    let mut padded = [0u8; 8];
    for (to, from) in padded.iter_mut().zip(name.bytes()) {
        *to = from;
    }
    padded
}

/// The PE image checksum (what `MapFileAndCheckSum` computes): the 16-bit words of the
/// file with the CheckSum field read as zero, added with end-around carry, plus the
/// file length. Fed in pieces, so a streamed UKI needs no second read.
#[derive(Default)]
struct PeChecksum {
    sum: u64,
    len: u64,
    odd: Option<u8>,
}

impl PeChecksum {
    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if let Some(low) = self.odd.take() {
            match data.split_first() {
                Some((&high, rest)) => {
                    self.sum += u64::from(u16::from_le_bytes([low, high]));
                    data = rest;
                }
                None => {
                    self.odd = Some(low);
                    return;
                }
            }
        }
        let mut words = data.chunks_exact(2);
        for word in &mut words {
            if let [low, high] = *word {
                self.sum += u64::from(u16::from_le_bytes([low, high]));
            }
        }
        self.odd = words.remainder().first().copied();
    }

    fn finish(self) -> u32 {
        // End-around carry is associative: folding once at the end equals folding
        // after each word, and 50 MB of words cannot overflow a u64.
        let mut sum = self.sum + self.odd.map_or(0, u64::from);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        (sum + self.len) as u32
    }
}

/// A kernel or initrd on disk, with its sha256 (lowercase hex) when the caller knows
/// it already, as rackboot does for its images: then a cache hit reads nothing of it.
#[derive(Debug, Clone, Copy)]
pub struct ImageFile<'a> {
    pub path: &'a Path,
    pub sha256: Option<&'a str>,
}

/// What [`UkiCache::get_or_build`] builds a UKI from (see [`Parts`]).
#[derive(Debug, Clone, Copy)]
pub struct UkiInputs<'a> {
    pub osrel: &'a [u8],
    pub cmdline: &'a [u8],
    pub kernel: ImageFile<'a>,
    pub initrd: Option<ImageFile<'a>>,
}

/// Built UKIs in a directory, one file per distinct input (`<sha256 of the inputs>.efi`),
/// least recently used ones removed beyond a byte budget.
///
/// Blocking (file I/O, hashing and copying tens of megabytes on a miss): async callers
/// run it in `tokio::task::spawn_blocking`. One process owns the directory.
#[derive(Debug)]
pub struct UkiCache {
    dir: PathBuf,
    budget: u64,
    /// Builds are one at a time: when a rack boots at once, the machines that share an
    /// image wait for the one build instead of each copying 50 MB.
    build_lock: Mutex<()>,
    builds: AtomicU64,
    temp_counter: AtomicU64,
}

/// Temporary files are named so no entry name (64 hex digits, `.efi`) can match.
const TEMP_PREFIX: &str = ".tmp-";
/// A temporary file untouched this long was left by a crash.
const STALE_TEMP: Duration = Duration::from_secs(600);
const COPY_BUFFER: usize = 1 << 20;

impl UkiCache {
    /// A UKI of the Debian installer is about 50 MB: room for ten.
    pub const DEFAULT_BUDGET: u64 = 512 << 20;

    /// Where rackboot keeps its UKIs.
    pub fn default_dir(data_dir: &Path) -> PathBuf {
        data_dir.join("cache").join("uki")
    }

    /// Opens (creating) the cache directory and removes temporary files a crash left.
    pub fn open(dir: impl Into<PathBuf>, budget: u64) -> Result<Self, UkiError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let now = SystemTime::now();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))?.flatten() {
            let is_temp = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| {
                    now.duration_since(modified).unwrap_or_default() > STALE_TEMP
                });
            if is_temp && stale {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir,
            budget,
            build_lock: Mutex::new(()),
            builds: AtomicU64::new(0),
            temp_counter: AtomicU64::new(0),
        })
    }

    /// How many UKIs this cache has built (misses).
    pub fn builds(&self) -> u64 {
        self.builds.load(Ordering::Relaxed)
    }

    /// The path of the UKI of `stub` and `inputs`, built on a miss (through a
    /// temporary file renamed when complete and synced), its mtime touched on a hit.
    /// Open it promptly: a later build may evict it (an open file stays readable).
    pub fn get_or_build(&self, stub: &[u8], inputs: &UkiInputs<'_>) -> Result<PathBuf, UkiError> {
        let kernel = file_digest(&inputs.kernel)?;
        let initrd = inputs.initrd.as_ref().map(file_digest).transpose()?;
        let key = cache_key(stub, inputs.osrel, inputs.cmdline, &kernel, initrd.as_ref());
        let path = self.dir.join(format!("{key}.efi"));
        if self.touch(&path)? {
            return Ok(path);
        }
        let _build = self
            .build_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Built by another caller while this one waited?
        if self.touch(&path)? {
            return Ok(path);
        }
        self.build_file(&path, &key, stub, inputs, kernel, initrd)?;
        self.builds.fetch_add(1, Ordering::Relaxed);
        self.evict(&path);
        Ok(path)
    }

    /// Whether `path` exists; if so its mtime becomes now (the LRU order).
    fn touch(&self, path: &Path) -> Result<bool, UkiError> {
        match File::open(path) {
            Ok(file) => {
                if let Err(e) = file.set_modified(SystemTime::now()) {
                    // A stale LRU order only makes eviction less fair.
                    tracing::warn!("{}: cannot touch: {e}", path.display());
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(path)(e)),
        }
    }

    fn build_file(
        &self,
        path: &Path,
        key: &str,
        stub: &[u8],
        inputs: &UkiInputs<'_>,
        kernel: [u8; 32],
        initrd: Option<[u8; 32]>,
    ) -> Result<(), UkiError> {
        // `initrd` is the digest of `inputs.initrd`: both or neither.
        let initrd = match (inputs.initrd, initrd) {
            (Some(file), Some(sha256)) => Some(file_source(&file, sha256)?),
            _ => None,
        };
        let sources = added_sections(
            Source::Bytes(inputs.osrel),
            Source::Bytes(inputs.cmdline),
            file_source(&inputs.kernel, kernel)?,
            initrd,
        );
        let plan = plan(stub, &sources)?;
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let temp = TempFile {
            path: (self.dir).join(format!("{TEMP_PREFIX}{key}-{}-{n}", std::process::id())),
            renamed: false,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp.path)
            .map_err(io_error(&temp.path))?;
        let mut out = ChecksumWriter {
            out: BufWriter::with_capacity(COPY_BUFFER, file),
            checksum: PeChecksum::default(),
        };
        out.write(&plan.head).map_err(io_error(&temp.path))?;
        let zeros = [0u8; MAX_FILE_ALIGNMENT as usize];
        for ((_, source), placed) in sources.iter().zip(&plan.placed) {
            match source {
                Source::Bytes(bytes) => out.write(bytes).map_err(io_error(&temp.path))?,
                Source::File { path, len, sha256 } => {
                    copy_verified(path, *len, sha256, &mut out, &temp.path)?
                }
            }
            let padding = zeros.get(..placed.padding()).unwrap_or_default();
            out.write(padding).map_err(io_error(&temp.path))?;
        }
        let checksum = out.checksum.finish();
        let mut file = out
            .out
            .into_inner()
            .map_err(|e| io_error(&temp.path)(e.into_error()))?;
        file.seek(SeekFrom::Start(plan.checksum_at as u64))
            .and_then(|_| file.write_all(&checksum.to_le_bytes()))
            .and_then(|()| file.sync_all())
            .map_err(io_error(&temp.path))?;
        temp.rename(path)
    }

    /// Removes the least recently used UKIs until the rest fit the budget, never
    /// `keep`. Failures are logged: the UKI asked for is ready either way.
    fn evict(&self, keep: &Path) {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!("{}: cannot list for eviction: {e}", self.dir.display());
                return;
            }
        };
        let mut files: Vec<(SystemTime, PathBuf, u64)> = entries
            .flatten()
            .filter(|entry| is_entry_name(&entry.file_name().to_string_lossy()))
            .filter_map(|entry| {
                let meta = entry.metadata().ok().filter(fs::Metadata::is_file)?;
                Some((meta.modified().ok()?, entry.path(), meta.len()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, _, len)| len).sum();
        files.sort();
        for (_, path, len) in files {
            if total <= self.budget {
                break;
            }
            if path == keep {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => total -= len,
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= len,
                Err(e) => tracing::warn!("{}: cannot evict: {e}", path.display()),
            }
        }
    }
}

fn file_source<'a>(image: &ImageFile<'a>, sha256: [u8; 32]) -> Result<Source<'a>, UkiError> {
    let len = fs::metadata(image.path)
        .map_err(io_error(image.path))?
        .len();
    Ok(Source::File {
        path: image.path,
        len,
        sha256,
    })
}

/// Removed on drop unless renamed: a failed build leaves no temporary file.
struct TempFile {
    path: PathBuf,
    renamed: bool,
}

impl TempFile {
    fn rename(mut self, to: &Path) -> Result<(), UkiError> {
        fs::rename(&self.path, to).map_err(io_error(to))?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

struct ChecksumWriter<W> {
    out: W,
    checksum: PeChecksum,
}

impl<W: Write> ChecksumWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.checksum.update(data);
        self.out.write_all(data)
    }
}

/// Copies `len` bytes of `path` into `out`, checking them against `sha256`: the cache
/// key names that digest, so the file must still be what was hashed.
fn copy_verified<W: Write>(
    path: &Path,
    len: u64,
    sha256: &[u8; 32],
    out: &mut ChecksumWriter<W>,
    out_path: &Path,
) -> Result<(), UkiError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = file.read(chunk).map_err(io_error(path))?;
        if n == 0 {
            return Err(UkiError::ShortRead {
                path: path.to_path_buf(),
            });
        }
        let read = chunk.get(..n).unwrap_or_default();
        hasher.update(read);
        out.write(read).map_err(io_error(out_path))?;
        left -= n as u64;
    }
    let actual: [u8; 32] = hasher.finalize().into();
    if &actual != sha256 {
        return Err(UkiError::DigestMismatch {
            path: path.to_path_buf(),
            expected: hex::encode(sha256),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}

/// The sha256 the caller gave, or the file's, hashed as it streams.
fn file_digest(image: &ImageFile<'_>) -> Result<[u8; 32], UkiError> {
    if let Some(known) = image.sha256 {
        let mut digest = [0u8; 32];
        hex::decode_to_slice(known, &mut digest)
            .map_err(|_| UkiError::BadDigest(known.to_string()))?;
        return Ok(digest);
    }
    let mut file = File::open(image.path).map_err(io_error(image.path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    loop {
        let n = file.read(&mut buf).map_err(io_error(image.path))?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
}

/// The cache key: each input length-prefixed (so no two inputs run together), after
/// a version tag that a change in the layout `build` writes must bump.
fn cache_key(
    stub: &[u8],
    osrel: &[u8],
    cmdline: &[u8],
    kernel: &[u8; 32],
    initrd: Option<&[u8; 32]>,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"rackboot-uki-v1\0");
    for part in [stub, osrel, cmdline, kernel] {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    match initrd {
        Some(initrd) => {
            hasher.update([1]);
            hasher.update(initrd);
        }
        None => hasher.update([0]),
    }
    hex::encode(hasher.finalize())
}

fn is_entry_name(name: &str) -> bool {
    name.strip_suffix(".efi").is_some_and(|key| {
        key.len() == 64
            && key
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::process::Command;

    const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
    const NEW: [&str; 4] = [".osrel", ".cmdline", ".linux", ".initrd"];

    /// The installed stub, or `None` with a note (the tests that need it then pass).
    fn real_stub() -> Option<Vec<u8>> {
        match fs::read(STUB) {
            Ok(stub) => Some(stub),
            Err(e) => {
                eprintln!("skipped: {STUB}: {e} (install systemd-boot-efi)");
                None
            }
        }
    }

    fn tool(name: &str) -> bool {
        let found = Command::new(name).arg("--version").output().is_ok();
        if !found {
            eprintln!("skipped: no {name} (binutils)");
        }
        found
    }

    /// Bytes that look like nothing in particular, differing per seed.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    struct Inputs {
        osrel: Vec<u8>,
        cmdline: Vec<u8>,
        kernel: Vec<u8>,
        initrd: Vec<u8>,
    }

    impl Inputs {
        /// Sizes that are not multiples of any alignment.
        fn small() -> Self {
            Self {
                osrel: b"ID=rackboot\nNAME=\"rackboot test\"\n".to_vec(),
                cmdline: b"console=ttyS0,115200 auto=true priority=critical".to_vec(),
                kernel: noise(5001, 1),
                initrd: noise(12_345, 2),
            }
        }

        fn parts(&self) -> Parts<'_> {
            Parts {
                osrel: &self.osrel,
                cmdline: &self.cmdline,
                kernel: &self.kernel,
                initrd: Some(&self.initrd),
            }
        }

        fn data(&self) -> [&[u8]; 4] {
            [&self.osrel, &self.cmdline, &self.kernel, &self.initrd]
        }
    }

    /// A minimal PE32+ image: `count` sections of 0x200 bytes after `size_of_headers`,
    /// and a tail (standing for a symbol table and a certificate) the headers point at.
    fn synthetic_pe(magic: u16, count: u16, size_of_headers: u32) -> Vec<u8> {
        let (pe, file_alignment, section_alignment) = (0x40usize, 0x200u32, 0x1000u32);
        let opt = pe + 4 + COFF_LEN;
        let table = opt + 240;
        let first_raw = align_up(u64::from(size_of_headers), file_alignment) as usize;
        let total = first_raw + usize::from(count) * 0x200;
        let mut f = vec![0u8; total];
        let mut set = |at: usize, value: &[u8]| put(&mut f, at, value).unwrap();
        set(0, b"MZ");
        set(DOS_LFANEW, &(pe as u32).to_le_bytes());
        set(pe, b"PE\0\0");
        set(pe + 4, &0x8664u16.to_le_bytes());
        set(pe + 4 + COFF_NUMBER_OF_SECTIONS, &count.to_le_bytes());
        set(
            pe + 4 + COFF_POINTER_TO_SYMBOL_TABLE,
            &(total as u32).to_le_bytes(),
        );
        set(pe + 4 + COFF_NUMBER_OF_SYMBOLS, &1u32.to_le_bytes());
        set(pe + 4 + COFF_SIZE_OF_OPTIONAL_HEADER, &240u16.to_le_bytes());
        set(opt, &magic.to_le_bytes());
        let initialized = u32::from(count) * 0x200;
        set(
            opt + OPT_SIZE_OF_INITIALIZED_DATA,
            &initialized.to_le_bytes(),
        );
        set(
            opt + OPT_SECTION_ALIGNMENT,
            &section_alignment.to_le_bytes(),
        );
        set(opt + OPT_FILE_ALIGNMENT, &file_alignment.to_le_bytes());
        let image = section_alignment * (u32::from(count) + 1);
        set(opt + OPT_SIZE_OF_IMAGE, &image.to_le_bytes());
        set(opt + OPT_SIZE_OF_HEADERS, &size_of_headers.to_le_bytes());
        set(opt + OPT_CHECKSUM, &0x1234u32.to_le_bytes());
        set(opt + 68, &10u16.to_le_bytes()); // an EFI application
        set(opt + OPT_NUMBER_OF_RVA_AND_SIZES, &16u32.to_le_bytes());
        let certificate = opt + OPT_DATA_DIRECTORIES + CERTIFICATE_TABLE * DATA_DIRECTORY_LEN;
        set(certificate, &(total as u32 + 18).to_le_bytes());
        set(certificate + 4, &8u32.to_le_bytes());
        for index in 0..usize::from(count) {
            let at = table + index * SECTION_HEADER_LEN;
            let i = index as u32;
            set(at, &section_name(&format!(".s{index}")));
            set(at + 8, &0x100u32.to_le_bytes());
            set(at + 12, &(section_alignment * (i + 1)).to_le_bytes());
            set(at + 16, &0x200u32.to_le_bytes());
            set(at + 20, &(first_raw as u32 + 0x200 * i).to_le_bytes());
            set(at + 36, &DATA_SECTION.to_le_bytes());
            set(first_raw + 0x200 * index, &[index as u8 + 1; 0x100]);
        }
        f.extend_from_slice(&[0xaa; 26]);
        f
    }

    fn checksum_of(image: &[u8], checksum_at: usize) -> u32 {
        let mut zeroed = image.to_vec();
        put(&mut zeroed, checksum_at, &[0; 4]).unwrap();
        let mut checksum = PeChecksum::default();
        checksum.update(&zeroed);
        checksum.finish()
    }

    /// Checks `uki` against the stub it was built from and the data it was given, with
    /// this module's parser: the stub's sections unchanged, then `names` in order,
    /// aligned, not overlapping, holding exactly `data`; the header fields updated.
    /// Returns the added sections.
    fn check_uki(stub: &[u8], uki: &[u8], names: &[&str], data: &[&[u8]]) -> Vec<Section> {
        let before = parse(stub).unwrap();
        let after = parse(uki).unwrap();
        let (old, new) = after.sections.split_at(before.sections.len());
        assert_eq!(
            old,
            &before.sections[..],
            "the stub's sections are unchanged"
        );
        let found: Vec<String> = new.iter().map(Section::name).collect();
        assert_eq!(found, names);
        let memory_align = before.section_alignment.max(PAGE);
        let stub_end = before
            .sections
            .iter()
            .map(Section::memory_end)
            .fold(u64::from(before.size_of_image), u64::max);
        assert_eq!(
            u64::from(new[0].virtual_address),
            align_up(stub_end, memory_align),
            "the first added section starts at the next boundary after the stub"
        );
        for (section, bytes) in new.iter().zip(data) {
            assert_eq!(section.virtual_size as usize, bytes.len());
            assert_eq!(section.virtual_address % memory_align, 0);
            assert_eq!(section.raw_offset % before.file_alignment, 0);
            assert_eq!(
                u64::from(section.raw_size),
                align_up(bytes.len() as u64, before.file_alignment)
            );
            assert_eq!(section.characteristics, DATA_SECTION);
            let raw = section.raw_offset as usize;
            assert_eq!(&uki[raw..raw + bytes.len()], *bytes, "{}", section.name());
            let padding = &uki[raw + bytes.len()..raw + section.raw_size as usize];
            assert!(padding.iter().all(|&b| b == 0));
        }
        for pair in after.sections.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                a.memory_end() <= u64::from(b.virtual_address),
                "{} and {} overlap in memory",
                a.name(),
                b.name()
            );
            assert!(
                a.raw_offset + a.raw_size <= b.raw_offset,
                "{} and {} overlap in the file",
                a.name(),
                b.name()
            );
        }
        let last = new.last().unwrap();
        assert_eq!(uki.len(), (last.raw_offset + last.raw_size) as usize);
        assert!(new[0].raw_offset >= after.size_of_headers);
        assert_eq!(
            u64::from(after.size_of_image),
            align_up(
                u64::from(last.virtual_address + last.virtual_size),
                before.section_alignment
            )
        );
        assert_eq!(
            after.size_of_initialized_data,
            before.size_of_initialized_data + new.iter().map(|s| s.raw_size).sum::<u32>()
        );
        let checksum_at = after.opt + OPT_CHECKSUM;
        assert_eq!(
            u32_at(uki, checksum_at, "").unwrap(),
            checksum_of(uki, checksum_at)
        );
        let certificate = after.opt + OPT_DATA_DIRECTORIES + CERTIFICATE_TABLE * 8;
        assert_eq!(&uki[certificate..certificate + 8], &[0; 8]);
        assert_eq!(
            u32_at(uki, after.coff + COFF_POINTER_TO_SYMBOL_TABLE, "").unwrap(),
            0
        );
        new.to_vec()
    }

    #[test]
    fn builds_from_the_real_stub() {
        let Some(stub) = real_stub() else { return };
        let inputs = Inputs::small();
        let uki = build(&stub, &inputs.parts()).unwrap();
        let new = check_uki(&stub, &uki, &NEW, &inputs.data());
        // Where the team's hand-made recipe put them (this stub ends at 0x19134).
        let addresses: Vec<u32> = new.iter().map(|s| s.virtual_address).collect();
        assert_eq!(addresses, [0x1a000, 0x1b000, 0x1c000, 0x1e000]);
    }

    #[test]
    fn checksum_matches_the_linkers() {
        let Some(stub) = real_stub() else { return };
        let pe = parse(&stub).unwrap();
        let checksum_at = pe.opt + OPT_CHECKSUM;
        assert_eq!(
            checksum_of(&stub, checksum_at),
            u32_at(&stub, checksum_at, "").unwrap()
        );
        // Fed in odd pieces, it adds up the same.
        let mut zeroed = stub.clone();
        put(&mut zeroed, checksum_at, &[0; 4]).unwrap();
        let mut pieces = PeChecksum::default();
        for chunk in zeroed.chunks(777) {
            let (a, b) = chunk.split_at(chunk.len() / 3);
            pieces.update(a);
            pieces.update(&[]);
            pieces.update(b);
        }
        assert_eq!(pieces.finish(), checksum_of(&stub, checksum_at));
    }

    /// `objdump -h`: name -> (size, VMA, file offset).
    fn objdump_sections(path: &Path) -> BTreeMap<String, (u64, u64, u64)> {
        let output = Command::new("objdump")
            .arg("-h")
            .arg(path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                (words.len() >= 7 && words[0].parse::<usize>().is_ok()).then(|| {
                    (
                        words[1].to_string(),
                        (hex(words[2]), hex(words[3]), hex(words[5])),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn objdump_reads_the_sections_where_they_were_put() {
        let Some(stub) = real_stub() else { return };
        if !tool("objdump") {
            return;
        }
        let inputs = Inputs::small();
        let uki = build(&stub, &inputs.parts()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uki.efi");
        fs::write(&path, &uki).unwrap();
        let listed = objdump_sections(&path);
        let ours = sections(&uki).unwrap();
        assert_eq!(listed.len(), ours.len(), "{listed:?}");
        for section in &ours {
            let expected = (
                u64::from(section.virtual_size),
                u64::from(section.virtual_address),
                u64::from(section.raw_offset),
            );
            assert_eq!(
                listed.get(&section.name()),
                Some(&expected),
                "{}",
                section.name()
            );
        }
        for name in NEW {
            assert!(listed.contains_key(name), "{name} in {listed:?}");
        }
    }

    #[test]
    fn agrees_with_objcopy() {
        let Some(stub) = real_stub() else { return };
        if !tool("objcopy") {
            return;
        }
        let inputs = Inputs::small();
        let uki = build(&stub, &inputs.parts()).unwrap();
        let ours = parse(&uki).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new("objcopy");
        for (section, data) in ours.sections[ours.sections.len() - 4..]
            .iter()
            .zip(inputs.data())
        {
            let name = section.name();
            let file = dir.path().join(&name[1..]);
            fs::write(&file, data).unwrap();
            command
                .arg("--add-section")
                .arg(format!("{name}={}", file.display()))
                .arg("--change-section-vma")
                .arg(format!("{name}={:#x}", section.virtual_address));
        }
        let theirs_path = dir.path().join("objcopy.efi");
        let output = command.arg(STUB).arg(&theirs_path).output().unwrap();
        assert!(output.status.success(), "{output:?}");
        let theirs_file = fs::read(&theirs_path).unwrap();
        let theirs = parse(&theirs_file).unwrap();
        let table = |pe: &Headers| -> Vec<(String, u32, u32)> {
            pe.sections
                .iter()
                .map(|s| (s.name(), s.virtual_address, s.virtual_size))
                .collect()
        };
        assert_eq!(table(&ours), table(&theirs));
        // On this stub objcopy also puts the data where `build` does, marks it alike
        // and updates the same header fields (it moves the symbol table to the end).
        assert_eq!(ours.sections, theirs.sections);
        assert_eq!(ours.size_of_image, theirs.size_of_image);
        assert_eq!(
            ours.size_of_initialized_data,
            theirs.size_of_initialized_data
        );
        for section in &ours.sections {
            let range =
                section.raw_offset as usize..(section.raw_offset + section.raw_size) as usize;
            assert_eq!(uki[range.clone()], theirs_file[range], "{}", section.name());
        }
        let checksum_at = theirs.opt + OPT_CHECKSUM;
        assert_eq!(
            u32_at(&theirs_file, checksum_at, "").unwrap(),
            checksum_of(&theirs_file, checksum_at),
            "objcopy's checksum, by this module's sum"
        );
    }

    #[test]
    fn builds_from_a_synthetic_stub_dropping_its_tail() {
        let stub = synthetic_pe(PE32_PLUS_MAGIC, 3, 0x400);
        let inputs = Inputs::small();
        let uki = build(&stub, &inputs.parts()).unwrap();
        let new = check_uki(&stub, &uki, &NEW, &inputs.data());
        assert_eq!(new[0].virtual_address, 0x4000);
        assert_eq!(new[0].raw_offset, 0x400 + 3 * 0x200);
    }

    #[test]
    fn leaves_out_empty_parts_and_an_absent_initrd() {
        let stub = synthetic_pe(PE32_PLUS_MAGIC, 2, 0x400);
        let kernel = noise(3000, 3);
        let parts = Parts {
            osrel: b"",
            cmdline: b"quiet",
            kernel: &kernel,
            initrd: None,
        };
        let uki = build(&stub, &parts).unwrap();
        check_uki(&stub, &uki, &[".cmdline", ".linux"], &[b"quiet", &kernel]);
    }

    #[test]
    fn equal_inputs_build_equal_bytes() {
        let stub = synthetic_pe(PE32_PLUS_MAGIC, 2, 0x400);
        let inputs = Inputs::small();
        assert_eq!(
            build(&stub, &inputs.parts()).unwrap(),
            build(&stub, &inputs.parts()).unwrap()
        );
    }

    #[test]
    fn refuses_truncated_stubs() {
        let stub = real_stub().unwrap_or_else(|| synthetic_pe(PE32_PLUS_MAGIC, 8, 0x400));
        let inputs = Inputs::small();
        let data_end = sections(&stub)
            .unwrap()
            .iter()
            .map(|s| (s.raw_offset + s.raw_size) as usize)
            .max()
            .unwrap();
        // Every cut through the headers, then a sample through the sections' data.
        for len in (0..0x600).chain((0x600..data_end).step_by(97)) {
            let result = build(&stub[..len], &inputs.parts());
            assert!(result.is_err(), "a stub cut at {len} bytes was accepted");
        }
        let cut = &stub[..data_end - 1];
        let error = build(cut, &inputs.parts()).unwrap_err();
        assert!(matches!(error, UkiError::Truncated { .. }), "{error}");
        assert!(error.to_string().contains("runs past its end"), "{error}");
        // Cut only in the tail it leaves out anyway: fine.
        build(&stub[..data_end], &inputs.parts()).unwrap();
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        let inputs = Inputs::small();
        for (seed, len) in [(1, 0), (2, 1), (3, 64), (4, 4096), (5, 100_000)] {
            let error = build(&noise(len, seed), &inputs.parts()).unwrap_err();
            assert!(matches!(error, UkiError::NotPe(_)), "{error}");
        }
        let mut mz = noise(4096, 6);
        mz[..2].copy_from_slice(b"MZ");
        assert!(build(&mz, &inputs.parts()).is_err());
        // A far e_lfanew must not overflow an offset.
        mz[DOS_LFANEW..DOS_LFANEW + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let error = build(&mz, &inputs.parts()).unwrap_err();
        assert!(matches!(error, UkiError::Truncated { .. }), "{error}");
        // Bytes flipped all over the real headers: an error or a UKI, never a panic.
        let stub = real_stub().unwrap_or_else(|| synthetic_pe(PE32_PLUS_MAGIC, 8, 0x400));
        let flips = noise(3 * 4000, 7);
        for flip in flips.chunks_exact(3) {
            let mut bent = stub.clone();
            let at = usize::from(u16::from_le_bytes([flip[0], flip[1]])) % 0x400;
            bent[at] ^= flip[2] | 1;
            if let Ok(uki) = build(&bent, &inputs.parts()) {
                sections(&uki).unwrap();
            }
        }
    }

    #[test]
    fn refuses_pe32() {
        let inputs = Inputs::small();
        let error = build(&synthetic_pe(PE32_MAGIC, 2, 0x400), &inputs.parts()).unwrap_err();
        assert!(matches!(error, UkiError::Pe32), "{error}");
        assert!(error.to_string().contains("PE32+"), "{error}");
        if let Some(mut stub) = real_stub() {
            let opt = parse(&stub).unwrap().opt;
            stub[opt..opt + 2].copy_from_slice(&PE32_MAGIC.to_le_bytes());
            let error = build(&stub, &inputs.parts()).unwrap_err();
            assert!(matches!(error, UkiError::Pe32), "{error}");
        }
        let error = build(&synthetic_pe(0x107, 2, 0x400), &inputs.parts()).unwrap_err();
        assert!(matches!(error, UkiError::UnknownMagic(0x107)), "{error}");
    }

    #[test]
    fn refuses_a_stub_without_room_for_the_headers() {
        // Two headers end at 0x198: two more fit before 0x200, not four.
        let stub = synthetic_pe(PE32_PLUS_MAGIC, 2, 0x200);
        let inputs = Inputs::small();
        let error = build(&stub, &inputs.parts()).unwrap_err();
        assert!(
            matches!(
                error,
                UkiError::NoRoom {
                    needed: 4,
                    table_end: 0x198,
                    limit: 0x200
                }
            ),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .contains("no room for 4 more section headers")
        );
        // Without an os-release and an initrd, two are enough.
        let parts = Parts {
            osrel: b"",
            initrd: None,
            ..inputs.parts()
        };
        let uki = build(&stub, &parts).unwrap();
        check_uki(
            &stub,
            &uki,
            &[".cmdline", ".linux"],
            &[&inputs.cmdline, &inputs.kernel],
        );
    }

    #[test]
    fn refuses_a_uki_and_an_empty_kernel() {
        let stub = synthetic_pe(PE32_PLUS_MAGIC, 2, 0x400);
        let inputs = Inputs::small();
        let uki = build(&stub, &inputs.parts()).unwrap();
        let error = build(&uki, &inputs.parts()).unwrap_err();
        assert!(
            matches!(error, UkiError::SectionExists(".osrel")),
            "{error}"
        );
        let parts = Parts {
            kernel: b"",
            ..inputs.parts()
        };
        let error = build(&stub, &parts).unwrap_err();
        assert!(matches!(error, UkiError::EmptyKernel), "{error}");
    }

    /// The inputs of the cache tests, as files.
    struct Files {
        dir: tempfile::TempDir,
        stub: Vec<u8>,
        inputs: Inputs,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let inputs = Inputs::small();
            fs::write(dir.path().join("kernel"), &inputs.kernel).unwrap();
            fs::write(dir.path().join("initrd"), &inputs.initrd).unwrap();
            Self {
                dir,
                stub: synthetic_pe(PE32_PLUS_MAGIC, 2, 0x400),
                inputs,
            }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn cache(&self, budget: u64) -> UkiCache {
            UkiCache::open(UkiCache::default_dir(&self.path("data")), budget).unwrap()
        }
    }

    fn uki_inputs<'a>(
        kernel: &'a Path,
        initrd: &'a Path,
        cmdline: &'a [u8],
        kernel_sha256: Option<&'a str>,
    ) -> UkiInputs<'a> {
        UkiInputs {
            osrel: b"ID=rackboot\n",
            cmdline,
            kernel: ImageFile {
                path: kernel,
                sha256: kernel_sha256,
            },
            initrd: Some(ImageFile {
                path: initrd,
                sha256: None,
            }),
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn set_mtime(path: &Path, seconds_ago: u64) {
        let when = SystemTime::now() - Duration::from_secs(seconds_ago);
        File::open(path).unwrap().set_modified(when).unwrap();
    }

    #[test]
    fn cache_builds_once_per_input() {
        let files = Files::new();
        let cache = files.cache(UkiCache::DEFAULT_BUDGET);
        let (kernel, initrd) = (files.path("kernel"), files.path("initrd"));
        let first = cache
            .get_or_build(&files.stub, &uki_inputs(&kernel, &initrd, b"quiet", None))
            .unwrap();
        let built = fs::read(&first).unwrap();
        let expected = build(
            &files.stub,
            &Parts {
                osrel: b"ID=rackboot\n",
                cmdline: b"quiet",
                kernel: &files.inputs.kernel,
                initrd: Some(&files.inputs.initrd),
            },
        )
        .unwrap();
        assert!(built == expected, "the streamed file differs from `build`");
        assert_eq!(first.parent(), Some(files.path("data/cache/uki").as_path()));

        // The same inputs, the kernel's digest given this time: a hit, nothing rebuilt.
        let inode = |path: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(path).unwrap());
        let before = inode(&first);
        let digest = hex::encode(Sha256::digest(&files.inputs.kernel));
        let again = cache
            .get_or_build(
                &files.stub,
                &uki_inputs(&kernel, &initrd, b"quiet", Some(&digest)),
            )
            .unwrap();
        assert_eq!(again, first);
        assert_eq!(inode(&again), before);
        assert_eq!(cache.builds(), 1);

        let other = cache
            .get_or_build(&files.stub, &uki_inputs(&kernel, &initrd, b"loud", None))
            .unwrap();
        assert_ne!(other, first);
        assert_eq!(cache.builds(), 2);
    }

    #[test]
    fn cache_evicts_the_least_recently_used() {
        let files = Files::new();
        let (kernel, initrd) = (files.path("kernel"), files.path("initrd"));
        let probe = files.cache(u64::MAX);
        let a = probe
            .get_or_build(&files.stub, &uki_inputs(&kernel, &initrd, b"a", None))
            .unwrap();
        let size = fs::metadata(&a).unwrap().len();
        let b = probe
            .get_or_build(&files.stub, &uki_inputs(&kernel, &initrd, b"b", None))
            .unwrap();
        set_mtime(&a, 200);
        set_mtime(&b, 100);
        // Room for two: a hit on `a` makes `b` the oldest, so `c` evicts `b`.
        let cache = files.cache(2 * size + size / 2);
        let hit = cache
            .get_or_build(&files.stub, &uki_inputs(&kernel, &initrd, b"a", None))
            .unwrap();
        assert_eq!(hit, a);
        let c = cache
            .get_or_build(&files.stub, &uki_inputs(&kernel, &initrd, b"c", None))
            .unwrap();
        assert!(a.exists() && c.exists());
        assert!(!b.exists(), "the least recently used was kept");

        // A budget smaller than one UKI keeps the one just built, and only it.
        let tiny = files.cache(1);
        let d = tiny
            .get_or_build(&files.stub, &uki_inputs(&kernel, &initrd, b"d", None))
            .unwrap();
        let dir = d.parent().unwrap();
        assert_eq!(entries(dir), [d.file_name().unwrap().to_string_lossy()]);
    }

    #[test]
    fn temporary_files_are_not_entries() {
        let files = Files::new();
        let (kernel, initrd) = (files.path("kernel"), files.path("initrd"));
        let dir = UkiCache::default_dir(&files.path("data"));
        fs::create_dir_all(&dir).unwrap();
        let fresh = dir.join(format!("{TEMP_PREFIX}fresh"));
        let stale = dir.join(format!("{TEMP_PREFIX}stale"));
        fs::write(&fresh, vec![0u8; 1 << 20]).unwrap();
        fs::write(&stale, b"half a UKI").unwrap();
        set_mtime(&stale, 3600);
        // A fresh one may be another build under way; a stale one a crash's leftover.
        let cache = UkiCache::open(&dir, 1 << 20).unwrap();
        assert!(fresh.exists() && !stale.exists());
        // The megabyte of temporary file does not count against the budget.
        let a = cache
            .get_or_build(&files.stub, &uki_inputs(&kernel, &initrd, b"a", None))
            .unwrap();
        let b = cache
            .get_or_build(&files.stub, &uki_inputs(&kernel, &initrd, b"b", None))
            .unwrap();
        assert!(a.exists() && b.exists() && fresh.exists());
        assert_eq!(entries(&dir).len(), 3);
    }

    #[test]
    fn cache_refuses_a_file_that_is_not_what_its_digest_says() {
        let files = Files::new();
        let cache = files.cache(UkiCache::DEFAULT_BUDGET);
        let (kernel, initrd) = (files.path("kernel"), files.path("initrd"));
        let wrong = hex::encode([7u8; 32]);
        let error = cache
            .get_or_build(
                &files.stub,
                &uki_inputs(&kernel, &initrd, b"quiet", Some(&wrong)),
            )
            .unwrap_err();
        assert!(matches!(error, UkiError::DigestMismatch { .. }), "{error}");
        let dir = UkiCache::default_dir(&files.path("data"));
        assert!(
            entries(&dir).is_empty(),
            "a failed build left {:?}",
            entries(&dir)
        );
        let error = cache
            .get_or_build(
                &files.stub,
                &uki_inputs(&kernel, &initrd, b"quiet", Some("not hex")),
            )
            .unwrap_err();
        assert!(matches!(error, UkiError::BadDigest(_)), "{error}");
        // A bad stub is refused the same way `build` refuses it.
        let error = cache
            .get_or_build(b"MZ", &uki_inputs(&kernel, &initrd, b"quiet", None))
            .unwrap_err();
        assert!(matches!(error, UkiError::Truncated { .. }), "{error}");
        assert!(entries(&dir).is_empty());
    }
}
