//! `lab bench exits`: what one exit costs, as the test guest measures it in
//! its `testguest.exits` mode (`guest-images/testguest/src/exits.rs`): a
//! null call, PL011 and GIC distributor accesses, timer and SGI latencies
//! and WFI wake-ups, each averaged over many operations in one run.
//!
//! The scenario (the guest under the hypervisor) and its baseline (the
//! same guest on bare QEMU) each run twice per round: under
//! `-icount shift=0,sleep=off` ([`ICOUNT_ARGS`]), where the guest's virtual counter counts
//! instructions (one per nanosecond, every instruction the CPUs execute,
//! EL2's included), and without, where it follows the host clock. A figure
//! is the median over the rounds of its per-operation cost: instructions
//! under icount, nanoseconds of host time without.
//!
//! Each run leaves its result.json, whose timeline carries the VM's exit
//! counts by kind (the `vm-exits` mark); the bench prints them too.

use super::run_passing;
use crate::report::timeline::ExitStats;
use crate::run::events::{Consumer, Event, EventKind};
use crate::run::{Lab, RunOptions, MACHINE_CONSOLE};
use crate::scenario::{self, Scenario};
use anyhow::{bail, Context, Result};
use regex::Regex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// QEMU arguments for instruction-counted time: one instruction = 1 ns,
/// and (`sleep=off`) time spent with every CPU asleep jumps straight to the
/// next timer event instead of following the host clock, so the WFI
/// figures count instructions too.
pub const ICOUNT_ARGS: [&str; 2] = ["-icount", "shift=0,sleep=off"];

/// The scenario and the baseline benched when none are named.
pub const DEFAULT_PAIR: [&str; 2] = ["testguest_exits", "testguest_exits_bare"];

/// The figures the guest prints, in its order.
pub const FIGURES: [&str; 8] = [
    "hvc",
    "uart-read",
    "uart-write",
    "gicd-read",
    "vtimer",
    "wfi-timer",
    "sgi",
    "sgi-wfi",
];

/// One figure as the guest printed it:
/// `TESTGUEST exits-<name>: PASS ops=<n> ticks=<t> hz=<f>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub ops: u64,
    pub ticks: u64,
    pub hz: u64,
}

impl Sample {
    /// Nanoseconds of the guest's counter per operation: instructions
    /// under `-icount shift=0`, host time without. `None` for zero
    /// operations or a zero frequency.
    pub fn ns_per_op(&self) -> Option<f64> {
        if self.ops == 0 || self.hz == 0 {
            return None;
        }
        Some(self.ticks as f64 * 1e9 / self.hz as f64 / self.ops as f64)
    }
}

fn figure_line() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"TESTGUEST exits-([a-z-]+): PASS ops=(\d+) ticks=(\d+) hz=(\d+)")
            .expect("valid regex")
    })
}

/// The figure on a console line, if it carries one.
pub fn parse_figure(line: &str) -> Option<(String, Sample)> {
    let c = figure_line().captures(line)?;
    let sample = Sample {
        ops: c[2].parse().ok()?,
        ticks: c[3].parse().ok()?,
        hz: c[4].parse().ok()?,
    };
    Some((c[1].to_owned(), sample))
}

/// What one run printed: its figures and, under a hypervisor, the exit
/// counts of its VMs.
#[derive(Debug, Clone, Default)]
struct Printed {
    figures: BTreeMap<String, Sample>,
    exits: Vec<(String, ExitStats)>,
}

#[derive(Clone, Default)]
struct FigureTap(Arc<Mutex<Printed>>);

impl Consumer for FigureTap {
    fn on_event(&mut self, event: &Event) {
        let EventKind::ConsoleLine { line, console } = &event.kind else {
            return;
        };
        let Ok(mut printed) = self.0.lock() else {
            return;
        };
        if let Some((name, sample)) = parse_figure(line) {
            printed.figures.insert(name, sample);
        } else if let Some(exits) = ExitStats::parse(line).filter(|_| &**console == MACHINE_CONSOLE)
        {
            printed.exits.push(exits);
        }
    }
}

