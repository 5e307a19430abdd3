//! A Debian archive mirror made for a test, as `rackboot image fetch` reads the real
//! one: the real installer's kernel and initrd (package
//! `debian-installer-12-netboot-amd64`, downloaded once and cached), laid out under
//! `dists/bookworm/main/installer-amd64/current/images/`, listed in that directory's
//! `SHA256SUMS`, which a `Release` lists in turn, clear-signed into `InRelease` by a
//! throwaway OpenPGP key (made in a temporary GNUPGHOME) whose public keyring the
//! test hands to the fetch.
//!
//! `MirrorServer` serves such a tree over HTTP from a thread inside a test's network
//! namespace (never the host's), logging each request line.
//!
//! Damage for the negative tests: one byte of the initrd changed, the initrd cut
//! short, `InRelease` signed by another key.

use crate::fixtures::repo_root;
use crate::netns::{Netns, in_netns};
use crate::process::run;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The Debian package the installer's kernel and initrd come from, always both.
pub const INSTALLER_PACKAGE: &str = "debian-installer-12-netboot-amd64";
/// Where that package keeps the text installer's kernel and initrd.
const PACKAGE_IMAGES: &str = "usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64";
/// The suite's directory, under the mirror root.
pub const SUITE_DIR: &str = "dists/bookworm";
/// The installer images' directory, under the suite's (as `Release` names it).
pub const IMAGES_UNDER_SUITE: &str = "main/installer-amd64/current/images";
/// The kernel and initrd, under the images' directory (as `SHA256SUMS` names them).
pub const KERNEL_UNDER_IMAGES: &str = "netboot/debian-installer/amd64/linux";
pub const INITRD_UNDER_IMAGES: &str = "netboot/debian-installer/amd64/initrd.gz";
/// The installer's signed shim and network grub (what Secure Boot machines load).
pub const SHIM_UNDER_IMAGES: &str = "netboot/debian-installer/amd64/bootnetx64.efi";
pub const GRUB_UNDER_IMAGES: &str = "netboot/debian-installer/amd64/grubx64.efi";

/// The installer's kernel and initrd, from one download of `INSTALLER_PACKAGE`.
#[derive(Debug, Clone)]
pub struct InstallerFiles {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub shim: PathBuf,
    pub grub: PathBuf,
    /// The package's version, e.g. `20230607+deb12u15`.
    pub version: String,
}

/// The real installer's kernel and initrd, downloaded (`apt-get download` +
/// `dpkg-deb -x`) once into `target/debian-installer/` beside the other boot fixtures
/// and kept there: about 130 MB of package for 49 MB of files.
pub fn debian_installer() -> InstallerFiles {
    static FILES: OnceLock<Result<InstallerFiles, String>> = OnceLock::new();
    FILES
        .get_or_init(|| fetch_installer(&repo_root().join("target/debian-installer")))
        .clone()
        .unwrap_or_else(|e| panic!("Debian installer files: {e}"))
}

