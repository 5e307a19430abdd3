//! Boot timelines, pure: a machine's recorded events grouped into boots, each from the
//! firmware's first DHCP offer to the kernel's first request (or the done-URL), with
//! the time each phase took. Also the SVG that draws them (server-rendered, no script).

use serde::Serialize;

/// Milestones of a network boot, in the order they happen. Each phase is the time
/// from the previous milestone to this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Firmware DISCOVER/OFFER to its ACK.
    FirmwareDhcp,
    /// Firmware ACK to the iPXE binary's TFTP read.
    BootFile,
    /// Loading iPXE and its own DHCP, to its ACK.
    IpxeDhcp,
    /// iPXE's ACK to its script request (iPXE's "Configuring" wait lands here).
    Script,
    /// Script to the kernel request.
    Kernel,
    /// Kernel download to the initrd request.
    Initrd,
    /// The installer's run until it called its done-URL.
    InstallDone,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::FirmwareDhcp => "firmware DHCP",
            Phase::BootFile => "boot file",
            Phase::IpxeDhcp => "iPXE DHCP",
            Phase::Script => "script",
            Phase::Kernel => "kernel",
            Phase::Initrd => "initrd",
            Phase::InstallDone => "install done",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            Phase::FirmwareDhcp => "#8fb3e8",
            Phase::BootFile => "#b9a5e0",
            Phase::IpxeDhcp => "#6f9bd9",
            Phase::Script => "#e5b85c",
            Phase::Kernel => "#7cc49a",
            Phase::Initrd => "#4fa874",
            Phase::InstallDone => "#c9ccd3",
        }
    }
}

