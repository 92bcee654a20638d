//! The hostile guest's instructions (`crate::attacks`): each probe is one
//! instruction a hypervisor must answer (a trapped system register, an
//! MMIO access it has to decode, a cache operation, a stage-1 table walk it
//! has to refuse), run under [`guarded`] so the exception it may take is
//! returned instead of ending the guest. Also a minimal stage-1 MMU (two
//! 1 GiB Normal Non-cacheable blocks over the MMIO space and RAM), which
//! unaligned and page-crossing accesses and DC ZVA need: with the MMU off
//! every access is Device memory and faults at EL1 before any hypervisor
//! sees it.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use super::exceptions::AARCH32_LANDING;
use super::{guarded, Fault};

macro_rules! probe_read {
    ($(#[$doc:meta])* $name:ident, $reg:literal) => {
        $(#[$doc])*
        pub fn $name() -> Result<u64, Fault> {
            guarded(|| {
                let value: u64;
                // SAFETY: one MRS, which changes no memory; if it traps or
                // is UNDEFINED, the vector handler (armed by `guarded`)
                // skips it, leaving `value` unspecified but initialised.
                unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack)) }
                value
            })
        }
    };
}

macro_rules! probe_write {
    ($(#[$doc:meta])* $name:ident, $reg:literal) => {
        $(#[$doc])*
        pub fn $name(value: u64) -> Result<(), Fault> {
            // SAFETY: one MSR to a register that controls no memory Rust
            // owns (the attacks write EL2, ID, debug, PMU and GIC
            // registers, which EL1 cannot use to reach guest memory); if it
            // traps or is UNDEFINED the handler skips it.
            guarded(|| unsafe { asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) value, options(nomem, nostack)) })
        }
    };
}

probe_write!(
    /// ID_AA64PFR0_EL1, read-only.
    write_id_aa64pfr0,
    "S3_0_C0_C4_0"
);
probe_write!(
    /// MIDR_EL1, read-only.
    write_midr,
    "S3_0_C0_C0_0"
);
probe_read!(
    /// ID_AA64PFR0_EL1: EL0 [3:0] (2: AArch32 too), SVE [35:32].
    read_id_aa64pfr0,
    "S3_0_C0_C4_0"
);
probe_read!(
    /// ID_AA64PFR1_EL1: MTE [11:8], SME [27:24].
    read_id_aa64pfr1,
    "S3_0_C0_C4_1"
);
probe_read!(
    /// ID_AA64DFR0_EL1: PMUVer [11:8].
    read_id_aa64dfr0,
    "S3_0_C0_C5_0"
);
probe_read!(
    /// ID_AA64ISAR0_EL1: Atomic [23:20].
    read_id_aa64isar0,
    "S3_0_C0_C6_0"
);
probe_read!(
    /// ID_AA64ISAR1_EL1: APA [7:4], API [11:8], GPA [27:24], GPI [31:28].
    read_id_aa64isar1,
    "S3_0_C0_C6_1"
);
probe_read!(read_hcr_el2, "hcr_el2");
probe_write!(write_hcr_el2, "hcr_el2");
probe_write!(write_vttbr_el2, "vttbr_el2");
probe_read!(read_cnthp_ctl_el2, "cnthp_ctl_el2");
probe_write!(write_cntvoff_el2, "cntvoff_el2");
probe_write!(write_cnthctl_el2, "cnthctl_el2");
probe_read!(
    /// ICH_LR0_EL2.
    read_ich_lr0_el2,
    "S3_4_C12_C12_0"
);
probe_write!(
    /// ICH_HCR_EL2.
    write_ich_hcr_el2,
    "S3_4_C12_C11_0"
);
probe_write!(write_actlr_el1, "actlr_el1");
probe_read!(read_actlr_el1, "actlr_el1");
probe_read!(
    /// Cortex-A72 CPUACTLR_EL1, implementation defined (S3_1_C15_C2_0).
    read_impdef,
    "S3_1_C15_C2_0"
);
probe_read!(read_pmcr_el0, "pmcr_el0");
probe_read!(read_pmccntr_el0, "pmccntr_el0");
probe_write!(write_pmcntenset_el0, "pmcntenset_el0");
probe_write!(write_dbgbvr0_el1, "dbgbvr0_el1");
probe_read!(read_dbgbvr0_el1, "dbgbvr0_el1");
probe_write!(write_dbgwcr0_el1, "dbgwcr0_el1");
probe_read!(read_dbgwcr0_el1, "dbgwcr0_el1");
probe_write!(write_oslar_el1, "oslar_el1");
probe_read!(read_oslsr_el1, "oslsr_el1");
probe_read!(read_mdrar_el1, "mdrar_el1");
probe_write!(
    /// APIAKeyLo_EL1 (FEAT_PAuth).
    write_apiakeylo,
    "S3_0_C2_C1_0"
);
probe_write!(write_icc_sgi1r, "icc_sgi1r_el1");
probe_write!(write_icc_sre, "icc_sre_el1");
probe_read!(read_icc_sre, "icc_sre_el1");
probe_write!(write_cntv_cval, "cntv_cval_el0");
probe_write!(write_cntv_ctl, "cntv_ctl_el0");
probe_write!(write_cntp_cval, "cntp_cval_el0");
probe_write!(write_cntp_ctl, "cntp_ctl_el0");

