//! Host tests of virtio-net: frames through fake rings against a backend
//! that records what was sent and queues what is to be received.

use alloc::collections::VecDeque;

use super::*;
use crate::addr::IntermediatePhysAddr;
use crate::devices::memory::fake::VecMemory;
use crate::devices::virtio::queue::tests::{Driver, RAM};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const BUFFER: u64 = RAM + 0x8000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;

/// A backend that keeps the packets (offload header, frame) sent and
/// hands out the ones queued.
#[derive(Default)]
struct Port {
    sent: Vec<Vec<u8>>,
    inbox: VecDeque<Vec<u8>>,
}

impl NetBackend for Port {
    fn transmit(&mut self, packet: &[u8]) {
        self.sent.push(packet.to_vec());
    }
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        let packet = self.inbox.pop_front()?;
        buf[..packet.len()].copy_from_slice(&packet);
        Some(packet.len())
    }
    fn has_pending(&self) -> bool {
        !self.inbox.is_empty()
    }
}

fn frame(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 3) as u8).collect()
}

/// `frame` behind an offload header of `offload` (flags, gso_type,
/// hdr_len, gso_size, csum_start, csum_offset).
fn packet(offload: [u16; 6], frame: &[u8]) -> Vec<u8> {
    let [flags, gso_type, rest @ ..] = offload;
    let mut p = alloc::vec![flags as u8, gso_type as u8];
    for field in rest {
        p.extend_from_slice(&field.to_le_bytes());
    }
    p.extend_from_slice(frame);
    p
}

const PLAIN: [u16; 6] = [0; 6];

fn ipa(raw: u64) -> IntermediatePhysAddr {
    IntermediatePhysAddr::new(raw)
}

#[test]
fn transmit_strips_the_header() {
    let mut mem = VecMemory::new(RAM, 0x10000);
    let mut driver = Driver::new(4);
    let mut queue = driver.queue(256);
    let mut net = VirtioNet::new(Port::default(), MAC);
    let payload = frame(60);
    mem.write(ipa(BUFFER + HEADER_SIZE as u64), &payload)
        .unwrap();
    // Header and frame in separate buffers, as Linux may post them.
    Driver::descriptor(&mut mem, 0, BUFFER, HEADER_SIZE as u32, NEXT, 1);
    Driver::descriptor(&mut mem, 1, BUFFER + HEADER_SIZE as u64, 60, 0, 0);
    driver.offer(&mut mem, 0);
    assert_eq!(net.process_queue(TX_QUEUE, &mut queue, &mut mem), Ok(true));
    assert_eq!(net.backend().sent, [packet(PLAIN, &payload)]);
    assert_eq!(Driver::used(&mem, 0), (0, 0));
}

#[test]
fn malformed_transmits_are_dropped_and_counted() {
    let mut mem = VecMemory::new(RAM, 0x10000);
    let mut driver = Driver::new(4);
    let mut queue = driver.queue(256);
    let mut net = VirtioNet::new(Port::default(), MAC);
    Driver::descriptor(&mut mem, 0, BUFFER, HEADER_SIZE as u32, 0, 0);
    Driver::descriptor(
        &mut mem,
        1,
        BUFFER,
        (HEADER_SIZE + MAX_FRAME + 1) as u32,
        0,
        0,
    );
    Driver::descriptor(&mut mem, 2, RAM + 0xFFFF, 64, 0, 0);
    for head in 0..3 {
        driver.offer(&mut mem, head);
    }
    assert_eq!(net.process_queue(TX_QUEUE, &mut queue, &mut mem), Ok(true));
    assert!(net.backend().sent.is_empty());
    assert_eq!(
        net.drops().tx_malformed,
        3,
        "header only, oversized, outside RAM"
    );
    assert_eq!(Driver::used_idx(&mem), 3, "every chain is returned");
}

#[test]
fn receive_fills_posted_buffers_in_order() {
    let mut mem = VecMemory::new(RAM, 0x10000);
    let mut driver = Driver::new(4);
    let mut queue = driver.queue(256);
    let mut net = VirtioNet::new(Port::default(), MAC);
    let size = (HEADER_SIZE + MAX_FRAME) as u32;
    Driver::descriptor(&mut mem, 0, BUFFER, size, WRITE, 0);
    Driver::descriptor(&mut mem, 1, BUFFER + 0x1000, size, WRITE, 0);
    driver.offer(&mut mem, 0);
    driver.offer(&mut mem, 1);
    assert_eq!(
        net.process_queue(RX_QUEUE, &mut queue, &mut mem),
        Ok(false),
        "nothing to receive"
    );
    net.backend().inbox.extend([
        packet(PLAIN, &frame(64)),
        packet(PLAIN, &frame(MAX_FRAME)),
        packet(PLAIN, &frame(100)),
    ]);
    assert_eq!(net.process_queue(RX_QUEUE, &mut queue, &mut mem), Ok(true));
    assert_eq!(Driver::used(&mem, 0), (0, (HEADER_SIZE + 64) as u32));
    assert_eq!(Driver::used(&mem, 1), (1, size));
    let header = &mem.bytes[0x8000..0x8000 + HEADER_SIZE];
    assert_eq!(header[NUM_BUFFERS..], [1, 0], "num_buffers = 1");
    assert_eq!(
        mem.bytes[0x8000 + HEADER_SIZE..0x8000 + HEADER_SIZE + 64],
        frame(64)[..]
    );
    assert_eq!(
        net.backend().inbox.len(),
        1,
        "the third frame waits for a buffer"
    );
}

