//! Bulk work: importing machines from CSV and XLSX (racks arrive as spreadsheets)
//! with a checked preview before anything is written, exporting the inventory as CSV
//! and XLSX, and receiving image uploads streamed to disk.

use crate::http::AppState;
use crate::inventory::{self, MachineDetail, MachineExtra, MachinePatch, MachineQuery};
use crate::lifecycle::LifecycleConfig;
use crate::mac::MacAddr;
use crate::store::{self, NewMachine, StoreError};
use axum::extract::Multipart;
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use tokio::io::AsyncWriteExt;

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
    fn mac_addr(&self) -> Option<MacAddr> {
        MacAddr::parse(&self.mac).ok()
    }
    fn opt(text: &str) -> Option<String> {
        Some(text.trim().to_string()).filter(|s| !s.is_empty())
    }
    pub fn new_machine(&self) -> NewMachine {
        NewMachine {
            mac: self.mac_addr(),
            hostname: Self::opt(&self.hostname),
            image: Self::opt(&self.image),
            ip: Self::opt(&self.ip).and_then(|ip| ip.parse().ok()),
        }
    }
    pub fn extra(&self) -> MachineExtra {
        MachineExtra {
            rack: Self::opt(&self.rack),
            position: Self::opt(&self.position),
            ..MachineExtra::default()
        }
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

/// Checks every row against the file and the inventory; nothing is written.
pub fn check_rows(conn: &Connection, rows: Vec<RawRow>) -> Result<Vec<CheckedRow>, StoreError> {
    let images: HashSet<String> = store::list_images(conn)?
        .into_iter()
        .map(|i| i.name)
        .collect();
    let fixed: HashMap<Ipv4Addr, MacAddr> = store::fixed_addresses(conn)?.into_iter().collect();
    let mut seen_macs: HashMap<MacAddr, usize> = HashMap::new();
    let mut seen_ips: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut seen_hosts: HashMap<String, usize> = HashMap::new();
    let mut checked = Vec::with_capacity(rows.len());
    for row in rows {
        let mut errors = Vec::new();
        let mac = match MacAddr::parse(&row.mac) {
            Ok(mac) => {
                if let Some(first) = seen_macs.insert(mac, row.line) {
                    errors.push(format!("MAC also on line {first}"));
                }
                Some(mac)
            }
            Err(_) if row.mac.is_empty() => {
                errors.push("MAC is missing".into());
                None
            }
            Err(_) => {
                errors.push(format!("{:?} is not a MAC address", row.mac));
                None
            }
        };
        let action = match mac {
            Some(mac) if store::get_machine(conn, mac)?.is_some() => Action::Update,
            _ => Action::Add,
        };
        if !row.hostname.is_empty() {
            if !crate::validate::valid_hostname(&row.hostname) {
                errors.push(format!("{:?} is not a valid host name", row.hostname));
            } else if let Some(first) = seen_hosts.insert(row.hostname.to_lowercase(), row.line) {
                errors.push(format!("hostname also on line {first}"));
            }
        }
        if !row.ip.is_empty() {
            match row.ip.parse::<Ipv4Addr>() {
                Ok(ip) => {
                    if let Some(first) = seen_ips.insert(ip, row.line) {
                        errors.push(format!("IP also on line {first}"));
                    }
                    if let Some(owner) = fixed.get(&ip)
                        && Some(*owner) != mac
                    {
                        errors.push(format!("{ip} is already the fixed address of {owner}"));
                    }
                }
                Err(_) => errors.push(format!("{:?} is not an IPv4 address", row.ip)),
            }
        }
        if !row.image.is_empty() && !images.contains(&row.image) {
            errors.push(format!("no image named {:?}", row.image));
        }
        checked.push(CheckedRow {
            line: row.line,
            action,
            mac: mac.map_or(row.mac.clone(), |m| m.to_string()),
            hostname: row.hostname,
            ip: row.ip,
            image: row.image,
            rack: row.rack,
            position: row.position,
            errors,
        });
    }
    Ok(checked)
}

/// Writes checked rows in one transaction: all of them, or none.
pub fn apply_rows(
    conn: &mut Connection,
    rows: &[CheckedRow],
    config: &LifecycleConfig,
    actor: &str,
    now_ms: i64,
) -> Result<String, StoreError> {
    // Check again: the inventory may have changed since the preview.
    let raw: Vec<RawRow> = rows
        .iter()
        .map(|r| RawRow {
            line: r.line,
            mac: r.mac.clone(),
            hostname: r.hostname.clone(),
            ip: r.ip.clone(),
            image: r.image.clone(),
            rack: r.rack.clone(),
            position: r.position.clone(),
        })
        .collect();
    let tx = conn.transaction()?;
    let fresh = check_rows(&tx, raw)?;
    if let Some(bad) = fresh.iter().find(|r| !r.errors.is_empty()) {
        return Err(StoreError::Conflict(format!(
            "line {}: {}",
            bad.line,
            bad.errors.join("; ")
        )));
    }
    let (mut added, mut updated) = (0, 0);
    for row in &fresh {
        let Some(mac) = row.mac_addr() else { continue };
        match row.action {
            Action::Add => {
                inventory::add_in_tx(&tx, &row.new_machine(), &row.extra(), config, actor, now_ms)?;
                added += 1;
            }
            Action::Update => {
                let new = row.new_machine();
                let patch = MachinePatch {
                    hostname: new.hostname.clone().map(Some),
                    ip: new.ip.map(Some),
                    rack: row.extra().rack.map(Some),
                    position: row.extra().position.map(Some),
                    ..MachinePatch::default()
                };
                inventory::update_in_tx(&tx, mac, &patch, actor, now_ms)?;
                if let Some(image) = new.image {
                    inventory::set_image_in_tx(&tx, mac, Some(&image), actor, now_ms)?;
                }
                updated += 1;
            }
        }
    }
    tx.commit()?;
    Ok(format!("Imported: {added} added, {updated} updated."))
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

/// Streams one multipart file field to `dest`, returning its sha256 and size.
async fn stream_field(
    field: &mut axum::extract::multipart::Field<'_>,
    dest: &std::path::Path,
) -> Result<(String, u64), String> {
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| format!("upload interrupted: {e}"))?
    {
        hasher.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk)
            .await
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    }
    file.sync_all()
        .await
        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    Ok((hex::encode(hasher.finalize()), size))
}

