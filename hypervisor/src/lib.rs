//! The hypervisor: an AArch64 Type-1 hypervisor running at EL2 on QEMU's
//! `virt` board. Everything that is plain logic (DTB discovery, allocators,
//! table building, device models, manifest parsing) lives in this library so
//! `cargo test` exercises it on the host; the hardware layer is `arch`, the
//! bare-metal binary is `main.rs`.
#![cfg_attr(not(any(test, feature = "fuzzing")), no_std)]

extern crate alloc;

pub mod addr;
pub mod arch;
pub mod boot;
pub mod console;
pub mod devices;
pub mod ffa;
pub mod fixed_vec;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_targets;
pub mod kmain;
pub mod layout;
pub mod machine;
pub mod mm;
pub mod platform;
pub mod power;
pub mod psci;
pub mod smccc;
pub mod vm;
pub mod vswitch;
