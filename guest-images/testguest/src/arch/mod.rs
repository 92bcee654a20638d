//! The test guest's only contact with the hardware: boot code, exception
//! vectors, system registers, MMIO windows and the SMCCC conduits. Every
//! `unsafe` block and `asm!` of the crate lives in this module tree.
//!
//! The guest runs at EL1h with the MMU off, so every data access is to
//! Device-nGnRnE memory: accesses stay naturally aligned (the target is
//! `+strict-align`) and need no cache maintenance.

pub mod attack;
mod boot;
mod exceptions;
pub mod sysreg;

use core::arch::asm;
use core::ptr;

use fdt::{Fdt, FdtError};

pub use exceptions::{guarded, irq_entered_at, irq_stats, Fault};

use crate::platform::{Conduit, Window};

unsafe extern "C" {
    /// First and one-past-last byte the guest occupies (linker/testguest.ld).
    static _image_start: u8;
    static _image_end: u8;
    /// The secondary CPUs' stack slots (linker/testguest.ld).
    static _secondary_stacks: u8;
    static _secondary_stacks_end: u8;
    /// The FF-A battery's pages (linker/testguest.ld): no Rust object
    /// lives there.
    static _ffa_pages: u8;
    static _ffa_pages_end: u8;
    /// The hostile guest's virtqueue pages (linker/testguest.ld): no Rust
    /// object lives there.
    static _attack_pages: u8;
    static _attack_pages_end: u8;
    /// Entry of a secondary CPU (`boot.rs`).
    fn _secondary_start();
    /// Entry of the hostile guest's second CPU (`boot.rs`).
    fn _attack_secondary_start();
}

/// Size of one secondary CPU's stack slot.
pub const SECONDARY_STACK_SIZE: usize = 0x4000;

/// The PSCI CPU_ON entry point and context id for the CPU with `index`
/// (its position in the DT), if a stack slot exists for it.
pub fn secondary_entry(index: usize) -> Option<(u64, u64)> {
    let slots_bytes =
        ptr::addr_of!(_secondary_stacks_end) as usize - ptr::addr_of!(_secondary_stacks) as usize;
    let slots = slots_bytes / SECONDARY_STACK_SIZE;
    let entry = _secondary_start as *const () as usize;
    (1..=slots)
        .contains(&index)
        .then_some((entry as u64, index as u64))
}

/// The PSCI CPU_ON entry point of the hostile guest's second CPU.
pub fn attack_secondary_entry() -> u64 {
    _attack_secondary_start as *const () as u64
}

fn image_range() -> (usize, usize) {
    (
        ptr::addr_of!(_image_start) as usize,
        ptr::addr_of!(_image_end) as usize,
    )
}

/// Parses the DTB the loader passed in x0.
pub fn device_tree(dtb: usize) -> Result<Fdt<'static>, FdtError> {
    // SAFETY: the boot protocol (QEMU's -kernel, the hypervisor's
    // linux-image loader) puts a DTB at x0 and never reuses that memory; the
    // crate reads the header's totalsize before building the slice, and the
    // guest never writes outside its own image.
    unsafe { Fdt::from_ptr(dtb as *const u8) }
}

/// A device's register window: accesses are bounds-checked against the
/// window the device tree gave and must be naturally aligned.
#[derive(Clone, Copy, Debug)]
pub struct DeviceWindow {
    base: usize,
    size: usize,
}

impl DeviceWindow {
    /// Refuses an empty or wrapping window and one that overlaps the
    /// guest's own image (it would alias Rust-owned memory).
    pub fn new(window: Window) -> Option<Self> {
        let end = window.base.checked_add(window.size)?;
        let (image_start, image_end) = image_range();
        if window.size == 0 || (window.base < image_end && image_start < end) {
            return None;
        }
        Some(DeviceWindow {
            base: window.base,
            size: window.size,
        })
    }

    pub fn base(&self) -> usize {
        self.base
    }

