//! The boot timeline of a run, per console, folded from the event stream:
//! when QEMU started, when each boot stage's sentinel line arrived
//! (hypervisor banner, a VM handed over, guest kernel start, init,
//! `LAB-READY`) and when each step ended. Times are milliseconds since the
//! run started, as the console tee stamped the lines (not rexpect's 100 ms
//! polling).

use crate::run::events::{Event, EventKind};
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
}

/// Boot stages and the first console line that marks each (per console).
pub const STAGES: &[(&str, &str)] = &[
    ("hypervisor-start", r"^hypervisor \d+\.\d+\.\d+: "),
    ("vm-start", r"^hypervisor: \S+: \d+ vCPU"),
    (
        "kernel-start",
        r"Booting Linux on physical CPU|^TESTGUEST uart: ",
    ),
    ("init", r"Run /init as init process"),
    ("lab-ready", r"^LAB-READY \S+"),
    ("network-up", r"\beth\d+: Link is Up"),
    ("guest-done", r"^TESTGUEST DONE "),
];

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
                for (name, regex) in stage_regexes() {
                    let seen = self
                        .marks
                        .iter()
                        .any(|m| m.what == *name && m.console.as_deref() == Some(console));
                    if !seen && regex.is_match(line) {
                        self.marks.push(Mark {
                            what: (*name).to_owned(),
                            console: Some(console.to_string()),
                            at_ms,
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

/// One line per mark for the terminal: `  +1.234s  lab-ready (serial)`.
pub fn render(marks: &[Mark]) -> String {
    marks
        .iter()
        .map(|m| {
            let on = m
                .console
                .as_ref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            format!(
                "  +{}.{:03}s  {}{on}\n",
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

    fn line(at_ms: u64, text: &str) -> Event {
        Event {
            scenario: Arc::from("s"),
            at: Duration::from_millis(at_ms),
            kind: EventKind::ConsoleLine {
                console: Arc::from("serial"),
                line: text.into(),
            },
        }
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
            line(
                1100,
                "[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd083]",
            ),
            line(2400, "[    1.427373] Run /init as init process"),
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
                ("kernel-start", 1100),
                ("init", 2400),
                ("lab-ready", 2500),
                ("step 1", 2700)
            ]
        );
        assert!(render(builder.marks()).contains("  +2.500s  lab-ready (serial)\n"));
    }
}
