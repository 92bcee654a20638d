//! The one router for firmware calls (HVC and SMC, SMC Calling Convention
//! v1.1, DEN0028): it reads the function ID in W0, sorts it into a
//! service by owning entity and function range, and answers the Arm
//! architecture calls itself. PSCI (`crate::psci`) and FF-A (`crate::ffa`)
//! are the services behind it; every function ID lives in [`fid`].
//! Unknown functions get NOT_SUPPORTED (-1), as SMCCC requires.
#![forbid(unsafe_code)]

pub mod fid;

/// SMCCC SUCCESS.
pub const SUCCESS: i64 = 0;
/// SMCCC NOT_SUPPORTED (also PSCI's).
pub const NOT_SUPPORTED: i64 = -1;

/// SMCCC 1.1.
const SMCCC_VERSION_1_1: i64 = 0x0001_0001;

/// Owning entity numbers (SMCCC, table 6-4).
const OEN_ARCH: u8 = 0;
const OEN_STANDARD_SECURE: u8 = 4;
const OEN_VENDOR_HYP: u8 = 6;

/// Function-number ranges inside the standard secure service.
const PSCI_RANGE: core::ops::RangeInclusive<u16> = 0x00..=0x1f;
const FFA_RANGE: core::ops::RangeInclusive<u16> = 0x60..=0xef;

/// A function ID as SMCCC lays it out (W0; the upper half of X0 is
/// ignored).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FunctionId(pub u32);

impl FunctionId {
    /// The function ID in a call's X0.
    pub fn from_x0(x0: u64) -> Self {
        Self(u32::try_from(x0 & 0xffff_ffff).unwrap_or(0))
    }

    /// Bit 31: a fast call (every call we implement is one).
    pub fn is_fast(self) -> bool {
        self.0 & (1 << 31) != 0
    }

    /// Bit 30: the SMC64/HVC64 calling convention (64-bit arguments).
    pub fn is_64(self) -> bool {
        self.0 & (1 << 30) != 0
    }

    /// Bits 29:24: the owning entity number.
    pub fn owner(self) -> u8 {
        u8::try_from((self.0 >> 24) & 0x3f).unwrap_or(0)
    }

    /// Bits 15:0: the function number.
    pub fn number(self) -> u16 {
        u16::try_from(self.0 & 0xffff).unwrap_or(0)
    }

    /// An argument as the callee sees it: an SMC32 call's arguments are
    /// their low 32 bits.
    pub fn arg(self, value: u64) -> u64 {
        if self.is_64() {
            value
        } else {
            value & 0xffff_ffff
        }
    }
}

/// The service a call belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Service {
    /// Arm architecture calls (SMCCC_VERSION, SMCCC_ARCH_FEATURES).
    Arch,
    /// PSCI.
    Psci,
    /// FF-A.
    Ffa,
    /// The vendor-specific hypervisor service (none offered).
    VendorHyp,
    /// Everything else: yielding calls, SiP, OEM, trusted OS, TRNG...
    Other,
}

/// Sorts a call by its function ID.
pub fn route(x0: u64) -> Service {
    let id = FunctionId::from_x0(x0);
    // Bits 23:16 of a fast call are reserved, zero.
    if !id.is_fast() || id.0 & 0x00ff_0000 != 0 {
        return Service::Other;
    }
    match (id.owner(), id.number()) {
        (OEN_ARCH, _) => Service::Arch,
        (OEN_STANDARD_SECURE, n) if PSCI_RANGE.contains(&n) => Service::Psci,
        (OEN_STANDARD_SECURE, n) if FFA_RANGE.contains(&n) => Service::Ffa,
        (OEN_VENDOR_HYP, _) => Service::VendorHyp,
        _ => Service::Other,
    }
}

/// Answers an Arm architecture call with function ID `x0` and first
/// argument `x1`.
pub fn arch_call(x0: u64, x1: u64) -> i64 {
    match FunctionId::from_x0(x0).0 {
        fid::SMCCC_VERSION => SMCCC_VERSION_1_1,
        fid::SMCCC_ARCH_FEATURES => match FunctionId::from_x0(x1).0 {
            fid::SMCCC_VERSION | fid::SMCCC_ARCH_FEATURES => SUCCESS,
            // SMCCC_ARCH_WORKAROUND_* are not offered.
            _ => NOT_SUPPORTED,
        },
        _ => NOT_SUPPORTED,
    }
}

/// The answer to an Arm architecture call this module implements
/// (`arch_call` without the NOT_SUPPORTED for unknown functions, which
/// the caller reports); `None` for any other function.
pub fn fixed_answer(x0: u64, x1: u64) -> Option<i64> {
    matches!(
        FunctionId::from_x0(x0).0,
        fid::SMCCC_VERSION | fid::SMCCC_ARCH_FEATURES
    )
    .then(|| arch_call(x0, x1))
}

/// Whether `x0` is a probe a guest makes to find an optional service, for
/// which NOT_SUPPORTED is the architected "absent" (not worth a log line).
pub fn is_discovery_probe(x0: u64) -> bool {
    matches!(
        FunctionId::from_x0(x0).0,
        fid::TRNG_VERSION | fid::VENDOR_HYP_CALL_UID
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_owner_and_range() {
        let cases = [
            (0x8000_0000, Service::Arch),
            (0x8000_8000, Service::Arch),
            (0x8400_0000, Service::Psci),
            (0xc400_0003, Service::Psci),
            (0x8400_001f, Service::Psci),
            (0x8400_0050, Service::Other),
            (0x8400_0060, Service::Ffa),
            (0xc400_006f, Service::Ffa),
            (0x8400_00ef, Service::Ffa),
            (0x8400_00f0, Service::Other),
            (0x8600_ff01, Service::VendorHyp),
            (0xc200_0042, Service::Other),
            // A yielding call, and a fast call with reserved bits set.
            (0x0400_0000, Service::Other),
            (0x8401_0063, Service::Other),
            // The upper half of X0 is not part of the function ID.
            (0xffff_ffff_8400_0063, Service::Ffa),
        ];
        for (x0, service) in cases {
            assert_eq!(route(x0), service, "{x0:#x}");
        }
    }

    #[test]
    fn arch_calls() {
        assert_eq!(arch_call(0x8000_0000, 0), 0x1_0001);
        assert_eq!(arch_call(0x8000_0001, 0x8000_0000), SUCCESS);
        // SMCCC_ARCH_WORKAROUND_1 is not offered.
        assert_eq!(arch_call(0x8000_0001, 0x8000_8000), NOT_SUPPORTED);
        assert_eq!(arch_call(0x8000_0042, 0), NOT_SUPPORTED);
    }

    #[test]
    fn smc32_arguments_are_narrowed() {
        assert_eq!(FunctionId(0x8400_0003).arg(1 << 40 | 7), 7);
        assert_eq!(FunctionId(0xc400_0003).arg(1 << 40 | 7), 1 << 40 | 7);
    }

    #[test]
    fn discovery_probes() {
        assert!(is_discovery_probe(0x8400_0050));
        assert!(is_discovery_probe(0x8600_ff01));
        assert!(!is_discovery_probe(0x8400_0000));
    }
}
