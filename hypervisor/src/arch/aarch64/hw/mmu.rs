//! The hypervisor's own EL2 stage-1 MMU: register setup for the tables that
//! `mm::pagetable` builds, and `IdentityTables`, the `TableMemory` that
//! stores tables in host RAM through the identity map (or, before the MMU is
//! on, through physical addresses, which are the same numbers).

use core::arch::asm;

use aarch64_cpu::registers::{Readable, ID_AA64MMFR0_EL1, SCTLR_EL2};

use super::super::pte::MAIR_EL2_VALUE;
use crate::addr::{PhysAddr, PhysRange, PAGE_SIZE};
use crate::mm::frames::{FrameAllocator, Frames};
use crate::mm::pagetable::{TableMemory, TableRead, ENTRIES, INPUT_BITS};
use crate::platform::PlatformInfo;

/// TCR_EL2 RES1 bits (non-VHE): 23 and 31.
const TCR_EL2_RES1: u64 = (1 << 23) | (1 << 31);
/// TCR_EL2: inner and outer write-back write-allocate walks, inner shareable,
/// 4 KiB granule (TG0 = 0).
const TCR_EL2_WALK_WB_ISH: u64 = (0b01 << 8) | (0b01 << 10) | (0b11 << 12);
/// TCR_EL2.PS field shift.
const TCR_EL2_PS_SHIFT: u64 = 16;
/// Largest PS encoding for a 4 KiB granule without FEAT_LPA2 (48 bits).
const PS_MAX: u64 = 0b101;
/// SCTLR_EL2.M (MMU) and .C (data cache).
const SCTLR_EL2_M_C: u64 = SCTLR_EL2::M::SET.value | SCTLR_EL2::C::SET.value;

/// The physical-address-size encoding this CPU supports (PARange), capped
/// for a 4 KiB granule; used for TCR_EL2.PS and VTCR_EL2.PS.
pub fn pa_size_encoding() -> u64 {
    ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(PS_MAX)
}

/// Turns on the EL2 stage-1 MMU with the tables rooted at `root`.
pub fn enable_mmu(root: PhysAddr) {
    let tcr = u64::from(64 - INPUT_BITS)
        | TCR_EL2_WALK_WB_ISH
        | (pa_size_encoding() << TCR_EL2_PS_SHIFT)
        | TCR_EL2_RES1;
    // SAFETY: `root` holds complete tables that identity-map the image,
    // the stack, the DTB and the devices in use, so execution continues at
    // the same addresses once translation is on. The barriers make the
    // table writes visible to the walker and discard stale TLB entries.
    unsafe {
        asm!(
            "dsb ish",
            "msr mair_el2, {mair}",
            "msr tcr_el2, {tcr}",
            "msr ttbr0_el2, {root}",
            "isb",
            "tlbi alle2",
            "dsb ish",
            "isb",
            "mrs {tmp}, sctlr_el2",
            "orr {tmp}, {tmp}, {mc}",
            "msr sctlr_el2, {tmp}",
            "isb",
            mair = in(reg) MAIR_EL2_VALUE,
            tcr = in(reg) tcr,
            root = in(reg) root.as_u64(),
            mc = in(reg) SCTLR_EL2_M_C,
            tmp = out(reg) _,
            options(nostack),
        );
    }
}

/// Translation tables in host RAM, pages taken from `frames`.
pub struct IdentityTables<'a> {
    /// Where table pages come from.
    pub frames: &'a mut FrameAllocator,
}

fn entry_ptr(table: PhysAddr, index: usize) -> *mut u64 {
    let index = index.min(ENTRIES - 1);
    (table.to_identity_virt().as_u64() as *mut u64).wrapping_add(index)
}

impl TableRead for IdentityTables<'_> {
    fn read(&self, table: PhysAddr, index: usize) -> u64 {
        // SAFETY: `table` came from `alloc_table`, a page of RAM owned by
        // these tables; `entry_ptr` keeps the index inside it.
        unsafe { core::ptr::read_volatile(entry_ptr(table, index)) }
    }
}

/// Reads tables built earlier by [`IdentityTables`] (a VM's stage 2, to
/// walk it); it cannot change them.
pub struct TableReader;

impl TableRead for TableReader {
    fn read(&self, table: PhysAddr, index: usize) -> u64 {
        // SAFETY: callers pass the root of tables `IdentityTables` built
        // and the tables it points to (`PageTable::translate` follows only
        // their table descriptors): pages of identity-mapped RAM those
        // tables own and never free; `entry_ptr` keeps the index inside
        // the page. The read is of a descriptor other CPUs only read.
        unsafe { core::ptr::read_volatile(entry_ptr(table, index)) }
    }
}

impl TableMemory for IdentityTables<'_> {
    fn alloc_table(&mut self) -> Option<PhysAddr> {
        let page = self.frames.alloc_page().ok()?;
        let base = page.to_identity_virt().as_u64() as *mut u64;
        for i in 0..(PAGE_SIZE / 8) as usize {
            // SAFETY: the page was just taken from the free host RAM, so
            // nothing else refers to it; it is identity-mapped (or the MMU is
            // still off) and 4 KiB long.
            unsafe { core::ptr::write_volatile(base.add(i), 0) };
        }
        Some(page)
    }

    fn write(&mut self, table: PhysAddr, index: usize, raw: u64) {
        // SAFETY: as in `read`. The barrier orders the descriptor before any
        // later walk or TLB maintenance.
        unsafe {
            core::ptr::write_volatile(entry_ptr(table, index), raw);
            asm!("dsb ishst", options(nostack, preserves_flags));
        }
    }
}

fn range_len(range: PhysRange) -> usize {
    usize::try_from(range.size()).unwrap_or(0)
}

/// The bytes of pages the caller owns.
pub fn frames_bytes(frames: &Frames) -> &[u8] {
    let range = frames.range();
    // SAFETY: `Frames` is handed out once by the frame allocator for pages
    // of free RAM, all identity-mapped; the shared borrow of the owner
    // stands for shared access to the pages.
    unsafe {
        core::slice::from_raw_parts(
            range.start.to_identity_virt().as_u64() as *const u8,
            range_len(range),
        )
    }
}

/// The bytes of pages the caller owns, writable.
pub fn frames_bytes_mut(frames: &mut Frames) -> &mut [u8] {
    let range = frames.range();
    // SAFETY: as in `frames_bytes`; the exclusive borrow of the owner stands
    // for exclusive access (a guest running on them is not Rust code).
    unsafe {
        core::slice::from_raw_parts_mut(
            range.start.to_identity_virt().as_u64() as *mut u8,
            range_len(range),
        )
    }
}

/// The boot bundle the loader left at `/chosen` `linux,initrd-start/end`.
pub fn initrd_bytes(platform: &PlatformInfo<'_>) -> &'static [u8] {
    let Some(range) = platform.initrd else {
        return &[];
    };
    let in_ram = platform
        .memory
        .iter()
        .any(|m| m.start <= range.start && range.end <= m.end);
    if !in_ram || range.is_empty() {
        return &[];
    }
    // SAFETY: the range lies in RAM, which is identity-mapped; the boot flow
    // reserves it from the frame allocator, so nothing writes it while the
    // hypervisor runs and it lives as long as the machine.
    unsafe {
        core::slice::from_raw_parts(
            range.start.to_identity_virt().as_u64() as *const u8,
            range_len(range),
        )
    }
}
