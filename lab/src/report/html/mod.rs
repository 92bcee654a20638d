//! `report.html`: the page a person reads, one self-contained file (inline
//! CSS and SVG, no script, no font, no network) built from typed data with
//! askama (`lab/templates/report.html`; askama escapes every value).
//!
//! A sweep's page has the verdict table (failures first, each with the
//! command that reproduces it), then per scenario its boot timeline
//! ([`timeline`]), each VM's exit statistics when the hypervisor printed
//! them (a VM that stopped), and per attempt each console, its normalised transcript and the
//! raw logs, collapsed, the failing step's position highlighted
//! ([`console`]). `lab scenario` writes the same section for its one run
//! into the run directory ([`RunPageWriter`]).

pub mod console;
pub mod timeline;

use crate::build::write_atomically;
use crate::report::results::{ScenarioRecord, SweepRecord};
use crate::report::transcript::Transcript;
use crate::run::events::{Consumer, Event, EventKind, Verdict};
use crate::run::record::{RecordBuilder, RunRecord};
use crate::scenario::Scenario;
use crate::sweep::events::SweepVerdict;
use anyhow::{Context, Result};
use askama::Template;
use console::{ConsoleView, RawLog, VmExits};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use timeline::TimelineSvg;

/// The page's file name, in a sweep's and in a run's directory.
pub const REPORT_HTML: &str = "report.html";

/// The whole page.
#[derive(Debug, Template)]
#[template(path = "report.html")]
pub struct Page {
    pub title: String,
    /// One line under the title: counts, wall time.
    pub summary: String,
    /// The command that reruns every failure (sweeps with failures).
    pub rerun_failed: Option<String>,
    pub rows: Vec<VerdictRow>,
    pub scenarios: Vec<ScenarioSection>,
}

/// A line of the verdict table.
#[derive(Debug, Clone)]
pub struct VerdictRow {
    pub name: String,
    pub anchor: String,
    pub tags: String,
    pub verdict: String,
    /// `passed`, `failed`, `flaky`, `error`: the CSS class.
    pub class: &'static str,
    pub attempts: usize,
    pub wall: String,
    pub reason: String,
    /// The command that reproduces it, for failures and errors.
    pub rerun: Option<String>,
}

/// Everything about one scenario.
#[derive(Debug, Clone)]
pub struct ScenarioSection {
    pub row: VerdictRow,
    /// The deciding attempt's timeline.
    pub timeline: Option<TimelineSvg>,
    pub exit_stats: Vec<VmExits>,
    pub attempts: Vec<AttemptSection>,
}

/// One attempt's consoles and logs.
#[derive(Debug, Clone)]
pub struct AttemptSection {
    pub attempt: u32,
    pub verdict: String,
    pub class: &'static str,
    pub artifacts: String,
    pub consoles: Vec<ConsoleView>,
    pub raw_logs: Vec<RawLog>,
}

/// What the page needs of one attempt.
pub struct AttemptInput<'a> {
    pub attempt: u32,
    pub run: &'a RunRecord,
    pub artifacts: &'a Path,
    pub transcript: &'a Transcript,
}

fn verdict_class(verdict: SweepVerdict) -> &'static str {
    match verdict {
        SweepVerdict::Passed => "passed",
        SweepVerdict::Failed => "failed",
        SweepVerdict::Flaky => "flaky",
        SweepVerdict::Error => "error",
    }
}

/// A single run's verdict in the sweep's words (one attempt).
fn run_verdict(verdict: Verdict) -> SweepVerdict {
    match verdict {
        Verdict::Passed => SweepVerdict::Passed,
        Verdict::Failed => SweepVerdict::Failed,
        Verdict::Error => SweepVerdict::Error,
    }
}

/// Failures and errors first, then flaky, then passed; by name within.
fn rank(verdict: SweepVerdict) -> u8 {
    match verdict {
        SweepVerdict::Failed | SweepVerdict::Error => 0,
        SweepVerdict::Flaky => 1,
        SweepVerdict::Passed => 2,
    }
}

/// An HTML id from a scenario name.
fn anchor(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("scenario-{safe}")
}

