//! Import: rows of a CSV or XLSX sheet checked against the inventory with the same
//! field checks as a single machine, then written all together or not at all.

use super::machines::{self, Fields, NewMachine};
use super::{Caller, Need, ServiceError, Services};
use crate::bulk::{Action, CheckedRow, RawRow};
use crate::config::Subnet;
use crate::inventory::MachinePatch;
use crate::mac::MacAddr;
use crate::store::Db;
use crate::store::{self, StoreError};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Checks every row against the file and the inventory; nothing is written.
pub(crate) fn check_rows_in(
    tx: &Db,
    rows: Vec<RawRow>,
    subnets: &[Subnet],
) -> Result<Vec<CheckedRow>, StoreError> {
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
            Some(mac) if store::get_machine(tx, mac)?.is_some_and(|m| !m.discovered) => {
                Action::Update
            }
            _ => Action::Add,
        };
        let ip = match row.ip.as_str() {
            "" => None,
            text => match text.parse::<Ipv4Addr>() {
                Ok(ip) => {
                    if let Some(first) = seen_ips.insert(ip, row.line) {
                        errors.push(format!("IP also on line {first}"));
                    }
                    Some(ip)
                }
                Err(_) => {
                    errors.push(format!("{text:?} is not an IPv4 address"));
                    None
                }
            },
        };
        let present = |text: &str| Some(text.to_owned()).filter(|t| !t.is_empty());
        let (hostname, rack, position) = (
            present(&row.hostname),
            present(&row.rack),
            present(&row.position),
        );
        let problems = machines::field_problems(
            &Fields {
                hostname: hostname.as_deref(),
                ip,
                rack: rack.as_deref(),
                position: position.as_deref(),
                ssh_keys: None,
            },
            subnets,
        );
        let hostname_ok = !problems.iter().any(|p| p.field() == Some("hostname"));
        errors.extend(problems.iter().map(ToString::to_string));
        if let Some(h) = &hostname
            && hostname_ok
            && let Some(first) = seen_hosts.insert(h.to_lowercase(), row.line)
        {
            errors.push(format!("hostname also on line {first}"));
        }
        if let Some(loader) = present(&row.loader)
            && let Err(e) = loader.parse::<crate::lifecycle::Loader>()
        {
            errors.push(e.to_string());
        }
        let image = present(&row.image);
        errors.extend(
            machines::inventory_problems(tx, mac, ip, image.as_deref())?
                .iter()
                .map(ToString::to_string),
        );
        checked.push(CheckedRow {
            line: row.line,
            action,
            mac: mac.map_or(row.mac.clone(), |m| m.to_string()),
            hostname: row.hostname,
            ip: row.ip,
            image: row.image,
            rack: row.rack,
            position: row.position,
            loader: row.loader,
            errors,
        });
    }
    Ok(checked)
}

fn raw(row: &CheckedRow) -> RawRow {
    RawRow {
        line: row.line,
        mac: row.mac.clone(),
        hostname: row.hostname.clone(),
        ip: row.ip.clone(),
        image: row.image.clone(),
        rack: row.rack.clone(),
        position: row.position.clone(),
        loader: row.loader.clone(),
    }
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    pub added: usize,
    pub updated: usize,
}

impl std::fmt::Display for Imported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Imported: {} added, {} updated.",
            self.added, self.updated
        )
    }
}

