//! Machines: the list (search, filter by mode, sort, pages, the selection form), a new
//! machine, a machine's page, and its mode (reinstall, rescue and wipe as one action
//! with the power controller), image, settings, deletion and the wipe confirmation.

use super::audit::{EventView, event_views};
use super::csrf::{CsrfForm, NoFields};
use super::errors::{PanelError, shown};
use super::page::{
    Nav, NoticeQuery, PanelResult, call, csrf_of, fmt_ms, nav, optional, parse_mac, render,
    status_for, urlencode, with_notice,
};
use super::session::{Changer, User};
use super::{power, selection};
use crate::auth::Principal;
use crate::clock;
use crate::http::AppState;
use crate::inventory::{self, MachineDetail, MachinePatch, MachineQuery, SortBy};
use crate::lifecycle::{self, EXIT_METHODS, ExitMethod, LOADERS, Loader, MODES, Mode};
use crate::mac::MacAddr;
use crate::service::Caller;
use crate::service::machines::NewMachine;
use crate::store;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use std::net::Ipv4Addr;

const PAGE_SIZE: u32 = 100;

pub struct MachineRow {
    mac: String,
    hostname: String,
    ip: String,
    image: String,
    mode: &'static str,
    arch: String,
    rack: String,
    last_seen: String,
    /// The last power state read (`on`, `off`, `error`), `wol`, or empty.
    power: String,
}

#[derive(Template)]
#[template(path = "machines.html")]
struct MachinesPage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    can_change: bool,
    csrf: String,
    /// Every machine shown starts ticked (`?select=all`: no script in the panel).
    select_all: bool,
    select_all_url: String,
    select_none_url: String,
    actions: Vec<(&'static str, &'static str)>,
    machines: Vec<MachineRow>,
    total: u64,
    first: u64,
    last: u64,
    q: String,
    mode: String,
    sort: String,
    modes: Vec<&'static str>,
    sorts: Vec<(&'static str, &'static str)>,
    prev_url: Option<String>,
    next_url: Option<String>,
}

#[derive(serde::Deserialize, Default)]
pub struct MachinesQuery {
    q: Option<String>,
    mode: Option<String>,
    sort: Option<String>,
    page: Option<u32>,
    select: Option<String>,
    notice: Option<String>,
}

const SORTS: [(&str, &str); 6] = [
    ("mac", "MAC"),
    ("hostname", "hostname"),
    ("ip", "IP"),
    ("image", "image"),
    ("mode", "mode"),
    ("seen", "last seen"),
];

pub async fn list(
    State(app): State<AppState>,
    User(user): User,
    Query(q): Query<MachinesQuery>,
) -> PanelResult {
    let mode = q
        .mode
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(str::parse::<Mode>)
        .transpose()
        .map_err(|e| PanelError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    let sort_name = q.sort.clone().unwrap_or_else(|| "mac".into());
    let sort: SortBy = serde_json::from_value(serde_json::Value::String(sort_name.clone()))
        .map_err(|_| {
            PanelError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown sort {sort_name:?}"),
            )
        })?;
    let page = q.page.unwrap_or(0);
    let query = MachineQuery {
        search: q.q.clone(),
        mode,
        sort,
        offset: page.saturating_mul(PAGE_SIZE),
        limit: PAGE_SIZE,
    };
    let (found, total, mut power) = call(&app, move |conn| {
        let (found, total) = inventory::search(conn, &query)?;
        Ok((found, total, crate::store::power::power_column(conn)?))
    })
    .await?;
    let link = |page: u32| {
        format!(
            "/machines?q={}&mode={}&sort={}&page={page}",
            urlencode(q.q.as_deref().unwrap_or("")),
            mode.map_or("", Mode::as_str),
            sort_name
        )
    };
    let first = u64::from(page) * u64::from(PAGE_SIZE);
    let shown = found.len() as u64;
    Ok(render(&MachinesPage {
        nav: nav(&user),
        notice: q.notice.clone(),
        error: None,
        can_change: user.role.can_change(),
        csrf: csrf_of(&user),
        select_all: q.select.as_deref() == Some("all"),
        select_all_url: format!("{}&select=all", link(page)),
        select_none_url: link(page),
        actions: selection::offered(),
        machines: found
            .into_iter()
            .map(|m| MachineRow {
                power: power.remove(&m.mac).unwrap_or_default(),
                ip: m.current_ip().map(|ip| ip.to_string()).unwrap_or_default(),
                mac: m.mac,
                hostname: m.hostname.unwrap_or_default(),
                image: m.image.unwrap_or_default(),
                mode: m.mode.as_str(),
                arch: m.arch.unwrap_or_default(),
                rack: m.rack.unwrap_or_default(),
                last_seen: fmt_ms(m.last_seen_ms),
            })
            .collect(),
        total,
        first: if shown == 0 { 0 } else { first + 1 },
        last: first + shown,
        q: q.q.clone().unwrap_or_default(),
        mode: mode.map_or(String::new(), |m| m.as_str().to_string()),
        sort: sort_name.clone(),
        modes: MODES.iter().map(|m| m.as_str()).collect(),
        sorts: SORTS.to_vec(),
        prev_url: (page > 0).then(|| link(page - 1)),
        next_url: (first + shown < total).then(|| link(page + 1)),
    })
    .into_response())
}

