//! Host-physical page allocator. Free RAM is the DTB's memory ranges minus
//! what is already in use (the hypervisor image, the DTB, the boot bundle).
//! Allocations are contiguous, aligned runs of pages taken from the lowest
//! free range that fits (page tables, the heap, guest RAM partitions). Nothing
//! is given back: VMs live as long as the machine, and a rebooted VM reuses
//! its own partition.
#![forbid(unsafe_code)]

use crate::addr::{PhysAddr, PhysRange, PAGE_SIZE};
use crate::fixed_vec::FixedVec;

/// Most disjoint free ranges tracked (RAM ranges split by reservations).
pub const MAX_FREE_RANGES: usize = 32;

/// Why a frame allocation failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FrameError {
    /// No free range holds a run of the requested size and alignment.
    OutOfMemory,
    /// Size zero, or alignment not a power of two or below a page.
    BadRequest,
    /// Too many reservations split the free ranges.
    TooFragmented,
}

/// Host RAM handed out by [`FrameAllocator::alloc_frames`]. Not `Clone`:
/// whoever holds it is the only user of those pages (the arch layer lends
/// their bytes only through it).
#[derive(Debug, PartialEq, Eq)]
pub struct Frames {
    range: PhysRange,
}

impl Frames {
    /// The pages' addresses.
    pub fn range(&self) -> PhysRange {
        self.range
    }
}

/// The free host RAM, page-granular.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameAllocator {
    free: FixedVec<PhysRange, MAX_FREE_RANGES>,
}

impl FrameAllocator {
    /// Free RAM = `memory` minus `reserved`, shrunk to whole pages.
    pub fn new(memory: &[PhysRange], reserved: &[PhysRange]) -> Result<Self, FrameError> {
        let mut alloc = Self::default();
        for m in memory {
            let (Some(start), end) = (m.start.align_up(PAGE_SIZE), m.end.align_down(PAGE_SIZE))
            else {
                continue;
            };
            if start < end {
                alloc.insert_sorted(PhysRange { start, end })?;
            }
        }
        for r in reserved {
            alloc.reserve(*r)?;
        }
        Ok(alloc)
    }

    fn insert_sorted(&mut self, range: PhysRange) -> Result<(), FrameError> {
        let at = self
            .free
            .iter()
            .position(|f| f.start > range.start)
            .unwrap_or(self.free.len());
        self.free
            .insert(at, range)
            .map_err(|_| FrameError::TooFragmented)
    }

    /// Removes `range` (widened to whole pages) from the free ranges.
    pub fn reserve(&mut self, range: PhysRange) -> Result<(), FrameError> {
        if range.is_empty() {
            return Ok(());
        }
        let start = range.start.align_down(PAGE_SIZE);
        let end = range
            .end
            .align_up(PAGE_SIZE)
            .unwrap_or(PhysAddr::new(u64::MAX));
        let cut = PhysRange { start, end };
        let mut i = 0;
        while i < self.free.len() {
            let f = self.free.as_slice()[i];
            if !f.overlaps(&cut) {
                i += 1;
                continue;
            }
            self.free.remove(i);
            let below = PhysRange {
                start: f.start,
                end: cut.start,
            };
            let above = PhysRange {
                start: cut.end,
                end: f.end,
            };
            if !above.is_empty() {
                self.free
                    .insert(i, above)
                    .map_err(|_| FrameError::TooFragmented)?;
            }
            if !below.is_empty() {
                self.free
                    .insert(i, below)
                    .map_err(|_| FrameError::TooFragmented)?;
                i += 1;
            }
            if !above.is_empty() {
                i += 1;
            }
        }
        Ok(())
    }

    /// Allocates `size` bytes (rounded up to pages) aligned to `align`.
    pub fn alloc(&mut self, size: u64, align: u64) -> Result<PhysRange, FrameError> {
        if size == 0 || !align.is_power_of_two() || align < PAGE_SIZE {
            return Err(FrameError::BadRequest);
        }
        let size = size
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(FrameError::BadRequest)?;
        let found = self.free.iter().find_map(|f| {
            let start = f.start.align_up(align)?;
            let end = start.checked_add(size)?;
            (end <= f.end).then_some(PhysRange { start, end })
        });
        let range = found.ok_or(FrameError::OutOfMemory)?;
        self.reserve(range)?;
        Ok(range)
    }

    /// Like [`Self::alloc`], but hands the pages over as owned [`Frames`].
    pub fn alloc_frames(&mut self, size: u64, align: u64) -> Result<Frames, FrameError> {
        self.alloc(size, align).map(|range| Frames { range })
    }

    /// Allocates one page (a translation table).
    pub fn alloc_page(&mut self) -> Result<PhysAddr, FrameError> {
        self.alloc(PAGE_SIZE, PAGE_SIZE).map(|r| r.start)
    }

    /// The free ranges, sorted by address.
    pub fn free_ranges(&self) -> &[PhysRange] {
        self.free.as_slice()
    }

    /// Total free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(PhysRange::size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> PhysRange {
        PhysRange {
            start: PhysAddr::new(start),
            end: PhysAddr::new(end),
        }
    }

    #[test]
    fn reservations_split_ram() {
        let ram = [r(0x4000_0000, 0x6000_0000)];
        // Image at 0x4008_0000, DTB at the base of RAM, an unaligned initrd.
        let reserved = [
            r(0x4008_0000, 0x4012_3456),
            r(0x4000_0000, 0x4000_2000),
            r(0x4800_0100, 0x4800_0200),
        ];
        let a = FrameAllocator::new(&ram, &reserved).unwrap();
        assert_eq!(
            a.free_ranges(),
            &[
                r(0x4000_2000, 0x4008_0000),
                r(0x4012_4000, 0x4800_0000),
                r(0x4800_1000, 0x6000_0000)
            ]
        );
        let total: u64 = 0x2000_0000 - 0x2000 - 0xa4000 - 0x1000;
        assert_eq!(a.free_bytes(), total);
    }

    #[test]
    fn allocations_are_aligned_disjoint_and_exhaust() {
        let mut a = FrameAllocator::new(
            &[r(0x4000_0000, 0x4040_0000)],
            &[r(0x4000_0000, 0x4000_1000)],
        )
        .unwrap();
        let p = a.alloc_page().unwrap();
        assert_eq!(p, PhysAddr::new(0x4000_1000));
        let big = a.alloc(0x20_0000, 0x20_0000).unwrap();
        assert_eq!(big, r(0x4020_0000, 0x4040_0000));
        assert!(!big.contains(p));
        assert_eq!(a.alloc(0x20_0000, 0x20_0000), Err(FrameError::OutOfMemory));
        assert_eq!(a.alloc(0x1000, 3), Err(FrameError::BadRequest));
        assert_eq!(a.alloc(0, 0x1000), Err(FrameError::BadRequest));
        let rest = a.free_bytes();
        assert_eq!(rest, 0x20_0000 - 0x2000);
        assert!(a.alloc(rest, PAGE_SIZE).is_ok());
        assert_eq!(a.free_bytes(), 0);
    }

    #[test]
    fn multiple_ram_ranges_are_sorted() {
        let a = FrameAllocator::new(
            &[r(0x8000_0000, 0x8010_0000), r(0x4000_0000, 0x4010_0000)],
            &[],
        )
        .unwrap();
        assert_eq!(a.free_ranges()[0].start, PhysAddr::new(0x4000_0000));
    }
}
