//! AArch64: encodings and decoders (host-testable) and the EL2 hardware layer.
pub mod mmio_decode;
