//! Running one scenario: prepare what QEMU boots, start QEMU, drive the
//! steps, stop QEMU, leave the artifacts. Everything the run has to say
//! goes out as [`events::Event`]s on a channel; the consumers (display,
//! `result.json`) run on their own thread and read the same stream.

pub mod artifacts;
mod attach;
pub mod boot;
pub(crate) mod console;
pub mod display;
pub mod events;
mod qemu_process;
pub mod record;
mod steps;
pub(crate) mod topology;
mod typing;

use crate::build;
use crate::qemu::BootFiles;
use crate::scenario::{BootMode, Scenario};
use anyhow::{Context, Result};
use events::{Consumer, Emitter, Event, EventKind, ExitReason, QemuStatus, StepFailure, Verdict};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::SystemTime;

/// The machine's own console: every line of a direct boot, and under the
/// hypervisor its own lines (untagged), which no guest can print.
pub const MACHINE_CONSOLE: &str = "serial";

/// The VMs whose console lines the hypervisor tags `[<vm>] `: all of
/// them, also a single one, so the lab never mistakes a guest's line for
/// the hypervisor's.
pub fn tagged_vms(scenario: &Scenario) -> Vec<String> {
    if scenario.boot == BootMode::Hypervisor {
        scenario.vms.iter().map(|vm| vm.name.clone()).collect()
    } else {
        Vec::new()
    }
}

/// Where the lab works: the workspace and cargo's target directory.
#[derive(Debug, Clone)]
pub struct Lab {
    pub root: PathBuf,
    pub target_dir: PathBuf,
}

impl Lab {
    /// The workspace around the working directory (a directory with
    /// `Cargo.toml` and `scenarios/`), else the one this lab was built in.
    pub fn discover() -> Result<Lab> {
        let cwd = std::env::current_dir().context("reading the working directory")?;
        let root = cwd
            .ancestors()
            .find(|dir| dir.join("Cargo.toml").is_file() && dir.join("scenarios").is_dir())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        let target_dir = build::target_dir(&root)?;
        Ok(Lab { root, target_dir })
    }
}

/// Set once to stop a run (Ctrl-C); the run notices within 100 ms.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// How to run a scenario. `..RunOptions::default()` keeps callers working
/// when options are added.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Use only the image cache.
    pub offline: bool,
    /// The command that reproduces this run, shown on failure.
    pub rerun: String,
    pub cancel: Cancel,
    /// Boot these files instead of building and preparing them (replays of
    /// a recorded run, tests that need a guest which misbehaves).
    pub boot_files: Option<BootFiles>,
    /// Appended to the QEMU command line (`-icount shift=0` for benches).
    pub qemu_args: Vec<String>,
    /// Steps wait without timeouts (`--gdb`).
    pub no_timeouts: bool,
    /// Steps wait this many times their timeouts (replays).
    pub timeout_factor: Option<u64>,
    /// After the steps, or at the first failure, hand the console to the
    /// terminal (`--attach`).
    pub attach: bool,
    /// End QEMU with SIGTERM first, so it can finish its files (`--record`).
    pub graceful_stop: bool,
    /// Type each `send` in pieces, each once the console echoed the one
    /// before (`--record`: QEMU's recorder takes console input without flow
    /// control).
    pub echo_paced: bool,
}

/// What a finished run reports to its caller.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub verdict: Verdict,
    pub run_dir: PathBuf,
}

/// Runs a scenario with the given consumers of its events, which run on
/// their own thread. An error means the lab could not run it (exit 2); the
/// consumers have then still seen a `RunFinished` with `Verdict::Error`.
pub fn run_scenario(
    lab: &Lab,
    scenario: &Scenario,
    qemu: &Path,
    options: &RunOptions,
    consumers: Vec<Box<dyn Consumer>>,
) -> Result<RunSummary> {
    let (tx, rx) = mpsc::channel();
    let dispatcher = std::thread::spawn(move || {
        let mut consumers = consumers;
        for event in rx {
            for consumer in &mut consumers {
                consumer.on_event(&event);
            }
        }
        consumers
            .into_iter()
            .map(|c| c.finish())
            .collect::<Result<Vec<()>>>()
    });
    let summary = run_scenario_to(lab, scenario, qemu, options, tx);
    let consumed = dispatcher
        .join()
        .map_err(|_| anyhow::anyhow!("an event consumer panicked"))?;
    let summary = summary?;
    consumed?;
    Ok(summary)
}

