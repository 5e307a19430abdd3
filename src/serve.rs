//! `rackboot serve`: starts HTTP, TFTP and DHCP in one process over one inventory.

use crate::clock;
use crate::config::{Config, DhcpMode};
use crate::dhcp::boot::BootConfig;
use crate::dhcp::foreign;
use crate::dhcp::server as dhcp_server;
use crate::dhcp::wire;
use crate::http::{self, AppState};
use crate::limits;
use crate::listen;
use crate::netif;
use crate::store::{self, Store};
use crate::tftp;
use crate::{lifecycle, panel, ra, secrets};
use anyhow::{Context as _, bail};

pub async fn run(config: Config, store: Store) -> anyhow::Result<()> {
    if !limits::return_large_allocations() {
        tracing::warn!("cannot fix the allocator's mmap threshold; freed memory may stay held");
    }
    let open_files = match limits::raise_nofile(1 << 20) {
        Ok((before, after)) => {
            if after > before {
                tracing::info!(before, after, "open-file limit raised");
            }
            after
        }
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            1024
        }
    };
    // Where the DHCP server lives decides the URL machines reach us at.
    let dhcp_addr = match &config.dhcp {
        None => {
            tracing::info!(
                "DHCP server off: no [dhcp] interface configured (rackboot never answers \
                 DHCP on an interface nobody named)"
            );
            None
        }
        Some(dhcp) => {
            let found = netif::ipv4_of(&dhcp.interface)
                .with_context(|| format!("reading addresses of {}", dhcp.interface))?;
            let Some((ip, _)) = found else {
                bail!(
                    "dhcp.interface: {} has no IPv4 address (or does not exist); \
                     rackboot serves DHCP from the interface's own address",
                    dhcp.interface
                );
            };
            if dhcp.mode == DhcpMode::Full && !dhcp.subnets.iter().any(|s| s.contains(ip)) {
                tracing::warn!(
                    interface = dhcp.interface,
                    %ip,
                    "no dhcp.subnets entry contains the interface address: only relayed \
                     requests will be answered"
                );
            }
            for (i, subnet) in dhcp.subnets.iter().enumerate() {
                if subnet.dns.is_empty() {
                    // d-i stops at a "Name server addresses" prompt before it
                    // fetches its preseed when the lease has no name server.
                    tracing::warn!(
                        subnet = %format!("{}/{}", subnet.network, subnet.prefix_len),
                        "dhcp.subnets[{i}] has no dns: the Debian installer stops at a \
                         prompt for a name server before fetching its preseed; set dns"
                    );
                }
            }
            Some(ip)
        }
    };
    // A killed upload or catalog fetch leaves its staging directory (nothing half done
    // was registered): removed once its process is gone, or after a day.
    let stale = {
        let data_dir = config.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            crate::images::remove_stale_staging(
                &data_dir,
                std::time::Duration::from_secs(24 * 3600),
            )
        })
        .await
        .unwrap_or(0)
    };
    if stale > 0 {
        tracing::info!(
            stale,
            "removed staging directories left by interrupted uploads or fetches"
        );
    }
    let base_url = match (&config.http.url, dhcp_addr) {
        (Some(url), _) => url.clone(),
        (None, Some(ip)) => format!("http://{ip}:{}", config.http.listen.port()),
        (None, None) => format!("http://{}", config.http.listen),
    };

    // Checkpoints off the writer's thread: a commit that checkpoints delays the DHCP
    // acknowledgements waiting on it.
    store
        .checkpoint_in_background(&config.data_dir.join("rackboot.db"))
        .await
        .context("starting the WAL checkpointer")?;

    let mut state = AppState::new(
        store.clone(),
        config.data_dir.clone(),
        base_url.clone(),
        config.lifecycle.clone(),
    )
    .with_services(crate::service::Services::from_config(
        store.clone(),
        &config,
    ));
    state.secure_cookies = config.panel.tls.is_some();
    state.uploads = config.panel.uploads;
    state.secrets = secrets_rule(&config);
    state.loaders = std::sync::Arc::new(config.boot.clone());
    warn_missing_loaders(&config.boot);
    // TFTP serves shim, grub and the machines' grub configurations from the same
    // boot service the HTTP scripts use.
    let boot_docs = state.boot_docs();
    // The power column of the panel: every BMC read at a modest rate, limited by
    // the same semaphore as the verbs operators send.
    tokio::spawn(crate::service::power::poll_loop(
        store.clone(),
        state.power.clone(),
    ));
    // Why boots failed, recorded as they fail (TFTP and HTTP events come in proxy
    // mode and without DHCP too).
    tokio::spawn(crate::service::diagnosis::sweep_loop(store.clone()));
    let panel_url = match (&config.panel.listen, &config.panel.tls) {
        (Some(addr), Some(_)) => format!("https://{addr}"),
        (Some(addr), None) => format!("http://{addr}"),
        (None, _) => base_url.clone(),
    };
    if state.services.user_count().await? == 0 {
        let token = lifecycle::new_token();
        *state.setup_token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
        // Printed, not logged to a file someone else reads later: it grants admin.
        eprintln!(
            "rackboot: no user exists yet. Create the first admin at {panel_url}/setup/{token} \
             (works once), or run `rackboot user add NAME --role admin`."
        );
    }

    let mut limits = config.http.connections;
    // TFTP may take half the descriptors (below); HTTP a quarter, shared by its
    // listeners, at two a connection (its socket and the file it sends), so at a
    // low open-file limit the cap still leaves TFTP and SQLite theirs.
    let listeners: u64 = if config.panel.listen.is_some() { 2 } else { 1 };
    let share = usize::try_from(open_files / 8 / listeners)
        .unwrap_or(usize::MAX)
        .max(16);
    if limits.max_connections > share {
        // Worth a warning only when an operator asked for more; the default simply
        // fits itself to the machine.
        if limits.max_connections != crate::config::ConnectionLimits::default().max_connections {
            tracing::warn!(
                configured = limits.max_connections,
                open_files,
                used = share,
                "http.max_connections lowered to fit the open-file limit"
            );
        } else {
            tracing::info!(
                open_files,
                used = share,
                "http.max_connections fitted to the open-file limit"
            );
        }
        limits.max_connections = share;
    }
    let panel_task = match &config.panel.listen {
        None => None,
        Some(addr) => {
            let panel = panel::router(state.clone());
            let addr = *addr;
            let tls = match &config.panel.tls {
                Some(tls) => {
                    let _ = rustls::crypto::ring::default_provider().install_default();
                    // Loaded by axum-server, which also offers HTTP/2 and HTTP/1.1 by
                    // ALPN; the connections are ours (listen.rs), for the timeouts.
                    let rustls_config =
                        axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
                            .await
                            .with_context(|| {
                                format!(
                                    "panel.tls_cert / panel.tls_key: cannot load {} and {}",
                                    tls.cert.display(),
                                    tls.key.display()
                                )
                            })?;
                    Some(tokio_rustls::TlsAcceptor::from(rustls_config.get_inner()))
                }
                None => None,
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("panel.listen: cannot listen on {addr}"))?;
            let task = tokio::spawn(listen::serve(listener, panel, limits, tls, "panel"));
            tracing::info!(url = panel_url, "admin panel and API on their own address");
            Some(task)
        }
    };
    let app = if panel_task.is_some() {
        http::boot_router(state, config.ipxe.dir.clone())
    } else {
        panel::app(state, config.ipxe.dir.clone())
    };
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot listen on {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let http_task = tokio::spawn(listen::serve(listener, app, limits, None, "http"));

    if let Some(tftp_config) = &config.tftp {
        if !config.ipxe.dir.is_dir() {
            tracing::warn!(
                dir = %config.ipxe.dir.display(),
                "tftp.ipxe_dir does not exist: firmware PXE clients will get file-not-found \
                 (install Debian's `ipxe` package or set tftp.ipxe_dir)"
            );
        }
        if let Some(root) = &tftp_config.root
            && !root.is_dir()
        {
            tracing::warn!(root = %root.display(), "tftp.root does not exist: only ipxe_dir is served");
        }
        let settings = tftp::Settings {
            listen: tftp_config.listen,
            ipxe_dir: config.ipxe.dir.clone(),
            root: tftp_config.root.clone(),
            secrets: secrets_rule(&config),
            // A transfer holds two sockets; half the descriptors stay for HTTP.
            max_transfers: usize::try_from(open_files / 4)
                .unwrap_or(usize::MAX)
                .max(16),
            boot: Some(boot_docs.clone()),
        };
        let bound = tftp::start(settings, store.clone())
            .with_context(|| format!("tftp.listen: cannot listen on {}", tftp_config.listen))?;
        tracing::info!(%bound, dir = %config.ipxe.dir.display(), root = ?tftp_config.root, "TFTP serving");
    }

    let dhcp_task = match (&config.dhcp, dhcp_addr) {
        (Some(dhcp), Some(server_ip)) => {
            let bind_port = |port: u16| {
                dhcp_server::bind(&dhcp.interface, port).with_context(|| {
                    format!(
                        "dhcp.interface: cannot listen on port {port} of {} (needs root or \
                         CAP_NET_BIND_SERVICE and CAP_NET_RAW)",
                        dhcp.interface
                    )
                })
            };
            let socket = bind_port(wire::SERVER_PORT)?;
            // proxyDHCP also answers on the PXE boot server port, where firmware asks
            // for its boot file once it has an address.
            let boot_socket = match dhcp.mode {
                DhcpMode::Proxy => Some(bind_port(dhcp_server::BOOT_SERVER_PORT)?),
                DhcpMode::Full => None,
            };
            let boot = BootConfig {
                server_ip,
                http_url: base_url.clone(),
                bios_file: config.ipxe.bios.clone(),
                uefi_x64_file: config.ipxe.uefi_x64.clone(),
                uefi_arm64_file: config.ipxe.uefi_arm64.clone(),
                arm64_available: config.ipxe.dir.join(&config.ipxe.uefi_arm64).is_file(),
                default_loader_amd64: config.boot.amd64.loader,
                default_loader_arm64: config.boot.arm64.loader,
            };
            let done = dhcp_server::spawn(
                socket,
                boot_socket,
                server_ip,
                dhcp.clone(),
                boot,
                Box::new(store.clone()),
            )
            .await?;
            // Other servers answering on the link explain many failed boots. In proxy
            // mode another server is there by design: not watched.
            if dhcp.mode == DhcpMode::Full {
                match foreign::bind(&dhcp.interface) {
                    Ok(socket) => {
                        let store = store.clone();
                        tokio::spawn(async move {
                            if let Err(e) = foreign::run(socket, server_ip, store).await {
                                tracing::warn!("watching for other DHCP servers stopped: {e}");
                            }
                        });
                    }
                    Err(e) => tracing::warn!(
                        interface = dhcp.interface,
                        "cannot watch for other DHCP servers' replies on port 68 ({e}); \
                         their answers to machines will not be reported"
                    ),
                }
            }
            if dhcp.event_retention_days > 0 {
                tokio::spawn(prune_events(store.clone(), dhcp.event_retention_days));
            }
            if dhcp.discovery.expire_days > 0 {
                tokio::spawn(expire_discovered(store.clone(), dhcp.discovery.expire_days));
            }
            tracing::info!(
                interface = dhcp.interface,
                %server_ip,
                mode = ?dhcp.mode,
                policy = ?dhcp.policy,
                "DHCP serving"
            );
            if dhcp.ipv6_ra {
                match ra::bind(&dhcp.interface) {
                    Ok((socket, index)) => {
                        let interface = dhcp.interface.clone();
                        tokio::spawn(async move {
                            if let Err(e) = ra::run(socket, interface, index).await {
                                tracing::warn!("router advertisements stopped: {e}");
                            }
                        });
                        tracing::info!(
                            interface = dhcp.interface,
                            "answering IPv6 router solicitations (lifetime 0) so iPXE does not wait"
                        );
                    }
                    Err(e) => tracing::warn!(
                        interface = dhcp.interface,
                        "cannot answer IPv6 router solicitations ({e}); iPXE may wait ~13 s \
                         for a router (set dhcp.ipv6_ra = false to silence this)"
                    ),
                }
            }
            Some(done)
        }
        _ => None,
    };

    // Tests and operators wait for this line.
    tracing::info!(http = %http_addr, url = base_url, "rackboot ready");

    let panel_done = async {
        match panel_task {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    let dhcp_done = async {
        match dhcp_task {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = http_task => match result {
            Ok(Ok(())) => bail!("HTTP server stopped"),
            Ok(Err(e)) => bail!("HTTP server failed: {e}"),
            Err(e) => bail!("HTTP server task failed: {e}"),
        },
        result = panel_done => match result {
            Ok(Ok(())) => bail!("panel server stopped"),
            Ok(Err(e)) => bail!("panel server failed: {e}"),
            Err(e) => bail!("panel server task failed: {e}"),
        },
        result = dhcp_done => match result {
            Ok(Ok(())) => bail!("DHCP server stopped"),
            Ok(Err(e)) => bail!("DHCP server failed: {e}"),
            Err(_) => bail!("DHCP server thread ended unexpectedly"),
        },
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
}

/// The secrets rule as configured: neighbour entries are read on the DHCP interface,
/// the link whose addresses rackboot observes.
fn secrets_rule(config: &Config) -> secrets::Rule {
    let dhcp = config.dhcp.as_ref();
    secrets::Rule::new(
        secrets::Policy {
            trust_observed: dhcp.is_some_and(|d| d.trust_observed_addresses),
        },
        dhcp.map(|d| d.interface.clone()),
    )
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

/// Deletes discovered machines (never adopted) unseen for `[dhcp]
/// discovered_expire_days`, at start and hourly.
async fn expire_discovered(store: Store, expire_days: u32) {
    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        let before_ms = clock::now_ms() - i64::from(expire_days) * 86_400_000;
        match store
            .call(move |conn| store::machines::expire_discovered(conn, before_ms))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                deleted = n,
                expire_days,
                "unseen discovered machines deleted"
            ),
            Err(e) => tracing::warn!("could not expire discovered machines: {e}"),
        }
    }
}

/// Deletes DHCP events past `[dhcp] event_retention_days`, at start and hourly, in
/// steps small enough not to hold up the DHCP server's commits.
async fn prune_events(store: Store, retention_days: u32) {
    const STEP: u32 = 5_000;
    let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        hourly.tick().await;
        let before_ms = clock::now_ms() - i64::from(retention_days) * 86_400_000;
        let mut total = 0;
        loop {
            match store
                .call(move |conn| store::prune_dhcp_events(conn, before_ms, STEP))
                .await
            {
                Ok(n) => {
                    total += n;
                    if n < STEP as usize {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    tracing::warn!("could not prune old DHCP events: {e}");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(deleted = total, retention_days, "old DHCP events pruned");
        }
    }
}

/// Says at start which loader files are missing, so a Secure Boot machine that
/// gets "file not found" for shim is no surprise; the default loader's files are a
/// warning, the others a note.
fn warn_missing_loaders(loaders: &crate::config::BootLoaders) {
    for (arch, files) in [("amd64", &loaders.amd64), ("arm64", &loaders.arm64)] {
        for (what, path) in [("shim", &files.shim), ("grub", &files.grub)] {
            if path.is_file() {
                continue;
            }
            if files.loader == lifecycle::Loader::Grub {
                tracing::warn!(arch, path = %path.display(), "boot.{arch}.{what}: missing, and grub is this architecture's default loader");
            } else {
                tracing::info!(arch, path = %path.display(), "boot.{arch}.{what}: not installed; machines given the grub loader will not boot");
            }
        }
    }
}
