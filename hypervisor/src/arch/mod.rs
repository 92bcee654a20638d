//! Architecture layer: the one place that chooses an implementation by
//! target (Hubris-style). Portable code calls the names re-exported here:
//!
//! - `uart_write(base, bytes)`: polled output on a PL011;
//! - `psci_call(conduit, function, args)`: an SMC/HVC to the firmware;
//! - `current_el()`, `halt()`;
//! - `enable_mmu(root)`: turn on the EL2 stage-1 tables built by `mm`;
//! - `IdentityTables`: a `mm::pagetable::TableMemory` over host RAM;
//! - `heap_init(range)`: hand the global allocator its memory.
//!
//! On the bare-metal target these are the EL2 implementations in
//! `aarch64::hw`; on the host (unit tests, `cargo check`) a fake backend
//! stands in, so portable code compiles and is tested without hardware.
//! The AArch64 encodings and decoders (`aarch64::pte`, `aarch64::mmio_decode`)
//! are plain logic and build everywhere.
pub mod aarch64;

#[cfg(target_os = "none")]
pub use aarch64::hw::*;

#[cfg(not(target_os = "none"))]
mod fake;
#[cfg(not(target_os = "none"))]
pub use fake::*;
