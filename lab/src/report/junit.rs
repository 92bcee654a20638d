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
