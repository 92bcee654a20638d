//! The virtual GICv3 of one VM: a distributor (`distributor`), one
//! redistributor per vCPU (`redistributor`), and the query API the
//! hypervisor's list-register code uses: which interrupt a vCPU should see
//! next, and the state changes when it is handed to the vCPU and EOI'd.
//!
//! The hypervisor drives the model through:
//! - `Vgic::distributor()` / `Vgic::redistributors()`: `MmioDevice`s for the
//!   GICD window (64 KiB) and the GICR region (128 KiB per vCPU);
//! - `set_spi_level` / `set_ppi_level` / `raise_edge`: device lines;
//! - `send_sgi`: a trapped ICC_SGI1R_EL1 write, returning the vCPUs to kick;
//! - `highest_pending(vcpu)`, then `activate` when the interrupt goes into a
//!   list register, `deactivate` when the guest's EOI retires it (for a level
//!   interrupt whose line is still high it is pending again at once).
//!
//! Priorities keep 5 bits (PRIORITY_MASK), as QEMU's CPU interface
//! (ICH_VTR_EL2.PRIbits) implements.

mod distributor;
mod irq;
mod redistributor;

use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;

pub use distributor::{Distributor, GICD_SIZE};
pub use irq::{Group, IrqState};
pub use redistributor::{Redistributor, GICR_FRAME_SIZE};

use super::{AccessWidth, MmioDevice, MmioError};

/// SGIs and PPIs: INTIDs 0..32, banked per vCPU.
pub const PRIVATE_IRQS: usize = 32;
/// First shared peripheral interrupt.
pub const FIRST_SPI: u32 = 32;
/// Implemented priority bits (the top 5).
pub const PRIORITY_MASK: u8 = 0xF8;
/// Largest SPI count: INTIDs stop at 1019.
pub const MAX_SPIS: u32 = 960;

/// GICD_IIDR / GICR_IIDR: implementer Arm (0x43B), as QEMU's GICv3 reports.
const IIDR: u32 = 0x0000_043B;
/// PIDR0 (part number low byte) of the distributor and redistributor.
const PIDR0_DISTRIBUTOR: u8 = 0x92;
const PIDR0_REDISTRIBUTOR: u8 = 0x93;
/// Identification registers (GICv3 spec, 12.1.13): PIDR4 and PIDR5..7,
/// then PIDR0..3 and CIDR0..3, one byte per word; PIDR2 carries ArchRev 3
/// (GICv3) in bits [7:4].
mod id {
    pub const REGISTERS: core::ops::RangeInclusive<u64> = 0xFFD0..=0xFFFC;
    pub const PIDR4: u64 = 0xFFD0;
    pub const PIDR0: u64 = 0xFFE0;
    pub const PIDR1: u64 = 0xFFE4;
    pub const PIDR2: u64 = 0xFFE8;
    pub const CIDR: core::ops::RangeInclusive<u64> = 0xFFF0..=0xFFFC;
}
const PIDR1: u8 = 0xB4;
const PIDR2: u8 = 0x3B;
const PIDR4: u8 = 0x44;
const CIDR: [u8; 4] = [0x0D, 0xF0, 0x05, 0xB1];

/// The value of an identification register at `offset`, if it is one.
fn id_register(offset: u64, width: AccessWidth, pidr0: u8) -> Result<Option<u64>, MmioError> {
    if !id::REGISTERS.contains(&offset) {
        return Ok(None);
    }
    word_only(offset, width)?;
    let byte = match offset {
        id::PIDR4 => PIDR4,
        id::PIDR0 => pidr0,
        id::PIDR1 => PIDR1,
        id::PIDR2 => PIDR2,
        _ if id::CIDR.contains(&offset) => CIDR[((offset - id::CIDR.start()) / 4) as usize],
        _ => 0,
    };
    Ok(Some(u64::from(byte)))
}

