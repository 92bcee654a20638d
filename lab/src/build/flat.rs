//! ELF → flat binary, as `objcopy -O binary` does it: the file contents of
//! every `PT_LOAD` segment placed at its physical address relative to the
//! lowest one, gaps zero-filled. Segments with no file contents (pure BSS)
//! add nothing; the image clears its own BSS.

use anyhow::{bail, Context, Result};
use object::elf::{FileHeader64, EM_AARCH64, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;

/// Ceiling on the flat image, so a stray segment address cannot make the lab
/// allocate gigabytes.
const MAX_FLAT_BYTES: u64 = 256 << 20;

/// Flattens an AArch64 ELF64 image.
pub fn elf_to_flat(elf: &[u8]) -> Result<Vec<u8>> {
    let header = FileHeader64::<Endianness>::parse(elf).context("not an ELF64 file")?;
    let endian = header.endian().context("bad ELF byte order")?;
    if header.e_machine(endian) != EM_AARCH64 {
        bail!("ELF machine is {}, not AArch64", header.e_machine(endian));
    }
    let segments: Vec<_> = header
        .program_headers(endian, elf)
        .context("bad ELF program headers")?
        .iter()
        .filter(|ph| ph.p_type(endian) == PT_LOAD && ph.p_filesz(endian) > 0)
        .collect();
    let Some(base) = segments.iter().map(|ph| ph.p_paddr(endian)).min() else {
        bail!("ELF has no PT_LOAD segment with contents");
    };
    let mut image = Vec::new();
    for ph in segments {
        let data = ph
            .data(endian, elf)
            .map_err(|()| anyhow::anyhow!("PT_LOAD segment lies outside the file"))?;
        let start = ph.p_paddr(endian) - base;
        let end = start
            .checked_add(data.len() as u64)
            .filter(|end| *end <= MAX_FLAT_BYTES)
            .with_context(|| format!("segments span more than {MAX_FLAT_BYTES} bytes"))?;
        let (start, end) = (usize::try_from(start)?, usize::try_from(end)?);
        if image.len() < end {
            image.resize(end, 0);
        }
        image[start..end].copy_from_slice(data);
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian AArch64 ELF64 with the given (paddr, contents, memsz)
    /// PT_LOAD segments, contents laid out after the headers.
    fn elf(segments: &[(u64, &[u8], u64)], machine: u16) -> Vec<u8> {
        const EHDR: usize = 64;
        const PHDR: usize = 56;
        let mut out = vec![0u8; EHDR + PHDR * segments.len()];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // little endian
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        out[18..20].copy_from_slice(&machine.to_le_bytes());
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
        out[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes());
        out[54..56].copy_from_slice(&(PHDR as u16).to_le_bytes());
        out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, (paddr, data, memsz)) in segments.iter().enumerate() {
            let offset = out.len() as u64;
            out.extend_from_slice(data);
            let ph = &mut out[EHDR + i * PHDR..EHDR + (i + 1) * PHDR];
            ph[..4].copy_from_slice(&PT_LOAD.to_le_bytes());
            ph[8..16].copy_from_slice(&offset.to_le_bytes());
            ph[16..24].copy_from_slice(&(paddr + 0x1000).to_le_bytes()); // vaddr differs
            ph[24..32].copy_from_slice(&paddr.to_le_bytes());
            ph[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
            ph[40..48].copy_from_slice(&memsz.to_le_bytes());
        }
        out
    }

    #[test]
    fn places_segments_by_paddr_and_zero_fills_gaps() {
        let input = elf(
            &[
                (0x4008_0010, b"cd", 2),
                (0x4008_0000, b"ab", 2),
                (0x4008_0020, b"", 0x1000), // BSS only
            ],
            EM_AARCH64,
        );
        let flat = elf_to_flat(&input).unwrap();
        let mut expected = vec![0u8; 0x12];
        expected[..2].copy_from_slice(b"ab");
        expected[0x10..].copy_from_slice(b"cd");
        assert_eq!(flat, expected);
    }

    #[test]
    fn rejects_other_machines_and_empty_images() {
        let x86 = elf(&[(0, b"ab", 2)], object::elf::EM_X86_64);
        assert!(format!("{:#}", elf_to_flat(&x86).unwrap_err()).contains("not AArch64"));
        let empty = elf(&[(0, b"", 16)], EM_AARCH64);
        assert!(format!("{:#}", elf_to_flat(&empty).unwrap_err()).contains("no PT_LOAD"));
        assert!(elf_to_flat(b"not an elf").is_err());
    }

    #[test]
    fn refuses_absurd_spans() {
        let far = elf(&[(0, b"a", 1), (1 << 40, b"b", 1)], EM_AARCH64);
        assert!(format!("{:#}", elf_to_flat(&far).unwrap_err()).contains("span more than"));
    }
}
