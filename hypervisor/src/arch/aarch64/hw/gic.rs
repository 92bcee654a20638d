//! The host's GICv3, driven by the hypervisor: distributor and this CPU's
//! redistributor set up so the interrupts the hypervisor forwards (virtual
//! timer, maintenance, the console UART) reach EL2 as group-1 IRQs; the
//! CPU interface with split priority drop / deactivation (EOImode = 1) so
//! a hardware-forwarded interrupt stays active until the guest EOIs it; and
//! the list registers of the virtual CPU interface.

use core::arch::asm;

use crate::addr::{PhysAddr, PhysRange};

const GICD_CTLR: u64 = 0x0000;
const GICD_IGROUPR: u64 = 0x0080;
const GICD_ISENABLER: u64 = 0x0100;
const GICD_IPRIORITYR: u64 = 0x0400;
const GICD_IROUTER: u64 = 0x6000;
/// GICD_CTLR: EnableGrp1(NS) and ARE(_NS) (the same bits with and without
/// security extensions, as seen from the non-secure side).
const GICD_CTLR_ENABLE: u32 = (1 << 1) | (1 << 4);
const GICD_CTLR_RWP: u32 = 1 << 31;

const GICR_FRAME_STRIDE: u64 = 0x2_0000;
const GICR_TYPER: u64 = 0x0008;
const GICR_WAKER: u64 = 0x0014;
const GICR_TYPER_LAST: u64 = 1 << 4;
const GICR_WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const GICR_WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
const GICR_SGI_BASE: u64 = 0x1_0000;

/// Priority the hypervisor gives the interrupts it takes.
const HOST_PRIORITY: u8 = 0x80;
/// Polls before giving up on RWP / ChildrenAsleep.
const POLLS: u32 = 1_000_000;
/// ICC_CTLR_EL1.EOImode: EOIR drops priority only; DIR deactivates.
const ICC_CTLR_EOIMODE: u64 = 1 << 1;
/// First INTID that is not an SGI/PPI.
const FIRST_SPI: u32 = 32;
/// INTIDs 1020-1023 are special (spurious).
pub const SPURIOUS_INTID: u32 = 1020;

fn reg_ptr(base: PhysAddr, offset: u64) -> u64 {
    base.checked_add(offset).unwrap_or(base).as_u64()
}

fn read32(base: PhysAddr, offset: u64) -> u32 {
    // SAFETY: `base` is a GIC frame from the host DTB, mapped as device
    // memory; every offset used here is a 32-bit register of that frame.
    unsafe { core::ptr::read_volatile(reg_ptr(base, offset) as *const u32) }
}

fn write32(base: PhysAddr, offset: u64, value: u32) {
    // SAFETY: as in `read32`.
    unsafe { core::ptr::write_volatile(reg_ptr(base, offset) as *mut u32, value) }
}

fn read64(base: PhysAddr, offset: u64) -> u64 {
    // SAFETY: as in `read32`, for the 64-bit registers (TYPER, IROUTER).
    unsafe { core::ptr::read_volatile(reg_ptr(base, offset) as *const u64) }
}

fn write64(base: PhysAddr, offset: u64, value: u64) {
    // SAFETY: as in `read64`.
    unsafe { core::ptr::write_volatile(reg_ptr(base, offset) as *mut u64, value) }
}

fn write8(base: PhysAddr, offset: u64, value: u8) {
    // SAFETY: IPRIORITYR is byte-accessible.
    unsafe { core::ptr::write_volatile(reg_ptr(base, offset) as *mut u8, value) }
}

/// The host GIC as this CPU uses it.
#[derive(Clone, Copy, Debug)]
pub struct HostGic {
    dist: PhysAddr,
    /// This CPU's RD_base frame.
    redist: PhysAddr,
}

/// MPIDR affinity in GICR_TYPER / GICD_IROUTER layout.
fn affinity_of(mpidr: u64) -> (u32, u64) {
    let aff0_2 = mpidr & 0xff_ffff;
    let aff3 = (mpidr >> 32) & 0xff;
    let typer = u32::try_from(aff0_2 | (aff3 << 24)).unwrap_or(0);
    (typer, aff0_2 | (aff3 << 32))
}