/// `msr <sgi register>, xzr`: the zero register as the source, which a
/// decoder that reads "register 31" as SP would get wrong.
pub fn sgi_from_xzr(register: SgiRegister) -> Result<(), Fault> {
    guarded(|| match register {
        // SAFETY: as in `probe_write`: an SGI write changes no memory.
        SgiRegister::Sgi0r => unsafe {
            asm!("msr S3_0_C12_C11_7, xzr", "isb", options(nomem, nostack))
        },
        // SAFETY: as above.
        SgiRegister::Asgi1r => unsafe {
            asm!("msr S3_0_C12_C11_6, xzr", "isb", options(nomem, nostack))
        },
        // SAFETY: as above.
        SgiRegister::Sgi1r => unsafe {
            asm!("msr icc_sgi1r_el1, xzr", "isb", options(nomem, nostack))
        },
    })
}

/// The three SGI generation registers.
#[derive(Clone, Copy, Debug)]
pub enum SgiRegister {
    Sgi0r,
    Asgi1r,
    Sgi1r,
}

// The MMIO probes below touch addresses the caller took from the device
// tree (or an IPA nothing backs); none is memory Rust owns. A store goes
// only to a register the caller chose as harmless.

/// `ldp w, w, [address]`: a pair load, which sets no syndrome (ISV 0).
pub fn load_pair(address: usize) -> Result<(u32, u32), Fault> {
    guarded(|| {
        let (first, second): (u32, u32);
        // SAFETY: a load from an MMIO window (see above); skipped on a fault.
        unsafe {
            asm!("ldp {a:w}, {b:w}, [{address}]", address = in(reg) address, a = out(reg) first, b = out(reg) second, options(nostack, readonly))
        }
        (first, second)
    })
}

/// `ldxr w, [address]`: a load-exclusive.
pub fn load_exclusive(address: usize) -> Result<u32, Fault> {
    guarded(|| {
        let value: u32;
        // SAFETY: as in `load_pair`.
        unsafe {
            asm!("ldxr {value:w}, [{address}]", "clrex", address = in(reg) address, value = out(reg) value, options(nostack))
        }
        value
    })
}

/// `ldxr` then `stxr w, w, [address]`: returns the store's status
/// register, which starts as `u32::MAX` so a store that never wrote it
/// shows.
pub fn store_exclusive(address: usize, value: u32) -> Result<u32, Fault> {
    guarded(|| {
        let mut status = u32::MAX;
        // SAFETY: as in `load_pair`; the store goes to a register the
        // caller chose. The LDXR may fault too: the caller sees the first
        // fault only.
        unsafe {
            asm!("stxr {status:w}, {value:w}, [{address}]", address = in(reg) address, value = in(reg) value, status = inout(reg) status, options(nostack))
        }
        status
    })
}

