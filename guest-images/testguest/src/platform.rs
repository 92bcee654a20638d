//! Discovery of the machine from the device tree the loader passed in x0:
//! the console PL011, the GICv3 frames, the PL031, the PSCI conduit, the
//! virtual timer's interrupt and the boot arguments. Nothing here touches
//! hardware, so the host tests run it against a DTB dumped from QEMU.

use core::fmt;

use fdt::node::FdtNode;
use fdt::Fdt;

/// How SMCCC calls (PSCI included) reach the firmware or hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    Hvc,
    Smc,
}

impl fmt::Display for Conduit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Conduit::Hvc => "hvc",
            Conduit::Smc => "smc",
        })
    }
}

/// A device's MMIO window as the device tree gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub base: usize,
    pub size: usize,
}

/// Everything the checks need to know about the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    pub uart: Window,
    /// INTID of the console PL011's interrupt (an SPI).
    pub uart_intid: u32,
    pub gicd: Window,
    pub gicr: Window,
    pub rtc: Window,
    /// INTID of the PL031's interrupt (an SPI).
    pub rtc_intid: u32,
    pub conduit: Conduit,
    /// INTID of the EL1 virtual timer (PPI), from the timer node.
    pub vtimer_intid: u32,
    /// INTID of the non-secure EL1 physical timer (PPI), from the timer node.
    pub ptimer_intid: u32,
    /// `/chosen/bootargs` asks for the misbehaviour checks.
    pub misbehave: bool,
    /// `/chosen/bootargs` asks for the attacks (`attacks`) instead of the
    /// machine checks.
    pub attack: bool,
    /// `/chosen/bootargs` asks for the FF-A battery instead of the
    /// machine checks.
    pub ffa: Option<FfaBattery>,
    /// `/chosen/bootargs` asks for the exit-cost measurements (`exits`)
    /// instead of the machine checks.
    pub exits: bool,
    /// The first `/memory` region.
    pub ram: Window,
    /// MPIDR affinity (`reg`) of each CPU node, in DT order; the first
    /// `cpu_count` entries are valid.
    pub cpus: [u64; MAX_CPUS],
    pub cpu_count: usize,
}

/// CPUs the guest keeps track of; more in the DT is an error.
pub const MAX_CPUS: usize = 8;

/// Why the device tree could not describe the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtError {
    /// No usable node with this compatible string.
    Missing(&'static str),
    /// The node has no `reg` entry at this index.
    NoReg(&'static str, usize),
    /// The node's `interrupts` property is not the GIC's 3-cell form.
    BadInterrupts(&'static str),
    /// `/psci` `method` is neither "hvc" nor "smc".
    BadConduit,
    /// A `/cpus` node without a usable `reg`, or more than MAX_CPUS.
    BadCpus,
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::Missing(what) => write!(f, "no enabled node compatible with {what}"),
            DtError::NoReg(what, index) => write!(f, "{what} has no reg entry {index}"),
            DtError::BadInterrupts(what) => {
                write!(f, "{what} interrupts are not 3-cell GIC specifiers")
            }
            DtError::BadConduit => f.write_str("/psci method is neither hvc nor smc"),
            DtError::BadCpus => write!(f, "/cpus: a cpu without reg, or more than {MAX_CPUS}"),
        }
    }
}

/// The boot argument that selects the misbehaviour checks.
pub const MISBEHAVE_ARG: &str = "testguest.misbehave";
/// The boot argument that makes the guest a hostile one (`attacks`).
pub const ATTACK_ARG: &str = "testguest.attack";
/// The boot argument that selects the FF-A battery.
pub const FFA_ARG: &str = "testguest.ffa";
/// The same, with the checks against another VM's share.
pub const FFA_PEER_ARG: &str = "testguest.ffa-peer";
/// The boot argument that selects the exit-cost measurements.
pub const EXITS_ARG: &str = "testguest.exits";

/// Which FF-A battery the boot arguments ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfaBattery {
    /// The one VM with FF-A.
    Alone,
    /// One of several VMs: also the checks against the other's share.
    WithPeer,
}

const PL011: &str = "arm,pl011";
const GICV3: &str = "arm,gic-v3";
const PL031: &str = "arm,pl031";
const VIRTIO_MMIO: &str = "virtio,mmio";
const TIMER: &str = "arm,armv8-timer";
const PSCI: [&str; 3] = ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];

/// Index of the virtual timer in the `arm,armv8-timer` interrupts list
/// (secure physical, non-secure physical, virtual, hypervisor).
const TIMER_VIRTUAL_INDEX: usize = 2;
/// The timer node's non-secure EL1 physical timer interrupt.
const TIMER_PHYSICAL_INDEX: usize = 1;
/// GIC interrupt specifier types (binding `arm,gic-v3`).
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;