/// Writes checked rows inside the caller's transaction, checking them again first:
/// the inventory may have changed since the preview. Any bad row stops them all.
pub(crate) fn apply_rows_in(
    tx: &Db,
    rows: &[CheckedRow],
    lifecycle: &crate::lifecycle::LifecycleConfig,
    subnets: &[Subnet],
    actor: &str,
    now_ms: i64,
) -> Result<Imported, ServiceError> {
    let fresh = check_rows_in(tx, rows.iter().map(raw).collect(), subnets)?;
    if let Some(bad) = fresh.iter().find(|r| !r.errors.is_empty()) {
        return Err(ServiceError::Conflict(format!(
            "line {}: {}",
            bad.line,
            bad.errors.join("; ")
        )));
    }
    let mut imported = Imported {
        added: 0,
        updated: 0,
    };
    for row in &fresh {
        let Ok(mac) = MacAddr::parse(&row.mac) else {
            continue;
        };
        let opt = |text: &str| Some(text.trim().to_string()).filter(|s| !s.is_empty());
        let ip = opt(&row.ip).and_then(|ip| ip.parse().ok());
        // Checked above: only a valid loader gets here.
        let loader = opt(&row.loader).and_then(|l| l.parse().ok());
        match row.action {
            Action::Add => {
                let new = NewMachine {
                    hostname: opt(&row.hostname),
                    ip,
                    image: opt(&row.image),
                    rack: opt(&row.rack),
                    position: opt(&row.position),
                    loader,
                    ..NewMachine::new(mac)
                };
                machines::add_in(tx, &new, lifecycle, subnets, actor, now_ms)?;
                imported.added += 1;
            }
            Action::Update => {
                let patch = MachinePatch {
                    hostname: opt(&row.hostname).map(Some),
                    ip: ip.map(Some),
                    rack: opt(&row.rack).map(Some),
                    position: opt(&row.position).map(Some),
                    loader: loader.map(Some),
                    ..MachinePatch::default()
                };
                machines::update_in(tx, mac, &patch, subnets, actor, now_ms)?;
                if let Some(image) = opt(&row.image) {
                    machines::set_image_in(tx, mac, Some(&image), actor, now_ms)?;
                }
                imported.updated += 1;
            }
        }
    }
    Ok(imported)
}

impl Services {
    /// Checks rows for a preview; nothing is written.
    pub async fn check_import(
        &self,
        caller: &Caller,
        rows: Vec<RawRow>,
    ) -> Result<Vec<CheckedRow>, ServiceError> {
        caller.require(Need::Change)?;
        let subnets = self.subnets.clone();
        self.store
            .transaction(move |tx| Ok(check_rows_in(tx, rows, &subnets)?))
            .await
    }

