//! The machine lifecycle, pure: boot modes, what each mode boots, the one-shot
//! done-URL token, and what a done-URL call does. The store carries decisions out.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What `GET /boot/{mac}.ipxe` returns for a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Leave network boot; boot the local disk.
    Local,
    /// One-shot: boot the image's installer, which calls its done-URL when finished.
    Install,
    /// Boot the configured rescue image until the mode changes.
    Rescue,
    /// Boot the assigned image on every boot (diskless, live systems).
    Boot,
    /// Boot the configured wipe image, which calls its done-URL when finished.
    Wipe,
}

pub const MODES: [Mode; 5] = [
    Mode::Local,
    Mode::Install,
    Mode::Rescue,
    Mode::Boot,
    Mode::Wipe,
];

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Install => "install",
            Mode::Rescue => "rescue",
            Mode::Boot => "boot",
            Mode::Wipe => "wipe",
        }
    }

    /// Modes whose boot reports back through a done-URL.
    pub fn takes_token(self) -> bool {
        matches!(self, Mode::Install | Mode::Wipe)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}; expected one of: {expected}")]
pub struct ParseError {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl FromStr for Mode {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MODES
            .into_iter()
            .find(|m| m.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| ParseError {
                what: "mode",
                value: s.to_string(),
                expected: "local, install, rescue, boot, wipe",
            })
    }
}

/// How iPXE leaves network boot for the local disk: UEFI firmwares differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitMethod {
    #[serde(rename = "exit")]
    Exit,
    #[serde(rename = "exit 1")]
    Exit1,
    #[serde(rename = "sanboot")]
    Sanboot,
}

pub const EXIT_METHODS: [ExitMethod; 3] =
    [ExitMethod::Exit, ExitMethod::Exit1, ExitMethod::Sanboot];

impl ExitMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitMethod::Exit => "exit",
            ExitMethod::Exit1 => "exit 1",
            ExitMethod::Sanboot => "sanboot",
        }
    }

    /// The iPXE command.
    pub fn command(self) -> &'static str {
        match self {
            ExitMethod::Exit => "exit",
            ExitMethod::Exit1 => "exit 1",
            ExitMethod::Sanboot => "sanboot --no-describe --drive 0x80",
        }
    }
}

impl FromStr for ExitMethod {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        EXIT_METHODS
            .into_iter()
            .find(|m| {
                m.as_str() == wanted || (wanted.starts_with("sanboot") && *m == ExitMethod::Sanboot)
            })
            .ok_or_else(|| ParseError {
                what: "exit method",
                value: s.to_string(),
                expected: "exit, exit 1, sanboot",
            })
    }
}

/// The first program a machine's firmware loads from rackboot. iPXE where it can run;
/// shim then grub (both signed by the distribution) where Secure Boot is enforced or no
/// iPXE exists for the architecture; a unified kernel image (kernel, initrd and command
/// line in one EFI file, unsigned) for UEFI HTTP boot without TFTP or iPXE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loader {
    Ipxe,
    Grub,
    Uki,
}

pub const LOADERS: [Loader; 3] = [Loader::Ipxe, Loader::Grub, Loader::Uki];

impl Loader {
    pub fn as_str(self) -> &'static str {
        match self {
            Loader::Ipxe => "ipxe",
            Loader::Grub => "grub",
            Loader::Uki => "uki",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Loader::Ipxe => "iPXE",
            Loader::Grub => "shim + grub (Secure Boot)",
            Loader::Uki => "unified kernel image (UEFI HTTP boot)",
        }
    }
}

impl std::fmt::Display for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Loader {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        LOADERS
            .into_iter()
            .find(|l| l.as_str() == wanted)
            .ok_or_else(|| ParseError {
                what: "loader",
                value: s.to_string(),
                expected: "ipxe, grub, uki",
            })
    }
}

/// A CPU architecture as images and machines name it. Distributions spell them
/// differently (`amd64`, `x86_64`; `arm64`, `aarch64`): both spellings parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    #[serde(alias = "x86_64", alias = "x64")]
    Amd64,
    #[serde(alias = "aarch64")]
    Arm64,
}

pub const ARCHES: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

