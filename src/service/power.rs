//! Power: a machine's controller (set, remove), power verbs on one machine or many,
//! and reinstall, rescue or wipe as one action (mode, network boot, power cycle).
//! The BMC protocols and the step plan live in `power`; the permission, the caller
//! and the audit trail are decided here.

use super::{Caller, Need, ServiceError, Services};
use crate::inventory::{self, MachineDetail};
use crate::lifecycle::{LifecycleConfig, Mode};
use crate::mac::MacAddr;
use crate::power::{
    CachedStatus, Controller, ControllerSpec, Outcome, Power, PowerError, PowerState, Step,
    StepReport, Verb, plan, restart_verb,
};
use crate::store::power::{
    all_controllers, delete_controller, get_controller, machines_in, save_statuses,
    write_controller,
};
use crate::store::{Store, StoreError, insert_event_by};
use serde::Serialize;
use std::sync::Arc;

impl From<VerbError> for ServiceError {
    fn from(e: VerbError) -> Self {
        match e {
            VerbError::Store(e) => e.into(),
            VerbError::NoMachine(mac) => ServiceError::NoSuchMachine(mac),
            VerbError::Aborted => ServiceError::Conflict(e.to_string()),
            VerbError::NoController(_) => ServiceError::Conflict(e.to_string()),
            VerbError::Power { .. } => ServiceError::Upstream(e.to_string()),
        }
    }
}

/// The machines named by MAC (each must exist), or every machine of `rack`: the
/// targets of an action on many machines.
pub fn targets_in(
    tx: &crate::store::Db,
    macs: &[MacAddr],
    rack: Option<&str>,
) -> Result<Vec<MacAddr>, ServiceError> {
    if !macs.is_empty() {
        for mac in macs {
            if inventory::machine(tx, *mac)?.is_none() {
                return Err(ServiceError::NoSuchMachine(*mac));
            }
        }
        return Ok(macs.to_vec());
    }
    let Some(rack) = rack else {
        return Err(ServiceError::Conflict(
            "name machines by MAC, or a rack".into(),
        ));
    };
    let found = machines_in(tx, Some(rack))?;
    if found.is_empty() {
        return Err(ServiceError::NotFound(format!("no machine in rack {rack}")));
    }
    Ok(found)
}

/// The modes `reprovision` takes: each boots something from the network.
pub fn check_reprovision_mode(mode: Mode, many: bool) -> Result<(), ServiceError> {
    match mode {
        Mode::Install | Mode::Rescue => Ok(()),
        Mode::Wipe if !many => Ok(()),
        Mode::Wipe => Err(ServiceError::invalid(
            "mode",
            "reprovision of many machines takes mode install or rescue (wipe one machine at a time)",
        )),
        _ => Err(ServiceError::invalid(
            "mode",
            "reprovision takes mode install, rescue or wipe",
        )),
    }
}

impl Services {
    /// The machines named by MAC (each must exist), or every machine of `rack`.
    pub async fn targets(
        &self,
        macs: Vec<MacAddr>,
        rack: Option<String>,
    ) -> Result<Vec<MacAddr>, ServiceError> {
        self.store
            .transaction(move |tx| targets_in(tx, &macs, rack.as_deref()))
            .await
    }

    /// A machine's controller (its password never leaves) and the last state read.
    pub async fn power_view(
        &self,
        mac: MacAddr,
    ) -> Result<(Option<Controller>, Option<CachedStatus>), ServiceError> {
        self.store
            .transaction(move |tx| {
                if inventory::machine(tx, mac)?.is_none() {
                    return Err(ServiceError::NoSuchMachine(mac));
                }
                Ok((
                    get_controller(tx, mac)?,
                    crate::store::power::cached_status(tx, mac)?,
                ))
            })
            .await
    }

