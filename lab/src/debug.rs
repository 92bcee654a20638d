//! Debugging a run with gdb: QEMU's gdbstub arguments (`-s -S`: listen on
//! TCP port 1234 and wait for the debugger before the first instruction)
//! and the one `gdb-multiarch` line that attaches with the right symbols:
//! the hypervisor's ELF when QEMU boots the hypervisor, the guest crate's
//! ELF for a direct boot of an in-tree guest (a Debian kernel has none).

use crate::build::{BARE_METAL_TARGET, HYPERVISOR_CRATE};
use crate::scenario::{BootMode, KernelSource, Scenario};
use std::path::{Path, PathBuf};

/// The port `-s` listens on.
pub const GDB_PORT: u16 = 1234;

/// QEMU arguments: gdbstub on [`GDB_PORT`], CPUs halted until gdb continues.
pub fn gdbstub_args() -> Vec<String> {
    vec!["-s".into(), "-S".into()]
}

/// The crate whose ELF has the symbols of the first code QEMU runs.
pub fn symbol_crate(scenario: &Scenario) -> Option<&str> {
    match scenario.boot {
        BootMode::Hypervisor => Some(HYPERVISOR_CRATE),
        BootMode::Direct => match &scenario.vms.first()?.kernel {
            KernelSource::Crate(krate) => Some(krate),
            KernelSource::Image(_) => None,
        },
    }
}

/// Where cargo leaves a bare-metal crate's ELF.
pub fn elf_path(target_dir: &Path, krate: &str) -> PathBuf {
    target_dir
        .join(BARE_METAL_TARGET)
        .join("release")
        .join(krate)
}

/// The command that attaches gdb (`elf`: the symbols, if there are any).
pub fn gdb_line(elf: Option<&Path>) -> String {
    let symbols = elf
        .map(|e| {
            format!(
                " {}",
                crate::qemu::cmdline::shell_quote(&e.display().to_string())
            )
        })
        .unwrap_or_default();
    format!("gdb-multiarch{symbols} -ex 'target remote :{GDB_PORT}'")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(boot: &str, kernel: &str) -> Scenario {
        Scenario::parse(
            Path::new("s.yaml"),
            &format!(
                "schema: 1\nname: s\ndescription: d\nmachine: {{ cpus: 1, memory-mib: 256 }}\nboot: {boot}\n\
                 vms: [{{ name: vm0, kernel: {kernel}, vcpus: 1, memory-mib: 64 }}]\nsteps: []\n"
            ),
        )
        .unwrap()
    }

    #[test]
    fn symbols_follow_what_qemu_boots() {
        assert_eq!(
            symbol_crate(&scenario("hypervisor", "{ crate: testguest }")),
            Some("hypervisor")
        );
        assert_eq!(
            symbol_crate(&scenario("direct", "{ crate: testguest }")),
            Some("testguest")
        );
        assert_eq!(
            symbol_crate(&scenario("direct", "{ image: linux-cloud }")),
            None
        );
    }

    #[test]
    fn the_gdb_line() {
        let elf = elf_path(Path::new("/w/target"), "hypervisor");
        assert_eq!(
            gdb_line(Some(&elf)),
            "gdb-multiarch /w/target/aarch64-unknown-none/release/hypervisor -ex 'target remote :1234'"
        );
        assert_eq!(gdb_line(None), "gdb-multiarch -ex 'target remote :1234'");
    }
}
