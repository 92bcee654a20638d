//! The EL2 hardware layer (bare-metal target only): boot assembly and
//! exception vectors, the stage-1 MMU, PSCI calls, the PL011 and the global
//! allocator. Everything here is re-exported by `crate::arch`.
mod boot;

pub use boot::secondary_entry_point;
mod gic;
mod guest;
mod heap;
mod mmu;
mod panic;

pub use gic::{
    gic_ack, gic_deactivate, gic_eoi, gic_finished_lrs, gic_lr_count, gic_read_lr, gic_send_sgi,
    gic_set_ich_hcr, gic_write_lr, HostGic, SPURIOUS_INTID,
};
pub use guest::{
    copy_to_guest_ram, dc_clean_invalidate_set_way, fp_flush, guest_timer_ctls,
    guest_timers_disable, guest_va_to_ipa, hyp_timer_arm_at, hyp_timer_disarm, init_virtualization,
    inject_sync_exception, load_el1, load_stage2, read_id_register, run_guest, save_el1,
    set_wfx_trap, sync_icache, vtcr_el2, wait_for_interrupt, zero_guest_ram,
};
pub use heap::heap_init;
pub use mmu::{
    enable_mmu, frames_bytes, frames_bytes_mut, initrd_bytes, IdentityTables, TableReader,
};

use core::arch::asm;

use aarch64_cpu::registers::{CurrentEL, Readable, ID_AA64PFR0_EL1};

use crate::addr::PhysAddr;
use crate::boot::fw_cfg::{self, DmaAccess};
use crate::platform::PsciConduit;

/// PL011 data register offset.
const UARTDR: u64 = 0x00;
/// PL011 flag register offset.
const UARTFR: u64 = 0x18;
/// UARTFR: transmit FIFO full.
const UARTFR_TXFF: u32 = 1 << 5;

/// PL011 interrupt mask set/clear register offset.
const UARTIMSC: u64 = 0x38;
/// PL011 control register offset.
const UARTCR: u64 = 0x30;
/// UARTCR: UART, transmit and receive enabled (QEMU drops input otherwise).
const UARTCR_ENABLE: u32 = (1 << 0) | (1 << 8) | (1 << 9);
/// UARTFR: receive FIFO empty.
const UARTFR_RXFE: u32 = 1 << 4;
/// UARTIMSC: receive and receive-timeout interrupts.
const UARTIMSC_RX_RT: u32 = (1 << 4) | (1 << 6);
/// PL011 line control register offset.
const UARTLCR_H: u64 = 0x2C;
/// UARTLCR_H: FIFOs enabled (FEN), 8-bit words (WLEN).
const UARTLCR_H_FEN_WLEN8: u32 = (1 << 4) | (0b11 << 5);
/// UARTFR: the UART is busy transmitting.
const UARTFR_BUSY: u32 = 1 << 3;
/// PL031 data register offset (seconds).
const RTCDR: u64 = 0x00;

fn mmio_read32(base: PhysAddr, offset: u64) -> u32 {
    let reg = base.checked_add(offset).unwrap_or(base).as_u64() as *const u32;
    // SAFETY: callers pass a device window from the host DTB (PL011/PL031),
    // mapped as device memory, and one of its 32-bit registers.
    unsafe { core::ptr::read_volatile(reg) }
}

fn mmio_write32(base: PhysAddr, offset: u64, value: u32) {
    let reg = base.checked_add(offset).unwrap_or(base).as_u64() as *mut u32;
    // SAFETY: as in `mmio_read32`.
    unsafe { core::ptr::write_volatile(reg, value) }
}

/// Lets the PL011 at `base` receive into its 32-byte FIFO and interrupt on
/// received characters (the RX interrupt at the FIFO's trigger level, the
/// receive timeout for fewer). Without the FIFO the UART holds a single
/// byte, and any input QEMU delivers without flow control (its recorder
/// does, `-icount rr=record`) beyond that and its console multiplexer's
/// buffer is lost before the hypervisor runs.
pub fn uart_enable_rx_irq(base: PhysAddr) {
    // LCR_H may only change while nothing is being sent (PL011 TRM, UARTLCR_H).
    while mmio_read32(base, UARTFR) & UARTFR_BUSY != 0 {}
    let lcr_h = mmio_read32(base, UARTLCR_H);
    mmio_write32(base, UARTLCR_H, lcr_h | UARTLCR_H_FEN_WLEN8);
    let cr = mmio_read32(base, UARTCR);
    mmio_write32(base, UARTCR, cr | UARTCR_ENABLE);
    let imsc = mmio_read32(base, UARTIMSC);
    mmio_write32(base, UARTIMSC, imsc | UARTIMSC_RX_RT);
}

