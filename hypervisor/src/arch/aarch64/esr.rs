//! Exception syndromes: decoding ESR_EL2 for guest exits and building the
//! ESR_EL1 values of exceptions the hypervisor injects (external aborts for
//! unbacked addresses, UNDEFINED for trapped instructions it does not
//! emulate). Pure bit manipulation, host-tested.
#![forbid(unsafe_code)]

use super::context::{
    SPSR_AARCH32, SPSR_MODE_EL0T, SPSR_MODE_EL1H, SPSR_MODE_EL1T, SPSR_MODE_MASK,
};
use crate::addr::IntermediatePhysAddr;

/// ESR.IL: 32-bit instruction.
const IL: u64 = 1 << 25;
const EC_SHIFT: u32 = 26;
const ISS_MASK: u64 = (1 << 25) - 1;
/// DFSC/IFSC: synchronous external abort, not on a translation table walk.
const FSC_SYNC_EXTERNAL: u64 = 0x10;
/// Data abort ISS.WnR.
const ISS_WNR: u64 = 1 << 6;
/// Data abort ISS.ISV.
const ISS_ISV: u64 = 1 << 24;
/// Data abort ISS.S1PTW: the fault hit a stage-1 table walk.
const ISS_S1PTW: u64 = 1 << 7;
/// Data/instruction abort ISS.DFSC/IFSC.
const ISS_FSC_MASK: u64 = 0x3f;
/// Translation faults, levels 0-3 (FSC 0b0001LL).
const FSC_TRANSLATION: core::ops::RangeInclusive<u64> = 0x04..=0x07;
/// Access flag faults, levels 0-3 (FSC 0b0010LL).
const FSC_ACCESS_FLAG: core::ops::RangeInclusive<u64> = 0x08..=0x0b;
/// Data abort ISS.CM: a cache maintenance or address translation
/// instruction, not an access.
const ISS_CM: u64 = 1 << 8;
/// HPFAR_EL2.FIPA: IPA[47:12] in bits 43:4.
const HPFAR_FIPA_MASK: u64 = 0x0000_0fff_ffff_fff0;

/// Exception classes the exit path handles (ESR.EC).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExceptionClass {
    /// WFI or WFE (0x01).
    Wfx,
    /// HVC from AArch64 (0x16).
    Hvc64,
    /// SMC from AArch64 (0x17).
    Smc64,
    /// MSR/MRS/system instruction (0x18).
    SysReg,
    /// Instruction abort from a lower EL (0x20).
    InstructionAbortLower,
    /// Data abort from a lower EL (0x24).
    DataAbortLower,
    /// Anything else, with its EC.
    Other(u8),
}

/// A decoded ESR_EL2.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Esr(pub u64);

impl Esr {
    /// The exception class.
    pub fn class(self) -> ExceptionClass {
        match self.ec() {
            0x01 => ExceptionClass::Wfx,
            0x16 => ExceptionClass::Hvc64,
            0x17 => ExceptionClass::Smc64,
            0x18 => ExceptionClass::SysReg,
            0x20 => ExceptionClass::InstructionAbortLower,
            0x24 => ExceptionClass::DataAbortLower,
            other => ExceptionClass::Other(other),
        }
    }

    /// Raw EC.
    pub fn ec(self) -> u8 {
        // Six bits.
        u8::try_from((self.0 >> EC_SHIFT) & 0x3f).unwrap_or(0)
    }

    /// The instruction-specific syndrome.
    pub fn iss(self) -> u64 {
        self.0 & ISS_MASK
    }

    /// Bytes of the trapped instruction (4, or 2 for a 16-bit T32 one).
    pub fn instruction_len(self) -> u64 {
        if self.0 & IL != 0 {
            4
        } else {
            2
        }
    }

    /// HVC or SMC: the instruction's 16-bit immediate.
    pub fn call_immediate(self) -> u64 {
        self.0 & 0xffff
    }

    /// Data abort: the syndrome describes the access (ISV).
    pub fn isv(self) -> bool {
        self.0 & ISS_ISV != 0
    }

    /// Data abort: it was a write.
    pub fn is_write(self) -> bool {
        self.0 & ISS_WNR != 0
    }

    /// Abort during a stage-1 table walk (the guest's tables are not RAM).
    pub fn s1ptw(self) -> bool {
        self.0 & ISS_S1PTW != 0
    }

    /// Abort: the fault status code (DFSC/IFSC).
    pub fn fault_status(self) -> u64 {
        self.0 & ISS_FSC_MASK
    }

