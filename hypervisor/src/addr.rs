//! Typed addresses: host-physical (`PhysAddr`), guest-physical
//! (`IntermediatePhysAddr`, the output of a guest's stage 1 and the input of
//! our stage 2) and hypervisor-virtual (`VirtAddr`). They never convert into
//! each other implicitly; every conversion is a named function, and all
//! arithmetic is checked so a guest-supplied value cannot wrap.
#![forbid(unsafe_code)]

use core::fmt;

/// Size of a translation granule page (4 KiB).
pub const PAGE_SIZE: u64 = 4096;
/// Size of a level-2 block with a 4 KiB granule.
pub const BLOCK_2M: u64 = 2 * 1024 * 1024;
/// Size of a level-1 block with a 4 KiB granule.
pub const BLOCK_1G: u64 = 1024 * 1024 * 1024;

macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        #[repr(transparent)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw address.
            pub const fn new(raw: u64) -> Self {
                Self(raw)
            }

            /// The raw address.
            pub const fn as_u64(self) -> u64 {
                self.0
            }

            /// `self + offset`, or `None` if it would overflow.
            pub const fn checked_add(self, offset: u64) -> Option<Self> {
                match self.0.checked_add(offset) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// `self - other` in bytes, or `None` if `other > self`.
            pub const fn checked_offset_from(self, other: Self) -> Option<u64> {
                self.0.checked_sub(other.0)
            }

            /// Rounds down to a multiple of `align` (a power of two).
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }

            /// Rounds up to a multiple of `align` (a power of two), or `None`
            /// on overflow.
            pub const fn align_up(self, align: u64) -> Option<Self> {
                match self.0.checked_add(align - 1) {
                    Some(v) => Some(Self(v & !(align - 1))),
                    None => None,
                }
            }

            /// Whether the address is a multiple of `align` (a power of two).
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:#x})", stringify!($name), self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

address_type!(
    /// A host-physical address.
    PhysAddr
);
address_type!(
    /// A guest-physical address (intermediate physical address, IPA).
    IntermediatePhysAddr
);
address_type!(
    /// A hypervisor virtual address (EL2 stage 1; an identity map of RAM
    /// and the devices the hypervisor drives).
    VirtAddr
);

impl PhysAddr {
    /// The hypervisor's own virtual address for this physical address: EL2
    /// runs on an identity map, so the value is the same.
    pub const fn to_identity_virt(self) -> VirtAddr {
        VirtAddr(self.0)
    }
}

/// A half-open range `[start, end)` of host-physical addresses.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct PhysRange {
    /// First address in the range.
    pub start: PhysAddr,
    /// First address past the range.
    pub end: PhysAddr,
}

impl PhysRange {
    /// The range `[start, start + size)`, or `None` if it would overflow.
    pub fn from_start_size(start: PhysAddr, size: u64) -> Option<Self> {
        Some(Self {
            start,
            end: start.checked_add(size)?,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.end.as_u64().saturating_sub(self.start.as_u64())
    }

    /// Whether the range holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether the two ranges share at least one byte.
    pub fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `addr` lies inside the range.
    pub fn contains(&self, addr: PhysAddr) -> bool {
        self.start <= addr && addr < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_helpers() {
        let a = PhysAddr::new(0x4008_1234);
        assert_eq!(a.align_down(PAGE_SIZE), PhysAddr::new(0x4008_1000));
        assert_eq!(a.align_up(PAGE_SIZE), Some(PhysAddr::new(0x4008_2000)));
        assert!(!a.is_aligned(PAGE_SIZE));
        assert_eq!(PhysAddr::new(u64::MAX).align_up(PAGE_SIZE), None);
    }

    #[test]
    fn checked_arithmetic_refuses_overflow() {
        let ipa = IntermediatePhysAddr::new(u64::MAX - 1);
        assert_eq!(ipa.checked_add(2), None);
        assert_eq!(
            IntermediatePhysAddr::new(0x10).checked_offset_from(IntermediatePhysAddr::new(0x20)),
            None
        );
    }

    #[test]
    fn ranges_overlap_and_contain() {
        let r = PhysRange::from_start_size(PhysAddr::new(0x1000), 0x1000).unwrap();
        assert!(r.contains(PhysAddr::new(0x1fff)));
        assert!(!r.contains(PhysAddr::new(0x2000)));
        let s = PhysRange::from_start_size(PhysAddr::new(0x2000), 0x10).unwrap();
        assert!(!r.overlaps(&s));
        assert_eq!(PhysRange::from_start_size(PhysAddr::new(u64::MAX), 2), None);
    }
}