fn word_only(offset: u64, width: AccessWidth) -> Result<(), MmioError> {
    if width == AccessWidth::Word {
        Ok(())
    } else {
        Err(MmioError::BadAccess { offset, width })
    }
}

/// Registers with one byte per INTID (priorities) also take byte accesses.
fn byte_or_word(offset: u64, width: AccessWidth) -> Result<(), MmioError> {
    match width {
        AccessWidth::Byte | AccessWidth::Word => Ok(()),
        _ => Err(MmioError::BadAccess { offset, width }),
    }
}

/// A vCPU's affinity as GICR_TYPER[63:32] packs it: Aff3.Aff2.Aff1.Aff0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity(u32);

impl Affinity {
    pub const fn new(aff3: u8, aff2: u8, aff1: u8, aff0: u8) -> Self {
        Affinity(u32::from_be_bytes([aff3, aff2, aff1, aff0]))
    }

    /// From an MPIDR_EL1 value (Aff3 [39:32], Aff2..Aff0 [23:0]).
    pub const fn from_mpidr(mpidr: u64) -> Self {
        Affinity(((((mpidr >> 32) & 0xFF) << 24) | (mpidr & 0xFF_FFFF)) as u32)
    }

    pub const fn packed(self) -> u32 {
        self.0
    }

    /// The GICD_IROUTER value that routes to this affinity.
    pub const fn irouter(self) -> u64 {
        (((self.0 >> 24) as u64) << 32) | (self.0 & 0xFF_FFFF) as u64
    }

    fn aff0(self) -> u8 {
        self.0 as u8
    }

    /// Aff3.Aff2.Aff1, the cluster ICC_SGI1R_EL1 names.
    fn cluster(self) -> u32 {
        self.0 >> 8
    }
}

/// Bad configuration or a request about something the VM does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VgicError {
    /// The SPI count must be a multiple of 32 and at most MAX_SPIS.
    SpiCount(u32),
    /// A VM has between 1 and 64 vCPUs.
    VcpuCount(usize),
    NoSuchVcpu(usize),
    NoSuchInterrupt(u32),
}

impl fmt::Display for VgicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VgicError::SpiCount(n) => {
                write!(f, "{n} SPIs: need a multiple of 32, at most {MAX_SPIS}")
            }
            VgicError::VcpuCount(n) => write!(f, "{n} vCPUs: need 1 to 64"),
            VgicError::NoSuchVcpu(n) => write!(f, "no vCPU {n}"),
            VgicError::NoSuchInterrupt(intid) => write!(f, "no INTID {intid}"),
        }
    }
}

/// The interrupt a vCPU should see next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingIrq {
    pub intid: u32,
    pub priority: u8,
    pub group: Group,
}

/// The redistributor region: one frame per vCPU, in vCPU order.
pub struct Redistributors(Vec<Redistributor>);

impl Redistributors {
    fn frame(&mut self, offset: u64) -> Result<(&mut Redistributor, u64), MmioError> {
        let index = usize::try_from(offset / GICR_FRAME_SIZE)
            .map_err(|_| MmioError::OutOfWindow { offset })?;
        let frame = self
            .0
            .get_mut(index)
            .ok_or(MmioError::OutOfWindow { offset })?;
        Ok((frame, offset % GICR_FRAME_SIZE))
    }
}

impl MmioDevice for Redistributors {
    fn size(&self) -> u64 {
        self.0.len() as u64 * GICR_FRAME_SIZE
    }

    fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        let (frame, within) = self.frame(offset)?;
        frame
            .read(within, width)
            .map_err(|e| rebase(e, offset - within))
    }

    fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Result<(), MmioError> {
        let (frame, within) = self.frame(offset)?;
        frame
            .write(within, width, value)
            .map_err(|e| rebase(e, offset - within))
    }
}

impl MmioDevice for Distributor {
    fn size(&self) -> u64 {
        GICD_SIZE
    }

    fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        Distributor::read(self, offset, width)
    }

    fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Result<(), MmioError> {
        Distributor::write(self, offset, width, value)
    }
}

/// Errors name the offset within the whole region.
fn rebase(error: MmioError, base: u64) -> MmioError {
    match error {
        MmioError::OutOfWindow { offset } => MmioError::OutOfWindow {
            offset: offset + base,
        },
        MmioError::BadAccess { offset, width } => MmioError::BadAccess {
            offset: offset + base,
            width,
        },
        MmioError::Unhandled { offset } => MmioError::Unhandled {
            offset: offset + base,
        },
    }
}

/// ICC_SGI1R_EL1 fields.
mod sgi1r {
    pub const TARGET_LIST_MASK: u64 = 0xFFFF;
    pub const AFF1_SHIFT: u32 = 16;
    pub const INTID_SHIFT: u32 = 24;
    pub const AFF2_SHIFT: u32 = 32;
    pub const IRM: u64 = 1 << 40;
    pub const RS_SHIFT: u32 = 44;
    pub const AFF3_SHIFT: u32 = 48;
}

/// One VM's virtual GICv3.
pub struct Vgic {
    distributor: Distributor,
    redistributors: Redistributors,
    /// Per vCPU, bumped by every call that may change what
    /// [`Vgic::highest_pending`] answers for it (each `&mut self` method
    /// bumps the vCPUs it may affect), so a caller that found nothing
    /// pending can skip the scan until it changes.
    generations: Vec<u64>,
    /// Bumped by every call that may change an SPI (state, routing, the
    /// distributor's enables).
    spi_generation: u64,
    /// Per vCPU, the `spi_generation` at which no SPI routed to it was
    /// deliverable: [`Vgic::highest_pending`] skips the SPIs until it moves
    /// (most changes concern one vCPU's own SGIs and PPIs).
    spis_idle_at: Vec<Cell<Option<u64>>>,
}

impl Vgic {
    /// A GIC with `spis` SPIs (INTIDs 32..32 + spis) and one redistributor
    /// per vCPU, in order, with the given affinities (MPIDRs).
    pub fn new(spis: u32, vcpus: &[Affinity]) -> Result<Self, VgicError> {
        if !spis.is_multiple_of(32) || spis > MAX_SPIS {
            return Err(VgicError::SpiCount(spis));
        }
        if vcpus.is_empty() || vcpus.len() > 64 {
            return Err(VgicError::VcpuCount(vcpus.len()));
        }
        let redistributors = vcpus
            .iter()
            .enumerate()
            .map(|(i, affinity)| Redistributor::new(i as u16, *affinity, i + 1 == vcpus.len()))
            .collect();
        Ok(Vgic {
            distributor: Distributor::new(spis as usize, vcpus.len()),
            redistributors: Redistributors(redistributors),
            generations: alloc::vec![0; vcpus.len()],
            spi_generation: 0,
            spis_idle_at: alloc::vec![Cell::new(None); vcpus.len()],
        })
    }

    /// Changes whenever `vcpu`'s interrupt state may have changed (see the
    /// field); equal values mean [`Vgic::highest_pending`] answers the same.
    pub fn generation(&self, vcpu: usize) -> u64 {
        self.generations.get(vcpu).copied().unwrap_or(0)
    }

    fn touch(&mut self, vcpu: usize) {
        if let Some(g) = self.generations.get_mut(vcpu) {
            *g = g.wrapping_add(1);
        }
    }

    fn touch_all(&mut self) {
        for g in &mut self.generations {
            *g = g.wrapping_add(1);
        }
        self.spi_generation = self.spi_generation.wrapping_add(1);
    }

    /// The GICD window's device.
    pub fn distributor(&mut self) -> &mut Distributor {
        self.touch_all();
        &mut self.distributor
    }

    /// The GICR region's device (all vCPUs' frames).
    pub fn redistributors(&mut self) -> &mut Redistributors {
        self.touch_all();
        &mut self.redistributors
    }

