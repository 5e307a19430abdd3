//! The audit log page, and the event rows the dashboard and a machine's page show too.

use super::page::{Nav, PanelResult, call, fmt_ms, nav, render};
use super::session::User;
use crate::http::AppState;
use crate::inventory::{self, AuditEvent};
use askama::Template;
use axum::extract::State;
use axum::response::IntoResponse;

/// One event as `events_table.html` shows it.
pub struct EventView {
    pub time: String,
    pub mac: Option<String>,
    pub kind: String,
    pub detail: String,
    pub actor: String,
    pub class: &'static str,
}

pub fn event_views(events: Vec<AuditEvent>) -> Vec<EventView> {
    events
        .into_iter()
        .map(|e| EventView {
            time: fmt_ms(Some(e.at_ms)),
            class: if e.kind.ends_with(".done") {
                "done"
            } else if e.kind.ends_with(".failed") || e.kind == "dhcp.nak" {
                "failed"
            } else {
                "plain"
            },
            mac: e.mac,
            kind: e.kind,
            detail: e.detail,
            actor: e.actor.unwrap_or_default(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    events: Vec<EventView>,
}

pub async fn page(State(app): State<AppState>, User(user): User) -> PanelResult {
    let events = call(&app, |conn| inventory::events(conn, None, true, 500)).await?;
    Ok(render(&AuditPage {
        nav: nav(&user),
        notice: None,
        error: None,
        events: event_views(events),
    })
    .into_response())
}
