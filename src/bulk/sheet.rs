//! Uploaded sheets (CSV, XLSX) read into rows within fixed limits. An XLSX file is a
//! zip of XML whose sizes and sheet dimensions are claims the sender makes: the
//! archive is checked (entry count, declared and actually inflated sizes, the shared
//! strings count) before calamine opens it, and cells are streamed one at a time into
//! a sparse table, so memory follows the cells present within the limits, never the
//! rectangle a sheet claims.

use super::RawRow;
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Cursor, Read};

/// The largest upload read at all (panel field and CLI file alike).
pub const MAX_IMPORT_BYTES: usize = 20 << 20;
/// Machines one file may hold; more is a second file, not one huge preview.
pub const MAX_DATA_ROWS: usize = 10_000;
/// Sheet rows read: the header and every data row, counted from row 1, so title rows
/// above the header come out of the data rows.
pub const MAX_SHEET_ROWS: u32 = MAX_DATA_ROWS as u32 + 1;
/// Columns read (A to BL): the importer knows six, this leaves room for blank ones.
pub const MAX_COLUMNS: u32 = 64;
/// The longest cell: a hostname, the longest field taken, is at most 253 bytes.
pub const MAX_CELL_BYTES: usize = 255;
/// All cell text kept while reading a file (a full sheet of real rows is ~2 MiB).
pub const MAX_SHEET_TEXT_BYTES: usize = 8 << 20;
/// Entries in an XLSX archive (a workbook from a spreadsheet program has ~10 to 50).
pub const MAX_XLSX_ENTRIES: usize = 1_000;
/// What all entries of an XLSX archive may inflate to, together.
pub const MAX_XLSX_UNPACKED_BYTES: u64 = 64 << 20;
/// Sheets, relationships and defined names in a workbook, together (a spreadsheet
/// program writes a few dozen).
pub const MAX_WORKBOOK_ITEMS: u64 = 10_000;
/// Shared strings: calamine reserves the count a file claims and keeps every string.
pub const MAX_SHARED_STRINGS: u64 = 200_000;

const COLUMNS: [&str; 7] = [
    "mac", "hostname", "ip", "image", "rack", "position", "loader",
];

/// Why an uploaded file was refused; shown to the user as is, so each names the
/// limit and what the file claimed or held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SheetError {
    #[error("the file is {size} bytes; at most {MAX_IMPORT_BYTES} bytes (20 MiB) are read")]
    FileTooLarge { size: u64 },
    #[error("the file is larger than {MAX_IMPORT_BYTES} bytes (20 MiB), the most that is read")]
    UploadTooLarge,
    #[error("the CSV file is not UTF-8 text")]
    NotUtf8,
    #[error("line {line}: {message}")]
    Csv { line: usize, message: String },
    #[error("not a readable XLSX file: {0}")]
    NotXlsx(String),
    #[error("the XLSX archive has {count} entries; at most {MAX_XLSX_ENTRIES} are read")]
    TooManyEntries { count: usize },
    #[error(
        "the XLSX archive's entries claim {claimed} bytes unpacked; at most {MAX_XLSX_UNPACKED_BYTES} bytes (64 MiB) are read"
    )]
    UnpackedTooLarge { claimed: u64 },
    #[error("the XLSX entry {entry:?} unpacks to more than the {declared} bytes it declares")]
    EntrySizeLie { entry: String, declared: u64 },
    #[error("the XLSX entry {entry:?} cannot be unpacked: {why}")]
    BadEntry { entry: String, why: String },
    #[error(
        "the workbook has more than {MAX_WORKBOOK_ITEMS} sheets, relationships and defined names"
    )]
    TooManyWorkbookItems,
    #[error(
        "the XLSX shared strings table claims or holds {claimed} strings; at most {MAX_SHARED_STRINGS} are read"
    )]
    TooManySharedStrings { claimed: String },
    #[error("the workbook has no sheet")]
    NoSheet,
    #[error("cannot read the first sheet: {0}")]
    BadSheet(String),
    #[error(
        "the sheet claims the range {claimed}; at most {MAX_SHEET_ROWS} rows (a header and {MAX_DATA_ROWS} machines) and {MAX_COLUMNS} columns (A to BL) are read"
    )]
    DimensionTooLarge { claimed: String },
    #[error(
        "{cell}: outside the {MAX_SHEET_ROWS} rows (a header and {MAX_DATA_ROWS} machines) and {MAX_COLUMNS} columns (A to BL) that are read"
    )]
    OutOfBounds { cell: String },
    #[error("{reference:?} is not a cell or a range of cells between A1 and XFD1048576")]
    BadReference { reference: String },
    #[error("{cell}: the cell has {len} bytes; at most {MAX_CELL_BYTES} are read")]
    CellTooLong { cell: String, len: usize },
    #[error("the cells hold more than {MAX_SHEET_TEXT_BYTES} bytes (8 MiB) of text")]
    TooMuchText,
    #[error("unknown column {name:?}; known columns: {}", COLUMNS.join(", "))]
    UnknownColumn { name: String },
    #[error("column {0} appears twice")]
    DuplicateColumn(&'static str),
    #[error("the header row has no mac column")]
    NoMacColumn,
    #[error("the file is empty")]
    Empty,
    #[error("the file has a header but no rows")]
    NoRows,
}

