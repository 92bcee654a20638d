//! The steps of a scenario against a running QEMU: each `expect`, `send`
//! and `expect-exit` with its timeout, reported as step events. An
//! `expect`'s pattern is expanded when the step runs, with the values the
//! lab computed for the run and the groups earlier steps captured.

use super::console::EVERY_CONSOLE;
use super::events::{Emitter, EventKind, ExitReason, QemuStatus, StepFailure};
use super::qemu_process::{QemuProcess, WaitEnd};
use super::Cancel;
use crate::scenario::{expand_template, Scenario, Step, TemplateVars};
use anyhow::{bail, Result};
use regex::Regex;
use std::time::{Duration, Instant};

/// A step ready to run.
#[derive(Debug, Clone)]
pub enum Action {
    /// `pattern` as written (its `{variables}` expand when the step runs).
    /// `console` is set when the hypervisor tags its VMs' lines: the VM's
    /// console the step names, or [`EVERY_CONSOLE`] (each with its own
    /// text and cursor); else the step reads the process's whole stream.
    /// `machine` is the QEMU process (one per VM of a direct boot, else 0).
    Expect {
        pattern: String,
        timeout_secs: u64,
        console: Option<String>,
        machine: usize,
    },
    /// `focus` is the VM index to give the input to first, when several
    /// VMs share the console.
    Send {
        line: String,
        focus: Option<usize>,
        machine: usize,
    },
    ExpectExit {
        status: i32,
        timeout_secs: u64,
    },
}

/// A scenario's steps ready to run, with its `fail-on` patterns.
#[derive(Debug, Clone)]
pub struct Script {
    pub actions: Vec<Action>,
    pub fail_on: Vec<Regex>,
    /// The VMs with consoles of their own, in the order the input focus
    /// numbers them (none when one console carries everything).
    pub tagged: Vec<String>,
    /// Type each `send` in pieces, each after the focused console echoed
    /// the one before ([`super::typing`]).
    pub echo_paced: bool,
    /// The variables `expect` patterns start with: the machine's, and the
    /// values the lab computed for this run.
    pub vars: TemplateVars,
    /// The console of each QEMU process's own lines, in process order.
    pub machine_consoles: Vec<String>,
}

/// The timeout of every wait under `--gdb`: a debugger may hold the
/// machine as long as it likes (a century still fits an `Instant`).
pub const NO_TIMEOUT_SECS: u64 = 100 * 365 * 24 * 3600;

impl Script {
    /// The same steps without timeouts.
    pub fn without_timeouts(self) -> Script {
        self.map_timeouts(|_| NO_TIMEOUT_SECS)
    }

    /// The same steps with `factor` times their timeouts.
    pub fn timeouts_times(self, factor: u64) -> Script {
        self.map_timeouts(|secs| secs.saturating_mul(factor).min(NO_TIMEOUT_SECS))
    }

    fn map_timeouts(mut self, f: impl Fn(u64) -> u64) -> Script {
        for action in &mut self.actions {
            match action {
                Action::Expect { timeout_secs, .. } | Action::ExpectExit { timeout_secs, .. } => {
                    *timeout_secs = f(*timeout_secs)
                }
                Action::Send { .. } => {}
            }
        }
        self
    }
}

/// Compiles every step of a scenario; `run_values` are the values of its
/// [`Scenario::run_variables`] the lab computed for this run.
pub fn compile(scenario: &Scenario, run_values: &[(String, String)]) -> Result<Script> {
    let regex = |pattern: &str| {
        scenario
            .expect_regex(pattern)
            .map_err(|e| anyhow::anyhow!("{}: `{pattern}`: {e}", scenario.name))
    };
    let tagged = super::tagged_vms(scenario);
    let machine_consoles = super::topology::machine_consoles(scenario);
    // A direct boot of several VMs runs a QEMU process per VM, in VM order.
    let machine_of = |console: &Option<String>| {
        console
            .as_ref()
            .and_then(|vm| machine_consoles.iter().position(|c| c == vm))
            .unwrap_or(0)
    };
    let fail_on = scenario
        .fail_on
        .iter()
        .map(|p| regex(p))
        .collect::<Result<_>>()?;
    let mut vars = scenario.template_vars();
    for (name, value) in run_values {
        vars.set(name, value.clone());
    }
    let actions = scenario
        .steps
        .iter()
        .map(|step| {
            Ok(match step {
                Step::Expect {
                    pattern,
                    timeout_secs,
                    console,
                } => Action::Expect {
                    pattern: pattern.clone(),
                    timeout_secs: *timeout_secs,
                    console: match console {
                        Some(vm) if tagged.contains(vm) => Some(vm.clone()),
                        None if !tagged.is_empty() => Some(EVERY_CONSOLE.to_owned()),
                        _ => None,
                    },
                    machine: machine_of(console),
                },
                Step::Send { line, console } => Action::Send {
                    line: line.clone(),
                    focus: match console {
                        Some(vm) => focus_index(&tagged, vm)?,
                        None => None,
                    },
                    machine: machine_of(console),
                },
                Step::ExpectExit {
                    status,
                    timeout_secs,
                } => Action::ExpectExit {
                    status: *status,
                    timeout_secs: *timeout_secs,
                },
            })
        })
        .collect::<Result<_>>()?;
    Ok(Script {
        actions,
        fail_on,
        tagged,
        echo_paced: false,
        vars,
        machine_consoles,
    })
}

