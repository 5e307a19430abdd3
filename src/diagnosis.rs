//! Why a boot failed, pure: over the events of one machine's last boot (as
//! `timeline::last_boot` cuts them) and the time, what the server saw go wrong. Each
//! finding says what was seen first and the likely reasons after, and only what the
//! recorded events show: rackboot sees requests, never the machine's screen.
//!
//! The service layer's sweeper (`service::diagnosis`) runs this every few seconds and
//! records each finding once per boot as a `boot.diagnosis` event.

use crate::timeline::BootEvent;
use serde::Serialize;
use std::fmt;

/// The event a finding is recorded as; its detail is the finding's message.
pub const DIAGNOSIS: &str = "boot.diagnosis";
/// Another DHCP server's reply to a machine, seen by `dhcp::foreign`.
pub const FOREIGN_SERVER: &str = "dhcp.foreign-server";
/// A firmware rackboot has no boot file for (recorded by `dhcp::server`).
pub const NO_BOOT_FILE: &str = "dhcp.no-boot-file";

/// The event kinds a diagnosis reads; anything else in a boot is ignored.
pub const KINDS: &[&str] = &[
    "dhcp.offer",
    "dhcp.ack",
    NO_BOOT_FILE,
    FOREIGN_SERVER,
    "tftp.read",
    "tftp.timeout",
    "tftp.script",
    "http.bootfile",
    "http.script",
    "http.kernel",
    "http.initrd",
    "http.file",
    "install.progress",
    "install.done",
    "install.failed",
    "wipe.progress",
    "wipe.done",
    "wipe.failed",
    DIAGNOSIS,
];

/// How long a machine may stay silent after a step that is never the last of a boot
/// (a boot program downloaded, iPXE's address acknowledged) before the server says it
/// got no further. Firmware that runs its boot program, and iPXE that has its
/// address, ask for the next thing within a few seconds.
pub const QUIET_MS: i64 = 30_000;

/// How long an installer may go without a sign of life (a file fetched, a progress
/// report) before "it never called back". The lifecycle config has no install
/// timeout (only the token's lifetime, a day by default, which is how long it *may*
/// call back); an hour covers a slow Debian install from a distant mirror.
pub const INSTALL_CALLBACK_TIMEOUT_MS: i64 = 60 * 60 * 1000;

/// Something that went wrong in a boot, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// A DHCP server other than rackboot answered this machine.
    ForeignDhcpServer { server: String },
    /// rackboot answered the firmware's DHCP without a boot file.
    NoBootFile { firmware: String, reason: String },
    /// The firmware was given a boot file and rackboot saw no download of it.
    BootFileNotFetched { file: String },
    /// The firmware downloaded its boot program and then asked for nothing more.
    BootFileRefused { file: String, firmware: String },
    /// A TFTP transfer stopped midway and the machine asked for nothing more.
    TftpStalled { file: String },
    /// iPXE was given its script URL and never fetched it.
    ScriptNotFetched { url: String },
    /// The boot script sent the machine to its disk instead of its mode's image.
    ScriptRefused { why: String },
    /// The installer called its done-URL with a failure.
    InstallerFailed {
        mode: String,
        last_step: Option<String>,
    },
    /// The installer's kernel was fetched and its done-URL never called.
    InstallerSilent {
        mode: String,
        last_step: Option<String>,
    },
}

