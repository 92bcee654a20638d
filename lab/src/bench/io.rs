//! `lab bench net` and `lab bench blk`: what a guest measured during a
//! scenario, against the same measurement in its baseline, both run
//! alternately, median of N, one ratio per figure. Every figure is guest
//! time, read from the run's console, so both sides measure alike:
//! - `ping-rtt`: the average of the last `round-trip min/avg/max` summary
//!   busybox `ping` printed on the scenario's first VM's console;
//! - `tcp-recv`, `blk-read`: the `LAB-TIME <name> <ticks> <frequency>`
//!   line of `/bin/lab-time` (the guest's virtual counter around a command:
//!   an 8 MiB `nc` download, a 64 MiB `dd` from the raw disk).
//!
//! A figure a run did not print is an error, never left out of a median.

use super::{median, ratio};
use crate::run::events::{Consumer, Event, EventKind};
use crate::run::{Lab, RunOptions};
use crate::scenario::{self, Scenario};
use anyhow::{bail, Context, Result};
use regex::Regex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Which guest measurements a bench compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoBench {
    Net,
    Blk,
}

/// One figure a bench reads from a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figure {
    pub name: &'static str,
    /// How to read the ratio: for a time, scenario / baseline (lower is
    /// better); for a transfer, baseline / scenario, its throughput ratio.
    pub throughput: bool,
}

impl IoBench {
    /// The scenario and baseline benched when none are named.
    pub fn default_pair(self) -> [&'static str; 2] {
        match self {
            IoBench::Net => ["multi_vm_net", "multi_vm_net_bare"],
            IoBench::Blk => ["virtio_blk", "virtio_blk_bare"],
        }
    }

    /// The figures, in the order they are printed.
    pub fn figures(self) -> &'static [Figure] {
        match self {
            IoBench::Net => &[
                Figure {
                    name: PING_RTT,
                    throughput: false,
                },
                Figure {
                    name: "tcp-recv",
                    throughput: true,
                },
            ],
            IoBench::Blk => &[Figure {
                name: "blk-read",
                throughput: true,
            }],
        }
    }
}

/// The figure read from busybox ping's summary.
pub const PING_RTT: &str = "ping-rtt";

fn lab_time_line() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\bLAB-TIME (\S+) (\d+) (\d+)\b").expect("valid regex"))
}

fn ping_summary() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"round-trip min/avg/max = [0-9.]+/([0-9.]+)/[0-9.]+ ms").expect("valid regex")
    })
}

/// The figures of one run, by name.
pub type Figures = BTreeMap<String, Duration>;

/// Reads figures from console lines: `first_console` is where ping's
/// summary counts (the scenario's first VM; with one console, it).
#[derive(Clone, Default)]
struct FigureTap {
    first_console: Option<String>,
    figures: Arc<Mutex<Figures>>,
}

impl FigureTap {
    fn read(&self, console: &str, line: &str) {
        let Ok(mut figures) = self.figures.lock() else {
            return;
        };
        if let Some(c) = lab_time_line().captures(line) {
            let (ticks, hz) = (c[2].parse::<u64>(), c[3].parse::<u64>());
            if let (Ok(ticks), Ok(hz)) = (ticks, hz) {
                if hz > 0 {
                    let secs = ticks as f64 / hz as f64;
                    figures.insert(c[1].to_owned(), Duration::from_secs_f64(secs));
                }
            }
        }
        let on_first = self.first_console.as_deref().is_none_or(|c| c == console);
        if let Some(c) = ping_summary().captures(line).filter(|_| on_first) {
            if let Ok(ms) = c[1].parse::<f64>() {
                figures.insert(PING_RTT.into(), Duration::from_secs_f64(ms / 1000.0));
            }
        }
    }
}

impl Consumer for FigureTap {
    fn on_event(&mut self, event: &Event) {
        if let EventKind::ConsoleLine { console, line } = &event.kind {
            self.read(console, line);
        }
    }
}

/// Runs `scenario` once and returns the figures of `bench` it printed, and
/// the run directory it left (with its `result.json`).
pub fn figures_once(
    lab: &Lab,
    scenario: &Scenario,
    qemu: &Path,
    options: &RunOptions,
    bench: IoBench,
) -> Result<(Figures, PathBuf)> {
    // The first VM's console: its own when the VMs have consoles of their
    // own (tagged by the hypervisor, or one QEMU each), else the only one.
    let own_consoles = scenario.vms.len() > 1 || !crate::run::tagged_vms(scenario).is_empty();
    let first_console = own_consoles
        .then(|| scenario.vms.first().map(|vm| vm.name.clone()))
        .flatten();
    let tap = FigureTap {
        first_console,
        figures: Arc::default(),
    };
    let summary = super::run_passing(lab, scenario, qemu, options, Box::new(tap.clone()))?;
    let figures = tap
        .figures
        .lock()
        .map_err(|_| anyhow::anyhow!("figures poisoned"))?
        .clone();
    for figure in bench.figures() {
        if !figures.contains_key(figure.name) {
            bail!(
                "{} printed no {} figure ({}); see {}",
                scenario.name,
                figure.name,
                match figure.name {
                    PING_RTT => "a `round-trip min/avg/max` line of ping on its first VM",
                    _ => "a `LAB-TIME <name> <ticks> <frequency>` line of /bin/lab-time",
                },
                summary.run_dir.display()
            );
        }
    }
    Ok((figures, summary.run_dir))
}