    /// Sets a machine's power controller. A spec without a password keeps the
    /// stored one (the panel never shows it back).
    pub async fn set_controller(
        &self,
        caller: &Caller,
        now_ms: i64,
        mac: MacAddr,
        spec: ControllerSpec,
    ) -> Result<Controller, ServiceError> {
        caller.require(Need::Change)?;
        let actor = caller.actor_text();
        self.store
            .transaction(move |tx| {
                if inventory::machine(tx, mac)?.is_none() {
                    return Err(ServiceError::NoSuchMachine(mac));
                }
                let stored = get_controller(tx, mac)?;
                let controller = spec
                    .resolve(stored.as_ref())
                    .map_err(|why| ServiceError::invalid("controller", why))?;
                write_controller(tx, mac, &controller, now_ms)?;
                insert_event_by(
                    tx,
                    now_ms,
                    Some(mac),
                    "power.controller",
                    controller.summary(),
                    Some(&actor),
                )?;
                Ok(controller)
            })
            .await
    }

    pub async fn remove_controller(
        &self,
        caller: &Caller,
        now_ms: i64,
        mac: MacAddr,
    ) -> Result<(), ServiceError> {
        caller.require(Need::Change)?;
        let actor = caller.actor_text();
        self.store
            .transaction(move |tx| {
                if !delete_controller(tx, mac)? {
                    return Err(ServiceError::NotFound(format!(
                        "{mac} has no power controller"
                    )));
                }
                insert_event_by(
                    tx,
                    now_ms,
                    Some(mac),
                    "power.controller",
                    "removed".into(),
                    Some(&actor),
                )?;
                Ok(())
            })
            .await
    }

    /// One verb on one machine. Reading the state is a change too: it sends the
    /// stored password to the BMC.
    pub async fn power(
        &self,
        caller: &Caller,
        mac: MacAddr,
        verb: Verb,
    ) -> Result<Outcome, ServiceError> {
        caller.require(Need::Change)?;
        Ok(run_verb(&self.store, &self.power, mac, verb, &caller.actor_text()).await?)
    }

    /// One verb on many machines at once; every result, in the order given.
    pub async fn power_many(
        &self,
        caller: &Caller,
        macs: Vec<MacAddr>,
        verb: Verb,
    ) -> Result<Vec<(MacAddr, Result<Outcome, ServiceError>)>, ServiceError> {
        caller.require(Need::Change)?;
        let results = run_many(&self.store, &self.power, macs, verb, &caller.actor_text()).await;
        Ok(results
            .into_iter()
            .map(|(mac, r)| (mac, r.map_err(ServiceError::from)))
            .collect())
    }

    /// Reinstall, rescue or wipe one machine: the mode, then (with a power
    /// controller) a network boot and a power cycle. A failed power step keeps the
    /// mode and is reported in the result (`power_error`).
    pub async fn reprovision(
        &self,
        caller: &Caller,
        mac: MacAddr,
        mode: Mode,
    ) -> Result<Reprovision, ServiceError> {
        caller.require(Need::Change)?;
        check_reprovision_mode(mode, false)?;
        reprovision(
            &self.store,
            &self.power,
            &self.lifecycle,
            mac,
            mode,
            &caller.actor_text(),
        )
        .await
    }

    /// Reinstall or rescue many machines at once; every result, in the order given.
    pub async fn reprovision_many(
        &self,
        caller: &Caller,
        macs: Vec<MacAddr>,
        mode: Mode,
    ) -> Result<Vec<(MacAddr, Result<Reprovision, ServiceError>)>, ServiceError> {
        caller.require(Need::Change)?;
        check_reprovision_mode(mode, true)?;
        Ok(reprovision_many(
            &self.store,
            &self.power,
            &self.lifecycle,
            &macs,
            mode,
            &caller.actor_text(),
        )
        .await)
    }
}

async fn record_now(store: &Store, mac: MacAddr, kind: &'static str, detail: String, actor: &str) {
    let actor = actor.to_string();
    let now = crate::clock::now_ms();
    if let Err(e) = store
        .call(move |conn| insert_event_by(conn, now, Some(mac), kind, detail, Some(&actor)))
        .await
    {
        tracing::warn!(%mac, kind, "could not record power event: {e}");
    }
}

async fn cache(store: &Store, mac: MacAddr, state: &str, detail: String) {
    let status = CachedStatus {
        state: state.to_string(),
        detail,
        checked_ms: crate::clock::now_ms(),
    };
    if let Err(e) = store
        .call(move |conn| save_statuses(conn, &[(mac, status)]))
        .await
    {
        tracing::warn!(%mac, "could not cache power status: {e}");
    }
}

