//! Putting a VM's boot files into its RAM the way QEMU would for a bare
//! machine: an arm64 Linux `Image` at its load address, an ELF's segments
//! at their physical addresses (entry from the header), a raw binary at a
//! given address; plus the DTB and initrd. Works on the RAM as a byte slice,
//! every guest-supplied offset checked, so it is tested on the host.
#![forbid(unsafe_code)]

use core::fmt;

use crate::addr::IntermediatePhysAddr;
use crate::boot::files::BootFile;
use crate::boot::fw_cfg::FwCfgError;
use crate::boot::manifest::KernelFormat;

/// arm64 Image header: offset and value of the magic ("ARM\x64").
const IMAGE_MAGIC_OFFSET: usize = 0x38;
const IMAGE_MAGIC: u32 = 0x644d_5241;
/// arm64 Image header: offset of `image_size` (bytes the kernel occupies
/// including BSS; 0 in very old kernels).
const IMAGE_SIZE_OFFSET: usize = 0x10;
/// ELF constants.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_AARCH64: u16 = 183;
const PT_LOAD: u32 = 1;
const ELF_HEADER_LEN: usize = 64;
const PHDR_LEN: usize = 56;

/// Why a file could not be loaded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LoadError {
    /// `linux-image` without the arm64 Image magic.
    NotArm64Image,
    /// Not a little-endian AArch64 ELF64, or a malformed one.
    BadElf(&'static str),
    /// Bytes that would land outside the VM's RAM.
    DoesNotFit {
        /// Where they were to go.
        ipa: IntermediatePhysAddr,
        /// How many.
        len: u64,
    },
    /// A raw or Image kernel without a load address.
    NoLoadAddress,
    /// The file could not be copied from where it is.
    Copy(FwCfgError),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NotArm64Image => f.write_str("not an arm64 Image (no ARM\\x64 magic)"),
            LoadError::BadElf(why) => write!(f, "bad ELF: {why}"),
            LoadError::DoesNotFit { ipa, len } => {
                write!(f, "{len:#x} bytes at {ipa:#x} do not fit in the VM's RAM")
            }
            LoadError::NoLoadAddress => f.write_str("no load address"),
            LoadError::Copy(e) => write!(f, "{e}"),
        }
    }
}

/// One VM's RAM as bytes, starting at guest-physical `base`.
pub struct RamImage<'a> {
    /// Guest-physical address of `bytes[0]`.
    pub base: IntermediatePhysAddr,
    /// The RAM.
    pub bytes: &'a mut [u8],
}

impl RamImage<'_> {
    fn span(&mut self, ipa: IntermediatePhysAddr, len: u64) -> Result<&mut [u8], LoadError> {
        let fail = LoadError::DoesNotFit { ipa, len };
        let start = ipa.checked_offset_from(self.base).ok_or(fail)?;
        let end = start.checked_add(len).ok_or(fail)?;
        let start = usize::try_from(start).map_err(|_| fail)?;
        let end = usize::try_from(end).map_err(|_| fail)?;
        self.bytes.get_mut(start..end).ok_or(fail)
    }

    /// Copies `data` to `ipa`.
    pub fn place(&mut self, ipa: IntermediatePhysAddr, data: &[u8]) -> Result<(), LoadError> {
        let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
        crate::arch::copy_to_guest_ram(self.span(ipa, len)?, data);
        Ok(())
    }

    /// Copies `file` to `ipa`.
    pub fn place_file(
        &mut self,
        ipa: IntermediatePhysAddr,
        file: &BootFile<'_>,
    ) -> Result<(), LoadError> {
        let len = u64::try_from(file.len()).unwrap_or(u64::MAX);
        file.copy_to(self.span(ipa, len)?).map_err(LoadError::Copy)
    }

    /// Zeroes `len` bytes at `ipa`.
    pub fn zero(&mut self, ipa: IntermediatePhysAddr, len: u64) -> Result<(), LoadError> {
        self.span(ipa, len)?.fill(0);
        Ok(())
    }

    /// Checks that `len` bytes at `ipa` are RAM.
    pub fn check(&mut self, ipa: IntermediatePhysAddr, len: u64) -> Result<(), LoadError> {
        self.span(ipa, len).map(|_| ())
    }
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Loads a kernel; returns its entry point. An Image or raw kernel is
/// copied where it goes, then checked there; an ELF is read in memory
/// (fetched into the heap first if it is still in fw_cfg).
pub fn load_kernel(
    ram: &mut RamImage<'_>,
    format: KernelFormat,
    file: &BootFile<'_>,
    load_ipa: Option<IntermediatePhysAddr>,
) -> Result<IntermediatePhysAddr, LoadError> {
    match format {
        KernelFormat::LinuxImage => {
            let at = load_ipa.ok_or(LoadError::NoLoadAddress)?;
            let file_len = u64::try_from(file.len()).unwrap_or(u64::MAX);
            ram.place_file(at, file)?;
            let header = ram.span(at, file_len)?;
            if le32(header, IMAGE_MAGIC_OFFSET) != Some(IMAGE_MAGIC) {
                return Err(LoadError::NotArm64Image);
            }
            let image_size = le64(header, IMAGE_SIZE_OFFSET).unwrap_or(0);
            ram.check(at, image_size.max(file_len))?;
            Ok(at)
        }
        KernelFormat::Raw => {
            let at = load_ipa.ok_or(LoadError::NoLoadAddress)?;
            ram.place_file(at, file)?;
            Ok(at)
        }
        KernelFormat::Elf => match file.bytes() {
            Some(bytes) => load_elf(ram, bytes),
            None => {
                let mut bytes = alloc::vec![0; file.len()];
                file.copy_to(&mut bytes).map_err(LoadError::Copy)?;
                load_elf(ram, &bytes)
            }
        },
    }
}

