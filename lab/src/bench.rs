//! `lab bench boot`: boot-to-sentinel time of a scenario against its
//! baseline, both run alternately in the same invocation, median of N, as a
//! ratio. Boot-to-sentinel is read from the event stream: from QEMU's start
//! to the arrival of the console line that the scenario's first step (its
//! sentinel `expect`) matches; line arrival is timed to the millisecond,
//! unlike step ends, which rexpect's polling rounds to 100 ms.

use crate::run::events::{Consumer, Event, EventKind, Verdict};
use crate::run::{run_scenario, Lab, RunOptions};
use crate::scenario::{self, Scenario, Step};
use anyhow::{bail, Context, Result};
use regex::Regex;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// QEMU arguments for deterministic virtual time (one instruction = 1 ns).
pub const ICOUNT_ARGS: [&str; 2] = ["-icount", "shift=0"];

/// Remembers when QEMU started and when the sentinel line arrived.
#[derive(Clone)]
struct SentinelClock {
    sentinel: Regex,
    times: Arc<Mutex<(Option<Duration>, Option<Duration>)>>,
}

impl Consumer for SentinelClock {
    fn on_event(&mut self, event: &Event) {
        let Ok(mut times) = self.times.lock() else {
            return;
        };
        match &event.kind {
            EventKind::QemuStarted { .. } => times.0 = Some(event.at),
            EventKind::ConsoleLine { line, .. }
                if times.1.is_none() && self.sentinel.is_match(line) =>
            {
                times.1 = Some(event.at);
            }
            _ => {}
        }
    }
}

/// Boots `scenario` once and returns its boot-to-sentinel time.
fn boot_once(
    lab: &Lab,
    scenario: &Scenario,
    qemu: &Path,
    options: &RunOptions,
) -> Result<Duration> {
    let Some(Step::Expect { pattern, .. }) = scenario.steps.first() else {
        bail!(
            "{}: the first step must be the sentinel `expect`",
            scenario.name
        );
    };
    let sentinel = scenario
        .expect_regex(pattern)
        .map_err(|e| anyhow::anyhow!("{}: {e}", scenario.name))?;
    let clock = SentinelClock {
        sentinel,
        times: Arc::default(),
    };
    let summary = run_scenario(lab, scenario, qemu, options, vec![Box::new(clock.clone())])?;
    if summary.verdict != Verdict::Passed {
        bail!(
            "{} failed; see {}",
            scenario.name,
            summary.run_dir.display()
        );
    }
    let times = *clock
        .times
        .lock()
        .map_err(|_| anyhow::anyhow!("clock poisoned"))?;
    match times {
        (Some(start), Some(sentinel)) => Ok(sentinel.saturating_sub(start)),
        _ => bail!("{} reported no sentinel", scenario.name),
    }
}

/// The median of some durations (the lower middle for an even count).
pub fn median(mut times: Vec<Duration>) -> Option<Duration> {
    times.sort();
    times.get(times.len().checked_sub(1)? / 2).copied()
}

/// Runs the benchmark and prints one line per boot and the summary.
pub fn boot(lab: &Lab, qemu: &Path, names: [&str; 2], runs: usize, icount: bool) -> Result<()> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let scenarios = names
        .iter()
        .map(|name| scenario::load_by_name(&lab.root, name))
        .collect::<Result<Vec<_>>>()?;
    let options = RunOptions {
        qemu_args: if icount {
            ICOUNT_ARGS.map(str::to_owned).to_vec()
        } else {
            Vec::new()
        },
        ..RunOptions::default()
    };
    let mut times = vec![Vec::new(), Vec::new()];
    for run in 1..=runs {
        // Alternate, so drift on the machine hits both alike.
        for (which, scenario) in scenarios.iter().enumerate() {
            let took = boot_once(lab, scenario, qemu, &options)
                .with_context(|| format!("run {run} of {}", scenario.name))?;
            println!(
                "{:<20} run {run}: {:.3}s",
                scenario.name,
                took.as_secs_f64()
            );
            times[which].push(took);
        }
    }
    let medians: Vec<Duration> = times
        .into_iter()
        .map(|t| median(t).unwrap_or_default())
        .collect();
    let mode = if icount { " (-icount shift=0)" } else { "" };
    for (scenario, m) in scenarios.iter().zip(&medians) {
        println!(
            "{:<20} median of {runs}: {:.3}s{mode}",
            scenario.name,
            m.as_secs_f64()
        );
    }
    let ratio = medians[0].as_secs_f64() / medians[1].as_secs_f64().max(f64::EPSILON);
    println!("ratio {} / {}: {ratio:.3}{mode}", names[0], names[1]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_table() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(median(ms(&[])), None);
        assert_eq!(median(ms(&[5])), Some(Duration::from_millis(5)));
        assert_eq!(median(ms(&[9, 1, 5])), Some(Duration::from_millis(5)));
        assert_eq!(median(ms(&[4, 1, 3, 2])), Some(Duration::from_millis(2)));
    }
}
