//! Boot diagnoses recorded: a sweeper that every few seconds runs `diagnosis::diagnose`
//! over the last boot of each machine that has something new to judge, and writes each
//! finding once per boot as a `boot.diagnosis` event (detail: its message); and the
//! diagnoses of a machine's current boot, for the panel and the API.
//!
//! Which machines a sweep looks at is decided in memory (`Watch`): those with events
//! since the last sweep, and those whose last event has just become old enough for a
//! finding that waits (`QUIET_MS`, `INSTALL_CALLBACK_TIMEOUT_MS`). A quiet inventory
//! costs one indexed query per sweep; the reading and writing happen on the database
//! thread, in one transaction per sweep.

use crate::diagnosis::{self, DIAGNOSIS, INSTALL_CALLBACK_TIMEOUT_MS, KINDS, QUIET_MS};
use crate::mac::MacAddr;
use crate::store::{self, Db, Store, StoreError};
use crate::timeline;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How often the sweeper looks.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Events read per machine: many boots' worth.
const EVENTS_PER_MACHINE: u32 = 500;
/// Machines followed for a finding that waits; beyond it the oldest are dropped
/// (a flood of made-up MACs must not grow memory without bound).
const WATCH_CAP: usize = 65_536;

/// The waits after a machine's last event at which a finding can appear without a
/// new event.
const WAITS: [i64; 2] = [QUIET_MS, INSTALL_CALLBACK_TIMEOUT_MS];

/// The kinds that make a machine worth judging again: everything the diagnosis reads
/// except its own findings.
fn trigger_kinds() -> Vec<&'static str> {
    KINDS.iter().copied().filter(|k| *k != DIAGNOSIS).collect()
}

/// Which machines a sweep judges: the sweeper's memory between sweeps.
#[derive(Debug, Default)]
pub struct Watch {
    /// Events up to this id have been seen.
    after_id: i64,
    /// Machines whose findings may still appear with time alone, by the time of
    /// their last event.
    last_event_ms: HashMap<MacAddr, i64>,
    /// When the previous sweep ran.
    swept_ms: Option<i64>,
}

impl Watch {
    /// The machines to judge at `now_ms`, given those with new events (and the time of
    /// each one's newest): every one of them, and each watched machine one of whose
    /// waits ended since the previous sweep.
    pub fn due(&mut self, new: &[(MacAddr, i64)], now_ms: i64) -> Vec<MacAddr> {
        let since = self.swept_ms.unwrap_or(now_ms);
        self.swept_ms = Some(now_ms);
        let mut due: Vec<MacAddr> = new.iter().map(|(mac, _)| *mac).collect();
        for (mac, at_ms) in new {
            let last = self.last_event_ms.entry(*mac).or_insert(*at_ms);
            *last = (*last).max(*at_ms);
        }
        let fresh: HashSet<MacAddr> = due.iter().copied().collect();
        for (mac, last) in &self.last_event_ms {
            let ripe = WAITS
                .iter()
                .any(|wait| last + wait > since && last + wait <= now_ms);
            if ripe && !fresh.contains(mac) {
                due.push(*mac);
            }
        }
        // Past the longest wait nothing more can appear with time alone.
        let longest = WAITS.iter().copied().max().unwrap_or(0);
        self.last_event_ms
            .retain(|_, last| *last + longest > now_ms - SWEEP_EVERY.as_millis() as i64);
        if self.last_event_ms.len() > WATCH_CAP {
            let mut by_age: Vec<(i64, MacAddr)> = self
                .last_event_ms
                .iter()
                .map(|(mac, last)| (*last, *mac))
                .collect();
            by_age.sort_unstable();
            for (_, mac) in by_age.iter().take(by_age.len() - WATCH_CAP) {
                self.last_event_ms.remove(mac);
            }
        }
        due
    }
}

/// A diagnosis as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recorded {
    pub at_ms: i64,
    pub message: String,
}

