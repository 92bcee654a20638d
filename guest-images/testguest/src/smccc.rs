//! SMCCC and PSCI function identifiers and result encodings (Arm DEN0028
//! SMCCC, DEN0022 PSCI) the checks use; the calls themselves go through
//! `arch::smccc_call`.

use core::fmt;

pub const PSCI_VERSION: u32 = 0x8400_0000;
pub const PSCI_FEATURES: u32 = 0x8400_000A;
pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;
pub const PSCI_CPU_OFF: u32 = 0x8400_0002;
/// SMC64: the entry point is a 64-bit address.
pub const PSCI_CPU_ON_64: u32 = 0xC400_0003;
pub const PSCI_AFFINITY_INFO: u32 = 0x8400_0004;

pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// Fast SMC32 call with owning entity 8, which SMCCC reserves: nobody
/// implements it, so the answer must be NOT_SUPPORTED.
pub const BOGUS_FUNCTION: u32 = 0x8800_0BAD;

/// SMCCC/PSCI NOT_SUPPORTED, as the 32-bit value x0 carries (w0 = -1).
pub const NOT_SUPPORTED: i32 = -1;

/// A `major.minor` version as PSCI_VERSION and SMCCC_VERSION encode it
/// (bits [30:16] major, [15:0] minor; bit 31 clear).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

impl Version {
    /// Decodes w0; a negative value is an error code, not a version.
    pub fn decode(w0: u32) -> Option<Self> {
        if w0 & 0x8000_0000 != 0 {
            return None;
        }
        Some(Version {
            major: (w0 >> 16) as u16,
            minor: w0 as u16,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The 32-bit status of an SMC32 call, which lives in w0.
pub fn status(x0: u64) -> i32 {
    x0 as u32 as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(
            Version::decode(0x0001_0001),
            Some(Version { major: 1, minor: 1 })
        );
        assert_eq!(
            Version::decode(0x0000_0002),
            Some(Version { major: 0, minor: 2 })
        );
        assert_eq!(Version::decode(u32::MAX), None);
        assert!(Version { major: 1, minor: 0 } < Version { major: 1, minor: 1 });
        assert_eq!(Version { major: 1, minor: 1 }.to_string(), "1.1");
    }

    #[test]
    fn status_is_w0() {
        assert_eq!(status(0xFFFF_FFFF), NOT_SUPPORTED);
        assert_eq!(status(0xFFFF_FFFF_FFFF_FFFF), NOT_SUPPORTED);
        assert_eq!(status(0x1_0000_0000), 0);
    }

    /// SMCCC function ID bits [29:24]: the owning entity.
    fn owner(function: u32) -> u32 {
        (function >> 24) & 0x3F
    }

    #[test]
    fn function_ids_are_fast_smc32_calls_of_their_owner() {
        const STANDARD_SECURE: u32 = 4;
        const ARM_ARCHITECTURE: u32 = 0;
        for psci in [
            PSCI_VERSION,
            PSCI_FEATURES,
            PSCI_SYSTEM_OFF,
            PSCI_CPU_OFF,
            PSCI_AFFINITY_INFO,
        ] {
            assert_eq!(psci >> 30, 0b10, "{psci:#x}: fast, SMC32");
            assert_eq!(owner(psci), STANDARD_SECURE, "{psci:#x}");
        }
        assert_eq!(PSCI_CPU_ON_64 >> 30, 0b11, "fast, SMC64");
        assert_eq!(owner(PSCI_CPU_ON_64), STANDARD_SECURE);
        assert_eq!(PSCI_CPU_ON_64 & 0xFFFF, 3, "CPU_ON is function 3");
        assert_eq!(SMCCC_VERSION >> 30, 0b10);
        assert_eq!(owner(SMCCC_VERSION), ARM_ARCHITECTURE);
    }

    #[test]
    fn bogus_function_is_in_a_reserved_owner_range() {
        let owner = owner(BOGUS_FUNCTION);
        assert!(
            (8..=47).contains(&owner),
            "owner {owner} is reserved by SMCCC"
        );
    }
}
