//! QEMU's firmware configuration device (`docs/specs/fw_cfg.rst`), the way
//! the boot bundle reaches the hypervisor when firmware boots it: TF-A
//! enters BL33 with no `/chosen` initrd, so the lab passes the bundle as the
//! fw_cfg file [`BUNDLE_FILE`] and the hypervisor fetches it by DMA. This
//! module is the portable half: the DMA descriptor and the file directory.
//! Members a VM only copies (its kernel, initrd and disk images) are not
//! fetched at boot: they go from the file straight into the VM's RAM or
//! disk when it (re)starts (`boot::files`), so the host touches that memory
//! once, as it does for a machine QEMU boots directly.
#![forbid(unsafe_code)]

use crate::addr::PhysAddr;

/// The fw_cfg file the lab puts the boot bundle in (`-fw_cfg name=...`).
pub const BUNDLE_FILE: &str = "opt/org.hvlab/bundle";

/// The DMA address register: 64-bit big-endian, written as two 32-bit
/// halves (high first; the write of the low half starts the transfer).
pub const DMA_OFFSET: u64 = 0x10;

/// The item key of the file directory.
pub const KEY_FILE_DIR: u16 = 0x0019;

/// DMA control bits.
pub const DMA_READ: u32 = 1 << 1;
pub const DMA_SKIP: u32 = 1 << 2;
pub const DMA_SELECT: u32 = 1 << 3;

/// Bytes of one file directory entry: size (BE u32), select (BE u16),
/// reserved (u16), name (56 bytes, NUL-padded).
const DIR_ENTRY_SIZE: usize = 64;
const DIR_NAME_OFFSET: usize = 8;

/// `FWCfgDmaAccess`, every field big-endian as the device reads it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaAccess {
    pub control: u32,
    pub length: u32,
    pub address: u64,
}

const _: () = assert!(core::mem::size_of::<DmaAccess>() == 16);

impl DmaAccess {
    /// Select item `key` and move its read offset `length` bytes on.
    pub fn select_skip(key: u16, length: u32) -> DmaAccess {
        DmaAccess {
            control: (u32::from(key) << 16 | DMA_SELECT | DMA_SKIP).to_be(),
            length: length.to_be(),
            address: 0,
        }
    }

    /// Read `length` bytes of the selected item, from its read offset on,
    /// to `dest`.
    pub fn read(length: u32, dest: PhysAddr) -> DmaAccess {
        DmaAccess {
            control: DMA_READ.to_be(),
            length: length.to_be(),
            address: dest.as_u64().to_be(),
        }
    }

    /// The control word the device left: 0 when the transfer completed.
    pub fn status(&self) -> u32 {
        u32::from_be(self.control)
    }
}

/// Why fw_cfg could not deliver a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwCfgError {
    /// A DMA transfer did not complete (error bit set, or a device
    /// without the DMA interface left the descriptor as it was).
    DmaFailed,
    /// The file directory is shorter than its count says.
    BadDirectory,
    /// No memory for the directory or the file.
    NoMemory,
    /// A read past the end of the file, or longer than one transfer.
    OutOfRange,
}

impl core::fmt::Display for FwCfgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            FwCfgError::DmaFailed => "fw_cfg DMA transfer failed",
            FwCfgError::BadDirectory => "fw_cfg file directory is truncated",
            FwCfgError::NoMemory => "no memory for the fw_cfg file",
            FwCfgError::OutOfRange => "read past the end of the fw_cfg file",
        })
    }
}

/// A file in the directory: its item key and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileEntry {
    pub select: u16,
    pub size: u32,
}

/// Bytes of a directory of `count` entries, with its 4-byte count.
pub fn dir_size(count: u32) -> Option<usize> {
    usize::try_from(count)
        .ok()?
        .checked_mul(DIR_ENTRY_SIZE)?
        .checked_add(4)
}

/// The number of files a directory holds (its first four bytes).
pub fn dir_count(dir: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(dir.get(..4)?.try_into().ok()?))
}

/// Looks `name` up in the file directory `dir` (count, then entries).
pub fn find_file(dir: &[u8], name: &str) -> Result<Option<FileEntry>, FwCfgError> {
    let count = dir_count(dir).ok_or(FwCfgError::BadDirectory)?;
    let end = dir_size(count).ok_or(FwCfgError::BadDirectory)?;
    let entries = dir.get(4..end).ok_or(FwCfgError::BadDirectory)?;
    for entry in entries.chunks_exact(DIR_ENTRY_SIZE) {
        let raw_name = &entry[DIR_NAME_OFFSET..];
        let len = raw_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw_name.len());
        if &raw_name[..len] == name.as_bytes() {
            return Ok(Some(FileEntry {
                size: u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]),
                select: u16::from_be_bytes([entry[4], entry[5]]),
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn dir(files: &[(&str, u16, u32)]) -> Vec<u8> {
        let mut out = u32::try_from(files.len()).unwrap().to_be_bytes().to_vec();
        for (name, select, size) in files {
            let mut entry = [0u8; DIR_ENTRY_SIZE];
            entry[..4].copy_from_slice(&size.to_be_bytes());
            entry[4..6].copy_from_slice(&select.to_be_bytes());
            entry[8..8 + name.len()].copy_from_slice(name.as_bytes());
            out.extend_from_slice(&entry);
        }
        out
    }

    #[test]
    fn finds_the_bundle_by_its_whole_name() {
        let d = dir(&[
            ("etc/boot-fail-wait", 0x20, 4),
            ("opt/org.hvlab/bundle", 0x21, 123_456),
        ]);
        assert_eq!(
            find_file(&d, BUNDLE_FILE),
            Ok(Some(FileEntry {
                select: 0x21,
                size: 123_456
            }))
        );
        assert_eq!(find_file(&d, "opt/org.hvlab/bund"), Ok(None));
        assert_eq!(find_file(&dir(&[]), BUNDLE_FILE), Ok(None));
    }

    #[test]
    fn truncated_directories_are_errors() {
        let d = dir(&[("a", 0x20, 1), ("b", 0x21, 2)]);
        for bad in [&d[..3], &d[..d.len() - 1]] {
            assert_eq!(find_file(bad, "b"), Err(FwCfgError::BadDirectory));
        }
        assert_eq!(dir_size(2), Some(132));
    }

    #[test]
    fn dma_access_is_big_endian() {
        let skip = DmaAccess::select_skip(0x21, 0x200);
        assert_eq!(u32::from_be(skip.control), 0x0021_000c);
        assert_eq!(skip.status(), 0x0021_000c);
        assert_eq!(u32::from_be(skip.length), 0x200);
        let read = DmaAccess::read(0x10, PhysAddr::new(0x4900_0000));
        assert_eq!(u32::from_be(read.control), 0x0000_0002);
        assert_eq!(u64::from_be(read.address), 0x4900_0000);
    }
}