    fn register(&self, offset: usize, width: usize) -> usize {
        assert!(
            offset.is_multiple_of(width)
                && offset
                    .checked_add(width)
                    .is_some_and(|end| end <= self.size),
            "register {offset:#x}/{width} outside window {:#x}+{:#x}",
            self.base,
            self.size
        );
        self.base + offset
    }

    pub fn read32(&self, offset: usize) -> u32 {
        let address = self.register(offset, 4);
        // SAFETY: `address` is an aligned register inside a device window
        // from the device tree that does not overlap the guest's memory
        // (checked in `new` and `register`); MMU off makes it Device memory.
        unsafe { ptr::read_volatile(address as *const u32) }
    }

    pub fn write32(&self, offset: usize, value: u32) {
        let address = self.register(offset, 4);
        // SAFETY: as in `read32`.
        unsafe { ptr::write_volatile(address as *mut u32, value) }
    }

    pub fn write64(&self, offset: usize, value: u64) {
        let address = self.register(offset, 8);
        // SAFETY: as in `read32`.
        unsafe { ptr::write_volatile(address as *mut u64, value) }
    }

    pub fn read64(&self, offset: usize) -> u64 {
        let address = self.register(offset, 8);
        // SAFETY: as in `read32`.
        unsafe { ptr::read_volatile(address as *const u64) }
    }

    /// A byte (`width` 1) or halfword (2) read that a device may refuse:
    /// its synchronous external abort is caught and returned as the error.
    pub fn probe_read(&self, offset: usize, width: usize) -> Result<u32, Fault> {
        let address = self.register(offset, width);
        guarded(|| {
            let value: u32;
            // SAFETY: one load of an aligned register inside the window (as
            // in `read32`); if the device refuses it, the vector handler
            // (armed by `guarded`) skips this single instruction, leaving
            // `value` unspecified but initialised.
            unsafe {
                if width == 1 {
                    asm!("ldrb {value:w}, [{address}]", address = in(reg) address, value = out(reg) value, options(nostack, readonly));
                } else {
                    asm!("ldrh {value:w}, [{address}]", address = in(reg) address, value = out(reg) value, options(nostack, readonly));
                }
            }
            value
        })
    }
}

/// Reads a word at an address no device or memory claims; the expected
/// synchronous external abort is caught and returned as the error.
pub fn probe_unmapped_read(address: usize) -> Result<u32, Fault> {
    let (image_start, image_end) = image_range();
    assert!(
        !(image_start..image_end).contains(&address),
        "probe inside the guest image"
    );
    guarded(|| {
        let value: u32;
        // SAFETY: one load from an address outside the guest's memory; if it
        // aborts, the vector handler (armed by `guarded`) skips this single
        // instruction, leaving `value` unspecified but initialised.
        unsafe {
            asm!("ldr {value:w}, [{address}]", address = in(reg) address, value = out(reg) value, options(nostack, readonly));
        }
        value
    })
}

/// An SMCCC fast call through `conduit`; returns x0..x3.
pub fn smccc_call(conduit: Conduit, function: u32, args: [u64; 3]) -> [u64; 4] {
    let (mut x0, mut x1, mut x2, mut x3) = (u64::from(function), args[0], args[1], args[2]);
    match conduit {
        // SAFETY: an SMCCC call changes no memory the guest owns; SMCCC v1.0
        // may clobber x4..x17, which `clobber_abi("C")` covers.
        Conduit::Hvc => unsafe {
            asm!("hvc #0", inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3, clobber_abi("C"), options(nostack));
        },
        // SAFETY: as for HVC.
        Conduit::Smc => unsafe {
            asm!("smc #0", inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3, clobber_abi("C"), options(nostack));
        },
    }
    [x0, x1, x2, x3]
}

/// Pages the guest shares with the hypervisor, which no Rust object covers:
/// the FF-A battery's (RX/TX buffers, memory to share) and the hostile
/// guest's virtqueues. Byte access, bounds-checked.
#[derive(Clone, Copy, Debug)]
pub struct FfaPages {
    base: usize,
    size: usize,
}

