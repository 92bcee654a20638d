//! The QEMU command line of a scenario, built from small pure functions.
//!
//! Paths enter the command as [`LabeledPath`]s: the lab knows which argument
//! is which file, so [`QemuCommand::redacted`] prints `<hypervisor.bin>`
//! instead of a host path. Snapshots use that rendering; nothing is scrubbed
//! after the fact.

use crate::scenario::net::interface_name;
use crate::scenario::{BootMode, MacAddr, Scenario, Vm};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The QEMU binary the lab runs.
pub const QEMU_BINARY: &str = "qemu-system-aarch64";

/// A host file with the stable name snapshots show for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledPath {
    pub label: String,
    pub path: PathBuf,
}

impl LabeledPath {
    pub fn new(label: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        LabeledPath {
            label: label.into(),
            path: path.into(),
        }
    }
}

/// What QEMU loads: `-kernel`, optionally an initrd (a direct boot's
/// `-initrd`, or the hypervisor's bundle as a fw_cfg file), and for a direct
/// boot the raw files of the VM's disks (in its `disks` order) and its
/// network interfaces (in its `net` order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub kernel: LabeledPath,
    /// Load `kernel` raw at this address and start there (QEMU's generic
    /// loader) instead of `-kernel`.
    pub raw_load: Option<u64>,
    pub initrd: Option<LabeledPath>,
    pub disks: Vec<DiskFile>,
    pub net: Vec<NetPort>,
    /// With a secure world, TF-A and OP-TEE boot, and the kernel (the
    /// hypervisor) and initrd (its bundle) reach it another way.
    pub firmware: Option<SecureWorldFiles>,
}

/// The secure world's files: TF-A + OP-TEE's flash image (`-bios`) and the
/// file the secure UART (OP-TEE's console) writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecureWorldFiles {
    pub flash: LabeledPath,
    pub secure_console: LabeledPath,
}

/// A directly booted VM's interface: QEMU's virtio-net on a socket netdev
/// that joins it to the one other interface on its switch, over TCP on
/// 127.0.0.1 only. The first VM on a switch listens, the second connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPort {
    pub switch: String,
    pub mac: MacAddr,
    pub listen: bool,
    /// Chosen when the run starts; `None` in a plan (shown by its switch).
    pub port: Option<u16>,
}

/// A disk QEMU's own virtio-blk serves from a raw file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFile {
    pub file: LabeledPath,
    pub read_only: bool,
}

/// One argument: text, a file the lab produced or resolved, or an option
/// with a file inside (`file=<path>,...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuArg {
    Text(String),
    File(LabeledPath),
    FileOption {
        before: String,
        file: LabeledPath,
        after: String,
    },
    /// An option with a TCP port the run picks (`listen=127.0.0.1:<port>`),
    /// shown as `<switch-port>` in snapshots.
    PortOption {
        before: String,
        switch: String,
        port: Option<u16>,
        after: String,
    },
}

/// A QEMU invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCommand {
    pub program: PathBuf,
    pub args: Vec<QemuArg>,
}

impl QemuCommand {
    /// The arguments as the process gets them.
    pub fn argv(&self) -> Vec<OsString> {
        self.args
            .iter()
            .map(|arg| match arg {
                QemuArg::Text(text) => OsString::from(text),
                QemuArg::File(file) => file.path.clone().into_os_string(),
                // QEMU's option syntax doubles a comma inside a value.
                QemuArg::FileOption {
                    before,
                    file,
                    after,
                } => OsString::from(format!(
                    "{before}{}{after}",
                    file.path.to_string_lossy().replace(',', ",,")
                )),
                QemuArg::PortOption {
                    before,
                    port,
                    after,
                    ..
                } => OsString::from(format!("{before}{}{after}", port.unwrap_or(0))),
            })
            .collect()
    }

    /// One shell line that runs exactly this command (`qemu-cmdline.txt`).
    pub fn shell_line(&self) -> String {
        let mut words = vec![shell_quote(&self.program.to_string_lossy())];
        words.extend(
            self.argv()
                .iter()
                .map(|arg| shell_quote(&arg.to_string_lossy())),
        );
        words.join(" ")
    }

