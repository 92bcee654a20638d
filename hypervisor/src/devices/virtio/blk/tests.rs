//! Host tests of virtio-blk: requests built in fake guest RAM the way
//! Linux's virtio_blk lays them out (header, data, status).

use super::*;
use crate::addr::IntermediatePhysAddr;
use crate::devices::memory::fake::VecMemory;
use crate::devices::virtio::queue::tests::{Driver, RAM};

const HEADER: u64 = RAM + 0x8000;
const DATA: u64 = RAM + 0x9000;
const STATUS: u64 = RAM + 0xF000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;

fn ipa(raw: u64) -> IntermediatePhysAddr {
    IntermediatePhysAddr::new(raw)
}

struct Setup {
    mem: VecMemory,
    driver: Driver,
    queue: Queue,
    blk: VirtioBlk<MemDisk>,
}

fn setup(disk: MemDisk) -> Setup {
    let driver = Driver::new(8);
    let queue = driver.queue(256);
    Setup {
        mem: VecMemory::new(RAM, 0x10000),
        driver,
        queue,
        blk: VirtioBlk::new(disk),
    }
}

impl Setup {
    /// Submits header + data buffers + status; returns (status, used len).
    fn request(&mut self, kind: u32, sector: u64, data: &[(u64, u32, bool)]) -> (u8, u32) {
        self.mem.write_u32(ipa(HEADER), kind).unwrap();
        self.mem.write_u64(ipa(HEADER + 8), sector).unwrap();
        self.mem.write(ipa(STATUS), &[0xFF]).unwrap();
        Driver::descriptor(&mut self.mem, 0, HEADER, 16, NEXT, 1);
        for (i, (address, len, writable)) in data.iter().enumerate() {
            let flags = NEXT | if *writable { WRITE } else { 0 };
            Driver::descriptor(
                &mut self.mem,
                1 + i as u16,
                *address,
                *len,
                flags,
                2 + i as u16,
            );
        }
        Driver::descriptor(&mut self.mem, 1 + data.len() as u16, STATUS, 1, WRITE, 0);
        self.driver.offer(&mut self.mem, 0);
        assert_eq!(
            self.blk.process_queue(0, &mut self.queue, &mut self.mem),
            Ok(true)
        );
        let slot = Driver::used_idx(&self.mem).wrapping_sub(1) % self.driver.size;
        let (head, len) = Driver::used(&self.mem, slot);
        assert_eq!(head, 0);
        (self.mem.bytes[(STATUS - RAM) as usize], len)
    }
}

#[test]
fn write_then_read_back() {
    let mut s = setup(MemDisk::new(alloc::vec![0; 8 * 512], false, b"disk0"));
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    s.mem.write(ipa(DATA), &pattern).unwrap();
    assert_eq!(
        s.request(VIRTIO_BLK_T_OUT, 2, &[(DATA, 1024, false)]),
        (VIRTIO_BLK_S_OK, 1)
    );
    assert_eq!(&s.blk.backend().bytes[1024..2048], &pattern[..]);
    // Read into two buffers, 512 bytes each, elsewhere.
    let (a, b) = (DATA + 0x2000, DATA + 0x3000);
    assert_eq!(
        s.request(VIRTIO_BLK_T_IN, 2, &[(a, 512, true), (b, 512, true)]),
        (VIRTIO_BLK_S_OK, 1025)
    );
    assert_eq!(s.mem.bytes[0xB000..0xB200], pattern[..512]);
    assert_eq!(s.mem.bytes[0xC000..0xC200], pattern[512..]);
}

#[test]
fn out_of_range_wrong_direction_and_read_only_are_io_errors() {
    let mut s = setup(MemDisk::new(alloc::vec![0; 4 * 512], false, b""));
    assert_eq!(
        s.request(VIRTIO_BLK_T_IN, 3, &[(DATA, 1024, true)]),
        (VIRTIO_BLK_S_IOERR, 1),
        "past the end"
    );
    assert_eq!(
        s.request(VIRTIO_BLK_T_IN, u64::MAX, &[(DATA, 512, true)]),
        (VIRTIO_BLK_S_IOERR, 1),
        "overflow"
    );
    assert_eq!(
        s.request(VIRTIO_BLK_T_IN, 0, &[(DATA, 512, false)]),
        (VIRTIO_BLK_S_IOERR, 1),
        "read into a readable buffer"
    );
    assert_eq!(
        s.request(VIRTIO_BLK_T_IN, 0, &[(RAM + 0xFF00, 512, true)]),
        (VIRTIO_BLK_S_IOERR, 1),
        "buffer leaves RAM"
    );
    let mut ro = setup(MemDisk::new(alloc::vec![0; 512], true, b""));
    assert_eq!(
        ro.request(VIRTIO_BLK_T_OUT, 0, &[(DATA, 512, false)]),
        (VIRTIO_BLK_S_IOERR, 1)
    );
    assert_ne!(ro.blk.features() & VIRTIO_BLK_F_RO, 0);
}

#[test]
fn flush_get_id_and_unsupported() {
    let mut s = setup(MemDisk::new(alloc::vec![0; 512], false, b"lab-disk"));
    assert_eq!(s.request(VIRTIO_BLK_T_FLUSH, 0, &[]), (VIRTIO_BLK_S_OK, 1));
    assert_eq!(
        s.request(VIRTIO_BLK_T_GET_ID, 0, &[(DATA, 20, true)]),
        (VIRTIO_BLK_S_OK, 21)
    );
    assert_eq!(&s.mem.bytes[0x9000..0x9008], b"lab-disk");
    assert_eq!(s.request(99, 0, &[]), (VIRTIO_BLK_S_UNSUPP, 1));
}

#[test]
fn large_requests_go_through_the_bounce_buffer() {
    let disk: Vec<u8> = (0..(16 * 1024u32)).map(|i| (i % 251) as u8).collect();
    let mut s = setup(MemDisk::new(disk.clone(), false, b""));
    assert_eq!(
        s.request(VIRTIO_BLK_T_IN, 0, &[(DATA, 3 * 4096 + 512, true)]),
        (VIRTIO_BLK_S_OK, 3 * 4096 + 513)
    );
    assert_eq!(
        s.mem.bytes[0x9000..0x9000 + 3 * 4096 + 512],
        disk[..3 * 4096 + 512]
    );
}

#[test]
fn capacity_in_whole_sectors() {
    let blk = VirtioBlk::new(MemDisk::new(alloc::vec![1; 1100], false, b""));
    assert_eq!(
        blk.backend().size_bytes(),
        1024,
        "a partial sector is not used"
    );
    let mut capacity = [0u8; 8];
    blk.read_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), 2);
    let mut past = [0xAAu8; 4];
    blk.read_config(u64::MAX - 1, &mut past);
    assert_eq!(past, [0; 4]);
    assert_eq!(blk.device_id(), DEVICE_ID_BLOCK);
    assert_ne!(blk.features() & VIRTIO_BLK_F_FLUSH, 0);
}

#[test]
fn chains_without_a_status_byte_are_returned_empty() {
    let mut s = setup(MemDisk::new(alloc::vec![0; 512], false, b""));
    Driver::descriptor(&mut s.mem, 0, HEADER, 16, 0, 0);
    s.driver.offer(&mut s.mem, 0);
    assert_eq!(s.blk.process_queue(0, &mut s.queue, &mut s.mem), Ok(true));
    assert_eq!(Driver::used(&s.mem, 0), (0, 0));
}