/// The names shim and grub are served under over TFTP (and kept under in an image
/// that carries its own): shim loads `grubx64.efi` (`grubaa64.efi`) from the
/// directory it was loaded from, whatever its own name.
pub const SHIM_X64: &str = "shimx64.efi";
pub const GRUB_X64: &str = "grubx64.efi";
pub const SHIM_AA64: &str = "shimaa64.efi";
pub const GRUB_AA64: &str = "grubaa64.efi";

impl Arch {
    /// The architecture of a machine as the inventory records its firmware (`arch`,
    /// written from the DHCP firmware name, `uefi-arm64`...); amd64 when nothing is
    /// recorded yet.
    pub fn of_recorded_firmware(recorded: Option<&str>) -> Arch {
        match recorded {
            Some(name) if name.contains("arm64") => Arch::Arm64,
            _ => Arch::Amd64,
        }
    }

    /// This architecture's shim and grub file names.
    pub fn loader_names(self) -> (&'static str, &'static str) {
        match self {
            Arch::Amd64 => (SHIM_X64, GRUB_X64),
            Arch::Arm64 => (SHIM_AA64, GRUB_AA64),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Arch {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "amd64" | "x86_64" | "x64" | "x86-64" => Ok(Arch::Amd64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            _ => Err(ParseError {
                what: "architecture",
                value: s.to_string(),
                expected: "amd64 (x86_64), arm64 (aarch64)",
            }),
        }
    }
}

/// Parses a comma- or space-separated list of architectures, sorted, without
/// duplicates; empty means amd64 (what every image before architectures were
/// recorded was).
pub fn parse_arches(text: &str) -> Result<Vec<Arch>, ParseError> {
    let mut arches = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|a| !a.is_empty())
        .map(str::parse)
        .collect::<Result<Vec<Arch>, _>>()?;
    arches.sort();
    arches.dedup();
    if arches.is_empty() {
        arches.push(Arch::Amd64);
    }
    Ok(arches)
}

pub fn arches_text(arches: &[Arch]) -> String {
    arches
        .iter()
        .map(|a| a.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// A fresh done-URL token: 256 random bits, hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// Lifecycle configuration: which images rescue and wipe boot, how long a token lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleConfig {
    pub rescue_image: Option<String>,
    pub wipe_image: Option<String>,
    pub token_ttl_secs: i64,
    /// SSH public keys for every machine, besides its own.
    pub default_ssh_keys: Vec<String>,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            rescue_image: None,
            wipe_image: None,
            token_ttl_secs: 24 * 3600,
            default_ssh_keys: Vec::new(),
        }
    }
}

/// The lifecycle facts of one machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineLife {
    pub mode: Mode,
    pub image: Option<String>,
    pub token: Option<String>,
    pub token_expires_ms: Option<i64>,
}

/// Why a mode cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeRefused {
    #[error("assign an image before setting mode {0}")]
    MissingImage(Mode),
    #[error("no rescue image is configured ([lifecycle] rescue_image)")]
    RescueUnset,
    #[error("no wipe image is configured ([lifecycle] wipe_image)")]
    WipeUnset,
}

/// The image a machine in `mode` boots.
pub fn image_for(
    life: &MachineLife,
    config: &LifecycleConfig,
) -> Result<Option<String>, ModeRefused> {
    match life.mode {
        Mode::Local => Ok(None),
        Mode::Install | Mode::Boot => life
            .image
            .clone()
            .map(Some)
            .ok_or(ModeRefused::MissingImage(life.mode)),
        Mode::Rescue => config
            .rescue_image
            .clone()
            .map(Some)
            .ok_or(ModeRefused::RescueUnset),
        Mode::Wipe => config
            .wipe_image
            .clone()
            .map(Some)
            .ok_or(ModeRefused::WipeUnset),
    }
}

/// Setting a mode: checks it can boot, and issues a token for install and wipe.
/// Setting install again while a valid install token exists keeps it (a retried
/// boot of the same install reports to the same URL).
pub fn set_mode(
    life: &MachineLife,
    mode: Mode,
    config: &LifecycleConfig,
    now_ms: i64,
) -> Result<MachineLife, ModeRefused> {
    let next = MachineLife {
        mode,
        ..life.clone()
    };
    image_for(&next, config)?;
    let keep_token = life.mode == mode
        && mode.takes_token()
        && life.token.is_some()
        && life.token_expires_ms.is_some_and(|t| t > now_ms);
    let (token, token_expires_ms) = if keep_token {
        (life.token.clone(), life.token_expires_ms)
    } else if mode.takes_token() {
        (
            Some(new_token()),
            Some(now_ms + config.token_ttl_secs * 1000),
        )
    } else {
        (None, None)
    };
    Ok(MachineLife {
        token,
        token_expires_ms,
        ..next
    })
}

