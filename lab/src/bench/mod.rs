//! `lab bench boot` (here), `lab bench net` / `lab bench blk` (`io.rs`) and
//! `lab bench exits` (`exits.rs`).
//!
//! `lab bench boot`: boot-to-sentinel time of a scenario against its
//! baseline, both run alternately in the same invocation, median of N, as a
//! ratio. A boot ends at the guest's boot-complete sentinel, read from the
//! run's boot timeline: `LAB-READY <vm>` (the lab's initramfs) or
//! `TESTGUEST DONE` (the bare-metal test guest). Both sides must reach the
//! same sentinel, so the ratio compares like with like.
//!
//! What a boot's time is depends on the clock ([`Clock`]):
//! - host wall time (the default): from QEMU's start to the sentinel line,
//!   as the console tee stamped it (to the millisecond, unlike step ends,
//!   which rexpect's polling rounds to 100 ms);
//! - virtual time (`--icount`, QEMU under `-icount shift=0`, one
//!   instruction = 1 ns): the guest's own virtual counter on its
//!   `LAB-CLOCK <ticks> <frequency>` line, printed just before the sentinel.
//!   The counter starts at machine reset on bare QEMU and under the
//!   hypervisor (CNTVOFF_EL2 = 0) alike, so it is virtual time since
//!   power-on on both sides, and the load on the host does not change it.
//!   A side that prints no `LAB-CLOCK` line is an error, never measured in
//!   wall time instead.

pub mod exits;
pub mod io;

use crate::report::timeline::{Mark, TimelineBuilder, LAB_CLOCK_STAGE};
use crate::run::events::{Consumer, Event, EventKind, Verdict};
use crate::run::record::ResultWriter;
use crate::run::{run_scenario, Lab, RunOptions, RunSummary};
use crate::scenario::{self, Scenario};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// QEMU arguments for deterministic virtual time (one instruction = 1 ns).
pub const ICOUNT_ARGS: [&str; 2] = ["-icount", "shift=0"];

/// The timeline stages that end a boot (see `report::timeline::STAGES`).
pub const BOOT_DONE: [&str; 2] = ["lab-ready", "guest-done"];

/// What a boot's time is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// Host wall time from QEMU's start to the sentinel line.
    Wall,
    /// The guest's virtual counter at the sentinel, QEMU under
    /// [`ICOUNT_ARGS`].
    Virtual,
}

impl Clock {
    /// How the output names the measure, plainly.
    pub fn describe(self) -> &'static str {
        match self {
            Clock::Wall => "host wall time from QEMU's start to the sentinel line",
            Clock::Virtual => {
                "virtual time (-icount shift=0): the guest's own counter (CNTVCT_EL0 / CNTFRQ_EL0) \
                 on its LAB-CLOCK line just before the sentinel, counted from machine reset"
            }
        }
    }

    /// The unit word after each time.
    fn word(self) -> &'static str {
        match self {
            Clock::Wall => "wall",
            Clock::Virtual => "virtual",
        }
    }
}

/// QEMU's CPU time up to a moment of its run: in user mode (the emulation
/// itself) and in the host kernel on its behalf (mostly page faults on the
/// first touch of guest RAM, whose cost varies from run to run on a host
/// that hands freed memory back to its own hypervisor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostCpu {
    pub user: Duration,
    pub system: Duration,
}

impl HostCpu {
    /// From the text of `/proc/<pid>/stat`: utime and stime, fields 14 and
    /// 15, in clock ticks of `ticks_per_second`, counted after the command
    /// name in parentheses (which may hold spaces and parentheses).
    pub fn parse_stat(stat: &str, ticks_per_second: u64) -> Option<HostCpu> {
        if ticks_per_second == 0 {
            return None;
        }
        let (_, after_name) = stat.rsplit_once(')')?;
        // Field 3 (state) is the first after the name.
        let mut fields = after_name.split_ascii_whitespace().skip(11);
        let mut ticks = || fields.next()?.parse::<u64>().ok();
        let (user, system) = (ticks()?, ticks()?);
        let duration = |t: u64| Duration::from_micros(t * 1_000_000 / ticks_per_second);
        Some(HostCpu {
            user: duration(user),
            system: duration(system),
        })
    }