fn fetch_installer(cache: &Path) -> Result<InstallerFiles, String> {
    let kernel = cache.join("linux");
    let initrd = cache.join("initrd.gz");
    let shim = cache.join("bootnetx64.efi");
    let grub = cache.join("grubx64.efi");
    let version_file = cache.join("version");
    let nonempty = |p: &Path| fs::metadata(p).is_ok_and(|m| m.len() > 0);
    if [&kernel, &initrd, &shim, &grub, &version_file]
        .into_iter()
        .all(|p| nonempty(p))
    {
        let version = fs::read_to_string(&version_file)
            .map_err(|e| format!("{}: {e}", version_file.display()))?;
        return Ok(InstallerFiles {
            kernel,
            initrd,
            shim,
            grub,
            version: version.trim().to_string(),
        });
    }
    let _ = fs::remove_file(&version_file);
    fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let work = tempfile::tempdir_in(cache).map_err(|e| format!("temp dir: {e}"))?;
    let download = || {
        Command::new("apt-get")
            .args(["download", INSTALLER_PACKAGE])
            .current_dir(work.path())
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))
    };
    let mut out = download()?;
    if !out.status.success() {
        // Missing or stale package lists: refresh them once.
        let update = Command::new("apt-get")
            .arg("update")
            .output()
            .map_err(|e| format!("cannot run apt-get update: {e}"))?;
        if !update.status.success() {
            return Err(format!(
                "apt-get update failed: {}",
                String::from_utf8_lossy(&update.stderr)
            ));
        }
        out = download()?;
    }
    if !out.status.success() {
        return Err(format!(
            "apt-get download {INSTALLER_PACKAGE} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let deb = fs::read_dir(work.path())
        .map_err(|e| format!("{}: {e}", work.path().display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| format!("apt-get download left no .deb in {}", work.path().display()))?;
    let version = command_output(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Version"),
    )?;
    let root = work.path().join("root");
    command_output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    for (from, to) in [
        ("linux", &kernel),
        ("initrd.gz", &initrd),
        ("bootnetx64.efi", &shim),
        ("grubx64.efi", &grub),
    ] {
        let source = root.join(PACKAGE_IMAGES).join(from);
        let partial = to.with_extension("partial");
        fs::copy(&source, &partial).map_err(|e| format!("{}: {e}", source.display()))?;
        fs::rename(&partial, to).map_err(|e| format!("{}: {e}", to.display()))?;
    }
    // Written last: its presence says the files are complete.
    fs::write(&version_file, format!("{}\n", version.trim()))
        .map_err(|e| format!("{}: {e}", version_file.display()))?;
    Ok(InstallerFiles {
        kernel,
        initrd,
        shim,
        grub,
        version: version.trim().to_string(),
    })
}

fn command_output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A throwaway OpenPGP signing key in a GNUPGHOME of its own (deleted on drop), and
/// its public key exported as a keyring file (binary, as `gpg --export` writes it and
/// as Debian ships `debian-archive-keyring.gpg`).
pub struct Signer {
    home: tempfile::TempDir,
    pub keyring: PathBuf,
    pub uid: String,
}

impl Signer {
    /// A new key named `name` (RSA 4096, sign only, like Debian's archive keys).
    pub fn new(name: &str) -> Self {
        let home = tempfile::tempdir().expect("GNUPGHOME");
        let uid = format!("rackboot test mirror {name} <{name}@mirror.rackboot.test>");
        run(Signer::gpg_in(home.path())
            .args(["--passphrase", "", "--quick-gen-key"])
            .arg(&uid)
            .args(["rsa4096", "sign", "never"]));
        let keyring = home.path().join("keyring.gpg");
        run(Signer::gpg_in(home.path())
            .arg("--output")
            .arg(&keyring)
            .arg("--export")
            .arg(&uid));
        assert!(
            fs::metadata(&keyring).is_ok_and(|m| m.len() > 0),
            "gpg exported no key for {uid}"
        );
        Signer { home, keyring, uid }
    }

    fn gpg_in(home: &Path) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", home).args([
            "--batch",
            "--quiet",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
        ]);
        cmd
    }

    /// `gpg --clearsign` of `input` into `output` (replaced).
    pub fn clearsign(&self, input: &Path, output: &Path) {
        let _ = fs::remove_file(output);
        run(Signer::gpg_in(self.home.path())
            .args(["--passphrase", "", "--local-user"])
            .arg(&self.uid)
            .args(["--digest-algo", "SHA512", "--output"])
            .arg(output)
            .arg("--clearsign")
            .arg(input));
    }
}

/// A mirror tree in a temporary directory: `dir/debian/` is the mirror root (what
/// `image fetch --from` takes, and what `MirrorServer` serves at `/debian`).
pub struct DebianMirror {
    pub dir: tempfile::TempDir,
    pub signer: Signer,
}

impl DebianMirror {
    /// Lays out `kernel` and `initrd` as the archive does (with stand-in bytes for
    /// the signed shim and grub, which these tests never start), writes
    /// `SHA256SUMS` and `Release` and signs `InRelease` with a new key.
    pub fn build(kernel: &Path, initrd: &Path) -> Self {
        let dir = tempfile::tempdir().expect("mirror dir");
        let mirror = DebianMirror {
            dir,
            signer: Signer::new("archive"),
        };
        let images = mirror.images_dir();
        for (source, under) in [(kernel, KERNEL_UNDER_IMAGES), (initrd, INITRD_UNDER_IMAGES)] {
            let dest = images.join(under);
            fs::create_dir_all(dest.parent().expect("a parent")).expect("mkdir mirror");
            fs::copy(source, &dest)
                .unwrap_or_else(|e| panic!("copy {} into the mirror: {e}", source.display()));
        }
        for (under, bytes) in [
            (SHIM_UNDER_IMAGES, &b"test mirror: shim"[..]),
            (GRUB_UNDER_IMAGES, &b"test mirror: grub"[..]),
        ] {
            fs::write(images.join(under), bytes).expect("write a stand-in loader");
        }
        // Debian writes the paths relative to images/, with a leading "./".
        let sums: String = [
            KERNEL_UNDER_IMAGES,
            INITRD_UNDER_IMAGES,
            SHIM_UNDER_IMAGES,
            GRUB_UNDER_IMAGES,
        ]
        .iter()
        .map(|under| format!("{}  ./{under}\n", sha256_file(&images.join(under))))
        .collect();
        fs::write(images.join("SHA256SUMS"), sums).expect("write SHA256SUMS");
        mirror.write_release();
        mirror.sign_release(&mirror.signer);
        mirror
    }

