//! Real machines boot: QEMU VMs with firmware nobody here wrote (SeaBIOS + iPXE ROM,
//! OVMF's own PXE) boot a Debian kernel and a busybox initramfs from `rackboot serve`.

use harness::{BootNet, Firmware, Vm, boot_fixtures, should_run, tail};
use std::time::Duration;

/// The rackboot binary under test (the harness is given it: see its lib.rs).
const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");

const MARKER: &str = "RACKBOOT-MARKER-BOOTED";
const BIOS_MAC: &str = "52:54:00:b1:05:01";
const UEFI_MAC: &str = "52:54:00:ef:10:02";
/// A boot under TCG takes 30 to 40 s alone; two at once on two cores take longer.
const BOOT_DEADLINE: Duration = Duration::from_secs(300);

fn kinds(events: &str) -> Vec<String> {
    events
        .lines()
        .filter_map(|line| line.split_whitespace().nth(3).map(str::to_string))
        .collect()
}

/// Seconds since midnight of an `event list` line (`2026-11-22 01:41:06.673Z ...`).
fn seconds(events: &str, index: usize) -> f64 {
    let line = events.lines().nth(index).unwrap_or_default();
    let time = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .trim_end_matches('Z');
    let parts: Vec<f64> = time.split(':').filter_map(|p| p.parse().ok()).collect();
    assert_eq!(parts.len(), 3, "no time in {line:?}");
    parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
}

/// iPXE asks for its script right after its DHCPACK: no wait for an IPv6 router.
/// Without rackboot's router advertisement this took about 13 s.
fn assert_no_ipv6_wait(events: &str, ipxe_ack: usize, script: usize) {
    let wait = seconds(events, script) - seconds(events, ipxe_ack);
    assert!(
        (0.0..4.0).contains(&wait),
        "iPXE waited {wait:.1} s between its DHCPACK and its script request:\n{events}"
    );
}

/// Index of the first event of `kind` at or after `from`.
fn position(kinds: &[String], kind: &str, from: usize) -> Option<usize> {
    kinds[from..]
        .iter()
        .position(|k| k == kind)
        .map(|i| i + from)
}

