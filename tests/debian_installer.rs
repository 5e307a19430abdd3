//! The real Debian installer (d-i, package `debian-installer-12-netboot-amd64`) boots
//! from rackboot in a BIOS VM and in a UEFI VM, one after the other; each fetches
//! its own per-machine rendered preseed and runs its `preseed/early_command`, which
//! reports back to rackboot. The installer would stop at the mirror step (there is no
//! package mirror here); the test stops each VM as soon as the report is in.
//!
//! The image comes from a Debian archive mirror the test builds and signs
//! (`harness::debian_mirror`), served over HTTP inside the test's namespace.
//!
//! `rackboot image fetch debian-12` takes the image from that mirror (trusting the
//! test's key) with the shipped definition: its command line rendered per machine
//! (`url=` the machine's preseed, `hostname=`, the console from `[images]`) and its
//! preseed template, whose early_command calls `GET /progress/<token>/installer-started`
//! (an `install.progress` event of the machine).
//!
//! The fetch's refusals (a changed byte, another signer, a file cut short) and its
//! local-directory source are tested here too, without VMs.

use harness::debian_mirror::{
    DebianMirror, INITRD_UNDER_IMAGES, MirrorServer, Signer, civil_from_days, days_from_civil,
    debian_installer, rfc2822_utc,
};
use harness::{BootNet, Firmware, Netns, SERVER_IP, Vm, run, should_run, tail, test_bytes};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const IMAGE: &str = "debian-12";
/// The preseed arrives about 90 s (BIOS) / 104 s (UEFI) after QEMU starts and the
/// early_command runs about 13 s later, under TCG on an idle machine; the machine
/// is shared.
const DEADLINE: Duration = Duration::from_secs(420);

/// With 512 MiB, d-i enters its low-memory mode and waits at a notice.
const INSTALLER_MEMORY_MIB: u32 = 1024;

/// What d-i's text frontend prints when it waits for an answer.
const WAITING_FOR_A_PERSON: &[&str] = &["[Press enter to continue]", "Prompt: '?' for help"];

struct Machine {
    name: &'static str,
    firmware: Firmware,
    mac: &'static str,
    hostname: &'static str,
    ip: &'static str,
}

const MACHINES: [Machine; 2] = [
    Machine {
        name: "bios",
        firmware: Firmware::Bios,
        mac: "52:54:00:d1:0b:01",
        hostname: "di-bios",
        ip: "192.0.2.61",
    },
    Machine {
        name: "uefi",
        firmware: Firmware::Uefi,
        mac: "52:54:00:d1:0e:02",
        hostname: "di-uefi",
        ip: "192.0.2.62",
    },
];

/// Registers image `debian-12` from the mirror.
fn register_image(net: &BootNet, mirror: &DebianMirror, server: &MirrorServer) {
    // The installer's console on the VM's serial port, for the log and the kernel
    // command line checked after each boot.
    let mut config = std::fs::read_to_string(&net.config).expect("read config");
    config.push_str("[images]\nconsole = \"ttyS0,115200\"\n");
    std::fs::write(&net.config, config).expect("write config");
    let out = fetch(
        &net.ns,
        &net.config,
        &[
            "--mirror",
            &format!("{}/debian", server.base_url),
            "--keyring",
            path_str(mirror.keyring()),
        ],
    );
    assert!(
        out.status.success(),
        "image fetch failed: {}",
        describe(&out)
    );
    // Over HTTP, from the test's mirror: the signed list first.
    let requests = server.requests();
    assert!(
        requests
            .first()
            .is_some_and(|r| r.starts_with("GET /debian/dists/bookworm/InRelease ")),
        "{requests:?}"
    );
}

/// Index of the event (in `event list --mac` output) that says the installer's
/// early_command reported, at or after `from`.
fn early_command_event(events: &str, from: usize) -> Option<usize> {
    events.lines().enumerate().skip(from).find_map(|(i, line)| {
        let kind = line.split_whitespace().nth(3).unwrap_or_default();
        (kind == "install.progress" && line.contains("installer-started")).then_some(i)
    })
}

/// Index of the first `http.file` event of an `event list` output.
fn preseed_event(events: &str) -> Option<usize> {
    events
        .lines()
        .position(|line| line.split_whitespace().nth(3) == Some("http.file"))
}

