//! QEMU `virt`'s two CFI flash banks, as QEMU's `pflash_cfi01` model
//! behaves the way the board wires it: 64 MiB per bank at IPA 0 and
//! 0x0400_0000, 256 KiB sectors, 32 bits wide from two 16-bit parts used
//! side by side, the Intel command set, manufacturer 0x89 and device 0x18.
//! Firmware probes it (U-Boot reads its environment from the second bank
//! before printing anything, then queries both with CFI), so a VM without
//! it takes an external abort where bare QEMU runs on.
//!
//! A bank holds no image: it reads as QEMU's flash does without a drive
//! (zeros), and it is read-only, as QEMU's flash over a read-only drive: a
//! program or erase completes with the status register's error bit set and
//! changes nothing (the hypervisor keeps no 128 MiB per VM for it).
//! Commands, queries and status reads follow QEMU's model, access width
//! included: every device answers in its own 16-bit lane, a 64-bit access
//! is two 32-bit ones.
#![forbid(unsafe_code)]

use super::{check_access, AccessWidth, MmioDevice, MmioError, VmDevice};

/// Bytes in one bank.
pub const BANK_SIZE: u64 = 64 << 20;
/// Guest-physical base of each bank.
pub const BANK_BASES: [u64; 2] = [0, BANK_SIZE];

/// Bytes of one erase block (`sector-length` on `virt`).
const SECTOR_SIZE: u64 = 256 << 10;
/// Bank width and the width of each part in it, in bytes.
const BANK_WIDTH: u64 = 4;
const DEVICE_WIDTH: u64 = 2;
/// Parts side by side in one bank.
const DEVICES: u64 = BANK_WIDTH / DEVICE_WIDTH;
/// Manufacturer and device ID (`id0`, `id1`).
const MANUFACTURER_ID: u32 = 0x89;
const DEVICE_ID: u32 = 0x18;

/// Commands (the low byte of a write in the first cycle).
const CMD_READ_ARRAY_QEMU: u8 = 0x00;
const CMD_PROGRAM: u8 = 0x10;
const CMD_BLOCK_ERASE: u8 = 0x20;
const CMD_PROGRAM_ALT: u8 = 0x40;
const CMD_CLEAR_STATUS: u8 = 0x50;
const CMD_LOCK: u8 = 0x60;
const CMD_READ_STATUS: u8 = 0x70;
const CMD_READ_ID: u8 = 0x90;
const CMD_CFI_QUERY: u8 = 0x98;
const CMD_WRITE_BUFFER: u8 = 0xe8;
const CMD_READ_ARRAY: u8 = 0xff;
/// Second-cycle values.
const CONFIRM: u8 = 0xd0;
const LOCK_SET: u8 = 0x01;

/// Status register bits.
const STATUS_READY: u8 = 0x80;
const STATUS_ERASE_ERROR: u8 = 0x20;
const STATUS_PROGRAM_ERROR: u8 = 0x10;

/// QEMU's CFI table size.
const CFI_TABLE_LEN: usize = 0x52;

/// The CFI query table of one part, as QEMU fills it for this geometry.
const fn cfi_table() -> [u8; CFI_TABLE_LEN] {
    let blocks = BANK_SIZE / SECTOR_SIZE;
    let sector_per_device = SECTOR_SIZE / DEVICES;
    let device_len = sector_per_device * blocks;
    let mut t = [0u8; CFI_TABLE_LEN];
    // "QRY", the Intel command set, its extended table at 0x31.
    t[0x10] = b'Q';
    t[0x11] = b'R';
    t[0x12] = b'Y';
    t[0x13] = 0x01;
    t[0x15] = 0x31;
    // Voltages, then typical and maximum timeouts.
    t[0x1B] = 0x45;
    t[0x1C] = 0x55;
    t[0x1F] = 0x07;
    t[0x20] = 0x07;
    t[0x21] = 0x0a;
    t[0x23] = 0x04;
    t[0x24] = 0x04;
    t[0x25] = 0x04;
    // Size of one part (2^n bytes), its x8/x16 interface, 2^11-byte
    // write buffers.
    t[0x27] = device_len.trailing_zeros() as u8;
    t[0x28] = 0x02;
    t[0x2A] = 0x0B;
    // One uniform erase block region: blocks - 1, block size / 256.
    t[0x2C] = 0x01;
    t[0x2D] = (blocks - 1) as u8;
    t[0x2E] = ((blocks - 1) >> 8) as u8;
    t[0x2F] = (sector_per_device >> 8) as u8;
    t[0x30] = (sector_per_device >> 16) as u8;
    // The Intel extended table "PRI", version 1.0, one protection field.
    t[0x31] = b'P';
    t[0x32] = b'R';
    t[0x33] = b'I';
    t[0x34] = b'1';
    t[0x35] = b'0';
    t[0x3f] = 0x01;
    t
}

const CFI_TABLE: [u8; CFI_TABLE_LEN] = cfi_table();