impl Action {
    /// The QEMU process the action reads or writes.
    fn machine(&self) -> usize {
        match self {
            Action::Expect { machine, .. } | Action::Send { machine, .. } => *machine,
            Action::ExpectExit { .. } => 0,
        }
    }
}

/// The hypervisor's input-focus escape: Ctrl-\ then the VM's index digit.
pub const FOCUS_ESCAPE: char = '\x1c';

/// The index a `send` to `vm` switches the input focus to, when several
/// VMs share the console (the hypervisor numbers them in manifest order,
/// one digit).
fn focus_index(tagged: &[String], vm: &str) -> Result<Option<usize>> {
    match tagged.iter().position(|name| name == vm) {
        None => Ok(None),
        Some(index) if index <= 9 => Ok(Some(index)),
        Some(index) => bail!("console input can reach VMs 0-9 only, {vm} is VM {index}"),
    }
}

/// Runs the actions in order until one fails; `machines` are the QEMU
/// processes in the order the actions number them.
pub fn run_all(
    machines: &mut [QemuProcess],
    script: &Script,
    cancel: &Cancel,
    emitter: &Emitter,
) -> ExitReason {
    // The hypervisor gives console input to VM 0 first.
    let mut focus = 0;
    let mut vars = script.vars.clone();
    for (index, action) in script.actions.iter().enumerate() {
        emitter.emit(EventKind::StepStarted { index });
        let start = Instant::now();
        let result = match machines.get_mut(action.machine()) {
            Some(qemu) => run_one(qemu, action, script, &mut vars, &mut focus, cancel),
            None => Err(StepFailure::SendFailed {
                message: format!("no QEMU process {}", action.machine()),
            }),
        };
        let duration = start.elapsed();
        match result {
            Ok(()) => emitter.emit(EventKind::StepPassed { index, duration }),
            Err(failure) => {
                emitter.emit(EventKind::StepFailed {
                    index,
                    duration,
                    failure: failure.clone(),
                });
                return ExitReason::StepFailed {
                    step: index,
                    failure,
                };
            }
        }
    }
    ExitReason::StepsPassed
}

/// The regex of an `expect` with the variables known now.
fn expect_regex(pattern: &str, vars: &TemplateVars) -> Result<Regex, String> {
    let expanded = expand_template(pattern, vars)?;
    crate::scenario::compile_pattern(&expanded).map_err(|e| e.to_string())
}

