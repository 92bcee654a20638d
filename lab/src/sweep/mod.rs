//! `lab sweep`: many scenarios, `-j N` at a time, on tokio. Each run is the
//! runner's own blocking `run_scenario_to` on tokio's blocking pool (its
//! QEMU in its own session and process group, killed by the run on
//! timeout, on failure and on cancel). Ctrl-C sets the shared cancel flag:
//! running scenarios stop their QEMU within 100 ms, no new ones start.
//! A failed scenario is retried up to `--retries` times; passing only on a
//! retry makes it `flaky`. Every run's events, tagged with the attempt,
//! feed one sweep event stream that the display and the report writer read.

pub mod display;
pub mod events;
pub mod select;

use crate::qemu;
use crate::report::results::{sweep_verdict, Counts, SweepFold, SweepRecord};
use crate::report::{self, ReportWriter, RESULTS_JSON};
use crate::run::events::Verdict;
use crate::run::{artifacts, run_scenario_to, Cancel, Lab, RunOptions};
use crate::scenario::Scenario;
use anyhow::{bail, Context, Result};
use display::SweepDisplay;
use events::{SweepConsumer, SweepEvent, SweepVerdict};
use select::{Selection, Shard};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// `lab sweep` arguments.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SweepArgs {
    /// Only scenarios with this tag (repeat: every tag must be present).
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Only scenarios whose name matches this regex.
    #[arg(long, value_name = "REGEX")]
    pub filter: Option<String>,
    /// Scenarios run at the same time (default: the number of CPUs).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Run the K-th of N deterministic parts (sorted by name, round-robin).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Run a failed scenario up to N more times; a later pass is `flaky`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
    /// Only the scenarios that failed (or errored) in the previous sweep.
    #[arg(long)]
    pub only_failed: bool,
    /// Use only cached guest images.
    #[arg(long)]
    pub offline: bool,
    /// Take the scenarios from this directory instead of scenarios/.
    #[arg(long, value_name = "DIR", hide = true)]
    pub scenarios: Option<PathBuf>,
}

/// How a sweep runs.
#[derive(Debug, Clone, Default)]
pub struct SweepOptions {
    pub jobs: usize,
    pub retries: u32,
    pub offline: bool,
    pub cancel: Cancel,
    /// Stop the sweep on Ctrl-C (SIGINT) instead of dying.
    pub handle_ctrl_c: bool,
    /// The command that reruns the failures (shown in the summary).
    pub rerun_failed: String,
    /// Where the scenario files are when not in `scenarios/` (reruns name
    /// the file).
    pub scenario_dir: Option<PathBuf>,
}

/// `target/lab/sweeps`: one directory per sweep, and `latest`.
pub fn sweeps_root(target_dir: &Path) -> PathBuf {
    target_dir.join("lab").join("sweeps")
}

/// The exit code of a sweep: 2 if the lab could not run a scenario, else 1
/// if one failed, else 0 (flaky scenarios pass the sweep).
pub fn exit_code(counts: &Counts) -> u8 {
    if counts.error > 0 {
        2
    } else if counts.failed > 0 {
        1
    } else {
        0
    }
}

/// `lab sweep ...`.
pub fn command(args: &SweepArgs) -> Result<ExitCode> {
    let lab = Lab::discover()?;
    let sweeps = sweeps_root(&lab.target_dir);
    let only = if args.only_failed {
        let previous = report::read_results(&sweeps.join(artifacts::LATEST).join(RESULTS_JSON))
            .context("--only-failed needs a previous sweep")?;
        Some(
            previous
                .scenarios
                .iter()
                .filter(|s| matches!(s.verdict, SweepVerdict::Failed | SweepVerdict::Error))
                .map(|s| s.scenario.clone())
                .collect::<BTreeSet<_>>(),
        )
    } else {
        None
    };
    let scenarios = match &args.scenarios {
        Some(dir) => load_dir(dir)?,
        None => crate::scenario::load_all(&lab.root)?,
    };
    let selection = Selection {
        tags: args.tags.clone(),
        filter: args.filter.clone(),
        shard: args.shard,
        only,
    };
    let chosen = selection.apply(scenarios)?;
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    if jobs == 0 {
        bail!("-j 0: need at least one job");
    }
    let qemu = qemu::provision::ensure_qemu()?;
    let mut rerun_failed = String::from("cargo run -p lab -- sweep --only-failed");
    if args.offline {
        rerun_failed.push_str(" --offline");
    }
    if let Some(dir) = &args.scenarios {
        rerun_failed.push_str(&format!(" --scenarios {}", dir.display()));
    }
    let options = SweepOptions {
        jobs,
        retries: args.retries,
        offline: args.offline,
        cancel: Cancel::default(),
        handle_ctrl_c: true,
        rerun_failed,
        scenario_dir: args.scenarios.clone(),
    };
    let consumers: Vec<Box<dyn SweepConsumer>> = vec![
        Box::new(SweepDisplay::new(Box::new(std::io::stdout()))),
        Box::new(ReportWriter::default()),
    ];
    let record = run_sweep(&lab, chosen, &qemu, &options, consumers)?;
    Ok(ExitCode::from(exit_code(&record.counts)))
}

/// Every `*.yaml` scenario in `dir`.
fn load_dir(dir: &Path) -> Result<Vec<Scenario>> {
    let mut scenarios = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            scenarios.push(Scenario::load(&path)?);
        }
    }
    Ok(scenarios)
}

