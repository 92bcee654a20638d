//! The firmware interface guests see: PSCI 1.1 and SMCCC 1.1 over HVC or
//! SMC. Pure decision logic: what a call returns, or which vCPU/VM state
//! change the caller must carry out. Unknown functions get SMCCC
//! NOT_SUPPORTED (-1), as the SMC Calling Convention requires.
#![forbid(unsafe_code)]

/// SMCCC_VERSION.
pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// SMCCC_ARCH_FEATURES.
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
/// PSCI_VERSION.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND (SMC32 / SMC64).
pub const CPU_SUSPEND_32: u32 = 0x8400_0001;
/// CPU_SUSPEND, SMC64.
pub const CPU_SUSPEND_64: u32 = 0xc400_0001;
/// CPU_OFF.
pub const CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON, SMC32.
pub const CPU_ON_32: u32 = 0x8400_0003;
/// CPU_ON, SMC64.
pub const CPU_ON_64: u32 = 0xc400_0003;
/// AFFINITY_INFO, SMC32.
pub const AFFINITY_INFO_32: u32 = 0x8400_0004;
/// AFFINITY_INFO, SMC64.
pub const AFFINITY_INFO_64: u32 = 0xc400_0004;
/// MIGRATE_INFO_TYPE.
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// SYSTEM_OFF.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const PSCI_FEATURES: u32 = 0x8400_000a;

/// SMCCC/PSCI SUCCESS.
pub const SUCCESS: i64 = 0;
/// NOT_SUPPORTED.
pub const NOT_SUPPORTED: i64 = -1;
/// INVALID_PARAMETERS.
pub const INVALID_PARAMETERS: i64 = -2;
/// ALREADY_ON.
pub const ALREADY_ON: i64 = -4;
/// INVALID_ADDRESS.
pub const INVALID_ADDRESS: i64 = -9;

/// PSCI 1.1.
const PSCI_VERSION_1_1: i64 = 0x0001_0001;
/// SMCCC 1.1.
const SMCCC_VERSION_1_1: i64 = 0x0001_0001;
/// MIGRATE_INFO_TYPE: no Trusted OS that needs migrating.
const MIGRATE_NOT_REQUIRED: i64 = 2;
/// AFFINITY_INFO states.
const AFFINITY_ON: i64 = 0;
const AFFINITY_OFF: i64 = 1;
/// MPIDR affinity fields (Aff3 and Aff2..0).
const MPIDR_AFF_MASK: u64 = 0xff_00ff_ffff;

/// What the calling vCPU's VM looks like to PSCI.
pub trait PsciTarget {
    /// The vCPU index whose MPIDR affinity is `mpidr`, if any.
    fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize>;
    /// Whether vCPU `index` is on.
    fn is_on(&self, index: usize) -> bool;
    /// Whether a vCPU may start at this guest-physical entry point.
    fn valid_entry(&self, entry: u64) -> bool;
}

/// What the caller must do for a call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PsciAction {
    /// Return this value in x0 and continue.
    Return(i64),
    /// Start vCPU `target` at `entry` with x0 = `context`; return SUCCESS.
    CpuOn {
        /// vCPU index.
        target: usize,
        /// Entry point (IPA; the vCPU starts with its MMU off).
        entry: u64,
        /// Value for the new vCPU's x0.
        context: u64,
    },
    /// Stop the calling vCPU.
    CpuOff,
    /// Power the VM off.
    SystemOff,
    /// Restart the VM from its images.
    SystemReset,
}

fn is_supported(function: u32) -> bool {
    matches!(
        function,
        PSCI_VERSION
            | CPU_SUSPEND_32
            | CPU_SUSPEND_64
            | CPU_OFF
            | CPU_ON_32
            | CPU_ON_64
            | AFFINITY_INFO_32
            | AFFINITY_INFO_64
            | MIGRATE_INFO_TYPE
            | SYSTEM_OFF
            | SYSTEM_RESET
            | PSCI_FEATURES
            | SMCCC_VERSION
            | SMCCC_ARCH_FEATURES
    )
}

/// Whether `x0` names a function this module implements.
pub fn is_known(x0: u64) -> bool {
    is_supported(u32::try_from(x0 & 0xffff_ffff).unwrap_or(0))
}