    /// The mirror root: `dists/` is in it.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("debian")
    }

    pub fn suite_dir(&self) -> PathBuf {
        self.root().join(SUITE_DIR)
    }

    pub fn images_dir(&self) -> PathBuf {
        self.suite_dir().join(IMAGES_UNDER_SUITE)
    }

    pub fn kernel(&self) -> PathBuf {
        self.images_dir().join(KERNEL_UNDER_IMAGES)
    }

    pub fn initrd(&self) -> PathBuf {
        self.images_dir().join(INITRD_UNDER_IMAGES)
    }

    /// The public keyring that verifies this mirror's `InRelease`.
    pub fn keyring(&self) -> &Path {
        &self.signer.keyring
    }

    /// `Release`: the fields `image fetch` checks, and the `SHA256:` entry for the
    /// installer images' `SHA256SUMS` (size padded as Debian's archive pads it).
    fn write_release(&self) {
        let sums = self.images_dir().join("SHA256SUMS");
        let size = fs::metadata(&sums).expect("SHA256SUMS").len();
        let release = format!(
            "Origin: Debian\n\
             Label: Debian\n\
             Suite: stable\n\
             Version: 12.11\n\
             Codename: bookworm\n\
             Date: {date}\n\
             Acquire-By-Hash: yes\n\
             No-Support-for-Architecture-all: Packages\n\
             Architectures: all amd64\n\
             Components: main\n\
             Description: rackboot test mirror of Debian 12\n\
             SHA256:\n \
             {sha} {size:>8} {IMAGES_UNDER_SUITE}/SHA256SUMS\n",
            date = rfc2822_utc_now(),
            sha = sha256_file(&sums),
        );
        fs::write(self.suite_dir().join("Release"), release).expect("write Release");
    }

    /// Clear-signs `Release` into `InRelease` with `signer`'s key.
    pub fn sign_release(&self, signer: &Signer) {
        let suite = self.suite_dir();
        signer.clearsign(&suite.join("Release"), &suite.join("InRelease"));
    }

    /// Changes one byte in the middle of the initrd (the size stays); nothing that
    /// lists it changes.
    pub fn flip_initrd_byte(&self) {
        let path = self.initrd();
        let mut bytes = fs::read(&path).expect("read the mirror's initrd");
        assert!(!bytes.is_empty(), "empty initrd");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        fs::write(&path, bytes).expect("write the mirror's initrd");
    }

    /// Cuts the initrd to half its length; nothing that lists it changes.
    pub fn truncate_initrd(&self) {
        let path = self.initrd();
        let len = fs::metadata(&path).expect("the mirror's initrd").len();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(len / 2))
            .expect("truncate the mirror's initrd");
    }
}

/// The sha256 of a file, hex (through `sha256sum`, which every Debian system has).
pub fn sha256_file(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    let sum = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(sum.len(), 64, "sha256sum {}: {out:?}", path.display());
    sum
}

/// Now, as `Release` writes its `Date:` (`Sat, 10 May 2025 09:02:13 UTC`).
pub fn rfc2822_utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    rfc2822_utc(secs)
}

/// `secs` since the epoch as `Sat, 10 May 2025 09:02:13 UTC`.
pub fn rfc2822_utc(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} UTC",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01: the inverse of `civil_from_days`.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A static HTTP/1.1 file server for a directory, listening inside a namespace, one
/// thread per connection, each connection closed after its response. It logs every
/// request as `METHOD PATH STATUS`. Stopped on drop.
pub struct MirrorServer {
    /// `http://ADDR:PORT` (no trailing slash).
    pub base_url: String,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MirrorServer {
    /// Serves `dir` on `ip` (an address of `ns`), on a port the kernel picks.
    pub fn start(ns: &Netns, ip: &str, dir: &Path) -> Self {
        let bind = format!("{ip}:0");
        let listener = in_netns(ns, move || {
            TcpListener::bind(&bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"))
        });
        let port = listener.local_addr().expect("local address").port();
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, stop, dir) = (Arc::clone(&log), Arc::clone(&stop), dir.to_path_buf());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (log, dir) = (Arc::clone(&log), dir.clone());
                            std::thread::spawn(move || serve_one(stream, &dir, &log));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        };
        MirrorServer {
            base_url: format!("http://{ip}:{port}"),
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// Every request so far, one `METHOD PATH STATUS` line each.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for MirrorServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_one(stream: TcpStream, dir: &Path, log: &Mutex<Vec<String>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // The headers are read and ignored (no ranges, no conditionals).
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let file = (path.starts_with('/') && !path.split('/').any(|c| c == ".."))
        .then(|| dir.join(path.trim_start_matches('/')))
        .filter(|p| p.is_file());
    let status = match (&file, method.as_str()) {
        (_, m) if m != "GET" && m != "HEAD" => 405,
        (Some(_), _) => 200,
        (None, _) => 404,
    };
    if let Ok(mut log) = log.lock() {
        log.push(format!("{method} {target} {status}"));
    }
    let mut out = &stream;
    match file {
        Some(file) if status == 200 => {
            let Ok(mut f) = fs::File::open(&file) else {
                return;
            };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\
                 Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
            );
            if out.write_all(head.as_bytes()).is_err() || method == "HEAD" {
                return;
            }
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 || out.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
        _ => {
            let reason = if status == 405 {
                "Method Not Allowed"
            } else {
                "Not Found"
            };
            let body = format!("{reason}\n");
            let _ = out.write_all(
                format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n\
                     Content-Type: text/plain\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    }
    let _ = out.flush();
}
