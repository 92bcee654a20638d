//! A real sweep through the library: a passing and a deliberately broken
//! scenario, two at a time, the broken one retried. Checks the verdicts,
//! the exit code, what the summary shows for the failure (its last console
//! lines, the command that reproduces it, its artifacts), and that
//! `results.json` and `junit.xml` read back (junit.xml through
//! quick-junit's own deserializer, as a JUnit consumer would).

use lab::report::results::SweepRecord;
use lab::report::{read_results, ReportWriter, JUNIT_XML, RESULTS_JSON};
use lab::run::Lab;
use lab::scenario::Scenario;
use lab::sweep::display::SweepDisplay;
use lab::sweep::events::{SweepConsumer, SweepVerdict};
use lab::sweep::{exit_code, run_sweep, SweepOptions};
use quick_junit::{NonSuccessKind, Report, TestCaseStatus};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A `Write` the test can read afterwards.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Write for Screen {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sweep")
}

fn load(name: &str) -> Scenario {
    Scenario::load(&fixtures().join(format!("{name}.yaml"))).unwrap()
}

#[test]
fn a_sweep_with_a_broken_scenario() {
    let lab = Lab::discover().unwrap();
    let qemu = lab::qemu::provision::ensure_qemu().unwrap();
    let screen = Screen::default();
    let options = SweepOptions {
        jobs: 2,
        retries: 1,
        offline: true,
        rerun_failed: "cargo run -p lab -- sweep --only-failed".into(),
        scenario_dir: Some(fixtures()),
        ..SweepOptions::default()
    };
    let consumers: Vec<Box<dyn SweepConsumer>> = vec![
        Box::new(SweepDisplay::new(Box::new(screen.clone()))),
        Box::new(ReportWriter::default()),
    ];
    let record = run_sweep(
        &lab,
        vec![load("sweep_pass"), load("sweep_broken")],
        &qemu,
        &options,
        consumers,
    )
    .unwrap();
    let shown = String::from_utf8(screen.0.lock().unwrap().clone()).unwrap();

    let verdicts: Vec<(&str, SweepVerdict, usize)> = record
        .scenarios
        .iter()
        .map(|s| (s.scenario.as_str(), s.verdict, s.attempts.len()))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("sweep_broken", SweepVerdict::Failed, 2),
            ("sweep_pass", SweepVerdict::Passed, 1)
        ],
        "{shown}"
    );
    assert_eq!(exit_code(&record.counts), 1);

    // The summary: counts, the failure's console tail, reproduce, artifacts.
    let broken = &record.scenarios[0];
    let last = broken.last().unwrap();
    assert!(last.artifacts.join("console.log").is_file());
    assert!(
        last.console_tail
            .iter()
            .any(|l| l.starts_with("hypervisor ")),
        "{:?}",
        last.console_tail
    );
    for expected in [
        "2 scenarios: 1 passed, 1 failed, 0 flaky, 0 error in ".to_string(),
        "FAILED sweep_broken: step 2: QEMU exited early".to_string(),
        "  | hypervisor: no VMs to run, powering off".to_string(),
        format!("  artifacts: {}", last.artifacts.display()),
        format!(
            "  reproduce: cargo run -p lab -- scenario {} --offline",
            fixtures().join("sweep_broken.yaml").display()
        ),
        "rerun the failures: cargo run -p lab -- sweep --only-failed".to_string(),
    ] {
        assert!(
            shown.contains(&expected),
            "missing {expected:?} in\n{shown}"
        );
    }
    // Per-step timings and a boot timeline in the record.
    let passed = &record.scenarios[1].attempts[0];
    assert!(passed.run.steps.iter().all(|s| s.duration_ms.is_some()));
    let marks: Vec<&str> = passed
        .run
        .timeline
        .iter()
        .map(|m| m.what.as_str())
        .collect();
    assert!(
        marks.starts_with(&["qemu-start", "hypervisor-start", "step 1", "step 2"]),
        "{marks:?}"
    );

    // The files, read back.
    let dir = lab::sweep::sweeps_root(&lab.target_dir).join(&record.sweep_id);
    let from_disk: SweepRecord = read_results(&dir.join(RESULTS_JSON)).unwrap();
    assert_eq!(from_disk, record);
    let xml = std::fs::read_to_string(dir.join(JUNIT_XML)).unwrap();
    let junit = Report::deserialize_from_str(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
    assert_eq!((junit.tests, junit.failures, junit.errors), (2, 1, 0));
    let suite = &junit.test_suites[0];
    let broken_case = suite
        .test_cases
        .iter()
        .find(|c| c.name.as_str() == "sweep_broken")
        .unwrap();
    match &broken_case.status {
        TestCaseStatus::NonSuccess {
            kind: NonSuccessKind::Failure,
            message,
            reruns,
            ..
        } => {
            assert!(message.as_ref().unwrap().contains("QEMU exited early"));
            assert_eq!(reruns.runs.len(), 1, "the first attempt, as a rerun");
        }
        other => panic!("{other:?}"),
    }
}