fn run_one(
    qemu: &mut QemuProcess,
    action: &Action,
    script: &Script,
    vars: &mut TemplateVars,
    focus: &mut usize,
    cancel: &Cancel,
) -> Result<(), StepFailure> {
    let fail_on = &script.fail_on;
    match action {
        Action::Expect {
            pattern,
            timeout_secs,
            console,
            ..
        } => {
            let regex = expect_regex(pattern, vars)
                .map_err(|message| StepFailure::BadPattern { message })?;
            let timeout = Duration::from_secs(*timeout_secs);
            let matched = match console {
                Some(console) => qemu.expect_on(console, &regex, fail_on, timeout, cancel),
                None => qemu.expect(&regex, fail_on, timeout, cancel),
            }
            .map_err(|end| failure(qemu, end, *timeout_secs, cancel))?;
            if let Some(captures) = regex.captures(&matched) {
                vars.set_captures(&regex, &captures);
            }
            Ok(())
        }
        Action::Send {
            line,
            focus: to,
            machine,
        } => {
            let send_failed = |message| StepFailure::SendFailed { message };
            if let Some(to) = to.filter(|to| to != focus) {
                qemu.send_raw(&format!("{FOCUS_ESCAPE}{to}"))
                    .map_err(send_failed)?;
                *focus = to;
            }
            if script.echo_paced {
                // The focused VM's console when the hypervisor tags them,
                // else the console of the process written to.
                let console = match script.tagged.is_empty() {
                    false => script.tagged.get(*focus),
                    true => script.machine_consoles.get(*machine),
                }
                .map_or(super::MACHINE_CONSOLE, String::as_str);
                qemu.send_line_paced(line, console, cancel)
            } else {
                qemu.send_line(line)
            }
            .map_err(send_failed)
        }
        Action::ExpectExit {
            status: expected,
            timeout_secs,
        } => {
            let status = qemu
                .wait_exit(Duration::from_secs(*timeout_secs), cancel)
                .map_err(|end| failure(qemu, end, *timeout_secs, cancel))?;
            match status {
                QemuStatus::Exited { code } if code == *expected => Ok(()),
                status => Err(StepFailure::WrongExitStatus {
                    expected: *expected,
                    status,
                }),
            }
        }
    }
}

fn failure(
    qemu: &mut QemuProcess,
    end: WaitEnd,
    timeout_secs: u64,
    cancel: &Cancel,
) -> StepFailure {
    match end {
        WaitEnd::Timeout => StepFailure::Timeout { timeout_secs },
        WaitEnd::Interrupted => StepFailure::Interrupted,
        WaitEnd::FailPattern(matched) => StepFailure::FailPattern { matched },
        // The console closed: QEMU is exiting; its status follows shortly.
        WaitEnd::Closed => match qemu.wait_exit(Duration::ZERO, cancel) {
            Ok(status) => StepFailure::QemuExited { status },
            Err(_) => StepFailure::QemuExited {
                status: QemuStatus::Signaled {
                    signal: "unknown".into(),
                    by_lab: false,
                },
            },
        },
    }
}

