//! The hypervisor's portable core: everything that is plain logic (DTB
//! discovery, device models, manifest parsing, table encodings) lives here so
//! `cargo test` exercises it on the host. The EL2 binary is `main.rs`.
#![cfg_attr(not(test), no_std)]

pub mod arch;
pub mod devices;