/// The time of an `event list` line (`2026-11-22 01:41:06.673Z ...`), in ms since
/// the epoch.
fn event_ms(line: &str) -> i64 {
    let mut fields = line.split_whitespace();
    let (date, time) = (fields.next().unwrap_or_default(), fields.next());
    let time = time.unwrap_or_default().trim_end_matches('Z');
    let d: Vec<i64> = date.split('-').filter_map(|p| p.parse().ok()).collect();
    let t: Vec<f64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    assert!(d.len() == 3 && t.len() == 3, "no time in {line:?}");
    let days = days_from_civil(d[0], d[1] as u32, d[2] as u32);
    days * 86_400_000 + ((t[0] * 3600.0 + t[1] * 60.0 + t[2]) * 1000.0).round() as i64
}

fn epoch_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// The serial console without terminal escapes (d-i runs in GNU screen), its tail.
fn serial_tail(vm: &Vm, lines: usize) -> String {
    let text = vm.serial_text();
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte; other escapes: ESC and one more char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\r' {
            plain.push('\n');
        } else if !c.is_control() || c == '\n' {
            plain.push(c);
        }
    }
    let kept: Vec<&str> = plain.lines().filter(|l| !l.trim().is_empty()).collect();
    tail(&kept.join("\n"), lines)
}

/// What one VM's boot showed: seconds after QEMU started.
struct Timing {
    preseed_s: f64,
    early_command_s: f64,
}

/// Boots `machine` until its early_command reports (or the deadline), then stops it.
fn boot_installer(
    net: &BootNet,
    server: &MirrorServer,
    machine: &Machine,
) -> Result<Timing, String> {
    let started = SystemTime::now();
    let clock = Instant::now();
    let mut vm = Vm::start_with_memory(
        net,
        machine.firmware,
        "tap0",
        machine.mac,
        machine.name,
        INSTALLER_MEMORY_MIB,
    );
    let events = || net.cli(&["event", "list", "--mac", machine.mac, "--limit", "1000"]);
    let mut seen = None;
    let mut stuck = false;
    while clock.elapsed() < DEADLINE && !vm.proc.exited() && !stuck {
        std::thread::sleep(Duration::from_secs(2));
        // Before its preseed's early_command has run, a question on d-i's console
        // (text frontend) waits for a person: fail now, not at the deadline.
        let serial = vm.serial_text();
        stuck = WAITING_FOR_A_PERSON.iter().any(|p| serial.contains(p));
        let events = events();
        if let Some(preseed) = preseed_event(&events)
            && let Some(early) = early_command_event(&events, preseed + 1)
        {
            seen = Some((events, preseed, early));
            break;
        }
    }
    let exited = vm.proc.exited();
    let report = |why: &str| {
        format!(
            "{} VM: {why} ({:.0} s after QEMU started)\n--- serial (tail) ---\n{}\n\
             --- events ---\n{}\n--- mirror requests ---\n{}\n--- rackboot log (tail) ---\n{}",
            machine.name,
            clock.elapsed().as_secs_f64(),
            serial_tail(&vm, 40),
            events(),
            server.requests().join("\n"),
            tail(&net.server_log(), 40)
        )
    };
    let Some((events, preseed, early)) = seen else {
        let why = if stuck {
            "d-i asks a question on its console (unattended install stopped)"
        } else if exited {
            "QEMU exited before the installer reported"
        } else {
            "no report from the installer's early_command before the deadline"
        };
        return Err(report(why));
    };
    // The kernel (its first lines are on the serial console) was given this
    // machine's own preseed URL and its hostname.
    let serial = vm.serial_text();
    drop(vm);
    let url = format!(
        "url=http://{SERVER_IP}:8080/machines/{}/files/preseed.cfg",
        machine.mac.replace(':', "-")
    );
    let hostname = format!("hostname={}", machine.hostname);
    let command_line = serial
        .lines()
        .find(|l| l.contains("Command line:"))
        .unwrap_or_default();
    if !command_line.contains(&url) || !command_line.contains(&hostname) {
        return Err(format!(
            "{}: the kernel command line lacks {url} or {hostname}: {command_line:?}",
            machine.name
        ));
    }
    let line = |i: usize| events.lines().nth(i).unwrap_or_default().to_string();
    let preseed_line = line(preseed);
    // The preseed went to the machine's own address: its fixed one, from DHCP.
    let client = format!("client={}:", machine.ip);
    if !preseed_line.contains(&format!("image={IMAGE}")) || !preseed_line.contains(&client) {
        return Err(format!("preseed event: {preseed_line}\n{events}"));
    }
    let at = |i: usize| (event_ms(&line(i)) - epoch_ms(started)) as f64 / 1000.0;
    Ok(Timing {
        preseed_s: at(preseed),
        early_command_s: at(early),
    })
}

