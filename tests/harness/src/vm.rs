//! QEMU VMs under TCG on a tap device of a `BootNet`: BIOS (SeaBIOS with QEMU's iPXE
//! ROM) or UEFI (OVMF's own PXE, with a private copy of its variables), the serial
//! console in a file, and waiting for a marker on it.

use crate::nets::BootNet;
use crate::process::{Proc, read_lossy, wait_until};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with QEMU's iPXE option ROM on an e1000.
    Bios,
    /// OVMF's own PXE on virtio-net (no option ROM): firmware DHCP, TFTP snponly.efi,
    /// then iPXE.
    Uefi,
    /// OVMF built with Secure Boot, Microsoft's keys enrolled (`OVMF_VARS_4M.ms.fd`):
    /// only files signed by a key they trust start (Debian's shim is).
    SecureBoot,
    /// OVMF with PXE switched off (QEMU's fw_cfg knobs), so its first network boot
    /// entry is UEFI HTTP boot.
    UefiHttp,
    /// AAVMF (arm64 UEFI) under `qemu-system-aarch64 -M virt`.
    Arm64,
}

/// A QEMU VM on a tap device of a `BootNet`, with its serial console in a file.
pub struct Vm {
    pub proc: Proc,
    pub serial: PathBuf,
    _vars: Option<tempfile::NamedTempFile>,
}

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// What `Vm::start_with` starts.
#[derive(Clone, Copy, Debug)]
pub struct VmSpec<'a> {
    pub firmware: Firmware,
    pub tap: &'a str,
    pub mac: &'a str,
    pub name: &'a str,
    pub memory_mib: u32,
    /// A raw disk image, before the NIC in the boot order.
    pub disk: Option<&'a std::path::Path>,
}

impl Vm {
    /// A VM with 512 MiB of memory.
    pub fn start(net: &BootNet, firmware: Firmware, tap: &str, mac: &str, name: &str) -> Self {
        Vm::start_with_memory(net, firmware, tap, mac, name, 512)
    }

    /// A VM with `memory_mib` of memory. (The Debian installer wants 1024: with 512 it
    /// enters its low-memory mode and waits at a notice, even at priority critical.)
    pub fn start_with_memory(
        net: &BootNet,
        firmware: Firmware,
        tap: &str,
        mac: &str,
        name: &str,
        memory_mib: u32,
    ) -> Self {
        Vm::start_with(
            net,
            &VmSpec {
                firmware,
                tap,
                mac,
                name,
                memory_mib,
                disk: None,
            },
        )
    }

    /// A VM as `spec` says. With a disk, the disk comes before the NIC in the boot
    /// order (an empty disk falls through to the network at once), and the VM may
    /// reboot (a warm reset boots the disk it just wrote).
    pub fn start_with(net: &BootNet, spec: &VmSpec<'_>) -> Self {
        let VmSpec {
            firmware,
            tap,
            mac,
            name,
            memory_mib,
            disk,
        } = *spec;
        let serial = net.dir.path().join(format!("{name}.serial.log"));
        let qemu = if firmware == Firmware::Arm64 {
            "qemu-system-aarch64"
        } else {
            "qemu-system-x86_64"
        };
        let mut cmd = net.ns.command(qemu);
        cmd.args(["-accel", "tcg", "-m"])
            .arg(memory_mib.to_string());
        cmd.args(["-display", "none", "-monitor", "none"]);
        cmd.arg("-serial").arg(format!("file:{}", serial.display()));
        if disk.is_none() {
            cmd.arg("-no-reboot");
        }
        if firmware != Firmware::Arm64 && disk.is_none() {
            cmd.args(["-boot", "n"]);
        }
        cmd.arg("-netdev")
            .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"));
        let boot_index = |i: u32| {
            if disk.is_some() {
                format!(",bootindex={i}")
            } else {
                String::new()
            }
        };
        if let Some(disk) = disk {
            cmd.arg("-drive")
                .arg(format!("file={},if=none,id=d0,format=raw", disk.display()));
            cmd.arg("-device")
                .arg("virtio-blk-pci,drive=d0,bootindex=1");
        }
        let nic = format!(
            "virtio-net-pci,netdev=n0,mac={mac},romfile={}",
            boot_index(2)
        );
        // Each UEFI firmware: its code, the variables a private copy is made of, and
        // the machine and firmware settings it needs.
        let uefi: Option<(&str, &str, &[&str])> = match firmware {
            Firmware::Bios => None,
            Firmware::Uefi => Some((OVMF_CODE, OVMF_VARS, &["-machine", "q35"])),
            Firmware::SecureBoot => Some((
                "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
                &[
                    "-machine",
                    "q35,smm=on",
                    "-global",
                    "driver=cfi.pflash01,property=secure,value=on",
                ],
            )),
            Firmware::UefiHttp => Some((
                OVMF_CODE,
                OVMF_VARS,
                &[
                    "-machine",
                    "q35",
                    "-fw_cfg",
                    "name=opt/org.tianocore/IPv4PXESupport,string=n",
                    "-fw_cfg",
                    "name=opt/org.tianocore/IPv6PXESupport,string=n",
                ],
            )),
            Firmware::Arm64 => Some((
                "/usr/share/AAVMF/AAVMF_CODE.fd",
                "/usr/share/AAVMF/AAVMF_VARS.fd",
                &["-M", "virt", "-cpu", "cortex-a57"],
            )),
        };
        let mut vars = None;
        match uefi {
            None => {
                cmd.arg("-device")
                    .arg(format!("e1000,netdev=n0,mac={mac}{}", boot_index(2)));
            }
            Some((code, vars_template, settings)) => {
                let copy = tempfile::NamedTempFile::new().expect("vars file");
                fs::copy(vars_template, copy.path())
                    .unwrap_or_else(|e| panic!("copy {vars_template}: {e}"));
                cmd.args(settings);
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={code}"
                ));
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    copy.path().display()
                ));
                cmd.arg("-device").arg(&nic);
                vars = Some(copy);
            }
        }
        let proc = Proc::spawn(cmd, &net.dir.path().join(format!("{name}.qemu.log")));
        Vm {
            proc,
            serial,
            _vars: vars,
        }
    }

    pub fn serial_text(&self) -> String {
        read_lossy(&self.serial)
    }

    /// Waits for `marker` on the serial console.
    pub fn wait_for(&mut self, marker: &str, deadline: Duration) -> bool {
        wait_until(deadline, || self.serial_text().contains(marker))
    }
}