/// An event as the timeline needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEvent {
    pub at_ms: i64,
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhaseTime {
    pub phase: Phase,
    /// When the phase ended (its milestone).
    pub at_ms: i64,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Boot {
    pub start_ms: i64,
    pub phases: Vec<PhaseTime>,
}

impl Boot {
    pub fn end_ms(&self) -> i64 {
        self.phases.last().map_or(self.start_ms, |p| p.at_ms)
    }
    pub fn total_ms(&self) -> i64 {
        self.end_ms() - self.start_ms
    }
    /// Reached the kernel (or beyond): a boot that worked.
    pub fn reached_kernel(&self) -> bool {
        self.phases.iter().any(|p| p.phase >= Phase::Kernel)
    }
    pub fn phase(&self, phase: Phase) -> Option<&PhaseTime> {
        self.phases.iter().find(|p| p.phase == phase)
    }
}

/// Events further apart than this belong to different boots.
const BOOT_GAP_MS: i64 = 30 * 60 * 1000;

enum Step {
    /// A DHCP offer: where a boot (or its iPXE stage) starts.
    Offer {
        ipxe: bool,
    },
    Milestone(Phase),
}

fn classify(event: &BootEvent) -> Option<Step> {
    let ipxe = event.detail.contains("ipxe=true");
    match event.kind.as_str() {
        // A firmware refused a boot file still asked: its attempt starts a boot.
        "dhcp.offer" | "dhcp.no-boot-file" => Some(Step::Offer { ipxe }),
        "dhcp.ack" if ipxe => Some(Step::Milestone(Phase::IpxeDhcp)),
        "dhcp.ack" => Some(Step::Milestone(Phase::FirmwareDhcp)),
        // grub (shim + grub under Secure Boot) loads the kernel and initrd over TFTP.
        "tftp.read" if event.detail.contains("/kernel ") => Some(Step::Milestone(Phase::Kernel)),
        "tftp.read" if event.detail.contains("/initrd ") => Some(Step::Milestone(Phase::Initrd)),
        "tftp.read" => Some(Step::Milestone(Phase::BootFile)),
        "http.script" | "tftp.script" => Some(Step::Milestone(Phase::Script)),
        "http.kernel" => Some(Step::Milestone(Phase::Kernel)),
        "http.initrd" => Some(Step::Milestone(Phase::Initrd)),
        "install.done" | "wipe.done" => Some(Step::Milestone(Phase::InstallDone)),
        _ => None,
    }
}

struct Building {
    start_ms: i64,
    last_ms: i64,
    phases: Vec<PhaseTime>,
}

impl Building {
    fn furthest(&self) -> Option<Phase> {
        self.phases.last().map(|p| p.phase)
    }
    fn push(&mut self, phase: Phase, at_ms: i64) {
        // A retried step (a second script fetch, a range request) keeps its first time.
        if self.phases.iter().any(|p| p.phase == phase) {
            self.last_ms = at_ms;
            return;
        }
        let since = self.phases.last().map_or(self.start_ms, |p| p.at_ms);
        self.phases.push(PhaseTime {
            phase,
            at_ms,
            duration_ms: (at_ms - since).max(0),
        });
        self.last_ms = at_ms;
    }
    fn finish(self) -> Option<Boot> {
        (!self.phases.is_empty()).then_some(Boot {
            start_ms: self.start_ms,
            phases: self.phases,
        })
    }
}

/// Groups one machine's events (oldest first) into boots, oldest first.
pub fn boots(events: &[BootEvent]) -> Vec<Boot> {
    group(events).0
}

/// A foreign server's reply can be recorded just before rackboot's own offer of the
/// same exchange (it may answer first): this close, it belongs to the boot after it.
const BOOT_LEAD_MS: i64 = 10_000;

/// The events of the last boot in `events` (one machine's, oldest first): from where
/// `boots` starts it, with every event after it whatever its kind (TFTP timeouts,
/// installer reports, diagnoses), and a foreign server's replies just before it. An
/// event after a silence longer than a boot's gap starts afresh even if `boots`
/// ignores its kind. Empty when `events` is.
pub fn last_boot(events: &[BootEvent]) -> &[BootEvent] {
    let (_, start) = group(events);
    let mut start = start.unwrap_or(0);
    for i in start + 1..events.len() {
        if events[i].at_ms - events[i - 1].at_ms > BOOT_GAP_MS {
            start = i;
        }
    }
    while start > 0
        && start < events.len()
        && events[start - 1].kind == "dhcp.foreign-server"
        && events[start].at_ms - events[start - 1].at_ms <= BOOT_LEAD_MS
    {
        start -= 1;
    }
    &events[start.min(events.len())..]
}

/// The boots, and the index in `events` where the last one (with phases or not yet)
/// starts.
fn group(events: &[BootEvent]) -> (Vec<Boot>, Option<usize>) {
    let mut done = Vec::new();
    let mut current: Option<Building> = None;
    let mut last_start = None;
    for (index, event) in events.iter().enumerate() {
        let Some(step) = classify(event) else {
            continue;
        };
        if let Some(building) = &current
            && event.at_ms - building.last_ms > BOOT_GAP_MS
        {
            done.extend(current.take().and_then(Building::finish));
        }
        match step {
            Step::Offer { ipxe } => {
                // An offer starts a boot unless it continues the current one: iPXE's
                // offer after the firmware stage, or a repeated offer before its ACK.
                let continues = current
                    .as_ref()
                    .is_some_and(|b| match (ipxe, b.furthest()) {
                        (_, None) => true,
                        (true, Some(p)) => p < Phase::IpxeDhcp,
                        (false, Some(_)) => false,
                    });
                if continues {
                    if let Some(b) = current.as_mut() {
                        b.last_ms = event.at_ms;
                    }
                } else {
                    done.extend(current.take().and_then(Building::finish));
                    last_start = Some(index);
                    current = Some(Building {
                        start_ms: event.at_ms,
                        last_ms: event.at_ms,
                        phases: Vec::new(),
                    });
                }
            }
            Step::Milestone(phase) => {
                if current.is_none() {
                    last_start = Some(index);
                }
                let building = current.get_or_insert(Building {
                    start_ms: event.at_ms,
                    last_ms: event.at_ms,
                    phases: Vec::new(),
                });
                if building.furthest().is_some_and(|f| phase < f) && phase <= Phase::Script {
                    // An earlier stage again without a new offer: a new boot whose
                    // offer went unrecorded.
                    done.extend(current.take().and_then(Building::finish));
                    let mut fresh = Building {
                        start_ms: event.at_ms,
                        last_ms: event.at_ms,
                        phases: Vec::new(),
                    };
                    fresh.push(phase, event.at_ms);
                    last_start = Some(index);
                    current = Some(fresh);
                } else {
                    building.push(phase, event.at_ms);
                }
            }
        }
    }
    done.extend(current.and_then(Building::finish));
    (done, last_start)
}

/// Median and slowest total time of boots that reached the kernel.
pub fn summary(boots: &[Boot]) -> Option<(i64, i64)> {
    let mut totals: Vec<i64> = boots
        .iter()
        .filter(|b| b.reached_kernel())
        .map(|b| {
            b.phase(Phase::Initrd)
                .or(b.phase(Phase::Kernel))
                .map_or(b.total_ms(), |p| p.at_ms - b.start_ms)
        })
        .collect();
    if totals.is_empty() {
        return None;
    }
    totals.sort_unstable();
    Some((totals[totals.len() / 2], totals[totals.len() - 1]))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG drawing of `boots` (newest first), one bar per boot, segments proportional
/// to time on a shared scale; the install phase is left out of the scale (it takes
/// minutes and would flatten the rest) and shown as a number.
pub fn svg(boots: &[Boot], format_time: impl Fn(i64) -> String) -> String {
    const WIDTH: f64 = 720.0;
    const LEFT: f64 = 170.0;
    const ROW: f64 = 26.0;
    let boot_span = |b: &Boot| {
        b.phases
            .iter()
            .filter(|p| p.phase != Phase::InstallDone)
            .map(|p| p.at_ms)
            .max()
            .unwrap_or(b.start_ms)
            - b.start_ms
    };
    let longest = boots.iter().map(boot_span).max().unwrap_or(1).max(1) as f64;
    let scale = (WIDTH - LEFT - 70.0) / longest;
    let height = ROW * boots.len() as f64 + 40.0;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"timeline\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"Boot timeline\">"
    );
    for (row, boot) in boots.iter().enumerate() {
        let y = 8.0 + row as f64 * ROW;
        out.push_str(&format!(
            "<text x=\"0\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            y + 13.0,
            xml_escape(&format_time(boot.start_ms))
        ));
        for p in boot.phases.iter().filter(|p| p.phase != Phase::InstallDone) {
            let x = LEFT + (p.at_ms - p.duration_ms - boot.start_ms) as f64 * scale;
            let w = (p.duration_ms as f64 * scale).max(1.0);
            out.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"18\" fill=\"{}\"><title>{}: {:.1} s</title></rect>",
                p.phase.colour(),
                p.phase.label(),
                p.duration_ms as f64 / 1000.0
            ));
            if w > 28.0 {
                out.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{:.1}</text>",
                    x + 3.0,
                    y + 13.0,
                    p.duration_ms as f64 / 1000.0
                ));
            }
        }
        let end_x = LEFT + boot_span(boot) as f64 * scale + 4.0;
        let install = boot
            .phase(Phase::InstallDone)
            .map(|p| format!(" +{:.0} s install", p.duration_ms as f64 / 1000.0))
            .unwrap_or_default();
        out.push_str(&format!(
            "<text x=\"{end_x:.1}\" y=\"{:.1}\" font-size=\"11\">{:.1} s{install}</text>",
            y + 13.0,
            boot_span(boot) as f64 / 1000.0
        ));
    }
    let legend_y = 8.0 + boots.len() as f64 * ROW + 14.0;
    let mut x = 0.0;
    for phase in [
        Phase::FirmwareDhcp,
        Phase::BootFile,
        Phase::IpxeDhcp,
        Phase::Script,
        Phase::Kernel,
        Phase::Initrd,
    ] {
        out.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            legend_y - 9.0,
            phase.colour(),
            x + 14.0,
            legend_y,
            phase.label()
        ));
        x += 20.0 + phase.label().len() as f64 * 6.5;
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at_s: f64, kind: &str, detail: &str) -> BootEvent {
        BootEvent {
            at_ms: (at_s * 1000.0) as i64,
            kind: kind.into(),
            detail: detail.into(),
        }
    }

    /// A UEFI chain as recorded: firmware DHCP, TFTP, iPXE DHCP, script, kernel, initrd.
    fn uefi_boot(t: f64) -> Vec<BootEvent> {
        vec![
            ev(t, "dhcp.offer", "discover firmware=uefi-x64 ipxe=false"),
            ev(t + 3.0, "dhcp.ack", "request firmware=uefi-x64 ipxe=false"),
            ev(t + 3.5, "tftp.read", "file=snponly.efi"),
            ev(
                t + 5.0,
                "dhcp.offer",
                "discover firmware=uefi-x64 ipxe=true",
            ),
            ev(t + 6.5, "dhcp.ack", "request firmware=uefi-x64 ipxe=true"),
            ev(t + 6.6, "http.script", "template=boot.ipxe"),
            ev(t + 6.8, "http.kernel", "image=x"),
            ev(t + 7.5, "http.initrd", "image=x"),
        ]
    }

    #[test]
    fn a_uefi_boot_has_every_phase_in_order() {
        let boots = boots(&uefi_boot(100.0));
        assert_eq!(boots.len(), 1);
        let b = &boots[0];
        let phases: Vec<Phase> = b.phases.iter().map(|p| p.phase).collect();
        assert_eq!(
            phases,
            [
                Phase::FirmwareDhcp,
                Phase::BootFile,
                Phase::IpxeDhcp,
                Phase::Script,
                Phase::Kernel,
                Phase::Initrd
            ]
        );
        assert_eq!(
            b.phase(Phase::FirmwareDhcp).map(|p| p.duration_ms),
            Some(3000)
        );
        assert_eq!(b.phase(Phase::IpxeDhcp).map(|p| p.duration_ms), Some(3000));
        assert_eq!(b.phase(Phase::Script).map(|p| p.duration_ms), Some(100));
        assert_eq!(b.total_ms(), 7500);
    }

    #[test]
    fn consecutive_boots_are_split_and_bios_rom_starts_at_ipxe() {
        let mut events = uefi_boot(100.0);
        // Then an install run and its done-URL.
        events.push(ev(400.0, "install.done", "install -> local"));
        // A BIOS machine with an iPXE ROM: its first offer is already iPXE.
        events.push(ev(500.0, "dhcp.offer", "discover firmware=bios ipxe=true"));
        events.push(ev(503.0, "dhcp.ack", "request firmware=bios ipxe=true"));
        events.push(ev(516.0, "http.script", "template=local.ipxe"));
        let all = boots(&events);
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0].phase(Phase::InstallDone).map(|p| p.duration_ms),
            Some(292_500)
        );
        assert_eq!(all[1].phases[0].phase, Phase::IpxeDhcp);
        // The 13 s "Configuring" wait shows up in the script phase.
        assert_eq!(
            all[1].phase(Phase::Script).map(|p| p.duration_ms),
            Some(13_000)
        );
        assert!(!all[1].reached_kernel());
    }

    #[test]
    fn retried_fetches_and_unrelated_events_do_not_split_a_boot() {
        let mut events = uefi_boot(0.0);
        events.insert(3, ev(4.0, "mode.set", "local -> install"));
        events.push(ev(7.6, "http.initrd", "range=bytes=0-"));
        events.push(ev(7.7, "http.kernel", "again"));
        let all = boots(&events);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].phases.len(), 6);
        assert_eq!(all[0].phase(Phase::Initrd).map(|p| p.at_ms), Some(7500));
    }

    #[test]
    fn a_long_gap_starts_a_new_boot() {
        let mut events = uefi_boot(0.0);
        events.extend(uefi_boot(10_000.0));
        assert_eq!(boots(&events).len(), 2);
    }

    #[test]
    fn summary_is_median_and_slowest_of_boots_that_worked() {
        let mut events = Vec::new();
        for (i, extra) in [0.0, 2.0, 10.0].iter().enumerate() {
            let mut b = uefi_boot(i as f64 * 5000.0);
            for e in b.iter_mut().skip(5) {
                e.at_ms += (*extra * 1000.0) as i64;
            }
            events.extend(b);
        }
        events.push(ev(90_000.0, "dhcp.offer", "ipxe=false"));
        let all = boots(&events);
        assert_eq!(all.len(), 3, "an offer without an ACK records no boot");
        assert_eq!(summary(&all), Some((9_500, 17_500)));
        assert_eq!(summary(&[]), None);
    }

    #[test]
    fn svg_draws_a_bar_per_boot_with_its_phases() {
        let all = boots(&uefi_boot(0.0));
        let drawing = svg(&all, |ms| format!("t{ms}"));
        assert!(drawing.starts_with("<svg") && drawing.ends_with("</svg>"));
        assert_eq!(drawing.matches("<title>").count(), 6);
        assert!(drawing.contains("firmware DHCP: 3.0 s"));
        assert!(drawing.contains("7.5 s"));
        assert!(!drawing.contains("<script"));
    }

    #[test]
    fn last_boot_holds_every_event_from_its_start() {
        let mut events = uefi_boot(0.0);
        events.extend(uefi_boot(100.0));
        events.push(ev(110.0, "tftp.timeout", "file=x"));
        let last = last_boot(&events);
        assert_eq!(last.first().map(|e| e.at_ms), Some(100_000));
        assert_eq!(last.len(), 9, "{last:?}");
        assert_eq!(last.last().map(|e| e.kind.as_str()), Some("tftp.timeout"));

        // A foreign server's reply just before the offer belongs to the new boot; one
        // long before does not.
        let mut events = uefi_boot(0.0);
        events.push(ev(50.0, "dhcp.foreign-server", "server=192.0.2.254"));
        events.push(ev(98.0, "dhcp.foreign-server", "server=192.0.2.254"));
        events.extend(uefi_boot(100.0));
        let last = last_boot(&events);
        assert_eq!(last.first().map(|e| e.at_ms), Some(98_000));

        // After a long silence, even kinds `boots` ignores start afresh.
        let mut events = uefi_boot(0.0);
        events.push(ev(7200.0, "dhcp.foreign-server", "server=192.0.2.254"));
        assert_eq!(last_boot(&events).len(), 1);
        // A proxy-mode firmware refused a boot file starts a boot of its own.
        let mut events = uefi_boot(0.0);
        events.push(ev(60.0, "dhcp.no-boot-file", "firmware=uefi-arm64"));
        assert_eq!(last_boot(&events).len(), 1);
        assert_eq!(boots(&events).len(), 1, "no phases: not drawn");
        assert!(last_boot(&[]).is_empty());
    }
}
