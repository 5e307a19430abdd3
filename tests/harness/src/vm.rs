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
}

/// A QEMU VM on a tap device of a `BootNet`, with its serial console in a file.
pub struct Vm {
    pub proc: Proc,
    pub serial: PathBuf,
    _vars: Option<tempfile::NamedTempFile>,
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
        let serial = net.dir.path().join(format!("{name}.serial.log"));
        let mut cmd = net.ns.command("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-m"])
            .arg(memory_mib.to_string());
        cmd.args(["-display", "none", "-monitor", "none"]);
        cmd.arg("-serial").arg(format!("file:{}", serial.display()));
        cmd.args(["-no-reboot", "-boot", "n"]);
        cmd.arg("-netdev")
            .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"));
        let mut vars = None;
        match firmware {
            Firmware::Bios => {
                cmd.arg("-device").arg(format!("e1000,netdev=n0,mac={mac}"));
            }
            Firmware::Uefi => {
                let copy = tempfile::NamedTempFile::new().expect("vars file");
                fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", copy.path()).expect("copy OVMF vars");
                cmd.args(["-machine", "q35"]);
                cmd.arg("-drive")
                    .arg("if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd");
                cmd.arg("-drive").arg(format!(
                    "if=pflash,format=raw,file={}",
                    copy.path().display()
                ));
                cmd.arg("-device")
                    .arg(format!("virtio-net-pci,netdev=n0,mac={mac},romfile="));
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