/// Runs a scenario, sending its events to `events` (a sweep sends many runs
/// into one stream; events name their scenario).
pub fn run_scenario_to(
    lab: &Lab,
    scenario: &Scenario,
    qemu: &Path,
    options: &RunOptions,
    events: Sender<Event>,
) -> Result<RunSummary> {
    let run_id = artifacts::run_id(SystemTime::now());
    let run_dir = artifacts::create_run_dir(
        &artifacts::runs_root(&lab.target_dir),
        &scenario.name,
        &run_id,
    )?;
    let emitter = Emitter::new(events, &scenario.name);
    emitter.emit(EventKind::RunStarted {
        run_id,
        run_dir: run_dir.clone(),
        steps: scenario.steps.iter().map(steps::describe).collect(),
        rerun: options.rerun.clone(),
    });
    let outcome = prepare_and_drive(lab, scenario, qemu, options, &run_dir, &emitter);
    let (verdict, reason) = match &outcome {
        Ok(ExitReason::StepsPassed) => (Verdict::Passed, ExitReason::StepsPassed),
        Ok(reason) => (Verdict::Failed, reason.clone()),
        Err(e) => (
            Verdict::Error,
            ExitReason::Error {
                message: format!("{e:#}"),
            },
        ),
    };
    emitter.emit(EventKind::RunFinished {
        verdict,
        reason,
        duration: emitter.elapsed(),
    });
    outcome?;
    Ok(RunSummary { verdict, run_dir })
}

fn prepare_and_drive(
    lab: &Lab,
    scenario: &Scenario,
    qemu: &Path,
    options: &RunOptions,
    run_dir: &Path,
    emitter: &Emitter,
) -> Result<ExitReason> {
    let prepared = match &options.boot_files {
        Some(files) => boot::Prepared {
            files: vec![files.clone()],
            run_values: Vec::new(),
        },
        None => boot::resolve(lab, scenario, options.offline, run_dir, emitter)?,
    };
    let mut script = steps::compile(scenario, &prepared.run_values)?;
    if let Some(factor) = options.timeout_factor {
        script = script.timeouts_times(factor);
    }
    if options.no_timeouts {
        script = script.without_timeouts();
    }
    script.echo_paced = options.echo_paced;
    script.machine_consoles = topology::machine_consoles(scenario);
    let tagged = tagged_vms(scenario);
    let start = topology::Start {
        qemu,
        scenario,
        extra_args: &options.qemu_args,
        run_dir,
        tagged: &tagged,
        emitter,
    };
    let mut machines = topology::spawn_all(&start, &prepared.files)?;
    let reason = steps::run_all(&mut machines, &script, &options.cancel, emitter);
    if options.attach {
        if let Some(first) = machines.first_mut() {
            first.attach();
        }
    }
    for qemu in machines {
        let status = if options.graceful_stop {
            qemu.stop_gracefully()
        } else {
            qemu.stop()
        };
        emitter.emit(EventKind::QemuStopped { status });
    }
    if let Some(message) = qemu_start_failure(&reason, run_dir, &script.machine_consoles) {
        anyhow::bail!("QEMU could not start: {message}");
    }
    Ok(reason)
}

/// QEMU's own complaint, when a step failed because QEMU exited with an
/// error before the machine ran (not enough host memory, a missing
/// firmware file): its console then starts with `qemu-system-aarch64: `.
/// That is the lab failing to run the scenario (exit 2), not the scenario
/// failing.
fn qemu_start_failure(reason: &ExitReason, run_dir: &Path, consoles: &[String]) -> Option<String> {
    let ExitReason::StepFailed {
        failure:
            StepFailure::QemuExited {
                status: QemuStatus::Exited { code },
            },
        ..
    } = reason
    else {
        return None;
    };
    if *code == 0 {
        return None;
    }
    let prefix = format!("{}: ", crate::qemu::cmdline::QEMU_BINARY);
    (0..consoles.len()).find_map(|index| {
        let log = run_dir.join(topology::console_log_name(consoles, index));
        let text = std::fs::read_to_string(log).ok()?;
        let first = text.lines().map(str::trim).find(|line| !line.is_empty())?;
        first.starts_with(&prefix).then(|| first.to_owned())
    })
}
