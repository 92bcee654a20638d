//! Heap bookkeeping: a bitmap of 64-byte blocks over one contiguous region.
//! This is pure logic on offsets; the arch layer's `GlobalAlloc` shim turns
//! offsets into pointers and serialises calls with a spin lock. First fit,
//! a word at a time: a search starts at the lowest free block (kept as a
//! hint, so the long-lived allocations made at boot are never scanned
//! again) and skips runs of used blocks 64 at a time. The device models
//! allocate on their data paths, so an allocation must not cost a walk
//! over everything allocated before it.
#![forbid(unsafe_code)]

/// Bytes per allocation block (also the minimum alignment).
pub const BLOCK_SIZE: usize = 64;

/// A bitmap allocator for up to `WORDS * 64` blocks.
#[derive(Debug)]
pub struct BitmapHeap<const WORDS: usize> {
    used: [u64; WORDS],
    blocks: usize,
    /// Every block below this one is used.
    lowest_free: usize,
}

impl<const WORDS: usize> Default for BitmapHeap<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

/// The bits of a word from bit `from` up.
fn bits_from(from: usize) -> u64 {
    u64::MAX << (from % 64)
}

impl<const WORDS: usize> BitmapHeap<WORDS> {
    /// Most bytes one heap can manage.
    pub const CAPACITY: usize = WORDS * 64 * BLOCK_SIZE;

    /// A heap managing no memory yet.
    pub const fn new() -> Self {
        Self {
            used: [0; WORDS],
            blocks: 0,
            lowest_free: 0,
        }
    }

    /// Manages `size` bytes (capped to [`Self::CAPACITY`]); returns the
    /// bytes actually managed.
    pub fn init(&mut self, size: usize) -> usize {
        self.used = [0; WORDS];
        self.blocks = size.min(Self::CAPACITY) / BLOCK_SIZE;
        self.lowest_free = 0;
        self.blocks * BLOCK_SIZE
    }

    /// First block at or after `from` whose used bit is `used`, or
    /// `self.blocks` if there is none.
    fn next_with(&self, from: usize, used: bool) -> usize {
        let mut word = from / 64;
        let mut mask = bits_from(from);
        while word * 64 < self.blocks {
            let bits = if used {
                self.used[word]
            } else {
                !self.used[word]
            } & mask;
            if bits != 0 {
                return (word * 64 + bits.trailing_zeros() as usize).min(self.blocks);
            }
            word += 1;
            mask = u64::MAX;
        }
        self.blocks
    }

    fn set(&mut self, start: usize, n: usize, used: bool) {
        let end = start + n;
        let mut block = start;
        while block < end {
            let bits = bits_from(block) & (u64::MAX >> (63 - (end - 1).min(block | 63) % 64));
            if used {
                self.used[block / 64] |= bits;
            } else {
                self.used[block / 64] &= !bits;
            }
            block = (block | 63) + 1;
        }
    }

    /// Allocates `size` bytes aligned to `align` (relative to the heap base,
    /// which the caller aligns at least as strictly). Returns the offset.
    pub fn alloc(&mut self, size: usize, align: usize) -> Option<usize> {
        if !align.is_power_of_two() {
            return None;
        }
        let n = size.max(1).div_ceil(BLOCK_SIZE);
        let step = (align / BLOCK_SIZE).max(1);
        let mut start = self.lowest_free.next_multiple_of(step);
        loop {
            start = self.next_with(start, false).next_multiple_of(step);
            let end = start.checked_add(n)?;
            if end > self.blocks {
                return None;
            }
            let used = self.next_with(start, true);
            if used >= end {
                self.set(start, n, true);
                if start == self.lowest_free {
                    self.lowest_free = self.next_with(end, false);
                }
                return Some(start * BLOCK_SIZE);
            }
            start = used;
        }
    }

