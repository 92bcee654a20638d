//! The `lab` command line: argument types (clap) and what each subcommand
//! does, returning the process exit code (0 passed, 1 a scenario failed,
//! 2 the lab could not do its job).

use crate::report::html::{RunPageWriter, REPORT_HTML};
use crate::run::display::Display;
use crate::run::events::Verdict;
use crate::run::record::ResultWriter;
use crate::run::{self, Cancel, Lab, RunOptions};
use crate::scenario::{self, Scenario};
use crate::sweep::{self, SweepArgs};
use crate::{bench, debug, doctor, fuzz, images, qemu, replay, report};
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "lab",
    version,
    about = "Builds the hypervisor and runs QEMU scenarios"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the scenarios with their tags and descriptions.
    List,
    /// Build, boot and drive one scenario; exit 0 passed, 1 failed, 2 error.
    #[command(visible_alias = "run")]
    Scenario {
        /// A name in scenarios/, or the path of a scenario file.
        name: String,
        /// Use only cached guest images.
        #[arg(long)]
        offline: bool,
        /// Echo the console as it arrives.
        #[arg(short, long)]
        verbose: bool,
        /// Start QEMU halted with its gdbstub on :1234, steps without
        /// timeouts; prints the gdb-multiarch line.
        #[arg(long, conflicts_with = "record")]
        gdb: bool,
        /// After the steps, or at the first failure, hand the console to
        /// this terminal (Ctrl-] leaves).
        #[arg(long)]
        attach: bool,
        /// Record the run with QEMU's record/replay into <run-dir>/replay/.
        #[arg(long)]
        record: bool,
    },
    /// Run many scenarios, -j at a time; write results.json, junit.xml and
    /// report.html.
    Sweep(SweepArgs),
    /// Trends across sweeps: wall time and boot stages over the last N
    /// sweeps into trends.html; flags what grew beyond its own noise.
    Report {
        /// Sweep directories, or directories of them (target/lab/sweeps).
        #[arg(long = "history", value_name = "DIR", num_args = 1.., required = true)]
        history: Vec<PathBuf>,
        /// The newest this many sweeps.
        #[arg(long, value_name = "N", default_value_t = 20)]
        last: usize,
        /// Where to write the page (default: target/lab/sweeps/trends.html).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Exit 1 when a series grew (default: warn, exit 0).
        #[arg(long)]
        fail_on_slower: bool,
    },
    /// Replay a run recorded with `scenario --record`, instruction for
    /// instruction.
    Replay {
        /// The recorded run's directory (target/lab/runs/<scenario>/<id>).
        run_dir: PathBuf,
        /// Start QEMU halted with its gdbstub on :1234; prints the gdb line.
        #[arg(long)]
        gdb: bool,
        /// Echo the console as it arrives.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Check QEMU, the Rust target, the image cache and free disk space.
    Doctor,
    /// Measure a scenario against its baseline: boot time, network, disk.
    #[command(subcommand)]
    Bench(Bench),
    /// Fetch every guest image the scenarios need into the cache.
    Fetch {
        /// Re-resolve the images and rewrite guest-images/images.lock.
        #[arg(long)]
        update: bool,
        /// Use only the cache (verifies it).
        #[arg(long)]
        offline: bool,
    },
    /// Fuzz the hypervisor's and the lab's parsers and device models with
    /// cargo-fuzz, each target for --time seconds; installs a nightly
    /// toolchain and cargo-fuzz when missing. Exit 1 if a target crashed.
    Fuzz(fuzz::FuzzArgs),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Boot SCENARIO and BASELINE alternately; print medians and their ratio.
    Boot {
        scenario: String,
        baseline: String,
        /// Boots of each.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Run QEMU with `-icount shift=0` (virtual time).
        #[arg(long)]
        icount: bool,
        /// Use only cached guest images; never touch the network.
        #[arg(long)]
        offline: bool,
    },
    /// Ping round-trip time and TCP throughput between two VMs (guest
    /// time), SCENARIO and BASELINE alternately; default multi_vm_net
    /// against multi_vm_net_bare.
    Net(IoArgs),
    /// Sequential read of 64 MiB from a virtio-blk disk (guest time),
    /// SCENARIO and BASELINE alternately; default virtio_blk against
    /// virtio_blk_bare.
    Blk(IoArgs),
    /// What exits cost, as the test guest measures it (`testguest.exits`):
    /// per operation, instructions under `-icount shift=0` and host ns,
    /// SCENARIO beside BASELINE; default testguest_exits against
    /// testguest_exits_bare.
    Exits(IoArgs),
}