#[derive(Template)]
#[template(path = "machine.html")]
struct MachinePage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    can_change: bool,
    m: MachineDetail,
    image_label: String,
    fixed_ip: String,
    fixed_ip_input: String,
    hostname: String,
    lease: String,
    arch: String,
    first_seen: String,
    last_seen: String,
    installed: String,
    wiped: String,
    exit_command: &'static str,
    rack: String,
    rack_input: String,
    position: String,
    position_input: String,
    token_expires: Option<String>,
    images: Vec<String>,
    exit_methods: Vec<(&'static str, &'static str)>,
    loaders: Vec<(&'static str, &'static str)>,
    loader: &'static str,
    events: Vec<EventView>,
    /// Server-rendered SVG of the last boots (numbers and fixed labels only).
    timeline_svg: String,
    boot_count: usize,
    /// What went wrong in the current boot, newest first, with when it was seen.
    diagnoses: Vec<(String, String)>,
    power: power::PowerPanel,
}

pub async fn machine_view(
    app: &AppState,
    user: &Principal,
    mac: MacAddr,
    notice: Option<String>,
    error: Option<String>,
) -> PanelResult {
    let (machine, images, events, boots, power, diagnoses) = call(app, move |conn| {
        let machine = inventory::machine(conn, mac)?;
        let power = (
            crate::store::power::get_controller(conn, mac)?,
            crate::store::power::cached_status(conn, mac)?,
        );
        let images = store::list_images(conn)?
            .into_iter()
            .map(|i| i.name)
            .collect::<Vec<_>>();
        let events = inventory::events(conn, Some(mac), false, 200)?;
        let boots = inventory::boots(conn, mac, 8)?;
        let diagnoses = crate::service::diagnosis::current_in(conn, mac)?;
        Ok((machine, images, events, boots, power, diagnoses))
    })
    .await?;
    let Some(m) = machine else {
        return Err(PanelError::new(
            StatusCode::NOT_FOUND,
            format!("No machine {mac}."),
        ));
    };
    let status = status_for(&error);
    let image_label = match (m.mode, &m.image) {
        (Mode::Rescue, _) => format!(
            "{} (booting rescue image {})",
            m.image.as_deref().unwrap_or("-"),
            app.lifecycle.rescue_image.as_deref().unwrap_or("-")
        ),
        (Mode::Wipe, _) => format!(
            "{} (booting wipe image {})",
            m.image.as_deref().unwrap_or("-"),
            app.lifecycle.wipe_image.as_deref().unwrap_or("-")
        ),
        (_, Some(image)) => image.clone(),
        (_, None) => "-".into(),
    };
    let page = MachinePage {
        nav: nav(user),
        notice,
        error,
        csrf: csrf_of(user),
        can_change: user.role.can_change(),
        image_label,
        fixed_ip: m.ip.map_or("-".into(), |ip| ip.to_string()),
        fixed_ip_input: m.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        hostname: m.hostname.clone().unwrap_or_default(),
        lease: match (m.lease_ip, m.lease_expires_at) {
            (Some(ip), Some(exp)) => format!("{ip} until {}", fmt_ms(Some(exp * 1000))),
            _ => "-".into(),
        },
        arch: m.arch.clone().unwrap_or_else(|| "-".into()),
        first_seen: fmt_ms(m.first_seen_ms),
        last_seen: fmt_ms(m.last_seen_ms),
        installed: fmt_ms(m.installed_ms),
        wiped: fmt_ms(m.wiped_ms),
        exit_command: m.exit_method.command(),
        rack: m.rack.clone().unwrap_or_else(|| "-".into()),
        rack_input: m.rack.clone().unwrap_or_default(),
        position: m.position.clone().unwrap_or_else(|| "-".into()),
        position_input: m.position.clone().unwrap_or_default(),
        token_expires: m
            .token_expires_ms
            .filter(|_| m.mode.takes_token())
            .map(|t| fmt_ms(Some(t))),
        images,
        exit_methods: EXIT_METHODS
            .iter()
            .map(|e| (e.as_str(), e.command()))
            .collect(),
        loaders: LOADERS.iter().map(|l| (l.as_str(), l.label())).collect(),
        loader: m.loader.map_or("default", Loader::as_str),
        events: event_views(events),
        timeline_svg: crate::timeline::svg(&boots, |ms| {
            fmt_ms(Some(ms)).get(5..19).unwrap_or("").to_string()
        }),
        boot_count: boots.len(),
        diagnoses: diagnoses
            .into_iter()
            .map(|d| (fmt_ms(Some(d.at_ms)), d.message))
            .collect(),
        power: power::power_panel(power.0, power.1),
        m,
    };
    Ok((status, render(&page)).into_response())
}