#[test]
fn bios_and_uefi_machines_boot_over_the_network() {
    if !should_run(
        "vm_boot",
        &["ip", "qemu-system-x86_64", "cpio", "busybox", "apt-get"],
    ) {
        return;
    }
    let fixtures = boot_fixtures();
    let mut net = BootNet::new(RACKBOOT, "boot", &["tap0", "tap1"]);
    let kernel = fixtures.join("vmlinuz");
    let initrd = fixtures.join("initrd.img");
    net.cli(&[
        "image",
        "add",
        "marker",
        "--kernel",
        kernel.to_str().expect("utf8 path"),
        "--initrd",
        initrd.to_str().expect("utf8 path"),
        "--cmdline",
        "console=ttyS0 panic=-1",
    ]);
    net.cli(&[
        "machine",
        "add",
        BIOS_MAC,
        "--hostname",
        "bios-vm",
        "--image",
        "marker",
    ]);
    net.cli(&[
        "machine",
        "add",
        UEFI_MAC,
        "--hostname",
        "uefi-vm",
        "--image",
        "marker",
        "--ip",
        "192.0.2.50",
    ]);
    net.start();

    let mut bios = Vm::start(&net, Firmware::Bios, "tap0", BIOS_MAC, "bios");
    let mut uefi = Vm::start(&net, Firmware::Uefi, "tap1", UEFI_MAC, "uefi");
    let bios_ok = bios.wait_for(MARKER, BOOT_DEADLINE);
    let uefi_ok = uefi.wait_for(MARKER, BOOT_DEADLINE);
    let report = |vm: &Vm, name: &str| {
        format!(
            "--- {name} serial ---\n{}\n--- server log ---\n{}",
            tail(&vm.serial_text(), 40),
            tail(&net.server_log(), 60)
        )
    };
    assert!(bios_ok, "BIOS VM did not boot\n{}", report(&bios, "bios"));
    assert!(uefi_ok, "UEFI VM did not boot\n{}", report(&uefi, "uefi"));
    // The kernel ran with the image's command line, served by rackboot.
    assert!(bios.serial_text().contains("console=ttyS0 panic=-1"));
    // Under UEFI the initrd is found only when named on the command line.
    assert!(uefi.serial_text().contains("initrd=initrd"));

    // Every step of each boot was recorded for that machine, in order.
    let bios_events = net.cli(&["event", "list", "--mac", BIOS_MAC]);
    let bios_kinds = kinds(&bios_events);
    let ack = position(&bios_kinds, "dhcp.ack", 0).expect(&bios_events);
    let script = position(&bios_kinds, "http.script", ack).expect(&bios_events);
    let kernel_at = position(&bios_kinds, "http.kernel", script).expect(&bios_events);
    position(&bios_kinds, "http.initrd", kernel_at).expect(&bios_events);
    assert_no_ipv6_wait(&bios_events, ack, script);
    assert!(
        bios_events.contains("firmware=bios ipxe=true"),
        "{bios_events}"
    );

    let uefi_events = net.cli(&["event", "list", "--mac", UEFI_MAC]);
    let uefi_kinds = kinds(&uefi_events);
    let firmware_ack = position(&uefi_kinds, "dhcp.ack", 0).expect(&uefi_events);
    let tftp = position(&uefi_kinds, "tftp.read", firmware_ack).expect(&uefi_events);
    let ipxe_ack = position(&uefi_kinds, "dhcp.ack", tftp).expect(&uefi_events);
    let script = position(&uefi_kinds, "http.script", ipxe_ack).expect(&uefi_events);
    let kernel_at = position(&uefi_kinds, "http.kernel", script).expect(&uefi_events);
    position(&uefi_kinds, "http.initrd", kernel_at).expect(&uefi_events);
    assert_no_ipv6_wait(&uefi_events, ipxe_ack, script);
    assert!(
        uefi_events.contains("firmware=uefi-x64 ipxe=false"),
        "{uefi_events}"
    );
    assert!(uefi_events.contains("file=snponly.efi"), "{uefi_events}");
    assert!(
        uefi_events.contains("ip=192.0.2.50"),
        "fixed address: {uefi_events}"
    );

    // Each boot is one timeline record with its phases present and in order.
    let phases_in_order = |mac: &str, expected: &[&str]| {
        let boots = net.cli(&["machine", "boots", mac, "--limit", "1"]);
        let mut at = 0;
        for phase in expected {
            let found = boots[at..].find(&format!("  {phase} "));
            assert!(
                found.is_some(),
                "{mac}: phase {phase:?} missing or out of order: {boots}"
            );
            at += found.unwrap_or(0) + phase.len();
        }
    };
    phases_in_order(BIOS_MAC, &["iPXE DHCP", "script", "kernel", "initrd"]);
    phases_in_order(
        UEFI_MAC,
        &[
            "firmware DHCP",
            "boot file",
            "iPXE DHCP",
            "script",
            "kernel",
            "initrd",
        ],
    );

    // Both machines hold a lease, each its own address.
    let leases = net.cli(&["lease", "list"]);
    assert!(
        leases.contains("52:54:00:ef:10:02") && leases.contains("192.0.2.50"),
        "{leases}"
    );
    assert!(leases.contains(BIOS_MAC), "{leases}");
    let machines = net.cli(&["machine", "list"]);
    assert!(
        machines.contains("uefi-x64") && machines.contains("bios"),
        "{machines}"
    );
}

const INSTALL_MAC: &str = "52:54:00:1a:57:03";