/// Fetches `url` from `ns` with source address `ip` (curl), returning the HTTP status
/// and body.
fn get_from(ns: &Netns, ip: &str, url: &str) -> (String, String) {
    let out = run(ns.command("curl").args([
        "-sS",
        "--max-time",
        "20",
        "--interface",
        ip,
        "-w",
        "\n%{http_code}",
        url,
    ]));
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", &out));
    (status.to_string(), body.to_string())
}

#[test]
fn the_debian_installer_boots_and_runs_its_preseed_in_bios_and_uefi_vms() {
    if !should_run(
        "debian_installer",
        &[
            "ip",
            "qemu-system-x86_64",
            "apt-get",
            "dpkg-deb",
            "gpg",
            "curl",
            "sha256sum",
        ],
    ) {
        return;
    }
    let installer = debian_installer();
    let mut net = BootNet::new(RACKBOOT, "d-i", &["tap0"]);
    let mirror = DebianMirror::build(&installer.kernel, &installer.initrd);
    let server = MirrorServer::start(&net.ns, SERVER_IP, mirror.dir.path());
    register_image(&net, &mirror, &server);
    for m in &MACHINES {
        let added = net.cli(&[
            "machine",
            "add",
            m.mac,
            "--hostname",
            m.hostname,
            "--image",
            IMAGE,
            "--ip",
            m.ip,
        ]);
        // Added with an image, a machine starts in install mode.
        assert!(added.contains("mode=install"), "{added}");
    }
    net.start();

    // One VM at a time: the machine's two cores are shared.
    let mut timings = Vec::new();
    for m in &MACHINES {
        match boot_installer(&net, &server, m) {
            Ok(timing) => {
                eprintln!(
                    "debian_installer: {} (d-i {}): preseed fetched at {:.1} s, \
                     early_command reported at {:.1} s after QEMU started",
                    m.name, installer.version, timing.preseed_s, timing.early_command_s
                );
                timings.push(timing);
            }
            Err(report) => panic!("{report}"),
        }
    }
    assert!(timings.iter().all(|t| t.preseed_s < t.early_command_s));

    // What rackboot serves each machine, fetched from that machine's own address
    // once its VM is gone: the preseed rendered with its hostname. Any other
    // address is refused it.
    let probe = net.attach_namespace("as-machine");
    for m in &MACHINES {
        probe.ip(&["addr", "add", &format!("{}/24", m.ip), "dev", "veth-r"]);
    }
    probe.ip(&["addr", "add", "192.0.2.99/24", "dev", "veth-r"]);
    probe.ip(&["link", "set", "veth-r", "up"]);
    for m in &MACHINES {
        let url = format!(
            "http://{SERVER_IP}:8080/machines/{}/files/preseed.cfg",
            m.mac.replace(':', "-")
        );
        let (status, body) = get_from(&probe, m.ip, &url);
        assert_eq!(status, "200", "{}: {body}", m.name);
        assert!(
            body.lines()
                .any(|l| l.contains("netcfg/get_hostname") && l.trim_end().ends_with(m.hostname)),
            "{}: preseed without its hostname:\n{body}",
            m.name
        );
        let (status, _) = get_from(&probe, "192.0.2.99", &url);
        assert_eq!(
            status, "403",
            "{}: the preseed went to another address",
            m.name
        );
    }
}

/// A small mirror for the fetch tests (no VM): kernel and initrd of test bytes.
fn small_mirror() -> DebianMirror {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = dir.path().join("linux");
    let initrd = dir.path().join("initrd.gz");
    std::fs::write(&kernel, test_bytes(256 << 10, 7)).expect("write kernel");
    std::fs::write(&initrd, test_bytes(3 << 20, 11)).expect("write initrd");
    DebianMirror::build(&kernel, &initrd)
}

/// A rackboot config for the CLI alone, in `dir`.
fn cli_config(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("rackboot.toml");
    std::fs::write(
        &config,
        format!("data_dir = \"{}\"\n", dir.join("data").display()),
    )
    .expect("write config");
    config
}

