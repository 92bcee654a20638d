//! Exception syndromes: decoding ESR_EL2 for guest exits (the class, and
//! the ISS of a data abort and of a trapped system register access as
//! types: [`DataAbort`], [`SysRegAccess`]) and building the ESR_EL1 values
//! of exceptions the hypervisor injects (external aborts for unbacked
//! addresses, UNDEFINED for trapped instructions it does not emulate).
//! Pure bit manipulation, host-tested.
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
/// Data abort ISS.SAS (log2 of the access size), SSE, SRT and SF.
const ISS_SAS_SHIFT: u32 = 22;
const ISS_SSE: u64 = 1 << 21;
const ISS_SRT_SHIFT: u32 = 16;
const ISS_SF: u64 = 1 << 15;
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

/// The ISS of a data abort (EC 0x24 or 0x25), field by field.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DataAbort {
    /// ISV: the access fields below (`size_log2` .. `register_64`) are
    /// valid.
    pub syndrome_valid: bool,
    /// SAS: log2 of the access size in bytes.
    pub size_log2: u8,
    /// SSE: a load sign-extends.
    pub sign_extend: bool,
    /// SRT: the transfer register (31 is XZR/WZR).
    pub register: u8,
    /// SF: the transfer register is 64-bit.
    pub register_64: bool,
    /// WnR: a write.
    pub write: bool,
    /// S1PTW: the fault hit a stage-1 table walk.
    pub stage1_walk: bool,
    /// CM: a cache maintenance or address translation instruction.
    pub cache_maintenance: bool,
    /// DFSC.
    pub fault_status: u8,
}

impl DataAbort {
    /// A stage-2 translation or access flag fault: see
    /// [`Esr::is_translation_or_access_fault`].
    pub fn is_translation_or_access_fault(&self) -> bool {
        let fsc = u64::from(self.fault_status);
        FSC_TRANSLATION.contains(&fsc) || FSC_ACCESS_FLAG.contains(&fsc)
    }
}

/// A system register's encoding: op0, op1, CRn, CRm, op2.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SysRegId {
    pub op0: u8,
    pub op1: u8,
    pub crn: u8,
    pub crm: u8,
    pub op2: u8,
}

impl SysRegId {
    /// ICC_SGI1R_EL1.
    pub const ICC_SGI1R_EL1: SysRegId = SysRegId::new(3, 0, 12, 11, 5);
    /// ACTLR_EL1.
    pub const ACTLR_EL1: SysRegId = SysRegId::new(3, 0, 1, 0, 1);

    pub const fn new(op0: u8, op1: u8, crn: u8, crm: u8, op2: u8) -> Self {
        SysRegId {
            op0,
            op1,
            crn,
            crm,
            op2,
        }
    }

    /// The ID register space HCR_EL2.TID3 traps: op0 3, op1 0, CRn 0,
    /// CRm 1-7.
    pub fn is_id_register(self) -> bool {
        self.op0 == 3 && self.op1 == 0 && self.crn == 0 && (1..=7).contains(&self.crm)
    }

    /// The debug and trace registers (op0 2).
    pub fn is_debug(self) -> bool {
        self.op0 == 2
    }

    /// DC ISW, DC CSW or DC CISW (op0 1, op1 0, CRn 7, CRm 6/10/14, op2 2).
    pub fn is_data_cache_set_way(self) -> bool {
        self.op0 == 1
            && self.op1 == 0
            && self.crn == 7
            && [6, 10, 14].contains(&self.crm)
            && self.op2 == 2
    }
}

