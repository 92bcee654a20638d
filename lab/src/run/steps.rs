//! The steps of a scenario against a running QEMU: each `expect`, `send`
//! and `expect-exit` with its timeout, reported as step events.

use super::events::{Emitter, EventKind, ExitReason, QemuStatus, StepFailure};
use super::qemu_process::{QemuProcess, WaitEnd};
use super::Cancel;
use crate::scenario::{Scenario, Step};
use anyhow::{Context, Result};
use regex::Regex;
use std::time::{Duration, Instant};

/// A step ready to run: patterns expanded and compiled.
#[derive(Debug, Clone)]
pub enum Action {
    Expect { regex: Regex, timeout_secs: u64 },
    Send { line: String },
    ExpectExit { status: i32, timeout_secs: u64 },
}

/// A scenario's steps ready to run, with its `fail-on` patterns.
#[derive(Debug, Clone)]
pub struct Script {
    pub actions: Vec<Action>,
    pub fail_on: Vec<Regex>,
}

/// Compiles every step of a scenario.
pub fn compile(scenario: &Scenario) -> Result<Script> {
    let regex = |pattern: &str| {
        scenario
            .expect_regex(pattern)
            .map_err(|e| anyhow::anyhow!("{}: `{pattern}`: {e}", scenario.name))
    };
    let tagged = super::tagged_vms(scenario);
    let fail_on = scenario
        .fail_on
        .iter()
        .map(|p| regex(p))
        .collect::<Result<_>>()?;
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
                    regex: match console {
                        Some(vm) if tagged.contains(vm) => scoped(vm, &regex(pattern)?)?,
                        _ => regex(pattern)?,
                    },
                    timeout_secs: *timeout_secs,
                },
                Step::Send { line, .. } => Action::Send { line: line.clone() },
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
    Ok(Script { actions, fail_on })
}

/// Restricts a pattern to the lines the hypervisor tags `[<vm>] `: the
/// match must lie within one such line.
fn scoped(vm: &str, pattern: &Regex) -> Result<Regex> {
    let scoped = format!(
        r"(?m)^\[{}\] [^\n]*?(?:{})",
        regex::escape(vm),
        pattern.as_str()
    );
    Regex::new(&scoped).with_context(|| format!("scoping `{pattern}` to {vm}"))
}

/// Runs the actions in order until one fails.
pub fn run_all(
    qemu: &mut QemuProcess,
    script: &Script,
    cancel: &Cancel,
    emitter: &Emitter,
) -> ExitReason {
    for (index, action) in script.actions.iter().enumerate() {
        emitter.emit(EventKind::StepStarted { index });
        let start = Instant::now();
        let result = run_one(qemu, action, &script.fail_on, cancel);
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

fn run_one(
    qemu: &mut QemuProcess,
    action: &Action,
    fail_on: &[Regex],
    cancel: &Cancel,
) -> Result<(), StepFailure> {
    match action {
        Action::Expect {
            regex,
            timeout_secs,
        } => qemu
            .expect(regex, fail_on, Duration::from_secs(*timeout_secs), cancel)
            .map_err(|end| failure(qemu, end, *timeout_secs, cancel)),
        Action::Send { line } => qemu
            .send_line(line)
            .map_err(|message| StepFailure::SendFailed { message }),
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
    fn with_several_vms_a_console_scopes_the_pattern_to_its_lines() {
        let scenario = Scenario::parse(
            Path::new("s.yaml"),
            "schema: 1\nname: s\ndescription: d\nmachine: { cpus: 2, memory-mib: 512 }\n\
             vms:\n  - { name: vm0, kernel: { crate: g }, vcpus: 1, memory-mib: 64 }\n\
             \x20 - { name: vm1, kernel: { crate: g }, vcpus: 1, memory-mib: 64 }\n\
             steps:\n  - { expect: 'READY \\w+', console: vm1 }\n  - expect: 'READY'\n",
        )
        .unwrap();
        let actions = compile(&scenario).unwrap().actions;
        let (Action::Expect { regex: vm1, .. }, Action::Expect { regex: any, .. }) =
            (&actions[0], &actions[1])
        else {
            panic!("two expects");
        };
        let console = "[vm0] READY vm0\r\nhypervisor: x\r\n[vm1] booting\r\n[vm1] READY vm1\r\n";
        let found = vm1.find(console).unwrap();
        assert!(
            found.as_str().ends_with("READY vm1"),
            "{:?}",
            found.as_str()
        );
        assert!(any.find(console).unwrap().start() < found.start());
        assert!(!vm1.is_match("[vm0] READY vm0\r\n[vm1] boot\r\nREADY vm1"));
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
        let actions = compile(&scenario).unwrap().actions;
        assert!(
            matches!(&actions[0], Action::Expect { regex, timeout_secs: 3 } if regex.as_str() == "2 CPUs")
        );
        assert!(matches!(&actions[1], Action::Send { line } if line == "ls"));
        assert!(matches!(
            actions[2],
            Action::ExpectExit {
                status: 0,
                timeout_secs: 30
            }
        ));
        let described: Vec<_> = scenario.steps.iter().map(describe).collect();
        // One VM: its console is the machine's, patterns stay as written.
        assert!(super::super::tagged_vms(&scenario).is_empty());
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