/// The FF-A battery's pages.
pub fn ffa_pages() -> FfaPages {
    let base = ptr::addr_of!(_ffa_pages) as usize;
    FfaPages {
        base,
        size: ptr::addr_of!(_ffa_pages_end) as usize - base,
    }
}

/// `window` of RAM as shared pages, if it stays clear of the guest's
/// image (the hostile guest checks RAM a reset must have zeroed).
pub fn free_ram(window: Window) -> Option<FfaPages> {
    let end = window.base.checked_add(window.size)?;
    let (image_start, image_end) = image_range();
    (window.base >= image_end || end <= image_start).then_some(FfaPages {
        base: window.base,
        size: window.size,
    })
}

/// The hostile guest's virtqueue pages.
pub fn attack_pages() -> FfaPages {
    let base = ptr::addr_of!(_attack_pages) as usize;
    FfaPages {
        base,
        size: ptr::addr_of!(_attack_pages_end) as usize - base,
    }
}

impl FfaPages {
    /// The IPA of page `n` (the MMU is off: addresses are IPAs).
    pub fn page(&self, n: usize) -> u64 {
        assert!((n + 1) * 0x1000 <= self.size, "FF-A page {n} out of range");
        (self.base + n * 0x1000) as u64
    }

    fn check(&self, offset: usize, len: usize) -> usize {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= self.size),
            "FF-A pages: {len} bytes at {offset:#x}"
        );
        self.base + offset
    }

    /// Copies `bytes` to `offset`.
    pub fn write(&self, offset: usize, bytes: &[u8]) {
        let at = self.check(offset, bytes.len());
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: inside the linker's `.ffa_pages` or `.attack_pages`,
            // or RAM outside the image (`free_ram`), which no Rust object
            // uses; byte accesses are always aligned.
            unsafe { ptr::write_volatile((at + i) as *mut u8, *b) }
        }
    }

    /// Fills `buf` from `offset`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        let at = self.check(offset, buf.len());
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: as in `write`; the hypervisor writes these pages
            // only during our own FF-A calls or virtqueue notifications
            // (or, for a receive queue, while it delivers a frame: the
            // bytes read are then whatever it wrote).
            *b = unsafe { ptr::read_volatile((at + i) as *const u8) }
        }
    }
}

/// An FF-A call (SMC, x0..x7 in and out).
pub fn ffa_call(regs: [u64; 8]) -> [u64; 8] {
    let [mut x0, mut x1, mut x2, mut x3, mut x4, mut x5, mut x6, mut x7] = regs;
    // SAFETY: an SMCCC call; the only guest memory it touches is the FF-A
    // pages the guest named (RX buffer, memory it shares), which no Rust
    // object covers. `clobber_abi("C")` covers x8..x17.
    unsafe {
        asm!("smc #0",
             inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
             inout("x4") x4, inout("x5") x5, inout("x6") x6, inout("x7") x7,
             clobber_abi("C"), options(nostack));
    }
    [x0, x1, x2, x3, x4, x5, x6, x7]
}

/// An SMCCC call that may be UNDEFINED (no EL2/EL3 behind the conduit).
pub fn guarded_smccc_call(
    conduit: Conduit,
    function: u32,
    args: [u64; 3],
) -> Result<[u64; 4], Fault> {
    guarded(|| smccc_call(conduit, function, args))
}

/// One WFI: returns when an interrupt is pending (taken first if PSTATE.I
/// is clear) or spuriously.
pub fn wait_for_interrupt() {
    // SAFETY: WFI only waits. Not `nomem`: the IRQ handler it lets run
    // writes memory the caller reads next.
    unsafe { asm!("wfi", options(nostack, preserves_flags)) }
}

/// Sleeps in WFI until the IRQ handler has run past `count` interrupts.
/// IRQs stay masked around each WFI (which wakes on a pending interrupt
/// all the same) and are let in only after it: an interrupt taken between
/// the check and the WFI would leave the CPU asleep with nothing to wake it.
pub fn sleep_until_handled(count: u32) {
    while irq_stats().0 == count {
        wait_for_interrupt();
        sysreg::irq_unmask();
        sysreg::irq_mask();
    }
}