    pub fn vcpus(&self) -> usize {
        self.redistributors.0.len()
    }

    fn redistributor(&self, vcpu: usize) -> Result<&Redistributor, VgicError> {
        self.redistributors
            .0
            .get(vcpu)
            .ok_or(VgicError::NoSuchVcpu(vcpu))
    }

    /// The state of `intid` as `vcpu` sees it.
    pub fn irq(&self, vcpu: usize, intid: u32) -> Result<IrqState, VgicError> {
        let redistributor = self.redistributor(vcpu)?;
        match usize::try_from(intid)
            .ok()
            .and_then(|i| redistributor.private.get(i))
        {
            Some(state) => Ok(*state),
            None => self
                .distributor
                .spi(intid)
                .copied()
                .ok_or(VgicError::NoSuchInterrupt(intid)),
        }
    }

    fn irq_mut(&mut self, vcpu: usize, intid: u32) -> Result<&mut IrqState, VgicError> {
        if usize::try_from(intid).is_ok_and(|i| i < PRIVATE_IRQS) {
            self.touch(vcpu);
        } else {
            self.touch_all();
        }
        let redistributor = self
            .redistributors
            .0
            .get_mut(vcpu)
            .ok_or(VgicError::NoSuchVcpu(vcpu))?;
        match usize::try_from(intid).ok().filter(|i| *i < PRIVATE_IRQS) {
            Some(i) => Ok(&mut redistributor.private[i]),
            None => self
                .distributor
                .spi_mut(intid)
                .ok_or(VgicError::NoSuchInterrupt(intid)),
        }
    }

    /// Drives an SPI's input line (level-sensitive devices: PL011, PL031).
    pub fn set_spi_level(&mut self, intid: u32, level: bool) -> Result<(), VgicError> {
        self.touch_all();
        let irq = self
            .distributor
            .spi_mut(intid)
            .ok_or(VgicError::NoSuchInterrupt(intid))?;
        if level && !irq.line && irq.edge {
            irq.pending_latch = true;
        }
        irq.line = level;
        Ok(())
    }

    /// Drives a PPI's input line on one vCPU.
    pub fn set_ppi_level(&mut self, vcpu: usize, intid: u32, level: bool) -> Result<(), VgicError> {
        if !(16..32).contains(&intid) {
            return Err(VgicError::NoSuchInterrupt(intid));
        }
        let irq = self.irq_mut(vcpu, intid)?;
        if level && !irq.line && irq.edge {
            irq.pending_latch = true;
        }
        irq.line = level;
        Ok(())
    }

    /// Makes an interrupt pending as an edge would (`vcpu` selects the bank
    /// for SGIs/PPIs and is ignored for SPIs).
    pub fn raise_edge(&mut self, vcpu: usize, intid: u32) -> Result<(), VgicError> {
        self.irq_mut(vcpu, intid)?.pending_latch = true;
        Ok(())
    }

    /// The vCPU an SPI is routed to (GICD_IROUTER), if any: the one to kick
    /// when the SPI becomes pending while another physical CPU runs it.
    pub fn spi_target(&self, intid: u32) -> Result<Option<usize>, VgicError> {
        self.distributor
            .spi(intid)
            .ok_or(VgicError::NoSuchInterrupt(intid))?;
        Ok(self
            .redistributors
            .0
            .iter()
            .position(|r| self.distributor.routed_to(intid, r.affinity())))
    }

