//! Configuration: the TOML file as written (`RawConfig`, unknown keys refused) and the
//! validated `Config` the rest of rackboot uses. Every error names the file and the key.

use crate::lifecycle::LifecycleConfig;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: key `{key}`: {problem}")]
    Invalid {
        file: String,
        key: String,
        problem: String,
    },
}

// ---- the file as written ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    dhcp: RawDhcp,
    #[serde(default)]
    http: RawHttp,
    tftp: Option<RawTftp>,
    #[serde(default)]
    lifecycle: RawLifecycle,
    #[serde(default)]
    panel: RawPanel,
    #[serde(default)]
    power: RawPower,
    #[serde(default)]
    images: RawImages,
    #[serde(default)]
    boot: RawBoot,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoot {
    amd64: Option<RawArchBoot>,
    arm64: Option<RawArchBoot>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArchBoot {
    loader: Option<String>,
    shim: Option<PathBuf>,
    grub: Option<PathBuf>,
    uki_stub: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImages {
    mirror: Option<String>,
    #[serde(default)]
    mirrors: std::collections::BTreeMap<String, String>,
    proxy: Option<String>,
    console: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPower {
    poll_interval_secs: Option<u64>,
    concurrency: Option<usize>,
    timeout_secs: Option<u64>,
    retries: Option<u32>,
    ipmitool: Option<PathBuf>,
    wol_broadcast: Option<Ipv4Addr>,
    wol_port: Option<u16>,
    redfish_ca_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLifecycle {
    rescue_image: Option<String>,
    wipe_image: Option<String>,
    token_ttl_secs: Option<i64>,
    #[serde(default)]
    ssh_keys: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPanel {
    listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    upload_max_mib: Option<u64>,
    upload_min_free_mib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDhcp {
    interface: Option<String>,
    ipv6_ra: Option<bool>,
    mode: Option<String>,
    policy: Option<String>,
    match_client_id: Option<bool>,
    event_retention_days: Option<u32>,
    discover_per_second: Option<u32>,
    discovered_max: Option<u32>,
    discovered_expire_days: Option<u32>,
    trust_observed_addresses: Option<bool>,
    #[serde(default)]
    subnets: Vec<RawSubnet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubnet {
    cidr: String,
    pool: String,
    known_pool: Option<String>,
    router: Option<Ipv4Addr>,
    #[serde(default)]
    dns: Vec<Ipv4Addr>,
    domain: Option<String>,
    lease_secs: Option<u32>,
    renew_secs: Option<u32>,
    rebind_secs: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<SocketAddr>,
    url: Option<String>,
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTftp {
    listen: Option<SocketAddr>,
    ipxe_dir: Option<PathBuf>,
    root: Option<PathBuf>,
    bios_file: Option<String>,
    uefi_x64_file: Option<String>,
    uefi_arm64_file: Option<String>,
}

// ---- the validated configuration ----

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `None`: the DHCP server stays off (no interface was named).
    pub dhcp: Option<DhcpConfig>,
    pub http: HttpConfig,
    /// `None`: the TFTP server stays off.
    pub tftp: Option<TftpConfig>,
    /// Where the iPXE binaries are read from (also served over HTTP for UEFI HTTP boot).
    pub ipxe: IpxeFiles,
    pub lifecycle: LifecycleConfig,
    pub panel: PanelConfig,
    pub power: crate::power::PowerConfig,
    pub images: ImagesConfig,
    /// `[boot.amd64]`, `[boot.arm64]`: each architecture's default loader and the
    /// signed shim and grub (and systemd's EFI stub) it is served.
    pub boot: BootLoaders,
}

/// The loaders of one architecture: which one its machines get unless they name
/// one, and the files. The files need not exist until a machine asks for them (a
/// warning at start says which are missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchBoot {
    pub loader: crate::lifecycle::Loader,
    /// Signed shim, served over TFTP as `shimx64.efi` / `shimaa64.efi`.
    pub shim: PathBuf,
    /// Signed network grub, served as `grubx64.efi` / `grubaa64.efi`, the name shim
    /// loads from its own directory.
    pub grub: PathBuf,
    /// systemd's EFI stub, the base of unified kernel images.
    pub uki_stub: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootLoaders {
    pub amd64: ArchBoot,
    pub arm64: ArchBoot,
}

impl BootLoaders {
    pub fn of(&self, arch: crate::lifecycle::Arch) -> &ArchBoot {
        match arch {
            crate::lifecycle::Arch::Amd64 => &self.amd64,
            crate::lifecycle::Arch::Arm64 => &self.arm64,
        }
    }
}

/// Where Debian installs them: `shim-signed`, `grub-efi-amd64-signed` and
/// `systemd-boot-efi` on amd64; for arm64 the pair Debian's arm64 netboot installer
/// ships (`debian-installer-12-netboot-arm64`, an `all` package, so an amd64 host
/// can install it), and there is no arm64 iPXE in Debian, hence grub by default.
impl Default for BootLoaders {
    fn default() -> Self {
        const D_I_ARM64: &str =
            "/usr/lib/debian-installer/images/12/arm64/text/debian-installer/arm64";
        BootLoaders {
            amd64: ArchBoot {
                loader: crate::lifecycle::Loader::Ipxe,
                shim: PathBuf::from("/usr/lib/shim/shimx64.efi.signed"),
                grub: PathBuf::from("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"),
                uki_stub: PathBuf::from("/usr/lib/systemd/boot/efi/linuxx64.efi.stub"),
            },
            arm64: ArchBoot {
                loader: crate::lifecycle::Loader::Grub,
                shim: PathBuf::from(format!("{D_I_ARM64}/bootnetaa64.efi")),
                grub: PathBuf::from(format!("{D_I_ARM64}/grubaa64.efi")),
                uki_stub: PathBuf::from("/usr/lib/systemd/boot/efi/linuxaa64.efi.stub"),
            },
        }
    }
}

/// `[images]`: where the catalog fetches from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagesConfig {
    /// A site mirror holding every family under its name (`{mirror}/debian`).
    pub mirror: Option<String>,
    /// A mirror per family (`debian = "http://mirror.site/debian"`), before `mirror`.
    pub mirrors: std::collections::BTreeMap<String, String>,
    /// An HTTP proxy for fetches; without it, the environment's `HTTP_PROXY` and
    /// `HTTPS_PROXY` apply.
    pub proxy: Option<String>,
    /// The machines' serial console (`ttyS0,115200`), for installers' command lines
    /// and the installed systems' boot loaders; none: the screen only.
    pub console: Option<String>,
}

impl ImagesConfig {
    /// The mirror base a family is fetched from, when the site names one.
    pub fn mirror_for(&self, family: &str) -> Option<String> {
        self.mirrors
            .get(family)
            .map(|m| m.trim_end_matches('/').to_string())
            .or_else(|| {
                self.mirror
                    .as_ref()
                    .map(|m| format!("{}/{family}", m.trim_end_matches('/')))
            })
    }
}

/// Where the admin panel and API listen: with the boot files by default, or on an
/// address of their own (a management network), optionally with TLS.
#[derive(Debug, Clone, Default)]
pub struct PanelConfig {
    pub listen: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
    pub uploads: UploadLimits,
}

/// The limits of the panel's image upload, the one large request body rackboot takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadLimits {
    /// The most one upload (kernel, initrd and install files together) may be.
    pub max_bytes: u64,
    /// An upload is refused, or cut off, rather than leave less than this free on
    /// the data directory's filesystem (the database lives there too).
    pub min_free_bytes: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            max_bytes: 16 << 30,
            min_free_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What unknown PXE clients may add to the inventory as discovered machines: a
/// flood of made-up MACs must not grow the database, the event log or the log file
/// without bound (Kea and dnsmasq store nothing for a DISCOVER).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryLimits {
    /// New discovered machines per second, at most.
    pub per_second: u32,
    /// Discovered (not adopted) machines in all, at most.
    pub max: u32,
    /// Discovered machines unseen this long are deleted; 0 keeps them.
    pub expire_days: u32,
}

impl Default for DiscoveryLimits {
    fn default() -> Self {
        DiscoveryLimits {
            per_second: 20,
            max: 10_000,
            expire_days: 30,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DhcpConfig {
    pub interface: String,
    /// Answer iPXE's IPv6 router solicitations (router lifetime 0, no prefix) so it
    /// stops waiting for a router the network does not have.
    pub ipv6_ra: bool,
    pub mode: DhcpMode,
    pub policy: AnswerPolicy,
    /// Leases keyed by option 61 (RFC 2131) instead of the hardware address. Off by
    /// default: firmware PXE, iPXE and the installed OS of one machine send different
    /// client identifiers and would otherwise hold three addresses.
    pub match_client_id: bool,
    /// DHCP events older than this are deleted; 0 keeps them forever.
    pub event_retention_days: u32,
    /// How unknown PXE clients may grow the inventory (`policy = "all"`).
    pub discovery: DiscoveryLimits,
    /// Proxy mode: an address only observed in a PXE packet may fetch the machine's
    /// secrets without a neighbour entry confirming it. Spoofable; off by default.
    pub trust_observed_addresses: bool,
    /// Empty in proxy mode: a proxy hands out no addresses.
    pub subnets: Vec<Subnet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMode {
    /// rackboot is the network's DHCP server: addresses and boot information.
    Full,
    /// Another server hands out addresses; rackboot answers PXE clients with boot
    /// information only (proxyDHCP, on ports 67 and 4011).
    Proxy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerPolicy {
    /// Every client gets an answer; unknown PXE clients are added as `discovered`.
    All,
    /// Only machines in the inventory get an answer (the datacenter choice).
    KnownOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
    pub pool_start: Ipv4Addr,
    pub pool_end: Ipv4Addr,
    /// Addresses only inventory machines get (not unknown or merely discovered
    /// clients), so a flood of new MACs cannot leave them without one.
    pub known_pool: Option<(Ipv4Addr, Ipv4Addr)>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// Option 15: the domain name installers take for the machine's FQDN.
    pub domain: Option<String>,
    pub lease_secs: u32,
    /// T1 (option 58): when the client starts renewing with this server.
    pub renew_secs: u32,
    /// T2 (option 59): when the client starts rebinding with any server.
    pub rebind_secs: u32,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Base URL machines use to reach rackboot; `None` until it can be derived from
    /// the DHCP interface's address at start.
    pub url: Option<String>,
    /// Timeouts and the connection cap of each HTTP listener, the panel's included.
    pub connections: ConnectionLimits,
}

/// What one HTTP listener holds open, so idle or dribbling clients cannot use up the
/// process's file descriptors (TFTP shares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// A request's headers (and a TLS handshake) must arrive within this.
    pub header_read_timeout: std::time::Duration,
    /// A connection on which no byte moved either way for this long is closed; a
    /// slow download that keeps moving is never cut.
    pub idle_timeout: std::time::Duration,
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(60),
            // Above the 1,000 concurrent boot-file downloads tested, with room for
            // the panel and retries.
            max_connections: 4096,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TftpConfig {
    pub listen: SocketAddr,
    /// Other files served over TFTP besides the iPXE binaries; `root/<mac>/` is
    /// tried first for each machine.
    pub root: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct IpxeFiles {
    pub dir: PathBuf,
    pub bios: String,
    pub uefi_x64: String,
    pub uefi_arm64: String,
}

pub const DEFAULT_LEASE_SECS: u32 = 3600;
pub const DEFAULT_EVENT_RETENTION_DAYS: u32 = 30;
pub const DEFAULT_DATA_DIR: &str = "./rackboot-data";

impl Subnet {
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_mask(self.prefix_len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & prefix_mask(self.prefix_len) == u32::from(self.network)
    }

    pub fn in_pool(&self, ip: Ipv4Addr) -> bool {
        (self.pool_start..=self.pool_end).contains(&ip)
    }

    /// Every range this subnet hands out from: the shared pool, then the known one.
    pub fn pools(&self) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        std::iter::once((self.pool_start, self.pool_end))
            .chain(self.known_pool)
            .collect()
    }

    pub fn in_known_pool(&self, ip: Ipv4Addr) -> bool {
        self.known_pool
            .is_some_and(|(start, end)| (start..=end).contains(&ip))
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !prefix_mask(self.prefix_len))
    }
}

fn prefix_mask(prefix_len: u8) -> u32 {
    match prefix_len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

impl Config {
    /// The embedded default: data in `./rackboot-data`, HTTP on localhost, DHCP and TFTP off.
    pub fn embedded_default() -> Self {
        Self::from_raw(RawConfig::default(), "<default>").unwrap_or_else(|_| unreachable!())
    }

    /// Loads `path`. A missing file is not an error only when `missing_ok` (the default
    /// `./rackboot.toml` that a newcomer has not written yet).
    pub fn load(path: &Path, missing_ok: bool) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &file),
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Self::embedded_default())
            }
            Err(source) => Err(ConfigError::Read { file, source }),
        }
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        Self::from_raw(raw, file)
    }

    fn from_raw(raw: RawConfig, file: &str) -> Result<Self, ConfigError> {
        let invalid = |key: &str, problem: String| ConfigError::Invalid {
            file: file.to_string(),
            key: key.to_string(),
            problem,
        };

        let dhcp = match raw.dhcp.interface {
            None => {
                let other_keys = raw.dhcp.mode.is_some()
                    || raw.dhcp.policy.is_some()
                    || raw.dhcp.match_client_id.is_some()
                    || raw.dhcp.event_retention_days.is_some()
                    || raw.dhcp.discover_per_second.is_some()
                    || raw.dhcp.discovered_max.is_some()
                    || raw.dhcp.discovered_expire_days.is_some()
                    || raw.dhcp.trust_observed_addresses.is_some();
                if !raw.dhcp.subnets.is_empty() || other_keys {
                    return Err(invalid(
                        "dhcp.interface",
                        "[dhcp] settings are given but no interface is named; \
                         rackboot never answers DHCP on an interface nobody named"
                            .into(),
                    ));
                }
                None
            }
            Some(interface) => {
                if interface.is_empty() || interface.len() > 15 {
                    return Err(invalid(
                        "dhcp.interface",
                        format!("{interface:?} is not a valid interface name"),
                    ));
                }
                let mode = match raw.dhcp.mode.as_deref() {
                    None | Some("full") => DhcpMode::Full,
                    Some("proxy") => DhcpMode::Proxy,
                    Some(other) => {
                        return Err(invalid(
                            "dhcp.mode",
                            format!("{other:?} is neither \"full\" nor \"proxy\""),
                        ));
                    }
                };
                let policy = match raw.dhcp.policy.as_deref() {
                    None | Some("all") => AnswerPolicy::All,
                    Some("known_only") => AnswerPolicy::KnownOnly,
                    Some(other) => {
                        return Err(invalid(
                            "dhcp.policy",
                            format!("{other:?} is neither \"all\" nor \"known_only\""),
                        ));
                    }
                };
                match mode {
                    DhcpMode::Full if raw.dhcp.subnets.is_empty() => {
                        return Err(invalid(
                            "dhcp.subnets",
                            "at least one [[dhcp.subnets]] is needed to serve DHCP".into(),
                        ));
                    }
                    DhcpMode::Proxy if !raw.dhcp.subnets.is_empty() => {
                        return Err(invalid(
                            "dhcp.subnets",
                            "mode = \"proxy\" hands out no addresses: remove the subnets \
                             (the network's own DHCP server owns them)"
                                .into(),
                        ));
                    }
                    _ => {}
                }
                let trust_observed_addresses = raw.dhcp.trust_observed_addresses.unwrap_or(false);
                if trust_observed_addresses && mode == DhcpMode::Full {
                    return Err(invalid(
                        "dhcp.trust_observed_addresses",
                        "applies to mode = \"proxy\" only: in full mode rackboot leases the \
                         addresses itself and observes none"
                            .into(),
                    ));
                }
                let mut subnets = Vec::new();
                for (i, s) in raw.dhcp.subnets.into_iter().enumerate() {
                    let key = |name: &str| format!("dhcp.subnets[{i}].{name}");
                    let (network, prefix_len) =
                        parse_cidr(&s.cidr).map_err(|p| invalid(&key("cidr"), p))?;
                    let (pool_start, pool_end) =
                        parse_range(&s.pool).map_err(|p| invalid(&key("pool"), p))?;
                    let known_pool = s
                        .known_pool
                        .as_deref()
                        .map(parse_range)
                        .transpose()
                        .map_err(|p| invalid(&key("known_pool"), p))?;
                    let lease_secs = s.lease_secs.unwrap_or(DEFAULT_LEASE_SECS);
                    let subnet = Subnet {
                        network,
                        prefix_len,
                        pool_start,
                        pool_end,
                        known_pool,
                        router: s.router,
                        dns: s.dns,
                        domain: s.domain.clone(),
                        lease_secs,
                        // RFC 2131 §4.4.5 defaults: half the lease, and seven eighths.
                        renew_secs: s.renew_secs.unwrap_or(lease_secs / 2),
                        rebind_secs: s
                            .rebind_secs
                            .unwrap_or((u64::from(lease_secs) * 7 / 8) as u32),
                    };
                    if !subnet.contains(pool_start) || !subnet.contains(pool_end) {
                        return Err(invalid(
                            &key("pool"),
                            format!("{} is not inside {}", s.pool, s.cidr),
                        ));
                    }
                    if let Some((start, end)) = known_pool {
                        if !subnet.contains(start) || !subnet.contains(end) {
                            return Err(invalid(
                                &key("known_pool"),
                                format!("{start}-{end} is not inside {}", s.cidr),
                            ));
                        }
                        if start <= pool_end && pool_start <= end {
                            return Err(invalid(
                                &key("known_pool"),
                                format!("{start}-{end} overlaps pool {}", s.pool),
                            ));
                        }
                    }
                    if let Some(domain) = &subnet.domain
                        && !crate::validate::valid_hostname(domain)
                    {
                        return Err(invalid(
                            &key("domain"),
                            format!(
                                "{domain:?} is not a domain name (letters, digits, '-' and dots)"
                            ),
                        ));
                    }
                    if let Some(router) = subnet.router
                        && !subnet.contains(router)
                    {
                        return Err(invalid(
                            &key("router"),
                            format!("{router} is not inside {}", s.cidr),
                        ));
                    }
                    if subnet.lease_secs < 60 {
                        return Err(invalid(
                            &key("lease_secs"),
                            "must be at least 60 seconds".into(),
                        ));
                    }
                    if subnet.renew_secs == 0 || subnet.renew_secs >= subnet.rebind_secs {
                        return Err(invalid(
                            &key("renew_secs"),
                            format!(
                                "T1 {} must be above 0 and below T2 (rebind_secs) {}",
                                subnet.renew_secs, subnet.rebind_secs
                            ),
                        ));
                    }
                    if subnet.rebind_secs >= subnet.lease_secs {
                        return Err(invalid(
                            &key("rebind_secs"),
                            format!(
                                "T2 {} must be below lease_secs {}",
                                subnet.rebind_secs, subnet.lease_secs
                            ),
                        ));
                    }
                    if let Some(other) = subnets
                        .iter()
                        .position(|o: &Subnet| o.contains(network) || subnet.contains(o.network))
                    {
                        return Err(invalid(
                            &key("cidr"),
                            format!("overlaps dhcp.subnets[{other}]"),
                        ));
                    }
                    subnets.push(subnet);
                }
                Some(DhcpConfig {
                    interface,
                    ipv6_ra: raw.dhcp.ipv6_ra.unwrap_or(true),
                    mode,
                    policy,
                    match_client_id: raw.dhcp.match_client_id.unwrap_or(false),
                    event_retention_days: raw
                        .dhcp
                        .event_retention_days
                        .unwrap_or(DEFAULT_EVENT_RETENTION_DAYS),
                    discovery: {
                        let defaults = DiscoveryLimits::default();
                        let positive =
                            |key: &'static str, value: Option<u32>, default: u32| match value {
                                Some(0) => Err(invalid(key, "must be at least 1".into())),
                                Some(n) => Ok(n),
                                None => Ok(default),
                            };
                        DiscoveryLimits {
                            per_second: positive(
                                "dhcp.discover_per_second",
                                raw.dhcp.discover_per_second,
                                defaults.per_second,
                            )?,
                            max: positive(
                                "dhcp.discovered_max",
                                raw.dhcp.discovered_max,
                                defaults.max,
                            )?,
                            expire_days: raw
                                .dhcp
                                .discovered_expire_days
                                .unwrap_or(defaults.expire_days),
                        }
                    },
                    trust_observed_addresses,
                    subnets,
                })
            }
        };

        let listen = raw
            .http
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let url = match raw.http.url {
            Some(url) => {
                let trimmed = url.trim_end_matches('/').to_string();
                if !trimmed.starts_with("http://") && !trimmed.starts_with("https://") {
                    return Err(invalid(
                        "http.url",
                        format!("{url:?} must start with http:// or https://"),
                    ));
                }
                Some(trimmed)
            }
            None if dhcp.is_none() => Some(format!("http://{listen}")),
            // Derived from the DHCP interface's address when the server starts.
            None => None,
        };

        let connections = {
            let defaults = ConnectionLimits::default();
            let secs =
                |value: Option<u64>, key: &str, default: std::time::Duration, max: u64| match value
                {
                    None => Ok(default),
                    Some(n) if (1..=max).contains(&n) => Ok(std::time::Duration::from_secs(n)),
                    Some(_) => Err(invalid(key, format!("must be between 1 and {max} seconds"))),
                };
            let max_connections = raw.http.max_connections.unwrap_or(defaults.max_connections);
            if !(1..=1_000_000).contains(&max_connections) {
                return Err(invalid(
                    "http.max_connections",
                    "must be between 1 and 1000000".into(),
                ));
            }
            ConnectionLimits {
                header_read_timeout: secs(
                    raw.http.header_read_timeout_secs,
                    "http.header_read_timeout_secs",
                    defaults.header_read_timeout,
                    300,
                )?,
                idle_timeout: secs(
                    raw.http.idle_timeout_secs,
                    "http.idle_timeout_secs",
                    defaults.idle_timeout,
                    3600,
                )?,
                max_connections,
            }
        };

        let raw_tftp = raw.tftp.as_ref();
        // TFTP runs when configured, or when DHCP runs (firmware PXE needs it).
        let tftp = match (raw_tftp, &dhcp) {
            (None, None) => None,
            (t, _) => Some(TftpConfig {
                listen: t
                    .and_then(|t| t.listen)
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 69))),
                root: t.and_then(|t| t.root.clone()),
            }),
        };
        let file_key = |value: Option<&String>, key: &str, default: &str| {
            let name = value.cloned().unwrap_or_else(|| default.to_string());
            if name.is_empty() || name.starts_with('/') || name.split('/').any(|c| c == "..") {
                return Err(invalid(
                    key,
                    format!("{name:?} must be a relative path inside tftp.ipxe_dir"),
                ));
            }
            Ok(name)
        };
        let ipxe = IpxeFiles {
            dir: raw_tftp
                .and_then(|t| t.ipxe_dir.clone())
                .unwrap_or_else(|| PathBuf::from("/usr/lib/ipxe")),
            bios: file_key(
                raw_tftp.and_then(|t| t.bios_file.as_ref()),
                "tftp.bios_file",
                "undionly.kpxe",
            )?,
            uefi_x64: file_key(
                raw_tftp.and_then(|t| t.uefi_x64_file.as_ref()),
                "tftp.uefi_x64_file",
                "snponly.efi",
            )?,
            uefi_arm64: file_key(
                raw_tftp.and_then(|t| t.uefi_arm64_file.as_ref()),
                "tftp.uefi_arm64_file",
                "arm64-efi/snponly.efi",
            )?,
        };

        let lifecycle = {
            let l = &raw.lifecycle;
            for (key, value) in [
                ("lifecycle.rescue_image", &l.rescue_image),
                ("lifecycle.wipe_image", &l.wipe_image),
            ] {
                if let Some(name) = value
                    && !crate::validate::valid_image_name(name)
                {
                    return Err(invalid(key, format!("{name:?} is not a valid image name")));
                }
            }
            let ttl = l.token_ttl_secs.unwrap_or(24 * 3600);
            if !(60..=30 * 24 * 3600).contains(&ttl) {
                return Err(invalid(
                    "lifecycle.token_ttl_secs",
                    "must be between 60 seconds and 30 days".into(),
                ));
            }
            if let Some(bad) = l
                .ssh_keys
                .iter()
                .find(|k| k.trim().is_empty() || k.contains('\n'))
            {
                return Err(invalid(
                    "lifecycle.ssh_keys",
                    format!("{bad:?} is not a one-line public key"),
                ));
            }
            LifecycleConfig {
                rescue_image: l.rescue_image.clone(),
                wipe_image: l.wipe_image.clone(),
                token_ttl_secs: ttl,
                default_ssh_keys: l.ssh_keys.clone(),
            }
        };
        let defaults = UploadLimits::default();
        let mib = |key: &'static str, value: Option<u64>, default: u64| match value {
            None => Ok(default),
            Some(0) => Err(invalid(key, "must be at least 1 (MiB)".into())),
            Some(n) => n
                .checked_mul(1 << 20)
                .ok_or_else(|| invalid(key, format!("{n} MiB is too large"))),
        };
        let uploads = UploadLimits {
            max_bytes: mib(
                "panel.upload_max_mib",
                raw.panel.upload_max_mib,
                defaults.max_bytes,
            )?,
            min_free_bytes: mib(
                "panel.upload_min_free_mib",
                raw.panel.upload_min_free_mib,
                defaults.min_free_bytes,
            )?,
        };
        let panel = match (&raw.panel.tls_cert, &raw.panel.tls_key) {
            (Some(cert), Some(key)) => {
                if raw.panel.listen.is_none() {
                    return Err(invalid(
                        "panel.listen",
                        "TLS needs the panel on its own address; set panel.listen".into(),
                    ));
                }
                PanelConfig {
                    listen: raw.panel.listen,
                    tls: Some(TlsFiles {
                        cert: cert.clone(),
                        key: key.clone(),
                    }),
                    uploads,
                }
            }
            (None, None) => PanelConfig {
                listen: raw.panel.listen,
                tls: None,
                uploads,
            },
            (Some(_), None) => {
                return Err(invalid(
                    "panel.tls_key",
                    "tls_cert is set without tls_key".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "panel.tls_cert",
                    "tls_key is set without tls_cert".into(),
                ));
            }
        };

        let power = {
            let p = &raw.power;
            let defaults = crate::power::PowerConfig::default();
            let poll = p.poll_interval_secs.unwrap_or(60);
            if poll != 0 && poll < 5 {
                return Err(invalid(
                    "power.poll_interval_secs",
                    "must be 0 (off) or at least 5 seconds".into(),
                ));
            }
            let concurrency = p.concurrency.unwrap_or(defaults.concurrency);
            if !(1..=256).contains(&concurrency) {
                return Err(invalid(
                    "power.concurrency",
                    "must be between 1 and 256".into(),
                ));
            }
            let timeout = p.timeout_secs.unwrap_or(15);
            if !(1..=300).contains(&timeout) {
                return Err(invalid(
                    "power.timeout_secs",
                    "must be between 1 and 300 seconds".into(),
                ));
            }
            let retries = p.retries.unwrap_or(defaults.retries);
            if retries > 10 {
                return Err(invalid("power.retries", "must be at most 10".into()));
            }
            // Read and checked now, so a wrong path or a file without a certificate
            // stops the start with the key named, not the first Redfish call.
            let redfish_ca_pem = match &p.redfish_ca_file {
                None => None,
                Some(path) => {
                    let pem = std::fs::read(path).map_err(|e| {
                        invalid(
                            "power.redfish_ca_file",
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    crate::power::redfish::parse_ca_bundle(&pem).map_err(|why| {
                        invalid(
                            "power.redfish_ca_file",
                            format!("{}: {why}", path.display()),
                        )
                    })?;
                    Some(pem)
                }
            };
            crate::power::PowerConfig {
                redfish_ca_pem,
                poll_interval: (poll > 0).then(|| std::time::Duration::from_secs(poll)),
                concurrency,
                timeout: std::time::Duration::from_secs(timeout),
                retries,
                ipmitool: p.ipmitool.clone().unwrap_or(defaults.ipmitool),
                wol_broadcast: p.wol_broadcast.unwrap_or(defaults.wol_broadcast),
                wol_port: p.wol_port.unwrap_or(defaults.wol_port),
                // Magic packets go out where the machines boot.
                wol_interface: dhcp.as_ref().map(|d| d.interface.clone()),
            }
        };

        let images = {
            let r = &raw.images;
            let url_key = |key: String, value: &String| {
                if value.starts_with("http://") || value.starts_with("https://") {
                    Ok(())
                } else {
                    Err(invalid(
                        &key,
                        format!("{value:?} must be an http:// or https:// URL"),
                    ))
                }
            };
            if let Some(m) = &r.mirror {
                url_key("images.mirror".into(), m)?;
            }
            for (family, m) in &r.mirrors {
                url_key(format!("images.mirrors.{family}"), m)?;
            }
            if let Some(p) = &r.proxy {
                url_key("images.proxy".into(), p)?;
            }
            if let Some(console) = &r.console
                && (console.is_empty()
                    || console.len() > 64
                    || !console
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b',' | b'.' | b'_')))
            {
                return Err(invalid(
                    "images.console",
                    format!("{console:?} is not a console such as \"ttyS0,115200n8\""),
                ));
            }
            ImagesConfig {
                mirror: r.mirror.clone(),
                mirrors: r.mirrors.clone(),
                proxy: r.proxy.clone(),
                console: r.console.clone(),
            }
        };

        let boot = {
            let defaults = BootLoaders::default();
            let arch = |raw: Option<&RawArchBoot>, default: ArchBoot, key: &str| {
                let Some(raw) = raw else {
                    return Ok(default);
                };
                let loader = match &raw.loader {
                    Some(text) => text.parse().map_err(|e: crate::lifecycle::ParseError| {
                        invalid(&format!("boot.{key}.loader"), e.to_string())
                    })?,
                    None => default.loader,
                };
                Ok::<_, ConfigError>(ArchBoot {
                    loader,
                    shim: raw.shim.clone().unwrap_or(default.shim),
                    grub: raw.grub.clone().unwrap_or(default.grub),
                    uki_stub: raw.uki_stub.clone().unwrap_or(default.uki_stub),
                })
            };
            BootLoaders {
                amd64: arch(raw.boot.amd64.as_ref(), defaults.amd64, "amd64")?,
                arm64: arch(raw.boot.arm64.as_ref(), defaults.arm64, "arm64")?,
            }
        };
        Ok(Config {
            boot,
            images,
            power,
            lifecycle,
            panel,
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            dhcp,
            http: HttpConfig {
                listen,
                url,
                connections,
            },
            tftp,
            ipxe,
        })
    }
}

fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("{text:?} is not an IPv4 CIDR such as \"192.0.2.0/24\"");
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.trim().parse().map_err(|_| bad())?;
    let len: u8 = len.trim().parse().map_err(|_| bad())?;
    if !(8..=30).contains(&len) {
        return Err(format!("prefix length /{len} is outside /8 to /30"));
    }
    if u32::from(addr) & !prefix_mask(len) != 0 {
        return Err(format!("{addr} has host bits set for /{len}"));
    }
    Ok((addr, len))
}

