//! PL031 real-time clock emulation (PrimeCell RTC TRM, DDI 0224): the
//! seconds counter is derived from a `TimeSource` (the system counter and
//! the wall-clock time it stood for at zero), so `hwclock` and the kernel's
//! RTC read a sane date; the match register raises the interrupt line
//! (`interrupt_pending`, SPI 2 → INTID 34) once the counter reaches it.
//!
//! Accesses behave as on QEMU's `pl031`: bytes, halfwords and words at any
//! aligned offset (a register's low bits; the identification block answers
//! anywhere in 0xFE0..0xFFF), an offset with no register reads 0 and
//! ignores writes; only 64-bit and misaligned accesses abort.

use super::{check_access, AccessWidth, MmioDevice, MmioError, VmDevice, PRIMECELL_CELL_ID};

/// The clock behind the RTC.
pub trait TimeSource {
    /// The current system-counter value.
    fn counter(&self) -> u64;
    /// Counter ticks per second (CNTFRQ).
    fn frequency(&self) -> u64;
    /// Unix time, in seconds, at which the counter read zero.
    fn epoch_at_zero(&self) -> u64;
}

/// Register offsets.
mod reg {
    pub const DR: u64 = 0x00;
    pub const MR: u64 = 0x04;
    pub const LR: u64 = 0x08;
    pub const CR: u64 = 0x0C;
    pub const IMSC: u64 = 0x10;
    pub const RIS: u64 = 0x14;
    pub const MIS: u64 = 0x18;
    pub const ICR: u64 = 0x1C;
}

/// RTCINTR, the only interrupt bit.
const INT_RTC: u32 = 1;
/// CR.Start: reads 1, the counter always runs.
const CR_START: u32 = 1;

/// PeriphID0..3 (part 0x031, designer 0x41 'A', revision 1), as QEMU's
/// `pl031`.
const PERIPH_ID: [u8; 4] = [0x31, 0x10, 0x14, 0x00];
/// The identification block: PeriphID0..3, then PCellID0..3, a byte in each
/// word.
const ID_BLOCK: core::ops::RangeInclusive<u64> = 0xFE0..=0xFFF;

/// The window a PL031 occupies.
pub const PL031_SIZE: u64 = 0x1000;

/// One emulated PL031.
pub struct Pl031<T: TimeSource> {
    time: T,
    /// What the guest loaded minus the source's time when it did: DR is
    /// `source seconds + offset`, modulo 2^32.
    offset: u32,
    mr: u32,
    /// The last value the guest loaded (LR reads it back).
    lr: u32,
    imsc: u32,
    ris: u32,
    /// Counter value at which DR next equals MR.
    alarm_at: Option<u64>,
}

impl<T: TimeSource> Pl031<T> {
    pub fn new(time: T) -> Self {
        let mut rtc = Pl031 {
            time,
            offset: 0,
            mr: 0,
            lr: 0,
            imsc: 0,
            ris: 0,
            alarm_at: None,
        };
        rtc.arm_alarm();
        rtc
    }

    /// Seconds since the epoch according to the source.
    fn source_seconds(&self) -> u64 {
        let seconds = self.time.counter() / self.time.frequency().max(1);
        self.time.epoch_at_zero().saturating_add(seconds)
    }

    fn dr(&self) -> u32 {
        (self.source_seconds() as u32).wrapping_add(self.offset)
    }

    /// Counter value at which the next whole second `DR == MR` begins.
    fn arm_alarm(&mut self) {
        let frequency = self.time.frequency().max(1);
        let delta = u64::from(self.mr.wrapping_sub(self.dr()));
        let now = self.time.counter();
        let second_start = now - now % frequency;
        self.alarm_at = delta
            .checked_mul(frequency)
            .and_then(|ticks| second_start.checked_add(ticks));
    }

    /// Latches RIS once the counter passed the alarm.
    fn update(&mut self) {
        if let Some(at) = self.alarm_at {
            if self.time.counter() >= at {
                self.ris |= INT_RTC;
                self.alarm_at = None;
            }
        }
    }

    /// Whether RTCINTR is asserted. Call again at `next_event()`.
    pub fn interrupt_pending(&mut self) -> bool {
        self.update();
        self.ris & self.imsc != 0
    }

