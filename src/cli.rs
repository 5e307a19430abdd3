//! The command line: each subcommand translated into calls on the library, and the
//! results printed.

use crate::config::Config;
use crate::mac::MacAddr;
use crate::service::images::Existing;
use crate::service::machines::NewMachine;
use crate::service::{Caller, Services};
use crate::store::Store;
use crate::text::{for_terminal, format_ms};
use crate::{auth, bulk, clock, images, inventory, lifecycle, power, serve, store};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "./rackboot.toml";

#[derive(Parser)]
#[command(version, about = "Network-boot bare metal from an inventory")]
pub struct Cli {
    /// Configuration file. Without one, rackboot runs on its embedded default
    /// (data in ./rackboot-data, HTTP on 127.0.0.1:8080, DHCP and TFTP off).
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the DHCP, TFTP and HTTP servers.
    Serve,
    /// Check the configuration and what it names (data directory, DHCP interface,
    /// iPXE, shim and grub files, ports) before a start; exits 1 on a problem.
    CheckConfig,
    /// Manage OS images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Manage machines.
    #[command(subcommand)]
    Machine(MachineCommand),
    /// Show DHCP leases.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Show boot events.
    #[command(subcommand)]
    Event(EventCommand),
    /// Manage panel users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Power control through each machine's BMC (IPMI, Redfish) or Wake-on-LAN.
    #[command(subcommand)]
    Power(PowerCommand),
}

#[derive(Subcommand)]
pub enum PowerCommand {
    /// Set a machine's power controller. Passwords are read from standard input
    /// (or --password-file), never from the command line.
    Set {
        mac: MacAddr,
        #[command(subcommand)]
        controller: ControllerArgs,
    },
    /// Remove a machine's power controller.
    Remove { mac: MacAddr },
    /// Show a machine's power controller (never its password) and last state.
    Show { mac: MacAddr },
    /// Power on (IPMI, Redfish, Wake-on-LAN).
    On(Targets),
    /// Power off.
    Off(Targets),
    /// Power-cycle.
    Cycle(Targets),
    /// Read the power state.
    Status(Targets),
    /// Boot from the network next time (once).
    Pxe(Targets),
}

/// Machines to act on: MACs, or every machine of a rack.
#[derive(clap::Args)]
pub struct Targets {
    pub macs: Vec<MacAddr>,
    #[arg(long, conflicts_with = "macs")]
    pub rack: Option<String>,
}

