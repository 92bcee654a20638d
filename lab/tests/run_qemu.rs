//! Real QEMU runs through the library: a passing scenario, a broken one, a
//! hanging one and a hypervisor panic. Each checks the verdict, the
//! artifacts, and that no QEMU process is left behind.

use lab::qemu::{BootFiles, LabeledPath};
use lab::run::artifacts::{CONSOLE_LOG, QEMU_CMDLINE, RESULT_JSON};
use lab::run::events::{Consumer, Event, EventKind, ExitReason, StepFailure, Verdict};
use lab::run::record::{ResultWriter, RunRecord};
use lab::run::{run_scenario, Cancel, Lab, RunOptions, RunSummary};
use lab::scenario::Scenario;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Keeps every event for the test to inspect.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Event>>>);

impl Consumer for Collector {
    fn on_event(&mut self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

struct Outcome {
    summary: RunSummary,
    events: Vec<Event>,
    record: RunRecord,
    console: String,
}

impl Outcome {
    fn qemu_pid(&self) -> i32 {
        self.events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::QemuStarted { pid, .. } => *pid,
                _ => None,
            })
            .expect("QEMU started with a pid")
    }

    fn assert_qemu_gone(&self) {
        let pid = self.qemu_pid();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "QEMU (pid {pid}) is still there"
        );
    }

    fn reason(&self) -> &ExitReason {
        self.events
            .iter()
            .find_map(|e| match &e.kind {
                EventKind::RunFinished { reason, .. } => Some(reason),
                _ => None,
            })
            .expect("RunFinished")
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/scenarios/run/{name}.yaml"))
}

fn run(file: &Path, boot_files: Option<BootFiles>) -> Outcome {
    run_with_cancel(file, boot_files, Cancel::default())
}

fn run_with_cancel(file: &Path, boot_files: Option<BootFiles>, cancel: Cancel) -> Outcome {
    let lab = Lab::discover().unwrap();
    let scenario = Scenario::load(file).unwrap();
    let qemu = lab::qemu::provision::ensure_qemu().unwrap();
    let collector = Collector::default();
    let options = RunOptions {
        offline: true,
        rerun: format!("cargo run -p lab -- scenario {}", file.display()),
        cancel,
        boot_files,
        ..RunOptions::default()
    };
    let summary = run_scenario(
        &lab,
        &scenario,
        &qemu,
        &options,
        vec![
            Box::new(collector.clone()),
            Box::new(ResultWriter::default()),
        ],
    )
    .unwrap();
    let events = collector.0.lock().unwrap().clone();
    for artifact in [CONSOLE_LOG, QEMU_CMDLINE, RESULT_JSON] {
        assert!(
            summary.run_dir.join(artifact).is_file(),
            "{artifact} missing"
        );
    }
    let record: RunRecord =
        serde_json::from_slice(&std::fs::read(summary.run_dir.join(RESULT_JSON)).unwrap()).unwrap();
    let console = std::fs::read_to_string(summary.run_dir.join(CONSOLE_LOG)).unwrap();
    assert_eq!(record.verdict, summary.verdict);
    assert_eq!(record.scenario, scenario.name);
    Outcome {
        summary,
        events,
        record,
        console,
    }
}

#[test]
fn hv_boot_passes() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/hv_boot.yaml");
    let out = run(&file, None);
    assert_eq!(out.summary.verdict, Verdict::Passed, "{}", out.console);
    assert!(out
        .console
        .contains("hypervisor 0.1.0: EL2, 2 CPUs, 512 MiB RAM at 0x40000000"));
    assert_eq!(out.record.exit_reason, ExitReason::StepsPassed);
    assert_eq!(
        out.record.qemu,
        Some(lab::run::events::QemuStatus::Exited { code: 0 })
    );
    assert!(out.record.steps.iter().all(|s| s.duration_ms.is_some()));
    out.assert_qemu_gone();
    let latest = out.summary.run_dir.parent().unwrap().join("latest");
    assert!(latest.exists());
}

#[test]
fn broken_scenario_fails_when_qemu_exits() {
    let out = run(&fixture("hv_wrong_banner"), None);
    assert_eq!(out.summary.verdict, Verdict::Failed);
    assert!(
        matches!(
            out.reason(),
            ExitReason::StepFailed {
                step: 0,
                failure: StepFailure::QemuExited { .. }
            }
        ),
        "{:?}",
        out.reason()
    );
    // The step's timeout is 60 s; QEMU's exit ends it long before. (The
    // step's own time: a cold hypervisor build comes before it.)
    let step = out.record.steps[0].duration_ms.unwrap();
    assert!(step < 30_000, "step took {step} ms");
    assert!(out.console.contains("EL2, 2 CPUs"), "{}", out.console);
    out.assert_qemu_gone();
}