impl Platform {
    pub fn discover(fdt: &Fdt<'_>) -> Result<Self, DtError> {
        let uart = console_uart(fdt).ok_or(DtError::Missing(PL011))?;
        let gic = enabled_compatible(fdt, GICV3).ok_or(DtError::Missing(GICV3))?;
        let rtc = enabled_compatible(fdt, PL031).ok_or(DtError::Missing(PL031))?;
        let timer = enabled_compatible(fdt, TIMER).ok_or(DtError::Missing(TIMER))?;
        let psci = fdt
            .find_compatible(&PSCI)
            .ok_or(DtError::Missing(PSCI[0]))?;
        let conduit = match psci.property("method").and_then(|p| p.as_str()) {
            Some("hvc") => Conduit::Hvc,
            Some("smc") => Conduit::Smc,
            _ => return Err(DtError::BadConduit),
        };
        let mut cpus = [0; MAX_CPUS];
        let mut cpu_count = 0;
        for cpu in fdt.cpus() {
            let reg = cpu
                .property("reg")
                .and_then(|p| p.as_usize())
                .ok_or(DtError::BadCpus)?;
            *cpus.get_mut(cpu_count).ok_or(DtError::BadCpus)? = reg as u64;
            cpu_count += 1;
        }
        let vtimer_intid =
            interrupt_intid(timer, TIMER_VIRTUAL_INDEX).ok_or(DtError::BadInterrupts(TIMER))?;
        let ptimer_intid =
            interrupt_intid(timer, TIMER_PHYSICAL_INDEX).ok_or(DtError::BadInterrupts(TIMER))?;
        let bootargs = fdt
            .find_node("/chosen")
            .and_then(|chosen| chosen.property("bootargs"))
            .and_then(|p| p.as_str())
            .unwrap_or("");
        let ram = fdt
            .memory()
            .regions()
            .next()
            .and_then(|r| {
                Some(Window {
                    base: r.starting_address as usize,
                    size: r.size?,
                })
            })
            .ok_or(DtError::Missing("/memory"))?;
        Ok(Platform {
            uart: reg(uart, PL011, 0)?,
            uart_intid: interrupt_intid(uart, 0).ok_or(DtError::BadInterrupts(PL011))?,
            rtc_intid: interrupt_intid(rtc, 0).ok_or(DtError::BadInterrupts(PL031))?,
            gicd: reg(gic, GICV3, 0)?,
            gicr: reg(gic, GICV3, 1)?,
            rtc: reg(rtc, PL031, 0)?,
            conduit,
            vtimer_intid,
            ptimer_intid,
            misbehave: wants_misbehaviour(bootargs),
            attack: has_word(bootargs, ATTACK_ARG),
            ffa: ffa_battery(bootargs),
            exits: has_word(bootargs, EXITS_ARG),
            ram,
            cpus,
            cpu_count,
        })
    }
}

/// Whether the command line carries [`MISBEHAVE_ARG`] as a whole word.
pub fn wants_misbehaviour(bootargs: &str) -> bool {
    has_word(bootargs, MISBEHAVE_ARG)
}

/// Whether the command line carries `word` as a whole word.
fn has_word(bootargs: &str, word: &str) -> bool {
    bootargs.split_ascii_whitespace().any(|arg| arg == word)
}

/// The FF-A battery [`FFA_ARG`] or [`FFA_PEER_ARG`] asks for.
pub fn ffa_battery(bootargs: &str) -> Option<FfaBattery> {
    let has = |word| bootargs.split_ascii_whitespace().any(|arg| arg == word);
    if has(FFA_PEER_ARG) {
        Some(FfaBattery::WithPeer)
    } else if has(FFA_ARG) {
        Some(FfaBattery::Alone)
    } else {
        None
    }
}

/// The register windows of the DT's enabled `virtio,mmio` nodes.
pub fn virtio_slots<'b>(fdt: &'b Fdt<'_>) -> impl Iterator<Item = Window> + 'b {
    fdt.all_nodes()
        .filter(|node| {
            is_enabled(*node)
                && node
                    .compatible()
                    .is_some_and(|c| c.all().any(|name| name == VIRTIO_MMIO))
        })
        .filter_map(|node| reg(node, VIRTIO_MMIO, 0).ok())
}

fn is_enabled(node: FdtNode<'_, '_>) -> bool {
    node.property("status")
        .and_then(|p| p.as_str())
        .is_none_or(|status| status == "okay" || status == "ok")
}

fn enabled_compatible<'b, 'a>(fdt: &'b Fdt<'a>, compatible: &str) -> Option<FdtNode<'b, 'a>> {
    fdt.all_nodes().find(|node| {
        is_enabled(*node)
            && node
                .compatible()
                .is_some_and(|c| c.all().any(|name| name == compatible))
    })
}

/// The PL011 `/chosen/stdout-path` names, else the first enabled PL011.
fn console_uart<'b, 'a>(fdt: &'b Fdt<'a>) -> Option<FdtNode<'b, 'a>> {
    let is_pl011 = |node: &FdtNode<'_, '_>| {
        node.compatible()
            .is_some_and(|c| c.all().any(|name| name == PL011))
    };
    fdt.find_node("/chosen")
        .and_then(|chosen| chosen.property("stdout-path"))
        .and_then(|p| p.as_str())
        .map(|path| path.split(':').next().unwrap_or(path))
        .and_then(|path| fdt.find_node(path))
        .filter(|node| is_pl011(node) && is_enabled(*node))
        .or_else(|| enabled_compatible(fdt, PL011))
}