fn load_elf(ram: &mut RamImage<'_>, file: &[u8]) -> Result<IntermediatePhysAddr, LoadError> {
    let header = file
        .get(..ELF_HEADER_LEN)
        .ok_or(LoadError::BadElf("shorter than its header"))?;
    if &header[..4] != ELF_MAGIC {
        return Err(LoadError::BadElf("no ELF magic"));
    }
    if header[4] != ELFCLASS64 || header[5] != ELFDATA2LSB {
        return Err(LoadError::BadElf("not little-endian ELF64"));
    }
    if le16(header, 18) != Some(EM_AARCH64) {
        return Err(LoadError::BadElf("not an AArch64 executable"));
    }
    let entry = le64(header, 24).ok_or(LoadError::BadElf("header"))?;
    let phoff = le64(header, 32).ok_or(LoadError::BadElf("header"))?;
    let phentsize = usize::from(le16(header, 54).ok_or(LoadError::BadElf("header"))?);
    let phnum = usize::from(le16(header, 56).ok_or(LoadError::BadElf("header"))?);
    if phentsize < PHDR_LEN {
        return Err(LoadError::BadElf("program header entries too small"));
    }
    let phoff = usize::try_from(phoff).map_err(|_| LoadError::BadElf("program headers"))?;
    let mut loaded = 0;
    for i in 0..phnum {
        let at = i
            .checked_mul(phentsize)
            .and_then(|o| o.checked_add(phoff))
            .ok_or(LoadError::BadElf("program headers"))?;
        let ph = at
            .checked_add(PHDR_LEN)
            .and_then(|end| file.get(at..end))
            .ok_or(LoadError::BadElf("program headers past the end"))?;
        if le32(ph, 0) != Some(PT_LOAD) {
            continue;
        }
        let bad = LoadError::BadElf("segment");
        let offset = usize::try_from(le64(ph, 8).ok_or(bad)?).map_err(|_| bad)?;
        let paddr = IntermediatePhysAddr::new(le64(ph, 24).ok_or(bad)?);
        let filesz = le64(ph, 32).ok_or(bad)?;
        let memsz = le64(ph, 40).ok_or(bad)?;
        if memsz < filesz {
            return Err(LoadError::BadElf("segment memsz < filesz"));
        }
        let data = usize::try_from(filesz)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .and_then(|end| file.get(offset..end))
            .ok_or(LoadError::BadElf("segment data past the end of the file"))?;
        ram.check(paddr, memsz)?;
        ram.place(paddr, data)?;
        let bss = paddr.checked_add(filesz).ok_or(bad)?;
        ram.zero(bss, memsz - filesz)?;
        loaded += 1;
    }
    if loaded == 0 {
        return Err(LoadError::BadElf("no loadable segment"));
    }
    Ok(IntermediatePhysAddr::new(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x4000_0000;

    fn ram(bytes: &mut [u8]) -> RamImage<'_> {
        RamImage {
            base: IntermediatePhysAddr::new(BASE),
            bytes,
        }
    }

    fn image(len: usize, image_size: u64) -> Vec<u8> {
        let mut f = vec![0xaa; len];
        f[8..16].copy_from_slice(&0x8_0000u64.to_le_bytes());
        f[16..24].copy_from_slice(&image_size.to_le_bytes());
        f[0x38..0x3c].copy_from_slice(b"ARM\x64");
        f
    }

    #[test]
    fn linux_image_goes_to_its_load_address() {
        let mut mem = vec![0u8; 0x10_0000];
        let f = image(0x100, 0x1000);
        let at = IntermediatePhysAddr::new(BASE + 0x8_0000);
        let entry = load_kernel(
            &mut ram(&mut mem),
            KernelFormat::LinuxImage,
            &BootFile::Bytes(&f),
            Some(at),
        )
        .unwrap();
        assert_eq!(entry, at);
        assert_eq!(&mem[0x8_0000..0x8_0100], &f[..]);
    }

    #[test]
    fn linux_image_checks_magic_and_bss_room() {
        let mut mem = vec![0u8; 0x10_0000];
        let at = Some(IntermediatePhysAddr::new(BASE + 0x8_0000));
        let mut f = image(0x100, 0x1000);
        f[0x38] = 0;
        assert_eq!(
            load_kernel(
                &mut ram(&mut mem),
                KernelFormat::LinuxImage,
                &BootFile::Bytes(&f),
                at
            ),
            Err(LoadError::NotArm64Image)
        );
        let huge = image(0x100, 0x10_0000);
        assert!(matches!(
            load_kernel(
                &mut ram(&mut mem),
                KernelFormat::LinuxImage,
                &BootFile::Bytes(&huge),
                at
            ),
            Err(LoadError::DoesNotFit { .. })
        ));
    }

    #[test]
    fn placement_is_bounds_checked() {
        let mut mem = vec![0u8; 0x1000];
        let mut r = ram(&mut mem);
        assert!(r
            .place(IntermediatePhysAddr::new(BASE + 0xff0), &[1; 16])
            .is_ok());
        assert!(r
            .place(IntermediatePhysAddr::new(BASE + 0xff1), &[1; 16])
            .is_err());
        assert!(r.place(IntermediatePhysAddr::new(BASE - 1), &[1]).is_err());
        assert!(r.zero(IntermediatePhysAddr::new(u64::MAX), 2).is_err());
    }

    fn elf(segments: &[(u64, &[u8], u64)], entry: u64) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 56 * segments.len()];
        f[..4].copy_from_slice(ELF_MAGIC);
        f[4] = 2;
        f[5] = 1;
        f[18..20].copy_from_slice(&183u16.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&u16::try_from(segments.len()).unwrap().to_le_bytes());
        for (i, (paddr, data, memsz)) in segments.iter().enumerate() {
            let off = f.len() as u64;
            let ph = 64 + 56 * i;
            f[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
            f[ph + 8..ph + 16].copy_from_slice(&off.to_le_bytes());
            f[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes());
            f[ph + 32..ph + 40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            f[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes());
            f.extend_from_slice(data);
        }
        f
    }

    #[test]
    fn elf_segments_and_bss() {
        let mut mem = vec![0xffu8; 0x4000];
        let f = elf(
            &[(BASE, b"code", 4), (BASE + 0x2000, b"dd", 0x10)],
            BASE + 2,
        );
        let entry = load_kernel(
            &mut ram(&mut mem),
            KernelFormat::Elf,
            &BootFile::Bytes(&f),
            None,
        )
        .unwrap();
        assert_eq!(entry, IntermediatePhysAddr::new(BASE + 2));
        assert_eq!(&mem[..4], b"code");
        assert_eq!(&mem[0x2000..0x2002], b"dd");
        assert!(mem[0x2002..0x2010].iter().all(|b| *b == 0));
        assert_eq!(mem[0x2010], 0xff);
    }

    #[test]
    fn bad_elves_are_errors() {
        let mut mem = vec![0u8; 0x4000];
        let good = elf(&[(BASE, b"code", 4)], BASE);
        for len in 0..good.len() {
            assert!(load_kernel(
                &mut ram(&mut mem),
                KernelFormat::Elf,
                &BootFile::Bytes(&good[..len]),
                None
            )
            .is_err());
        }
        let outside = elf(&[(0x1000, b"code", 4)], 0x1000);
        assert!(matches!(
            load_kernel(
                &mut ram(&mut mem),
                KernelFormat::Elf,
                &BootFile::Bytes(&outside),
                None
            ),
            Err(LoadError::DoesNotFit { .. })
        ));
        let mut arm32 = good.clone();
        arm32[18] = 40;
        assert_eq!(
            load_kernel(
                &mut ram(&mut mem),
                KernelFormat::Elf,
                &BootFile::Bytes(&arm32),
                None
            ),
            Err(LoadError::BadElf("not an AArch64 executable"))
        );
    }
}