fn parse_range(text: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let bad = || format!("{text:?} is not a range such as \"192.0.2.100-192.0.2.200\"");
    let (start, end) = text.split_once('-').ok_or_else(bad)?;
    let start: Ipv4Addr = start.trim().parse().map_err(|_| bad())?;
    let end: Ipv4Addr = end.trim().parse().map_err(|_| bad())?;
    if start > end {
        return Err(format!("{start} comes after {end}"));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL_DHCP: &str = r#"
        data_dir = "/tmp/rb"
        [dhcp]
        interface = "br0"
        [[dhcp.subnets]]
        cidr = "192.0.2.0/24"
        pool = "192.0.2.100-192.0.2.200"
    "#;

    fn error_text(text: &str) -> String {
        Config::parse(text, "test.toml")
            .expect_err("config should be refused")
            .to_string()
    }

    #[test]
    fn discovery_limits_have_defaults_and_refuse_zero() {
        let dhcp = Config::parse(MINIMAL_DHCP, "test.toml")
            .expect("valid")
            .dhcp
            .expect("dhcp");
        assert_eq!(dhcp.discovery, DiscoveryLimits::default());
        let set = MINIMAL_DHCP.replace(
            "[dhcp]",
            "[dhcp]\ndiscover_per_second = 5\ndiscovered_max = 100\ndiscovered_expire_days = 0",
        );
        let dhcp = Config::parse(&set, "test.toml")
            .expect("valid")
            .dhcp
            .expect("dhcp");
        assert_eq!(
            dhcp.discovery,
            DiscoveryLimits {
                per_second: 5,
                max: 100,
                expire_days: 0
            }
        );
        let zero = MINIMAL_DHCP.replace("[dhcp]", "[dhcp]\ndiscovered_max = 0");
        assert!(error_text(&zero).contains("`dhcp.discovered_max`"));
    }

    #[test]
    fn upload_limits_are_read_in_mib() {
        let config = Config::parse(
            "[panel]\nupload_max_mib = 512\nupload_min_free_mib = 2048\n",
            "test.toml",
        )
        .expect("valid");
        assert_eq!(config.panel.uploads.max_bytes, 512 << 20);
        assert_eq!(config.panel.uploads.min_free_bytes, 2048 << 20);
        let defaults = Config::parse("", "test.toml").expect("valid").panel.uploads;
        assert_eq!(defaults, UploadLimits::default());
    }

    #[test]
    fn connection_limits_are_read_from_http() {
        let config = Config::parse(
            "[http]\nheader_read_timeout_secs = 3\nidle_timeout_secs = 90\nmax_connections = 50\n",
            "test.toml",
        )
        .expect("valid");
        let limits = config.http.connections;
        assert_eq!(
            limits.header_read_timeout,
            std::time::Duration::from_secs(3)
        );
        assert_eq!(limits.idle_timeout, std::time::Duration::from_secs(90));
        assert_eq!(limits.max_connections, 50);
        let defaults = Config::parse("", "test.toml")
            .expect("valid")
            .http
            .connections;
        assert_eq!(defaults, ConnectionLimits::default());
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../rackboot.example.toml");
        let config = Config::parse(text, "rackboot.example.toml").expect("example parses");
        let dhcp = config.dhcp.expect("example serves DHCP");
        assert_eq!(dhcp.interface, "br0");
        assert_eq!(dhcp.mode, DhcpMode::Full);
        assert_eq!(dhcp.policy, AnswerPolicy::All);
        assert!(!dhcp.match_client_id);
        assert_eq!(dhcp.event_retention_days, 30);
        assert_eq!(
            (dhcp.subnets[0].renew_secs, dhcp.subnets[0].rebind_secs),
            (1800, 3150)
        );
        assert_eq!(dhcp.subnets[0].lease_secs, 3600);
        assert_eq!(dhcp.subnets[0].router, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(config.http.url.as_deref(), Some("http://192.0.2.1:8080"));
        assert_eq!(config.ipxe.dir, PathBuf::from("/usr/lib/ipxe"));
        assert!(config.tftp.is_some());
    }

    #[test]
    fn embedded_default_serves_only_http_on_localhost() {
        let config = Config::embedded_default();
        assert!(config.dhcp.is_none());
        assert!(config.tftp.is_none());
        assert_eq!(config.http.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn missing_file_is_fine_only_when_allowed() {
        let path = Path::new("/nonexistent/rackboot.toml");
        assert!(Config::load(path, true).is_ok());
        let err = Config::load(path, false)
            .expect_err("must fail")
            .to_string();
        assert!(err.contains("/nonexistent/rackboot.toml"), "{err}");
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = error_text("[dhcp]\ninterfaec = \"br0\"\n");
        assert!(err.contains("test.toml"), "{err}");
        assert!(err.contains("interfaec"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                MINIMAL_DHCP.replace("192.0.2.0/24", "192.0.2.0/33"),
                "dhcp.subnets[0].cidr",
            ),
            (
                MINIMAL_DHCP.replace("192.0.2.0/24", "192.0.2.7/24"),
                "dhcp.subnets[0].cidr",
            ),
            (
                MINIMAL_DHCP.replace("192.0.2.200", "198.18.0.1"),
                "dhcp.subnets[0].pool",
            ),
            (
                MINIMAL_DHCP.replace("192.0.2.100-", "192.0.2.250-"),
                "dhcp.subnets[0].pool",
            ),
            (
                format!("{MINIMAL_DHCP}router = \"198.18.0.1\"\n"),
                "dhcp.subnets[0].router",
            ),
            (
                format!("{MINIMAL_DHCP}known_pool = \"192.0.2.150-192.0.2.250\"\n"),
                "dhcp.subnets[0].known_pool",
            ),
            (
                format!("{MINIMAL_DHCP}known_pool = \"198.18.0.1-198.18.0.9\"\n"),
                "dhcp.subnets[0].known_pool",
            ),
            (
                format!("{MINIMAL_DHCP}known_pool = \"192.0.2.60\"\n"),
                "dhcp.subnets[0].known_pool",
            ),
            (
                format!("{MINIMAL_DHCP}lease_secs = 5\n"),
                "dhcp.subnets[0].lease_secs",
            ),
            (
                format!(
                    "{MINIMAL_DHCP}[[dhcp.subnets]]\ncidr = \"192.0.2.128/25\"\npool = \"192.0.2.130-192.0.2.140\"\n"
                ),
                "dhcp.subnets[1].cidr",
            ),
            ("[http]\nurl = \"ftp://x\"\n".to_string(), "http.url"),
            (
                "[http]\nheader_read_timeout_secs = 0\n".to_string(),
                "http.header_read_timeout_secs",
            ),
            (
                "[http]\nidle_timeout_secs = 7200\n".to_string(),
                "http.idle_timeout_secs",
            ),
            (
                "[http]\nmax_connections = 0\n".to_string(),
                "http.max_connections",
            ),
            (
                "[tftp]\nbios_file = \"../etc/passwd\"\n".to_string(),
                "tftp.bios_file",
            ),
            (
                "[[dhcp.subnets]]\ncidr = \"192.0.2.0/24\"\npool = \"192.0.2.1-192.0.2.2\"\n"
                    .to_string(),
                "dhcp.interface",
            ),
            ("[dhcp]\ninterface = \"br0\"\n".to_string(), "dhcp.subnets"),
            (
                MINIMAL_DHCP.replace("[dhcp]", "[dhcp]\nmode = \"relay\""),
                "dhcp.mode",
            ),
            (
                MINIMAL_DHCP.replace("[dhcp]", "[dhcp]\npolicy = \"some\""),
                "dhcp.policy",
            ),
            (
                MINIMAL_DHCP.replace("[dhcp]", "[dhcp]\nmode = \"proxy\""),
                "dhcp.subnets",
            ),
            (
                "[dhcp]\npolicy = \"known_only\"\n".to_string(),
                "dhcp.interface",
            ),
            (
                MINIMAL_DHCP.replace("[dhcp]", "[dhcp]\ntrust_observed_addresses = true"),
                "dhcp.trust_observed_addresses",
            ),
            (
                "[dhcp]\ntrust_observed_addresses = true\n".to_string(),
                "dhcp.interface",
            ),
            (
                format!("{MINIMAL_DHCP}renew_secs = 4000\n"),
                "dhcp.subnets[0].renew_secs",
            ),
            (
                format!("{MINIMAL_DHCP}rebind_secs = 3600\n"),
                "dhcp.subnets[0].rebind_secs",
            ),
        ];
        for (text, key) in cases {
            let err = error_text(&text);
            assert!(
                err.contains(&format!("`{key}`")),
                "expected {key} in: {err}"
            );
            assert!(err.starts_with("test.toml:"), "{err}");
        }
    }

    #[test]
    fn lifecycle_and_panel_sections() {
        let config = Config::parse(
            "[lifecycle]\nrescue_image = \"rescue\"\ntoken_ttl_secs = 600\nssh_keys = [\"ssh-ed25519 AAAA ops\"]\n\
             [panel]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
            "t",
        )
        .expect("valid");
        assert_eq!(config.lifecycle.rescue_image.as_deref(), Some("rescue"));
        assert_eq!(config.lifecycle.token_ttl_secs, 600);
        assert!(config.panel.tls.is_some());
        for (text, key) in [
            (
                "[lifecycle]\ntoken_ttl_secs = 1\n",
                "lifecycle.token_ttl_secs",
            ),
            (
                "[lifecycle]\nwipe_image = \"../x\"\n",
                "lifecycle.wipe_image",
            ),
            ("[panel]\ntls_cert = \"c.pem\"\n", "panel.tls_key"),
            ("[panel]\nupload_max_mib = 0\n", "panel.upload_max_mib"),
            (
                "[panel]\nupload_min_free_mib = 18446744073709551615\n",
                "panel.upload_min_free_mib",
            ),
            (
                "[panel]\ntls_cert = \"c\"\ntls_key = \"k\"\n",
                "panel.listen",
            ),
        ] {
            let err = error_text(text);
            assert!(
                err.contains(&format!("`{key}`")),
                "expected {key} in: {err}"
            );
        }
    }

    #[test]
    fn power_section() {
        let config = Config::parse(
            "[power]\npoll_interval_secs = 0\nconcurrency = 4\ntimeout_secs = 5\nretries = 1\nwol_broadcast = \"192.0.2.255\"\n",
            "t",
        )
        .expect("valid");
        assert_eq!(config.power.poll_interval, None);
        assert_eq!(config.power.concurrency, 4);
        assert_eq!(config.power.timeout, std::time::Duration::from_secs(5));
        assert_eq!(config.power.wol_broadcast, Ipv4Addr::new(192, 0, 2, 255));
        let dhcp = Config::parse(MINIMAL_DHCP, "t").expect("valid");
        assert_eq!(dhcp.power.wol_interface.as_deref(), Some("br0"));
        for (text, key) in [
            (
                "[power]\npoll_interval_secs = 1\n",
                "power.poll_interval_secs",
            ),
            ("[power]\nconcurrency = 0\n", "power.concurrency"),
            ("[power]\ntimeout_secs = 0\n", "power.timeout_secs"),
            ("[power]\nretries = 99\n", "power.retries"),
        ] {
            let err = error_text(text);
            assert!(
                err.contains(&format!("`{key}`")),
                "expected {key} in: {err}"
            );
        }
        assert!(error_text("[power]\npassword = \"x\"\n").contains("password"));
    }

    #[test]
    fn redfish_ca_file_is_read_and_checked_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, include_bytes!("power/testdata/ca.pem")).expect("ca");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("junk");
        let key =
            |path: &std::path::Path| format!("[power]\nredfish_ca_file = \"{}\"\n", path.display());
        let config = Config::parse(&key(&ca), "t").expect("valid");
        assert_eq!(
            config.power.redfish_ca_pem.as_deref(),
            Some(&include_bytes!("power/testdata/ca.pem")[..])
        );
        for (path, why) in [
            (dir.path().join("missing.pem"), "cannot read"),
            (junk, "no PEM certificate"),
        ] {
            let err = error_text(&key(&path));
            assert!(err.contains("`power.redfish_ca_file`"), "{err}");
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn wrong_type_is_reported_with_position() {
        let err = error_text("[http]\nlisten = 8080\n");
        assert!(err.contains("listen"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn tftp_root_is_optional() {
        let config = Config::parse("[tftp]\nroot = \"/srv/tftp\"\n", "t").expect("valid");
        let tftp = config.tftp.expect("tftp on");
        assert_eq!(tftp.root, Some(PathBuf::from("/srv/tftp")));
        let config = Config::parse("[tftp]\n", "t").expect("valid");
        assert_eq!(config.tftp.expect("tftp on").root, None);
    }

    #[test]
    fn subnet_arithmetic() {
        let config = Config::parse(MINIMAL_DHCP, "t").expect("valid");
        let subnet = &config.dhcp.expect("dhcp").subnets[0];
        assert_eq!(subnet.mask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(subnet.broadcast(), Ipv4Addr::new(192, 0, 2, 255));
        assert!(subnet.contains(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(!subnet.contains(Ipv4Addr::new(192, 0, 3, 1)));
        assert!(subnet.in_pool(Ipv4Addr::new(192, 0, 2, 200)));
        assert!(
            !subnet.in_known_pool(Ipv4Addr::new(192, 0, 2, 60)),
            "none configured"
        );
        let with_known = Config::parse(
            &format!("{MINIMAL_DHCP}known_pool = \"192.0.2.50-192.0.2.99\"\n"),
            "t",
        )
        .expect("valid");
        let known = &with_known.dhcp.as_ref().expect("dhcp").subnets[0];
        assert!(known.in_known_pool(Ipv4Addr::new(192, 0, 2, 60)));
        assert_eq!(known.pools().len(), 2);
        assert!(!subnet.in_pool(Ipv4Addr::new(192, 0, 2, 201)));
        assert_eq!((subnet.renew_secs, subnet.rebind_secs), (1800, 3150));
        // With DHCP on and no url, the url is derived at start from the interface.
        assert_eq!(config.http.url, None);
    }

    #[test]
    fn dhcp_modes_and_policies() {
        let proxy = Config::parse(
            "[dhcp]\ninterface = \"br0\"\nmode = \"proxy\"\npolicy = \"known_only\"\n",
            "t",
        )
        .expect("proxy needs no subnets");
        let dhcp = proxy.dhcp.expect("dhcp");
        assert_eq!(dhcp.mode, DhcpMode::Proxy);
        assert_eq!(dhcp.policy, AnswerPolicy::KnownOnly);
        assert!(dhcp.subnets.is_empty());
        assert!(
            !dhcp.trust_observed_addresses,
            "observed addresses need confirming"
        );
        let trusting = Config::parse(
            "[dhcp]\ninterface = \"br0\"\nmode = \"proxy\"\ntrust_observed_addresses = true\n",
            "t",
        )
        .expect("valid in proxy mode");
        assert!(trusting.dhcp.expect("dhcp").trust_observed_addresses);
        // A wrong type is a parse error that shows the key's line.
        let err = error_text("[dhcp]\ninterface = \"br0\"\ntrust_observed_addresses = 1\n");
        assert!(err.contains("trust_observed_addresses"), "{err}");

        let text = MINIMAL_DHCP.replace(
            "[dhcp]",
            "[dhcp]\nmatch_client_id = true\nevent_retention_days = 0",
        ) + "lease_secs = 60\nrenew_secs = 2\nrebind_secs = 50\n";
        let dhcp = Config::parse(&text, "t")
            .expect("valid")
            .dhcp
            .expect("dhcp");
        assert!(dhcp.match_client_id);
        assert_eq!(dhcp.event_retention_days, 0);
        let s = &dhcp.subnets[0];
        assert_eq!((s.lease_secs, s.renew_secs, s.rebind_secs), (60, 2, 50));
    }
}
