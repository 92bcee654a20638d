//! Where a VM's files go in its RAM (IPA 0x4000_0000 up), as QEMU places
//! them for a bare machine: the arm64 Image at the 2 MiB-aligned RAM base
//! plus its header's `text_offset`; the initrd at half of RAM (QEMU uses
//! +128 MiB when RAM allows); the DTB in the top 2 MiB. The places depend
//! only on RAM size and the Image header, so they are stable for snapshots;
//! what does not fit is an error, not an overlap.

use anyhow::{bail, Context, Result};

/// Guest RAM base of every VM (QEMU virt).
pub const RAM_BASE: u64 = 0x4000_0000;
const MIB: u64 = 1 << 20;
/// Alignment Linux wants for the Image base, and the hypervisor for RAM sizes.
pub const ALIGN_2M: u64 = 2 * MIB;
/// The DTB's slot at the top of RAM (arm64 boot protocol: at most 2 MiB).
pub const DTB_MAX: u64 = 2 * MIB;

const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";
const IMAGE_MAGIC_OFFSET: usize = 0x38;

/// What the arm64 Image header says about placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub text_offset: u64,
    /// Bytes the kernel occupies from its load address, BSS included.
    pub image_size: u64,
}

impl ImageHeader {
    pub fn parse(image: &[u8]) -> Result<ImageHeader> {
        let field = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(image.get(at..at + 8)?.try_into().ok()?))
        };
        if image.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + 4) != Some(&IMAGE_MAGIC[..]) {
            bail!("not an arm64 Image (no ARM\\x64 magic at 0x38)");
        }
        let text_offset = field(0x08).context("truncated Image header")?;
        let image_size = field(0x10).context("truncated Image header")?;
        let file_len = image.len() as u64;
        Ok(ImageHeader {
            text_offset,
            // Very old kernels leave image_size 0.
            image_size: image_size.max(file_len),
        })
    }
}

/// IPAs of one VM's boot files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub kernel: u64,
    pub dtb: u64,
    /// Start and end of the initrd.
    pub initrd: Option<(u64, u64)>,
}

/// Places an Image, a DTB and optionally an initrd of `initrd_len` bytes
/// in `memory_size` bytes of RAM.
pub fn layout(memory_size: u64, header: ImageHeader, initrd_len: Option<u64>) -> Result<Layout> {
    if memory_size == 0 || !memory_size.is_multiple_of(ALIGN_2M) {
        bail!("memory must be a non-zero multiple of 2 MiB, not {memory_size:#x}");
    }
    let ram_end = RAM_BASE + memory_size;
    let kernel = RAM_BASE
        .checked_add(header.text_offset)
        .context("text_offset out of range")?;
    let kernel_end = kernel
        .checked_add(header.image_size)
        .context("image_size out of range")?;
    let dtb = ram_end - DTB_MAX;
    let initrd = match initrd_len {
        None => None,
        Some(len) => {
            let start = RAM_BASE + (memory_size / 2) / ALIGN_2M * ALIGN_2M;
            let start = start
                .min(RAM_BASE + 128 * MIB)
                .max(kernel_end.next_multiple_of(ALIGN_2M));
            let end = start.checked_add(len).context("initrd size out of range")?;
            if end > dtb {
                bail!(
                    "the initrd ({} MiB) does not fit between the kernel and the DTB in {} MiB of RAM",
                    len.div_ceil(MIB),
                    memory_size / MIB
                );
            }
            Some((start, end))
        }
    };
    if kernel_end > dtb {
        bail!(
            "the kernel ({} MiB) does not fit in {} MiB of RAM",
            header.image_size.div_ceil(MIB),
            memory_size / MIB
        );
    }
    Ok(Layout {
        kernel,
        dtb,
        initrd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(text_offset: u64, image_size: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len.max(0x40)];
        bytes[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
        bytes[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
        bytes[0x38..0x3c].copy_from_slice(IMAGE_MAGIC);
        bytes
    }

    #[test]
    fn header_reads_offset_and_size() {
        let header = ImageHeader::parse(&image(0x80000, 0x1000, 0x40)).unwrap();
        assert_eq!(
            header,
            ImageHeader {
                text_offset: 0x80000,
                image_size: 0x1000
            }
        );
        // image_size 0: the file length.
        assert_eq!(
            ImageHeader::parse(&image(0, 0, 0x2000)).unwrap().image_size,
            0x2000
        );
        assert!(ImageHeader::parse(&[0u8; 0x40]).is_err());
    }

    #[test]
    fn layout_table() {
        let linux = ImageHeader {
            text_offset: 0,
            image_size: 40 * MIB,
        };
        let guest = ImageHeader {
            text_offset: 0x80000,
            image_size: MIB,
        };
        let cases = [
            // 256 MiB Linux with an initrd: initrd at +128 MiB, DTB at the top.
            (
                256 * MIB,
                linux,
                Some(8 * MIB),
                0x4000_0000,
                Some((0x4800_0000, 0x4880_0000)),
                0x4fe0_0000,
            ),
            // 64 MiB bare-metal guest: Image at +0x80000.
            (64 * MIB, guest, None, 0x4008_0000, None, 0x43e0_0000),
            // 96 MiB: the initrd at half of RAM, above the kernel.
            (
                96 * MIB,
                guest,
                Some(MIB),
                0x4008_0000,
                Some((0x4300_0000, 0x4310_0000)),
                0x45e0_0000,
            ),
        ];
        for (memory, header, initrd, kernel, initrd_at, dtb) in cases {
            let l = layout(memory, header, initrd).unwrap();
            assert_eq!(
                (l.kernel, l.initrd, l.dtb),
                (kernel, initrd_at, dtb),
                "{memory:#x}"
            );
        }
    }

    #[test]
    fn layout_refuses_what_does_not_fit() {
        let big = ImageHeader {
            text_offset: 0,
            image_size: 63 * MIB,
        };
        assert!(layout(64 * MIB, big, None).is_err());
        let small = ImageHeader {
            text_offset: 0,
            image_size: MIB,
        };
        let err = layout(64 * MIB, small, Some(40 * MIB)).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        assert!(
            layout(3 * MIB, small, None).is_err(),
            "not a multiple of 2 MiB"
        );
    }
}
