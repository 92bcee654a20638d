//! A split virtqueue (virtio 1.2, 2.7) read and written only through
//! `GuestMemory`: every guest-supplied index, address and length is
//! checked, ring indices wrap as `Wrapping<u16>`, and a malformed ring is a
//! `QueueError`, never a panic. Indirect descriptors are not offered.
//! With VIRTIO_F_EVENT_IDX the device asks for a notification whenever it
//! finds the ring empty (`avail_event`) and interrupts only when the driver's
//! `used_event` says so (virtio 1.2, 2.7.7 and 2.7.10).

use alloc::vec::Vec;
use core::fmt;
use core::num::Wrapping;

use crate::addr::IntermediatePhysAddr;
use crate::devices::memory::{GuestMemory, GuestMemoryError};

/// Descriptor flags.
const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;
const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Driver → device: do not interrupt when buffers are used.
const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// The feature bit of `used_event`/`avail_event` notification suppression.
pub const VIRTIO_F_EVENT_IDX: u64 = 1 << 29;

/// Sizes of the ring structures (virtio 1.2, 2.7.5-2.7.8).
const DESCRIPTOR_SIZE: u64 = 16;
const RING_HEADER: u64 = 4;
const AVAIL_ELEMENT: u64 = 2;
const USED_ELEMENT: u64 = 8;

/// Why a queue could not be served. Anything but `Memory` means the driver
/// broke the protocol; the transport then asks for a device reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueError {
    Memory(GuestMemoryError),
    /// The queue is not set up (QueueReady = 0).
    NotReady,
    /// The driver published more buffers than the queue holds.
    AvailOverrun {
        avail_idx: u16,
        next_avail: u16,
    },
    /// A ring entry or `next` field names a descriptor past the table.
    BadDescriptorIndex(u16),
    /// A chain longer than the queue: a loop.
    ChainTooLong,
    /// VIRTQ_DESC_F_INDIRECT although the feature was not offered.
    Indirect,
}

impl From<GuestMemoryError> for QueueError {
    fn from(error: GuestMemoryError) -> Self {
        QueueError::Memory(error)
    }
}

impl fmt::Display for QueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueError::Memory(e) => write!(f, "{e}"),
            QueueError::NotReady => f.write_str("queue not ready"),
            QueueError::AvailOverrun {
                avail_idx,
                next_avail,
            } => {
                write!(
                    f,
                    "avail idx {avail_idx} is more than a queue ahead of {next_avail}"
                )
            }
            QueueError::BadDescriptorIndex(i) => {
                write!(f, "descriptor index {i} outside the table")
            }
            QueueError::ChainTooLong => f.write_str("descriptor chain longer than the queue"),
            QueueError::Indirect => f.write_str("indirect descriptor without the feature"),
        }
    }
}

/// Descriptors a chain's list has room for before it grows: Linux's
/// longest usual chain (a virtio-net receive buffer for big packets,
/// `MAX_SKB_FRAGS + 2` = 19) fits, so a chain costs one allocation.
const CHAIN_CAPACITY: usize = 20;

/// One buffer of a chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub address: IntermediatePhysAddr,
    pub len: u32,
    /// The device writes this buffer (else it reads it).
    pub device_writable: bool,
}

/// The buffers the driver made available under one head index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorChain {
    pub head: u16,
    pub descriptors: Vec<Descriptor>,
}

/// One split virtqueue's configuration and device-side position.
#[derive(Clone, Debug)]
pub struct Queue {
    max_size: u16,
    /// QueueNum: a power of two up to `max_size`.
    pub size: u16,
    pub ready: bool,
    pub desc_table: IntermediatePhysAddr,
    /// The driver area (available ring).
    pub avail_ring: IntermediatePhysAddr,
    /// The device area (used ring).
    pub used_ring: IntermediatePhysAddr,
    next_avail: Wrapping<u16>,
    next_used: Wrapping<u16>,
    /// Chains `pop` still hands out before it reports none ([`Queue::limit`]).
    budget: usize,
    /// `pop` reported none because the budget ran out, not the chains.
    budget_hit: bool,
    /// VIRTIO_F_EVENT_IDX was negotiated (set when the queue goes live).
    pub event_idx: bool,
    /// The used index when the device last decided about an interrupt.
    signalled_used: Wrapping<u16>,
}