/// A received byte, if the PL011 at `base` has one.
pub fn uart_read_byte(base: PhysAddr) -> Option<u8> {
    if mmio_read32(base, UARTFR) & UARTFR_RXFE != 0 {
        return None;
    }
    // The low 8 bits of DR are the character; the rest are error flags.
    Some(mmio_read32(base, UARTDR).to_le_bytes()[0])
}

/// Runs one DMA transfer of QEMU's fw_cfg at `base` (`docs/specs/fw_cfg.rst`)
/// and returns the control word the device left in `access` (0: done). The
/// device finishes the transfer before the write that starts it returns.
fn fw_cfg_dma(base: PhysAddr, access: &mut DmaAccess) -> u32 {
    // The hypervisor runs on an identity map: the descriptor's address is
    // its physical address.
    let addr = u64::try_from((&raw mut *access).addr()).unwrap_or(u64::MAX);
    // SAFETY: a full barrier orders the descriptor's stores before the
    // device reads it; it touches no Rust-visible state.
    unsafe { asm!("dsb sy", options(nostack, preserves_flags)) };
    let [hi, lo] = [addr >> 32, addr & u64::from(u32::MAX)].map(|half| {
        // The register is big-endian; each half fits in 32 bits.
        u32::try_from(half).unwrap_or(0).to_be()
    });
    mmio_write32(base, fw_cfg::DMA_OFFSET, hi);
    mmio_write32(base, fw_cfg::DMA_OFFSET + 4, lo);
    // SAFETY: `access` is a live, exclusively borrowed descriptor the device
    // wrote behind the compiler's back; a volatile read sees that write.
    u32::from_be(unsafe { core::ptr::read_volatile(&raw const access.control) })
}

/// Copies `dest.len()` bytes of fw_cfg item `select`, from byte `offset`
/// on, into `dest` by DMA: QEMU copies on the host's side, and the CPU
/// never touches the bytes. `dest` is cleaned and invalidated to the point
/// of coherency before the transfer (no dirty line can land on the new
/// bytes) and invalidated after it (no stale line hides them).
pub fn fw_cfg_read_into(
    base: PhysAddr,
    select: u16,
    offset: usize,
    dest: &mut [u8],
) -> Result<(), fw_cfg::FwCfgError> {
    let range = |n: usize| u32::try_from(n).map_err(|_| fw_cfg::FwCfgError::OutOfRange);
    let mut skip = DmaAccess::select_skip(select, range(offset)?);
    if fw_cfg_dma(base, &mut skip) != 0 {
        return Err(fw_cfg::FwCfgError::DmaFailed);
    }
    if dest.is_empty() {
        return Ok(());
    }
    let length = range(dest.len())?;
    // The hypervisor runs on an identity map: the slice's address is its
    // physical address.
    let at = PhysAddr::new(u64::try_from(dest.as_mut_ptr().addr()).unwrap_or(u64::MAX));
    guest::clean_invalidate_to_poc(dest);
    let mut read = DmaAccess::read(length, at);
    let status = fw_cfg_dma(base, &mut read);
    guest::clean_invalidate_to_poc(dest);
    if status != 0 {
        return Err(fw_cfg::FwCfgError::DmaFailed);
    }
    Ok(())
}

/// Seconds since the Unix epoch from the PL031 at `base`.
pub fn rtc_read_seconds(base: PhysAddr) -> u32 {
    mmio_read32(base, RTCDR)
}

