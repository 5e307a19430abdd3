//! The catalog's readers of what a mirror serves: OpenPGP keys and signatures,
//! `Release`, checksum lists, `Packages` and `.deb` archives, ISO 9660 images, and
//! image definitions. Seeds are the fixtures under `tests/fixtures/catalog/` and
//! `images/`, read in place.

use crate::engine::{kind, sig};
use crate::text::{read, read_dir};
use rackboot::catalog::definition::Definition;
use rackboot::catalog::openpgp::{self, Keyring};
use rackboot::catalog::release::{self, Release};
use rackboot::catalog::sums::Sums;
use rackboot::catalog::{debpkg, iso9660};
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::os::fd::FromRawFd;
use std::sync::OnceLock;

const THROWAWAY: &str = "tests/fixtures/catalog/throwaway";

struct Keys {
    debian: Keyring,
    throwaway: Keyring,
    message: Vec<u8>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let debian = Keyring::from_bytes(&read("images/keys/debian-archive-keyring.gpg"))
            .expect("Debian's keyring");
        let mut throwaway =
            Keyring::from_bytes(&read(&format!("{THROWAWAY}/key-a.asc"))).expect("key a");
        for key in ["key-b.asc", "key-c-revoked.asc"] {
            throwaway.merge(Keyring::from_bytes(&read(&format!("{THROWAWAY}/{key}"))).expect(key));
        }
        Keys {
            debian,
            throwaway,
            message: read(&format!("{THROWAWAY}/message.txt")),
        }
    })
}

/// Input: a mode byte, then a key file (0), a clearsigned message (1), or a detached
/// signature over the throwaway fixture's message (2).
pub fn openpgp(data: &[u8]) -> u64 {
    let Some((&mode, rest)) = data.split_first() else {
        return 0;
    };
    let k = keys();
    let result = match mode % 3 {
        0 => Keyring::from_bytes(rest).map(|ring| format!("keys {}", ring.len().min(3))),
        1 => {
            let a = openpgp::verify_cleartext(&k.throwaway, rest);
            let b = openpgp::verify_cleartext(&k.debian, rest);
            for (text, _) in a.iter().chain(b.iter()) {
                assert!(
                    text.len() <= rest.len(),
                    "the signed text outgrew its message"
                );
            }
            a.map(|(_, v)| v.fingerprint)
        }
        _ => openpgp::verify_detached(&k.throwaway, &k.message[..], rest).map(|v| v.fingerprint),
    };
    let mode = ["key", "clearsigned", "detached"][usize::from(mode % 3)];
    match result {
        Ok(what) => sig(&format!("ok {mode} {what}")),
        Err(e) => sig(&format!("{mode} {e}")),
    }
}

pub fn openpgp_seeds() -> Vec<Vec<u8>> {
    let with = |mode: u8, bytes: Vec<u8>| [vec![mode], bytes].concat();
    let mut out = Vec::new();
    for key in ["key-a.asc", "key-b.asc", "key-c-revoked.asc"] {
        out.push(with(0, read(&format!("{THROWAWAY}/{key}"))));
    }
    for signed in ["clearsigned.asc", "clearsigned-sha1.asc"] {
        out.push(with(1, read(&format!("{THROWAWAY}/{signed}"))));
    }
    out.push(with(1, read("tests/fixtures/catalog/bookworm-InRelease")));
    for sig in [
        "detached.sig",
        "detached-armored.asc",
        "detached-other.sig",
        "detached-primary.sig",
        "detached-revoked.sig",
        "detached-sha1.sig",
        "detached-text.sig",
    ] {
        out.push(with(2, read(&format!("{THROWAWAY}/{sig}"))));
    }
    out
}

pub const OPENPGP_DICT: &[&[u8]] = &[
    b"-----BEGIN PGP SIGNED MESSAGE-----\n",
    b"-----BEGIN PGP SIGNATURE-----\n",
    b"-----END PGP SIGNATURE-----\n",
    b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n",
    b"-----END PGP PUBLIC KEY BLOCK-----\n",
    b"Hash: SHA256\n",
    b"Hash: SHA1\n",
    b"\n\n",
    b"- -",
    b"=",
    b"\r\n",
    b"\xc2",
    b"\x89\x02\x33",
    b"\x99\x01\x0d",
    b"\xb4",
];

