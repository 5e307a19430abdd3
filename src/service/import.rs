//! Import: rows of a CSV or XLSX sheet checked against the inventory with the same
//! field checks as a single machine, then written all together or not at all.

use super::machines::{self, Fields, NewMachine};
use super::{Caller, Need, ServiceError, Services};
use crate::bulk::{Action, CheckedRow, RawRow};
use crate::config::Subnet;
use crate::inventory::MachinePatch;
use crate::mac::MacAddr;
use crate::store::{self, StoreError};
use rusqlite::Connection;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Checks every row against the file and the inventory; nothing is written.
pub(crate) fn check_rows_in(
    tx: &Connection,
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
            .transaction(move |tx| {
                let fresh = check_rows_in(tx, rows.iter().map(raw).collect(), &subnets)?;
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
                    match row.action {
                        Action::Add => {
                            let new = NewMachine {
                                hostname: opt(&row.hostname),
                                ip,
                                image: opt(&row.image),
                                rack: opt(&row.rack),
                                position: opt(&row.position),
                                ..NewMachine::new(mac)
                            };
                            machines::add_in(tx, &new, &lifecycle, &subnets, &actor, now_ms)?;
                            imported.added += 1;
                        }
                        Action::Update => {
                            let patch = MachinePatch {
                                hostname: opt(&row.hostname).map(Some),
                                ip: ip.map(Some),
                                rack: opt(&row.rack).map(Some),
                                position: opt(&row.position).map(Some),
                                ..MachinePatch::default()
                            };
                            machines::update_in(tx, mac, &patch, &subnets, &actor, now_ms)?;
                            if let Some(image) = opt(&row.image) {
                                machines::set_image_in(tx, mac, Some(&image), &actor, now_ms)?;
                            }
                            imported.updated += 1;
                        }
                    }
                }
                Ok(imported)
            })
            .await
    }
}
