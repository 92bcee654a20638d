//! Host platform discovery: turns the DTB that QEMU (or firmware) passes in
//! x0 into a typed [`PlatformInfo`]: RAM, CPUs, the GICv3, the console
//! PL011, the PL031, the PSCI conduit and `/chosen`. Runs before the heap
//! exists, so it stores everything inline.
#![forbid(unsafe_code)]

use core::fmt;

use fdt::Fdt;

use crate::addr::{PhysAddr, PhysRange};
use crate::fixed_vec::FixedVec;

/// Most memory ranges we keep from the DTB.
pub const MAX_MEMORY_RANGES: usize = 8;
/// Most physical CPUs the hypervisor drives.
pub const MAX_CPUS: usize = 8;
/// Most `/reserved-memory` ranges we keep.
pub const MAX_RESERVED_RANGES: usize = 4;

/// How PSCI calls reach the firmware.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PsciConduit {
    /// `smc #0` (EL3 firmware; QEMU's built-in PSCI when it has no EL3).
    Smc,
    /// `hvc #0`.
    Hvc,
}

impl PsciConduit {
    /// The DTB spelling (`method` property).
    pub fn as_str(self) -> &'static str {
        match self {
            PsciConduit::Smc => "smc",
            PsciConduit::Hvc => "hvc",
        }
    }
}

/// The host's GICv3.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct GicV3Info {
    /// Distributor registers.
    pub dist: PhysRange,
    /// First redistributor region (one 128 KiB frame per CPU).
    pub redist: PhysRange,
}

/// Everything the hypervisor needs to know about the machine it runs on.
#[derive(Clone, Copy, Debug)]
pub struct PlatformInfo<'dtb> {
    /// RAM ranges, in DTB order.
    pub memory: FixedVec<PhysRange, MAX_MEMORY_RANGES>,
    /// MPIDR affinity value of each CPU, in DTB order (index = CPU number).
    pub cpu_mpidrs: FixedVec<u64, MAX_CPUS>,
    /// The GICv3.
    pub gic: GicV3Info,
    /// The console PL011 (from `/chosen/stdout-path`, else the first one).
    pub pl011: Option<PhysRange>,
    /// The console PL011's interrupt (GIC INTID).
    pub pl011_intid: Option<u32>,
    /// The PL031 real-time clock.
    pub pl031: Option<PhysRange>,
    /// PSCI conduit.
    pub psci: PsciConduit,
    /// `/chosen/bootargs` (empty when absent).
    pub bootargs: &'dtb str,
    /// `/chosen` `linux,initrd-start` .. `linux,initrd-end` (the boot bundle).
    pub initrd: Option<PhysRange>,
    /// `/reserved-memory` ranges (OP-TEE's, under a secure world): RAM the
    /// hypervisor never allocates.
    pub reserved: FixedVec<PhysRange, MAX_RESERVED_RANGES>,
    /// QEMU's fw_cfg (`qemu,fw-cfg-mmio`): the bundle when firmware boots us.
    pub fw_cfg: Option<PhysRange>,
    /// The root is `compatible = "linux,dummy-virt"`: QEMU's `virt` board.
    pub qemu_virt: bool,
}

