//! GICv3 redistributors (GICR_*), one per vCPU, each 128 KiB: the RD_base
//! frame (control, TYPER with the vCPU's affinity and the Last bit, the
//! WAKER handshake, a register only: as on QEMU, it does not gate
//! delivery) and the SGI_base frame (the vCPU's SGIs and PPIs).
//! No LPIs. Register map: GICv3 architecture spec (IHI 0069), 12.10-12.11.

use super::irq::{self, BitRegister, IrqState};
use super::{
    byte_or_word, id_register, rebase, word_only, Affinity, IIDR, PIDR0_REDISTRIBUTOR, PRIVATE_IRQS,
};
use crate::devices::{check_access, AccessWidth, MmioError};

/// Size of one vCPU's redistributor (RD_base + SGI_base).
pub const GICR_FRAME_SIZE: u64 = 0x2_0000;
/// Offset of the SGI_base frame.
const SGI_BASE: u64 = 0x1_0000;

/// RD_base registers.
mod rd {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    /// GICR_TYPER, 64 bits.
    pub const TYPER: core::ops::RangeInclusive<u64> = 0x0008..=0x000F;
    pub const WAKER: u64 = 0x0014;
    /// PROPBASER (0x70) and PENDBASER (0x78), 64 bits each: RAZ/WI
    /// without LPIs.
    pub const LPI_BASES: core::ops::RangeInclusive<u64> = 0x0070..=0x007F;
}

/// SGI_base registers, relative to SGI_BASE.
mod sgi {
    pub const BANKS: core::ops::Range<u64> = 0x0080..0x0400;
    pub const IPRIORITYR: core::ops::Range<u64> = 0x0400..0x0420;
    pub const ICFGR0: u64 = 0x0C00;
    pub const ICFGR1: u64 = 0x0C04;
}

/// GICR_TYPER.Last: the last redistributor of the region.
const TYPER_LAST: u64 = 1 << 4;
const TYPER_PROCESSOR_NUMBER_SHIFT: u32 = 8;
const TYPER_AFFINITY_SHIFT: u32 = 32;
/// GICR_WAKER bits.
pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
/// SGIs are edge-triggered, read-only in ICFGR0.
const ICFGR0_SGIS: u32 = 0xAAAA_AAAA;

/// One vCPU's redistributor.
pub struct Redistributor {
    index: u16,
    affinity: Affinity,
    last: bool,
    processor_sleep: bool,
    /// INTIDs 0..16 (SGIs) and 16..32 (PPIs).
    pub(super) private: [IrqState; PRIVATE_IRQS],
    /// Bit n set: `private[n].enabled`. Only GICR_ISENABLER0/ICENABLER0
    /// writes change an enable (`write_sgi`), and they refresh this, so
    /// the search for a deliverable interrupt, on every interrupt exit,
    /// looks at the enabled ones only.
    enabled: u32,
}

impl Redistributor {
    pub(super) fn new(index: u16, affinity: Affinity, last: bool) -> Self {
        let mut private = [IrqState::default(); PRIVATE_IRQS];
        for sgi in &mut private[..16] {
            sgi.edge = true;
        }
        Redistributor {
            index,
            affinity,
            last,
            processor_sleep: true,
            enabled: enabled_mask(&private),
            private,
        }
    }

    /// The enabled SGIs and PPIs, bit n for INTID n.
    pub(super) fn enabled_private(&self) -> u32 {
        self.enabled
    }

    fn typer(&self) -> u64 {
        (u64::from(self.affinity.packed()) << TYPER_AFFINITY_SHIFT)
            | (u64::from(self.index) << TYPER_PROCESSOR_NUMBER_SHIFT)
            | if self.last { TYPER_LAST } else { 0 }
    }

    fn waker(&self) -> u32 {
        if self.processor_sleep {
            WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP
        } else {
            0
        }
    }

