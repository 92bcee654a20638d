//! The GICv3 distributor (GICD_*), as a guest with affinity routing sees
//! it: a single security state (GICD_CTLR.DS = 1, as KVM presents it), ARE
//! fixed to 1, so SGIs and PPIs live in the redistributors and SPIs are
//! routed by `GICD_IROUTER<n>`. Register map: GICv3 architecture spec
//! (IHI 0069), 12.9.

use alloc::vec::Vec;

use super::irq::{self, BitRegister, IrqState};
use super::{byte_or_word, id_register, word_only, Affinity, FIRST_SPI, IIDR, PIDR0_DISTRIBUTOR};
use crate::devices::{check_access, AccessWidth, MmioError};

/// Register offsets.
mod reg {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0004;
    pub const IIDR: u64 = 0x0008;
    pub const BANKS: core::ops::Range<u64> = 0x0080..0x0400;
    pub const IPRIORITYR: core::ops::Range<u64> = 0x0400..0x0800;
    pub const ITARGETSR: core::ops::Range<u64> = 0x0800..0x0C00;
    pub const ICFGR: core::ops::Range<u64> = 0x0C00..0x0D00;
    pub const SPENDSGIR: core::ops::Range<u64> = 0x0F10..0x0F30;
    pub const IROUTER: core::ops::Range<u64> = 0x6000..0x8000;
}

/// GICD_CTLR bits (DS = 1 layout).
pub const CTLR_ENABLE_GRP0: u32 = 1 << 0;
pub const CTLR_ENABLE_GRP1: u32 = 1 << 1;
const CTLR_ARE: u32 = 1 << 4;
const CTLR_DS: u32 = 1 << 6;

/// GICD_TYPER fields.
const TYPER_IDBITS_SHIFT: u32 = 19;
/// INTIDs are below 1024: IDbits = 10 - 1.
const TYPER_IDBITS: u32 = 9;
const TYPER_CPUNUMBER_SHIFT: u32 = 5;
/// No1N: 1-of-N SPI routing is not supported, IROUTER.IRM is RAZ/WI.
const TYPER_NO1N: u32 = 1 << 25;

/// GICD_IROUTER<n>: Aff3 [39:32], Aff2..Aff0 [23:0] (IRM [31] is RAZ/WI).
const IROUTER_MASK: u64 = 0xFF_00FF_FFFF;

/// The distributor's window.
pub const GICD_SIZE: u64 = 0x1_0000;

/// The emulated distributor: global enables and the SPIs.
pub struct Distributor {
    ctlr: u32,
    /// SPI INTID `FIRST_SPI + i` is `spis[i]`.
    spis: Vec<IrqState>,
    /// GICD_IROUTER of each SPI.
    routes: Vec<u64>,
    /// GICD_TYPER, fixed by the SPI and vCPU counts: computed once, read
    /// by every guest that probes the GIC.
    typer: u32,
}

/// GICD_TYPER of a distributor with `spis` SPIs and `vcpus` vCPUs.
fn typer(spis: usize, vcpus: usize) -> u32 {
    let it_lines = (spis as u32 + FIRST_SPI) / 32 - 1;
    let cpus = (vcpus.saturating_sub(1)).min(7) as u32;
    it_lines | (cpus << TYPER_CPUNUMBER_SHIFT) | (TYPER_IDBITS << TYPER_IDBITS_SHIFT) | TYPER_NO1N
}

/// The [`Distributor::group_enables`] bit of Group 1 (`group1`) or Group 0.
pub fn group_enable_bit(group1: bool) -> u32 {
    if group1 {
        CTLR_ENABLE_GRP1
    } else {
        CTLR_ENABLE_GRP0
    }
}

impl Distributor {
    /// `spis` is a multiple of 32 (checked by `Vgic::new`).
    pub(super) fn new(spis: usize, vcpus: usize) -> Self {
        Distributor {
            ctlr: 0,
            spis: alloc::vec![IrqState::default(); spis],
            routes: alloc::vec![0; spis],
            typer: typer(spis, vcpus),
        }
    }

    /// GICD_CTLR's EnableGrp0 and EnableGrp1 bits: whether interrupts of
    /// each group can be forwarded at all ([`group_enable_bit`]).
    pub fn group_enables(&self) -> u32 {
        self.ctlr & (CTLR_ENABLE_GRP0 | CTLR_ENABLE_GRP1)
    }

    pub(super) fn spi(&self, intid: u32) -> Option<&IrqState> {
        self.spis
            .get(usize::try_from(intid.checked_sub(FIRST_SPI)?).ok()?)
    }

    pub(super) fn spi_mut(&mut self, intid: u32) -> Option<&mut IrqState> {
        self.spis
            .get_mut(usize::try_from(intid.checked_sub(FIRST_SPI)?).ok()?)
    }

    /// Whether SPI `intid` is routed to the vCPU with `affinity`.
    pub(super) fn routed_to(&self, intid: u32, affinity: Affinity) -> bool {
        let index = intid
            .checked_sub(FIRST_SPI)
            .and_then(|i| usize::try_from(i).ok());
        index
            .and_then(|i| self.routes.get(i))
            .is_some_and(|route| *route == affinity.irouter())
    }

    /// SPI INTIDs with their state, for the pending scan.
    pub(super) fn spis(&self) -> impl Iterator<Item = (u32, &IrqState)> {
        (FIRST_SPI..).zip(self.spis.iter())
    }

