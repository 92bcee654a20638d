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

#[derive(Default)]
struct Port {
    sent: Vec<Vec<u8>>,
    inbox: VecDeque<Vec<u8>>,
}

impl NetBackend for Port {
    fn transmit(&mut self, frame: &[u8]) {
        self.sent.push(frame.to_vec());
    }
    fn receive(&mut self, buf: &mut [u8; MAX_FRAME]) -> Option<usize> {
        let frame = self.inbox.pop_front()?;
        buf[..frame.len()].copy_from_slice(&frame);
        Some(frame.len())
    }
    fn has_pending(&self) -> bool {
        !self.inbox.is_empty()
    }
}

fn frame(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 3) as u8).collect()
}

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
    assert_eq!(net.backend().sent, [payload]);
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
    net.backend()
        .inbox
        .extend([frame(64), frame(MAX_FRAME), frame(100)]);
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
    net.backend().inbox.push_back(frame(60));
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