impl Queue {
    pub fn new(max_size: u16) -> Self {
        Queue {
            max_size,
            size: max_size,
            ready: false,
            desc_table: IntermediatePhysAddr::new(0),
            avail_ring: IntermediatePhysAddr::new(0),
            used_ring: IntermediatePhysAddr::new(0),
            next_avail: Wrapping(0),
            next_used: Wrapping(0),
            budget: usize::MAX,
            budget_hit: false,
            event_idx: false,
            signalled_used: Wrapping(0),
        }
    }

    /// Lets `pop` hand out at most `chains` more chains; past that it
    /// reports none and [`Queue::budget_hit`] says work was left over. The
    /// transport sets it before each round, so one notification cannot keep
    /// a CPU (and the VM's lock) as long as the driver keeps publishing.
    pub fn limit(&mut self, chains: usize) {
        self.budget = chains;
        self.budget_hit = false;
    }

    /// Whether the last round stopped at its budget with chains left.
    pub fn budget_hit(&self) -> bool {
        self.budget_hit
    }

    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    /// Whether `size` is a queue size the device accepts.
    pub fn valid_size(&self, size: u16) -> bool {
        size.is_power_of_two() && size <= self.max_size
    }

    /// Back to the reset state (a device reset or QueueReset).
    pub fn reset(&mut self) {
        *self = Queue::new(self.max_size);
    }

    fn at(base: IntermediatePhysAddr, offset: u64) -> Result<IntermediatePhysAddr, QueueError> {
        base.checked_add(offset)
            .ok_or(QueueError::Memory(GuestMemoryError::Overflow {
                address: base,
                len: offset,
            }))
    }

    fn descriptor(
        &self,
        mem: &dyn GuestMemory,
        index: u16,
    ) -> Result<(Descriptor, Option<u16>), QueueError> {
        if index >= self.size {
            return Err(QueueError::BadDescriptorIndex(index));
        }
        let entry = Self::at(self.desc_table, u64::from(index) * DESCRIPTOR_SIZE)?;
        let mut raw = [0u8; DESCRIPTOR_SIZE as usize];
        mem.read(entry, &mut raw)?;
        let field = |range: core::ops::Range<usize>| &raw[range];
        let address = u64::from_le_bytes(field(0..8).try_into().unwrap_or_default());
        let len = u32::from_le_bytes(field(8..12).try_into().unwrap_or_default());
        let flags = u16::from_le_bytes(field(12..14).try_into().unwrap_or_default());
        let next = u16::from_le_bytes(field(14..16).try_into().unwrap_or_default());
        if flags & VIRTQ_DESC_F_INDIRECT != 0 {
            return Err(QueueError::Indirect);
        }
        let descriptor = Descriptor {
            address: IntermediatePhysAddr::new(address),
            len,
            device_writable: flags & VIRTQ_DESC_F_WRITE != 0,
        };
        Ok((descriptor, (flags & VIRTQ_DESC_F_NEXT != 0).then_some(next)))
    }

