//! Per-console transcripts of a run, collected from the event stream, and
//! their stable part: what a snapshot of a scenario compares.
//!
//! A whole boot log is noise (Linux prints hundreds of lines whose order
//! and content shift with timing), so the stable part of a console is:
//! - every line one of the scenario's steps matched (an `expect` regex, or
//!   the echo of a `send`), found by replaying the steps over the lines;
//! - every sentinel line: the hypervisor's `hypervisor...` lines, the test
//!   guest's `TESTGUEST ...` and `ATTACK ...` lines and the initramfs' `LAB-CLOCK ...` (its
//!   numbers masked by the normaliser) and `LAB-READY <vm>`;
//!
//! each through [`Normalizer`], and only up to the last line the steps
//! matched: after it the lab kills QEMU, so how much more arrived is
//! timing. A run that ends by QEMU exiting (power-off, panic) keeps every
//! sentinel line to the end.

use crate::normalize::Normalizer;
use crate::run::events::{Consumer, Event, EventKind, ExitReason, StepFailure};
use crate::run::MACHINE_CONSOLE;
use crate::scenario::{Scenario, Step};
use regex::Regex;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// One console line and when it arrived (since the run started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedLine {
    pub at: Duration,
    pub text: String,
}

/// The lines of one run, per console, and how the run ended.
#[derive(Debug, Clone, Default)]
pub struct Transcript {
    pub consoles: BTreeMap<String, Vec<TimedLine>>,
    pub reason: Option<ExitReason>,
}

impl Transcript {
    /// Folds one event in.
    pub fn on_event(&mut self, event: &Event) {
        match &event.kind {
            EventKind::RunStarted { .. } => *self = Transcript::default(),
            EventKind::ConsoleLine { console, line } => self
                .consoles
                .entry(console.to_string())
                .or_default()
                .push(TimedLine {
                    at: event.at,
                    text: line.clone(),
                }),
            EventKind::RunFinished { reason, .. } => self.reason = Some(reason.clone()),
            _ => {}
        }
    }

    /// The stable part of every console, normalised, as snapshot text:
    /// how the run ended, then one section per console.
    pub fn stable_text(&self, scenario: &Scenario, normalizer: &Normalizer) -> String {
        let mut out = String::new();
        let reason = match &self.reason {
            Some(reason) => normalizer.line(&reason.to_string()),
            None => "the run did not finish".into(),
        };
        let _ = writeln!(out, "end: {reason}");
        let followed = self.follow_all(scenario);
        for ((console, lines), followed) in self.consoles.iter().zip(followed) {
            let _ = writeln!(out, "--- {console} ---");
            for index in followed.stable {
                let _ = writeln!(out, "{}", normalizer.line(&lines[index].text));
            }
        }
        out
    }

    /// How the scenario's steps followed `console`'s lines (none for a
    /// console without lines).
    #[cfg(test)]
    fn follow(&self, scenario: &Scenario, console: &str) -> Followed {
        self.consoles
            .keys()
            .zip(self.follow_all(scenario))
            .find(|(name, _)| *name == console)
            .map(|(_, followed)| followed)
            .unwrap_or_default()
    }

    /// How the steps followed each console, in the order of
    /// [`Transcript::consoles`] (one replay of the steps for all of them).
    pub fn follow_all(&self, scenario: &Scenario) -> Vec<Followed> {
        let consoles: Vec<(&str, &[TimedLine])> = self
            .consoles
            .iter()
            .map(|(name, lines)| (name.as_str(), lines.as_slice()))
            .collect();
        follow_steps(scenario, &consoles, self.ended_by_qemu_exit())
    }

    /// QEMU exited by itself: the console is complete, not cut by a kill.
    fn ended_by_qemu_exit(&self) -> bool {
        match &self.reason {
            Some(ExitReason::StepFailed { failure, .. }) => matches!(
                failure,
                StepFailure::QemuExited { .. } | StepFailure::WrongExitStatus { .. }
            ),
            _ => false,
        }
    }
}

/// A consumer that keeps the transcript where its creator can read it.
#[derive(Debug, Clone, Default)]
pub struct TranscriptCollector(Arc<Mutex<Transcript>>);

