//! Host tests of the virtio-mmio transport: the register sequence Linux's
//! `virtio_mmio` driver performs, against a small echo device on fake RAM.

use super::*;
use crate::devices::memory::fake::VecMemory;
use crate::devices::virtio::queue::tests::{Driver, AVAIL, DESC, RAM, USED};
use crate::devices::virtio::queue::QueueError;
use AccessWidth::{Byte, Half, Word};

/// Device feature bit 5, device-type specific.
const ECHO_FEATURE: u64 = 1 << 5;
const QUEUE_MAX: u16 = 8;

/// Copies every readable buffer of a chain into its writable buffers.
#[derive(Default)]
struct Echo {
    config: [u8; 8],
    activated: Option<u64>,
    resets: u32,
    /// Input the backend holds for queue 0 (served by echoing a chain).
    input: u32,
}

impl VirtioDevice for Echo {
    fn device_id(&self) -> u32 {
        0x7F
    }
    fn features(&self) -> u64 {
        ECHO_FEATURE
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_MAX]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = self.config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, byte) in data.iter().enumerate() {
            if let Some(slot) = self.config.get_mut(offset as usize + i) {
                *slot = *byte;
            }
        }
    }
    fn activate(&mut self, features: u64) {
        self.activated = Some(features);
    }
    fn reset(&mut self) {
        self.resets += 1;
        self.activated = None;
    }
    fn input_waiting(&self) -> Option<usize> {
        (self.input > 0).then_some(0)
    }
    fn process_queue(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        let mut used = false;
        while let Some(chain) = queue.pop(mem)? {
            self.input = self.input.saturating_sub(1);
            let mut data = Vec::new();
            for d in chain.descriptors.iter().filter(|d| !d.device_writable) {
                let mut buf = alloc::vec![0; d.len as usize];
                mem.read(d.address, &mut buf)?;
                data.extend(buf);
            }
            let mut written = 0;
            for d in chain.descriptors.iter().filter(|d| d.device_writable) {
                let n = (d.len as usize).min(data.len() - written);
                mem.write(d.address, &data[written..written + n])?;
                written += n;
            }
            queue.add_used(mem, chain.head, written as u32)?;
            used = true;
        }
        Ok(used)
    }
}

fn read(t: &mut VirtioMmio<Echo>, offset: u64) -> u32 {
    t.read(offset, Word).unwrap() as u32
}

fn write(t: &mut VirtioMmio<Echo>, offset: u64, value: u32) {
    t.write(offset, Word, u64::from(value)).unwrap()
}

