//! The L2 virtual switch between VMs' virtio-net devices: one [`Switch`]
//! per switch name in the manifest, one [`Port`] per network interface.
//!
//! A frame sent into a port is delivered by destination MAC: broadcast,
//! multicast and unknown unicast go to every other port (flooding), a
//! learned unicast MAC to its port only. Source MACs are learned as frames
//! arrive; a MAC that moves is re-learned. Each port has a bounded queue of
//! received frames: a full queue drops the frame and counts it, so a sender
//! never blocks and never waits for another VM to make room. One sender
//! may fill at most its share of another port's queue (the queue divided
//! among the ports that can send to it), so a VM flooding the switch
//! cannot crowd out its neighbours' traffic to the same port.
//!
//! A frame travels with its offload header (the `virtio_net_hdr` fields a
//! checksum or segmentation offload needs, [`OFFLOAD_HEADER`] bytes): the
//! switch passes it on untouched and the receiving device completes what
//! its guest cannot take. A segmented frame (TCP segmentation offload) may
//! be up to [`MAX_GSO_FRAME`] bytes; a port holds at most
//! [`PORT_BIG_BYTES`] of such frames.
//!
//! The sender learns which VMs need waking ([`Switch::send`] returns their
//! mask: those whose queue was empty, since a VM drains its queue once
//! woken) and wakes their CPUs; the receiving VM takes frames from its port
//! ([`Port::pop`]) when its CPU looks at its devices. [`Port::has_frames`]
//! is one atomic load, so that look costs next to nothing when idle.
//!
//! Locking: the learning table and each port's queue have a lock of their
//! own. They are leaves: never held together, never held while taking a VM
//! lock, and held only for a copy of one frame.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

use crate::devices::virtio::net::NetBackend;

pub use crate::devices::virtio::net::{MAX_FRAME, MAX_GSO_FRAME, MAX_PACKET, OFFLOAD_HEADER};
/// Packets a port holds for its VM before it drops.
pub const PORT_QUEUE_FRAMES: usize = 256;
/// Bytes of packets bigger than a plain frame (segmentation offload) a
/// port holds before it drops.
pub const PORT_BIG_BYTES: usize = 512 * 1024;
/// Learned MACs per switch; when full, the oldest entry is forgotten.
const MAC_TABLE_SIZE: usize = 64;
/// Ethernet header: destination, source, EtherType.
const ETHERNET_HEADER: usize = 14;
/// Offset of `gso_type` in the offload header (0: not segmented).
const GSO_TYPE: usize = 1;

/// A MAC address.
pub type Mac = [u8; 6];

fn is_multicast(mac: &Mac) -> bool {
    mac[0] & 1 != 0
}

/// Counters of one port, as the VM's receive side sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Frames delivered into the port's queue.
    pub received: u64,
    /// Frames dropped because the queue was full.
    pub dropped_full: u64,
    /// Frames this port sent that the switch refused (runts, giants).
    pub dropped_malformed: u64,
}

/// One received packet (offload header and frame) and the port it came
/// from.
struct Frame {
    source: usize,
    packet: Vec<u8>,
}

/// What a queue slot keeps allocated: room for a packet without offloads.
/// A bigger (segmentation offload) packet gets room of its own, freed when
/// it leaves the queue.
const SLOT_BYTES: usize = OFFLOAD_HEADER + MAX_FRAME;

/// A ring of packets with a fixed number of slots, counting the packets
/// of each source port it holds and the bytes of the big ones.
struct FrameQueue {
    frames: Box<[Frame]>,
    head: usize,
    len: usize,
    /// Packets held per source port.
    held: Vec<usize>,
    /// Most packets one source may hold.
    share: usize,
    /// Bytes of the packets bigger than a slot that it holds.
    big_bytes: usize,
}

impl FrameQueue {
    /// A queue of `capacity` packets for a port that `senders` other ports
    /// can send to, on a switch of `ports` ports.
    fn new(capacity: usize, ports: usize) -> Self {
        let frames = (0..capacity)
            .map(|_| Frame {
                source: 0,
                packet: Vec::with_capacity(SLOT_BYTES),
            })
            .collect();
        let senders = ports.saturating_sub(1).max(1);
        FrameQueue {
            frames,
            head: 0,
            len: 0,
            held: alloc::vec![0; ports],
            share: (capacity / senders).max(1),
            big_bytes: 0,
        }
    }

