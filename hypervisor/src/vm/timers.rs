//! The EL1 timers a guest owns, as QEMU's CPUs give them to EL1: the
//! virtual timer (CNTV_*, PPI 27) and the non-secure physical one (CNTP_*,
//! PPI 30). Both run in hardware while their vCPU is loaded (switched with
//! its EL1 state); the physical PPI of each is forwarded to the vGIC and
//! held active until the guest's EOI deactivates it (`irq`), and a vCPU
//! that is not loaded has its timers watched in software (`run`).
#![forbid(unsafe_code)]

use crate::arch::aarch64::context::El1SysRegs;
use crate::layout::{PTIMER_INTID, VTIMER_INTID};

/// CNTx_CTL_EL0.ENABLE, .IMASK and .ISTATUS.
const CTL_ENABLE: u64 = 1 << 0;
const CTL_IMASK: u64 = 1 << 1;
const CTL_ISTATUS: u64 = 1 << 2;

/// One of a vCPU's EL1 timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestTimer {
    Virtual,
    Physical,
}

impl GuestTimer {
    pub const ALL: [GuestTimer; 2] = [GuestTimer::Virtual, GuestTimer::Physical];

    /// Its PPI, the same for the guest and the host.
    pub fn intid(self) -> u32 {
        match self {
            GuestTimer::Virtual => VTIMER_INTID,
            GuestTimer::Physical => PTIMER_INTID,
        }
    }

    /// The timer whose PPI is `intid`.
    pub fn of_intid(intid: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.intid() == intid)
    }

    /// Its bit in a set of timers (`Vcpu::timers_active`).
    pub fn bit(self) -> u8 {
        match self {
            GuestTimer::Virtual => 1 << 0,
            GuestTimer::Physical => 1 << 1,
        }
    }

    /// Its control and compare value in saved EL1 state.
    fn saved(self, el1: &El1SysRegs) -> (u64, u64) {
        match self {
            GuestTimer::Virtual => (el1.cntv_ctl_el0, el1.cntv_cval_el0),
            GuestTimer::Physical => (el1.cntp_ctl_el0, el1.cntp_cval_el0),
        }
    }

    /// When the saved timer fires, if it is armed (enabled, not masked).
    /// Both count the physical counter: CNTVOFF is 0.
    pub fn deadline(self, el1: &El1SysRegs) -> Option<u64> {
        let (ctl, cval) = self.saved(el1);
        (ctl & (CTL_ENABLE | CTL_IMASK) == CTL_ENABLE).then_some(cval)
    }
}

/// Whether a timer's output line is asserted, by its live CNTx_CTL.
pub fn line(ctl: u64) -> bool {
    ctl & (CTL_ENABLE | CTL_IMASK | CTL_ISTATUS) == CTL_ENABLE | CTL_ISTATUS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_enabled_unmasked_and_due() {
        let cases = [
            (0b101, true),
            (0b001, false),
            (0b111, false),
            (0b100, false),
            (0b000, false),
        ];
        for (ctl, asserted) in cases {
            assert_eq!(line(ctl), asserted, "CTL {ctl:#b}");
        }
    }

    #[test]
    fn each_timer_by_its_ppi_and_saved_state() {
        assert_eq!(GuestTimer::of_intid(27), Some(GuestTimer::Virtual));
        assert_eq!(GuestTimer::of_intid(30), Some(GuestTimer::Physical));
        assert_eq!(GuestTimer::of_intid(26), None);
        let el1 = El1SysRegs {
            cntv_ctl_el0: CTL_ENABLE,
            cntv_cval_el0: 100,
            cntp_ctl_el0: CTL_ENABLE | CTL_IMASK,
            cntp_cval_el0: 50,
            ..El1SysRegs::default()
        };
        assert_eq!(GuestTimer::Virtual.deadline(&el1), Some(100));
        assert_eq!(GuestTimer::Physical.deadline(&el1), None, "masked");
    }
}