    /// Abort: a stage-2 translation or access flag fault, the kinds a
    /// missing mapping (emulated MMIO, unmapped IPA) causes and for which
    /// HPFAR_EL2 holds the faulting IPA. For any other status (an external
    /// abort, an alignment or TLB conflict fault) HPFAR may be UNKNOWN.
    pub fn is_translation_or_access_fault(self) -> bool {
        let fsc = self.fault_status();
        FSC_TRANSLATION.contains(&fsc) || FSC_ACCESS_FLAG.contains(&fsc)
    }

    /// Data abort on a cache maintenance (or address translation)
    /// instruction (ISS.CM).
    pub fn cache_maintenance(self) -> bool {
        self.0 & ISS_CM != 0
    }
}

/// The faulting IPA of a stage-2 abort: page from HPFAR_EL2, offset from
/// FAR_EL2.
pub fn fault_ipa(hpfar: u64, far: u64) -> IntermediatePhysAddr {
    IntermediatePhysAddr::new(((hpfar & HPFAR_FIPA_MASK) << 8) | (far & 0xfff))
}

/// Offset from VBAR_EL1 of the synchronous vector an exception taken from
/// PSTATE `spsr` uses.
pub fn sync_vector_offset(spsr: u64) -> u64 {
    if spsr & SPSR_AARCH32 != 0 {
        return 0x600;
    }
    match spsr & SPSR_MODE_MASK {
        SPSR_MODE_EL1T => 0x000,
        SPSR_MODE_EL1H => 0x200,
        SPSR_MODE_EL0T => 0x400,
        // Not reachable from a guest (EL2/EL3 modes); use the lower-EL entry.
        _ => 0x400,
    }
}

fn from_el0(spsr: u64) -> bool {
    spsr & SPSR_MODE_MASK == SPSR_MODE_EL0T || spsr & SPSR_AARCH32 != 0
}

/// ESR_EL1 of a synchronous external abort injected for a guest data abort
/// (`exit_esr`) taken with PSTATE `spsr`; keeps WnR.
pub fn external_data_abort_esr(exit_esr: Esr, spsr: u64) -> u64 {
    let ec: u64 = if from_el0(spsr) { 0x24 } else { 0x25 };
    (ec << EC_SHIFT) | IL | (exit_esr.0 & ISS_WNR) | FSC_SYNC_EXTERNAL
}

/// ESR_EL1 of a synchronous external abort on instruction fetch.
pub fn external_instruction_abort_esr(spsr: u64) -> u64 {
    let ec: u64 = if from_el0(spsr) { 0x20 } else { 0x21 };
    (ec << EC_SHIFT) | IL | FSC_SYNC_EXTERNAL
}

/// ESR_EL1 of an UNDEFINED instruction (EC 0, "unknown reason").
pub fn undefined_esr() -> u64 {
    IL
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::aarch64::context::SPSR_EL1H_MASKED;

    #[test]
    fn classes() {
        assert_eq!(Esr(0x5a00_0000).class(), ExceptionClass::Hvc64);
        assert_eq!(Esr(0x5e00_0000).class(), ExceptionClass::Smc64);
        assert_eq!(Esr(0x9200_0046).class(), ExceptionClass::DataAbortLower);
        assert_eq!(Esr(0x0200_0000).class(), ExceptionClass::Other(0));
        assert!(Esr(0x9200_0046).is_write());
        assert_eq!(Esr(0x9200_0046).instruction_len(), 4);
    }

    #[test]
    fn fault_ipa_combines_hpfar_and_far() {
        // IPA 0x0c00_0123: HPFAR holds IPA[47:12] at bit 4.
        let hpfar = (0x0c00_0123u64 >> 12) << 4;
        assert_eq!(
            fault_ipa(hpfar, 0xffff_0000_dead_0123),
            IntermediatePhysAddr::new(0x0c00_0123)
        );
    }

    #[test]
    fn injected_abort_syndromes() {
        let exit = Esr(0x9200_0046);
        let el1 = external_data_abort_esr(exit, SPSR_EL1H_MASKED);
        assert_eq!(el1 >> 26, 0x25);
        assert_eq!(el1 & 0x3f, 0x10);
        assert_eq!(el1 & (1 << 6), 1 << 6);
        assert_eq!(external_data_abort_esr(exit, 0) >> 26, 0x24);
        assert_eq!(external_instruction_abort_esr(SPSR_EL1H_MASKED) >> 26, 0x21);
        assert_eq!(sync_vector_offset(SPSR_EL1H_MASKED), 0x200);
        assert_eq!(sync_vector_offset(0x3c4), 0x000);
        assert_eq!(sync_vector_offset(0), 0x400);
        assert_eq!(undefined_esr() >> 26, 0);
    }
}
