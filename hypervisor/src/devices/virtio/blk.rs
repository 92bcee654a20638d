//! virtio-blk (virtio 1.2, 5.2) over a `BlockBackend`. A request is a chain
//! of a 16-byte header the device reads, data buffers, and a 1-byte status
//! the device writes. Data moves through a fixed bounce buffer, so a guest
//! asking for gigabytes makes no large allocation, and every sector and
//! length is checked against the disk before any byte moves.

use core::fmt;

use super::queue::{Descriptor, DescriptorChain, Queue, QueueError};
use super::VirtioDevice;
use crate::devices::memory::GuestMemory;

/// DeviceID of a block device.
pub const DEVICE_ID_BLOCK: u32 = 2;
/// Sector size the protocol counts in.
pub const SECTOR_SIZE: u64 = 512;

/// Feature bits (virtio 1.2, 5.2.3).
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

/// Request types and status values (5.2.6).
const VIRTIO_BLK_T_IN: u32 = 0;
const VIRTIO_BLK_T_OUT: u32 = 1;
const VIRTIO_BLK_T_FLUSH: u32 = 4;
const VIRTIO_BLK_T_GET_ID: u32 = 8;
const VIRTIO_BLK_S_OK: u8 = 0;
const VIRTIO_BLK_S_IOERR: u8 = 1;
const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Header: type u32, reserved u32, sector u64.
const HEADER_SIZE: usize = 16;
/// GET_ID answers with up to 20 bytes.
const ID_SIZE: usize = 20;
/// The one request queue and its size.
const QUEUE_SIZES: [u16; 1] = [256];
/// Bytes moved per step between guest memory and the backend.
const BOUNCE_SIZE: usize = 4096;

/// Why the backend could not serve a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    OutOfRange,
    ReadOnly,
    Io,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockError::OutOfRange => "beyond the end of the disk",
            BlockError::ReadOnly => "disk is read-only",
            BlockError::Io => "I/O error",
        })
    }
}

/// The storage behind a virtio-blk device, addressed in bytes.
pub trait BlockBackend {
    /// Size in bytes (a multiple of SECTOR_SIZE).
    fn size_bytes(&self) -> u64;
    fn read_only(&self) -> bool;
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError>;
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError>;
    fn flush(&mut self) -> Result<(), BlockError>;
    /// The serial number GET_ID reports (up to 20 bytes).
    fn id(&self) -> &[u8];
}

/// A disk held in memory: `S` is its bytes (a `Vec` in tests; pages of
/// host RAM the hypervisor set aside for the VM's disk). Its size is the
/// storage's, down to a whole number of sectors.
pub struct MemDisk<S = alloc::vec::Vec<u8>> {
    bytes: S,
    size: usize,
    read_only: bool,
    id: [u8; ID_SIZE],
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> MemDisk<S> {
    /// A disk over `bytes` reporting `id` (up to 20 bytes) as its serial.
    pub fn new(bytes: S, read_only: bool, id: &[u8]) -> Self {
        let sector = SECTOR_SIZE as usize;
        let size = bytes.as_ref().len() / sector * sector;
        let mut serial = [0; ID_SIZE];
        let n = id.len().min(ID_SIZE);
        serial[..n].copy_from_slice(&id[..n]);
        MemDisk {
            bytes,
            size,
            read_only,
            id: serial,
        }
    }

    fn range(&self, offset: u64, len: usize) -> Result<core::ops::Range<usize>, BlockError> {
        let start = usize::try_from(offset).map_err(|_| BlockError::OutOfRange)?;
        let end = start.checked_add(len).ok_or(BlockError::OutOfRange)?;
        if end > self.size {
            return Err(BlockError::OutOfRange);
        }
        Ok(start..end)
    }
}

impl<S: AsRef<[u8]> + AsMut<[u8]>> BlockBackend for MemDisk<S> {
    fn size_bytes(&self) -> u64 {
        self.size as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let range = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.bytes.as_ref()[range]);
        Ok(())
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        let range = self.range(offset, data.len())?;
        self.bytes.as_mut()[range].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }
    fn id(&self) -> &[u8] {
        &self.id
    }
}

/// A virtio block device.
pub struct VirtioBlk<B: BlockBackend> {
    backend: B,
}

