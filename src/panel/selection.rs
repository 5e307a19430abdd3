//! Actions on many machines at once from the machines list: the operator ticks
//! machines (or selects every machine the filter shows), picks an action, checks the
//! list on a confirmation page, and gets one result per machine. Reinstall and
//! rescue are the one-action reprovision (mode, network boot, power-cycle) per
//! machine; the power verbs go to each BMC. All machines are handled at once, BMC
//! calls within `[power] concurrency`.

use super::csrf::CsrfForm;
use super::errors::PanelError;
use super::page::{Nav, PanelResult, call, csrf_of, nav, render, with_notice};
use super::session::Changer;
use crate::auth::Principal;
use crate::http::AppState;
use crate::lifecycle::Mode;
use crate::mac::MacAddr;
use crate::power::{self, Verb};
use crate::service::Caller;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

/// A bulk request is a form, not an upload: a page of machines, with room to spare.
const MAX_SELECTED: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Reprovision(Mode),
    Power(Verb),
}

/// The actions offered on the machines list: form value, button label, action.
const OFFERED: [(&str, &str, Action); 6] = [
    ("reinstall", "Reinstall", Action::Reprovision(Mode::Install)),
    ("rescue", "Rescue", Action::Reprovision(Mode::Rescue)),
    ("on", "Power on", Action::Power(Verb::On)),
    ("off", "Power off", Action::Power(Verb::Off)),
    ("cycle", "Power cycle", Action::Power(Verb::Cycle)),
    ("status", "Read power state", Action::Power(Verb::Status)),
];

/// (form value, button label) of each action, for the machines list's menu.
pub fn offered() -> Vec<(&'static str, &'static str)> {
    OFFERED
        .iter()
        .map(|(value, label, _)| (*value, *label))
        .collect()
}

impl Action {
    fn parse(text: &str) -> Option<Action> {
        OFFERED
            .iter()
            .find(|(value, _, _)| *value == text)
            .map(|(_, _, action)| *action)
    }

    /// Its entry in `OFFERED` (every action is made by `parse` from there).
    fn offered(self) -> (&'static str, &'static str) {
        OFFERED
            .iter()
            .find(|(_, _, action)| *action == self)
            .map_or(("", ""), |(value, label, _)| (*value, *label))
    }

    fn value(self) -> &'static str {
        self.offered().0
    }

    fn label(self) -> &'static str {
        self.offered().1
    }

    /// What the confirmation page says the action will do.
    fn explanation(self) -> &'static str {
        match self {
            Action::Reprovision(Mode::Install) => {
                "Each machine is set to install its image; machines with a power controller are asked to boot from the network and are power-cycled (or powered on) now, the others install on their next network boot."
            }
            Action::Reprovision(_) => {
                "Each machine is set to boot the rescue image; machines with a power controller are asked to boot from the network and are power-cycled (or powered on) now."
            }
            Action::Power(Verb::Off) => {
                "Each machine's BMC cuts its power now, without a clean shutdown."
            }
            Action::Power(Verb::Cycle) => {
                "Each machine's BMC power-cycles it now, without a clean shutdown."
            }
            Action::Power(_) => {
                "Each machine's BMC powers it on (Wake-on-LAN machines get a magic packet)."
            }
        }
    }
}

/// The submitted form: `csrf`, `action`, and `mac` once per ticked machine (a
/// repeated field, which the usual struct form cannot hold).
struct Selection {
    action: Action,
    macs: Vec<MacAddr>,
}

/// The selection in the submitted fields (its CSRF token checked by `CsrfForm`).
fn parse_selection(fields: &[(String, String)]) -> Result<Option<Selection>, PanelError> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let action_text = field("action").unwrap_or("");
    let action = Action::parse(action_text).ok_or_else(|| {
        PanelError::new(
            StatusCode::BAD_REQUEST,
            format!("Unknown action {action_text:?}."),
        )
    })?;
    let mut macs: Vec<MacAddr> = Vec::new();
    for (_, text) in fields.iter().filter(|(k, _)| k == "mac") {
        let mac = MacAddr::parse(text).map_err(|e| {
            PanelError::new(
                StatusCode::BAD_REQUEST,
                format!("{text:?} is not a MAC address: {e}"),
            )
        })?;
        if !macs.contains(&mac) {
            macs.push(mac);
        }
    }
    if macs.len() > MAX_SELECTED {
        return Err(PanelError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{} machines selected; at most {MAX_SELECTED} at once.",
                macs.len()
            ),
        ));
    }
    Ok((!macs.is_empty()).then_some(Selection { action, macs }))
}

pub struct ConfirmRow {
    mac: String,
    hostname: String,
    image: String,
    mode: &'static str,
    power: String,
    /// What the operator should know about this machine's action.
    note: String,
    /// The note says the action will fail here (known before it is tried).
    fails: bool,
}

#[derive(Template)]
#[template(path = "selection_confirm.html")]
struct ConfirmPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    action: &'static str,
    action_value: &'static str,
    explanation: &'static str,
    rows: Vec<ConfirmRow>,
    problems: usize,
}