/// One flash bank.
#[derive(Debug)]
pub struct Pflash {
    /// The command in progress (`CMD_READ_ARRAY_QEMU`: reading the array).
    cmd: u8,
    /// Which cycle of a multi-write command comes next.
    wcycle: u8,
    status: u8,
    /// Words left in a buffered write.
    counter: u32,
}

impl Default for Pflash {
    fn default() -> Self {
        Self::new()
    }
}

/// A value of one part's lane, replicated into every part's lane of a bank.
fn each_device(value: u32) -> u32 {
    value | (value << (8 * DEVICE_WIDTH))
}

impl Pflash {
    pub fn new() -> Self {
        Self {
            cmd: CMD_READ_ARRAY_QEMU,
            wcycle: 0,
            status: STATUS_READY,
            counter: 0,
        }
    }

    fn read_array(&mut self) {
        self.wcycle = 0;
        self.cmd = CMD_READ_ARRAY_QEMU;
    }

    /// A read of at most one bank width (1, 2 or 4 bytes).
    fn read32(&self, offset: u64, bytes: u64) -> u32 {
        // Every part answers at its own address: the bank's offset over
        // the bank width.
        let index = offset / BANK_WIDTH;
        match self.cmd {
            CMD_PROGRAM | CMD_BLOCK_ERASE | CMD_PROGRAM_ALT | CMD_LOCK | CMD_READ_STATUS
            | CMD_WRITE_BUFFER => {
                let status = u32::from(self.status);
                if bytes > DEVICE_WIDTH {
                    each_device(status)
                } else {
                    status
                }
            }
            CMD_READ_ID => match index & 0xff {
                0 => each_device(MANUFACTURER_ID),
                1 => each_device(DEVICE_ID),
                _ => 0,
            },
            CMD_CFI_QUERY => usize::try_from(index)
                .ok()
                .and_then(|i| CFI_TABLE.get(i))
                .map_or(0, |b| each_device(u32::from(*b))),
            // Reading the array of an empty bank.
            _ => 0,
        }
    }

    /// A write of at most one bank width: one command cycle.
    fn write32(&mut self, value: u32) {
        let cmd = value as u8;
        match self.wcycle {
            0 => match cmd {
                CMD_PROGRAM | CMD_PROGRAM_ALT | CMD_LOCK | CMD_CFI_QUERY => {
                    self.wcycle = 1;
                    self.cmd = cmd;
                }
                CMD_BLOCK_ERASE => {
                    // Read-only: nothing is erased.
                    self.status |= STATUS_ERASE_ERROR | STATUS_READY;
                    self.wcycle = 1;
                    self.cmd = cmd;
                }
                CMD_WRITE_BUFFER => {
                    self.status |= STATUS_READY;
                    self.wcycle = 1;
                    self.cmd = cmd;
                }
                CMD_CLEAR_STATUS => {
                    self.status = 0;
                    self.read_array();
                }
                CMD_READ_STATUS | CMD_READ_ID => self.cmd = cmd,
                // Read Array (0xff, and QEMU's 0x00), the AMD probe (0xf0),
                // and what the model does not know.
                _ => self.read_array(),
            },
            1 => match self.cmd {
                CMD_PROGRAM | CMD_PROGRAM_ALT => {
                    self.status |= STATUS_PROGRAM_ERROR | STATUS_READY;
                    self.wcycle = 0;
                }
                CMD_BLOCK_ERASE | CMD_LOCK
                    if cmd == CONFIRM || (self.cmd == CMD_LOCK && cmd == LOCK_SET) =>
                {
                    self.wcycle = 0;
                    self.status |= STATUS_READY;
                }
                CMD_WRITE_BUFFER => {
                    self.counter = value & 0xffff;
                    self.wcycle = 2;
                }
                // Anything but Read Array leaves query mode as it is.
                CMD_CFI_QUERY if cmd != CMD_READ_ARRAY => {}
                _ => self.read_array(),
            },
            2 if self.cmd == CMD_WRITE_BUFFER => {
                self.status |= STATUS_PROGRAM_ERROR | STATUS_READY;
                match self.counter.checked_sub(1) {
                    Some(left) => self.counter = left,
                    None => self.wcycle = 3,
                }
            }
            // The confirm of a buffered write that failed (read-only):
            // aborted, back to reading.
            _ => self.read_array(),
        }
    }
}

impl MmioDevice for Pflash {
    fn size(&self) -> u64 {
        BANK_SIZE
    }

    fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        check_access(offset, width, BANK_SIZE)?;
        let bytes = width.bytes();
        if bytes > BANK_WIDTH {
            // QEMU splits wider accesses into bank-width ones.
            let low = self.read32(offset, BANK_WIDTH);
            let high = self.read32(offset + BANK_WIDTH, BANK_WIDTH);
            return Ok(u64::from(low) | u64::from(high) << 32);
        }
        Ok(u64::from(self.read32(offset, bytes)) & width.mask())
    }

    fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Result<(), MmioError> {
        check_access(offset, width, BANK_SIZE)?;
        self.write32(value as u32);
        if width.bytes() > BANK_WIDTH {
            self.write32((value >> 32) as u32);
        }
        Ok(())
    }
}