/// A machine in `install` boots the installer, which reads `rackboot.done=` from its
/// command line and calls it; the machine is then `local`, its next PXE boot gets the
/// local-boot script, and the events tell the story in order.
#[test]
fn install_calls_its_done_url_and_the_machine_returns_to_local() {
    if !should_run(
        "vm_install_loop",
        &["ip", "qemu-system-x86_64", "cpio", "busybox", "apt-get"],
    ) {
        return;
    }
    let fixtures = boot_fixtures();
    let mut net = BootNet::new(RACKBOOT, "install", &["tap0"]);
    let kernel = fixtures.join("vmlinuz");
    let installer = fixtures.join("installer.img");
    net.cli(&[
        "image",
        "add",
        "installer",
        "--kernel",
        kernel.to_str().expect("utf8 path"),
        "--initrd",
        installer.to_str().expect("utf8 path"),
        "--cmdline",
        "console=ttyS0 panic=-1",
    ]);
    // Added with an image, the machine starts in install.
    let added = net.cli(&[
        "machine",
        "add",
        INSTALL_MAC,
        "--hostname",
        "inst-vm",
        "--image",
        "installer",
    ]);
    assert!(added.contains("mode=install"), "{added}");
    net.cli(&["machine", "set-mode", INSTALL_MAC, "local"]);
    // Reinstall is one command.
    let reinstall = net.cli(&["machine", "reinstall", INSTALL_MAC]);
    assert!(reinstall.contains("mode=install"), "{reinstall}");
    net.start();

    let mut vm = Vm::start(&net, Firmware::Bios, "tap0", INSTALL_MAC, "install");
    let called = vm.wait_for("RACKBOOT-DONE-CALLED", BOOT_DEADLINE);
    assert!(
        called,
        "installer did not call its done-URL\n--- serial ---\n{}\n--- server ---\n{}",
        tail(&vm.serial_text(), 40),
        tail(&net.server_log(), 60)
    );
    assert!(
        vm.serial_text()
            .contains("rackboot.done=http://192.0.2.1:8080/done/")
    );
    drop(vm);

    let machines = net.cli(&["machine", "list"]);
    let row = machines
        .lines()
        .find(|l| l.starts_with(INSTALL_MAC))
        .unwrap_or_else(|| panic!("machine missing: {machines}"));
    assert!(row.contains(" local "), "back to local after done: {row}");

    // The next PXE boot gets the local-boot script.
    let mut again = Vm::start(&net, Firmware::Bios, "tap0", INSTALL_MAC, "install-again");
    let local_script = harness::wait_until(BOOT_DEADLINE, || {
        net.cli(&["event", "list", "--mac", INSTALL_MAC])
            .lines()
            .any(|l| l.contains("http.script") && l.contains("template=local.ipxe"))
    });
    assert!(
        local_script,
        "second boot got no local script\n{}",
        tail(&again.serial_text(), 30)
    );
    assert!(!again.proc.exited() || again.serial_text().contains("local disk"));
    drop(again);

    let events = net.cli(&["event", "list", "--mac", INSTALL_MAC]);
    let kinds = kinds(&events);
    let added = position(&kinds, "machine.added", 0).expect(&events);
    let set_local = position(&kinds, "mode.set", added + 1).expect(&events);
    let reinstall = position(&kinds, "mode.set", set_local + 1).expect(&events);
    let ack = position(&kinds, "dhcp.ack", reinstall).expect(&events);
    let script = position(&kinds, "http.script", ack).expect(&events);
    let kernel_at = position(&kinds, "http.kernel", script).expect(&events);
    let initrd_at = position(&kinds, "http.initrd", kernel_at).expect(&events);
    let done = position(&kinds, "install.done", initrd_at).expect(&events);
    let local = position(&kinds, "http.script", done).expect(&events);
    assert!(
        events
            .lines()
            .nth(script)
            .is_some_and(|l| l.contains("template=boot.ipxe mode=install")),
        "{events}"
    );
    assert!(
        events
            .lines()
            .nth(local)
            .is_some_and(|l| l.contains("template=local.ipxe")),
        "{events}"
    );
    assert!(
        events
            .lines()
            .nth(done)
            .is_some_and(|l| l.contains("install -> local")),
        "{events}"
    );
}