// ---- Release and checksum lists ----

/// Input: a mode byte, then a `Release` text (even) or a checksum list (odd).
pub fn release_sums(data: &[u8]) -> u64 {
    let Some((&mode, rest)) = data.split_first() else {
        return 0;
    };
    let text = String::from_utf8_lossy(rest);
    if mode & 1 == 0 {
        match Release::parse(&text) {
            Err(e) => sig(&e.to_string()),
            Ok(r) => {
                for (path, entry) in r.sha256_files() {
                    assert_eq!(entry.sha256.len(), 64, "{path}: {}", entry.sha256);
                    assert!(
                        entry
                            .sha256
                            .bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                    );
                    assert_eq!(r.sha256(path), Some(entry));
                }
                for field in ["date", "valid-until", "codename"] {
                    if let Some(value) = r.field(field) {
                        let _ = release::parse_date(value);
                    }
                }
                sig(&format!("ok {}", r.valid_until.is_some()))
            }
        }
    } else {
        match Sums::parse(&text) {
            Err(e) => sig(&e.to_string()),
            Ok(s) => {
                assert_eq!(s.iter().count(), s.len());
                let mut again = String::new();
                for (path, hash) in s.iter() {
                    assert_eq!(hash.len(), 64, "{path}: {hash}");
                    assert_eq!(s.get(path), Some(hash));
                    again.push_str(&format!("{hash}  {path}\n"));
                }
                // The list written back in sha256sum's format reads the same.
                let back = Sums::parse(&again)
                    .unwrap_or_else(|e| panic!("a list read, written back, fails: {e}"));
                assert!(
                    back.iter().eq(s.iter()),
                    "written back, the list reads otherwise"
                );
                sig(&format!("ok {}", s.is_empty()))
            }
        }
    }
}

/// The signed text of Debian's bookworm `InRelease`, whole and cut short, and
/// checksum lists made from its entries.
pub fn release_sums_seeds() -> Vec<Vec<u8>> {
    let inrelease = read("tests/fixtures/catalog/bookworm-InRelease");
    let (text, _) =
        openpgp::verify_cleartext(&keys().debian, &inrelease).expect("the fixture verifies");
    let short: String = text.lines().take(60).map(|l| format!("{l}\n")).collect();
    let release = Release::parse(&text).expect("the fixture parses");
    let sums: String = release
        .sha256_files()
        .take(20)
        .map(|(path, e)| format!("{}  ./{path}\n", e.sha256))
        .collect();
    let binary: String = release
        .sha256_files()
        .take(3)
        .map(|(path, e)| format!("{} *{path}\n", e.sha256.to_uppercase()))
        .collect();
    vec![
        [b"\0", text.as_bytes()].concat(),
        [b"\0", short.as_bytes()].concat(),
        [b"\x01", sums.as_bytes()].concat(),
        [b"\x01", binary.as_bytes()].concat(),
        [b"\x01", &inrelease[..600]].concat(),
    ]
}

pub const RELEASE_DICT: &[&[u8]] = &[
    b"SHA256:\n",
    b"MD5Sum:\n",
    b"Date: Sat, 10 Jun 2023 08:57:00 UTC\n",
    b"Valid-Until: ",
    b"Codename: bookworm\n",
    b"Suite: stable\n",
    b" ",
    b"  ",
    b" *",
    b"./",
    b"../",
    b"\n ",
    b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    b"UTC",
    b"+0000",
    b"Feb",
    b"29",
    b"-----BEGIN PGP SIGNED MESSAGE-----\n",
];

// ---- Packages and .deb archives ----

const MEMBERS: [&str; 5] = [
    "usr/lib/rackboot-fixture/hello.efi",
    "usr/lib/rackboot-fixture/big.bin",
    "./usr/lib/rackboot-fixture/current.efi",
    "usr/lib/rackboot-fixture/a-directory-with-a-rather-long-name-to-need-gnu-long-names/and-a-file-name-that-pushes-the-path-past-one-hundred-bytes.txt",
    "usr/lib/rackboot-fixture/missing",
];

