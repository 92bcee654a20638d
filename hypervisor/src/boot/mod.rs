//! The boot bundle: the cpio archive the lab passes as the host's initrd
//! ([`cpio`]), the manifest inside it ([`manifest`]) and the total device
//! tree reader the manifest parser uses ([`dt`]).
pub mod cpio;
pub mod dt;
pub mod manifest;
