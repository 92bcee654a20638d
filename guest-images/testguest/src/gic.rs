//! A minimal GICv3 driver, brought up as Linux's irq-gic-v3 does it: the
//! distributor with affinity routing, each CPU's redistributor (found by
//! its GICR_TYPER affinity, woken through GICR_WAKER), and the ICC_*
//! system-register CPU interface. Interrupts are then enabled one by one
//! and taken either through the IRQ vector or by polling ICC_IAR1_EL1.

use core::fmt;

use crate::affinity;
use crate::arch::{sysreg, DeviceWindow};
use crate::platform::Window;

/// Distributor registers (GICv3 architecture spec, 12.9).
mod gicd {
    pub const CTLR: usize = 0x0000;
    pub const TYPER: usize = 0x0004;
    pub const IIDR: usize = 0x0008;
    pub const IGROUPR: usize = 0x0080;
    pub const ISENABLER: usize = 0x0100;
    pub const ICENABLER: usize = 0x0180;
    pub const ISPENDR: usize = 0x0200;
    pub const ICPENDR: usize = 0x0280;
    pub const IPRIORITYR: usize = 0x0400;
    pub const IROUTER: usize = 0x6000;
    pub const PIDR2: usize = 0xFFE8;
    pub const CTLR_ENABLE_G1: u32 = 1 << 0;
    pub const CTLR_ENABLE_G1A: u32 = 1 << 1;
    pub const CTLR_ARE_NS: u32 = 1 << 4;
    pub const CTLR_RWP: u32 = 1 << 31;
}

/// Redistributor registers: RD_base frame, then SGI_base frame (12.10-11).
mod gicr {
    pub const FRAME_STRIDE: usize = 0x2_0000;
    pub const SGI_BASE: usize = 0x1_0000;
    pub const CTLR: usize = 0x0000;
    pub const TYPER: usize = 0x0008;
    pub const WAKER: usize = 0x0014;
    pub const CTLR_RWP: u32 = 1 << 3;
    pub const TYPER_LAST: u64 = 1 << 4;
    pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
    pub const IGROUPR0: usize = SGI_BASE + 0x0080;
    pub const ISENABLER0: usize = SGI_BASE + 0x0100;
    pub const ICENABLER0: usize = SGI_BASE + 0x0180;
    pub const ICPENDR0: usize = SGI_BASE + 0x0280;
    pub const IPRIORITYR: usize = SGI_BASE + 0x0400;
}

/// ICC_SRE_EL1.SRE.
const ICC_SRE: u64 = 1;
/// Priority given to every interrupt we enable; the mask lets it in.
const PRIORITY: u8 = 0xA0;
const PRIORITY_MASK: u64 = 0xF0;
/// Polls of a GIC register before we give up on RWP/ChildrenAsleep.
const GIC_POLLS: u32 = 1_000_000;
/// What ICC_IAR1_EL1 reads when nothing is pending.
pub const SPURIOUS_INTID: u32 = 1023;

/// Why bring-up failed.
#[derive(Clone, Copy, Debug)]
pub enum GicError {
    Overlap,
    ArchRev(u32),
    DistributorRwp,
    NoAffinityRouting(u32),
    NoRedistributor(u64),
    ChildrenAsleep,
    RedistributorRwp,
    SreStuck,
}

impl fmt::Display for GicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GicError::Overlap => f.write_str("GIC windows overlap the guest image"),
            GicError::ArchRev(rev) => write!(f, "GICD_PIDR2.ArchRev={rev}, expected 3 or 4"),
            GicError::DistributorRwp => f.write_str("GICD_CTLR.RWP stuck"),
            GicError::NoAffinityRouting(ctlr) => {
                write!(f, "GICD_CTLR={ctlr:#x}: affinity routing not enabled")
            }
            GicError::NoRedistributor(mpidr) => write!(f, "no redistributor for MPIDR {mpidr:#x}"),
            GicError::ChildrenAsleep => f.write_str("GICR_WAKER.ChildrenAsleep stays set"),
            GicError::RedistributorRwp => f.write_str("GICR_CTLR.RWP stuck"),
            GicError::SreStuck => f.write_str("ICC_SRE_EL1.SRE does not stick"),
        }
    }
}

