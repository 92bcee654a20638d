//! `lab fuzz`: runs the cargo-fuzz targets of the hypervisor
//! (`hypervisor/fuzz`) and the lab (`lab/fuzz`) for a given time each, one
//! at a time, and reports per target the executions run and the crashes
//! found. It installs what fuzzing needs through rustup and cargo (a
//! nightly toolchain, cargo-fuzz) when missing, saying so first.
//!
//! Each target fuzzes from its committed corpus (`<crate>/fuzz/corpus/<t>`)
//! into a scratch corpus under `target/fuzz/`; crashes land in
//! `<crate>/fuzz/artifacts/<t>/`, which `cargo test` replays, so a crash
//! stays a failing test until it is fixed. `--minimize` then replaces the
//! committed corpus with a small set of inputs that cover the edges it and
//! the new inputs reach (libFuzzer's set-cover merge), so what is committed
//! stays small.
//!
//! The targets are built without a sanitizer: the code they reach is safe
//! Rust (the hypervisor's `unsafe` is in its arch layer, not built on the
//! host), so the bugs to find are panics, which overflow checks and debug
//! assertions (on in cargo-fuzz's builds) turn wrong arithmetic into.

use crate::run::Lab;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// The crates with fuzz targets, relative to the workspace root.
const FUZZ_CRATES: [&str; 2] = ["hypervisor", "lab"];

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Targets to fuzz (default: all); `lab fuzz --list` names them.
    targets: Vec<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
    /// Afterwards, replace each target's committed corpus with a minimal
    /// set of inputs covering it and the new inputs.
    #[arg(long)]
    minimize: bool,
}

/// One fuzz target: its crate's directory and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub crate_dir: PathBuf,
    pub name: String,
}

impl Target {
    fn fuzz_dir(&self) -> PathBuf {
        self.crate_dir.join("fuzz")
    }
}

/// What libFuzzer reported for one run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Inputs executed (`stat::number_of_executed_units`, else the last
    /// `#N` status line).
    pub executions: u64,
    /// Files libFuzzer wrote a crashing (or leaking, timing-out) input to.
    pub crashes: Vec<String>,
}

/// Reads libFuzzer's output (its stderr).
pub fn parse_output(output: &str) -> RunStats {
    let mut stats = RunStats::default();
    for line in output.lines() {
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            if let Ok(n) = n.trim().parse() {
                stats.executions = n;
            }
        } else if let Some(n) = line
            .strip_prefix('#')
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
        {
            stats.executions = stats.executions.max(n);
        } else if let Some(rest) = line.split("Test unit written to ").nth(1) {
            stats.crashes.push(rest.trim().to_owned());
        }
    }
    stats
}

/// The targets of every fuzz crate under `root`: each
/// `<crate>/fuzz/fuzz_targets/<name>.rs`, sorted.
pub fn targets(root: &Path) -> Result<Vec<Target>> {
    let mut all = Vec::new();
    for krate in FUZZ_CRATES {
        let crate_dir = root.join(krate);
        let dir = crate_dir.join("fuzz").join("fuzz_targets");
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(str::to_owned))
            .collect();
        names.sort();
        all.extend(names.into_iter().map(|name| Target {
            crate_dir: crate_dir.clone(),
            name,
        }));
    }
    Ok(all)
}

/// The targets `wanted` names (all if none), or an error naming the
/// unknown ones.
pub fn select(all: Vec<Target>, wanted: &[String]) -> Result<Vec<Target>> {
    let unknown: Vec<&String> = wanted
        .iter()
        .filter(|w| !all.iter().any(|t| &t.name == *w))
        .collect();
    if !unknown.is_empty() {
        let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        bail!(
            "no fuzz target {unknown:?}; there are: {}",
            names.join(", ")
        );
    }
    Ok(all
        .into_iter()
        .filter(|t| wanted.is_empty() || wanted.contains(&t.name))
        .collect())
}

