//! virtio-net (virtio 1.2, 5.1) over a `NetBackend` (a vswitch port):
//! queue 0 receives, queue 1 transmits. Checksum and TCP segmentation
//! offloads are offered both ways: a frame travels with its offload header
//! (`virtio_net_hdr` without `num_buffers`), so a 64 KiB TCP segment one
//! guest hands over reaches another guest as one frame, neither of them
//! cutting it up or summing it. What a receiving guest did not negotiate
//! the device does for it ([`offload`]): it makes the checksum, or cuts
//! the segment into frames of the sender's MSS. Frames too large,
//! truncated, not TCP where the header says so, or with offloads their
//! sender did not negotiate are dropped and counted, never an error that
//! stops the device.

mod offload;

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

use super::queue::{DescriptorChain, Queue, QueueError};
use super::VirtioDevice;
use crate::devices::memory::GuestMemory;

/// DeviceID of a network device.
pub const DEVICE_ID_NET: u32 = 1;
/// Largest frame without offloads: 1514 bytes plus a VLAN tag.
pub const MAX_FRAME: usize = 1518;
/// Largest segmented frame: a 64 KiB IP packet behind an Ethernet header
/// with a VLAN tag.
pub const MAX_GSO_FRAME: usize = 65_535 + 18;
/// Bytes of the offload header a frame travels with: `flags`, `gso_type`,
/// `hdr_len`, `gso_size`, `csum_start`, `csum_offset`.
pub const OFFLOAD_HEADER: usize = 10;
/// Largest packet a backend carries: offload header and frame.
pub const MAX_PACKET: usize = OFFLOAD_HEADER + MAX_GSO_FRAME;

/// Feature bits (virtio 1.2, 5.1.3).
const VIRTIO_NET_F_CSUM: u64 = 1 << 0;
const VIRTIO_NET_F_GUEST_CSUM: u64 = 1 << 1;
const VIRTIO_NET_F_MAC: u64 = 1 << 5;
const VIRTIO_NET_F_GUEST_TSO4: u64 = 1 << 7;
const VIRTIO_NET_F_GUEST_TSO6: u64 = 1 << 8;
const VIRTIO_NET_F_HOST_TSO4: u64 = 1 << 11;
const VIRTIO_NET_F_HOST_TSO6: u64 = 1 << 12;
const VIRTIO_NET_F_STATUS: u64 = 1 << 16;
/// Config `status`: the link is up.
const VIRTIO_NET_S_LINK_UP: u16 = 1;
/// `virtio_net_hdr` with VERSION_1 (num_buffers included).
const HEADER_SIZE: usize = 12;
/// Offset of `num_buffers` in the header.
const NUM_BUFFERS: usize = 10;
/// Header `flags`: the checksum from `csum_start` on is still to be made.
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// Header `gso_type`s.
const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// Offsets in the header.
const FLAGS: usize = 0;
const GSO_TYPE: usize = 1;
const GSO_SIZE: usize = 4;
const CSUM_START: usize = 6;
const CSUM_OFFSET: usize = 8;
const RX_QUEUE: usize = 0;
const TX_QUEUE: usize = 1;
const QUEUE_SIZES: [u16; 2] = [256, 256];

/// The features a frame of `gso_type` needs: `Some(None)` for a frame that
/// is not segmented, `Some(Some((sender's, receiver's)))` for a TCP segment
/// (HOST_TSO and GUEST_TSO of its IP version), `None` for a type not
/// offered.
fn segmentation_features(gso_type: u8) -> Option<Option<(u64, u64)>> {
    match gso_type {
        VIRTIO_NET_HDR_GSO_NONE => Some(None),
        VIRTIO_NET_HDR_GSO_TCPV4 => Some(Some((VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_GUEST_TSO4))),
        VIRTIO_NET_HDR_GSO_TCPV6 => Some(Some((VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_GUEST_TSO6))),
        _ => None,
    }
}