/// A raw kernel that is one instruction, `b .`: QEMU runs it forever and
/// prints nothing.
fn spinning_kernel(dir: &Path) -> BootFiles {
    let spin = dir.join("spin.bin");
    std::fs::write(&spin, 0x1400_0000u32.to_le_bytes()).unwrap();
    BootFiles {
        kernel: LabeledPath::new("spin.bin", spin),
        raw_load: None,
        initrd: None,
        disks: Vec::new(),
        net: Vec::new(),
        firmware: None,
    }
}

#[test]
fn hanging_qemu_is_killed_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&fixture("hang"), Some(spinning_kernel(dir.path())));
    assert_eq!(out.summary.verdict, Verdict::Failed);
    assert_eq!(
        out.reason(),
        &ExitReason::StepFailed {
            step: 0,
            failure: StepFailure::Timeout { timeout_secs: 2 }
        }
    );
    let step = out.record.steps[0].duration_ms.unwrap();
    assert!((2000..4000).contains(&step), "step took {step} ms");
    assert!(
        matches!(
            &out.record.qemu,
            Some(lab::run::events::QemuStatus::Signaled { by_lab: true, .. })
        ),
        "{:?}",
        out.record.qemu
    );
    out.assert_qemu_gone();
}

#[test]
fn hypervisor_panic_fails_fast_with_the_panic_line() {
    let out = run(&fixture("hv_panic"), None);
    assert_eq!(out.summary.verdict, Verdict::Failed);
    assert!(
        matches!(
            out.reason(),
            ExitReason::StepFailed {
                step: 1,
                failure: StepFailure::QemuExited { .. }
            }
        ),
        "{:?}",
        out.reason()
    );
    let panic_line = regex::Regex::new(r"hypervisor panic at \S+:\d+: ").unwrap();
    assert!(panic_line.is_match(&out.console), "{}", out.console);
    // Step 2 would wait 60 s; the power-off ends it at once.
    assert!(out.record.steps[1].duration_ms.unwrap() < 10_000);
    out.assert_qemu_gone();
}

#[test]
fn cancelling_a_run_stops_qemu_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = Cancel::default();
    let trigger = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        trigger.cancel();
    });
    let out = run_with_cancel(&fixture("hang"), Some(spinning_kernel(dir.path())), cancel);
    canceller.join().unwrap();
    assert_eq!(out.summary.verdict, Verdict::Failed);
    assert_eq!(
        out.reason(),
        &ExitReason::StepFailed {
            step: 0,
            failure: StepFailure::Interrupted
        }
    );
    // Well before the step's 2 s timeout.
    assert!(out.record.steps[0].duration_ms.unwrap() < 1900);
    out.assert_qemu_gone();
}

#[test]
fn qemu_refusing_to_start_is_the_lab_failing_to_run_it() {
    let files = BootFiles {
        kernel: LabeledPath::new("missing.bin", "/nonexistent/missing.bin"),
        raw_load: None,
        initrd: None,
        disks: Vec::new(),
        net: Vec::new(),
        firmware: None,
    };
    let lab = Lab::discover().unwrap();
    let scenario = Scenario::load(&fixture("hang")).unwrap();
    let qemu = lab::qemu::provision::ensure_qemu().unwrap();
    let collector = Collector::default();
    let options = RunOptions {
        offline: true,
        boot_files: Some(files),
        ..RunOptions::default()
    };
    let err = run_scenario(
        &lab,
        &scenario,
        &qemu,
        &options,
        vec![Box::new(collector.clone())],
    )
    .unwrap_err();
    // QEMU's own message, not the first step's failure: exit 2, not 1.
    let message = format!("{err:#}");
    assert!(
        message.starts_with("QEMU could not start: qemu-system-aarch64: ")
            && message.contains("/nonexistent/missing.bin"),
        "{message}"
    );
    let events = collector.0.lock().unwrap().clone();
    assert!(
        events.iter().any(|e| matches!(
            &e.kind,
            EventKind::RunFinished {
                verdict: Verdict::Error,
                ..
            }
        )),
        "{events:?}"
    );
}