    /// Copies `packet` from port `source` in, or returns false when the
    /// queue is full, `source` holds its share of it, or a big packet finds
    /// no room ([`PORT_BIG_BYTES`], or the heap).
    fn push(&mut self, source: usize, packet: &[u8]) -> bool {
        let capacity = self.frames.len();
        let Some(held) = self.held.get_mut(source) else {
            return false;
        };
        if self.len == capacity || *held >= self.share {
            return false;
        }
        let big = packet.len() > SLOT_BYTES;
        if big && self.big_bytes + packet.len() > PORT_BIG_BYTES {
            return false;
        }
        let slot = &mut self.frames[(self.head + self.len) % capacity];
        slot.packet.clear();
        if slot.packet.try_reserve_exact(packet.len()).is_err() {
            return false;
        }
        slot.packet.extend_from_slice(packet);
        slot.source = source;
        *held += 1;
        if big {
            self.big_bytes += packet.len();
        }
        self.len += 1;
        true
    }

    /// Copies the oldest packet into `buf` (at least [`MAX_PACKET`] bytes)
    /// and returns its length.
    fn pop(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let frame = &mut self.frames[self.head];
        let len = frame.packet.len();
        buf.get_mut(..len)?.copy_from_slice(&frame.packet);
        if let Some(held) = self.held.get_mut(frame.source) {
            *held = held.saturating_sub(1);
        }
        if len > SLOT_BYTES {
            self.big_bytes -= len;
            frame.packet = Vec::new();
            // Back to a slot's size; without the memory it stays empty
            // and a later push reserves what it needs.
            let _ = frame.packet.try_reserve_exact(SLOT_BYTES);
        }
        self.head = (self.head + 1) % self.frames.len();
        self.len -= 1;
        Some(len)
    }
}

/// Who owns a port: a VM (by manifest index) and its device's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub vm: usize,
    pub slot: u32,
}

/// One port: the VM that owns it and the frames waiting for it.
pub struct Port {
    owner: Owner,
    queue: Mutex<FrameQueue>,
    /// Frames in `queue`, readable without its lock.
    waiting: AtomicUsize,
    received: AtomicU64,
    dropped_full: AtomicU64,
    dropped_malformed: AtomicU64,
}

impl Port {
    fn new(owner: Owner, capacity: usize, ports: usize) -> Self {
        Port {
            owner,
            queue: Mutex::new(FrameQueue::new(capacity, ports)),
            waiting: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_malformed: AtomicU64::new(0),
        }
    }

    /// Whether a frame waits for the VM.
    pub fn has_frames(&self) -> bool {
        self.waiting.load(Ordering::Acquire) != 0
    }

    /// Takes the oldest waiting packet into `buf` (at least [`MAX_PACKET`]
    /// bytes); returns its length.
    pub fn pop(&self, buf: &mut [u8]) -> Option<usize> {
        let mut queue = self.queue.lock();
        let len = queue.pop(buf)?;
        self.waiting.store(queue.len, Ordering::Release);
        Some(len)
    }

    /// Delivers `frame` from port `source`. Returns whether the port's VM
    /// must be woken for it: the queue was empty (a VM drains its queue
    /// once woken, so frames behind the first need no wake-up of their
    /// own). A frame the queue has no room for is dropped and counted.
    fn deliver(&self, source: usize, packet: &[u8]) -> bool {
        let mut queue = self.queue.lock();
        if !queue.push(source, packet) {
            self.dropped_full.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.waiting.store(queue.len, Ordering::Release);
        self.received.fetch_add(1, Ordering::Relaxed);
        queue.len == 1
    }

    pub fn stats(&self) -> PortStats {
        PortStats {
            received: self.received.load(Ordering::Relaxed),
            dropped_full: self.dropped_full.load(Ordering::Relaxed),
            dropped_malformed: self.dropped_malformed.load(Ordering::Relaxed),
        }
    }
}

/// Learned source MACs, oldest first.
struct MacTable {
    entries: Vec<(Mac, usize)>,
}

impl MacTable {
    fn lookup(&self, mac: &Mac) -> Option<usize> {
        self.entries
            .iter()
            .find(|(m, _)| m == mac)
            .map(|(_, port)| *port)
    }

