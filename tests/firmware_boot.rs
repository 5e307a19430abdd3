//! Every firmware path a rack holds, booted in a VM from rackboot's own DHCP, TFTP
//! and HTTP (issue 14): UEFI Secure Boot through Debian's signed shim and grub (and
//! an unsigned iPXE refused, which rackboot reports), UEFI HTTP boot with no TFTP at
//! all (through iPXE, and through a per-machine unified kernel image), and arm64
//! UEFI (AAVMF) through the arm64 installer's signed shim and grub, refusing an
//! amd64 image. The firmware, shim, grub and kernels are Debian's, nobody's here.

use harness::{BootNet, Firmware, Vm, boot_fixtures, should_run, tail, wait_until};
use std::path::Path;
use std::time::Duration;

const RACKBOOT: &str = env!("CARGO_BIN_EXE_rackboot");
const MARKER: &str = "RACKBOOT-MARKER-BOOTED";
const DEADLINE: Duration = Duration::from_secs(300);

/// Where `scripts/test` unpacks Debian's signed loaders (not installed: see there).
const CACHE: &str = "/var/cache/rackboot-tests";
const SHIM_X64: &str = "shim-signed/usr/lib/shim/shimx64.efi.signed";
const GRUB_X64: &str = "grub-efi-amd64-signed/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed";
const D_I_ARM64: &str = "debian-installer-12-netboot-arm64/usr/lib/debian-installer/images/12/arm64/text/debian-installer/arm64";

fn cached(relative: &str) -> String {
    let path = Path::new(CACHE).join(relative);
    assert!(
        path.exists(),
        "{} is missing: scripts/test unpacks it",
        path.display()
    );
    path.display().to_string()
}

/// The `[boot]` sections pointing at the unpacked loaders.
fn loaders_config() -> String {
    format!(
        "[boot.amd64]\nshim = \"{}\"\ngrub = \"{}\"\n[boot.arm64]\nshim = \"{}\"\ngrub = \"{}\"\n",
        cached(SHIM_X64),
        cached(GRUB_X64),
        cached(&format!("{D_I_ARM64}/bootnetaa64.efi")),
        cached(&format!("{D_I_ARM64}/grubaa64.efi")),
    )
}

fn marker_image(
    net: &BootNet,
    name: &str,
    kernel: &Path,
    initrd: &Path,
    arch: &str,
    console: &str,
) {
    net.cli(&[
        "image",
        "add",
        name,
        "--kernel",
        kernel.to_str().expect("utf8"),
        "--initrd",
        initrd.to_str().expect("utf8"),
        "--cmdline",
        &format!("console={console} panic=-1"),
        "--arch",
        arch,
    ]);
}

/// A `BootNet` whose `[boot]` points at the unpacked loaders, with the amd64 marker
/// image (`name`) registered.
fn marker_net(tag: &str, name: &str) -> BootNet {
    let fixtures = boot_fixtures();
    let net = BootNet::new(RACKBOOT, tag, &["tap0"]);
    net.append_config(&loaders_config());
    marker_image(
        &net,
        name,
        &fixtures.join("vmlinuz"),
        &fixtures.join("initrd.img"),
        "amd64",
        "ttyS0",
    );
    net
}

fn events(net: &BootNet, mac: &str) -> String {
    net.cli(&["event", "list", "--mac", mac])
}

fn report(net: &BootNet, vm: &Vm, mac: &str) -> String {
    format!(
        "--- serial ---\n{}\n--- events ---\n{}\n--- server log ---\n{}",
        tail(&vm.serial_text(), 40),
        tail(&events(net, mac), 40),
        tail(&net.server_log(), 40)
    )
}

/// The kinds of events, in order, and whether the files named appear in order.
fn read_in_order(events: &str, files: &[&str]) -> bool {
    let mut at = 0;
    for file in files {
        match events[at..].find(&format!("file={file} ")) {
            Some(found) => at += found + 1,
            None => return false,
        }
    }
    true
}

