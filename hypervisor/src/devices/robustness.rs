//! Every device model answers any access a guest can make (random offsets,
//! widths and values, including misaligned and out-of-window ones) with a
//! value or an `MmioError`, never a panic; the decoder does the same for
//! any ESR and instruction word. A small xorshift generator keeps the runs
//! reproducible without a property-testing dependency.

use super::gic::{Affinity, Vgic};
use super::memory::fake::VecMemory;
use super::pl011::{CharSink, Pl011};
use super::pl031::{Pl031, TimeSource};
use super::virtio::blk::{MemDisk, VirtioBlk};
use super::virtio::mmio::{reg, EmptySlot, VirtioMmio};
use super::virtio::net::{NetBackend, VirtioNet, OFFLOAD_HEADER};
use super::virtio::queue::{Queue, QueueError};
use super::virtio::VirtioDevice;
use super::{AccessWidth, MmioDevice};
use crate::arch::aarch64::mmio_decode::{decode, decode_instruction, decode_syndrome};
use crate::devices::memory::GuestMemory;

const ROUNDS: usize = 20_000;
const RAM: u64 = 0x4000_0000;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Mostly offsets inside the window (where the registers are), some past it.
fn hammer(device: &mut dyn MmioDevice, seed: u64) {
    let mut rng = XorShift(seed);
    let size = device.size();
    for _ in 0..ROUNDS {
        let r = rng.next();
        let width = AccessWidth::from_log2(r as u8);
        let offset = match r >> 60 {
            0 => rng.next(),
            1 => size + (rng.next() % 64),
            _ => rng.next() % size,
        };
        if r & (1 << 8) == 0 {
            let _ = device.read(offset, width);
        } else {
            let _ = device.write(offset, width, rng.next());
        }
    }
}

struct Sink;
impl CharSink for Sink {
    fn write_byte(&mut self, _byte: u8) {}
}

struct Clock(u64);
impl TimeSource for Clock {
    fn counter(&self) -> u64 {
        self.0
    }
    fn frequency(&self) -> u64 {
        62_500_000
    }
    fn epoch_at_zero(&self) -> u64 {
        u64::MAX - 10
    }
}

/// Serves queue 0 by popping and returning every chain.
struct Drain;
impl VirtioDevice for Drain {
    fn device_id(&self) -> u32 {
        2
    }
    fn features(&self) -> u64 {
        0
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 4]
    }
    fn read_config(&self, _offset: u64, _data: &mut [u8]) {}
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(&mut self, _features: u64) {}
    fn reset(&mut self) {}
    fn process_queue(
        &mut self,
        _i: usize,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        let mut used = false;
        while let Some(chain) = queue.pop(mem)? {
            queue.add_used(mem, chain.head, 0)?;
            used = true;
        }
        Ok(used)
    }
}

#[test]
fn gic_survives_random_accesses() {
    let affinities: Vec<_> = (0..4).map(|i| Affinity::new(0, 0, 0, i)).collect();
    let gic = Vgic::new(64, &affinities).unwrap();
    hammer(&mut gic.distributor(), 1);
    hammer(&mut gic.redistributors(), 2);
    let mut rng = XorShift(3);
    for _ in 0..ROUNDS {
        let (vcpu, value) = ((rng.next() % 6) as usize, rng.next());
        let _ = gic.send_sgi(vcpu, value);
        let _ = gic.raise_edge(vcpu, (value >> 32) as u32 % 130);
        let _ = gic.highest_pending(vcpu);
        let _ = gic.activate(vcpu, value as u32 % 130);
        let _ = gic.deactivate(vcpu, (value >> 8) as u32 % 130);
    }
}

#[test]
fn uart_and_rtc_survive_random_accesses() {
    let mut uart = Pl011::new(Sink);
    for byte in 0..=255 {
        uart.push_rx(byte);
    }
    hammer(&mut uart, 4);
    hammer(&mut Pl031::new(Clock(u64::MAX)), 5);
}

#[test]
fn virtio_survives_random_accesses_and_rings() {
    hammer(&mut EmptySlot, 6);
    let mut slot = VirtioMmio::new(Drain);
    let mut mem = VecMemory::new(RAM, 0x4000);
    for round in 0..ROUNDS / 100 {
        hammer(&mut slot, round as u64 + 8);
        slot.process(&mut mem);
    }
    scribble_on_live_rings(VirtioMmio::new(Drain), 17);
    scribble_on_live_rings(
        VirtioMmio::new(VirtioBlk::new(MemDisk::new(
            alloc::vec![0; 4096],
            false,
            b"x",
        ))),
        18,
    );
    let mut net = VirtioMmio::new(VirtioNet::new(Inbox, [2, 0, 0, 0, 0, 1]));
    net.notify(0);
    scribble_on_live_rings(net, 19);
}

/// A driver that set queue 0 and 1 up properly, then scribbles on the rings
/// and notifies.
fn scribble_on_live_rings<D: VirtioDevice>(mut slot: VirtioMmio<D>, seed: u64) {
    let mut rng = XorShift(seed);
    let mut mem = VecMemory::new(RAM, 0x8000);
    let mut word = |offset: u64, value: u64| {
        slot.write(offset, AccessWidth::Word, value).unwrap();
    };
    word(reg::DRIVER_FEATURES_SEL, 1);
    word(reg::DRIVER_FEATURES, 1);
    word(reg::STATUS, 0b1011);
    for queue in 0..2 {
        let base = RAM + queue * 0x4000;
        word(reg::QUEUE_SEL, queue);
        word(reg::QUEUE_NUM, 64);
        word(reg::QUEUE_DESC_LOW, base);
        word(reg::QUEUE_DRIVER_LOW, base + 0x1000);
        word(reg::QUEUE_DEVICE_LOW, base + 0x2000);
        word(reg::QUEUE_READY, 1);
    }
    word(reg::STATUS, 0b1111);
    for round in 0..ROUNDS / 10 {
        for chunk in mem.bytes.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next().to_le_bytes()[..chunk.len()]);
        }
        slot.write(reg::QUEUE_NOTIFY, AccessWidth::Word, round as u64 % 2)
            .unwrap();
        slot.process(&mut mem);
    }
}

/// Always has a packet for the guest: a broadcast frame of 60 bytes.
struct Inbox;
impl NetBackend for Inbox {
    fn transmit(&mut self, _packet: &[u8]) {}
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        buf[..OFFLOAD_HEADER].fill(0);
        buf[OFFLOAD_HEADER..OFFLOAD_HEADER + 14].fill(0xFF);
        Some(OFFLOAD_HEADER + 60)
    }
    fn has_pending(&self) -> bool {
        true
    }
}

#[test]
fn decoder_survives_any_syndrome_and_instruction() {
    let mut rng = XorShift(9);
    for _ in 0..ROUNDS * 10 {
        let (esr, word) = (rng.next(), rng.next() as u32);
        let _ = decode_syndrome(esr);
        let _ = decode_instruction(word);
        let _ = decode(esr, rng.next(), Some(word));
    }
}