/// Parses an upload by its name (or, failing that, its content).
pub fn parse_upload(file_name: &str, bytes: &[u8]) -> Result<Vec<RawRow>, SheetError> {
    if bytes.len() > MAX_IMPORT_BYTES {
        return Err(SheetError::FileTooLarge {
            size: bytes.len() as u64,
        });
    }
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".xlsx") || bytes.starts_with(b"PK\x03\x04") {
        parse_xlsx(bytes)
    } else {
        let text = std::str::from_utf8(bytes).map_err(|_| SheetError::NotUtf8)?;
        parse_csv(text.trim_start_matches('\u{feff}').as_bytes())
    }
}

pub fn parse_csv(bytes: &[u8]) -> Result<Vec<RawRow>, SheetError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut table = Table::default();
    // One record at a time: only the bounded table grows.
    let mut record = csv::StringRecord::new();
    for index in 0.. {
        let line = index as usize + 1;
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                return Err(SheetError::Csv {
                    line,
                    message: e.to_string(),
                });
            }
        }
        for (col, field) in record.iter().enumerate() {
            let col = u32::try_from(col).unwrap_or(u32::MAX);
            table.put(index, col, field, || {
                format!("line {line} field {}", col + 1)
            })?;
        }
    }
    rows_from_table(table)
}

pub fn parse_xlsx(bytes: &[u8]) -> Result<Vec<RawRow>, SheetError> {
    // calamine's reference parser multiplies without checking (a column of a dozen
    // letters overflows, found by fuzzing): a panic in it is a bad sheet, not a
    // crash. Built with overflow checks off, the same input gives a far position,
    // which the bounds below refuse.
    std::panic::catch_unwind(|| parse_xlsx_unguarded(bytes)).unwrap_or_else(|_| {
        Err(SheetError::BadSheet(
            "a cell reference in it cannot be read".into(),
        ))
    })
}

fn parse_xlsx_unguarded(bytes: &[u8]) -> Result<Vec<RawRow>, SheetError> {
    use calamine::{Data, DataRef, Reader, Xlsx};
    let checked = checked_archive(bytes)?;
    let mut workbook =
        Xlsx::new(Cursor::new(checked)).map_err(|e| SheetError::NotXlsx(e.to_string()))?;
    let name = workbook
        .sheet_names()
        .first()
        .cloned()
        .ok_or(SheetError::NoSheet)?;
    // The cell reader streams the sheet's XML; `worksheet_range` would allocate the
    // whole rectangle between the extreme cells first.
    let mut cells = workbook
        .worksheet_cells_reader(&name)
        .map_err(|e| SheetError::BadSheet(e.to_string()))?;
    let dims = cells.dimensions();
    if dims.end.0 >= MAX_SHEET_ROWS || dims.end.1 >= MAX_COLUMNS {
        return Err(SheetError::DimensionTooLarge {
            claimed: format!(
                "{}:{}",
                cell_name(dims.start.0, dims.start.1),
                cell_name(dims.end.0, dims.end.1)
            ),
        });
    }
    let mut table = Table::default();
    while let Some(cell) = cells
        .next_cell()
        .map_err(|e| SheetError::BadSheet(e.to_string()))?
    {
        let (row, col) = cell.get_position();
        let text = match cell.get_value() {
            DataRef::Empty => continue,
            DataRef::SharedString(s) => (*s).to_string(),
            DataRef::String(s) => s.clone(),
            // Positions typed as numbers arrive as floats: 12.0 means "12".
            DataRef::Float(f) if f.fract() == 0.0 => format!("{f:.0}"),
            other => Data::from(other.clone()).to_string(),
        };
        table.put(row, col, &text, || cell_name(row, col))?;
    }
    rows_from_table(table)
}

