//! VMSAv8-64 descriptor encodings (4 KiB granule) for the two translation
//! regimes the hypervisor builds: its own EL2 stage 1 and the guests'
//! stage 2. Pure bit manipulation, host-tested through `mm::pagetable`.
#![forbid(unsafe_code)]

use crate::addr::PhysAddr;
use crate::mm::pagetable::{Descriptor, DescriptorFormat, MapAttrs, MemoryKind};

const VALID: u64 = 1 << 0;
/// Bit 1: table (levels 0-2) or page (level 3); clear for a block.
const TABLE_OR_PAGE: u64 = 1 << 1;
const OUTPUT_MASK: u64 = 0x0000_ffff_ffff_f000;
const AF: u64 = 1 << 10;
const SH_INNER: u64 = 0b11 << 8;
/// Stage 1 at EL2: execute-never (bit 54).
const S1_XN: u64 = 1 << 54;
/// Stage 1 AP[2] (bit 7): read-only.
const S1_AP_RO: u64 = 1 << 7;
/// Stage 1 AP[1] (bit 6): RES1 in a single-privilege regime.
const S1_AP_EL0: u64 = 1 << 6;
/// Stage 2 S2AP (bits 7:6): read (bit 6) and write (bit 7).
const S2AP_R: u64 = 1 << 6;
const S2AP_W: u64 = 1 << 7;
/// Stage 2 XN[1:0] (bits 54:53) = 0b10: not executable at EL1 or EL0.
const S2_XN: u64 = 0b10 << 53;

/// MAIR_EL2 index of Device-nGnRE.
pub const MAIR_IDX_DEVICE: u64 = 0;
/// MAIR_EL2 index of Normal write-back read/write-allocate.
pub const MAIR_IDX_NORMAL: u64 = 1;
/// MAIR_EL2 value matching the two indices above.
pub const MAIR_EL2_VALUE: u64 = 0x04 | (0xff << 8);

/// Stage 2 MemAttr (bits 5:2), direct encoding: Device-nGnRE.
const S2_MEMATTR_DEVICE_NGNRE: u64 = 0b0001 << 2;
/// Stage 2 MemAttr: Normal, outer and inner write-back.
const S2_MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;

fn leaf_type(level: usize) -> u64 {
    if level == 3 {
        VALID | TABLE_OR_PAGE
    } else {
        VALID
    }
}

fn decode(raw: u64, level: usize) -> Descriptor {
    let out = PhysAddr::new(raw & OUTPUT_MASK);
    match (raw & VALID != 0, raw & TABLE_OR_PAGE != 0, level) {
        (false, _, _) => Descriptor::Invalid,
        (true, true, 3) => Descriptor::Leaf(out),
        (true, true, _) => Descriptor::Table(out),
        (true, false, 3) => Descriptor::Invalid,
        (true, false, _) => Descriptor::Leaf(out),
    }
}

/// The hypervisor's own EL2 (non-VHE) stage-1 tables.
pub enum El2Stage1 {}

impl DescriptorFormat for El2Stage1 {
    fn table(next: PhysAddr) -> u64 {
        (next.as_u64() & OUTPUT_MASK) | VALID | TABLE_OR_PAGE
    }

    fn leaf(output: PhysAddr, level: usize, attrs: MapAttrs) -> u64 {
        let mut d = (output.as_u64() & OUTPUT_MASK) | leaf_type(level) | AF | S1_AP_EL0;
        d |= match attrs.kind {
            MemoryKind::Normal => (MAIR_IDX_NORMAL << 2) | SH_INNER,
            MemoryKind::Device => MAIR_IDX_DEVICE << 2,
        };
        if !attrs.writable {
            d |= S1_AP_RO;
        }
        if !attrs.executable {
            d |= S1_XN;
        }
        d
    }

    fn decode(raw: u64, level: usize) -> Descriptor {
        decode(raw, level)
    }
}

/// A guest's stage-2 tables.
pub enum Stage2 {}

impl DescriptorFormat for Stage2 {
    fn table(next: PhysAddr) -> u64 {
        (next.as_u64() & OUTPUT_MASK) | VALID | TABLE_OR_PAGE
    }

    fn leaf(output: PhysAddr, level: usize, attrs: MapAttrs) -> u64 {
        let mut d = (output.as_u64() & OUTPUT_MASK) | leaf_type(level) | AF | S2AP_R;
        d |= match attrs.kind {
            MemoryKind::Normal => S2_MEMATTR_NORMAL_WB | SH_INNER,
            MemoryKind::Device => S2_MEMATTR_DEVICE_NGNRE,
        };
        if attrs.writable {
            d |= S2AP_W;
        }
        if !attrs.executable {
            d |= S2_XN;
        }
        d
    }

    fn decode(raw: u64, level: usize) -> Descriptor {
        decode(raw, level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage2_ram_block_encoding() {
        let d = Stage2::leaf(PhysAddr::new(0x4820_0000), 2, MapAttrs::RAM);
        // Block, AF, inner shareable, RW, normal WB, executable.
        assert_eq!(
            d,
            0x4820_0000 | 0b01 | (1 << 10) | (0b11 << 8) | (0b11 << 6) | (0b1111 << 2)
        );
        assert_eq!(
            Stage2::decode(d, 2),
            Descriptor::Leaf(PhysAddr::new(0x4820_0000))
        );
    }

    #[test]
    fn el2_device_page_encoding() {
        let d = El2Stage1::leaf(PhysAddr::new(0x0900_0000), 3, MapAttrs::DEVICE);
        assert_eq!(d, 0x0900_0000 | 0b11 | (1 << 10) | (1 << 6) | (1 << 54));
        assert_eq!(
            El2Stage1::decode(d, 3),
            Descriptor::Leaf(PhysAddr::new(0x0900_0000))
        );
        assert_eq!(
            El2Stage1::decode(d, 2),
            Descriptor::Table(PhysAddr::new(0x0900_0000))
        );
        assert_eq!(El2Stage1::decode(0, 1), Descriptor::Invalid);
        // A block encoding is reserved at level 3.
        assert_eq!(El2Stage1::decode(0x1, 3), Descriptor::Invalid);
    }
}
