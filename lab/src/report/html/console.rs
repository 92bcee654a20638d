//! What a report shows of a run's consoles: every line as it arrived (with
//! its time), the normalised transcript a snapshot would compare, the raw
//! log files, and per-VM exit statistics when the hypervisor printed them.
//!
//! The failing step's match position is the line its `expect` searched
//! from (where the step before it matched, [`Followed::stopped_at`]); the
//! lines after it are what it searched, and a `fail-on` match is marked on
//! its own line.
//!
//! Exit statistics are the `vm-exits` marks of the run's timeline (the
//! hypervisor's `hypervisor: <vm>: exits <n>: <kind> <n>, ...` line for a
//! VM that stopped); a run without them has no statistics section.

use crate::normalize::Normalizer;
use crate::report::timeline::{Mark, VM_EXITS_STAGE};
use crate::report::transcript::{Followed, Transcript};
use crate::run::events::{ExitReason, StepFailure};
use crate::scenario::Scenario;
use std::path::Path;

/// How much of a raw log the page keeps (its end).
pub const RAW_LOG_LIMIT: usize = 256 * 1024;

/// One console of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleView {
    pub name: String,
    pub lines: Vec<LineView>,
    /// The normalised stable lines (what a snapshot compares).
    pub transcript: Vec<String>,
    /// The id of the failing step's position, when it is on this console.
    pub failure_anchor: Option<String>,
}

/// One console line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineView {
    /// `+1.234`: seconds since the run started.
    pub at: String,
    pub text: String,
    /// `""`, `match-position`, `searched` or `fail-match`.
    pub class: &'static str,
    pub id: Option<String>,
}

/// A log file of the run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLog {
    pub name: String,
    pub text: String,
    /// Bytes left out from the start of the file.
    pub omitted: usize,
}

/// The hypervisor's exit counts for one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmExits {
    pub vm: String,
    pub total: u64,
    pub by_kind: Vec<(String, u64)>,
}

/// The failing step and how it failed, if the run ended on one.
fn failing_step<'a>(
    scenario: &'a Scenario,
    reason: &'a ExitReason,
) -> Option<(usize, &'a StepFailure)> {
    match reason {
        ExitReason::StepFailed { step, failure } if *step < scenario.steps.len() => {
            Some((*step, failure))
        }
        _ => None,
    }
}

/// The consoles of a run, `anchor` prefixing the ids of highlighted lines.
pub fn consoles(
    transcript: &Transcript,
    scenario: &Scenario,
    reason: &ExitReason,
    anchor: &str,
) -> Vec<ConsoleView> {
    let normalizer = Normalizer::standard();
    let failing = failing_step(scenario, reason);
    transcript
        .consoles
        .iter()
        .zip(transcript.follow_all(scenario))
        .map(|((name, lines), followed)| {
            // The follower stops the failing step on the consoles it read;
            // a `fail-on` pattern applies to every console.
            let Followed { stable, stopped_at } = followed;
            let position = stopped_at.filter(|_| failing.is_some());
            let fail_match = match failing {
                Some((_, StepFailure::FailPattern { matched })) => {
                    let matched = matched.trim();
                    lines
                        .iter()
                        .rposition(|line| !matched.is_empty() && line.text.contains(matched))
                }
                _ => None,
            };
            let failure_id = format!("{anchor}-{name}-failure");
            let mut failure_anchor = None;
            let views = lines
                .iter()
                .enumerate()
                .map(|(index, line)| {
                    let class = if Some(index) == fail_match {
                        "fail-match"
                    } else if Some(index) == position {
                        "match-position"
                    } else if position.is_some_and(|p| index > p) {
                        "searched"
                    } else {
                        ""
                    };
                    let marked = Some(index) == fail_match.or(position);
                    if marked {
                        failure_anchor = Some(failure_id.clone());
                    }
                    LineView {
                        at: format!("+{}.{:03}", line.at.as_secs(), line.at.subsec_millis()),
                        text: visible(&display_text(normalizer, &line.text)),
                        class,
                        id: marked.then(|| failure_id.clone()),
                    }
                })
                .collect();
            ConsoleView {
                name: name.clone(),
                lines: views,
                transcript: stable
                    .iter()
                    .map(|&i| normalizer.line(&lines[i].text))
                    .collect(),
                failure_anchor,
            }
        })
        .collect()
}

/// A line without terminal escapes, as the steps saw it.
fn display_text(normalizer: &Normalizer, line: &str) -> String {
    match normalizer.rule("terminal-escapes") {
        Some(rule) => rule.apply(line),
        None => line.to_owned(),
    }
}

/// Control characters made visible (`␛` for ESC), line breaks and tabs kept.
fn visible(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c,
            '\u{1b}' => '␛',
            c if c.is_control() => char::from_u32(0x2400 + c as u32).unwrap_or('?'),
            c => c,
        })
        .collect()
}

