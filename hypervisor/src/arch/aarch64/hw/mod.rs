//! The EL2 hardware layer (bare-metal target only): boot assembly and
//! exception vectors, the stage-1 MMU, PSCI calls, the PL011 and the global
//! allocator. Everything here is re-exported by `crate::arch`.
mod boot;
mod guest;
mod heap;
mod mmu;
mod panic;

pub use guest::{
    init_virtualization, inject_sync_exception, load_el1, load_stage2, run_guest, save_el1,
    sync_icache, vtcr_el2, ExitInfo, ExitKind,
};
pub use heap::heap_init;
pub use mmu::{enable_mmu, IdentityTables};

use core::arch::asm;

use aarch64_cpu::registers::{CurrentEL, Readable};

use crate::addr::PhysAddr;
use crate::platform::PsciConduit;

/// PL011 data register offset.
const UARTDR: u64 = 0x00;
/// PL011 flag register offset.
const UARTFR: u64 = 0x18;
/// UARTFR: transmit FIFO full.
const UARTFR_TXFF: u32 = 1 << 5;

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

/// The exception level we run at.
pub fn current_el() -> u8 {
    // CurrentEL.EL is two bits wide.
    u8::try_from(CurrentEL.read(CurrentEL::EL)).unwrap_or(0)
}

/// Stops this CPU for good (interrupts masked, waiting for events).
pub fn halt() -> ! {
    loop {
        // SAFETY: masking interrupts and waiting has no memory effects.
        unsafe { asm!("msr daifset, #0xf", "wfe", options(nomem, nostack)) };
    }
}
