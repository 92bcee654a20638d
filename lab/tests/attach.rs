//! `--attach` as a user meets it: the `lab` binary on a terminal (a pty)
//! runs `linux_bare`'s steps, hands over the console, runs what the user
//! types in the guest's shell, and gives the terminal back on `Ctrl-]`
//! with the run's verdict as its exit status.

use nix::sys::wait::WaitStatus;
use rexpect::session::spawn_command;
use std::path::Path;
use std::process::Command;

#[test]
fn attach_hands_the_shell_over_and_detaches_on_ctrl_bracket() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new(env!("CARGO_BIN_EXE_lab"));
    command
        .args(["scenario", "linux_bare", "--attach"])
        .current_dir(&root);
    let mut lab = spawn_command(command, Some(300_000)).expect("spawn lab on a pty");
    lab.exp_string("lab: attached to the console")
        .expect("the steps pass and the console is handed over");
    // Typed as `$((6*7))`: only the guest's shell turns it into 42.
    lab.send_line("echo attached-$((6*7))").unwrap();
    lab.exp_string("attached-42")
        .expect("the guest's shell runs what the user types");
    lab.send_control(']').unwrap();
    lab.exp_string("lab: detached").expect("Ctrl-] detaches");
    lab.exp_string("PASSED linux_bare")
        .expect("the verdict after detaching");
    lab.exp_eof().expect("lab exits");
    let status = lab.process().wait().expect("lab's exit status");
    assert!(
        matches!(status, WaitStatus::Exited(_, 0)),
        "lab exited with {status:?}"
    );
}
