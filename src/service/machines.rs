//! Machines: add (or adopt a discovered one), edit, delete, set mode, set image,
//! and a machine's own done-URL call. The field checks here are the only ones: the
//! panel's forms, the API, the CLI and the import checker all use them.

use super::{Caller, Need, ServiceError, Services};
use crate::config::Subnet;
use crate::inventory::{self, MachineDetail, MachinePatch};
use crate::lifecycle::{self, DoneOutcome, ExitMethod, LifecycleConfig, Mode};
use crate::mac::MacAddr;
use crate::store::Db;
use crate::store::{self, StoreError};
use crate::validate::valid_hostname;
use std::net::Ipv4Addr;

/// The longest rack or position label: they are shown in tables and exported.
pub const MAX_LABEL_CHARS: usize = 64;
/// The most SSH key text one machine carries.
pub const MAX_SSH_KEYS_BYTES: usize = 16 * 1024;

/// A machine to add, as the caller gave it (already parsed into types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMachine {
    pub mac: MacAddr,
    pub hostname: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub image: Option<String>,
    pub rack: Option<String>,
    pub position: Option<String>,
    pub exit_method: Option<ExitMethod>,
    /// `None`: the default for its architecture.
    pub loader: Option<crate::lifecycle::Loader>,
    pub ssh_keys: Option<String>,
}

impl NewMachine {
    pub fn new(mac: MacAddr) -> Self {
        NewMachine {
            mac,
            hostname: None,
            ip: None,
            image: None,
            rack: None,
            position: None,
            exit_method: None,
            loader: None,
            ssh_keys: None,
        }
    }
}

pub fn check_hostname(hostname: &str) -> Result<(), ServiceError> {
    if valid_hostname(hostname) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "hostname",
            format!("hostname {hostname:?} is not a valid host name"),
        ))
    }
}

/// A fixed address must lie in a subnet rackboot serves, when it serves any.
pub fn check_ip(ip: Ipv4Addr, subnets: &[Subnet]) -> Result<(), ServiceError> {
    if subnets.is_empty() || subnets.iter().any(|s| s.contains(ip)) {
        Ok(())
    } else {
        Err(ServiceError::invalid(
            "ip",
            format!("ip {ip} is not inside any configured dhcp.subnets"),
        ))
    }
}

pub fn check_label(field: &'static str, text: &str) -> Result<(), ServiceError> {
    if text.chars().count() > MAX_LABEL_CHARS || text.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            field,
            format!(
                "{field} {:?} must be at most {MAX_LABEL_CHARS} characters, without control characters",
                text.chars().take(MAX_LABEL_CHARS).collect::<String>()
            ),
        ));
    }
    Ok(())
}

/// One public key a line; blank lines are allowed.
pub fn check_ssh_keys(text: &str) -> Result<(), ServiceError> {
    if text.len() > MAX_SSH_KEYS_BYTES {
        return Err(ServiceError::invalid(
            "ssh_keys",
            format!("SSH keys are limited to {MAX_SSH_KEYS_BYTES} bytes"),
        ));
    }
    for key in text.lines().map(str::trim).filter(|k| !k.is_empty()) {
        if !key.starts_with("ssh-") && !key.starts_with("ecdsa-") && !key.starts_with("sk-") {
            return Err(ServiceError::invalid(
                "ssh_keys",
                format!("{key:.30}... does not look like an SSH public key"),
            ));
        }
    }
    Ok(())
}

/// The details a machine may be given, checked without the database.
pub struct Fields<'a> {
    pub hostname: Option<&'a str>,
    pub ip: Option<Ipv4Addr>,
    pub rack: Option<&'a str>,
    pub position: Option<&'a str>,
    pub ssh_keys: Option<&'a str>,
}

/// Every problem with `fields` that needs no database, in form order.
pub fn field_problems(fields: &Fields<'_>, subnets: &[Subnet]) -> Vec<ServiceError> {
    let mut problems = Vec::new();
    if let Some(h) = fields.hostname
        && let Err(e) = check_hostname(h)
    {
        problems.push(e);
    }
    if let Some(ip) = fields.ip
        && let Err(e) = check_ip(ip, subnets)
    {
        problems.push(e);
    }
    for (field, value) in [("rack", fields.rack), ("position", fields.position)] {
        if let Some(text) = value
            && let Err(e) = check_label(field, text)
        {
            problems.push(e);
        }
    }
    if let Some(keys) = fields.ssh_keys
        && let Err(e) = check_ssh_keys(keys)
    {
        problems.push(e);
    }
    problems
}

