//! Emulated devices: plain logic, host-tested, no `unsafe`.
//!
//! A device sees only offsets within its own MMIO window and typed accesses
//! (`MmioDevice`); devices that touch guest RAM (virtio) do it through
//! `GuestMemory`, whose implementations check every guest-supplied address.
//! The exit handlers own the mapping from IPA to device and turn an
//! `MmioError` into an external abort injected into the guest.
//!
//! - `gic`: GICv3 distributor and per-vCPU redistributors (`Vgic`);
//! - `pl011`: the console UART;
//! - `pl031`: the real-time clock;
//! - `memory`: the guest-memory trait;
//! - `virtio`: the virtio-mmio transport, split virtqueues, empty slots,
//!   the block and network devices;
//! - `table`: a VM's devices by window ([`VmDevice`]), built from its
//!   manifest entry.
#![forbid(unsafe_code)]

pub mod gic;
pub mod memory;
pub mod pflash;
pub mod pl011;
pub mod pl031;
pub mod table;
pub mod virtio;

#[cfg(test)]
mod robustness;

use core::fmt;

/// Width of one MMIO access, as the data-abort syndrome gives it (SAS).
/// Each variant's value is its log2 size, so that sizes and masks are
/// shifts, not table lookups: every MMIO exit computes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum AccessWidth {
    Byte = 0,
    Half = 1,
    Word = 2,
    Double = 3,
}

impl AccessWidth {
    /// The width of an access of `bytes` bytes (1, 2, 4 or 8).
    pub const fn from_bytes(bytes: u64) -> Option<Self> {
        match bytes {
            1 => Some(AccessWidth::Byte),
            2 => Some(AccessWidth::Half),
            4 => Some(AccessWidth::Word),
            8 => Some(AccessWidth::Double),
            _ => None,
        }
    }

    /// From the 2-bit size field of a syndrome or load/store encoding
    /// (0 = byte .. 3 = doubleword).
    pub const fn from_log2(size: u8) -> Self {
        match size & 3 {
            0 => AccessWidth::Byte,
            1 => AccessWidth::Half,
            2 => AccessWidth::Word,
            _ => AccessWidth::Double,
        }
    }

    pub const fn bytes(self) -> u64 {
        1 << self as u8
    }

    pub const fn bits(self) -> u32 {
        (self.bytes() * 8) as u32
    }

    /// The value bits an access of this width carries.
    pub const fn mask(self) -> u64 {
        u64::MAX >> (64 - self.bits())
    }
}

/// Why a device refused an access. The exit handler injects a synchronous
/// external abort for every variant; reserved registers inside a window are
/// RAZ/WI where the device's architecture says so and never get here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// The offset lies outside the device's window.
    OutOfWindow { offset: u64 },
    /// The register exists but not at this width or alignment.
    BadAccess { offset: u64, width: AccessWidth },
    /// No register at this offset and the device does not treat it as RAZ/WI.
    Unhandled { offset: u64 },
}

impl fmt::Display for MmioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MmioError::OutOfWindow { offset } => write!(f, "offset {offset:#x} outside the window"),
            MmioError::BadAccess { offset, width } => {
                write!(
                    f,
                    "{}-byte access at {offset:#x} not supported",
                    width.bytes()
                )
            }
            MmioError::Unhandled { offset } => write!(f, "no register at {offset:#x}"),
        }
    }
}

/// A memory-mapped device model. `offset` is relative to the start of the
/// device's window; `read` takes `&mut self` because reads can have side
/// effects (a UART's data register pops its FIFO).
pub trait MmioDevice {
    /// Size of the window in bytes.
    fn size(&self) -> u64;

    /// Reads `width` bytes at `offset`; the value is zero-extended.
    fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError>;

    /// Writes the low `width` bytes of `value` at `offset`.
    fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Result<(), MmioError>;
}

/// A device in a VM's device table: its registers, plus what the run loop
/// asks of every device between guest entries.
pub trait VmDevice: MmioDevice + Send {
    /// Whether its interrupt line is asserted.
    fn interrupt_pending(&mut self) -> bool;

    /// Does the work the guest's accesses or the backend started (virtio
    /// queues) against the VM's RAM, a bounded amount per call.
    fn service(&mut self, _mem: &mut dyn memory::GuestMemory) {}

    /// Whether [`Self::service`] has work that no guest access will start:
    /// input from the backend, a round left over at its budget.
    fn has_work(&self) -> bool {
        false
    }

    /// The VMs (a mask of manifest indices) the device delivered to since
    /// the last call, whose CPUs must be woken.
    fn take_wakeups(&mut self) -> u64 {
        0
    }

