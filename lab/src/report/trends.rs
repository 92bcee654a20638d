//! Trends across sweeps (`lab report --history DIR...`): each scenario's
//! wall time and boot stages over the last N sweeps' `results.json`, drawn
//! as inline SVG lines into `trends.html`, and a flag on every series whose
//! newest value grew beyond its own noise.
//!
//! The rule: over the earlier sweeps' values of a series (at least
//! [`MIN_HISTORY`]), take the median `m` and the median absolute deviation
//! `MAD`; the newest value is slower when it exceeds
//! `m + max(K · 1.4826 · MAD, 5 % of m, 50 ms)`. 1.4826 · MAD estimates the
//! standard deviation of normal noise without letting one slow outlier in
//! the history widen it; the floor keeps a series that never moved (MAD 0)
//! from flagging a millisecond. Only runs that passed count: a failure's
//! time is a timeout, and the failure is reported anyway.
//!
//! Series: `wall` (the deciding attempt's duration) and each boot stage as
//! `<console>/<stage>` (`vm-start <vm>` for the hypervisor's per-VM lines),
//! in milliseconds since QEMU started.

use crate::report::html::timeline::seconds;
use crate::report::read_results;
use crate::report::results::SweepRecord;
use crate::report::timeline::VM_START_STAGE;
use crate::run::events::Verdict;
use anyhow::{bail, Result};
use askama::Template;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Earlier values a series needs before it can be flagged.
pub const MIN_HISTORY: usize = 3;
/// How many noise widths above the median is slower.
pub const K: f64 = 3.0;
/// The file `lab report --history` writes.
pub const TRENDS_HTML: &str = "trends.html";

/// The sweeps under `dirs` (each a sweep directory with `results.json`,
/// or a directory of them such as `target/lab/sweeps`), oldest first, the
/// last `last` of them.
pub fn load(dirs: &[PathBuf], last: usize) -> Result<Vec<SweepRecord>> {
    let mut files = Vec::new();
    for dir in dirs {
        let own = dir.join(super::RESULTS_JSON);
        if own.is_file() {
            files.push(own);
            continue;
        }
        let entries = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let path = entry.path();
            // `latest` is a link to one of the others.
            let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
            if !is_link && path.join(super::RESULTS_JSON).is_file() {
                files.push(path.join(super::RESULTS_JSON));
            }
        }
    }
    let mut sweeps = files
        .iter()
        .map(|f| read_results(f))
        .collect::<Result<Vec<_>>>()?;
    if sweeps.is_empty() {
        bail!("no results.json under the given directories");
    }
    sweeps.sort_by(|a, b| a.sweep_id.cmp(&b.sweep_id));
    sweeps.dedup_by(|a, b| a.sweep_id == b.sweep_id);
    let skip = sweeps.len().saturating_sub(last.max(1));
    Ok(sweeps.split_off(skip))
}

/// Each scenario's series: metric name to one value per sweep.
pub type Series = BTreeMap<String, BTreeMap<String, Vec<Option<u64>>>>;

/// The series of every scenario over `sweeps`.
pub fn series(sweeps: &[SweepRecord]) -> Series {
    let mut all = Series::new();
    for (index, sweep) in sweeps.iter().enumerate() {
        for scenario in &sweep.scenarios {
            let Some(run) = scenario.last().map(|a| &a.run) else {
                continue;
            };
            if run.verdict != Verdict::Passed {
                continue;
            }
            let mut values = vec![("wall".to_owned(), run.duration_ms)];
            let qemu_start = run
                .timeline
                .iter()
                .find(|m| m.what == "qemu-start")
                .map_or(0, |m| m.at_ms);
            for mark in run.timeline.iter().filter(|m| m.console.is_some()) {
                let console = mark.console.as_deref().unwrap_or_default();
                let what = match (&mark.vm, mark.what.as_str()) {
                    (Some(vm), VM_START_STAGE) => format!("{VM_START_STAGE} {vm}"),
                    _ => mark.what.clone(),
                };
                values.push((
                    format!("{console}/{what}"),
                    mark.at_ms.saturating_sub(qemu_start),
                ));
            }
            let metrics = all.entry(scenario.scenario.clone()).or_default();
            for (metric, value) in values {
                let points = metrics
                    .entry(metric)
                    .or_insert_with(|| vec![None; sweeps.len()]);
                points[index] = Some(value);
            }
        }
    }
    all
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// How a series' newest value compares with its history.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub latest_ms: u64,
    pub median_ms: f64,
    pub mad_ms: f64,
    pub threshold_ms: f64,
    pub history: usize,
    pub slower: bool,
}

