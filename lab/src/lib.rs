//! The lab: builds the hypervisor, fetches guest images, runs QEMU scenarios
//! and checks what the consoles print. `main.rs` only parses arguments.
//! Everything it does is safe Rust (its system calls go through `nix`).
#![forbid(unsafe_code)]

pub mod bench;
pub mod build;
pub mod bundle;
pub mod cli;
pub mod debug;
pub mod disk;
pub mod doctor;
pub mod firmware;
pub mod fuzz;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz_targets;
pub mod images;
pub mod normalize;
pub mod qemu;
pub mod replay;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sweep;