/// What the distributor reports about itself.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    pub iidr: u32,
    pub it_lines: u32,
    pub id_bits: u32,
    pub arch_rev: u32,
}

/// The distributor and the calling CPU's redistributor.
pub struct Gic {
    dist: DeviceWindow,
    rd: DeviceWindow,
    /// Index of `rd` among the redistributor frames.
    pub frame: usize,
}

fn poll_clear(window: &DeviceWindow, offset: usize, bit: u32) -> bool {
    (0..GIC_POLLS).any(|_| window.read32(offset) & bit == 0)
}

impl Gic {
    /// Resets and enables the distributor (once, on the boot CPU), then
    /// brings up the calling CPU.
    pub fn init(gicd: Window, gicr: Window) -> Result<(Self, Identity), GicError> {
        let dist = DeviceWindow::new(gicd).ok_or(GicError::Overlap)?;
        let arch_rev = (dist.read32(gicd::PIDR2) >> 4) & 0xF;
        if arch_rev != 3 && arch_rev != 4 {
            return Err(GicError::ArchRev(arch_rev));
        }
        dist.write32(gicd::CTLR, 0);
        if !poll_clear(&dist, gicd::CTLR, gicd::CTLR_RWP) {
            return Err(GicError::DistributorRwp);
        }
        dist.write32(
            gicd::CTLR,
            gicd::CTLR_ARE_NS | gicd::CTLR_ENABLE_G1A | gicd::CTLR_ENABLE_G1,
        );
        let ctlr = dist.read32(gicd::CTLR);
        if !poll_clear(&dist, gicd::CTLR, gicd::CTLR_RWP) || ctlr & gicd::CTLR_ARE_NS == 0 {
            return Err(GicError::NoAffinityRouting(ctlr));
        }
        let typer = dist.read32(gicd::TYPER);
        let identity = Identity {
            iidr: dist.read32(gicd::IIDR),
            it_lines: typer & 0x1F,
            id_bits: ((typer >> 19) & 0x1F) + 1,
            arch_rev,
        };
        Ok((Self::init_cpu(gicd, gicr)?, identity))
    }

    /// Brings up the calling CPU's redistributor and CPU interface against
    /// an enabled distributor: every SGI/PPI Group 1, disabled, at PRIORITY.
    pub fn init_cpu(gicd: Window, gicr: Window) -> Result<Self, GicError> {
        let dist = DeviceWindow::new(gicd).ok_or(GicError::Overlap)?;
        let redists = DeviceWindow::new(gicr).ok_or(GicError::Overlap)?;
        let (frame, rd) = find_redistributor(&redists, gicr.size)
            .ok_or(GicError::NoRedistributor(sysreg::mpidr()))?;
        rd.write32(
            gicr::WAKER,
            rd.read32(gicr::WAKER) & !gicr::WAKER_PROCESSOR_SLEEP,
        );
        if !poll_clear(&rd, gicr::WAKER, gicr::WAKER_CHILDREN_ASLEEP) {
            return Err(GicError::ChildrenAsleep);
        }
        rd.write32(gicr::ICENABLER0, u32::MAX);
        rd.write32(gicr::ICPENDR0, u32::MAX);
        if !poll_clear(&rd, gicr::CTLR, gicr::CTLR_RWP) {
            return Err(GicError::RedistributorRwp);
        }
        rd.write32(gicr::IGROUPR0, u32::MAX);
        let priorities = u32::from_ne_bytes([PRIORITY; 4]);
        for word in 0..8 {
            rd.write32(gicr::IPRIORITYR + 4 * word, priorities);
        }
        sysreg::set_icc_sre(sysreg::icc_sre() | ICC_SRE);
        if sysreg::icc_sre() & ICC_SRE == 0 {
            return Err(GicError::SreStuck);
        }
        sysreg::set_icc_pmr(PRIORITY_MASK);
        sysreg::set_icc_bpr1(0);
        sysreg::set_icc_ctlr(0);
        sysreg::set_icc_igrpen1(1);
        Ok(Gic { dist, rd, frame })
    }