    /// Frees an allocation made by [`Self::alloc`] with the same `size`.
    pub fn free(&mut self, offset: usize, size: usize) {
        let start = offset / BLOCK_SIZE;
        let n = size.max(1).div_ceil(BLOCK_SIZE);
        if start.checked_add(n).is_some_and(|end| end <= self.blocks) {
            self.set(start, n, false);
            self.lowest_free = self.lowest_free.min(start);
        }
    }

    /// Bytes currently allocated.
    pub fn used_bytes(&self) -> usize {
        self.used
            .iter()
            .map(|w| w.count_ones() as usize)
            .sum::<usize>()
            * BLOCK_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_reuse() {
        let mut h: BitmapHeap<4> = BitmapHeap::new();
        assert_eq!(h.init(1 << 20), 4 * 64 * BLOCK_SIZE);
        let a = h.alloc(10, 8).unwrap();
        let b = h.alloc(100, 8).unwrap();
        assert_eq!(a, 0);
        assert_eq!(b, BLOCK_SIZE);
        assert_eq!(h.used_bytes(), 3 * BLOCK_SIZE);
        h.free(a, 10);
        assert_eq!(h.alloc(64, 64), Some(0));
    }

    #[test]
    fn alignment_is_honoured() {
        let mut h: BitmapHeap<4> = BitmapHeap::new();
        h.init(BitmapHeap::<4>::CAPACITY);
        h.alloc(1, 1).unwrap();
        let p = h.alloc(4096, 4096).unwrap();
        assert_eq!(p % 4096, 0);
        assert_eq!(p, 4096);
        assert_eq!(h.alloc(8, 3), None);
    }

    #[test]
    fn exhaustion_and_spanning_words() {
        let mut h: BitmapHeap<2> = BitmapHeap::new();
        h.init(128 * BLOCK_SIZE);
        let a = h.alloc(100 * BLOCK_SIZE, 64).unwrap();
        assert_eq!(a, 0);
        assert_eq!(h.alloc(29 * BLOCK_SIZE, 64), None);
        let b = h.alloc(28 * BLOCK_SIZE, 64).unwrap();
        assert_eq!(b, 100 * BLOCK_SIZE);
        h.free(a, 100 * BLOCK_SIZE);
        assert_eq!(h.alloc(100 * BLOCK_SIZE, 64), Some(0));
        // Out-of-range frees are ignored rather than corrupting the map.
        h.free(usize::MAX - 10, 100);
    }

    /// Mixed allocations and frees agree with a plain model that checks
    /// every block: same offsets (first fit), no overlap.
    #[test]
    fn agrees_with_a_block_by_block_first_fit() {
        const BLOCKS: usize = 3 * 64;
        let mut heap: BitmapHeap<3> = BitmapHeap::new();
        heap.init(BLOCKS * BLOCK_SIZE);
        let mut model = [false; BLOCKS];
        let mut live: alloc::vec::Vec<(usize, usize)> = alloc::vec::Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed.is_multiple_of(3) && !live.is_empty() {
                let (offset, size) = live.swap_remove((seed >> 8) as usize % live.len());
                heap.free(offset, size);
                model[offset / BLOCK_SIZE..][..size.div_ceil(BLOCK_SIZE)].fill(false);
                continue;
            }
            let size = 1 + (seed >> 16) as usize % (20 * BLOCK_SIZE);
            let align = BLOCK_SIZE << ((seed >> 40) % 3);
            let (n, step) = (size.div_ceil(BLOCK_SIZE), align / BLOCK_SIZE);
            let expected = (0..=BLOCKS.saturating_sub(n))
                .step_by(step)
                .find(|&b| model[b..b + n].iter().all(|used| !used));
            let got = heap.alloc(size, align);
            assert_eq!(got, expected.map(|b| b * BLOCK_SIZE));
            if let Some(offset) = got {
                model[offset / BLOCK_SIZE..][..n].fill(true);
                live.push((offset, size));
            }
            let used = model.iter().filter(|used| **used).count();
            assert_eq!(heap.used_bytes(), used * BLOCK_SIZE);
        }
    }
}
