//! `rackboot serve`: starts HTTP, TFTP and DHCP in one process over one inventory.

use crate::config::Config;
use crate::dhcp::boot::BootConfig;
use crate::dhcp::server::{self as dhcp_server, DhcpServer};
use crate::http::{self, AppState};
use crate::netif;
use crate::store::Store;
use crate::tftp;
use crate::{auth, lifecycle, panel, ra};
use anyhow::{Context as _, bail};
use std::net::SocketAddr;

pub async fn run(config: Config, store: Store) -> anyhow::Result<()> {
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
            if !dhcp.subnets.iter().any(|s| s.contains(ip)) {
                tracing::warn!(
                    interface = dhcp.interface,
                    %ip,
                    "no dhcp.subnets entry contains the interface address: only relayed \
                     requests will be answered"
                );
            }
            Some(ip)
        }
    };
    let base_url = match (&config.http.url, dhcp_addr) {
        (Some(url), _) => url.clone(),
        (None, Some(ip)) => format!("http://{ip}:{}", config.http.listen.port()),
        (None, None) => format!("http://{}", config.http.listen),
    };

    let mut state = AppState::new(
        store.clone(),
        config.data_dir.clone(),
        base_url.clone(),
        config.lifecycle.clone(),
    );
    state.secure_cookies = config.panel.tls.is_some();
    state.power = std::sync::Arc::new(crate::power::Power::new(config.power.clone()));
    // The power column of the panel: every BMC read at a modest rate, limited by
    // the same semaphore as the verbs operators send.
    tokio::spawn(crate::power::poll_loop(store.clone(), state.power.clone()));
    let panel_url = match (&config.panel.listen, &config.panel.tls) {
        (Some(addr), Some(_)) => format!("https://{addr}"),
        (Some(addr), None) => format!("http://{addr}"),
        (None, _) => base_url.clone(),
    };
    if store.call(|conn| auth::user_count(conn)).await? == 0 {
        let token = lifecycle::new_token();
        *state.setup_token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token.clone());
        // Printed, not logged to a file someone else reads later: it grants admin.
        eprintln!(
            "rackboot: no user exists yet. Create the first admin at {panel_url}/setup/{token} \
             (works once), or run `rackboot user add NAME --role admin`."
        );
    }

    let panel_task = match &config.panel.listen {
        None => None,
        Some(addr) => {
            let panel =
                panel::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
            let addr = *addr;
            let task = match &config.panel.tls {
                Some(tls) => {
                    let _ = rustls::crypto::ring::default_provider().install_default();
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
                    let server = axum_server::bind_rustls(addr, rustls_config);
                    tokio::spawn(async move { server.serve(panel).await })
                }
                None => {
                    let listener = tokio::net::TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("panel.listen: cannot listen on {addr}"))?;
                    tokio::spawn(async move { axum::serve(listener, panel).await })
                }
            };
            tracing::info!(url = panel_url, "admin panel and API on their own address");
            Some(task)
        }
    };
    let app = if panel_task.is_some() {
        http::boot_router(state, config.ipxe.dir.clone())
    } else {
        http::router(state, config.ipxe.dir.clone())
    };
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen: cannot listen on {}", config.http.listen))?;
    let http_addr = listener.local_addr()?;
    let http_task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    if let Some(tftp_config) = &config.tftp {
        if !config.ipxe.dir.is_dir() {
            tracing::warn!(
                dir = %config.ipxe.dir.display(),
                "tftp.ipxe_dir does not exist: firmware PXE clients will get file-not-found \
                 (install Debian's `ipxe` package or set tftp.ipxe_dir)"
            );
        }
        let bound = tftp::spawn(tftp_config.listen, config.ipxe.dir.clone(), store.clone())
            .context("tftp.listen")?;
        tracing::info!(%bound, dir = %config.ipxe.dir.display(), "TFTP serving iPXE binaries");
    }

    let dhcp_task = match (&config.dhcp, dhcp_addr) {
        (Some(dhcp), Some(server_ip)) => {
            let socket = dhcp_server::bind(&dhcp.interface).with_context(|| {
                format!(
                    "dhcp.interface: cannot listen on port 67 of {} (needs root or \
                     CAP_NET_BIND_SERVICE and CAP_NET_RAW)",
                    dhcp.interface
                )
            })?;
            let boot = BootConfig {
                server_ip,
                http_url: base_url.clone(),
                bios_file: config.ipxe.bios.clone(),
                uefi_x64_file: config.ipxe.uefi_x64.clone(),
                uefi_arm64_file: config.ipxe.uefi_arm64.clone(),
                arm64_available: config.ipxe.dir.join(&config.ipxe.uefi_arm64).is_file(),
            };
            let server = DhcpServer::new(
                socket,
                dhcp.interface.clone(),
                server_ip,
                dhcp.subnets.clone(),
                boot,
                store.clone(),
            )
            .await?;
            tracing::info!(interface = dhcp.interface, %server_ip, "DHCP serving");
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
            Some(tokio::spawn(server.run()))
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
            Err(e) => bail!("DHCP server task failed: {e}"),
        },
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    }
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
