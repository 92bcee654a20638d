//! The sweep's terminal display: one line per finished scenario and, at
//! the end, a summary in the spirit of Zephyr's twister: counts, wall
//! time, and for each failure its reason, last console lines, artifacts
//! and the command that reproduces it; then the command that reruns every
//! failure. It reads only the sweep event stream (through [`SweepFold`]).

use super::events::{SweepConsumer, SweepEvent, SweepVerdict};
use crate::report::html::REPORT_HTML;
use crate::report::results::{ScenarioRecord, SweepFold};
use crate::report::{JUNIT_XML, RESULTS_JSON};
use std::io::Write;
use std::path::PathBuf;

/// Console lines shown per failure in the summary.
pub const SUMMARY_TAIL: usize = 10;

pub struct SweepDisplay {
    out: Box<dyn Write + Send>,
    fold: SweepFold,
    total: usize,
    finished: usize,
    dir: Option<PathBuf>,
}

impl SweepDisplay {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        SweepDisplay {
            out,
            fold: SweepFold::default(),
            total: 0,
            finished: 0,
            dir: None,
        }
    }

    fn scenario_line(&mut self, scenario: &ScenarioRecord) -> std::io::Result<()> {
        self.finished += 1;
        let width = self.total.to_string().len();
        let took = scenario
            .last()
            .map(|a| a.run.duration_ms as f64 / 1000.0)
            .unwrap_or_default();
        let mut line = format!(
            "[{:>width$}/{}] {:<6} {} ({took:.2}s)",
            self.finished, self.total, scenario.verdict, scenario.scenario
        );
        let attempts = scenario.attempts.len();
        match (scenario.verdict, scenario.last()) {
            (SweepVerdict::Passed, _) | (_, None) => {}
            (SweepVerdict::Flaky, Some(_)) => {
                line += &format!(": passed on attempt {attempts}");
            }
            (_, Some(last)) => {
                line += &format!(": {}", last.run.exit_reason);
                if attempts > 1 {
                    line += &format!(" (all {attempts} attempts)");
                }
            }
        }
        writeln!(self.out, "{line}")
    }

    fn summary(&mut self) -> std::io::Result<()> {
        let record = self.fold.record();
        let c = &record.counts;
        writeln!(self.out)?;
        for scenario in record
            .scenarios
            .iter()
            .filter(|s| matches!(s.verdict, SweepVerdict::Failed | SweepVerdict::Error))
        {
            let Some(last) = scenario.last() else {
                continue;
            };
            writeln!(
                self.out,
                "{} {}: {}",
                scenario.verdict, scenario.scenario, last.run.exit_reason
            )?;
            let tail = &last.console_tail;
            let shown = &tail[tail.len().saturating_sub(SUMMARY_TAIL)..];
            if !shown.is_empty() {
                writeln!(self.out, "  --- last {} console lines ---", shown.len())?;
                for line in shown {
                    writeln!(self.out, "  | {line}")?;
                }
            }
            writeln!(self.out, "  artifacts: {}", last.artifacts.display())?;
            writeln!(self.out, "  reproduce: {}", last.run.rerun)?;
        }
        writeln!(
            self.out,
            "{} scenarios: {} passed, {} failed, {} flaky, {} error in {:.2}s (-j {}){}",
            c.total(),
            c.passed,
            c.failed,
            c.flaky,
            c.error,
            record.wall_ms as f64 / 1000.0,
            record.jobs,
            if record.interrupted {
                ", interrupted"
            } else {
                ""
            }
        )?;
        if let Some(dir) = &self.dir {
            writeln!(
                self.out,
                "reports: {} {}\npage: {}",
                dir.join(RESULTS_JSON).display(),
                dir.join(JUNIT_XML).display(),
                dir.join(REPORT_HTML).display()
            )?;
        }
        if c.failed + c.error > 0 {
            writeln!(self.out, "rerun the failures: {}", record.rerun_failed)?;
        }
        Ok(())
    }

    fn write_event(&mut self, event: &SweepEvent) -> std::io::Result<()> {
        if let SweepEvent::Started {
            scenarios,
            jobs,
            dir,
            ..
        } = event
        {
            self.total = scenarios.len();
            self.dir = Some(dir.clone());
            writeln!(
                self.out,
                "lab sweep: {} scenarios, {jobs} at a time",
                scenarios.len()
            )?;
        }
        if let Some(scenario) = self.fold.on_event(event).cloned() {
            self.scenario_line(&scenario)?;
        }
        if let SweepEvent::Finished { .. } = event {
            self.summary()?;
        }
        self.out.flush()
    }
}

impl SweepConsumer for SweepDisplay {
    fn on_event(&mut self, event: &SweepEvent) {
        // A closed stdout must not stop the sweep.
        let _ = self.write_event(event);
    }
}
