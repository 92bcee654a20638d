//! Architecture layer. Only this module tree knows AArch64.
pub mod aarch64;
