//! One snapshot test per scenario file: every `scenarios/*.yaml` is run
//! through the library on real QEMU, and the stable part of each console
//! (the lines its steps matched and the sentinel lines, through the lab's
//! normaliser) is compared with `scenarios/snapshots/scenario_transcript@<file>.snap`.
//! A new YAML file is a new test; a scenario that does not pass fails here
//! too, never skipped. Review changes with `cargo insta review`.

use lab::normalize::Normalizer;
use lab::report::transcript::TranscriptCollector;
use lab::run::events::Verdict;
use lab::run::record::ResultWriter;
use lab::run::{run_scenario, Lab, RunOptions};
use lab::scenario::Scenario;

#[test]
fn scenario_transcript() {
    let lab = Lab::discover().expect("workspace");
    let qemu = lab::qemu::provision::ensure_qemu().expect("QEMU is installed");
    let mut not_passed = Vec::new();
    insta::glob!("../../scenarios", "*.yaml", |path| {
        let scenario = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
        let collector = TranscriptCollector::default();
        let options = RunOptions {
            offline: false,
            rerun: format!("cargo run -p lab -- scenario {}", scenario.name),
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
        );
        let text = match &summary {
            Ok(summary) => {
                if summary.verdict != Verdict::Passed {
                    not_passed.push(format!(
                        "{}: {} (artifacts: {})",
                        scenario.name,
                        summary.verdict,
                        summary.run_dir.display()
                    ));
                }
                collector
                    .transcript()
                    .stable_text(&scenario, Normalizer::standard())
            }
            Err(e) => {
                not_passed.push(format!("{}: error: {e:#}", scenario.name));
                format!("error: {e:#}\n")
            }
        };
        insta::with_settings!({
            snapshot_path => "../../scenarios/snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(text);
        });
    });
    assert!(
        not_passed.is_empty(),
        "scenarios that did not pass:\n{}",
        not_passed.join("\n")
    );
}