impl TranscriptCollector {
    /// The transcript so far.
    pub fn transcript(&self) -> Transcript {
        self.0.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl Consumer for TranscriptCollector {
    fn on_event(&mut self, event: &Event) {
        if let Ok(mut transcript) = self.0.lock() {
            transcript.on_event(event);
        }
    }
}

/// Lines every transcript keeps: the hypervisor's, the test guest's and
/// the initramfs' markers.
pub fn sentinel() -> &'static Regex {
    static SENTINEL: OnceLock<Regex> = OnceLock::new();
    SENTINEL.get_or_init(|| {
        Regex::new(r"^(hypervisor\b|TESTGUEST |ATTACK |LAB-CLOCK |LAB-READY )")
            .expect("valid sentinel regex")
    })
}

/// Text as the step regexes saw it: without terminal escapes.
fn unescaped(normalizer: &Normalizer, line: &str) -> String {
    match normalizer.rule("terminal-escapes") {
        Some(rule) => rule.apply(line),
        None => line.to_owned(),
    }
}

/// How the steps followed one console's lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Followed {
    /// Indices of the stable lines, in order.
    pub stable: Vec<usize>,
    /// Where an `expect` of this console that matched nothing searched
    /// from: the line the step before it matched (or the first line).
    pub stopped_at: Option<usize>,
}

/// Where a step reads: one console's lines, or every console's lines in
/// the order they arrived (a step naming no console while the hypervisor
/// tags its VMs' lines).
#[derive(Clone, Copy)]
enum Reads {
    Console(usize),
    Every,
}