/// `ldadd w1, w2, [x0]` (FEAT_LSE, encoded by hand): an atomic
/// read-modify-write.
pub fn atomic_add(address: usize, add: u32) -> Result<u32, Fault> {
    guarded(|| {
        let old: u32;
        // SAFETY: as in `store_exclusive`.
        unsafe {
            asm!(".inst 0xb8210002", in("x0") address, in("w1") add, out("w2") old, options(nostack))
        }
        old
    })
}

/// `ldr w, [base], #4`: a load with post-index writeback; returns the value
/// and the base register afterwards.
pub fn load_post_index(address: usize) -> Result<(u32, usize), Fault> {
    let mut base = address;
    let value = guarded(|| {
        let value: u32;
        // SAFETY: as in `load_pair`.
        unsafe {
            asm!("ldr {value:w}, [{base}], #4", base = inout(reg) base, value = out(reg) value, options(nostack, readonly))
        }
        value
    })?;
    Ok((value, base))
}

/// `ldr w, [base, #4]!`: pre-index writeback.
pub fn load_pre_index(address: usize) -> Result<(u32, usize), Fault> {
    let mut base = address;
    let value = guarded(|| {
        let value: u32;
        // SAFETY: as in `load_pair`.
        unsafe {
            asm!("ldr {value:w}, [{base}, #4]!", base = inout(reg) base, value = out(reg) value, options(nostack, readonly))
        }
        value
    })?;
    Ok((value, base))
}

/// `ldr w, [sp, #4]!` with SP pointing at `address`: the stack pointer as a
/// writeback base. Runs on SP_EL0 (SPSel 0) so the exception, taken to
/// EL1h, still has a stack.
pub fn load_sp_writeback(address: usize) -> Result<u32, Fault> {
    guarded(|| {
        let value: u32;
        // SAFETY: SP_EL0 holds the MMIO address only between the two MSR
        // SPSel, where nothing but the one load runs and no interrupt can
        // be taken on it (exceptions to EL1 use SP_EL1); SP_EL0 is then
        // restored. The load is as in `load_pair`.
        unsafe {
            asm!(
                "mrs {daif}, daif",
                "msr daifset, #2",
                "msr spsel, #0",
                "mov {saved}, sp",
                "mov sp, {address}",
                "ldr {value:w}, [sp, #4]!",
                "mov sp, {saved}",
                "msr spsel, #1",
                "msr daif, {daif}",
                address = in(reg) address,
                daif = out(reg) _,
                saved = out(reg) _,
                value = out(reg) value,
            )
        }
        value
    })
}

/// `ldr x, [address]`: an 8-byte load, possibly unaligned (MMU on).
pub fn load64(address: usize) -> Result<u64, Fault> {
    guarded(|| {
        let value: u64;
        // SAFETY: as in `load_pair`.
        unsafe {
            asm!("ldr {value}, [{address}]", address = in(reg) address, value = out(reg) value, options(nostack, readonly))
        }
        value
    })
}

/// The cache and TLB maintenance the attacks issue.
#[derive(Clone, Copy, Debug)]
pub enum Maintenance {
    /// DC CIVAC by VA.
    CleanInvalidate,
    /// DC IVAC by VA.
    Invalidate,
    /// DC ZVA by VA (a store of zeros, not maintenance).
    ZeroBlock,
    /// IC IVAU by VA.
    InstructionInvalidate,
    /// DC ISW, set/way 0.
    InvalidateBySetWay,
    /// TLBI VMALLE1IS.
    TlbInvalidateAll,
}

/// One maintenance instruction on `address`.
pub fn maintain(op: Maintenance, address: usize) -> Result<(), Fault> {
    guarded(|| {
        // SAFETY: maintenance of an MMIO address, an unmapped one or a
        // set/way changes no memory Rust owns: the guest's RAM is
        // non-cacheable (MMU off, or Normal Non-cacheable), so an
        // invalidate loses nothing. DC ZVA targets only addresses outside
        // RAM (the caller's choice). Skipped if it faults.
        unsafe {
            match op {
                Maintenance::CleanInvalidate => {
                    asm!("dc civac, {}", "dsb sy", in(reg) address, options(nostack))
                }
                Maintenance::Invalidate => {
                    asm!("dc ivac, {}", "dsb sy", in(reg) address, options(nostack))
                }
                Maintenance::ZeroBlock => {
                    asm!("dc zva, {}", "dsb sy", in(reg) address, options(nostack))
                }
                Maintenance::InstructionInvalidate => {
                    asm!("ic ivau, {}", "dsb sy", "isb", in(reg) address, options(nostack))
                }
                Maintenance::InvalidateBySetWay => {
                    asm!("dc isw, {}", "dsb sy", in(reg) address, options(nostack))
                }
                Maintenance::TlbInvalidateAll => {
                    asm!("tlbi vmalle1is", "dsb sy", "isb", options(nostack))
                }
            }
        }
    })
}