impl<B: BlockBackend> VirtioBlk<B> {
    pub fn new(backend: B) -> Self {
        VirtioBlk { backend }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Serves one chain; returns the bytes written into device-writable
    /// buffers (data and status), the used length.
    fn serve(&mut self, chain: &DescriptorChain, mem: &mut dyn GuestMemory) -> u32 {
        let Some((status, body)) = split_request(&chain.descriptors) else {
            return 0;
        };
        let (header, data) = match body.split_first() {
            Some((header, data))
                if !header.device_writable && header.len as usize >= HEADER_SIZE =>
            {
                (header, data)
            }
            _ => return write_status(mem, status, VIRTIO_BLK_S_IOERR, 0),
        };
        let mut raw = [0u8; HEADER_SIZE];
        if mem.read(header.address, &mut raw).is_err() {
            return write_status(mem, status, VIRTIO_BLK_S_IOERR, 0);
        }
        let kind = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&raw[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);
        let (result, written) = match kind {
            VIRTIO_BLK_T_IN => self.transfer(mem, sector, data, true),
            VIRTIO_BLK_T_OUT => self.transfer(mem, sector, data, false),
            VIRTIO_BLK_T_FLUSH => (self.backend.flush().map_err(|_| VIRTIO_BLK_S_IOERR), 0),
            VIRTIO_BLK_T_GET_ID => self.get_id(mem, data),
            _ => (Err(VIRTIO_BLK_S_UNSUPP), 0),
        };
        let code = match result {
            Ok(()) => VIRTIO_BLK_S_OK,
            Err(code) => code,
        };
        write_status(mem, status, code, written)
    }

    /// Moves data between the disk at `sector` and the data buffers (which
    /// must all be device-writable for a read, readable for a write).
    fn transfer(
        &mut self,
        mem: &mut dyn GuestMemory,
        sector: u64,
        data: &[Descriptor],
        to_guest: bool,
    ) -> (Result<(), u8>, u32) {
        let total: u64 = data.iter().map(|d| u64::from(d.len)).sum();
        let Some(start) = sector.checked_mul(SECTOR_SIZE) else {
            return (Err(VIRTIO_BLK_S_IOERR), 0);
        };
        let in_range = start
            .checked_add(total)
            .is_some_and(|end| end <= self.backend.size_bytes());
        let right_direction = data.iter().all(|d| d.device_writable == to_guest);
        if !in_range || !right_direction || (!to_guest && self.backend.read_only()) {
            return (Err(VIRTIO_BLK_S_IOERR), 0);
        }
        let mut bounce = [0u8; BOUNCE_SIZE];
        let mut disk_offset = start;
        let mut written: u32 = 0;
        for descriptor in data {
            let mut done = 0u64;
            while done < u64::from(descriptor.len) {
                let n = (u64::from(descriptor.len) - done).min(BOUNCE_SIZE as u64) as usize;
                let Some(guest) = descriptor.address.checked_add(done) else {
                    return (Err(VIRTIO_BLK_S_IOERR), written);
                };
                let step = if to_guest {
                    self.backend
                        .read(disk_offset, &mut bounce[..n])
                        .ok()
                        .and_then(|()| mem.write(guest, &bounce[..n]).ok())
                } else {
                    mem.read(guest, &mut bounce[..n])
                        .ok()
                        .and_then(|()| self.backend.write(disk_offset, &bounce[..n]).ok())
                };
                if step.is_none() {
                    return (Err(VIRTIO_BLK_S_IOERR), written);
                }
                if to_guest {
                    written = written.saturating_add(n as u32);
                }
                done += n as u64;
                disk_offset += n as u64;
            }
        }
        (Ok(()), written)
    }

    fn get_id(&mut self, mem: &mut dyn GuestMemory, data: &[Descriptor]) -> (Result<(), u8>, u32) {
        let Some(buffer) = data.first().filter(|d| d.device_writable) else {
            return (Err(VIRTIO_BLK_S_IOERR), 0);
        };
        let id = self.backend.id();
        let n = id.len().min(ID_SIZE).min(buffer.len as usize);
        match mem.write(buffer.address, &id[..n]) {
            Ok(()) => (Ok(()), n as u32),
            Err(_) => (Err(VIRTIO_BLK_S_IOERR), 0),
        }
    }
}

/// The status descriptor (last, device-writable, at least 1 byte) and the
/// descriptors before it.
fn split_request(descriptors: &[Descriptor]) -> Option<(&Descriptor, &[Descriptor])> {
    let (status, body) = descriptors.split_last()?;
    (status.device_writable && status.len >= 1).then_some((status, body))
}

/// Writes the status byte; the used length counts it after `written`.
fn write_status(mem: &mut dyn GuestMemory, status: &Descriptor, code: u8, written: u32) -> u32 {
    match mem.write(status.address, &[code]) {
        Ok(()) => written.saturating_add(1),
        Err(_) => written,
    }
}

impl<B: BlockBackend> VirtioDevice for VirtioBlk<B> {
    fn device_id(&self) -> u32 {
        DEVICE_ID_BLOCK
    }

    fn features(&self) -> u64 {
        VIRTIO_BLK_F_FLUSH
            | if self.backend.read_only() {
                VIRTIO_BLK_F_RO
            } else {
                0
            }
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    /// `capacity` (u64, in sectors) at offset 0; the rest reads as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let capacity = (self.backend.size_bytes() / SECTOR_SIZE).to_le_bytes();
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset
                .checked_add(i as u64)
                .and_then(|at| usize::try_from(at).ok());
            *byte = at.and_then(|at| capacity.get(at)).copied().unwrap_or(0);
        }
    }

    /// The configuration space is read-only for block devices we offer.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, _features: u64) {}

    fn reset(&mut self) {}

    fn process_queue(
        &mut self,
        _index: usize,
        queue: &mut Queue,
        mem: &mut dyn GuestMemory,
    ) -> Result<bool, QueueError> {
        let mut used = false;
        while let Some(chain) = queue.pop(mem)? {
            let len = self.serve(&chain, mem);
            queue.add_used(mem, chain.head, len)?;
            used = true;
        }
        Ok(used)
    }
}

#[cfg(test)]
mod tests;