/// Replays the steps over the consoles' lines, in the order the run did:
/// each console with its own cursor, and one more cursor for the steps
/// that read every console. A console's stable lines end at its last
/// matched line. A console no step matched (the hypervisor's own) ends
/// where the last match of any console arrived when there is one VM,
/// whose actions alone cause the hypervisor's lines; with several, how
/// many lines the others caused by then is timing, so it keeps none.
fn follow_steps(
    scenario: &Scenario,
    consoles: &[(&str, &[TimedLine])],
    through_exit: bool,
) -> Vec<Followed> {
    let normalizer = Normalizer::standard();
    let texts: Vec<Vec<String>> = consoles
        .iter()
        .map(|(_, lines)| {
            lines
                .iter()
                .map(|l| unescaped(normalizer, &l.text))
                .collect()
        })
        .collect();
    // Every line as (console, index), in arrival order.
    let mut every: Vec<(usize, usize)> = consoles
        .iter()
        .enumerate()
        .flat_map(|(c, (_, lines))| (0..lines.len()).map(move |i| (c, i)))
        .collect();
    every.sort_by_key(|&(c, i)| consoles[c].1[i].at);
    let tagged = !crate::run::tagged_vms(scenario).is_empty();
    let first_machine = crate::run::topology::machine_consoles(scenario)
        .into_iter()
        .next()
        .unwrap_or_else(|| MACHINE_CONSOLE.to_owned());
    let console_index = |name: &str| {
        consoles
            .iter()
            .position(|(c, _)| *c == name)
            .or_else(|| (consoles.len() == 1).then_some(0))
    };
    let mut keep: Vec<Vec<bool>> = texts.iter().map(|t| vec![false; t.len()]).collect();
    let mut cursors = vec![0; consoles.len()];
    let mut every_cursor = 0;
    let mut last_matched: Vec<Option<usize>> = vec![None; consoles.len()];
    let mut stopped_at: Vec<Option<usize>> = vec![None; consoles.len()];
    for step in &scenario.steps {
        let reads = match step.console() {
            Some(name) => console_index(name).map(Reads::Console),
            None if tagged => Some(Reads::Every),
            None => console_index(&first_machine).map(Reads::Console),
        };
        let Some(reads) = reads else {
            continue;
        };
        // The lines the step searches, as (console, index), from its cursor.
        let searched: Vec<(usize, usize)> = match reads {
            Reads::Console(c) => (cursors[c]..texts[c].len()).map(|i| (c, i)).collect(),
            Reads::Every => every[every_cursor.min(every.len())..].to_vec(),
        };
        let found = match step {
            Step::Expect { pattern, .. } => match scenario.expect_regex(pattern) {
                Ok(regex) => searched
                    .iter()
                    .position(|&(c, i)| regex.is_match(&texts[c][i])),
                Err(_) => None,
            },
            // The echo of a sent line is kept where it is found; the shell's
            // line editor may wrap or redraw a long one, so a missing echo
            // is no reason to stop following the steps.
            Step::Send { line, .. } => searched
                .iter()
                .position(|&(c, i)| texts[c][i].contains(line)),
            Step::ExpectExit { .. } => continue,
        };
        match found {
            Some(offset) => {
                let (c, i) = searched[offset];
                keep[c][i] = true;
                last_matched[c] = Some(i);
                match reads {
                    Reads::Console(_) => cursors[c] = i,
                    Reads::Every => every_cursor += offset,
                }
            }
            None if matches!(step, Step::Send { .. }) => {}
            None => {
                match reads {
                    Reads::Console(c) => stopped_at[c] = Some(cursors[c]),
                    // Each console's first line the step searched.
                    Reads::Every => {
                        for (c, stopped) in stopped_at.iter_mut().enumerate() {
                            *stopped = searched
                                .iter()
                                .find(|&&(from, _)| from == c)
                                .map(|&(_, i)| i);
                        }
                    }
                }
                break;
            }
        }
    }
    let whole = through_exit || stopped_at.iter().any(Option::is_some) || scenario.expects_exit();
    // Where the last match of any console arrived, in arrival order.
    let last_arrival = every.iter().rposition(|&(c, i)| keep[c][i]);
    (0..consoles.len())
        .map(|c| {
            let end = if whole {
                texts[c].len()
            } else if let Some(i) = last_matched[c] {
                i + 1
            } else if scenario.vms.len() > 1 {
                0
            } else {
                last_arrival.map_or(0, |last| {
                    every[..=last]
                        .iter()
                        .filter(|&&(from, _)| from == c)
                        .count()
                })
            };
            for i in 0..end {
                if sentinel().is_match(&texts[c][i]) {
                    keep[c][i] = true;
                }
            }
            Followed {
                stable: (0..end).filter(|&i| keep[c][i]).collect(),
                stopped_at: stopped_at[c],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenario(steps: &str) -> Scenario {
        Scenario::parse(
            Path::new("s.yaml"),
            &format!(
                "schema: 1\nname: s\ndescription: d\nmachine: {{ cpus: 1, memory-mib: 64 }}\nsteps:\n{steps}"
            ),
        )
        .unwrap()
    }

    fn transcript(lines: &[&str], reason: ExitReason) -> Transcript {
        let mut t = Transcript::default();
        t.consoles.insert(
            MACHINE_CONSOLE.into(),
            lines
                .iter()
                .enumerate()
                .map(|(i, text)| TimedLine {
                    at: Duration::from_millis(i as u64),
                    text: text.to_string(),
                })
                .collect(),
        );
        t.reason = Some(reason);
        t
    }

    #[test]
    fn keeps_matched_and_sentinel_lines_up_to_the_last_match() {
        let s = scenario(
            "  - expect: 'LAB-READY vm0'\n  - expect: 'vm0:/root# '\n  - send: uname -a\n  - expect: 'Linux .* aarch64'\n",
        );
        let t = transcript(
            &[
                "[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd083]",
                "[    1.427373] Run /init as init process",
                "LAB-CLOCK 93750000 62500000",
                "LAB-READY vm0",
                "",
                "vm0:/root# \x1b[6nuname -a",
                "Linux vm0 6.1.0-50-cloud-arm64 #1 SMP Debian 6.1.176-1 (2026-07-02) aarch64 GNU/Linux",
                "vm0:/root# \x1b[6n",
            ],
            ExitReason::StepsPassed,
        );
        assert_eq!(
            t.stable_text(&s, Normalizer::standard()),
            "end: every step passed\n--- serial ---\nLAB-CLOCK <ticks> <frequency>\nLAB-READY vm0\nvm0:/root# uname -a\nLinux vm0 6.1.0-50-cloud-arm64 #<build> aarch64 GNU/Linux\n"
        );
    }

    #[test]
    fn a_long_send_whose_echo_wrapped_does_not_end_the_transcript() {
        let s = scenario(
            "  - send: 'for i in 1 2 3 4; do echo worker-$i-done; done; echo workers-finished'\n  - expect: '(?m)^workers-finished$'\n  - send: nproc\n  - expect: '(?m)^4$'\n",
        );
        let t = transcript(
            &[
                "vm0:/root# for i in 1 2 3 4; do echo worker-$i-done; done; echo worke",
                "rs-finished",
                "worker-1-done",
                "workers-finished",
                "vm0:/root# nproc",
                "4",
            ],
            ExitReason::StepsPassed,
        );
        assert_eq!(
            t.stable_text(&s, Normalizer::standard()),
            "end: every step passed\n--- serial ---\nworkers-finished\nvm0:/root# nproc\n4\n"
        );
    }

    #[test]
    fn untagged_steps_of_one_vm_follow_every_console_in_arrival_order() {
        let s = Scenario::parse(
            Path::new("s.yaml"),
            "schema: 1\nname: s\ndescription: d\nmachine: { cpus: 1, memory-mib: 64 }\n\
             vms: [{ name: vm0, kernel: { crate: g }, vcpus: 1, memory-mib: 64 }]\n\
             steps:\n  - expect: 'hypervisor: vm0: 1 vCPU'\n  - expect: 'LAB-READY vm0'\n\
             \x20 - expect: 'hypervisor: vm0: stopped'\n",
        )
        .unwrap();
        let mut t = Transcript::default();
        let timed = |lines: &[(u64, &str)]| {
            lines
                .iter()
                .map(|(at, text)| TimedLine {
                    at: Duration::from_millis(*at),
                    text: text.to_string(),
                })
                .collect()
        };
        t.consoles.insert(
            MACHINE_CONSOLE.into(),
            timed(&[
                (1, "hypervisor 0.1.0: EL2"),
                (2, "hypervisor: vm0: 1 vCPU on CPU 0"),
                (6, "hypervisor: vm0: stopped"),
                (8, "hypervisor: late"),
            ]),
        );
        // The steps read both consoles in arrival order; the guest's
        // console ends at its last match, the hypervisor's at the last
        // match of all.
        t.consoles.insert(
            "vm0".into(),
            timed(&[(3, "Booting"), (4, "LAB-READY vm0"), (7, "noise")]),
        );
        t.reason = Some(ExitReason::StepsPassed);
        assert_eq!(
            t.stable_text(&s, Normalizer::standard()),
            "end: every step passed\n--- serial ---\nhypervisor 0.1.0: EL2\n\
             hypervisor: vm0: 1 vCPU on CPU 0\nhypervisor: vm0: stopped\n\
             --- vm0 ---\nLAB-READY vm0\n"
        );
    }

    #[test]
    fn a_failed_run_keeps_every_sentinel() {
        let s = scenario(
            "  - expect: 'TESTGUEST uart: PASS'\n  - expect: 'TESTGUEST DONE'\n    timeout: 5\n",
        );
        let reason = ExitReason::StepFailed {
            step: 1,
            failure: StepFailure::Timeout { timeout_secs: 5 },
        };
        let t = transcript(
            &[
                "hypervisor 0.1.0: EL2, 1 CPUs, 512 MiB RAM at 0x40000000",
                "TESTGUEST uart: PASS pl011",
                "noise",
                "TESTGUEST vtimer: FAIL after 10445 us",
            ],
            reason,
        );
        assert_eq!(
            t.stable_text(&s, Normalizer::standard()),
            "end: step 2: timed out after <duration>\n--- serial ---\nhypervisor 0.1.0: EL2, 1 CPUs, 512 MiB RAM at 0x40000000\nTESTGUEST uart: PASS pl011\nTESTGUEST vtimer: FAIL after <duration>\n"
        );
        assert_eq!(t.follow(&s, MACHINE_CONSOLE).stopped_at, Some(1));
        assert_eq!(t.follow(&s, "vm9"), Followed::default());
    }
}
