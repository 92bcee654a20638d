//! Scenario files (`scenarios/*.yaml`, schema v1): the closed schema, loading
//! with errors that name `file:line:column` and the field, and the checks that
//! span fields (name = file stem, console names, boot mode and VM count).
//! `scenarios/README.md` documents the schema for authors.

mod de;
mod error;
pub mod net;
mod template;

pub use error::ScenarioError;
pub use net::{Disk, Ipv4Cidr, MacAddr, NetInterface};
pub use template::{expand as expand_template, TemplateVars};

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The only schema version this lab reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The most vCPUs one VM may have: the hypervisor's `MAX_VCPUS`
/// (`hypervisor/src/layout.rs`).
pub const MAX_VCPUS: u32 = 8;

/// How deeply an `expect` pattern may nest groups and repetitions. The
/// regex parser recurses once per level: at its own limit (250) a pattern
/// like `1****...` overflows a 2 MiB thread stack in a debug build, and
/// real patterns nest a few levels.
const PATTERN_NEST_LIMIT: u32 = 32;

/// Compiles an `expect` pattern (after its variables are expanded).
pub fn compile_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .nest_limit(PATTERN_NEST_LIMIT)
        .build()
}

/// Seconds an `expect` or `expect-exit` step waits when it names no timeout.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// One scenario file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Scenario {
    pub schema: u32,
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub machine: Machine,
    #[serde(default)]
    pub boot: BootMode,
    /// Names of the virtual switches VMs' interfaces join.
    #[serde(default)]
    pub switches: Vec<String>,
    #[serde(default)]
    pub vms: Vec<Vm>,
    /// Regexes that fail the pending `expect` as soon as the console prints
    /// them (a guest kernel panic that leaves QEMU running).
    #[serde(default)]
    pub fail_on: Vec<String>,
    pub steps: Vec<Step>,
}

/// The QEMU host machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Machine {
    pub cpus: u32,
    pub memory_mib: u64,
    #[serde(default)]
    pub cpu: CpuModel,
    #[serde(default)]
    pub secure_world: bool,
    /// Command line for the hypervisor (QEMU `-append`), e.g. `hv.debug=panic`.
    #[serde(default)]
    pub hypervisor_args: Option<String>,
}

/// QEMU `-cpu` models the lab supports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuModel {
    /// ARMv8.0 with a GICv3 CPU interface: nothing beyond what the hypervisor switches.
    #[default]
    CortexA72,
    /// Everything QEMU's TCG implements.
    Max,
}

impl CpuModel {
    /// The name QEMU's `-cpu` takes.
    pub fn qemu_name(self) -> &'static str {
        match self {
            CpuModel::CortexA72 => "cortex-a72",
            CpuModel::Max => "max",
        }
    }
}

/// Who boots the guests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootMode {
    /// QEMU boots the hypervisor, which runs the VMs from the boot bundle.
    #[default]
    Hypervisor,
    /// No hypervisor: QEMU boots the single VM's kernel itself (the baseline).
    Direct,
}

/// One virtual machine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Vm {
    pub name: String,
    pub kernel: KernelSource,
    #[serde(default)]
    pub initramfs: bool,
    #[serde(default)]
    pub cmdline: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Network interfaces, `eth0` first; they take the lowest virtio slots.
    #[serde(default)]
    pub net: Vec<NetInterface>,
    /// Disks, after the interfaces in slot order (`/dev/vda` first).
    #[serde(default)]
    pub disks: Vec<Disk>,
}

/// Where a VM's kernel comes from: `{ image: NAME }` or `{ crate: NAME }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// A name in `guest-images/images.yaml`.
    Image(String),
    /// An in-tree bare-metal guest crate the lab builds.
    Crate(String),
}

/// One step of the console script: a map with exactly one of `expect`,
/// `send`, `expect-exit` (see `de.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Wait until the regex (after `{variable}` expansion) matches the console.
    Expect {
        pattern: String,
        timeout_secs: u64,
        console: Option<String>,
    },
    /// Send a line (the lab appends `\n`).
    Send {
        line: String,
        console: Option<String>,
    },
    /// Wait until QEMU exits (the machine powered off) with this status.
    ExpectExit { status: i32, timeout_secs: u64 },
}

