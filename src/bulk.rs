//! Spreadsheets: machines read from CSV and XLSX (racks arrive as spreadsheets) into
//! rows for the import check (`service::import`), previews staged for their
//! confirmation, and the inventory exported as CSV and XLSX.

use crate::inventory::{self, MachineDetail, MachineQuery};
use crate::mac::MacAddr;
use crate::store::StoreError;
use rusqlite::Connection;
use std::collections::HashMap;
use std::sync::Mutex;

pub const MAX_IMPORT_BYTES: usize = 20 << 20;
/// A preview is kept this long for its confirmation.
const STAGED_TTL_MS: i64 = 30 * 60 * 1000;

/// One data row of an uploaded sheet, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRow {
    /// The row's line in the file (header is line 1).
    pub line: usize,
    pub mac: String,
    pub hostname: String,
    pub ip: String,
    pub image: String,
    pub rack: String,
    pub position: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Add,
    Update,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Add => "add",
            Action::Update => "update",
        })
    }
}

/// A row after checking against the file and the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRow {
    pub line: usize,
    pub action: Action,
    pub mac: String,
    pub hostname: String,
    pub ip: String,
    pub image: String,
    pub rack: String,
    pub position: String,
    pub errors: Vec<String>,
}

impl CheckedRow {
    pub fn mac_addr(&self) -> Option<MacAddr> {
        MacAddr::parse(&self.mac).ok()
    }
}

const COLUMNS: [&str; 6] = ["mac", "hostname", "ip", "image", "rack", "position"];

/// Maps header cells to known columns; `mac` is required, unknown columns refused
/// (a typo in a header must not silently drop a column).
fn header_map(header: &[String]) -> Result<HashMap<&'static str, usize>, String> {
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
            return Err(format!(
                "unknown column {cell:?}; known columns: {}",
                COLUMNS.join(", ")
            ));
        };
        if map.insert(*known, index).is_some() {
            return Err(format!("column {known} appears twice"));
        }
    }
    if !map.contains_key("mac") {
        return Err("the header row has no mac column".into());
    }
    Ok(map)
}

fn rows_from_table(table: Vec<Vec<String>>) -> Result<Vec<RawRow>, String> {
    let mut lines = table.into_iter().enumerate();
    let Some((_, header)) = lines.next() else {
        return Err("the file is empty".into());
    };
    let map = header_map(&header)?;
    let cell = |row: &[String], column: &str| {
        map.get(column)
            .and_then(|i| row.get(*i))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let rows: Vec<RawRow> = lines
        .filter(|(_, row)| row.iter().any(|c| !c.trim().is_empty()))
        .map(|(index, row)| RawRow {
            line: index + 1,
            mac: cell(&row, "mac"),
            hostname: cell(&row, "hostname"),
            ip: cell(&row, "ip"),
            image: cell(&row, "image"),
            rack: cell(&row, "rack"),
            position: cell(&row, "position"),
        })
        .collect();
    if rows.is_empty() {
        return Err("the file has a header but no rows".into());
    }
    Ok(rows)
}

pub fn parse_csv(bytes: &[u8]) -> Result<Vec<RawRow>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let mut table = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|e| format!("line {}: {e}", index + 1))?;
        table.push(record.iter().map(str::to_string).collect());
    }
    rows_from_table(table)
}