/// One scenario's section from its attempts (the last decides).
pub fn scenario_section(
    scenario: &Scenario,
    verdict: SweepVerdict,
    attempts: &[AttemptInput<'_>],
) -> ScenarioSection {
    let id = anchor(&scenario.name);
    let last = attempts.last();
    let row = VerdictRow {
        name: scenario.name.clone(),
        anchor: id.clone(),
        tags: scenario.tags.join(", "),
        verdict: verdict.to_string(),
        class: verdict_class(verdict),
        attempts: attempts.len(),
        wall: last.map_or_else(String::new, |a| timeline::seconds(a.run.duration_ms)),
        reason: last.map_or_else(String::new, |a| a.run.exit_reason.to_string()),
        rerun: last
            .filter(|_| matches!(verdict, SweepVerdict::Failed | SweepVerdict::Error))
            .map(|a| a.run.rerun.clone()),
    };
    ScenarioSection {
        row,
        timeline: last.map(|a| timeline::layout(a.run)),
        exit_stats: last.map_or_else(Vec::new, |a| console::exit_stats(&a.run.timeline)),
        attempts: attempts
            .iter()
            .map(|a| {
                let verdict = run_verdict(a.run.verdict);
                AttemptSection {
                    attempt: a.attempt,
                    verdict: verdict.to_string(),
                    class: verdict_class(verdict),
                    artifacts: a.artifacts.display().to_string(),
                    consoles: console::consoles(
                        a.transcript,
                        scenario,
                        &a.run.exit_reason,
                        &format!("{id}-{}", a.attempt),
                    ),
                    raw_logs: console::raw_logs(a.artifacts),
                }
            })
            .collect(),
    }
}

/// A sweep's page from its record and its scenarios' sections.
pub fn sweep_page(record: &SweepRecord, mut sections: Vec<ScenarioSection>) -> Page {
    let verdict_of = |name: &str| {
        record
            .scenarios
            .iter()
            .find(|s| s.scenario == name)
            .map_or(SweepVerdict::Error, |s| s.verdict)
    };
    sections.sort_by(|a, b| {
        (rank(verdict_of(&a.row.name)), &a.row.name)
            .cmp(&(rank(verdict_of(&b.row.name)), &b.row.name))
    });
    let c = &record.counts;
    let failures = c.failed + c.error > 0;
    Page {
        title: format!("lab sweep {}", record.sweep_id),
        summary: format!(
            "{} scenarios: {} passed, {} failed, {} flaky, {} error in {}, {} at a time{}",
            c.total(),
            c.passed,
            c.failed,
            c.flaky,
            c.error,
            timeline::seconds(record.wall_ms),
            record.jobs,
            if record.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        ),
        rerun_failed: failures.then(|| record.rerun_failed.clone()),
        rows: sections.iter().map(|s| s.row.clone()).collect(),
        scenarios: sections,
    }
}

/// One run's page (`lab scenario`).
pub fn run_page(section: ScenarioSection, run_id: &str) -> Page {
    Page {
        title: format!("lab scenario {} {run_id}", section.row.name),
        summary: format!(
            "{} in {}: {}",
            section.row.verdict, section.row.wall, section.row.reason
        ),
        rerun_failed: None,
        rows: vec![section.row.clone()],
        scenarios: vec![section],
    }
}

/// Renders and writes a page.
pub fn write_page(page: &Page, path: &Path) -> Result<()> {
    let html = page
        .render()
        .with_context(|| format!("rendering {}", path.display()))?;
    write_atomically(path, html.as_bytes())
}

/// Sections of a sweep's scenarios, built as each scenario finishes from
/// the transcripts of its attempts.
#[derive(Debug, Default)]
pub struct SweepSections {
    definitions: Vec<Arc<Scenario>>,
    transcripts: std::collections::BTreeMap<(String, u32), Transcript>,
    sections: Vec<ScenarioSection>,
}

impl SweepSections {
    /// The scenarios the sweep runs.
    pub fn started(&mut self, scenarios: &[Arc<Scenario>]) {
        self.definitions = scenarios.to_vec();
    }

    /// A run event of `attempt`.
    pub fn run_event(&mut self, attempt: u32, event: &Event) {
        self.transcripts
            .entry((event.scenario.to_string(), attempt))
            .or_default()
            .on_event(event);
    }

    /// A scenario finished with this record.
    pub fn finished(&mut self, record: &ScenarioRecord) {
        let Some(definition) = self
            .definitions
            .iter()
            .find(|s| s.name == record.scenario)
            .cloned()
        else {
            return;
        };
        let transcripts: Vec<Transcript> = record
            .attempts
            .iter()
            .map(|a| {
                self.transcripts
                    .remove(&(record.scenario.clone(), a.attempt))
                    .unwrap_or_default()
            })
            .collect();
        let inputs: Vec<AttemptInput<'_>> = record
            .attempts
            .iter()
            .zip(&transcripts)
            .map(|(a, transcript)| AttemptInput {
                attempt: a.attempt,
                run: &a.run,
                artifacts: &a.artifacts,
                transcript,
            })
            .collect();
        self.sections
            .push(scenario_section(&definition, record.verdict, &inputs));
    }

    /// The sections so far.
    pub fn sections(&self) -> Vec<ScenarioSection> {
        self.sections.clone()
    }
}

/// Writes `report.html` into the run directory when a run finishes
/// (`lab scenario`).
#[derive(Debug)]
pub struct RunPageWriter {
    scenario: Arc<Scenario>,
    record: RecordBuilder,
    transcript: Transcript,
    run_dir: Option<PathBuf>,
    error: Option<anyhow::Error>,
}

impl RunPageWriter {
    pub fn new(scenario: Arc<Scenario>) -> RunPageWriter {
        RunPageWriter {
            scenario,
            record: RecordBuilder::default(),
            transcript: Transcript::default(),
            run_dir: None,
            error: None,
        }
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let Some(run) = self.record.record() else {
            return Ok(());
        };
        let input = AttemptInput {
            attempt: 1,
            run,
            artifacts: dir,
            transcript: &self.transcript,
        };
        let section = scenario_section(&self.scenario, run_verdict(run.verdict), &[input]);
        write_page(&run_page(section, &run.run_id), &dir.join(REPORT_HTML))
    }
}

impl Consumer for RunPageWriter {
    fn on_event(&mut self, event: &Event) {
        self.record.on_event(event);
        self.transcript.on_event(event);
        if let EventKind::RunStarted { run_dir, .. } = &event.kind {
            self.run_dir = Some(run_dir.clone());
        }
        if let (EventKind::RunFinished { .. }, Some(dir)) = (&event.kind, &self.run_dir) {
            if let Err(e) = self.write(dir) {
                self.error = Some(e);
            }
        }
    }

    fn finish(self: Box<Self>) -> Result<()> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::transcript::TimedLine;
    use crate::run::events::{ExitReason, StepFailure};
    use std::time::Duration;

    fn scenario() -> Scenario {
        let text = "schema: 1\nname: multi\ndescription: d\ntags: [linux, multi-vm]\nmachine: { cpus: 2, memory-mib: 512 }\nvms:\n  - { name: vm0, kernel: { image: linux-cloud }, vcpus: 1, memory-mib: 128 }\n  - { name: vm1, kernel: { image: linux-cloud }, vcpus: 1, memory-mib: 128 }\nsteps:\n  - { expect: 'LAB-READY vm0', console: vm0 }\n  - { expect: 'never <printed>', console: vm1 }\n";
        Scenario::parse(Path::new("multi.yaml"), text).unwrap()
    }

    /// The page of a failed two-VM run, as text: what the template makes
    /// of the typed data (escaping included).
    #[test]
    fn a_failed_run_page() {
        let mut run = timeline::tests::two_vms();
        run.verdict = Verdict::Failed;
        run.exit_reason = ExitReason::StepFailed {
            step: 1,
            failure: StepFailure::Timeout { timeout_secs: 1 },
        };
        run.timeline.push(crate::report::timeline::Mark {
            what: crate::report::timeline::VM_EXITS_STAGE.into(),
            console: Some("vm0".into()),
            at_ms: 3940,
            guest_clock: None,
            exits: Some(crate::report::timeline::ExitStats {
                total: 42,
                by_kind: vec![("uart".into(), 40), ("gic".into(), 2)],
            }),
            vm: None,
        });
        let mut transcript = Transcript::default();
        for (console, lines) in [
            (
                "serial",
                &[
                    "hypervisor 0.1.0: EL2, 2 CPUs",
                    "hypervisor: vm0: exits 42: uart 40, gic 2",
                ][..],
            ),
            (
                "vm0",
                &["Booting Linux on physical CPU 0x0", "LAB-READY vm0"][..],
            ),
            (
                "vm1",
                &[
                    "Booting Linux on physical CPU 0x0",
                    "<script>alert(1)</script>",
                ][..],
            ),
        ] {
            transcript.consoles.insert(
                console.into(),
                lines
                    .iter()
                    .enumerate()
                    .map(|(i, text)| TimedLine {
                        at: Duration::from_millis(400 + i as u64 * 100),
                        text: (*text).into(),
                    })
                    .collect(),
            );
        }
        let input = AttemptInput {
            attempt: 1,
            run: &run,
            artifacts: Path::new("/nonexistent/run"),
            transcript: &transcript,
        };
        let section = scenario_section(&scenario(), SweepVerdict::Failed, &[input]);
        let html = run_page(section, "r").render().unwrap();
        assert!(!html.contains("<script>"), "console text is escaped");
        insta::assert_snapshot!(html);
    }
}