/// Chaos: a UEFI machine boots through 10 % loss both ways and 10 % duplication
/// towards it, on every protocol of the chain (its DHCP, the TFTP of `snponly.efi`,
/// iPXE's DHCP and the HTTP of its script, kernel and initrd).
#[test]
fn a_uefi_machine_boots_through_loss_and_duplication() {
    if !should_run(
        "vm_boot",
        &[
            "ip",
            "qemu-system-x86_64",
            "cpio",
            "busybox",
            "apt-get",
            "nft",
        ],
    ) {
        return;
    }
    let fixtures = boot_fixtures();
    let mut net = BootNet::new(RACKBOOT, "lossy", &["tap0"]);
    let kernel = fixtures.join("vmlinuz");
    let initrd = fixtures.join("initrd.img");
    net.cli(&[
        "image",
        "add",
        "marker",
        "--kernel",
        kernel.to_str().expect("utf8 path"),
        "--initrd",
        initrd.to_str().expect("utf8 path"),
        "--cmdline",
        "console=ttyS0 panic=-1",
    ]);
    net.cli(&["machine", "add", UEFI_MAC, "--image", "marker"]);
    net.ns.lossy_tap("tap0", 10);
    net.start();
    let mut uefi = Vm::start(&net, Firmware::Uefi, "tap0", UEFI_MAC, "lossy-uefi");
    let booted = uefi.wait_for(MARKER, BOOT_DEADLINE);
    assert!(
        booted,
        "the UEFI VM did not boot through loss\n{}\n--- server log ---\n{}",
        tail(&uefi.serial_text(), 40),
        tail(&net.server_log(), 60)
    );
    let events = net.cli(&["event", "list", "--mac", UEFI_MAC]);
    let kinds = kinds(&events);
    for kind in [
        "dhcp.ack",
        "tftp.read",
        "http.script",
        "http.kernel",
        "http.initrd",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} missing:\n{events}");
    }
    let counts = net.ns.lossy_tap_counts();
    assert!(
        counts.len() == 3 && counts.iter().all(|n| *n > 0),
        "frames dropped from, dropped to and duplicated to the VM: {counts:?}"
    );
    println!("lossy boot: dropped from / to the VM, duplicated to it: {counts:?}");
}

