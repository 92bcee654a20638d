//! The boot timeline of a run, per console, folded from the event stream:
//! when QEMU started, when each boot stage's sentinel line arrived
//! (hypervisor banner, a VM handed over, guest kernel start, init,
//! `LAB-CLOCK`, `LAB-READY`) and when each step ended. Times are
//! milliseconds since the run started, as the console tee stamped the lines
//! (not rexpect's 100 ms polling).
//!
//! The `lab-clock` mark also carries what the guest printed on that line,
//! `LAB-CLOCK <ticks> <frequency>`: its virtual counter (CNTVCT_EL0) and the
//! counter's frequency, read by `/bin/lab-clock` just before `LAB-READY`.
//! Both bare QEMU and the hypervisor (CNTVOFF_EL2 = 0) start that counter
//! at machine reset, so it is the guest's time since power-on; under
//! `-icount` it is virtual time, which `lab bench boot --icount` compares.
//!
//! A VM that stops leaves a `vm-exits` mark (console: the VM's name) with
//! the hypervisor's exit statistics for it (`hypervisor: vm0: exits 27031:
//! uart 15000, gic 2400, ...`), so a slow boot shows where its exits went.

use crate::run::events::{Event, EventKind};
use crate::run::MACHINE_CONSOLE;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use std::time::Duration;

/// One point of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Mark {
    /// `qemu-start`, a boot stage (see [`STAGES`]), `step N`, `qemu-exit`.
    pub what: String,
    /// The console whose line marked it; `None` for lab events.
    pub console: Option<String>,
    pub at_ms: u64,
    /// The guest's counter, on the `lab-clock` mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_clock: Option<GuestClock>,
    /// The VM's exits by kind, on a `vm-exits` mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exits: Option<ExitStats>,
    /// The VM a `vm-start` mark is about: the hypervisor prints one such
    /// line per VM on one console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
}

/// A VM's exits as the hypervisor printed them when it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ExitStats {
    pub total: u64,
    /// Count per kind (`uart`, `gic`, `device`, `call`, `sysreg`, `wfx`,
    /// `irq`, `other`), in the hypervisor's order.
    pub by_kind: Vec<(String, u64)>,
}

/// The timeline stage of a VM's exit statistics.
pub const VM_EXITS_STAGE: &str = "vm-exits";

impl ExitStats {
    /// `hypervisor: <vm>: exits <total>: <kind> <n>, ...`: the VM's name
    /// and its counts; `None` for any other line.
    pub fn parse(line: &str) -> Option<(String, ExitStats)> {
        let rest = line.strip_prefix("hypervisor: ")?;
        let (vm, rest) = rest.split_once(": exits ")?;
        let (total, kinds) = rest.split_once(':')?;
        let number = |s: &str| {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        let by_kind = kinds
            .split(',')
            .map(|pair| {
                let (kind, n) = pair.trim().split_once(' ')?;
                Some((kind.to_owned(), number(n)?))
            })
            .collect::<Option<Vec<_>>>()?;
        if vm.contains(' ') {
            return None;
        }
        Some((
            vm.to_owned(),
            ExitStats {
                total: number(total)?,
                by_kind,
            },
        ))
    }
}

/// A guest's virtual counter as it printed it: `LAB-CLOCK <ticks> <frequency>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct GuestClock {
    /// CNTVCT_EL0.
    pub ticks: u64,
    /// CNTFRQ_EL0, in Hz.
    pub frequency_hz: u64,
}

impl GuestClock {
    /// The `LAB-CLOCK <ticks> <frequency>` line (the whole line, decimal
    /// numbers); `None` for any other line.
    pub fn parse(line: &str) -> Option<GuestClock> {
        let rest = line.strip_prefix(LAB_CLOCK_PREFIX)?;
        let (ticks, frequency) = rest.split_once(' ')?;
        // Digits only: `parse` alone would take a `+` sign.
        let number = |s: &str| {
            if s.bytes().all(|b| b.is_ascii_digit()) {
                s.parse::<u64>().ok()
            } else {
                None
            }
        };
        Some(GuestClock {
            ticks: number(ticks)?,
            frequency_hz: number(frequency)?,
        })
    }

    /// The counter as time since it started (machine reset); `None` for a
    /// frequency of zero.
    pub fn elapsed(&self) -> Option<Duration> {
        if self.frequency_hz == 0 {
            return None;
        }
        let whole = self.ticks / self.frequency_hz;
        let part = u128::from(self.ticks % self.frequency_hz) * 1_000_000_000
            / u128::from(self.frequency_hz);
        // `part` is below 10^9: the remainder is below the frequency.
        Some(Duration::new(whole, u32::try_from(part).ok()?))
    }
}