/// One run: its figures in ns (or instructions) per operation, its VMs'
/// exit counts, and the run directory it left.
struct Run {
    figures: BTreeMap<String, f64>,
    exits: Vec<(String, ExitStats)>,
    dir: PathBuf,
}

/// Runs `scenario` once.
fn run_once(lab: &Lab, scenario: &Scenario, qemu: &Path, options: &RunOptions) -> Result<Run> {
    let tap = FigureTap::default();
    let summary = run_passing(lab, scenario, qemu, options, Box::new(tap.clone()))?;
    let printed = tap
        .0
        .lock()
        .map_err(|_| anyhow::anyhow!("figures poisoned"))?
        .clone();
    let mut figures = BTreeMap::new();
    for name in FIGURES {
        let Some(per_op) = printed.figures.get(name).and_then(Sample::ns_per_op) else {
            bail!(
                "{} printed no usable `TESTGUEST exits-{name}: PASS ops=.. ticks=.. hz=..` line; \
                 see {}",
                scenario.name,
                summary.run_dir.display()
            );
        };
        figures.insert(name.to_owned(), per_op);
    }
    Ok(Run {
        figures,
        exits: printed.exits,
        dir: summary.run_dir,
    })
}

/// The median of some values (the lower middle for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len().checked_sub(1)? / 2).copied()
}

/// How `lab bench exits` runs.
#[derive(Clone, Copy, Debug)]
pub struct ExitsBench {
    /// Rounds; each runs both sides with and without icount.
    pub runs: usize,
    pub offline: bool,
}

/// One column of the table: a side (0 scenario, 1 baseline) on a clock.
#[derive(Clone, Copy)]
struct Column {
    side: usize,
    icount: bool,
}

const COLUMNS: [Column; 4] = [
    Column {
        side: 0,
        icount: true,
    },
    Column {
        side: 1,
        icount: true,
    },
    Column {
        side: 0,
        icount: false,
    },
    Column {
        side: 1,
        icount: false,
    },
];

