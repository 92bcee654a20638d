//! Fuzz targets for virtio: the split virtqueue on its own, the MMIO
//! transport, the block and network devices behind it, and the switch
//! between network ports. The guest controls the registers and everything
//! in its RAM (descriptor tables, rings, buffers), so the input interleaves
//! register accesses, writes to fake guest RAM, notifications and device
//! service rounds. A driver may first set the queues up properly, so inputs
//! reach the request parsing behind a live queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::devices::access;
use super::Input;
use crate::addr::IntermediatePhysAddr;
use crate::devices::memory::fake::VecMemory;
use crate::devices::memory::GuestMemory;
use crate::devices::virtio::blk::{MemDisk, VirtioBlk};
use crate::devices::virtio::mmio::{reg, VirtioMmio};
use crate::devices::virtio::net::{
    NetBackend, VirtioNet, MAX_GSO_FRAME, MAX_PACKET, OFFLOAD_HEADER,
};
use crate::devices::virtio::queue::{Queue, QueueError, VIRTIO_F_EVENT_IDX};
use crate::devices::virtio::{status, VirtioDevice};
use crate::devices::{AccessWidth, MmioDevice, VmDevice};
use crate::vswitch::{Owner, Switch};

/// Longest sequence of operations one input runs.
const MAX_OPS: usize = 1024;
/// Fake guest RAM: the rings of up to four queues in the first 4 KiB
/// (1 KiB each: descriptors, then the available and used rings), buffers
/// after them.
const RAM: u64 = 0x4000_0000;
const RAM_LEN: usize = 0x4000;
const QUEUE_AREA: u64 = 0x400;
const QUEUE_SIZE: u64 = 8;

fn ipa(raw: u64) -> IntermediatePhysAddr {
    IntermediatePhysAddr::new(raw)
}

/// Writes guest RAM the way a driver (or a hostile guest) does: a few
/// bytes anywhere, mostly in the ring area.
fn scribble(mem: &mut VecMemory, input: &mut Input) {
    let area = if input.bool() { 0x1000 } else { RAM_LEN as u64 };
    let at = u64::from(input.u16()) % area;
    let len = usize::from(input.u8() % 32);
    let bytes = input.bytes(len).to_vec();
    let _ = mem.write(ipa(RAM + at), &bytes);
}

/// Writes one 32-bit register of the transport.
fn word(device: &mut dyn MmioDevice, offset: u64, value: u64) {
    let _ = device.write(offset, AccessWidth::Word, value);
}

/// What a well-behaved driver does: features (VERSION_1, EVENT_IDX if the
/// input says so), each queue at its own area of RAM, DRIVER_OK.
fn set_up(device: &mut dyn MmioDevice, queues: u64, event_idx: bool) {
    word(
        device,
        reg::STATUS,
        u64::from(status::ACKNOWLEDGE | status::DRIVER),
    );
    word(device, reg::DRIVER_FEATURES_SEL, 1);
    word(device, reg::DRIVER_FEATURES, 1);
    word(device, reg::DRIVER_FEATURES_SEL, 0);
    let event = if event_idx { VIRTIO_F_EVENT_IDX } else { 0 };
    word(device, reg::DRIVER_FEATURES, event);
    let features_ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
    word(device, reg::STATUS, u64::from(features_ok));
    for queue in 0..queues {
        let base = RAM + queue * QUEUE_AREA;
        word(device, reg::QUEUE_SEL, queue);
        word(device, reg::QUEUE_NUM, QUEUE_SIZE);
        word(device, reg::QUEUE_DESC_LOW, base);
        word(device, reg::QUEUE_DRIVER_LOW, base + 0x100);
        word(device, reg::QUEUE_DEVICE_LOW, base + 0x200);
        word(device, reg::QUEUE_READY, 1);
    }
    word(
        device,
        reg::STATUS,
        u64::from(features_ok | status::DRIVER_OK),
    );
}