    /// Host-independent rendering, one option per line: the program by its
    /// name and every file by its label.
    pub fn redacted(&self) -> String {
        let program = self
            .program
            .file_name()
            .map_or_else(|| QEMU_BINARY.into(), |name| name.to_string_lossy());
        let mut out = shell_quote(&program);
        for arg in &self.args {
            let word = match arg {
                QemuArg::Text(text) => shell_quote(text),
                QemuArg::File(file) => format!("<{}>", file.label),
                QemuArg::FileOption {
                    before,
                    file,
                    after,
                } => shell_quote(&format!("{before}<{}>{after}", file.label)),
                QemuArg::PortOption {
                    before,
                    switch,
                    after,
                    ..
                } => shell_quote(&format!("{before}<{switch}-port>{after}")),
            };
            let starts_option = matches!(arg, QemuArg::Text(t) if t.starts_with('-'));
            out.push_str(if starts_option { " \\\n  " } else { " " });
            out.push_str(&word);
        }
        out.push('\n');
        out
    }
}

/// `-M` for a boot mode: the hypervisor needs EL2 (`virtualization=on`); a
/// direct boot enters the guest kernel at EL1.
pub fn machine_option(boot: BootMode, secure_world: bool) -> String {
    let mut option = String::from("virt");
    if boot == BootMode::Hypervisor {
        option.push_str(",virtualization=on");
    }
    if secure_world {
        option.push_str(",secure=on");
    }
    option.push_str(",gic-version=3");
    option
}

/// CPUs and MiB QEMU gives the machine. A direct boot gives QEMU the VM's
/// own shape, so the baseline guest sees what it would see as a VM.
pub fn machine_shape(scenario: &Scenario) -> (u32, u64) {
    machine_shape_of(scenario, 0)
}

/// [`machine_shape`] of the QEMU process that boots VM `vm` directly (the
/// one QEMU process under the hypervisor).
pub fn machine_shape_of(scenario: &Scenario, vm: usize) -> (u32, u64) {
    match (scenario.boot, scenario.vms.get(vm)) {
        (BootMode::Direct, Some(vm)) => (vm.vcpus, vm.memory_mib),
        _ => (scenario.machine.cpus, scenario.machine.memory_mib),
    }
}

/// A VM's kernel command line. A Linux VM on the lab's initramfs gets the
/// lab's arguments (its console, its name, and
/// `lab.ip=<interface>:<address>/<prefix>` per interface with an address,
/// which the initramfs' `/init` configures), then its own; any other VM gets
/// exactly its scenario's `cmdline` (a guest may parse its bootargs as its
/// own argument list, and then refuses arguments it does not know).
pub fn vm_bootargs(vm: &Vm) -> String {
    if !vm.initramfs {
        return vm.cmdline.clone();
    }
    let mut line = format!("console=ttyAMA0 lab.name={}", vm.name);
    for (index, interface) in vm.net.iter().enumerate() {
        if let Some(ip) = interface.ip {
            line.push_str(&format!(" lab.ip={}:{ip}", interface_name(index)));
        }
    }
    if !vm.cmdline.trim().is_empty() {
        line.push(' ');
        line.push_str(vm.cmdline.trim());
    }
    line
}

/// The kernel command line (`-append`), if any: the hypervisor's arguments,
/// or for a direct boot the VM's command line.
pub fn kernel_append(scenario: &Scenario) -> Option<String> {
    kernel_append_of(scenario, 0)
}

/// [`kernel_append`] of the QEMU process that boots VM `vm` directly.
fn kernel_append_of(scenario: &Scenario, vm: usize) -> Option<String> {
    match (scenario.boot, scenario.vms.get(vm)) {
        (BootMode::Direct, Some(vm)) => Some(vm_bootargs(vm)).filter(|line| !line.is_empty()),
        _ => scenario
            .machine
            .hypervisor_args
            .as_deref()
            .map(str::trim)
            .filter(|args| !args.is_empty())
            .map(str::to_owned),
    }
}

