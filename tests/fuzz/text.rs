//! Text an operator or an upload supplies: MAC addresses, the config file, templates,
//! CSV and XLSX imports.

use crate::engine::{root, sig};
use rackboot::bulk::{self as sheet, MAX_CELL_BYTES, MAX_DATA_ROWS, RawRow};
use rackboot::config::Config;
use rackboot::mac::MacAddr;
use rackboot::script::{self, MAX_OUTPUT_BYTES};
use std::io::{Read, Write};

pub fn read(relative: &str) -> Vec<u8> {
    let path = root().join(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file in a repository directory whose name ends in `ext` ("" for all).
pub fn read_dir(relative: &str, ext: &str) -> Vec<Vec<u8>> {
    let mut paths: Vec<_> = std::fs::read_dir(root().join(relative))
        .unwrap_or_else(|e| panic!("{relative}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.to_string_lossy().ends_with(ext))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("readable"))
        .collect()
}

// ---- MAC addresses ----

pub fn mac(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    let _ = MacAddr::from_chaddr(data);
    match MacAddr::parse(&text) {
        Err(e) => sig(&e.to_string()),
        Ok(mac) => {
            for spelling in [
                mac.to_string(),
                mac.dashed(),
                mac.to_string().to_uppercase(),
            ] {
                assert_eq!(
                    MacAddr::parse(&spelling),
                    Ok(mac),
                    "{spelling} does not parse back"
                );
            }
            sig(if text.contains('%') { "ok%" } else { "ok" })
        }
    }
}

pub const MAC_DICT: &[&[u8]] = &[b":", b"-", b"%3A", b"%3a", b"%", b"ff", b"0x", b"\xc3\xa9"];

// ---- The config file ----

pub fn config(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    match Config::parse(&text, "fuzz.toml") {
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("fuzz.toml"),
                "a config error names the file: {e}"
            );
            sig(&e)
        }
        Ok(config) => {
            let subnets = config.dhcp.as_ref().map_or(&[][..], |d| &d.subnets[..]);
            for s in subnets {
                assert!(
                    s.contains(s.pool_start) && s.contains(s.pool_end),
                    "pool outside {s:?}"
                );
                assert!(s.pool_start <= s.pool_end, "pool backwards {s:?}");
            }
            sig(&format!("ok {}", subnets.len()))
        }
    }
}

pub fn config_seeds() -> Vec<Vec<u8>> {
    vec![read("rackboot.example.toml")]
}

pub const CONFIG_DICT: &[&[u8]] = &[
    b"[dhcp]\n",
    b"[[dhcp.subnets]]\n",
    b"[tftp]\n",
    b"[http]\n",
    b"[power]\n",
    b"cidr = ",
    b"pool = ",
    b"known_pool = ",
    b"\"192.0.2.0/24\"",
    b"\"10.0.0.1-10.0.0.9\"",
    b"= true\n",
    b" = 0\n",
    b"= 18446744073709551615\n",
    b"\"\"",
    b"[]",
    b"{}",
    b"\n",
    b"mode = \"proxy\"\n",
];

// ---- Templates ----

fn context() -> minijinja::Value {
    use minijinja::{Value, context};
    let empty: Vec<Value> = Vec::new();
    context! {
        mac => "52:54:00:00:00:01",
        hostname => "node1",
        name => "node1",
        domain => "lab.example",
        base => "http://192.0.2.1:8080",
        done_url => "http://192.0.2.1:8080/done/abc",
        progress_url => "http://192.0.2.1:8080/progress/abc",
        kernel_url => "http://192.0.2.1:8080/k",
        initrd_url => "http://192.0.2.1:8080/i",
        install_disk => "/dev/sda",
        ssh_keys => vec!["ssh-ed25519 AAAA test"],
        console => "ttyS0,115200",
        mode => "install",
        message => "hello",
        image => context! { name => "debian-12", cmdline => "quiet", kind => "linux" },
        mirror => context! {
            url => "http://deb.example/debian", scheme => "http", host => "deb.example",
            path => "/debian"
        },
        release => "12",
        units => empty.clone(),
        late => empty,
    }
}

pub fn script(data: &[u8]) -> u64 {
    let source = String::from_utf8_lossy(data).into_owned();
    match script::render_source("fuzz.ipxe", source, context()) {
        Ok(out) => {
            assert!(
                out.len() <= MAX_OUTPUT_BYTES,
                "{} bytes rendered",
                out.len()
            );
            sig("ok")
        }
        // The kind only: minijinja's messages quote the template.
        Err(script::ScriptError::Render { source, .. }) => sig(&format!("{:?}", source.kind())),
        Err(e) => sig(&e.to_string()),
    }
}

pub fn script_seeds() -> Vec<Vec<u8>> {
    let mut out = read_dir("ipxe", ".ipxe");
    out.extend(read_dir("images/templates", ""));
    out
}

pub const SCRIPT_DICT: &[&[u8]] = &[
    b"{{ ",
    b" }}",
    b"{% ",
    b" %}",
    b"{% for i in range(1000) %}",
    b"{% endfor %}",
    b"{% if ",
    b"{% endif %}",
    b"{% macro m(x) %}",
    b"{% endmacro %}",
    b"{{ m(1) }}",
    b"|tojson",
    b"|join",
    b"loop.index",
    b"{% set x = ",
    b"~",
    b"*",
    b"\"x\" * 100000",
    b"{#",
    b"#}",
    b"{% raw %}",
    b"{% filter upper %}",
    b"{% call ",
    b"recursive",
    b"{% include 'fuzz.ipxe' %}",
];

// ---- CSV and XLSX imports ----

fn check_rows(rows: &[RawRow]) -> u64 {
    assert!(
        !rows.is_empty() && rows.len() <= MAX_DATA_ROWS,
        "{} rows",
        rows.len()
    );
    for row in rows {
        for cell in [
            &row.mac,
            &row.hostname,
            &row.ip,
            &row.image,
            &row.rack,
            &row.position,
        ] {
            assert!(
                cell.len() <= MAX_CELL_BYTES,
                "a cell of {} bytes",
                cell.len()
            );
        }
    }
    sig(&format!("ok {}", rows.len().min(3)))
}

pub fn csv(data: &[u8]) -> u64 {
    let a = sheet::parse_csv(data);
    let b = sheet::parse_upload("machines.csv", data);
    match (&a, &b) {
        (Ok(rows), _) => check_rows(rows),
        (Err(e), Ok(rows)) => check_rows(rows) ^ sig(&e.to_string()),
        (Err(e), Err(f)) => sig(&e.to_string()) ^ sig(&f.to_string()).rotate_left(1),
    }
}

pub const CSV_DICT: &[&[u8]] = &[
    b"mac",
    b"hostname",
    b"ip",
    b"image",
    b"rack",
    b"position",
    b",",
    b"\"",
    b"\n",
    b"\r\n",
    b"\xef\xbb\xbf",
    b"52:54:00:00:00:01",
];

/// XLSX inputs come in two shapes: a zip as is (it starts with `PK`), or a mode byte
/// (bit 1: deflate) and the archive's parts, `[name length][name][2-byte content
/// length][content]` each, zipped here, so that mutations reach the XML inside
/// rather than only breaking the deflate stream and the CRCs.
pub fn xlsx(data: &[u8]) -> u64 {
    let bytes = match data {
        [b'P', b'K', ..] => data.to_vec(),
        [mode, rest @ ..] => zip_parts(rest, mode & 2 == 2),
        [] => return 0,
    };
    match sheet::parse_xlsx(&bytes) {
        Ok(rows) => check_rows(&rows[..]),
        Err(e) => sig(&e.to_string()),
    }
}

fn zip_parts(mut data: &[u8], deflate: bool) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    while let [n, tail @ ..] = data {
        let n = usize::from(*n).min(tail.len());
        let (name, tail) = tail.split_at(n);
        let Some((len, tail)) = tail.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (content, tail) = tail.split_at(len);
        data = tail;
        let name = String::from_utf8_lossy(name);
        if zip.start_file(name.as_ref(), options).is_err() {
            continue;
        }
        let _ = zip.write_all(content);
    }
    zip.finish().map(|c| c.into_inner()).unwrap_or_default()
}

/// The workbook in `fuzz/corpus/bulk_xlsx/` (written by rust_xlsxwriter, the
/// exporter's library) as parts, less those the importer does not read.
pub fn xlsx_seeds() -> Vec<Vec<u8>> {
    let zipped = read("fuzz/corpus/bulk_xlsx/machines.xlsx");
    let mut parts = vec![2u8];
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&zipped)).expect("zip");
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).expect("entry");
        let name = entry.name().expect("name").to_string();
        if name.contains("styles") || name.contains("theme") || name.starts_with("docProps") {
            continue;
        }
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("inflate");
        parts.push(name.len() as u8);
        parts.extend_from_slice(name.as_bytes());
        parts.extend_from_slice(&(content.len() as u16).to_be_bytes());
        parts.extend_from_slice(&content);
    }
    vec![parts]
}

pub const XLSX_DICT: &[&[u8]] = &[
    b"<c r=\"A1\" t=\"s\"><v>0</v></c>",
    b"<si><t>mac</t></si>",
    b"<row r=\"2\">",
    b"</row>",
    b"<dimension ref=\"A1:XFD1048576\"/>",
    b"t=\"inlineStr\"",
    b"<is><t>",
    b"</t></is>",
    b"count=\"4294967295\"",
    b"uniqueCount=\"999999999\"",
    b"r=\"BM1\"",
    b"r=\"A10002\"",
    b"xl/worksheets/sheet1.xml",
    b"xl/sharedStrings.xml",
    b"<sheet name=\"S\" sheetId=\"1\" r:id=\"rId1\"/>",
    b"&amp;",
    b"&#x0;",
    b"<![CDATA[",
    b"]]>",
];