/// virtio_mmio's probe and virtio core's feature negotiation and queue setup.
fn bring_up(t: &mut VirtioMmio<Echo>, driver_features: u64) -> u32 {
    assert_eq!(read(t, reg::MAGIC_VALUE), MAGIC);
    assert_eq!(read(t, reg::VERSION), 2);
    write(t, reg::STATUS, 0);
    write(t, reg::STATUS, status::ACKNOWLEDGE);
    write(t, reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    write(t, reg::DRIVER_FEATURES_SEL, 0);
    write(t, reg::DRIVER_FEATURES, driver_features as u32);
    write(t, reg::DRIVER_FEATURES_SEL, 1);
    write(t, reg::DRIVER_FEATURES, (driver_features >> 32) as u32);
    write(
        t,
        reg::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    let status = read(t, reg::STATUS);
    if status & status::FEATURES_OK == 0 {
        return status;
    }
    write(t, reg::QUEUE_SEL, 0);
    assert_eq!(read(t, reg::QUEUE_READY), 0);
    assert_eq!(read(t, reg::QUEUE_NUM_MAX), u32::from(QUEUE_MAX));
    write(t, reg::QUEUE_NUM, 4);
    for (low, address) in [
        (reg::QUEUE_DESC_LOW, DESC),
        (reg::QUEUE_DRIVER_LOW, AVAIL),
        (reg::QUEUE_DEVICE_LOW, USED),
    ] {
        write(t, low, address as u32);
        write(t, low + 4, (address >> 32) as u32);
    }
    write(t, reg::QUEUE_READY, 1);
    write(t, reg::STATUS, status | status::DRIVER_OK);
    read(t, reg::STATUS)
}

#[test]
fn identification_and_features() {
    let mut t = VirtioMmio::new(Echo::default());
    assert_eq!(read(&mut t, reg::DEVICE_ID), 0x7F);
    assert_eq!(read(&mut t, reg::VENDOR_ID), VENDOR_QEMU);
    write(&mut t, reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(
        u64::from(read(&mut t, reg::DEVICE_FEATURES)),
        ECHO_FEATURE | crate::devices::virtio::queue::VIRTIO_F_EVENT_IDX,
        "the device's own and the transport's EVENT_IDX"
    );
    write(&mut t, reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(
        u64::from(read(&mut t, reg::DEVICE_FEATURES)) << 32,
        VIRTIO_F_VERSION_1
    );
    assert_eq!(
        read(&mut t, reg::SHM_LEN_LOW),
        u32::MAX,
        "no shared memory regions"
    );
}

#[test]
fn linux_bring_up_activates_with_the_negotiated_features() {
    let mut t = VirtioMmio::new(Echo::default());
    let status = bring_up(&mut t, VIRTIO_F_VERSION_1 | ECHO_FEATURE);
    assert_eq!(
        status,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK
    );
    assert_eq!(
        t.device().activated,
        Some(VIRTIO_F_VERSION_1 | ECHO_FEATURE)
    );
    assert_eq!(read(&mut t, reg::QUEUE_READY), 1);
}

#[test]
fn features_without_version_1_or_unoffered_are_refused() {
    for features in [ECHO_FEATURE, VIRTIO_F_VERSION_1 | (1 << 7)] {
        let mut t = VirtioMmio::new(Echo::default());
        let status = bring_up(&mut t, features);
        assert_eq!(status & status::FEATURES_OK, 0, "{features:#x}");
        assert_eq!(t.device().activated, None);
    }
}

#[test]
fn notify_serves_the_queue_and_interrupts_until_acked() {
    let mut mem = VecMemory::new(RAM, 0x10000);
    let mut t = VirtioMmio::new(Echo::default());
    bring_up(&mut t, VIRTIO_F_VERSION_1);
    let mut driver = Driver::new(4);
    mem.write(IntermediatePhysAddr::new(RAM + 0x8000), b"ping")
        .unwrap();
    Driver::descriptor(&mut mem, 0, RAM + 0x8000, 4, 1, 1);
    Driver::descriptor(&mut mem, 1, RAM + 0x9000, 16, 2, 0);
    driver.offer(&mut mem, 0);
    t.process(&mut mem);
    assert!(!t.interrupt_pending(), "no notification yet");
    write(&mut t, reg::QUEUE_NOTIFY, 0);
    t.process(&mut mem);
    assert!(t.interrupt_pending());
    assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), INTERRUPT_USED_BUFFER);
    assert_eq!(Driver::used(&mem, 0), (0, 4));
    assert_eq!(mem.bytes[0x9000..0x9004], *b"ping");
    write(&mut t, reg::INTERRUPT_ACK, INTERRUPT_USED_BUFFER);
    assert!(!t.interrupt_pending());
    let counts = t.counts();
    assert_eq!((counts.notifications, counts.interrupts), ([1, 0], 1));
}

/// Publishes `n` one-buffer echo chains on queue 0 (size 4).
fn offer_chains(mem: &mut VecMemory, driver: &mut Driver, n: u16) {
    for i in 0..n {
        let head = i % 4;
        Driver::descriptor(mem, head, RAM + 0x9000, 16, 2, 0);
        driver.offer(mem, head);
    }
}

#[test]
fn input_without_buffers_waits_for_the_driver_to_add_some() {
    let mut mem = VecMemory::new(RAM, 0x10000);
    let mut t = VirtioMmio::new(Echo {
        input: 2,
        ..Echo::default()
    });
    assert!(!t.has_work(), "not before the driver is ready");
    bring_up(&mut t, VIRTIO_F_VERSION_1);
    let mut driver = Driver::new(4);
    assert!(t.has_work());
    t.process(&mut mem);
    assert!(
        !t.has_work(),
        "no buffer: the input waits, nobody spins on it"
    );
    offer_chains(&mut mem, &mut driver, 1);
    assert!(!t.has_work(), "buffers alone are not a notification");
    write(&mut t, reg::QUEUE_NOTIFY, 0);
    assert!(t.has_work());
    t.process(&mut mem);
    assert_eq!(t.device().input, 1);
    assert_eq!(Driver::used_idx(&mem), 1);
    assert!(
        !t.has_work(),
        "the one buffer is used; the rest waits again"
    );
}

#[test]
fn a_broken_ring_asks_for_a_reset() {
    let mut mem = VecMemory::new(RAM, 0x10000);
    let mut t = VirtioMmio::new(Echo::default());
    let status = bring_up(&mut t, VIRTIO_F_VERSION_1);
    mem.write_u16(IntermediatePhysAddr::new(AVAIL + 2), 1)
        .unwrap();
    mem.write_u16(IntermediatePhysAddr::new(AVAIL + 4), 9)
        .unwrap();
    write(&mut t, reg::QUEUE_NOTIFY, 0);
    t.process(&mut mem);
    assert_eq!(
        read(&mut t, reg::STATUS),
        status | status::DEVICE_NEEDS_RESET
    );
    assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), INTERRUPT_CONFIG_CHANGE);
    write(&mut t, reg::STATUS, 0);
    assert_eq!(read(&mut t, reg::STATUS), 0);
    assert_eq!(read(&mut t, reg::QUEUE_READY), 0);
    assert_eq!(t.device().resets, 2, "bring-up reset and this one");
}