/// The whole command line for a scenario and the files it boots.
pub fn qemu_command(program: &Path, scenario: &Scenario, files: &BootFiles) -> QemuCommand {
    qemu_command_of(program, scenario, 0, files)
}

/// The command line of the QEMU process that boots VM `vm` (a direct boot
/// runs one per VM; the hypervisor's one process is number 0).
pub fn qemu_command_of(
    program: &Path,
    scenario: &Scenario,
    vm: usize,
    files: &BootFiles,
) -> QemuCommand {
    let (cpus, memory_mib) = machine_shape_of(scenario, vm);
    let text = |s: &str| QemuArg::Text(s.to_owned());
    let mut args = vec![
        text("-M"),
        QemuArg::Text(machine_option(scenario.boot, scenario.machine.secure_world)),
        text("-cpu"),
        text(scenario.machine.cpu.qemu_name()),
        text("-smp"),
        QemuArg::Text(cpus.to_string()),
        text("-m"),
        QemuArg::Text(format!("{memory_mib}M")),
        text("-nographic"),
        // No default NIC: the board would add a PCI one (and need its
        // option ROM); a scenario's network is what it declares.
        text("-nic"),
        text("none"),
        // A guest reset ends the run instead of booting again.
        text("-no-reboot"),
    ];
    match (&files.firmware, files.raw_load) {
        (Some(firmware), _) => args.extend(secure_world_args(files, firmware)),
        (None, None) => {
            args.extend([text("-kernel"), QemuArg::File(files.kernel.clone())]);
            match (&files.initrd, scenario.boot) {
                // The hypervisor reads the bundle from fw_cfg: it fetches the
                // manifest and has QEMU copy each VM's files straight into
                // the VM (an initrd would sit in the machine's RAM as well).
                (Some(bundle), BootMode::Hypervisor) => args.extend(bundle_fw_cfg(bundle)),
                (Some(initrd), BootMode::Direct) => {
                    args.extend([text("-initrd"), QemuArg::File(initrd.clone())]);
                }
                (None, _) => {}
            }
        }
        (None, Some(at)) => args.extend([
            text("-device"),
            QemuArg::FileOption {
                before: "loader,file=".into(),
                file: files.kernel.clone(),
                after: format!(",addr={at:#x},force-raw=on"),
            },
            text("-device"),
            QemuArg::Text(format!("loader,addr={at:#x},cpu-num=0")),
        ]),
    }
    if let Some(append) = kernel_append_of(scenario, vm).filter(|_| files.raw_load.is_none()) {
        args.push(text("-append"));
        args.push(QemuArg::Text(append));
    }
    if !files.disks.is_empty() || !files.net.is_empty() {
        // virtio 1.x, as the hypervisor's devices are.
        args.extend([text("-global"), text("virtio-mmio.force-legacy=false")]);
    }
    // QEMU's virt board gives command-line virtio-mmio devices the free
    // slots from the highest address down, and Linux names devices in
    // address order: listing them last first (disks, then interfaces, each
    // backwards) makes the VM's first interface eth0 and its first disk
    // `/dev/vda`, as under the hypervisor (which numbers slots from 0).
    for (index, disk) in files.disks.iter().enumerate().rev() {
        let id = format!("disk{index}");
        let read_only = if disk.read_only { ",readonly=on" } else { "" };
        args.push(text("-drive"));
        args.push(QemuArg::FileOption {
            before: "file=".into(),
            file: disk.file.clone(),
            after: format!(",if=none,format=raw,id={id}{read_only}"),
        });
        args.push(text("-device"));
        args.push(QemuArg::Text(format!(
            "virtio-blk-device,drive={id},serial={id}"
        )));
    }
    for (index, port) in files.net.iter().enumerate().rev() {
        let id = format!("net{index}");
        let role = if port.listen { "listen" } else { "connect" };
        args.push(text("-netdev"));
        args.push(QemuArg::PortOption {
            before: format!("socket,id={id},{role}=127.0.0.1:"),
            switch: port.switch.clone(),
            port: port.port,
            after: String::new(),
        });
        args.push(text("-device"));
        args.push(QemuArg::Text(format!(
            "virtio-net-device,netdev={id},mac={}",
            port.mac
        )));
    }
    QemuCommand {
        program: program.to_owned(),
        args,
    }
}

