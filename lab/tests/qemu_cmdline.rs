//! One snapshot per scenario file of the QEMU command line the lab would
//! run, rendered by the lab's own redaction (files and ports by label); a
//! direct boot of several VMs shows each VM's process in start order. A
//! new `scenarios/*.yaml` is a new snapshot; review with `cargo insta
//! review`.

use lab::images::manifest::Manifest;
use lab::run::boot::planned_commands;
use lab::scenario::Scenario;

#[test]
fn qemu_command_line() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let images = Manifest::load(&root).unwrap_or_else(|e| panic!("{e}"));
    insta::glob!("../../scenarios", "*.yaml", |path| {
        let scenario = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
        let qemu = std::path::Path::new("qemu-system-aarch64");
        let rendered = match planned_commands(qemu, &scenario, &images) {
            Ok(commands) if commands.len() == 1 => commands[0].redacted(),
            Ok(commands) => commands
                .iter()
                .zip(&scenario.vms)
                .map(|(command, vm)| format!("# {}\n{}", vm.name, command.redacted()))
                .collect(),
            Err(e) => format!("cannot boot: {e:#}\n"),
        };
        insta::with_settings!({
            snapshot_path => "../../scenarios/snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(rendered);
        });
    });
}
