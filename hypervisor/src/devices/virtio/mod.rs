//! virtio devices over the MMIO transport (virtio 1.2): the transport
//! (`mmio`), split virtqueues (`queue`), the `VirtioDevice` trait a device
//! implements, and the block (`blk`) and network (`net`) devices. Devices
//! reach guest memory only through `GuestMemory`, so each is tested on the
//! host against fake RAM.

pub mod blk;
pub mod mmio;
pub mod net;
pub mod queue;

use queue::{Queue, QueueError};

use crate::devices::memory::GuestMemory;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    pub const FAILED: u32 = 128;
}

/// VIRTIO_F_VERSION_1: the modern interface; the transport always offers
/// it and requires the driver to accept it.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// A virtio device behind a transport.
pub trait VirtioDevice {
    /// DeviceID (virtio 1.2, 5): 1 net, 2 block, ...
    fn device_id(&self) -> u32;

    /// Device-type feature bits; the transport adds VIRTIO_F_VERSION_1.
    fn features(&self) -> u64;

    /// QueueNumMax of each queue; their count is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Reads device configuration space; bytes past its end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes device configuration space; writes past its end are ignored.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// The driver set DRIVER_OK after negotiating `features`.
    fn activate(&mut self, features: u64);

    /// The driver reset the device (Status = 0).
    fn reset(&mut self);

    /// Serves queue `index` after a notification; returns whether it put
    /// buffers in the used ring (the transport then interrupts). The
    /// queue's budget ([`Queue::limit`]) bounds how many chains it takes.
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError>;

    /// The queue for which the backend has input waiting (a received
    /// frame), if any: the transport serves it without a notification.
    fn input_waiting(&self) -> Option<usize> {
        None
    }

    /// The VMs (a mask of manifest indices) the backend delivered something
    /// to since the last call, whose CPUs must be woken to take it.
    fn take_wakeups(&mut self) -> u64 {
        0
    }

    /// What the device counted, for the line the VM prints when it stops.
    fn report(&self) -> Option<alloc::string::String> {
        None
    }
}