/// Checks an XLSX archive before calamine reads it, and returns the archive calamine
/// is given: a few KiB of zip can claim or inflate to gigabytes. Every entry is
/// inflated once here, counting bytes (the sizes in the zip directory are the
/// sender's word) and the XML elements calamine keeps one of each.
///
/// The styles (and the theme they use) are left out of the returned archive:
/// calamine copies a cell style's font and number format into every one of the
/// sheet's style records, so a small styles part can ask for gigabytes, and the
/// importer needs no styles (a date-formatted cell arrives as its number).
/// The entries kept are copied still compressed.
fn checked_archive(bytes: &[u8]) -> Result<Vec<u8>, SheetError> {
    let not_xlsx = |e: zip::result::ZipError| SheetError::NotXlsx(e.to_string());
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(not_xlsx)?;
    if archive.len() > MAX_XLSX_ENTRIES {
        return Err(SheetError::TooManyEntries {
            count: archive.len(),
        });
    }
    let mut claimed: u64 = 0;
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).map_err(not_xlsx)?;
        claimed = claimed.saturating_add(entry.size());
    }
    if claimed > MAX_XLSX_UNPACKED_BYTES {
        return Err(SheetError::UnpackedTooLarge { claimed });
    }
    let mut counts = Counts::default();
    let mut kept = zip::ZipWriter::new(Cursor::new(Vec::with_capacity(bytes.len())));
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(not_xlsx)?;
        let declared = entry.size();
        let name = entry
            .name()
            .map(|n| n.into_owned())
            .unwrap_or_else(|_| String::from_utf8_lossy(entry.name_raw()).into_owned());
        // One byte past the declared size shows a lie without inflating further.
        let mut limited = (&mut entry).take(declared.saturating_add(1));
        // calamine reads parts by the names other parts give, whatever their
        // extension, so every entry is counted as XML (a binary one stops at its
        // first error, as calamine would).
        counts.add(&mut limited)?;
        // The zip crate refuses some lies itself, as a read error.
        io::copy(&mut limited, &mut io::sink()).map_err(|e| SheetError::BadEntry {
            entry: name.clone(),
            why: e.to_string(),
        })?;
        if limited.limit() == 0 {
            return Err(SheetError::EntrySizeLie {
                entry: name,
                declared,
            });
        }
        // The names calamine looks the styles and theme up by, in its spelling
        // (case-insensitive, either slash).
        let path = name.replace('\\', "/").to_ascii_lowercase();
        if path.rsplit('/').next() == Some("styles.xml") || path.ends_with("theme/theme1.xml") {
            continue;
        }
        drop(entry);
        let raw = archive.by_index_raw(index).map_err(not_xlsx)?;
        kept.raw_copy_file(raw).map_err(not_xlsx)?;
    }
    Ok(kept.finish().map_err(not_xlsx)?.into_inner())
}

/// The XML elements of which calamine keeps one each while opening a workbook
/// (styles aside): shared strings, and the workbook's sheets, relationships and
/// defined names.
#[derive(Default)]
struct Counts {
    strings: u64,
    items: u64,
}

impl Counts {
    fn add(&mut self, reader: impl Read) -> Result<(), SheetError> {
        use quick_xml::events::Event;
        let mut xml = quick_xml::Reader::from_reader(io::BufReader::new(reader));
        let config = xml.config_mut();
        config.check_end_names = false;
        config.check_comments = false;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let (Event::Start(e) | Event::Empty(e)) = (match xml.read_event_into(&mut buf) {
                Ok(Event::Eof) | Err(_) => return Ok(()),
                Ok(event) => event,
            }) else {
                continue;
            };
            match e.local_name().as_ref() {
                // calamine reserves room for the count the table claims.
                "sst" => {
                    let count = e
                        .try_get_attribute("uniqueCount")
                        .ok()
                        .flatten()
                        .map(|a| a.value.trim().to_string());
                    if let Some(count) = count
                        && count
                            .parse::<u64>()
                            .ok()
                            .is_none_or(|n| n > MAX_SHARED_STRINGS)
                    {
                        return Err(SheetError::TooManySharedStrings { claimed: count });
                    }
                }
                "si" => {
                    self.strings += 1;
                    if self.strings > MAX_SHARED_STRINGS {
                        return Err(SheetError::TooManySharedStrings {
                            claimed: format!("more than {MAX_SHARED_STRINGS}"),
                        });
                    }
                }
                // calamine reads these references with unchecked arithmetic.
                name @ ("dimension" | "row" | "c" | "mergeCell") => {
                    let key = if name == "dimension" || name == "mergeCell" {
                        "ref"
                    } else {
                        "r"
                    };
                    if let Ok(Some(value)) = e.try_get_attribute(key) {
                        let reference = value.value.to_string();
                        if !reference_in_sheet(&reference) {
                            return Err(SheetError::BadReference { reference });
                        }
                    }
                }
                "sheet" | "Relationship" | "definedName" => {
                    self.items += 1;
                    if self.items > MAX_WORKBOOK_ITEMS {
                        return Err(SheetError::TooManyWorkbookItems);
                    }
                }
                _ => {}
            }
        }
    }
}