    pub fn redistributor_base(&self) -> usize {
        self.rd.base()
    }

    /// Enables an SGI or PPI (INTID < 32) on the calling CPU.
    pub fn enable_private(&self, intid: u32) {
        self.rd.write32(gicr::ISENABLER0, 1 << intid);
    }

    pub fn disable_private(&self, intid: u32) {
        self.rd.write32(gicr::ICENABLER0, 1 << intid);
    }

    /// Group 1, PRIORITY, routed to the calling CPU, enabled.
    pub fn enable_spi(&self, intid: u32) {
        let (word, bit) = ((intid / 32) as usize * 4, 1u32 << (intid % 32));
        self.dist.write32(
            gicd::IGROUPR + word,
            self.dist.read32(gicd::IGROUPR + word) | bit,
        );
        let priority_word = gicd::IPRIORITYR + (intid as usize & !3);
        let shift = (intid % 4) * 8;
        let priorities = self.dist.read32(priority_word) & !(0xFF << shift);
        self.dist
            .write32(priority_word, priorities | (u32::from(PRIORITY) << shift));
        self.dist.write64(
            gicd::IROUTER + 8 * intid as usize,
            affinity::route(sysreg::mpidr()),
        );
        self.dist.write32(gicd::ISENABLER + word, bit);
    }

    pub fn disable_spi(&self, intid: u32) {
        let (word, bit) = ((intid / 32) as usize * 4, 1u32 << (intid % 32));
        self.dist.write32(gicd::ICENABLER + word, bit);
        self.dist.write32(gicd::ICPENDR + word, bit);
    }

    /// Makes an SPI pending from software (GICD_ISPENDR).
    pub fn pend_spi(&self, intid: u32) {
        self.dist
            .write32(gicd::ISPENDR + (intid / 32) as usize * 4, 1 << (intid % 32));
    }
}

/// The redistributor frame whose GICR_TYPER affinity is the calling CPU's.
fn find_redistributor(redists: &DeviceWindow, size: usize) -> Option<(usize, DeviceWindow)> {
    let own = affinity::packed(sysreg::mpidr());
    let mut offset = 0;
    while offset + gicr::FRAME_STRIDE <= size {
        let typer = redists.read64(offset + gicr::TYPER);
        if typer >> 32 == own {
            let window = Window {
                base: redists.base() + offset,
                size: gicr::FRAME_STRIDE,
            };
            return Some((offset / gicr::FRAME_STRIDE, DeviceWindow::new(window)?));
        }
        if typer & gicr::TYPER_LAST != 0 {
            break;
        }
        offset += gicr::FRAME_STRIDE;
    }
    None
}

/// What polling the CPU interface for one interrupt found.
pub enum Poll {
    /// Acknowledged and EOI'd after this many counter ticks.
    Taken(u64),
    Nothing,
    /// Another INTID came first (it was EOI'd too).
    Other(u32),
}

/// Polls ICC_IAR1_EL1 (IRQs stay masked: acknowledging does not need the
/// exception) until `intid` arrives or `patience` counter ticks pass;
/// `quiesce` lowers the source before the EOI.
pub fn poll_interrupt(intid: u32, patience: u64, quiesce: impl FnOnce()) -> Poll {
    let start = sysreg::counter();
    let deadline = start.saturating_add(patience);
    while sysreg::counter() < deadline {
        match sysreg::icc_iar1() {
            SPURIOUS_INTID => core::hint::spin_loop(),
            got if got == intid => {
                quiesce();
                sysreg::icc_eoir1(got);
                return Poll::Taken(sysreg::counter().saturating_sub(start));
            }
            other => {
                sysreg::icc_eoir1(other);
                return Poll::Other(other);
            }
        }
    }
    Poll::Nothing
}