/// Why a verb could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum VerbError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no machine {0}")]
    NoMachine(MacAddr),
    /// The task running it panicked; said rather than dropped.
    #[error("the action ended abnormally")]
    Aborted,
    #[error("{0} has no power controller")]
    NoController(MacAddr),
    #[error("{mac}: power {verb}: {error}")]
    Power {
        mac: MacAddr,
        verb: &'static str,
        error: PowerError,
    },
}

/// The event kind and detail for a verb that succeeded.
fn verb_event(verb: Verb, outcome: &Outcome) -> (&'static str, String) {
    match (verb, &outcome.warning) {
        (_, Some(w)) => ("power.warning", w.clone()),
        (Verb::On, None) => ("power.on", "powered on".into()),
        (Verb::Off, None) => ("power.off", "powered off".into()),
        (Verb::Cycle, None) => ("power.cycle", "power-cycled".into()),
        (Verb::Pxe, None) => ("power.pxe", "next boot: network".into()),
        (Verb::Status, None) => (
            "power.status",
            outcome
                .state
                .map_or("unknown", PowerState::as_str)
                .to_string(),
        ),
    }
}

/// One verb for one machine from a person or token: run, record, cache.
pub async fn run_verb(
    store: &Store,
    power: &Power,
    mac: MacAddr,
    verb: Verb,
    actor: &str,
) -> Result<Outcome, VerbError> {
    let found = store
        .call(move |conn| {
            Ok(match inventory::machine(conn, mac)? {
                None => None,
                Some(_) => Some(get_controller(conn, mac)?),
            })
        })
        .await?;
    let controller = found
        .ok_or(VerbError::NoMachine(mac))?
        .ok_or(VerbError::NoController(mac))?;
    run_with(store, power, mac, &controller, verb, actor).await
}