/// What a guest counter line starts with (`guest-images/lab-clock`).
pub const LAB_CLOCK_PREFIX: &str = "LAB-CLOCK ";

/// The timeline stage of the `LAB-CLOCK` line.
pub const LAB_CLOCK_STAGE: &str = "lab-clock";

/// The timeline stage of the hypervisor's line about starting a VM, which
/// it prints once per VM: marked once per VM, not once per console.
pub const VM_START_STAGE: &str = "vm-start";

/// Boot stages and the first console line that marks each (per console).
pub const STAGES: &[(&str, &str)] = &[
    ("hypervisor-start", r"^hypervisor \d+\.\d+\.\d+: "),
    (VM_START_STAGE, r"^hypervisor: (\S+): \d+ vCPU"),
    (
        "kernel-start",
        r"Booting Linux on physical CPU|^TESTGUEST uart: ",
    ),
    ("init", r"Run /init as init process"),
    (LAB_CLOCK_STAGE, r"^LAB-CLOCK \d+ \d+$"),
    ("lab-ready", r"^LAB-READY \S+"),
    ("network-up", r"\beth\d+: Link is Up"),
    ("guest-done", r"^TESTGUEST DONE "),
];

/// The stages the hypervisor's own lines mark.
const HYPERVISOR_STAGES: &[&str] = &["hypervisor-start", VM_START_STAGE];

