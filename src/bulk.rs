//! Spreadsheets: machines read from CSV and XLSX (racks arrive as spreadsheets) into
//! rows for the import check (`service::import`), previews staged for their
//! confirmation, and the inventory exported as CSV and XLSX.

use crate::inventory::{self, MachineDetail, MachineQuery};
use crate::mac::MacAddr;
use crate::store::Db;
use crate::store::StoreError;
use std::collections::HashMap;
use std::sync::Mutex;

mod sheet;

pub use sheet::{
    MAX_CELL_BYTES, MAX_COLUMNS, MAX_DATA_ROWS, MAX_IMPORT_BYTES, MAX_SHARED_STRINGS,
    MAX_SHEET_ROWS, MAX_SHEET_TEXT_BYTES, MAX_WORKBOOK_ITEMS, MAX_XLSX_ENTRIES,
    MAX_XLSX_UNPACKED_BYTES, SheetError, parse_csv, parse_upload, parse_xlsx,
};

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
    /// `ipxe`, `grub`, `uki`, or empty for the default of its architecture.
    pub loader: String,
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
    pub loader: String,
    pub errors: Vec<String>,
}

impl CheckedRow {
    pub fn mac_addr(&self) -> Option<MacAddr> {
        MacAddr::parse(&self.mac).ok()
    }
}

pub fn all_machines(conn: &mut Db) -> Result<Vec<MachineDetail>, StoreError> {
    let query = MachineQuery {
        limit: u32::MAX,
        ..MachineQuery::default()
    };
    Ok(inventory::search(conn, &query)?.0)
}

const EXPORT_HEADER: [&str; 11] = [
    "mac",
    "hostname",
    "ip",
    "image",
    "mode",
    "rack",
    "position",
    "loader",
    "firmware",
    "lease_ip",
    "last_seen",
];

fn export_cells(m: &MachineDetail) -> [String; 11] {
    [
        m.mac.clone(),
        m.hostname.clone().unwrap_or_default(),
        m.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        m.image.clone().unwrap_or_default(),
        m.mode.to_string(),
        m.rack.clone().unwrap_or_default(),
        m.position.clone().unwrap_or_default(),
        m.loader.map(|l| l.to_string()).unwrap_or_default(),
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
            .write_record(
                export_cells(m)
                    .iter()
                    .map(|cell| spreadsheet_safe(cell).into_owned()),
            )
            .map_err(|e| e.to_string())?;
    }
    writer.into_inner().map_err(|e| e.to_string())
}

/// A CSV cell a spreadsheet will not run as a formula (OWASP's advice on CSV
/// injection): one that starts with `=`, `+`, `-`, `@`, a tab or a carriage return is
/// prefixed with `'`. A rack named `=cmd|' /C calc'!A0` stays text. (XLSX cells are
/// written as strings and need nothing.)
fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => std::borrow::Cow::Owned(format!("'{cell}")),
        _ => std::borrow::Cow::Borrowed(cell),
    }
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

/// Previews kept at once for one user; a new one drops that user's oldest.
pub const MAX_STAGED_PER_USER: usize = 5;
/// Previews kept at once for everyone; past it a new one is refused until some are
/// confirmed or expire (refused rather than evicting: one user must not be able to
/// drop everyone else's previews).
pub const MAX_STAGED_TOTAL: usize = 100;
/// Rows kept across all previews (ten full files): memory stays bounded however the
/// previews are split.
pub const MAX_STAGED_ROWS: usize = 10 * MAX_DATA_ROWS;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    #[error(
        "too many previews are waiting for confirmation (at most {MAX_STAGED_TOTAL} previews and {MAX_STAGED_ROWS} rows for everyone); confirm one or try again when older ones expire"
    )]
    Full,
}

/// A preview waiting for confirmation: who uploaded it, its rows, when, and in
/// which order (two in the same millisecond still have an oldest).
struct Staged {
    user: String,
    rows: Vec<CheckedRow>,
    at_ms: i64,
    seq: u64,
}

#[derive(Default)]
struct StagedInner {
    previews: HashMap<String, Staged>,
    next_seq: u64,
}

impl StagedInner {
    fn prune(&mut self, now_ms: i64) {
        self.previews
            .retain(|_, s| now_ms - s.at_ms < STAGED_TTL_MS);
    }

    fn oldest_of(&self, user: &str) -> Option<String> {
        self.previews
            .iter()
            .filter(|(_, s)| s.user == user)
            .min_by_key(|(_, s)| (s.at_ms, s.seq))
            .map(|(id, _)| id.clone())
    }
}

/// Previews waiting for confirmation, by id, for the user who uploaded them; bounded
/// per user, in number and in rows, and pruned of expired ones on every call.
#[derive(Default)]
pub struct StagedImports {
    staged: Mutex<StagedInner>,
}