#[test]
fn small_receive_buffers_do_not_lose_frames() {
    let mut mem = VecMemory::new(RAM, 0x10000);
    let mut driver = Driver::new(4);
    let mut queue = driver.queue(256);
    let mut net = VirtioNet::new(Port::default(), MAC);
    Driver::descriptor(&mut mem, 0, BUFFER, 64, WRITE, 0);
    driver.offer(&mut mem, 0);
    net.backend().inbox.push_back(packet(PLAIN, &frame(60)));
    assert_eq!(net.process_queue(RX_QUEUE, &mut queue, &mut mem), Ok(true));
    assert_eq!(Driver::used(&mem, 0), (0, 0));
    assert_eq!(net.drops().rx_malformed, 1);
    assert_eq!(net.backend().inbox.len(), 1);
}

#[test]
fn config_has_the_mac_and_link_up() {
    let net = VirtioNet::new(Port::default(), MAC);
    let mut config = [0u8; 10];
    net.read_config(0, &mut config);
    assert_eq!(config[..6], MAC);
    assert_eq!(
        u16::from_le_bytes([config[6], config[7]]),
        VIRTIO_NET_S_LINK_UP
    );
    assert_eq!(config[8..], [0, 0]);
    assert_eq!(
        net.features() & (VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS),
        VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS
    );
    assert_eq!(net.device_id(), DEVICE_ID_NET);
}

/// A TCP segment of `len` frame bytes handed over whole (TSO): checksum
/// from byte 34 on, its field 16 bytes further.
const TSO4: [u16; 6] = [1, 1, 54, 1448, 34, 16];

#[test]
fn a_segmentation_offload_passes_through_with_its_header() {
    let mut mem = VecMemory::new(RAM, 0x20000);
    let mut driver = Driver::new(4);
    let mut queue = driver.queue(256);
    let mut net = VirtioNet::new(Port::default(), MAC);
    net.activate(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4);
    let big = frame(8000);
    let sent = packet(TSO4, &big);
    let mut header = sent[..OFFLOAD_HEADER].to_vec();
    header.extend_from_slice(&[0, 0]);
    mem.write(ipa(BUFFER), &header).unwrap();
    mem.write(ipa(BUFFER + 0x1000), &big).unwrap();
    Driver::descriptor(&mut mem, 0, BUFFER, HEADER_SIZE as u32, NEXT, 1);
    Driver::descriptor(&mut mem, 1, BUFFER + 0x1000, 8000, 0, 0);
    driver.offer(&mut mem, 0);
    assert_eq!(net.process_queue(TX_QUEUE, &mut queue, &mut mem), Ok(true));
    assert_eq!(net.backend().sent, [sent]);

    // Without the features, the same chain is refused.
    let mut plain = VirtioNet::new(Port::default(), MAC);
    plain.activate(VIRTIO_NET_F_CSUM);
    driver.offer(&mut mem, 0);
    assert_eq!(
        plain.process_queue(TX_QUEUE, &mut queue, &mut mem),
        Ok(true)
    );
    assert!(plain.backend().sent.is_empty());
    assert_eq!(plain.drops().tx_malformed, 1);
}

#[test]
fn a_segmented_frame_reaches_a_guest_that_takes_it_whole() {
    let mut mem = VecMemory::new(RAM, 0x30000);
    let mut driver = Driver::new(4);
    let mut queue = driver.queue(256);
    let mut net = VirtioNet::new(Port::default(), MAC);
    net.activate(VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4);
    // One buffer big enough, as Linux posts them with GUEST_TSO4.
    Driver::descriptor(&mut mem, 0, BUFFER, 0x11000, WRITE, 0);
    driver.offer(&mut mem, 0);
    let big = frame(8000);
    net.backend().inbox.push_back(packet(TSO4, &big));
    assert_eq!(net.process_queue(RX_QUEUE, &mut queue, &mut mem), Ok(true));
    assert_eq!(Driver::used(&mem, 0), (0, (HEADER_SIZE + 8000) as u32));
    let header = &mem.bytes[0x8000..0x8000 + HEADER_SIZE];
    assert_eq!(header[..OFFLOAD_HEADER], packet(TSO4, &[])[..]);
    assert_eq!(header[NUM_BUFFERS..], [1, 0]);
    assert_eq!(
        mem.bytes[0x8000 + HEADER_SIZE..0x8000 + HEADER_SIZE + 8000],
        big[..]
    );
}

