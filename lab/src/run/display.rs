//! The terminal display: one line per step as it ends, and at the end the
//! verdict; on failure the last console lines, the artifacts and the
//! command that reproduces the run. It reads only the event stream.

use super::events::{Consumer, Event, EventKind, Verdict};
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Console lines shown after a failure.
pub const TAIL_LINES: usize = 30;

pub struct Display {
    out: Box<dyn Write + Send>,
    /// Echo every console line as it arrives.
    verbose: bool,
    steps: Vec<String>,
    tail: VecDeque<String>,
    run_dir: Option<PathBuf>,
    rerun: String,
    qemu_command: Option<String>,
}

impl Display {
    pub fn new(out: Box<dyn Write + Send>, verbose: bool) -> Self {
        Display {
            out,
            verbose,
            steps: Vec::new(),
            tail: VecDeque::with_capacity(TAIL_LINES),
            run_dir: None,
            rerun: String::new(),
            qemu_command: None,
        }
    }

    fn step_line(&self, index: usize) -> String {
        let description = self.steps.get(index).map_or("?", String::as_str);
        format!("[{}/{}] {description}", index + 1, self.steps.len())
    }

    fn write_event(&mut self, event: &Event) -> std::io::Result<()> {
        let name = &event.scenario;
        match &event.kind {
            EventKind::RunStarted {
                run_dir,
                steps,
                rerun,
                ..
            } => {
                self.steps = steps.clone();
                self.run_dir = Some(run_dir.clone());
                self.rerun = rerun.clone();
                writeln!(self.out, "lab: {name}: {} steps", steps.len())?;
            }
            EventKind::StageFinished { stage, duration } => {
                writeln!(self.out, "  {stage} ({})", secs(*duration))?;
            }
            EventKind::QemuStarted { command, .. } => {
                if self.verbose {
                    writeln!(self.out, "  qemu: {command}")?;
                }
                self.qemu_command = Some(command.clone());
            }
            EventKind::StepPassed { index, duration } => {
                let line = self.step_line(*index);
                writeln!(self.out, "  ok   {line} ({})", secs(*duration))?;
            }
            EventKind::StepFailed {
                index,
                duration,
                failure,
            } => {
                let line = self.step_line(*index);
                writeln!(self.out, "  FAIL {line}: {failure} ({})", secs(*duration))?;
            }
            EventKind::ConsoleLine { console, line } => {
                if self.verbose {
                    writeln!(self.out, "  {console}| {line}")?;
                }
                if self.tail.len() == TAIL_LINES {
                    self.tail.pop_front();
                }
                self.tail.push_back(line.clone());
            }
            EventKind::RunFinished {
                verdict,
                reason,
                duration,
            } => {
                let dir = self.run_dir.as_deref().map(shown_path).unwrap_or_default();
                let took = secs(*duration);
                match verdict {
                    // An error is the caller's to print (exit 2).
                    Verdict::Passed | Verdict::Error => {
                        writeln!(self.out, "{verdict} {name} in {took}")?;
                    }
                    Verdict::Failed => {
                        writeln!(self.out, "{verdict} {name} in {took}: {reason}")?;
                        if let Some(command) = &self.qemu_command {
                            writeln!(self.out, "qemu: {command}")?;
                        }
                        writeln!(self.out, "--- last {} console lines ---", self.tail.len())?;
                        for line in &self.tail {
                            writeln!(self.out, "{line}")?;
                        }
                        writeln!(self.out, "---")?;
                    }
                }
                writeln!(self.out, "artifacts: {dir}")?;
                if *verdict != Verdict::Passed {
                    writeln!(self.out, "reproduce: {}", self.rerun)?;
                }
            }
            EventKind::StepStarted { .. } | EventKind::QemuStopped { .. } => {}
        }
        self.out.flush()
    }
}

impl Consumer for Display {
    fn on_event(&mut self, event: &Event) {
        // A closed stdout must not stop the run.
        let _ = self.write_event(event);
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// A path relative to the working directory when it lies below it.
fn shown_path(path: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    path.strip_prefix(&cwd)
        .unwrap_or(path)
        .display()
        .to_string()
}
