//! The virtio attacks: the hostile guest drives its virtio-net device
//! (the first `virtio,mmio` slot with DeviceID 1) with a minimal modern
//! (version 2) driver, floods the switch with broadcast frames, then breaks
//! the ring protocol in the ways a driver can: a descriptor loop, a buffer
//! outside RAM, a ring in MMIO, an available index far ahead, and a
//! receive ring rewritten while the switch delivers into it. A broken ring
//! must end in DEVICE_NEEDS_RESET (virtio 1.2, 2.1.2), or a chain the
//! device cannot read in that chain's being used with nothing sent; never
//! a hung or crashed hypervisor; and a reset device must work again.

use core::fmt;

use crate::arch::{self, sysreg, DeviceWindow, FfaPages};
use crate::platform::Window;

use super::Tally;

/// virtio-mmio registers (virtio 1.2, 4.2.2).
mod reg {
    pub const MAGIC_VALUE: usize = 0x000;
    pub const VERSION: usize = 0x004;
    pub const DEVICE_ID: usize = 0x008;
    pub const DEVICE_FEATURES: usize = 0x010;
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    pub const DRIVER_FEATURES: usize = 0x020;
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    pub const QUEUE_SEL: usize = 0x030;
    pub const QUEUE_NUM_MAX: usize = 0x034;
    pub const QUEUE_NUM: usize = 0x038;
    pub const QUEUE_READY: usize = 0x044;
    pub const QUEUE_NOTIFY: usize = 0x050;
    pub const INTERRUPT_STATUS: usize = 0x060;
    pub const INTERRUPT_ACK: usize = 0x064;
    pub const STATUS: usize = 0x070;
    pub const QUEUE_DESC_LOW: usize = 0x080;
    pub const QUEUE_DESC_HIGH: usize = 0x084;
    pub const QUEUE_DRIVER_LOW: usize = 0x090;
    pub const QUEUE_DRIVER_HIGH: usize = 0x094;
    pub const QUEUE_DEVICE_LOW: usize = 0x0A0;
    pub const QUEUE_DEVICE_HIGH: usize = 0x0A4;
}

const MAGIC: u32 = 0x7472_6976;
const DEVICE_NET: u32 = 1;
const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const STATUS_NEEDS_RESET: u32 = 64;
/// VIRTIO_F_VERSION_1, bit 32: bit 0 of feature word 1.
const FEATURES_HIGH_VERSION_1: u32 = 1;
const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;

const RX: u32 = 0;
const TX: u32 = 1;
/// Entries per queue.
const QUEUE_SIZE: u16 = 8;
/// Where each queue's parts and buffers live in the attack pages.
struct Layout {
    desc: usize,
    avail: usize,
    used: usize,
    buffers: usize,
}
const TX_LAYOUT: Layout = Layout {
    desc: 0x0000,
    avail: 0x0100,
    used: 0x0200,
    buffers: 0x1000,
};
const RX_LAYOUT: Layout = Layout {
    desc: 0x2000,
    avail: 0x2100,
    used: 0x2200,
    buffers: 0x3000,
};
/// virtio_net_hdr with VERSION_1 (num_buffers included).
const NET_HEADER: usize = 12;
/// A minimum Ethernet frame: broadcast, our experimental EtherType.
const FRAME: usize = 60;
const ETHERTYPE_EXPERIMENTAL: [u8; 2] = [0x88, 0xB5];
/// Receive buffers: header and a full frame each.
const RX_BUFFER: usize = 0x800;
/// Frames the flood sends.
const FLOOD: u32 = 20_000;
/// An IPA nothing backs, and a device IPA, for rings and buffers.
const HOLE: u64 = 0x0C00_0000;

/// The device and the guest pages its queues use.
struct Net {
    slot: DeviceWindow,
    pages: FfaPages,
    /// Next available index of each queue (driver side).
    next_avail: [u16; 2],
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "virtio-net at {:#x}", self.slot.base())
    }
}

impl Net {
    fn find(slots: impl Iterator<Item = Window>) -> Option<Net> {
        slots
            .filter_map(DeviceWindow::new)
            .find(|slot| {
                slot.read32(reg::MAGIC_VALUE) == MAGIC
                    && slot.read32(reg::VERSION) == 2
                    && slot.read32(reg::DEVICE_ID) == DEVICE_NET
            })
            .map(|slot| Net {
                slot,
                pages: arch::attack_pages(),
                next_avail: [0; 2],
            })
    }

    fn status(&self) -> u32 {
        self.slot.read32(reg::STATUS)
    }

    fn write16(&self, offset: usize, value: u16) {
        self.pages.write(offset, &value.to_le_bytes());
    }

    fn read16(&self, offset: usize) -> u16 {
        let mut bytes = [0; 2];
        self.pages.read(offset, &mut bytes);
        u16::from_le_bytes(bytes)
    }

    fn descriptor(&self, layout: &Layout, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = layout.desc + usize::from(index) * 16;
        self.pages.write(at, &addr.to_le_bytes());
        self.pages.write(at + 8, &len.to_le_bytes());
        self.pages.write(at + 12, &flags.to_le_bytes());
        self.pages.write(at + 14, &next.to_le_bytes());
    }