    /// Process `pid`'s CPU time so far; `None` if it is gone.
    pub fn of_process(pid: i32) -> Option<HostCpu> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
        Self::parse_stat(&stat, u64::try_from(ticks).ok()?)
    }
}

/// Collects the run's boot timeline, and QEMU's CPU time when its first
/// boot-complete line arrives (sampled live, as the line is seen).
#[derive(Clone, Default)]
struct TimelineTap(Arc<Mutex<TapState>>);

#[derive(Default)]
struct TapState {
    timeline: TimelineBuilder,
    qemu: Option<i32>,
    cpu_at_boot: Option<HostCpu>,
}

impl Consumer for TimelineTap {
    fn on_event(&mut self, event: &Event) {
        let Ok(mut state) = self.0.lock() else {
            return;
        };
        if let EventKind::QemuStarted { pid, .. } = &event.kind {
            state.qemu = *pid;
        }
        state.timeline.on_event(event);
        if state.cpu_at_boot.is_none() && boot_done(state.timeline.marks()).is_some() {
            state.cpu_at_boot = state.qemu.and_then(HostCpu::of_process);
        }
    }
}

/// The first boot-complete mark of a timeline and its index.
fn boot_done(marks: &[Mark]) -> Option<(usize, &Mark)> {
    marks
        .iter()
        .enumerate()
        .find(|(_, m)| BOOT_DONE.contains(&m.what.as_str()))
}

/// The boot-complete stage a timeline reached and how long after QEMU's
/// start, in host wall time; `None` if QEMU never started or no
/// boot-complete line came.
pub fn boot_time(marks: &[Mark]) -> Option<(&str, Duration)> {
    let start = marks.iter().find(|m| m.what == "qemu-start")?.at_ms;
    let (_, done) = boot_done(marks)?;
    Some((
        done.what.as_str(),
        Duration::from_millis(done.at_ms.saturating_sub(start)),
    ))
}

/// The guest's virtual time at its boot-complete sentinel: the counter on
/// the `LAB-CLOCK` line the same console printed before the sentinel.
/// `None` without a sentinel, without such a line, or with a counter
/// frequency of zero.
pub fn virtual_boot_time(marks: &[Mark]) -> Option<Duration> {
    let (index, done) = boot_done(marks)?;
    marks[..index]
        .iter()
        .rev()
        .find(|m| m.what == LAB_CLOCK_STAGE && m.console == done.console)?
        .guest_clock?
        .elapsed()
}

/// One boot: its boot-complete stage, its host wall time and, if the guest
/// printed its counter, its virtual time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    pub stage: String,
    pub wall: Duration,
    pub virtual_time: Option<Duration>,
    /// QEMU's CPU time at the sentinel, when it could be read.
    pub host_cpu: Option<HostCpu>,
}

impl Boot {
    /// The boot of a timeline; `None` without QEMU or a sentinel.
    pub fn from_marks(marks: &[Mark]) -> Option<Boot> {
        let (stage, wall) = boot_time(marks)?;
        Some(Boot {
            stage: stage.to_owned(),
            wall,
            virtual_time: virtual_boot_time(marks),
            host_cpu: None,
        })
    }

    /// The boot's time on `clock`; `None` if the guest did not give it.
    pub fn time(&self, clock: Clock) -> Option<Duration> {
        match clock {
            Clock::Wall => Some(self.wall),
            Clock::Virtual => self.virtual_time,
        }
    }
}

