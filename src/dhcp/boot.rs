//! Which boot file a client gets, from its firmware (option 93, or option 60 where ARM
//! firmware leaves 93 out), whether it is already iPXE (the loop-break), and the
//! loader its machine names (or its architecture's default): iPXE, shim then grub
//! (Secure Boot), or a unified kernel image.

use crate::dhcp::wire::{BootReply, ClientRequest};
use crate::lifecycle::{Arch, Loader};
use crate::mac::MacAddr;
use std::net::Ipv4Addr;

pub use crate::lifecycle::{GRUB_AA64, GRUB_X64, SHIM_AA64, SHIM_X64};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    UefiX64,
    UefiArm64,
    UefiX64Http,
    UefiArm64Http,
    /// An architecture rackboot has no iPXE binary for (IA32 UEFI, ARM32...).
    Unsupported(u16),
}

impl Firmware {
    fn from_arch(arch: u16) -> Firmware {
        match arch {
            0 => Firmware::Bios,
            // 9 is "EFI byte code" in RFC 4578, but x86-64 firmware sends it in practice.
            7 | 9 => Firmware::UefiX64,
            11 => Firmware::UefiArm64,
            16 => Firmware::UefiX64Http,
            19 => Firmware::UefiArm64Http,
            other => Firmware::Unsupported(other),
        }
    }

    /// A short name for the inventory and the logs.
    pub fn name(self) -> String {
        match self {
            Firmware::Bios => "bios".into(),
            Firmware::UefiX64 => "uefi-x64".into(),
            Firmware::UefiArm64 => "uefi-arm64".into(),
            Firmware::UefiX64Http => "uefi-x64-http".into(),
            Firmware::UefiArm64Http => "uefi-arm64-http".into(),
            Firmware::Unsupported(n) => format!("arch-{n}"),
        }
    }
}

/// The firmware a client reports: the first supported entry of option 93, else the
/// `Arch:NNNNN` field of a `PXEClient`/`HTTPClient` vendor class.
pub fn firmware(request: &ClientRequest) -> Option<Firmware> {
    let from_93 = request.archs.iter().map(|&a| Firmware::from_arch(a));
    let mut first_unsupported = None;
    for fw in from_93 {
        match fw {
            Firmware::Unsupported(_) => first_unsupported = first_unsupported.or(Some(fw)),
            supported => return Some(supported),
        }
    }
    if first_unsupported.is_some() {
        return first_unsupported;
    }
    let class = request.vendor_class.as_deref()?;
    let arch = class.split(':').skip_while(|f| *f != "Arch").nth(1)?;
    arch.parse::<u16>().ok().map(Firmware::from_arch)
}

/// A PXE client: firmware that says so, or iPXE. Phones and printers are not.
pub fn is_pxe_client(request: &ClientRequest) -> bool {
    request.is_ipxe
        || !request.archs.is_empty()
        || request
            .vendor_class
            .as_deref()
            .is_some_and(|c| c.starts_with("PXEClient") || c.starts_with("HTTPClient"))
}

/// What boot choice needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct BootConfig {
    pub server_ip: Ipv4Addr,
    /// Base URL of rackboot's HTTP server, without a trailing slash.
    pub http_url: String,
    pub bios_file: String,
    pub uefi_x64_file: String,
    pub uefi_arm64_file: String,
    /// Whether an arm64 iPXE binary exists in `ipxe_dir`.
    pub arm64_available: bool,
    /// The loader of machines that name none, per architecture (`[boot.*] loader`).
    pub default_loader_amd64: Loader,
    pub default_loader_arm64: Loader,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoBootFile {
    NotPxe,
    Unsupported(Firmware),
    NoArm64Binary,
    /// Debian's signed grub has no HTTP: shim and grub boot over PXE (TFTP) only.
    GrubOverHttpBoot,
}

impl std::fmt::Display for NoBootFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoBootFile::NotPxe => f.write_str("not a PXE client"),
            NoBootFile::Unsupported(fw) => {
                write!(f, "firmware {} has no boot file configured", fw.name())
            }
            NoBootFile::NoArm64Binary => f.write_str(
                "this machine's architecture (arm64) has no iPXE boot file configured; \
                 give it the grub loader",
            ),
            NoBootFile::GrubOverHttpBoot => f.write_str(
                "the grub loader cannot start from UEFI HTTP boot (signed grub has no HTTP); \
                 use PXE, or the ipxe or uki loader",
            ),
        }
    }
}

pub fn script_url(http_url: &str, mac: MacAddr) -> String {
    format!("{http_url}/boot/{}.ipxe", mac.dashed())
}

/// The unified kernel image of a machine: its own file, since the command line
/// (with its done-URL) is inside it.
pub fn uki_path(mac: MacAddr) -> String {
    format!("boot/{}.efi", mac.dashed())
}