#[derive(Debug, clap::Args)]
struct IoArgs {
    /// The scenario to measure (give both or neither).
    #[arg(requires = "baseline")]
    scenario: Option<String>,
    /// The baseline to compare it with.
    baseline: Option<String>,
    /// Runs of each.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Use only cached guest images; never touch the network.
    #[arg(long)]
    offline: bool,
}

impl IoArgs {
    fn exec(self, bench: bench::io::IoBench) -> Result<ExitCode> {
        let lab = Lab::discover()?;
        let qemu = qemu::provision::ensure_qemu()?;
        let [default_scenario, default_baseline] = bench.default_pair();
        let scenario = self.scenario.as_deref().unwrap_or(default_scenario);
        let baseline = self.baseline.as_deref().unwrap_or(default_baseline);
        let how = bench::io::IoBenchOptions {
            runs: self.runs,
            offline: self.offline,
        };
        bench::io::run(&lab, &qemu, bench, [scenario, baseline], how)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Exit code of an infrastructure error.
pub const EXIT_ERROR: u8 = 2;

impl Cli {
    /// Runs the command; errors are printed as `error: ...` and give exit 2.
    pub fn exec(self) -> ExitCode {
        match self.command.exec() {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
}

impl Command {
    fn exec(self) -> Result<ExitCode> {
        match self {
            Command::List => {
                list(&Lab::discover()?.root)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Scenario {
                name,
                offline,
                verbose,
                gdb,
                attach,
                record,
            } => run_one(
                &name,
                &OneRun {
                    offline,
                    verbose,
                    gdb,
                    attach,
                    record,
                },
            ),
            Command::Sweep(args) => sweep::command(&args),
            Command::Report {
                history,
                last,
                out,
                fail_on_slower,
            } => {
                let out = match out {
                    Some(out) => out,
                    None => sweep::sweeps_root(&Lab::discover()?.target_dir)
                        .join(report::trends::TRENDS_HTML),
                };
                let slower = report::trends::report(&history, last, &out)?;
                print!("{slower}");
                println!("trends: {}", out.display());
                if slower.is_empty() || !fail_on_slower {
                    Ok(ExitCode::SUCCESS)
                } else {
                    Ok(ExitCode::from(1))
                }
            }
            Command::Replay {
                run_dir,
                gdb,
                verbose,
            } => replay_one(&run_dir, gdb, verbose),
            Command::Doctor => doctor::run(&Lab::discover()?),
            Command::Fuzz(args) => fuzz::command(&args),
            Command::Bench(Bench::Boot {
                scenario,
                baseline,
                runs,
                icount,
                offline,
            }) => {
                let lab = Lab::discover()?;
                let qemu = qemu::provision::ensure_qemu()?;
                let how = bench::BootBench {
                    runs,
                    icount,
                    offline,
                };
                bench::boot(&lab, &qemu, [&scenario, &baseline], how)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(Bench::Net(args)) => args.exec(bench::io::IoBench::Net),
            Command::Bench(Bench::Blk(args)) => args.exec(bench::io::IoBench::Blk),
            Command::Bench(Bench::Exits(args)) => {
                let lab = Lab::discover()?;
                let qemu = qemu::provision::ensure_qemu()?;
                let [default_scenario, default_baseline] = bench::exits::DEFAULT_PAIR;
                let scenario = args.scenario.as_deref().unwrap_or(default_scenario);
                let baseline = args.baseline.as_deref().unwrap_or(default_baseline);
                let how = bench::exits::ExitsBench {
                    runs: args.runs,
                    offline: args.offline,
                };
                bench::exits::run(&lab, &qemu, [scenario, baseline], how)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Fetch { update, offline } => {
                let lab = Lab::discover()?;
                let options = images::ImageOptions {
                    offline,
                    cache_dir: None,
                };
                let programs = images::initramfs_programs(&lab.root, &lab.target_dir)?;
                images::fetch_command(&lab.root, update, &programs, &options)?;
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

fn list(root: &Path) -> Result<()> {
    let scenarios = scenario::load_all(root)?;
    let tags: Vec<String> = scenarios
        .iter()
        .map(|s| format!("[{}]", s.tags.join(", ")))
        .collect();
    let name_width = scenarios.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let tag_width = tags.iter().map(String::len).max().unwrap_or(0);
    let mut text = String::new();
    for (s, tags) in scenarios.iter().zip(&tags) {
        text += &format!(
            "{:name_width$}  {tags:tag_width$}  {}\n",
            s.name, s.description
        );
    }
    // A closed pipe (`lab list | head`) is not an error worth reporting.
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

/// A scenario name, or a path to a scenario file (test fixtures).
fn load(root: &Path, name: &str) -> Result<Scenario> {
    if name.ends_with(".yaml") || name.contains('/') {
        Ok(Scenario::load(Path::new(name))?)
    } else {
        scenario::load_by_name(root, name)
    }
}

/// How `lab scenario` runs its one scenario.
struct OneRun {
    offline: bool,
    verbose: bool,
    gdb: bool,
    attach: bool,
    record: bool,
}

fn run_one(name: &str, how: &OneRun) -> Result<ExitCode> {
    let lab = Lab::discover()?;
    let scenario = load(&lab.root, name)?;
    let qemu = qemu::provision::ensure_qemu()?;
    if how.attach && !std::io::stdin().is_terminal() {
        anyhow::bail!("--attach needs a terminal on stdin");
    }
    let revision = sweep::git_revision(&lab.root);
    let mut options = RunOptions {
        offline: how.offline,
        rerun: sweep::rerun_command(name, how.offline, revision.as_deref()),
        cancel: interrupt_on_ctrl_c(),
        attach: how.attach,
        ..RunOptions::default()
    };
    let mut consumers: Vec<Box<dyn run::events::Consumer>> = vec![
        Box::new(Display::new(Box::new(std::io::stdout()), how.verbose)),
        Box::new(ResultWriter::default()),
        Box::new(RunPageWriter::new(std::sync::Arc::new(scenario.clone()))),
    ];
    if how.gdb {
        options.qemu_args.extend(debug::gdbstub_args());
        options.no_timeouts = true;
        let elf = debug::symbol_crate(&scenario).map(|k| debug::elf_path(&lab.target_dir, k));
        consumers.push(Box::new(GdbHint(debug::gdb_line(elf.as_deref()))));
    }
    let summary = if how.record {
        let file = if name.ends_with(".yaml") || name.contains('/') {
            PathBuf::from(name)
        } else {
            scenario::scenarios_dir(&lab.root).join(format!("{name}.yaml"))
        };
        let summary = replay::record(&lab, &scenario, &file, &qemu, &options, consumers)?;
        println!(
            "recorded: cargo run -p lab -- replay {}",
            summary.run_dir.display()
        );
        summary
    } else {
        run::run_scenario(&lab, &scenario, &qemu, &options, consumers)?
    };
    println!("page: {}", summary.run_dir.join(REPORT_HTML).display());
    Ok(exit_code(summary.verdict))
}

fn replay_one(run_dir: &Path, gdb: bool, verbose: bool) -> Result<ExitCode> {
    let lab = Lab::discover()?;
    let qemu = qemu::provision::ensure_qemu()?;
    let recording = replay::Replay::open(run_dir)?;
    let mut extra = Vec::new();
    let mut consumers: Vec<Box<dyn run::events::Consumer>> = vec![
        Box::new(Display::new(Box::new(std::io::stdout()), verbose)),
        Box::new(ResultWriter::default()),
    ];
    if gdb {
        extra = debug::gdbstub_args();
        consumers.push(Box::new(GdbHint(debug::gdb_line(
            recording.symbols().as_deref(),
        ))));
    }
    let summary = replay::replay(&lab, run_dir, &qemu, &extra, gdb, consumers)?;
    Ok(exit_code(summary.verdict))
}

fn exit_code(verdict: Verdict) -> ExitCode {
    match verdict {
        Verdict::Passed => ExitCode::SUCCESS,
        Verdict::Failed => ExitCode::from(1),
        Verdict::Error => ExitCode::from(EXIT_ERROR),
    }
}

/// Prints how to attach gdb once QEMU is up and waiting for it.
struct GdbHint(String);

impl run::events::Consumer for GdbHint {
    fn on_event(&mut self, event: &run::events::Event) {
        if let run::events::EventKind::QemuStarted { .. } = event.kind {
            println!("QEMU waits for gdb (no step timeouts): {}", self.0);
        }
    }
}

/// A cancel flag that Ctrl-C sets, so the run stops QEMU and writes its
/// artifacts instead of dying with QEMU left running.
fn interrupt_on_ctrl_c() -> Cancel {
    let cancel = Cancel::default();
    let flag = cancel.clone();
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        else {
            return;
        };
        if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
            flag.cancel();
        }
    });
    cancel
}
