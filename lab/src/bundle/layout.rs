//! Where a VM's files go in its RAM (IPA 0x4000_0000 up), as QEMU places
//! them for a bare machine: the arm64 Image at the 2 MiB-aligned RAM base
//! plus its header's `text_offset`; the initrd at half of RAM (QEMU uses
//! +128 MiB when RAM allows); the DTB in the top 2 MiB. The places depend
//! only on RAM size and the Image header, so they are stable for snapshots;
//! what does not fit is an error, not an overlap. Bare-metal images
//! ([`bare_layout`]) go where their ELF headers or images.yaml say, with the
//! DTB at the base of RAM when there is room below them, as QEMU does.

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

/// Where a bare-metal image goes and where its DTB goes, as QEMU does for
/// a non-Linux `-kernel`: an ELF's segments at their physical addresses
/// (the manifest needs no load address), a raw binary at `load`; the DTB
/// at the base of RAM when it fits below the image (firmware such as
/// U-Boot reads it there, whatever x0 says), else in the top 2 MiB.
pub fn bare_layout(memory_size: u64, span: ImageSpan, dtb_len: u64) -> Result<BareLayout> {
    if memory_size == 0 || !memory_size.is_multiple_of(ALIGN_2M) {
        bail!("memory must be a non-zero multiple of 2 MiB, not {memory_size:#x}");
    }
    let ram_end = RAM_BASE + memory_size;
    if span.low < RAM_BASE || span.high > ram_end {
        bail!(
            "the image spans {:#x}..{:#x}, outside the VM's RAM {RAM_BASE:#x}..{ram_end:#x}",
            span.low,
            span.high
        );
    }
    let dtb = if RAM_BASE + dtb_len <= span.low {
        RAM_BASE
    } else if span.high <= ram_end - DTB_MAX && dtb_len <= DTB_MAX {
        ram_end - DTB_MAX
    } else {
        bail!(
            "no room for the DTB ({dtb_len} bytes) below or above the image in {} MiB of RAM",
            memory_size / MIB
        );
    };
    Ok(BareLayout { dtb })
}

/// The guest-physical bytes an image occupies, `low..high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSpan {
    pub low: u64,
    pub high: u64,
}

impl ImageSpan {
    /// A raw binary of `len` bytes at `load`.
    pub fn raw(load: u64, len: u64) -> Result<ImageSpan> {
        let high = load.checked_add(len).context("the image ends past 2^64")?;
        Ok(ImageSpan { low: load, high })
    }

    /// The `PT_LOAD` segments of a little-endian ELF64 (physical addresses,
    /// memory sizes), as QEMU's loader places them.
    pub fn elf(file: &[u8]) -> Result<ImageSpan> {
        use object::elf::{FileHeader64, PT_LOAD};
        use object::read::elf::{FileHeader, ProgramHeader};
        use object::LittleEndian;
        let header = FileHeader64::<LittleEndian>::parse(file).context("not an ELF64 file")?;
        let endian = header.endian().context("not a little-endian ELF")?;
        let mut span: Option<ImageSpan> = None;
        for ph in header
            .program_headers(endian, file)
            .context("bad ELF program headers")?
        {
            if ph.p_type(endian) != PT_LOAD || ph.p_memsz(endian) == 0 {
                continue;
            }
            let low = ph.p_paddr(endian);
            let high = low
                .checked_add(ph.p_memsz(endian))
                .context("an ELF segment ends past 2^64")?;
            span = Some(match span {
                None => ImageSpan { low, high },
                Some(s) => ImageSpan {
                    low: s.low.min(low),
                    high: s.high.max(high),
                },
            });
        }
        span.context("the ELF has no loadable segment")
    }
}

/// Where a bare-metal image's DTB goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BareLayout {
    pub dtb: u64,
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
    fn bare_dtb_goes_below_the_image_when_it_fits() {
        let memory = 64 * MIB;
        // U-Boot, raw at QEMU's raw -kernel address: DTB at the base of RAM.
        let uboot = ImageSpan::raw(0x4008_0000, 600 << 10).unwrap();
        assert_eq!(bare_layout(memory, uboot, 0x2000).unwrap().dtb, RAM_BASE);
        // A DTB bigger than the room below: the top 2 MiB.
        assert_eq!(
            bare_layout(memory, uboot, 0x9_0000).unwrap().dtb,
            RAM_BASE + memory - DTB_MAX
        );
        // Zephyr's ELF at the base of RAM itself: the top 2 MiB.
        let zephyr = ImageSpan {
            low: RAM_BASE,
            high: RAM_BASE + (400 << 10),
        };
        assert_eq!(
            bare_layout(memory, zephyr, 0x2000).unwrap().dtb,
            RAM_BASE + memory - DTB_MAX
        );
        let below_ram = ImageSpan {
            low: 0,
            high: 0x1000,
        };
        assert!(bare_layout(memory, below_ram, 0x2000).is_err());
        let whole = ImageSpan {
            low: RAM_BASE,
            high: RAM_BASE + memory,
        };
        assert!(bare_layout(memory, whole, 0x2000).is_err());
    }

    /// A little-endian AArch64 ELF64 header and `segments` as
    /// `(p_type, paddr, memsz)` program headers.
    fn elf(segments: &[(u32, u64, u64)]) -> Vec<u8> {
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // ELFDATA2LSB
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        out[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for &(p_type, paddr, memsz) in segments {
            let mut ph = [0u8; 56];
            ph[..4].copy_from_slice(&p_type.to_le_bytes());
            ph[16..24].copy_from_slice(&paddr.to_le_bytes()); // p_vaddr
            ph[24..32].copy_from_slice(&paddr.to_le_bytes()); // p_paddr
            ph[40..48].copy_from_slice(&memsz.to_le_bytes());
            out.extend_from_slice(&ph);
        }
        out
    }

    #[test]
    fn elf_span_covers_every_load_segment() {
        const PT_LOAD: u32 = 1;
        const PT_NOTE: u32 = 4;
        let file = elf(&[
            (PT_LOAD, 0x4010_0000, 0x800),
            (PT_NOTE, 0x1000, 0x10),
            (PT_LOAD, 0x4000_0000, 0x1000),
        ]);
        assert_eq!(
            ImageSpan::elf(&file).unwrap(),
            ImageSpan {
                low: 0x4000_0000,
                high: 0x4010_0800
            }
        );
        assert!(ImageSpan::elf(&elf(&[(PT_NOTE, 0, 1)])).is_err());
        assert!(ImageSpan::elf(b"not an elf").is_err());
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