impl Finding {
    /// A stable name for the kind of finding (the API's `finding` field).
    pub fn code(&self) -> &'static str {
        match self {
            Finding::ForeignDhcpServer { .. } => "foreign_dhcp_server",
            Finding::NoBootFile { .. } => "no_boot_file",
            Finding::BootFileNotFetched { .. } => "boot_file_not_fetched",
            Finding::BootFileRefused { .. } => "boot_file_refused",
            Finding::TftpStalled { .. } => "tftp_stalled",
            Finding::ScriptNotFetched { .. } => "script_not_fetched",
            Finding::ScriptRefused { .. } => "script_refused",
            Finding::InstallerFailed { .. } => "installer_failed",
            Finding::InstallerSilent { .. } => "installer_silent",
        }
    }

    /// The message for operators: what was seen, then the likely reasons.
    pub fn message(&self) -> String {
        let quiet = QUIET_MS / 1000;
        match self {
            Finding::ForeignDhcpServer { server } => format!(
                "another DHCP server answered on this link ({server}): the machine may take \
                 its offer instead of rackboot's and boot from elsewhere, or not at all"
            ),
            Finding::NoBootFile { firmware, reason } => format!(
                "this machine's architecture has no boot file configured: its firmware \
                 ({firmware}) asked for one and got none ({reason})"
            ),
            Finding::BootFileNotFetched { file } => format!(
                "the firmware was given the boot file {file} and rackboot saw no complete \
                 download of it within {quiet} s (TFTP blocked on the way, the file missing \
                 from ipxe_dir, or the firmware took another server's offer)"
            ),
            Finding::BootFileRefused { file, firmware } if firmware.starts_with("uefi") => {
                format!(
                    "the firmware downloaded {file} and asked for nothing more within {quiet} s: \
                     it refused the boot file (Secure Boot on and the file unsigned, or the \
                     wrong architecture)"
                )
            }
            Finding::BootFileRefused { file, .. } => format!(
                "the firmware downloaded {file} and asked for nothing more within {quiet} s: \
                 it did not run the boot file, or what it ran got no further (the wrong \
                 architecture, or a damaged file)"
            ),
            Finding::TftpStalled { file } => format!(
                "the TFTP transfer of {file} stopped midway and the machine asked for nothing \
                 more within {quiet} s (packets lost on the link, a firewall dropping the \
                 transfer's ports, or a block size the path cannot carry)"
            ),
            Finding::ScriptNotFetched { url } => format!(
                "iPXE was given its script URL {url} and did not fetch it within {quiet} s \
                 (that address is unreachable from the machine: check http.url, routes and \
                 firewalls)"
            ),
            Finding::ScriptRefused { why } => {
                format!("the boot script sent the machine to its local disk instead: {why}")
            }
            Finding::InstallerFailed { mode, last_step } => format!(
                "the installer reported failure (its done-URL was called with a failed \
                 status){}; the machine stays in {mode} mode",
                after_step(last_step)
            ),
            Finding::InstallerSilent { mode, last_step } => format!(
                "the installer never called back: the {mode} image's kernel was fetched and \
                 its done-URL was not called within {} min of the last sign of life{} (it \
                 stopped at a prompt, failed without reporting, or cannot reach rackboot's \
                 HTTP address)",
                INSTALL_CALLBACK_TIMEOUT_MS / 60_000,
                after_step(last_step)
            ),
        }
    }
}

fn after_step(step: &Option<String>) -> String {
    step.as_ref()
        .map(|s| format!(", after its progress report {s}"))
        .unwrap_or_default()
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

/// The value of `key=` in an event detail (`file=snponly.efi size=...`).
fn field<'a>(detail: &'a str, key: &str) -> Option<&'a str> {
    detail
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// Events the machine caused by asking rackboot for something: what "asked for
/// nothing more" looks at. Another server's replies and diagnoses are not.
fn from_machine(event: &BootEvent) -> bool {
    event.kind != FOREIGN_SERVER && event.kind != DIAGNOSIS
}

/// A firmware-stage program (what a DHCP reply names as the boot file), by name.
fn is_boot_program(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or(file).to_ascii_lowercase();
    [
        ".efi",
        ".efi.signed",
        ".kpxe",
        ".kkpxe",
        ".pxe",
        ".0",
        ".com",
    ]
    .iter()
    .any(|ext| name.ends_with(ext))
}

/// Modes whose image calls a done-URL when it ends.
fn calls_back(mode: &str) -> bool {
    matches!(mode, "install" | "wipe")
}