/// The boot file for `request`; `loader` is the machine's own choice, if it has one.
pub fn choose(
    request: &ClientRequest,
    config: &BootConfig,
    loader: Option<Loader>,
) -> Result<BootReply, NoBootFile> {
    if !is_pxe_client(request) {
        return Err(NoBootFile::NotPxe);
    }
    let tftp = |file: &str| BootReply {
        next_server: config.server_ip,
        filename: file.to_string(),
        vendor_class: None,
    };
    let http = |file: &str| BootReply {
        next_server: config.server_ip,
        filename: format!("{}/ipxe/{file}", config.http_url),
        vendor_class: Some("HTTPClient".into()),
    };
    // The loop-break: iPXE already runs, so it gets its script, never iPXE again.
    if request.is_ipxe {
        return Ok(BootReply {
            next_server: config.server_ip,
            filename: script_url(&config.http_url, request.mac),
            vendor_class: None,
        });
    }
    let uki_url = || BootReply {
        next_server: config.server_ip,
        filename: format!("{}/{}", config.http_url, uki_path(request.mac)),
        vendor_class: Some("HTTPClient".into()),
    };
    let loader_for = |arch: Arch| {
        loader.unwrap_or(match arch {
            Arch::Amd64 => config.default_loader_amd64,
            Arch::Arm64 => config.default_loader_arm64,
        })
    };
    match firmware(request) {
        // A PXEClient vendor class without any architecture: classic BIOS PXE ROMs.
        // BIOS has no Secure Boot and no EFI stub: iPXE whatever the loader says.
        None | Some(Firmware::Bios) => Ok(tftp(&config.bios_file)),
        Some(Firmware::UefiX64) => match loader_for(Arch::Amd64) {
            Loader::Ipxe => Ok(tftp(&config.uefi_x64_file)),
            Loader::Grub => Ok(tftp(SHIM_X64)),
            Loader::Uki => Ok(tftp(&uki_path(request.mac))),
        },
        Some(Firmware::UefiX64Http) => match loader_for(Arch::Amd64) {
            Loader::Ipxe => Ok(http(&config.uefi_x64_file)),
            Loader::Grub => Err(NoBootFile::GrubOverHttpBoot),
            Loader::Uki => Ok(uki_url()),
        },
        Some(Firmware::UefiArm64) => match loader_for(Arch::Arm64) {
            Loader::Ipxe if config.arm64_available => Ok(tftp(&config.uefi_arm64_file)),
            Loader::Ipxe => Err(NoBootFile::NoArm64Binary),
            Loader::Grub => Ok(tftp(SHIM_AA64)),
            Loader::Uki => Ok(tftp(&uki_path(request.mac))),
        },
        Some(Firmware::UefiArm64Http) => match loader_for(Arch::Arm64) {
            Loader::Ipxe if config.arm64_available => Ok(http(&config.uefi_arm64_file)),
            Loader::Ipxe => Err(NoBootFile::NoArm64Binary),
            Loader::Grub => Err(NoBootFile::GrubOverHttpBoot),
            Loader::Uki => Ok(uki_url()),
        },
        Some(fw @ Firmware::Unsupported(_)) => Err(NoBootFile::Unsupported(fw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::wire::{parse_request, tests::Packet};

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn config(arm64: bool) -> BootConfig {
        BootConfig {
            server_ip: Ipv4Addr::new(192, 0, 2, 1),
            http_url: "http://192.0.2.1:8080".into(),
            bios_file: "undionly.kpxe".into(),
            uefi_x64_file: "snponly.efi".into(),
            uefi_arm64_file: "arm64-efi/snponly.efi".into(),
            arm64_available: arm64,
            default_loader_amd64: Loader::Ipxe,
            default_loader_arm64: Loader::Ipxe,
        }
    }

    fn request(packet: Packet) -> ClientRequest {
        parse_request(&packet.end()).expect("parses")
    }

    fn file_for(packet: Packet) -> Result<BootReply, NoBootFile> {
        choose(&request(packet), &config(true), None)
    }

    #[test]
    fn firmware_pxe_gets_the_ipxe_binary_for_its_architecture() {
        let cases: [(&[u8], &str); 4] = [
            (&[0, 0], "undionly.kpxe"),
            (&[0, 7], "snponly.efi"),
            (&[0, 9], "snponly.efi"),
            (&[0, 11], "arm64-efi/snponly.efi"),
        ];
        for (arch, expected) in cases {
            let reply = file_for(Packet::new(1, MAC).option(93, arch)).expect("boot file");
            assert_eq!(reply.filename, expected, "arch {arch:?}");
            assert_eq!(reply.vendor_class, None);
            assert_eq!(reply.next_server, Ipv4Addr::new(192, 0, 2, 1));
        }
    }

    #[test]
    fn uefi_http_boot_gets_a_url_and_httpclient() {
        let reply = file_for(
            Packet::new(1, MAC)
                .option(93, &[0, 16])
                .option(60, b"HTTPClient:Arch:00016:UNDI:003001"),
        )
        .expect("boot file");
        assert_eq!(reply.filename, "http://192.0.2.1:8080/ipxe/snponly.efi");
        assert_eq!(reply.vendor_class.as_deref(), Some("HTTPClient"));
    }

    #[test]
    fn ipxe_gets_its_own_script_whatever_the_firmware() {
        for arch in [[0u8, 0], [0, 7], [0, 16]] {
            let reply = file_for(Packet::new(3, MAC).option(93, &arch).option(77, b"iPXE"))
                .expect("script");
            assert_eq!(
                reply.filename,
                "http://192.0.2.1:8080/boot/52-54-00-12-34-56.ipxe"
            );
        }
    }

    #[test]
    fn arm_firmware_without_option_93_is_read_from_option_60() {
        let req = request(Packet::new(1, MAC).option(60, b"PXEClient:Arch:00011:UNDI:003000"));
        assert_eq!(firmware(&req), Some(Firmware::UefiArm64));
        assert_eq!(
            choose(&req, &config(true), None).expect("file").filename,
            "arm64-efi/snponly.efi"
        );
        assert_eq!(
            choose(&req, &config(false), None),
            Err(NoBootFile::NoArm64Binary)
        );
    }

    #[test]
    fn option_93_list_takes_the_first_supported_entry() {
        let req = request(Packet::new(1, MAC).option(93, &[0, 6, 0, 7]));
        assert_eq!(firmware(&req), Some(Firmware::UefiX64));
        let req = request(Packet::new(1, MAC).option(93, &[0, 6]));
        assert_eq!(
            choose(&req, &config(true), None),
            Err(NoBootFile::Unsupported(Firmware::Unsupported(6)))
        );
    }

    #[test]
    fn the_machines_loader_picks_shim_or_its_own_unified_image() {
        let pxe_x64 = request(Packet::new(1, MAC).option(93, &[0, 7]));
        let http_x64 = request(
            Packet::new(1, MAC)
                .option(93, &[0, 16])
                .option(60, b"HTTPClient:Arch:00016:UNDI:003001"),
        );
        let pxe_arm = request(Packet::new(1, MAC).option(93, &[0, 11]));
        let file = |req: &ClientRequest, loader| {
            choose(req, &config(false), loader).map(|reply| reply.filename)
        };
        assert_eq!(file(&pxe_x64, Some(Loader::Grub)), Ok("shimx64.efi".into()));
        assert_eq!(
            file(&pxe_arm, Some(Loader::Grub)),
            Ok("shimaa64.efi".into())
        );
        assert_eq!(
            file(&pxe_x64, Some(Loader::Uki)),
            Ok("boot/52-54-00-12-34-56.efi".into())
        );
        assert_eq!(
            file(&http_x64, Some(Loader::Uki)),
            Ok("http://192.0.2.1:8080/boot/52-54-00-12-34-56.efi".into())
        );
        assert_eq!(
            file(&http_x64, Some(Loader::Grub)),
            Err(NoBootFile::GrubOverHttpBoot)
        );
        // BIOS has no Secure Boot: iPXE whatever the machine names.
        let bios = request(Packet::new(1, MAC).option(93, &[0, 0]));
        assert_eq!(file(&bios, Some(Loader::Grub)), Ok("undionly.kpxe".into()));
        // iPXE already running gets its script, never shim.
        let ipxe = request(Packet::new(3, MAC).option(93, &[0, 7]).option(77, b"iPXE"));
        assert!(file(&ipxe, Some(Loader::Grub)).is_ok_and(|f| f.ends_with(".ipxe")));
    }

    #[test]
    fn without_a_machine_loader_the_architecture_default_applies() {
        let mut cfg = config(false);
        cfg.default_loader_arm64 = Loader::Grub;
        let arm = request(Packet::new(1, MAC).option(93, &[0, 11]));
        assert_eq!(
            choose(&arm, &cfg, None).map(|r| r.filename),
            Ok("shimaa64.efi".into())
        );
        // A machine's own choice wins over the default.
        assert_eq!(
            choose(&arm, &cfg, Some(Loader::Ipxe)),
            Err(NoBootFile::NoArm64Binary)
        );
        let x64 = request(Packet::new(1, MAC).option(93, &[0, 7]));
        assert_eq!(
            choose(&x64, &cfg, None).map(|r| r.filename),
            Ok("snponly.efi".into())
        );
    }

    #[test]
    fn non_pxe_clients_get_no_boot_file() {
        let phone = request(Packet::new(1, MAC).option(60, b"android-dhcp-14"));
        assert!(!is_pxe_client(&phone));
        assert_eq!(choose(&phone, &config(true), None), Err(NoBootFile::NotPxe));
    }
}