/// Input: a mode byte, then a `.deb` (mode % 4 == 0, member chosen by the mode), a
/// `Packages` text (1), two versions split at the first NUL (2), or a symlink's
/// member and target (3).
pub fn debpkg(data: &[u8]) -> u64 {
    let Some((&mode, rest)) = data.split_first() else {
        return 0;
    };
    match mode % 4 {
        0 => {
            let member = MEMBERS[usize::from(mode / 4) % MEMBERS.len()];
            let max = 16 << 10;
            let mut out = Vec::new();
            match debpkg::extract(rest, member, &mut out, max) {
                Ok(n) => {
                    assert_eq!(n, out.len() as u64);
                    assert!(n <= max, "{n} bytes written, over the {max} allowed");
                    sig("ok")
                }
                Err(e) => {
                    assert!(out.len() as u64 <= max, "{} bytes written", out.len());
                    kind(&e)
                }
            }
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            match debpkg::find(&text, "memtest86+") {
                Ok(entry) => {
                    assert!(!entry.filename.starts_with('/'), "{}", entry.filename);
                    assert!(
                        !entry.filename.split('/').any(|p| p == ".."),
                        "{}",
                        entry.filename
                    );
                    assert_eq!(entry.sha256.len(), 64);
                    sig("ok")
                }
                Err(e) => kind(&e),
            }
        }
        2 => {
            let text = String::from_utf8_lossy(rest);
            let (a, b) = text.split_once('\0').unwrap_or((&text, "1.0"));
            match debpkg::compare_versions(a, b) {
                Ok(order) => {
                    assert_eq!(
                        debpkg::compare_versions(b, a).ok(),
                        Some(order.reverse()),
                        "{a:?} {b:?}"
                    );
                    assert_eq!(
                        debpkg::compare_versions(a, a).ok(),
                        Some(std::cmp::Ordering::Equal)
                    );
                    sig(&format!("{order:?}"))
                }
                Err(e) => kind(&e),
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            let (member, target) = text.split_once('\0').unwrap_or((&text, "x"));
            match debpkg::resolve_symlink(member, target) {
                Some(path) => {
                    assert!(
                        !path.split('/').any(|p| p == ".." || p.is_empty()),
                        "{path:?}"
                    );
                    sig("some")
                }
                None => sig("none"),
            }
        }
    }
}

pub fn debpkg_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, deb) in read_dir("tests/fixtures/catalog/deb", ".deb")
        .into_iter()
        .enumerate()
    {
        out.push([&[(i as u8 % 5) * 4][..], &deb].concat());
    }
    let packages = "Package: memtest86+\nVersion: 6.10-4\nArchitecture: amd64\n\
        Filename: pool/main/m/memtest86+/memtest86+_6.10-4_amd64.deb\nSize: 123456\n\
        SHA256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\
        Description: thorough memory tester\n .\n more\n\n\
        Package: memtest86+\nVersion: 1:5.31b+dfsg-4\nFilename: pool/main/m/memtest86+/old.deb\n\
        Size: 1\nSHA256: 1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
    out.push([b"\x01", packages.as_bytes()].concat());
    out.push(b"\x021:2.0~rc1-1+b1\x002.0-1".to_vec());
    out.push(b"\x02a.b-c~d+e\x00a.b-c".to_vec());
    out.push(b"\x03usr/lib/x/current.efi\x00../y/hello.efi".to_vec());
    out.push(b"\x03a/b\x00/abs/target".to_vec());
    out
}

pub const DEBPKG_DICT: &[&[u8]] = &[
    b"!<arch>\n",
    b"debian-binary   ",
    b"control.tar.xz  ",
    b"data.tar.xz     ",
    b"data.tar.gz     ",
    b"data.tar.zst    ",
    b"data.tar        ",
    b"././@LongLink",
    b"ustar\0",
    b"ustar  \0",
    b"`\n",
    b"\xfd7zXZ\0",
    b"\x28\xb5\x2f\xfd",
    b"\x1f\x8b\x08",
    b"Package: ",
    b"Version: ",
    b"SHA256: ",
    b"Filename: ",
    b"Size: ",
    b"\n\n",
    b"~",
    b":",
    b"-",
    b"+",
    b"../",
];

// ---- ISO 9660 ----

