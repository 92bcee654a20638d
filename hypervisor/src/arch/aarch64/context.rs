//! A vCPU's register state as the entry/exit assembly sees it: general
//! registers, guest PC/PSTATE, FP/SIMD, and the EL1 system registers saved
//! and restored when a physical CPU switches vCPUs. Plain data (the assembly
//! in `hw::guest` takes its offsets from here with `offset_of!`), so portable
//! code sets up and inspects vCPUs on the host too.
#![forbid(unsafe_code)]

/// PSTATE for a vCPU's first entry: EL1h, D, A, I and F masked.
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;
/// `SPSR.M[3:0]` values.
pub const SPSR_MODE_MASK: u64 = 0xf;
/// EL0t.
pub const SPSR_MODE_EL0T: u64 = 0b0000;
/// EL1t.
pub const SPSR_MODE_EL1T: u64 = 0b0100;
/// EL1h.
pub const SPSR_MODE_EL1H: u64 = 0b0101;
/// `SPSR.M[4]`: the exception came from AArch32.
pub const SPSR_AARCH32: u64 = 1 << 4;

/// FP/SIMD state: V0-V31, FPSR, FPCR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct FpSimdState {
    /// Q0-Q31.
    pub q: [u128; 32],
    /// FPSR.
    pub fpsr: u64,
    /// FPCR.
    pub fpcr: u64,
}

/// The part of the vCPU state the assembly saves and loads on every exit
/// and entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct GuestRegs {
    /// X0-X30.
    pub x: [u64; 31],
    /// Guest PC (ELR_EL2).
    pub pc: u64,
    /// Guest PSTATE (SPSR_EL2).
    pub pstate: u64,
    /// FP/SIMD registers, when not live (`fp_live`).
    pub fp: FpSimdState,
    /// Non-zero while the vCPU's FP/SIMD state is in its physical CPU's
    /// registers rather than in `fp`: from its entry until the hypervisor
    /// on that CPU first uses FP/SIMD or flushes it (`hw::guest`).
    pub fp_live: u64,
}

// The assembly addresses `x` pairwise from offset 0 and `pc`/`pstate` as a
// pair; keep the layout it relies on.
const _: () = assert!(core::mem::offset_of!(GuestRegs, x) == 0);
const _: () =
    assert!(core::mem::offset_of!(GuestRegs, pstate) == core::mem::offset_of!(GuestRegs, pc) + 8);
const _: () = assert!(core::mem::offset_of!(GuestRegs, fp) % 16 == 0);
const _: () = assert!(
    core::mem::offset_of!(FpSimdState, fpcr) == core::mem::offset_of!(FpSimdState, fpsr) + 8
);

/// EL1 (and EL0) system registers a guest kernel owns, plus the EL2 controls
/// that are per vCPU. Saved and restored by `hw` when a physical CPU switches
/// from one vCPU to another; live in the hardware while the vCPU runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct El1SysRegs {
    pub sctlr_el1: u64,
    pub actlr_el1: u64,
    pub cpacr_el1: u64,
    pub ttbr0_el1: u64,
    pub ttbr1_el1: u64,
    pub tcr_el1: u64,
    pub mair_el1: u64,
    pub amair_el1: u64,
    pub esr_el1: u64,
    pub afsr0_el1: u64,
    pub afsr1_el1: u64,
    pub far_el1: u64,
    pub par_el1: u64,
    pub vbar_el1: u64,
    pub contextidr_el1: u64,
    pub tpidr_el0: u64,
    pub tpidrro_el0: u64,
    pub tpidr_el1: u64,
    pub sp_el0: u64,
    pub sp_el1: u64,
    pub elr_el1: u64,
    pub spsr_el1: u64,
    pub cntkctl_el1: u64,
    pub csselr_el1: u64,
    pub mdscr_el1: u64,
    /// Virtual timer control.
    pub cntv_ctl_el0: u64,
    /// Virtual timer compare value.
    pub cntv_cval_el0: u64,
    /// EL1 physical timer control.
    pub cntp_ctl_el0: u64,
    /// EL1 physical timer compare value.
    pub cntp_cval_el0: u64,
    /// Virtual counter offset (EL2).
    pub cntvoff_el2: u64,
    /// The MPIDR the guest reads (EL2).
    pub vmpidr_el2: u64,
    /// GIC virtual CPU interface state (EL2): ICH_VMCR_EL2.
    pub ich_vmcr_el2: u64,
    /// ICH_AP1R0_EL2 (active priorities, group 1).
    pub ich_ap1r0_el2: u64,
}

/// Everything about one vCPU's registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VcpuRegs {
    /// Saved by the exit path, loaded by the entry path.
    pub guest: GuestRegs,
    /// Switched in software.
    pub el1: El1SysRegs,
}

impl VcpuRegs {
    /// A vCPU that starts at `pc` in EL1h with interrupts masked and `x0`
    /// set (the DTB address for Linux's boot protocol).
    pub fn boot(pc: u64, x0: u64, vmpidr: u64) -> Self {
        let mut regs = Self::default();
        regs.guest.pc = pc;
        regs.guest.pstate = SPSR_EL1H_MASKED;
        regs.guest.x[0] = x0;
        // SCTLR_EL1 RES1 bits (29, 28, 23, 22, 20, 11) with the MMU and
        // caches off, as firmware hands over to a kernel.
        regs.el1.sctlr_el1 = 0x30d0_0800;
        regs.el1.vmpidr_el2 = vmpidr;
        regs
    }

    /// General register `n` as the guest sees it (31 reads as zero: XZR).
    pub fn x(&self, n: usize) -> u64 {
        self.guest.x.get(n).copied().unwrap_or(0)
    }

    /// Sets general register `n` (writes to 31, XZR, are dropped).
    pub fn set_x(&mut self, n: usize, value: u64) {
        if let Some(r) = self.guest.x.get_mut(n) {
            *r = value;
        }
    }
}

/// Why the guest stopped running.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExitKind {
    /// A synchronous exception (ESR_EL2 says which).
    Sync,
    /// A physical IRQ.
    Irq,
    /// A physical FIQ.
    Fiq,
    /// An SError.
    SError,
}

/// What the exit path captured besides the registers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ExitInfo {
    /// The kind of exception.
    pub kind: ExitKind,
    /// ESR_EL2.
    pub esr: u64,
    /// FAR_EL2 (faulting virtual address).
    pub far: u64,
    /// HPFAR_EL2 (faulting IPA >> 12, in bits 43:4).
    pub hpfar: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_state_and_xzr() {
        let mut r = VcpuRegs::boot(0x4008_0000, 0x4800_0000, 1 << 31);
        assert_eq!(r.guest.pc, 0x4008_0000);
        assert_eq!(r.x(0), 0x4800_0000);
        assert_eq!(r.guest.pstate & SPSR_MODE_MASK, SPSR_MODE_EL1H);
        r.set_x(31, 5);
        assert_eq!(r.x(31), 0);
        r.set_x(30, 5);
        assert_eq!(r.x(30), 5);
    }
}