/// POST /machines/selection: the confirmation page (read-only actions run at once).
pub async fn confirm(
    State(app): State<AppState>,
    Changer(user): Changer,
    CsrfForm(fields): CsrfForm<Vec<(String, String)>>,
) -> PanelResult {
    let Some(selection) = parse_selection(&fields)? else {
        return Ok(with_notice(
            "/machines",
            "Select machines first: tick them in the list, or select all.",
        ));
    };
    if selection.action == Action::Power(Verb::Status) {
        return run_selection(&app, &user, selection).await;
    }
    let action = selection.action;
    let macs = selection.macs.clone();
    let found = call(&app, move |conn| {
        let mut rows = Vec::new();
        for mac in macs {
            let machine = crate::inventory::machine(conn, mac)?;
            let controller = crate::store::power::get_controller(conn, mac)?;
            rows.push((mac, machine, controller));
        }
        Ok(rows)
    })
    .await?;
    let rows: Vec<ConfirmRow> = found
        .into_iter()
        .map(|(mac, machine, controller)| {
            let power = controller
                .as_ref()
                .map_or_else(|| "none".to_string(), power::Controller::summary);
            let Some(m) = machine else {
                return ConfirmRow {
                    mac: mac.to_string(),
                    hostname: String::new(),
                    image: String::new(),
                    mode: "",
                    power,
                    note: "no such machine".into(),
                    fails: true,
                };
            };
            let (note, fails) = match (action, &controller) {
                (Action::Reprovision(Mode::Install), _) if m.image.is_none() => {
                    ("no image assigned: it cannot be reinstalled", true)
                }
                (Action::Power(_), None) => ("no power controller", true),
                (Action::Power(verb), Some(power::Controller::Wol)) if verb != Verb::On => {
                    ("Wake-on-LAN can only power on", true)
                }
                (Action::Reprovision(_), None) => (
                    "no power controller: it acts on its next network boot",
                    false,
                ),
                _ => ("", false),
            };
            ConfirmRow {
                mac: m.mac.clone(),
                hostname: m.hostname.clone().unwrap_or_default(),
                image: m.image.clone().unwrap_or_default(),
                mode: m.mode.as_str(),
                power,
                note: note.to_string(),
                fails,
            }
        })
        .collect();
    let problems = rows.iter().filter(|r| r.fails).count();
    Ok(render(&ConfirmPage {
        nav: nav(&user),
        notice: None,
        error: None,
        csrf: csrf_of(&user),
        action: action.label(),
        action_value: action.value(),
        explanation: action.explanation(),
        rows,
        problems,
    })
    .into_response())
}

pub struct ResultRow {
    mac: String,
    /// `ok`, `warning` or `failed`.
    result: &'static str,
    detail: String,
}

#[derive(Template)]
#[template(path = "selection_result.html")]
struct ResultPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    action: &'static str,
    rows: Vec<ResultRow>,
    done: usize,
    failed: Vec<String>,
}

/// POST /machines/selection/run: the action on every selected machine.
pub async fn run(
    State(app): State<AppState>,
    Changer(user): Changer,
    CsrfForm(fields): CsrfForm<Vec<(String, String)>>,
) -> PanelResult {
    match parse_selection(&fields)? {
        Some(selection) => run_selection(&app, &user, selection).await,
        None => Ok(with_notice("/machines", "No machine was selected.")),
    }
}

async fn run_selection(app: &AppState, user: &Principal, selection: Selection) -> PanelResult {
    let caller = Caller::from_principal(user);
    let rows: Vec<ResultRow> = match selection.action {
        Action::Reprovision(mode) => app
            .services
            .reprovision_many(&caller, selection.macs, mode)
            .await?
            .into_iter()
            .map(|(mac, result)| match result {
                Ok(report) => ResultRow {
                    mac: mac.to_string(),
                    result: if report.power_error.is_some() {
                        "failed"
                    } else if report.steps.iter().any(|s| s.result == "warning") {
                        "warning"
                    } else {
                        "ok"
                    },
                    detail: match &report.power_error {
                        Some(why) => format!("{why}. Steps: {}.", report.describe()),
                        None => format!("{}.", report.describe()),
                    },
                },
                Err(e) => ResultRow {
                    mac: mac.to_string(),
                    result: "failed",
                    detail: e.to_string(),
                },
            })
            .collect(),
        Action::Power(verb) => app
            .services
            .power_many(&caller, selection.macs, verb)
            .await?
            .into_iter()
            .map(|(mac, result)| match result {
                Ok(outcome) => ResultRow {
                    mac: mac.to_string(),
                    result: if outcome.warning.is_some() {
                        "warning"
                    } else {
                        "ok"
                    },
                    detail: match (&outcome.warning, outcome.state) {
                        (Some(w), _) => w.clone(),
                        (None, Some(state)) => format!("power is {}", state.as_str()),
                        (None, None) => format!("power {}: done", verb.as_str()),
                    },
                },
                Err(e) => ResultRow {
                    mac: mac.to_string(),
                    result: "failed",
                    detail: e.to_string(),
                },
            })
            .collect(),
    };
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r.result == "failed")
        .map(|r| r.mac.clone())
        .collect();
    Ok(render(&ResultPage {
        nav: nav(user),
        notice: None,
        error: (!failed.is_empty()).then(|| {
            format!(
                "{} of {} machines failed: see below.",
                failed.len(),
                rows.len()
            )
        }),
        action: selection.action.label(),
        done: rows.len() - failed.len(),
        rows,
        failed,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offered_action_parses_and_is_labelled_as_offered() {
        for (value, label) in offered() {
            let action = Action::parse(value).expect(value);
            assert_eq!(action.label(), label);
            assert_eq!(action.value(), value);
        }
        assert_eq!(Action::parse("wipe"), None, "wipe is one machine at a time");
        assert_eq!(Action::parse(""), None);
    }
}