#[test]
fn a_secure_boot_machine_boots_debians_signed_shim_grub_and_kernel() {
    if !should_run(
        "firmware_boot",
        &["ip", "qemu-system-x86_64", "cpio", "busybox", "apt-get"],
    ) {
        return;
    }
    let mac = "52:54:00:5b:00:01";
    let mut net = marker_net("fwsb", "marker");
    net.cli(&[
        "machine", "add", mac, "--image", "marker", "--loader", "grub",
    ]);
    net.start();
    let mut vm = Vm::start(&net, Firmware::SecureBoot, "tap0", mac, "sb");
    assert!(
        vm.wait_for(MARKER, DEADLINE),
        "no marker\n{}",
        report(&net, &vm, mac)
    );
    let serial = vm.serial_text();
    // The kernel itself says the firmware enforced Secure Boot on it.
    assert!(
        serial.contains("Secure boot enabled") || serial.contains("Secure Boot is enabled"),
        "the kernel did not report Secure Boot\n{}",
        report(&net, &vm, mac)
    );
    assert!(
        serial.contains("console=ttyS0 panic=-1"),
        "{}",
        tail(&serial, 20)
    );
    let events = events(&net, mac);
    // shim, then the grub shim loads, then grub's own configuration for this
    // machine, then the image's kernel and initrd, all over TFTP.
    assert!(
        read_in_order(
            &events,
            &[
                "shimx64.efi",
                "grubx64.efi",
                "boot/52-54-00-5b-00-01/kernel",
                "boot/52-54-00-5b-00-01/initrd",
            ]
        ),
        "{events}"
    );
    assert!(events.contains("tftp.script"), "{events}");
    assert!(events.contains("template=boot.grub"), "{events}");
}

#[test]
fn a_secure_boot_machine_refuses_unsigned_ipxe_and_rackboot_says_why() {
    if !should_run(
        "firmware_boot",
        &["ip", "qemu-system-x86_64", "cpio", "busybox", "apt-get"],
    ) {
        return;
    }
    let mac = "52:54:00:5b:00:02";
    let mut net = marker_net("fwsbno", "marker");
    net.cli(&[
        "machine", "add", mac, "--image", "marker", "--loader", "ipxe",
    ]);
    net.start();
    let vm = Vm::start(&net, Firmware::SecureBoot, "tap0", mac, "sbno");
    // The firmware downloads snponly.efi, refuses to start it, and asks for nothing
    // more; the diagnosis comes 30 s after the download.
    let said = wait_until(Duration::from_secs(180), || {
        events(&net, mac).contains("boot.diagnosis")
    });
    let events = events(&net, mac);
    assert!(said, "no diagnosis\n{}", report(&net, &vm, mac));
    assert!(events.contains("file=snponly.efi "), "{events}");
    assert!(
        events.contains("downloaded snponly.efi and asked for nothing more")
            && events.contains("Secure Boot"),
        "{events}"
    );
    assert!(!vm.serial_text().contains(MARKER));
}