/// The command that reproduces one scenario's run: the same scenario file
/// (by name, or by path outside `scenarios/`), the same pinned images
/// (`--offline`: the cache the lock verified, nothing re-resolved), and
/// the git revision the hypervisor was built from.
pub fn rerun_command(scenario: &str, offline: bool, revision: Option<&str>) -> String {
    let mut command = format!("cargo run -p lab -- scenario {scenario}");
    if offline {
        command.push_str(" --offline");
    }
    if let Some(revision) = revision {
        command.push_str(&format!("  # at git {revision}"));
    }
    command
}

/// `HEAD`'s short hash, with `+local-changes` for a dirty tree.
pub fn git_revision(root: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|status| !status.is_empty());
    Some(if dirty {
        format!("{head}+local-changes")
    } else {
        head
    })
}

/// Runs the scenarios and returns the sweep's record; the consumers read
/// the sweep's events on their own thread.
pub fn run_sweep(
    lab: &Lab,
    scenarios: Vec<Scenario>,
    qemu: &Path,
    options: &SweepOptions,
    consumers: Vec<Box<dyn SweepConsumer>>,
) -> Result<SweepRecord> {
    let start = Instant::now();
    let sweep_id = artifacts::run_id(SystemTime::now());
    let sweeps = sweeps_root(&lab.target_dir);
    let dir = artifacts::create_run_dir(
        sweeps.parent().context("sweeps root has a parent")?,
        "sweeps",
        &sweep_id,
    )?;
    let (tx, rx) = mpsc::channel::<SweepEvent>();
    let dispatcher = std::thread::spawn(move || {
        let mut consumers = consumers;
        let mut fold = SweepFold::default();
        for event in rx {
            fold.on_event(&event);
            for consumer in &mut consumers {
                consumer.on_event(&event);
            }
        }
        let finished: Result<Vec<()>> = consumers.into_iter().map(|c| c.finish()).collect();
        finished.map(|_| fold.record())
    });
    let scenarios: Vec<Arc<Scenario>> = scenarios.into_iter().map(Arc::new).collect();
    let _ = tx.send(SweepEvent::Started {
        sweep_id,
        dir,
        scenarios: scenarios.clone(),
        jobs: options.jobs,
        rerun_failed: options.rerun_failed.clone(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the sweep's runtime")?;
    let context = Arc::new(SweepContext {
        lab: lab.clone(),
        qemu: qemu.to_owned(),
        options: options.clone(),
        revision: git_revision(&lab.root),
        events: tx.clone(),
    });
    runtime.block_on(sweep_all(context, scenarios));
    runtime.shutdown_background();
    let _ = tx.send(SweepEvent::Finished {
        wall: start.elapsed(),
        interrupted: options.cancel.is_cancelled(),
    });
    drop(tx);
    dispatcher
        .join()
        .map_err(|_| anyhow::anyhow!("a sweep consumer panicked"))?
}

/// What every scenario task shares.
struct SweepContext {
    lab: Lab,
    qemu: PathBuf,
    options: SweepOptions,
    revision: Option<String>,
    events: Sender<SweepEvent>,
}

async fn sweep_all(context: Arc<SweepContext>, scenarios: Vec<Arc<Scenario>>) {
    let cancel = context.options.cancel.clone();
    if context.options.handle_ctrl_c {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        });
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(context.options.jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for scenario in scenarios {
        let context = context.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            sweep_one(&context, scenario).await;
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Runs one scenario's attempts and reports its verdict.
async fn sweep_one(context: &Arc<SweepContext>, scenario: Arc<Scenario>) {
    let cancel = &context.options.cancel;
    let mut verdicts = Vec::new();
    for attempt in 1..=context.options.retries.saturating_add(1) {
        if cancel.is_cancelled() {
            break;
        }
        let job_context = context.clone();
        let job_scenario = scenario.clone();
        let verdict =
            tokio::task::spawn_blocking(move || run_attempt(&job_context, &job_scenario, attempt))
                .await
                .unwrap_or(Verdict::Error);
        verdicts.push(verdict);
        if verdict != Verdict::Failed {
            break;
        }
    }
    if verdicts.is_empty() {
        return;
    }
    let _ = context.events.send(SweepEvent::ScenarioFinished {
        scenario: scenario.name.clone(),
        verdict: sweep_verdict(&verdicts),
        attempts: verdicts.len() as u32,
    });
}

/// One run, its events forwarded into the sweep stream as they come.
fn run_attempt(context: &SweepContext, scenario: &Scenario, attempt: u32) -> Verdict {
    let (tx, rx) = mpsc::channel();
    let sweep_events = context.events.clone();
    let forwarder = std::thread::spawn(move || {
        for event in rx {
            let _ = sweep_events.send(SweepEvent::Run { attempt, event });
        }
    });
    let options = RunOptions {
        offline: context.options.offline,
        rerun: rerun_command(
            &match &context.options.scenario_dir {
                Some(dir) => dir
                    .join(format!("{}.yaml", scenario.name))
                    .display()
                    .to_string(),
                None => scenario.name.clone(),
            },
            context.options.offline,
            context.revision.as_deref(),
        ),
        cancel: context.options.cancel.clone(),
        ..RunOptions::default()
    };
    let verdict = match run_scenario_to(&context.lab, scenario, &context.qemu, &options, tx) {
        Ok(summary) => summary.verdict,
        Err(_) => Verdict::Error,
    };
    let _ = forwarder.join();
    verdict
}
