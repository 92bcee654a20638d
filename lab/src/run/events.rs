//! The typed event stream of a run. The runner only sends events; the
//! terminal display, the `result.json` writer (and the sweep reports of
//! later work) are consumers of the same stream, so what the user sees and
//! what the files say cannot disagree.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One thing that happened in a run, `at` its offset from the run's start.
#[derive(Debug, Clone)]
pub struct Event {
    pub scenario: Arc<str>,
    pub at: Duration,
    pub kind: EventKind,
}

#[derive(Debug, Clone)]
pub enum EventKind {
    /// The run directory exists; `steps` describes each step in order and
    /// `rerun` is the command that reproduces the run.
    RunStarted {
        run_id: String,
        run_dir: PathBuf,
        steps: Vec<String>,
        rerun: String,
    },
    /// A preparation stage (building, fetching) finished.
    StageFinished {
        stage: String,
        duration: Duration,
    },
    /// QEMU runs as `pid` (also its process group; `None` if it exited
    /// at once); `command` is the shell line of `qemu-cmdline.txt`.
    QemuStarted {
        command: String,
        pid: Option<i32>,
    },
    StepStarted {
        index: usize,
    },
    StepPassed {
        index: usize,
        duration: Duration,
    },
    StepFailed {
        index: usize,
        duration: Duration,
        failure: StepFailure,
    },
    /// A complete console line (without its line ending), as it arrived.
    ConsoleLine {
        console: Arc<str>,
        line: String,
    },
    /// QEMU is gone and reaped.
    QemuStopped {
        status: QemuStatus,
    },
    /// The last event of every run.
    RunFinished {
        verdict: Verdict,
        reason: ExitReason,
        duration: Duration,
    },
}

/// How a run ended, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Passed,
    Failed,
    /// The lab could not run the scenario (build failed, QEMU did not start).
    Error,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Passed => "PASSED",
            Verdict::Failed => "FAILED",
            Verdict::Error => "ERROR",
        })
    }
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum StepFailure {
    /// Nothing matched within the step's timeout.
    Timeout { timeout_secs: u64 },
    /// QEMU exited while the step waited for console output.
    QemuExited { status: QemuStatus },
    /// QEMU exited, but not with the status the step expects.
    WrongExitStatus { expected: i32, status: QemuStatus },
    /// A `fail-on` pattern matched before the step's own.
    FailPattern { matched: String },
    /// The console could not be written.
    SendFailed { message: String },
    /// The `expect` pattern, with the values of this run, is not a regex.
    BadPattern { message: String },
    /// The user interrupted the run.
    Interrupted,
}

impl fmt::Display for StepFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepFailure::Timeout { timeout_secs } => write!(f, "timed out after {timeout_secs}s"),
            StepFailure::QemuExited { status } => write!(f, "QEMU exited early ({status})"),
            StepFailure::WrongExitStatus { expected, status } => {
                write!(
                    f,
                    "QEMU ended with {status}, expected exit status {expected}"
                )
            }
            StepFailure::FailPattern { matched } => {
                write!(f, "the console printed {:?} (fail-on)", matched.trim())
            }
            StepFailure::SendFailed { message } => write!(f, "cannot write the console: {message}"),
            StepFailure::BadPattern { message } => {
                write!(
                    f,
                    "the pattern with this run's values is not a regex: {message}"
                )
            }
            StepFailure::Interrupted => f.write_str("interrupted"),
        }
    }
}

/// Why the run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum ExitReason {
    /// Every step passed.
    StepsPassed,
    /// Step `step` (0-based) failed.
    StepFailed { step: usize, failure: StepFailure },
    /// The lab could not run the scenario.
    Error { message: String },
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitReason::StepsPassed => f.write_str("every step passed"),
            ExitReason::StepFailed { step, failure } => write!(f, "step {}: {failure}", step + 1),
            ExitReason::Error { message } => f.write_str(message),
        }
    }
}

/// How QEMU's process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum QemuStatus {
    Exited {
        code: i32,
    },
    /// Killed by a signal; `by_lab` when the lab sent it.
    Signaled {
        signal: String,
        by_lab: bool,
    },
}

impl fmt::Display for QemuStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QemuStatus::Exited { code } => write!(f, "exit status {code}"),
            QemuStatus::Signaled {
                signal,
                by_lab: true,
            } => write!(f, "{signal} from the lab"),
            QemuStatus::Signaled {
                signal,
                by_lab: false,
            } => write!(f, "killed by {signal}"),
        }
    }
}

/// The sending end a run uses: stamps every event with the scenario and
/// the time since the run started. A consumer that has gone away is not
/// the run's problem, so sending never fails.
#[derive(Debug, Clone)]
pub struct Emitter {
    tx: Sender<Event>,
    scenario: Arc<str>,
    start: Instant,
}

impl Emitter {
    pub fn new(tx: Sender<Event>, scenario: &str) -> Self {
        Emitter {
            tx,
            scenario: scenario.into(),
            start: Instant::now(),
        }
    }

    pub fn emit(&self, kind: EventKind) {
        let _ = self.tx.send(Event {
            scenario: self.scenario.clone(),
            at: self.start.elapsed(),
            kind,
        });
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Something that reads the event stream.
pub trait Consumer: Send {
    fn on_event(&mut self, event: &Event);

    /// Called once the stream has ended.
    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }
}
