//! The `lab` command line: argument types (clap) and what each subcommand
//! does, returning the process exit code (0 passed, 1 a scenario failed,
//! 2 the lab could not do its job).

use crate::run::display::Display;
use crate::run::events::Verdict;
use crate::run::record::ResultWriter;
use crate::run::{self, Cancel, Lab, RunOptions};
use crate::scenario::{self, Scenario};
use crate::{bench, doctor, images, qemu};
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::Path;
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
    },
    /// Check QEMU, the Rust target, the image cache and free disk space.
    Doctor,
    /// Measure boot-to-sentinel of a scenario against a baseline.
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
    },
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
            } => run_one(&name, offline, verbose),
            Command::Doctor => doctor::run(&Lab::discover()?),
            Command::Bench(Bench::Boot {
                scenario,
                baseline,
                runs,
                icount,
            }) => {
                let lab = Lab::discover()?;
                let qemu = qemu::provision::ensure_qemu()?;
                bench::boot(&lab, &qemu, [&scenario, &baseline], runs, icount)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Fetch { update, offline } => {
                let lab = Lab::discover()?;
                let options = images::ImageOptions {
                    offline,
                    cache_dir: None,
                };
                images::fetch_command(&lab.root, update, &options)?;
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

fn run_one(name: &str, offline: bool, verbose: bool) -> Result<ExitCode> {
    let lab = Lab::discover()?;
    let scenario = load(&lab.root, name)?;
    let qemu = qemu::provision::ensure_qemu()?;
    let mut rerun = format!("cargo run -p lab -- scenario {name}");
    if offline {
        rerun.push_str(" --offline");
    }
    let options = RunOptions {
        offline,
        rerun,
        cancel: interrupt_on_ctrl_c(),
        boot_files: None,
        qemu_args: Vec::new(),
    };
    let consumers: Vec<Box<dyn run::events::Consumer>> = vec![
        Box::new(Display::new(Box::new(std::io::stdout()), verbose)),
        Box::new(ResultWriter::default()),
    ];
    let summary = run::run_scenario(&lab, &scenario, &qemu, &options, consumers)?;
    Ok(match summary.verdict {
        Verdict::Passed => ExitCode::SUCCESS,
        Verdict::Failed => ExitCode::from(1),
        Verdict::Error => ExitCode::from(EXIT_ERROR),
    })
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