pub fn parse_xlsx(bytes: &[u8]) -> Result<Vec<RawRow>, String> {
    use calamine::{Data, Reader, Xlsx};
    let mut workbook = Xlsx::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a readable XLSX file: {e}"))?;
    let range = workbook
        .worksheet_range_at(0)
        .ok_or("the workbook has no sheet")?
        .map_err(|e| format!("cannot read the first sheet: {e}"))?;
    let table = range
        .rows()
        .map(|row| {
            row.iter()
                .map(|cell| match cell {
                    Data::Empty => String::new(),
                    // Positions typed as numbers arrive as floats: 12.0 means "12".
                    Data::Float(f) if f.fract() == 0.0 => format!("{f:.0}"),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    rows_from_table(table)
}

/// Parses an upload by its name (or, failing that, its content).
pub fn parse_upload(file_name: &str, bytes: &[u8]) -> Result<Vec<RawRow>, String> {
    let lower = file_name.to_ascii_lowercase();
    if lower.ends_with(".xlsx") || bytes.starts_with(b"PK\x03\x04") {
        parse_xlsx(bytes)
    } else {
        let text =
            std::str::from_utf8(bytes).map_err(|_| "the CSV file is not UTF-8 text".to_string())?;
        parse_csv(text.trim_start_matches('\u{feff}').as_bytes())
    }
}

pub fn all_machines(conn: &mut Connection) -> Result<Vec<MachineDetail>, StoreError> {
    let query = MachineQuery {
        limit: u32::MAX,
        ..MachineQuery::default()
    };
    Ok(inventory::search(conn, &query)?.0)
}

const EXPORT_HEADER: [&str; 10] = [
    "mac",
    "hostname",
    "ip",
    "image",
    "mode",
    "rack",
    "position",
    "firmware",
    "lease_ip",
    "last_seen",
];

fn export_cells(m: &MachineDetail) -> [String; 10] {
    [
        m.mac.clone(),
        m.hostname.clone().unwrap_or_default(),
        m.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        m.image.clone().unwrap_or_default(),
        m.mode.to_string(),
        m.rack.clone().unwrap_or_default(),
        m.position.clone().unwrap_or_default(),
        m.arch.clone().unwrap_or_default(),
        m.lease_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        m.last_seen_ms
            .map(|ms| crate::text::format_ms(Some(ms)))
            .unwrap_or_default(),
    ]
}

pub fn to_csv(machines: &[MachineDetail]) -> Result<Vec<u8>, String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(EXPORT_HEADER)
        .map_err(|e| e.to_string())?;
    for m in machines {
        writer
            .write_record(export_cells(m))
            .map_err(|e| e.to_string())?;
    }
    writer.into_inner().map_err(|e| e.to_string())
}

pub fn to_xlsx(machines: &[MachineDetail]) -> Result<Vec<u8>, String> {
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name("machines").map_err(|e| e.to_string())?;
    let bold = rust_xlsxwriter::Format::new().set_bold();
    for (col, title) in EXPORT_HEADER.iter().enumerate() {
        sheet
            .write_string_with_format(0, col as u16, *title, &bold)
            .map_err(|e| e.to_string())?;
    }
    for (row, m) in machines.iter().enumerate() {
        for (col, value) in export_cells(m).iter().enumerate() {
            sheet
                .write_string(row as u32 + 1, col as u16, value)
                .map_err(|e| e.to_string())?;
        }
    }
    workbook.save_to_buffer().map_err(|e| e.to_string())
}

/// A preview waiting for confirmation: who uploaded it, its rows, when.
type Staged = (String, Vec<CheckedRow>, i64);

/// Previews waiting for confirmation, by id, for the user who uploaded them.
#[derive(Default)]
pub struct StagedImports {
    staged: Mutex<HashMap<String, Staged>>,
}

impl StagedImports {
    pub fn stage(&self, user: &str, rows: Vec<CheckedRow>, now_ms: i64) -> String {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        staged.retain(|_, (_, _, at)| now_ms - *at < STAGED_TTL_MS);
        staged.insert(id.clone(), (user.to_string(), rows, now_ms));
        id
    }

    pub fn take(&self, id: &str, user: &str, now_ms: i64) -> Option<Vec<CheckedRow>> {
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        match staged.remove(id) {
            Some((owner, rows, at)) if owner == user && now_ms - at < STAGED_TTL_MS => Some(rows),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_header_aliases_and_bom() {
        let text = "\u{feff}mac address,host,ip\n52:54:00:00:00:09,n9,192.0.2.9\n\n";
        let rows = parse_upload("rack.csv", text.as_bytes()).expect("parses");
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].line, rows[0].hostname.as_str()), (2, "n9"));
        assert!(
            parse_csv(b"hostname\nx\n")
                .expect_err("no mac")
                .contains("no mac column")
        );
        assert!(
            parse_csv(b"mac,colour\n1\n")
                .expect_err("unknown")
                .contains("colour")
        );
    }

    #[test]
    fn staged_previews_belong_to_their_user_and_expire() {
        let staged = StagedImports::default();
        let id = staged.stage("ann", vec![], 0);
        assert!(staged.take(&id, "bob", 1).is_none());
        let id = staged.stage("ann", vec![], 0);
        assert!(staged.take(&id, "ann", STAGED_TTL_MS + 1).is_none());
        let id = staged.stage("ann", vec![], 0);
        assert!(staged.take(&id, "ann", 1).is_some());
        assert!(staged.take(&id, "ann", 1).is_none(), "once");
    }
}
