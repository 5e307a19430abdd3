//! Leases and address pools: every pool with its use, full ones named, and every lease
//! with its state.

use super::page::{Nav, PanelResult, call, fmt_ms, nav, render};
use super::session::User;
use crate::clock;
use crate::http::AppState;
use crate::store;
use askama::Template;
use axum::extract::State;
use axum::response::IntoResponse;

pub struct LeaseRow {
    ip: String,
    mac: String,
    state: &'static str,
    expires: String,
    hostname: String,
}

#[derive(Template)]
#[template(path = "leases.html")]
struct LeasesPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    pools: Vec<PoolRow>,
    leases: Vec<LeaseRow>,
}

pub struct PoolRow {
    subnet: String,
    range: String,
    size: u64,
    bound: u64,
    declined: u64,
    reserved: u64,
    free: u64,
}

pub async fn page(State(app): State<AppState>, User(user): User) -> PanelResult {
    let now = clock::now_ms() / 1000;
    let subnets = app.subnets.clone();
    let (leases, pools) = call(&app, move |conn| {
        Ok((
            store::list_leases(conn)?,
            store::pool_usage(conn, &subnets, now)?,
        ))
    })
    .await?;
    let full: Vec<String> = pools
        .iter()
        .filter(|p| p.free() == 0)
        .map(pool_label)
        .collect();
    Ok(render(&LeasesPage {
        nav: nav(&user),
        notice: None,
        error: (!full.is_empty()).then(|| {
            format!(
                "Full: {}. New clients get no address there (no existing lease is taken).",
                full.join(", ")
            )
        }),
        pools: pools
            .iter()
            .map(|p| PoolRow {
                subnet: format!("{}/{}", p.network, p.prefix_len),
                range: pool_label(p),
                size: p.size,
                bound: p.bound,
                declined: p.declined,
                reserved: p.reserved,
                free: p.free(),
            })
            .collect(),
        leases: leases
            .into_iter()
            .map(|l| LeaseRow {
                ip: l.ip.to_string(),
                mac: l.mac.to_string(),
                state: match l.state {
                    store::LeaseState::Bound if l.expires_at <= now => "expired",
                    store::LeaseState::Bound => "bound",
                    store::LeaseState::Released => "released",
                    store::LeaseState::Declined => "declined",
                    store::LeaseState::Observed => "observed",
                },
                expires: fmt_ms(Some(l.expires_at * 1000)),
                hostname: l.hostname.unwrap_or_default(),
            })
            .collect(),
    })
    .into_response())
}

/// A pool as the dashboard and this page name it.
pub fn pool_label(p: &store::PoolUsage) -> String {
    format!(
        "{}-{}{}",
        p.pool_start,
        p.pool_end,
        if p.known_only {
            " (inventory machines)"
        } else {
            ""
        }
    )
}
