//! The EL1 vector table and its Rust handlers: the IRQ handler acknowledges
//! and EOIs interrupts through the ICC registers, the synchronous handler
//! absorbs the one abort or undefined call a guarded probe expects (or the
//! exception that ends an AArch32 EL0 probe) and reports anything else as
//! a fatal failure.

use core::arch::global_asm;
use core::mem::size_of;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::sysreg;

/// x0..x30 as the vector stubs push them; the pad keeps SP 16-byte aligned.
#[repr(C)]
struct TrapFrame {
    x: [u64; 31],
    pad: u64,
}

/// Vector offsets / 0x80 (Arm ARM D1.10.2).
const CURRENT_SP0_SYNC: u64 = 0;
const LOWER_AARCH32_SYNC: u64 = 12;
/// SPSR_EL1 for EL1h with D, A, I and F masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;
const CURRENT_SPX_SYNC: u64 = 4;
const CURRENT_SPX_IRQ: u64 = 5;
const SPURIOUS_INTID: u32 = 1023;
/// ESR_EL1.EC of an instruction abort taken without a change of EL.
const EC_INSTRUCTION_ABORT_SAME_EL: u64 = 0x21;

// Globals: the exception handlers have no other channel to the code they
// interrupted. Each is written by one side and read by the other.
/// A guarded probe is running and expects a synchronous exception.
static EXPECTING_FAULT: AtomicBool = AtomicBool::new(false);
/// ESR_EL1 and FAR_EL1 of the expected exception, once taken.
static FAULT_ESR: AtomicU64 = AtomicU64::new(0);
static FAULT_FAR: AtomicU64 = AtomicU64::new(0);
static FAULT_TAKEN: AtomicBool = AtomicBool::new(false);
/// Interrupts handled so far, and the INTID of the last one.
static IRQ_COUNT: AtomicU32 = AtomicU32::new(0);
static IRQ_LAST: AtomicU32 = AtomicU32::new(SPURIOUS_INTID);
/// Where an AArch32 EL0 probe's first exception returns to (EL1h), set by
/// `attack::aarch32_load_multiple` before it enters EL0.
pub(super) static AARCH32_LANDING: AtomicU64 = AtomicU64::new(0);
/// The virtual counter when the IRQ handler was entered last.
static IRQ_ENTERED_AT: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .section .text.vectors, "ax"
    .balign 2048
    .global testguest_vectors
testguest_vectors:
    .irp kind, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15
    .balign 0x80
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       vector_common
    .endr

vector_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    mov     x1, sp
    bl      testguest_exception
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #{frame}
    eret
    "#,
    frame = const size_of::<TrapFrame>(),
);

const _: () = assert!(
    size_of::<TrapFrame>() == 256,
    "vector_common saves 31 registers + pad"
);

#[no_mangle]
extern "C" fn testguest_exception(kind: u64, frame: &mut TrapFrame) {
    match kind {
        CURRENT_SPX_IRQ => handle_irq(),
        // An AArch32 EL0 probe ends at its first exception: back to EL1,
        // where it started.
        LOWER_AARCH32_SYNC if EXPECTING_FAULT.swap(false, Ordering::SeqCst) => {
            FAULT_ESR.store(sysreg::esr_el1(), Ordering::SeqCst);
            FAULT_FAR.store(sysreg::far_el1(), Ordering::SeqCst);
            FAULT_TAKEN.store(true, Ordering::SeqCst);
            sysreg::set_spsr_el1(SPSR_EL1H_MASKED);
            sysreg::set_elr_el1(AARCH32_LANDING.load(Ordering::SeqCst));
        }
        // A probe that runs on SP_EL0 takes its fault through the SP0 vector.
        CURRENT_SP0_SYNC | CURRENT_SPX_SYNC if EXPECTING_FAULT.swap(false, Ordering::SeqCst) => {
            let esr = sysreg::esr_el1();
            FAULT_ESR.store(esr, Ordering::SeqCst);
            FAULT_FAR.store(sysreg::far_el1(), Ordering::SeqCst);
            FAULT_TAKEN.store(true, Ordering::SeqCst);
            if (esr >> 26) & 0x3F == EC_INSTRUCTION_ABORT_SAME_EL {
                // A probe that branched where nothing can be fetched:
                // resume at its link address.
                sysreg::set_elr_el1(frame.x[30]);
            } else {
                // Every other probe faults on one 4-byte instruction:
                // resume after it.
                sysreg::set_elr_el1(sysreg::elr_el1().wrapping_add(4));
            }
        }
        _ => crate::fatal(format_args!(
            "unexpected exception (vector {kind}) ESR={:#x} ELR={:#x} FAR={:#x} x0={:#x}",
            sysreg::esr_el1(),
            sysreg::elr_el1(),
            sysreg::far_el1(),
            frame.x[0],
        )),
    }
}

fn handle_irq() {
    IRQ_ENTERED_AT.store(sysreg::counter(), Ordering::SeqCst);
    let intid = sysreg::icc_iar1();
    if intid == SPURIOUS_INTID {
        return;
    }
    // The only interrupt the guest enables is the virtual timer: stop it so
    // its level drops before the EOI.
    sysreg::vtimer_stop();
    IRQ_LAST.store(intid, Ordering::SeqCst);
    IRQ_COUNT.store(
        IRQ_COUNT.load(Ordering::SeqCst).wrapping_add(1),
        Ordering::SeqCst,
    );
    sysreg::icc_eoir1(intid);
}

/// Interrupts handled so far and the INTID of the last one.
pub fn irq_stats() -> (u32, u32) {
    (
        IRQ_COUNT.load(Ordering::SeqCst),
        IRQ_LAST.load(Ordering::SeqCst),
    )
}

/// The virtual counter at the last entry into the IRQ handler (before it
/// acknowledged anything).
pub fn irq_entered_at() -> u64 {
    IRQ_ENTERED_AT.load(Ordering::SeqCst)
}

/// A synchronous exception a guarded probe took.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub esr: u64,
    pub far: u64,
}

impl Fault {
    /// ESR_EL1.EC.
    pub fn class(&self) -> u64 {
        (self.esr >> 26) & 0x3F
    }
}

/// Runs `probe`, whose one instruction may take a synchronous exception;
/// the handler skips that instruction and the fault is returned instead.
pub fn guarded<R>(probe: impl FnOnce() -> R) -> Result<R, Fault> {
    FAULT_TAKEN.store(false, Ordering::SeqCst);
    EXPECTING_FAULT.store(true, Ordering::SeqCst);
    let result = probe();
    EXPECTING_FAULT.store(false, Ordering::SeqCst);
    if FAULT_TAKEN.load(Ordering::SeqCst) {
        Err(Fault {
            esr: FAULT_ESR.load(Ordering::SeqCst),
            far: FAULT_FAR.load(Ordering::SeqCst),
        })
    } else {
        Ok(result)
    }
}
