//! Heap bookkeeping: a bitmap of 64-byte blocks over one contiguous region.
//! This is pure logic on offsets; the arch layer's `GlobalAlloc` shim turns
//! offsets into pointers and serialises calls with a spin lock. First fit,
//! word-at-a-time scanning; allocations are few and mostly long-lived.
#![forbid(unsafe_code)]

/// Bytes per allocation block (also the minimum alignment).
pub const BLOCK_SIZE: usize = 64;

/// A bitmap allocator for up to `WORDS * 64` blocks.
#[derive(Debug)]
pub struct BitmapHeap<const WORDS: usize> {
    used: [u64; WORDS],
    blocks: usize,
}

impl<const WORDS: usize> Default for BitmapHeap<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize> BitmapHeap<WORDS> {
    /// Most bytes one heap can manage.
    pub const CAPACITY: usize = WORDS * 64 * BLOCK_SIZE;

    /// A heap managing no memory yet.
    pub const fn new() -> Self {
        Self {
            used: [0; WORDS],
            blocks: 0,
        }
    }

    /// Manages `size` bytes (capped to [`Self::CAPACITY`]); returns the
    /// bytes actually managed.
    pub fn init(&mut self, size: usize) -> usize {
        self.used = [0; WORDS];
        self.blocks = size.min(Self::CAPACITY) / BLOCK_SIZE;
        self.blocks * BLOCK_SIZE
    }

    fn is_used(&self, block: usize) -> bool {
        self.used[block / 64] & (1 << (block % 64)) != 0
    }

    /// First used block in `[start, start + n)`, if any.
    fn first_used(&self, start: usize, n: usize) -> Option<usize> {
        let end = start + n;
        let mut b = start;
        while b < end {
            if b.is_multiple_of(64) && end - b >= 64 {
                if self.used[b / 64] == 0 {
                    b += 64;
                    continue;
                }
                return Some(b + self.used[b / 64].trailing_zeros() as usize);
            }
            if self.is_used(b) {
                return Some(b);
            }
            b += 1;
        }
        None
    }

    fn set(&mut self, start: usize, n: usize, used: bool) {
        for b in start..start + n {
            if used {
                self.used[b / 64] |= 1 << (b % 64);
            } else {
                self.used[b / 64] &= !(1 << (b % 64));
            }
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
        let mut start: usize = 0;
        while start.checked_add(n)? <= self.blocks {
            match self.first_used(start, n) {
                None => {
                    self.set(start, n, true);
                    return Some(start * BLOCK_SIZE);
                }
                Some(used) => start = (used + 1).next_multiple_of(step),
            }
        }
        None
    }

    /// Frees an allocation made by [`Self::alloc`] with the same `size`.
    pub fn free(&mut self, offset: usize, size: usize) {
        let start = offset / BLOCK_SIZE;
        let n = size.max(1).div_ceil(BLOCK_SIZE);
        if start.checked_add(n).is_some_and(|end| end <= self.blocks) {
            self.set(start, n, false);
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
}