/// TF-A boots from the flash and jumps to BL33 where QEMU's loader put the
/// hypervisor; the bundle travels as a fw_cfg file, as in a direct boot;
/// the second UART, the secure one, writes to a file.
fn secure_world_args(files: &BootFiles, firmware: &SecureWorldFiles) -> Vec<QemuArg> {
    let text = |s: &str| QemuArg::Text(s.to_owned());
    let mut args = vec![
        text("-bios"),
        QemuArg::File(firmware.flash.clone()),
        text("-device"),
        QemuArg::FileOption {
            before: "loader,file=".into(),
            file: files.kernel.clone(),
            after: format!(",addr={:#x},force-raw=on", crate::firmware::BL33_BASE),
        },
    ];
    if let Some(bundle) = &files.initrd {
        args.extend(bundle_fw_cfg(bundle));
    }
    args.extend([
        text("-serial"),
        text("mon:stdio"),
        text("-serial"),
        QemuArg::FileOption {
            before: "file:".into(),
            file: firmware.secure_console.clone(),
            after: String::new(),
        },
    ]);
    args
}

/// The fw_cfg file the hypervisor reads its bundle from
/// (`hypervisor/src/boot/fw_cfg.rs`).
pub const BUNDLE_FW_CFG_FILE: &str = "opt/org.hvlab/bundle";