    /// The next chain the driver made available, if any.
    pub fn pop(
        &mut self,
        mem: &mut dyn GuestMemory,
    ) -> Result<Option<DescriptorChain>, QueueError> {
        if !self.ready {
            return Err(QueueError::NotReady);
        }
        let mut avail_idx = self.avail_idx(mem)?;
        if avail_idx == self.next_avail && self.event_idx {
            // Empty: ask to be notified of the next chain, then look again,
            // since one published before the request was seen gets no
            // notification of its own.
            let avail_event = u64::from(self.size) * USED_ELEMENT + RING_HEADER;
            mem.write_u16(Self::at(self.used_ring, avail_event)?, self.next_avail.0)?;
            mem.publish();
            avail_idx = self.avail_idx(mem)?;
        }
        let outstanding = avail_idx - self.next_avail;
        if outstanding.0 == 0 {
            return Ok(None);
        }
        if outstanding.0 > self.size {
            return Err(QueueError::AvailOverrun {
                avail_idx: avail_idx.0,
                next_avail: self.next_avail.0,
            });
        }
        if self.budget == 0 {
            self.budget_hit = true;
            return Ok(None);
        }
        // The ring entries the index announces are read after it.
        mem.acquire();
        let slot = u64::from(self.next_avail.0 % self.size);
        let head = mem.read_u16(Self::at(
            self.avail_ring,
            RING_HEADER + slot * AVAIL_ELEMENT,
        )?)?;
        let mut descriptors = Vec::with_capacity(CHAIN_CAPACITY);
        let mut index = Some(head);
        while let Some(i) = index {
            if descriptors.len() >= usize::from(self.size) {
                return Err(QueueError::ChainTooLong);
            }
            let (descriptor, next) = self.descriptor(mem, i)?;
            descriptors.push(descriptor);
            index = next;
        }
        self.next_avail += 1;
        self.budget -= 1;
        Ok(Some(DescriptorChain { head, descriptors }))
    }

    fn avail_idx(&self, mem: &dyn GuestMemory) -> Result<Wrapping<u16>, QueueError> {
        Ok(Wrapping(mem.read_u16(Self::at(self.avail_ring, 2)?)?))
    }

    /// Whether the ring is empty, having asked the driver to notify when it
    /// adds a chain (EVENT_IDX: `avail_event`): a device that stops for want
    /// of buffers must hear of the next one. Looks again after asking, so a
    /// chain added meanwhile is not missed. An unreadable ring counts as
    /// empty.
    pub fn empty_until_notified(&mut self, mem: &mut dyn GuestMemory) -> bool {
        if !self.ready {
            return true;
        }
        if self.event_idx {
            let avail_event = u64::from(self.size) * USED_ELEMENT + RING_HEADER;
            let Ok(at) = Self::at(self.used_ring, avail_event) else {
                return true;
            };
            if mem.write_u16(at, self.next_avail.0).is_err() {
                return true;
            }
            mem.publish();
        }
        !self.has_available(mem)
    }

    /// Whether the driver has made chains available that `pop` has not
    /// taken yet (an unreadable ring counts as none).
    pub fn has_available(&self, mem: &dyn GuestMemory) -> bool {
        self.ready
            && Self::at(self.avail_ring, 2)
                .ok()
                .and_then(|at| mem.read_u16(at).ok())
                .is_some_and(|idx| Wrapping(idx) != self.next_avail)
    }