    /// The SPIs a register word covering INTIDs `first..first + count`
    /// touches; SGIs/PPIs (INTIDs < 32) and INTIDs past the last SPI are
    /// absent (RAZ/WI).
    fn spi_slice(&mut self, first: usize, count: usize) -> &mut [IrqState] {
        let first_spi = FIRST_SPI as usize;
        if first < first_spi {
            return &mut [];
        }
        let start = (first - first_spi).min(self.spis.len());
        let end = (start + count).min(self.spis.len());
        &mut self.spis[start..end]
    }

    /// The reads that gather per-SPI state into a word (the bit banks,
    /// IPRIORITYR, ICFGR). Out of line: the compiler vectorises them, and
    /// the FP/SIMD registers they need would otherwise be saved in the
    /// frame of every `read`, GICD_CTLR's and GICD_TYPER's too, which an
    /// exit's fast path serves without touching FP/SIMD (the guest's stays
    /// live in the registers, see `arch::aarch64::hw::guest`).
    #[inline(never)]
    fn read_spi_bits(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        match offset {
            _ if reg::BANKS.contains(&offset) => {
                word_only(offset, width)?;
                let (register, word) =
                    BitRegister::decode(offset).ok_or(MmioError::Unhandled { offset })?;
                Ok(u64::from(register.read(self.spi_slice(word * 32, 32))))
            }
            _ if reg::IPRIORITYR.contains(&offset) => {
                byte_or_word(offset, width)?;
                let first = (offset - reg::IPRIORITYR.start) as usize;
                Ok(irq::read_priorities(
                    self.spi_slice(first, width.bytes() as usize),
                ))
            }
            _ if reg::ICFGR.contains(&offset) => {
                word_only(offset, width)?;
                let first = ((offset - reg::ICFGR.start) / 4 * 16) as usize;
                Ok(u64::from(irq::read_config(self.spi_slice(first, 16))))
            }
            _ => Err(MmioError::Unhandled { offset }),
        }
    }

    #[inline(always)]
    pub fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        check_access(offset, width, GICD_SIZE)?;
        match offset {
            reg::CTLR | reg::TYPER | reg::IIDR => {
                word_only(offset, width)?;
                Ok(u64::from(match offset {
                    reg::CTLR => self.ctlr | CTLR_ARE | CTLR_DS,
                    reg::TYPER => self.typer,
                    _ => IIDR,
                }))
            }
            _ if reg::BANKS.contains(&offset) || reg::IPRIORITYR.contains(&offset) => {
                self.read_spi_bits(offset, width)
            }
            _ if reg::ITARGETSR.contains(&offset) || reg::SPENDSGIR.contains(&offset) => {
                byte_or_word(offset, width)?;
                Ok(0)
            }
            _ if reg::ICFGR.contains(&offset) => self.read_spi_bits(offset, width),
            _ if reg::IROUTER.contains(&offset) => {
                let (index, shift) = self.irouter_index(offset, width)?;
                Ok(index.map_or(0, |i| (self.routes[i] >> shift) & width.mask()))
            }
            _ => {
                if let Some(value) = id_register(offset, width, PIDR0_DISTRIBUTOR)? {
                    return Ok(value);
                }
                word_only(offset, width)?;
                Ok(0)
            }
        }
    }

    pub fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Result<(), MmioError> {
        check_access(offset, width, GICD_SIZE)?;
        match offset {
            reg::CTLR => {
                word_only(offset, width)?;
                self.ctlr = value as u32 & (CTLR_ENABLE_GRP0 | CTLR_ENABLE_GRP1);
            }
            _ if reg::BANKS.contains(&offset) => {
                word_only(offset, width)?;
                let (register, word) =
                    BitRegister::decode(offset).ok_or(MmioError::Unhandled { offset })?;
                register.write(self.spi_slice(word * 32, 32), value as u32);
            }
            _ if reg::IPRIORITYR.contains(&offset) => {
                byte_or_word(offset, width)?;
                let first = (offset - reg::IPRIORITYR.start) as usize;
                irq::write_priorities(self.spi_slice(first, width.bytes() as usize), value);
            }
            _ if reg::ICFGR.contains(&offset) => {
                word_only(offset, width)?;
                let first = ((offset - reg::ICFGR.start) / 4 * 16) as usize;
                irq::write_config(self.spi_slice(first, 16), value as u32);
            }
            _ if reg::IROUTER.contains(&offset) => {
                let (index, shift) = self.irouter_index(offset, width)?;
                if let Some(i) = index {
                    let field = width.mask() << shift;
                    let route = (self.routes[i] & !field) | ((value << shift) & field);
                    self.routes[i] = route & IROUTER_MASK;
                }
            }
            _ if reg::ITARGETSR.contains(&offset) || reg::SPENDSGIR.contains(&offset) => {
                byte_or_word(offset, width)?;
            }
            _ => {
                if id_register(offset, width, PIDR0_DISTRIBUTOR)?.is_none() {
                    word_only(offset, width)?;
                }
            }
        }
        Ok(())
    }

    /// The SPI an IROUTER access addresses (None: RAZ/WI) and the shift of
    /// the accessed half for 32-bit accesses.
    fn irouter_index(
        &self,
        offset: u64,
        width: AccessWidth,
    ) -> Result<(Option<usize>, u32), MmioError> {
        if width != AccessWidth::Word && width != AccessWidth::Double {
            return Err(MmioError::BadAccess { offset, width });
        }
        let intid = (offset - reg::IROUTER.start) / 8;
        let shift = ((offset % 8) * 8) as u32;
        let index = intid
            .checked_sub(u64::from(FIRST_SPI))
            .map(|i| i as usize)
            .filter(|i| *i < self.spis.len());
        Ok((index, shift))
    }
}