/// Receives an image upload (name, kernel, initrd, cmdline, install files), each file
/// streamed to a staging directory and moved into place once all arrived.
pub async fn receive_image(
    app: &AppState,
    mut multipart: Multipart,
    actor: &str,
) -> Result<store::Image, String> {
    let staging = app
        .data_dir
        .join("uploads")
        .join(hex::encode(rand::random::<[u8; 8]>()));
    tokio::fs::create_dir_all(staging.join("files"))
        .await
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let result = receive_into(app, &mut multipart, &staging, actor).await;
    if let Err(e) = tokio::fs::remove_dir_all(&staging).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %staging.display(), "upload staging not removed: {e}");
    }
    result
}

async fn receive_into(
    app: &AppState,
    multipart: &mut Multipart,
    staging: &std::path::Path,
    actor: &str,
) -> Result<store::Image, String> {
    let (mut name, mut cmdline) = (String::new(), String::new());
    let (mut kernel, mut initrd) = (None, None);
    let mut files = Vec::new();
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| format!("bad upload: {e}"))?;
        let Some(mut field) = field else { break };
        match field.name().unwrap_or("") {
            "name" => {
                name = field
                    .text()
                    .await
                    .map_err(|e| e.to_string())?
                    .trim()
                    .to_string()
            }
            "cmdline" => {
                cmdline = field
                    .text()
                    .await
                    .map_err(|e| e.to_string())?
                    .trim()
                    .to_string()
            }
            "kernel" => kernel = Some(stream_field(&mut field, &staging.join("kernel")).await?),
            "initrd" => initrd = Some(stream_field(&mut field, &staging.join("initrd")).await?),
            "files" => {
                let file_name = field.file_name().unwrap_or("").to_string();
                if file_name.is_empty() {
                    continue;
                }
                crate::images::validate_name(&file_name).map_err(|e| e.to_string())?;
                stream_field(&mut field, &staging.join("files").join(&file_name)).await?;
                files.push(file_name);
            }
            other => return Err(format!("unexpected form field {other:?}")),
        }
    }
    crate::images::validate_name(&name).map_err(|e| e.to_string())?;
    let (Some((kernel_sha256, kernel_size)), Some((initrd_sha256, _))) = (kernel, initrd) else {
        return Err("both a kernel and an initrd are needed".into());
    };
    if kernel_size == 0 {
        return Err("the kernel file is empty".into());
    }
    let exists_name = name.clone();
    let exists = app
        .store
        .call(move |conn| store::get_image(conn, &exists_name))
        .await
        .map_err(|e| e.to_string())?;
    if exists.is_some() {
        return Err(format!(
            "an image named {name} exists; delete it first or choose another name"
        ));
    }
    let dir = app.data_dir.join("images").join(&name);
    if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(|e| e.to_string())?;
    }
    if let Some(parent) = dir.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| e.to_string())?;
    }
    tokio::fs::rename(staging, &dir)
        .await
        .map_err(|e| format!("cannot move the upload into place: {e}"))?;
    let image = store::Image {
        name: name.clone(),
        kernel_path: dir.join("kernel").display().to_string(),
        kernel_sha256,
        initrd_path: dir.join("initrd").display().to_string(),
        initrd_sha256,
        cmdline,
    };
    let saved = image.clone();
    let actor = actor.to_string();
    let now = crate::clock::now_ms();
    app.store
        .call(move |conn| {
            store::put_image(conn, &saved, now)?;
            store::insert_event_by(
                conn,
                now,
                None,
                "image.added",
                format!(
                    "{} kernel={} files={}",
                    saved.name,
                    saved.kernel_sha256,
                    files.join(",")
                ),
                Some(&actor),
            )
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = store::open_connection_for_tests();
        store::put_image(
            &conn,
            &store::Image {
                name: "debian".into(),
                kernel_path: "k".into(),
                kernel_sha256: String::new(),
                initrd_path: "i".into(),
                initrd_sha256: String::new(),
                cmdline: String::new(),
            },
            0,
        )
        .expect("image");
        conn
    }

    const SHEET: &str = "MAC,Hostname,IP,Image,Rack,Position\n\
        52:54:00:00:00:01,node1,192.0.2.11,debian,r1,1\n\
        52-54-00-00-00-02,node2,,,r1,2\n";

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
    fn preview_reports_each_rows_errors() {
        let conn = db();
        let text = "mac,hostname,ip,image\n\
            52:54:00:00:00:01,node1,192.0.2.11,debian\n\
            52:54:00:00:00:01,node1b,192.0.2.12,debian\n\
            zz:zz,bad_host,192.0.2.300,ubuntu\n\
            52:54:00:00:00:03,node3,192.0.2.11,\n";
        let rows = check_rows(&conn, parse_csv(text.as_bytes()).expect("parses")).expect("check");
        assert!(rows[0].errors.is_empty(), "{:?}", rows[0].errors);
        assert!(
            rows[1].errors.iter().any(|e| e.contains("line 2")),
            "{:?}",
            rows[1].errors
        );
        assert_eq!(rows[2].errors.len(), 4, "{:?}", rows[2].errors);
        assert!(
            rows[3]
                .errors
                .iter()
                .any(|e| e.contains("IP also on line 2")),
            "{:?}",
            rows[3].errors
        );
    }

    #[test]
    fn import_applies_all_or_nothing_then_updates() {
        let mut conn = db();
        let config = LifecycleConfig::default();
        let rows = check_rows(&conn, parse_csv(SHEET.as_bytes()).expect("parses")).expect("check");
        let summary = apply_rows(&mut conn, &rows, &config, "user:ann", 1).expect("apply");
        assert_eq!(summary, "Imported: 2 added, 0 updated.");
        let m1 = inventory::machine(&conn, MacAddr([0x52, 0x54, 0, 0, 0, 1]))
            .expect("q")
            .expect("m");
        assert_eq!(m1.mode, crate::lifecycle::Mode::Install);
        assert_eq!(m1.rack.as_deref(), Some("r1"));
        // The same sheet again updates instead of failing.
        let again = check_rows(
            &conn,
            parse_csv(SHEET.replace("node2", "node2b").as_bytes()).expect("p"),
        )
        .expect("c");
        assert!(
            again
                .iter()
                .all(|r| r.action == Action::Update && r.errors.is_empty())
        );
        apply_rows(&mut conn, &again, &config, "user:ann", 2).expect("apply");
        let m2 = inventory::machine(&conn, MacAddr([0x52, 0x54, 0, 0, 0, 2]))
            .expect("q")
            .expect("m");
        assert_eq!(m2.hostname.as_deref(), Some("node2b"));
        // A row that became invalid since the preview stops the whole import.
        let stale = check_rows(
            &conn,
            parse_csv(b"mac,image\n52:54:00:00:00:07,debian\n52:54:00:00:00:08,gone\n").expect("p"),
        )
        .expect("c");
        assert!(apply_rows(&mut conn, &stale, &config, "user:ann", 3).is_err());
        assert!(
            inventory::machine(&conn, MacAddr([0x52, 0x54, 0, 0, 0, 7]))
                .expect("q")
                .is_none()
        );
    }

    #[test]
    fn xlsx_round_trips_through_export() {
        let mut conn = db();
        let rows = check_rows(&conn, parse_csv(SHEET.as_bytes()).expect("parses")).expect("check");
        apply_rows(&mut conn, &rows, &LifecycleConfig::default(), "user:ann", 1).expect("apply");
        let machines = all_machines(&mut conn).expect("all");
        let xlsx = to_xlsx(&machines).expect("xlsx");
        let back = parse_xlsx(&xlsx);
        // The export has columns the import does not take (mode, firmware...).
        assert!(back.expect_err("export columns").contains("unknown column"));
        let csv_text = String::from_utf8(to_csv(&machines).expect("csv")).expect("utf8");
        assert!(csv_text.starts_with("mac,hostname,ip,image,mode"));
        assert!(csv_text.contains("52:54:00:00:00:01,node1,192.0.2.11,debian,install,r1,1"));
        // A sheet written as XLSX with the import columns reads back.
        let mut workbook = rust_xlsxwriter::Workbook::new();
        let sheet = workbook.add_worksheet();
        for (col, title) in ["mac", "hostname", "position"].iter().enumerate() {
            sheet.write_string(0, col as u16, *title).expect("write");
        }
        sheet
            .write_string(1, 0, "52:54:00:00:00:05")
            .expect("write");
        sheet.write_string(1, 1, "node5").expect("write");
        sheet.write_number(1, 2, 12.0).expect("write");
        let bytes = workbook.save_to_buffer().expect("save");
        let rows = parse_upload("rack.xlsx", &bytes).expect("xlsx parses");
        assert_eq!(rows[0].position, "12");
        assert_eq!(rows[0].hostname, "node5");
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
