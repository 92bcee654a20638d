//! The virtual GICv3 of one VM: a distributor (`distributor`), one
//! redistributor per vCPU (`redistributor`), and the query API the
//! hypervisor's list-register code uses: which interrupt a vCPU should see
//! next, and the state changes when it is handed to the vCPU and EOI'd.
//!
//! The hypervisor drives the model through:
//! - `Vgic::distributor()` / `Vgic::redistributors()`: `MmioDevice`s for the
//!   GICD window (64 KiB) and the GICR region (128 KiB per vCPU);
//! - `set_spi_level` / `set_ppi_level` / `raise_edge`: device lines;
//! - `send_sgi`: a trapped ICC_SGI1R_EL1 write, returning the vCPUs to tell;
//! - `activate_highest(vcpu)` when the next interrupt goes into a list
//!   register (`highest_pending` only looks), `deactivate` when the guest's
//!   EOI retires it (for a level interrupt whose line is still high it is
//!   pending again at once);
//! - `generation(vcpu)`: equal readings mean nothing changed for the vCPU.
//!
//! Every method takes `&self`: the distributor and each redistributor have
//! their own locks (see [`Vgic`]), so the physical CPUs of a VM reach the
//! model without the VM's lock.
//!
//! Priorities keep 5 bits (PRIORITY_MASK), as QEMU's CPU interface
//! (ICH_VTR_EL2.PRIbits) implements.

mod distributor;
mod irq;
mod redistributor;

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use spin::Mutex;

pub use distributor::{group_enable_bit, Distributor, GICD_SIZE};
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

/// A vCPU's affinity as `GICR_TYPER[63:32]` packs it: Aff3.Aff2.Aff1.Aff0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity(u32);

impl Affinity {
    pub const fn new(aff3: u8, aff2: u8, aff1: u8, aff0: u8) -> Self {
        Affinity(u32::from_be_bytes([aff3, aff2, aff1, aff0]))
    }

    /// From an MPIDR_EL1 value (Aff3 `[39:32]`, Aff2..Aff0 `[23:0]`).
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
    /// Edge-triggered: taken once per edge, never still asserted after the
    /// guest's EOI.
    pub edge: bool,
}

/// What [`Vgic::activate_highest`] handed to a vCPU, and whether its scan
/// saw another deliverable interrupt (when not, the caller need not scan
/// again to know there is nothing more to list).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activated {
    pub irq: PendingIrq,
    pub more: bool,
}

/// The GICD window as an [`MmioDevice`]: each access under the
/// distributor's lock.
pub struct DistributorMmio<'a>(&'a Vgic);

impl MmioDevice for DistributorMmio<'_> {
    fn size(&self) -> u64 {
        GICD_SIZE
    }

    #[inline(always)]
    fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        self.0.distributor.lock().read(offset, width)
    }

    fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Result<(), MmioError> {
        let vgic = self.0;
        let mut distributor = vgic.distributor.lock();
        let result = distributor.write(offset, width, value);
        vgic.group_enables
            .store(distributor.group_enables(), Ordering::Release);
        drop(distributor);
        vgic.touch_all();
        result
    }
}

/// The GICR region as an [`MmioDevice`]: one frame per vCPU, in vCPU
/// order, each access under that vCPU's redistributor lock.
pub struct RedistributorsMmio<'a>(&'a Vgic);

impl RedistributorsMmio<'_> {
    fn frame(&self, offset: u64) -> Result<(usize, u64), MmioError> {
        let index = usize::try_from(offset / GICR_FRAME_SIZE)
            .ok()
            .filter(|i| *i < self.0.vcpus())
            .ok_or(MmioError::OutOfWindow { offset })?;
        Ok((index, offset % GICR_FRAME_SIZE))
    }
}