/// One sweep on the database thread: judges the machines `watch` says are due and
/// records each new finding. Returns what it recorded.
pub fn sweep_in(
    db: &mut Db,
    watch: &mut Watch,
    now_ms: i64,
) -> Result<Vec<(MacAddr, String)>, StoreError> {
    if watch.swept_ms.is_none() {
        // The first sweep looks back as far as the longest wait, so a restart does not
        // lose an installer that went silent before it.
        watch.after_id = store::event_id_before(db, now_ms - INSTALL_CALLBACK_TIMEOUT_MS)?;
    }
    let (new, newest) = store::machines_with_events_after(db, watch.after_id, &trigger_kinds())?;
    watch.after_id = newest;
    let due = watch.due(&new, now_ms);
    if due.is_empty() {
        return Ok(Vec::new());
    }
    db.atomically(|tx| {
        let mut recorded = Vec::new();
        for mac in due {
            let events = store::machine_events(tx, mac, KINDS, EVENTS_PER_MACHINE)?;
            let boot = timeline::last_boot(&events);
            let already: HashSet<&str> = boot
                .iter()
                .filter(|e| e.kind == DIAGNOSIS)
                .map(|e| e.detail.as_str())
                .collect();
            for finding in diagnosis::diagnose(boot, now_ms) {
                let message = finding.message();
                if already.contains(message.as_str()) {
                    continue;
                }
                store::insert_event_by(tx, now_ms, Some(mac), DIAGNOSIS, message.clone(), None)?;
                recorded.push((mac, message));
            }
        }
        Ok(recorded)
    })
}

/// The diagnoses recorded for `mac`'s current (last) boot, newest first.
pub fn current_in(db: &Db, mac: MacAddr) -> Result<Vec<Recorded>, StoreError> {
    let events = store::machine_events(db, mac, KINDS, EVENTS_PER_MACHINE)?;
    Ok(timeline::last_boot(&events)
        .iter()
        .rev()
        .filter(|e| e.kind == DIAGNOSIS)
        .map(|e| Recorded {
            at_ms: e.at_ms,
            message: e.detail.clone(),
        })
        .collect())
}