/// Boots `scenario` once: the boot, and the run directory it left (its
/// `result.json` carries the timeline the boot was read from).
pub fn boot_once(
    lab: &Lab,
    scenario: &Scenario,
    qemu: &Path,
    options: &RunOptions,
) -> Result<(Boot, PathBuf)> {
    let tap = TimelineTap::default();
    let summary = run_passing(lab, scenario, qemu, options, Box::new(tap.clone()))?;
    let state = tap
        .0
        .lock()
        .map_err(|_| anyhow::anyhow!("timeline poisoned"))?;
    match Boot::from_marks(state.timeline.marks()) {
        Some(boot) => Ok((
            Boot {
                host_cpu: state.cpu_at_boot,
                ..boot
            },
            summary.run_dir,
        )),
        None => bail!(
            "{} printed no boot-complete sentinel (LAB-READY or TESTGUEST DONE); see {}",
            scenario.name,
            summary.run_dir.display()
        ),
    }
}

/// The median of some durations (the lower middle for an even count).
/// Runs one measured boot of `scenario` with `tap` reading its events;
/// an error naming the run directory unless it passed. Every boot leaves
/// its result.json beside its console.log, as a `lab scenario` run does: a
/// failed one says why.
pub(crate) fn run_passing(
    lab: &Lab,
    scenario: &Scenario,
    qemu: &Path,
    options: &RunOptions,
    tap: Box<dyn Consumer>,
) -> Result<RunSummary> {
    let consumers: Vec<Box<dyn Consumer>> = vec![tap, Box::new(ResultWriter::default())];
    let summary = run_scenario(lab, scenario, qemu, options, consumers)?;
    if summary.verdict != Verdict::Passed {
        bail!(
            "{} failed; see {}",
            scenario.name,
            summary.run_dir.display()
        );
    }
    Ok(summary)
}

pub fn median(mut times: Vec<Duration>) -> Option<Duration> {
    times.sort();
    times.get(times.len().checked_sub(1)? / 2).copied()
}

/// `scenario / baseline` of two medians.
pub fn ratio(scenario: Duration, baseline: Duration) -> f64 {
    scenario.as_secs_f64() / baseline.as_secs_f64().max(f64::EPSILON)
}

/// How `lab bench boot` runs.
#[derive(Clone, Copy, Debug)]
pub struct BootBench {
    /// Boots of each scenario.
    pub runs: usize,
    /// Under `-icount shift=0`, measuring the guest's virtual time.
    pub icount: bool,
    /// Use only cached guest images.
    pub offline: bool,
}