/// A cell (`B7`), a row (`7`) or a range (`A1:B7`, its end not before its start)
/// within the largest sheet there is: columns A to XFD, rows 1 to 1048576. Anything
/// else calamine refuses anyway, unless its arithmetic overflows first.
fn reference_in_sheet(reference: &str) -> bool {
    // (column, row), 0 for a missing part.
    let cell = |part: &str| -> Option<(u32, u32)> {
        let digits = part.trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let letters = &part[..part.len() - digits.len()];
        if letters.len() > 3 || digits.len() > 7 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let col = letters.bytes().fold(0, |n, b| {
            n * 26 + u32::from(b.to_ascii_uppercase() - b'A') + 1
        });
        let row = digits.parse().unwrap_or(0);
        (col <= 16_384 && row <= 1_048_576).then_some((col, row))
    };
    match reference.split_once(':') {
        None => cell(reference).is_some(),
        Some((start, end)) => match (cell(start), cell(end)) {
            (Some((c1, r1)), Some((c2, r2))) => c1 <= c2 && r1 <= r2,
            _ => false,
        },
    }
}

/// The cells read so far, sparse: row → cells by column, each trimmed and non-empty.
#[derive(Default)]
struct Table {
    rows: BTreeMap<u32, Vec<String>>,
    text_bytes: usize,
}

impl Table {
    /// Keeps one cell, or refuses it by the limits; `place` names it for the error.
    fn put(
        &mut self,
        row: u32,
        col: u32,
        text: &str,
        place: impl Fn() -> String,
    ) -> Result<(), SheetError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        if row >= MAX_SHEET_ROWS || col >= MAX_COLUMNS {
            return Err(SheetError::OutOfBounds { cell: place() });
        }
        if text.len() > MAX_CELL_BYTES {
            return Err(SheetError::CellTooLong {
                cell: place(),
                len: text.len(),
            });
        }
        let cells = self.rows.entry(row).or_default();
        let col = col as usize;
        if cells.len() <= col {
            cells.resize(col + 1, String::new());
        }
        // A cell given twice replaces itself and its share of the text.
        self.text_bytes = self.text_bytes - cells[col].len() + text.len();
        if self.text_bytes > MAX_SHEET_TEXT_BYTES {
            return Err(SheetError::TooMuchText);
        }
        cells[col] = text.to_string();
        Ok(())
    }
}

/// "A1"-style name of a zero-based cell position.
fn cell_name(row: u32, col: u32) -> String {
    let mut letters = Vec::new();
    let mut n = u64::from(col) + 1;
    while n > 0 {
        let rem = ((n - 1) % 26) as u8;
        letters.push(b'A' + rem);
        n = (n - 1) / 26;
    }
    letters.reverse();
    format!(
        "{}{}",
        String::from_utf8_lossy(&letters),
        u64::from(row) + 1
    )
}

/// Maps header cells to known columns; `mac` is required, unknown columns refused
/// (a typo in a header must not silently drop a column).
fn header_map(header: &[String]) -> Result<HashMap<&'static str, usize>, SheetError> {
    let mut map = HashMap::new();
    for (index, cell) in header.iter().enumerate() {
        let name = cell.trim().to_ascii_lowercase();
        let name = match name.as_str() {
            "mac address" | "mac_address" | "hwaddr" => "mac",
            "host" | "name" => "hostname",
            "ip address" | "ip_address" | "address" => "ip",
            "pos" | "slot" | "u" => "position",
            other => other,
        };
        if name.is_empty() {
            continue;
        }
        let Some(known) = COLUMNS.iter().find(|c| **c == name) else {
            return Err(SheetError::UnknownColumn { name: cell.clone() });
        };
        if map.insert(*known, index).is_some() {
            return Err(SheetError::DuplicateColumn(known));
        }
    }
    if !map.contains_key("mac") {
        return Err(SheetError::NoMacColumn);
    }
    Ok(map)
}