#[derive(Subcommand)]
pub enum ControllerArgs {
    /// IPMI over LAN (lanplus), through ipmitool.
    Ipmi {
        #[arg(long)]
        host: String,
        #[arg(long, default_value_t = 623)]
        port: u16,
        #[arg(long)]
        user: String,
        /// IPMI cipher suite (3 is what most BMCs and ipmi_sim accept; 17 for newer).
        #[arg(long, default_value_t = 3)]
        cipher_suite: u8,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Redfish over HTTPS.
    Redfish {
        /// The BMC's base URL, e.g. https://10.0.0.9
        #[arg(long)]
        url: String,
        #[arg(long)]
        user: String,
        /// The system's id under /redfish/v1/Systems; by default the BMC's only one.
        #[arg(long)]
        system_id: Option<String>,
        /// Accept any TLS certificate (BMCs with self-signed ones).
        #[arg(long)]
        no_verify_tls: bool,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Wake-on-LAN (power on only) on the boot network.
    Wol,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is read from standard input.
    Add {
        name: String,
        #[arg(long, default_value = "operator")]
        role: auth::Role,
    },
    List,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create an API token; its secret is printed once.
    Create {
        name: String,
        #[arg(long, default_value = "operator")]
        role: auth::Role,
    },
    List,
    Revoke {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Copy a kernel and initrd into the data directory as image NAME.
    Add {
        name: String,
        #[arg(long)]
        kernel: PathBuf,
        #[arg(long)]
        initrd: PathBuf,
        /// Kernel command line.
        #[arg(long, default_value = "")]
        cmdline: String,
        /// An unattended-install template (kickstart, preseed, cloud-init...), served
        /// rendered per machine at /machines/MAC/files/NAME. Repeatable.
        #[arg(long = "file")]
        files: Vec<PathBuf>,
        /// The architectures the kernel runs on (amd64, arm64; comma-separated). A
        /// machine of another architecture is refused it. Default: amd64.
        #[arg(long, default_value = "amd64")]
        arch: String,
        /// The distribution's own signed shim, for Secure Boot machines booting this
        /// image through grub (its grub trusts its kernels). With --grub.
        #[arg(long, requires = "grub")]
        shim: Option<PathBuf>,
        /// The distribution's own signed network grub, loaded by --shim.
        #[arg(long, requires = "shim")]
        grub: Option<PathBuf>,
    },
    List,
    /// The image definitions in force (built in, and data_dir/images/*.toml), whether
    /// each chain was tested end to end, and which are registered.
    Catalog,
    /// Fetch a definition's files, verify them against the distribution's signatures
    /// (or pinned hashes), and register the image under the definition's name.
    Fetch {
        name: String,
        /// A mirror's base URL, instead of [images] mirror or the definition's own.
        #[arg(long)]
        mirror: Option<String>,
        /// Trusted OpenPGP keys (binary or armoured) that replace the definition's,
        /// for a site mirror that re-signs.
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// A directory laid out as the mirror is (no network at all).
        #[arg(long = "from", conflicts_with = "mirror")]
        from_dir: Option<PathBuf>,
        /// A definition parameter, KEY=VALUE (Fedora's release=41). Repeatable.
        #[arg(long = "param")]
        params: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum MachineCommand {
    /// Add a machine by its MAC address.
    Add {
        mac: MacAddr,
        #[arg(long)]
        hostname: Option<String>,
        #[arg(long)]
        image: Option<String>,
        /// A fixed address, handed to this machine only.
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        #[arg(long)]
        rack: Option<String>,
        #[arg(long)]
        position: Option<String>,
        /// How iPXE leaves network boot: exit, "exit 1" or sanboot.
        #[arg(long)]
        exit_method: Option<lifecycle::ExitMethod>,
        /// The first program its firmware loads: ipxe, grub (shim + grub, for Secure
        /// Boot) or uki (UEFI HTTP boot of one file). Default: per architecture, from
        /// the [boot] config.
        #[arg(long)]
        loader: Option<lifecycle::Loader>,
    },
    /// Set the boot loader: ipxe, grub, uki, or default (per architecture).
    SetLoader {
        mac: MacAddr,
        loader: String,
    },
    List,
    /// Reinstall: set install mode and, with a power controller, boot the machine
    /// from the network now (power-cycle, or power on when off). Several MACs, or
    /// --rack R, reinstall many machines at once, with a summary of what failed.
    Reinstall(Targets),
    /// Rescue: like reinstall, with the rescue image.
    Rescue(Targets),
    /// Wipe the machine's disks: like reinstall, with the wipe image.
    Wipe {
        mac: MacAddr,
        /// The same MAC again: wiping cannot be undone.
        #[arg(long)]
        confirm: MacAddr,
    },
    /// The machine's last boots, with the time each phase took.
    Boots {
        mac: MacAddr,
        #[arg(long, default_value_t = 5)]
        limit: usize,
    },
    /// Set the boot mode: local, install, rescue, boot or wipe.
    SetMode {
        mac: MacAddr,
        mode: lifecycle::Mode,
    },
    /// Assign an image (or `--none`).
    SetImage {
        mac: MacAddr,
        image: Option<String>,
        #[arg(long, conflicts_with = "image")]
        none: bool,
    },
    /// Import machines from a CSV or XLSX file (columns: mac, hostname, ip, image,
    /// rack, position). Nothing is written unless every row is valid.
    Import {
        file: PathBuf,
    },
    /// Export the inventory.
    Export {
        #[arg(long, value_parser = ["csv", "xlsx"], default_value = "csv")]
        format: String,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum LeaseCommand {
    List,
    /// How full each subnet's pool is.
    Pools,
}

#[derive(Subcommand)]
pub enum EventCommand {
    List {
        /// Only this machine's events.
        #[arg(long)]
        mac: Option<MacAddr>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// The error and its causes, leaving out a cause its parent's message already shows.
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !text.ends_with(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
    }
    text
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    // Only the default path may be missing: a named file that is not there is a mistake.
    let missing_ok = path == Path::new(DEFAULT_CONFIG);
    Ok(Config::load(path, missing_ok)?)
}

fn open_store(config: &Config) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("data_dir: cannot create {}", config.data_dir.display()))?;
    let path = config.data_dir.join("rackboot.db");
    Store::open(&path).with_context(|| format!("opening inventory {}", path.display()))
}

/// Who runs the command, for the audit log (`cli:NAME`): who ran sudo, else the
/// user. `$USER` is unset under `docker exec`, systemd and cron; the account of the
/// process's uid names them there.
fn cli_user() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(uid_name)
}

/// The account name of the effective uid, or `uid<N>` when it has none.
fn uid_name() -> String {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let mut entry = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; on success `found` points at
    // `entry`, whose strings point into `buf`, both alive until the name is copied.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            entry.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc == 0 && !found.is_null() {
        // SAFETY: see above; pw_name is a NUL-terminated string in `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr((*found).pw_name) };
        if let Ok(name) = name.to_str()
            && !name.is_empty()
        {
            return name.to_string();
        }
    }
    format!("uid{uid}")
}

fn print_machine(m: &inventory::MachineDetail) {
    println!(
        "{} mode={} image={} ip={}",
        m.mac,
        m.mode,
        m.image.as_deref().unwrap_or("-"),
        m.current_ip().map_or("-".into(), |ip| ip.to_string())
    );
}

async fn check_config(path: &Path, config: Config) -> anyhow::Result<()> {
    let found = tokio::task::spawn_blocking(move || crate::check::check(&config)).await?;
    for finding in &found {
        println!("{finding}");
    }
    let problems = found
        .iter()
        .filter(|f| f.severity == crate::check::Severity::Problem)
        .count();
    if problems > 0 {
        anyhow::bail!("{}: {problems} problem(s)", path.display());
    }
    println!(
        "{}: no problems ({} warning(s))",
        path.display(),
        found.len()
    );
    Ok(())
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli.config)?;
    if matches!(cli.command, Command::CheckConfig) {
        // Before the store is opened: the data directory is one of the things checked.
        return check_config(&cli.config, config).await;
    }
    let store = open_store(&config)?;
    let services = Services::from_config(store.clone(), &config);
    let caller = Caller::cli(cli_user());
    match cli.command {
        Command::Serve => serve::run(config, store).await,
        // Answered above, before the store.
        Command::CheckConfig => Ok(()),
        Command::Image(ImageCommand::Add {
            name,
            kernel,
            initrd,
            cmdline,
            files,
            arch,
            shim,
            grub,
        }) => {
            let arches = lifecycle::parse_arches(&arch)?;
            let loader_arch = match (&shim, arches.as_slice()) {
                (None, _) => None,
                (Some(_), [one]) => Some(*one),
                (Some(_), _) => {
                    anyhow::bail!("--shim and --grub are for one architecture: give one --arch")
                }
            };
            let data_dir = config.data_dir.clone();
            let mut staged = tokio::task::spawn_blocking(move || {
                let staged =
                    images::stage_files(&data_dir, &name, &cmdline, &kernel, &initrd, &files)?;
                if let (Some(arch), Some(shim), Some(grub)) = (loader_arch, &shim, &grub)
                    && let Err(e) = images::stage_loader(&staged.staging, arch, shim, grub)
                {
                    let _ = std::fs::remove_dir_all(&staged.staging);
                    return Err(e);
                }
                Ok(staged)
            })
            .await??;
            staged.arches = arches;
            let (staging, names) = (staged.staging.clone(), staged.files.clone());
            // Replacing an image changes what its machines boot: audited like an add.
            let added = services
                .add_image(&caller, clock::now_ms(), staged, Existing::Replace)
                .await;
            if added.is_err() {
                let _ = tokio::fs::remove_dir_all(&staging).await;
            }
            let image = added?;
            if !names.is_empty() {
                println!("install files: {}", names.join(", "));
            }
            println!(
                "image {} added\n  kernel sha256 {}\n  initrd sha256 {}",
                image.name, image.kernel_sha256, image.initrd_sha256
            );
            Ok(())
        }
        Command::Image(ImageCommand::Catalog) => {
            let entries = services.catalog_entries().await?;
            println!(
                "{:<20} {:<34} {:<10} {:<10} {:<9} REGISTERED",
                "NAME", "OS", "KIND", "FIRMWARE", "CHAIN"
            );
            for entry in entries {
                let d = &entry.definition;
                let firmware: Vec<&str> = d.firmware.iter().map(|f| f.as_str()).collect();
                println!(
                    "{:<20} {:<34} {:<10} {:<10} {:<9} {}",
                    d.name,
                    for_terminal(&format!("{} {}", d.os, d.display_version()))
                        .chars()
                        .take(34)
                        .collect::<String>(),
                    format!("{:?}", d.kind).to_lowercase(),
                    firmware.join(","),
                    d.status(),
                    match &entry.registered {
                        Some(source) => format!(
                            "yes, verified by {}",
                            source.verified_by.as_deref().unwrap_or("pinned sha256")
                        ),
                        None => "no".into(),
                    }
                );
                if d.tested.is_none() {
                    println!(
                        "  untested: its chain has not been run end to end against the real upstream{}",
                        d.notes
                            .as_ref()
                            .map(|n| format!(". {}", for_terminal(n)))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        Command::Image(ImageCommand::Fetch {
            name,
            mirror,
            keyring,
            from_dir,
            params,
        }) => {
            let keyring = match keyring {
                Some(path) => Some(
                    tokio::fs::read(&path)
                        .await
                        .with_context(|| format!("--keyring {}", path.display()))?,
                ),
                None => None,
            };
            let mut parameters = std::collections::BTreeMap::new();
            for param in params {
                let (key, value) = param
                    .split_once('=')
                    .with_context(|| format!("--param {param:?}: write KEY=VALUE"))?;
                parameters.insert(key.to_string(), value.to_string());
            }
            let catalog = services.catalog().await?;
            if let Some(definition) = catalog.get(&name)
                && definition.tested.is_none()
            {
                eprintln!(
                    "note: {name} is untested: its chain has not been run end to end against the real upstream"
                );
            }
            let request = crate::service::catalog::FetchImage {
                definition: name,
                mirror,
                from_dir,
                keyring,
                parameters,
            };
            let (image, source) = services
                .fetch_image(&caller, request, progress_printer())
                .await?;
            eprintln!();
            println!(
                "image {} registered from the catalog\n  verified by {}\n  kernel sha256 {}\n  initrd sha256 {}\n  chain: {}",
                image.name,
                source.verified_by.as_deref().unwrap_or("pinned sha256"),
                image.kernel_sha256,
                if image.initrd_sha256.is_empty() {
                    "-"
                } else {
                    &image.initrd_sha256
                },
                source.provenance
            );
            Ok(())
        }
        Command::Image(ImageCommand::List) => {
            let images = store.call(|conn| store::list_images(conn)).await?;
            println!(
                "{:<24} {:<16} {:<16} {:<12} CMDLINE",
                "NAME", "KERNEL", "INITRD", "ARCH"
            );
            for image in images {
                println!(
                    "{:<24} {:<16} {:<16} {:<12} {}",
                    image.name,
                    image.kernel_sha256.get(..12).unwrap_or("-"),
                    image.initrd_sha256.get(..12).unwrap_or("-"),
                    lifecycle::arches_text(&image.arches),
                    for_terminal(&image.cmdline)
                );
            }
            Ok(())
        }
        Command::Machine(MachineCommand::Add {
            mac,
            hostname,
            image,
            ip,
            rack,
            position,
            exit_method,
            loader,
        }) => {
            let new = NewMachine {
                hostname,
                image,
                ip,
                rack,
                position,
                exit_method,
                loader,
                ..NewMachine::new(mac)
            };
            let added = services.add_machine(&caller, clock::now_ms(), new).await?;
            print!("machine added: ");
            print_machine(&added);
            Ok(())
        }
        Command::Machine(MachineCommand::Reinstall(targets)) => {
            let macs = services.targets(targets.macs, targets.rack).await?;
            reprovision_cli(&services, &caller, macs, lifecycle::Mode::Install).await
        }
        Command::Machine(MachineCommand::Rescue(targets)) => {
            let macs = services.targets(targets.macs, targets.rack).await?;
            reprovision_cli(&services, &caller, macs, lifecycle::Mode::Rescue).await
        }
        Command::Machine(MachineCommand::Wipe { mac, confirm }) => {
            // One machine at a time: wiping cannot be undone.
            if confirm != mac {
                anyhow::bail!("--confirm {confirm} is not {mac}: nothing was wiped");
            }
            reprovision_cli(&services, &caller, vec![mac], lifecycle::Mode::Wipe).await
        }
        Command::Machine(MachineCommand::Boots { mac, limit }) => {
            let boots = store
                .call(move |conn| inventory::boots(conn, mac, limit))
                .await?;
            if boots.is_empty() {
                println!("no network boot recorded for {mac}");
            }
            for boot in boots {
                print!(
                    "{}  total {:>6.1} s:",
                    format_ms(Some(boot.start_ms)),
                    boot.total_ms() as f64 / 1000.0
                );
                for p in &boot.phases {
                    print!(
                        "  {} {:.1} s",
                        p.phase.label(),
                        p.duration_ms as f64 / 1000.0
                    );
                }
                println!();
            }
            Ok(())
        }
        Command::Machine(MachineCommand::SetMode { mac, mode }) => {
            let m = services
                .set_mode(&caller, clock::now_ms(), mac, mode)
                .await?;
            print_machine(&m);
            Ok(())
        }
        Command::Machine(MachineCommand::SetLoader { mac, loader }) => {
            let loader = match loader.trim() {
                "default" => None,
                other => Some(other.parse::<lifecycle::Loader>()?),
            };
            let patch = crate::inventory::MachinePatch {
                loader: Some(loader),
                ..Default::default()
            };
            let m = services
                .update_machine(&caller, clock::now_ms(), mac, patch)
                .await?;
            print_machine(&m);
            Ok(())
        }
        Command::Machine(MachineCommand::SetImage { mac, image, none }) => {
            if image.is_none() && !none {
                anyhow::bail!("name an image, or pass --none to clear it");
            }
            let m = services
                .set_image(&caller, clock::now_ms(), mac, image)
                .await?;
            print_machine(&m);
            Ok(())
        }
        Command::Machine(MachineCommand::Import { file }) => {
            let name = file.display().to_string();
            let bytes = read_import_file(&file)
                .await
                .with_context(|| format!("reading {name}"))?
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            // The same limits as the panel's preview; parsing is CPU work, off the runtime.
            let parse_name = name.clone();
            let rows = tokio::task::spawn_blocking(move || bulk::parse_upload(&parse_name, &bytes))
                .await?
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            let checked = services.check_import(&caller, rows).await?;
            let bad: Vec<_> = checked.iter().filter(|r| !r.errors.is_empty()).collect();
            if !bad.is_empty() {
                for row in &bad {
                    eprintln!("{name}: line {}: {}", row.line, row.errors.join("; "));
                }
                anyhow::bail!(
                    "{} of {} rows have errors; nothing was imported",
                    bad.len(),
                    checked.len()
                );
            }
            let summary = services
                .apply_import(&caller, clock::now_ms(), checked)
                .await?;
            println!("{summary}");
            Ok(())
        }
        Command::Machine(MachineCommand::Export { format, output }) => {
            let machines = store.call(bulk::all_machines).await?;
            let bytes = match format.as_str() {
                "xlsx" => bulk::to_xlsx(&machines),
                _ => bulk::to_csv(&machines),
            }
            .map_err(|e| anyhow::anyhow!("export: {e}"))?;
            match output {
                Some(path) => tokio::fs::write(&path, bytes)
                    .await
                    .with_context(|| format!("writing {}", path.display()))?,
                None => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes)?;
                }
            }
            Ok(())
        }
        Command::User(UserCommand::Add { name, role }) => {
            auth::validate_user_name(&name).map_err(anyhow::Error::msg)?;
            let mut password = String::new();
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("password for {name} (input is shown; pipe it in to hide it): ");
            }
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']).to_string();
            services
                .add_user(&caller, clock::now_ms(), name.clone(), password, role)
                .await?;
            println!("user {name} added ({})", role.as_str());
            Ok(())
        }
        Command::User(UserCommand::List) => {
            for u in services.users(&caller).await? {
                println!(
                    "{:<24} {:<9} {}",
                    u.name,
                    u.role.as_str(),
                    format_ms(Some(u.created_ms))
                );
            }
            Ok(())
        }
        Command::Token(TokenCommand::Create { name, role }) => {
            let secret = services
                .create_token(&caller, clock::now_ms(), name, role)
                .await?;
            println!("{secret}");
            eprintln!("keep this token: it is shown only once");
            Ok(())
        }
        Command::Token(TokenCommand::List) => {
            for t in services.tokens(&caller).await? {
                println!(
                    "{:<24} {:<9} created {} last used {}{}",
                    t.name,
                    t.role.as_str(),
                    format_ms(Some(t.created_ms)),
                    format_ms(t.last_used_ms),
                    if t.revoked_ms.is_some() {
                        " REVOKED"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { name }) => {
            services
                .revoke_token(&caller, clock::now_ms(), name.clone())
                .await?;
            println!("token {name} revoked");
            Ok(())
        }
        Command::Power(command) => power_cli(&services, &caller, command).await,
        Command::Machine(MachineCommand::List) => {
            let machines = store.call(bulk::all_machines).await?;
            println!(
                "{:<17} {:<20} {:<16} {:<8} {:<15} {:<14} {:<10} {:<25} VENDOR CLASS",
                "MAC", "HOSTNAME", "IMAGE", "MODE", "IP", "FIRMWARE", "STATE", "LAST SEEN"
            );
            for m in machines {
                println!(
                    "{:<17} {:<20} {:<16} {:<8} {:<15} {:<14} {:<10} {:<25} {}",
                    m.mac,
                    for_terminal(m.hostname.as_deref().unwrap_or("-")),
                    m.image.as_deref().unwrap_or("-"),
                    m.mode,
                    m.current_ip().map_or("-".into(), |ip| ip.to_string()),
                    for_terminal(m.arch.as_deref().unwrap_or("-")),
                    if m.discovered { "discovered" } else { "added" },
                    format_ms(m.last_seen_ms),
                    for_terminal(m.vendor_class.as_deref().unwrap_or("-")),
                );
            }
            Ok(())
        }
        Command::Lease(LeaseCommand::List) => {
            let leases = store.call(|conn| store::list_leases(conn)).await?;
            let now = clock::now_ms() / 1000;
            println!(
                "{:<15} {:<17} {:<9} {:<25} HOSTNAME",
                "IP", "MAC", "STATE", "EXPIRES"
            );
            for l in leases {
                let state = match l.state {
                    store::LeaseState::Bound if l.expires_at <= now => "expired",
                    store::LeaseState::Bound => "bound",
                    store::LeaseState::Released => "released",
                    store::LeaseState::Declined => "declined",
                    store::LeaseState::Observed => "observed",
                };
                println!(
                    "{:<15} {:<17} {:<9} {:<25} {}",
                    l.ip,
                    l.mac,
                    state,
                    format_ms(Some(l.expires_at * 1000)),
                    for_terminal(l.hostname.as_deref().unwrap_or("-"))
                );
            }
            Ok(())
        }
        Command::Lease(LeaseCommand::Pools) => {
            let subnets = config.dhcp.map(|d| d.subnets).unwrap_or_default();
            let now = clock::now_ms() / 1000;
            let usage = store
                .call(move |conn| store::pool_usage(conn, &subnets, now))
                .await?;
            println!(
                "{:<18} {:<31} {:>7} {:>7} {:>8} {:>8} {:>7}",
                "SUBNET", "POOL", "SIZE", "BOUND", "DECLINED", "RESERVED", "FREE"
            );
            for u in usage {
                println!(
                    "{:<18} {:<31} {:>7} {:>7} {:>8} {:>8} {:>7}",
                    format!("{}/{}", u.network, u.prefix_len),
                    format!(
                        "{}-{}{}",
                        u.pool_start,
                        u.pool_end,
                        if u.known_only { " known" } else { "" }
                    ),
                    u.size,
                    u.bound,
                    u.declined,
                    u.reserved,
                    u.free()
                );
            }
            Ok(())
        }
        Command::Event(EventCommand::List { mac, limit }) => {
            let events = store
                .call(move |conn| store::list_events(conn, mac, limit))
                .await?;
            for e in events {
                // Who did it closes the line: the detail before it is free text.
                println!(
                    "{} {} {:<14} {}{}",
                    format_ms(Some(e.at_ms)),
                    e.mac.map_or("-".into(), |m| m.to_string()),
                    for_terminal(&e.kind),
                    for_terminal(&e.detail),
                    e.actor
                        .map(|a| format!("  [by {}]", for_terminal(&a)))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

/// Reinstall, rescue or wipe each machine, all at once (BMC calls are bounded by
/// `[power] concurrency`), printing each machine's steps in the order given and,
/// for more than one machine, a summary naming the failures. A failed power step
/// fails the command (the mode change stays, and the output says so).
async fn reprovision_cli(
    services: &Services,
    caller: &Caller,
    macs: Vec<MacAddr>,
    mode: lifecycle::Mode,
) -> anyhow::Result<()> {
    let results = if macs.len() == 1 {
        vec![(macs[0], services.reprovision(caller, macs[0], mode).await)]
    } else {
        services
            .reprovision_many(caller, macs.clone(), mode)
            .await?
    };
    let mut failed = Vec::new();
    let mut last_error = None;
    for (mac, result) in results {
        let why = match result {
            Ok(report) => {
                print!("{mode}: ");
                print_machine(&report.machine);
                for step in &report.steps {
                    println!(
                        "  {:<7} {:<8} {}",
                        step.step,
                        step.result,
                        for_terminal(&step.detail)
                    );
                }
                report.power_error
            }
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = why {
            if macs.len() > 1 {
                println!("{mac} {mode} FAILED: {}", for_terminal(&why));
            }
            failed.push(mac.to_string());
            last_error = Some(format!("{mac}: {why}"));
        }
    }
    if macs.len() > 1 {
        println!(
            "{} of {} machines: {mode} started{}",
            macs.len() - failed.len(),
            macs.len(),
            if failed.is_empty() {
                String::new()
            } else {
                format!("; failed: {}", failed.join(" "))
            }
        );
    }
    match (failed.len(), last_error) {
        (0, _) => Ok(()),
        (1, Some(why)) if macs.len() == 1 => anyhow::bail!(why),
        (n, _) => anyhow::bail!("{mode} failed for {n} of {} machines", macs.len()),
    }
}

/// Reads an import file, never more than the import limit plus one byte: a file
/// that is larger (or grows while read) is refused, not loaded whole.
async fn read_import_file(path: &Path) -> std::io::Result<Result<Vec<u8>, bulk::SheetError>> {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::open(path).await?;
    let size = file.metadata().await?.len();
    if size > bulk::MAX_IMPORT_BYTES as u64 {
        return Ok(Err(bulk::SheetError::FileTooLarge { size }));
    }
    let mut bytes = Vec::new();
    file.take(bulk::MAX_IMPORT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() > bulk::MAX_IMPORT_BYTES {
        return Ok(Err(bulk::SheetError::UploadTooLarge));
    }
    Ok(Ok(bytes))
}

fn read_password(file: Option<&Path>) -> anyhow::Result<String> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("--password-file {}", path.display()))?,
        None => {
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprint!("BMC password (input is shown; pipe it in to hide it): ");
            }
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line
        }
    };
    let password = text.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        anyhow::bail!("the BMC password is empty");
    }
    Ok(password)
}

async fn power_cli(
    services: &Services,
    caller: &Caller,
    command: PowerCommand,
) -> anyhow::Result<()> {
    let (verb, targets) = match command {
        PowerCommand::Set { mac, controller } => {
            let spec = match controller {
                ControllerArgs::Ipmi {
                    host,
                    port,
                    user,
                    cipher_suite,
                    password_file,
                } => power::ControllerSpec::Ipmi {
                    host,
                    port: Some(port),
                    user,
                    password: Some(read_password(password_file.as_deref())?),
                    cipher_suite: Some(cipher_suite),
                },
                ControllerArgs::Redfish {
                    url,
                    user,
                    system_id,
                    no_verify_tls,
                    password_file,
                } => power::ControllerSpec::Redfish {
                    url,
                    user,
                    password: Some(read_password(password_file.as_deref())?),
                    system_id,
                    verify_tls: Some(!no_verify_tls),
                },
                ControllerArgs::Wol => power::ControllerSpec::Wol,
            };
            let controller = services
                .set_controller(caller, clock::now_ms(), mac, spec)
                .await?;
            println!("{mac}: power controller {}", controller.summary());
            return Ok(());
        }
        PowerCommand::Remove { mac } => {
            services
                .remove_controller(caller, clock::now_ms(), mac)
                .await?;
            println!("{mac}: power controller removed");
            return Ok(());
        }
        PowerCommand::Show { mac } => {
            let (controller, status) = services.power_view(mac).await?;
            match controller {
                None => println!("{mac}: no power controller"),
                Some(c) => println!("{mac}: {} password=set", c.summary()),
            }
            if let Some(s) = status {
                println!(
                    "last state: {} at {} {}",
                    s.state,
                    format_ms(Some(s.checked_ms)),
                    s.detail
                );
            }
            return Ok(());
        }
        PowerCommand::On(t) => (power::Verb::On, t),
        PowerCommand::Off(t) => (power::Verb::Off, t),
        PowerCommand::Cycle(t) => (power::Verb::Cycle, t),
        PowerCommand::Status(t) => (power::Verb::Status, t),
        PowerCommand::Pxe(t) => (power::Verb::Pxe, t),
    };
    let macs = services.targets(targets.macs, targets.rack).await?;
    let results = services.power_many(caller, macs, verb).await?;
    let mut failed = Vec::new();
    for (mac, result) in &results {
        match result {
            Ok(outcome) => {
                let state = outcome.state.map_or("", power::PowerState::as_str);
                match &outcome.warning {
                    Some(w) => println!("{mac} {} warning: {}", verb.as_str(), for_terminal(w)),
                    None => println!("{mac} {} ok {state}", verb.as_str()),
                }
            }
            Err(e) => {
                println!(
                    "{mac} {} FAILED: {}",
                    verb.as_str(),
                    for_terminal(&e.to_string())
                );
                failed.push(mac.to_string());
            }
        }
    }
    println!(
        "{} of {} machines: power {} done{}",
        results.len() - failed.len(),
        results.len(),
        verb.as_str(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; failed: {}", failed.join(" "))
        }
    );
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "power {} failed for {} machine(s)",
            verb.as_str(),
            failed.len()
        )
    }
}

/// A progress line on stderr: redrawn in place on a terminal, one line per file
/// otherwise (logs, CI).
fn progress_printer() -> crate::catalog::fetch::ProgressSink {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let last_step = std::sync::Mutex::new(String::new());
    std::sync::Arc::new(move |p: crate::catalog::fetch::Progress| {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let amount = match p.total_bytes {
            Some(total) if total > 0 => format!(
                "{:.1} of {:.1} MiB ({:.0} %)",
                mib(p.done_bytes),
                mib(total),
                p.done_bytes as f64 * 100.0 / total as f64
            ),
            _ if p.done_bytes > 0 => format!("{:.1} MiB", mib(p.done_bytes)),
            _ => String::new(),
        };
        if terminal {
            eprint!("\r\x1b[2K{} {amount}", for_terminal(&p.step));
        } else if let Ok(mut last) = last_step.lock()
            && *last != p.step
        {
            eprintln!("{}", for_terminal(&p.step));
            *last = p.step.clone();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_names_each_cause_once() {
        let missing = Config::load(Path::new("/nonexistent/x.toml"), false)
            .map_err(anyhow::Error::from)
            .expect_err("missing file");
        let text = error_chain(&missing.context("loading config"));
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
        assert!(
            text.starts_with("loading config: /nonexistent/x.toml"),
            "{text}"
        );
    }

    #[test]
    fn the_cli_user_is_named_by_uid_without_env() {
        let id = std::process::Command::new("id")
            .arg("-un")
            .output()
            .expect("run id -un");
        let expected = if id.status.success() {
            String::from_utf8_lossy(&id.stdout).trim().to_string()
        } else {
            // A uid with no account (containers run as arbitrary uids).
            // SAFETY: geteuid has no preconditions.
            format!("uid{}", unsafe { libc::geteuid() })
        };
        assert_eq!(uid_name(), expected);
    }
}