/// Judges the newest value of `points` (the last sweep's) against the
/// earlier ones; `None` without a newest value or enough history.
pub fn judge(points: &[Option<u64>]) -> Option<Judgement> {
    let (latest, earlier) = points.split_last()?;
    let latest = (*latest)?;
    let mut history: Vec<f64> = earlier.iter().flatten().map(|&v| v as f64).collect();
    if history.len() < MIN_HISTORY {
        return None;
    }
    history.sort_by(f64::total_cmp);
    let m = median(&history);
    let mut deviations: Vec<f64> = history.iter().map(|v| (v - m).abs()).collect();
    deviations.sort_by(f64::total_cmp);
    let mad = median(&deviations);
    let threshold = m + (K * 1.4826 * mad).max(m * 0.05).max(50.0);
    Some(Judgement {
        latest_ms: latest,
        median_ms: m,
        mad_ms: mad,
        threshold_ms: threshold,
        history: history.len(),
        slower: latest as f64 > threshold,
    })
}

/// One line per slower series, for the terminal and the nightly log.
pub fn slower_text(series: &Series) -> String {
    let mut out = String::new();
    for (scenario, metrics) in series {
        for (metric, points) in metrics {
            if let Some(j) = judge(points).filter(|j| j.slower) {
                let _ = writeln!(
                    out,
                    "slower: {scenario} {metric}: {} > {} (median {} + noise, MAD {} over {} sweeps)",
                    seconds(j.latest_ms),
                    seconds(j.threshold_ms as u64),
                    seconds(j.median_ms as u64),
                    seconds(j.mad_ms as u64),
                    j.history
                );
            }
        }
    }
    out
}

/// `trends.html`.
#[derive(Debug, Template)]
#[template(path = "trends.html")]
pub struct TrendsPage {
    pub title: String,
    pub sweeps: Vec<String>,
    pub scenarios: Vec<TrendSection>,
}

#[derive(Debug, Clone)]
pub struct TrendSection {
    pub name: String,
    pub slower: bool,
    pub chart: Chart,
    pub metrics: Vec<MetricRow>,
}

/// One series' numbers in the table under the chart.
#[derive(Debug, Clone)]
pub struct MetricRow {
    pub metric: String,
    /// The line's CSS class (its colour in the chart).
    pub class: String,
    pub latest: String,
    pub median: String,
    pub threshold: String,
    pub slower: bool,
}

/// A line chart: x one step per sweep, y milliseconds from 0.
#[derive(Debug, Clone)]
pub struct Chart {
    pub width: u32,
    pub height: u32,
    pub lines: Vec<ChartLine>,
    pub y_ticks: Vec<(u32, String)>,
}

#[derive(Debug, Clone)]
pub struct ChartLine {
    pub metric: String,
    pub class: String,
    /// `x,y x,y ...` for `<polyline points>`.
    pub points: String,
    pub dots: Vec<(u32, u32, String)>,
}

const CHART_WIDTH: u32 = 720;
const CHART_HEIGHT: u32 = 200;
const CHART_LEFT: u32 = 60;

