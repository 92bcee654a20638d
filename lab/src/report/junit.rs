//! `junit.xml` of a sweep (quick-junit): one test suite `lab`, one test
//! case per scenario. A flaky scenario is a success with its failed
//! attempts as `flakyFailure`s; a failure carries the exit reason as its
//! message and the last console lines as its text; every case names its
//! artifacts and the command that reproduces it in `system-out`.

use super::results::{AttemptRecord, ScenarioRecord, SweepRecord};
use crate::run::events::Verdict;
use crate::sweep::events::SweepVerdict;
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestRerun, TestSuite};
use std::time::Duration;

/// The name of the one test suite.
pub const SUITE: &str = "lab";

fn time(attempt: &AttemptRecord) -> Duration {
    Duration::from_millis(attempt.run.duration_ms)
}

fn kind(verdict: Verdict) -> NonSuccessKind {
    match verdict {
        Verdict::Error => NonSuccessKind::Error,
        Verdict::Passed | Verdict::Failed => NonSuccessKind::Failure,
    }
}

fn rerun(attempt: &AttemptRecord) -> TestRerun {
    let mut rerun = TestRerun::new(kind(attempt.run.verdict));
    rerun.time = Some(time(attempt));
    rerun.message = Some(attempt.run.exit_reason.to_string().into());
    rerun.description = Some(attempt.console_tail.join("\n").into());
    rerun.system_out = Some(format!("artifacts: {}", attempt.artifacts.display()).into());
    rerun
}

fn test_case(scenario: &ScenarioRecord) -> TestCase {
    let Some((last, earlier)) = scenario.attempts.split_last() else {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_message("the scenario did not run");
        return TestCase::new(scenario.scenario.clone(), status);
    };
    let mut status = match scenario.verdict {
        SweepVerdict::Passed | SweepVerdict::Flaky => TestCaseStatus::success(),
        SweepVerdict::Failed => TestCaseStatus::non_success(NonSuccessKind::Failure),
        SweepVerdict::Error => TestCaseStatus::non_success(NonSuccessKind::Error),
    };
    status
        .set_message(last.run.exit_reason.to_string())
        .set_type(scenario.verdict.to_string())
        .set_description(last.console_tail.join("\n"));
    status.add_reruns(earlier.iter().map(rerun));
    let mut case = TestCase::new(scenario.scenario.clone(), status);
    case.set_classname(SUITE)
        .set_time(time(last))
        .set_system_out(format!(
            "artifacts: {}\nreproduce: {}\n",
            last.artifacts.display(),
            last.run.rerun
        ));
    case
}

/// The JUnit report of a sweep.
pub fn report(sweep: &SweepRecord) -> Report {
    let mut suite = TestSuite::new(SUITE);
    suite.set_time(Duration::from_millis(sweep.wall_ms));
    suite.add_test_cases(sweep.scenarios.iter().map(test_case));
    let mut report = Report::new(format!("lab sweep {}", sweep.sweep_id));
    report
        .set_time(Duration::from_millis(sweep.wall_ms))
        .add_test_suite(suite);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::SweepFold;
    use crate::run::events::{Event, EventKind, ExitReason, StepFailure};
    use crate::scenario::Scenario;
    use crate::sweep::events::SweepEvent;
    use std::path::Path;
    use std::sync::Arc;

    fn scenario(name: &str) -> Arc<Scenario> {
        let text = format!(
            "schema: 1\nname: {name}\ndescription: d\nmachine: {{ cpus: 1, memory-mib: 64 }}\nsteps:\n  - expect: x\n"
        );
        Arc::new(Scenario::parse(Path::new(&format!("{name}.yaml")), &text).unwrap())
    }

    fn run(scenario: &str, attempt: u32, verdict: Verdict) -> Vec<SweepEvent> {
        let event = |kind| SweepEvent::Run {
            attempt,
            event: Event {
                scenario: Arc::from(scenario),
                at: Duration::from_millis(10),
                kind,
            },
        };
        let reason = match verdict {
            Verdict::Passed => ExitReason::StepsPassed,
            _ => ExitReason::StepFailed {
                step: 0,
                failure: StepFailure::Timeout { timeout_secs: 5 },
            },
        };
        vec![
            event(EventKind::RunStarted {
                run_id: format!("{scenario}-{attempt}"),
                run_dir: format!("/runs/{scenario}/{attempt}").into(),
                steps: vec!["expect /x/ within 5s".into()],
                rerun: format!("cargo run -p lab -- scenario {scenario}"),
            }),
            event(EventKind::ConsoleLine {
                console: Arc::from("serial"),
                line: format!("attempt {attempt}"),
            }),
            event(EventKind::RunFinished {
                verdict,
                reason,
                duration: Duration::from_millis(1500),
            }),
        ]
    }

    /// A flaky scenario (failed, then passed) and a failed one, folded from
    /// events, written as JUnit and read back with quick-junit's own parser.
    #[test]
    fn flaky_and_failed_read_back() {
        let mut fold = SweepFold::default();
        let mut events = vec![SweepEvent::Started {
            sweep_id: "s1".into(),
            dir: "/sweeps/s1".into(),
            scenarios: ["a", "b"].map(scenario).to_vec(),
            jobs: 2,
            rerun_failed: "cargo run -p lab -- sweep --only-failed".into(),
        }];
        events.extend(run("a", 1, Verdict::Failed));
        events.extend(run("b", 1, Verdict::Failed));
        events.extend(run("a", 2, Verdict::Passed));
        events.push(SweepEvent::ScenarioFinished {
            scenario: "a".into(),
            verdict: SweepVerdict::Flaky,
            attempts: 2,
        });
        events.extend(run("b", 2, Verdict::Failed));
        events.push(SweepEvent::ScenarioFinished {
            scenario: "b".into(),
            verdict: SweepVerdict::Failed,
            attempts: 2,
        });
        events.push(SweepEvent::Finished {
            wall: Duration::from_secs(4),
            interrupted: false,
        });
        for event in &events {
            fold.on_event(event);
        }
        let record = fold.record();
        assert_eq!((record.counts.flaky, record.counts.failed), (1, 1));
        let a = &record.scenarios[0];
        assert_eq!(a.attempts.len(), 2);
        assert_eq!(a.attempts[0].console_tail, ["attempt 1"]);
        assert!(
            a.attempts[1].console_tail.is_empty(),
            "a pass keeps no tail"
        );

        let xml = report(&record).to_string().unwrap();
        let back = Report::deserialize_from_str(&xml).unwrap();
        assert_eq!((back.tests, back.failures, back.errors), (2, 1, 0));
        let cases = &back.test_suites[0].test_cases;
        match &cases[0].status {
            TestCaseStatus::Success { flaky_runs } => {
                assert_eq!(flaky_runs.len(), 1);
                assert_eq!(
                    flaky_runs[0].message.as_ref().map(|m| m.as_str()),
                    Some("step 1: timed out after 5s")
                );
            }
            other => panic!("a flaky scenario is a success with flaky runs: {other:?}"),
        }
        assert!(matches!(
            &cases[1].status,
            TestCaseStatus::NonSuccess {
                kind: NonSuccessKind::Failure,
                ..
            }
        ));
        assert!(cases[1].system_out.as_ref().is_some_and(|out| out
            .as_str()
            .contains("reproduce: cargo run -p lab -- scenario b")));
    }
}
