//! A VM's disks as the lab prepares them, for the hypervisor's bundle and
//! for QEMU's own virtio-blk alike: the size (`size-mib`, else the image
//! rounded up to 4 KiB), the initial contents (an image, then zeros), and
//! the md5 the guest's `md5sum /dev/vdX` prints for the whole disk, which
//! scenarios compare against as `{<vm>-disk<N>-md5}`.

use crate::scenario::Disk;
use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};
use std::path::Path;

const MIB: u64 = 1 << 20;
/// Disk sizes are whole 4 KiB pages (the lab/hypervisor contract).
pub const DISK_ALIGN: u64 = 4096;

/// One disk, ready to hand to a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskContents {
    /// Bytes the guest sees.
    pub size: u64,
    /// The initial contents from the start of the disk (the rest is zero);
    /// `None` for an empty disk.
    pub image: Option<Vec<u8>>,
    pub read_only: bool,
}

impl DiskContents {
    /// A disk of the scenario with its image's bytes (`None` for an empty
    /// disk); `what` names it in errors.
    pub fn new(disk: &Disk, image: Option<Vec<u8>>, what: &str) -> Result<DiskContents> {
        let image_len = image.as_ref().map(|data| data.len() as u64);
        let size = match (disk.size_mib, image_len) {
            (Some(mib), _) => mib.checked_mul(MIB).context("size-mib out of range")?,
            (None, Some(len)) => len.max(1).next_multiple_of(DISK_ALIGN),
            (None, None) => bail!("{what}: a disk needs `size-mib` or an `image`"),
        };
        if let Some(len) = image_len.filter(|len| *len > size) {
            bail!(
                "{what}: its image has {len} bytes, more than the disk's {size} (size-mib {})",
                size / MIB
            );
        }
        Ok(DiskContents {
            size,
            image,
            read_only: disk.read_only,
        })
    }

    /// The md5 of the whole disk as lowercase hex, as `md5sum` prints it.
    pub fn md5(&self) -> String {
        let mut hasher = Md5::new();
        let image = self.image.as_deref().unwrap_or_default();
        hasher.update(image);
        let zeros = [0u8; 64 * 1024];
        let mut left = self.size - image.len() as u64;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            hasher.update(&zeros[..n]);
            left -= n as u64;
        }
        hex::encode(hasher.finalize())
    }

    /// Writes the disk as a raw file for QEMU (sparse where it is zero).
    pub fn write_raw(&self, path: &Path) -> Result<()> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        if let Some(image) = &self.image {
            std::io::Write::write_all(&mut &file, image)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        file.set_len(self.size)
            .with_context(|| format!("sizing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(size_mib: Option<u64>) -> Disk {
        Disk {
            image: None,
            size_mib,
            read_only: false,
        }
    }

    #[test]
    fn sizes_come_from_size_mib_or_the_image_rounded_to_pages() {
        let sized = DiskContents::new(&disk(Some(2)), Some(vec![1; 10]), "d").unwrap();
        assert_eq!(sized.size, 2 * MIB);
        let fitted = DiskContents::new(&disk(None), Some(vec![1; 4097]), "d").unwrap();
        assert_eq!(fitted.size, 8192);
        let err = DiskContents::new(&disk(Some(1)), Some(vec![1; 2 << 20]), "vm0 disk 0")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("vm0 disk 0: its image has 2097152 bytes"),
            "{err}"
        );
    }

    #[test]
    fn md5_covers_the_padding_and_matches_the_raw_file() {
        let contents = DiskContents::new(&disk(None), Some(b"abc".to_vec()), "d").unwrap();
        let mut whole = b"abc".to_vec();
        whole.resize(4096, 0);
        assert_eq!(contents.md5(), hex::encode(Md5::digest(&whole)));
        let empty = DiskContents::new(&disk(Some(1)), None, "d").unwrap();
        // md5sum of 1 MiB of zeros.
        assert_eq!(empty.md5(), "b6d81b360a5672d80c27430f39153e2c");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.raw");
        contents.write_raw(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), whole);
    }
}
