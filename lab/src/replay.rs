//! Deterministic record/replay of a run with QEMU's own record/replay
//! (docs/system/replay.rst): `--record` runs QEMU with
//! `-icount shift=auto,rr=record,rrfile=...` (record/replay needs icount:
//! the log places every non-deterministic event, console input and clock
//! reads included, at an instruction count), and keeps in the run directory
//! everything a replay needs, under `replay/`:
//!
//! - `replay.bin`: QEMU's event log;
//! - the exact files QEMU booted (the hypervisor image and boot bundle, or
//!   the guest kernel and initramfs), copied, since `target/` is rebuilt;
//! - `<crate>.elf`: the symbols of what QEMU booted (for `replay --gdb`);
//! - `<scenario>.yaml`: the scenario file as it was;
//! - `recording.json`: which file is `-kernel` and which the initrd (the
//!   hypervisor's bundle, passed by fw_cfg).
//!
//! While recording, the recorder takes console input without flow
//! control, so the lab types each `send` echo-paced (`run::typing`).
//!
//! `lab replay <run-dir>` runs the same scenario from those files with
//! `rr=replay`: QEMU executes the same instructions and prints the same
//! console, whatever the host does meanwhile; console input comes from the
//! log, not from the lab. A replay runs slower than the recording did (see
//! [`REPLAY_TIMEOUT_FACTOR`]). Our scenarios have no block devices or
//! network backends, so no `blkreplay` or `filter-replay` is needed. QEMU
//! (10.0) refuses record/replay on a machine with more than one CPU.

use crate::debug;
use crate::qemu::cmdline::machine_shape;
use crate::qemu::{BootFiles, LabeledPath};
use crate::run::events::{Consumer, Emitter};
use crate::run::{boot, run_scenario, Lab, RunOptions, RunSummary};
use crate::scenario::Scenario;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The run directory's subdirectory with the recording.
pub const REPLAY_DIR: &str = "replay";
/// QEMU's event log.
pub const REPLAY_LOG: &str = "replay.bin";
/// What QEMU booted, by file name in [`REPLAY_DIR`].
pub const RECORDING_JSON: &str = "recording.json";

/// How many times its timeouts a replay's steps wait. A replay lives
/// through the recording's idle time again, in real time, and where input
/// arrived it first waits for the guest's next timer deadline (QEMU warps
/// an idle machine's clock only after that long), so it runs slower than
/// the recording did. Its outcome is the recording's either way; the
/// timeouts only catch a replay that is stuck.
pub const REPLAY_TIMEOUT_FACTOR: u64 = 5;

/// `recording.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Recording {
    pub scenario: String,
    pub kernel: StagedFile,
    pub initrd: Option<StagedFile>,
    /// A directly booted raw kernel's load address (see `BootFiles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_load: Option<u64>,
    /// The ELF with the symbols of what QEMU booted, for `replay --gdb`.
    pub symbols: Option<String>,
    /// QEMU arguments of the recorded run besides record/replay's own.
    pub qemu_args: Vec<String>,
}

/// A booted file: its label (as command lines show it) and its file name
/// in the recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StagedFile {
    pub label: String,
    pub file: String,
}

/// QEMU arguments that record into (`record`) or replay from `log`.
pub fn icount_args(log: &Path, record: bool) -> Result<Vec<String>> {
    let path = log.to_str().context("replay log path is not UTF-8")?;
    if path.contains(',') {
        bail!("QEMU cannot take a replay log path with a comma: {path}");
    }
    let mode = if record { "record" } else { "replay" };
    Ok(vec![
        "-icount".into(),
        format!("shift=auto,rr={mode},rrfile={path}"),
    ])
}

/// A file name for a label (`linux-cloud/kernel` → `linux-cloud_kernel`).
fn file_name(label: &str) -> String {
    label.replace(['/', ' '], "_")
}

/// Copies `file` into `dir` unless it is there already.
fn stage(dir: &Path, file: &LabeledPath) -> Result<StagedFile> {
    let name = file_name(&file.label);
    let target = dir.join(&name);
    if file.path != target {
        std::fs::copy(&file.path, &target)
            .with_context(|| format!("copying {} to {}", file.path.display(), target.display()))?;
    }
    Ok(StagedFile {
        label: file.label.clone(),
        file: name,
    })
}

/// QEMU records only single-CPU machines; say so before building anything.
pub fn check_recordable(scenario: &Scenario) -> Result<()> {
    if scenario
        .vms
        .iter()
        .any(|vm| !vm.disks.is_empty() || !vm.net.is_empty())
    {
        anyhow::bail!(
            "{}: the lab records one QEMU process without disks or network interfaces only",
            scenario.name
        );
    }
    let (cpus, _) = machine_shape(scenario);
    if cpus > 1 {
        anyhow::bail!(
            "{}: QEMU records and replays only single-CPU machines, and this one has {cpus} CPUs",
            scenario.name
        );
    }
    Ok(())
}

