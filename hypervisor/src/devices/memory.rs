//! Guest RAM as a device sees it: reads and writes at guest-physical
//! addresses through a trait, so device models (virtio) never hold raw
//! pointers and are tested against fake memory on the host. Every address
//! and length a guest supplies goes through checked arithmetic here.

use core::fmt;

use crate::addr::IntermediatePhysAddr;

/// Why a guest-memory access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestMemoryError {
    /// `address + len` overflows the address space.
    Overflow {
        address: IntermediatePhysAddr,
        len: u64,
    },
    /// Part of the range is not guest RAM.
    OutOfRange {
        address: IntermediatePhysAddr,
        len: u64,
    },
}

impl fmt::Display for GuestMemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestMemoryError::Overflow { address, len } => {
                write!(f, "{len} bytes at IPA {address:#x} wrap the address space")
            }
            GuestMemoryError::OutOfRange { address, len } => {
                write!(f, "{len} bytes at IPA {address:#x} are not guest RAM")
            }
        }
    }
}

/// Byte access to one VM's RAM at guest-physical addresses.
pub trait GuestMemory {
    /// Fills `buf` from guest memory at `address`.
    fn read(&self, address: IntermediatePhysAddr, buf: &mut [u8]) -> Result<(), GuestMemoryError>;

    /// Copies `buf` into guest memory at `address`.
    fn write(&mut self, address: IntermediatePhysAddr, buf: &[u8]) -> Result<(), GuestMemoryError>;

    /// Makes the writes so far visible to the guest's CPUs before any later
    /// access (a device publishes a used-ring element before the index that
    /// announces it, and the index before it reads the driver's flags). The
    /// bare-metal implementation issues `dmb ish`; host fakes need nothing.
    fn publish(&self) {}

    /// Orders the reads so far before any later read (a device reads the
    /// available index before the ring entries it announces). The
    /// bare-metal implementation issues `dmb ishld`; host fakes need nothing.
    fn acquire(&self) {}

    fn read_u16(&self, address: IntermediatePhysAddr) -> Result<u16, GuestMemoryError> {
        let mut bytes = [0; 2];
        self.read(address, &mut bytes)?;
        Ok(u16::from_le_bytes(bytes))
    }

    fn read_u32(&self, address: IntermediatePhysAddr) -> Result<u32, GuestMemoryError> {
        let mut bytes = [0; 4];
        self.read(address, &mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn read_u64(&self, address: IntermediatePhysAddr) -> Result<u64, GuestMemoryError> {
        let mut bytes = [0; 8];
        self.read(address, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn write_u16(
        &mut self,
        address: IntermediatePhysAddr,
        value: u16,
    ) -> Result<(), GuestMemoryError> {
        self.write(address, &value.to_le_bytes())
    }

    fn write_u32(
        &mut self,
        address: IntermediatePhysAddr,
        value: u32,
    ) -> Result<(), GuestMemoryError> {
        self.write(address, &value.to_le_bytes())
    }

    fn write_u64(
        &mut self,
        address: IntermediatePhysAddr,
        value: u64,
    ) -> Result<(), GuestMemoryError> {
        self.write(address, &value.to_le_bytes())
    }
}

/// Where `[address, address + len)` falls inside a region of `region_len`
/// bytes starting at `region_start`: the offset of its first byte. This is
/// the one check every `GuestMemory` implementation makes before copying.
pub fn region_offset(
    region_start: IntermediatePhysAddr,
    region_len: u64,
    address: IntermediatePhysAddr,
    len: u64,
) -> Result<u64, GuestMemoryError> {
    let end = address
        .checked_add(len)
        .ok_or(GuestMemoryError::Overflow { address, len })?;
    let out_of_range = GuestMemoryError::OutOfRange { address, len };
    let offset = address
        .checked_offset_from(region_start)
        .ok_or(out_of_range)?;
    let end_offset = end.checked_offset_from(region_start).ok_or(out_of_range)?;
    if end_offset > region_len {
        return Err(out_of_range);
    }
    Ok(offset)
}

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fake {
    //! Guest RAM backed by a `Vec`, for device tests.
    use super::*;

    pub struct VecMemory {
        pub base: IntermediatePhysAddr,
        pub bytes: Vec<u8>,
    }

    impl VecMemory {
        pub fn new(base: u64, len: usize) -> Self {
            VecMemory {
                base: IntermediatePhysAddr::new(base),
                bytes: vec![0; len],
            }
        }

        fn range(
            &self,
            address: IntermediatePhysAddr,
            len: usize,
        ) -> Result<core::ops::Range<usize>, GuestMemoryError> {
            let start =
                region_offset(self.base, self.bytes.len() as u64, address, len as u64)? as usize;
            Ok(start..start + len)
        }
    }

    impl GuestMemory for VecMemory {
        fn read(
            &self,
            address: IntermediatePhysAddr,
            buf: &mut [u8],
        ) -> Result<(), GuestMemoryError> {
            let range = self.range(address, buf.len())?;
            buf.copy_from_slice(&self.bytes[range]);
            Ok(())
        }

        fn write(
            &mut self,
            address: IntermediatePhysAddr,
            buf: &[u8],
        ) -> Result<(), GuestMemoryError> {
            let range = self.range(address, buf.len())?;
            self.bytes[range].copy_from_slice(buf);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::VecMemory;
    use super::*;

    const BASE: u64 = 0x4000_0000;

    #[test]
    fn little_endian_round_trip() {
        let mut memory = VecMemory::new(BASE, 0x100);
        let at = IntermediatePhysAddr::new(BASE + 0x10);
        memory.write_u32(at, 0x1234_5678).unwrap();
        assert_eq!(memory.bytes[0x10..0x14], [0x78, 0x56, 0x34, 0x12]);
        assert_eq!(memory.read_u16(at), Ok(0x5678));
        memory.write_u64(at, u64::MAX - 1).unwrap();
        assert_eq!(memory.read_u64(at), Ok(u64::MAX - 1));
    }

    #[test]
    fn ranges_are_checked() {
        let memory = VecMemory::new(BASE, 0x100);
        let last = IntermediatePhysAddr::new(BASE + 0xFC);
        assert_eq!(memory.read_u32(last), Ok(0));
        let past = IntermediatePhysAddr::new(BASE + 0xFD);
        assert_eq!(
            memory.read_u32(past),
            Err(GuestMemoryError::OutOfRange {
                address: past,
                len: 4
            })
        );
        let below = IntermediatePhysAddr::new(BASE - 1);
        assert_eq!(
            memory.read_u16(below),
            Err(GuestMemoryError::OutOfRange {
                address: below,
                len: 2
            })
        );
        let top = IntermediatePhysAddr::new(u64::MAX - 1);
        assert_eq!(
            memory.read_u32(top),
            Err(GuestMemoryError::Overflow {
                address: top,
                len: 4
            })
        );
    }
}
