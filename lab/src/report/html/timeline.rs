//! A run's boot timeline as an inline SVG picture: one row for the
//! hypervisor (QEMU's start to its banner), one per VM (the hypervisor
//! starting it, then its kernel, init, `LAB-CLOCK`, `LAB-READY`...), one
//! for the steps, all on one time axis (the run's), so a slow stage is a
//! long bar. Each stage's bar runs from the mark before it on its row to
//! its own mark; each step's bar from its start to its end. The geometry
//! is computed here, typed; the template only draws it.

use crate::report::timeline::{Mark, VM_START_STAGE};
use crate::run::record::{RunRecord, StepStatus};
use crate::run::MACHINE_CONSOLE;

/// The picture's width in pixels, and the label column's.
pub const WIDTH: u32 = 960;
const LABEL_WIDTH: u32 = 110;
const ROW_HEIGHT: u32 = 26;
const BAR_HEIGHT: u32 = 18;
const AXIS_HEIGHT: u32 = 22;
/// Roughly how wide one character of a bar's label is.
const CHAR_WIDTH: u32 = 7;

/// Everything the template draws.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineSvg {
    pub width: u32,
    pub height: u32,
    /// Where the bars start (after the row labels) and where they end.
    pub plot_left: u32,
    pub plot_right: u32,
    pub axis_y: u32,
    pub rows: Vec<RowLabel>,
    pub bars: Vec<Bar>,
    pub ticks: Vec<Tick>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowLabel {
    pub label: String,
    /// The text's baseline.
    pub y: u32,
}

/// One stage or step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// `hypervisor-start`, `vm-start`, `kernel-start`..., `step 2`.
    pub what: String,
    pub row: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    /// `stage`, `step-passed` or `step-failed`.
    pub class: &'static str,
    /// Drawn inside the bar when it fits (always in its tooltip).
    pub label: Option<String>,
    pub label_x: u32,
    pub label_y: u32,
    /// The tooltip: what, and when it started and ended.
    pub title: String,
}

/// A second mark on the axis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    pub x: u32,
    pub label: String,
}

/// One row before it is laid out.
#[derive(Debug, Default)]
struct Row {
    label: String,
    /// Where the row's first bar starts.
    origin_ms: u64,
    bars: Vec<(String, u64, u64, &'static str)>,
}

impl Row {
    fn new(label: &str, origin_ms: u64) -> Row {
        Row {
            label: label.to_owned(),
            origin_ms,
            bars: Vec::new(),
        }
    }

