//! `rackboot image fetch` through the real binary, for each kind of chain, against
//! test mirrors laid out as the upstream ones are (so the shipped definitions' paths
//! are checked too) and signed with throwaway OpenPGP keys: each chain registers its
//! image when every link holds, and is refused, with the broken link named and
//! nothing registered, when any one is broken.
//!
//! - `memtest86plus` (debian-package): `InRelease` → `Packages.xz` → the `.deb` →
//!   `boot/memtest86+x64.efi` inside it;
//! - `rocky-9` (a clearsigned BSD `CHECKSUM` → the newest boot ISO → files inside);
//! - `ubuntu-24.04` (`SHA256SUMS` with a detached `SHA256SUMS.gpg` → ISO → files);
//! - `flatcar` (a detached `.sig` beside each file);
//! - a pinned definition of the test's own in `data_dir/images/`;
//! - `debian-12` over the real files, offline: Debian's own `InRelease` (committed in
//!   tests/fixtures/catalog/) verified by the shipped Debian archive keyring, the real
//!   installer `SHA256SUMS` it lists (committed beside it, as served at
//!   `dists/bookworm/main/installer-amd64/current/images/SHA256SUMS` when that
//!   `InRelease` was), and the real kernel and initrd from the package
//!   `debian-installer-12-netboot-amd64` (downloaded once into the checkout's
//!   `target/debian-installer/`, the cache the d-i VM test shares).
//!
//! Also: an older `InRelease` by the same key is refused as a replay and leaves the
//! image as it was, and a download cut in the middle resumes with `Range` over HTTP
//! (a small server in this file, on 127.0.0.1).
//!
//! The keys live in one temporary GNUPGHOME per run of this file's tests, removed
//! (and its gpg-agent stopped) when the test process exits. Each refusal runs in a
//! data directory of its own, so the sha256 cache of an earlier fetch cannot hide it.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");
/// What the mirrors are built and signed with (scripts/test installs them).
const TOOLS: &[&str] = &["gpg", "gpg-agent", "gpgconf", "xorriso", "dpkg-deb", "xz"];

/// The Debian bookworm archive key, as `rackboot image fetch` names it.
const DEBIAN_BOOKWORM_ARCHIVE_KEY: &str = "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8";
/// The installer `SHA256SUMS` as the committed `InRelease` lists it.
const BOOKWORM_SUMS_SHA256: &str =
    "8e0a94d8488f7c60f5fe6723e69b450ec5d7000f592ccdb169481f4bfe863b62";
const INSTALLER_PACKAGE: &str = "debian-installer-12-netboot-amd64";

const MEMTEST_DEB: &str = "pool/main/m/memtest86+/memtest86+_6.10-4_amd64.deb";
const MEMTEST_PACKAGES: &str = "dists/bookworm/main/binary-amd64/Packages.xz";
const ROCKY_DIR: &str = "9/isos/x86_64";
const ROCKY_ISO: &str = "Rocky-9.5-x86_64-boot.iso";
const ROCKY_OLDER_ISO: &str = "Rocky-9.4-x86_64-boot.iso";
const UBUNTU_ISO: &str = "ubuntu-24.04.3-live-server-amd64.iso";
const FLATCAR_KERNEL: &str = "amd64-usr/current/flatcar_production_pxe.vmlinuz";
const FLATCAR_IMAGE: &str = "amd64-usr/current/flatcar_production_pxe_image.cpio.gz";
/// `Date:` of the test `InRelease`, and a day before it.
const DATE: &str = "Sat, 10 May 2025 09:02:13 UTC";
const DAY_BEFORE: &str = "Fri, 09 May 2025 09:02:13 UTC";

/// Whether this machine has the tools: skips locally, fails under CI.
fn ready(test: &str) -> bool {
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool} >/dev/null")])
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "missing tools: {} (scripts/test installs them)",
        missing.join(" ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} cannot run in CI: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
    false
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sha256_of(path: &Path) -> String {
    sha256(&fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

/// Deterministic bytes that stand for a kernel or an initrd.
fn blob(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn flipped(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let middle = out.len() / 2;
    out[middle] ^= 0x01;
    out
}

/// Changes one byte in the middle of `path`; its size stays.
fn flip_byte(path: &Path) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    fs::write(path, flipped(&bytes)).expect("write the changed file");
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// Runs `cmd`, failing the test with its output if it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read mirror dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy mirror file");
        }
    }
}

// ---------------------------------------------------------------------------------
// Throwaway keys

/// One OpenPGP key in the run's GNUPGHOME.
struct Key {
    fingerprint: String,
}

/// The run's GNUPGHOME: `trusted` (whose public key alone is in `keyring`, the file
/// given with `--keyring`) and `other`, a second key that no keyring holds.
struct Keys {
    home: PathBuf,
    keyring: PathBuf,
    trusted: Key,
    other: Key,
}

static KEYS: OnceLock<Keys> = OnceLock::new();

extern "C" fn remove_gnupg_home() {
    if let Some(keys) = KEYS.get() {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &keys.home)
            .args(["--kill", "all"])
            .status();
        let _ = fs::remove_dir_all(&keys.home);
    }
}