/// Runs `scenario` (from `scenario_file`) under QEMU's recorder. The
/// recording ends up in `<run-dir>/replay/`.
pub fn record(
    lab: &Lab,
    scenario: &Scenario,
    scenario_file: &Path,
    qemu: &Path,
    options: &RunOptions,
    consumers: Vec<Box<dyn Consumer>>,
) -> Result<RunSummary> {
    check_recordable(scenario)?;
    let work = lab.target_dir.join("lab");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let staging = tempfile::Builder::new()
        .prefix("recording-")
        .tempdir_in(&work)
        .context("creating the recording's staging directory")?;
    let dir = staging.path();
    // Preparation events (build, fetch) of the staging step go nowhere:
    // the run itself reports what it boots.
    let (tx, _rx) = std::sync::mpsc::channel();
    let files = match &options.boot_files {
        Some(files) => files.clone(),
        None => boot::resolve(
            lab,
            scenario,
            options.offline,
            dir,
            &Emitter::new(tx, &scenario.name),
        )?
        .files
        .into_iter()
        .next()
        .context("a recordable scenario boots one QEMU process")?,
    };
    let recording = Recording {
        scenario: scenario.name.clone(),
        kernel: stage(dir, &files.kernel)?,
        initrd: files.initrd.as_ref().map(|f| stage(dir, f)).transpose()?,
        raw_load: files.raw_load,
        symbols: debug::symbol_crate(scenario)
            .map(|krate| {
                LabeledPath::new(
                    format!("{krate}.elf"),
                    debug::elf_path(&lab.target_dir, krate),
                )
            })
            .filter(|elf| elf.path.is_file())
            .map(|elf| stage(dir, &elf).map(|staged| staged.file))
            .transpose()?,
        qemu_args: options.qemu_args.clone(),
    };
    let mut run_options = options.clone();
    // SIGTERM, not SIGKILL, at the end: QEMU writes the log's header last.
    run_options.graceful_stop = true;
    // The recorder reads console input without flow control.
    run_options.echo_paced = true;
    run_options.boot_files = Some(staged_files(dir, &recording));
    run_options
        .qemu_args
        .extend(icount_args(&dir.join(REPLAY_LOG), true)?);
    let summary = run_scenario(lab, scenario, qemu, &run_options, consumers)?;

    let keep = summary.run_dir.join(REPLAY_DIR);
    std::fs::create_dir_all(&keep).with_context(|| format!("creating {}", keep.display()))?;
    // Everything staged: the log, the booted files, the bundle's trees.
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let from = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let name = from.file_name().context("a directory entry has a name")?;
        std::fs::rename(&from, keep.join(name))
            .with_context(|| format!("moving {} into {}", from.display(), keep.display()))?;
    }
    std::fs::copy(scenario_file, keep.join(format!("{}.yaml", scenario.name)))
        .with_context(|| format!("copying {}", scenario_file.display()))?;
    let mut json = serde_json::to_vec_pretty(&recording)?;
    json.push(b'\n');
    std::fs::write(keep.join(RECORDING_JSON), json)
        .with_context(|| format!("writing {}", keep.display()))?;
    Ok(summary)
}

fn staged_files(dir: &Path, recording: &Recording) -> BootFiles {
    let labeled = |f: &StagedFile| LabeledPath::new(f.label.clone(), dir.join(&f.file));
    BootFiles {
        kernel: labeled(&recording.kernel),
        raw_load: recording.raw_load,
        initrd: recording.initrd.as_ref().map(labeled),
        disks: Vec::new(),
        net: Vec::new(),
        firmware: None,
    }
}

/// A recorded run, ready to replay.
#[derive(Debug, Clone)]
pub struct Replay {
    pub scenario: Scenario,
    pub recording: Recording,
    /// `<run-dir>/replay`.
    pub dir: PathBuf,
}

impl Replay {
    /// The recorded ELF with symbols, if any.
    pub fn symbols(&self) -> Option<PathBuf> {
        self.recording.symbols.as_ref().map(|f| self.dir.join(f))
    }
}

impl Replay {
    /// Reads the recording of `run_dir`. A link to it (a scenario's
    /// `latest`) is resolved first: the replay is a new run of the same
    /// scenario, which points `latest` at itself.
    pub fn open(run_dir: &Path) -> Result<Replay> {
        let run_dir = run_dir
            .canonicalize()
            .with_context(|| format!("{} is not a run directory", run_dir.display()))?;
        let dir = run_dir.join(REPLAY_DIR);
        let json_path = dir.join(RECORDING_JSON);
        let json = std::fs::read(&json_path).with_context(|| {
            format!(
                "{} has no recording (was it run with --record?)",
                run_dir.display()
            )
        })?;
        let recording: Recording = serde_json::from_slice(&json)
            .with_context(|| format!("parsing {}", json_path.display()))?;
        let scenario = Scenario::load(&dir.join(format!("{}.yaml", recording.scenario)))?;
        Ok(Replay {
            scenario,
            recording,
            dir,
        })
    }

