//! Translation-table builder shared by the hypervisor's EL2 stage 1 and every
//! guest's stage 2: 4 KiB granule, a 39-bit input space starting at level 1,
//! 1 GiB and 2 MiB blocks (up to a size the caller chooses) wherever input,
//! output and length line up, 4 KiB pages elsewhere. The descriptor encodings come from a
//! [`DescriptorFormat`] and the tables live behind a [`TableMemory`], so the
//! walk is tested on the host against fake memory.
#![forbid(unsafe_code)]

use crate::addr::{PhysAddr, PAGE_SIZE};

/// Bits of input address the tables translate (T0SZ = 64 - 39 = 25).
pub const INPUT_BITS: u32 = 39;
/// Level of the root table for [`INPUT_BITS`] with a 4 KiB granule.
pub const START_LEVEL: usize = 1;
/// The largest leaf the tables can hold: a level-1 (1 GiB) block.
pub const LARGEST_BLOCK: u64 = level_size(START_LEVEL);
/// Descriptors per table.
pub const ENTRIES: usize = 512;

/// What kind of memory a mapping is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MemoryKind {
    /// Normal memory, write-back cacheable, inner shareable.
    Normal,
    /// Device-nGnRE.
    Device,
}

/// Attributes of one mapping.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MapAttrs {
    /// Memory type.
    pub kind: MemoryKind,
    /// Writable (otherwise read-only).
    pub writable: bool,
    /// Instructions may be fetched from it.
    pub executable: bool,
}

impl MapAttrs {
    /// Read-write-execute normal memory.
    pub const RAM: Self = Self {
        kind: MemoryKind::Normal,
        writable: true,
        executable: true,
    };
    /// Read-write, never-execute device memory.
    pub const DEVICE: Self = Self {
        kind: MemoryKind::Device,
        writable: true,
        executable: false,
    };
}

/// A descriptor, decoded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Descriptor {
    /// Faults.
    Invalid,
    /// Points at the next-level table.
    Table(PhysAddr),
    /// A block or page mapping this output address.
    Leaf(PhysAddr),
}

/// Descriptor encodings of one translation regime.
pub trait DescriptorFormat {
    /// A table descriptor pointing at `next`.
    fn table(next: PhysAddr) -> u64;
    /// A block (level 1/2) or page (level 3) descriptor.
    fn leaf(output: PhysAddr, level: usize, attrs: MapAttrs) -> u64;
    /// Decodes a descriptor found at `level`.
    fn decode(raw: u64, level: usize) -> Descriptor;
}

/// Where the tables live, for a walk that only reads them.
pub trait TableRead {
    /// Reads descriptor `index` of `table`.
    fn read(&self, table: PhysAddr, index: usize) -> u64;
}

/// Where the tables live, for building them.
pub trait TableMemory: TableRead {
    /// A new, zeroed, page-aligned table.
    fn alloc_table(&mut self) -> Option<PhysAddr>;
    /// Writes descriptor `index` of `table`.
    fn write(&mut self, table: PhysAddr, index: usize, raw: u64);
}

/// Why a mapping could not be made.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum MapError {
    /// Addresses or size not page-aligned, or the input beyond the tables.
    BadRange,
    /// Part of the input range is already mapped.
    AlreadyMapped,
    /// No memory for a table.
    OutOfTables,
}

/// Bytes one descriptor maps at `level`.
pub const fn level_size(level: usize) -> u64 {
    PAGE_SIZE << (9 * (3 - level))
}

fn index_at(input: u64, level: usize) -> usize {
    let shift = 12 + 9 * (3 - level);
    // Masked to 9 bits, so it always fits.
    usize::try_from((input >> shift) & 0x1ff).unwrap_or(0)
}

/// One set of translation tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTable {
    root: PhysAddr,
}

impl PageTable {
    /// Allocates an empty root table.
    pub fn new(mem: &mut impl TableMemory) -> Result<Self, MapError> {
        Ok(Self {
            root: mem.alloc_table().ok_or(MapError::OutOfTables)?,
        })
    }

    /// The tables rooted at `root` (built earlier by [`PageTable::new`]
    /// and `map`), for walking them.
    pub fn from_root(root: PhysAddr) -> Self {
        Self { root }
    }

    /// Physical address of the root table (for TTBR0_EL2 / VTTBR_EL2).
    pub fn root(&self) -> PhysAddr {
        self.root
    }