/// A guest driving `slot`: register accesses, RAM writes, notifications,
/// service rounds, and `backend_event` for what arrives from outside.
fn drive<D: VirtioDevice + Send>(
    mut slot: VirtioMmio<D>,
    input: &mut Input,
    mut backend_event: impl FnMut(&mut VirtioMmio<D>, &mut Input),
) {
    let mut mem = VecMemory::new(RAM, RAM_LEN);
    let setup = input.u8();
    if setup & 1 != 0 {
        set_up(&mut slot, 3, setup & 2 != 0);
    }
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 8 {
            0 | 1 => access(&mut slot, input),
            2 | 3 => scribble(&mut mem, input),
            4 => {
                word(&mut slot, reg::QUEUE_NOTIFY, u64::from(input.u8() % 4));
                VmDevice::service(&mut slot, &mut mem);
            }
            5 => {
                if slot.has_work() {
                    slot.process(&mut mem);
                }
                let _ = VmDevice::interrupt_pending(&mut slot);
                let _ = VmDevice::take_wakeups(&mut slot);
                let _ = VmDevice::report(&slot);
            }
            6 => backend_event(&mut slot, input),
            _ => match input.u8() {
                0 => VmDevice::reset(&mut slot),
                1 => slot.config_changed(),
                n => slot.notify(usize::from(n % 4)),
            },
        }
    }
}

/// A device that returns every chain it is given, writing nothing, and
/// has a small configuration space.
struct Echo {
    config: [u8; 12],
}

impl VirtioDevice for Echo {
    fn device_id(&self) -> u32 {
        0x7f
    }
    fn features(&self) -> u64 {
        1
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[256, 8, 1]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            *byte = at.and_then(|a| self.config.get(a)).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            if let Some(slot) = at.and_then(|a| self.config.get_mut(a)) {
                *slot = *byte;
            }
        }
    }
    fn activate(&mut self, _features: u64) {}
    fn reset(&mut self) {
        self.config = [0; 12];
    }
    fn process_queue(
        &mut self,
        _index: usize,
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

/// The virtio-mmio transport, with a device that echoes chains.
pub fn virtio_mmio(data: &[u8]) {
    let mut input = Input::new(data);
    let slot = VirtioMmio::new(Echo { config: [0; 12] });
    drive(slot, &mut input, |slot, _| slot.config_changed());
}

/// virtio-blk behind the transport, over a small disk (read-only if the
/// input says so).
pub fn virtio_blk(data: &[u8]) {
    let mut input = Input::new(data);
    let sectors = usize::from(input.u8() % 8);
    let read_only = input.bool();
    let disk = MemDisk::new(vec![0xa5; sectors * 512], read_only, b"fuzz-disk");
    drive(VirtioMmio::new(VirtioBlk::new(disk)), &mut input, |_, _| {});
}

/// Frames waiting for the guest, from the input (clones share them).
#[derive(Clone, Default)]
struct Inbox {
    frames: Arc<Mutex<VecDeque<Vec<u8>>>>,
}

impl Inbox {
    fn frames(&self) -> std::sync::MutexGuard<'_, VecDeque<Vec<u8>>> {
        self.frames
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl NetBackend for Inbox {
    fn transmit(&mut self, packet: &[u8]) {
        assert!(packet.len() <= MAX_PACKET, "a {}-byte packet", packet.len());
        assert!(packet.len() > OFFLOAD_HEADER, "a packet without a frame");
    }
    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        let packet = self.frames().pop_front()?;
        let len = packet.len().min(MAX_PACKET);
        buf[..len].copy_from_slice(&packet[..len]);
        Some(len)
    }
    fn has_pending(&self) -> bool {
        !self.frames().is_empty()
    }
}

/// virtio-net behind the transport; frames arrive from the input.
pub fn virtio_net(data: &[u8]) {
    let mut input = Input::new(data);
    let inbox = Inbox::default();
    let net = VirtioNet::new(inbox.clone(), [2, 0, 0, 0, 0, 1]);
    drive(VirtioMmio::new(net), &mut input, |slot, input| {
        // Offload header and frame: any header, frames up to a segment's.
        let len = usize::from(input.u16()) % (MAX_GSO_FRAME + 64);
        let mut packet = input.bytes(OFFLOAD_HEADER + len.min(64)).to_vec();
        packet.resize(OFFLOAD_HEADER + len, 0);
        inbox.frames().push_back(packet);
        slot.notify(0);
    });
}

/// One split virtqueue without a transport: any size the device accepts,
/// rings anywhere in RAM (or past it), contents from the input.
pub fn virtio_queue(data: &[u8]) {
    let mut input = Input::new(data);
    let mut mem = VecMemory::new(RAM, RAM_LEN);
    // Up to the largest size our devices offer (a chain walk costs up to
    // the queue size in descriptor reads).
    let max_size = input.pick(&[1, 2, 8, 64, 256]);
    let mut queue = Queue::new(max_size);
    let size = 1u16 << (input.u8() % 9);
    if queue.valid_size(size) {
        queue.size = size;
    }
    let place = |input: &mut Input| {
        if input.u8() == 0xff {
            ipa(input.u64())
        } else {
            ipa(RAM + u64::from(input.u16()) % RAM_LEN as u64)
        }
    };
    queue.desc_table = place(&mut input);
    queue.avail_ring = place(&mut input);
    queue.used_ring = place(&mut input);
    queue.event_idx = input.bool();
    queue.ready = true;
    let mut heads = Vec::new();
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 6 {
            0 | 1 => scribble(&mut mem, &mut input),
            2 => {
                if let Ok(Some(chain)) = queue.pop(&mut mem) {
                    assert!(!chain.descriptors.is_empty());
                    assert!(chain.descriptors.len() <= usize::from(queue.size));
                    heads.push(chain.head);
                }
            }
            3 => {
                let head = heads.pop().unwrap_or_else(|| input.u16());
                let _ = queue.add_used(&mut mem, head, input.u32());
            }
            4 => {
                let _ = queue.wants_interrupt(&mem);
                let _ = queue.has_available(&mem);
            }
            _ => {
                queue.limit(usize::from(input.u8() % 4));
                let _ = queue.budget_hit();
            }
        }
    }
    queue.reset();
}

