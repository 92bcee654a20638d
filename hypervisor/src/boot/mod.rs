//! The boot bundle: the cpio archive the lab passes as a QEMU fw_cfg file
//! ([`fw_cfg`]), or as the host's initrd ([`cpio`]); its members wherever
//! they are ([`files`]); the manifest inside it ([`manifest`]) and the total
//! device tree reader the manifest parser uses ([`dt`]).
pub mod cpio;
pub mod dt;
pub mod files;
pub mod fw_cfg;
pub mod manifest;