/// The run directory's `*.log` files, each cut to its last
/// [`RAW_LOG_LIMIT`] bytes.
pub fn raw_logs(run_dir: &Path) -> Vec<RawLog> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "log") && p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let bytes = std::fs::read(&path).ok()?;
            let omitted = bytes.len().saturating_sub(RAW_LOG_LIMIT);
            Some(RawLog {
                name: path.file_name()?.to_string_lossy().into_owned(),
                text: visible(&String::from_utf8_lossy(&bytes[omitted..]).replace("\r\n", "\n")),
                omitted,
            })
        })
        .collect()
}

/// Each VM's exit statistics, in the order the VMs stopped.
pub fn exit_stats(marks: &[Mark]) -> Vec<VmExits> {
    marks
        .iter()
        .filter(|m| m.what == VM_EXITS_STAGE)
        .filter_map(|m| {
            let exits = m.exits.as_ref()?;
            Some(VmExits {
                vm: m.console.clone()?,
                total: exits.total,
                by_kind: exits.by_kind.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::transcript::TimedLine;
    use crate::run::MACHINE_CONSOLE;
    use std::time::Duration;

    fn transcript(lines: &[&str]) -> Transcript {
        let mut t = Transcript::default();
        t.consoles.insert(
            MACHINE_CONSOLE.into(),
            lines
                .iter()
                .enumerate()
                .map(|(i, text)| TimedLine {
                    at: Duration::from_millis(i as u64 * 1001),
                    text: text.to_string(),
                })
                .collect(),
        );
        t
    }

    fn scenario(steps: &str) -> Scenario {
        Scenario::parse(
            Path::new("s.yaml"),
            &format!(
                "schema: 1\nname: s\ndescription: d\nmachine: {{ cpus: 1, memory-mib: 64 }}\nsteps:\n{steps}"
            ),
        )
        .unwrap()
    }

    #[test]
    fn the_failing_step_searched_from_the_last_match() {
        let s = scenario("  - expect: 'hypervisor \\d'\n  - expect: 'never'\n");
        let t = transcript(&["noise", "hypervisor 0.1.0: EL2", "\x1b[6nmore", "end"]);
        let reason = ExitReason::StepFailed {
            step: 1,
            failure: StepFailure::Timeout { timeout_secs: 1 },
        };
        let views = consoles(&t, &s, &reason, "s-1");
        let classes: Vec<&str> = views[0].lines.iter().map(|l| l.class).collect();
        assert_eq!(classes, ["", "match-position", "searched", "searched"]);
        assert_eq!(views[0].lines[2].text, "more");
        assert_eq!(views[0].lines[1].at, "+1.001");
        assert_eq!(
            views[0].failure_anchor.as_deref(),
            Some("s-1-serial-failure")
        );
        assert_eq!(views[0].lines[1].id, views[0].failure_anchor);
        assert_eq!(views[0].transcript, ["hypervisor 0.1.0: EL2"]);
    }

    #[test]
    fn a_fail_on_match_is_marked_and_a_pass_marks_nothing() {
        let s = scenario("  - expect: 'ready'\n");
        let t = transcript(&["boot", "Kernel panic - not syncing: x", "later"]);
        let reason = ExitReason::StepFailed {
            step: 0,
            failure: StepFailure::FailPattern {
                matched: "Kernel panic - not syncing".into(),
            },
        };
        let views = consoles(&t, &s, &reason, "a");
        let classes: Vec<&str> = views[0].lines.iter().map(|l| l.class).collect();
        assert_eq!(classes, ["match-position", "fail-match", "searched"]);
        let passed = consoles(&t, &s, &ExitReason::StepsPassed, "a");
        assert!(passed[0].lines.iter().all(|l| l.class.is_empty()));
        assert_eq!(passed[0].failure_anchor, None);
    }

    #[test]
    fn exit_statistics_from_the_timeline() {
        let mut builder = crate::report::timeline::TimelineBuilder::default();
        for line in [
            "hypervisor 0.1.0: EL2",
            "hypervisor: vm1: exits 30: uart 10, gic 20",
        ] {
            builder.on_event(&crate::run::events::Event {
                scenario: "s".into(),
                at: Duration::ZERO,
                kind: crate::run::events::EventKind::ConsoleLine {
                    console: MACHINE_CONSOLE.into(),
                    line: line.into(),
                },
            });
        }
        assert_eq!(
            exit_stats(builder.marks()),
            [VmExits {
                vm: "vm1".into(),
                total: 30,
                by_kind: vec![("uart".into(), 10), ("gic".into(), 20)]
            }]
        );
    }

    #[test]
    fn control_characters_are_visible() {
        assert_eq!(visible("a\x1bb\x07\tc"), "a␛b␇\tc");
    }
}
