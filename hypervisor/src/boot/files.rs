//! The boot bundle's files, wherever they are: in memory (a bundle QEMU
//! loaded as the initrd, or members fetched from fw_cfg), or still in
//! QEMU's fw_cfg file. A member the hypervisor only copies (a VM's kernel
//! image, initrd or disk image) stays in fw_cfg and is copied by DMA
//! straight to where it goes, each time the VM (re)starts: QEMU copies on
//! the host's side, and the host memory behind the bundle is never touched.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use crate::addr::PhysAddr;
use crate::arch;
use crate::boot::cpio::{Archive, CpioError, Span};
use crate::boot::fw_cfg::FwCfgError;

/// A fw_cfg item: the device and the item's key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FwCfgItem {
    /// The fw_cfg device's registers.
    pub base: PhysAddr,
    /// The item's selector key.
    pub select: u16,
}

/// The bundle: an archive in memory, and the members of it that were
/// left in its fw_cfg item.
#[derive(Clone, Debug)]
pub struct BootFiles<'a> {
    archive: Archive<'a>,
    left: Option<(FwCfgItem, Vec<Span>)>,
}

/// One member, found by name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BootFile<'a> {
    /// Its bytes, in memory.
    Bytes(&'a [u8]),
    /// `len` bytes at `offset` of a fw_cfg item, to be copied by DMA.
    FwCfg {
        item: FwCfgItem,
        offset: usize,
        len: usize,
    },
}

impl<'a> BootFiles<'a> {
    /// A bundle wholly in memory.
    pub fn in_memory(archive: Archive<'a>) -> Self {
        Self {
            archive,
            left: None,
        }
    }

    /// A bundle whose members `left` are still in fw_cfg `item` (their data
    /// in `archive` is not theirs); the rest are in memory.
    pub fn partly_in_fw_cfg(archive: Archive<'a>, item: FwCfgItem, left: Vec<Span>) -> Self {
        Self {
            archive,
            left: Some((item, left)),
        }
    }

    /// The regular file called `name` (`Ok(None)` if there is none).
    pub fn find(&self, name: &str) -> Result<Option<BootFile<'a>>, CpioError> {
        let wanted = name.strip_prefix("./").unwrap_or(name);
        if let Some((item, left)) = &self.left {
            if let Some(span) = left.iter().find(|span| span.name == wanted) {
                return Ok(Some(BootFile::FwCfg {
                    item: *item,
                    offset: span.offset,
                    len: span.len,
                }));
            }
        }
        Ok(self.archive.find(wanted)?.map(BootFile::Bytes))
    }
}

impl<'a> BootFile<'a> {
    /// Its size in bytes.
    pub fn len(&self) -> usize {
        match self {
            BootFile::Bytes(bytes) => bytes.len(),
            BootFile::FwCfg { len, .. } => *len,
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its bytes, if they are in memory (a member left in fw_cfg is only
    /// copied).
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match self {
            BootFile::Bytes(bytes) => Some(bytes),
            BootFile::FwCfg { .. } => None,
        }
    }

    /// Copies it to the start of `dest` (guest RAM or a disk), cleaned to
    /// the point of coherency for a guest whose caches are off; `dest` must
    /// be at least [`len`](Self::len) bytes.
    pub fn copy_to(&self, dest: &mut [u8]) -> Result<(), FwCfgError> {
        let dest = dest.get_mut(..self.len()).ok_or(FwCfgError::OutOfRange)?;
        match self {
            BootFile::Bytes(bytes) => {
                arch::copy_to_guest_ram(dest, bytes);
                Ok(())
            }
            BootFile::FwCfg { item, offset, .. } => {
                arch::fw_cfg_read_into(item.base, item.select, *offset, dest)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::cpio::tests::build;
    use alloc::string::ToString;

    #[test]
    fn members_left_in_fw_cfg_are_found_there() {
        let a = build(&[
            ("manifest.dtb", 0o100644, b"MANIFEST"),
            ("vm0/kernel", 0o100644, &[0; 12]),
        ]);
        let item = FwCfgItem {
            base: PhysAddr::new(0x902_0000),
            select: 0x21,
        };
        let left = alloc::vec![Span {
            name: "vm0/kernel".to_string(),
            offset: 0x100,
            len: 12,
        }];
        let files = BootFiles::partly_in_fw_cfg(Archive::new(&a), item, left);
        assert_eq!(
            files.find("manifest.dtb"),
            Ok(Some(BootFile::Bytes(b"MANIFEST")))
        );
        let kernel = files.find("./vm0/kernel").unwrap().unwrap();
        assert_eq!(
            kernel,
            BootFile::FwCfg {
                item,
                offset: 0x100,
                len: 12
            }
        );
        assert_eq!(kernel.bytes(), None);
        assert_eq!(kernel.len(), 12);
        assert_eq!(files.find("vm0/initrd"), Ok(None));
        // The host has no fw_cfg; a destination too short is refused first.
        assert_eq!(kernel.copy_to(&mut [0; 11]), Err(FwCfgError::OutOfRange));
        assert_eq!(kernel.copy_to(&mut [0; 12]), Err(FwCfgError::DmaFailed));
    }

    #[test]
    fn members_in_memory_are_copied() {
        let a = build(&[("vm0/initrd", 0o100644, b"initrd")]);
        let files = BootFiles::in_memory(Archive::new(&a));
        let initrd = files.find("vm0/initrd").unwrap().unwrap();
        assert_eq!(initrd.bytes(), Some(&b"initrd"[..]));
        let mut ram = [0xffu8; 8];
        initrd.copy_to(&mut ram).unwrap();
        assert_eq!(&ram, b"initrd\xff\xff");
    }
}
