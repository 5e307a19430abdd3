//! `rackboot machine import` against hostile spreadsheets, through the real binary:
//! a sheet claiming A1:XFD1048576 (the importer used to abort asking for 512 GiB),
//! cells A1 and XFD2000 (1.8 GB) and a zip bomb (1.7 GB) are refused with a message
//! naming the limit, and no import process grows past `PEAK_LIMIT_KIB`; a normal
//! three-row workbook still imports.
//!
//! One test in this file: the peak memory of the children is read with
//! `getrusage(RUSAGE_CHILDREN)`, the largest of every child this process waited for.

use std::io::{Cursor, Write};
use std::path::Path;
use std::process::Command;

const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");
const PEAK_LIMIT_KIB: i64 = 150 << 10;
const SHEET_PATH: &str = "xl/worksheets/sheet1.xml";
const SHEET_HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">"#;

fn workbook() -> Vec<u8> {
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    for (col, title) in ["mac", "hostname", "rack"].iter().enumerate() {
        sheet.write_string(0, col as u16, *title).expect("write");
    }
    for row in 1..=3u32 {
        sheet
            .write_string(row, 0, format!("52:54:00:00:02:{row:02x}"))
            .expect("write");
        sheet
            .write_string(row, 1, format!("cli{row}"))
            .expect("write");
        sheet.write_string(row, 2, "r9").expect("write");
    }
    workbook.save_to_buffer().expect("save")
}

/// The normal workbook with its sheet streamed in by `write` instead.
fn with_sheet(write: impl FnOnce(&mut dyn Write)) -> Vec<u8> {
    let mut source = zip::ZipArchive::new(Cursor::new(workbook())).expect("zip");
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for index in 0..source.len() {
        let entry = source.by_index_raw(index).expect("entry");
        if entry.name().expect("name") != SHEET_PATH {
            out.raw_copy_file(entry).expect("copy");
        }
    }
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    out.start_file(SHEET_PATH, options).expect("start");
    write(&mut out);
    out.finish().expect("finish").into_inner()
}

fn sheet(body: &str) -> Vec<u8> {
    with_sheet(|w| write!(w, "{SHEET_HEAD}{body}</worksheet>").expect("write"))
}

/// 200 MB of rows, compressed to a few hundred KiB, never held whole.
fn bomb() -> Vec<u8> {
    with_sheet(|w| {
        write!(w, "{SHEET_HEAD}<sheetData>").expect("write");
        let row = r#"<row r="2"><c r="A2" t="inlineStr"><is><t>x</t></is></c></row>"#;
        let chunk = row.repeat((64 << 10) / row.len());
        for _ in 0..(200 << 20) / chunk.len() {
            w.write_all(chunk.as_bytes()).expect("write");
        }
        write!(w, "</sheetData></worksheet>").expect("write");
    })
}

fn import(config: &Path, file: &Path) -> (bool, String) {
    let output = Command::new(RACKBOOT)
        .arg("--config")
        .arg(config)
        .args(["machine", "import"])
        .arg(file)
        .output()
        .expect("run rackboot");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn children_peak_kib() -> i64 {
    // SAFETY: getrusage writes into the struct it is given, nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    usage.ru_maxrss
}

#[test]
fn hostile_spreadsheets_are_refused_by_the_cli_within_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("rackboot.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n", dir.path().join("data").display()),
    )
    .expect("config");
    let hostile = [
        (
            "dimension.xlsx",
            sheet(
                r#"<dimension ref="A1:XFD1048576"/><sheetData>
<row r="1"><c r="A1" t="inlineStr"><is><t>mac</t></is></c></row>
<row r="1048576"><c r="XFD1048576"><v>1</v></c></row></sheetData>"#,
            ),
            "the sheet claims the range A1:XFD1048576; at most 10001 rows",
        ),
        (
            "far.xlsx",
            sheet(
                r#"<sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>mac</t></is></c></row>
<row r="2000"><c r="XFD2000"><v>1</v></c></row></sheetData>"#,
            ),
            "XFD2000: outside the 10001 rows",
        ),
        (
            "bomb.xlsx",
            bomb(),
            "at most 67108864 bytes (64 MiB) are read",
        ),
    ];
    for (name, bytes, message) in hostile {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).expect("write");
        let (ok, text) = import(&config, &path);
        assert!(!ok, "{name} imported: {text}");
        assert!(text.contains(message), "{name}: {text}");
        let peak = children_peak_kib();
        eprintln!("{name}: children peak {peak} KiB");
        assert!(peak < PEAK_LIMIT_KIB, "{name}: peak {peak} KiB");
    }
    let path = dir.path().join("rack.xlsx");
    std::fs::write(&path, workbook()).expect("write");
    let (ok, text) = import(&config, &path);
    assert!(ok, "{text}");
    assert!(text.contains("Imported: 3 added"), "{text}");
    assert!(children_peak_kib() < PEAK_LIMIT_KIB);
}