/// Why the DTB could not describe a machine we can run on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PlatformError {
    /// The blob is not a flattened device tree.
    BadDtb,
    /// No `/memory` range.
    NoMemory,
    /// More RAM ranges than [`MAX_MEMORY_RANGES`].
    TooManyMemoryRanges,
    /// More `/reserved-memory` ranges than [`MAX_RESERVED_RANGES`].
    TooManyReservedRanges,
    /// No CPU under `/cpus`.
    NoCpus,
    /// More CPUs than [`MAX_CPUS`].
    TooManyCpus,
    /// No `arm,gic-v3` node with distributor and redistributor `reg`s.
    NoGicV3,
    /// No PSCI node, or a `method` other than `smc`/`hvc`.
    NoPsci,
    /// `linux,initrd-start`/`-end` present but unreadable or reversed.
    BadInitrd,
    /// A `reg` whose address plus size overflows.
    BadReg,
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            PlatformError::BadDtb => "not a valid flattened device tree",
            PlatformError::NoMemory => "no /memory range",
            PlatformError::TooManyMemoryRanges => "too many /memory ranges",
            PlatformError::NoCpus => "no CPU under /cpus",
            PlatformError::TooManyCpus => "more CPUs than the hypervisor supports",
            PlatformError::NoGicV3 => "no arm,gic-v3 interrupt controller",
            PlatformError::NoPsci => "no PSCI node with method smc or hvc",
            PlatformError::BadInitrd => "bad linux,initrd-start/end in /chosen",
            PlatformError::TooManyReservedRanges => "too many /reserved-memory ranges",
            PlatformError::BadReg => "a reg range overflows",
        };
        f.write_str(msg)
    }
}

fn usize_to_u64(v: usize) -> u64 {
    // usize is at most 64 bits on every target this crate builds for.
    u64::try_from(v).unwrap_or(u64::MAX)
}

fn region(r: fdt::standard_nodes::MemoryRegion) -> Result<PhysRange, PlatformError> {
    let start = PhysAddr::new(usize_to_u64(r.starting_address.addr()));
    let size = usize_to_u64(r.size.unwrap_or(0));
    PhysRange::from_start_size(start, size).ok_or(PlatformError::BadReg)
}

fn first_reg(node: fdt::node::FdtNode<'_, '_>) -> Result<Option<PhysRange>, PlatformError> {
    match node.reg().and_then(|mut regs| regs.next()) {
        Some(r) => region(r).map(Some),
        None => Ok(None),
    }
}

fn node_enabled(node: fdt::node::FdtNode<'_, '_>) -> bool {
    node.property("status")
        .and_then(|p| p.as_str())
        .is_none_or(|s| s == "okay" || s == "ok")
}

fn is_compatible(node: fdt::node::FdtNode<'_, '_>, with: &str) -> bool {
    node.compatible()
        .is_some_and(|c| c.all().any(|s| s == with))
}

fn find_enabled<'b, 'a>(fdt: &'b Fdt<'a>, compatible: &str) -> Option<fdt::node::FdtNode<'b, 'a>> {
    fdt.all_nodes()
        .find(|n| is_compatible(*n, compatible) && node_enabled(*n))
}