    /// Returns chain `head` to the driver with `len` bytes written.
    pub fn add_used(
        &mut self,
        mem: &mut dyn GuestMemory,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        if !self.ready {
            return Err(QueueError::NotReady);
        }
        if head >= self.size {
            return Err(QueueError::BadDescriptorIndex(head));
        }
        let slot = u64::from(self.next_used.0 % self.size);
        let element = Self::at(self.used_ring, RING_HEADER + slot * USED_ELEMENT)?;
        let mut raw = [0u8; USED_ELEMENT as usize];
        raw[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        raw[4..].copy_from_slice(&len.to_le_bytes());
        mem.write(element, &raw)?;
        // The element must be visible before the index that publishes it.
        mem.publish();
        self.next_used += 1;
        mem.write_u16(Self::at(self.used_ring, 2)?, self.next_used.0)?;
        Ok(())
    }

    /// Whether the driver wants an interrupt for the buffers used since the
    /// last time this was asked: its `used_event` lies among them (EVENT_IDX),
    /// or it did not set NO_INTERRUPT.
    pub fn wants_interrupt(&mut self, mem: &dyn GuestMemory) -> Result<bool, QueueError> {
        // The used index written before is visible before the driver's
        // word is read: a driver that re-enables interrupts and then finds
        // no new used buffer gets its interrupt (virtio 1.2, 2.7.7.2).
        mem.publish();
        if !self.event_idx {
            return Ok(mem.read_u16(self.avail_ring)? & VIRTQ_AVAIL_F_NO_INTERRUPT == 0);
        }
        let used_event = RING_HEADER + u64::from(self.size) * AVAIL_ELEMENT;
        let event = Wrapping(mem.read_u16(Self::at(self.avail_ring, used_event)?)?);
        let (new, old) = (self.next_used, self.signalled_used);
        self.signalled_used = new;
        // vring_need_event: `event` is in (old, new].
        Ok(new - event - Wrapping(1) < new - old)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::devices::memory::fake::VecMemory;

    pub const RAM: u64 = 0x4000_0000;
    pub const DESC: u64 = RAM + 0x1000;
    pub const AVAIL: u64 = RAM + 0x2000;
    pub const USED: u64 = RAM + 0x3000;

    fn ipa(raw: u64) -> IntermediatePhysAddr {
        IntermediatePhysAddr::new(raw)
    }

    /// A driver's side of the rings, for tests.
    pub struct Driver {
        pub size: u16,
        avail_idx: u16,
    }

    impl Driver {
        pub fn new(size: u16) -> Self {
            Driver { size, avail_idx: 0 }
        }

        pub fn queue(&self, max: u16) -> Queue {
            let mut q = Queue::new(max);
            q.size = self.size;
            q.desc_table = ipa(DESC);
            q.avail_ring = ipa(AVAIL);
            q.used_ring = ipa(USED);
            q.ready = true;
            q
        }

        pub fn descriptor(
            mem: &mut VecMemory,
            index: u16,
            address: u64,
            len: u32,
            flags: u16,
            next: u16,
        ) {
            let at = ipa(DESC + 16 * u64::from(index));
            mem.write_u64(at, address).unwrap();
            mem.write_u32(ipa(at.as_u64() + 8), len).unwrap();
            mem.write_u16(ipa(at.as_u64() + 12), flags).unwrap();
            mem.write_u16(ipa(at.as_u64() + 14), next).unwrap();
        }

        pub fn offer(&mut self, mem: &mut VecMemory, head: u16) {
            let slot = u64::from(self.avail_idx % self.size);
            mem.write_u16(ipa(AVAIL + 4 + 2 * slot), head).unwrap();
            self.avail_idx = self.avail_idx.wrapping_add(1);
            mem.write_u16(ipa(AVAIL + 2), self.avail_idx).unwrap();
        }

        pub fn used(mem: &VecMemory, slot: u16) -> (u32, u32) {
            let at = USED + 4 + 8 * u64::from(slot);
            (
                mem.read_u32(ipa(at)).unwrap(),
                mem.read_u32(ipa(at + 4)).unwrap(),
            )
        }

        pub fn used_idx(mem: &VecMemory) -> u16 {
            mem.read_u16(ipa(USED + 2)).unwrap()
        }
    }

    #[test]
    fn pops_a_chain_and_returns_it() {
        let mut mem = VecMemory::new(RAM, 0x10000);
        let mut driver = Driver::new(4);
        Driver::descriptor(&mut mem, 2, RAM + 0x8000, 16, VIRTQ_DESC_F_NEXT, 0);
        Driver::descriptor(&mut mem, 0, RAM + 0x9000, 512, VIRTQ_DESC_F_WRITE, 0);
        driver.offer(&mut mem, 2);
        let mut q = driver.queue(8);
        let chain = q.pop(&mut mem).unwrap().unwrap();
        assert_eq!(chain.head, 2);
        assert_eq!(
            chain.descriptors,
            [
                Descriptor {
                    address: ipa(RAM + 0x8000),
                    len: 16,
                    device_writable: false
                },
                Descriptor {
                    address: ipa(RAM + 0x9000),
                    len: 512,
                    device_writable: true
                },
            ]
        );
        assert_eq!(q.pop(&mut mem), Ok(None));
        q.add_used(&mut mem, 2, 512).unwrap();
        assert_eq!(Driver::used(&mem, 0), (2, 512));
        assert_eq!(Driver::used_idx(&mem), 1);
        assert_eq!(q.wants_interrupt(&mem), Ok(true));
    }

    #[test]
    fn indices_wrap_around_u16() {
        let mut mem = VecMemory::new(RAM, 0x10000);
        let mut driver = Driver::new(2);
        Driver::descriptor(&mut mem, 0, RAM + 0x8000, 8, 0, 0);
        let mut q = driver.queue(2);
        for round in 0..70_000u32 {
            driver.offer(&mut mem, 0);
            let chain = q
                .pop(&mut mem)
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}"));
            q.add_used(&mut mem, chain.head, 0).unwrap();
        }
        assert_eq!(Driver::used_idx(&mem), (70_000u32 % 65_536) as u16);
    }

    #[test]
    fn malformed_rings_are_errors() {
        let mut mem = VecMemory::new(RAM, 0x10000);
        let mut driver = Driver::new(4);
        let mut q = driver.queue(4);
        // A loop: 0 → 1 → 0.
        Driver::descriptor(&mut mem, 0, RAM, 1, VIRTQ_DESC_F_NEXT, 1);
        Driver::descriptor(&mut mem, 1, RAM, 1, VIRTQ_DESC_F_NEXT, 0);
        driver.offer(&mut mem, 0);
        assert_eq!(q.pop(&mut mem), Err(QueueError::ChainTooLong));
        // A head past the table.
        let mut q = driver.queue(4);
        mem.write_u16(ipa(AVAIL + 4), 9).unwrap();
        assert_eq!(q.pop(&mut mem), Err(QueueError::BadDescriptorIndex(9)));
        // Indirect.
        Driver::descriptor(&mut mem, 3, RAM, 16, VIRTQ_DESC_F_INDIRECT, 0);
        mem.write_u16(ipa(AVAIL + 4), 3).unwrap();
        assert_eq!(q.pop(&mut mem), Err(QueueError::Indirect));
        // The driver claims more buffers than the queue holds.
        mem.write_u16(ipa(AVAIL + 2), 7).unwrap();
        assert_eq!(
            q.pop(&mut mem),
            Err(QueueError::AvailOverrun {
                avail_idx: 7,
                next_avail: 0
            })
        );
        // Rings outside RAM.
        let mut q = driver.queue(4);
        q.avail_ring = ipa(u64::MAX - 1);
        assert!(matches!(q.pop(&mut mem), Err(QueueError::Memory(_))));
        q.ready = false;
        assert_eq!(q.pop(&mut mem), Err(QueueError::NotReady));
    }

    #[test]
    fn interrupt_suppression_and_sizes() {
        let mut mem = VecMemory::new(RAM, 0x10000);
        let mut q = Driver::new(4).queue(8);
        mem.write_u16(ipa(AVAIL), VIRTQ_AVAIL_F_NO_INTERRUPT)
            .unwrap();
        assert_eq!(q.wants_interrupt(&mem), Ok(false));
        assert!(q.valid_size(8) && q.valid_size(1));
        assert!(!q.valid_size(6) && !q.valid_size(16) && !q.valid_size(0));
    }

    #[test]
    fn a_budget_bounds_one_round_and_says_work_is_left() {
        let mut mem = VecMemory::new(RAM, 0x4000);
        let mut driver = Driver::new(4);
        let mut q = driver.queue(4);
        for head in 0..3 {
            Driver::descriptor(&mut mem, head, RAM + 0x3800, 8, 0, 0);
            driver.offer(&mut mem, head);
        }
        q.limit(2);
        assert_eq!(q.pop(&mut mem).unwrap().unwrap().head, 0);
        assert_eq!(q.pop(&mut mem).unwrap().unwrap().head, 1);
        assert_eq!(q.pop(&mut mem), Ok(None), "the budget ran out");
        assert!(q.budget_hit());
        q.limit(2);
        assert_eq!(q.pop(&mut mem).unwrap().unwrap().head, 2);
        assert_eq!(q.pop(&mut mem), Ok(None), "the ring ran out");
        assert!(!q.budget_hit());
    }

    #[test]
    fn event_idx_asks_for_the_next_notification_and_interrupts_at_used_event() {
        let mut mem = VecMemory::new(RAM, 0x4000);
        let mut driver = Driver::new(4);
        let mut q = driver.queue(4);
        q.event_idx = true;
        let avail_event = ipa(USED + 4 + 8 * 4);
        let used_event = ipa(AVAIL + 4 + 2 * 4);
        for head in 0..2 {
            Driver::descriptor(&mut mem, head, RAM + 0x3800, 8, 0, 0);
            driver.offer(&mut mem, head);
        }
        assert!(q.pop(&mut mem).unwrap().is_some());
        assert!(q.pop(&mut mem).unwrap().is_some());
        assert_eq!(q.pop(&mut mem), Ok(None));
        assert_eq!(
            mem.read_u16(avail_event),
            Ok(2),
            "found empty: notify me when chain 2 is published"
        );
        // The driver wants an interrupt once the used index passes 1.
        mem.write_u16(used_event, 1).unwrap();
        q.add_used(&mut mem, 0, 8).unwrap();
        assert_eq!(
            q.wants_interrupt(&mem),
            Ok(false),
            "used index 1: not past 1"
        );
        q.add_used(&mut mem, 1, 8).unwrap();
        assert_eq!(q.wants_interrupt(&mem), Ok(true), "used index 2 passed it");
        assert_eq!(q.wants_interrupt(&mem), Ok(false), "nothing new since");
        // NO_INTERRUPT is ignored with EVENT_IDX.
        mem.write_u16(ipa(AVAIL), VIRTQ_AVAIL_F_NO_INTERRUPT)
            .unwrap();
        mem.write_u16(used_event, 2).unwrap();
        Driver::descriptor(&mut mem, 2, RAM + 0x3800, 8, 0, 0);
        driver.offer(&mut mem, 2);
        assert!(q.pop(&mut mem).unwrap().is_some());
        q.add_used(&mut mem, 2, 8).unwrap();
        assert_eq!(q.wants_interrupt(&mem), Ok(true));
    }

    #[test]
    fn a_device_that_stops_for_want_of_buffers_asks_to_hear_of_the_next() {
        let mut mem = VecMemory::new(RAM, 0x4000);
        let mut driver = Driver::new(4);
        let mut q = driver.queue(4);
        q.event_idx = true;
        let avail_event = ipa(USED + 4 + 8 * 4);
        for head in 0..2 {
            Driver::descriptor(&mut mem, head, RAM + 0x3800, 8, 0, 0);
            driver.offer(&mut mem, head);
        }
        // The device takes exactly the chains there are and stops (its
        // input ran out), without looking at the empty ring: the driver's
        // `avail_event` still says chain 0.
        assert!(q.pop(&mut mem).unwrap().is_some());
        assert!(q.pop(&mut mem).unwrap().is_some());
        assert_eq!(mem.read_u16(avail_event), Ok(0));
        // New input, no buffer: before it waits, it asks for chain 2.
        assert!(q.empty_until_notified(&mut mem));
        assert_eq!(mem.read_u16(avail_event), Ok(2));
        // A chain published meanwhile is seen: no waiting.
        Driver::descriptor(&mut mem, 2, RAM + 0x3800, 8, 0, 0);
        driver.offer(&mut mem, 2);
        assert!(!q.empty_until_notified(&mut mem));
    }
}
