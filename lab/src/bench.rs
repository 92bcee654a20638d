//! `lab bench boot`: boot-to-sentinel time of a scenario against its
//! baseline, both run alternately in the same invocation, median of N, as a
//! ratio. A boot runs from QEMU's start to the guest's boot-complete
//! sentinel, read from the run's boot timeline: `LAB-READY <vm>` (the lab's
//! initramfs) or `TESTGUEST DONE` (the bare-metal test guest). Both sides
//! must reach the same sentinel, so the ratio compares like with like; the
//! console tee stamps lines to the millisecond, unlike step ends, which
//! rexpect's polling rounds to 100 ms.

use crate::report::timeline::{Mark, TimelineBuilder};
use crate::run::events::{Consumer, Event, Verdict};
use crate::run::{run_scenario, Lab, RunOptions};
use crate::scenario::{self, Scenario};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// QEMU arguments for deterministic virtual time (one instruction = 1 ns).
pub const ICOUNT_ARGS: [&str; 2] = ["-icount", "shift=0"];

/// The timeline stages that end a boot (see `report::timeline::STAGES`).
pub const BOOT_DONE: [&str; 2] = ["lab-ready", "guest-done"];

/// Collects the run's boot timeline.
#[derive(Clone, Default)]
struct TimelineTap(Arc<Mutex<TimelineBuilder>>);

impl Consumer for TimelineTap {
    fn on_event(&mut self, event: &Event) {
        if let Ok(mut timeline) = self.0.lock() {
            timeline.on_event(event);
        }
    }
}

/// The boot-complete stage a timeline reached and how long after QEMU's
/// start; `None` if QEMU never started or no boot-complete line came.
pub fn boot_time(marks: &[Mark]) -> Option<(&str, Duration)> {
    let start = marks.iter().find(|m| m.what == "qemu-start")?.at_ms;
    let done = marks
        .iter()
        .find(|m| BOOT_DONE.contains(&m.what.as_str()))?;
    Some((
        done.what.as_str(),
        Duration::from_millis(done.at_ms.saturating_sub(start)),
    ))
}

/// Boots `scenario` once: its boot-complete stage and boot time.
fn boot_once(
    lab: &Lab,
    scenario: &Scenario,
    qemu: &Path,
    options: &RunOptions,
) -> Result<(String, Duration)> {
    let tap = TimelineTap::default();
    let summary = run_scenario(lab, scenario, qemu, options, vec![Box::new(tap.clone())])?;
    if summary.verdict != Verdict::Passed {
        bail!(
            "{} failed; see {}",
            scenario.name,
            summary.run_dir.display()
        );
    }
    let timeline = tap
        .0
        .lock()
        .map_err(|_| anyhow::anyhow!("timeline poisoned"))?;
    match boot_time(timeline.marks()) {
        Some((stage, took)) => Ok((stage.to_owned(), took)),
        None => bail!(
            "{} printed no boot-complete sentinel (LAB-READY or TESTGUEST DONE); see {}",
            scenario.name,
            summary.run_dir.display()
        ),
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
    let mut sentinels: [Option<String>; 2] = [None, None];
    for run in 1..=runs {
        // Alternate, so drift on the machine hits both alike.
        for (which, scenario) in scenarios.iter().enumerate() {
            let (stage, took) = boot_once(lab, scenario, qemu, &options)
                .with_context(|| format!("run {run} of {}", scenario.name))?;
            match &sentinels[which] {
                None => sentinels[which] = Some(stage.clone()),
                Some(first) if *first != stage => {
                    bail!(
                        "{}: run {run} ended its boot at {stage}, run 1 at {first}",
                        scenario.name
                    )
                }
                Some(_) => {}
            }
            println!(
                "{:<20} run {run}: {:.3}s to {stage}",
                scenario.name,
                took.as_secs_f64()
            );
            times[which].push(took);
        }
    }
    if sentinels[0] != sentinels[1] {
        bail!(
            "{} boots to {}, {} to {}: not comparable",
            names[0],
            sentinels[0].as_deref().unwrap_or("?"),
            names[1],
            sentinels[1].as_deref().unwrap_or("?")
        );
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

    fn mark(what: &str, console: Option<&str>, at_ms: u64) -> Mark {
        Mark {
            what: what.into(),
            console: console.map(str::to_owned),
            at_ms,
        }
    }

    #[test]
    fn boot_time_runs_from_qemu_start_to_the_first_boot_complete_line() {
        let marks = [
            mark("qemu-start", None, 200),
            mark("hypervisor-start", Some("serial"), 290),
            mark("kernel-start", Some("serial"), 1100),
            mark("step 1", None, 1150),
            mark("lab-ready", Some("serial"), 2700),
            mark("step 2", None, 2750),
        ];
        assert_eq!(
            boot_time(&marks),
            Some(("lab-ready", Duration::from_millis(2500)))
        );
        let guest = [
            mark("qemu-start", None, 10),
            mark("guest-done", Some("serial"), 90),
        ];
        assert_eq!(
            boot_time(&guest),
            Some(("guest-done", Duration::from_millis(80)))
        );
    }

    #[test]
    fn no_boot_time_without_a_sentinel_or_a_qemu() {
        assert_eq!(boot_time(&[mark("qemu-start", None, 1)]), None);
        assert_eq!(boot_time(&[mark("lab-ready", Some("serial"), 5)]), None);
    }

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