/// Runs the bench, printing each run's figures and the table of medians.
pub fn run(lab: &Lab, qemu: &Path, names: [&str; 2], how: ExitsBench) -> Result<()> {
    if how.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let scenarios = names
        .iter()
        .map(|name| scenario::load_by_name(&lab.root, name))
        .collect::<Result<Vec<_>>>()?;
    println!(
        "measuring per-operation cost: instructions (-icount shift=0, the guest's counter \
         at 1 ns per instruction) and host ns (no icount); median of {}",
        how.runs
    );
    // [column][figure] -> values over the rounds.
    let mut seen: Vec<BTreeMap<String, Vec<f64>>> = vec![BTreeMap::new(); COLUMNS.len()];
    for round in 1..=how.runs {
        // Alternate, so drift on the machine hits every column alike.
        for (column, which) in COLUMNS.iter().zip(&mut seen) {
            let scenario = &scenarios[column.side];
            let options = RunOptions {
                qemu_args: if column.icount {
                    ICOUNT_ARGS.map(str::to_owned).to_vec()
                } else {
                    Vec::new()
                },
                offline: how.offline,
                ..RunOptions::default()
            };
            let Run {
                figures,
                exits,
                dir: run_dir,
            } = run_once(lab, scenario, qemu, &options)
                .with_context(|| format!("round {round} of {}", scenario.name))?;
            let unit = if column.icount { "instr" } else { "ns" };
            let values = FIGURES
                .iter()
                .map(|name| format!("{name} {:.0}", figures[*name]))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "{:<22} {:<9} round {round}: {values} ({unit}/op; {})",
                scenario.name,
                if column.icount { "icount" } else { "host" },
                run_dir.display()
            );
            for (vm, stats) in &exits {
                let kinds = stats
                    .by_kind
                    .iter()
                    .map(|(kind, n)| format!("{kind} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                println!("{:<22}   {vm}: exits {}: {kinds}", "", stats.total);
            }
            for (name, value) in figures {
                which.entry(name).or_default().push(value);
            }
        }
    }
    let medians: Vec<BTreeMap<String, f64>> = seen
        .into_iter()
        .map(|column| {
            column
                .into_iter()
                .filter_map(|(name, values)| Some((name, median(values)?)))
                .collect()
        })
        .collect();
    print!("{}", table(names, &medians));
    Ok(())
}

/// The table of medians: per figure, instructions on both sides and their
/// difference (what the hypervisor adds), then host ns on both sides.
fn table(names: [&str; 2], medians: &[BTreeMap<String, f64>]) -> String {
    let mut text = format!(
        "{:<11} {:>12} {:>12} {:>10} {:>12} {:>12}\n",
        "figure", "instr hv", "instr bare", "added", "host ns hv", "host ns bare"
    );
    text += &format!(
        "{:<11} {:>12} {:>12} {:>10} {:>12} {:>12}\n",
        "", "(icount)", "(icount)", "", "", ""
    );
    let cell = |column: usize, name: &str| medians.get(column).and_then(|m| m.get(name)).copied();
    let show = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.0}"));
    for name in FIGURES {
        let (hv, bare) = (cell(0, name), cell(1, name));
        let added = hv.zip(bare).map(|(hv, bare)| hv - bare);
        text += &format!(
            "{:<11} {:>12} {:>12} {:>10} {:>12} {:>12}\n",
            name,
            show(hv),
            show(bare),
            show(added),
            show(cell(2, name)),
            show(cell(3, name)),
        );
    }
    text += &format!("hv = {}, bare = {}\n", names[0], names[1]);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_line_is_ticks_over_operations() {
        let (name, sample) =
            parse_figure("TESTGUEST exits-gicd-read: PASS ops=1000 ticks=31250 hz=62500000")
                .unwrap();
        assert_eq!(name, "gicd-read");
        assert_eq!(
            sample,
            Sample {
                ops: 1000,
                ticks: 31250,
                hz: 62_500_000
            }
        );
        // 31250 ticks at 62.5 MHz = 500 us, over 1000 operations.
        assert_eq!(sample.ns_per_op(), Some(500.0));
        assert_eq!(parse_figure("TESTGUEST exits-hvc: FAIL no answer"), None);
        assert_eq!(parse_figure("TESTGUEST uart: PASS pl011"), None);
    }

    #[test]
    fn no_cost_without_operations_or_a_frequency() {
        let none = Sample {
            ops: 0,
            ticks: 5,
            hz: 1,
        };
        assert_eq!(none.ns_per_op(), None);
        assert_eq!(Sample { ops: 1, ..none }.ns_per_op(), Some(5e9));
        assert_eq!(
            Sample {
                ops: 1,
                hz: 0,
                ..none
            }
            .ns_per_op(),
            None
        );
    }

    #[test]
    fn the_table_puts_the_baseline_beside_each_figure() {
        let column = |base: f64| -> BTreeMap<String, f64> {
            FIGURES
                .iter()
                .enumerate()
                .map(|(i, name)| (name.to_string(), base + i as f64))
                .collect()
        };
        let medians = [column(400.0), column(10.0), column(3000.0), column(200.0)];
        let text = table(["hv_side", "bare_side"], &medians);
        let hvc = text.lines().find(|l| l.starts_with("hvc ")).unwrap();
        let cells: Vec<&str> = hvc.split_whitespace().collect();
        assert_eq!(cells, ["hvc", "400", "10", "390", "3000", "200"]);
        assert!(text.contains("hv = hv_side, bare = bare_side"));
        let partial = table(["a", "b"], &[column(1.0)]);
        let sgi = partial.lines().find(|l| l.starts_with("sgi ")).unwrap();
        assert_eq!(
            sgi.split_whitespace().collect::<Vec<_>>(),
            ["sgi", "7", "-", "-", "-", "-"]
        );
    }

    #[test]
    fn the_median_is_the_lower_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.0));
        assert_eq!(median(Vec::new()), None);
    }
}
