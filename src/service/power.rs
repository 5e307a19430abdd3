//! Power: a machine's controller (set, remove), power verbs on one machine or many,
//! and reinstall, rescue or wipe as one action (mode, network boot, power cycle).
//! The BMC protocols and the step plan live in `power`; the permission, the caller
//! and the audit trail are decided here.

use super::{Caller, Need, ServiceError, Services};
use crate::lifecycle::Mode;
use crate::mac::MacAddr;
use crate::power::{self, Controller, ControllerSpec, Outcome, Reprovision, Verb, VerbError};

impl From<VerbError> for ServiceError {
    fn from(e: VerbError) -> Self {
        match e {
            VerbError::Store(e) => e.into(),
            VerbError::NoController(_) => ServiceError::Conflict(e.to_string()),
            VerbError::Power { .. } => ServiceError::Upstream(e.to_string()),
        }
    }
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
        Ok(self
            .store
            .call(move |conn| power::targets(conn, &macs, rack.as_deref()))
            .await?)
    }

    pub async fn set_controller(
        &self,
        caller: &Caller,
        now_ms: i64,
        mac: MacAddr,
        spec: ControllerSpec,
    ) -> Result<Controller, ServiceError> {
        caller.require(Need::Change)?;
        let actor = caller.actor_text();
        Ok(self
            .store
            .call(move |conn| power::put_controller(conn, mac, spec, &actor, now_ms))
            .await?)
    }

    pub async fn remove_controller(
        &self,
        caller: &Caller,
        now_ms: i64,
        mac: MacAddr,
    ) -> Result<(), ServiceError> {
        caller.require(Need::Change)?;
        let actor = caller.actor_text();
        Ok(self
            .store
            .call(move |conn| power::remove_controller(conn, mac, &actor, now_ms))
            .await?)
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
        Ok(power::run_verb(&self.store, &self.power, mac, verb, &caller.actor_text()).await?)
    }

    /// One verb on many machines at once; every result, in the order given.
    pub async fn power_many(
        &self,
        caller: &Caller,
        macs: Vec<MacAddr>,
        verb: Verb,
    ) -> Result<Vec<(MacAddr, Result<Outcome, ServiceError>)>, ServiceError> {
        caller.require(Need::Change)?;
        let results =
            power::run_many(&self.store, &self.power, macs, verb, &caller.actor_text()).await;
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
        Ok(power::reprovision(
            &self.store,
            &self.power,
            &self.lifecycle,
            mac,
            mode,
            &caller.actor_text(),
        )
        .await?)
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
        let results = power::reprovision_many(
            &self.store,
            &self.power,
            &self.lifecycle,
            &macs,
            mode,
            &caller.actor_text(),
        )
        .await;
        Ok(results
            .into_iter()
            .map(|(mac, r)| (mac, r.map_err(ServiceError::from)))
            .collect())
    }
}
