//! The event stream of a sweep: every event of every run (tagged with its
//! attempt), and the sweep's own milestones. The sweep display and the
//! `results.json` / `junit.xml` writers are consumers of this one stream.

use crate::run::events::Event;
use crate::scenario::Scenario;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum SweepEvent {
    /// The sweep starts `scenarios` (sorted) with `jobs` at a time; its
    /// reports go to `dir`.
    Started {
        sweep_id: String,
        dir: PathBuf,
        scenarios: Vec<Arc<Scenario>>,
        jobs: usize,
        /// The command that reruns the sweep's failures.
        rerun_failed: String,
    },
    /// An event of attempt `attempt` (1-based) of a scenario's run.
    Run { attempt: u32, event: Event },
    /// A scenario has its final verdict after `attempts` runs.
    ScenarioFinished {
        scenario: String,
        verdict: SweepVerdict,
        attempts: u32,
    },
    /// The last event: every started scenario has finished.
    Finished {
        wall: Duration,
        /// Ctrl-C stopped the sweep; scenarios not started are missing.
        interrupted: bool,
    },
}

/// A scenario's verdict over its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SweepVerdict {
    /// Passed on the first attempt.
    Passed,
    /// Failed on every attempt.
    Failed,
    /// Failed, then passed on a retry: never counted as passed.
    Flaky,
    /// The lab could not run it (build failed, bad image...).
    Error,
}

impl fmt::Display for SweepVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SweepVerdict::Passed => "PASSED",
            SweepVerdict::Failed => "FAILED",
            SweepVerdict::Flaky => "FLAKY",
            SweepVerdict::Error => "ERROR",
        })
    }
}

/// Something that reads the sweep's events (on the sweep's consumer thread).
pub trait SweepConsumer: Send {
    fn on_event(&mut self, event: &SweepEvent);

    /// Called once after `Finished`.
    fn finish(self: Box<Self>) -> anyhow::Result<()> {
        Ok(())
    }
}