    /// A write of `value` to ICC_SGI1R_EL1 by `sender`: makes the SGI
    /// pending on every target and returns them as a bit mask of vCPUs.
    pub fn send_sgi(&mut self, sender: usize, value: u64) -> Result<u64, VgicError> {
        self.redistributor(sender)?;
        let intid = ((value >> sgi1r::INTID_SHIFT) & 0xF) as usize;
        let cluster = (((value >> sgi1r::AFF3_SHIFT) & 0xFF) << 16)
            | (((value >> sgi1r::AFF2_SHIFT) & 0xFF) << 8)
            | ((value >> sgi1r::AFF1_SHIFT) & 0xFF);
        let range_base = ((value >> sgi1r::RS_SHIFT) & 0xF) * 16;
        let targets = value & sgi1r::TARGET_LIST_MASK;
        let mut kicked = 0u64;
        for (vcpu, redistributor) in self.redistributors.0.iter_mut().enumerate() {
            let affinity = redistributor.affinity();
            let hit = if value & sgi1r::IRM != 0 {
                vcpu != sender
            } else {
                u64::from(affinity.cluster()) == cluster
                    && u64::from(affinity.aff0())
                        .checked_sub(range_base)
                        .is_some_and(|bit| bit < 16 && targets & (1 << bit) != 0)
            };
            let sgi = &mut redistributor.private[intid];
            // ICC_SGI1R generates Group 1 SGIs only.
            if hit && sgi.group1 {
                sgi.pending_latch = true;
                kicked |= 1 << vcpu;
            }
        }
        for vcpu in 0..self.generations.len().min(64) {
            if kicked & (1 << vcpu) != 0 {
                self.touch(vcpu);
            }
        }
        Ok(kicked)
    }

    /// The highest-priority (lowest value; then lowest INTID) deliverable
    /// interrupt for `vcpu`: its SGIs and PPIs, and the SPIs routed to it.
    /// Priority masking (PMR, running priority) is the CPU interface's.
    pub fn highest_pending(&self, vcpu: usize) -> Result<Option<PendingIrq>, VgicError> {
        let redistributor = self.redistributor(vcpu)?;
        if !redistributor.awake() {
            return Ok(None);
        }
        // Deliverable: enabled, pending, not already active, its group
        // enabled at the distributor. This runs under the VM lock: cheap
        // field tests first, an SPI's routing only for candidates.
        let groups = [
            self.distributor.group_enabled(false),
            self.distributor.group_enabled(true),
        ];
        let candidate = |irq: &IrqState| {
            irq.enabled && !irq.active && irq.pending() && groups[usize::from(irq.group1)]
        };
        let mut best: Option<PendingIrq> = None;
        // INTIDs ascend, so a strictly better priority wins ties to the
        // lower INTID.
        let mut consider = |intid: u32, irq: &IrqState| {
            if best.is_none_or(|b| irq.priority < b.priority) {
                best = Some(PendingIrq {
                    intid,
                    priority: irq.priority,
                    group: irq.group(),
                });
            }
        };
        for (intid, irq) in (0u32..).zip(redistributor.private.iter()) {
            if candidate(irq) {
                consider(intid, irq);
            }
        }
        let spis_idle = self.spis_idle_at.get(vcpu);
        if spis_idle.is_some_and(|idle| idle.get() == Some(self.spi_generation)) {
            return Ok(best);
        }
        let affinity = redistributor.affinity();
        let mut any_spi = false;
        for (intid, irq) in self.distributor.spis() {
            if candidate(irq) && self.distributor.routed_to(intid, affinity) {
                any_spi = true;
                consider(intid, irq);
            }
        }
        if let Some(idle) = spis_idle {
            idle.set((!any_spi).then_some(self.spi_generation));
        }
        Ok(best)
    }

    /// The hypervisor handed `intid` to `vcpu` (list register): it stops
    /// being pending (an edge is consumed) and becomes active.
    pub fn activate(&mut self, vcpu: usize, intid: u32) -> Result<(), VgicError> {
        let irq = self.irq_mut(vcpu, intid)?;
        irq.pending_latch = false;
        irq.active = true;
        Ok(())
    }

    /// The guest's EOI retired `intid` on `vcpu`.
    pub fn deactivate(&mut self, vcpu: usize, intid: u32) -> Result<(), VgicError> {
        self.irq_mut(vcpu, intid)?.active = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