/// `blr address`: an instruction fetch from `address`. The handler resumes
/// an instruction abort at the link register.
pub fn branch_to(address: usize) -> Result<(), Fault> {
    guarded(|| {
        // SAFETY: the caller passes an IPA outside RAM, so the fetch aborts
        // before any instruction there runs; the handler returns to the
        // BLR's link address. x30 is clobbered by the BLR; clobber_abi
        // covers the rest in case something at `address` did run.
        unsafe { asm!("blr {}", in(reg) address, clobber_abi("C")) }
    })
}

/// One `wfe`.
pub fn wait_for_event() {
    // SAFETY: WFE only waits; it touches no memory.
    unsafe { asm!("wfe", options(nomem, nostack, preserves_flags)) }
}

/// One `hvc #imm` with a non-zero immediate, x0 = `function`; returns x0.
pub fn hvc_with_immediate(function: u64) -> Result<u64, Fault> {
    guarded(|| {
        let mut x0 = function;
        // SAFETY: as `arch::smccc_call`.
        unsafe { asm!("hvc #0x4242", inout("x0") x0, clobber_abi("C"), options(nostack)) }
        x0
    })
}

/// SPSR_EL1 for AArch32 User mode (M[4] = 1, M[3:0] = 0) with A, I and
/// F masked.
const SPSR_AARCH32_USER: u64 = 0x1d0;

// A32 code the AArch32 probe runs at EL0 (raw words: the assembler knows
// only A64): `ldm r0, {r1, r2}`, a load multiple that sets no syndrome,
// then `svc #0`, which ends the probe if the load did not.
core::arch::global_asm!(
    r#"
    .section .text, "ax"
    .balign 4
    .global testguest_a32_ldm
testguest_a32_ldm:
    .word   0xe8900006
    .word   0xef000000
    "#
);

unsafe extern "C" {
    fn testguest_a32_ldm();
}

/// Runs `ldm r0, {r1, r2}` with r0 = `address` at EL0 in AArch32 state;
/// returns the exception that ended it (an abort, or the SVC after the
/// load).
pub fn aarch32_load_multiple(address: usize) -> Result<(), Fault> {
    let entry = testguest_a32_ldm as *const () as u64;
    guarded(|| {
        // SAFETY: the A32 code only loads from `address` (an MMIO window)
        // and calls SVC; its first exception returns to label 2 at EL1h
        // (the handler sets ELR/SPSR from AARCH32_LANDING), where SP
        // (through SAVED_SP, PC-relative: no register survives AArch32
        // execution for certain) and the callee-saved registers are
        // restored from the stack they were pushed on; clobber_abi covers
        // the rest.
        unsafe {
            asm!(
                "stp x19, x20, [sp, #-96]!",
                "stp x21, x22, [sp, #16]",
                "stp x23, x24, [sp, #32]",
                "stp x25, x26, [sp, #48]",
                "stp x27, x28, [sp, #64]",
                "stp x29, x30, [sp, #80]",
                "mov x9, sp",
                "adrp x10, {saved}",
                "str x9, [x10, :lo12:{saved}]",
                "adr x9, 2f",
                "adrp x10, {landing}",
                "str x9, [x10, :lo12:{landing}]",
                "msr elr_el1, {entry}",
                "msr spsr_el1, {spsr}",
                "mov x0, {address}",
                "eret",
                "2:",
                "adrp x9, {saved}",
                "ldr x9, [x9, :lo12:{saved}]",
                "mov sp, x9",
                "ldp x21, x22, [sp, #16]",
                "ldp x23, x24, [sp, #32]",
                "ldp x25, x26, [sp, #48]",
                "ldp x27, x28, [sp, #64]",
                "ldp x29, x30, [sp, #80]",
                "ldp x19, x20, [sp], #96",
                saved = sym SAVED_SP,
                landing = sym AARCH32_LANDING,
                entry = in(reg) entry,
                spsr = in(reg) SPSR_AARCH32_USER,
                address = in(reg) address,
                // Scratch: never shared with the inputs above.
                out("x9") _,
                out("x10") _,
                clobber_abi("C"),
            );
        }
    })
}

