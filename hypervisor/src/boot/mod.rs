//! The boot bundle: the cpio archive the lab passes as the host's initrd
//! ([`cpio`]) or, when firmware boots the hypervisor, as a QEMU fw_cfg file
//! ([`fw_cfg`]); the manifest inside it ([`manifest`]) and the total device
//! tree reader the manifest parser uses ([`dt`]).
pub mod cpio;
pub mod dt;
pub mod fw_cfg;
pub mod manifest;