#[test]
fn testguest_boots_under_the_hypervisor_from_the_lab_bundle() {
    let out = run(&fixture("testguest_hv"), None);
    assert_eq!(out.summary.verdict, Verdict::Passed, "{}", out.console);
    for artifact in ["bundle.cpio", "manifest.dts", "vm0.dts"] {
        assert!(out.summary.run_dir.join(artifact).is_file(), "{artifact}");
    }
    let manifest = std::fs::read_to_string(out.summary.run_dir.join("manifest.dts")).unwrap();
    assert!(manifest.contains("kernel = \"vm0/kernel\";"), "{manifest}");
    out.assert_qemu_gone();
}

#[test]
fn a_fail_on_pattern_fails_the_pending_step() {
    let out = run(&fixture("hv_fail_on"), None);
    assert_eq!(out.summary.verdict, Verdict::Failed);
    let ExitReason::StepFailed {
        step: 1,
        failure: StepFailure::FailPattern { matched },
    } = out.reason()
    else {
        panic!("{:?}", out.reason());
    };
    assert!(matched.starts_with("gicv3 dist 0x"), "{matched}");
    out.assert_qemu_gone();
}

#[test]
fn each_vm_gets_its_own_console_under_the_hypervisor() {
    let out = run(&fixture("two_testguests"), None);
    assert_eq!(out.summary.verdict, Verdict::Passed, "{}", out.console);
    let lines = |name: &str| -> Vec<String> {
        out.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::ConsoleLine { console, line } if &**console == name => {
                    Some(line.clone())
                }
                _ => None,
            })
            .collect()
    };
    for vm in ["vm0", "vm1"] {
        let vm_lines = lines(vm);
        assert!(
            vm_lines
                .iter()
                .any(|l| l.starts_with("TESTGUEST uart: PASS")),
            "{vm}: {vm_lines:?}"
        );
        // Whole lines, however the two VMs' output interleaved on the UART:
        // the test guest prints only these two kinds.
        assert!(
            vm_lines
                .iter()
                .all(|l| l.starts_with("TESTGUEST ") || l.starts_with("LAB-CLOCK ")),
            "{vm}: {vm_lines:?}"
        );
        assert!(
            vm_lines
                .iter()
                .any(|l| l.starts_with("TESTGUEST DONE passed=")),
            "{vm}: {vm_lines:?}"
        );
    }
    let machine = lines(lab::run::MACHINE_CONSOLE);
    assert!(
        machine.iter().all(|l| l.starts_with("hypervisor")),
        "{machine:?}"
    );
    // console.log stays raw, tags included.
    assert!(out.console.contains("[vm1] TESTGUEST"), "{}", out.console);
}

/// A boot bundle whose manifest asks for a VM with no vCPUs.
fn bad_manifest_bundle(dir: &Path) -> LabeledPath {
    let mut fdt = vm_fdt::FdtWriter::new().unwrap();
    let root = fdt.begin_node("").unwrap();
    fdt.property_string("compatible", "lab,hypervisor-manifest-v1")
        .unwrap();
    let vms = fdt.begin_node("vms").unwrap();
    let vm = fdt.begin_node("vm@0").unwrap();
    fdt.property_string("name", "vm0").unwrap();
    fdt.property_u32("vcpus", 0).unwrap();
    fdt.end_node(vm).unwrap();
    fdt.end_node(vms).unwrap();
    fdt.end_node(root).unwrap();
    let manifest = fdt.finish().unwrap();

    let path = dir.join("bad-bundle.cpio");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut member = cpio::newc::Builder::new("manifest.dtb")
        .mode(0o100644)
        .write(&mut file, manifest.len() as u32);
    std::io::Write::write_all(&mut member, &manifest).unwrap();
    cpio::newc::trailer(member.finish().unwrap()).unwrap();
    LabeledPath::new("bad-bundle.cpio", path)
}

#[test]
fn a_bad_manifest_is_named_and_the_hypervisor_powers_off() {
    let lab = Lab::discover().unwrap();
    let hypervisor =
        lab::build::build_flat_binary(&lab.root, &lab.target_dir, "hypervisor").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = BootFiles {
        kernel: hypervisor,
        raw_load: None,
        initrd: Some(bad_manifest_bundle(dir.path())),
        disks: Vec::new(),
        net: Vec::new(),
        firmware: None,
    };
    let out = run(&fixture("hv_bad_manifest"), Some(files));
    assert_eq!(out.summary.verdict, Verdict::Passed, "{}", out.console);
    assert!(!out.console.contains("hypervisor panic"), "{}", out.console);
    out.assert_qemu_gone();
}
