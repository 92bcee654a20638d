//! The system registers the checks use: exception syndrome, counter, the
//! EL1 virtual and physical timers, the GICv3 CPU interface (ICC_*), and PSTATE.I.

use core::arch::asm;

macro_rules! read_reg {
    ($(#[$doc:meta])* $name:ident, $reg:literal) => {
        $(#[$doc])*
        pub fn $name() -> u64 {
            let value: u64;
            // SAFETY: reading this register has no side effect on memory.
            unsafe { asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags)) }
            value
        }
    };
}

macro_rules! write_reg {
    ($(#[$doc:meta])* $name:ident, $reg:literal) => {
        $(#[$doc])*
        pub fn $name(value: u64) {
            // SAFETY: the registers written through this macro control the
            // timer, the GIC CPU interface or the exception return address,
            // none of which changes memory Rust owns; an ISB follows so the
            // effect is visible to the next instruction.
            unsafe { asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) value, options(nomem, nostack, preserves_flags)) }
        }
    };
}

read_reg!(esr_el1, "esr_el1");
read_reg!(far_el1, "far_el1");
read_reg!(elr_el1, "elr_el1");
write_reg!(set_elr_el1, "elr_el1");
write_reg!(set_spsr_el1, "spsr_el1");
read_reg!(
    /// CurrentEL (bits [3:2] = EL).
    current_el,
    "currentel"
);
read_reg!(mpidr, "mpidr_el1");
read_reg!(counter_frequency, "cntfrq_el0");
read_reg!(counter, "cntvct_el0");
write_reg!(set_cntv_tval, "cntv_tval_el0");
write_reg!(set_cntv_ctl, "cntv_ctl_el0");
write_reg!(
    /// The virtual timer's compare value: it fires when CNTVCT_EL0 reaches it.
    set_cntv_cval,
    "cntv_cval_el0"
);
write_reg!(set_cntp_tval, "cntp_tval_el0");
write_reg!(
    /// The EL1 physical timer's control: one `msr` (then an ISB), which a
    /// guarded probe may see fault.
    set_cntp_ctl,
    "cntp_ctl_el0"
);
read_reg!(icc_sre, "icc_sre_el1");
write_reg!(set_icc_sre, "icc_sre_el1");
write_reg!(set_icc_pmr, "icc_pmr_el1");
write_reg!(set_icc_bpr1, "icc_bpr1_el1");
write_reg!(set_icc_ctlr, "icc_ctlr_el1");
write_reg!(set_icc_igrpen1, "icc_igrpen1_el1");
write_reg!(set_icc_eoir1, "icc_eoir1_el1");
write_reg!(
    /// Generates a Group 1 SGI (value from `affinity::sgi1r`).
    send_sgi1,
    "icc_sgi1r_el1"
);
read_reg!(icc_iar1_raw, "icc_iar1_el1");

/// CNTV_CTL_EL0.ENABLE (and CNTP_CTL_EL0's).
const CNTV_ENABLE: u64 = 1;

/// Arms the EL1 virtual timer to fire `ticks` counter ticks from now.
pub fn vtimer_arm(ticks: u32) {
    set_cntv_tval(u64::from(ticks));
    set_cntv_ctl(CNTV_ENABLE);
}

/// Arms the EL1 virtual timer to fire when the virtual counter reaches
/// `deadline`.
pub fn vtimer_arm_at(deadline: u64) {
    set_cntv_cval(deadline);
    set_cntv_ctl(CNTV_ENABLE);
}

pub fn vtimer_stop() {
    set_cntv_ctl(0);
}

/// Arms the EL1 physical timer to fire `ticks` counter ticks from now.
pub fn ptimer_arm(ticks: u32) {
    set_cntp_tval(u64::from(ticks));
    set_cntp_ctl(CNTV_ENABLE);
}

pub fn ptimer_stop() {
    set_cntp_ctl(0);
}

/// Acknowledges the highest-priority pending Group 1 interrupt.
pub fn icc_iar1() -> u32 {
    (icc_iar1_raw() & 0xFF_FFFF) as u32
}

pub fn icc_eoir1(intid: u32) {
    set_icc_eoir1(u64::from(intid));
}

pub fn irq_unmask() {
    // SAFETY: clearing PSTATE.I lets the vector table (installed at boot)
    // take IRQs. Not `nomem`: the handler's writes must not be cached
    // across this point.
    unsafe { asm!("msr daifclr, #2", "isb", options(nostack, preserves_flags)) }
}

pub fn irq_mask() {
    // SAFETY: setting PSTATE.I only blocks IRQs.
    unsafe { asm!("msr daifset, #2", "isb", options(nostack, preserves_flags)) }
}