async fn run_with(
    store: &Store,
    power: &Power,
    mac: MacAddr,
    controller: &Controller,
    verb: Verb,
    actor: &str,
) -> Result<Outcome, VerbError> {
    match power.execute(mac, controller, verb).await {
        Ok(outcome) => {
            let (kind, detail) = verb_event(verb, &outcome);
            if let Some(w) = &outcome.warning {
                tracing::warn!(%mac, verb = verb.as_str(), "{w}");
            }
            record_now(store, mac, kind, detail, actor).await;
            let state = match verb {
                Verb::Status => outcome.state,
                Verb::On | Verb::Cycle => Some(PowerState::On),
                Verb::Off => Some(PowerState::Off),
                Verb::Pxe => None,
            };
            if let Some(state) = state
                && !matches!(controller, Controller::Wol)
            {
                cache(store, mac, state.as_str(), String::new()).await;
            }
            Ok(outcome)
        }
        Err(error) => {
            tracing::warn!(%mac, verb = verb.as_str(), controller = controller.summary(), "power call failed: {error}");
            record_now(
                store,
                mac,
                "power.failed",
                format!("{}: {error}", verb.as_str()),
                actor,
            )
            .await;
            Err(VerbError::Power {
                mac,
                verb: verb.as_str(),
                error,
            })
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Reprovision {
    #[serde(flatten)]
    pub machine: MachineDetail,
    pub steps: Vec<StepReport>,
    /// Set when a power step failed. The mode change is kept (see `reprovision`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_error: Option<String>,
}

impl Reprovision {
    /// One line per step, for the CLI and the panel's notice.
    pub fn describe(&self) -> String {
        self.steps
            .iter()
            .map(|s| format!("{} {}: {}", s.step, s.result, s.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Reinstall, rescue or wipe as one action: set the mode, then (with a power
/// controller) ask for a network boot and power-cycle, or power on a machine that
/// is off. Each step is an event by `actor`.
///
/// When a power step fails, the mode change is KEPT and the failure reported
/// (`power_error`, a `power.failed` event), not rolled back: the mode is what the
/// operator asked for and is right whatever the BMC does; the machine acts on it at
/// its next network boot, however that boot comes (a retry, a hand on the power
/// button). Rolling back would also race a machine that the BMC did reboot before
/// the error surfaced, and throw away the install's done-URL token.
pub async fn reprovision(
    store: &Store,
    power: &Power,
    life: &LifecycleConfig,
    mac: MacAddr,
    mode: Mode,
    actor: &str,
) -> Result<Reprovision, ServiceError> {
    let (life, who) = (life.clone(), actor.to_string());
    let (machine, controller) = store
        .transaction(move |tx| {
            let machine =
                super::machines::set_mode_in(tx, mac, mode, &life, &who, crate::clock::now_ms())?;
            Ok::<_, ServiceError>((machine, get_controller(tx, mac)?))
        })
        .await?;
    let mut report = Reprovision {
        machine,
        steps: vec![StepReport {
            step: "mode".into(),
            result: "ok",
            detail: format!("mode set to {mode}"),
        }],
        power_error: None,
    };
    let Some(controller) = controller else {
        report.steps.push(StepReport {
            step: "power".into(),
            result: "ok",
            detail: "no power controller: the machine acts on its next network boot".into(),
        });
        return Ok(report);
    };
    let mut state = None;
    for step in plan(Some(&controller)) {
        let verb = match step {
            Step::Pxe => Verb::Pxe,
            Step::Status => Verb::Status,
            Step::OnOrCycle => restart_verb(state),
            Step::Wake => Verb::On,
        };
        match run_with(store, power, mac, &controller, verb, actor).await {
            Ok(outcome) => {
                state = outcome.state.or(state);
                report.steps.push(StepReport {
                    step: verb.as_str().into(),
                    result: if outcome.warning.is_some() {
                        "warning"
                    } else {
                        "ok"
                    },
                    detail: outcome.warning.clone().unwrap_or_else(|| match verb {
                        Verb::Status => format!(
                            "power is {}",
                            outcome.state.map_or("unknown", PowerState::as_str)
                        ),
                        Verb::Pxe => "next boot from the network".into(),
                        Verb::On if step == Step::Wake => {
                            "magic packet sent (a running machine must be rebooted by hand)".into()
                        }
                        Verb::On => "powered on".into(),
                        Verb::Cycle => "power-cycled".into(),
                        Verb::Off => "powered off".into(),
                    }),
                });
            }
            Err(e) => {
                let why = match &e {
                    VerbError::Power { error, .. } => error.to_string(),
                    other => other.to_string(),
                };
                report.steps.push(StepReport {
                    step: verb.as_str().into(),
                    result: "failed",
                    detail: why.clone(),
                });
                report.power_error = Some(format!(
                    "mode {mode} is set, but power {} failed: {why}. The machine {mode}s on its next network boot; reboot it by hand or retry",
                    verb.as_str()
                ));
                break;
            }
        }
    }
    Ok(report)
}

/// Reinstall, rescue or wipe many machines at once (the CLI's `--rack`, the panel's
/// selection): each as `reprovision`, all concurrently (BMC calls stay within
/// `concurrency`), every result in the order given.
pub async fn reprovision_many(
    store: &Store,
    power: &Arc<Power>,
    life: &LifecycleConfig,
    macs: &[MacAddr],
    mode: Mode,
    actor: &str,
) -> Vec<(MacAddr, Result<Reprovision, ServiceError>)> {
    for_each_machine(
        macs,
        |mac| {
            let (store, power, life, actor) = (
                store.clone(),
                power.clone(),
                life.clone(),
                actor.to_string(),
            );
            async move { reprovision(&store, &power, &life, mac, mode, &actor).await }
        },
        || Err(ServiceError::Conflict("the action ended abnormally".into())),
    )
    .await
}

/// Runs `action` for every machine at once, each in a task of its own, and returns
/// every result in the order given. A task that panicked is reported through
/// `ended_abnormally`, never dropped: the operator hears about every machine.
async fn for_each_machine<T, Fut>(
    macs: &[MacAddr],
    action: impl Fn(MacAddr) -> Fut,
    ended_abnormally: impl Fn() -> T,
) -> Vec<(MacAddr, T)>
where
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (index, mac) in macs.iter().copied().enumerate() {
        let work = action(mac);
        tasks.spawn(async move { (index, work.await) });
    }
    let mut slots: Vec<Option<T>> = macs.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((index, result)) => {
                if let Some(slot) = slots.get_mut(index) {
                    *slot = Some(result);
                }
            }
            Err(e) => tracing::error!("the action on one machine ended abnormally: {e}"),
        }
    }
    macs.iter()
        .copied()
        .zip(slots)
        .map(|(mac, result)| (mac, result.unwrap_or_else(&ended_abnormally)))
        .collect()
}

// ---- polling ----

/// Reads every controllable machine's power state each `poll_interval` (at most
/// `concurrency` BMCs at once) and caches it for the panel and API.
pub async fn poll_loop(store: Store, power: Arc<Power>) {
    let Some(interval) = power.config.poll_interval else {
        return;
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = poll_once(&store, &power).await {
            tracing::warn!("power poll: {e}");
        }
    }
}

pub async fn poll_once(store: &Store, power: &Arc<Power>) -> Result<usize, StoreError> {
    let all = store.call(|conn| all_controllers(conn)).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for (mac, controller) in all {
        let Some(controller) = controller.filter(|c| !matches!(c, Controller::Wol)) else {
            continue;
        };
        let power = power.clone();
        tasks.spawn(async move {
            let result = power.execute(mac, &controller, Verb::Status).await;
            (mac, result)
        });
    }
    let mut statuses = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let Ok((mac, result)) = joined else { continue };
        let now = crate::clock::now_ms();
        let status = match result {
            Ok(Outcome {
                state: Some(state), ..
            }) => CachedStatus {
                state: state.as_str().into(),
                detail: String::new(),
                checked_ms: now,
            },
            Ok(_) => CachedStatus {
                state: "error".into(),
                detail: "no power state in the answer".into(),
                checked_ms: now,
            },
            Err(e) => {
                tracing::warn!(%mac, "power status: {e}");
                CachedStatus {
                    state: "error".into(),
                    detail: e.to_string(),
                    checked_ms: now,
                }
            }
        };
        statuses.push((mac, status));
    }
    let n = statuses.len();
    store
        .call(move |conn| save_statuses(conn, &statuses))
        .await?;
    Ok(n)
}

/// One verb across many machines at once (the CLI's `power VERB --rack R`):
/// every result, in the order given.
pub async fn run_many(
    store: &Store,
    power: &Arc<Power>,
    macs: Vec<MacAddr>,
    verb: Verb,
    actor: &str,
) -> Vec<(MacAddr, Result<Outcome, VerbError>)> {
    for_each_machine(
        &macs,
        |mac| {
            let (store, power, actor) = (store.clone(), power.clone(), actor.to_string());
            async move { run_verb(&store, &power, mac, verb, &actor).await }
        },
        || Err(VerbError::Aborted),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::power::{PowerConfig, fake_redfish};
    use crate::store::power::{cached_status, power_column};
    use std::time::Duration;

    async fn store_with_machine() -> Store {
        let store = Store::open_in_memory().expect("store");
        add_machine(&store, MacAddr([0x52, 0x54, 0, 0, 0, 1])).await;
        store
    }

    async fn add_machine(store: &Store, mac: MacAddr) {
        store
            .transaction(move |tx| {
                super::super::machines::add_in(
                    tx,
                    &super::super::machines::NewMachine::new(mac),
                    &LifecycleConfig::default(),
                    &[],
                    "test",
                    0,
                )
            })
            .await
            .expect("machine");
    }

    async fn set_redfish(store: &Store, mac: MacAddr, url: &str, password: &str, verify: bool) {
        let spec = ControllerSpec::Redfish {
            url: url.into(),
            user: "root".into(),
            password: Some(password.into()),
            system_id: Some("1".into()),
            verify_tls: Some(verify),
        };
        store
            .transaction(move |conn| {
                let controller = spec
                    .resolve(None)
                    .map_err(|why| ServiceError::invalid("controller", why))?;
                Ok::<_, ServiceError>(write_controller(conn, mac, &controller, 0)?)
            })
            .await
            .expect("controller");
    }

    fn life() -> LifecycleConfig {
        LifecycleConfig {
            rescue_image: Some("rescue".into()),
            ..LifecycleConfig::default()
        }
    }

    async fn with_redfish(store: &Store, url: &str, password: &str) {
        set_redfish(
            store,
            MacAddr([0x52, 0x54, 0, 0, 0, 1]),
            url,
            password,
            true,
        )
        .await;
        store
            .call(|conn| {
                crate::store::put_image(
                    conn,
                    &crate::store::Image {
                        arches: vec![crate::lifecycle::Arch::Amd64],
                        name: "rescue".into(),
                        kernel_path: "k".into(),
                        kernel_sha256: String::new(),
                        initrd_path: "i".into(),
                        initrd_sha256: String::new(),
                        cmdline: String::new(),
                    },
                    0,
                )
            })
            .await
            .expect("image");
    }

    /// The exact requests a rescue sends to a Redfish BMC that is on: PATCH the boot
    /// override, read the state, ForceRestart; each with basic auth.
    #[tokio::test]
    async fn redfish_requests_are_exactly_these() {
        let bmc = fake_redfish::FakeRedfish::start().await;
        *bmc.bmc.power_on.lock().expect("lock") = true;
        let store = store_with_machine().await;
        with_redfish(&store, &bmc.url, "calvin").await;
        let power = Power::new(PowerConfig::default());
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let report = reprovision(&store, &power, &life(), mac, Mode::Rescue, "user:ann")
            .await
            .expect("reprovision");
        assert_eq!(report.power_error, None, "{report:?}");
        let seen = bmc.seen();
        let expected = [
            (
                "PATCH",
                "/redfish/v1/Systems/1",
                Some(
                    serde_json::json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}}),
                ),
            ),
            ("GET", "/redfish/v1/Systems/1", None),
            (
                "POST",
                "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset",
                Some(serde_json::json!({"ResetType": "ForceRestart"})),
            ),
        ];
        assert_eq!(seen.len(), expected.len(), "{seen:?}");
        for (got, (method, path, body)) in seen.iter().zip(expected) {
            assert_eq!(got.method, method);
            assert_eq!(got.path, path);
            assert_eq!(got.body, body);
            assert_eq!(got.authorization.as_deref(), Some(fake_redfish::GOOD_AUTH));
        }
        assert_eq!(*bmc.bmc.boot_target.lock().expect("lock"), "Pxe");
        let kinds: Vec<String> = store
            .call(move |conn| inventory::events(conn, Some(mac), true, 10))
            .await
            .expect("events")
            .into_iter()
            .rev()
            .filter(|e| e.actor.as_deref() == Some("user:ann"))
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            ["mode.set", "power.pxe", "power.status", "power.cycle"]
        );
    }

    /// A BMC slower than the timeout: a clear timeout error within
    /// (retries + 1) x timeout plus backoff, the mode kept and said so.
    #[tokio::test]
    async fn a_slow_redfish_bmc_times_out_and_the_mode_is_kept() {
        let bmc = fake_redfish::FakeRedfish::start().await;
        *bmc.bmc.delay.lock().expect("lock") = Duration::from_secs(30);
        let store = store_with_machine().await;
        with_redfish(&store, &bmc.url, "calvin").await;
        let power = Power::new(PowerConfig {
            timeout: Duration::from_secs(1),
            retries: 1,
            ..PowerConfig::default()
        });
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let started = std::time::Instant::now();
        let report = reprovision(&store, &power, &life(), mac, Mode::Rescue, "user:ann")
            .await
            .expect("reprovision");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        let why = report.power_error.expect("power failed");
        assert!(why.contains("did not answer within 1 s"), "{why}");
        assert_eq!(report.machine.mode, Mode::Rescue, "mode kept");
        assert_eq!(bmc.seen().len(), 2, "one attempt and one retry");
    }

    /// Redfish over HTTPS: a BMC certificate from an unknown CA is refused with a
    /// clear error before any request is sent (and not retried); trusting its CA
    /// through `redfish_ca_file`, or turning `verify_tls` off for the controller,
    /// lets the same call through.
    #[tokio::test]
    async fn redfish_over_https_verifies_the_bmc_certificate() {
        let bmc = fake_redfish::FakeRedfish::start_tls().await;
        assert!(bmc.url.starts_with("https://127.0.0.1:"), "{}", bmc.url);
        let store = store_with_machine().await;
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        set_redfish(&store, mac, &bmc.url, "calvin", true).await;

        let untrusting = Arc::new(Power::new(PowerConfig::default()));
        let started = std::time::Instant::now();
        let refused = run_verb(&store, &untrusting, mac, Verb::Status, "user:ann")
            .await
            .expect_err("an unknown CA must be refused");
        let VerbError::Power { error, .. } = &refused else {
            panic!("{refused:?}");
        };
        assert!(matches!(error, PowerError::Certificate(_)), "{error:?}");
        let said = refused.to_string();
        assert!(
            said.contains("not trusted") && said.contains("redfish_ca_file"),
            "{said}"
        );
        assert!(
            said.contains("UnknownIssuer"),
            "the reason is named: {said}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "not retried");
        assert!(
            bmc.seen().is_empty(),
            "no request may reach an untrusted BMC"
        );

        let trusting = Arc::new(Power::new(PowerConfig {
            redfish_ca_pem: Some(include_bytes!("../power/testdata/ca.pem").to_vec()),
            ..PowerConfig::default()
        }));
        let outcome = run_verb(&store, &trusting, mac, Verb::Status, "user:ann")
            .await
            .expect("a BMC signed by the configured CA");
        assert_eq!(outcome.state, Some(PowerState::Off));
        assert_eq!(bmc.seen().len(), 1);
        assert_eq!(
            bmc.seen()[0].authorization.as_deref(),
            Some(fake_redfish::GOOD_AUTH)
        );

        set_redfish(&store, mac, &bmc.url, "calvin", false).await;
        let outcome = run_verb(&store, &untrusting, mac, Verb::On, "user:ann")
            .await
            .expect("verify_tls off");
        assert_eq!(outcome.warning, None);
        assert!(*bmc.bmc.power_on.lock().expect("lock"));
    }

    /// One poll reads every BMC-backed machine (not Wake-on-LAN ones, not those
    /// without a controller), caches each state or error, and never has more than
    /// `concurrency` BMC calls in flight.
    #[tokio::test]
    async fn a_poll_caches_every_state_within_the_concurrency_limit() {
        let bmc = fake_redfish::FakeRedfish::start().await;
        *bmc.bmc.power_on.lock().expect("lock") = true;
        *bmc.bmc.delay.lock().expect("lock") = Duration::from_millis(200);
        let store = store_with_machine().await;
        let mac = |n: u8| MacAddr([0x52, 0x54, 0, 0, 1, n]);
        for n in 1..=8 {
            add_machine(&store, mac(n)).await;
        }
        for n in 1..=5 {
            set_redfish(&store, mac(n), &bmc.url, "calvin", true).await;
        }
        set_redfish(&store, mac(6), &bmc.url, "wrong", true).await;
        store
            .call(move |conn| write_controller(conn, mac(7), &Controller::Wol, 0))
            .await
            .expect("wol");
        let power = Arc::new(Power::new(PowerConfig {
            concurrency: 2,
            ..PowerConfig::default()
        }));
        let polled = poll_once(&store, &power).await.expect("poll");
        assert_eq!(polled, 6, "five good BMCs and one refusing");
        assert_eq!(
            bmc.bmc
                .most_in_flight
                .load(std::sync::atomic::Ordering::SeqCst),
            2,
            "at most (and, with six to read, exactly) two BMC calls at once"
        );
        for n in 1..=8 {
            let status = store
                .call(move |conn| cached_status(conn, mac(n)))
                .await
                .expect("status");
            match n {
                1..=5 => assert_eq!(status.map(|s| s.state), Some("on".into()), "{n}"),
                6 => {
                    let status = status.expect("an error is cached too");
                    assert_eq!(status.state, "error");
                    assert!(status.detail.contains("credentials"), "{}", status.detail);
                    assert!(!status.detail.contains("wrong"), "{}", status.detail);
                }
                _ => assert_eq!(status, None, "{n} has no BMC to poll"),
            }
        }
        // The panel's column reads the same cache (Wake-on-LAN machines say so).
        let column = store.call(|conn| power_column(conn)).await.expect("column");
        assert_eq!(
            column.get(&mac(1).to_string()).map(String::as_str),
            Some("on")
        );
        assert_eq!(
            column.get(&mac(6).to_string()).map(String::as_str),
            Some("error")
        );
        assert_eq!(
            column.get(&mac(7).to_string()).map(String::as_str),
            Some("wol")
        );
        assert_eq!(column.get(&mac(8).to_string()), None);
    }

    /// Chaos: a BMC that flaps between answering and hanging. Every call ends within
    /// its bound with a result (the state, or "did not answer"), the poller's cached
    /// state follows each flap, and nothing is left waiting.
    #[tokio::test]
    async fn a_flapping_bmc_gets_a_bounded_answer_each_time_and_the_poller_follows() {
        let bmc = fake_redfish::FakeRedfish::start().await;
        *bmc.bmc.power_on.lock().expect("lock") = true;
        let store = store_with_machine().await;
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        set_redfish(&store, mac, &bmc.url, "calvin", true).await;
        let power = Arc::new(Power::new(PowerConfig {
            timeout: Duration::from_secs(1),
            retries: 0,
            ..PowerConfig::default()
        }));
        for round in 0..6 {
            let answering = round % 2 == 0;
            *bmc.bmc.delay.lock().expect("lock") = if answering {
                Duration::ZERO
            } else {
                Duration::from_secs(60)
            };
            let started = std::time::Instant::now();
            let outcome = run_verb(&store, &power, mac, Verb::Status, "user:ann").await;
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "round {round} took {:?}",
                started.elapsed()
            );
            match (answering, outcome) {
                (true, Ok(outcome)) => assert_eq!(outcome.state, Some(PowerState::On)),
                (false, Err(e)) => assert!(e.to_string().contains("did not answer"), "{e}"),
                (answering, other) => panic!("round {round} (answering {answering}): {other:?}"),
            }
            let started = std::time::Instant::now();
            poll_once(&store, &power).await.expect("poll");
            assert!(started.elapsed() < Duration::from_secs(3));
            let cached = store
                .call(move |conn| cached_status(conn, mac))
                .await
                .expect("status")
                .expect("cached");
            assert_eq!(
                cached.state,
                if answering { "on" } else { "error" },
                "round {round}: {}",
                cached.detail
            );
        }
    }

    /// Without a system id the BMC's only system is looked up first, then used.
    #[tokio::test]
    async fn without_a_system_id_the_only_system_is_used() {
        let bmc = fake_redfish::FakeRedfish::start().await;
        let store = store_with_machine().await;
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let spec = ControllerSpec::Redfish {
            url: bmc.url.clone(),
            user: "root".into(),
            password: Some("calvin".into()),
            system_id: None,
            verify_tls: None,
        };
        let controller = store
            .transaction(move |conn| {
                let controller = spec
                    .resolve(None)
                    .map_err(|why| ServiceError::invalid("controller", why))?;
                write_controller(conn, mac, &controller, 0)?;
                Ok::<_, ServiceError>(controller)
            })
            .await
            .expect("controller");
        assert!(controller.summary().contains("system=(the only one)"));
        let power = Arc::new(Power::new(PowerConfig::default()));
        let outcome = run_verb(&store, &power, mac, Verb::Status, "user:ann")
            .await
            .expect("status");
        assert_eq!(outcome.state, Some(PowerState::Off));
        let paths: Vec<String> = bmc.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(paths, ["/redfish/v1/Systems", "/redfish/v1/Systems/1"]);
        // Found once: the next call goes straight to the system.
        run_verb(&store, &power, mac, Verb::Status, "user:ann")
            .await
            .expect("status again");
        assert_eq!(bmc.seen().len(), 3);
        assert_eq!(bmc.seen()[2].path, "/redfish/v1/Systems/1");
    }
}