/// One line per step for displays and records.
pub fn describe(step: &Step) -> String {
    let on = |console: &Option<String>| {
        console
            .as_ref()
            .map(|c| format!(" on {c}"))
            .unwrap_or_default()
    };
    match step {
        Step::Expect {
            pattern,
            timeout_secs,
            console,
        } => format!("expect /{pattern}/{} within {timeout_secs}s", on(console)),
        Step::Send { line, console } => format!("send {line:?}{}", on(console)),
        Step::ExpectExit {
            status,
            timeout_secs,
        } => format!("expect QEMU exit {status} within {timeout_secs}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn with_several_vms_steps_name_their_console_and_focus() {
        let scenario = Scenario::parse(
            Path::new("s.yaml"),
            "schema: 1\nname: s\ndescription: d\nmachine: { cpus: 2, memory-mib: 512 }\n\
             vms:\n  - { name: vm0, kernel: { crate: g }, vcpus: 1, memory-mib: 64 }\n\
             \x20 - { name: vm1, kernel: { crate: g }, vcpus: 1, memory-mib: 64 }\n\
             steps:\n  - { expect: 'READY', console: vm1 }\n  - expect: 'READY'\n\
             \x20 - { send: ls, console: vm1 }\n  - send: ls\n",
        )
        .unwrap();
        let actions = compile(&scenario, &[]).unwrap().actions;
        assert!(matches!(&actions[0], Action::Expect { console: Some(c), .. } if c == "vm1"));
        assert!(
            matches!(&actions[1], Action::Expect { console: Some(c), .. } if c == EVERY_CONSOLE)
        );
        assert!(matches!(&actions[2], Action::Send { focus: Some(1), .. }));
        assert!(matches!(&actions[3], Action::Send { focus: None, .. }));
    }

    #[test]
    fn direct_vms_are_each_their_own_process() {
        let scenario = Scenario::parse(
            Path::new("s.yaml"),
            "schema: 1\nname: s\ndescription: d\nmachine: { cpus: 1, memory-mib: 512 }\nboot: direct\n\
             vms:\n  - { name: vm0, kernel: { crate: g }, vcpus: 1, memory-mib: 64 }\n\
             \x20 - { name: vm1, kernel: { crate: g }, vcpus: 1, memory-mib: 64 }\n\
             steps:\n  - { expect: 'READY', console: vm1 }\n  - { send: ls, console: vm0 }\n",
        )
        .unwrap();
        let script = compile(&scenario, &[]).unwrap();
        assert_eq!(script.machine_consoles, ["vm0", "vm1"]);
        assert!(script.tagged.is_empty());
        assert!(matches!(
            &script.actions[0],
            Action::Expect {
                console: None,
                machine: 1,
                ..
            }
        ));
        assert!(matches!(
            &script.actions[1],
            Action::Send {
                focus: None,
                machine: 0,
                ..
            }
        ));
    }

    #[test]
    fn run_values_fill_the_variables_the_scenario_declares() {
        let scenario = Scenario::parse(
            Path::new("s.yaml"),
            "schema: 1\nname: s\ndescription: d\nmachine: { cpus: 1, memory-mib: 512 }\n\
             vms:\n  - { name: vm0, kernel: { crate: g }, vcpus: 1, memory-mib: 64, disks: [{ image: d }] }\n\
             steps:\n  - expect: 'sum (?P<sum>\\w+) {vm0-disk0-md5}'\n  - expect: 'again {sum}'\n",
        )
        .unwrap();
        let pending = compile(&scenario, &[]).unwrap();
        let value = [("vm0-disk0-md5".to_owned(), "ab.c".to_owned())];
        let script = compile(&scenario, &value).unwrap();
        let Action::Expect { pattern, .. } = &script.actions[0] else {
            panic!("an expect");
        };
        assert_eq!(
            expect_regex(pattern, &pending.vars).unwrap().as_str(),
            r"sum (?P<sum>\w+) \S+"
        );
        let regex = expect_regex(pattern, &script.vars).unwrap();
        assert_eq!(regex.as_str(), r"sum (?P<sum>\w+) ab\.c");
        let mut vars = script.vars.clone();
        vars.set_captures(&regex, &regex.captures("sum 42 ab.c").unwrap());
        assert_eq!(
            expect_regex("again {sum}", &vars).unwrap().as_str(),
            "again 42"
        );
    }

    #[test]
    fn compiles_and_describes_every_kind_of_step() {
        let scenario = Scenario::parse(
            Path::new("s.yaml"),
            "schema: 1\nname: s\ndescription: d\nmachine: { cpus: 2, memory-mib: 64 }\n\
             vms: [{ name: vm0, kernel: { crate: g }, vcpus: 1, memory-mib: 64 }]\n\
             steps:\n  - { expect: '{cpus} CPUs', timeout: 3, console: vm0 }\n  - send: ls\n  - expect-exit: 0\n",
        )
        .unwrap();
        let script = compile(&scenario, &[]).unwrap();
        let actions = &script.actions;
        // One VM has a console of its own too; no focus switching.
        assert!(
            matches!(&actions[0], Action::Expect { pattern, timeout_secs: 3, console: Some(vm), machine: 0 }
                if vm == "vm0" && expect_regex(pattern, &script.vars).unwrap().as_str() == "2 CPUs")
        );
        assert!(
            matches!(&actions[1], Action::Send { line, focus: None, machine: 0 } if line == "ls")
        );
        assert!(matches!(
            actions[2],
            Action::ExpectExit {
                status: 0,
                timeout_secs: 30
            }
        ));
        let timeouts = |script: &Script| -> Vec<u64> {
            script
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::Expect { timeout_secs, .. }
                    | Action::ExpectExit { timeout_secs, .. } => Some(*timeout_secs),
                    Action::Send { .. } => None,
                })
                .collect()
        };
        let script = compile(&scenario, &[]).unwrap();
        assert_eq!(timeouts(&script.clone().timeouts_times(4)), [12, 120]);
        assert_eq!(
            timeouts(&script.clone().without_timeouts()),
            [NO_TIMEOUT_SECS; 2]
        );
        assert_eq!(
            timeouts(&script.without_timeouts().timeouts_times(4)),
            [NO_TIMEOUT_SECS; 2]
        );
        let described: Vec<_> = scenario.steps.iter().map(describe).collect();
        // Patterns stay as written.
        assert_eq!(super::super::tagged_vms(&scenario), ["vm0"]);
        assert_eq!(
            described,
            [
                "expect /{cpus} CPUs/ on vm0 within 3s",
                "send \"ls\"",
                "expect QEMU exit 0 within 30s"
            ]
        );
    }
}