/// An Ethernet frame of TCP over IPv4 with `payload` bytes.
fn tcp4_frame(payload: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&u16::try_from(40 + payload).unwrap().to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1]);
    f.extend_from_slice(&[
        0x13, 0x88, 0xc0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0x10, 0,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend(frame(payload));
    f
}

#[test]
fn a_guest_without_the_offload_gets_the_segments_cut_for_it() {
    let mut mem = VecMemory::new(RAM, 0x10000);
    let mut driver = Driver::new(4);
    let mut queue = driver.queue(256);
    let mut net = VirtioNet::new(Port::default(), MAC);
    net.activate(VIRTIO_NET_F_GUEST_CSUM);
    let size = (HEADER_SIZE + MAX_FRAME) as u32;
    for head in 0..2u16 {
        Driver::descriptor(
            &mut mem,
            head,
            BUFFER + 0x1000 * u64::from(head),
            size,
            WRITE,
            0,
        );
        driver.offer(&mut mem, head);
    }
    net.backend()
        .inbox
        .push_back(packet(TSO4, &tcp4_frame(3000)));
    assert_eq!(net.process_queue(RX_QUEUE, &mut queue, &mut mem), Ok(true));
    // Two buffers, three segments: the third waits for the next buffer.
    assert_eq!(Driver::used(&mem, 0), (0, (HEADER_SIZE + 54 + 1448) as u32));
    assert_eq!(Driver::used(&mem, 1), (1, (HEADER_SIZE + 54 + 1448) as u32));
    assert_eq!(net.input_waiting(), Some(RX_QUEUE));
    Driver::descriptor(&mut mem, 2, BUFFER + 0x2000, size, WRITE, 0);
    driver.offer(&mut mem, 2);
    assert_eq!(net.process_queue(RX_QUEUE, &mut queue, &mut mem), Ok(true));
    assert_eq!(Driver::used(&mem, 2), (2, (HEADER_SIZE + 54 + 104) as u32));
    assert_eq!(net.input_waiting(), None);
    // Each went as a plain frame: no offload asked of the guest.
    for at in [0x8000, 0x9000, 0xa000] {
        assert_eq!(mem.bytes[at..at + OFFLOAD_HEADER], [0; OFFLOAD_HEADER]);
    }
    assert_eq!(net.drops().rx_offload, 0);
}

#[test]
fn a_segment_that_is_not_tcp_is_refused_and_counted() {
    let mut mem = VecMemory::new(RAM, 0x10000);
    let mut driver = Driver::new(4);
    let mut queue = driver.queue(256);
    let mut net = VirtioNet::new(Port::default(), MAC);
    net.activate(VIRTIO_NET_F_GUEST_CSUM);
    Driver::descriptor(
        &mut mem,
        0,
        BUFFER,
        (HEADER_SIZE + MAX_FRAME) as u32,
        WRITE,
        0,
    );
    driver.offer(&mut mem, 0);
    net.backend().inbox.push_back(packet(TSO4, &frame(3000)));
    assert_eq!(net.process_queue(RX_QUEUE, &mut queue, &mut mem), Ok(true));
    assert_eq!(Driver::used(&mem, 0), (0, 0));
    assert_eq!(net.drops().rx_offload, 1);
    assert!(net.backend().inbox.is_empty(), "dropped, not kept");
}

/// The Internet checksum's property: summing a frame with its checksum in
/// place (and a zero pseudo-header) folds to all ones.
fn folds_to_ones(data: &[u8]) -> bool {
    let mut sum: u64 = data
        .chunks(2)
        .map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum == 0xffff
}

#[test]
fn a_checksum_the_guest_cannot_take_is_made_for_it() {
    let mut mem = VecMemory::new(RAM, 0x10000);
    let mut driver = Driver::new(4);
    let mut queue = driver.queue(256);
    let mut net = VirtioNet::new(Port::default(), MAC);
    net.activate(0);
    let size = (HEADER_SIZE + MAX_FRAME) as u32;
    Driver::descriptor(&mut mem, 0, BUFFER, size, WRITE, 0);
    Driver::descriptor(&mut mem, 1, BUFFER + 0x1000, size, WRITE, 0);
    driver.offer(&mut mem, 0);
    driver.offer(&mut mem, 1);
    // An odd length, and a zero pseudo-header sum in the field.
    let mut tcp = frame(1001);
    tcp[50..52].copy_from_slice(&[0, 0]);
    net.backend()
        .inbox
        .push_back(packet([1, 0, 0, 0, 34, 16], &tcp));
    // A field outside the frame: refused.
    net.backend()
        .inbox
        .push_back(packet([1, 0, 0, 0, 34, 2000], &tcp));
    assert_eq!(net.process_queue(RX_QUEUE, &mut queue, &mut mem), Ok(true));
    let header = &mem.bytes[0x8000..0x8000 + HEADER_SIZE];
    assert_eq!(header[FLAGS], 0, "nothing left to do for the guest");
    let got = &mem.bytes[0x8000 + HEADER_SIZE..0x8000 + HEADER_SIZE + 1001];
    assert_ne!(got[50..52], [0, 0]);
    assert!(folds_to_ones(&got[34..]));
    assert_eq!(got[..34], tcp[..34]);
    assert_eq!(Driver::used(&mem, 1), (1, 0));
    assert_eq!(net.drops().rx_offload, 1);
}
