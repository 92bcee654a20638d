//! Entering and leaving a guest: the world switch in assembly (register
//! offsets from `context::GuestRegs` via `offset_of!`), the EL2 controls
//! that make EL1 a virtual machine (HCR_EL2, VTCR/VTTBR, timers, GIC
//! virtual interface), and the EL1 system-register switch.
//!
//! While a guest runs, TPIDR_EL2 points at its `GuestRegs`; the lower-EL
//! vectors (in `boot.rs`) save the guest there and return from
//! `__hv_enter_guest` on the hypervisor stack that called it.
//!
//! FP/SIMD state is switched lazily: an exit leaves the guest's V0-V31,
//! FPSR and FPCR in the registers (`GuestRegs::fp_live`) and sets
//! CPTR_EL2.TFP, so that the hypervisor's own first FP/SIMD instruction
//! traps (`__hv_fp_trap`, from the current-EL vector) and saves them into
//! the `GuestRegs` TPIDR_EL2 names. The next entry reloads them only if
//! that happened. Most exits (a call, an MMIO access on a fast path) use
//! no FP/SIMD, and skip 32 register-pair stores and loads. Before the vCPU
//! whose state is live leaves the CPU or its `GuestRegs` is dropped or
//! replaced, `fp_flush` saves it.

use core::arch::{asm, global_asm};
use core::mem::offset_of;

use aarch64_cpu::registers::{HCR_EL2, MDCR_EL2};

use super::super::context::{El1SysRegs, ExitInfo, ExitKind, FpSimdState, GuestRegs};
use super::boot::CPTR_EL2_GUEST;
use super::mmu::pa_size_encoding;
use crate::addr::PhysAddr;
use crate::mm::pagetable::INPUT_BITS;

const GUEST_X: usize = offset_of!(GuestRegs, x);
const GUEST_PC: usize = offset_of!(GuestRegs, pc);
const GUEST_FP: usize = offset_of!(GuestRegs, fp);
const GUEST_FP_LIVE: usize = offset_of!(GuestRegs, fp_live);
const FP_FPSR: usize = offset_of!(FpSimdState, fpsr);
/// Bytes the entry path pushes: x29 and x19, the callee-saved registers
/// Rust cannot declare clobbered (x20-x28 and V8-V15 are, see
/// `run_guest`: the compiler keeps only what it needs across the call),
/// and x30, the return address.
const HOST_FRAME: usize = 32;
/// CPTR_EL2.TFP (non-VHE): FP/SIMD at EL0-EL2 traps to EL2.
const CPTR_EL2_TFP: u64 = 1 << 10;