/// V0-V31 as 32 128-bit values.
pub type VectorFile = [u128; 32];

/// Loads `pattern` into V0-V31, makes a null SMCCC call (PSCI_VERSION)
/// through `conduit` and reads `uart_register` (a side-effect-free device
/// register) with nothing in between that could touch them, and returns
/// V0-V31 as they are afterwards: whatever sits below the guest must keep
/// them across the exits.
pub fn vectors_across_exits(
    pattern: &VectorFile,
    conduit: Conduit,
    uart_register: usize,
) -> VectorFile {
    let mut after: VectorFile = [0; 32];
    let function = u64::from(crate::smccc::PSCI_VERSION);
    macro_rules! probe {
        ($call:literal) => {
            // SAFETY: reads `pattern` and writes `after` (both 512 bytes,
            // 16-byte aligned as u128 arrays), makes an SMCCC call (which may
            // clobber x0-x17: declared, and V0-V31 are restored by the
            // caller's clobber list) and one load from a device register the
            // caller took from the device tree.
            unsafe {
                asm!(
                    "ldp q0, q1, [x20, #0]",
                    "ldp q2, q3, [x20, #32]",
                    "ldp q4, q5, [x20, #64]",
                    "ldp q6, q7, [x20, #96]",
                    "ldp q8, q9, [x20, #128]",
                    "ldp q10, q11, [x20, #160]",
                    "ldp q12, q13, [x20, #192]",
                    "ldp q14, q15, [x20, #224]",
                    "ldp q16, q17, [x20, #256]",
                    "ldp q18, q19, [x20, #288]",
                    "ldp q20, q21, [x20, #320]",
                    "ldp q22, q23, [x20, #352]",
                    "ldp q24, q25, [x20, #384]",
                    "ldp q26, q27, [x20, #416]",
                    "ldp q28, q29, [x20, #448]",
                    "ldp q30, q31, [x20, #480]",
                    $call,
                    "ldr w1, [x22]",
                    "stp q0, q1, [x21, #0]",
                    "stp q2, q3, [x21, #32]",
                    "stp q4, q5, [x21, #64]",
                    "stp q6, q7, [x21, #96]",
                    "stp q8, q9, [x21, #128]",
                    "stp q10, q11, [x21, #160]",
                    "stp q12, q13, [x21, #192]",
                    "stp q14, q15, [x21, #224]",
                    "stp q16, q17, [x21, #256]",
                    "stp q18, q19, [x21, #288]",
                    "stp q20, q21, [x21, #320]",
                    "stp q22, q23, [x21, #352]",
                    "stp q24, q25, [x21, #384]",
                    "stp q26, q27, [x21, #416]",
                    "stp q28, q29, [x21, #448]",
                    "stp q30, q31, [x21, #480]",
                    // Registers the call preserves (SMCCC: all but x0-x17).
                    in("x20") pattern.as_ptr(),
                    in("x21") after.as_mut_ptr(),
                    in("x22") uart_register,
                    inout("x0") function => _,
                    clobber_abi("C"),
                    options(nostack),
                );
            }
        };
    }
    match conduit {
        Conduit::Hvc => probe!("hvc #0"),
        Conduit::Smc => probe!("smc #0"),
    }
    after
}

/// A spin-wait hint (YIELD). QEMU's round-robin TCG (`-icount`) passes
/// the host thread to the next CPU on it, so a CPU waiting for another
/// lets that one run at once instead of spinning out its time slice.
pub fn yield_cpu() {
    // SAFETY: YIELD is a hint; it changes no state.
    unsafe { asm!("yield", options(nomem, nostack, preserves_flags)) }
}

/// Waits for interrupts forever (after SYSTEM_OFF failed, or without PSCI).
pub fn halt() -> ! {
    sysreg::irq_mask();
    loop {
        // SAFETY: WFI only waits; it touches no memory.
        unsafe { asm!("wfi", options(nomem, nostack, preserves_flags)) }
    }
}