/// The arguments that pass the boot bundle as [`BUNDLE_FW_CFG_FILE`].
fn bundle_fw_cfg(bundle: &LabeledPath) -> [QemuArg; 2] {
    [
        QemuArg::Text("-fw_cfg".to_owned()),
        QemuArg::FileOption {
            before: format!("name={BUNDLE_FW_CFG_FILE},file="),
            file: bundle.clone(),
            after: String::new(),
        },
    ]
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./,=:+@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(yaml: &str) -> Scenario {
        Scenario::parse(Path::new("t.yaml"), yaml).unwrap()
    }

    const HV: &str =
        "schema: 1\nname: t\ndescription: d\nmachine: { cpus: 2, memory-mib: 512 }\nsteps: []\n";
    const DIRECT: &str = "schema: 1\nname: t\ndescription: d\nmachine: { cpus: 4, memory-mib: 2048 }\nboot: direct\nvms:\n  - { name: vm0, kernel: { image: k }, initramfs: true, cmdline: ' quiet ', vcpus: 1, memory-mib: 256 }\nsteps: []\n";

    #[test]
    fn machine_option_table() {
        let cases = [
            (
                BootMode::Hypervisor,
                false,
                "virt,virtualization=on,gic-version=3",
            ),
            (
                BootMode::Hypervisor,
                true,
                "virt,virtualization=on,secure=on,gic-version=3",
            ),
            (BootMode::Direct, false, "virt,gic-version=3"),
        ];
        for (boot, secure, expected) in cases {
            assert_eq!(machine_option(boot, secure), expected);
        }
    }

    #[test]
    fn shape_and_append_follow_the_boot_mode() {
        let hv = scenario(HV);
        assert_eq!(machine_shape(&hv), (2, 512));
        assert_eq!(kernel_append(&hv), None);
        let direct = scenario(DIRECT);
        assert_eq!(machine_shape(&direct), (1, 256));
        assert_eq!(
            kernel_append(&direct).as_deref(),
            Some("console=ttyAMA0 lab.name=vm0 quiet")
        );
        // Without the lab's initramfs: exactly the scenario's cmdline, and
        // no -append at all for an empty one.
        let own = scenario(&DIRECT.replace("initramfs: true, ", ""));
        assert_eq!(kernel_append(&own).as_deref(), Some(" quiet "));
        let none = scenario(&DIRECT.replace("initramfs: true, cmdline: ' quiet ', ", ""));
        assert_eq!(kernel_append(&none), None);
        let args = scenario(&HV.replace("512 }", "512, hypervisor-args: 'hv.debug=panic' }"));
        assert_eq!(kernel_append(&args).as_deref(), Some("hv.debug=panic"));
    }

    #[test]
    fn argv_has_paths_and_redacted_has_labels() {
        let files = BootFiles {
            kernel: LabeledPath::new("hypervisor.bin", "/t/hypervisor.bin"),
            raw_load: None,
            initrd: Some(LabeledPath::new("bundle.cpio", "/t/b c.cpio")),
            disks: Vec::new(),
            net: Vec::new(),
            firmware: None,
        };
        let cmd = qemu_command(
            Path::new("/usr/bin/qemu-system-aarch64"),
            &scenario(HV),
            &files,
        );
        let argv = cmd.argv();
        assert!(argv.contains(&OsString::from("/t/hypervisor.bin")));
        // The hypervisor's bundle goes by fw_cfg, never as an initrd.
        let line = cmd.shell_line();
        assert!(
            line.contains("-fw_cfg 'name=opt/org.hvlab/bundle,file=/t/b c.cpio'"),
            "{line}"
        );
        assert!(!line.contains("-initrd"), "{line}");
        assert!(cmd
            .shell_line()
            .starts_with("/usr/bin/qemu-system-aarch64 -M "));
        let redacted = cmd.redacted();
        assert!(redacted.contains("-kernel <hypervisor.bin>"), "{redacted}");
        assert!(!redacted.contains("/t/"), "{redacted}");
    }

    #[test]
    fn direct_disks_are_virtio_1_blk_devices_on_raw_files() {
        let files = BootFiles {
            kernel: LabeledPath::new("k", "/t/k"),
            raw_load: None,
            initrd: None,
            disks: vec![
                DiskFile {
                    file: LabeledPath::new("vm0/disk0.raw", "/t/a,b.raw"),
                    read_only: false,
                },
                DiskFile {
                    file: LabeledPath::new("vm0/disk1.raw", "/t/d1.raw"),
                    read_only: true,
                },
            ],
            net: vec![NetPort {
                switch: "lan0".into(),
                mac: "02:4c:41:42:00:01".parse().unwrap(),
                listen: true,
                port: Some(4321),
            }],
            firmware: None,
        };
        let cmd = qemu_command(Path::new("qemu-system-aarch64"), &scenario(DIRECT), &files);
        let line = cmd.shell_line();
        assert!(
            line.contains("-global virtio-mmio.force-legacy=false"),
            "{line}"
        );
        assert!(
            line.contains("-drive file=/t/a,,b.raw,if=none,format=raw,id=disk0 -device virtio-blk-device,drive=disk0,serial=disk0 -netdev"),
            "{line}"
        );
        assert!(
            line.ends_with("-netdev socket,id=net0,listen=127.0.0.1:4321 -device virtio-net-device,netdev=net0,mac=02:4c:41:42:00:01"),
            "{line}"
        );
        assert!(
            cmd.redacted()
                .contains("-netdev 'socket,id=net0,listen=127.0.0.1:<lan0-port>'"),
            "{}",
            cmd.redacted()
        );
        assert!(
            cmd.redacted()
                .contains("-drive 'file=<vm0/disk1.raw>,if=none,format=raw,id=disk1,readonly=on'"),
            "{}",
            cmd.redacted()
        );
    }

    #[test]
    fn shell_quote_table() {
        for (word, quoted) in [
            ("plain-1.0", "plain-1.0"),
            ("a b", "'a b'"),
            ("it's", r"'it'\''s'"),
            ("", "''"),
        ] {
            assert_eq!(shell_quote(word), quoted);
        }
    }
}