/// Sweeps every `SWEEP_EVERY` for as long as the process runs.
pub async fn sweep_loop(store: Store) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = Some(Watch::default());
    loop {
        every.tick().await;
        let Some(mut state) = watch.take() else {
            return;
        };
        let now_ms = crate::clock::now_ms();
        let result = store
            .call(move |db| {
                let swept = sweep_in(db, &mut state, now_ms);
                Ok((state, swept))
            })
            .await;
        match result {
            Ok((state, swept)) => {
                watch = Some(state);
                match swept {
                    Ok(recorded) => {
                        for (mac, message) in recorded {
                            tracing::info!(%mac, "boot diagnosis: {message}");
                        }
                    }
                    Err(e) => tracing::warn!("boot diagnosis sweep failed: {e}"),
                }
            }
            Err(e) => {
                // The database thread is gone: the process is stopping.
                tracing::warn!("boot diagnosis stopped: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn event(db: &Db, at_ms: i64, m: MacAddr, kind: &str, detail: &str) {
        store::insert_event_by(db, at_ms, Some(m), kind, detail.into(), Some("machine"))
            .expect("insert");
    }

    /// A firmware that downloads its boot file and then says nothing.
    fn refused_boot(db: &Db, m: MacAddr, t: i64) {
        event(
            db,
            t,
            m,
            "dhcp.offer",
            "discover firmware=uefi-x64 ipxe=false ip=192.0.2.100 file=snponly.efi",
        );
        event(
            db,
            t + 3000,
            m,
            "dhcp.ack",
            "request firmware=uefi-x64 ipxe=false ip=192.0.2.100 file=snponly.efi",
        );
        event(
            db,
            t + 3500,
            m,
            "tftp.read",
            "file=snponly.efi size=1048576 from=ipxe_dir blksize=1468 windowsize=1 \
             retransmits=0 ms=420 client=192.0.2.100:1234",
        );
    }

    fn diagnoses(db: &Db, m: MacAddr) -> Vec<String> {
        store::machine_events(db, m, &[DIAGNOSIS], 100)
            .expect("events")
            .into_iter()
            .map(|e| e.detail)
            .collect()
    }

    #[test]
    fn a_finding_is_recorded_once_per_boot_when_its_wait_ends() {
        let mut db = Db::open_in_memory().expect("db");
        let mut watch = Watch::default();
        let t = 1_000_000;
        refused_boot(&db, mac(1), t);
        // Still within its 30 s: nothing yet.
        assert_eq!(sweep_in(&mut db, &mut watch, t + 5_000).expect("sweep"), []);
        // No new event, but the wait ends between these sweeps: judged, recorded.
        let recorded = sweep_in(&mut db, &mut watch, t + 35_000).expect("sweep");
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert!(recorded[0].1.contains("downloaded snponly.efi"));
        // Later sweeps, with or without new events, do not write it again.
        event(
            &db,
            t + 36_000,
            mac(1),
            "dhcp.foreign-server",
            "server=192.0.2.254",
        );
        let recorded = sweep_in(&mut db, &mut watch, t + 40_000).expect("sweep");
        assert_eq!(recorded.len(), 1, "only the new finding: {recorded:?}");
        assert!(recorded[0].1.starts_with("another DHCP server answered"));
        assert_eq!(
            sweep_in(&mut db, &mut watch, t + 45_000).expect("sweep"),
            []
        );
        assert_eq!(diagnoses(&db, mac(1)).len(), 2);
        let current = current_in(&db, mac(1)).expect("current");
        assert_eq!(current.len(), 2);
        assert!(current[0].message.starts_with("another DHCP server"));

        // The next boot of the same machine, refused the same way, is said again; the
        // old boot's diagnoses are not its.
        refused_boot(&db, mac(1), t + 100_000);
        assert_eq!(current_in(&db, mac(1)).expect("current"), []);
        sweep_in(&mut db, &mut watch, t + 102_000).expect("sweep");
        let recorded = sweep_in(&mut db, &mut watch, t + 140_000).expect("sweep");
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(diagnoses(&db, mac(1)).len(), 3);
        assert_eq!(current_in(&db, mac(1)).expect("current").len(), 1);
    }

    #[test]
    fn a_restart_still_judges_a_boot_from_before_it() {
        let mut db = Db::open_in_memory().expect("db");
        let t = 5_000_000;
        refused_boot(&db, mac(2), t);
        // A machine whose boot went on to its kernel.
        refused_boot(&db, mac(3), t);
        event(
            &db,
            t + 6_000,
            mac(3),
            "dhcp.ack",
            "request firmware=uefi-x64 ipxe=true ip=192.0.2.101 \
             file=http://192.0.2.1:8080/boot/52-54-00-00-00-03.ipxe",
        );
        event(
            &db,
            t + 6_200,
            mac(3),
            "http.script",
            "template=boot.ipxe mode=boot image=debian client=192.0.2.101:3456",
        );
        event(
            &db,
            t + 6_500,
            mac(3),
            "http.kernel",
            "image=debian status=200",
        );
        // A fresh sweeper (a restarted rackboot) long after the boot.
        let mut watch = Watch::default();
        let recorded = sweep_in(&mut db, &mut watch, t + 120_000).expect("sweep");
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(diagnoses(&db, mac(2)).len(), 1);
        // The healthy machine was judged and left alone.
        assert_eq!(diagnoses(&db, mac(3)), Vec::<String>::new());
    }

    #[test]
    fn watch_is_due_for_new_events_and_ended_waits_only() {
        let mut watch = Watch::default();
        assert_eq!(watch.due(&[(mac(1), 1_000)], 1_000), [mac(1)]);
        assert_eq!(watch.due(&[], 6_000), []);
        // 1 000 + 30 000 falls between 26 000 and 31 000.
        assert_eq!(watch.due(&[], 26_000), []);
        assert_eq!(watch.due(&[], 31_000), [mac(1)]);
        assert_eq!(watch.due(&[], 36_000), []);
        assert_eq!(
            watch.due(&[], 1_000 + INSTALL_CALLBACK_TIMEOUT_MS),
            [mac(1)]
        );
        // Past the longest wait it is forgotten.
        watch.due(&[], 1_000 + INSTALL_CALLBACK_TIMEOUT_MS + 60_000);
        assert!(watch.last_event_ms.is_empty());
    }
}