    /// Maps input `[input, input + size)` onto `output` with `attrs`, in
    /// leaves of at most `largest_leaf` bytes (a [`level_size`]).
    pub fn map<F: DescriptorFormat>(
        &mut self,
        mem: &mut impl TableMemory,
        input: u64,
        output: PhysAddr,
        size: u64,
        attrs: MapAttrs,
        largest_leaf: u64,
    ) -> Result<(), MapError> {
        let end = input.checked_add(size).ok_or(MapError::BadRange)?;
        if !input.is_multiple_of(PAGE_SIZE)
            || !size.is_multiple_of(PAGE_SIZE)
            || !output.is_aligned(PAGE_SIZE)
            || end > 1 << INPUT_BITS
            || output.checked_add(size).is_none()
        {
            return Err(MapError::BadRange);
        }
        let mut done = 0;
        while done < size {
            let step = self.map_one::<F>(
                mem,
                input + done,
                output.checked_add(done).ok_or(MapError::BadRange)?,
                size - done,
                attrs,
                largest_leaf,
            )?;
            done += step;
        }
        Ok(())
    }

    /// Maps the largest aligned leaf (at most `largest_leaf` bytes) that
    /// starts at `input`; returns its size.
    fn map_one<F: DescriptorFormat>(
        &mut self,
        mem: &mut impl TableMemory,
        input: u64,
        output: PhysAddr,
        remaining: u64,
        attrs: MapAttrs,
        largest_leaf: u64,
    ) -> Result<u64, MapError> {
        let mut table = self.root;
        let mut level = START_LEVEL;
        loop {
            let size = level_size(level);
            let index = index_at(input, level);
            let current = F::decode(mem.read(table, index), level);
            let fits = size <= largest_leaf
                && input.is_multiple_of(size)
                && output.is_aligned(size)
                && remaining >= size;
            if fits && current == Descriptor::Invalid {
                mem.write(table, index, F::leaf(output, level, attrs));
                return Ok(size);
            }
            if level == 3 {
                return Err(MapError::AlreadyMapped);
            }
            table = match current {
                Descriptor::Table(next) => next,
                Descriptor::Leaf(_) => return Err(MapError::AlreadyMapped),
                Descriptor::Invalid => {
                    let next = mem.alloc_table().ok_or(MapError::OutOfTables)?;
                    mem.write(table, index, F::table(next));
                    next
                }
            };
            level += 1;
        }
    }

