//! The virtio-mmio transport (virtio 1.2, 4.2.2, "modern" version 2):
//! `VirtioMmio` puts a `VirtioDevice` behind the register block, and
//! `EmptySlot` is a slot without a device, reading MagicValue, Version 2
//! and DeviceID 0 as QEMU's unused slots do, so Linux's `virtio_mmio` probes
//! every slot the guest DT lists and skips the empty ones quietly.
//!
//! A QueueNotify write only records the queue; the exit handler then calls
//! `VirtioMmio::process` with the VM's memory and drives the interrupt line
//! from `interrupt_pending`.

use alloc::vec::Vec;

use super::queue::{Queue, VIRTIO_F_EVENT_IDX};
use super::{status, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::addr::IntermediatePhysAddr;
use crate::devices::memory::GuestMemory;
use crate::devices::{check_access, AccessWidth, MmioDevice, MmioError, VmDevice};

/// Size of one slot on QEMU's virt board.
pub const SLOT_SIZE: u64 = 0x200;

/// Register offsets.
pub mod reg {
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00C;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0A0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0A4;
    pub const SHM_LEN_LOW: u64 = 0x0B0;
    pub const SHM_LEN_HIGH: u64 = 0x0B4;
    pub const SHM_BASE_LOW: u64 = 0x0B8;
    pub const SHM_BASE_HIGH: u64 = 0x0BC;
    pub const QUEUE_RESET: u64 = 0x0C0;
    pub const CONFIG_GENERATION: u64 = 0x0FC;
    /// Device-specific configuration space starts here.
    pub const CONFIG: u64 = 0x100;
}

/// "virt", little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// The modern (non-legacy) transport.
pub const VERSION_MODERN: u32 = 2;
/// DeviceID 0: no device behind this slot.
pub const DEVICE_ID_NONE: u32 = 0;
/// VendorID QEMU reports ("QEMU").
pub const VENDOR_QEMU: u32 = 0x554D_4551;

/// Chains one queue serves per [`VirtioMmio::process`] call.
pub const QUEUE_BUDGET: usize = 64;

/// InterruptStatus bits.
pub const INTERRUPT_USED_BUFFER: u32 = 1;
pub const INTERRUPT_CONFIG_CHANGE: u32 = 2;

/// The driver must use 32-bit accesses below the configuration space
/// (virtio 1.2, 4.2.2.2).
fn check(offset: u64, width: AccessWidth) -> Result<(), MmioError> {
    check_access(offset, width, SLOT_SIZE)?;
    if offset < reg::CONFIG && width != AccessWidth::Word {
        return Err(MmioError::BadAccess { offset, width });
    }
    Ok(())
}

/// A virtio-mmio slot with no device: identification registers, everything
/// else reads as zero and ignores writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmptySlot;

impl MmioDevice for EmptySlot {
    fn size(&self) -> u64 {
        SLOT_SIZE
    }

    fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        check(offset, width)?;
        Ok(u64::from(match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION_MODERN,
            reg::DEVICE_ID => DEVICE_ID_NONE,
            reg::VENDOR_ID => VENDOR_QEMU,
            _ => 0,
        }))
    }

    fn write(&mut self, offset: u64, width: AccessWidth, _value: u64) -> Result<(), MmioError> {
        check(offset, width)
    }
}

/// A device behind the virtio-mmio register block.
pub struct VirtioMmio<D: VirtioDevice> {
    device: D,
    queues: Vec<Queue>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    interrupt_status: u32,
    config_generation: u32,
    /// Queues notified since the last `process`, one bit per queue.
    notified: u64,
    /// Queues whose backend input found no buffer to go to: not served for
    /// that input again until the driver notifies them (it adds buffers).
    input_stalled: u64,
    /// What the driver made the device do, for the report.
    counts: TransportCounts,
}

/// What crossed the transport since the device was created: the exits a
/// driver caused and the interrupts it got, to tell where a workload's
/// exits go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportCounts {
    /// QueueNotify writes, for queues 0 and 1 (the rest are rarely used).
    pub notifications: [u64; 2],
    /// Times the interrupt line went up.
    pub interrupts: u64,
}