impl StagedImports {
    pub fn stage(
        &self,
        user: &str,
        rows: Vec<CheckedRow>,
        now_ms: i64,
    ) -> Result<String, StageError> {
        let mut inner = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        inner.prune(now_ms);
        // The user's own older previews make room first, then the shared caps apply.
        loop {
            let mine = inner.previews.values().filter(|s| s.user == user).count();
            let total_rows: usize = inner.previews.values().map(|s| s.rows.len()).sum();
            let over = mine >= MAX_STAGED_PER_USER
                || inner.previews.len() >= MAX_STAGED_TOTAL
                || total_rows + rows.len() > MAX_STAGED_ROWS;
            if !over {
                break;
            }
            match inner.oldest_of(user) {
                Some(id) => {
                    inner.previews.remove(&id);
                }
                None => return Err(StageError::Full),
            }
        }
        let id = hex::encode(rand::random::<[u8; 16]>());
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.previews.insert(
            id.clone(),
            Staged {
                user: user.to_string(),
                rows,
                at_ms: now_ms,
                seq,
            },
        );
        Ok(id)
    }

    pub fn take(&self, id: &str, user: &str, now_ms: i64) -> Option<Vec<CheckedRow>> {
        let mut inner = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        inner.prune(now_ms);
        match inner.previews.get(id) {
            Some(s) if s.user == user => inner.previews.remove(id).map(|s| s.rows),
            _ => None,
        }
    }

    /// Previews kept now (for tests and status).
    pub fn len(&self) -> usize {
        let inner = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        inner.previews.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        assert_eq!(
            parse_csv(b"hostname\nx\n").expect_err("no mac"),
            SheetError::NoMacColumn
        );
        assert!(
            parse_csv(b"mac,colour\n1\n")
                .expect_err("unknown")
                .to_string()
                .contains("colour")
        );
    }

    #[test]
    fn staged_previews_belong_to_their_user_and_expire() {
        let staged = StagedImports::default();
        let id = staged.stage("ann", vec![], 0).expect("room");
        assert!(staged.take(&id, "bob", 1).is_none());
        let id = staged.stage("ann", vec![], 0).expect("room");
        assert!(staged.take(&id, "ann", STAGED_TTL_MS + 1).is_none());
        let id = staged.stage("ann", vec![], 0).expect("room");
        assert!(staged.take(&id, "ann", 1).is_some());
        assert!(staged.take(&id, "ann", 1).is_none(), "once");
    }

    fn rows(n: usize) -> Vec<CheckedRow> {
        let row = CheckedRow {
            loader: String::new(),
            line: 2,
            action: Action::Add,
            mac: String::new(),
            hostname: String::new(),
            ip: String::new(),
            image: String::new(),
            rack: String::new(),
            position: String::new(),
            errors: Vec::new(),
        };
        vec![row; n]
    }

    #[test]
    fn staged_previews_are_capped_per_user_in_total_and_in_rows() {
        let staged = StagedImports::default();
        // A user's sixth preview drops their oldest, not anyone else's.
        let first = staged.stage("ann", rows(1), 0).expect("room");
        let bobs = staged.stage("bob", rows(1), 0).expect("room");
        for _ in 1..MAX_STAGED_PER_USER {
            staged.stage("ann", rows(1), 0).expect("room");
        }
        assert_eq!(staged.len(), MAX_STAGED_PER_USER + 1);
        let newest = staged.stage("ann", rows(1), 0).expect("room");
        assert_eq!(staged.len(), MAX_STAGED_PER_USER + 1);
        assert!(staged.take(&first, "ann", 1).is_none(), "oldest dropped");
        assert!(staged.take(&newest, "ann", 1).is_some());
        assert!(staged.take(&bobs, "bob", 1).is_some());
        // Everyone together: past the total a newcomer is refused, not evicting.
        let staged = StagedImports::default();
        for user in 0..MAX_STAGED_TOTAL {
            staged.stage(&format!("u{user}"), rows(1), 0).expect("room");
        }
        assert_eq!(staged.stage("late", rows(1), 0), Err(StageError::Full));
        // A user already holding one replaces it instead.
        assert!(staged.stage("u0", rows(1), 0).is_ok());
        assert_eq!(staged.len(), MAX_STAGED_TOTAL);
        // Expired previews are pruned and make room.
        assert!(staged.stage("late", rows(1), STAGED_TTL_MS).is_ok());
        assert_eq!(staged.len(), 1);
        // Rows: ten full files fill it; an eleventh from a new user is refused.
        let staged = StagedImports::default();
        for user in 0..10 {
            staged
                .stage(&format!("u{user}"), rows(MAX_DATA_ROWS), 0)
                .expect("room");
        }
        assert_eq!(staged.stage("late", rows(1), 0), Err(StageError::Full));
    }

    #[test]
    fn csv_cells_that_start_a_formula_are_kept_as_text() {
        assert_eq!(
            spreadsheet_safe("=cmd|' /C calc'!A0"),
            "'=cmd|' /C calc'!A0"
        );
        for hostile in ["+1", "-1+2", "@SUM(A1)", "\tx", "\rx"] {
            assert!(spreadsheet_safe(hostile).starts_with('\''), "{hostile:?}");
        }
        assert_eq!(spreadsheet_safe("r1"), "r1");
        assert_eq!(spreadsheet_safe("52:54:00:00:00:01"), "52:54:00:00:00:01");
        assert_eq!(spreadsheet_safe(""), "");
    }
}