/// The first row holding anything is the header; each later row is a machine, its
/// line the sheet's row number (CSV: the record's number).
fn rows_from_table(table: Table) -> Result<Vec<RawRow>, SheetError> {
    let mut lines = table.rows.into_iter();
    let Some((_, header)) = lines.next() else {
        return Err(SheetError::Empty);
    };
    let map = header_map(&header)?;
    let cell = |row: &[String], column: &str| {
        map.get(column)
            .and_then(|i| row.get(*i))
            .cloned()
            .unwrap_or_default()
    };
    let rows: Vec<RawRow> = lines
        .map(|(index, row)| RawRow {
            line: index as usize + 1,
            mac: cell(&row, "mac"),
            hostname: cell(&row, "hostname"),
            ip: cell(&row, "ip"),
            image: cell(&row, "image"),
            rack: cell(&row, "rack"),
            position: cell(&row, "position"),
            loader: cell(&row, "loader"),
        })
        .collect();
    if rows.is_empty() {
        return Err(SheetError::NoRows);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A normal workbook, as a spreadsheet program writes it: header and `rows` rows.
    fn workbook(rows: u32) -> Vec<u8> {
        let mut workbook = rust_xlsxwriter::Workbook::new();
        let sheet = workbook.add_worksheet();
        for (col, title) in ["MAC", "Hostname", "Rack", "Position"].iter().enumerate() {
            sheet.write_string(0, col as u16, *title).expect("write");
        }
        for row in 1..=rows {
            sheet
                .write_string(row, 0, format!("52:54:00:00:01:{row:02x}"))
                .expect("write");
            sheet
                .write_string(row, 1, format!("node{row}"))
                .expect("write");
            sheet.write_string(row, 2, "r1").expect("write");
            sheet.write_number(row, 3, f64::from(row)).expect("write");
        }
        workbook.save_to_buffer().expect("save")
    }

    const SHEET_PATH: &str = "xl/worksheets/sheet1.xml";
    const SHEET_HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">"#;

    /// A normal workbook with one entry replaced (or added) by `write`, which streams
    /// the entry's bytes into the zip: a large entry is never held whole.
    fn replacing(path: &str, write: impl FnOnce(&mut dyn io::Write)) -> Vec<u8> {
        let base = workbook(1);
        let mut source = zip::ZipArchive::new(Cursor::new(base)).expect("zip");
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for index in 0..source.len() {
            let entry = source.by_index_raw(index).expect("entry");
            if entry.name().expect("name") != path {
                out.raw_copy_file(entry).expect("copy");
            }
        }
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        out.start_file(path, options).expect("start");
        write(&mut out);
        out.finish().expect("finish").into_inner()
    }

    fn sheet_xml(body: &str) -> Vec<u8> {
        replacing(SHEET_PATH, |w| {
            write!(w, "{SHEET_HEAD}{body}</worksheet>").expect("write")
        })
    }

    /// Sets the unpacked size an entry declares, in its local and central headers.
    fn declare_size(bytes: &mut [u8], path: &str, size: u32) {
        let name = path.as_bytes();
        let u16_at = |b: &[u8], at: usize| usize::from(u16::from_le_bytes([b[at], b[at + 1]]));
        let mut patched = 0;
        for at in 0..bytes.len().saturating_sub(46) {
            // (signature, name length field, name, size field)
            let (name_len_at, name_at, size_at) = match &bytes[at..at + 4] {
                b"PK\x03\x04" => (at + 26, at + 30, at + 22),
                b"PK\x01\x02" => (at + 28, at + 46, at + 24),
                _ => continue,
            };
            let len = u16_at(bytes, name_len_at);
            if len == name.len() && bytes.get(name_at..name_at + len) == Some(name) {
                bytes[size_at..size_at + 4].copy_from_slice(&size.to_le_bytes());
                patched += 1;
            }
        }
        assert_eq!(patched, 2, "local and central header of {path}");
    }

    /// A compressible sheet of `total` bytes of rows, streamed in chunks.
    fn bomb(total: usize) -> Vec<u8> {
        replacing(SHEET_PATH, |w| {
            write!(w, "{SHEET_HEAD}<sheetData>").expect("write");
            let row = "<row r=\"2\"><c r=\"A2\" t=\"inlineStr\"><is><t>x</t></is></c></row>";
            let chunk = row.repeat((64 << 10) / row.len());
            let mut written = 0;
            while written < total {
                w.write_all(chunk.as_bytes()).expect("write");
                written += chunk.len();
            }
            write!(w, "</sheetData></worksheet>").expect("write");
        })
    }

    const CHILD: &str = "RACKBOOT_SHEET_TEST_CHILD";

    fn proc_status_kib(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("field")
    }

    /// Runs this test again alone in a child process of the test binary (the other
    /// tests' memory would blur a measurement here): the child builds the file,
    /// then runs `check` on it, reporting how far its peak resident memory rose above what it
    /// held before the check, and how long the check took. Asserts both are small.
    fn checked_cheaply(test: &str, build: impl FnOnce() -> Vec<u8>, check: impl FnOnce(&[u8])) {
        if std::env::var_os(CHILD).is_some() {
            let bytes = build();
            // The peak so far is the build's: reset it where the kernel lets us
            // (Linux 4.0+), else the measure only overstates.
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            let before = proc_status_kib("VmRSS:");
            let started = Instant::now();
            check(&bytes);
            let ms = started.elapsed().as_millis();
            let growth = proc_status_kib("VmHWM:").saturating_sub(before);
            println!("CHECK growth_kib={growth} ms={ms}");
            return;
        }
        let name = format!("bulk::sheet::tests::{test}");
        let output = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .expect("child");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report = stdout
            .lines()
            .find_map(|l| l.split_once("CHECK ").map(|(_, r)| r))
            .unwrap_or_else(|| panic!("no report from the child: {stdout}"));
        let value = |key: &str| -> u64 {
            report
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .expect("value")
        };
        // The unbounded importer took 1.8 GB (or aborted at 512 GiB) on these files.
        assert!(value("growth_kib=") < 48 << 10, "{report}");
        assert!(value("ms=") < 10_000, "{report}");
    }

    #[test]
    fn a_normal_workbook_and_csv_import() {
        let rows = parse_upload("rack.xlsx", &workbook(3)).expect("xlsx");
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (
                rows[2].line,
                rows[2].mac.as_str(),
                rows[2].position.as_str()
            ),
            (4, "52:54:00:00:01:03", "3")
        );
        let csv = "mac,hostname,rack\n52:54:00:00:01:01,n1,r1\n\
            52:54:00:00:01:02,n2,r1\n52:54:00:00:01:03,n3,r1\n";
        let rows = parse_upload("rack.csv", csv.as_bytes()).expect("csv");
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[2].line, rows[2].hostname.as_str()), (4, "n3"));
    }

    #[test]
    fn a_claimed_whole_sheet_is_checked_cheaply() {
        checked_cheaply(
            "a_claimed_whole_sheet_is_checked_cheaply",
            || {
                sheet_xml(
                    r#"<dimension ref="A1:XFD1048576"/><sheetData>
<row r="1"><c r="A1" t="inlineStr"><is><t>mac</t></is></c></row>
<row r="1048576"><c r="XFD1048576"><v>1</v></c></row></sheetData>"#,
                )
            },
            |bytes| {
                let error = parse_upload("hostile.xlsx", bytes).expect_err("refused");
                assert_eq!(
                    error,
                    SheetError::DimensionTooLarge {
                        claimed: "A1:XFD1048576".into()
                    }
                );
                assert!(error.to_string().contains("10001 rows"), "{error}");
            },
        );
    }

    #[test]
    fn a_cell_reference_too_long_to_count_is_a_bad_sheet() {
        // Found by fuzzing (tests/fuzz, bulk_xlsx): calamine overflowed on it.
        let bytes = sheet_xml(
            r#"<sheetData>
<row r="1"><c r="A1" t="inlineStr"><is><t>mac</t></is></c></row>
<row r="2"><c r="AAAAAAAAAAAAAAAA2"><v>1</v></c></row></sheetData>"#,
        );
        let err = parse_upload("hostile.xlsx", &bytes).expect_err("refused");
        assert!(
            matches!(
                err,
                SheetError::BadSheet(_)
                    | SheetError::OutOfBounds { .. }
                    | SheetError::BadReference { .. }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_far_cell_is_checked_cheaply() {
        checked_cheaply(
            "a_far_cell_is_checked_cheaply",
            // No dimension: the cells alone say how far the sheet reaches.
            || {
                sheet_xml(
                    r#"<sheetData>
<row r="1"><c r="A1" t="inlineStr"><is><t>mac</t></is></c></row>
<row r="2000"><c r="XFD2000"><v>1</v></c></row></sheetData>"#,
                )
            },
            |bytes| {
                assert_eq!(
                    parse_upload("hostile.xlsx", bytes).expect_err("refused"),
                    SheetError::OutOfBounds {
                        cell: "XFD2000".into()
                    }
                );
            },
        );
    }

    #[test]
    fn cells_at_the_limits_are_read_and_past_them_refused() {
        let edge = |cell: &str| {
            sheet_xml(&format!(
                r#"<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>mac</t></is></c></row>
<row r="2"><c r="A2" t="inlineStr"><is><t>52:54:00:00:00:01</t></is></c></row>
<row><c r="{cell}"><v>1</v></c></row></sheetData>"#
            ))
        };
        // BL is the 64th column, row 10001 the last read.
        assert!(parse_upload("x.xlsx", &edge("BL10001")).is_ok());
        assert_eq!(
            parse_upload("x.xlsx", &edge("BM2")),
            Err(SheetError::OutOfBounds { cell: "BM2".into() })
        );
        assert_eq!(
            parse_upload("x.xlsx", &edge("A10002")),
            Err(SheetError::OutOfBounds {
                cell: "A10002".into()
            })
        );
        let long = "x".repeat(MAX_CELL_BYTES + 1);
        let bytes = sheet_xml(&format!(
            r#"<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>{long}</t></is></c></row></sheetData>"#
        ));
        assert_eq!(
            parse_upload("x.xlsx", &bytes),
            Err(SheetError::CellTooLong {
                cell: "A1".into(),
                len: MAX_CELL_BYTES + 1
            })
        );
    }

    #[test]
    fn a_zip_bomb_is_refused_by_its_declared_size() {
        checked_cheaply(
            "a_zip_bomb_is_refused_by_its_declared_size",
            || bomb(200 << 20),
            |bytes| {
                assert!(bytes.len() < 2 << 20, "{} bytes", bytes.len());
                match parse_upload("bomb.xlsx", bytes) {
                    Err(SheetError::UnpackedTooLarge { claimed }) => {
                        assert!(claimed > 200 << 20)
                    }
                    other => panic!("{other:?}"),
                }
            },
        );
    }

    #[test]
    fn a_zip_bomb_lying_about_its_size_is_refused_while_inflating() {
        checked_cheaply(
            "a_zip_bomb_lying_about_its_size_is_refused_while_inflating",
            || {
                let mut bytes = bomb(200 << 20);
                declare_size(&mut bytes, SHEET_PATH, 4096);
                bytes
            },
            |bytes| {
                // Refused by our count or by the zip crate's own, naming the entry.
                match parse_upload("bomb.xlsx", bytes) {
                    Err(SheetError::EntrySizeLie { entry, declared }) => {
                        assert_eq!((entry.as_str(), declared), (SHEET_PATH, 4096))
                    }
                    Err(SheetError::BadEntry { entry, why }) => {
                        assert_eq!(entry, SHEET_PATH);
                        assert!(why.contains("declared"), "{why}");
                    }
                    other => panic!("{other:?}"),
                }
            },
        );
    }

    #[test]
    fn shared_strings_and_styles_past_their_limits_are_refused() {
        let claims = replacing("xl/sharedStrings.xml", |w| {
            write!(
                w,
                r#"<?xml version="1.0"?><sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="4000000000000"><si><t>mac</t></si></sst>"#
            )
            .expect("write")
        });
        assert_eq!(
            parse_upload("x.xlsx", &claims),
            Err(SheetError::TooManySharedStrings {
                claimed: "4000000000000".into()
            })
        );
        let holds = replacing("xl/sharedStrings.xml", |w| {
            write!(w, r#"<?xml version="1.0"?><sst>"#).expect("write");
            for _ in 0..=MAX_SHARED_STRINGS {
                w.write_all(b"<si/>").expect("write");
            }
            write!(w, "</sst>").expect("write");
        });
        assert!(matches!(
            parse_upload("x.xlsx", &holds),
            Err(SheetError::TooManySharedStrings { .. })
        ));
        let items = replacing("xl/workbook.xml", |w| {
            write!(w, "<workbook><sheets>").expect("write");
            for n in 0..=MAX_WORKBOOK_ITEMS {
                write!(w, r#"<sheet name="s{n}" sheetId="{n}" r:id="rId1"/>"#).expect("write");
            }
            write!(w, "</sheets></workbook>").expect("write");
        });
        assert_eq!(
            parse_upload("x.xlsx", &items),
            Err(SheetError::TooManyWorkbookItems)
        );
    }

    /// calamine would copy the 64 KiB font into each of the 100,000 cell styles
    /// (6 GiB); the styles are not read at all.
    #[test]
    fn styles_that_would_multiply_are_not_read() {
        checked_cheaply(
            "styles_that_would_multiply_are_not_read",
            || {
                replacing("xl/styles.xml", |w| {
                    let font = "f".repeat(64 << 10);
                    write!(
                        w,
                        r#"<styleSheet><fonts count="1"><font><name val="{font}"/></font></fonts><cellXfs>"#
                    )
                    .expect("write");
                    for _ in 0..100_000 {
                        w.write_all(br#"<xf fontId="0"/>"#).expect("write");
                    }
                    write!(w, "</cellXfs></styleSheet>").expect("write");
                })
            },
            |bytes| {
                let rows = parse_upload("styled.xlsx", bytes).expect("read without styles");
                assert_eq!(rows[0].mac, "52:54:00:00:01:01");
            },
        );
    }

    #[test]
    fn csv_rows_columns_and_cells_are_bounded() {
        let mut text = String::from("mac\n");
        for n in 0..MAX_DATA_ROWS {
            text.push_str(&format!("52:54:00:{:02x}:{:02x}:01\n", n >> 8, n & 0xff));
        }
        assert_eq!(
            parse_csv(text.as_bytes()).expect("full").len(),
            MAX_DATA_ROWS
        );
        text.push_str("52:54:00:ff:ff:01\n");
        assert_eq!(
            parse_csv(text.as_bytes()),
            Err(SheetError::OutOfBounds {
                cell: format!("line {} field 1", MAX_SHEET_ROWS + 1)
            })
        );
        let wide = format!("mac{}\n1{}x\n", ",".repeat(70), ",".repeat(70));
        assert_eq!(
            parse_csv(wide.as_bytes()),
            Err(SheetError::OutOfBounds {
                cell: "line 2 field 71".into()
            })
        );
        let long = format!("mac\n{}\n", "a".repeat(MAX_CELL_BYTES + 1));
        assert!(matches!(
            parse_csv(long.as_bytes()),
            Err(SheetError::CellTooLong { .. })
        ));
        let big = vec![b'a'; MAX_IMPORT_BYTES + 1];
        assert!(matches!(
            parse_upload("big.csv", &big),
            Err(SheetError::FileTooLarge { .. })
        ));
    }

    /// Found by `tests/fuzz` (`bulk_xlsx`): calamine 0.38 reads cell references with
    /// unchecked arithmetic (base-26 columns, base-10 rows, a range's end less its
    /// start), which panics in a debug build and wraps in a release one.
    #[test]
    fn cell_references_past_any_sheet_are_refused_before_calamine_reads_them() {
        for (body, reference) in [
            (
                r#"<dimension ref="A1:FORKBOOKVIEW1"/><sheetData/>"#,
                "A1:FORKBOOKVIEW1",
            ),
            (r#"<dimension ref="B2:A1"/><sheetData/>"#, "B2:A1"),
            (
                r#"<sheetData><row r="1"><c r="A99999999999"><v>1</v></c></row></sheetData>"#,
                "A99999999999",
            ),
            (
                r#"<sheetData><row r="99999999999"/></sheetData>"#,
                "99999999999",
            ),
        ] {
            assert_eq!(
                parse_upload("hostile.xlsx", &sheet_xml(body)),
                Err(SheetError::BadReference {
                    reference: reference.into()
                }),
                "{body}"
            );
        }
        // The corners of a sheet, in either case, are references like any other.
        let corners = r#"<dimension ref="a1:XFD1048576"/><sheetData/>"#;
        assert!(matches!(
            parse_upload("big.xlsx", &sheet_xml(corners)),
            Err(SheetError::DimensionTooLarge { .. })
        ));
    }
}
