//! The CPU features a guest is told about. ID registers (op0 3, op1 0,
//! CRn 0, CRm 1-7) trap to EL2 (HCR_EL2.TID3) and read as the host's values
//! with the features the hypervisor does not virtualize hidden: RAS (its
//! error records are the physical CPU's: HCR_EL2.TERR traps them,
//! UNDEFINED; and VDISR_EL2 is not switched between vCPUs), SVE and SME
//! (their register state is not switched, and EL2's own NEON use would
//! clobber the upper bits), MTE, AMU, MPAM, SPE, the trace buffer, the PMU
//! (MDCR_EL2.TPM traps it: UNDEFINED, as under KVM without a PMU) and
//! pointer authentication (HCR_EL2.API/APK clear: its keys are not switched
//! between vCPUs, so its instructions and key registers trap and are
//! UNDEFINED). With `-cpu cortex-a72` only the PMU exists of these.
#![forbid(unsafe_code)]

/// Clears the 4-bit ID field at `shift`.
const fn field(shift: u32) -> u64 {
    0xf << shift
}

/// ID_AA64PFR0_EL1 (CRm 4, op2 0): RAS [31:28], SVE [35:32], MPAM [43:40],
/// AMU [47:44].
const PFR0_HIDDEN: u64 = field(28) | field(32) | field(40) | field(44);
/// ID_AA64PFR1_EL1 (CRm 4, op2 1): MTE [11:8], RAS_frac [15:12],
/// MPAM_frac [19:16], SME [27:24], NMI [39:36], GCS [47:44].
const PFR1_HIDDEN: u64 = field(8) | field(12) | field(16) | field(24) | field(36) | field(44);
/// ID_AA64DFR0_EL1 (CRm 5, op2 0): PMUVer [11:8], PMSVer (SPE) [35:32],
/// TraceBuffer [47:44], BRBE [55:52].
const DFR0_HIDDEN: u64 = field(8) | field(32) | field(44) | field(52);
/// ID_DFR0_EL1 (CRm 1, op2 2), the AArch32 view: PerfMon [27:24].
const AARCH32_DFR0_HIDDEN: u64 = field(24);
/// ID_AA64ISAR1_EL1 (CRm 6, op2 1): APA [7:4], API [11:8], GPA [27:24],
/// GPI [31:28].
const ISAR1_HIDDEN: u64 = field(4) | field(8) | field(24) | field(28);
/// ID_AA64ISAR2_EL1 (CRm 6, op2 2): GPA3 [11:8], APA3 [15:12].
const ISAR2_HIDDEN: u64 = field(8) | field(12);

/// The value the guest reads for ID register (CRm, op2) whose host value is
/// `host`.
pub fn guest_view(crm: u8, op2: u8, host: u64) -> u64 {
    match (crm, op2) {
        (4, 0) => host & !PFR0_HIDDEN,
        (4, 1) => host & !PFR1_HIDDEN,
        // ID_AA64ZFR0_EL1 and ID_AA64SMFR0_EL1: SVE and SME details.
        (4, 4) | (4, 5) => 0,
        (5, 0) => host & !DFR0_HIDDEN,
        (1, 2) => host & !AARCH32_DFR0_HIDDEN,
        (6, 1) => host & !ISAR1_HIDDEN,
        (6, 2) => host & !ISAR2_HIDDEN,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_sve_sme_mte() {
        // A `-cpu max`-like PFR0 with SVE = 1, RAS = 1 and FP/AdvSIMD/EL
        // fields set.
        let pfr0 = 0x1_0000_0000 | 0x1111_0022;
        assert_eq!(guest_view(4, 0, pfr0), 0x0111_0022);
        let pfr1 = (2 << 8) | (1 << 12) | (1 << 24) | 0x1;
        assert_eq!(guest_view(4, 1, pfr1), 0x1);
        // RAS (v1p1) hidden, GIC [27:24] kept.
        assert_eq!(guest_view(4, 0, 0x2100_0022), 0x0100_0022);
        assert_eq!(guest_view(4, 4, 0x1234), 0);
        // Cortex-A72's ID_AA64DFR0_EL1: PMUv3 hidden, debug kept.
        assert_eq!(guest_view(5, 0, 0x1012_4106), 0x1012_4006);
        assert_eq!(guest_view(1, 2, 0x0301_0066), 0x0001_0066);
        // `-cpu max`: PAuth (QARMA5, generic) hidden, the rest kept.
        assert_eq!(
            guest_view(6, 1, 0x0011_1112_1111_0211),
            0x0011_1112_0011_0001
        );
        assert_eq!(guest_view(6, 2, 0x1111), 0x0011);
        // ID_AA64ISAR0_EL1 passes through.
        assert_eq!(guest_view(6, 0, 0xdead_beef), 0xdead_beef);
    }
}
