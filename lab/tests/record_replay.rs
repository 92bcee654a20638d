//! Record/replay on real QEMU: a scenario recorded with `--record` replays
//! (`lab replay <run-dir>`) to the same normalised console transcript, line
//! for line, and the replay passes the scenario's steps too.

use lab::normalize::Normalizer;
use lab::replay::{self, REPLAY_DIR, REPLAY_LOG};
use lab::run::artifacts::CONSOLE_LOG;
use lab::run::events::Verdict;
use lab::run::record::ResultWriter;
use lab::run::{Lab, RunOptions};
use lab::scenario::{self, scenarios_dir};
use std::path::Path;

fn transcript(run_dir: &Path) -> Vec<String> {
    let raw = std::fs::read(run_dir.join(CONSOLE_LOG)).unwrap();
    Normalizer::standard().transcript(&raw)
}

fn record_and_replay(name: &str) {
    let lab = Lab::discover().unwrap();
    let qemu = lab::qemu::provision::ensure_qemu().unwrap();
    let file = scenarios_dir(&lab.root).join(format!("{name}.yaml"));
    let scenario = scenario::load_by_name(&lab.root, name).unwrap();
    let options = RunOptions {
        offline: true,
        rerun: format!("cargo run -p lab -- scenario {name} --record"),
        ..RunOptions::default()
    };
    let recorded = replay::record(
        &lab,
        &scenario,
        &file,
        &qemu,
        &options,
        vec![Box::new(ResultWriter::default())],
    )
    .unwrap();
    assert_eq!(
        recorded.verdict,
        Verdict::Passed,
        "{}",
        recorded.run_dir.display()
    );
    let log = recorded.run_dir.join(REPLAY_DIR).join(REPLAY_LOG);
    assert!(log.metadata().unwrap().len() > 0, "{}", log.display());

    let replayed = replay::replay(
        &lab,
        &recorded.run_dir,
        &qemu,
        &[],
        vec![Box::new(ResultWriter::default())],
    )
    .unwrap();
    assert_eq!(
        replayed.verdict,
        Verdict::Passed,
        "{}",
        replayed.run_dir.display()
    );
    let (a, b) = (transcript(&recorded.run_dir), transcript(&replayed.run_dir));
    assert!(a.len() > 3, "{a:?}");
    assert_eq!(
        a,
        b,
        "{} vs {}",
        recorded.run_dir.display(),
        replayed.run_dir.display()
    );
}

#[test]
fn testguest_bare_replays_to_the_same_transcript() {
    record_and_replay("testguest_bare");
}

#[test]
fn testguest_single_replays_to_the_same_transcript() {
    record_and_replay("testguest_single");
}