#[test]
fn uefi_http_boot_needs_no_tftp_through_ipxe_or_a_unified_kernel_image() {
    if !should_run(
        "firmware_boot",
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
    let stub = Path::new("/usr/lib/systemd/boot/efi/linuxx64.efi.stub");
    assert!(stub.is_file(), "systemd-boot-efi is not installed");
    let (ipxe_mac, uki_mac) = ("52:54:00:5b:00:10", "52:54:00:5b:00:11");
    let mut net = marker_net("fwhttp", "marker");
    // Counts every TFTP request reaching the server's namespace: there must be none.
    net.ns.nft(
        "table inet rbtftp {\n chain in {\n  type filter hook input priority 0; policy accept;\n  udp dport 69 counter\n }\n}\n",
    );
    net.cli(&["machine", "add", ipxe_mac, "--image", "marker"]);
    net.cli(&[
        "machine", "add", uki_mac, "--image", "marker", "--loader", "uki",
    ]);
    net.start();
    let tftp_requests = || {
        let out = net
            .ns
            .command("nft")
            .args(["list", "table", "inet", "rbtftp"])
            .output()
            .expect("nft list");
        String::from_utf8_lossy(&out.stdout)
            .split("packets ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .expect("the counter")
    };

    let mut vm = Vm::start(&net, Firmware::UefiHttp, "tap0", ipxe_mac, "http-ipxe");
    assert!(
        vm.wait_for(MARKER, DEADLINE),
        "iPXE path\n{}",
        report(&net, &vm, ipxe_mac)
    );
    let first = events(&net, ipxe_mac);
    assert!(first.contains("firmware=uefi-x64-http"), "{first}");
    assert!(first.contains("/ipxe/snponly.efi"), "{first}");
    // The firmware's download of its boot program is recorded, as TFTP's would be.
    assert!(
        first.contains("http.bootfile") && first.contains("file=snponly.efi"),
        "{first}"
    );
    assert!(
        first.contains("http.script") && first.contains("http.kernel"),
        "{first}"
    );
    drop(vm);

    let mut vm = Vm::start(&net, Firmware::UefiHttp, "tap0", uki_mac, "http-uki");
    assert!(
        vm.wait_for(MARKER, DEADLINE),
        "UKI path\n{}",
        report(&net, &vm, uki_mac)
    );
    let uki = events(&net, uki_mac);
    assert!(
        uki.contains("file=http://192.0.2.1:8080/boot/52-54-00-5b-00-11.efi"),
        "{uki}"
    );
    assert!(uki.contains("uki=true"), "{uki}");
    // No iPXE on this path: the kernel's command line is the UKI's own.
    assert!(!uki.contains("http.script"), "{uki}");
    assert!(vm.serial_text().contains("console=ttyS0 panic=-1"));

    assert_eq!(tftp_requests(), 0, "a TFTP request reached rackboot");
    assert!(!first.contains("tftp.") && !uki.contains("tftp."));
}

#[test]
fn an_arm64_machine_boots_its_arm64_kernel_and_is_refused_an_amd64_one() {
    if !should_run(
        "firmware_boot",
        &["ip", "qemu-system-aarch64", "cpio", "busybox", "apt-get"],
    ) {
        return;
    }
    let fixtures = boot_fixtures();
    let arm_initrd = fixtures.join("initrd-arm64.img");
    assert!(
        arm_initrd.is_file(),
        "the arm64 busybox was not unpacked (scripts/test)"
    );
    let mac = "52:54:00:5b:00:03";
    let mut net = marker_net("fwarm", "marker-amd64");
    marker_image(
        &net,
        "marker-arm64",
        Path::new(&cached(&format!("{D_I_ARM64}/linux"))),
        &arm_initrd,
        "arm64",
        "ttyAMA0",
    );
    // No loader named: arm64's default (grub, since Debian has no arm64 iPXE).
    net.cli(&["machine", "add", mac, "--image", "marker-arm64"]);
    net.start();
    let mut vm = Vm::start_with_memory(&net, Firmware::Arm64, "tap0", mac, "arm64", 1024);
    assert!(
        vm.wait_for(MARKER, DEADLINE),
        "no marker\n{}",
        report(&net, &vm, mac)
    );
    assert!(vm.serial_text().contains("RACKBOOT-ARCH: aarch64"));
    let events_now = events(&net, mac);
    assert!(events_now.contains("firmware=uefi-arm64"), "{events_now}");
    assert!(
        read_in_order(&events_now, &["shimaa64.efi", "grubaa64.efi"]),
        "{events_now}"
    );
    drop(vm);

    // The same machine given an amd64-only image: grub is told why, never a kernel.
    net.cli(&["machine", "set-image", mac, "marker-amd64"]);
    net.cli(&["machine", "set-mode", mac, "install"]);
    let vm = Vm::start_with_memory(&net, Firmware::Arm64, "tap0", mac, "arm64-refused", 1024);
    let refused = wait_until(DEADLINE, || events(&net, mac).contains("boot.refused"));
    let after = events(&net, mac);
    assert!(refused, "no refusal\n{}", report(&net, &vm, mac));
    assert!(
        after.contains("built for amd64, and this machine is arm64"),
        "{after}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || vm
            .serial_text()
            .contains("this machine is arm64")),
        "not on the console\n{}",
        report(&net, &vm, mac)
    );
    assert_eq!(
        after.matches("file=boot/52-54-00-5b-00-03/kernel ").count(),
        1,
        "only the first boot fetched a kernel\n{after}"
    );
}

/// A raw disk whose EFI system partition holds Debian's signed shim (as the
/// removable-media path `\EFI\BOOT\BOOTX64.EFI`), Debian's signed grub beside it,
/// a grub.cfg, and the signed kernel with the marker initrd: what an installer
/// leaves behind. Built without root or loop devices (sgdisk, mkfs.vfat, mtools).
fn secure_boot_disk(dir: &Path, kernel: &Path, initrd: &Path) -> std::path::PathBuf {
    use std::process::Command;
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("run");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let disk = dir.join("installed.img");
    let esp = dir.join("esp.img");
    // 64 MiB, one partition from sector 2048 to the end: the ESP.
    run(Command::new("truncate").args(["-s", "64M"]).arg(&disk));
    run(Command::new("sgdisk")
        .args(["-o", "-n", "1:2048:0", "-t", "1:ef00", "-c", "1:ESP"])
        .arg(&disk));
    // sgdisk leaves the last 33 sectors for the backup table.
    let sectors = 64 * 2048 - 2048 - 33;
    run(Command::new("truncate")
        .args(["-s", &format!("{}", sectors * 512)])
        .arg(&esp));
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", "ESP"])
        .arg(&esp));
    let cfg = dir.join("grub.cfg");
    std::fs::write(
        &cfg,
        "set timeout=0\nlinux /vmlinuz console=ttyS0 panic=-1 rackboot.installed=1\ninitrd /initrd.img\nboot\n",
    )
    .expect("grub.cfg");
    let mtools = |args: &[&str]| {
        let mut cmd = Command::new(args[0]);
        cmd.env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&esp)
            .args(&args[1..]);
        run(&mut cmd);
    };
    mtools(&["mmd", "::/EFI", "::/EFI/BOOT", "::/EFI/debian"]);
    let copy = |from: &Path, to: &str| mtools(&["mcopy", from.to_str().expect("utf8"), to]);
    copy(Path::new(&cached(SHIM_X64)), "::/EFI/BOOT/BOOTX64.EFI");
    copy(
        Path::new(&cached(
            "grub-efi-amd64-signed/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        )),
        "::/EFI/BOOT/grubx64.efi",
    );
    // Debian's signed grub looks in its prefix (/EFI/debian), then beside itself.
    copy(&cfg, "::/EFI/debian/grub.cfg");
    copy(&cfg, "::/EFI/BOOT/grub.cfg");
    copy(kernel, "::/vmlinuz");
    copy(initrd, "::/initrd.img");
    run(Command::new("dd")
        .arg(format!("if={}", esp.display()))
        .arg(format!("of={}", disk.display()))
        .args(["bs=1M", "seek=1", "conv=notrunc", "status=none"]));
    disk
}

#[test]
fn a_secure_boot_install_writes_its_disk_calls_back_and_boots_from_it_still_enforced() {
    if !should_run(
        "firmware_boot",
        &[
            "ip",
            "qemu-system-x86_64",
            "cpio",
            "busybox",
            "apt-get",
            "sgdisk",
            "mkfs.vfat",
            "mcopy",
        ],
    ) {
        return;
    }
    let fixtures = boot_fixtures();
    let mac = "52:54:00:5b:00:04";
    let mut net = marker_net("fwsbin", "marker");
    let served = tempfile::tempdir().expect("tempdir");
    secure_boot_disk(
        served.path(),
        &fixtures.join("vmlinuz"),
        &fixtures.join("initrd.img"),
    );
    let mirror = harness::debian_mirror::MirrorServer::start(&net.ns, "192.0.2.1", served.path());
    net.cli(&[
        "image",
        "add",
        "sb-installer",
        "--kernel",
        fixtures.join("vmlinuz").to_str().expect("utf8"),
        "--initrd",
        fixtures.join("installer.img").to_str().expect("utf8"),
        "--cmdline",
        &format!(
            "console=ttyS0 panic=-1 rackboot.disk={}/installed.img rackboot.after=reboot",
            mirror.base_url
        ),
    ]);
    net.cli(&[
        "machine",
        "add",
        mac,
        "--image",
        "sb-installer",
        "--loader",
        "grub",
    ]);
    net.cli(&["machine", "set-mode", mac, "install"]);
    net.start();
    let target = net.dir.path().join("target.img");
    std::fs::write(&target, vec![0u8; 64 << 20]).expect("empty disk");
    let mut vm = Vm::start_with(
        &net,
        &harness::VmSpec {
            firmware: Firmware::SecureBoot,
            tap: "tap0",
            mac,
            name: "sb-install",
            memory_mib: 512,
            disk: Some(&target),
        },
    );
    assert!(
        vm.wait_for("rackboot.installed=1", DEADLINE),
        "the installed disk did not boot\n{}\n--- mirror ---\n{:?}",
        report(&net, &vm, mac),
        mirror.requests()
    );
    let serial = vm.serial_text();
    let installed_at = serial.find("rackboot.installed=1").unwrap_or(0);
    let (install, installed) = serial.split_at(installed_at);
    assert!(
        install.contains("RACKBOOT-DISK-WRITTEN"),
        "{}",
        tail(install, 30)
    );
    assert!(
        install.contains("RACKBOOT-DONE-CALLED"),
        "{}",
        tail(install, 30)
    );
    // Both kernels ran under an enforcing firmware: the installer's, loaded by
    // rackboot's grub, and the installed one, loaded by the disk's shim and grub.
    let enforced = |text: &str| {
        text.contains("Secure boot enabled") || text.contains("Secure Boot is enabled")
    };
    assert!(enforced(install), "{}", tail(install, 40));
    let installed_boot_start = install.rfind("RACKBOOT-DONE-CALLED").unwrap_or(0);
    assert!(
        enforced(&serial[installed_boot_start..]),
        "the disk boot did not report Secure Boot\n{}",
        tail(installed, 40)
    );
    let events = events(&net, mac);
    assert!(events.contains("install.done"), "{events}");
    // The disk came first in the boot order: the second boot never asked the network.
    let after_done = &events[events.find("install.done").unwrap_or(0)..];
    assert!(!after_done.contains("dhcp.offer"), "{events}");
    let mode = net.cli(&["machine", "list"]);
    assert!(
        mode.lines().any(|l| l.contains(mac) && l.contains("local")),
        "{mode}"
    );
}