    /// The run options that replay it (`extra_args`: e.g. the gdbstub;
    /// `no_timeouts` for a debugger).
    pub fn options(
        &self,
        rerun: String,
        extra_args: &[String],
        no_timeouts: bool,
    ) -> Result<RunOptions> {
        let mut qemu_args = self.recording.qemu_args.clone();
        qemu_args.extend(icount_args(&self.dir.join(REPLAY_LOG), false)?);
        qemu_args.extend_from_slice(extra_args);
        Ok(RunOptions {
            offline: true,
            rerun,
            boot_files: Some(staged_files(&self.dir, &self.recording)),
            qemu_args,
            no_timeouts,
            timeout_factor: Some(REPLAY_TIMEOUT_FACTOR),
            ..RunOptions::default()
        })
    }
}

/// Replays the recording in `run_dir` as a new run of its scenario.
pub fn replay(
    lab: &Lab,
    run_dir: &Path,
    qemu: &Path,
    extra_args: &[String],
    no_timeouts: bool,
    consumers: Vec<Box<dyn Consumer>>,
) -> Result<RunSummary> {
    let replay = Replay::open(run_dir)?;
    let recorded = replay.dir.parent().unwrap_or(run_dir);
    let rerun = format!("cargo run -p lab -- replay {}", recorded.display());
    let options = replay.options(rerun, extra_args, no_timeouts)?;
    run_scenario(lab, &replay.scenario, qemu, &options, consumers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_single_cpu_machines_record() {
        let load = |name: &str| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            crate::scenario::load_by_name(&root, name).unwrap()
        };
        assert!(check_recordable(&load("linux_single")).is_ok());
        assert!(check_recordable(&load("linux_bare")).is_ok());
        let err = check_recordable(&load("linux_smp")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "linux_smp: QEMU records and replays only single-CPU machines, and this one has 4 CPUs"
        );
    }

    #[test]
    fn icount_arguments() {
        assert_eq!(
            icount_args(Path::new("/r/replay.bin"), true).unwrap(),
            ["-icount", "shift=auto,rr=record,rrfile=/r/replay.bin"]
        );
        assert_eq!(
            icount_args(Path::new("/r/replay.bin"), false).unwrap(),
            ["-icount", "shift=auto,rr=replay,rrfile=/r/replay.bin"]
        );
        assert!(icount_args(Path::new("/a,b/replay.bin"), true).is_err());
    }

    #[test]
    fn a_link_to_the_recorded_run_is_resolved_when_opened() {
        let root = tempfile::tempdir().unwrap();
        let recorded = root.path().join("1");
        let dir = recorded.join(REPLAY_DIR);
        std::fs::create_dir_all(&dir).unwrap();
        let scenarios = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        std::fs::copy(
            scenarios.join("testguest_bare.yaml"),
            dir.join("testguest_bare.yaml"),
        )
        .unwrap();
        let recording = Recording {
            scenario: "testguest_bare".into(),
            kernel: StagedFile {
                label: "testguest".into(),
                file: "testguest.bin".into(),
            },
            initrd: None,
            raw_load: None,
            symbols: None,
            qemu_args: Vec::new(),
        };
        std::fs::write(
            dir.join(RECORDING_JSON),
            serde_json::to_vec(&recording).unwrap(),
        )
        .unwrap();
        let latest = root.path().join("latest");
        std::os::unix::fs::symlink("1", &latest).unwrap();

        let replay = Replay::open(&latest).unwrap();
        // The replay's own run directory takes `latest` over.
        std::fs::remove_file(&latest).unwrap();
        std::os::unix::fs::symlink("2", &latest).unwrap();
        let recorded = recorded.canonicalize().unwrap();
        assert_eq!(replay.dir, recorded.join(REPLAY_DIR));
        let options = replay.options(String::new(), &[], false).unwrap();
        let files = options.boot_files.unwrap();
        assert_eq!(
            files.kernel.path,
            recorded.join(REPLAY_DIR).join("testguest.bin")
        );
        let rrfile = format!(
            "rrfile={}",
            recorded.join(REPLAY_DIR).join(REPLAY_LOG).display()
        );
        assert!(
            options.qemu_args.iter().any(|a| a.ends_with(&rrfile)),
            "{:?}",
            options.qemu_args
        );
        assert!(Replay::open(&root.path().join("none")).is_err());
    }

    #[test]
    fn labels_become_file_names() {
        assert_eq!(file_name("linux-cloud/kernel"), "linux-cloud_kernel");
        assert_eq!(file_name("hypervisor.bin"), "hypervisor.bin");
    }
}