/// Problems against the inventory: `ip` fixed for another machine, `image` unknown.
pub fn inventory_problems(
    tx: &Db,
    mac: Option<MacAddr>,
    ip: Option<Ipv4Addr>,
    image: Option<&str>,
) -> Result<Vec<ServiceError>, StoreError> {
    let mut problems = Vec::new();
    if let Some(ip) = ip
        && let Some(owner) = inventory::fixed_owner(tx, ip)?
        && Some(owner) != mac
    {
        problems.push(ServiceError::AddressTaken { ip, owner });
    }
    if let Some(name) = image
        && store::get_image(tx, name)?.is_none()
    {
        problems.push(unknown_image(name));
    }
    Ok(problems)
}

/// An image named in a machine's fields that does not exist: a bad field.
pub fn unknown_image(name: &str) -> ServiceError {
    ServiceError::invalid("image", format!("no image named {name:?}"))
}

fn first(problems: Vec<ServiceError>) -> Result<(), ServiceError> {
    match problems.into_iter().next() {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

fn require_machine(tx: &Db, mac: MacAddr) -> Result<MachineDetail, ServiceError> {
    inventory::machine(tx, mac)?.ok_or(ServiceError::NoSuchMachine(mac))
}

/// Adds a machine inside the caller's transaction (add and import share it). A
/// machine the DHCP server discovered is adopted: the operator's details replace
/// the empty ones and what was seen of it stays. One added with an image starts in
/// `install`; one without in `local`.
pub fn add_in(
    tx: &Db,
    new: &NewMachine,
    lifecycle: &LifecycleConfig,
    subnets: &[Subnet],
    actor: &str,
    now_ms: i64,
) -> Result<(), ServiceError> {
    first(field_problems(
        &Fields {
            hostname: new.hostname.as_deref(),
            ip: new.ip,
            rack: new.rack.as_deref(),
            position: new.position.as_deref(),
            ssh_keys: new.ssh_keys.as_deref(),
        },
        subnets,
    ))?;
    let adopting = match store::get_machine(tx, new.mac)? {
        Some(existing) if existing.discovered => true,
        Some(_) => return Err(ServiceError::MachineExists(new.mac)),
        None => false,
    };
    first(inventory_problems(
        tx,
        Some(new.mac),
        new.ip,
        new.image.as_deref(),
    )?)?;
    let row = inventory::MachineRow {
        mac: new.mac,
        hostname: new.hostname.clone(),
        image: new.image.clone(),
        ip: new.ip,
        rack: new.rack.clone(),
        position: new.position.clone(),
        exit_method: new.exit_method.unwrap_or(ExitMethod::Exit),
        loader: new.loader,
        ssh_keys: new.ssh_keys.clone().unwrap_or_default(),
    };
    if adopting {
        inventory::adopt_row(tx, &row)?;
    } else {
        inventory::insert_row(tx, &row, now_ms)?;
    }
    store::insert_event_by(
        tx,
        now_ms,
        Some(new.mac),
        if adopting {
            "machine.adopted"
        } else {
            "machine.added"
        },
        format!(
            "hostname={} image={} ip={}",
            new.hostname.as_deref().unwrap_or("-"),
            new.image.as_deref().unwrap_or("-"),
            new.ip.map_or_else(|| "-".into(), |ip| ip.to_string())
        ),
        Some(actor),
    )?;
    if new.image.is_some() {
        set_mode_in(tx, new.mac, Mode::Install, lifecycle, actor, now_ms)?;
    }
    Ok(())
}

pub fn set_mode_in(
    tx: &Db,
    mac: MacAddr,
    mode: Mode,
    lifecycle: &LifecycleConfig,
    actor: &str,
    now_ms: i64,
) -> Result<MachineDetail, ServiceError> {
    let current = require_machine(tx, mac)?;
    let next = lifecycle::set_mode(&current.life(), mode, lifecycle, now_ms)?;
    inventory::write_life(tx, mac, &next)?;
    store::insert_event_by(
        tx,
        now_ms,
        Some(mac),
        "mode.set",
        format!("{} -> {mode}", current.mode),
        Some(actor),
    )?;
    require_machine(tx, mac)
}

/// Checks a patch's fields; `Some(None)` clears a field and needs no check.
fn patch_problems(patch: &MachinePatch, subnets: &[Subnet]) -> Vec<ServiceError> {
    let flat =
        |v: &Option<Option<String>>| v.as_ref().and_then(|v| v.as_deref().map(str::to_owned));
    let (hostname, rack, position) = (
        flat(&patch.hostname),
        flat(&patch.rack),
        flat(&patch.position),
    );
    field_problems(
        &Fields {
            hostname: hostname.as_deref(),
            ip: patch.ip.flatten(),
            rack: rack.as_deref(),
            position: position.as_deref(),
            ssh_keys: patch.ssh_keys.as_deref(),
        },
        subnets,
    )
}

pub fn update_in(
    tx: &Db,
    mac: MacAddr,
    patch: &MachinePatch,
    subnets: &[Subnet],
    actor: &str,
    now_ms: i64,
) -> Result<MachineDetail, ServiceError> {
    first(patch_problems(patch, subnets))?;
    require_machine(tx, mac)?;
    first(inventory_problems(tx, Some(mac), patch.ip.flatten(), None)?)?;
    let changed = inventory::apply_patch(tx, mac, patch)?;
    if !changed.is_empty() {
        store::insert_event_by(
            tx,
            now_ms,
            Some(mac),
            "machine.updated",
            changed.join(" "),
            Some(actor),
        )?;
    }
    require_machine(tx, mac)
}

pub fn set_image_in(
    tx: &Db,
    mac: MacAddr,
    image: Option<&str>,
    actor: &str,
    now_ms: i64,
) -> Result<MachineDetail, ServiceError> {
    let current = require_machine(tx, mac)?;
    if let Some(name) = image
        && store::get_image(tx, name)?.is_none()
    {
        return Err(unknown_image(name));
    }
    if image.is_none() && matches!(current.mode, Mode::Install | Mode::Boot) {
        return Err(ServiceError::Conflict(format!(
            "{mac} is in mode {}: set another mode before removing its image",
            current.mode
        )));
    }
    if current.image.as_deref() == image {
        return Ok(current);
    }
    inventory::write_image(tx, mac, image)?;
    store::insert_event_by(
        tx,
        now_ms,
        Some(mac),
        "image.set",
        format!(
            "{} -> {}",
            current.image.as_deref().unwrap_or("-"),
            image.unwrap_or("-")
        ),
        Some(actor),
    )?;
    require_machine(tx, mac)
}

/// A done-URL call inside the caller's transaction: the machine is found by its
/// token and the outcome applied.
pub fn done_in(
    tx: &Db,
    token: &str,
    failed: bool,
    now_ms: i64,
) -> Result<(DoneOutcome, Option<MacAddr>), ServiceError> {
    let Some(mac) = inventory::mac_by_token(tx, token)? else {
        return Ok((DoneOutcome::Refused, None));
    };
    let detail = require_machine(tx, mac)?;
    let outcome = lifecycle::done(&detail.life(), token, failed, now_ms);
    let actor = Caller::Machine.actor_text();
    match outcome {
        DoneOutcome::Refused => {}
        DoneOutcome::Failed => store::insert_event_by(
            tx,
            now_ms,
            Some(mac),
            &format!("{}.failed", detail.mode),
            "the installer reported failure; the machine stays in its mode".into(),
            Some(&actor),
        )?,
        DoneOutcome::Finished { wiped } => {
            inventory::finish(tx, mac, wiped, now_ms)?;
            store::insert_event_by(
                tx,
                now_ms,
                Some(mac),
                &format!("{}.done", detail.mode),
                format!("{} -> local", detail.mode),
                Some(&actor),
            )?;
        }
    }
    Ok((outcome, Some(mac)))
}

/// An installer's progress report (`GET /progress/{token}/{step}`), recorded as an
/// `install.progress` event (or `wipe.progress`...) of the machine whose live token it
/// holds. `None`: the token is not live.
pub fn progress_in(
    tx: &Db,
    token: &str,
    step: &str,
    now_ms: i64,
) -> Result<Option<MacAddr>, ServiceError> {
    if !lifecycle::valid_progress_step(step) {
        return Err(ServiceError::invalid(
            "step",
            "a progress step is 1 to 64 letters, digits, '-', '_' or '.'",
        ));
    }
    let Some(mac) = inventory::mac_by_token(tx, token)? else {
        return Ok(None);
    };
    let detail = require_machine(tx, mac)?;
    if !lifecycle::may_report(&detail.life(), token, now_ms) {
        return Ok(None);
    }
    store::insert_event_by(
        tx,
        now_ms,
        Some(mac),
        &format!("{}.progress", detail.mode),
        step.to_string(),
        Some(&Caller::Machine.actor_text()),
    )?;
    Ok(Some(mac))
}

impl Services {
    /// See `progress_in`.
    pub async fn machine_progress(
        &self,
        now_ms: i64,
        token: String,
        step: String,
    ) -> Result<Option<MacAddr>, ServiceError> {
        self.store
            .transaction(move |tx| progress_in(tx, &token, &step, now_ms))
            .await
    }

    pub async fn add_machine(
        &self,
        caller: &Caller,
        now_ms: i64,
        new: NewMachine,
    ) -> Result<MachineDetail, ServiceError> {
        caller.require(Need::Change)?;
        let (lifecycle, subnets, actor) = (
            self.lifecycle.clone(),
            self.subnets.clone(),
            caller.actor_text(),
        );
        self.store
            .transaction(move |tx| {
                add_in(tx, &new, &lifecycle, &subnets, &actor, now_ms)?;
                require_machine(tx, new.mac)
            })
            .await
    }

    pub async fn update_machine(
        &self,
        caller: &Caller,
        now_ms: i64,
        mac: MacAddr,
        patch: MachinePatch,
    ) -> Result<MachineDetail, ServiceError> {
        caller.require(Need::Change)?;
        let (subnets, actor) = (self.subnets.clone(), caller.actor_text());
        self.store
            .transaction(move |tx| update_in(tx, mac, &patch, &subnets, &actor, now_ms))
            .await
    }

    pub async fn delete_machine(
        &self,
        caller: &Caller,
        now_ms: i64,
        mac: MacAddr,
    ) -> Result<(), ServiceError> {
        caller.require(Need::Change)?;
        let actor = caller.actor_text();
        self.store
            .transaction(move |tx| {
                if !inventory::delete_row(tx, mac)? {
                    return Err(ServiceError::NoSuchMachine(mac));
                }
                store::insert_event_by(
                    tx,
                    now_ms,
                    Some(mac),
                    "machine.deleted",
                    String::new(),
                    Some(&actor),
                )?;
                Ok(())
            })
            .await
    }

    /// Sets a machine's boot mode without touching its power (`reprovision` does
    /// both).
    pub async fn set_mode(
        &self,
        caller: &Caller,
        now_ms: i64,
        mac: MacAddr,
        mode: Mode,
    ) -> Result<MachineDetail, ServiceError> {
        caller.require(Need::Change)?;
        let (lifecycle, actor) = (self.lifecycle.clone(), caller.actor_text());
        self.store
            .transaction(move |tx| set_mode_in(tx, mac, mode, &lifecycle, &actor, now_ms))
            .await
    }

    /// Assigns (or clears) a machine's image. A machine in a mode that needs an
    /// image cannot lose it.
    pub async fn set_image(
        &self,
        caller: &Caller,
        now_ms: i64,
        mac: MacAddr,
        image: Option<String>,
    ) -> Result<MachineDetail, ServiceError> {
        caller.require(Need::Change)?;
        let actor = caller.actor_text();
        self.store
            .transaction(move |tx| set_image_in(tx, mac, image.as_deref(), &actor, now_ms))
            .await
    }

    pub async fn machine(&self, mac: MacAddr) -> Result<MachineDetail, ServiceError> {
        self.store
            .transaction(move |tx| require_machine(tx, mac))
            .await
    }

    /// A machine calling its done-URL: finds it by its token and applies the
    /// outcome. Returns the outcome and, unless refused, the machine.
    pub async fn machine_done(
        &self,
        now_ms: i64,
        token: String,
        failed: bool,
    ) -> Result<(DoneOutcome, Option<MacAddr>), ServiceError> {
        self.store
            .transaction(move |tx| done_in(tx, &token, failed, now_ms))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{MachineQuery, SortBy, events, machine, search};
    use crate::service::images::delete_image_in;

    fn db() -> Db {
        store::open_connection_for_tests()
    }

    fn config() -> LifecycleConfig {
        LifecycleConfig {
            rescue_image: Some("rescue".into()),
            wipe_image: Some("wipe".into()),
            ..LifecycleConfig::default()
        }
    }

    fn image(conn: &Db, name: &str) {
        store::put_image(
            conn,
            &store::Image {
                arches: vec![crate::lifecycle::Arch::Amd64],
                name: name.into(),
                kernel_path: "k".into(),
                kernel_sha256: String::new(),
                initrd_path: "i".into(),
                initrd_sha256: String::new(),
                cmdline: String::new(),
            },
            0,
        )
        .expect("image");
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn new(n: u8, image: Option<&str>) -> NewMachine {
        NewMachine {
            hostname: Some(format!("node{n}")),
            image: image.map(str::to_string),
            ..NewMachine::new(mac(n))
        }
    }

    fn add(
        conn: &Db,
        new: &NewMachine,
        config: &LifecycleConfig,
        actor: &str,
        now_ms: i64,
    ) -> Result<MachineDetail, ServiceError> {
        add_in(conn, new, config, &[], actor, now_ms)?;
        require_machine(conn, new.mac)
    }

    #[test]
    fn a_machine_added_with_an_image_starts_in_install() {
        let conn = db();
        image(&conn, "debian");
        let with = add(&conn, &new(1, Some("debian")), &config(), "user:ann", 5).expect("add");
        assert_eq!(with.mode, Mode::Install);
        assert!(with.token.is_some());
        let without = add(&conn, &new(2, None), &config(), "user:ann", 5).expect("add");
        assert_eq!(without.mode, Mode::Local);
        assert!(without.token.is_none());
    }

    #[test]
    fn done_url_returns_the_machine_to_local_once() {
        let conn = db();
        image(&conn, "debian");
        let m = add(&conn, &new(1, Some("debian")), &config(), "user:ann", 5).expect("add");
        let token = m.token.clone().expect("token");
        assert_eq!(
            done_in(&conn, "nope", false, 10).expect("done").0,
            DoneOutcome::Refused
        );
        assert_eq!(
            done_in(&conn, &token, true, 10).expect("done").0,
            DoneOutcome::Failed
        );
        assert_eq!(
            machine(&conn, mac(1)).expect("q").expect("m").mode,
            Mode::Install
        );
        assert_eq!(
            done_in(&conn, &token, false, 20).expect("done").0,
            DoneOutcome::Finished { wiped: false }
        );
        let after = machine(&conn, mac(1)).expect("q").expect("m");
        assert_eq!(after.mode, Mode::Local);
        assert_eq!(after.installed_ms, Some(20));
        assert_eq!(
            done_in(&conn, &token, false, 30).expect("done").0,
            DoneOutcome::Refused
        );
        let kinds: Vec<String> = events(&conn, Some(mac(1)), false, 10)
            .expect("events")
            .into_iter()
            .rev()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "machine.added",
                "mode.set",
                "install.failed",
                "install.done"
            ]
        );
    }

    #[test]
    fn images_in_use_cannot_be_deleted_and_modes_need_images() {
        let conn = db();
        image(&conn, "debian");
        image(&conn, "rescue");
        add(&conn, &new(1, Some("debian")), &config(), "user:a", 0).expect("add");
        assert!(matches!(
            delete_image_in(&conn, "debian", &config(), "user:a", 1),
            Err(ServiceError::ImageInUse { .. })
        ));
        assert!(matches!(
            delete_image_in(&conn, "rescue", &config(), "user:a", 1),
            Err(ServiceError::Conflict(_))
        ));
        assert!(matches!(
            set_image_in(&conn, mac(1), None, "user:a", 1),
            Err(ServiceError::Conflict(_))
        ));
        set_mode_in(&conn, mac(1), Mode::Local, &config(), "user:a", 1).expect("local");
        set_image_in(&conn, mac(1), None, "user:a", 1).expect("clear");
        delete_image_in(&conn, "debian", &config(), "user:a", 1).expect("now deletable");
        let audit = events(&conn, None, true, 50).expect("audit");
        assert!(
            audit
                .iter()
                .all(|e| e.actor.as_deref().is_some_and(|a| a.starts_with("user:")))
        );
        assert!(audit.iter().any(|e| e.kind == "image.deleted"));
    }

    #[test]
    fn search_finds_by_any_field_and_pages() {
        let conn = db();
        image(&conn, "debian");
        for n in 1..=30 {
            let mut m = new(n, if n % 2 == 0 { Some("debian") } else { None });
            if n == 7 {
                m.ip = Some(Ipv4Addr::new(192, 0, 2, 7));
            }
            add(&conn, &m, &config(), "user:a", 0).expect("add");
        }
        let q = |search: &str| MachineQuery {
            search: Some(search.into()),
            limit: 100,
            ..MachineQuery::default()
        };
        assert_eq!(search(&conn, &q("node7")).expect("s").1, 1);
        assert_eq!(search(&conn, &q("52-54-00-00-00-07")).expect("s").1, 1);
        assert_eq!(search(&conn, &q("192.0.2.7")).expect("s").1, 1);
        assert_eq!(search(&conn, &q("debian")).expect("s").1, 15);
        let installs = MachineQuery {
            mode: Some(Mode::Install),
            limit: 10,
            offset: 10,
            sort: SortBy::Hostname,
            ..MachineQuery::default()
        };
        let (page, total) = search(&conn, &installs).expect("s");
        assert_eq!((page.len(), total), (5, 15));
    }

    #[test]
    fn a_second_machine_with_the_same_mac_or_address_or_an_unknown_image_is_refused() {
        let conn = db();
        image(&conn, "debian");
        let first = NewMachine {
            ip: Some(Ipv4Addr::new(192, 0, 2, 10)),
            ..new(1, Some("debian"))
        };
        add(&conn, &first, &config(), "user:a", 5).expect("add");
        assert!(matches!(
            add(&conn, &first, &config(), "user:a", 6),
            Err(ServiceError::MachineExists(m)) if m == mac(1)
        ));
        let same_ip = NewMachine {
            mac: mac(2),
            ..first.clone()
        };
        assert!(matches!(
            add(&conn, &same_ip, &config(), "user:a", 6),
            Err(ServiceError::AddressTaken { owner, .. }) if owner == mac(1)
        ));
        let bad_image = new(3, Some("nope"));
        let refused = add(&conn, &bad_image, &config(), "user:a", 6).expect_err("no image");
        assert_eq!(refused.field(), Some("image"));
        assert_eq!(refused.to_string(), "no image named \"nope\"");
        assert_eq!(crate::store::list_machines(&conn).expect("list").len(), 1);
    }

    #[test]
    fn a_discovered_machine_is_adopted_once() {
        let mut conn = db();
        crate::store::commit_dhcp_batch(
            &mut conn,
            &crate::store::DhcpBatch {
                discovered: vec![crate::store::Discovered {
                    mac: mac(7),
                    arch: Some("bios".into()),
                    vendor_class: None,
                }],
                ..Default::default()
            },
            1,
        )
        .expect("discover");
        let adopted = add(&conn, &new(7, None), &config(), "user:a", 2).expect("adopt");
        assert!(!adopted.discovered);
        assert_eq!(
            adopted.arch.as_deref(),
            Some("bios"),
            "what was seen is kept"
        );
        assert!(matches!(
            add(&conn, &new(7, None), &config(), "user:a", 3),
            Err(ServiceError::MachineExists(_))
        ));
    }
}