/// The SP of `aarch32_load_multiple` while EL0 runs.
static SAVED_SP: AtomicU64 = AtomicU64::new(0);

/// A stage-1 level-1 table (4 KiB granule, 32-bit VA: four 1 GiB entries
/// used), in the guest's BSS.
#[repr(C, align(4096))]
struct Level1Table([AtomicU64; 512]);

static TABLE: Level1Table = Level1Table([const { AtomicU64::new(0) }; 512]);

/// MAIR_EL1 attribute 0: Normal, inner and outer Non-cacheable.
const MAIR_NORMAL_NC: u64 = 0x44;
/// Block descriptor: valid block, AttrIndx 0, EL1 read/write, access flag.
const BLOCK_NORMAL: u64 = 0b01 | (1 << 10);
/// TCR_EL1: T0SZ 32 and T1SZ 32 (4 GiB each half), 4 KiB granules (TG1
/// 0b10), non-cacheable walks, IPS 32 bits.
const TCR_EL1: u64 = 32 | (32 << 16) | (0b10 << 30);
const SCTLR_M: u64 = 1 << 0;
const SCTLR_A: u64 = 1 << 1;
/// The base of the upper VA range with T1SZ 32 (TTBR1's half).
pub const UPPER_VA: usize = 0xFFFF_FFFF_0000_0000;

/// Runs `probe` with the stage-1 MMU on: VA = IPA for the low 2 GiB
/// (MMIO space and RAM) as Normal Non-cacheable memory, so unaligned
/// accesses are allowed, and TTBR1 pointing at `upper_table` (an IPA the
/// attacks choose: a walk of the upper half reads it).
pub fn with_mmu<R>(upper_table: usize, probe: impl FnOnce() -> R) -> R {
    TABLE.0[0].store(BLOCK_NORMAL, Ordering::SeqCst);
    TABLE.0[1].store(0x4000_0000 | BLOCK_NORMAL, Ordering::SeqCst);
    let table = core::ptr::addr_of!(TABLE) as u64;
    let sctlr: u64;
    // SAFETY: the identity map covers all the guest's code, data and stack
    // (in RAM, block 1) and its devices (block 0) with the same addresses,
    // so turning translation on changes no address Rust uses; the memory
    // stays non-cacheable (SCTLR_EL1.C stays clear), as with the MMU off.
    // Alignment checking (A) is turned off for the probes and restored.
    unsafe {
        asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {ttbr0}",
            "msr ttbr1_el1, {ttbr1}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            "mrs {sctlr}, sctlr_el1",
            "orr {tmp}, {sctlr}, #{m}",
            "bic {tmp}, {tmp}, #{a}",
            "msr sctlr_el1, {tmp}",
            "isb",
            mair = in(reg) MAIR_NORMAL_NC,
            tcr = in(reg) TCR_EL1,
            ttbr0 = in(reg) table,
            ttbr1 = in(reg) upper_table as u64,
            sctlr = out(reg) sctlr,
            tmp = out(reg) _,
            m = const SCTLR_M,
            a = const SCTLR_A,
            options(nostack),
        );
    }
    let result = probe();
    // SAFETY: back to the state before (MMU off): the same addresses again.
    unsafe {
        asm!(
            "msr sctlr_el1, {sctlr}",
            "isb",
            "tlbi vmalle1",
            "dsb nsh",
            "isb",
            sctlr = in(reg) sctlr,
            options(nostack),
        );
    }
    result
}