    fn learn(&mut self, mac: Mac, port: usize) {
        match self.entries.iter_mut().find(|(m, _)| *m == mac) {
            Some(entry) => entry.1 = port,
            None => {
                if self.entries.len() == MAC_TABLE_SIZE {
                    self.entries.remove(0);
                }
                self.entries.push((mac, port));
            }
        }
    }
}

/// An L2 learning switch.
pub struct Switch {
    name: String,
    ports: Vec<Port>,
    table: Mutex<MacTable>,
}

impl Switch {
    /// A switch named `name` with one port per entry of `owners`, each
    /// holding up to `queue_frames` frames.
    pub fn new(name: &str, owners: &[Owner], queue_frames: usize) -> Self {
        Switch {
            name: String::from(name),
            ports: owners
                .iter()
                .map(|owner| Port::new(*owner, queue_frames, owners.len()))
                .collect(),
            table: Mutex::new(MacTable {
                entries: Vec::new(),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Port `index`, if there is one.
    pub fn port(&self, index: usize) -> Option<&Port> {
        self.ports.get(index)
    }

    /// Sends `packet` (offload header, then the frame) in through port
    /// `from`. Returns the VMs (a mask of owner indices below 64) to wake
    /// up for it.
    pub fn send(&self, from: usize, packet: &[u8]) -> u64 {
        let Some(source_port) = self.ports.get(from) else {
            return 0;
        };
        let frame = packet.get(OFFLOAD_HEADER..).unwrap_or_default();
        let segmented = packet.get(GSO_TYPE).is_some_and(|&gso| gso != 0);
        let largest = if segmented { MAX_GSO_FRAME } else { MAX_FRAME };
        if frame.len() < ETHERNET_HEADER || frame.len() > largest {
            source_port
                .dropped_malformed
                .fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        let mut destination: Mac = [0; 6];
        let mut source: Mac = [0; 6];
        destination.copy_from_slice(&frame[0..6]);
        source.copy_from_slice(&frame[6..12]);
        let known = {
            let mut table = self.table.lock();
            if !is_multicast(&source) {
                table.learn(source, from);
            }
            if is_multicast(&destination) {
                None
            } else {
                table.lookup(&destination)
            }
        };
        let mut woken = 0u64;
        let mut deliver = |index: usize, port: &Port| {
            if index != from && port.deliver(from, packet) && port.owner.vm < 64 {
                woken |= 1 << port.owner.vm;
            }
        };
        match known {
            Some(index) => {
                if let Some(port) = self.ports.get(index) {
                    deliver(index, port);
                }
            }
            None => {
                for (index, port) in self.ports.iter().enumerate() {
                    deliver(index, port);
                }
            }
        }
        woken
    }
}

/// Every switch of the machine: one per name the VMs' network devices
/// give, each with one port per device, in the order they were named.
#[derive(Default)]
pub struct Fabric {
    switches: Vec<Switch>,
}

impl Fabric {
    /// Builds the switches for `ports`: (switch name, owner) pairs.
    pub fn new<'a>(ports: impl IntoIterator<Item = (&'a str, Owner)>) -> Self {
        let mut named: Vec<(&'a str, Vec<Owner>)> = Vec::new();
        for (name, owner) in ports {
            match named.iter_mut().find(|(n, _)| *n == name) {
                Some((_, owners)) => owners.push(owner),
                None => named.push((name, alloc::vec![owner])),
            }
        }
        Fabric {
            switches: named
                .iter()
                .map(|(name, owners)| Switch::new(name, owners, PORT_QUEUE_FRAMES))
                .collect(),
        }
    }

    /// The port `owner` has on the switch called `switch`.
    pub fn port(&'static self, switch: &str, owner: Owner) -> Option<SwitchPort> {
        let switch = self.switches.iter().find(|s| s.name == switch)?;
        let port = switch.ports.iter().position(|p| p.owner == owner)?;
        Some(SwitchPort::new(switch, port))
    }
}

/// A VM's end of a switch port: the backend of its virtio-net device.
pub struct SwitchPort {
    switch: &'static Switch,
    port: usize,
    /// VMs this port's frames went to since `take_wakeups`.
    wake: u64,
}

impl SwitchPort {
    /// Port `port` of `switch` (which lives as long as the machine).
    pub fn new(switch: &'static Switch, port: usize) -> Self {
        SwitchPort {
            switch,
            port,
            wake: 0,
        }
    }

    fn own(&self) -> Option<&'static Port> {
        self.switch.port(self.port)
    }
}

impl NetBackend for SwitchPort {
    fn transmit(&mut self, packet: &[u8]) {
        self.wake |= self.switch.send(self.port, packet);
    }

    fn receive(&mut self, buf: &mut [u8]) -> Option<usize> {
        self.own()?.pop(buf)
    }

    fn has_pending(&self) -> bool {
        self.own().is_some_and(Port::has_frames)
    }

    fn take_wakeups(&mut self) -> u64 {
        core::mem::take(&mut self.wake)
    }

    fn report(&self) -> Option<alloc::string::String> {
        let stats = self.own()?.stats();
        Some(alloc::format!(
            "switch {}: {} frames in, {} dropped for a full queue, {} refused",
            self.switch.name(),
            stats.received,
            stats.dropped_full,
            stats.dropped_malformed
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [0x02, 0, 0, 0, 0, 0xa];
    const B: Mac = [0x02, 0, 0, 0, 0, 0xb];
    const C: Mac = [0x02, 0, 0, 0, 0, 0xc];
    const BROADCAST: Mac = [0xff; 6];

    /// `frame` behind an offload header that asks for nothing.
    fn packet(frame: &[u8]) -> Vec<u8> {
        let mut p = alloc::vec![0; OFFLOAD_HEADER];
        p.extend_from_slice(frame);
        p
    }

    /// A packet of a 60-byte frame.
    fn frame(to: Mac, from: Mac, payload: u8) -> Vec<u8> {
        let mut f = alloc::vec![0; OFFLOAD_HEADER];
        f.extend_from_slice(&to);
        f.extend_from_slice(&from);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[payload; 46]);
        f
    }

    /// The frame of the next packet waiting at `port`.
    fn take(port: &Port) -> Option<Vec<u8>> {
        let mut buf = alloc::vec![0u8; MAX_PACKET];
        port.pop(&mut buf)
            .map(|len| buf[OFFLOAD_HEADER..len].to_vec())
    }

    fn owners(vms: &[usize]) -> Vec<Owner> {
        vms.iter().map(|vm| Owner { vm: *vm, slot: 0 }).collect()
    }

    /// Three ports owned by VMs 0, 1 and 2.
    fn three() -> Switch {
        Switch::new("lan0", &owners(&[0, 1, 2]), 4)
    }

    #[test]
    fn broadcast_and_unknown_unicast_flood_every_other_port() {
        let s = three();
        assert_eq!(s.send(0, &frame(BROADCAST, A, 1)), 0b110);
        assert_eq!(
            s.send(0, &frame(B, A, 2)),
            0,
            "B not learned yet: flooded, and nobody to wake again"
        );
        let port = |i| s.port(i).unwrap();
        assert!(!port(0).has_frames(), "never back to the sender");
        for i in [1, 2] {
            assert_eq!(take(port(i)).unwrap()[12 + 2], 1);
            assert_eq!(take(port(i)).unwrap()[12 + 2], 2);
            assert_eq!(take(port(i)), None);
            assert!(!port(i).has_frames());
        }
    }

    #[test]
    fn learned_macs_are_forwarded_to_their_port_only() {
        let s = three();
        s.send(1, &frame(BROADCAST, B, 0));
        s.send(2, &frame(BROADCAST, C, 0));
        for i in 0..3 {
            while take(s.port(i).unwrap()).is_some() {}
        }
        assert_eq!(s.send(0, &frame(B, A, 7)), 0b010);
        assert_eq!(take(s.port(1).unwrap()).unwrap()[14], 7);
        assert!(!s.port(2).unwrap().has_frames());
        // A reply to A goes to A's port, learned from its first frame.
        assert_eq!(s.send(1, &frame(A, B, 8)), 0b001);
        // B moves to port 2: the table follows.
        s.send(2, &frame(BROADCAST, B, 0));
        while take(s.port(0).unwrap()).is_some() {}
        assert_eq!(s.send(0, &frame(B, A, 9)), 0b100);
    }

    #[test]
    fn a_frame_to_the_senders_own_port_is_not_looped_back() {
        let s = three();
        s.send(0, &frame(BROADCAST, A, 0));
        assert_eq!(s.send(0, &frame(A, A, 1)), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking_the_sender() {
        let s = Switch::new("lan0", &owners(&[0, 1]), 2);
        for i in 0..5 {
            let woken = s.send(0, &frame(BROADCAST, A, i));
            assert_eq!(woken, if i == 0 { 0b10 } else { 0 }, "only the first wakes");
        }
        let port = s.port(1).unwrap();
        assert_eq!(
            port.stats(),
            PortStats {
                received: 2,
                dropped_full: 3,
                dropped_malformed: 0
            }
        );
        assert_eq!(take(port).unwrap()[14], 0, "the oldest frames were kept");
        assert_eq!(take(port).unwrap()[14], 1);
        // Room again, and an empty queue: a wake-up.
        assert_eq!(s.send(0, &frame(BROADCAST, A, 9)), 0b10);
    }

    #[test]
    fn a_flooding_sender_leaves_room_for_the_others() {
        // Port 2 floods port 0: it may fill half of port 0's queue (two
        // ports can send to it), so port 1's frames still get in.
        let s = Switch::new("lan0", &owners(&[0, 1, 2]), 4);
        s.send(0, &frame(BROADCAST, A, 0));
        for i in 0..10 {
            s.send(2, &frame(A, C, i));
        }
        assert_eq!(s.port(0).unwrap().stats().received, 2);
        assert_eq!(s.send(1, &frame(A, B, 42)), 0, "port 0 is awake already");
        assert_eq!(s.port(0).unwrap().stats().received, 3);
        let port = s.port(0).unwrap();
        let payloads: Vec<u8> = core::iter::from_fn(|| take(port)).map(|f| f[14]).collect();
        assert_eq!(payloads, [0, 1, 42]);
        // Once drained, the flooder gets its share again.
        assert_eq!(s.send(2, &frame(A, C, 7)), 0b001);
    }

    #[test]
    fn runts_and_giants_are_refused_and_counted() {
        let s = three();
        assert_eq!(s.send(0, &packet(&[0u8; 13])), 0);
        assert_eq!(s.send(0, &[0u8; OFFLOAD_HEADER - 1]), 0);
        assert_eq!(s.send(0, &packet(&[0xffu8; MAX_FRAME + 1])), 0);
        assert_eq!(
            s.send(0, &packet(&[0xffu8; MAX_FRAME])),
            0b110,
            "the largest fits"
        );
        assert_eq!(s.port(0).unwrap().stats().dropped_malformed, 3);
        // A segmented frame may be bigger, up to a 64 KiB IP packet.
        let mut segmented = packet(&[0xffu8; MAX_GSO_FRAME]);
        segmented[GSO_TYPE] = 1;
        assert_eq!(s.send(0, &segmented), 0, "queued behind the first");
        segmented.push(0);
        assert_eq!(s.send(0, &segmented), 0);
        assert_eq!(s.port(0).unwrap().stats().dropped_malformed, 4);
        assert_eq!(s.port(1).unwrap().stats().received, 2);
        assert_eq!(s.send(7, &frame(BROADCAST, A, 0)), 0, "no such port");
    }

    #[test]
    fn big_packets_are_held_up_to_a_byte_budget() {
        let s = Switch::new("lan0", &owners(&[0, 1]), 64);
        let mut big = frame(BROADCAST, A, 0);
        big.resize(OFFLOAD_HEADER + MAX_GSO_FRAME, 0);
        big[GSO_TYPE] = 1;
        let fit = PORT_BIG_BYTES / big.len();
        for _ in 0..fit + 2 {
            s.send(0, &big);
        }
        let port = s.port(1).unwrap();
        assert_eq!(port.stats().received, fit as u64);
        assert_eq!(port.stats().dropped_full, 2);
        // Small frames still get in, and a drained port takes big ones.
        s.send(0, &frame(BROADCAST, A, 5));
        assert_eq!(port.stats().received, fit as u64 + 1);
        while take(port).is_some() {}
        s.send(0, &big);
        assert_eq!(take(port).map(|f| f.len()), Some(MAX_GSO_FRAME));
    }

    #[test]
    fn the_table_forgets_the_oldest_when_full() {
        let s = Switch::new("lan0", &owners(&[0, 1, 2]), 4);
        let mac = |i: usize| [0x02, 0, 0, 0, (i >> 8) as u8, i as u8];
        for i in 0..=MAC_TABLE_SIZE {
            s.send(1, &frame(BROADCAST, mac(i), 0));
            for p in 0..3 {
                while take(s.port(p).unwrap()).is_some() {}
            }
        }
        // mac(0) was forgotten: flooded; mac(1) is still known.
        assert_eq!(s.send(0, &frame(mac(0), A, 0)), 0b110);
        for p in 0..3 {
            while take(s.port(p).unwrap()).is_some() {}
        }
        assert_eq!(s.send(0, &frame(mac(1), A, 0)), 0b010);
    }

    #[test]
    fn owners_past_63_get_frames_but_no_wake_bit() {
        let s = Switch::new("lan0", &owners(&[0, 70]), 4);
        assert_eq!(s.send(0, &frame(BROADCAST, A, 0)), 0);
        assert!(s.port(1).unwrap().has_frames());
    }

    #[test]
    fn a_port_reports_its_counts() {
        let fabric: &'static Fabric = Box::leak(Box::new(Fabric::new([
            ("lan0", Owner { vm: 0, slot: 0 }),
            ("lan0", Owner { vm: 1, slot: 0 }),
        ])));
        let mut a = fabric.port("lan0", Owner { vm: 0, slot: 0 }).unwrap();
        let b = fabric.port("lan0", Owner { vm: 1, slot: 0 }).unwrap();
        a.transmit(&frame(BROADCAST, A, 1));
        a.transmit(&packet(&[0; 3]));
        assert_eq!(
            b.report().as_deref(),
            Some("switch lan0: 1 frames in, 0 dropped for a full queue, 0 refused")
        );
        assert_eq!(
            a.report().as_deref(),
            Some("switch lan0: 0 frames in, 0 dropped for a full queue, 1 refused")
        );
    }

    #[test]
    fn a_fabric_has_a_switch_per_name_and_finds_each_port() {
        let a0 = Owner { vm: 0, slot: 0 };
        let b0 = Owner { vm: 1, slot: 0 };
        let b1 = Owner { vm: 1, slot: 1 };
        let fabric: &'static Fabric = Box::leak(Box::new(Fabric::new([
            ("lan0", a0),
            ("wan", b1),
            ("lan0", b0),
        ])));
        assert_eq!(fabric.switches.len(), 2);
        let mut from_a = fabric.port("lan0", a0).unwrap();
        let mut at_b = fabric.port("lan0", b0).unwrap();
        let mut on_wan = fabric.port("wan", b1).unwrap();
        assert!(fabric.port("wan", a0).is_none());
        assert!(fabric.port("dmz", a0).is_none());
        from_a.transmit(&frame(BROADCAST, A, 5));
        assert_eq!(from_a.take_wakeups(), 0b10);
        assert_eq!(from_a.take_wakeups(), 0);
        assert!(at_b.has_pending());
        assert!(!on_wan.has_pending(), "another switch");
        let mut buf = alloc::vec![0u8; MAX_PACKET];
        assert_eq!(at_b.receive(&mut buf), Some(OFFLOAD_HEADER + 60));
        assert_eq!(on_wan.receive(&mut buf), None);
    }
}