fn reg(node: FdtNode<'_, '_>, what: &'static str, index: usize) -> Result<Window, DtError> {
    let region = node
        .reg()
        .and_then(|mut regs| regs.nth(index))
        .ok_or(DtError::NoReg(what, index))?;
    Ok(Window {
        base: region.starting_address as usize,
        size: region.size.ok_or(DtError::NoReg(what, index))?,
    })
}

/// The INTID of entry `index` of a node's `interrupts` (GIC 3-cell form).
fn interrupt_intid(node: FdtNode<'_, '_>, index: usize) -> Option<u32> {
    let value = node.property("interrupts")?.value;
    let start = index.checked_mul(12)?;
    let cell = |n: usize| -> Option<u32> {
        let bytes = value.get(start + n * 4..start + n * 4 + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    };
    let (kind, number) = (cell(0)?, cell(1)?);
    match kind {
        GIC_SPI => number.checked_add(32),
        GIC_PPI => number.checked_add(16),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `qemu-system-aarch64 -M virt,gic-version=3,dumpdtb=... -cpu cortex-a72 -m 256M`
    /// (QEMU 10.0.2), trimmed to the header's blocks.
    const QEMU_VIRT: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-gicv3.dtb");

    #[test]
    fn discovers_qemu_virt() {
        let fdt = Fdt::new(QEMU_VIRT).expect("fixture parses");
        let platform = Platform::discover(&fdt).expect("fixture describes the machine");
        assert_eq!(
            platform.uart,
            Window {
                base: 0x0900_0000,
                size: 0x1000
            }
        );
        assert_eq!(
            platform.gicd,
            Window {
                base: 0x0800_0000,
                size: 0x1_0000
            }
        );
        assert_eq!(platform.gicr.base, 0x080A_0000);
        assert_eq!(
            platform.rtc,
            Window {
                base: 0x0901_0000,
                size: 0x1000
            }
        );
        assert_eq!(platform.conduit, Conduit::Hvc);
        assert_eq!(platform.vtimer_intid, 27);
        assert_eq!(platform.ptimer_intid, 30);
        assert_eq!(platform.uart_intid, 33, "SPI 1");
        assert_eq!(platform.rtc_intid, 34, "SPI 2");
        assert!(!platform.misbehave);
        assert!(!platform.attack);
        assert_eq!(platform.ffa, None);
        assert!(!platform.exits);
        assert_eq!(platform.ram.base, 0x4000_0000);
        assert_eq!(platform.cpus[..platform.cpu_count], [0]);
    }

    /// The same with `-smp 2`.
    const QEMU_VIRT_SMP2: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-gicv3-smp2.dtb");

    #[test]
    fn lists_virtio_slots() {
        let fdt = Fdt::new(QEMU_VIRT).expect("fixture parses");
        let slots: Vec<Window> = virtio_slots(&fdt).collect();
        // QEMU virt's 32 transports, 0x200 bytes each from 0x0a00_0000.
        assert_eq!(slots.len(), 32);
        assert!(slots.contains(&Window {
            base: 0x0a00_0000,
            size: 0x200
        }));
        assert!(slots.contains(&Window {
            base: 0x0a00_3e00,
            size: 0x200
        }));
    }

    #[test]
    fn discovers_every_cpu() {
        let fdt = Fdt::new(QEMU_VIRT_SMP2).expect("fixture parses");
        let platform = Platform::discover(&fdt).expect("fixture describes the machine");
        assert_eq!(platform.cpus[..platform.cpu_count], [0, 1]);
    }

    #[test]
    fn misbehaviour_is_a_whole_word() {
        assert!(wants_misbehaviour("console=ttyAMA0 testguest.misbehave"));
        assert!(wants_misbehaviour("testguest.misbehave"));
        assert!(!wants_misbehaviour("testguest.misbehaved quiet"));
        assert!(has_word("quiet testguest.exits", EXITS_ARG));
        assert!(!has_word("testguest.exits2", EXITS_ARG));
        assert!(!wants_misbehaviour(""));
        assert!(has_word("quiet testguest.attack", ATTACK_ARG));
        assert!(!has_word("testguest.attacker", ATTACK_ARG));
    }

    #[test]
    fn ffa_batteries() {
        assert_eq!(ffa_battery("testguest.ffa"), Some(FfaBattery::Alone));
        assert_eq!(
            ffa_battery("quiet testguest.ffa-peer"),
            Some(FfaBattery::WithPeer)
        );
        assert_eq!(ffa_battery("testguest.ffax"), None);
    }

    #[test]
    fn truncated_tree_is_rejected() {
        assert!(Fdt::new(&QEMU_VIRT[..64]).is_err());
    }
}