    /// Writes checked rows in one transaction: all of them, or none. They are checked
    /// again first: the inventory may have changed since the preview.
    pub async fn apply_import(
        &self,
        caller: &Caller,
        now_ms: i64,
        rows: Vec<CheckedRow>,
    ) -> Result<Imported, ServiceError> {
        caller.require(Need::Change)?;
        let (lifecycle, subnets, actor) = (
            self.lifecycle.clone(),
            self.subnets.clone(),
            caller.actor_text(),
        );
        self.store
            .transaction(move |tx| apply_rows_in(tx, &rows, &lifecycle, &subnets, &actor, now_ms))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bulk::{parse_csv, parse_upload, parse_xlsx, to_csv, to_xlsx};
    use crate::inventory;
    use crate::lifecycle::LifecycleConfig;

    fn db() -> Db {
        let conn = store::open_connection_for_tests();
        store::put_image(
            &conn,
            &store::Image {
                arches: vec![crate::lifecycle::Arch::Amd64],
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

    fn check(conn: &Db, rows: Vec<RawRow>) -> Result<Vec<CheckedRow>, StoreError> {
        check_rows_in(conn, rows, &[])
    }

    fn apply(
        conn: &mut Db,
        rows: &[CheckedRow],
        lifecycle: &LifecycleConfig,
        actor: &str,
        now_ms: i64,
    ) -> Result<String, ServiceError> {
        let imported =
            conn.atomically(|tx| apply_rows_in(tx, rows, lifecycle, &[], actor, now_ms))?;
        Ok(imported.to_string())
    }

    #[test]
    fn preview_reports_each_rows_errors() {
        let conn = db();
        let text = "mac,hostname,ip,image\n\
            52:54:00:00:00:01,node1,192.0.2.11,debian\n\
            52:54:00:00:00:01,node1b,192.0.2.12,debian\n\
            zz:zz,bad_host,192.0.2.300,ubuntu\n\
            52:54:00:00:00:03,node3,192.0.2.11,\n";
        let rows = check(&conn, parse_csv(text.as_bytes()).expect("parses")).expect("check");
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
        let rows = check(&conn, parse_csv(SHEET.as_bytes()).expect("parses")).expect("check");
        let summary = apply(&mut conn, &rows, &config, "user:ann", 1).expect("apply");
        assert_eq!(summary, "Imported: 2 added, 0 updated.");
        let m1 = inventory::machine(&conn, MacAddr([0x52, 0x54, 0, 0, 0, 1]))
            .expect("q")
            .expect("m");
        assert_eq!(m1.mode, crate::lifecycle::Mode::Install);
        assert_eq!(m1.rack.as_deref(), Some("r1"));
        // The same sheet again updates instead of failing.
        let again = check(
            &conn,
            parse_csv(SHEET.replace("node2", "node2b").as_bytes()).expect("p"),
        )
        .expect("c");
        assert!(
            again
                .iter()
                .all(|r| r.action == Action::Update && r.errors.is_empty())
        );
        apply(&mut conn, &again, &config, "user:ann", 2).expect("apply");
        let m2 = inventory::machine(&conn, MacAddr([0x52, 0x54, 0, 0, 0, 2]))
            .expect("q")
            .expect("m");
        assert_eq!(m2.hostname.as_deref(), Some("node2b"));
        // A row that became invalid since the preview stops the whole import.
        let stale = check(
            &conn,
            parse_csv(b"mac,image\n52:54:00:00:00:07,debian\n52:54:00:00:00:08,gone\n").expect("p"),
        )
        .expect("c");
        assert!(apply(&mut conn, &stale, &config, "user:ann", 3).is_err());
        assert!(
            inventory::machine(&conn, MacAddr([0x52, 0x54, 0, 0, 0, 7]))
                .expect("q")
                .is_none()
        );
    }

    #[test]
    fn xlsx_round_trips_through_export() {
        let mut conn = db();
        let rows = check(&conn, parse_csv(SHEET.as_bytes()).expect("parses")).expect("check");
        apply(&mut conn, &rows, &LifecycleConfig::default(), "user:ann", 1).expect("apply");
        let machines = crate::bulk::all_machines(&mut conn).expect("all");
        let xlsx = to_xlsx(&machines).expect("xlsx");
        let back = parse_xlsx(&xlsx);
        // The export has columns the import does not take (mode, firmware...).
        assert!(
            back.expect_err("export columns")
                .to_string()
                .contains("unknown column")
        );
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
    fn a_loader_column_sets_each_machines_loader_and_a_bad_one_is_named() {
        let mut conn = db();
        let rows = check(
            &conn,
            parse_csv(b"mac,loader\n52:54:00:00:00:21,grub\n52:54:00:00:00:22,\n52:54:00:00:00:23,pxelinux\n")
                .expect("parses"),
        )
        .expect("check");
        assert!(
            rows[0].errors.is_empty() && rows[1].errors.is_empty(),
            "{rows:?}"
        );
        assert!(
            rows[2]
                .errors
                .iter()
                .any(|e| e.contains("unknown loader") && e.contains("pxelinux")),
            "{rows:?}"
        );
        apply(
            &mut conn,
            &rows[..2],
            &LifecycleConfig::default(),
            "user:ann",
            1,
        )
        .expect("apply");
        let loader = |n: u8| {
            inventory::machine(&conn, MacAddr([0x52, 0x54, 0, 0, 0, n]))
                .expect("q")
                .expect("m")
                .loader
        };
        assert_eq!(loader(0x21), Some(crate::lifecycle::Loader::Grub));
        assert_eq!(loader(0x22), None, "empty: the architecture's default");
    }
}
