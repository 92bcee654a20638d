//! Where a run leaves its files: `<target>/lab/runs/<scenario>/<run-id>/`
//! with `console.log`, `qemu-cmdline.txt` and `result.json`, and a `latest`
//! link per scenario. Run ids sort by time: a UTC timestamp with
//! milliseconds, then the lab's pid and a counter so concurrent runs of one
//! scenario never share a directory. Each scenario keeps its newest
//! [`keep_runs`] run directories (`$LAB_KEEP_RUNS`, default
//! [`DEFAULT_KEEP_RUNS`]); creating one removes the oldest beyond that.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub const CONSOLE_LOG: &str = "console.log";
pub const QEMU_CMDLINE: &str = "qemu-cmdline.txt";
pub const RESULT_JSON: &str = "result.json";
pub const LATEST: &str = "latest";

/// Run directories each scenario keeps when `$LAB_KEEP_RUNS` is not set.
pub const DEFAULT_KEEP_RUNS: usize = 20;

/// How many run directories each scenario keeps: `$LAB_KEEP_RUNS` (at
/// least 1: the run being made), else [`DEFAULT_KEEP_RUNS`].
pub fn keep_runs() -> Result<usize> {
    match std::env::var("LAB_KEEP_RUNS") {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_KEEP_RUNS),
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => anyhow::bail!("LAB_KEEP_RUNS={value:?}: expected a whole number of at least 1"),
        },
        Err(e) => anyhow::bail!("LAB_KEEP_RUNS: {e}"),
    }
}

/// `<target>/lab/runs`.
pub fn runs_root(target_dir: &Path) -> PathBuf {
    target_dir.join("lab").join("runs")
}

/// A fresh run id for `now`.
pub fn run_id(now: SystemTime) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!(
        "{}-{:x}{:02x}",
        utc_stamp(since_epoch.as_secs(), since_epoch.subsec_millis()),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed) % 256
    )
}

/// `YYYYMMDDTHHMMSS.mmmZ` for seconds since the Unix epoch.
pub fn utc_stamp(secs: u64, millis: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Creates the run directory and points the scenario's `latest` at it.
pub fn create_run_dir(runs_root: &Path, scenario: &str, run_id: &str) -> Result<PathBuf> {
    let scenario_dir = runs_root.join(scenario);
    let dir = scenario_dir.join(run_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Replace the link atomically: a new link under a private name, renamed.
    let tmp = scenario_dir.join(format!(".{LATEST}.{run_id}"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(run_id, &tmp)
        .and_then(|()| std::fs::rename(&tmp, scenario_dir.join(LATEST)))
        .with_context(|| format!("linking {}/{LATEST}", scenario_dir.display()))?;
    prune_runs(&scenario_dir, keep_runs()?)
        .with_context(|| format!("pruning {}", scenario_dir.display()))?;
    Ok(dir)
}

/// Removes all but the newest `keep` run directories of a scenario (run
/// ids sort by time; the `latest` link and hidden names are not runs).
fn prune_runs(scenario_dir: &Path, keep: usize) -> Result<()> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(scenario_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_run = !name.to_string_lossy().starts_with('.') && entry.file_type()?.is_dir();
        if is_run {
            runs.push(name);
        }
    }
    runs.sort();
    let excess = runs.len().saturating_sub(keep);
    for name in &runs[..excess] {
        let dir = scenario_dir.join(name);
        // A run of another lab process may be removing it too.
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", dir.display()))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_stamp_table() {
        for (secs, millis, stamp) in [
            (0, 0, "19700101T000000.000Z"),
            (951_782_400, 5, "20000229T000000.005Z"),
            (1_795_638_896, 123, "20261125T203456.123Z"),
        ] {
            assert_eq!(utc_stamp(secs, millis), stamp);
        }
    }

    #[test]
    fn run_ids_sort_by_time_and_differ() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_638_896);
        let a = run_id(t);
        let b = run_id(t);
        let c = run_id(t + Duration::from_millis(1));
        assert_ne!(a, b);
        assert!(a.starts_with("20261125T203456.000Z-"), "{a}");
        assert!(c > a && c > b, "{a} {b} {c}");
    }

    #[test]
    fn old_runs_are_pruned_newest_kept() {
        let root = tempfile::tempdir().unwrap();
        let ids: Vec<String> = (0..DEFAULT_KEEP_RUNS + 5)
            .map(|i| format!("2026{i:04}"))
            .collect();
        for id in &ids {
            let dir = create_run_dir(root.path(), "s", id).unwrap();
            std::fs::write(dir.join(CONSOLE_LOG), "x").unwrap();
        }
        let mut left: Vec<String> = std::fs::read_dir(root.path().join("s"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected: Vec<String> = ids[5..].to_vec();
        expected.push(LATEST.into());
        assert_eq!(left, expected);
        prune_runs(&root.path().join("s"), 1).unwrap();
        assert!(root
            .path()
            .join("s")
            .join(LATEST)
            .join(CONSOLE_LOG)
            .is_file());
    }

    #[test]
    fn latest_follows_the_newest_run() {
        let root = tempfile::tempdir().unwrap();
        let first = create_run_dir(root.path(), "s", "1").unwrap();
        let second = create_run_dir(root.path(), "s", "2").unwrap();
        assert!(first.is_dir() && second.is_dir());
        let latest = root.path().join("s").join(LATEST);
        assert_eq!(std::fs::read_link(&latest).unwrap(), Path::new("2"));
        assert_eq!(
            latest.canonicalize().unwrap(),
            second.canonicalize().unwrap()
        );
    }
}