    /// Counter value at which the interrupt state can next change, for the
    /// hypervisor to set a timer, if an unmasked alarm is pending.
    pub fn next_event(&self) -> Option<u64> {
        self.alarm_at.filter(|_| self.imsc & INT_RTC != 0)
    }

    fn read32(&mut self, offset: u64) -> u32 {
        self.update();
        match offset {
            reg::DR => self.dr(),
            reg::MR => self.mr,
            reg::LR => self.lr,
            reg::CR => CR_START,
            reg::IMSC => self.imsc,
            reg::RIS => self.ris,
            reg::MIS => self.ris & self.imsc,
            _ if ID_BLOCK.contains(&offset) => {
                let index = ((offset - ID_BLOCK.start()) / 4) as usize;
                let id = PERIPH_ID.iter().chain(&PRIMECELL_CELL_ID).nth(index);
                id.map_or(0, |byte| u32::from(*byte))
            }
            // ICR is write-only; no register elsewhere.
            _ => 0,
        }
    }

    fn write32(&mut self, offset: u64, value: u32) {
        self.update();
        match offset {
            reg::MR => {
                self.mr = value;
                self.arm_alarm();
            }
            reg::LR => {
                self.lr = value;
                self.offset = value.wrapping_sub(self.source_seconds() as u32);
                self.arm_alarm();
            }
            reg::IMSC => self.imsc = value & INT_RTC,
            reg::ICR => self.ris &= !value,
            // Read-only registers, and offsets with no register.
            _ => {}
        }
    }
}

impl<T: TimeSource + Clone + Send> VmDevice for Pl031<T> {
    fn interrupt_pending(&mut self) -> bool {
        Pl031::interrupt_pending(self)
    }

    fn next_event(&self) -> Option<u64> {
        Pl031::next_event(self)
    }

    fn reset(&mut self) {
        *self = Pl031::new(self.time.clone());
    }
}

impl<T: TimeSource> MmioDevice for Pl031<T> {
    fn size(&self) -> u64 {
        PL031_SIZE
    }

    fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        check_access(offset, width, PL031_SIZE)?;
        if width == AccessWidth::Double {
            return Err(MmioError::BadAccess { offset, width });
        }
        Ok(u64::from(self.read32(offset)) & width.mask())
    }

    fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Result<(), MmioError> {
        check_access(offset, width, PL031_SIZE)?;
        if width == AccessWidth::Double {
            return Err(MmioError::BadAccess { offset, width });
        }
        self.write32(offset, (value & width.mask()) as u32);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    const FREQUENCY: u64 = 62_500_000;
    /// 2026-01-01T00:00:00Z.
    const EPOCH: u64 = 1_767_225_600;

    #[derive(Clone)]
    struct FakeTime(Rc<Cell<u64>>);

    impl FakeTime {
        fn advance_seconds(&self, seconds: f64) {
            self.0
                .set(self.0.get() + (seconds * FREQUENCY as f64) as u64);
        }
    }

    impl TimeSource for FakeTime {
        fn counter(&self) -> u64 {
            self.0.get()
        }
        fn frequency(&self) -> u64 {
            FREQUENCY
        }
        fn epoch_at_zero(&self) -> u64 {
            EPOCH
        }
    }

    fn rtc() -> (Pl031<FakeTime>, FakeTime) {
        let time = FakeTime(Rc::new(Cell::new(0)));
        (Pl031::new(time.clone()), time)
    }

    fn read(rtc: &mut Pl031<FakeTime>, offset: u64) -> u32 {
        rtc.read(offset, AccessWidth::Word).unwrap() as u32
    }

    fn write(rtc: &mut Pl031<FakeTime>, offset: u64, value: u32) {
        rtc.write(offset, AccessWidth::Word, u64::from(value))
            .unwrap()
    }

    #[test]
    fn counts_seconds_from_the_epoch() {
        let (mut rtc, time) = rtc();
        assert_eq!(read(&mut rtc, reg::DR), EPOCH as u32);
        time.advance_seconds(2.5);
        assert_eq!(read(&mut rtc, reg::DR), EPOCH as u32 + 2);
        assert_eq!(read(&mut rtc, reg::CR), CR_START);
    }

    #[test]
    fn load_register_sets_the_time() {
        let (mut rtc, time) = rtc();
        write(&mut rtc, reg::LR, 1000);
        assert_eq!(read(&mut rtc, reg::DR), 1000);
        assert_eq!(read(&mut rtc, reg::LR), 1000);
        time.advance_seconds(3.0);
        assert_eq!(read(&mut rtc, reg::DR), 1003);
        write(&mut rtc, reg::LR, u32::MAX);
        time.advance_seconds(1.0);
        assert_eq!(read(&mut rtc, reg::DR), 0, "wraps modulo 2^32");
    }

    #[test]
    fn match_raises_the_interrupt_until_cleared() {
        let (mut rtc, time) = rtc();
        write(&mut rtc, reg::IMSC, INT_RTC);
        write(&mut rtc, reg::MR, EPOCH as u32 + 5);
        assert_eq!(rtc.next_event(), Some(5 * FREQUENCY));
        time.advance_seconds(4.9);
        assert!(!rtc.interrupt_pending());
        time.advance_seconds(0.2);
        assert!(rtc.interrupt_pending());
        assert_eq!(read(&mut rtc, reg::MIS), INT_RTC);
        write(&mut rtc, reg::ICR, INT_RTC);
        assert!(!rtc.interrupt_pending());
        assert_eq!(rtc.next_event(), None);
    }

    #[test]
    fn masked_match_latches_raw_status_only() {
        let (mut rtc, time) = rtc();
        write(&mut rtc, reg::MR, EPOCH as u32 + 1);
        time.advance_seconds(1.0);
        assert!(!rtc.interrupt_pending());
        assert_eq!(read(&mut rtc, reg::RIS), INT_RTC);
        assert_eq!(read(&mut rtc, reg::MIS), 0);
    }

    #[test]
    fn identification() {
        let (mut rtc, _) = rtc();
        let id = |rtc: &mut Pl031<FakeTime>, base: u64| {
            (0..4).fold(0u32, |id, i| {
                id | (read(rtc, base + 4 * i) & 0xFF) << (8 * i)
            })
        };
        // drivers/rtc/rtc-pl031.c: { .id = 0x00041031, .mask = 0x000fffff }.
        assert_eq!(id(&mut rtc, 0xFE0) & 0x000F_FFFF, 0x0004_1031);
        assert_eq!(id(&mut rtc, 0xFF0), 0xB105_F00D);
    }

    #[test]
    fn identification_as_qemu_reports_it() {
        let (mut rtc, _) = rtc();
        // hw/rtc/pl031.c: pl031_id[] = { 0x31, 0x10, 0x14, 0x00, ... }.
        let periph: Vec<u32> = (0..4).map(|i| read(&mut rtc, 0xFE0 + 4 * i)).collect();
        assert_eq!(periph, [0x31, 0x10, 0x14, 0x00]);
    }

    #[test]
    fn bytes_and_halfwords_as_on_qemu() {
        let (mut rtc, time) = rtc();
        time.advance_seconds(0x1234 as f64);
        let dr = u64::from(read(&mut rtc, reg::DR));
        assert_eq!(rtc.read(reg::DR, AccessWidth::Byte), Ok(dr & 0xFF));
        assert_eq!(rtc.read(reg::DR, AccessWidth::Half), Ok(dr & 0xFFFF));
        // Inside the identification block any offset reads its word's byte.
        assert_eq!(rtc.read(0xFE8, AccessWidth::Byte), Ok(0x14));
        assert_eq!(rtc.read(0xFE9, AccessWidth::Byte), Ok(0x14));
        assert_eq!(rtc.read(0xFFE, AccessWidth::Half), Ok(0xB1));
        // A byte write loads that byte.
        rtc.write(reg::IMSC, AccessWidth::Byte, 0x101).unwrap();
        assert_eq!(read(&mut rtc, reg::IMSC), 1);
        // No register: reads 0, writes ignored; 64-bit and misaligned
        // accesses abort.
        assert_eq!(rtc.read(0x20, AccessWidth::Word), Ok(0));
        assert_eq!(rtc.read(0x2, AccessWidth::Byte), Ok(0));
        assert_eq!(rtc.write(0x20, AccessWidth::Word, 5), Ok(()));
        assert_eq!(
            rtc.read(reg::DR, AccessWidth::Double),
            Err(MmioError::BadAccess {
                offset: 0,
                width: AccessWidth::Double
            })
        );
        assert!(rtc.read(0x2, AccessWidth::Word).is_err());
    }
}
