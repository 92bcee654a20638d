//! Every SMCCC function ID the hypervisor calls or answers, in one place:
//! the Arm architecture calls (SMCCC v1.1), PSCI 1.1 (DEN0022), the TRNG
//! probe, the vendor-hypervisor UID probe and FF-A v1.1 (DEN0077A, 13.x).
//! A 32-bit ID is `fast | SMC64 | owning entity << 24 | function`
//! ([`super::FunctionId`]); the `_64` IDs are the SMC64 forms.
#![forbid(unsafe_code)]

// Arm architecture service (OEN 0).
/// SMCCC_VERSION.
pub const SMCCC_VERSION: u32 = 0x8000_0000;
/// SMCCC_ARCH_FEATURES.
pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;

// Standard secure service (OEN 4), PSCI range 0x00..=0x1f.
/// PSCI_VERSION.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// CPU_SUSPEND, SMC32.
pub const PSCI_CPU_SUSPEND_32: u32 = 0x8400_0001;
/// CPU_SUSPEND, SMC64.
pub const PSCI_CPU_SUSPEND_64: u32 = 0xc400_0001;
/// CPU_OFF.
pub const PSCI_CPU_OFF: u32 = 0x8400_0002;
/// CPU_ON, SMC32.
pub const PSCI_CPU_ON_32: u32 = 0x8400_0003;
/// CPU_ON, SMC64.
pub const PSCI_CPU_ON_64: u32 = 0xc400_0003;
/// AFFINITY_INFO, SMC32.
pub const PSCI_AFFINITY_INFO_32: u32 = 0x8400_0004;
/// AFFINITY_INFO, SMC64.
pub const PSCI_AFFINITY_INFO_64: u32 = 0xc400_0004;
/// MIGRATE_INFO_TYPE.
pub const PSCI_MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// SYSTEM_OFF.
pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;
/// SYSTEM_RESET.
pub const PSCI_SYSTEM_RESET: u32 = 0x8400_0009;
/// PSCI_FEATURES.
pub const PSCI_FEATURES: u32 = 0x8400_000a;

// Standard secure service, TRNG range 0x50..=0x5f.
/// TRNG_VERSION (SMCCC TRNG 1.0).
pub const TRNG_VERSION: u32 = 0x8400_0050;

// Vendor-specific hypervisor service (OEN 6).
/// The vendor hypervisor service's call UID query (Linux asks it to find
/// KVM's paravirtual services).
pub const VENDOR_HYP_CALL_UID: u32 = 0x8600_ff01;

// Standard secure service, FF-A range 0x60..=0xef (FF-A v1.1, 13.x).
/// FFA_ERROR.
pub const FFA_ERROR: u32 = 0x8400_0060;
/// FFA_SUCCESS, SMC32.
pub const FFA_SUCCESS_32: u32 = 0x8400_0061;
/// FFA_SUCCESS, SMC64.
pub const FFA_SUCCESS_64: u32 = 0xc400_0061;
/// FFA_INTERRUPT.
pub const FFA_INTERRUPT: u32 = 0x8400_0062;
/// FFA_VERSION.
pub const FFA_VERSION: u32 = 0x8400_0063;
/// FFA_FEATURES.
pub const FFA_FEATURES: u32 = 0x8400_0064;
/// FFA_RX_RELEASE.
pub const FFA_RX_RELEASE: u32 = 0x8400_0065;
/// FFA_RXTX_MAP, SMC32.
pub const FFA_RXTX_MAP_32: u32 = 0x8400_0066;
/// FFA_RXTX_MAP, SMC64.
pub const FFA_RXTX_MAP_64: u32 = 0xc400_0066;
/// FFA_RXTX_UNMAP.
pub const FFA_RXTX_UNMAP: u32 = 0x8400_0067;
/// FFA_PARTITION_INFO_GET.
pub const FFA_PARTITION_INFO_GET: u32 = 0x8400_0068;
/// FFA_ID_GET.
pub const FFA_ID_GET: u32 = 0x8400_0069;
/// FFA_MSG_WAIT.
pub const FFA_MSG_WAIT: u32 = 0x8400_006b;
/// FFA_RUN.
pub const FFA_RUN: u32 = 0x8400_006d;
/// FFA_MSG_SEND_DIRECT_REQ, SMC32.
pub const FFA_MSG_SEND_DIRECT_REQ_32: u32 = 0x8400_006f;
/// FFA_MSG_SEND_DIRECT_REQ, SMC64.
pub const FFA_MSG_SEND_DIRECT_REQ_64: u32 = 0xc400_006f;
/// FFA_MSG_SEND_DIRECT_RESP, SMC32.
pub const FFA_MSG_SEND_DIRECT_RESP_32: u32 = 0x8400_0070;
/// FFA_MSG_SEND_DIRECT_RESP, SMC64.
pub const FFA_MSG_SEND_DIRECT_RESP_64: u32 = 0xc400_0070;
/// FFA_MEM_LEND, SMC32.
pub const FFA_MEM_LEND_32: u32 = 0x8400_0072;
/// FFA_MEM_LEND, SMC64.
pub const FFA_MEM_LEND_64: u32 = 0xc400_0072;
/// FFA_MEM_SHARE, SMC32.
pub const FFA_MEM_SHARE_32: u32 = 0x8400_0073;
/// FFA_MEM_SHARE, SMC64.
pub const FFA_MEM_SHARE_64: u32 = 0xc400_0073;
/// FFA_MEM_RECLAIM.
pub const FFA_MEM_RECLAIM: u32 = 0x8400_0077;
/// FFA_SPM_ID_GET (v1.1).
pub const FFA_SPM_ID_GET: u32 = 0x8400_0085;