/// `rackboot image fetch debian-12 ARGS` inside `ns`.
fn fetch(ns: &Netns, config: &Path, args: &[&str]) -> Output {
    ns.command(RACKBOOT)
        .arg("--config")
        .arg(config)
        .args(["image", "fetch", IMAGE])
        .args(args)
        .output()
        .expect("run rackboot image fetch")
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn images(config: &Path) -> String {
    run(Command::new(RACKBOOT)
        .arg("--config")
        .arg(config)
        .args(["image", "list"]))
}

/// The fetch over HTTP from `mirror` (served inside a namespace of its own, `tag`),
/// trusting `keyring`, must fail, the last line of its stderr (the reason) naming
/// every one of `words`, and leave no image behind.
fn assert_fetch_refused(tag: &str, mirror: &DebianMirror, keyring: &Path, words: &[&str]) {
    let ns = Netns::new(tag);
    let server = MirrorServer::start(&ns, "127.0.0.1", mirror.dir.path());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = cli_config(dir.path());
    let out = fetch(
        &ns,
        &config,
        &[
            "--mirror",
            &format!("{}/debian", server.base_url),
            "--keyring",
            path_str(keyring),
        ],
    );
    assert!(
        !out.status.success(),
        "the fetch succeeded: {}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reason = stderr
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or_default();
    eprintln!("{tag}: {reason}");
    assert!(
        words.iter().all(|w| reason.contains(w)),
        "the reason does not name all of {words:?}: {}\nrequests:\n{}",
        describe(&out),
        server.requests().join("\n")
    );
    let list = images(&config);
    assert!(!list.contains(IMAGE), "{IMAGE} registered anyway:\n{list}");
}

const FETCH_TOOLS: &[&str] = &["ip", "gpg", "sha256sum"];

#[test]
fn a_fetch_with_one_byte_of_the_initrd_changed_is_refused() {
    if !should_run("fetch_changed_byte", FETCH_TOOLS) {
        return;
    }
    let mirror = small_mirror();
    mirror.flip_initrd_byte();
    assert_fetch_refused(
        "byte",
        &mirror,
        mirror.keyring(),
        &[INITRD_UNDER_IMAGES, "refused", "sha256"],
    );
}

#[test]
fn a_fetch_of_an_inrelease_signed_by_another_key_is_refused() {
    if !should_run("fetch_other_key", FETCH_TOOLS) {
        return;
    }
    let mirror = small_mirror();
    let other = Signer::new("other");
    mirror.sign_release(&other);
    assert_fetch_refused(
        "key",
        &mirror,
        mirror.keyring(),
        &["dists/bookworm/InRelease", "refused", "key"],
    );
}

#[test]
fn a_fetch_of_a_truncated_initrd_is_refused() {
    if !should_run("fetch_truncated", FETCH_TOOLS) {
        return;
    }
    let mirror = small_mirror();
    mirror.truncate_initrd();
    assert_fetch_refused(
        "cut",
        &mirror,
        mirror.keyring(),
        &[INITRD_UNDER_IMAGES, "refused", "sha256"],
    );
}

#[test]
fn a_fetch_from_a_local_directory_registers_the_image() {
    if !should_run("fetch_from_dir", FETCH_TOOLS) {
        return;
    }
    let mirror = small_mirror();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = cli_config(dir.path());
    // No HTTP at all: not even a namespace.
    let out = Command::new(RACKBOOT)
        .arg("--config")
        .arg(&config)
        .args(["image", "fetch", IMAGE, "--from"])
        .arg(mirror.root())
        .arg("--keyring")
        .arg(mirror.keyring())
        .output()
        .expect("run rackboot image fetch");
    assert!(out.status.success(), "{}", describe(&out));
    let list = images(&config);
    let initrd_sha = harness::debian_mirror::sha256_file(&mirror.initrd());
    let row = list
        .lines()
        .find(|l| l.starts_with(IMAGE))
        .unwrap_or_else(|| panic!("{IMAGE} not listed:\n{list}"));
    assert!(row.contains(&initrd_sha[..12]), "{row}");
}

#[test]
fn release_dates_are_written_as_debian_writes_them() {
    assert_eq!(rfc2822_utc(1_746_867_733), "Sat, 10 May 2025 09:02:13 UTC");
    assert_eq!(rfc2822_utc(0), "Thu, 01 Jan 1970 00:00:00 UTC");
    assert_eq!(days_from_civil(2025, 5, 10), 1_746_867_733 / 86_400);
    assert_eq!(civil_from_days(days_from_civil(2028, 2, 29)), (2028, 2, 29));
    assert_eq!(
        event_ms("2025-05-10 09:02:13.250Z 52:54:00:d1:0b:01 http.file x"),
        1_746_867_733_250
    );
}
