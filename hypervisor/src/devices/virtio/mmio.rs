//! The virtio-mmio transport (virtio 1.2, 4.2.2, "modern" version 2).
//!
//! `EmptySlot` is a slot without a device: it reads MagicValue, Version 2
//! and DeviceID 0 as QEMU's unused slots do, so Linux's `virtio_mmio`
//! probes every slot the guest DT lists and skips the empty ones quietly
//! (a missing slot would be an external abort in the guest instead).

use crate::devices::{check_access, AccessWidth, MmioDevice, MmioError};

/// Size of one slot on QEMU's virt board.
pub const SLOT_SIZE: u64 = 0x200;

/// Register offsets.
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00C;
    /// Device-specific configuration space starts here.
    pub const CONFIG: u64 = 0x100;
}

/// "virt", little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// The modern (non-legacy) transport.
pub const VERSION_MODERN: u32 = 2;
/// DeviceID 0: no device behind this slot.
pub const DEVICE_ID_NONE: u32 = 0;
/// VendorID QEMU reports ("QEMU").
pub const VENDOR_QEMU: u32 = 0x554D_4551;

/// A virtio-mmio slot with no device: identification registers, everything
/// else reads as zero and ignores writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmptySlot;

impl EmptySlot {
    fn check(offset: u64, width: AccessWidth) -> Result<(), MmioError> {
        check_access(offset, width, SLOT_SIZE)?;
        // The driver must use 32-bit accesses below the configuration space
        // (virtio 1.2, 4.2.2.2).
        if offset < reg::CONFIG && width != AccessWidth::Word {
            return Err(MmioError::BadAccess { offset, width });
        }
        Ok(())
    }
}

impl MmioDevice for EmptySlot {
    fn size(&self) -> u64 {
        SLOT_SIZE
    }

    fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        Self::check(offset, width)?;
        Ok(u64::from(match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION_MODERN,
            reg::DEVICE_ID => DEVICE_ID_NONE,
            reg::VENDOR_ID => VENDOR_QEMU,
            _ => 0,
        }))
    }

    fn write(&mut self, offset: u64, width: AccessWidth, _value: u64) -> Result<(), MmioError> {
        Self::check(offset, width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_slot_identifies_as_no_device() {
        let mut slot = EmptySlot;
        let read = |slot: &mut EmptySlot, offset| slot.read(offset, AccessWidth::Word).unwrap();
        assert_eq!(
            read(&mut slot, reg::MAGIC_VALUE).to_le_bytes()[..4],
            *b"virt"
        );
        assert_eq!(read(&mut slot, reg::VERSION), 2);
        assert_eq!(read(&mut slot, reg::DEVICE_ID), 0);
        assert_eq!(read(&mut slot, reg::VENDOR_ID).to_le_bytes()[..4], *b"QEMU");
        slot.write(0x070, AccessWidth::Word, 0xF).unwrap();
        assert_eq!(read(&mut slot, 0x070), 0, "Status stays 0");
        assert_eq!(
            slot.read(0x100, AccessWidth::Byte),
            Ok(0),
            "config space takes any width"
        );
    }

    #[test]
    fn narrow_register_accesses_and_overruns_are_errors() {
        let mut slot = EmptySlot;
        assert_eq!(
            slot.read(reg::VERSION, AccessWidth::Half),
            Err(MmioError::BadAccess {
                offset: 4,
                width: AccessWidth::Half
            })
        );
        assert_eq!(
            slot.read(SLOT_SIZE, AccessWidth::Word),
            Err(MmioError::OutOfWindow { offset: SLOT_SIZE })
        );
    }
}
