//! One snapshot per scenario file of the QEMU command line the lab would
//! run, rendered by the lab's own redaction (files by label). A new
//! `scenarios/*.yaml` is a new snapshot; review with `cargo insta review`.

use lab::run::boot::planned_command;
use lab::scenario::Scenario;

#[test]
fn qemu_command_line() {
    insta::glob!("../../scenarios", "*.yaml", |path| {
        let scenario = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
        let rendered = match planned_command(std::path::Path::new("qemu-system-aarch64"), &scenario)
        {
            Ok(command) => command.redacted(),
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