/// The image in an anonymous memory file: `Iso::open` takes a `File`.
fn memfile(bytes: &[u8]) -> std::fs::File {
    // SAFETY: memfd_create with a static name; the descriptor is owned by the File.
    let fd = unsafe { libc::memfd_create(c"fuzz-iso".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: a fresh descriptor nobody else holds.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(bytes).expect("write the image");
    file.rewind().expect("rewind");
    file
}

const ISO_PATHS: [&str; 6] = [
    "casper/vmlinuz",
    "casper/initrd",
    "casper/vmlinuz-link",
    "/boot/grub/grub.cfg",
    "./casper/Long-Mixed-Case-Rock-Ridge-Name-That-ISO-Level-1-Cannot-Hold.efi",
    "casper",
];

/// The first 16 sectors (the system area) are not read: an input is the image from
/// sector 16 on, so that mutations land in the descriptors and directories.
const SYSTEM_AREA: usize = 16 * 2048;

pub fn iso(data: &[u8]) -> u64 {
    let mut image = vec![0u8; SYSTEM_AREA];
    image.extend_from_slice(data);
    image.resize(image.len().next_multiple_of(2048), 0);
    let mut iso = match iso9660::Iso::open(memfile(&image)) {
        Ok(iso) => iso,
        Err(e) => return sig(&e.to_string()),
    };
    let _ = iso.volume_id();
    let mut out = String::from("ok");
    for path in ISO_PATHS {
        let max = 4096;
        let mut bytes = Vec::new();
        match iso.extract(path, &mut bytes, max) {
            Ok(n) => {
                assert_eq!(n, bytes.len() as u64);
                assert!(n <= max, "{n} bytes over the {max} allowed");
                out.push('+');
            }
            Err(e) => {
                assert!(bytes.len() as u64 <= max);
                out.push_str(&e.to_string());
            }
        }
    }
    sig(&out)
}

pub fn iso_seeds() -> Vec<Vec<u8>> {
    let mut image = Vec::new();
    flate2::read::GzDecoder::new(&read("tests/fixtures/catalog/iso/small.iso.gz")[..])
        .read_to_end(&mut image)
        .expect("gunzip the fixture");
    // From sector 16 to the last sector with data in it: the rest is zeros.
    let used = image
        .chunks(2048)
        .rposition(|s| s.iter().any(|&b| b != 0))
        .map_or(0, |i| i + 1);
    vec![image[SYSTEM_AREA..used * 2048].to_vec()]
}

pub const ISO_DICT: &[&[u8]] = &[
    b"CD001",
    b"\x01CD001\x01",
    b"\xffCD001\x01",
    b"RR",
    b"NM",
    b"SL",
    b"CE",
    b"CL",
    b"PX",
    b"SP",
    b"\x00\x08\x00\x00",
    b"\x00\x00\x08\x00",
    b"\xff\xff\xff\xff",
];

// ---- Image definitions ----

pub fn definition(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    match Definition::parse("fuzz-1.toml", &text, "fuzz") {
        Err(e) => sig(&e.to_string()),
        Ok(def) => {
            for path in [Some(&def.kernel), def.initrd.as_ref()]
                .into_iter()
                .flatten()
            {
                assert!(
                    !path.starts_with('/') && !path.split('/').any(|p| p == ".." || p.is_empty()),
                    "{path:?} leaves the mirror"
                );
            }
            let given: BTreeMap<String, String> = def
                .parameters
                .keys()
                .map(|k| (k.clone(), "{x}/..".to_string()))
                .collect();
            let _ = def.expand(&def.kernel, &given);
            let _ = def.parameters_with(&given);
            let _ = (def.display_version(), def.status(), def.chain.summary());
            sig(&format!("ok {}", def.chain.summary()))
        }
    }
}

pub fn definition_seeds() -> Vec<Vec<u8>> {
    read_dir("images", ".toml")
}

pub const DEFINITION_DICT: &[&[u8]] = &[
    b"[chain]\n",
    b"[files]\n",
    b"[mirror]\n",
    b"[templates]\n",
    b"[parameters]\n",
    b"kind = ",
    b"\"linux\"",
    b"\"iso\"",
    b"firmware = [\"bios\", \"uefi\"]\n",
    b"kernel = ",
    b"initrd = ",
    b"\"../x\"",
    b"\"/abs\"",
    b"\"a//b\"",
    b"{release}",
    b"memory_mib = 4294967295\n",
    b"\"\"",
];