impl Step {
    /// The console the step reads or writes, if it names one.
    pub fn console(&self) -> Option<&str> {
        match self {
            Step::Expect { console, .. } | Step::Send { console, .. } => console.as_deref(),
            Step::ExpectExit { .. } => None,
        }
    }
}

impl Scenario {
    /// Parses scenario text; `file` names it in errors and its stem must be
    /// the scenario's `name`.
    pub fn parse(file: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario =
            serde_yaml::from_str(text).map_err(|e| ScenarioError::from_yaml(file, &e))?;
        scenario.check(file, text)?;
        Ok(scenario)
    }

    /// Reads and parses one scenario file.
    pub fn load(file: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(file).map_err(|e| ScenarioError::io(file, &e))?;
        Scenario::parse(file, &text)
    }

    /// The variables `expect` patterns may use: the machine's values, and
    /// the run-time ones declared ([`Scenario::run_variables`]).
    pub fn template_vars(&self) -> TemplateVars {
        TemplateVars::new(self)
    }

    /// The variables whose values the lab computes while preparing a run:
    /// `{<vm>-disk<N>-md5}` for each disk filled from an image.
    pub fn run_variables(&self) -> Vec<String> {
        self.vms
            .iter()
            .flat_map(|vm| {
                vm.disks
                    .iter()
                    .enumerate()
                    .filter(|(_, disk)| disk.image.is_some())
                    .map(|(index, _)| disk_md5_variable(&vm.name, index))
            })
            .collect()
    }

    /// The `expect` pattern of a step with its variables expanded, as far
    /// as they are known before the run: run-time values and the groups
    /// steps capture stand for any non-blank text.
    pub fn expect_regex(&self, pattern: &str) -> Result<Regex, String> {
        let mut vars = self.template_vars();
        for step in &self.steps {
            if let Step::Expect { pattern, .. } = step {
                let probe = template::placeholder_expansion(pattern);
                for name in compile_pattern(&probe)
                    .map(|regex| template::capture_names(&regex))
                    .unwrap_or_default()
                {
                    vars.declare(&name);
                }
            }
        }
        let expanded = template::expand(pattern, &vars)?;
        compile_pattern(&expanded).map_err(|e| e.to_string())
    }

    /// Where step `index` starts: the `index`-th `- ` item under `steps:`
    /// whose line has `key:`; 1:1 if the text is laid out otherwise.
    fn step_location(&self, text: &str, index: usize, key: &str) -> (usize, usize) {
        let Some(start) = text.lines().position(|line| line.starts_with("steps:")) else {
            return (1, 1);
        };
        text.lines()
            .enumerate()
            .skip(start + 1)
            .filter(|(_, line)| line.trim_start().starts_with("- "))
            .nth(index)
            .filter(|(_, line)| line.contains(&format!("{key}:")))
            .map_or((1, 1), |(n, line)| {
                (n + 1, line.len() - line.trim_start().len() + 3)
            })
    }

    /// The MAC of interface `index` of `vm`: as written, else the stable
    /// default ([`net::default_mac`]).
    pub fn mac(&self, vm: &Vm, index: usize) -> MacAddr {
        vm.net
            .get(index)
            .and_then(|interface| interface.mac)
            .unwrap_or_else(|| net::default_mac(&self.name, &vm.name, index))
    }

    /// Whether the last step waits for QEMU to exit.
    pub fn expects_exit(&self) -> bool {
        matches!(self.steps.last(), Some(Step::ExpectExit { .. }))
    }