/// Hardening item 14, with the firmware that has to read the result: a subnet whose
/// options cannot all fit (350 DNS servers, a 249-byte domain), so every reply to
/// OVMF's PXE and to iPXE is cut to the size the client said it takes (option 57, 576
/// without), and the machine still boots: the boot file stays in `file`.
#[test]
fn a_uefi_machine_boots_when_every_reply_must_be_cut_to_fit() {
    if !should_run(
        "vm_boot",
        &[
            "ip",
            "qemu-system-x86_64",
            "cpio",
            "busybox",
            "apt-get",
            "tcpdump",
        ],
    ) {
        return;
    }
    let fixtures = boot_fixtures();
    let mac = "52:54:00:ef:10:57";
    let mut net = BootNet::new(RACKBOOT, "trim", &["tap0"]);
    let dns: Vec<String> = (0..350)
        .map(|i| format!("\"198.18.{}.{}\"", i / 250, 1 + i % 250))
        .collect();
    let domain = format!(
        "{}.{}.{}.{}.example",
        "a".repeat(60),
        "b".repeat(60),
        "c".repeat(60),
        "d".repeat(52)
    );
    net.set_dhcp_section(&format!(
        "[dhcp]\ninterface = \"br0\"\n[[dhcp.subnets]]\ncidr = \"192.0.2.0/24\"\n\
         pool = \"192.0.2.100-192.0.2.200\"\nrouter = \"192.0.2.1\"\ndns = [{}]\n\
         domain = \"{domain}\"\nlease_secs = 3600\n",
        dns.join(", ")
    ));
    net.cli(&[
        "image",
        "add",
        "marker",
        "--kernel",
        fixtures.join("vmlinuz").to_str().expect("utf8"),
        "--initrd",
        fixtures.join("initrd.img").to_str().expect("utf8"),
        "--cmdline",
        "console=ttyS0 panic=-1",
    ]);
    net.cli(&["machine", "add", mac, "--image", "marker"]);
    net.start();
    let pcap = net.dir.path().join("dhcp.pcap");
    let mut capture = harness::Capture::start(&net.ns, "br0", "udp port 67 or udp port 68", &pcap);
    let mut vm = Vm::start(&net, Firmware::Uefi, "tap0", mac, "trim");
    let booted = vm.wait_for(MARKER, BOOT_DEADLINE);
    capture.stop();
    assert!(
        booted,
        "did not boot\n{}\n{}",
        tail(&vm.serial_text(), 30),
        tail(&net.server_log(), 30)
    );

    let datagrams = harness::read_pcap_udp(&pcap);
    // Each client's size limit by transaction: its option 57, else 576 (RFC 2131).
    let mut limit = std::collections::HashMap::new();
    let mut ipxe = std::collections::HashSet::new();
    for d in &datagrams {
        let Some(seen) = harness::read_dhcp(&d.payload).filter(|s| s.op == 1) else {
            continue;
        };
        let max = seen
            .options
            .iter()
            .find(|(c, v)| *c == 57 && v.len() == 2)
            .map_or(576, |(_, v)| usize::from(u16::from_be_bytes([v[0], v[1]])));
        limit.insert(seen.xid, max.min(1500));
        if seen
            .options
            .iter()
            .any(|(c, v)| *c == 77 && v.starts_with(b"iPXE"))
        {
            ipxe.insert(seen.xid);
        }
    }
    let replies: Vec<_> = datagrams
        .iter()
        .filter(|d| d.src.port() == 67)
        .filter_map(|d| Some((d.payload.len(), harness::read_dhcp(&d.payload)?)))
        .collect();
    assert!(!replies.is_empty(), "no replies captured");
    let (mut firmware_replies, mut ipxe_replies, mut cut) = (0, 0, 0);
    for (len, reply) in &replies {
        let max = limit.get(&reply.xid).copied().unwrap_or(576);
        // IP and UDP headers count against option 57 (an IP datagram size).
        assert!(
            len + 28 <= max,
            "a {len}-byte reply to a client that takes {max}-byte datagrams"
        );
        let dns_bytes: usize = reply
            .options
            .iter()
            .filter(|(c, _)| *c == 6)
            .map(|(_, v)| v.len())
            .sum();
        if dns_bytes < 350 * 4 || reply.options.iter().any(|(c, _)| *c == 52) {
            cut += 1;
        }
        assert!(
            !reply.file.is_empty(),
            "the boot file left `file`: {reply:?}"
        );
        // What does fit (mask, router) is in the options field, for clients that
        // ignore option 52: only the list that cannot fit was left out.
        let codes: Vec<u8> = reply.options.iter().map(|(c, _)| *c).collect();
        assert!(
            codes.contains(&1) && codes.contains(&3),
            "mask and router kept: {codes:?}"
        );
        if ipxe.contains(&reply.xid) {
            ipxe_replies += 1;
        } else {
            firmware_replies += 1;
        }
    }
    assert_eq!(cut, replies.len(), "every reply had to be cut");
    assert!(
        firmware_replies >= 2,
        "OVMF's OFFER and ACK: {firmware_replies}"
    );
    assert!(ipxe_replies >= 2, "iPXE's OFFER and ACK: {ipxe_replies}");
}
