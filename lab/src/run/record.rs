//! The result record of one run (`result.json`): verdict, stage and step
//! timings and the boot timeline, folded from the event stream. [`RecordBuilder`] is the pure fold (sweep reports reuse it);
//! [`ResultWriter`] is the consumer that writes the file when the run ends.

use super::artifacts::RESULT_JSON;
use super::events::{Consumer, Event, EventKind, ExitReason, QemuStatus, StepFailure, Verdict};
use crate::build::write_atomically;
use crate::report::timeline::{Mark, TimelineBuilder};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Version of the `result.json` layout.
pub const RECORD_SCHEMA: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RunRecord {
    pub schema: u32,
    pub scenario: String,
    pub run_id: String,
    pub verdict: Verdict,
    pub exit_reason: ExitReason,
    pub duration_ms: u64,
    /// How QEMU ended, if it started.
    pub qemu: Option<QemuStatus>,
    pub qemu_started_ms: Option<u64>,
    pub stages: Vec<StageRecord>,
    pub steps: Vec<StepRecord>,
    /// Boot stages per console and step ends, in order of arrival.
    #[serde(default)]
    pub timeline: Vec<Mark>,
    /// The command that reproduces this run.
    pub rerun: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StageRecord {
    pub name: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StepRecord {
    pub description: String,
    pub status: StepStatus,
    pub started_ms: Option<u64>,
    pub duration_ms: Option<u64>,
    pub failure: Option<StepFailure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    NotRun,
    Running,
    Passed,
    Failed,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Folds a run's events into its record.
#[derive(Debug, Default)]
pub struct RecordBuilder {
    record: Option<RunRecord>,
    timeline: TimelineBuilder,
    run_dir: Option<PathBuf>,
    finished: bool,
}

impl RecordBuilder {
    pub fn on_event(&mut self, event: &Event) {
        self.timeline.on_event(event);
        if let EventKind::RunStarted {
            run_id,
            run_dir,
            steps,
            rerun,
        } = &event.kind
        {
            self.run_dir = Some(run_dir.clone());
            self.record = Some(RunRecord {
                schema: RECORD_SCHEMA,
                scenario: event.scenario.to_string(),
                run_id: run_id.clone(),
                verdict: Verdict::Error,
                exit_reason: ExitReason::Error {
                    message: "the run did not finish".into(),
                },
                duration_ms: 0,
                qemu: None,
                qemu_started_ms: None,
                stages: Vec::new(),
                steps: steps
                    .iter()
                    .map(|description| StepRecord {
                        description: description.clone(),
                        status: StepStatus::NotRun,
                        started_ms: None,
                        duration_ms: None,
                        failure: None,
                    })
                    .collect(),
                timeline: Vec::new(),
                rerun: rerun.clone(),
            });
            return;
        }
        let Some(record) = self.record.as_mut() else {
            return;
        };
        match &event.kind {
            EventKind::StageFinished { stage, duration } => record.stages.push(StageRecord {
                name: stage.clone(),
                duration_ms: ms(*duration),
            }),
            EventKind::QemuStarted { .. } => record.qemu_started_ms = Some(ms(event.at)),
            EventKind::StepStarted { index } => {
                if let Some(step) = record.steps.get_mut(*index) {
                    step.status = StepStatus::Running;
                    step.started_ms = Some(ms(event.at));
                }
            }
            EventKind::StepPassed { index, duration } => {
                if let Some(step) = record.steps.get_mut(*index) {
                    step.status = StepStatus::Passed;
                    step.duration_ms = Some(ms(*duration));
                }
            }
            EventKind::StepFailed {
                index,
                duration,
                failure,
            } => {
                if let Some(step) = record.steps.get_mut(*index) {
                    step.status = StepStatus::Failed;
                    step.duration_ms = Some(ms(*duration));
                    step.failure = Some(failure.clone());
                }
            }
            EventKind::QemuStopped { status } => record.qemu = Some(status.clone()),
            EventKind::RunFinished {
                verdict,
                reason,
                duration,
            } => {
                record.verdict = *verdict;
                record.exit_reason = reason.clone();
                record.duration_ms = ms(*duration);
                record.timeline = self.timeline.marks().to_vec();
                self.finished = true;
            }
            EventKind::RunStarted { .. } | EventKind::ConsoleLine { .. } => {}
        }
    }

    /// The record so far (`None` before `RunStarted`).
    pub fn record(&self) -> Option<&RunRecord> {
        self.record.as_ref()
    }
}

/// Writes `result.json` into the run directory when the run finishes.
#[derive(Debug, Default)]
pub struct ResultWriter {
    builder: RecordBuilder,
    error: Option<anyhow::Error>,
}

impl Consumer for ResultWriter {
    fn on_event(&mut self, event: &Event) {
        self.builder.on_event(event);
        if !matches!(event.kind, EventKind::RunFinished { .. }) {
            return;
        }
        if let (Some(record), Some(dir)) = (self.builder.record(), &self.builder.run_dir) {
            let mut json = serde_json::to_vec_pretty(record).unwrap_or_default();
            json.push(b'\n');
            if let Err(e) = write_atomically(&dir.join(RESULT_JSON), &json) {
                self.error = Some(e);
            }
        }
    }

    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn event(at_ms: u64, kind: EventKind) -> Event {
        Event {
            scenario: Arc::from("s"),
            at: Duration::from_millis(at_ms),
            kind,
        }
    }

    #[test]
    fn folds_a_failed_run() {
        let mut builder = RecordBuilder::default();
        let failure = StepFailure::Timeout { timeout_secs: 2 };
        for e in [
            event(
                0,
                EventKind::RunStarted {
                    run_id: "id".into(),
                    run_dir: "/r".into(),
                    steps: vec!["expect a".into(), "expect b".into(), "send c".into()],
                    rerun: "cargo run -p lab -- scenario s".into(),
                },
            ),
            event(
                5,
                EventKind::StageFinished {
                    stage: "build".into(),
                    duration: Duration::from_millis(4),
                },
            ),
            event(
                10,
                EventKind::QemuStarted {
                    command: "q".into(),
                    pid: Some(7),
                },
            ),
            event(10, EventKind::StepStarted { index: 0 }),
            event(
                30,
                EventKind::StepPassed {
                    index: 0,
                    duration: Duration::from_millis(20),
                },
            ),
            event(30, EventKind::StepStarted { index: 1 }),
            event(
                2030,
                EventKind::StepFailed {
                    index: 1,
                    duration: Duration::from_secs(2),
                    failure: failure.clone(),
                },
            ),
            event(
                2040,
                EventKind::QemuStopped {
                    status: QemuStatus::Signaled {
                        signal: "SIGKILL".into(),
                        by_lab: true,
                    },
                },
            ),
            event(
                2050,
                EventKind::RunFinished {
                    verdict: Verdict::Failed,
                    reason: ExitReason::StepFailed {
                        step: 1,
                        failure: failure.clone(),
                    },
                    duration: Duration::from_millis(2050),
                },
            ),
        ] {
            builder.on_event(&e);
        }
        let record = builder.record().unwrap();
        assert_eq!(record.verdict, Verdict::Failed);
        assert_eq!(record.duration_ms, 2050);
        assert_eq!(record.qemu_started_ms, Some(10));
        assert_eq!(
            record.stages,
            [StageRecord {
                name: "build".into(),
                duration_ms: 4
            }]
        );
        let statuses: Vec<_> = record.steps.iter().map(|s| s.status).collect();
        assert_eq!(
            statuses,
            [StepStatus::Passed, StepStatus::Failed, StepStatus::NotRun]
        );
        assert_eq!(record.steps[1].started_ms, Some(30));
        assert_eq!(record.steps[1].failure, Some(failure));
        let timeline: Vec<_> = record
            .timeline
            .iter()
            .map(|m| (m.what.as_str(), m.at_ms))
            .collect();
        assert_eq!(
            timeline,
            [
                ("qemu-start", 10),
                ("step 1", 30),
                ("step 2 failed", 2030),
                ("qemu-exit", 2040)
            ]
        );
        let json = serde_json::to_string(record).unwrap();
        assert!(json.contains(r#""exit-reason":{"kind":"step-failed","step":1,"failure":{"kind":"timeout","timeout-secs":2}}"#), "{json}");
        let back: RunRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, record);
    }
}