fn gpg(home: &Path) -> Command {
    let mut cmd = Command::new("gpg");
    cmd.env("GNUPGHOME", home).args([
        "--batch",
        "--quiet",
        "--no-tty",
        "--yes",
        "--pinentry-mode",
        "loopback",
        "--passphrase",
        "",
    ]);
    cmd
}

fn keys() -> &'static Keys {
    KEYS.get_or_init(|| {
        let home = tempfile::Builder::new()
            .prefix("rackboot-gnupg-")
            .tempdir()
            .expect("GNUPGHOME")
            .keep();
        // SAFETY: registers a plain function with no arguments; it runs at exit.
        assert_eq!(unsafe { libc::atexit(remove_gnupg_home) }, 0, "atexit");
        let make = |uid: &str| {
            run(gpg(&home)
                .arg("--quick-gen-key")
                .arg(uid)
                .args(["ed25519", "sign", "never"]));
            let listing = run(gpg(&home).args(["--with-colons", "--list-keys", uid]));
            let fingerprint = listing
                .lines()
                .find_map(|l| l.strip_prefix("fpr:"))
                .and_then(|rest| rest.split(':').find(|f| f.len() == 40))
                .unwrap_or_else(|| panic!("no fingerprint in {listing}"))
                .to_string();
            Key { fingerprint }
        };
        let trusted = make("rackboot test <t@example.invalid>");
        let other = make("rackboot test other <o@example.invalid>");
        let keyring = home.join("trusted.gpg");
        run(gpg(&home)
            .arg("--output")
            .arg(&keyring)
            .arg("--export")
            .arg(&trusted.fingerprint));
        Keys {
            home,
            keyring,
            trusted,
            other,
        }
    })
}

impl Key {
    /// `gpg --clearsign` of `text` into `out`.
    fn clearsign(&self, text: &str, out: &Path) {
        let input = tempfile::NamedTempFile::new().expect("temp file");
        fs::write(input.path(), text).expect("write text to sign");
        fs::create_dir_all(out.parent().expect("a parent")).expect("mkdir");
        run(gpg(&keys().home)
            .arg("--local-user")
            .arg(format!("{}!", self.fingerprint))
            .args(["--digest-algo", "SHA256", "--output"])
            .arg(out)
            .arg("--clearsign")
            .arg(input.path()));
    }

    /// `gpg --detach-sign` (binary) of `file` into `out`.
    fn detach_sign(&self, file: &Path, out: &Path) {
        run(gpg(&keys().home)
            .arg("--local-user")
            .arg(format!("{}!", self.fingerprint))
            .args(["--digest-algo", "SHA256", "--output"])
            .arg(out)
            .arg("--detach-sign")
            .arg(file));
    }
}

// ---------------------------------------------------------------------------------
// rackboot