pub async fn page(
    State(app): State<AppState>,
    User(user): User,
    Path(mac): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> PanelResult {
    machine_view(&app, &user, parse_mac(&mac)?, q.notice, None).await
}

#[derive(serde::Deserialize)]
pub struct ModeForm {
    mode: String,
    confirm: Option<String>,
}

pub async fn set_mode(
    State(app): State<AppState>,
    Changer(user): Changer,
    Path(mac_text): Path<String>,
    CsrfForm(form): CsrfForm<ModeForm>,
) -> PanelResult {
    let mac = parse_mac(&mac_text)?;
    let mode: Mode = match form.mode.parse() {
        Ok(mode) => mode,
        Err(e) => return machine_view(&app, &user, mac, None, Some(e.to_string())).await,
    };
    if mode == Mode::Wipe {
        let confirmed = form
            .confirm
            .as_deref()
            .and_then(|c| MacAddr::parse(c.trim()).ok())
            == Some(mac);
        if !confirmed {
            return machine_view(
                &app,
                &user,
                mac,
                None,
                Some("Wipe not confirmed: type the machine's MAC address to confirm.".into()),
            )
            .await;
        }
    }
    if matches!(mode, Mode::Install | Mode::Rescue | Mode::Wipe) {
        // One action: the mode, then (with a power controller) a network boot and a
        // power-cycle. A failed power step keeps the mode and is shown as an error.
        let result = app
            .services
            .reprovision(&Caller::from_principal(&user), mac, mode)
            .await;
        return match result {
            Ok(report) => match &report.power_error {
                None if report.steps.len() > 2 => Ok(with_notice(
                    &format!("/machines/{mac}"),
                    &format!(
                        "{} started through the BMC: {}.",
                        mode_action(mode),
                        report.describe()
                    ),
                )),
                None => Ok(with_notice(&format!("/machines/{mac}"), &mode_notice(mode))),
                Some(why) => {
                    let mut response = machine_view(
                        &app,
                        &user,
                        mac,
                        None,
                        Some(format!("{why}. Steps: {}.", report.describe())),
                    )
                    .await?;
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                    Ok(response)
                }
            },
            Err(e) => machine_view(&app, &user, mac, None, Some(shown(e)?)).await,
        };
    }
    let result = app
        .services
        .set_mode(&Caller::from_principal(&user), clock::now_ms(), mac, mode)
        .await;
    match result {
        Ok(_) => Ok(with_notice(&format!("/machines/{mac}"), &mode_notice(mode))),
        Err(e) => machine_view(&app, &user, mac, None, Some(shown(e)?)).await,
    }
}

fn mode_action(mode: Mode) -> &'static str {
    match mode {
        Mode::Install => "Reinstall",
        Mode::Rescue => "Rescue",
        Mode::Wipe => "Wipe",
        Mode::Boot => "Boot image",
        Mode::Local => "Local boot",
    }
}

