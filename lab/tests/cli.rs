//! The `lab` binary as users run it: exit codes, error messages that name
//! file:line:column without a panic or backtrace, and what a failed run
//! prints.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn lab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(args)
        .current_dir(workspace_root())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn malformed_scenarios_exit_2_with_file_line_column() {
    let cases = [
        ("bad_yaml", "6:1", "found unexpected end of stream"),
        (
            "unknown_field",
            "6:3",
            "machine: unknown field `memroy-mib`",
        ),
        (
            "wrong_type",
            "5:9",
            "machine.cpus: invalid type: string \"two\"",
        ),
        ("missing_field", "1:1", "missing field `description`"),
    ];
    for (name, location, message) in cases {
        let file = format!("lab/tests/fixtures/scenarios/bad/{name}.yaml");
        let out = lab(&["scenario", &file]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        let expected = format!("error: {file}:{location}: ");
        assert!(stderr.starts_with(&expected), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "{name}: nothing runs");
    }
}

#[test]
fn unknown_scenario_exits_2_and_names_the_file() {
    let out = lab(&["scenario", "no_such_scenario"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: no scenario `no_such_scenario`: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("scenarios/no_such_scenario.yaml does not exist"),
        "{stderr}"
    );
}

#[test]
fn list_shows_every_scenario_file() {
    let out = lab(&["list"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let dir = workspace_root().join("scenarios");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            assert!(
                stdout.lines().any(|l| l.starts_with(&format!("{stem} "))),
                "{stem} missing from:\n{stdout}"
            );
        }
    }
}

#[test]
fn failed_run_exits_1_with_tail_artifacts_and_rerun_command() {
    let file = "lab/tests/fixtures/scenarios/run/hv_wrong_banner.yaml";
    let out = lab(&["scenario", file]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("FAILED hv_wrong_banner"), "{stdout}");
    assert!(
        stdout.contains("console lines ---\nhypervisor 0.1.0: EL2, 2 CPUs"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "reproduce: cargo run -p lab -- scenario {file}  # at git "
        )),
        "{stdout}"
    );
    let artifacts = stdout
        .lines()
        .find_map(|l| l.strip_prefix("artifacts: "))
        .expect("an artifacts line");
    let dir = workspace_root().join(artifacts);
    assert!(dir.join("console.log").is_file(), "{}", dir.display());
    assert!(dir.join("result.json").is_file(), "{}", dir.display());
}

#[test]
fn passing_run_exits_0_and_shows_artifacts() {
    let out = lab(&["scenario", "hv_boot"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("PASSED hv_boot in "), "{stdout}");
    let artifacts = stdout
        .lines()
        .find_map(|l| l.strip_prefix("artifacts: "))
        .expect("an artifacts line");
    assert!(workspace_root()
        .join(artifacts)
        .join("result.json")
        .is_file());
}

#[test]
fn failed_build_exits_2_with_the_compiler_output() {
    let out = lab(&[
        "scenario",
        "lab/tests/fixtures/scenarios/run/no_such_crate.yaml",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: build no_such_crate failed: "),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "`cargo build -p no_such_crate --target aarch64-unknown-none --release` failed"
        ),
        "{stderr}"
    );
    // cargo's own message follows.
    assert!(stderr.contains("no_such_crate"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ERROR no_such_crate in "), "{stdout}");
}

#[test]
fn doctor_reports_each_check() {
    let out = lab(&["doctor"]);
    let stdout = text(&out.stdout);
    for what in ["qemu", "rust target", "image cache", "target dir"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.get(8..).is_some_and(|rest| rest.starts_with(what))),
            "{what} missing from:\n{stdout}"
        );
    }
    // Exit 0 exactly when nothing is MISSING.
    let missing = stdout.lines().any(|l| l.starts_with("MISSING"));
    assert_eq!(
        out.status.code(),
        Some(if missing { 2 } else { 0 }),
        "{stdout}"
    );
}