/// A data directory and the config naming it.
struct Site {
    dir: tempfile::TempDir,
    config: PathBuf,
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("site dir");
        let config = dir.path().join("rackboot.toml");
        write(
            &config,
            format!("data_dir = \"{}\"\n", dir.path().join("data").display()),
        );
        Site { dir, config }
    }

    /// A definition of the site's own, in `data_dir/images/`.
    fn define(&self, file: &str, text: &str) {
        write(&self.dir.path().join("data/images").join(file), text);
    }

    fn rackboot(&self, args: &[&str]) -> Outcome {
        let out = Command::new(RACKBOOT)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            // A proxy from the environment must not carry the loopback mirror.
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .env("NO_PROXY", "127.0.0.1")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run rackboot");
        Outcome {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `rackboot image fetch IMAGE ARGS...`
    fn fetch(&self, image: &str, args: &[&str]) -> Outcome {
        let mut all = vec!["image", "fetch", image];
        all.extend_from_slice(args);
        self.rackboot(&all)
    }

    /// `rackboot image list`: image name → the start of its kernel's sha256.
    fn images(&self) -> BTreeMap<String, String> {
        let out = self.rackboot(&["image", "list"]);
        assert!(out.ok, "image list failed: {}", out.stderr);
        out.stdout
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .collect()
    }

    /// What a fetch left in the data directory's staging area (nothing, once it ends).
    fn staging_left(&self) -> Vec<PathBuf> {
        match fs::read_dir(self.dir.path().join("data/uploads")) {
            Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The line of `image catalog` for `image`.
    fn catalog_line(&self, image: &str) -> String {
        let out = self.rackboot(&["image", "catalog"]);
        assert!(out.ok, "image catalog failed: {}", out.stderr);
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(image))
            .unwrap_or_else(|| panic!("{image} not in the catalog:\n{}", out.stdout))
            .to_string()
    }
}

/// The `kernel sha256` line of a successful `image fetch`.
fn fetched_kernel_sha256(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("kernel sha256 "))
        .unwrap_or_else(|| panic!("no kernel sha256 in:\n{stdout}"))
        .to_string()
}

/// A chain under test: which image, the definitions a site needs for it, the
/// arguments every fetch of it takes, and who it is verified by.
struct ChainCase {
    image: &'static str,
    definitions: Vec<(&'static str, String)>,
    args: Vec<String>,
    verified_by: String,
}

impl ChainCase {
    /// A fetch with the throwaway keyring, as `--from` or `--mirror` (in `args`).
    fn with_keyring(image: &'static str) -> ChainCase {
        let keys = keys();
        ChainCase {
            image,
            definitions: Vec::new(),
            args: vec!["--keyring".into(), utf8(&keys.keyring).into()],
            verified_by: keys.trusted.fingerprint.clone(),
        }
    }

    fn site(&self) -> Site {
        let site = Site::new();
        for (file, text) in &self.definitions {
            site.define(file, text);
        }
        site
    }

    fn fetch_from(&self, site: &Site, mirror: &Path) -> Outcome {
        let mut args: Vec<&str> = vec!["--from", utf8(mirror)];
        args.extend(self.args.iter().map(String::as_str));
        site.fetch(self.image, &args)
    }

    /// Fetches from `mirror` into a new site: it must register the image, verified by
    /// the expected key. Returns the site and the fetch's stdout.
    fn succeeds(&self, mirror: &Path) -> (Site, String) {
        let site = self.site();
        let out = self.fetch_from(&site, mirror);
        assert!(
            out.ok,
            "{} from a good mirror was refused:\n{}{}",
            self.image, out.stdout, out.stderr
        );
        assert!(
            out.stdout
                .contains(&format!("verified by {}", self.verified_by)),
            "{}: not verified by {}:\n{}",
            self.image,
            self.verified_by,
            out.stdout
        );
        let images = site.images();
        let kernel = fetched_kernel_sha256(&out.stdout);
        assert_eq!(
            images.get(self.image).map(String::as_str),
            kernel.get(..12),
            "{}: image list after the fetch: {images:?}",
            self.image
        );
        (site, out.stdout)
    }

    /// A copy of `good` broken by `damage`, fetched into a new site: refused, its
    /// stderr naming each of `reasons`, and nothing registered.
    fn refused(&self, good: &Path, what: &str, damage: impl FnOnce(&Path), reasons: &[&str]) {
        let copy = tempfile::tempdir().expect("damaged mirror");
        copy_tree(good, copy.path());
        damage(copy.path());
        let site = self.site();
        let out = self.fetch_from(&site, copy.path());
        self.assert_refused(&site, &out, what, reasons);
    }

    fn assert_refused(&self, site: &Site, out: &Outcome, what: &str, reasons: &[&str]) {
        assert!(
            !out.ok,
            "{} with {what} was registered:\n{}",
            self.image, out.stdout
        );
        for reason in reasons {
            assert!(
                out.stderr.contains(reason),
                "{} with {what}: the refusal does not name {reason:?}:\n{}",
                self.image,
                out.stderr
            );
        }
        assert!(
            !site.images().contains_key(self.image),
            "{} with {what}: refused, yet registered",
            self.image
        );
        let files = site.dir.path().join("data/images").join(self.image);
        assert!(
            !files.exists(),
            "{} with {what}: refused, yet {} exists",
            self.image,
            files.display()
        );
        assert_eq!(
            site.staging_left(),
            Vec::<PathBuf>::new(),
            "{} with {what}",
            self.image
        );
    }
}

// ---------------------------------------------------------------------------------
// Mirrors

/// A `.deb` of memtest86+ 6.10-4 holding `boot/memtest86+x64.efi`, as dpkg-deb
/// builds it.
fn memtest_deb(efi: &[u8]) -> Vec<u8> {
    let work = tempfile::tempdir().expect("package dir");
    let root = work.path().join("root");
    write(
        &root.join("DEBIAN/control"),
        "Package: memtest86+\nVersion: 6.10-4\nArchitecture: amd64\n\
         Maintainer: rackboot test <t@example.invalid>\n\
         Description: stand-in for Debian's memtest86+ (rackboot test)\n",
    );
    write(&root.join("boot/memtest86+x64.efi"), efi);
    write(&root.join("boot/memtest86+x64.bin"), blob(1000, 7));
    let deb = work.path().join("memtest86+.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&root)
        .arg(&deb));
    fs::read(&deb).expect("read the .deb")
}

/// `Packages.xz` with a stanza for the `.deb` (and one other package before it).
fn packages_xz(deb: &[u8]) -> Vec<u8> {
    let text = format!(
        "Package: memtest86\nVersion: 4.3.7-3.1\nArchitecture: amd64\n\
         Filename: pool/main/m/memtest86/memtest86_4.3.7-3.1_amd64.deb\nSize: 51380\n\
         SHA256: {}\n\n\
         Package: memtest86+\nVersion: 6.10-4\nInstalled-Size: 1049\nArchitecture: amd64\n\
         Maintainer: Debian QA Group <packages@qa.debian.org>\n\
         Description: stand-alone memory tester for x86 and x86-64\n\
         Section: misc\nPriority: optional\n\
         Filename: {MEMTEST_DEB}\nSize: {}\nSHA256: {}\n",
        sha256(b"another package"),
        deb.len(),
        sha256(deb)
    );
    let mut child = Command::new("xz")
        .args(["-c", "-6"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run xz");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed xz");
    let out = child.wait_with_output().expect("xz");
    assert!(out.status.success(), "xz failed");
    out.stdout
}

/// Writes `dists/bookworm/InRelease` listing the mirror's `Packages.xz`, dated
/// `date`, clearsigned by `key`.
fn memtest_release(root: &Path, date: &str, key: &Key) {
    let packages = fs::read(root.join(MEMTEST_PACKAGES)).expect("Packages.xz");
    let release = format!(
        "Origin: Debian\nLabel: Debian\nSuite: oldstable\nVersion: 12.11\n\
         Codename: bookworm\nDate: {date}\nAcquire-By-Hash: yes\n\
         Architectures: all amd64\nComponents: main\n\
         Description: rackboot test mirror of Debian 12\n\
         SHA256:\n {} {:>8} main/binary-amd64/Packages.xz\n",
        sha256(&packages),
        packages.len()
    );
    key.clearsign(&release, &root.join("dists/bookworm/InRelease"));
}

/// A Debian mirror with memtest86+ whose EFI binary is `efi`.
fn memtest_mirror(root: &Path, efi: &[u8], date: &str) {
    let deb = memtest_deb(efi);
    write(&root.join(MEMTEST_DEB), &deb);
    write(&root.join(MEMTEST_PACKAGES), packages_xz(&deb));
    memtest_release(root, date, &keys().trusted);
}

/// An ISO 9660 image (Rock Ridge, Joliet) holding `files`, as xorriso writes one.
fn iso(files: &[(&str, &[u8])], out: &Path) {
    let stage = tempfile::tempdir().expect("ISO tree");
    for (path, bytes) in files {
        write(&stage.path().join(path), bytes);
    }
    fs::create_dir_all(out.parent().expect("a parent")).expect("mkdir");
    run(Command::new("xorriso")
        .args([
            "-as",
            "mkisofs",
            "-quiet",
            "-R",
            "-J",
            "-V",
            "RACKBOOT_TEST",
            "-o",
        ])
        .arg(out)
        .arg(stage.path()));
}

fn rocky_iso(kernel: &[u8], initrd: &[u8], out: &Path) {
    iso(
        &[
            ("images/pxeboot/vmlinuz", kernel),
            ("images/pxeboot/initrd.img", initrd),
            ("EFI/BOOT/grub.cfg", b"set timeout=60\n"),
        ],
        out,
    );
}

/// Signs the BSD-style `CHECKSUM` of the Rocky mirror's ISOs with `key`.
fn rocky_checksum(root: &Path, key: &Key) {
    let dir = root.join(ROCKY_DIR);
    let mut text = String::new();
    for name in [ROCKY_OLDER_ISO, ROCKY_ISO] {
        let path = dir.join(name);
        text.push_str(&format!(
            "# {name}: {} bytes\nSHA256 ({name}) = {}\n",
            fs::metadata(&path).expect("ISO").len(),
            sha256_of(&path)
        ));
    }
    key.clearsign(&text, &dir.join("CHECKSUM"));
}

fn ubuntu_iso(kernel: &[u8], initrd: &[u8], out: &Path) {
    iso(
        &[
            ("casper/vmlinuz", kernel),
            ("casper/initrd", initrd),
            ("boot/grub/grub.cfg", b"set timeout=30\n"),
        ],
        out,
    );
}

/// Writes `24.04/SHA256SUMS` and its detached `SHA256SUMS.gpg` by `key`.
fn ubuntu_sums(root: &Path, key: &Key) {
    let dir = root.join("24.04");
    let text = format!(
        "{} *ubuntu-24.04.3-desktop-amd64.iso\n{} *{UBUNTU_ISO}\n",
        sha256(b"not in this mirror"),
        sha256_of(&dir.join(UBUNTU_ISO))
    );
    write(&dir.join("SHA256SUMS"), text);
    key.detach_sign(&dir.join("SHA256SUMS"), &dir.join("SHA256SUMS.gpg"));
}

/// Signs Flatcar's two files, each into `<file>.sig`, with `key`.
fn flatcar_sign(root: &Path, key: &Key) {
    for file in [FLATCAR_KERNEL, FLATCAR_IMAGE] {
        let path = root.join(file);
        key.detach_sign(&path, &root.join(format!("{file}.sig")));
    }
}

fn flatcar_mirror(root: &Path, kernel: &[u8], image: &[u8]) {
    write(&root.join(FLATCAR_KERNEL), kernel);
    write(&root.join(FLATCAR_IMAGE), image);
    flatcar_sign(root, &keys().trusted);
}

// ---------------------------------------------------------------------------------
// The chains

#[test]
fn debian_package_chain_memtest86plus() {
    if !ready("debian_package_chain_memtest86plus") {
        return;
    }
    let case = ChainCase::with_keyring("memtest86plus");
    let mirror = tempfile::tempdir().expect("mirror");
    let efi = blob(300_000, 1);
    memtest_mirror(mirror.path(), &efi, DATE);

    let (site, stdout) = case.succeeds(mirror.path());
    assert_eq!(fetched_kernel_sha256(&stdout), sha256(&efi), "{stdout}");
    let kernel = site.images()["memtest86plus"].clone();
    // A refusal leaves an image fetched before as it was.
    let copy = tempfile::tempdir().expect("mirror copy");
    copy_tree(mirror.path(), copy.path());
    memtest_release(copy.path(), DATE, &keys().other);
    let out = case.fetch_from(&site, copy.path());
    assert!(
        !out.ok && out.stderr.contains("not in the trusted keyring"),
        "{}",
        out.stderr
    );
    assert_eq!(site.images().get("memtest86plus"), Some(&kernel));

    case.refused(
        mirror.path(),
        "one byte of the EFI binary changed",
        |root| write(&root.join(MEMTEST_DEB), memtest_deb(&flipped(&efi))),
        &["memtest86+_6.10-4_amd64.deb", "sha256"],
    );
    case.refused(
        mirror.path(),
        "InRelease signed by a key not in the keyring",
        |root| memtest_release(root, DATE, &keys().other),
        &["InRelease", "not in the trusted keyring"],
    );
    case.refused(
        mirror.path(),
        "a Packages.xz that the Release does not list",
        |root| {
            let other_deb = memtest_deb(&blob(1000, 99));
            write(&root.join(MEMTEST_PACKAGES), packages_xz(&other_deb));
        },
        &["Packages.xz", "sha256"],
    );
}

#[test]
fn signed_checksums_chain_rocky_9_clearsigned() {
    if !ready("signed_checksums_chain_rocky_9_clearsigned") {
        return;
    }
    let case = ChainCase::with_keyring("rocky-9");
    let mirror = tempfile::tempdir().expect("mirror");
    let dir = mirror.path().join(ROCKY_DIR);
    let (kernel, initrd) = (blob(200_000, 2), blob(500_000, 3));
    rocky_iso(&kernel, &initrd, &dir.join(ROCKY_ISO));
    rocky_iso(&blob(1000, 4), &blob(1000, 5), &dir.join(ROCKY_OLDER_ISO));
    rocky_checksum(mirror.path(), &keys().trusted);

    let (_site, stdout) = case.succeeds(mirror.path());
    // The newest point release's ISO, not 9.4's.
    assert_eq!(fetched_kernel_sha256(&stdout), sha256(&kernel), "{stdout}");
    assert!(stdout.contains(ROCKY_ISO), "{stdout}");

    case.refused(
        mirror.path(),
        "one byte of the kernel changed",
        |root| {
            rocky_iso(
                &flipped(&kernel),
                &initrd,
                &root.join(ROCKY_DIR).join(ROCKY_ISO),
            )
        },
        &[ROCKY_ISO, "sha256"],
    );
    case.refused(
        mirror.path(),
        "CHECKSUM signed by a key not in the keyring",
        |root| rocky_checksum(root, &keys().other),
        &["CHECKSUM", "not in the trusted keyring"],
    );
    case.refused(
        mirror.path(),
        "one byte of the ISO changed",
        |root| flip_byte(&root.join(ROCKY_DIR).join(ROCKY_ISO)),
        &[ROCKY_ISO, "sha256"],
    );
}

#[test]
fn signed_checksums_chain_ubuntu_24_04_detached() {
    if !ready("signed_checksums_chain_ubuntu_24_04_detached") {
        return;
    }
    let case = ChainCase::with_keyring("ubuntu-24.04");
    let mirror = tempfile::tempdir().expect("mirror");
    let iso_path = |root: &Path| root.join("24.04").join(UBUNTU_ISO);
    let (kernel, initrd) = (blob(150_000, 6), blob(400_000, 7));
    ubuntu_iso(&kernel, &initrd, &iso_path(mirror.path()));
    ubuntu_sums(mirror.path(), &keys().trusted);

    let (_site, stdout) = case.succeeds(mirror.path());
    assert_eq!(fetched_kernel_sha256(&stdout), sha256(&kernel), "{stdout}");

    case.refused(
        mirror.path(),
        "one byte of the kernel changed",
        |root| ubuntu_iso(&flipped(&kernel), &initrd, &iso_path(root)),
        &[UBUNTU_ISO, "sha256"],
    );
    case.refused(
        mirror.path(),
        "SHA256SUMS signed by a key not in the keyring",
        |root| {
            let dir = root.join("24.04");
            keys()
                .other
                .detach_sign(&dir.join("SHA256SUMS"), &dir.join("SHA256SUMS.gpg"));
        },
        &["SHA256SUMS", "not in the trusted keyring"],
    );
    case.refused(
        mirror.path(),
        "one byte of the ISO changed",
        |root| flip_byte(&iso_path(root)),
        &[UBUNTU_ISO, "sha256"],
    );
}

#[test]
fn detached_signatures_chain_flatcar() {
    if !ready("detached_signatures_chain_flatcar") {
        return;
    }
    let case = ChainCase::with_keyring("flatcar");
    let mirror = tempfile::tempdir().expect("mirror");
    let kernel = blob(250_000, 8);
    flatcar_mirror(mirror.path(), &kernel, &blob(600_000, 9));

    let (_site, stdout) = case.succeeds(mirror.path());
    assert_eq!(fetched_kernel_sha256(&stdout), sha256(&kernel), "{stdout}");

    case.refused(
        mirror.path(),
        "one byte of the kernel changed",
        |root| flip_byte(&root.join(FLATCAR_KERNEL)),
        &["flatcar_production_pxe.vmlinuz", "signature"],
    );
    case.refused(
        mirror.path(),
        "files signed by a key not in the keyring",
        |root| flatcar_sign(root, &keys().other),
        &["not in the trusted keyring"],
    );
    // The kernel's signature holds; the image's is missing.
    case.refused(
        mirror.path(),
        "a missing .sig",
        |root| fs::remove_file(root.join(format!("{FLATCAR_IMAGE}.sig"))).expect("rm .sig"),
        &["flatcar_production_pxe_image.cpio.gz.sig"],
    );
}

#[test]
fn pinned_chain_of_a_site_definition() {
    if !ready("pinned_chain_of_a_site_definition") {
        return;
    }
    let mirror = tempfile::tempdir().expect("mirror");
    let (kernel, initrd) = (blob(100_000, 10), blob(200_000, 11));
    write(&mirror.path().join("site/os/vmlinuz"), &kernel);
    write(&mirror.path().join("site/os/initrd.img"), &initrd);
    let definition = format!(
        r#"# A site's own image, its files pinned by sha256.
os = "Site OS"
version = "1.0"
kind = "live"
architectures = ["amd64"]
firmware = ["bios", "uefi"]
memory_mib = 512
cmdline = "console=ttyS0"

[mirror]
base = "http://mirror.example.invalid/pub"
family = "site"

[chain]
kind = "pinned"
sha256 = {{ "site/os/vmlinuz" = "{}", "site/os/initrd.img" = "{}" }}

[files]
kernel = "site/os/vmlinuz"
initrd = "site/os/initrd.img"
"#,
        sha256(&kernel),
        sha256(&initrd)
    );
    let mut case = ChainCase::with_keyring("site-pinned");
    case.definitions.push(("site-pinned.toml", definition));
    // A pinned chain has no signature: the keyring is not used, nothing signs it.
    case.verified_by = "pinned sha256".into();

    let (site, stdout) = case.succeeds(mirror.path());
    assert_eq!(fetched_kernel_sha256(&stdout), sha256(&kernel), "{stdout}");
    assert!(
        site.catalog_line("site-pinned")
            .contains("yes, verified by pinned sha256")
    );

    case.refused(
        mirror.path(),
        "one byte of the kernel changed",
        |root| flip_byte(&root.join("site/os/vmlinuz")),
        &["site/os/vmlinuz", "sha256"],
    );
    case.refused(
        mirror.path(),
        "one byte of the initrd changed",
        |root| flip_byte(&root.join("site/os/initrd.img")),
        &["site/os/initrd.img", "sha256"],
    );
}

/// Definitions that ship no key are refused without `--keyring`, saying to give it.
#[test]
fn unkeyed_definitions_need_a_keyring() {
    if !ready("unkeyed_definitions_need_a_keyring") {
        return;
    }
    let mirror = tempfile::tempdir().expect("mirror");
    let root = mirror.path();
    rocky_iso(b"k", b"i", &root.join(ROCKY_DIR).join(ROCKY_ISO));
    rocky_iso(b"k", b"i", &root.join(ROCKY_DIR).join(ROCKY_OLDER_ISO));
    rocky_checksum(root, &keys().trusted);
    ubuntu_iso(b"k", b"i", &root.join("24.04").join(UBUNTU_ISO));
    ubuntu_sums(root, &keys().trusted);
    flatcar_mirror(root, b"kernel", b"image");
    let site = Site::new();
    for image in ["rocky-9", "ubuntu-24.04", "flatcar"] {
        let case = ChainCase {
            image,
            definitions: Vec::new(),
            args: Vec::new(),
            verified_by: String::new(),
        };
        let out = case.fetch_from(&site, root);
        case.assert_refused(&site, &out, "no --keyring", &["--keyring"]);
    }
}

/// An `InRelease` signed by the same key but dated before the one already seen is
/// refused as a replay, and the image stays the one fetched first.
#[test]
fn an_older_release_is_refused_as_a_replay() {
    if !ready("an_older_release_is_refused_as_a_replay") {
        return;
    }
    let case = ChainCase::with_keyring("memtest86plus");
    let (new, old) = (
        tempfile::tempdir().expect("mirror"),
        tempfile::tempdir().expect("mirror"),
    );
    let (first, second) = (blob(120_000, 12), blob(120_000, 13));
    memtest_mirror(new.path(), &first, DATE);
    memtest_mirror(old.path(), &second, DAY_BEFORE);

    let (site, stdout) = case.succeeds(new.path());
    assert_eq!(fetched_kernel_sha256(&stdout), sha256(&first));
    let out = case.fetch_from(&site, old.path());
    assert!(!out.ok, "the older InRelease was taken:\n{}", out.stdout);
    assert!(
        out.stderr.contains("older"),
        "the refusal does not say the signed file is older:\n{}",
        out.stderr
    );
    assert_eq!(
        site.images().get("memtest86plus").map(String::as_str),
        sha256(&first).get(..12),
        "the image changed after the replay was refused"
    );
    assert_eq!(site.staging_left(), Vec::<PathBuf>::new());
}

// ---------------------------------------------------------------------------------
// Resume over HTTP

/// A static file server on 127.0.0.1 for a mirror tree, one thread per connection,
/// each closed after one response. It honours `Range: bytes=N-` (206), and the first
/// whole-file request for `cut` gets the whole length announced but only half the
/// bytes before the connection is closed. It logs `PATH RANGE STATUS` per request.
struct RangeServer {
    base_url: String,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RangeServer {
    fn start(root: &Path, cut: &str) -> RangeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("address").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let cut_done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, stop, root) = (Arc::clone(&log), Arc::clone(&stop), root.to_path_buf());
            let cut = format!("/{cut}");
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (log, root, cut, cut_done) = (
                                Arc::clone(&log),
                                root.clone(),
                                cut.clone(),
                                Arc::clone(&cut_done),
                            );
                            std::thread::spawn(move || {
                                serve_one(stream, &root, &cut, &cut_done, &log)
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        RangeServer {
            base_url: format!("http://127.0.0.1:{port}"),
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for RangeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_one(
    stream: TcpStream,
    root: &Path,
    cut: &str,
    cut_done: &AtomicBool,
    log: &Mutex<Vec<String>>,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut range_from: Option<u64> = None;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {
                if let Some((name, value)) = line.split_once(':')
                    && name.trim().eq_ignore_ascii_case("range")
                {
                    range_from = value
                        .trim()
                        .strip_prefix("bytes=")
                        .and_then(|r| r.strip_suffix('-'))
                        .and_then(|n| n.parse().ok());
                }
            }
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let file = (path.starts_with('/') && !path.split('/').any(|c| c == ".."))
        .then(|| root.join(path.trim_start_matches('/')))
        .filter(|p| p.is_file());
    let mut out = &stream;
    let Some(bytes) = file.and_then(|f| fs::read(f).ok()) else {
        log.lock().expect("log").push(format!("{path} - 404"));
        let _ = out
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let len = bytes.len() as u64;
    let range = range_from.map_or("-".to_string(), |n| format!("bytes={n}-"));
    let (status, head, body) = match range_from {
        Some(from) if from >= len => (
            416,
            format!(
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n"
            ),
            &bytes[..0],
        ),
        Some(from) => (
            206,
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{len}\r\nContent-Length: {}\r\n",
                len - 1,
                len - from
            ),
            &bytes[from as usize..],
        ),
        None => (
            200,
            format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n"),
            &bytes[..],
        ),
    };
    let cutting = status == 200 && path == cut && !cut_done.swap(true, Ordering::SeqCst);
    log.lock().expect("log").push(format!(
        "{path} {range} {status}{}",
        if cutting { " cut" } else { "" }
    ));
    let head = format!("{head}Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n");
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let body = if cutting {
        &body[..body.len() / 2]
    } else {
        body
    };
    let _ = out.write_all(body);
    let _ = out.flush();
    if cutting {
        let _ = stream.shutdown(Shutdown::Both);
    }
}

/// A kernel download cut in the middle resumes on its own with `Range`.
#[test]
fn a_download_cut_in_the_middle_resumes_over_http() {
    if !ready("a_download_cut_in_the_middle_resumes_over_http") {
        return;
    }
    let mirror = tempfile::tempdir().expect("mirror");
    let kernel = blob(4 << 20, 14);
    flatcar_mirror(mirror.path(), &kernel, &blob(300_000, 15));
    let server = RangeServer::start(mirror.path(), FLATCAR_KERNEL);
    let mut case = ChainCase::with_keyring("flatcar");
    case.args
        .extend(["--mirror".to_string(), server.base_url.clone()]);
    let site = case.site();
    let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
    let out = site.fetch("flatcar", &args);
    let requests = server.requests();
    assert!(
        out.ok,
        "the fetch did not complete:\n{}{}\nrequests: {requests:#?}",
        out.stdout, out.stderr
    );
    assert_eq!(fetched_kernel_sha256(&out.stdout), sha256(&kernel));
    assert!(
        out.stdout
            .contains(&format!("verified by {}", case.verified_by)),
        "{}",
        out.stdout
    );
    let kernel_path = format!("/{FLATCAR_KERNEL}");
    assert!(
        requests.contains(&format!("{kernel_path} - 200 cut")),
        "the kernel was not cut: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(&format!("{kernel_path} bytes=")) && r.ends_with(" 206")),
        "no Range request for the rest of the kernel: {requests:#?}"
    );
    assert!(site.images().contains_key("flatcar"));
}

// ---------------------------------------------------------------------------------
// debian-12 over the real files

/// Debian's real chain, offline: the committed `InRelease`, verified by the shipped
/// Debian archive keyring (no `--keyring`), lists the real `SHA256SUMS`, which lists
/// the real kernel and initrd.
#[test]
fn debian_installer_chain_debian_12_real_files() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/catalog");
    let sums = fixtures.join("bookworm-installer-amd64-SHA256SUMS");
    assert_eq!(sha256_of(&sums), BOOKWORM_SUMS_SHA256, "{}", sums.display());
    let installer = harness::debian_mirror::debian_installer();
    let (kernel, initrd) = (installer.kernel.clone(), installer.initrd.clone());
    let parts = [
        (&kernel, "linux"),
        (&initrd, "initrd.gz"),
        (&installer.shim, "bootnetx64.efi"),
        (&installer.grub, "grubx64.efi"),
    ];
    // A newer installer upload moves the package past the committed lists: say so
    // rather than fail as if the chain were broken.
    let listed = fs::read_to_string(&sums).expect("SHA256SUMS");
    for (file, name) in parts {
        let line = format!(
            "{}  ./netboot/debian-installer/amd64/{name}",
            sha256_of(file)
        );
        assert!(
            listed.lines().any(|l| l == line),
            "{INSTALLER_PACKAGE}'s {name} ({}) is not the one the committed SHA256SUMS \
             lists: the package moved on; refresh tests/fixtures/catalog/bookworm-InRelease \
             and bookworm-installer-amd64-SHA256SUMS from the archive, and the sha256 here",
            file.display()
        );
    }

    let mirror = tempfile::tempdir().expect("mirror");
    let suite = mirror.path().join("dists/bookworm");
    let images = suite.join("main/installer-amd64/current/images");
    fs::create_dir_all(images.join("netboot/debian-installer/amd64")).expect("mkdir");
    fs::copy(fixtures.join("bookworm-InRelease"), suite.join("InRelease")).expect("InRelease");
    fs::copy(&sums, images.join("SHA256SUMS")).expect("SHA256SUMS");
    // Linked, not copied: 54 MB that rackboot copies into its cache anyway.
    for (from, name) in parts {
        std::os::unix::fs::symlink(
            from,
            images.join("netboot/debian-installer/amd64").join(name),
        )
        .expect("symlink");
    }
    let case = ChainCase {
        image: "debian-12",
        definitions: Vec::new(),
        args: Vec::new(),
        verified_by: DEBIAN_BOOKWORM_ARCHIVE_KEY.into(),
    };
    let (site, stdout) = case.succeeds(mirror.path());
    assert_eq!(
        fetched_kernel_sha256(&stdout),
        sha256_of(&kernel),
        "{stdout}"
    );
    assert!(stdout.contains(&sha256_of(&initrd)), "{stdout}");
    // Debian's own signed shim and grub came with it, under the names rackboot
    // serves them by to Secure Boot machines booting this image.
    for (file, served) in [
        (&installer.shim, "shimx64.efi"),
        (&installer.grub, "grubx64.efi"),
    ] {
        let placed = site.dir.path().join("data/images/debian-12").join(served);
        assert_eq!(sha256_of(&placed), sha256_of(file), "{}", placed.display());
    }
    let line = site.catalog_line("debian-12");
    assert!(
        line.contains(&format!("yes, verified by {DEBIAN_BOOKWORM_ARCHIVE_KEY}")),
        "{line}"
    );
}

#[test]
fn keys_are_what_the_tests_think() {
    // The two throwaway keys differ, and the keyring holds the trusted one only.
    if !ready("keys_are_what_the_tests_think") {
        return;
    }
    let keys = keys();
    assert_ne!(keys.trusted.fingerprint, keys.other.fingerprint);
    let listing = run(Command::new("gpg")
        .args(["--batch", "--with-colons", "--show-keys"])
        .arg(&keys.keyring));
    assert!(listing.contains(&keys.trusted.fingerprint), "{listing}");
    assert!(!listing.contains(&keys.other.fingerprint), "{listing}");
}
