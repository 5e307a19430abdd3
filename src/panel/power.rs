//! A machine's power: the power verbs through its BMC (or Wake-on-LAN), the controller
//! form, and the power section of the machine's page (never with the password).

use super::csrf::CsrfForm;
use super::machines::machine_view;
use super::page::{PanelResult, fmt_ms, optional, parse_mac, with_notice};
use super::session::Changer;
use crate::clock;
use crate::http::AppState;
use crate::service::{Caller, ErrorKind};
use axum::extract::{Path, State};
use axum::http::StatusCode;

/// The machine page's power section: the controller without its password, the
/// last state read, and the form's current values.
#[derive(Default)]
pub struct PowerPanel {
    pub kind: String,
    pub summary: String,
    pub state: String,
    pub checked: String,
    pub detail: String,
    pub host: String,
    pub port: String,
    pub user: String,
    pub cipher_suite: String,
    pub url: String,
    pub system_id: String,
    pub verify_tls: bool,
}

pub fn power_panel(
    controller: Option<crate::power::Controller>,
    status: Option<crate::power::CachedStatus>,
) -> PowerPanel {
    let mut p = PowerPanel {
        verify_tls: true,
        port: "623".into(),
        cipher_suite: "3".into(),
        ..PowerPanel::default()
    };
    if let Some(s) = status {
        p.state = s.state;
        p.checked = fmt_ms(Some(s.checked_ms));
        p.detail = s.detail;
    }
    let Some(c) = controller else { return p };
    p.kind = c.kind().into();
    p.summary = c.summary();
    let v = c.view();
    p.host = v.host.unwrap_or_default();
    p.port = v.port.map_or(p.port, |n| n.to_string());
    p.user = v.user.unwrap_or_default();
    p.cipher_suite = v.cipher_suite.map_or(p.cipher_suite, |n| n.to_string());
    p.url = v.url.unwrap_or_default();
    p.system_id = v.system_id.unwrap_or(p.system_id);
    p.verify_tls = v.verify_tls.unwrap_or(true);
    p
}

#[derive(serde::Deserialize)]
pub struct PowerForm {
    action: String,
}

pub async fn action(
    State(app): State<AppState>,
    Changer(user): Changer,
    Path(mac_text): Path<String>,
    CsrfForm(form): CsrfForm<PowerForm>,
) -> PanelResult {
    let mac = parse_mac(&mac_text)?;
    let Some(verb) = crate::power::Verb::parse(&form.action) else {
        return machine_view(
            &app,
            &user,
            mac,
            None,
            Some(format!("Unknown power action {:?}.", form.action)),
        )
        .await;
    };
    let caller = Caller::from_principal(&user);
    match app.services.power(&caller, mac, verb).await {
        Ok(outcome) => {
            let notice = match (&outcome.warning, outcome.state) {
                (Some(w), _) => format!("Power {}: warning: {w}", verb.as_str()),
                (None, Some(state)) => format!("Power {}: {}.", verb.as_str(), state.as_str()),
                (None, None) => format!("Power {}: done.", verb.as_str()),
            };
            Ok(with_notice(&format!("/machines/{mac}"), &notice))
        }
        Err(e) if matches!(e.kind(), ErrorKind::Internal | ErrorKind::NotFound) => Err(e.into()),
        // The BMC failed or there is none to ask: said on the machine's page.
        Err(e) => {
            let mut response = machine_view(&app, &user, mac, None, Some(e.to_string())).await?;
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(response)
        }
    }
}

#[derive(serde::Deserialize)]
pub struct ControllerForm {
    kind: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    cipher_suite: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    system_id: String,
    verify_tls: Option<String>,
}

fn controller_spec(form: &ControllerForm) -> Result<Option<crate::power::ControllerSpec>, String> {
    let number = |text: &str, what: &str| -> Result<Option<u16>, String> {
        optional(text)
            .map(|t| {
                t.parse::<u16>()
                    .map_err(|_| format!("{what} {t:?} is not a number."))
            })
            .transpose()
    };
    let password = optional(&form.password);
    Ok(match form.kind.as_str() {
        "none" => None,
        "ipmi" => Some(crate::power::ControllerSpec::Ipmi {
            host: form.host.clone(),
            port: number(&form.port, "Port")?,
            user: form.user.trim().to_string(),
            password,
            cipher_suite: number(&form.cipher_suite, "Cipher suite")?
                .map(|n| u8::try_from(n).unwrap_or(u8::MAX)),
        }),
        "redfish" => Some(crate::power::ControllerSpec::Redfish {
            url: form.url.clone(),
            user: form.user.trim().to_string(),
            password,
            system_id: optional(&form.system_id),
            verify_tls: Some(form.verify_tls.is_some()),
        }),
        "wol" => Some(crate::power::ControllerSpec::Wol),
        other => return Err(format!("Unknown controller kind {other:?}.")),
    })
}

pub async fn controller(
    State(app): State<AppState>,
    Changer(user): Changer,
    Path(mac_text): Path<String>,
    CsrfForm(form): CsrfForm<ControllerForm>,
) -> PanelResult {
    let mac = parse_mac(&mac_text)?;
    let spec = match controller_spec(&form) {
        Ok(spec) => spec,
        Err(why) => return machine_view(&app, &user, mac, None, Some(why)).await,
    };
    let (caller, now) = (Caller::from_principal(&user), clock::now_ms());
    let result = match spec {
        Some(spec) => app
            .services
            .set_controller(&caller, now, mac, spec)
            .await
            .map(Some),
        None => app
            .services
            .remove_controller(&caller, now, mac)
            .await
            .map(|()| None),
    };
    match result {
        Ok(Some(c)) => Ok(with_notice(
            &format!("/machines/{mac}"),
            &format!("Power controller set: {}.", c.summary()),
        )),
        Ok(None) => Ok(with_notice(
            &format!("/machines/{mac}"),
            "Power controller removed.",
        )),
        Err(e) if e.kind() != ErrorKind::Internal => {
            machine_view(&app, &user, mac, None, Some(e.to_string())).await
        }
        Err(e) => Err(e.into()),
    }
}