fn mode_notice(mode: Mode) -> String {
    match mode {
        Mode::Install => "Reinstall set: the machine installs its image on its next boot.".into(),
        Mode::Wipe => "Wipe set: the machine is wiped on its next boot.".into(),
        other => format!("Mode set to {other}."),
    }
}

#[derive(serde::Deserialize)]
pub struct ImageForm {
    image: String,
}

pub async fn set_image(
    State(app): State<AppState>,
    Changer(user): Changer,
    Path(mac_text): Path<String>,
    CsrfForm(form): CsrfForm<ImageForm>,
) -> PanelResult {
    let mac = parse_mac(&mac_text)?;
    let image = Some(form.image.trim().to_string()).filter(|s| !s.is_empty());
    let result = app
        .services
        .set_image(&Caller::from_principal(&user), clock::now_ms(), mac, image)
        .await;
    match result {
        Ok(m) => Ok(with_notice(
            &format!("/machines/{mac}"),
            &format!("Image set to {}.", m.image.as_deref().unwrap_or("none")),
        )),
        Err(e) => machine_view(&app, &user, mac, None, Some(shown(e)?)).await,
    }
}

#[derive(serde::Deserialize)]
pub struct SettingsForm {
    hostname: String,
    ip: String,
    exit_method: String,
    /// Absent from forms older than the loader choice: the default then.
    #[serde(default)]
    loader: String,
    rack: String,
    position: String,
    ssh_keys: String,
}

/// The form as a patch; the field rules themselves are the service layer's.
fn settings_patch(form: &SettingsForm) -> Result<MachinePatch, String> {
    let hostname = optional(&form.hostname);
    // The form shows the first problem in field order, so the host name (the rule is
    // the service layer's) is checked before the address is even parsed.
    if let Some(h) = &hostname {
        crate::service::machines::check_hostname(h).map_err(|e| e.to_string())?;
    }
    let ip = optional(&form.ip)
        .map(|t| {
            t.parse::<Ipv4Addr>()
                .map_err(|_| format!("Fixed IP {t:?} is not an IPv4 address."))
        })
        .transpose()?;
    let exit_method: ExitMethod = form
        .exit_method
        .parse()
        .map_err(|e: lifecycle::ParseError| e.to_string())?;
    let loader = optional(&form.loader)
        .filter(|l| l != "default")
        .map(|l| l.parse::<Loader>())
        .transpose()
        .map_err(|e| e.to_string())?;
    Ok(MachinePatch {
        hostname: Some(hostname),
        ip: Some(ip),
        exit_method: Some(exit_method),
        loader: Some(loader),
        ssh_keys: Some(form.ssh_keys.trim().to_string()),
        rack: Some(optional(&form.rack)),
        position: Some(optional(&form.position)),
    })
}

pub async fn save_settings(
    State(app): State<AppState>,
    Changer(user): Changer,
    Path(mac_text): Path<String>,
    CsrfForm(form): CsrfForm<SettingsForm>,
) -> PanelResult {
    let mac = parse_mac(&mac_text)?;
    let patch = match settings_patch(&form) {
        Ok(patch) => patch,
        Err(why) => return machine_view(&app, &user, mac, None, Some(why)).await,
    };
    match app
        .services
        .update_machine(&Caller::from_principal(&user), clock::now_ms(), mac, patch)
        .await
    {
        Ok(_) => Ok(with_notice(&format!("/machines/{mac}"), "Settings saved.")),
        Err(e) => machine_view(&app, &user, mac, None, Some(shown(e)?)).await,
    }
}