    fn queue_address(&self, low: usize, high: usize, ipa: u64) {
        self.slot.write32(low, ipa as u32);
        self.slot.write32(high, (ipa >> 32) as u32);
    }

    /// Resets the device and brings it up again with both queues at the
    /// layouts' pages (or the ring at `tx_desc` instead); returns whether
    /// it accepted the driver.
    fn bring_up(&mut self, tx_desc: Option<u64>) -> bool {
        self.slot.write32(reg::STATUS, 0);
        self.slot
            .write32(reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.slot.write32(reg::DEVICE_FEATURES_SEL, 1);
        if self.slot.read32(reg::DEVICE_FEATURES) & FEATURES_HIGH_VERSION_1 == 0 {
            return false;
        }
        self.slot.write32(reg::DRIVER_FEATURES_SEL, 1);
        self.slot
            .write32(reg::DRIVER_FEATURES, FEATURES_HIGH_VERSION_1);
        self.slot.write32(reg::DRIVER_FEATURES_SEL, 0);
        self.slot.write32(reg::DRIVER_FEATURES, 0);
        self.slot.write32(
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        if self.status() & STATUS_FEATURES_OK == 0 {
            return false;
        }
        self.pages.write(0, &[0; 0x4000]);
        for (queue, layout) in [(RX, &RX_LAYOUT), (TX, &TX_LAYOUT)] {
            self.slot.write32(reg::QUEUE_SEL, queue);
            if self.slot.read32(reg::QUEUE_NUM_MAX) < u32::from(QUEUE_SIZE) {
                return false;
            }
            self.slot.write32(reg::QUEUE_NUM, u32::from(QUEUE_SIZE));
            let base = self.pages.page(0);
            let desc = match (queue, tx_desc) {
                (TX, Some(ipa)) => ipa,
                _ => base + layout.desc as u64,
            };
            self.queue_address(reg::QUEUE_DESC_LOW, reg::QUEUE_DESC_HIGH, desc);
            self.queue_address(
                reg::QUEUE_DRIVER_LOW,
                reg::QUEUE_DRIVER_HIGH,
                base + layout.avail as u64,
            );
            self.queue_address(
                reg::QUEUE_DEVICE_LOW,
                reg::QUEUE_DEVICE_HIGH,
                base + layout.used as u64,
            );
            self.slot.write32(reg::QUEUE_READY, 1);
        }
        self.next_avail = [0; 2];
        self.slot.write32(
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        self.status() & STATUS_NEEDS_RESET == 0
    }

    /// Makes chain `head` of `queue` available and notifies.
    fn offer(&mut self, queue: u32, head: u16) {
        let layout = if queue == TX { &TX_LAYOUT } else { &RX_LAYOUT };
        let index = &mut self.next_avail[queue as usize];
        let slot = usize::from(*index % QUEUE_SIZE);
        let next = index.wrapping_add(1);
        *index = next;
        self.write16(layout.avail + 4 + 2 * slot, head);
        self.write16(layout.avail + 2, next);
        self.slot.write32(reg::QUEUE_NOTIFY, queue);
        self.slot
            .write32(reg::INTERRUPT_ACK, self.slot.read32(reg::INTERRUPT_STATUS));
    }

    /// The used index of `queue`.
    fn used(&self, queue: u32) -> u16 {
        let layout = if queue == TX { &TX_LAYOUT } else { &RX_LAYOUT };
        self.read16(layout.used + 2)
    }

    /// Writes a broadcast frame into TX buffer 0 and describes it in
    /// descriptor 0.
    fn prepare_frame(&self) {
        let mut frame = [0u8; NET_HEADER + FRAME];
        let ethernet = &mut frame[NET_HEADER..];
        ethernet[..6].copy_from_slice(&[0xFF; 6]);
        ethernet[6..12].copy_from_slice(&[0x02, 0x41, 0x54, 0x54, 0x41, 0x4B]);
        ethernet[12..14].copy_from_slice(&ETHERTYPE_EXPERIMENTAL);
        ethernet[14..20].copy_from_slice(b"attack");
        self.pages.write(TX_LAYOUT.buffers, &frame);
        self.descriptor(&TX_LAYOUT, 0, self.pages.page(1), frame.len() as u32, 0, 0);
    }

    /// Offers every receive buffer.
    fn fill_rx(&mut self) {
        for index in 0..QUEUE_SIZE / 2 {
            let addr = self.pages.page(3) + u64::from(index) * RX_BUFFER as u64;
            self.descriptor(
                &RX_LAYOUT,
                index,
                addr,
                RX_BUFFER as u32,
                VIRTQ_DESC_F_WRITE,
                0,
            );
            self.offer(RX, index);
        }
    }
}

/// One way of breaking the ring protocol.
type Break = fn(&mut Net);

/// Runs the virtio attacks on the first virtio-net slot in `slots`.
pub fn attacks(tally: &mut Tally, slots: impl Iterator<Item = Window>) {
    let Some(mut net) = Net::find(slots) else {
        tally.fail("virtio-net", format_args!("no virtio-net device in the DT"));
        return;
    };
    if !net.bring_up(None) {
        tally.fail(
            "virtio-net",
            format_args!("the device refused the driver: status {:#x}", net.status()),
        );
        return;
    }
    net.fill_rx();
    net.prepare_frame();
    let mut sent = 0;
    for _ in 0..FLOOD {
        let before = net.used(TX);
        net.offer(TX, 0);
        if net.used(TX) != before.wrapping_add(1) {
            break;
        }
        sent += 1;
    }
    if sent == FLOOD && net.status() & STATUS_NEEDS_RESET == 0 {
        tally.survived(
            "switch-flood",
            format_args!("{FLOOD} broadcast frames sent, each used at once"),
        );
    } else {
        tally.fail(
            "switch-flood",
            format_args!("{sent} of {FLOOD} frames used, status {:#x}", net.status()),
        );
    }
    // Protocol breaks: each must end in DEVICE_NEEDS_RESET, and the device
    // must work again after a reset.
    let breaks: [(&str, Break); 4] = [
        ("virtqueue-loop", |net| {
            net.descriptor(&TX_LAYOUT, 0, net.pages.page(1), 16, VIRTQ_DESC_F_NEXT, 1);
            net.descriptor(&TX_LAYOUT, 1, net.pages.page(1), 16, VIRTQ_DESC_F_NEXT, 0);
            net.offer(TX, 0);
        }),
        ("virtqueue-buffer-in-hole", |net| {
            net.descriptor(&TX_LAYOUT, 0, HOLE, 64, 0, 0);
            net.offer(TX, 0);
        }),
        ("virtqueue-index-out-of-range", |net| {
            net.descriptor(&TX_LAYOUT, 0, net.pages.page(1), 64, 0, 0);
            net.offer(TX, QUEUE_SIZE + 3);
        }),
        ("virtqueue-avail-far-ahead", |net| {
            net.prepare_frame();
            net.write16(TX_LAYOUT.avail + 2, 0x8000);
            net.slot.write32(reg::QUEUE_NOTIFY, TX);
        }),
    ];
    for (name, attack) in breaks {
        let before = net.used(TX);
        attack(&mut net);
        let dropped = net.used(TX) == before.wrapping_add(1);
        let status = net.status();
        let recovered = net.bring_up(None);
        if recovered {
            net.fill_rx();
            net.prepare_frame();
        }
        if status & STATUS_NEEDS_RESET != 0 && recovered {
            tally.survived(
                name,
                format_args!("DEVICE_NEEDS_RESET, and the reset device works"),
            );
        } else if dropped && recovered {
            // A chain the device can use but not read: dropped, as a NIC
            // drops a frame it cannot fetch.
            tally.survived(name, format_args!("chain used, nothing sent"));
        } else {
            tally.fail(
                name,
                format_args!("status {status:#x}, reset device accepted: {recovered}"),
            );
        }
    }
    // The transmit ring in the distributor: the device reads MMIO as its
    // ring, or refuses it.
    let gicd_ring = net.bring_up(Some(0x0800_0000));
    net.offer(TX, 0);
    let status = net.status();
    let recovered = net.bring_up(None);
    if status & STATUS_NEEDS_RESET != 0 && recovered {
        tally.survived(
            "virtqueue-ring-in-mmio",
            format_args!("DEVICE_NEEDS_RESET, and the reset device works"),
        );
    } else {
        tally.fail(
            "virtqueue-ring-in-mmio",
            format_args!("accepted {gicd_ring}, status {status:#x}, recovered {recovered}"),
        );
    }
    // The receive ring rewritten, over and over, while the victim's
    // broadcasts arrive: buffers in the hole, zero-length, chained in a
    // loop, and good again.
    net.fill_rx();
    let deadline = sysreg::counter().saturating_add(sysreg::counter_frequency() / 5);
    let mut rounds = 0u32;
    while sysreg::counter() < deadline {
        let good = net.pages.page(3);
        let (addr, len, flags) = match rounds % 4 {
            0 => (HOLE, RX_BUFFER as u32, VIRTQ_DESC_F_WRITE),
            1 => (good, 0, VIRTQ_DESC_F_WRITE),
            2 => (
                good,
                RX_BUFFER as u32,
                VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT,
            ),
            _ => (good, RX_BUFFER as u32, VIRTQ_DESC_F_WRITE),
        };
        net.descriptor(&RX_LAYOUT, 0, addr, len, flags, 0);
        net.offer(RX, 0);
        if net.status() & STATUS_NEEDS_RESET != 0 && net.bring_up(None) {
            net.fill_rx();
        }
        rounds += 1;
    }
    net.prepare_frame();
    let before = net.used(TX);
    net.offer(TX, 0);
    if net.used(TX) == before.wrapping_add(1) {
        tally.survived(
            "rx-ring-rewritten",
            format_args!("rewritten for 200 ms while frames arrived; the device still sends"),
        );
    } else {
        tally.fail(
            "rx-ring-rewritten",
            format_args!("the device stopped sending: status {:#x}", net.status()),
        );
    }
    net.slot.write32(reg::STATUS, 0);
}