/// The switch: frames of any length and addresses sent in through any
/// port (some that do not exist), ports draining their queues.
pub fn vswitch(data: &[u8]) {
    let mut input = Input::new(data);
    let ports = usize::from(input.u8() % 6);
    let owners: Vec<Owner> = (0..ports)
        .map(|i| Owner {
            vm: i * 7 % 70,
            slot: u32::from(input.u8()),
        })
        .collect();
    let switch = Switch::new("fuzz", &owners, usize::from(input.u8() % 8));
    let mut buf = vec![0u8; MAX_PACKET];
    // A few MAC addresses, so frames find the ones learnt before.
    let macs: [[u8; 6]; 4] = [
        [0xff; 6],
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        [1, 0, 0x5e, 0, 0, 1],
    ];
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let port = usize::from(input.u8()) % (ports + 1);
        if input.bool() {
            let len = usize::from(input.u16()) % (MAX_GSO_FRAME + 64);
            let mut frame = Vec::with_capacity(OFFLOAD_HEADER + len);
            frame.extend_from_slice(input.bytes(OFFLOAD_HEADER));
            frame.resize(OFFLOAD_HEADER, 0);
            frame.extend_from_slice(&input.pick(&macs));
            frame.extend_from_slice(&input.pick(&macs));
            frame.extend_from_slice(input.bytes(len.min(32)));
            frame.resize(OFFLOAD_HEADER + len, 0);
            let _ = switch.send(port, &frame);
        } else if let Some(p) = switch.port(port) {
            let _ = p.has_frames();
            if let Some(len) = p.pop(&mut buf) {
                assert!(len <= MAX_PACKET);
            }
            let _ = p.stats();
        }
    }
}