    /// Walks the tables: the output address `input` maps to and the level
    /// of the leaf, or `None` if it faults.
    pub fn translate<F: DescriptorFormat>(
        &self,
        mem: &impl TableRead,
        input: u64,
    ) -> Option<(PhysAddr, usize)> {
        if input >= 1 << INPUT_BITS {
            return None;
        }
        let mut table = self.root;
        for level in START_LEVEL..=3 {
            match F::decode(mem.read(table, index_at(input, level)), level) {
                Descriptor::Invalid => return None,
                Descriptor::Leaf(out) => {
                    let offset = input & (level_size(level) - 1);
                    return Some((out.checked_add(offset)?, level));
                }
                Descriptor::Table(next) => table = next,
            }
        }
        None
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! Tables in a host `HashMap`, addressed by made-up physical addresses.
    use super::*;
    use std::collections::HashMap;

    pub struct FakeTables {
        pub tables: HashMap<u64, Vec<u64>>,
        next: u64,
        pub limit: usize,
    }

    impl FakeTables {
        pub fn new(limit: usize) -> Self {
            Self {
                tables: HashMap::new(),
                next: 0x7000_0000,
                limit,
            }
        }
    }

    impl TableRead for FakeTables {
        fn read(&self, table: PhysAddr, index: usize) -> u64 {
            self.tables[&table.as_u64()][index]
        }
    }

    impl TableMemory for FakeTables {
        fn alloc_table(&mut self) -> Option<PhysAddr> {
            if self.tables.len() >= self.limit {
                return None;
            }
            let pa = self.next;
            self.next += PAGE_SIZE;
            self.tables.insert(pa, vec![0; ENTRIES]);
            Some(PhysAddr::new(pa))
        }
        fn write(&mut self, table: PhysAddr, index: usize, raw: u64) {
            self.tables.get_mut(&table.as_u64()).unwrap()[index] = raw;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeTables;
    use super::*;
    use crate::arch::aarch64::pte::{El2Stage1, Stage2};

    /// Guest RAM of `size` bytes at IPA 0x4000_0000 on a 2 MiB-aligned
    /// host partition at `HOST_RAM`, in leaves of at most `largest_leaf`.
    fn map_guest_ram(size: u64, largest_leaf: u64) -> (FakeTables, PageTable) {
        let mut mem = FakeTables::new(16);
        let mut pt = PageTable::new(&mut mem).unwrap();
        pt.map::<Stage2>(
            &mut mem,
            0x4000_0000,
            HOST_RAM,
            size,
            MapAttrs::RAM,
            largest_leaf,
        )
        .unwrap();
        (mem, pt)
    }

    const HOST_RAM: PhysAddr = PhysAddr::new(0x4820_0000);

    #[test]
    fn ram_uses_blocks_and_pages_for_the_tail() {
        let (mem, pt) = map_guest_ram(0x40_2000, LARGEST_BLOCK);
        assert_eq!(
            pt.translate::<Stage2>(&mem, 0x4000_0000),
            Some((HOST_RAM, 2))
        );
        assert_eq!(
            pt.translate::<Stage2>(&mem, 0x4020_1234),
            Some((PhysAddr::new(0x4840_1234), 2))
        );
        assert_eq!(
            pt.translate::<Stage2>(&mem, 0x4040_1ff8),
            Some((PhysAddr::new(0x4860_1ff8), 3))
        );
        assert_eq!(pt.translate::<Stage2>(&mem, 0x4040_2000), None);
        assert_eq!(pt.translate::<Stage2>(&mem, 0x0900_0000), None);
        // Root, one level-2 table, one level-3 table.
        assert_eq!(mem.tables.len(), 3);
    }

    #[test]
    fn pages_only_when_blocks_are_not_wanted() {
        let (mem, pt) = map_guest_ram(0x40_0000, PAGE_SIZE);
        assert_eq!(
            pt.translate::<Stage2>(&mem, 0x4000_0000),
            Some((HOST_RAM, 3))
        );
        assert_eq!(
            pt.translate::<Stage2>(&mem, 0x403f_f008),
            Some((PhysAddr::new(0x485f_f008), 3))
        );
        // Root, one level-2 table, two level-3 tables.
        assert_eq!(mem.tables.len(), 4);
    }

    #[test]
    fn misaligned_output_falls_back_to_pages() {
        let mut mem = FakeTables::new(16);
        let mut pt = PageTable::new(&mut mem).unwrap();
        pt.map::<Stage2>(
            &mut mem,
            0x4000_0000,
            PhysAddr::new(0x4000_1000),
            0x20_0000,
            MapAttrs::RAM,
            LARGEST_BLOCK,
        )
        .unwrap();
        assert_eq!(
            pt.translate::<Stage2>(&mem, 0x401f_f000),
            Some((PhysAddr::new(0x4020_0000), 3))
        );
    }

    #[test]
    fn gigabyte_blocks_for_identity_ram() {
        let mut mem = FakeTables::new(4);
        let mut pt = PageTable::new(&mut mem).unwrap();
        pt.map::<El2Stage1>(
            &mut mem,
            0x4000_0000,
            PhysAddr::new(0x4000_0000),
            1 << 30,
            MapAttrs::RAM,
            LARGEST_BLOCK,
        )
        .unwrap();
        assert_eq!(
            pt.translate::<El2Stage1>(&mem, 0x4abc_d000),
            Some((PhysAddr::new(0x4abc_d000), 1))
        );
        assert_eq!(mem.tables.len(), 1);
    }

    #[test]
    fn overlaps_bad_ranges_and_exhaustion_are_errors() {
        let mut mem = FakeTables::new(2);
        let mut pt = PageTable::new(&mut mem).unwrap();
        pt.map::<Stage2>(
            &mut mem,
            0,
            PhysAddr::new(0),
            0x20_0000,
            MapAttrs::DEVICE,
            LARGEST_BLOCK,
        )
        .unwrap();
        assert_eq!(
            pt.map::<Stage2>(
                &mut mem,
                0x1000,
                PhysAddr::new(0),
                0x1000,
                MapAttrs::DEVICE,
                LARGEST_BLOCK
            ),
            Err(MapError::AlreadyMapped)
        );
        assert_eq!(
            pt.map::<Stage2>(
                &mut mem,
                0x123,
                PhysAddr::new(0),
                0x1000,
                MapAttrs::DEVICE,
                LARGEST_BLOCK
            ),
            Err(MapError::BadRange)
        );
        assert_eq!(
            pt.map::<Stage2>(
                &mut mem,
                1 << 39,
                PhysAddr::new(0),
                0x1000,
                MapAttrs::DEVICE,
                LARGEST_BLOCK,
            ),
            Err(MapError::BadRange)
        );
        assert_eq!(
            pt.map::<Stage2>(
                &mut mem,
                0x4000_0000,
                PhysAddr::new(0),
                0x1000,
                MapAttrs::DEVICE,
                LARGEST_BLOCK,
            ),
            Err(MapError::OutOfTables)
        );
    }
}