/// Where packets (offload header, then the frame) go and come from.
pub trait NetBackend {
    /// Sends one packet out of the device.
    fn transmit(&mut self, packet: &[u8]);
    /// Copies the next packet waiting for the guest into `buf` (at least
    /// [`MAX_PACKET`] bytes) and returns its length, or `None` if none
    /// waits. Only called with a receive buffer at hand, so nothing is lost
    /// for lack of one.
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize>;
    /// Whether a packet waits for the guest.
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
    /// A transmit chain too short for the header, too long, unreadable, or
    /// asking for an offload its driver did not negotiate.
    pub tx_malformed: u64,
    /// A receive buffer too small or not writable.
    pub rx_malformed: u64,
    /// A frame whose offload could not be done for a guest without it: a
    /// checksum to make outside the frame, or a segment that is not TCP.
    pub rx_offload: u64,
}

/// A virtio network device.
pub struct VirtioNet<B: NetBackend> {
    backend: B,
    mac: [u8; 6],
    drops: Drops,
    /// What the driver negotiated (0 until it does).
    features: u64,
    /// A transmit chain gathered: header, then frame.
    tx_packet: Box<[u8]>,
    /// A received packet, two bytes in: room to turn its offload header
    /// into the guest's header in place.
    rx_packet: Box<[u8]>,
    /// Segments cut from a received packet, waiting for receive buffers.
    rx_segments: VecDeque<Vec<u8>>,
}

/// What a received packet needs before a guest can take it.
enum Delivery {
    /// Nothing more.
    AsItIs,
    /// Cutting into segments of this much payload.
    Segmented(usize),
    /// It cannot be made fit (counted and dropped).
    Refused,
}