/// TRNG_VERSION (SMCCC TRNG 1.0): is there a firmware random source?
const TRNG_VERSION: u32 = 0x8400_0050;
/// The vendor-specific hypervisor service's call UID query (Linux asks it
/// to find KVM's paravirtual services).
const VENDOR_HYP_CALL_UID: u32 = 0x8600_FF01;

/// Whether `x0` is a probe a guest makes to find an optional service, for
/// which NOT_SUPPORTED is the architected "absent" (not worth a log line).
pub fn is_discovery_probe(x0: u64) -> bool {
    matches!(
        u32::try_from(x0 & 0xffff_ffff).unwrap_or(0),
        TRNG_VERSION | VENDOR_HYP_CALL_UID
    )
}

/// Narrows an SMC32 argument to its 32 bits.
fn arg32(function: u32, value: u64) -> u64 {
    if function & 0x4000_0000 == 0 {
        value & 0xffff_ffff
    } else {
        value
    }
}

/// Decides a call with function ID `x0` and arguments `x1..x3`.
pub fn handle(x0: u64, args: [u64; 3], target: &impl PsciTarget) -> PsciAction {
    // SMCCC: the function ID is W0; the upper half is ignored.
    let function = u32::try_from(x0 & 0xffff_ffff).unwrap_or(0);
    match function {
        SMCCC_VERSION => PsciAction::Return(SMCCC_VERSION_1_1),
        SMCCC_ARCH_FEATURES => {
            let queried = u32::try_from(args[0] & 0xffff_ffff).unwrap_or(0);
            match queried {
                SMCCC_VERSION | SMCCC_ARCH_FEATURES => PsciAction::Return(SUCCESS),
                _ => PsciAction::Return(NOT_SUPPORTED),
            }
        }
        PSCI_VERSION => PsciAction::Return(PSCI_VERSION_1_1),
        PSCI_FEATURES => {
            let queried = u32::try_from(args[0] & 0xffff_ffff).unwrap_or(0);
            // SMCCC_VERSION is discovered this way (SMCCC 1.1, 7.2); so
            // is every PSCI function we implement.
            PsciAction::Return(if is_supported(queried) {
                SUCCESS
            } else {
                NOT_SUPPORTED
            })
        }
        // Standby: returning at once is a valid (if eager) wake-up.
        CPU_SUSPEND_32 | CPU_SUSPEND_64 => PsciAction::Return(SUCCESS),
        CPU_OFF => PsciAction::CpuOff,
        CPU_ON_32 | CPU_ON_64 => {
            let mpidr = arg32(function, args[0]) & MPIDR_AFF_MASK;
            let entry = arg32(function, args[1]);
            let context = arg32(function, args[2]);
            match target.vcpu_by_mpidr(mpidr) {
                None => PsciAction::Return(INVALID_PARAMETERS),
                Some(index) if target.is_on(index) => PsciAction::Return(ALREADY_ON),
                Some(_) if !target.valid_entry(entry) => PsciAction::Return(INVALID_ADDRESS),
                Some(index) => PsciAction::CpuOn {
                    target: index,
                    entry,
                    context,
                },
            }
        }
        AFFINITY_INFO_32 | AFFINITY_INFO_64 => {
            let mpidr = arg32(function, args[0]) & MPIDR_AFF_MASK;
            let level = arg32(function, args[1]);
            match (level, target.vcpu_by_mpidr(mpidr)) {
                (0, Some(index)) => PsciAction::Return(if target.is_on(index) {
                    AFFINITY_ON
                } else {
                    AFFINITY_OFF
                }),
                _ => PsciAction::Return(INVALID_PARAMETERS),
            }
        }
        MIGRATE_INFO_TYPE => PsciAction::Return(MIGRATE_NOT_REQUIRED),
        SYSTEM_OFF => PsciAction::SystemOff,
        SYSTEM_RESET => PsciAction::SystemReset,
        _ => PsciAction::Return(NOT_SUPPORTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TwoVcpus {
        on: [bool; 2],
    }

    impl PsciTarget for TwoVcpus {
        fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize> {
            usize::try_from(mpidr).ok().filter(|i| *i < 2)
        }
        fn is_on(&self, index: usize) -> bool {
            self.on[index]
        }
        fn valid_entry(&self, entry: u64) -> bool {
            (0x4000_0000..0x5000_0000).contains(&entry)
        }
    }

    const VM: TwoVcpus = TwoVcpus { on: [true, false] };

    #[test]
    fn versions_and_features() {
        assert_eq!(
            handle(0x8400_0000, [0; 3], &VM),
            PsciAction::Return(0x10001)
        );
        assert_eq!(
            handle(0x8000_0000, [0; 3], &VM),
            PsciAction::Return(0x10001)
        );
        assert_eq!(
            handle(0x8400_000a, [0xc400_0003, 0, 0], &VM),
            PsciAction::Return(0)
        );
        assert_eq!(
            handle(0x8400_000a, [0x8400_0012, 0, 0], &VM),
            PsciAction::Return(-1)
        );
        // SMCCC 1.1 is advertised through PSCI_FEATURES(SMCCC_VERSION).
        assert_eq!(
            handle(0x8400_000a, [0x8000_0000, 0, 0], &VM),
            PsciAction::Return(0)
        );
        // SMCCC_ARCH_WORKAROUND_1 is not offered.
        assert_eq!(
            handle(0x8000_0001, [0x8000_8000, 0, 0], &VM),
            PsciAction::Return(-1)
        );
        assert_eq!(handle(0x8400_0006, [0; 3], &VM), PsciAction::Return(2));
    }

    #[test]
    fn unknown_calls_are_not_supported() {
        assert_eq!(handle(0xc200_0042, [0; 3], &VM), PsciAction::Return(-1));
        assert_eq!(handle(0x8400_00ff, [0; 3], &VM), PsciAction::Return(-1));
        // The upper half of x0 is not part of the function ID.
        assert_eq!(
            handle(0xffff_ffff_8400_0000, [0; 3], &VM),
            PsciAction::Return(0x10001)
        );
    }

    #[test]
    fn discovery_probes_are_absent_services_not_unknown_calls() {
        for probe in [0x8400_0050, 0x8600_ff01] {
            assert_eq!(handle(probe, [0; 3], &VM), PsciAction::Return(-1));
            assert!(is_discovery_probe(probe) && !is_known(probe));
        }
        assert!(!is_discovery_probe(0x8800_0bad));
        assert!(!is_discovery_probe(0x8400_0000), "PSCI_VERSION is known");
    }

    #[test]
    fn cpu_on_checks_target_state_and_entry() {
        assert_eq!(
            handle(u64::from(CPU_ON_64), [1, 0x4008_0000, 7], &VM),
            PsciAction::CpuOn {
                target: 1,
                entry: 0x4008_0000,
                context: 7
            }
        );
        assert_eq!(
            handle(u64::from(CPU_ON_64), [0, 0x4008_0000, 0], &VM),
            PsciAction::Return(-4)
        );
        assert_eq!(
            handle(u64::from(CPU_ON_64), [5, 0x4008_0000, 0], &VM),
            PsciAction::Return(-2)
        );
        assert_eq!(
            handle(u64::from(CPU_ON_64), [1, 0x1000, 0], &VM),
            PsciAction::Return(-9)
        );
        // SMC32 narrows its arguments.
        assert_eq!(
            handle(u64::from(CPU_ON_32), [1 | (1 << 40), 0x1_4008_0000, 0], &VM),
            PsciAction::CpuOn {
                target: 1,
                entry: 0x4008_0000,
                context: 0
            }
        );
    }

    #[test]
    fn affinity_info_and_power() {
        assert_eq!(
            handle(u64::from(AFFINITY_INFO_64), [0, 0, 0], &VM),
            PsciAction::Return(0)
        );
        assert_eq!(
            handle(u64::from(AFFINITY_INFO_64), [1, 0, 0], &VM),
            PsciAction::Return(1)
        );
        assert_eq!(
            handle(u64::from(AFFINITY_INFO_64), [1, 1, 0], &VM),
            PsciAction::Return(-2)
        );
        assert_eq!(handle(u64::from(CPU_OFF), [0; 3], &VM), PsciAction::CpuOff);
        assert_eq!(
            handle(u64::from(SYSTEM_OFF), [0; 3], &VM),
            PsciAction::SystemOff
        );
        assert_eq!(
            handle(u64::from(SYSTEM_RESET), [0; 3], &VM),
            PsciAction::SystemReset
        );
    }
}