/// The GIC INTID of a node's first interrupt (3-cell GICv3 specifier:
/// type 0 = SPI from 32, type 1 = PPI from 16).
fn gic_intid(node: fdt::node::FdtNode<'_, '_>) -> Option<u32> {
    let value = node.property("interrupts")?.value;
    let cell = |i: usize| {
        let b = value.get(i * 4..i * 4 + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let number = cell(1)?;
    match cell(0)? {
        0 => number.checked_add(32),
        1 => number.checked_add(16),
        _ => None,
    }
}

impl<'dtb> PlatformInfo<'dtb> {
    /// Parses the host DTB.
    pub fn from_dtb(blob: &'dtb [u8]) -> Result<Self, PlatformError> {
        let fdt = Fdt::new(blob).map_err(|_| PlatformError::BadDtb)?;

        let mut memory = FixedVec::new();
        for node in fdt.all_nodes().filter(|n| {
            n.property("device_type").and_then(|p| p.as_str()) == Some("memory") && node_enabled(*n)
        }) {
            for r in node.reg().into_iter().flatten() {
                let range = region(r)?;
                if !range.is_empty() {
                    memory
                        .push(range)
                        .map_err(|_| PlatformError::TooManyMemoryRanges)?;
                }
            }
        }
        if memory.is_empty() {
            return Err(PlatformError::NoMemory);
        }

        let mut cpu_mpidrs = FixedVec::new();
        for cpu in fdt.cpus() {
            cpu_mpidrs
                .push(usize_to_u64(cpu.ids().first()))
                .map_err(|_| PlatformError::TooManyCpus)?;
        }
        if cpu_mpidrs.is_empty() {
            return Err(PlatformError::NoCpus);
        }

        let gic_node = find_enabled(&fdt, "arm,gic-v3").ok_or(PlatformError::NoGicV3)?;
        let mut gic_regs = gic_node.reg().ok_or(PlatformError::NoGicV3)?;
        let dist = region(gic_regs.next().ok_or(PlatformError::NoGicV3)?)?;
        let redist = region(gic_regs.next().ok_or(PlatformError::NoGicV3)?)?;

        let stdout = fdt
            .chosen()
            .stdout()
            .filter(|n| is_compatible(*n, "arm,pl011"));
        let pl011_node = stdout.or_else(|| find_enabled(&fdt, "arm,pl011"));
        let pl011 = match pl011_node {
            Some(node) => first_reg(node)?,
            None => None,
        };
        let pl011_intid = pl011_node.and_then(gic_intid);
        let pl031 = match find_enabled(&fdt, "arm,pl031") {
            Some(node) => first_reg(node)?,
            None => None,
        };

        let psci = fdt
            .all_nodes()
            .find(|n| {
                ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]
                    .iter()
                    .any(|c| is_compatible(*n, c))
            })
            .and_then(|n| n.property("method"))
            .and_then(|p| p.as_str())
            .and_then(|m| match m {
                "smc" => Some(PsciConduit::Smc),
                "hvc" => Some(PsciConduit::Hvc),
                _ => None,
            })
            .ok_or(PlatformError::NoPsci)?;

        let chosen = fdt.find_node("/chosen");
        let bootargs = chosen
            .and_then(|c| c.property("bootargs"))
            .and_then(|p| p.as_str())
            .unwrap_or("");
        let initrd_start = chosen.and_then(|c| c.property("linux,initrd-start"));
        let initrd_end = chosen.and_then(|c| c.property("linux,initrd-end"));
        let initrd = match (initrd_start, initrd_end) {
            (None, None) => None,
            (Some(s), Some(e)) => {
                let start = s.as_usize().ok_or(PlatformError::BadInitrd)?;
                let end = e.as_usize().ok_or(PlatformError::BadInitrd)?;
                if end < start {
                    return Err(PlatformError::BadInitrd);
                }
                Some(PhysRange {
                    start: PhysAddr::new(usize_to_u64(start)),
                    end: PhysAddr::new(usize_to_u64(end)),
                })
            }
            _ => return Err(PlatformError::BadInitrd),
        };

        let mut reserved = FixedVec::new();
        if let Some(node) = fdt.find_node("/reserved-memory") {
            for child in node.children() {
                for r in child.reg().into_iter().flatten() {
                    reserved
                        .push(region(r)?)
                        .map_err(|_| PlatformError::TooManyReservedRanges)?;
                }
            }
        }
        let fw_cfg = match find_enabled(&fdt, "qemu,fw-cfg-mmio") {
            Some(node) => first_reg(node)?,
            None => None,
        };

        Ok(Self {
            memory,
            cpu_mpidrs,
            gic: GicV3Info { dist, redist },
            pl011,
            pl011_intid,
            pl031,
            psci,
            bootargs,
            initrd,
            reserved,
            fw_cfg,
            qemu_virt: fdt
                .root()
                .compatible()
                .all()
                .any(|c| c == "linux,dummy-virt"),
        })
    }

    /// Total RAM in bytes.
    pub fn total_memory(&self) -> u64 {
        self.memory.iter().map(PhysRange::size).sum()
    }

    /// Lowest RAM address.
    pub fn memory_base(&self) -> PhysAddr {
        self.memory
            .iter()
            .map(|r| r.start)
            .min()
            .unwrap_or_default()
    }

    /// Number of CPUs.
    pub fn cpu_count(&self) -> usize {
        self.cpu_mpidrs.len()
    }

    /// Whether `/chosen/bootargs` holds the whitespace-separated word `word`.
    pub fn has_bootarg(&self, word: &str) -> bool {
        self.bootargs.split_ascii_whitespace().any(|w| w == word)
    }

    /// The MMIO ranges the hypervisor itself touches (mapped as device
    /// memory in its own stage-1 tables).
    pub fn device_ranges(&self) -> FixedVec<PhysRange, 5> {
        let mut out = FixedVec::new();
        for r in [
            Some(self.gic.dist),
            Some(self.gic.redist),
            self.pl011,
            self.pl031,
            self.fw_cfg,
        ]
        .into_iter()
        .flatten()
        {
            // Capacity is exactly the five candidates above.
            let _ = out.push(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_CPU: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-gicv3-2cpu.dtb");
    const FOUR_CPU: &[u8] = include_bytes!("../tests/fixtures/qemu-virt-gicv3-4cpu-max.dtb");
    const FOUR_CPU_SECURE: &[u8] =
        include_bytes!("../tests/fixtures/qemu-virt-gicv3-4cpu-secure.dtb");

    #[test]
    fn qemu_virt_two_cpus() {
        let p = PlatformInfo::from_dtb(TWO_CPU).unwrap();
        assert_eq!(p.cpu_count(), 2);
        assert_eq!(p.cpu_mpidrs.as_slice(), &[0, 1]);
        assert_eq!(p.total_memory(), 512 << 20);
        assert_eq!(p.memory_base(), PhysAddr::new(0x4000_0000));
        assert_eq!(p.gic.dist.start, PhysAddr::new(0x0800_0000));
        assert_eq!(p.gic.dist.size(), 0x1_0000);
        assert_eq!(p.gic.redist.start, PhysAddr::new(0x080a_0000));
        assert_eq!(p.pl011.map(|r| r.start), Some(PhysAddr::new(0x0900_0000)));
        assert_eq!(p.pl011_intid, Some(33));
        assert_eq!(p.pl031.map(|r| r.start), Some(PhysAddr::new(0x0901_0000)));
        assert_eq!(p.psci, PsciConduit::Smc);
        assert_eq!(p.initrd, None);
        assert_eq!(p.device_ranges().len(), 5);
        assert_eq!(p.fw_cfg.map(|r| r.start), Some(PhysAddr::new(0x0902_0000)));
        assert!(p.reserved.is_empty());
        assert!(p.qemu_virt);
    }

    #[test]
    fn qemu_virt_four_cpus_with_bootargs() {
        let p = PlatformInfo::from_dtb(FOUR_CPU).unwrap();
        assert_eq!(p.cpu_count(), 4);
        assert_eq!(p.cpu_mpidrs.as_slice(), &[0, 1, 2, 3]);
        assert_eq!(p.total_memory(), 1 << 30);
        assert_eq!(p.bootargs, "console=ttyAMA0 hv.debug=panic");
        assert!(p.has_bootarg(crate::kmain::DEBUG_PANIC_BOOTARG));
    }

    #[test]
    fn qemu_secure_dump_has_no_psci_until_firmware_adds_it() {
        // With secure=on QEMU leaves PSCI to the EL3 firmware (TF-A's BL2
        // adds the node), so the raw dump must be refused, not guessed at.
        assert_eq!(
            PlatformInfo::from_dtb(FOUR_CPU_SECURE).unwrap_err(),
            PlatformError::NoPsci
        );
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(
            PlatformInfo::from_dtb(&[0u8; 64]).unwrap_err(),
            PlatformError::BadDtb
        );
        assert_eq!(
            PlatformInfo::from_dtb(&TWO_CPU[..100]).unwrap_err(),
            PlatformError::BadDtb
        );
    }

    #[test]
    fn bootargs_words_match_whole_words_only() {
        let mut p = PlatformInfo::from_dtb(TWO_CPU).unwrap();
        p.bootargs = "console=ttyAMA0 hv.debug=panic";
        assert!(p.has_bootarg("hv.debug=panic"));
        p.bootargs = "hv.debug=panicky";
        assert!(!p.has_bootarg("hv.debug=panic"));
    }
}