#[test]
fn configuration_space_any_width() {
    let mut t = VirtioMmio::new(Echo::default());
    t.write(reg::CONFIG + 2, Half, 0xBEEF).unwrap();
    assert_eq!(t.read(reg::CONFIG, Word), Ok(0xBEEF_0000));
    assert_eq!(t.read(reg::CONFIG + 3, Byte), Ok(0xBE));
    t.config_changed();
    assert_eq!(read(&mut t, reg::CONFIG_GENERATION), 1);
    assert_eq!(read(&mut t, reg::INTERRUPT_STATUS), INTERRUPT_CONFIG_CHANGE);
    assert_eq!(
        t.read(reg::STATUS, Half),
        Err(MmioError::BadAccess {
            offset: reg::STATUS,
            width: Half
        })
    );
}

#[test]
fn queue_registers_are_frozen_while_ready() {
    let mut t = VirtioMmio::new(Echo::default());
    bring_up(&mut t, VIRTIO_F_VERSION_1);
    write(&mut t, reg::QUEUE_DESC_LOW, 0x1234);
    write(&mut t, reg::QUEUE_NUM, 2);
    assert_eq!(t.queues[0].desc_table, IntermediatePhysAddr::new(DESC));
    assert_eq!(t.queues[0].size, 4);
    write(&mut t, reg::QUEUE_SEL, 5);
    assert_eq!(read(&mut t, reg::QUEUE_NUM_MAX), 0, "no such queue");
    write(&mut t, reg::QUEUE_NOTIFY, 5);
    write(&mut t, reg::QUEUE_NOTIFY, 1000);
}

#[test]
fn empty_slot_identifies_as_no_device() {
    let mut slot = EmptySlot;
    let read = |slot: &mut EmptySlot, offset| slot.read(offset, Word).unwrap();
    assert_eq!(
        read(&mut slot, reg::MAGIC_VALUE).to_le_bytes()[..4],
        *b"virt"
    );
    assert_eq!(read(&mut slot, reg::VERSION), 2);
    assert_eq!(read(&mut slot, reg::DEVICE_ID), 0);
    assert_eq!(read(&mut slot, reg::VENDOR_ID).to_le_bytes()[..4], *b"QEMU");
    slot.write(reg::STATUS, Word, 0xF).unwrap();
    assert_eq!(read(&mut slot, reg::STATUS), 0, "Status stays 0");
    assert_eq!(
        slot.read(reg::CONFIG, Byte),
        Ok(0),
        "config space takes any width"
    );
    assert_eq!(
        slot.read(reg::VERSION, Half),
        Err(MmioError::BadAccess {
            offset: 4,
            width: Half
        })
    );
    assert_eq!(
        slot.read(SLOT_SIZE, Word),
        Err(MmioError::OutOfWindow { offset: SLOT_SIZE })
    );
}