impl MmioDevice for RedistributorsMmio<'_> {
    fn size(&self) -> u64 {
        self.0.vcpus() as u64 * GICR_FRAME_SIZE
    }

    fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        let (index, within) = self.frame(offset)?;
        self.0.redistributors[index]
            .lock()
            .read(within, width)
            .map_err(|e| rebase(e, offset - within))
    }

    fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Result<(), MmioError> {
        let (index, within) = self.frame(offset)?;
        let result = self.0.redistributors[index]
            .lock()
            .write(within, width, value)
            .map_err(|e| rebase(e, offset - within));
        self.0.touch(index);
        result
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

/// Marks an `spis_idle_at` entry as "scan the SPIs".
const SPIS_NOT_IDLE: u64 = u64::MAX;

/// One VM's virtual GICv3, shared by its vCPUs' physical CPUs without the
/// VM's lock: the distributor and each redistributor have their own locks,
/// so one vCPU's timer interrupt does not wait for another vCPU's exit.
///
/// Lock order: a redistributor, then the distributor; never two
/// redistributors at once.
pub struct Vgic {
    distributor: Mutex<Distributor>,
    redistributors: Vec<Mutex<Redistributor>>,
    /// Each vCPU's affinity (fixed), for SPI routing.
    affinities: Vec<Affinity>,
    /// GICD_CTLR's group enables ([`Distributor::group_enables`]), copied
    /// out of the distributor's lock for the scans of private interrupts.
    group_enables: AtomicU32,
    /// Per vCPU, bumped by every call that may change what
    /// [`Vgic::highest_pending`] answers for it (each mutation bumps the
    /// vCPUs it may affect), so a caller that found nothing pending can
    /// skip the scan until it changes.
    generations: Vec<AtomicU64>,
    /// Bumped by every call that may change an SPI (state, routing, the
    /// distributor's enables).
    spi_generation: AtomicU64,
    /// Per vCPU, the `spi_generation` at which no SPI routed to it was
    /// deliverable ([`SPIS_NOT_IDLE`] otherwise): the scan skips the SPIs
    /// until it moves (most changes concern one vCPU's SGIs and PPIs).
    spis_idle_at: Vec<AtomicU64>,
    spis: u32,
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
        let fresh = |n: usize, value: u64| (0..n).map(|_| AtomicU64::new(value)).collect();
        let vgic = Vgic {
            distributor: Mutex::new(Distributor::new(spis as usize, vcpus.len())),
            redistributors: (0..vcpus.len())
                .map(|i| Mutex::new(Redistributor::new(i as u16, vcpus[i], i + 1 == vcpus.len())))
                .collect(),
            affinities: vcpus.to_vec(),
            group_enables: AtomicU32::new(0),
            generations: fresh(vcpus.len(), 0),
            spi_generation: AtomicU64::new(0),
            spis_idle_at: fresh(vcpus.len(), SPIS_NOT_IDLE),
            spis,
        };
        Ok(vgic)
    }

    /// Puts every register back to its reset value (the VM restarts).
    pub fn reset(&self) {
        let count = self.vcpus();
        for (i, redistributor) in self.redistributors.iter().enumerate() {
            *redistributor.lock() =
                Redistributor::new(i as u16, self.affinities[i], i + 1 == count);
        }
        *self.distributor.lock() = Distributor::new(self.spis as usize, count);
        self.group_enables.store(0, Ordering::Release);
        self.touch_all();
    }

    /// Changes whenever `vcpu`'s interrupt state may have changed (see the
    /// field); equal values mean [`Vgic::highest_pending`] answers the same.
    pub fn generation(&self, vcpu: usize) -> u64 {
        self.generations
            .get(vcpu)
            .map_or(0, |g| g.load(Ordering::Acquire))
    }

    fn touch(&self, vcpu: usize) {
        if let Some(g) = self.generations.get(vcpu) {
            g.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn touch_all(&self) {
        self.spi_generation.fetch_add(1, Ordering::AcqRel);
        for g in &self.generations {
            g.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The GICD window's device.
    pub fn distributor(&self) -> DistributorMmio<'_> {
        DistributorMmio(self)
    }

    /// The GICR region's device (all vCPUs' frames).
    pub fn redistributors(&self) -> RedistributorsMmio<'_> {
        RedistributorsMmio(self)
    }

    pub fn vcpus(&self) -> usize {
        self.redistributors.len()
    }

    fn redistributor(&self, vcpu: usize) -> Result<&Mutex<Redistributor>, VgicError> {
        self.redistributors
            .get(vcpu)
            .ok_or(VgicError::NoSuchVcpu(vcpu))
    }

    /// The state of `intid` as `vcpu` sees it.
    pub fn irq(&self, vcpu: usize, intid: u32) -> Result<IrqState, VgicError> {
        let redistributor = self.redistributor(vcpu)?;
        match usize::try_from(intid).ok().filter(|i| *i < PRIVATE_IRQS) {
            Some(i) => Ok(redistributor.lock().private[i]),
            None => self
                .distributor
                .lock()
                .spi(intid)
                .copied()
                .ok_or(VgicError::NoSuchInterrupt(intid)),
        }
    }

    /// Runs `change` on the state of `intid` as `vcpu` sees it, under its
    /// bank's lock, and bumps the generations it may affect.
    fn change_irq<R>(
        &self,
        vcpu: usize,
        intid: u32,
        change: impl FnOnce(&mut IrqState) -> R,
    ) -> Result<R, VgicError> {
        let redistributor = self.redistributor(vcpu)?;
        match usize::try_from(intid).ok().filter(|i| *i < PRIVATE_IRQS) {
            Some(i) => {
                let result = change(&mut redistributor.lock().private[i]);
                self.touch(vcpu);
                Ok(result)
            }
            None => {
                let result = self
                    .distributor
                    .lock()
                    .spi_mut(intid)
                    .map(change)
                    .ok_or(VgicError::NoSuchInterrupt(intid))?;
                self.touch_all();
                Ok(result)
            }
        }
    }

    /// Drives an SPI's input line (level-sensitive devices: PL011, PL031).
    pub fn set_spi_level(&self, intid: u32, level: bool) -> Result<(), VgicError> {
        if intid < FIRST_SPI {
            return Err(VgicError::NoSuchInterrupt(intid));
        }
        self.change_irq(0, intid, |irq| drive_line(irq, level))
    }

    /// Drives a PPI's input line on one vCPU.
    pub fn set_ppi_level(&self, vcpu: usize, intid: u32, level: bool) -> Result<(), VgicError> {
        if !(16..32).contains(&intid) {
            return Err(VgicError::NoSuchInterrupt(intid));
        }
        self.change_irq(vcpu, intid, |irq| drive_line(irq, level))
    }

    /// Makes an interrupt pending as an edge would (`vcpu` selects the bank
    /// for SGIs/PPIs and is ignored for SPIs).
    pub fn raise_edge(&self, vcpu: usize, intid: u32) -> Result<(), VgicError> {
        self.change_irq(vcpu, intid, |irq| irq.pending_latch = true)
    }

    /// The vCPU an SPI is routed to (GICD_IROUTER), if any: the one to kick
    /// when the SPI becomes pending while another physical CPU runs it.
    pub fn spi_target(&self, intid: u32) -> Result<Option<usize>, VgicError> {
        let distributor = self.distributor.lock();
        distributor
            .spi(intid)
            .ok_or(VgicError::NoSuchInterrupt(intid))?;
        Ok(self
            .affinities
            .iter()
            .position(|a| distributor.routed_to(intid, *a)))
    }

    /// A write of `value` to ICC_SGI1R_EL1 by `sender`: makes the SGI
    /// pending on every target and returns them as a bit mask of vCPUs.
    pub fn send_sgi(&self, sender: usize, value: u64) -> Result<u64, VgicError> {
        self.redistributor(sender)?;
        let intid = ((value >> sgi1r::INTID_SHIFT) & 0xF) as usize;
        let cluster = (((value >> sgi1r::AFF3_SHIFT) & 0xFF) << 16)
            | (((value >> sgi1r::AFF2_SHIFT) & 0xFF) << 8)
            | ((value >> sgi1r::AFF1_SHIFT) & 0xFF);
        let range_base = ((value >> sgi1r::RS_SHIFT) & 0xF) * 16;
        let targets = value & sgi1r::TARGET_LIST_MASK;
        let mut kicked = 0u64;
        for (vcpu, affinity) in self.affinities.iter().enumerate() {
            let hit = if value & sgi1r::IRM != 0 {
                vcpu != sender
            } else {
                u64::from(affinity.cluster()) == cluster
                    && u64::from(affinity.aff0())
                        .checked_sub(range_base)
                        .is_some_and(|bit| bit < 16 && targets & (1 << bit) != 0)
            };
            if !hit {
                continue;
            }
            let mut redistributor = self.redistributors[vcpu].lock();
            let sgi = &mut redistributor.private[intid];
            // ICC_SGI1R generates Group 1 SGIs only.
            if sgi.group1 {
                sgi.pending_latch = true;
                drop(redistributor);
                self.touch(vcpu);
                kicked |= 1 << vcpu;
            }
        }
        Ok(kicked)
    }

    /// The highest-priority (lowest value; then lowest INTID) deliverable
    /// interrupt for `vcpu`: its SGIs and PPIs, and the SPIs routed to it.
    /// Priority masking (PMR, running priority) is the CPU interface's.
    pub fn highest_pending(&self, vcpu: usize) -> Result<Option<PendingIrq>, VgicError> {
        Ok(self.scan(vcpu, false)?.map(|found| found.irq))
    }

    /// Like [`Vgic::highest_pending`], and hands the interrupt found to the
    /// vCPU ([`Vgic::activate`]) under the same locks, so no other CPU can
    /// change it in between.
    pub fn activate_highest(&self, vcpu: usize) -> Result<Option<Activated>, VgicError> {
        self.scan(vcpu, true)
    }

    fn scan(&self, vcpu: usize, activate: bool) -> Result<Option<Activated>, VgicError> {
        // GICR_WAKER does not gate delivery, as on QEMU's GICv3 and KVM's:
        // a guest that never wakes its redistributor still gets interrupts.
        let mut redistributor = self.redistributor(vcpu)?.lock();
        // Deliverable: enabled, pending, not already active, its group
        // enabled at the distributor. Cheap field tests first, an SPI's
        // routing only for candidates.
        let groups = self.group_enables.load(Ordering::Acquire);
        let candidate = |irq: &IrqState| {
            irq.enabled
                && !irq.active
                && !irq.listed
                && irq.pending()
                && groups & group_enable_bit(irq.group1) != 0
        };
        let mut best: Option<PendingIrq> = None;
        let mut candidates = 0u32;
        // INTIDs ascend, so a strictly better priority wins ties to the
        // lower INTID.
        let mut consider = |intid: u32, irq: &IrqState| {
            candidates += 1;
            if best.is_none_or(|b| irq.priority < b.priority) {
                best = Some(PendingIrq {
                    intid,
                    priority: irq.priority,
                    group: irq.group(),
                    edge: irq.edge,
                });
            }
        };
        // Only the enabled ones can be candidates.
        let mut enabled = redistributor.enabled_private();
        while enabled != 0 {
            let intid = enabled.trailing_zeros();
            enabled &= enabled - 1;
            if let Some(irq) = redistributor.private.get(intid as usize) {
                if candidate(irq) {
                    consider(intid, irq);
                }
            }
        }
        let idle = &self.spis_idle_at[vcpu];
        let spi_generation = self.spi_generation.load(Ordering::Acquire);
        let mut distributor = None;
        if idle.load(Ordering::Acquire) != spi_generation {
            let d = self.distributor.lock();
            let affinity = self.affinities[vcpu];
            let mut any_spi = false;
            for (intid, irq) in d.spis() {
                if candidate(irq) && d.routed_to(intid, affinity) {
                    any_spi = true;
                    consider(intid, irq);
                }
            }
            idle.store(
                if any_spi {
                    SPIS_NOT_IDLE
                } else {
                    spi_generation
                },
                Ordering::Release,
            );
            distributor = Some(d);
        }
        let Some(found) = best else {
            return Ok(None);
        };
        let more = candidates > 1;
        if activate {
            let irq = match usize::try_from(found.intid)
                .ok()
                .filter(|i| *i < PRIVATE_IRQS)
            {
                Some(i) => Some(&mut redistributor.private[i]),
                None => distributor.as_mut().and_then(|d| d.spi_mut(found.intid)),
            };
            if let Some(irq) = irq {
                irq.list();
            }
            drop(distributor);
            drop(redistributor);
            if found.intid < FIRST_SPI {
                self.touch(vcpu);
            } else {
                self.touch_all();
            }
        }
        Ok(Some(Activated { irq: found, more }))
    }

    /// The hypervisor handed `intid` to `vcpu` (list register): it stops
    /// being pending (an edge is consumed) and becomes active.
    pub fn activate(&self, vcpu: usize, intid: u32) -> Result<(), VgicError> {
        self.change_irq(vcpu, intid, IrqState::list)
    }

    /// An edge-triggered `intid`, listed for `vcpu`, that fired again while
    /// there: consumes the new edge, which the caller adds to the list
    /// register (pending and active). Returns whether there was one.
    pub fn take_repeated_edge(&self, vcpu: usize, intid: u32) -> Result<bool, VgicError> {
        let repeated = |irq: &IrqState| irq.listed && irq.edge && irq.pending_latch;
        if !repeated(&self.irq(vcpu, intid)?) {
            return Ok(false);
        }
        self.change_irq(vcpu, intid, |irq| {
            let taken = repeated(irq);
            if taken {
                irq.pending_latch = false;
            }
            taken
        })
    }

    /// The guest's EOI retired `intid` on `vcpu`, or the hypervisor took
    /// it back: it has left its list register.
    pub fn deactivate(&self, vcpu: usize, intid: u32) -> Result<(), VgicError> {
        self.change_irq(vcpu, intid, |irq| {
            irq.active = false;
            irq.listed = false;
            irq.pending_listed = false;
        })
    }

    /// `intid`, listed for `vcpu` and not yet acknowledged there, is taken
    /// back if it should no longer reach the guest: the guest disabled it
    /// or its group, cleared its pending state (ICPENDR), or, level-
    /// sensitive and not latched, its line dropped; a GIC would no longer
    /// present it. It is then pending again as before it was listed. Returns
    /// whether it was taken back (the caller empties its list register).
    pub fn withdraw_undeliverable(&self, vcpu: usize, intid: u32) -> Result<bool, VgicError> {
        let groups = self.group_enables.load(Ordering::Acquire);
        let undeliverable = |irq: &IrqState| {
            irq.listed
                && (!irq.enabled
                    || groups & group_enable_bit(irq.group1) == 0
                    || !(irq.pending_listed || (!irq.edge && irq.line)))
        };
        if !undeliverable(&self.irq(vcpu, intid)?) {
            return Ok(false);
        }
        self.change_irq(vcpu, intid, |irq| {
            let withdrawn = undeliverable(irq);
            if withdrawn {
                irq.pending_latch |= irq.pending_listed;
                irq.pending_listed = false;
                irq.active = false;
                irq.listed = false;
            }
            withdrawn
        })
    }
}

/// A device line moves: a rising edge latches an edge-triggered interrupt.
fn drive_line(irq: &mut IrqState, level: bool) {
    if level && !irq.line && irq.edge {
        irq.pending_latch = true;
    }
    irq.line = level;
}

#[cfg(test)]
mod tests;
