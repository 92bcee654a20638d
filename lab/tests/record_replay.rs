//! Record/replay on real QEMU: a scenario recorded with `--record` replays
//! (`lab replay <run-dir>`) to the same normalised console transcript, line
//! for line, and the replay passes the scenario's steps too. A scenario
//! that ends with QEMU's own exit replays completely; one the lab stops
//! after its last step (Linux at its shell) replays identically up to
//! where the lab stopped the replay. `linux_single` types long lines into
//! its shell, which the recorder only takes echo-paced (`run::typing`).

use lab::normalize::Normalizer;
use lab::replay::{self, REPLAY_DIR, REPLAY_LOG};
use lab::run::artifacts::CONSOLE_LOG;
use lab::run::events::Verdict;
use lab::run::record::ResultWriter;
use lab::run::{Lab, RunOptions};
use lab::scenario::{self, scenarios_dir};
use regex::Regex;
use std::path::Path;

/// The normalised console, without QEMU's own message when the lab ends
/// the recording with SIGTERM (host output, not the guest's).
fn transcript(run_dir: &Path) -> Vec<String> {
    let raw = std::fs::read(run_dir.join(CONSOLE_LOG)).unwrap();
    let host = Regex::new(r"qemu-system-aarch64: terminating on signal .*$").unwrap();
    Normalizer::standard()
        .transcript(&raw)
        .into_iter()
        .map(|line| host.replace(&line, "").trim_end().to_owned())
        .collect()
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
        false,
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
    let dirs = format!(
        "{} vs {}",
        recorded.run_dir.display(),
        replayed.run_dir.display()
    );
    if scenario.expects_exit() {
        assert_eq!(a, b, "{dirs}");
    } else {
        // The replay was stopped after its last step: its last line may be
        // cut short. Every line before it is the recording's.
        let whole = b.len().saturating_sub(1);
        assert!(whole > 3, "{b:?}");
        assert_eq!(a[..whole], b[..whole], "{dirs}");
    }
}

#[test]
fn testguest_bare_replays_to_the_same_transcript() {
    record_and_replay("testguest_bare");
}

#[test]
fn testguest_single_replays_to_the_same_transcript() {
    record_and_replay("testguest_single");
}

#[test]
fn linux_bare_replays_to_the_same_transcript() {
    record_and_replay("linux_bare");
}

#[test]
fn linux_single_replays_to_the_same_transcript() {
    record_and_replay("linux_single");
}