/// What the boot script for a machine does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootPlan {
    Local,
    /// Boot `image`; `with_token` puts the done-URL on the kernel command line.
    Image {
        image: String,
        with_token: bool,
    },
    /// The mode cannot boot as configured: say why on the console, then boot locally.
    Refused(String),
}

pub fn plan(life: &MachineLife, config: &LifecycleConfig, now_ms: i64) -> BootPlan {
    let image = match image_for(life, config) {
        Ok(None) => return BootPlan::Local,
        Ok(Some(image)) => image,
        Err(why) => return BootPlan::Refused(why.to_string()),
    };
    if life.mode.takes_token() {
        let valid = life.token.is_some() && life.token_expires_ms.is_some_and(|t| t > now_ms);
        if !valid {
            return BootPlan::Refused(format!(
                "the {} token has expired; set the mode again to retry",
                life.mode
            ));
        }
    }
    BootPlan::Image {
        image,
        with_token: life.mode.takes_token(),
    }
}

/// What a call to a done-URL does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoneOutcome {
    /// Finished: the machine returns to `local`; `wiped` when it was a wipe.
    Finished { wiped: bool },
    /// The installer reported failure: recorded, the machine stays in its mode.
    Failed,
    /// Wrong, used or expired token: 403, nothing changes.
    Refused,
}

pub fn done(life: &MachineLife, token: &str, failed: bool, now_ms: i64) -> DoneOutcome {
    let matches = life
        .token
        .as_deref()
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
    let live = life.token_expires_ms.is_some_and(|t| t > now_ms);
    if !matches || !live || !life.mode.takes_token() {
        return DoneOutcome::Refused;
    }
    if failed {
        DoneOutcome::Failed
    } else {
        DoneOutcome::Finished {
            wiped: life.mode == Mode::Wipe,
        }
    }
}

/// Whether an installer holding `token` may report progress: the same token a
/// done-URL call would take, live, in a mode that takes one. Reporting changes
/// nothing but the machine's events.
pub fn may_report(life: &MachineLife, token: &str, now_ms: i64) -> bool {
    let matches = life
        .token
        .as_deref()
        .is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes()));
    let live = life.token_expires_ms.is_some_and(|t| t > now_ms);
    matches && live && life.mode.takes_token()
}