impl<D: VirtioDevice> VirtioMmio<D> {
    pub fn new(device: D) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|max| Queue::new(*max))
            .collect();
        VirtioMmio {
            device,
            queues,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            interrupt_status: 0,
            config_generation: 0,
            notified: 0,
            input_stalled: 0,
            counts: TransportCounts::default(),
        }
    }

    /// What crossed the transport so far.
    pub fn counts(&self) -> TransportCounts {
        self.counts
    }

    /// Raises an interrupt reason, counting the line going up.
    fn raise(&mut self, reason: u32) {
        if self.interrupt_status == 0 {
            self.counts.interrupts += 1;
        }
        self.interrupt_status |= reason;
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    /// Whether the slot's interrupt line is asserted.
    pub fn interrupt_pending(&self) -> bool {
        self.interrupt_status != 0
    }

    /// Marks queue `index` for the next `process`, as a QueueNotify write
    /// would: for a backend with input for the guest (a received frame).
    pub fn notify(&mut self, index: usize) {
        if index < self.queues.len().min(64) {
            self.notified |= 1 << index;
        }
    }

    /// The queue the backend has input for, unless that input already
    /// found the queue without buffers.
    fn input_queue(&self) -> Option<usize> {
        self.device
            .input_waiting()
            .filter(|q| *q < 64 && self.input_stalled & (1 << q) == 0)
    }

    /// The device changed its configuration space: bump the generation and
    /// tell the driver.
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        self.raise(INTERRUPT_CONFIG_CHANGE);
    }

    fn live(&self) -> bool {
        let live = status::FEATURES_OK | status::DRIVER_OK;
        self.status & live == live && self.status & status::DEVICE_NEEDS_RESET == 0
    }

    /// Whether [`Self::process`] has something to do: a queue notified, a
    /// round left over at its budget, or input from the backend.
    pub fn has_work(&self) -> bool {
        self.live() && (self.notified != 0 || self.input_queue().is_some())
    }

    /// Serves the queues notified since the last call, and the one the
    /// backend has input for, each at most [`QUEUE_BUDGET`] chains: what is
    /// left stays notified for the next call ([`Self::has_work`]). A queue
    /// error (a driver breaking the ring protocol) sets DEVICE_NEEDS_RESET
    /// and stops the device until the driver resets it.
    pub fn process(&mut self, mem: &mut dyn GuestMemory) {
        if !self.live() {
            self.notified = 0;
            return;
        }
        if let Some(index) = self.input_queue() {
            self.notify(index);
        }
        let notified = core::mem::take(&mut self.notified);
        let mut raise = 0;
        for (index, queue) in self.queues.iter_mut().enumerate() {
            if notified & (1 << index) == 0 || !queue.ready {
                continue;
            }
            queue.limit(QUEUE_BUDGET);
            let result = self.device.process_queue(index, queue, mem);
            if queue.budget_hit() {
                self.notified |= 1 << index;
            }
            match result {
                Ok(false) => {}
                Ok(true) => {
                    // An unreadable ring cannot say "no interrupt": send one.
                    if queue.wants_interrupt(mem).unwrap_or(true) {
                        raise |= INTERRUPT_USED_BUFFER;
                    }
                }
                Err(_) => {
                    self.status |= status::DEVICE_NEEDS_RESET;
                    self.raise(INTERRUPT_CONFIG_CHANGE);
                    self.notified = 0;
                    return;
                }
            }
        }
        if raise != 0 {
            self.raise(raise);
        }
        // Input is waiting and its queue has no buffer for it: it waits
        // for the driver to add some and notify, which it is asked to do
        // (the round may have ended with the ring emptied by its last
        // chain, before input arrived: without asking, a driver using
        // EVENT_IDX would add buffers silently and the input would wait
        // for ever). Input that arrived while the round ran, with buffers
        // at hand, is served next round.
        if let Some(index) = self.device.input_waiting().filter(|q| *q < 64) {
            let no_buffers = self
                .queues
                .get_mut(index)
                .is_none_or(|q| q.empty_until_notified(mem));
            if no_buffers {
                self.input_stalled |= 1 << index;
            }
        }
    }

    /// The VMs the device delivered to since the last call (a mask).
    pub fn take_wakeups(&mut self) -> u64 {
        self.device.take_wakeups()
    }

    fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Back to the state after power-on (Status = 0, or a VM reset).
    pub fn reset(&mut self) {
        self.device.reset();
        self.queues.iter_mut().for_each(Queue::reset);
        self.status = 0;
        self.driver_features = 0;
        self.interrupt_status = 0;
        self.notified = 0;
        self.input_stalled = 0;
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let newly = value & !self.status;
        let mut value = value;
        if newly & status::FEATURES_OK != 0 {
            let offered = self.device_features();
            let acceptable = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !acceptable {
                value &= !status::FEATURES_OK;
            }
        }
        if newly & status::DRIVER_OK != 0 && value & status::FEATURES_OK != 0 {
            self.device.activate(self.driver_features);
        }
        self.status = value | (self.status & status::DEVICE_NEEDS_RESET);
    }

    /// Sets the low or high half of a queue address while the queue is
    /// being configured (writes to a ready queue are ignored).
    fn set_queue_address(
        &mut self,
        which: fn(&mut Queue) -> &mut IntermediatePhysAddr,
        high: bool,
        value: u32,
    ) {
        let Some(queue) = self.selected_queue().filter(|q| !q.ready) else {
            return;
        };
        let address = which(queue);
        let raw = address.as_u64();
        let raw = if high {
            (raw & 0xFFFF_FFFF) | (u64::from(value) << 32)
        } else {
            (raw & !0xFFFF_FFFF) | u64::from(value)
        };
        *address = IntermediatePhysAddr::new(raw);
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        let selected = self.queues.get(self.queue_sel as usize);
        match offset {
            reg::MAGIC_VALUE => MAGIC,
            reg::VERSION => VERSION_MODERN,
            reg::DEVICE_ID => self.device.device_id(),
            reg::VENDOR_ID => VENDOR_QEMU,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => selected.map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => u32::from(selected.is_some_and(|q| q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            // No shared memory regions: length -1.
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::CONFIG_GENERATION => self.config_generation,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => match self.driver_features_sel {
                0 => {
                    self.driver_features = (self.driver_features & !0xFFFF_FFFF) | u64::from(value)
                }
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xFFFF_FFFF) | (u64::from(value) << 32)
                }
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => {
                if let Some(queue) = self.selected_queue().filter(|q| !q.ready) {
                    if let Ok(size) = u16::try_from(value) {
                        if queue.valid_size(size) {
                            queue.size = size;
                        }
                    }
                }
            }
            reg::QUEUE_READY => {
                let event_idx = self.driver_features & VIRTIO_F_EVENT_IDX != 0;
                if let Some(queue) = self.selected_queue() {
                    queue.ready = value & 1 != 0;
                    queue.event_idx = event_idx;
                }
            }
            reg::QUEUE_NOTIFY => {
                let index = value as usize;
                if index < 64 {
                    self.input_stalled &= !(1 << index);
                }
                if let Some(count) = self.counts.notifications.get_mut(index) {
                    *count += 1;
                }
                self.notify(index);
            }
            reg::INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::STATUS => self.write_status(value),
            reg::QUEUE_DESC_LOW => self.set_queue_address(|q| &mut q.desc_table, false, value),
            reg::QUEUE_DESC_HIGH => self.set_queue_address(|q| &mut q.desc_table, true, value),
            reg::QUEUE_DRIVER_LOW => self.set_queue_address(|q| &mut q.avail_ring, false, value),
            reg::QUEUE_DRIVER_HIGH => self.set_queue_address(|q| &mut q.avail_ring, true, value),
            reg::QUEUE_DEVICE_LOW => self.set_queue_address(|q| &mut q.used_ring, false, value),
            reg::QUEUE_DEVICE_HIGH => self.set_queue_address(|q| &mut q.used_ring, true, value),
            reg::QUEUE_RESET if value & 1 != 0 => {
                if let Some(queue) = self.selected_queue() {
                    queue.reset();
                }
            }
            _ => {}
        }
    }
}