global_asm!(
    r#"
    .section .text.guest, "ax"
    .global __hv_enter_guest
    // x0: *mut GuestRegs. Returns the exit kind (0 sync, 1 IRQ, 2 FIQ,
    // 3 SError) in x0 and ESR_EL2, FAR_EL2, HPFAR_EL2 in x1-x3, read before
    // any FP/SIMD trap could overwrite them. x20-x28 and V0-V31 are
    // clobbered (the caller declares them so): they hold the guest's
    // state on return. Only x19, x29 and x30 are saved here.
__hv_enter_guest:
    stp     x29, x30, [sp, #-{frame}]!
    str     x19, [sp, #16]

    // The guest may use FP/SIMD: no trap. If its state is still in the
    // registers (live: this CPU ran it last, and nothing used them since;
    // `fp_flush` clears the flag before another vCPU runs here), they
    // stay; else they are loaded.
    mov     x2, #{cptr_guest}
    msr     cptr_el2, x2
    msr     tpidr_el2, x0
    ldr     x1, [x0, #{live}]
    cbnz    x1, 2f
    isb
    add     x1, x0, #{fp}
    ldp     q0, q1, [x1, #0]
    ldp     q2, q3, [x1, #32]
    ldp     q4, q5, [x1, #64]
    ldp     q6, q7, [x1, #96]
    ldp     q8, q9, [x1, #128]
    ldp     q10, q11, [x1, #160]
    ldp     q12, q13, [x1, #192]
    ldp     q14, q15, [x1, #224]
    ldp     q16, q17, [x1, #256]
    ldp     q18, q19, [x1, #288]
    ldp     q20, q21, [x1, #320]
    ldp     q22, q23, [x1, #352]
    ldp     q24, q25, [x1, #384]
    ldp     q26, q27, [x1, #416]
    ldp     q28, q29, [x1, #448]
    ldp     q30, q31, [x1, #480]
    add     x1, x1, #{fpsr}
    ldp     x2, x3, [x1]
    msr     fpsr, x2
    msr     fpcr, x3
    mov     x1, #1
    str     x1, [x0, #{live}]
2:
    ldp     x2, x3, [x0, #{pc}]
    msr     elr_el2, x2
    msr     spsr_el2, x3

    ldp     x2, x3, [x0, #({x} + 16)]
    ldp     x4, x5, [x0, #({x} + 32)]
    ldp     x6, x7, [x0, #({x} + 48)]
    ldp     x8, x9, [x0, #({x} + 64)]
    ldp     x10, x11, [x0, #({x} + 80)]
    ldp     x12, x13, [x0, #({x} + 96)]
    ldp     x14, x15, [x0, #({x} + 112)]
    ldp     x16, x17, [x0, #({x} + 128)]
    ldp     x18, x19, [x0, #({x} + 144)]
    ldp     x20, x21, [x0, #({x} + 160)]
    ldp     x22, x23, [x0, #({x} + 176)]
    ldp     x24, x25, [x0, #({x} + 192)]
    ldp     x26, x27, [x0, #({x} + 208)]
    ldp     x28, x29, [x0, #({x} + 224)]
    ldr     x30, [x0, #({x} + 240)]
    ldp     x0, x1, [x0, #{x}]
    eret
    dsb     nsh
    isb

    // Reached from the lower-EL vectors with the guest's x0/x1 pushed on
    // the hypervisor stack and the exit kind in x0.
    .global __hv_guest_exit
__hv_guest_exit:
    mrs     x1, tpidr_el2
    stp     x2, x3, [x1, #({x} + 16)]
    stp     x4, x5, [x1, #({x} + 32)]
    stp     x6, x7, [x1, #({x} + 48)]
    stp     x8, x9, [x1, #({x} + 64)]
    stp     x10, x11, [x1, #({x} + 80)]
    stp     x12, x13, [x1, #({x} + 96)]
    stp     x14, x15, [x1, #({x} + 112)]
    stp     x16, x17, [x1, #({x} + 128)]
    stp     x18, x19, [x1, #({x} + 144)]
    stp     x20, x21, [x1, #({x} + 160)]
    stp     x22, x23, [x1, #({x} + 176)]
    stp     x24, x25, [x1, #({x} + 192)]
    stp     x26, x27, [x1, #({x} + 208)]
    stp     x28, x29, [x1, #({x} + 224)]
    str     x30, [x1, #({x} + 240)]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x1, #{x}]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [x1, #{pc}]

    // The guest's FP/SIMD state stays live: the hypervisor's first use
    // of FP/SIMD traps and saves it.
    mov     x2, #{cptr_host}
    msr     cptr_el2, x2
    mrs     x1, esr_el2
    mrs     x2, far_el2
    mrs     x3, hpfar_el2
    isb

    ldr     x19, [sp, #16]
    ldp     x29, x30, [sp], #{frame}
    ret

    // From the current-EL synchronous vector on a trapped FP/SIMD access
    // (EC 0x07), with x0/x1 pushed: lets EL2 use FP/SIMD from now on,
    // saves the live guest state first, and retries the instruction.
    .global __hv_fp_trap
__hv_fp_trap:
    stp     x2, x30, [sp, #-16]!
    bl      __hv_fp_flush
    ldp     x2, x30, [sp], #16
    ldp     x0, x1, [sp], #16
    eret

    // Clears CPTR_EL2.TFP and, if TPIDR_EL2 names a GuestRegs whose
    // FP/SIMD state is live, saves it there. TPIDR_EL2 is cleared: no
    // later trap saves anything until the next entry. Uses x0-x2 only.
    .global __hv_fp_flush
__hv_fp_flush:
    mov     x0, #{cptr_guest}
    msr     cptr_el2, x0
    isb
    mrs     x0, tpidr_el2
    msr     tpidr_el2, xzr
    cbz     x0, 1f
    ldr     x1, [x0, #{live}]
    cbz     x1, 1f
    str     xzr, [x0, #{live}]
    add     x1, x0, #{fp}
    stp     q0, q1, [x1, #0]
    stp     q2, q3, [x1, #32]
    stp     q4, q5, [x1, #64]
    stp     q6, q7, [x1, #96]
    stp     q8, q9, [x1, #128]
    stp     q10, q11, [x1, #160]
    stp     q12, q13, [x1, #192]
    stp     q14, q15, [x1, #224]
    stp     q16, q17, [x1, #256]
    stp     q18, q19, [x1, #288]
    stp     q20, q21, [x1, #320]
    stp     q22, q23, [x1, #352]
    stp     q24, q25, [x1, #384]
    stp     q26, q27, [x1, #416]
    stp     q28, q29, [x1, #448]
    stp     q30, q31, [x1, #480]
    add     x1, x1, #{fpsr}
    mrs     x2, fpsr
    str     x2, [x1]
    mrs     x2, fpcr
    str     x2, [x1, #8]
1:
    ret
"#,
    frame = const HOST_FRAME,
    cptr_guest = const CPTR_EL2_GUEST,
    cptr_host = const CPTR_EL2_GUEST | CPTR_EL2_TFP,
    live = const GUEST_FP_LIVE,
    fp = const GUEST_FP,
    fpsr = const FP_FPSR,
    pc = const GUEST_PC,
    x = const GUEST_X,
);

extern "C" {
    fn __hv_fp_flush();
}

/// Runs the guest whose EL1 state and stage 2 are loaded on this CPU until
/// its next exception to EL2.
pub fn run_guest(regs: &mut GuestRegs) -> ExitInfo {
    let (kind, esr, far, hpfar): (u64, u64, u64, u64);
    // SAFETY: `regs` is a valid, exclusively borrowed GuestRegs for the
    // whole call; the assembly saves and restores x19, x29 and x30 and
    // returns on the same stack, everything else the C ABI lets a callee
    // clobber is declared so, and x20-x28 and V8-V15 (which the ABI would
    // preserve) too: they return holding the guest's values. The guest runs under
    // stage 2 and cannot reach hypervisor memory. TPIDR_EL2 keeps naming
    // `regs` after the call, for a later FP/SIMD trap: the caller flushes
    // (`fp_flush`) before `regs` moves or goes.
    unsafe {
        asm!(
            "bl __hv_enter_guest",
            inout("x0") core::ptr::from_mut(regs) => kind,
            out("x1") esr,
            out("x2") far,
            out("x3") hpfar,
            out("x20") _, out("x21") _, out("x22") _, out("x23") _,
            out("x24") _, out("x25") _, out("x26") _, out("x27") _,
            out("x28") _,
            out("v8") _, out("v9") _, out("v10") _, out("v11") _,
            out("v12") _, out("v13") _, out("v14") _, out("v15") _,
            clobber_abi("C"),
        );
    }
    let kind = match kind {
        0 => ExitKind::Sync,
        1 => ExitKind::Irq,
        2 => ExitKind::Fiq,
        _ => ExitKind::SError,
    };
    ExitInfo {
        kind,
        esr,
        far,
        hpfar,
    }
}

/// Saves the FP/SIMD state of the vCPU last run on this CPU into its
/// `GuestRegs` if it is still live in the registers, and lets EL2 use
/// FP/SIMD without trapping. Call before that vCPU leaves this CPU (another
/// is loaded, it is turned off, its VM stops) and before its `GuestRegs`
/// are replaced.
pub fn fp_flush() {
    // SAFETY: TPIDR_EL2 names the GuestRegs of the vCPU last entered on
    // this CPU, still alive: the callers flush before dropping or
    // replacing it. The routine clobbers only x0-x2 (and the C ABI's
    // caller-saved registers cover them).
    unsafe { __hv_fp_flush() };
}

/// HCR_EL2 for a running guest: VM (stage 2), SWIO, FMO/IMO/AMO (physical
/// interrupts and SErrors to EL2, virtual ones to the guest), FB and BSU
/// inner shareable (broadcast maintenance), TID3 (ID registers, see
/// `idregs`), TSC (trap SMC), TIDCP (implementation-defined registers,
/// UNDEFINED), TACR (ACTLR_EL1, which can change how the core behaves for
/// every VM on it: RAZ/WI), TSW (data cache set/way operations, which act
/// on the physical caches: an invalidate would drop other VMs' dirty
/// lines; done as clean and invalidate), TERR (the RAS error record
/// registers, which hold the physical CPU's errors: UNDEFINED, and RAS
/// hidden from the ID registers), RW (EL1 is AArch64). These are the traps
/// KVM sets; `exit::handle_sysreg` emulates them. API and APK
/// stay clear: pointer-authentication keys are not switched between
/// vCPUs, so its instructions and key registers trap (UNDEFINED) and the
/// ID registers say it is absent (`idregs`), as KVM does for a guest
/// without it.
pub const HCR_EL2_GUEST: u64 = HCR_EL2::VM::SET.value
    | HCR_EL2::SWIO::SET.value
    | HCR_EL2::FMO::SET.value
    | HCR_EL2::IMO::SET.value
    | HCR_EL2::AMO::SET.value
    | HCR_EL2::FB::SET.value
    | HCR_EL2::BSU::InnerShareable.value
    | HCR_EL2::TID3::SET.value
    | HCR_EL2::TSC::SET.value
    | HCR_EL2::TIDCP::SET.value
    | HCR_EL2::TACR::SET.value
    | HCR_EL2::TSW::SET.value
    | HCR_EL2::TERR::SET.value
    | HCR_EL2::RW::EL1IsAarch64.value;
/// MDCR_EL2 traps: TPMCR (5) and TPM (6), the PMU, whose counters and
/// configuration are not switched between vCPUs (UNDEFINED, and hidden
/// from the ID registers, as under KVM without a PMU); TDA (9), TDOSA (10)
/// and TDRA (11), the debug registers (breakpoints, watchpoints, the OS
/// lock, MDSCR_EL1), which are not switched either: they read as zero and
/// ignore writes (`exit::handle_sysreg`), so no VM arms a breakpoint or
/// watchpoint that fires in another. HPMN, the counters EL1 would own, is
/// kept as the hardware reset it (bits [4:0]).
const MDCR_EL2_TRAPS: u64 = MDCR_EL2::TPMCR::SET.value
    | MDCR_EL2::TPM::SET.value
    | MDCR_EL2::TDA::SET.value
    | MDCR_EL2::TDOSA::SET.value
    | MDCR_EL2::TDRA::SET.value;
const MDCR_EL2_HPMN: u64 = MDCR_EL2::HPMN::SET.value;

/// VTCR_EL2 RES1 bit 31.
const VTCR_EL2_RES1: u64 = 1 << 31;
/// VTCR_EL2.SL0 = 1: start at level 1 (4 KiB granule).
const VTCR_EL2_SL0_LEVEL1: u64 = 0b01 << 6;
/// VTCR_EL2 walks: inner/outer write-back, inner shareable, 4 KiB granule.
const VTCR_EL2_WALK_WB_ISH: u64 = (0b01 << 8) | (0b01 << 10) | (0b11 << 12);
/// VTCR_EL2.PS shift.
const VTCR_EL2_PS_SHIFT: u64 = 16;
/// VTTBR_EL2.VMID shift.
const VTTBR_VMID_SHIFT: u64 = 48;
/// CNTHCTL_EL2 (non-VHE): EL1PCTEN, EL1 reads the physical counter;
/// EL1PCEN, EL1 owns the EL1 physical timer (switched with each vCPU's
/// EL1 state, its PPI forwarded as the virtual timer's is).
const CNTHCTL_EL2_EL1PCTEN: u64 = 1 << 0;
const CNTHCTL_EL2_EL1PCEN: u64 = 1 << 1;
/// ICH_HCR_EL2.En.
const ICH_HCR_EL2_EN: u64 = 1 << 0;
/// ICC_SRE_EL2: SRE, DFB, DIB, Enable (EL1 may use its own SRE).
const ICC_SRE_EL2_VALUE: u64 = 0b1111;

/// The VTCR_EL2 value for our stage-2 format.
pub fn vtcr_el2() -> u64 {
    u64::from(64 - INPUT_BITS)
        | VTCR_EL2_SL0_LEVEL1
        | VTCR_EL2_WALK_WB_ISH
        | (pa_size_encoding() << VTCR_EL2_PS_SHIFT)
        | VTCR_EL2_RES1
}

/// Sets this CPU's EL2 controls for running guests (once per CPU).
pub fn init_virtualization() {
    let vtcr = vtcr_el2();
    // SAFETY: these registers only control how EL1/EL0 execute (MDCR_EL2
    // also how the PMU counts at EL2, which the hypervisor does not use); no guest
    // runs yet and the hypervisor's own translation is unaffected. The
    // CPU is GICv3 (the DTB says so), so ICC_SRE_EL2/ICH_HCR_EL2 exist.
    unsafe {
        asm!(
            "msr vtcr_el2, {vtcr}",
            "msr cnthctl_el2, {cnthctl}",
            "msr cntvoff_el2, xzr",
            "mrs {tmp}, midr_el1",
            "msr vpidr_el2, {tmp}",
            "msr icc_sre_el2, {sre}",
            "isb",
            "msr ich_hcr_el2, {ich}",
            "msr hcr_el2, {hcr}",
            "mrs {tmp}, mdcr_el2",
            "and {tmp}, {tmp}, #{hpmn}",
            "orr {tmp}, {tmp}, {mdcr}",
            "msr mdcr_el2, {tmp}",
            "isb",
            vtcr = in(reg) vtcr,
            cnthctl = in(reg) CNTHCTL_EL2_EL1PCTEN | CNTHCTL_EL2_EL1PCEN,
            sre = in(reg) ICC_SRE_EL2_VALUE,
            ich = in(reg) ICH_HCR_EL2_EN,
            hcr = in(reg) HCR_EL2_GUEST,
            hpmn = const MDCR_EL2_HPMN,
            mdcr = in(reg) MDCR_EL2_TRAPS,
            tmp = out(reg) _,
            options(nostack),
        );
    }
}

/// Switches stage 2 to the tables at `root` for VM `vmid`.
pub fn load_stage2(root: PhysAddr, vmid: u16) {
    let vttbr = root.as_u64() | (u64::from(vmid) << VTTBR_VMID_SHIFT);
    // SAFETY: `root` holds complete stage-2 tables for that VM; stale TLB
    // entries of this VMID are dropped before the guest runs.
    unsafe {
        asm!(
            "msr vttbr_el2, {0}",
            "isb",
            "tlbi vmalls12e1is",
            "dsb ish",
            "isb",
            in(reg) vttbr,
            options(nostack),
        );
    }
}

/// Copies `src` into the start of `dst` (guest RAM being loaded) and
/// cleans the copy to the point of coherency: a guest starts with its MMU
/// and data cache off and reads memory, not the hypervisor's cache (the
/// arm64 boot protocol asks the same of a kernel image's loader).
///
/// The copy runs 128 bytes per iteration through vector register pairs. The target is built
/// with strict alignment, so the compiler's `memcpy` moves a source that is
/// misaligned against its destination (every bundle member: cpio aligns
/// them to 4 bytes) by shifting words, several times slower; EL2 allows
/// unaligned accesses to Normal memory (SCTLR_EL2.A is clear), so this loop
/// loads and stores whole registers wherever the bytes lie. A guest's
/// vector registers still live after an exit are saved by the FP/SIMD
/// trap this loop's first instruction takes, so using them here is safe.
pub fn copy_to_guest_ram(dst: &mut [u8], src: &[u8]) {
    let len = src.len().min(dst.len());
    let bulk = len & !127;
    if bulk > 0 {
        // SAFETY: reads `bulk` bytes of `src` and writes `bulk` bytes of
        // `dst`, both within their slices (`bulk <= len`), which cannot
        // overlap (one is borrowed mutably); both are Normal memory in the
        // EL2 identity map, where unaligned accesses are permitted. The
        // vector registers it uses are declared clobbered.
        unsafe {
            asm!(
                "2:",
                "ldp q0, q1, [{src}], #32",
                "ldp q2, q3, [{src}], #32",
                "stp q0, q1, [{dst}], #32",
                "stp q2, q3, [{dst}], #32",
                "ldp q0, q1, [{src}], #32",
                "ldp q2, q3, [{src}], #32",
                "stp q0, q1, [{dst}], #32",
                "stp q2, q3, [{dst}], #32",
                "subs {n}, {n}, #128",
                "b.ne 2b",
                src = inout(reg) src.as_ptr() => _,
                dst = inout(reg) dst.as_mut_ptr() => _,
                n = inout(reg) bulk => _,
                out("v0") _,
                out("v1") _,
                out("v2") _,
                out("v3") _,
                options(nostack),
            );
        }
    }
    dst[bulk..len].copy_from_slice(&src[bulk..len]);
    clean_to_poc(&dst[..len]);
}

/// Zeroes guest RAM `dst` (a VM's partition before it restarts, so the
/// new run reads nothing the last one left) and cleans it to the point of
/// coherency, like [`copy_to_guest_ram`], for a guest that starts with its
/// MMU and caches off.
pub fn zero_guest_ram(dst: &mut [u8]) {
    let bulk = dst.len() & !127;
    if bulk > 0 {
        // SAFETY: writes `bulk` bytes of `dst`, within the slice (`bulk <=
        // len`); Normal memory in the EL2 identity map, where unaligned
        // stores are permitted.
        unsafe {
            asm!(
                "2:",
                "stp xzr, xzr, [{dst}], #16",
                "stp xzr, xzr, [{dst}], #16",
                "stp xzr, xzr, [{dst}], #16",
                "stp xzr, xzr, [{dst}], #16",
                "stp xzr, xzr, [{dst}], #16",
                "stp xzr, xzr, [{dst}], #16",
                "stp xzr, xzr, [{dst}], #16",
                "stp xzr, xzr, [{dst}], #16",
                "subs {n}, {n}, #128",
                "b.ne 2b",
                dst = inout(reg) dst.as_mut_ptr() => _,
                n = inout(reg) bulk => _,
                options(nostack),
            );
        }
    }
    dst[bulk..].fill(0);
    clean_to_poc(dst);
}

/// CTR_EL0.DminLine: log2 of the smallest data cache line, in words.
const CTR_DMINLINE_SHIFT: u64 = 16;

/// The addresses of the data cache lines holding `bytes` (the smallest
/// line size, CTR_EL0.DminLine), for a maintenance instruction each.
fn dcache_lines(bytes: &[u8]) -> impl Iterator<Item = usize> {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { asm!("mrs {0}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    let line = 4usize << ((ctr >> CTR_DMINLINE_SHIFT) & 0xf);
    let end = bytes.as_ptr().addr() + bytes.len();
    // No line at all for no bytes.
    let start = if bytes.is_empty() {
        end
    } else {
        bytes.as_ptr().addr() & !(line - 1)
    };
    (start..end).step_by(line)
}

/// Cleans the data cache lines holding `bytes` to the point of coherency.
fn clean_to_poc(bytes: &[u8]) {
    for address in dcache_lines(bytes) {
        // SAFETY: cleaning a line of memory the caller owns (and the
        // rest of that line) only writes dirty data back; it changes no
        // value anyone reads.
        unsafe { asm!("dc cvac, {0}", in(reg) address, options(nostack)) };
    }
    // SAFETY: a barrier only.
    unsafe { asm!("dsb sy", options(nostack)) };
}

/// Cleans and invalidates the data cache lines holding `bytes` to the
/// point of coherency (around a device's write to them).
pub(super) fn clean_invalidate_to_poc(bytes: &[u8]) {
    for address in dcache_lines(bytes) {
        // SAFETY: as in `clean_to_poc`; invalidating a line just cleaned
        // loses nothing, and the next read fetches what memory holds.
        unsafe { asm!("dc civac, {0}", in(reg) address, options(nostack)) };
    }
    // SAFETY: a barrier only.
    unsafe { asm!("dsb sy", options(nostack)) };
}

/// Makes new code in guest RAM visible to instruction fetch.
pub fn sync_icache() {
    // SAFETY: cache and barrier maintenance only.
    unsafe { asm!("dsb ish", "ic ialluis", "dsb ish", "isb", options(nostack)) };
}

macro_rules! save_regs {
    ($s:ident, $($field:ident),* $(,)?) => {
        $(
            // SAFETY: reading an EL1/EL2 system register has no side effects.
            unsafe { asm!(concat!("mrs {0}, ", stringify!($field)), out(reg) $s.$field, options(nomem, nostack)) };
        )*
    };
}

macro_rules! load_regs {
    ($s:ident, $($field:ident),* $(,)?) => {
        $(
            // SAFETY: the value is this vCPU's own, saved earlier or set at
            // boot; EL1 registers only affect the guest.
            unsafe { asm!(concat!("msr ", stringify!($field), ", {0}"), in(reg) $s.$field, options(nomem, nostack)) };
        )*
    };
}

/// Saves the running vCPU's EL1 system registers.
pub fn save_el1(s: &mut El1SysRegs) {
    save_regs!(
        s,
        sctlr_el1,
        actlr_el1,
        cpacr_el1,
        ttbr0_el1,
        ttbr1_el1,
        tcr_el1,
        mair_el1,
        amair_el1,
        esr_el1,
        afsr0_el1,
        afsr1_el1,
        far_el1,
        par_el1,
        vbar_el1,
        contextidr_el1,
        tpidr_el0,
        tpidrro_el0,
        tpidr_el1,
        sp_el0,
        sp_el1,
        elr_el1,
        spsr_el1,
        cntkctl_el1,
        csselr_el1,
        mdscr_el1,
        cntv_ctl_el0,
        cntv_cval_el0,
        cntp_ctl_el0,
        cntp_cval_el0,
        cntvoff_el2,
        vmpidr_el2,
        ich_vmcr_el2,
        ich_ap1r0_el2
    );
}

/// Loads a vCPU's EL1 system registers before running it.
pub fn load_el1(s: &El1SysRegs) {
    load_regs!(
        s,
        sctlr_el1,
        actlr_el1,
        cpacr_el1,
        ttbr0_el1,
        ttbr1_el1,
        tcr_el1,
        mair_el1,
        amair_el1,
        esr_el1,
        afsr0_el1,
        afsr1_el1,
        far_el1,
        par_el1,
        vbar_el1,
        contextidr_el1,
        tpidr_el0,
        tpidrro_el0,
        tpidr_el1,
        sp_el0,
        sp_el1,
        elr_el1,
        spsr_el1,
        cntkctl_el1,
        csselr_el1,
        mdscr_el1,
        cntv_ctl_el0,
        cntv_cval_el0,
        cntp_ctl_el0,
        cntp_cval_el0,
        cntvoff_el2,
        vmpidr_el2,
        ich_vmcr_el2,
        ich_ap1r0_el2
    );
    // SAFETY: synchronises the system-register writes above.
    unsafe { asm!("isb", options(nomem, nostack)) };
}

/// Injects a synchronous exception into the running vCPU (its EL1 state
/// is live): ESR_EL1/FAR_EL1/ELR_EL1/SPSR_EL1 are set and the guest resumes
/// at its vector `vector_offset` from VBAR_EL1 in EL1h with DAIF masked.
pub fn inject_sync_exception(regs: &mut GuestRegs, esr: u64, far: u64, vector_offset: u64) {
    let vbar: u64;
    // SAFETY: the vCPU's EL1 state is live on this CPU; these writes are
    // exactly what taking the exception at EL1 would have done.
    unsafe {
        asm!(
            "msr esr_el1, {esr}",
            "msr far_el1, {far}",
            "msr elr_el1, {elr}",
            "msr spsr_el1, {spsr}",
            "mrs {vbar}, vbar_el1",
            esr = in(reg) esr,
            far = in(reg) far,
            elr = in(reg) regs.pc,
            spsr = in(reg) regs.pstate,
            vbar = out(reg) vbar,
            options(nomem, nostack),
        );
    }
    regs.pc = vbar.wrapping_add(vector_offset);
    regs.pstate = super::super::context::SPSR_EL1H_MASKED;
}

/// PAR_EL1.F: the translation failed.
const PAR_F: u64 = 1;
/// PAR_EL1.PA, bits 47:12.
const PAR_PA_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Translates a guest virtual address through the running vCPU's stage 1
/// (AT S1E1R), giving the IPA, or `None` if the guest's tables fault.
pub fn guest_va_to_ipa(va: u64) -> Option<crate::addr::IntermediatePhysAddr> {
    let par: u64;
    // SAFETY: AT only writes PAR_EL1, which is saved and restored around
    // it, so the guest never sees the change; the vCPU's EL1 translation
    // registers are live on this CPU.
    unsafe {
        asm!(
            "mrs {saved}, par_el1",
            "at s1e1r, {va}",
            "isb",
            "mrs {par}, par_el1",
            "msr par_el1, {saved}",
            va = in(reg) va,
            saved = out(reg) _,
            par = out(reg) par,
            options(nostack),
        );
    }
    (par & PAR_F == 0)
        .then(|| crate::addr::IntermediatePhysAddr::new((par & PAR_PA_MASK) | (va & 0xfff)))
}

macro_rules! id_reg_read {
    ($crm:expr, $op2:expr; $($c:literal),*) => {
        match ($crm, $op2) {
            $(
                ($c, 0) => id_reg_read!(@one $c, 0),
                ($c, 1) => id_reg_read!(@one $c, 1),
                ($c, 2) => id_reg_read!(@one $c, 2),
                ($c, 3) => id_reg_read!(@one $c, 3),
                ($c, 4) => id_reg_read!(@one $c, 4),
                ($c, 5) => id_reg_read!(@one $c, 5),
                ($c, 6) => id_reg_read!(@one $c, 6),
                ($c, 7) => id_reg_read!(@one $c, 7),
            )*
            _ => 0,
        }
    };
    (@one $c:literal, $o:literal) => {{
        let v: u64;
        // SAFETY: reading an ID register (op0 3, op1 0, CRn 0) has no side
        // effects; unallocated ones in CRm 1-7 read as zero.
        unsafe {
            asm!(concat!("mrs {0}, S3_0_C0_C", stringify!($c), "_", stringify!($o)),
                 out(reg) v, options(nomem, nostack))
        };
        v
    }};
}

/// The host's value of ID register (op0 3, op1 0, CRn 0, `crm`, `op2`),
/// CRm 1-7; 0 for anything else.
pub fn read_id_register(crm: u8, op2: u8) -> u64 {
    id_reg_read!(crm, op2; 1, 2, 3, 4, 5, 6, 7)
}

/// Cleans and invalidates the data cache line at set/way `set_way` (a
/// guest's trapped DC ISW/CSW/CISW operand), so no dirty data is lost.
pub fn dc_clean_invalidate_set_way(set_way: u64) {
    // SAFETY: a clean and invalidate writes dirty data back before it
    // drops a line, so whatever line the operand names (an out-of-range
    // one is CONSTRAINED UNPREDICTABLE: some line, or none), no memory
    // content changes.
    unsafe {
        asm!("dc cisw, {0}", "dsb sy", in(reg) set_way, options(nostack));
    }
}

/// HCR_EL2.TWI and .TWE: WFI and WFE trap, so an idle or spinning vCPU
/// gives its CPU to another.
const HCR_EL2_TWI_TWE: u64 = HCR_EL2::TWI::SET.value | HCR_EL2::TWE::SET.value;

/// Traps WFI/WFE to EL2 (when this CPU time-slices several vCPUs) or not.
pub fn set_wfx_trap(trap: bool) {
    let mut hcr: u64;
    // SAFETY: toggles only the WFI/WFE trap bits of HCR_EL2, which decide
    // whether the guest's idle instructions exit to us.
    unsafe {
        asm!("mrs {0}, hcr_el2", out(reg) hcr, options(nomem, nostack));
        if trap {
            hcr |= HCR_EL2_TWI_TWE;
        } else {
            hcr &= !HCR_EL2_TWI_TWE;
        }
        asm!("msr hcr_el2, {0}", "isb", in(reg) hcr, options(nomem, nostack));
    }
}

/// Arms the EL2 physical timer (PPI 26) to fire when the physical counter
/// reaches `deadline`. The 64-bit compare value, not the 32-bit signed
/// TVAL: a deadline more than 2^31 ticks away (34 s at 62.5 MHz) would
/// read as negative there and fire at once, over and over.
pub fn hyp_timer_arm_at(deadline: u64) {
    // SAFETY: the EL2 physical timer belongs to the hypervisor alone.
    unsafe {
        asm!("msr cnthp_cval_el2, {0}", "msr cnthp_ctl_el2, {1}", "isb",
             in(reg) deadline, in(reg) 1u64, options(nomem, nostack));
    }
}

/// Disarms the EL2 physical timer.
pub fn hyp_timer_disarm() {
    // SAFETY: as in `hyp_timer_arm_at`.
    unsafe { asm!("msr cnthp_ctl_el2, xzr", "isb", options(nomem, nostack)) };
}

/// Turns off the EL1 virtual and physical timers this CPU holds, when
/// they belong to no vCPU any more (its last one stopped): left enabled,
/// their level interrupts would stay asserted at EL2 with nobody to take
/// them.
pub fn guest_timers_disable() {
    // SAFETY: called only with no vCPU loaded on this CPU, so the EL1
    // timers are no guest's state; the next `load_el1` sets them.
    unsafe {
        asm!(
            "msr cntv_ctl_el0, xzr",
            "msr cntp_ctl_el0, xzr",
            "isb",
            options(nomem, nostack)
        )
    };
}

/// The loaded vCPU's CNTV_CTL_EL0 and CNTP_CTL_EL0 (ENABLE, IMASK,
/// ISTATUS).
pub fn guest_timer_ctls() -> (u64, u64) {
    let (virt, phys): (u64, u64);
    // SAFETY: reading the EL1 timers' controls has no side effect.
    unsafe {
        asm!(
            "mrs {0}, cntv_ctl_el0",
            "mrs {1}, cntp_ctl_el0",
            out(reg) virt,
            out(reg) phys,
            options(nomem, nostack)
        )
    };
    (virt, phys)
}

/// Waits for an interrupt (taken or not: EL2 runs with IRQs masked, and
/// WFI still wakes on a pending one).
pub fn wait_for_interrupt() {
    // SAFETY: WFI only waits.
    unsafe { asm!("dsb sy", "wfi", options(nomem, nostack)) };
}
