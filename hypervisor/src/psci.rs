//! PSCI 1.1 as guests see it, one service behind the SMCCC router
//! (`crate::smccc`, which also holds the function IDs). Pure decision
//! logic: what a call returns, or which vCPU/VM state change the caller
//! must carry out. Unknown functions get NOT_SUPPORTED (-1).
#![forbid(unsafe_code)]

use crate::smccc::fid::{
    PSCI_AFFINITY_INFO_32 as AFFINITY_INFO_32, PSCI_AFFINITY_INFO_64 as AFFINITY_INFO_64,
    PSCI_CPU_OFF as CPU_OFF, PSCI_CPU_ON_32 as CPU_ON_32, PSCI_CPU_ON_64 as CPU_ON_64,
    PSCI_CPU_SUSPEND_32 as CPU_SUSPEND_32, PSCI_CPU_SUSPEND_64 as CPU_SUSPEND_64, PSCI_FEATURES,
    PSCI_MIGRATE_INFO_TYPE as MIGRATE_INFO_TYPE, PSCI_SYSTEM_OFF as SYSTEM_OFF,
    PSCI_SYSTEM_RESET as SYSTEM_RESET, PSCI_VERSION, SMCCC_ARCH_FEATURES, SMCCC_VERSION,
};
use crate::smccc::FunctionId;

pub use crate::smccc::{NOT_SUPPORTED, SUCCESS};
/// INVALID_PARAMETERS.
pub const INVALID_PARAMETERS: i64 = -2;
/// ALREADY_ON.
pub const ALREADY_ON: i64 = -4;
/// INVALID_ADDRESS.
pub const INVALID_ADDRESS: i64 = -9;

/// PSCI 1.1.
const PSCI_VERSION_1_1: i64 = 0x0001_0001;
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
    is_supported(FunctionId::from_x0(x0).0)
}

/// Decides a PSCI call with function ID `x0` and arguments `x1..x3`.
pub fn handle(x0: u64, args: [u64; 3], target: &impl PsciTarget) -> PsciAction {
    if let Some(value) = fixed_answer(x0, args[0]) {
        return PsciAction::Return(value);
    }
    let id = FunctionId::from_x0(x0);
    match id.0 {
        CPU_OFF => PsciAction::CpuOff,
        CPU_ON_32 | CPU_ON_64 => {
            let mpidr = id.arg(args[0]) & MPIDR_AFF_MASK;
            let entry = id.arg(args[1]);
            let context = id.arg(args[2]);
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
            let mpidr = id.arg(args[0]) & MPIDR_AFF_MASK;
            let level = id.arg(args[1]);
            match (level, target.vcpu_by_mpidr(mpidr)) {
                (0, Some(index)) => PsciAction::Return(if target.is_on(index) {
                    AFFINITY_ON
                } else {
                    AFFINITY_OFF
                }),
                _ => PsciAction::Return(INVALID_PARAMETERS),
            }
        }
        SYSTEM_OFF => PsciAction::SystemOff,
        SYSTEM_RESET => PsciAction::SystemReset,
        _ => PsciAction::Return(NOT_SUPPORTED),
    }
}

/// The answer to a PSCI call that depends on nothing but its function ID
/// and first argument (`x1`), which an exit can give without the VM;
/// `None` for every other function.
pub fn fixed_answer(x0: u64, x1: u64) -> Option<i64> {
    match FunctionId::from_x0(x0).0 {
        PSCI_VERSION => Some(PSCI_VERSION_1_1),
        PSCI_FEATURES => {
            // SMCCC_VERSION is discovered this way (SMCCC 1.1, 7.2); so
            // is every PSCI function we implement.
            Some(if is_supported(FunctionId::from_x0(x1).0) {
                SUCCESS
            } else {
                NOT_SUPPORTED
            })
        }
        // Standby: returning at once is a valid (if eager) wake-up.
        CPU_SUSPEND_32 | CPU_SUSPEND_64 => Some(SUCCESS),
        MIGRATE_INFO_TYPE => Some(MIGRATE_NOT_REQUIRED),
        _ => None,
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
        assert_eq!(handle(0x8400_0006, [0; 3], &VM), PsciAction::Return(2));
    }

    #[test]
    fn unknown_calls_are_not_supported() {
        assert_eq!(handle(0x8400_001f, [0; 3], &VM), PsciAction::Return(-1));
        assert!(!is_known(0x8400_001f));
        // The upper half of x0 is not part of the function ID.
        assert_eq!(
            handle(0xffff_ffff_8400_0000, [0; 3], &VM),
            PsciAction::Return(0x10001)
        );
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