impl VmDevice for EmptySlot {
    fn interrupt_pending(&mut self) -> bool {
        false
    }

    fn reset(&mut self) {}
}

impl<D: VirtioDevice + Send> VmDevice for VirtioMmio<D> {
    fn interrupt_pending(&mut self) -> bool {
        VirtioMmio::interrupt_pending(self)
    }

    fn service(&mut self, mem: &mut dyn GuestMemory) {
        self.process(mem);
    }

    fn has_work(&self) -> bool {
        VirtioMmio::has_work(self)
    }

    fn take_wakeups(&mut self) -> u64 {
        VirtioMmio::take_wakeups(self)
    }

    fn report(&self) -> Option<alloc::string::String> {
        let TransportCounts {
            notifications: [q0, q1],
            interrupts,
        } = self.counts;
        self.device.report().map(|report| {
            alloc::format!(
                "{report}; {q0} notifications of queue 0, {q1} of queue 1, {interrupts} interrupts"
            )
        })
    }

    fn reset(&mut self) {
        VirtioMmio::reset(self);
    }
}

impl<D: VirtioDevice> MmioDevice for VirtioMmio<D> {
    fn size(&self) -> u64 {
        SLOT_SIZE
    }

    fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        check(offset, width)?;
        if offset >= reg::CONFIG {
            let mut bytes = [0u8; 8];
            let len = width.bytes() as usize;
            self.device
                .read_config(offset - reg::CONFIG, &mut bytes[..len]);
            return Ok(u64::from_le_bytes(bytes));
        }
        Ok(u64::from(self.read_register(offset)))
    }

    fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Result<(), MmioError> {
        check(offset, width)?;
        if offset >= reg::CONFIG {
            let len = width.bytes() as usize;
            self.device
                .write_config(offset - reg::CONFIG, &value.to_le_bytes()[..len]);
            return Ok(());
        }
        self.write_register(offset, value as u32);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