    /// What the device counted (frames, drops), for the line the VM
    /// prints when it stops; `None` when it counts nothing.
    fn report(&self) -> Option<alloc::string::String> {
        None
    }

    /// Counter value at which its interrupt line can change by itself
    /// (an RTC alarm), for the run loop to set a timer.
    fn next_event(&self) -> Option<u64> {
        None
    }

    /// Back to its power-on state (the VM was reset). What it stores
    /// (a disk's contents) stays.
    fn reset(&mut self);
}

/// Checks that `[offset, offset + width)` lies in a window of `size` bytes
/// and is naturally aligned; every model starts its accesses with it.
///
/// An aligned access starting inside a window whose size is a multiple of
/// its width cannot cross the end: for a model's constant size the test is
/// then alignment alone where the caller knows the offset is inside (the
/// exit fast path, which found the window).
#[inline(always)]
pub fn check_access(offset: u64, width: AccessWidth, size: u64) -> Result<(), MmioError> {
    let bytes = width.bytes();
    if offset.is_multiple_of(bytes) && offset < size && size.is_multiple_of(bytes) {
        return Ok(());
    }
    let end = offset
        .checked_add(width.bytes())
        .ok_or(MmioError::OutOfWindow { offset })?;
    if end > size {
        return Err(MmioError::OutOfWindow { offset });
    }
    if !offset.is_multiple_of(width.bytes()) {
        return Err(MmioError::BadAccess { offset, width });
    }
    Ok(())
}

/// The PrimeCell component ID (PCellID0..3 = 0x0D, 0xF0, 0x05, 0xB1) every
/// AMBA peripheral reports at 0xFF0..0xFFC; Linux's AMBA bus checks it.
pub const PRIMECELL_CELL_ID: [u8; 4] = [0x0D, 0xF0, 0x05, 0xB1];

/// AMBA identification registers: PeriphID0..3, then PCellID0..3, one
/// byte per word.
const PERIPH_ID: core::ops::RangeInclusive<u64> = 0xFE0..=0xFEC;
const PCELL_ID: core::ops::RangeInclusive<u64> = 0xFF0..=0xFFC;

/// The byte of an AMBA identification block a word read at `offset`
/// returns, if it is one.
pub(crate) fn amba_id_byte(offset: u64, periph_id: [u8; 4]) -> Option<u8> {
    if !offset.is_multiple_of(4) {
        return None;
    }
    if PERIPH_ID.contains(&offset) {
        Some(periph_id[((offset - PERIPH_ID.start()) / 4) as usize])
    } else if PCELL_ID.contains(&offset) {
        Some(PRIMECELL_CELL_ID[((offset - PCELL_ID.start()) / 4) as usize])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths() {
        assert_eq!(AccessWidth::from_bytes(4), Some(AccessWidth::Word));
        assert_eq!(AccessWidth::from_bytes(3), None);
        assert_eq!(AccessWidth::from_log2(1), AccessWidth::Half);
        assert_eq!(AccessWidth::Half.mask(), 0xFFFF);
        assert_eq!(AccessWidth::Double.mask(), u64::MAX);
    }

    #[test]
    fn access_checks() {
        assert_eq!(check_access(0xFFC, AccessWidth::Word, 0x1000), Ok(()));
        assert_eq!(
            check_access(0xFFE, AccessWidth::Word, 0x1000),
            Err(MmioError::OutOfWindow { offset: 0xFFE })
        );
        assert_eq!(
            check_access(0x2, AccessWidth::Word, 0x1000),
            Err(MmioError::BadAccess {
                offset: 0x2,
                width: AccessWidth::Word
            })
        );
        assert_eq!(
            check_access(u64::MAX, AccessWidth::Byte, u64::MAX),
            Err(MmioError::OutOfWindow { offset: u64::MAX })
        );
        // A window that is not a multiple of the width: an aligned access
        // inside it may still cross its end.
        assert_eq!(
            check_access(0x4, AccessWidth::Word, 0x6),
            Err(MmioError::OutOfWindow { offset: 0x4 })
        );
        assert_eq!(check_access(0x4, AccessWidth::Half, 0x6), Ok(()));
    }

    #[test]
    fn amba_ids() {
        let id = [0x11, 0x10, 0x14, 0x00];
        let bytes: Vec<_> = (0..8).map(|i| amba_id_byte(0xFE0 + 4 * i, id)).collect();
        assert_eq!(
            bytes,
            [0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1]
                .map(Some)
                .to_vec()
        );
        assert_eq!(amba_id_byte(0xFE2, id), None);
        assert_eq!(amba_id_byte(0x000, id), None);
    }
}
