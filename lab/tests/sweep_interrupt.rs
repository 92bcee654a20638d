//! Ctrl-C during a sweep leaves no QEMU behind. The test makes itself a
//! child subreaper, so a QEMU the lab failed to kill would be re-parented
//! to the test instead of init and could not escape the check; it starts
//! `lab sweep` on a scenario whose guest runs forever, waits for that QEMU
//! to appear among its descendants, sends SIGINT to the lab, and then
//! requires the lab to exit 1 with a summary that says "interrupted", and
//! no `qemu-system-aarch64` anywhere below the test.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (pid, parent pid, first word of the command line) of every process.
fn processes() -> Vec<(i32, i32, String)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may contain spaces: split after ')'.
        let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let ppid = after
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let program = cmdline
            .split(|&b| b == 0)
            .next()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        all.push((pid, ppid, program));
    }
    all
}

/// QEMU processes whose parent chain leads to this test.
fn our_qemus() -> Vec<i32> {
    let me = std::process::id() as i32;
    let all = processes();
    let parent: HashMap<i32, i32> = all.iter().map(|(p, pp, _)| (*p, *pp)).collect();
    all.iter()
        .filter(|(_, _, program)| program.ends_with("qemu-system-aarch64"))
        .filter(|(pid, _, _)| {
            let mut at = *pid;
            for _ in 0..64 {
                match parent.get(&at) {
                    Some(&up) if up == me => return true,
                    Some(&up) if up > 1 => at = up,
                    _ => return false,
                }
            }
            false
        })
        .map(|(pid, _, _)| *pid)
        .collect()
}

#[test]
fn ctrl_c_during_a_sweep_leaves_no_qemu() {
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sweep");
    let lab = Command::new(env!("CARGO_BIN_EXE_lab"))
        .arg("sweep")
        .arg("--scenarios")
        .arg(&fixtures)
        .args(["--filter", "^sweep_hang$", "-j", "1", "--offline"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lab_pid = Pid::from_raw(lab.id() as i32);

    let deadline = Instant::now() + Duration::from_secs(120);
    let started = loop {
        let qemus = our_qemus();
        if !qemus.is_empty() {
            break qemus;
        }
        assert!(Instant::now() < deadline, "no QEMU started within 120s");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Let the guest get going, then interrupt the lab as a terminal would.
    std::thread::sleep(Duration::from_secs(1));
    kill(lab_pid, Signal::SIGINT).unwrap();

    let output = lab.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains(", interrupted"), "{stdout}");
    assert!(
        stdout.contains("FAILED sweep_hang: step 1: interrupted"),
        "{stdout}"
    );

    let left = our_qemus();
    // Reap anything re-parented to us so a failure does not leave zombies.
    while nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        .is_ok_and(|s| s != nix::sys::wait::WaitStatus::StillAlive)
    {}
    assert!(
        left.is_empty(),
        "QEMU left behind: {left:?} (started: {started:?})"
    );
    for pid in started {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "QEMU {pid} still exists"
        );
    }
}
