//! The test guest's battery, bare and under the hypervisor: every check
//! that the bare run of a pair reports must report the same verdict in the
//! virtualized run of that pair (the hypervisor's may run more, such as the
//! misbehaviour checks). Read from the pair's transcript snapshots, which
//! `scenario_transcripts` checks against live runs on QEMU; a check added to
//! one side only, or a verdict that differs, fails here with the table of
//! both.

use std::collections::BTreeMap;
use std::path::Path;

/// (bare scenario, hypervisor scenario).
const PAIRS: &[(&str, &str)] = &[
    ("testguest_bare", "testguest_single"),
    ("testguest_smp_bare", "testguest_smp"),
    ("testguest_smp_bare", "testguest_smp_oversub"),
];

/// `check -> PASS|FAIL` of the `TESTGUEST <check>: <verdict> ...` lines of
/// a scenario's transcript snapshot.
fn verdicts(scenario: &str) -> BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/snapshots")
        .join(format!("scenario_transcript@{scenario}.yaml.snap"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|line| {
            let (check, rest) = line.strip_prefix("TESTGUEST ")?.split_once(": ")?;
            let verdict = rest.split_whitespace().next()?;
            matches!(verdict, "PASS" | "FAIL").then(|| (check.to_owned(), verdict.to_owned()))
        })
        .collect()
}

#[test]
fn every_check_has_the_same_verdict_bare_and_virtualized() {
    for (bare_name, hv_name) in PAIRS {
        let (bare, hv) = (verdicts(bare_name), verdicts(hv_name));
        assert!(!bare.is_empty(), "{bare_name}: no TESTGUEST check lines");
        let table: String = bare
            .iter()
            .map(|(check, verdict)| {
                let other = hv.get(check).map_or("(not run)", String::as_str);
                format!("| {check} | {verdict} | {other} |\n")
            })
            .collect();
        let differ: Vec<&String> = bare
            .iter()
            .filter(|(check, verdict)| hv.get(*check) != Some(*verdict))
            .map(|(check, _)| check)
            .collect();
        assert!(
            differ.is_empty(),
            "{bare_name} vs {hv_name}: {differ:?} differ\n| check | bare | hypervisor |\n{table}"
        );
    }
}