/// An installer's progress step as it may be recorded: short, plain words
/// (`installer-started`, `partitioning`), nothing a client could smuggle into a log.
pub fn valid_progress_step(step: &str) -> bool {
    !step.is_empty()
        && step.len() <= 64
        && step
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Compares secrets without leaking where they differ through timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LifecycleConfig {
        LifecycleConfig {
            rescue_image: Some("rescue".into()),
            wipe_image: Some("wipe".into()),
            token_ttl_secs: 3600,
            default_ssh_keys: vec![],
        }
    }

    fn life(mode: Mode, image: Option<&str>) -> MachineLife {
        MachineLife {
            mode,
            image: image.map(str::to_string),
            token: None,
            token_expires_ms: None,
        }
    }

    #[test]
    fn modes_and_exit_methods_parse() {
        assert_eq!("Install".parse::<Mode>(), Ok(Mode::Install));
        assert!("reboot".parse::<Mode>().is_err());
        assert_eq!("exit 1".parse::<ExitMethod>(), Ok(ExitMethod::Exit1));
        assert_eq!(
            "sanboot --no-describe --drive 0x80".parse::<ExitMethod>(),
            Ok(ExitMethod::Sanboot)
        );
        assert_eq!(
            ExitMethod::Sanboot.command(),
            "sanboot --no-describe --drive 0x80"
        );
    }

    #[test]
    fn install_issues_a_long_token_that_survives_retries() {
        let set = set_mode(
            &life(Mode::Local, Some("debian")),
            Mode::Install,
            &config(),
            1000,
        )
        .expect("install");
        let token = set.token.clone().expect("token");
        assert!(token.len() >= 32, "at least 128 bits of hex");
        assert_eq!(set.token_expires_ms, Some(1000 + 3_600_000));
        // Setting install again (a retried reinstall) keeps the same token.
        let again = set_mode(&set, Mode::Install, &config(), 2000).expect("install");
        assert_eq!(again.token.as_deref(), Some(token.as_str()));
        // After it expired, a new one is issued.
        let later = set_mode(&set, Mode::Install, &config(), 1000 + 3_600_001).expect("install");
        assert_ne!(later.token.as_deref(), Some(token.as_str()));
        // Two installs never share a token.
        let other = set_mode(
            &life(Mode::Local, Some("debian")),
            Mode::Install,
            &config(),
            1000,
        )
        .expect("install");
        assert_ne!(other.token, set.token);
    }

    #[test]
    fn modes_that_cannot_boot_are_refused() {
        let no_image = life(Mode::Local, None);
        assert_eq!(
            set_mode(&no_image, Mode::Install, &config(), 0),
            Err(ModeRefused::MissingImage(Mode::Install))
        );
        assert_eq!(
            set_mode(&no_image, Mode::Boot, &config(), 0),
            Err(ModeRefused::MissingImage(Mode::Boot))
        );
        let bare = LifecycleConfig::default();
        assert_eq!(
            set_mode(&no_image, Mode::Rescue, &bare, 0),
            Err(ModeRefused::RescueUnset)
        );
        assert_eq!(
            set_mode(&no_image, Mode::Wipe, &bare, 0),
            Err(ModeRefused::WipeUnset)
        );
        let local = set_mode(&no_image, Mode::Local, &bare, 0).expect("local always works");
        assert_eq!(local.token, None);
    }

    #[test]
    fn plan_follows_the_mode() {
        let cfg = config();
        assert_eq!(
            plan(&life(Mode::Local, Some("debian")), &cfg, 0),
            BootPlan::Local
        );
        assert_eq!(
            plan(&life(Mode::Boot, Some("debian")), &cfg, 0),
            BootPlan::Image {
                image: "debian".into(),
                with_token: false
            }
        );
        assert_eq!(
            plan(&life(Mode::Rescue, Some("debian")), &cfg, 0),
            BootPlan::Image {
                image: "rescue".into(),
                with_token: false
            }
        );
        let install =
            set_mode(&life(Mode::Local, Some("debian")), Mode::Install, &cfg, 0).expect("install");
        assert_eq!(
            plan(&install, &cfg, 10),
            BootPlan::Image {
                image: "debian".into(),
                with_token: true
            }
        );
        assert!(matches!(
            plan(&install, &cfg, 3_600_001),
            BootPlan::Refused(_)
        ));
        let wipe = set_mode(&life(Mode::Local, None), Mode::Wipe, &cfg, 0).expect("wipe");
        assert_eq!(
            plan(&wipe, &cfg, 10),
            BootPlan::Image {
                image: "wipe".into(),
                with_token: true
            }
        );
    }

    #[test]
    fn done_url_works_once_with_the_right_token_only() {
        let cfg = config();
        let install =
            set_mode(&life(Mode::Local, Some("debian")), Mode::Install, &cfg, 0).expect("install");
        let token = install.token.clone().expect("token");
        assert_eq!(done(&install, "wrong", false, 10), DoneOutcome::Refused);
        assert_eq!(
            done(&install, &token, false, 3_600_001),
            DoneOutcome::Refused
        );
        assert_eq!(done(&install, &token, true, 10), DoneOutcome::Failed);
        assert_eq!(
            done(&install, &token, false, 10),
            DoneOutcome::Finished { wiped: false }
        );
        // Once done, the machine is local with no token: the same URL is refused.
        let after = set_mode(&install, Mode::Local, &cfg, 20).expect("local");
        assert_eq!(done(&after, &token, false, 30), DoneOutcome::Refused);
        let wipe = set_mode(&life(Mode::Local, None), Mode::Wipe, &cfg, 0).expect("wipe");
        let wipe_token = wipe.token.clone().expect("token");
        assert_eq!(
            done(&wipe, &wipe_token, false, 1),
            DoneOutcome::Finished { wiped: true }
        );
    }
}