pub async fn delete(
    State(app): State<AppState>,
    Changer(user): Changer,
    Path(mac_text): Path<String>,
    _: CsrfForm<NoFields>,
) -> PanelResult {
    let mac = parse_mac(&mac_text)?;
    app.services
        .delete_machine(&Caller::from_principal(&user), clock::now_ms(), mac)
        .await?;
    Ok(with_notice("/machines", &format!("Machine {mac} deleted.")))
}

#[derive(Template)]
#[template(path = "wipe_confirm.html")]
struct WipePage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    mac: String,
    csrf: String,
    wipe_image: String,
}

pub async fn wipe_confirm(
    State(app): State<AppState>,
    Changer(user): Changer,
    Path(mac_text): Path<String>,
) -> PanelResult {
    let mac = parse_mac(&mac_text)?;
    let Some(wipe_image) = app.lifecycle.wipe_image.clone() else {
        return machine_view(
            &app,
            &user,
            mac,
            None,
            Some("No wipe image is configured ([lifecycle] wipe_image).".into()),
        )
        .await;
    };
    Ok(render(&WipePage {
        nav: nav(&user),
        notice: None,
        error: None,
        mac: mac.to_string(),
        csrf: csrf_of(&user),
        wipe_image,
    })
    .into_response())
}

#[derive(Template)]
#[template(path = "machine_new.html")]
struct NewMachinePage {
    nav: Option<Nav>,
    notice: Option<String>,
    error: Option<String>,
    csrf: String,
    images: Vec<String>,
    form: NewMachineForm,
}

#[derive(serde::Deserialize, Default, Clone)]
pub struct NewMachineForm {
    #[serde(default)]
    mac: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    rack: String,
    #[serde(default)]
    position: String,
}

/// The form as a new machine: parsing only, the rules are the service layer's.
fn new_machine(form: &NewMachineForm) -> Result<NewMachine, String> {
    let mac = match form.mac.trim() {
        "" => return Err("MAC is missing".into()),
        text => MacAddr::parse(text).map_err(|_| format!("{text:?} is not a MAC address"))?,
    };
    let ip = optional(&form.ip)
        .map(|t| {
            t.parse::<Ipv4Addr>()
                .map_err(|_| format!("{t:?} is not an IPv4 address"))
        })
        .transpose()?;
    Ok(NewMachine {
        hostname: optional(&form.hostname),
        ip,
        image: optional(&form.image),
        rack: optional(&form.rack),
        position: optional(&form.position),
        ..NewMachine::new(mac)
    })
}

async fn image_names(app: &AppState) -> Result<Vec<String>, PanelError> {
    call(app, |conn| {
        Ok(store::list_images(conn)?
            .into_iter()
            .map(|i| i.name)
            .collect())
    })
    .await
}

pub async fn new_page(State(app): State<AppState>, Changer(user): Changer) -> PanelResult {
    Ok(render(&NewMachinePage {
        nav: nav(&user),
        notice: None,
        error: None,
        csrf: csrf_of(&user),
        images: image_names(&app).await?,
        form: NewMachineForm::default(),
    })
    .into_response())
}

pub async fn create(
    State(app): State<AppState>,
    Changer(user): Changer,
    CsrfForm(form): CsrfForm<NewMachineForm>,
) -> PanelResult {
    let result = match new_machine(&form) {
        Err(why) => Err(why),
        Ok(new) => {
            let caller = Caller::from_principal(&user);
            match app
                .services
                .add_machine(&caller, clock::now_ms(), new)
                .await
            {
                Ok(added) => Ok(added.mac),
                Err(e) => Err(shown(e)?),
            }
        }
    };
    match result {
        Ok(mac) => Ok(with_notice(&format!("/machines/{mac}"), "Machine added.")),
        Err(why) => Ok((
            StatusCode::BAD_REQUEST,
            render(&NewMachinePage {
                nav: nav(&user),
                notice: None,
                error: Some(why),
                csrf: csrf_of(&user),
                images: image_names(&app).await?,
                form,
            }),
        )
            .into_response()),
    }
}