    /// The checks serde cannot make: they relate fields to each other or to
    /// the file name. Each error points at the offending text.
    fn check(&self, file: &Path, text: &str) -> Result<(), ScenarioError> {
        let at = |key: &str, value: &str, field: &str, message: String| {
            let (line, column) = error::locate(text, key, value);
            Err(ScenarioError::at(file, line, column, field, message))
        };
        if self.schema != SCHEMA_VERSION {
            return at(
                "schema",
                &self.schema.to_string(),
                "schema",
                format!(
                    "schema version {} is not supported (this lab reads {SCHEMA_VERSION})",
                    self.schema
                ),
            );
        }
        let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if self.name != stem {
            return at(
                "name",
                &self.name,
                "name",
                format!("`{}` must equal the file stem `{stem}`", self.name),
            );
        }
        if self.machine.cpus == 0 || self.machine.memory_mib == 0 {
            return at(
                "machine",
                "",
                "machine",
                "cpus and memory-mib must be at least 1".into(),
            );
        }
        for (i, vm) in self.vms.iter().enumerate() {
            // Names go into file names (console logs, device trees) and the
            // hypervisor's manifest, which takes the same set.
            if !is_vm_name(&vm.name) {
                return at(
                    "name",
                    &vm.name,
                    &format!("vms[{i}].name"),
                    format!(
                        "`{}` must be 1 to {MAX_VM_NAME} letters, digits, '-' or '_'",
                        vm.name
                    ),
                );
            }
            if self.vms[..i].iter().any(|other| other.name == vm.name) {
                return at(
                    "name",
                    &vm.name,
                    &format!("vms[{i}].name"),
                    format!("duplicate VM name `{}`", vm.name),
                );
            }
            // Under the hypervisor a VM may have more vCPUs than CPUs (they
            // are time-sliced); a direct boot is QEMU's `-smp` itself.
            let (max_vcpus, limit) = match self.boot {
                BootMode::Hypervisor => (MAX_VCPUS, "the hypervisor's limit"),
                BootMode::Direct => (self.machine.cpus, "machine.cpus"),
            };
            if vm.vcpus == 0 || vm.vcpus > max_vcpus {
                return at(
                    "vcpus",
                    &vm.vcpus.to_string(),
                    &format!("vms[{i}].vcpus"),
                    format!("must be between 1 and {limit} ({max_vcpus})"),
                );
            }
            if vm.memory_mib == 0 || vm.memory_mib > self.machine.memory_mib {
                return at(
                    "memory-mib",
                    &vm.memory_mib.to_string(),
                    &format!("vms[{i}].memory-mib"),
                    format!(
                        "must be between 1 and machine.memory-mib ({})",
                        self.machine.memory_mib
                    ),
                );
            }
        }
        if self.boot == BootMode::Hypervisor {
            // The hypervisor maps guest RAM with 2 MiB blocks.
            if let Some((i, vm)) = self
                .vms
                .iter()
                .enumerate()
                .find(|(_, vm)| vm.memory_mib % 2 != 0)
            {
                return at(
                    "memory-mib",
                    &vm.memory_mib.to_string(),
                    &format!("vms[{i}].memory-mib"),
                    "must be a multiple of 2 under the hypervisor".into(),
                );
            }
        }
        if self.boot == BootMode::Hypervisor && self.vms.len() > self.machine.cpus as usize {
            let (i, vm) = (
                self.machine.cpus as usize,
                &self.vms[self.machine.cpus as usize],
            );
            return at(
                "name",
                &vm.name,
                &format!("vms[{i}]"),
                format!(
                    "{} VMs need at least {} CPUs: the hypervisor gives each VM its own (machine.cpus is {})",
                    self.vms.len(),
                    self.vms.len(),
                    self.machine.cpus
                ),
            );
        }
        if self.boot == BootMode::Direct && self.vms.is_empty() {
            return at(
                "boot",
                "direct",
                "boot",
                "`boot: direct` boots at least one VM, this scenario has none".into(),
            );
        }
        // Several direct VMs are several QEMU processes: each step names
        // the one it reads or writes, and none of them waits for "the" exit.
        if self.boot == BootMode::Direct && self.vms.len() > 1 {
            for (i, step) in self.steps.iter().enumerate() {
                let message = match step {
                    Step::ExpectExit { .. } => {
                        "`expect-exit` needs one QEMU process; `boot: direct` with several VMs runs one per VM"
                    }
                    _ if step.console().is_none() => {
                        "with several VMs under `boot: direct` (one QEMU process each) every step names its `console`"
                    }
                    _ => continue,
                };
                let key = match step {
                    Step::Expect { .. } => "expect",
                    Step::Send { .. } => "send",
                    Step::ExpectExit { .. } => "expect-exit",
                };
                let (line, column) = self.step_location(text, i, key);
                return Err(ScenarioError::at(
                    file,
                    line,
                    column,
                    &format!("steps[{i}]"),
                    message.into(),
                ));
            }
        }
        net::check(self, file, text)?;
        // Each expect may name the groups captured by the expects before it.
        let mut vars = self.template_vars();
        for (i, pattern) in self.fail_on.iter().enumerate() {
            if let Err(message) = self.expect_regex(pattern) {
                let (line, column) = error::locate_value(text, pattern);
                return Err(ScenarioError::at(
                    file,
                    line,
                    column,
                    &format!("fail-on[{i}]"),
                    message,
                ));
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            if let Some(console) = step.console() {
                if !self.vms.iter().any(|vm| vm.name == console) {
                    return at(
                        "console",
                        console,
                        &format!("steps[{i}].console"),
                        format!("no VM named `{console}` in `vms`"),
                    );
                }
            }
            if let Step::Expect { pattern, .. } = step {
                let field = format!("steps[{i}].expect");
                let regex = match template::expand(pattern, &vars)
                    .and_then(|expanded| compile_pattern(&expanded).map_err(|e| e.to_string()))
                {
                    Ok(regex) => regex,
                    Err(message) => return at("expect", pattern, &field, message),
                };
                for name in template::capture_names(&regex) {
                    if self.template_vars().contains(&name) {
                        return at(
                            "expect",
                            pattern,
                            &field,
                            format!("the group `{name}` would hide the variable `{{{name}}}`"),
                        );
                    }
                    vars.declare(&name);
                }
            }
            if matches!(step, Step::ExpectExit { .. }) && i + 1 != self.steps.len() {
                return at(
                    "expect-exit",
                    "",
                    &format!("steps[{i}]"),
                    "`expect-exit` must be the last step".into(),
                );
            }
        }
        Ok(())
    }
}

/// The variable holding the md5 of disk `index` of `vm` as the guest reads
/// it whole (`md5sum /dev/vdX`): the image, then zeros up to the disk size.
pub fn disk_md5_variable(vm: &str, index: usize) -> String {
    format!("{vm}-disk{index}-md5")
}

/// The longest VM name: it is a console tag on every line the VM prints.
const MAX_VM_NAME: usize = 32;

/// Whether `name` can name a VM: safe in a file name, a console tag and
/// the hypervisor's manifest.
fn is_vm_name(name: &str) -> bool {
    (1..=MAX_VM_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Every `scenarios/*.yaml` file of a workspace, sorted by name.
pub fn scenario_files(workspace_root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    let dir = scenarios_dir(workspace_root);
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "yaml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every scenario of a workspace; the first bad file is the error.
pub fn load_all(workspace_root: &Path) -> anyhow::Result<Vec<Scenario>> {
    scenario_files(workspace_root)?
        .iter()
        .map(|file| Scenario::load(file).map_err(anyhow::Error::from))
        .collect()
}

/// Loads the scenario `name` from `scenarios/NAME.yaml`.
pub fn load_by_name(workspace_root: &Path, name: &str) -> anyhow::Result<Scenario> {
    let file = scenarios_dir(workspace_root).join(format!("{name}.yaml"));
    if !file.is_file() {
        let known: Vec<String> = scenario_files(workspace_root)?
            .iter()
            .filter_map(|f| f.file_stem()?.to_str().map(str::to_owned))
            .collect();
        anyhow::bail!(
            "no scenario `{name}`: {} does not exist (known: {})",
            file.display(),
            known.join(", ")
        );
    }
    Ok(Scenario::load(&file)?)
}

/// `scenarios/` of a workspace.
pub fn scenarios_dir(workspace_root: &Path) -> PathBuf {
    workspace_root.join("scenarios")
}

#[cfg(test)]
mod tests;