impl<B: NetBackend> VirtioNet<B> {
    pub fn new(backend: B, mac: [u8; 6]) -> Self {
        VirtioNet {
            backend,
            mac,
            drops: Drops::default(),
            features: 0,
            tx_packet: alloc::vec![0; HEADER_SIZE + MAX_GSO_FRAME].into_boxed_slice(),
            rx_packet: alloc::vec![0; HEADER_SIZE - OFFLOAD_HEADER + MAX_PACKET].into_boxed_slice(),
            rx_segments: VecDeque::new(),
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

    /// The largest frame a header with these offloads may carry, or `None`
    /// when it asks for one the driver did not negotiate.
    fn sendable(&self, header: &[u8]) -> Option<usize> {
        let flags = header[FLAGS];
        if flags & !VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
            || (flags != 0 && self.features & VIRTIO_NET_F_CSUM == 0)
        {
            return None;
        }
        match segmentation_features(header[GSO_TYPE])? {
            None => Some(MAX_FRAME),
            Some((host, _)) => (self.features & host != 0 && flags != 0).then_some(MAX_GSO_FRAME),
        }
    }

    /// Gathers a transmit chain (header + frame, all driver-readable).
    fn transmit(&mut self, chain: &DescriptorChain, mem: &dyn GuestMemory) {
        let mut len = 0usize;
        for descriptor in &chain.descriptors {
            let n = descriptor.len as usize;
            let end = len
                .checked_add(n)
                .filter(|end| *end <= self.tx_packet.len());
            let Some(end) = end.filter(|_| !descriptor.device_writable) else {
                self.drops.tx_malformed += 1;
                return;
            };
            if mem
                .read(descriptor.address, &mut self.tx_packet[len..end])
                .is_err()
            {
                self.drops.tx_malformed += 1;
                return;
            }
            len = end;
        }
        let largest = self.sendable(&self.tx_packet[..HEADER_SIZE]);
        if len <= HEADER_SIZE || largest.is_none_or(|max| len - HEADER_SIZE > max) {
            self.drops.tx_malformed += 1;
            return;
        }
        // The offload header goes right before the frame (num_buffers,
        // between them, means nothing on the way out).
        let skip = HEADER_SIZE - OFFLOAD_HEADER;
        self.tx_packet.copy_within(..OFFLOAD_HEADER, skip);
        self.backend.transmit(&self.tx_packet[skip..len]);
    }

    /// What `packet` (offload header, frame) needs before a driver that
    /// negotiated `features` takes it; a checksum it cannot take is made
    /// here, in place.
    fn delivery(features: u64, packet: &mut [u8]) -> Delivery {
        let (header, frame) = packet.split_at_mut(OFFLOAD_HEADER);
        let field = |at: usize| usize::from(u16::from_le_bytes([header[at], header[at + 1]]));
        match segmentation_features(header[GSO_TYPE]) {
            None => return Delivery::Refused,
            // Cut here: each segment gets checksums of its own.
            Some(Some((_, guest))) if features & guest == 0 => {
                return Delivery::Segmented(field(GSO_SIZE))
            }
            Some(_) => {}
        }
        if header[FLAGS] & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
            && features & VIRTIO_NET_F_GUEST_CSUM == 0
        {
            let (start, offset) = (field(CSUM_START), field(CSUM_OFFSET));
            if !offload::complete_checksum(frame, start, offset) {
                return Delivery::Refused;
            }
            header[FLAGS] = 0;
        }
        Delivery::AsItIs
    }

    /// Takes the next packet for the guest into `rx_packet` (two bytes in)
    /// as the guest can take it: a segment cut earlier, else one from the
    /// backend (cut first if it must be). Returns its length; `None` when
    /// nothing waits, `Some(0)` for a packet refused (and counted).
    fn next_packet(&mut self) -> Option<usize> {
        let skip = HEADER_SIZE - OFFLOAD_HEADER;
        if let Some(segment) = self.rx_segments.pop_front() {
            self.rx_packet[skip..skip + segment.len()].copy_from_slice(&segment);
            return Some(segment.len());
        }
        let len = self.backend.receive(&mut self.rx_packet[skip..])?;
        if len <= OFFLOAD_HEADER {
            self.drops.rx_offload += 1;
            return Some(0);
        }
        let packet = &mut self.rx_packet[skip..skip + len];
        match Self::delivery(self.features, packet) {
            Delivery::AsItIs => Some(len),
            Delivery::Segmented(mss) if offload::segment(packet, mss, &mut self.rx_segments) => {
                self.next_packet()
            }
            Delivery::Segmented(_) | Delivery::Refused => {
                self.drops.rx_offload += 1;
                Some(0)
            }
        }
    }

    /// Whether a packet waits for the guest.
    fn has_input(&self) -> bool {
        !self.rx_segments.is_empty() || self.backend.has_pending()
    }

    /// Scatters one waiting packet into a receive chain; returns the used
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
        let skip = HEADER_SIZE - OFFLOAD_HEADER;
        let len = match self.next_packet() {
            None | Some(0) => return 0,
            Some(len) => len,
        };
        let total = skip + len;
        if capacity < total as u64 {
            self.drops.rx_malformed += 1;
            return 0;
        }
        // The guest's header: the offload header, then num_buffers.
        self.rx_packet.copy_within(skip..skip + OFFLOAD_HEADER, 0);
        self.rx_packet[NUM_BUFFERS..HEADER_SIZE].copy_from_slice(&1u16.to_le_bytes());
        let mut copied = 0usize;
        for descriptor in &chain.descriptors {
            if copied == total {
                break;
            }
            let n = (descriptor.len as usize).min(total - copied);
            if mem
                .write(descriptor.address, &self.rx_packet[copied..copied + n])
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
        while self.has_input() {
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
        VIRTIO_NET_F_MAC
            | VIRTIO_NET_F_STATUS
            | VIRTIO_NET_F_CSUM
            | VIRTIO_NET_F_GUEST_CSUM
            | VIRTIO_NET_F_HOST_TSO4
            | VIRTIO_NET_F_HOST_TSO6
            | VIRTIO_NET_F_GUEST_TSO4
            | VIRTIO_NET_F_GUEST_TSO6
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

    fn activate(&mut self, features: u64) {
        self.features = features;
    }

    fn reset(&mut self) {
        self.features = 0;
        self.rx_segments.clear();
    }

    fn input_waiting(&self) -> Option<usize> {
        self.has_input().then_some(RX_QUEUE)
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
            "net: {} malformed sent, {} receive buffers refused, {} offloaded frames refused{port}",
            self.drops.tx_malformed,
            self.drops.rx_malformed,
            self.drops.rx_offload
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
