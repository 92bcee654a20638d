//! virtio-net (virtio 1.2, 5.1) over a `NetBackend` (a vswitch port):
//! queue 0 receives, queue 1 transmits. No offloads are offered, so every
//! frame is a plain Ethernet frame of at most MAX_FRAME bytes behind the
//! 12-byte `virtio_net_hdr`; larger or truncated frames are dropped and
//! counted, never an error that stops the device.

use super::queue::{DescriptorChain, Queue, QueueError};
use super::VirtioDevice;
use crate::devices::memory::GuestMemory;

/// DeviceID of a network device.
pub const DEVICE_ID_NET: u32 = 1;
/// Largest frame without offloads: 1514 bytes plus a VLAN tag.
pub const MAX_FRAME: usize = 1518;

/// Feature bits (virtio 1.2, 5.1.3).
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
/// Config `status`: the link is up.
const VIRTIO_NET_S_LINK_UP: u16 = 1;
/// `virtio_net_hdr` with VERSION_1 (num_buffers included).
const HEADER_SIZE: usize = 12;
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS: usize = 10;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const QUEUE_SIZES: [u16; 2] = [256, 256];

/// Where frames go and come from.
pub trait NetBackend {
    /// Sends one Ethernet frame out of the device.
    fn transmit(&mut self, frame: &[u8]);
    /// Copies the next frame waiting for the guest into `buf` and returns
    /// its length, or `None` if none waits. Only called with a receive
    /// buffer at hand, so nothing is lost for lack of one.
    fn receive(&mut self, buf: &mut [u8; MAX_FRAME]) -> Option<usize>;
    /// Whether a frame waits for the guest.
    fn has_pending(&self) -> bool;
    /// The VMs (a mask of manifest indices) that frames went to since the
    /// last call, to be woken.
    fn take_wakeups(&mut self) -> u64 {
        0
    }
    /// What the backend counted, for the device's report.
    fn report(&self) -> Option<alloc::string::String> {
        None
    }
}

/// Frames the device dropped, by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// A transmit chain too short for the header, too long, or unreadable.
    pub tx_malformed: u64,
    /// A receive buffer too small or not writable.
    pub rx_malformed: u64,
}

/// A virtio network device.
pub struct VirtioNet<B: NetBackend> {
    backend: B,
    mac: [u8; 6],
    drops: Drops,
}

impl<B: NetBackend> VirtioNet<B> {
    pub fn new(backend: B, mac: [u8; 6]) -> Self {
        VirtioNet {
            backend,
            mac,
            drops: Drops::default(),
        }
    }

    pub fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    pub fn drops(&self) -> Drops {
        self.drops
    }

    fn config(&self) -> [u8; 8] {
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        config[6..].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        config
    }

    /// Gathers a transmit chain (header + frame, all driver-readable).
    fn transmit(&mut self, chain: &DescriptorChain, mem: &dyn GuestMemory) {
        let mut packet = [0u8; HEADER_SIZE + MAX_FRAME];
        let mut len = 0usize;
        for descriptor in &chain.descriptors {
            let n = descriptor.len as usize;
            let end = len.checked_add(n).filter(|end| *end <= packet.len());
            let Some(end) = end.filter(|_| !descriptor.device_writable) else {
                self.drops.tx_malformed += 1;
                return;
            };
            if mem.read(descriptor.address, &mut packet[len..end]).is_err() {
                self.drops.tx_malformed += 1;
                return;
            }
            len = end;
        }
        if len <= HEADER_SIZE {
            self.drops.tx_malformed += 1;
            return;
        }
        self.backend.transmit(&packet[HEADER_SIZE..len]);
    }

    /// Scatters one waiting frame into a receive chain; returns the used
    /// length (0 when the buffer could not take it).
    fn receive(&mut self, chain: &DescriptorChain, mem: &mut dyn GuestMemory) -> u32 {
        let capacity: u64 = chain.descriptors.iter().map(|d| u64::from(d.len)).sum();
        let writable = chain.descriptors.iter().all(|d| d.device_writable);
        if !writable || capacity < (HEADER_SIZE + MAX_FRAME) as u64 {
            // Linux posts buffers of at least this size when no offloads
            // are negotiated; a smaller one would truncate frames.
            self.drops.rx_malformed += 1;
            return 0;
        }
        let mut packet = [0u8; HEADER_SIZE + MAX_FRAME];
        let mut frame = [0u8; MAX_FRAME];
        let Some(frame_len) = self.backend.receive(&mut frame) else {
            return 0;
        };
        let frame_len = frame_len.min(MAX_FRAME);
        packet[NUM_BUFFERS..HEADER_SIZE].copy_from_slice(&1u16.to_le_bytes());
        packet[HEADER_SIZE..HEADER_SIZE + frame_len].copy_from_slice(&frame[..frame_len]);
        let total = HEADER_SIZE + frame_len;
        let mut copied = 0usize;
        for descriptor in &chain.descriptors {
            if copied == total {
                break;
            }
            let n = (descriptor.len as usize).min(total - copied);
            if mem
                .write(descriptor.address, &packet[copied..copied + n])
                .is_err()
            {
                self.drops.rx_malformed += 1;
                return 0;
            }
            copied += n;
        }
        total as u32
    }

    fn serve_rx(
        &mut self,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        let mut used = false;
        while self.backend.has_pending() {
            let Some(chain) = queue.pop(mem)? else { break };
            let len = self.receive(&chain, mem);
            queue.add_used(mem, chain.head, len)?;
            used = true;
        }
        Ok(used)
    }

    fn serve_tx(
        &mut self,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        let mut used = false;
        while let Some(chain) = queue.pop(mem)? {
            self.transmit(&chain, mem);
            queue.add_used(mem, chain.head, 0)?;
            used = true;
        }
        Ok(used)
    }
}

impl<B: NetBackend> VirtioDevice for VirtioNet<B> {
    fn device_id(&self) -> u32 {
        DEVICE_ID_NET
    }

    fn features(&self) -> u64 {
        VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    /// `mac` (6 bytes) then `status` (u16).
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = self.config();
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset
                .checked_add(i as u64)
                .and_then(|at| usize::try_from(at).ok());
            *byte = at.and_then(|at| config.get(at)).copied().unwrap_or(0);
        }
    }

    /// `mac` is read-only without VIRTIO_NET_F_CTRL_MAC_ADDR.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, _features: u64) {}

    fn reset(&mut self) {}

    fn input_waiting(&self) -> Option<usize> {
        self.backend.has_pending().then_some(RX_QUEUE)
    }

    fn take_wakeups(&mut self) -> u64 {
        self.backend.take_wakeups()
    }

    fn report(&self) -> Option<alloc::string::String> {
        let port = self
            .backend
            .report()
            .map(|r| alloc::format!(", {r}"))
            .unwrap_or_default();
        Some(alloc::format!(
            "net: {} malformed sent, {} receive buffers refused{port}",
            self.drops.tx_malformed,
            self.drops.rx_malformed
        ))
    }

    /// Queue 0 takes waiting frames (the transport serves it when
    /// `input_waiting` says so); queue 1 sends what the guest posted.
    fn process_queue(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        match index {
            RX_QUEUE => self.serve_rx(queue, mem),
            TX_QUEUE => self.serve_tx(queue, mem),
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests;