fn chart(metrics: &BTreeMap<String, Vec<Option<u64>>>, sweeps: &[String]) -> Chart {
    let max = metrics
        .values()
        .flatten()
        .flatten()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let top = 10;
    let bottom = CHART_HEIGHT - 20;
    let y = |ms: u64| bottom - u32::try_from(ms * u64::from(bottom - top) / max).unwrap_or(0);
    let step =
        (CHART_WIDTH - CHART_LEFT - 10) / u32::try_from(sweeps.len().max(2) - 1).unwrap_or(1);
    let x = |i: usize| CHART_LEFT + u32::try_from(i).unwrap_or(0) * step;
    let lines = metrics
        .iter()
        .enumerate()
        .map(|(n, (metric, points))| {
            let dots: Vec<(u32, u32, String)> = points
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    v.map(|v| {
                        (
                            x(i),
                            y(v),
                            format!("{metric} {}: {}", sweeps[i], seconds(v)),
                        )
                    })
                })
                .collect();
            ChartLine {
                metric: metric.clone(),
                class: format!("s{}", n % 8),
                points: dots
                    .iter()
                    .map(|(x, y, _)| format!("{x},{y}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                dots,
            }
        })
        .collect();
    Chart {
        width: CHART_WIDTH,
        height: CHART_HEIGHT,
        lines,
        y_ticks: [0, max / 2, max].map(|v| (y(v), seconds(v))).to_vec(),
    }
}

/// The trends page of `sweeps`.
pub fn page(sweeps: &[SweepRecord]) -> TrendsPage {
    let ids: Vec<String> = sweeps.iter().map(|s| s.sweep_id.clone()).collect();
    let all = series(sweeps);
    let mut scenarios: Vec<TrendSection> = all
        .iter()
        .map(|(name, metrics)| {
            let rows: Vec<MetricRow> = metrics
                .iter()
                .enumerate()
                .map(|(n, (metric, points))| {
                    let j = judge(points);
                    let ms = |f: fn(&Judgement) -> u64| {
                        j.as_ref().map_or_else(|| "-".to_owned(), |j| seconds(f(j)))
                    };
                    MetricRow {
                        metric: metric.clone(),
                        class: format!("s{}", n % 8),
                        latest: points
                            .last()
                            .copied()
                            .flatten()
                            .map_or_else(|| "-".to_owned(), seconds),
                        median: ms(|j| j.median_ms as u64),
                        threshold: ms(|j| j.threshold_ms as u64),
                        slower: j.is_some_and(|j| j.slower),
                    }
                })
                .collect();
            TrendSection {
                name: name.clone(),
                slower: rows.iter().any(|r| r.slower),
                chart: chart(metrics, &ids),
                metrics: rows,
            }
        })
        .collect();
    scenarios.sort_by_key(|s| !s.slower);
    TrendsPage {
        title: format!("lab trends over {} sweeps", sweeps.len()),
        sweeps: ids,
        scenarios,
    }
}

/// `lab report --history`: writes the page to `out` and returns the
/// slower lines (empty when nothing grew).
pub fn report(dirs: &[PathBuf], last: usize, out: &Path) -> Result<String> {
    let sweeps = load(dirs, last)?;
    let html = page(&sweeps)
        .render()
        .map_err(|e| anyhow::anyhow!("rendering {}: {e}", out.display()))?;
    crate::build::write_atomically(out, html.as_bytes())?;
    Ok(slower_text(&series(&sweeps)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judged_against_its_own_noise() {
        let some = |v: &[u64]| v.iter().map(|&v| Some(v)).collect::<Vec<_>>();
        // Too little history.
        assert_eq!(judge(&some(&[1000, 1000, 5000])), None);
        // Noisy history (MAD 100): 1400 is within it, 1500 beyond.
        let noisy = [900, 1000, 1100, 1000, 1200, 800];
        for (latest, slower) in [(1400, false), (1500, true)] {
            let mut points = some(&noisy);
            points.push(Some(latest));
            let j = judge(&points).unwrap();
            assert_eq!((j.median_ms, j.mad_ms), (1000.0, 100.0));
            assert_eq!(j.slower, slower, "{latest}: {j:?}");
        }
        // A steady series: the 5 % floor, not a zero MAD, decides.
        let steady = some(&[2000, 2000, 2000, 2040]);
        assert!(!judge(&steady).unwrap().slower);
        let mut grew = some(&[2000, 2000, 2000]);
        grew.push(Some(2101));
        assert!(judge(&grew).unwrap().slower);
        // Missing values (failed runs) are skipped, a missing newest one is
        // not judged.
        assert!(judge(&[Some(1), None, Some(1), Some(1), None]).is_none());
    }
}