/// The ISS of a trapped MSR, MRS or system instruction (EC 0x18).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SysRegAccess {
    pub register: SysRegId,
    /// Rt: the general-purpose register (31 is XZR).
    pub rt: usize,
    /// MRS (a read), else MSR or a system instruction.
    pub is_read: bool,
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

    /// `class() == DataAbortLower`, as one comparison (`class` is a
    /// multi-way branch).
    pub fn is_data_abort_lower(self) -> bool {
        (self.0 >> EC_SHIFT) & 0x3f == 0x24
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
        // IL (bit 25) set adds 2: no branch.
        2 + ((self.0 >> 24) & 2)
    }

    /// The data abort this syndrome describes, if its class is one.
    pub fn data_abort(self) -> Option<DataAbort> {
        matches!(self.ec(), 0x24 | 0x25).then(|| self.data_abort_iss())
    }

    /// The ISS read as a data abort's, for a caller that knows the class
    /// is one (the exit fast path: [`Esr::is_data_abort_lower`]).
    pub fn data_abort_iss(self) -> DataAbort {
        let bit = |mask: u64| self.0 & mask != 0;
        // Each field is masked to its width first.
        let field = |shift: u32, mask: u64| u8::try_from((self.0 >> shift) & mask).unwrap_or(0);
        DataAbort {
            syndrome_valid: bit(ISS_ISV),
            size_log2: field(ISS_SAS_SHIFT, 0b11),
            sign_extend: bit(ISS_SSE),
            register: field(ISS_SRT_SHIFT, 0x1f),
            register_64: bit(ISS_SF),
            write: bit(ISS_WNR),
            stage1_walk: bit(ISS_S1PTW),
            cache_maintenance: bit(ISS_CM),
            fault_status: field(0, ISS_FSC_MASK),
        }
    }

    /// The system register access this syndrome describes, if its class
    /// is a trapped MSR/MRS/system instruction.
    pub fn sysreg_access(self) -> Option<SysRegAccess> {
        if self.class() != ExceptionClass::SysReg {
            return None;
        }
        let iss = self.iss();
        let field = |shift: u32, mask: u64| u8::try_from((iss >> shift) & mask).unwrap_or(0);
        Some(SysRegAccess {
            register: SysRegId {
                op0: field(20, 0b11),
                op2: field(17, 0b111),
                op1: field(14, 0b111),
                crn: field(10, 0xf),
                crm: field(1, 0xf),
            },
            rt: usize::from(field(5, 0x1f)),
            is_read: iss & 1 != 0,
        })
    }

    /// HVC or SMC: the instruction's 16-bit immediate.
    pub fn call_immediate(self) -> u64 {
        self.0 & 0xffff
    }

    /// Data abort: the syndrome describes the access (ISV).
    pub fn isv(self) -> bool {
        self.0 & ISS_ISV != 0
    }

    /// Abort during a stage-1 table walk (the guest's tables are not RAM).
    pub fn s1ptw(self) -> bool {
        self.0 & ISS_S1PTW != 0
    }

    /// Abort: a stage-2 translation or access flag fault, the kinds a
    /// missing mapping (emulated MMIO, unmapped IPA) causes and for which
    /// HPFAR_EL2 holds the faulting IPA. For any other status (an external
    /// abort, an alignment or TLB conflict fault) HPFAR may be UNKNOWN.
    pub fn is_translation_or_access_fault(self) -> bool {
        let fsc = self.0 & ISS_FSC_MASK;
        FSC_TRANSLATION.contains(&fsc) || FSC_ACCESS_FLAG.contains(&fsc)
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
        assert!(Esr(0x9200_0046).data_abort().is_some_and(|a| a.write));
        assert_eq!(Esr(0x9200_0046).instruction_len(), 4);
    }

    #[test]
    fn data_abort_fields() {
        // LDRSH X3, [Xn] at a translation fault, level 3: ISV, SAS 1, SSE,
        // SRT 3, SF.
        let ldrsh = Esr((0x24 << 26)
            | IL
            | (1 << 24)
            | (1 << 22)
            | (1 << 21)
            | (3 << 16)
            | (1 << 15)
            | 0x07);
        let abort = ldrsh.data_abort().expect("a data abort");
        assert_eq!(
            abort,
            DataAbort {
                syndrome_valid: true,
                size_log2: 1,
                sign_extend: true,
                register: 3,
                register_64: true,
                write: false,
                stage1_walk: false,
                cache_maintenance: false,
                fault_status: 0x07,
            }
        );
        assert!(abort.is_translation_or_access_fault());
        // DC CIVAC on a table walk with an external abort: CM, S1PTW, WnR.
        let dc = Esr((0x24 << 26) | IL | (1 << 8) | (1 << 7) | (1 << 6) | 0x10);
        let abort = dc.data_abort().expect("a data abort");
        assert!(abort.cache_maintenance && abort.stage1_walk && abort.write);
        assert!(!abort.syndrome_valid && !abort.is_translation_or_access_fault());
        assert_eq!(Esr(0x5a00_0000).data_abort(), None);
    }

    #[test]
    fn sysreg_access_fields() {
        // MRS X5, ICC_SGI1R_EL1 would be op0 3, op1 0, CRn 12, CRm 11, op2 5.
        let iss = (3 << 20) | (5 << 17) | (12 << 10) | (5 << 5) | (11 << 1) | 1;
        let access = Esr((0x18 << 26) | IL | iss)
            .sysreg_access()
            .expect("sysreg");
        assert_eq!(access.register, SysRegId::ICC_SGI1R_EL1);
        assert_eq!((access.rt, access.is_read), (5, true));
        // MSR DBGBVR0_EL1, XZR: op0 2, op2 4, a write.
        let msr = (2 << 20) | (4 << 17) | (31 << 5);
        let access = Esr((0x18 << 26) | IL | msr)
            .sysreg_access()
            .expect("sysreg");
        assert!(access.register.is_debug() && !access.is_read);
        assert_eq!(access.rt, 31);
        // ID_AA64PFR0_EL1, DC CISW.
        assert!(SysRegId::new(3, 0, 0, 4, 0).is_id_register());
        assert!(!SysRegId::new(3, 0, 0, 0, 0).is_id_register());
        assert!(SysRegId::new(1, 0, 7, 14, 2).is_data_cache_set_way());
        assert_eq!(Esr(0x9200_0046).sysreg_access(), None);
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