/// Runs the benchmark and prints one line per boot and the summary.
pub fn boot(lab: &Lab, qemu: &Path, names: [&str; 2], how: BootBench) -> Result<()> {
    let BootBench {
        runs,
        icount,
        offline,
    } = how;
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let scenarios = names
        .iter()
        .map(|name| scenario::load_by_name(&lab.root, name))
        .collect::<Result<Vec<_>>>()?;
    let clock = if icount { Clock::Virtual } else { Clock::Wall };
    let options = RunOptions {
        qemu_args: if icount {
            ICOUNT_ARGS.map(str::to_owned).to_vec()
        } else {
            Vec::new()
        },
        offline,
        ..RunOptions::default()
    };
    println!("measuring {}", clock.describe());
    let mut times = vec![Vec::new(), Vec::new()];
    let mut cpu_times: [Vec<HostCpu>; 2] = [Vec::new(), Vec::new()];
    let mut sentinels: [Option<String>; 2] = [None, None];
    for run in 1..=runs {
        // Alternate, so drift on the machine hits both alike.
        for (which, scenario) in scenarios.iter().enumerate() {
            let (boot, _) = boot_once(lab, scenario, qemu, &options)
                .with_context(|| format!("run {run} of {}", scenario.name))?;
            let stage = &boot.stage;
            match &sentinels[which] {
                None => sentinels[which] = Some(stage.clone()),
                Some(first) if first != stage => {
                    bail!(
                        "{}: run {run} ended its boot at {stage}, run 1 at {first}",
                        scenario.name
                    )
                }
                Some(_) => {}
            }
            let Some(took) = boot.time(clock) else {
                bail!(
                    "{}: run {run} reached {stage} without printing `LAB-CLOCK <ticks> <frequency>` \
                     before it on the same console, so its virtual time is unknown; --icount \
                     reads the guest's own counter, which the lab's initramfs prints \
                     (/bin/lab-clock), and does not fall back to wall time",
                    scenario.name
                );
            };
            let wall = match clock {
                Clock::Virtual => format!(" (host wall {:.3}s)", boot.wall.as_secs_f64()),
                Clock::Wall => String::new(),
            };
            let cpu = boot.host_cpu.map_or(String::new(), |cpu| {
                format!(
                    " (QEMU CPU: user {:.3}s, system {:.3}s)",
                    cpu.user.as_secs_f64(),
                    cpu.system.as_secs_f64()
                )
            });
            println!(
                "{:<20} run {run}: {:.3}s {} to {stage}{wall}{cpu}",
                scenario.name,
                took.as_secs_f64(),
                clock.word()
            );
            times[which].push(took);
            cpu_times[which].extend(boot.host_cpu);
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
    let word = clock.word();
    for (scenario, m) in scenarios.iter().zip(&medians) {
        println!(
            "{:<20} median of {runs}: {:.3}s {word}",
            scenario.name,
            m.as_secs_f64()
        );
    }
    println!(
        "ratio {} / {}: {:.3} ({word} time)",
        names[0],
        names[1],
        ratio(medians[0], medians[1])
    );
    print_cpu_split(&scenarios, &cpu_times, runs);
    Ok(())
}

/// QEMU's CPU time at the sentinel, split: the user-mode median (the
/// emulation) and its ratio, and the system-mode median (the host kernel,
/// mostly first touches of memory), which is where this kind of host's
/// run-to-run noise goes. Printed only when every run could be sampled.
fn print_cpu_split(scenarios: &[Scenario], cpu_times: &[Vec<HostCpu>; 2], runs: usize) {
    if cpu_times.iter().any(|c| c.len() != runs) {
        return;
    }
    let medians = |part: fn(&HostCpu) -> Duration| -> Vec<Duration> {
        cpu_times
            .iter()
            .map(|c| median(c.iter().map(part).collect()).unwrap_or_default())
            .collect()
    };
    let (user, system) = (medians(|t| t.user), medians(|t| t.system));
    for (i, scenario) in scenarios.iter().enumerate() {
        println!(
            "{:<20} QEMU CPU at the sentinel, median of {runs}: user {:.3}s, system {:.3}s",
            scenario.name,
            user[i].as_secs_f64(),
            system[i].as_secs_f64()
        );
    }
    println!(
        "ratio {} / {}: {:.3} (QEMU user-mode CPU time: the emulation, without the host \
         kernel's page-fault time)",
        scenarios[0].name,
        scenarios[1].name,
        ratio(user[0], user[1])
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::report::timeline::GuestClock;

    fn mark(what: &str, console: Option<&str>, at_ms: u64) -> Mark {
        Mark {
            what: what.into(),
            console: console.map(str::to_owned),
            at_ms,
            guest_clock: None,
            exits: None,
            vm: None,
        }
    }

    fn clock(console: &str, at_ms: u64, ticks: u64, frequency_hz: u64) -> Mark {
        Mark {
            exits: None,
            guest_clock: Some(GuestClock {
                ticks,
                frequency_hz,
            }),
            ..mark(LAB_CLOCK_STAGE, Some(console), at_ms)
        }
    }

    /// QEMU's virt board counter frequency; any other works the same.
    const HZ: u64 = 62_500_000;

    #[test]
    fn virtual_time_is_the_counter_the_sentinels_console_printed_before_it() {
        // 2.75 s of guest time, 1.25 s at the first clock line.
        let (ticks, early) = (HZ * 11 / 4, HZ * 5 / 4);
        let marks = [
            mark("qemu-start", None, 200),
            clock("vm1", 2000, early, HZ),
            clock("vm0", 2600, ticks, HZ),
            mark("lab-ready", Some("vm0"), 2700),
            mark("lab-ready", Some("vm1"), 2800),
        ];
        assert_eq!(virtual_boot_time(&marks), Some(Duration::from_millis(2750)));
        let boot = Boot::from_marks(&marks).unwrap();
        assert_eq!(boot.time(Clock::Virtual), Some(Duration::from_millis(2750)));
        assert_eq!(boot.time(Clock::Wall), Some(Duration::from_millis(2500)));
        assert_eq!(boot.stage, "lab-ready");
    }

    #[test]
    fn no_virtual_time_without_a_clock_line_before_the_sentinel() {
        let sentinel_only = [
            mark("qemu-start", None, 10),
            mark("guest-done", Some("serial"), 90),
        ];
        let boot = Boot::from_marks(&sentinel_only).unwrap();
        assert_eq!(boot.time(Clock::Virtual), None, "never wall time instead");
        assert_eq!(boot.time(Clock::Wall), Some(Duration::from_millis(80)));

        let after = [
            mark("qemu-start", None, 10),
            mark("lab-ready", Some("serial"), 90),
            clock("serial", 95, HZ, HZ),
        ];
        assert_eq!(virtual_boot_time(&after), None);
        let other_console = [clock("vm1", 80, HZ, HZ), mark("lab-ready", Some("vm0"), 90)];
        assert_eq!(virtual_boot_time(&other_console), None);
        let unparsed = [
            Mark {
                guest_clock: None,
                exits: None,
                ..clock("serial", 80, HZ, HZ)
            },
            mark("lab-ready", Some("serial"), 90),
        ];
        assert_eq!(virtual_boot_time(&unparsed), None);
        assert_eq!(
            virtual_boot_time(&[clock("serial", 80, HZ, HZ)]),
            None,
            "no sentinel"
        );
        assert_eq!(
            virtual_boot_time(&[
                clock("serial", 80, HZ, 0),
                mark("lab-ready", Some("serial"), 90)
            ]),
            None,
            "a zero frequency gives no time"
        );
    }

    #[test]
    fn medians_of_virtual_times_and_their_ratio() {
        let boots = |seconds: &[u64]| -> Vec<Duration> {
            seconds
                .iter()
                .map(|s| {
                    let marks = [
                        mark("qemu-start", None, 0),
                        clock("serial", 1, s * HZ, HZ),
                        mark("lab-ready", Some("serial"), 2),
                    ];
                    Boot::from_marks(&marks)
                        .unwrap()
                        .time(Clock::Virtual)
                        .unwrap()
                })
                .collect()
        };
        let scenario = median(boots(&[6, 3, 9])).unwrap();
        let baseline = median(boots(&[2, 4, 3])).unwrap();
        assert_eq!(scenario, Duration::from_secs(6));
        assert_eq!(baseline, Duration::from_secs(3));
        assert!((ratio(scenario, baseline) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn output_says_which_clock_it_measures() {
        assert!(Clock::Virtual.describe().contains("virtual time"));
        assert!(Clock::Virtual.describe().contains("CNTVCT_EL0"));
        assert!(Clock::Wall.describe().contains("wall time"));
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
    fn host_cpu_reads_utime_and_stime_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...; the name may hold ") ".
        let stat = "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 14397 0 1 0 183 46 0 0 20 0 3";
        assert_eq!(
            HostCpu::parse_stat(stat, 100),
            Some(HostCpu {
                user: Duration::from_millis(1830),
                system: Duration::from_millis(460),
            })
        );
        assert_eq!(HostCpu::parse_stat(stat, 0), None);
        assert_eq!(HostCpu::parse_stat("4242 (qemu) S 1 2", 100), None);
    }

    #[test]
    fn host_cpu_of_this_process() {
        let own = HostCpu::of_process(std::process::id() as i32);
        assert!(own.is_some(), "/proc/self/stat readable");
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