fn succeeds(program: &str, args: &[&str], dir: &Path) -> bool {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_visibly(program: &str, args: &[&str], dir: &Path) -> Result<()> {
    println!("fuzz: running `{program} {}`", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .with_context(|| format!("starting {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Installs the nightly toolchain and cargo-fuzz if they are missing.
fn ensure_tools(root: &Path) -> Result<()> {
    if !succeeds("rustup", &["run", "nightly", "rustc", "--version"], root) {
        println!("fuzz: cargo-fuzz needs a nightly toolchain; installing it with rustup");
        run_visibly(
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
            root,
        )?;
    }
    if !succeeds("cargo", &["+nightly", "fuzz", "--version"], root) {
        println!("fuzz: cargo-fuzz is missing; installing it with cargo");
        run_visibly("cargo", &["install", "cargo-fuzz", "--locked"], root)?;
    }
    Ok(())
}

/// cargo-fuzz on the nightly toolchain (the workspace pins a stable one).
const CARGO_FUZZ: [&str; 2] = ["+nightly", "fuzz"];

fn fuzz_one(target: &Target, seconds: u64, scratch: &Path, log: &Path) -> Result<RunStats> {
    std::fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let committed = target.fuzz_dir().join("corpus").join(&target.name);
    std::fs::create_dir_all(&committed)?;
    let output = Command::new("cargo")
        .args(CARGO_FUZZ)
        .args(["run", "--sanitizer", "none", &target.name])
        .arg(scratch)
        .arg(&committed)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .current_dir(&target.crate_dir)
        .stdout(Stdio::null())
        .output()
        .context("starting cargo fuzz run")?;
    let text = String::from_utf8_lossy(&output.stderr);
    std::fs::write(log, text.as_bytes()).with_context(|| format!("writing {}", log.display()))?;
    let stats = parse_output(&text);
    if !output.status.success() && stats.crashes.is_empty() {
        bail!(
            "cargo fuzz run {} failed ({}); see {}",
            target.name,
            output.status,
            log.display()
        );
    }
    Ok(stats)
}

/// Replaces the committed corpus of `target` with a minimal set of inputs
/// covering it and `scratch` (libFuzzer's `-set_cover_merge=1` into an
/// empty folder `into`). It covers edges, not hit counts
/// (`-use_counters=0`): counting each edge's hit-count buckets as features
/// of their own keeps three times as many inputs.
fn minimize(target: &Target, scratch: &Path, into: &Path) -> Result<usize> {
    let committed = target.fuzz_dir().join("corpus").join(&target.name);
    if into.exists() {
        std::fs::remove_dir_all(into).with_context(|| format!("emptying {}", into.display()))?;
    }
    std::fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
    let status = Command::new("cargo")
        .args(CARGO_FUZZ)
        .args(["run", "--sanitizer", "none", &target.name])
        .arg(into)
        .arg(&committed)
        .arg(scratch)
        .args(["--", "-set_cover_merge=1", "-use_counters=0"])
        .current_dir(&target.crate_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("starting cargo fuzz run -set_cover_merge=1")?;
    if !status.success() {
        bail!("minimizing the corpus of {} failed ({status})", target.name);
    }
    let kept: Vec<PathBuf> = std::fs::read_dir(into)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    if kept.is_empty() {
        bail!("minimizing the corpus of {} kept nothing", target.name);
    }
    std::fs::remove_dir_all(&committed)?;
    std::fs::create_dir_all(&committed)?;
    for file in &kept {
        if let Some(name) = file.file_name() {
            std::fs::copy(file, committed.join(name))?;
        }
    }
    Ok(kept.len())
}

/// Runs the command; exit 1 if a target crashed.
pub fn command(args: &FuzzArgs) -> Result<ExitCode> {
    let lab = Lab::discover()?;
    let selected = select(targets(&lab.root)?, &args.targets)?;
    if args.list {
        for target in &selected {
            println!("{}", target.name);
        }
        return Ok(ExitCode::SUCCESS);
    }
    ensure_tools(&lab.root)?;
    let work = lab.target_dir.join("fuzz");
    let mut crashed = false;
    let mut built = Vec::new();
    for target in &selected {
        if !built.contains(&target.crate_dir) {
            run_visibly(
                "cargo",
                &["+nightly", "fuzz", "build", "--sanitizer", "none"],
                &target.crate_dir,
            )?;
            built.push(target.crate_dir.clone());
        }
        println!("fuzz: {} for {} s", target.name, args.time);
        let scratch = work.join("corpus").join(&target.name);
        let log = work.join(format!("{}.log", target.name));
        let stats = fuzz_one(target, args.time, &scratch, &log)?;
        println!(
            "fuzz: {}: {} executions, {} crash(es){}",
            target.name,
            stats.executions,
            stats.crashes.len(),
            stats
                .crashes
                .iter()
                .map(|c| format!("\n  {c}"))
                .collect::<String>()
        );
        crashed |= !stats.crashes.is_empty();
        if args.minimize && stats.crashes.is_empty() {
            let into = work.join("minimized").join(&target.name);
            let kept = minimize(target, &scratch, &into)?;
            println!(
                "fuzz: {}: committed corpus minimized to {kept} inputs",
                target.name
            );
        }
    }
    Ok(if crashed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_executions_and_crashes_from_libfuzzer_output() {
        let done = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                    #524288\tpulse  cov: 12 ft: 14 corp: 3/9b lim: 4 exec/s: 262144 rss: 31Mb\n\
                    #1000000\tDONE   cov: 12 ft: 14 corp: 3/9b lim: 4 exec/s: 333333 rss: 31Mb\n\
                    Done 1000000 runs in 3 second(s)\n\
                    stat::number_of_executed_units: 1000003\n\
                    stat::peak_rss_mb:              31\n";
        assert_eq!(
            parse_output(done),
            RunStats {
                executions: 1_000_003,
                crashes: vec![]
            }
        );
        let crash = "#4096\tpulse  cov: 12 ft: 14 corp: 3/9b\n\
                     thread '<unnamed>' panicked at src/lib.rs:1:1:\n\
                     ==12== ERROR: libFuzzer: deadly signal\n\
                     artifact_prefix='/w/fuzz/artifacts/pl011/'; Test unit written to /w/fuzz/artifacts/pl011/crash-da39a3ee\n\
                     stat::number_of_executed_units: 4100\n";
        assert_eq!(
            parse_output(crash),
            RunStats {
                executions: 4100,
                crashes: vec!["/w/fuzz/artifacts/pl011/crash-da39a3ee".to_owned()]
            }
        );
    }

    #[test]
    fn every_target_is_found_and_unknown_ones_are_named() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let all = targets(root).unwrap();
        let names: Vec<&str> = all.iter().map(|t| t.name.as_str()).collect();
        for expected in [
            "mmio_decode",
            "handle_sync",
            "virtio_queue",
            "scenario",
            "console",
        ] {
            assert!(names.contains(&expected), "{names:?}");
        }
        let one = select(all.clone(), &["console".to_owned()]).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0].crate_dir.ends_with("lab"));
        let err = select(all, &["nope".to_owned()]).unwrap_err().to_string();
        assert!(err.contains("\"nope\""), "{err}");
    }
}