    /// A stage that ends `at_ms`, starting where the row's last one ended.
    fn stage(&mut self, what: &str, at_ms: u64) {
        let start = self.bars.last().map_or(self.origin_ms, |bar| bar.2);
        self.bars
            .push((what.to_owned(), start.min(at_ms), at_ms, "stage"));
    }
}

/// Is this mark one the lab made rather than a console line?
fn lab_mark(mark: &Mark) -> bool {
    mark.console.is_none()
}

/// The rows of a run, in order: hypervisor, VMs, other consoles, steps.
fn rows(record: &RunRecord) -> Vec<Row> {
    let marks = &record.timeline;
    let qemu_start = marks
        .iter()
        .find(|m| m.what == "qemu-start")
        .map(|m| m.at_ms)
        .or(record.qemu_started_ms)
        .unwrap_or(0);
    let mut hypervisor = Row::new("hypervisor", qemu_start);
    let hypervisor_at = marks
        .iter()
        .find(|m| m.what == "hypervisor-start")
        .map(|m| m.at_ms);
    if let Some(at) = hypervisor_at {
        hypervisor.stage("hypervisor-start", at);
    }
    let mut consoles: Vec<Row> = Vec::new();
    for mark in marks.iter().filter(|m| m.what == VM_START_STAGE) {
        let vm = mark.vm.as_deref().unwrap_or("vm");
        if !consoles.iter().any(|row| row.label == vm) {
            let mut row = Row::new(vm, hypervisor_at.unwrap_or(qemu_start));
            row.stage(VM_START_STAGE, mark.at_ms);
            consoles.push(row);
        }
    }
    let vm_rows = consoles.len();
    for mark in marks
        .iter()
        .filter(|m| !lab_mark(m) && m.what != "hypervisor-start" && m.what != VM_START_STAGE)
    {
        let console = mark.console.as_deref().unwrap_or(MACHINE_CONSOLE);
        // One VM on the machine's console: its lines are that VM's.
        let label = if vm_rows == 1 && console == MACHINE_CONSOLE {
            consoles[0].label.clone()
        } else {
            console.to_owned()
        };
        let index = match consoles.iter().position(|row| row.label == label) {
            Some(index) => index,
            None => {
                consoles.push(Row::new(&label, qemu_start));
                consoles.len() - 1
            }
        };
        consoles[index].stage(&mark.what, mark.at_ms);
    }
    let mut steps = Row::new("steps", qemu_start);
    for (index, step) in record.steps.iter().enumerate() {
        let (Some(start), Some(duration)) = (step.started_ms, step.duration_ms) else {
            continue;
        };
        let class = if step.status == StepStatus::Failed {
            "step-failed"
        } else {
            "step-passed"
        };
        steps.bars.push((
            format!("step {}", index + 1),
            start,
            start + duration,
            class,
        ));
    }
    let mut all = Vec::new();
    if !hypervisor.bars.is_empty() {
        all.push(hypervisor);
    }
    all.extend(consoles);
    if !steps.bars.is_empty() {
        all.push(steps);
    }
    all
}

/// `1.234 s`.
pub fn seconds(ms: u64) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

/// The axis' step: the smallest of these giving at most 8 ticks.
fn tick_step(end_ms: u64) -> u64 {
    const STEPS: [u64; 14] = [
        10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 30_000, 60_000, 120_000,
    ];
    STEPS
        .into_iter()
        .find(|step| end_ms / step <= 8)
        .unwrap_or(300_000)
}

/// Lays a run's timeline out.
pub fn layout(record: &RunRecord) -> TimelineSvg {
    let rows = rows(record);
    let end_ms = rows
        .iter()
        .flat_map(|row| row.bars.iter().map(|bar| bar.2))
        .chain([record.duration_ms])
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_left = LABEL_WIDTH;
    let plot_right = WIDTH - 10;
    let plot = u64::from(plot_right - plot_left);
    let x = |ms: u64| plot_left + u32::try_from(ms.min(end_ms) * plot / end_ms).unwrap_or(0);
    let mut labels = Vec::new();
    let mut bars = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let top = u32::try_from(index).unwrap_or(0) * ROW_HEIGHT + 4;
        labels.push(RowLabel {
            label: row.label.clone(),
            y: top + BAR_HEIGHT - 5,
        });
        for (what, start_ms, end, class) in &row.bars {
            let left = x(*start_ms);
            let width = x(*end).saturating_sub(left).max(2);
            let fits = u32::try_from(what.len()).unwrap_or(u32::MAX) * CHAR_WIDTH + 6 <= width;
            bars.push(Bar {
                what: what.clone(),
                row: row.label.clone(),
                start_ms: *start_ms,
                end_ms: *end,
                x: left,
                y: top,
                width,
                height: BAR_HEIGHT,
                class,
                label: fits.then(|| what.clone()),
                label_x: left + 3,
                label_y: top + BAR_HEIGHT - 5,
                title: format!(
                    "{} ({}): {} → {}",
                    what,
                    row.label,
                    seconds(*start_ms),
                    seconds(*end)
                ),
            });
        }
    }
    let axis_y = u32::try_from(rows.len()).unwrap_or(0) * ROW_HEIGHT + 6;
    let step = tick_step(end_ms);
    let ticks = (0..=end_ms / step)
        .map(|i| Tick {
            x: x(i * step),
            label: if step >= 1000 {
                format!("{}s", i * step / 1000)
            } else {
                format!("{:.2}s", (i * step) as f64 / 1000.0)
            },
        })
        .collect();
    TimelineSvg {
        width: WIDTH,
        height: axis_y + AXIS_HEIGHT,
        plot_left,
        plot_right,
        axis_y,
        rows: labels,
        bars,
        ticks,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::run::events::{ExitReason, Verdict};
    use crate::run::record::{StepRecord, RECORD_SCHEMA};

    fn mark(what: &str, console: Option<&str>, vm: Option<&str>, at_ms: u64) -> Mark {
        Mark {
            what: what.into(),
            console: console.map(str::to_owned),
            at_ms,
            guest_clock: None,
            exits: None,
            vm: vm.map(str::to_owned),
        }
    }

    fn step(started_ms: u64, duration_ms: u64, status: StepStatus) -> StepRecord {
        StepRecord {
            description: "expect".into(),
            status,
            started_ms: Some(started_ms),
            duration_ms: Some(duration_ms),
            failure: None,
        }
    }

    /// Two VMs on one hypervisor, their consoles tagged.
    pub(crate) fn two_vms() -> RunRecord {
        RunRecord {
            schema: RECORD_SCHEMA,
            scenario: "multi".into(),
            run_id: "r".into(),
            verdict: Verdict::Passed,
            exit_reason: ExitReason::StepsPassed,
            duration_ms: 4000,
            qemu: None,
            qemu_started_ms: Some(100),
            stages: Vec::new(),
            steps: vec![
                step(100, 2900, StepStatus::Passed),
                step(3000, 900, StepStatus::Failed),
            ],
            timeline: vec![
                mark("qemu-start", None, None, 100),
                mark("hypervisor-start", Some("serial"), None, 300),
                mark("vm-start", Some("serial"), Some("vm0"), 310),
                mark("vm-start", Some("serial"), Some("vm1"), 320),
                mark("kernel-start", Some("vm0"), None, 400),
                mark("kernel-start", Some("vm1"), None, 450),
                mark("lab-ready", Some("vm1"), None, 2500),
                mark("lab-ready", Some("vm0"), None, 2900),
                mark("step 1", None, None, 3000),
                mark("step 2 failed", None, None, 3900),
                mark("qemu-exit", None, None, 3950),
            ],
            rerun: "cargo run -p lab -- scenario multi".into(),
        }
    }

    #[test]
    fn one_row_per_vm_bars_from_mark_to_mark() {
        let svg = layout(&two_vms());
        let rows: Vec<&str> = svg.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(rows, ["hypervisor", "vm0", "vm1", "steps"]);
        let bars: Vec<(&str, &str, u64, u64, &str)> = svg
            .bars
            .iter()
            .map(|b| {
                (
                    b.row.as_str(),
                    b.what.as_str(),
                    b.start_ms,
                    b.end_ms,
                    b.class,
                )
            })
            .collect();
        assert_eq!(
            bars,
            [
                ("hypervisor", "hypervisor-start", 100, 300, "stage"),
                ("vm0", "vm-start", 300, 310, "stage"),
                ("vm0", "kernel-start", 310, 400, "stage"),
                ("vm0", "lab-ready", 400, 2900, "stage"),
                ("vm1", "vm-start", 300, 320, "stage"),
                ("vm1", "kernel-start", 320, 450, "stage"),
                ("vm1", "lab-ready", 450, 2500, "stage"),
                ("steps", "step 1", 100, 3000, "step-passed"),
                ("steps", "step 2", 3000, 3900, "step-failed"),
            ]
        );
        // One scale: x grows with time on every row.
        let at = |what: &str, row: &str| {
            svg.bars
                .iter()
                .find(|b| b.what == what && b.row == row)
                .unwrap()
                .x
        };
        assert!(at("lab-ready", "vm0") < at("step 2", "steps"));
        assert_eq!(svg.ticks.len(), 9, "0 to 4 s by 0.5 s");
    }

    #[test]
    fn a_single_vm_on_the_machine_console_gets_its_own_row() {
        let mut record = two_vms();
        record.timeline = vec![
            mark("qemu-start", None, None, 0),
            mark("hypervisor-start", Some("serial"), None, 200),
            mark("vm-start", Some("serial"), Some("vm0"), 210),
            mark("kernel-start", Some("serial"), None, 300),
        ];
        let svg = layout(&record);
        let rows: Vec<&str> = svg.rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(rows, ["hypervisor", "vm0", "steps"]);
    }

    #[test]
    fn tick_steps() {
        for (end, step) in [(1, 10), (80, 10), (900, 200), (4000, 500), (90_000, 20_000)] {
            assert_eq!(tick_step(end), step, "{end}");
        }
    }
}