fn this_mpidr() -> u64 {
    let mpidr: u64;
    // SAFETY: reading MPIDR_EL1 has no side effects.
    unsafe { asm!("mrs {0}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    mpidr
}

impl HostGic {
    /// Sets up the distributor (primary CPU, once) and this CPU's
    /// redistributor and CPU interface. `None` if no redistributor frame in
    /// `redist_region` belongs to this CPU.
    pub fn init(dist: PhysRange, redist_region: PhysRange, primary: bool) -> Option<Self> {
        let dist = dist.start;
        if primary {
            write32(dist, GICD_CTLR, GICD_CTLR_ENABLE);
            for _ in 0..POLLS {
                if read32(dist, GICD_CTLR) & GICD_CTLR_RWP == 0 {
                    break;
                }
            }
        }
        let (me, _) = affinity_of(this_mpidr());
        let mut frame = redist_region.start;
        let redist = loop {
            if !redist_region.contains(frame) {
                return None;
            }
            let typer = read64(frame, GICR_TYPER);
            if u32::try_from(typer >> 32).unwrap_or(u32::MAX) == me {
                break frame;
            }
            if typer & GICR_TYPER_LAST != 0 {
                return None;
            }
            frame = frame.checked_add(GICR_FRAME_STRIDE)?;
        };
        let waker = read32(redist, GICR_WAKER);
        write32(redist, GICR_WAKER, waker & !GICR_WAKER_PROCESSOR_SLEEP);
        for _ in 0..POLLS {
            if read32(redist, GICR_WAKER) & GICR_WAKER_CHILDREN_ASLEEP == 0 {
                break;
            }
        }
        let sgi = redist.checked_add(GICR_SGI_BASE)?;
        write32(sgi, GICD_IGROUPR, u32::MAX);
        // SAFETY: programs this CPU's own GIC CPU interface: system
        // registers enabled at EL2, every priority unmasked, split
        // priority-drop/deactivate, group 1 on. No memory is touched.
        unsafe {
            asm!(
                "mrs {t}, icc_sre_el2",
                "orr {t}, {t}, #0xf",
                "msr icc_sre_el2, {t}",
                "isb",
                "msr icc_pmr_el1, {pmr}",
                "msr icc_bpr1_el1, xzr",
                "msr icc_ctlr_el1, {ctlr}",
                "msr icc_igrpen1_el1, {one}",
                "isb",
                t = out(reg) _,
                pmr = in(reg) 0xffu64,
                ctlr = in(reg) ICC_CTLR_EOIMODE,
                one = in(reg) 1u64,
                options(nomem, nostack),
            );
        }
        Some(Self { dist, redist })
    }

    /// Enables SGI/PPI `intid` on this CPU, or SPI `intid` routed to this
    /// CPU, as a group-1 interrupt at the hypervisor's priority.
    pub fn enable(&self, intid: u32) {
        let word = u64::from(intid / 32) * 4;
        let bit = 1u32 << (intid % 32);
        if intid < FIRST_SPI {
            let Some(sgi) = self.redist.checked_add(GICR_SGI_BASE) else {
                return;
            };
            write8(sgi, GICD_IPRIORITYR + u64::from(intid), HOST_PRIORITY);
            write32(sgi, GICD_ISENABLER, bit);
        } else {
            let group = read32(self.dist, GICD_IGROUPR + word);
            write32(self.dist, GICD_IGROUPR + word, group | bit);
            write8(self.dist, GICD_IPRIORITYR + u64::from(intid), HOST_PRIORITY);
            let (_, route) = affinity_of(this_mpidr());
            write64(self.dist, GICD_IROUTER + u64::from(intid) * 8, route);
            write32(self.dist, GICD_ISENABLER + word, bit);
        }
    }
}

/// Acknowledges the highest-priority pending group-1 interrupt.
pub fn gic_ack() -> u32 {
    let intid: u64;
    // SAFETY: reading IAR acknowledges an interrupt; the caller EOIs it.
    unsafe { asm!("mrs {0}, icc_iar1_el1", out(reg) intid, options(nomem, nostack)) };
    u32::try_from(intid & 0xff_ffff).unwrap_or(SPURIOUS_INTID)
}

/// Drops the running priority of `intid` (EOImode 1: stays active).
pub fn gic_eoi(intid: u32) {
    // SAFETY: completes the priority drop of an interrupt we acknowledged.
    unsafe {
        asm!("msr icc_eoir1_el1, {0}", "isb", in(reg) u64::from(intid), options(nomem, nostack))
    };
}

/// Deactivates `intid` (for interrupts not handed to a guest with HW = 1).
pub fn gic_deactivate(intid: u32) {
    // SAFETY: deactivates an interrupt this CPU acknowledged.
    unsafe {
        asm!("msr icc_dir_el1, {0}", "isb", in(reg) u64::from(intid), options(nomem, nostack))
    };
}

/// Sends SGI `intid` to the physical CPU with MPIDR `mpidr`.
pub fn gic_send_sgi(intid: u32, mpidr: u64) {
    let aff0 = mpidr & 0xf;
    let value = ((mpidr >> 32) & 0xff) << 48
        | ((mpidr >> 16) & 0xff) << 32
        | (u64::from(intid) & 0xf) << 24
        | ((mpidr >> 8) & 0xff) << 16
        | (1 << aff0);
    // SAFETY: generating an SGI only signals another CPU's GIC interface.
    unsafe { asm!("msr icc_sgi1r_el1, {0}", "isb", in(reg) value, options(nomem, nostack)) };
}

/// The list registers whose interrupt the guest is done with, as a mask:
/// invalid and HW = 1 or without an EOI maintenance request
/// (ICH_ELRSR_EL2), or invalid with one (ICH_EISR_EL2). Registers never
/// written read as done too.
pub fn gic_finished_lrs() -> u64 {
    let (empty, eoied): (u64, u64);
    // SAFETY: reading the status registers of the virtual CPU interface
    // has no side effects.
    unsafe {
        asm!(
            "mrs {0}, ich_elrsr_el2",
            "mrs {1}, ich_eisr_el2",
            out(reg) empty,
            out(reg) eoied,
            options(nomem, nostack)
        )
    };
    empty | eoied
}

/// Number of list registers.
pub fn gic_lr_count() -> usize {
    let vtr: u64;
    // SAFETY: reading ICH_VTR_EL2 has no side effects.
    unsafe { asm!("mrs {0}, ich_vtr_el2", out(reg) vtr, options(nomem, nostack)) };
    usize::try_from(vtr & 0x1f).unwrap_or(0) + 1
}

macro_rules! lr_access {
    ($n:expr, $value:ident, $op:ident) => {
        match $n {
            0 => lr_access!(@one "ich_lr0_el2", $value, $op),
            1 => lr_access!(@one "ich_lr1_el2", $value, $op),
            2 => lr_access!(@one "ich_lr2_el2", $value, $op),
            3 => lr_access!(@one "ich_lr3_el2", $value, $op),
            4 => lr_access!(@one "ich_lr4_el2", $value, $op),
            5 => lr_access!(@one "ich_lr5_el2", $value, $op),
            6 => lr_access!(@one "ich_lr6_el2", $value, $op),
            7 => lr_access!(@one "ich_lr7_el2", $value, $op),
            8 => lr_access!(@one "ich_lr8_el2", $value, $op),
            9 => lr_access!(@one "ich_lr9_el2", $value, $op),
            10 => lr_access!(@one "ich_lr10_el2", $value, $op),
            11 => lr_access!(@one "ich_lr11_el2", $value, $op),
            12 => lr_access!(@one "ich_lr12_el2", $value, $op),
            13 => lr_access!(@one "ich_lr13_el2", $value, $op),
            14 => lr_access!(@one "ich_lr14_el2", $value, $op),
            15 => lr_access!(@one "ich_lr15_el2", $value, $op),
            _ => {}
        }
    };
    (@one $reg:literal, $value:ident, read) => {
        // SAFETY: reading a list register that exists (n < gic_lr_count()).
        unsafe { asm!(concat!("mrs {0}, ", $reg), out(reg) $value, options(nomem, nostack)) }
    };
    (@one $reg:literal, $value:ident, write) => {
        // SAFETY: writing a list register only changes what the guest's
        // virtual CPU interface presents.
        unsafe { asm!(concat!("msr ", $reg, ", {0}"), in(reg) $value, options(nomem, nostack)) }
    };
}

/// Reads ICH_LR<n>_EL2 (0 for a list register that does not exist).
pub fn gic_read_lr(n: usize) -> u64 {
    let mut value: u64 = 0;
    if n < gic_lr_count() {
        lr_access!(n, value, read);
    }
    value
}

/// Writes ICH_LR<n>_EL2 (ignored for a list register that does not exist).
pub fn gic_write_lr(n: usize, value: u64) {
    if n < gic_lr_count() {
        lr_access!(n, value, write);
    }
}

/// ICH_HCR_EL2.
pub fn gic_set_ich_hcr(value: u64) {
    // SAFETY: the virtual CPU interface's control register.
    unsafe { asm!("msr ich_hcr_el2, {0}", "isb", in(reg) value, options(nomem, nostack)) };
}
