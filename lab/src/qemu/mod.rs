//! QEMU: the command line a scenario needs (pure functions), and finding or
//! installing `qemu-system-aarch64` on the host.

pub mod cmdline;
pub mod provision;

pub use cmdline::{
    qemu_command, qemu_command_of, BootFiles, DiskFile, LabeledPath, NetPort, QemuArg, QemuCommand,
};