/// The physical system counter (CNTPCT_EL0).
pub fn counter() -> u64 {
    let v: u64;
    // SAFETY: reading the counter has no side effects; the ISB keeps it
    // from being read early.
    unsafe { asm!("isb", "mrs {0}, cntpct_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// Counter ticks per second (CNTFRQ_EL0).
pub fn counter_frequency() -> u64 {
    let v: u64;
    // SAFETY: reading CNTFRQ_EL0 has no side effects.
    unsafe { asm!("mrs {0}, cntfrq_el0", out(reg) v, options(nomem, nostack)) };
    v
}

/// Polled output of `bytes` on the PL011 at `base`.
pub fn uart_write(base: PhysAddr, bytes: &[u8]) {
    let dr = base.checked_add(UARTDR).unwrap_or(base).as_u64() as *mut u32;
    let fr = base.checked_add(UARTFR).unwrap_or(base).as_u64() as *const u32;
    for &b in bytes {
        // SAFETY: `base` is the PL011 the DTB describes, mapped as device
        // memory by the EL2 stage-1 tables (or accessed with the MMU off);
        // FR and DR are 32-bit registers of that device.
        unsafe {
            while core::ptr::read_volatile(fr) & UARTFR_TXFF != 0 {}
            core::ptr::write_volatile(dr, u32::from(b));
        }
    }
}

/// Calls the firmware through `conduit` with SMCCC function `function`.
pub fn psci_call(conduit: PsciConduit, function: u32, args: [u64; 3]) -> u64 {
    let mut x0 = u64::from(function);
    match conduit {
        // SAFETY: an SMCCC call to EL3 firmware (or QEMU's PSCI emulation);
        // per SMCCC it preserves x4-x17 and returns in x0-x3, which we mark
        // clobbered.
        PsciConduit::Smc => unsafe {
            asm!("smc #0", inout("x0") x0, inout("x1") args[0] => _,
                 inout("x2") args[1] => _, inout("x3") args[2] => _,
                 options(nostack));
        },
        // SAFETY: as above, through HVC to a hypervisor below us.
        PsciConduit::Hvc => unsafe {
            asm!("hvc #0", inout("x0") x0, inout("x1") args[0] => _,
                 inout("x2") args[1] => _, inout("x3") args[2] => _,
                 options(nostack));
        },
    }
    x0
}

/// An SMCCC call to EL3 with x0..x7 (FF-A passes arguments and results
/// in all eight); returns x0..x7 as EL3 left them.
pub fn smc_call(regs: [u64; 8]) -> [u64; 8] {
    let [mut x0, mut x1, mut x2, mut x3, mut x4, mut x5, mut x6, mut x7] = regs;
    // SAFETY: an SMCCC call to the EL3 firmware, made only when
    // ID_AA64PFR0_EL1 says EL3 exists (`has_el3`). It writes no memory of
    // ours (the buffers an FF-A call names are ours to lend); per SMCCC
    // v1.1 it may change x0-x17, which are all marked.
    unsafe {
        asm!("smc #0",
             inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
             inout("x4") x4, inout("x5") x5, inout("x6") x6, inout("x7") x7,
             out("x8") _, out("x9") _, out("x10") _, out("x11") _,
             out("x12") _, out("x13") _, out("x14") _, out("x15") _,
             out("x16") _, out("x17") _,
             options(nostack));
    }
    [x0, x1, x2, x3, x4, x5, x6, x7]
}

/// Whether the CPU implements EL3 (without it an SMC is UNDEFINED, and
/// there is no secure world to talk to).
pub fn has_el3() -> bool {
    // ID_AA64PFR0_EL1.EL3, bits 15:12 (the crate does not name the field).
    (ID_AA64PFR0_EL1.get() >> 12) & 0xf != 0
}

/// The exception level we run at.
pub fn current_el() -> u8 {
    // CurrentEL.EL is two bits wide.
    u8::try_from(CurrentEL.read(CurrentEL::EL)).unwrap_or(0)
}

/// Wakes CPUs waiting in [`wait_for_event`].
pub fn send_event() {
    // SAFETY: a barrier so the state change is visible, then SEV; neither
    // touches memory.
    unsafe { asm!("dsb ish", "sev", options(nostack)) };
}

/// Orders every memory access before it against every access after it,
/// as the guest's CPUs see them (a device publishing to a guest's rings).
pub fn memory_barrier() {
    // SAFETY: a barrier only; `nomem` is not given, so the compiler keeps
    // memory accesses on their side of it.
    unsafe { asm!("dmb ish", options(nostack, preserves_flags)) };
}

/// Orders the loads before it against the loads after it (a device
/// reading a guest's ring index before the entries it announces).
pub fn read_barrier() {
    // SAFETY: as in `memory_barrier`.
    unsafe { asm!("dmb ishld", options(nostack, preserves_flags)) };
}

/// Waits for an event (SEV from another CPU) or a spurious wake-up.
pub fn wait_for_event() {
    // SAFETY: WFE only waits.
    unsafe { asm!("wfe", options(nomem, nostack)) };
}

/// Stops this CPU for good (interrupts masked, waiting for events).
pub fn halt() -> ! {
    loop {
        // SAFETY: masking interrupts and waiting has no memory effects.
        unsafe { asm!("msr daifset, #0xf", "wfe", options(nomem, nostack)) };
    }
}
