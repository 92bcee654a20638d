//! AArch64: encodings and decoders that are plain logic (host-tested), and,
//! on the bare-metal target only, the EL2 hardware layer (`hw`).
pub mod context;
pub mod esr;
pub mod gic_lr;
pub mod idregs;
pub mod mmio_decode;
pub mod pte;

#[cfg(target_os = "none")]
pub mod hw;