impl VmDevice for Pflash {
    fn interrupt_pending(&mut self) -> bool {
        false
    }

    fn reset(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessWidth::{Byte, Double, Half, Word};

    /// What U-Boot's CFI driver does for a 32-bit bank of two x16 parts:
    /// commands replicated in each part's lane, query bytes at offset
    /// 4 * index.
    fn query(f: &mut Pflash, index: u64) -> u64 {
        f.read(index * BANK_WIDTH, Word).unwrap()
    }

    #[test]
    fn empty_flash_reads_zero_in_array_mode() {
        let mut f = Pflash::new();
        assert_eq!(f.read(0x0, Word).unwrap(), 0);
        assert_eq!(f.read(0x3ff_fff8, Double).unwrap(), 0);
        assert_eq!(f.read(0x13, Byte).unwrap(), 0);
        assert!(f.read(BANK_SIZE, Byte).is_err());
    }

    #[test]
    fn cfi_query_describes_a_64_mib_bank_of_two_x16_parts() {
        let mut f = Pflash::new();
        f.write(0x55 * BANK_WIDTH, Word, 0x0098_0098).unwrap();
        let qry: Vec<u64> = (0x10..0x13).map(|i| query(&mut f, i)).collect();
        assert_eq!(qry, [0x0051_0051, 0x0052_0052, 0x0059_0059]);
        // Each part: 2^25 bytes, 256 blocks of 128 KiB; together 64 MiB of
        // 256 KiB sectors.
        assert_eq!(query(&mut f, 0x27) & 0xff, 25);
        assert_eq!(query(&mut f, 0x2D) & 0xff, 0xff);
        assert_eq!(query(&mut f, 0x2E) & 0xff, 0);
        assert_eq!(query(&mut f, 0x2F) & 0xff, 0x00);
        assert_eq!(query(&mut f, 0x30) & 0xff, 0x02);
        // A byte read sees one lane; past the table, zero.
        assert_eq!(f.read(0x10 * BANK_WIDTH, Byte).unwrap(), 0x51);
        assert_eq!(query(&mut f, 0x60), 0);
        // A 64-bit read is two bank-wide ones.
        assert_eq!(
            f.read(0x10 * BANK_WIDTH, Double).unwrap(),
            0x0052_0052_0051_0051
        );
        // Other writes keep query mode; Read Array leaves it.
        f.write(0, Word, 0x0055_0055).unwrap();
        assert_eq!(query(&mut f, 0x10), 0x0051_0051);
        f.write(0, Word, 0x00ff_00ff).unwrap();
        assert_eq!(query(&mut f, 0x10), 0);
    }

    #[test]
    fn device_id_and_status() {
        let mut f = Pflash::new();
        f.write(0, Half, 0x90).unwrap();
        assert_eq!(f.read(0, Word).unwrap(), 0x0089_0089);
        assert_eq!(f.read(4, Word).unwrap(), 0x0018_0018);
        assert_eq!(f.read(8, Word).unwrap(), 0);
        f.write(0, Word, 0x70).unwrap();
        assert_eq!(f.read(0, Word).unwrap(), 0x0080_0080);
        assert_eq!(f.read(0, Half).unwrap(), 0x80);
    }

    #[test]
    fn programs_and_erases_fail_without_changing_anything() {
        let mut f = Pflash::new();
        // Word program: command, then the data.
        f.write(0x100, Word, 0x0040_0040).unwrap();
        f.write(0x100, Word, 0x1234_5678).unwrap();
        assert_eq!(f.read(0x100, Word).unwrap(), 0x0090_0090, "status");
        f.write(0, Word, 0x00ff_00ff).unwrap();
        assert_eq!(f.read(0x100, Word).unwrap(), 0, "unchanged");
        // Block erase and confirm.
        f.write(0x4_0000, Word, 0x0050_0050).unwrap();
        f.write(0x4_0000, Word, 0x0020_0020).unwrap();
        f.write(0x4_0000, Word, 0x00d0_00d0).unwrap();
        assert_eq!(f.read(0, Word).unwrap(), 0x00a0_00a0);
        // Buffered write of two words, then the confirm, aborted.
        f.write(0, Word, 0x0050_0050).unwrap();
        f.write(0, Word, 0x00e8_00e8).unwrap();
        f.write(0, Word, 0x0001_0001).unwrap();
        f.write(0, Word, 0xdead_beef).unwrap();
        f.write(4, Word, 0xdead_beef).unwrap();
        f.write(0, Word, 0x00d0_00d0).unwrap();
        assert_eq!(f.read(0, Word).unwrap(), 0, "back to reading the array");
        f.write(0, Word, 0x70).unwrap();
        assert_eq!(f.read(0, Word).unwrap(), 0x0090_0090);
        f.reset();
        assert_eq!(f.read(0, Word).unwrap(), 0);
        f.write(0, Word, 0x70).unwrap();
        assert_eq!(f.read(0, Word).unwrap(), 0x0080_0080);
    }
}
