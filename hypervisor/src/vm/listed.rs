//! Which interrupt a vCPU has in each list register of its CPU: the
//! hypervisor's side of `ICH_LR<n>_EL2`, kept as a bit set of occupied
//! registers beside their INTIDs, so that the run loop's questions (which
//! are in use, which of those the guest finished, where is a free one) are
//! bit operations instead of walks over every register.
#![forbid(unsafe_code)]

/// The most list registers a GICv3 CPU interface has (ICH_VTR_EL2.ListRegs
/// is 4 bits).
pub const MAX_LIST_REGISTERS: usize = 16;

/// The INTIDs in a vCPU's list registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    intids: [u32; MAX_LIST_REGISTERS],
    /// Bit n: list register n holds `intids[n]`.
    used: u16,
    /// The list registers the CPU has, as a mask.
    present: u16,
}

impl Listed {
    /// None listed, on a CPU with `count` list registers (at most
    /// [`MAX_LIST_REGISTERS`]).
    pub fn new(count: usize) -> Self {
        let count = count.min(MAX_LIST_REGISTERS);
        let present = u16::try_from((1u32 << count) - 1).unwrap_or(u16::MAX);
        Self {
            intids: [0; MAX_LIST_REGISTERS],
            used: 0,
            present,
        }
    }

    /// The INTID in list register `n`, if it holds one.
    pub fn get(&self, n: usize) -> Option<u32> {
        (n < MAX_LIST_REGISTERS && self.used & (1 << n) != 0).then(|| self.intids[n])
    }

    /// Records that list register `n` now holds `intid`.
    pub fn set(&mut self, n: usize, intid: u32) {
        if n < MAX_LIST_REGISTERS && self.present & (1 << n) != 0 {
            self.intids[n] = intid;
            self.used |= 1 << n;
        }
    }

    /// Records that list register `n` is free.
    pub fn clear(&mut self, n: usize) {
        if n < MAX_LIST_REGISTERS {
            self.used &= !(1 << n);
        }
    }

    /// The occupied list registers, as a mask.
    pub fn used(&self) -> u16 {
        self.used
    }

    /// Whether no list register is occupied.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// The lowest free list register, if any.
    pub fn free(&self) -> Option<usize> {
        let free = self.present & !self.used;
        (free != 0).then(|| free.trailing_zeros() as usize)
    }

    /// The list register holding `intid`, if one does.
    pub fn find(&self, intid: u32) -> Option<usize> {
        self.iter().find(|(_, i)| *i == intid).map(|(n, _)| n)
    }

    /// How many list registers the CPU has.
    pub fn count(&self) -> usize {
        self.present.count_ones() as usize
    }

    /// Records that every list register is free.
    pub fn clear_all(&mut self) {
        self.used = 0;
    }

    /// The occupied list registers and their INTIDs, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        registers(self.used).map(|n| (n, self.intids[n]))
    }
}

/// The list registers in `mask`, lowest first: for walking
/// [`Listed::used`] while changing what is listed.
pub fn registers(mask: u16) -> impl Iterator<Item = usize> {
    let mut left = mask;
    core::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.trailing_zeros() as usize;
        left &= left - 1;
        Some(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn fills_the_lowest_free_register_and_stops_at_the_cpus_count() {
        let mut listed = Listed::new(2);
        assert!(listed.is_empty());
        assert_eq!(listed.free(), Some(0));
        listed.set(0, 27);
        assert_eq!(listed.free(), Some(1));
        listed.set(1, 48);
        assert_eq!(listed.free(), None, "two registers, both used");
        listed.set(2, 5);
        assert_eq!(listed.get(2), None, "a register the CPU lacks");
        listed.clear(0);
        assert_eq!(listed.free(), Some(0));
        assert_eq!((listed.get(0), listed.get(1)), (None, Some(48)));
    }

    #[test]
    fn finds_and_lists_only_what_is_held() {
        let mut listed = Listed::new(4);
        listed.set(1, 27);
        listed.set(3, 1);
        assert_eq!(listed.find(1), Some(3));
        assert_eq!(listed.find(0), None, "free registers hold nothing");
        assert_eq!(listed.iter().collect::<Vec<_>>(), [(1, 27), (3, 1)]);
        assert_eq!(listed.used(), 0b1010);
        assert_eq!(registers(listed.used()).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(listed.count(), 4);
        listed.clear_all();
        assert!(listed.is_empty());
    }

    #[test]
    fn sixteen_registers_at_most() {
        let mut listed = Listed::new(40);
        for n in 0..MAX_LIST_REGISTERS {
            listed.set(n, n as u32);
        }
        assert_eq!(listed.free(), None);
        assert_eq!(listed.iter().count(), MAX_LIST_REGISTERS);
    }
}