fn stage_regexes() -> &'static [(&'static str, Regex)] {
    static REGEXES: OnceLock<Vec<(&'static str, Regex)>> = OnceLock::new();
    REGEXES.get_or_init(|| {
        STAGES
            .iter()
            .map(|(name, pattern)| (*name, Regex::new(pattern).expect("valid stage regex")))
            .collect()
    })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Folds events into marks, in order of arrival.
#[derive(Debug, Clone, Default)]
pub struct TimelineBuilder {
    marks: Vec<Mark>,
}

impl TimelineBuilder {
    pub fn on_event(&mut self, event: &Event) {
        let at_ms = ms(event.at);
        let lab = |what: String| Mark {
            what,
            console: None,
            at_ms,
            guest_clock: None,
            exits: None,
            vm: None,
        };
        match &event.kind {
            EventKind::RunStarted { .. } => self.marks.clear(),
            EventKind::QemuStarted { .. } => self.marks.push(lab("qemu-start".into())),
            EventKind::StepPassed { index, .. } => {
                self.marks.push(lab(format!("step {}", index + 1)))
            }
            EventKind::StepFailed { index, .. } => {
                self.marks.push(lab(format!("step {} failed", index + 1)))
            }
            EventKind::QemuStopped { .. } => self.marks.push(lab("qemu-exit".into())),
            EventKind::ConsoleLine { console, line } => {
                // The hypervisor's lines come on the machine's console only;
                // a guest printing the same text is not the hypervisor.
                let machine = &**console == MACHINE_CONSOLE;
                if let Some((vm, exits)) = ExitStats::parse(line).filter(|_| machine) {
                    self.marks.push(Mark {
                        what: VM_EXITS_STAGE.to_owned(),
                        console: Some(vm),
                        at_ms,
                        guest_clock: None,
                        exits: Some(exits),
                        vm: None,
                    });
                }
                for (name, regex) in stage_regexes() {
                    if HYPERVISOR_STAGES.contains(name) && !machine {
                        continue;
                    }
                    let Some(found) = regex.captures(line) else {
                        continue;
                    };
                    let vm = (*name == VM_START_STAGE)
                        .then(|| found.get(1).map(|vm| vm.as_str().to_owned()))
                        .flatten();
                    let seen = self.marks.iter().any(|m| {
                        m.what == *name && m.console.as_deref() == Some(console) && m.vm == vm
                    });
                    if !seen {
                        self.marks.push(Mark {
                            what: (*name).to_owned(),
                            console: Some(console.to_string()),
                            at_ms,
                            guest_clock: if *name == LAB_CLOCK_STAGE {
                                GuestClock::parse(line)
                            } else {
                                None
                            },
                            exits: None,
                            vm,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    pub fn marks(&self) -> &[Mark] {
        &self.marks
    }
}

/// One line per mark for the terminal: `  +1.234s  lab-ready (serial)`,
/// `  +1.010s  vm-start vm1 (serial)`,
/// `  +1.200s  lab-clock (serial): guest counter at 0.987654s`.
pub fn render(marks: &[Mark]) -> String {
    marks
        .iter()
        .map(|m| {
            let on = m
                .console
                .as_ref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            let clock = m
                .guest_clock
                .and_then(|c| c.elapsed())
                .map(|t| format!(": guest counter at {:.6}s", t.as_secs_f64()))
                .or_else(|| m.exits.as_ref().map(|e| format!(": {} exits", e.total)))
                .unwrap_or_default();
            let vm = m.vm.as_ref().map(|vm| format!(" {vm}")).unwrap_or_default();
            format!(
                "  +{}.{:03}s  {}{vm}{on}{clock}\n",
                m.at_ms / 1000,
                m.at_ms % 1000,
                m.what
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn exit_statistics_lines_become_marks() {
        let mut b = TimelineBuilder::default();
        b.on_event(&line(
            2500,
            "hypervisor: vm1: exits 30: uart 10, gic 5, device 0, call 1, sysreg 2, wfx 0, irq 12, other 0",
        ));
        b.on_event(&line(2600, "hypervisor: vm1: exits soon"));
        b.on_event(&line(2700, "[vm0] hypervisor: vm0: exits 1: uart 1"));
        let marks = b.marks();
        assert_eq!(
            marks.len(),
            1,
            "only the hypervisor's own, well-formed line"
        );
        assert_eq!(marks[0].what, VM_EXITS_STAGE);
        assert_eq!(marks[0].console.as_deref(), Some("vm1"));
        let exits = marks[0].exits.as_ref().unwrap();
        assert_eq!(exits.total, 30);
        assert_eq!(exits.by_kind[0], ("uart".to_owned(), 10));
        assert_eq!(exits.by_kind.len(), 8);
        assert!(render(marks).contains("vm-exits (vm1): 30 exits"));
    }

    fn line(at_ms: u64, text: &str) -> Event {
        line_on("serial", at_ms, text)
    }

    fn line_on(console: &str, at_ms: u64, text: &str) -> Event {
        Event {
            scenario: Arc::from("s"),
            at: Duration::from_millis(at_ms),
            kind: EventKind::ConsoleLine {
                console: Arc::from(console),
                line: text.into(),
            },
        }
    }

    #[test]
    fn a_guest_printing_the_hypervisors_lines_marks_nothing() {
        let mut b = TimelineBuilder::default();
        for text in [
            "hypervisor 0.1.0: EL2 on 2 CPUs",
            "hypervisor: vm0: 1 vCPU on CPU 0",
            "hypervisor: vm0: exits 1: uart 1",
        ] {
            b.on_event(&line_on("vm0", 100, text));
        }
        assert_eq!(b.marks(), []);
        b.on_event(&line_on("vm0", 200, "LAB-READY vm0"));
        assert_eq!(b.marks()[0].what, "lab-ready");
    }

    #[test]
    fn stages_from_real_lines_once_each() {
        let mut builder = TimelineBuilder::default();
        let events = [
            Event {
                scenario: Arc::from("s"),
                at: Duration::from_millis(900),
                kind: EventKind::QemuStarted {
                    command: "q".into(),
                    pid: Some(1),
                },
            },
            line(
                1000,
                "hypervisor 0.1.0: EL2, 2 CPUs, 512 MiB RAM at 0x40000000",
            ),
            line(1010, "hypervisor: vm0: 1 vCPU on CPU 0, 64 MiB at IPA 0x40000000 (host 0x41200000), entry 0x40080000"),
            line(1020, "hypervisor: vm1: 1 vCPU on CPU 1, 64 MiB at IPA 0x40000000 (host 0x45200000), entry 0x40080000"),
            line(1030, "hypervisor: vm1: 1 vCPU on CPU 1, 64 MiB at IPA 0x40000000 (host 0x45200000), entry 0x40080000"),
            line(
                1100,
                "[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd083]",
            ),
            line(2400, "[    1.427373] Run /init as init process"),
            line(2450, "LAB-CLOCK 93750000 62500000"),
            line(2500, "LAB-READY vm0"),
            line(2600, "LAB-READY vm0"),
            Event {
                scenario: Arc::from("s"),
                at: Duration::from_millis(2700),
                kind: EventKind::StepPassed {
                    index: 0,
                    duration: Duration::from_millis(1800),
                },
            },
        ];
        for e in &events {
            builder.on_event(e);
        }
        let got: Vec<(&str, u64)> = builder
            .marks()
            .iter()
            .map(|m| (m.what.as_str(), m.at_ms))
            .collect();
        assert_eq!(
            got,
            [
                ("qemu-start", 900),
                ("hypervisor-start", 1000),
                ("vm-start", 1010),
                ("vm-start", 1020),
                ("kernel-start", 1100),
                ("init", 2400),
                ("lab-clock", 2450),
                ("lab-ready", 2500),
                ("step 1", 2700)
            ]
        );
        let vms: Vec<Option<&str>> = builder.marks().iter().map(|m| m.vm.as_deref()).collect();
        assert_eq!(vms[2..4], [Some("vm0"), Some("vm1")]);
        assert!(vms.iter().filter(|vm| vm.is_some()).count() == 2);
        let clock = &builder.marks()[6];
        assert_eq!(
            clock.guest_clock,
            Some(GuestClock {
                ticks: 93_750_000,
                frequency_hz: 62_500_000
            })
        );
        assert!(builder
            .marks()
            .iter()
            .all(|m| m.guest_clock.is_none() || m.what == LAB_CLOCK_STAGE));
        let text = render(builder.marks());
        assert!(text.contains("  +2.500s  lab-ready (serial)\n"), "{text}");
        assert!(
            text.contains("  +1.020s  vm-start vm1 (serial)\n"),
            "{text}"
        );
        assert!(
            text.contains("  +2.450s  lab-clock (serial): guest counter at 1.500000s\n"),
            "{text}"
        );
    }

    #[test]
    fn guest_clock_lines() {
        for (line, expected) in [
            ("LAB-CLOCK 0 62500000", Some((0, 62_500_000))),
            (
                "LAB-CLOCK 18446744073709551615 1000000000",
                Some((u64::MAX, 1_000_000_000)),
            ),
            ("LAB-CLOCK 18446744073709551616 1", None),
            ("LAB-CLOCK +5 62500000", None),
            ("LAB-CLOCK 5  62500000", None),
            ("LAB-CLOCK 5 62500000 ", None),
            ("LAB-CLOCK 5", None),
            ("LAB-CLOCK  62500000", None),
            ("LAB-CLOCK 0x10 62500000", None),
            ("xLAB-CLOCK 5 62500000", None),
            ("LAB-READY vm0", None),
        ] {
            let got = GuestClock::parse(line).map(|c| (c.ticks, c.frequency_hz));
            assert_eq!(got, expected, "{line:?}");
        }
    }

    #[test]
    fn guest_clock_elapsed_is_ticks_over_frequency() {
        // Frequencies divisible by every denominator: `num/den` of a second
        // is a whole number of ticks.
        for hz in [62_500_000u64, 1_000_000_000, 24_000_000, 4] {
            for (whole, num, den) in [(0u64, 0u64, 1u64), (2, 1, 2), (1, 3, 4), (7, 0, 1)] {
                let clock = GuestClock {
                    ticks: whole * hz + hz / den * num,
                    frequency_hz: hz,
                };
                let expected =
                    Duration::from_secs(whole) + Duration::from_nanos(1_000_000_000 / den * num);
                assert_eq!(clock.elapsed(), Some(expected), "{clock:?}");
            }
        }
        let huge = GuestClock {
            ticks: u64::MAX,
            frequency_hz: 1,
        };
        assert_eq!(huge.elapsed(), Some(Duration::from_secs(u64::MAX)));
        let stopped = GuestClock {
            ticks: 5,
            frequency_hz: 0,
        };
        assert_eq!(stopped.elapsed(), None);
    }

    #[test]
    fn marks_keep_the_guest_clock_in_json_and_read_old_json() {
        let mark = Mark {
            what: LAB_CLOCK_STAGE.into(),
            console: Some("serial".into()),
            at_ms: 7,
            guest_clock: Some(GuestClock {
                ticks: 3,
                frequency_hz: 4,
            }),
            exits: None,
            vm: None,
        };
        let json = serde_json::to_string(&mark).unwrap();
        assert_eq!(
            json,
            r#"{"what":"lab-clock","console":"serial","at-ms":7,"guest-clock":{"ticks":3,"frequency-hz":4}}"#
        );
        assert_eq!(serde_json::from_str::<Mark>(&json).unwrap(), mark);
        let old: Mark =
            serde_json::from_str(r#"{"what":"lab-ready","console":"serial","at-ms":9}"#).unwrap();
        assert_eq!(old.guest_clock, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("guest-clock"));
    }
}
