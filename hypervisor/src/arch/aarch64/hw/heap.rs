//! The global allocator: `mm::heap::BitmapHeap` bookkeeping behind a spin
//! lock, over one region of host RAM handed over at boot by `heap_init`.

use core::alloc::{GlobalAlloc, Layout};

use spin::Mutex;

use crate::addr::{PhysRange, BLOCK_2M};
use crate::mm::heap::BitmapHeap;

/// Bitmap words: 4096 * 64 blocks of 64 bytes = 16 MiB of heap at most.
const HEAP_WORDS: usize = 4096;

struct Heap {
    base: u64,
    map: BitmapHeap<HEAP_WORDS>,
}

struct LockedHeap(Mutex<Heap>);

// A global because `GlobalAlloc` has no other way to reach its state; the
// lock serialises every CPU's allocations.
#[global_allocator]
static HEAP: LockedHeap = LockedHeap(Mutex::new(Heap {
    base: 0,
    map: BitmapHeap::new(),
}));

/// Gives the heap `range` (2 MiB-aligned RAM, identity-mapped); returns the
/// bytes it manages.
pub fn heap_init(range: PhysRange) -> usize {
    let mut heap = HEAP.0.lock();
    debug_assert!(range.start.is_aligned(BLOCK_2M));
    heap.base = range.start.to_identity_virt().as_u64();
    let size = usize::try_from(range.size()).unwrap_or(usize::MAX);
    heap.map.init(size)
}

// SAFETY: allocations are disjoint block runs of the heap region (the bitmap
// never hands out a block twice until it is freed), aligned as asked because
// the region starts 2 MiB-aligned and larger alignments fail (`alloc`
// returns null).
unsafe impl GlobalAlloc for LockedHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > BLOCK_2M as usize {
            return core::ptr::null_mut();
        }
        let mut heap = self.0.lock();
        match heap.map.alloc(layout.size(), layout.align()) {
            Some(offset) => (heap.base as *mut u8).wrapping_add(offset),
            None => core::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let mut heap = self.0.lock();
        let offset = ptr.addr().wrapping_sub(heap.base as usize);
        heap.map.free(offset, layout.size());
    }
}