/// How `lab bench net|blk` runs.
#[derive(Clone, Copy, Debug)]
pub struct IoBenchOptions {
    pub runs: usize,
    pub offline: bool,
}

/// Runs the bench and prints one line per run, the medians and the ratios.
pub fn run(
    lab: &Lab,
    qemu: &Path,
    bench: IoBench,
    names: [&str; 2],
    how: IoBenchOptions,
) -> Result<()> {
    if how.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let scenarios = names
        .iter()
        .map(|name| scenario::load_by_name(&lab.root, name))
        .collect::<Result<Vec<_>>>()?;
    let options = RunOptions {
        offline: how.offline,
        ..RunOptions::default()
    };
    println!(
        "measuring guest time (the guest's virtual counter, or ping's own clock), median of {}",
        how.runs
    );
    let mut seen: [Vec<Figures>; 2] = [Vec::new(), Vec::new()];
    for run in 1..=how.runs {
        // Alternate, so drift on the machine hits both alike.
        for (which, scenario) in scenarios.iter().enumerate() {
            let (figures, _) = figures_once(lab, scenario, qemu, &options, bench)
                .with_context(|| format!("run {run} of {}", scenario.name))?;
            println!(
                "{:<20} run {run}: {}",
                scenario.name,
                describe(bench, &figures)
            );
            seen[which].push(figures);
        }
    }
    let medians: Vec<Figures> = seen
        .iter()
        .map(|runs| {
            bench
                .figures()
                .iter()
                .map(|f| {
                    let times = runs.iter().filter_map(|r| r.get(f.name).copied()).collect();
                    (f.name.to_owned(), median(times).unwrap_or_default())
                })
                .collect()
        })
        .collect();
    for (scenario, m) in scenarios.iter().zip(&medians) {
        println!(
            "{:<20} median of {}: {}",
            scenario.name,
            how.runs,
            describe(bench, m)
        );
    }
    for figure in bench.figures() {
        let (ours, base) = (medians[0][figure.name], medians[1][figure.name]);
        if figure.throughput {
            println!(
                "{} throughput ratio {} / {}: {:.3} (baseline time / scenario time; higher is better)",
                figure.name,
                names[0],
                names[1],
                ratio(base, ours)
            );
        } else {
            println!(
                "{} ratio {} / {}: {:.3} (lower is better)",
                figure.name,
                names[0],
                names[1],
                ratio(ours, base)
            );
        }
    }
    Ok(())
}

/// `ping-rtt 1.234 ms, tcp-recv 4.567 s`.
fn describe(bench: IoBench, figures: &Figures) -> String {
    bench
        .figures()
        .iter()
        .filter_map(|f| {
            let time = figures.get(f.name)?;
            Some(match f.name {
                PING_RTT => format!("{} {:.3} ms", f.name, time.as_secs_f64() * 1000.0),
                _ => format!("{} {:.3} s", f.name, time.as_secs_f64()),
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_lab_time_and_the_first_vms_ping_summary() {
        let tap = FigureTap {
            first_console: Some("vm0".into()),
            figures: Arc::default(),
        };
        tap.read("vm0", "round-trip min/avg/max = 1.0/9.000/20.0 ms");
        tap.read("vm0", "round-trip min/avg/max = 1.0/2.500/4.0 ms");
        tap.read("vm1", "round-trip min/avg/max = 1.0/7.000/9.0 ms");
        tap.read("vm0", "LAB-TIME tcp-recv 125000000 62500000");
        tap.read(
            "vm0",
            "vm0:/root# lab-time tcp-recv sh -c 'nc 10.0.0.2 5000'",
        );
        tap.read("vm0", "LAB-TIME blk-read failed 1");
        let figures = tap.figures.lock().unwrap().clone();
        assert_eq!(
            figures,
            Figures::from([
                (PING_RTT.to_owned(), Duration::from_micros(2500)),
                ("tcp-recv".to_owned(), Duration::from_secs(2)),
            ])
        );
        let line = describe(IoBench::Net, &figures);
        assert_eq!(line, "ping-rtt 2.500 ms, tcp-recv 2.000 s");
    }

    #[test]
    fn one_console_counts_as_the_first_vms() {
        let tap = FigureTap::default();
        tap.read("serial", "round-trip min/avg/max = 0.1/0.200/0.3 ms");
        assert_eq!(
            tap.figures.lock().unwrap()[PING_RTT],
            Duration::from_micros(200)
        );
    }
}
