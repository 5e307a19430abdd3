//! The dashboard: machines by mode, boots in the last hour, boot times of the last
//! day, full address pools, and the latest events.

use super::audit::{EventView, event_views};
use super::leases;
use super::page::{Nav, NoticeQuery, PanelResult, call, nav, render};
use super::session::User;
use crate::clock;
use crate::http::AppState;
use crate::{inventory, store};
use askama::Template;
use axum::extract::{Query, State};
use axum::response::IntoResponse;

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    total: u64,
    by_mode: Vec<(&'static str, u64)>,
    boots_last_hour: u64,
    /// Median and slowest boot of the last day, in seconds.
    boot_times: Option<(String, String)>,
    /// Address ranges with nothing left for a new client.
    full_pools: Vec<String>,
    events: Vec<EventView>,
}

pub async fn page(
    State(app): State<AppState>,
    User(user): User,
    Query(q): Query<NoticeQuery>,
) -> PanelResult {
    let now = clock::now_ms();
    let subnets = app.subnets.clone();
    let (by_mode, boots, times, events, pools) = call(&app, move |conn| {
        Ok((
            inventory::count_by_mode(conn)?,
            inventory::boots_since(conn, now - 3_600_000)?,
            inventory::boot_summary(conn, now - 86_400_000)?,
            inventory::events(conn, None, false, 25)?,
            store::pool_usage(conn, &subnets, now / 1000)?,
        ))
    })
    .await?;
    Ok(render(&DashboardPage {
        nav: nav(&user),
        notice: q.notice,
        error: None,
        total: by_mode.iter().map(|(_, n)| n).sum(),
        by_mode: by_mode.into_iter().map(|(m, n)| (m.as_str(), n)).collect(),
        boots_last_hour: boots,
        boot_times: times.map(|(median, slowest)| {
            (
                format!("{:.1}", median as f64 / 1000.0),
                format!("{:.1}", slowest as f64 / 1000.0),
            )
        }),
        full_pools: pools
            .iter()
            .filter(|p| p.free() == 0)
            .map(leases::pool_label)
            .collect(),
        events: event_views(events),
    })
    .into_response())
}
