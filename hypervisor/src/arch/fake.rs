//! Host stand-in for the EL2 hardware layer: the same names as
//! `aarch64::hw`, so portable code builds and its logic is unit-tested on the
//! host. None of it touches hardware; calls that only make sense on the real
//! machine panic with a message saying so.
#![forbid(unsafe_code)]

use crate::addr::{PhysAddr, PhysRange};
use crate::mm::frames::FrameAllocator;
use crate::mm::pagetable::TableMemory;
use crate::platform::PsciConduit;

/// Host builds have no UART; output is dropped.
pub fn uart_write(_base: PhysAddr, _bytes: &[u8]) {}

/// Host builds have no firmware.
pub fn psci_call(_conduit: PsciConduit, _function: u32, _args: [u64; 3]) -> u64 {
    panic!("PSCI call on the host: the hypervisor binary only runs on aarch64-unknown-none");
}

/// Host builds do not run at an exception level of their own.
pub fn current_el() -> u8 {
    0
}

/// Stops the calling thread for good.
pub fn halt() -> ! {
    panic!("halt on the host");
}

/// Host builds have no MMU to turn on.
pub fn enable_mmu(_root: PhysAddr) {
    panic!("enable_mmu on the host");
}

/// Host builds use the system allocator.
pub fn heap_init(_range: PhysRange) -> usize {
    0
}

/// Host stand-in for tables in host RAM; unusable without hardware (tests
/// use their own fake table memory).
pub struct IdentityTables<'a> {
    /// Where table pages would come from.
    pub frames: &'a mut FrameAllocator,
}

impl TableMemory for IdentityTables<'_> {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        None
    }
    fn read(&self, _table: PhysAddr, _index: usize) -> u64 {
        0
    }
    fn write(&mut self, _table: PhysAddr, _index: usize, _raw: u64) {
        panic!("writing translation tables on the host");
    }
}
