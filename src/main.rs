//! rackboot: one binary that network-boots bare metal, per machine, from an inventory.
//!
//! Modules, and what each owns:
//! - `config`: the TOML file, validated; errors name the file and the key.
//! - `store`: the SQLite inventory (machines, images, leases, events) on its own thread.
//! - `mac`: hardware addresses, parsed in every spelling firmware and people use.
//! - `dhcp`: the DHCPv4 server: `wire` (decode/encode, reply addressing), `boot`
//!   (which boot file for which firmware), `leases` (the lease book and its free-address
//!   index), `policy` (the pure decision, full and proxy mode), `server` (the socket
//!   loop on its own thread, grouped fsync'd commits).
//! - `tftp`: the read-only TFTP server for the iPXE binaries.
//! - `http`: boot scripts, kernels and initrds over HTTP (axum).
//! - `script`: iPXE script templates, built in and overridable at run time.
//! - `images`: copying image files under `data_dir` with their sha256.
//! - `netif`: interface addresses, ARP entries, socket buffers, recvmmsg/sendmmsg
//!   (Linux).
//! - `serve`: starts the servers; `clock`: the wall clock, read only at the edges.

mod clock;
mod config;
mod dhcp;
mod http;
mod images;
mod mac;
mod netif;
mod script;
mod serve;
mod store;
mod tftp;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use config::Config;
use mac::MacAddr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use store::Store;

const DEFAULT_CONFIG: &str = "./rackboot.toml";

#[derive(Parser)]
#[command(version, about = "Network-boot bare metal from an inventory")]
struct Cli {
    /// Configuration file. Without one, rackboot runs on its embedded default
    /// (data in ./rackboot-data, HTTP on 127.0.0.1:8080, DHCP and TFTP off).
    #[arg(long, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the DHCP, TFTP and HTTP servers.
    Serve,
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
}

#[derive(Subcommand)]
enum ImageCommand {
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
    },
    List,
}

#[derive(Subcommand)]
enum MachineCommand {
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
    },
    List,
}

#[derive(Subcommand)]
enum LeaseCommand {
    List,
    /// How full each subnet's pool is.
    Pools,
}

#[derive(Subcommand)]
enum EventCommand {
    List {
        /// Only this machine's events.
        #[arg(long)]
        mac: Option<MacAddr>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rackboot: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rackboot: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, leaving out a cause its parent's message already shows.
fn error_chain(error: &anyhow::Error) -> String {
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

fn init_logging() {
    // async-tftp logs through `log`; route it into tracing.
    let _ = tracing_log::LogTracer::init();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
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

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn format_ms(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) => {
            let secs = ms / 1000;
            let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
            let (y, m, d) = civil_from_days(days);
            format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                ms.rem_euclid(1000)
            )
        }
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli.config)?;
    let store = open_store(&config)?;
    match cli.command {
        Command::Serve => serve::run(config, store).await,
        Command::Image(ImageCommand::Add {
            name,
            kernel,
            initrd,
            cmdline,
        }) => {
            let data_dir = config.data_dir.clone();
            let image = tokio::task::spawn_blocking(move || {
                images::import(&data_dir, &name, &kernel, &initrd, &cmdline)
            })
            .await??;
            let saved = image.clone();
            store
                .call(move |conn| store::put_image(conn, &saved, clock::now_ms()))
                .await?;
            println!(
                "image {} added\n  kernel sha256 {}\n  initrd sha256 {}",
                image.name, image.kernel_sha256, image.initrd_sha256
            );
            Ok(())
        }
        Command::Image(ImageCommand::List) => {
            let images = store.call(|conn| store::list_images(conn)).await?;
            println!("{:<24} {:<16} {:<16} CMDLINE", "NAME", "KERNEL", "INITRD");
            for image in images {
                println!(
                    "{:<24} {:<16} {:<16} {}",
                    image.name,
                    image.kernel_sha256.get(..12).unwrap_or("-"),
                    image.initrd_sha256.get(..12).unwrap_or("-"),
                    image.cmdline
                );
            }
            Ok(())
        }
        Command::Machine(MachineCommand::Add {
            mac,
            hostname,
            image,
            ip,
        }) => {
            if let Some(name) = &hostname
                && !valid_hostname(name)
            {
                anyhow::bail!("--hostname {name:?} is not a valid host name");
            }
            if let (Some(ip), Some(dhcp)) = (ip, &config.dhcp)
                && !dhcp.subnets.iter().any(|s| s.contains(ip))
            {
                anyhow::bail!("--ip {ip} is not inside any configured dhcp.subnets");
            }
            let new = store::NewMachine {
                mac: Some(mac),
                hostname,
                image,
                ip,
            };
            store
                .call(move |conn| store::add_machine(conn, &new, clock::now_ms()))
                .await?;
            println!("machine {mac} added");
            Ok(())
        }
        Command::Machine(MachineCommand::List) => {
            let machines = store.call(|conn| store::list_machines(conn)).await?;
            println!(
                "{:<17} {:<20} {:<16} {:<15} {:<14} {:<10} {:<25} VENDOR CLASS",
                "MAC", "HOSTNAME", "IMAGE", "IP", "FIRMWARE", "STATE", "LAST SEEN"
            );
            for m in machines {
                println!(
                    "{:<17} {:<20} {:<16} {:<15} {:<14} {:<10} {:<25} {}",
                    m.mac,
                    m.hostname.as_deref().unwrap_or("-"),
                    m.image.as_deref().unwrap_or("-"),
                    m.ip.map_or("-".into(), |ip| ip.to_string()),
                    m.arch.as_deref().unwrap_or("-"),
                    if m.discovered { "discovered" } else { "added" },
                    format_ms(m.last_seen_ms),
                    m.vendor_class.as_deref().unwrap_or("-"),
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
                    l.hostname.as_deref().unwrap_or("-")
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
                    format!("{}-{}", u.pool_start, u.pool_end),
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
                println!(
                    "{} {} {:<14} {}",
                    format_ms(Some(e.at_ms)),
                    e.mac.map_or("-".into(), |m| m.to_string()),
                    e.kind,
                    e.detail
                );
            }
            Ok(())
        }
    }
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
    fn hostnames() {
        assert!(valid_hostname("node-01.rack3"));
        assert!(!valid_hostname("-bad"));
        assert!(!valid_hostname("under_score"));
        assert!(!valid_hostname(""));
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(format_ms(Some(0)), "1970-01-01 00:00:00.000Z");
        assert_eq!(
            format_ms(Some(1_795_305_600_123)),
            "2026-11-22 00:00:00.123Z"
        );
        assert_eq!(format_ms(None), "-");
    }
}
