//! The sweep's record (`results.json`): one entry per scenario with its
//! verdict over all attempts, each attempt's run record (per-step and
//! per-stage timings), its boot timeline and its artifact directory.
//! [`SweepFold`] folds the sweep event stream into it; the display and the
//! report writer both use that fold, so they cannot disagree.

use crate::run::events::{EventKind, Verdict};
use crate::run::record::{RecordBuilder, RunRecord};
use crate::sweep::events::{SweepEvent, SweepVerdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

/// Version of the `results.json` layout.
pub const RESULTS_SCHEMA: u32 = 1;

/// Console lines an attempt that did not pass keeps in the record.
pub const TAIL_LINES: usize = 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SweepRecord {
    pub schema: u32,
    pub sweep_id: String,
    pub jobs: usize,
    pub wall_ms: u64,
    pub interrupted: bool,
    pub counts: Counts,
    /// The command that reruns this sweep's failures.
    pub rerun_failed: String,
    pub scenarios: Vec<ScenarioRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub flaky: usize,
    pub error: usize,
}

impl Counts {
    pub fn add(&mut self, verdict: SweepVerdict) {
        match verdict {
            SweepVerdict::Passed => self.passed += 1,
            SweepVerdict::Failed => self.failed += 1,
            SweepVerdict::Flaky => self.flaky += 1,
            SweepVerdict::Error => self.error += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.passed + self.failed + self.flaky + self.error
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ScenarioRecord {
    pub scenario: String,
    /// The scenario file's tags.
    #[serde(default)]
    pub tags: Vec<String>,
    pub verdict: SweepVerdict,
    pub attempts: Vec<AttemptRecord>,
}

impl ScenarioRecord {
    /// The attempt that decided the verdict.
    pub fn last(&self) -> Option<&AttemptRecord> {
        self.attempts.last()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct AttemptRecord {
    pub attempt: u32,
    /// The run directory (console.log, qemu-cmdline.txt, result.json...).
    pub artifacts: PathBuf,
    /// Its `result.json`, boot timeline included.
    pub run: RunRecord,
    /// The last console lines, for attempts that did not pass.
    pub console_tail: Vec<String>,
}

/// The verdict over attempts' verdicts, in order.
pub fn sweep_verdict(attempts: &[Verdict]) -> SweepVerdict {
    match attempts {
        [Verdict::Passed] => SweepVerdict::Passed,
        [.., Verdict::Passed] => SweepVerdict::Flaky,
        [.., Verdict::Error] | [] => SweepVerdict::Error,
        [.., Verdict::Failed] => SweepVerdict::Failed,
    }
}

/// One attempt being folded.
#[derive(Debug, Default)]
struct AttemptFold {
    record: RecordBuilder,
    artifacts: PathBuf,
    tail: VecDeque<String>,
}

/// Folds sweep events into a [`SweepRecord`].
#[derive(Debug, Default)]
pub struct SweepFold {
    sweep_id: String,
    jobs: usize,
    rerun_failed: String,
    tags: BTreeMap<String, Vec<String>>,
    running: BTreeMap<(String, u32), AttemptFold>,
    done: BTreeMap<String, Vec<AttemptRecord>>,
    scenarios: Vec<ScenarioRecord>,
    counts: Counts,
    finished: Option<(u64, bool)>,
}

impl SweepFold {
    /// Folds one event; returns the scenario's record when it finished.
    pub fn on_event(&mut self, event: &SweepEvent) -> Option<&ScenarioRecord> {
        match event {
            SweepEvent::Started {
                sweep_id,
                jobs,
                rerun_failed,
                scenarios,
                ..
            } => {
                self.tags = scenarios
                    .iter()
                    .map(|s| (s.name.clone(), s.tags.clone()))
                    .collect();
                self.sweep_id = sweep_id.clone();
                self.jobs = *jobs;
                self.rerun_failed = rerun_failed.clone();
            }
            SweepEvent::Run { attempt, event } => {
                let key = (event.scenario.to_string(), *attempt);
                let fold = self.running.entry(key.clone()).or_default();
                fold.record.on_event(event);
                match &event.kind {
                    EventKind::RunStarted { run_dir, .. } => fold.artifacts = run_dir.clone(),
                    EventKind::ConsoleLine { line, .. } => {
                        if fold.tail.len() == TAIL_LINES {
                            fold.tail.pop_front();
                        }
                        fold.tail.push_back(line.clone());
                    }
                    _ => {}
                }
                if let EventKind::RunFinished { verdict, .. } = &event.kind {
                    let fold = self.running.remove(&key)?;
                    let run = fold.record.record()?.clone();
                    let console_tail = if *verdict == Verdict::Passed {
                        Vec::new()
                    } else {
                        fold.tail.into_iter().collect()
                    };
                    self.done.entry(key.0).or_default().push(AttemptRecord {
                        attempt: *attempt,
                        artifacts: fold.artifacts,
                        run,
                        console_tail,
                    });
                }
            }
            SweepEvent::ScenarioFinished {
                scenario, verdict, ..
            } => {
                self.counts.add(*verdict);
                self.scenarios.push(ScenarioRecord {
                    scenario: scenario.clone(),
                    tags: self.tags.get(scenario).cloned().unwrap_or_default(),
                    verdict: *verdict,
                    attempts: self.done.remove(scenario).unwrap_or_default(),
                });
                return self.scenarios.last();
            }
            SweepEvent::Finished { wall, interrupted } => {
                self.finished = Some((
                    u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
                    *interrupted,
                ));
            }
        }
        None
    }

    /// The record (scenarios in the order they finished, sorted by name
    /// once the sweep is over).
    pub fn record(&self) -> SweepRecord {
        let (wall_ms, interrupted) = self.finished.unwrap_or_default();
        let mut scenarios = self.scenarios.clone();
        scenarios.sort_by(|a, b| a.scenario.cmp(&b.scenario));
        SweepRecord {
            schema: RESULTS_SCHEMA,
            sweep_id: self.sweep_id.clone(),
            jobs: self.jobs,
            wall_ms,
            interrupted,
            counts: self.counts.clone(),
            rerun_failed: self.rerun_failed.clone(),
            scenarios,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_over_attempts() {
        use Verdict::*;
        for (attempts, expected) in [
            (&[Passed][..], SweepVerdict::Passed),
            (&[Failed, Passed][..], SweepVerdict::Flaky),
            (&[Failed, Failed, Passed][..], SweepVerdict::Flaky),
            (&[Failed, Failed][..], SweepVerdict::Failed),
            (&[Failed][..], SweepVerdict::Failed),
            (&[Error][..], SweepVerdict::Error),
            (&[Failed, Error][..], SweepVerdict::Error),
            (&[][..], SweepVerdict::Error),
        ] {
            assert_eq!(sweep_verdict(attempts), expected, "{attempts:?}");
        }
    }
}
