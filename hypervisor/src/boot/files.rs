//! The boot bundle's files, wherever they are: in memory (a bundle QEMU
//! loaded as the initrd), or in QEMU's fw_cfg file. From fw_cfg the
//! hypervisor fetches only what it reads itself (the manifest); every other
//! member (a VM's kernel, device tree, initrd, disk images) is copied by
//! DMA straight to where it goes, each time the VM (re)starts: QEMU copies
//! on the host's side, and no host memory holds the bundle a second time.
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

/// The bundle.
#[derive(Clone, Debug)]
pub enum BootFiles<'a> {
    /// An archive in memory.
    InMemory(Archive<'a>),
    /// An archive in a fw_cfg item: where its members lie, and the ones
    /// fetched into memory.
    InFwCfg {
        item: FwCfgItem,
        members: Vec<Span>,
        fetched: Vec<(&'a str, &'a [u8])>,
    },
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
    /// The regular file called `name` (`Ok(None)` if there is none).
    pub fn find(&self, name: &str) -> Result<Option<BootFile<'a>>, CpioError> {
        let wanted = name.strip_prefix("./").unwrap_or(name);
        match self {
            BootFiles::InMemory(archive) => Ok(archive.find(wanted)?.map(BootFile::Bytes)),
            BootFiles::InFwCfg {
                item,
                members,
                fetched,
            } => {
                if let Some((_, bytes)) = fetched.iter().find(|(name, _)| *name == wanted) {
                    return Ok(Some(BootFile::Bytes(bytes)));
                }
                Ok(members
                    .iter()
                    .find(|span| span.name == wanted)
                    .map(|span| BootFile::FwCfg {
                        item: *item,
                        offset: span.offset,
                        len: span.len,
                    }))
            }
        }
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
    fn members_in_fw_cfg_are_found_there_unless_fetched() {
        let item = FwCfgItem {
            base: PhysAddr::new(0x902_0000),
            select: 0x21,
        };
        let span = |name: &str, offset| Span {
            name: name.to_string(),
            offset,
            len: 12,
        };
        let files = BootFiles::InFwCfg {
            item,
            members: alloc::vec![span("manifest.dtb", 0x70), span("vm0/kernel", 0x100)],
            fetched: alloc::vec![("manifest.dtb", &b"MANIFEST"[..])],
        };
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
        let files = BootFiles::InMemory(Archive::new(&a));
        let initrd = files.find("vm0/initrd").unwrap().unwrap();
        assert_eq!(initrd.bytes(), Some(&b"initrd"[..]));
        let mut ram = [0xffu8; 8];
        initrd.copy_to(&mut ram).unwrap();
        assert_eq!(&ram, b"initrd\xff\xff");
    }
}