/// What went wrong in `boot` (one machine's last boot, oldest first) as of `now_ms`,
/// most telling first; empty when nothing did or when it is too early to say.
pub fn diagnose(boot: &[BootEvent], now_ms: i64) -> Vec<Finding> {
    let mut found = Vec::new();
    for event in boot.iter().filter(|e| e.kind == FOREIGN_SERVER) {
        let server = field(&event.detail, "server")
            .unwrap_or("unknown")
            .to_string();
        let finding = Finding::ForeignDhcpServer { server };
        if !found.contains(&finding) {
            found.push(finding);
        }
    }
    let machine: Vec<&BootEvent> = boot.iter().filter(|e| from_machine(e)).collect();
    let Some(last) = machine.last() else {
        return found;
    };
    let quiet = now_ms - last.at_ms >= QUIET_MS;

    // No boot file: the boot got no further than DHCP.
    // Full mode also answers without a file (`file=-`), each time, where the
    // `dhcp.no-boot-file` event is written once a minute.
    let no_file = |e: &&BootEvent| {
        e.kind == NO_BOOT_FILE
            || (matches!(e.kind.as_str(), "dhcp.offer" | "dhcp.ack")
                && field(&e.detail, "ipxe") == Some("false")
                && field(&e.detail, "file") == Some("-"))
    };
    if let Some(refused) = machine.iter().rposition(no_file) {
        let further = machine[refused..]
            .iter()
            .any(|e| e.kind.starts_with("tftp.") || e.kind.starts_with("http."));
        if !further {
            let event = machine[refused];
            let reason = machine
                .iter()
                .rev()
                .filter(|e| e.kind == NO_BOOT_FILE)
                .find_map(|e| e.detail.split_once("reason="))
                .map_or("no boot file for its firmware", |(_, reason)| reason);
            found.push(Finding::NoBootFile {
                firmware: field(&event.detail, "firmware").unwrap_or("-").to_string(),
                reason: reason.to_string(),
            });
            return found;
        }
    }

    // The installer's own report, or its silence.
    let ended = |e: &BootEvent| e.kind.ends_with(".done") || e.kind.ends_with(".failed");
    let last_step = |mode: &str| {
        let kind = format!("{mode}.progress");
        machine
            .iter()
            .rev()
            .find(|e| e.kind == kind)
            .map(|e| e.detail.clone())
    };
    if let Some(end) = machine.iter().rev().find(|e| ended(e)) {
        if let Some(mode) = end.kind.strip_suffix(".failed") {
            found.push(Finding::InstallerFailed {
                mode: mode.to_string(),
                last_step: last_step(mode),
            });
        }
        return found;
    }
    // The kernel over HTTP (iPXE, a unified image) or over TFTP (grub).
    let kernel = machine.iter().rposition(|e| {
        e.kind == "http.kernel"
            || (e.kind == "tftp.read"
                && field(&e.detail, "file").is_some_and(|f| f.ends_with("/kernel")))
    });
    let script_mode = machine
        .iter()
        .rev()
        .find(|e| e.kind == "http.script" || e.kind == "tftp.script")
        .and_then(|e| field(&e.detail, "mode"));
    if let (Some(kernel), Some(mode)) = (kernel, script_mode)
        && calls_back(mode)
    {
        // Anything after the kernel is a sign the installer runs: its initrd, its
        // install files, its progress reports.
        let alive_ms = machine[kernel..]
            .iter()
            .map(|e| e.at_ms)
            .max()
            .unwrap_or(last.at_ms);
        if now_ms - alive_ms >= INSTALL_CALLBACK_TIMEOUT_MS {
            found.push(Finding::InstallerSilent {
                mode: mode.to_string(),
                last_step: last_step(mode),
            });
        }
        return found;
    }

    // The boot stopped at its last step.
    match last.kind.as_str() {
        "http.script" => {
            let why = last
                .detail
                .split_once(" local (")
                .and_then(|(_, rest)| rest.rsplit_once(')'))
                .map(|(why, _)| why);
            if let Some(why) = why {
                found.push(Finding::ScriptRefused {
                    why: why.to_string(),
                });
            }
        }
        "tftp.read" | "http.bootfile" if quiet => {
            let file = field(&last.detail, "file").unwrap_or("-");
            // The boot file the last firmware reply named, else a firmware program by
            // its name (a second stage such as grub fetched by shim).
            let firmware_ack = machine
                .iter()
                .rev()
                .find(|e| e.kind == "dhcp.ack" && field(&e.detail, "ipxe") == Some("false"));
            let named = firmware_ack.is_some_and(|ack| {
                field(&ack.detail, "file")
                    .is_some_and(|f| f.rsplit('/').next() == file.rsplit('/').next())
            });
            if named || is_boot_program(file) {
                found.push(Finding::BootFileRefused {
                    file: file.to_string(),
                    firmware: firmware_ack
                        .and_then(|ack| field(&ack.detail, "firmware"))
                        .unwrap_or("-")
                        .to_string(),
                });
            }
        }
        "tftp.timeout" if quiet => found.push(Finding::TftpStalled {
            file: field(&last.detail, "file").unwrap_or("-").to_string(),
        }),
        "dhcp.ack" if quiet => {
            let file = field(&last.detail, "file").unwrap_or("-");
            let ipxe = field(&last.detail, "ipxe") == Some("true");
            if ipxe && file.contains("://") {
                found.push(Finding::ScriptNotFetched {
                    url: file.to_string(),
                });
            } else if !ipxe && file != "-" && !file.contains("://") {
                // An HTTP boot URL is judged once its download is recorded
                // (`http.bootfile`); a TFTP name that was never read is judged here.
                found.push(Finding::BootFileNotFetched {
                    file: file.to_string(),
                });
            }
        }
        _ => {}
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "192.0.2.100:1234";

    fn ev(at_s: f64, kind: &str, detail: &str) -> BootEvent {
        BootEvent {
            at_ms: (at_s * 1000.0) as i64,
            kind: kind.into(),
            detail: detail.into(),
        }
    }

    fn s(seconds: f64) -> i64 {
        (seconds * 1000.0) as i64
    }

    /// The firmware stage of a UEFI boot as `dhcp::server` and `tftp::server` record it.
    fn firmware_stage(t: f64, file: &str) -> Vec<BootEvent> {
        vec![
            ev(
                t,
                "dhcp.offer",
                "discover firmware=uefi-x64 ipxe=false ip=192.0.2.100 file=snponly.efi",
            ),
            ev(
                t + 3.0,
                "dhcp.ack",
                "request firmware=uefi-x64 ipxe=false ip=192.0.2.100 file=snponly.efi",
            ),
            ev(
                t + 3.5,
                "tftp.read",
                &format!(
                    "file={file} size=1048576 from=ipxe_dir blksize=1468 windowsize=1 \
                     retransmits=0 ms=420 client={CLIENT}"
                ),
            ),
        ]
    }

    #[test]
    fn an_http_boot_program_downloaded_then_nothing_is_a_refusal() {
        let url = "http://192.0.2.1:8080/ipxe/snponly.efi";
        let events = vec![
            ev(
                0.0,
                "dhcp.offer",
                &format!("discover firmware=uefi-x64-http ipxe=false ip=192.0.2.100 file={url}"),
            ),
            ev(
                3.0,
                "dhcp.ack",
                &format!("request firmware=uefi-x64-http ipxe=false ip=192.0.2.100 file={url}"),
            ),
            ev(
                3.5,
                "http.bootfile",
                &format!("file=snponly.efi status=200 client={CLIENT}"),
            ),
        ];
        assert!(diagnose(&events, s(20.0)).is_empty(), "too early to say");
        assert_eq!(
            diagnose(&events, s(40.0)),
            vec![Finding::BootFileRefused {
                file: "snponly.efi".into(),
                firmware: "uefi-x64-http".into()
            }]
        );
    }

    #[test]
    fn a_grub_install_that_never_calls_back_is_reported() {
        let mut events = firmware_stage(0.0, "shimx64.efi");
        for (at, kind, detail) in [
            (
                4.0,
                "tftp.read",
                "file=grubx64.efi size=3843520".to_string(),
            ),
            (
                5.0,
                "tftp.script",
                "template=boot.grub mode=install image=debian-12 client=192.0.2.100 via tftp"
                    .to_string(),
            ),
            (
                6.0,
                "tftp.read",
                "file=boot/52-54-00-12-34-56/kernel size=8000000".to_string(),
            ),
            (
                8.0,
                "tftp.read",
                "file=boot/52-54-00-12-34-56/initrd size=4000000".to_string(),
            ),
        ] {
            events.push(ev(at, kind, &detail));
        }
        assert!(diagnose(&events, s(600.0)).is_empty(), "still installing");
        let late = diagnose(&events, s(8.0) + INSTALL_CALLBACK_TIMEOUT_MS + 1000);
        assert!(
            matches!(late.as_slice(), [Finding::InstallerSilent { mode, .. }] if mode == "install"),
            "{late:?}"
        );
    }

    /// iPXE's DHCP, its script in `mode`, the kernel and initrd.
    fn ipxe_stage(t: f64, mode: &str) -> Vec<BootEvent> {
        vec![
            ev(
                t,
                "dhcp.offer",
                "discover firmware=uefi-x64 ipxe=true ip=192.0.2.100 \
                 file=http://192.0.2.1:8080/boot/52-54-00-12-34-56.ipxe",
            ),
            ev(
                t + 1.0,
                "dhcp.ack",
                "request firmware=uefi-x64 ipxe=true ip=192.0.2.100 \
                 file=http://192.0.2.1:8080/boot/52-54-00-12-34-56.ipxe",
            ),
            ev(
                t + 1.2,
                "http.script",
                &format!("template=boot.ipxe mode={mode} image=debian client={CLIENT}"),
            ),
            ev(t + 1.5, "http.kernel", "image=debian status=200"),
            ev(t + 3.0, "http.initrd", "image=debian status=200"),
        ]
    }

    fn full_install(t: f64) -> Vec<BootEvent> {
        let mut events = firmware_stage(t, "snponly.efi");
        events.extend(ipxe_stage(t + 5.0, "install"));
        events
    }

    #[test]
    fn a_completed_boot_has_nothing_wrong() {
        let mut events = full_install(0.0);
        events.push(ev(60.0, "install.progress", "installer-started"));
        events.push(ev(600.0, "install.done", "install -> local"));
        assert_eq!(diagnose(&events, s(10_000.0)), []);
        // A plain boot of an image (no done-URL) that reached its kernel, hours ago.
        let mut events = firmware_stage(0.0, "snponly.efi");
        events.extend(ipxe_stage(5.0, "boot"));
        assert_eq!(diagnose(&events, s(100_000.0)), []);
        // A machine told to boot locally, as it should.
        let mut events = firmware_stage(0.0, "snponly.efi");
        events.push(ev(
            9.0,
            "http.script",
            &format!("template=local.ipxe mode=local local client={CLIENT}"),
        ));
        assert_eq!(diagnose(&events, s(1000.0)), []);
        assert_eq!(diagnose(&[], 0), []);
    }

    #[test]
    fn a_boot_in_progress_within_its_thresholds_has_nothing_wrong() {
        let events = firmware_stage(0.0, "snponly.efi");
        // 20 s after the download: the firmware may still be starting it.
        assert_eq!(diagnose(&events, s(23.5)), []);
        // An install 50 minutes into its run.
        let events = full_install(0.0);
        assert_eq!(diagnose(&events, s(8.0 + 50.0 * 60.0)), []);
    }

    #[test]
    fn a_refused_boot_file_is_named_after_thirty_seconds() {
        let events = firmware_stage(0.0, "shimx64.efi");
        let found = diagnose(&events, s(3.5 + 30.0));
        assert_eq!(
            found,
            [Finding::BootFileRefused {
                file: "shimx64.efi".into(),
                firmware: "uefi-x64".into()
            }]
        );
        assert_eq!(
            found[0].message(),
            "the firmware downloaded shimx64.efi and asked for nothing more within 30 s: it \
             refused the boot file (Secure Boot on and the file unsigned, or the wrong \
             architecture)"
        );
        // The same file whose final ACK never came (the client moved on) counts too.
        let mut events = firmware_stage(0.0, "snponly.efi");
        events[2].detail.push_str(" final_ack=missing");
        assert_eq!(diagnose(&events, s(40.0)).len(), 1);
        // A BIOS ROM is not told about Secure Boot.
        let mut events = firmware_stage(0.0, "undionly.kpxe");
        for e in &mut events {
            e.detail = e
                .detail
                .replace("uefi-x64", "bios")
                .replace("snponly.efi", "undionly.kpxe");
        }
        let message = diagnose(&events, s(40.0))[0].message();
        assert!(!message.contains("Secure Boot"), "{message}");
        // A per-machine file that is not a boot program says nothing by itself.
        let mut events = firmware_stage(0.0, "snponly.efi");
        events.push(ev(
            10.0,
            "tftp.read",
            "file=52-54-00-12-34-56/grub.cfg size=90",
        ));
        assert_eq!(diagnose(&events, s(100.0)), []);
    }

    #[test]
    fn a_boot_file_given_but_never_downloaded() {
        let mut events = firmware_stage(0.0, "snponly.efi");
        events.pop();
        assert_eq!(diagnose(&events, s(20.0)), []);
        assert_eq!(
            diagnose(&events, s(40.0)),
            [Finding::BootFileNotFetched {
                file: "snponly.efi".into()
            }]
        );
        // HTTP boot downloads are not recorded, so their absence proves nothing.
        for e in &mut events {
            e.detail = e.detail.replace(
                "file=snponly.efi",
                "file=http://192.0.2.1:8080/ipxe/snponly.efi",
            );
        }
        assert_eq!(diagnose(&events, s(40.0)), []);
    }

    #[test]
    fn ipxe_that_never_fetches_its_script() {
        let mut events = firmware_stage(0.0, "snponly.efi");
        events.extend(ipxe_stage(5.0, "install").into_iter().take(2));
        let found = diagnose(&events, s(6.0 + 31.0));
        assert_eq!(
            found,
            [Finding::ScriptNotFetched {
                url: "http://192.0.2.1:8080/boot/52-54-00-12-34-56.ipxe".into()
            }]
        );
        assert!(found[0].message().contains("http.url"));
    }

    #[test]
    fn a_tftp_transfer_that_stalls() {
        let mut events = firmware_stage(0.0, "snponly.efi");
        events[2].kind = "tftp.timeout".into();
        assert_eq!(diagnose(&events, s(10.0)), []);
        assert_eq!(
            diagnose(&events, s(40.0)),
            [Finding::TftpStalled {
                file: "snponly.efi".into()
            }]
        );
        // Retried and completed: nothing wrong.
        events.push(ev(8.0, "tftp.read", "file=snponly.efi size=1048576"));
        events.extend(ipxe_stage(10.0, "boot"));
        assert_eq!(diagnose(&events, s(100.0)), []);
    }

    #[test]
    fn no_boot_file_for_the_architecture() {
        let events = vec![
            ev(
                0.0,
                NO_BOOT_FILE,
                "firmware=uefi-arm64 reason=no arm64 boot file (ipxe.uefi_arm64 is not in ipxe_dir)",
            ),
            ev(
                0.0,
                "dhcp.offer",
                "discover firmware=uefi-arm64 ipxe=false ip=192.0.2.100 file=-",
            ),
            ev(
                1.0,
                "dhcp.ack",
                "request firmware=uefi-arm64 ipxe=false ip=192.0.2.100 file=-",
            ),
        ];
        let found = diagnose(&events, s(1.0));
        assert_eq!(found.len(), 1);
        assert!(
            found[0]
                .message()
                .starts_with("this machine's architecture has no boot file configured"),
            "{}",
            found[0]
        );
        assert!(found[0].message().contains("uefi-arm64"));
        // A later boot whose event was throttled away still says so, from `file=-`.
        let found = diagnose(&events[1..], s(1.0));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].code(), "no_boot_file");
    }

    #[test]
    fn another_dhcp_server_is_named_once_per_address() {
        let mut events = vec![ev(
            0.0,
            FOREIGN_SERVER,
            "server=192.0.2.254 source=192.0.2.254 mac=52:54:00:12:34:56 type=offer ip=192.0.2.120",
        )];
        events.extend(full_install(0.5));
        events.push(ev(
            1.0,
            FOREIGN_SERVER,
            "server=192.0.2.254 source=192.0.2.254 mac=52:54:00:12:34:56 type=ack ip=192.0.2.120",
        ));
        let found = diagnose(&events, s(20.0));
        assert_eq!(
            found,
            [Finding::ForeignDhcpServer {
                server: "192.0.2.254".into()
            }]
        );
        assert!(
            found[0]
                .message()
                .starts_with("another DHCP server answered on this link")
        );
        // Alone (a client rackboot never saw boot) it is still said.
        assert_eq!(diagnose(&events[..1], s(20.0)).len(), 1);
    }

    #[test]
    fn the_installer_failed_or_never_called_back() {
        let mut events = full_install(0.0);
        events.push(ev(60.0, "install.progress", "partitioning"));
        let silent_at = s(60.0) + INSTALL_CALLBACK_TIMEOUT_MS;
        assert_eq!(diagnose(&events, silent_at - 1000), []);
        let found = diagnose(&events, silent_at);
        assert_eq!(
            found,
            [Finding::InstallerSilent {
                mode: "install".into(),
                last_step: Some("partitioning".into())
            }]
        );
        assert!(
            found[0]
                .message()
                .starts_with("the installer never called back")
        );
        events.push(ev(
            300.0,
            "install.failed",
            "the installer reported failure; the machine stays in its mode",
        ));
        let found = diagnose(&events, silent_at);
        assert_eq!(
            found,
            [Finding::InstallerFailed {
                mode: "install".into(),
                last_step: Some("partitioning".into())
            }]
        );
        assert!(found[0].message().contains("partitioning"));
        // A wipe is judged the same way.
        let mut events = firmware_stage(0.0, "snponly.efi");
        events.extend(ipxe_stage(5.0, "wipe"));
        assert_eq!(
            diagnose(&events, s(8.0) + INSTALL_CALLBACK_TIMEOUT_MS)[0].code(),
            "installer_silent"
        );
    }

    #[test]
    fn a_refused_mode_is_said_with_its_reason() {
        let mut events = firmware_stage(0.0, "snponly.efi");
        events.push(ev(
            9.0,
            "http.script",
            &format!(
                "template=local.ipxe mode=install local (the install token has expired; set \
                 the mode again to retry) client={CLIENT}"
            ),
        ));
        assert_eq!(
            diagnose(&events, s(9.5)),
            [Finding::ScriptRefused {
                why: "the install token has expired; set the mode again to retry".into()
            }]
        );
    }

    #[test]
    fn diagnoses_already_recorded_do_not_count_as_the_machine_asking() {
        let mut events = firmware_stage(0.0, "shimx64.efi");
        events.push(ev(
            40.0,
            DIAGNOSIS,
            "the firmware downloaded shimx64.efi ...",
        ));
        assert_eq!(diagnose(&events, s(45.0)).len(), 1);
    }
}