    /// A read at `offset` within this vCPU's 128 KiB.
    pub fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        check_access(offset, width, GICR_FRAME_SIZE)?;
        if offset >= SGI_BASE {
            return self
                .read_sgi(offset - SGI_BASE, width)
                .map_err(|e| rebase(e, SGI_BASE));
        }
        match offset {
            _ if rd::TYPER.contains(&offset) => {
                half_or_double(offset, width, self.typer(), *rd::TYPER.start())
            }
            _ if rd::LPI_BASES.contains(&offset) => half_or_double(offset, width, 0, offset & !7),
            rd::CTLR | rd::IIDR | rd::WAKER => {
                word_only(offset, width)?;
                Ok(u64::from(match offset {
                    rd::IIDR => IIDR,
                    rd::WAKER => self.waker(),
                    // EnableLPIs, RWP and UWP all 0: no LPIs, writes take
                    // effect at once.
                    _ => 0,
                }))
            }
            _ => match id_register(offset, width, PIDR0_REDISTRIBUTOR)? {
                Some(value) => Ok(value),
                None => {
                    word_only(offset, width)?;
                    Ok(0)
                }
            },
        }
    }

    pub fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Result<(), MmioError> {
        check_access(offset, width, GICR_FRAME_SIZE)?;
        if offset >= SGI_BASE {
            return self
                .write_sgi(offset - SGI_BASE, width, value)
                .map_err(|e| rebase(e, SGI_BASE));
        }
        match offset {
            _ if rd::TYPER.contains(&offset) || rd::LPI_BASES.contains(&offset) => {
                half_or_double(offset, width, 0, offset & !7)?;
            }
            rd::WAKER => {
                word_only(offset, width)?;
                // ChildrenAsleep follows ProcessorSleep at once.
                self.processor_sleep = value as u32 & WAKER_PROCESSOR_SLEEP != 0;
            }
            _ => {
                if id_register(offset, width, PIDR0_REDISTRIBUTOR)?.is_none() {
                    word_only(offset, width)?;
                }
            }
        }
        Ok(())
    }

    fn read_sgi(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        if sgi::IPRIORITYR.contains(&offset) {
            byte_or_word(offset, width)?;
            let first = (offset - sgi::IPRIORITYR.start) as usize;
            return Ok(irq::read_priorities(
                &self.private[first..first + width.bytes() as usize],
            ));
        }
        if sgi::BANKS.contains(&offset) && width == AccessWidth::Byte {
            return Err(MmioError::BadAccess { offset, width });
        }
        word_only(offset, width)?;
        Ok(u64::from(match offset {
            sgi::ICFGR0 => ICFGR0_SGIS,
            sgi::ICFGR1 => irq::read_config(&self.private[16..]),
            _ if sgi::BANKS.contains(&offset) => match BitRegister::decode(offset) {
                Some((register, 0)) => register.read(&self.private),
                _ => 0,
            },
            _ => 0,
        }))
    }

    fn write_sgi(&mut self, offset: u64, width: AccessWidth, value: u64) -> Result<(), MmioError> {
        if sgi::IPRIORITYR.contains(&offset) {
            byte_or_word(offset, width)?;
            let first = (offset - sgi::IPRIORITYR.start) as usize;
            irq::write_priorities(
                &mut self.private[first..first + width.bytes() as usize],
                value,
            );
            return Ok(());
        }
        word_only(offset, width)?;
        match offset {
            sgi::ICFGR1 => irq::write_config(&mut self.private[16..], value as u32),
            _ if sgi::BANKS.contains(&offset) => {
                if let Some((register, 0)) = BitRegister::decode(offset) {
                    register.write(&mut self.private, value as u32);
                    self.enabled = enabled_mask(&self.private);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Bit n set: `private[n]` is enabled.
fn enabled_mask(private: &[IrqState; PRIVATE_IRQS]) -> u32 {
    (0..PRIVATE_IRQS)
        .filter(|n| private[*n].enabled)
        .fold(0, |mask, n| mask | 1 << n)
}

/// A 64-bit register read whole or as two 32-bit halves.
fn half_or_double(
    offset: u64,
    width: AccessWidth,
    value: u64,
    register: u64,
) -> Result<u64, MmioError> {
    match width {
        AccessWidth::Double | AccessWidth::Word => {
            Ok((value >> ((offset - register) * 8)) & width.mask())
        }
        _ => Err(MmioError::BadAccess { offset, width }),
    }
}
