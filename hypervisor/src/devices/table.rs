//! A VM's device table: every emulated device other than the interrupt
//! controller and the console (which have fast paths of their own), by
//! guest-physical window, each with the SPI its line drives. The VM builds
//! it from its manifest entry; the exit handler finds a device by IPA here,
//! so a new device kind is a new entry, never a new arm in the exit path.
//!
//! Between guest entries the run loop asks the table to serve devices with
//! work ([`DeviceTable::service`]) and to bring their lines into the vGIC
//! ([`DeviceTable::update_lines`]); both look only at the devices that
//! have a line, so the empty virtio slots cost nothing there.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::vec::Vec;

use super::gic::Vgic;
use super::memory::GuestMemory;
use super::VmDevice;
use crate::addr::IntermediatePhysAddr;

/// Two windows of the table overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overlap {
    pub base: IntermediatePhysAddr,
}

struct Entry {
    base: IntermediatePhysAddr,
    size: u64,
    /// Guest INTID of its SPI, if it has one.
    intid: Option<u32>,
    /// The level last driven onto that SPI.
    line: bool,
    device: Box<dyn VmDevice>,
}

/// Devices by window, sorted by base address.
#[derive(Default)]
pub struct DeviceTable {
    entries: Vec<Entry>,
    /// Indices of the entries with an interrupt line: the ones with
    /// behaviour between accesses.
    active: Vec<usize>,
}

impl DeviceTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `device` at `base` (its window is `device.size()` bytes), its
    /// line wired to SPI `intid`.
    pub fn insert(
        &mut self,
        base: IntermediatePhysAddr,
        intid: Option<u32>,
        device: Box<dyn VmDevice>,
    ) -> Result<(), Overlap> {
        let size = device.size();
        let end = base.checked_add(size).ok_or(Overlap { base })?;
        let at = self.entries.partition_point(|e| e.base < base);
        let clashes_before = at > 0 && {
            let before = &self.entries[at - 1];
            before
                .base
                .checked_add(before.size)
                .is_none_or(|e| e > base)
        };
        let clashes_after = self.entries.get(at).is_some_and(|after| after.base < end);
        if clashes_before || clashes_after || size == 0 {
            return Err(Overlap { base });
        }
        self.entries.insert(
            at,
            Entry {
                base,
                size,
                intid,
                line: false,
                device,
            },
        );
        self.active = (0..self.entries.len())
            .filter(|i| self.entries[*i].intid.is_some())
            .collect();
        Ok(())
    }

    /// The device whose window holds `ipa` (an index for
    /// [`Self::device`]), and the offset in it.
    pub fn lookup(&self, ipa: IntermediatePhysAddr) -> Option<(usize, u64)> {
        let index = self
            .entries
            .partition_point(|e| e.base <= ipa)
            .checked_sub(1)?;
        let entry = &self.entries[index];
        let offset = ipa
            .checked_offset_from(entry.base)
            .filter(|o| *o < entry.size)?;
        Some((index, offset))
    }

    /// Device number `index` of [`Self::lookup`].
    pub fn device(&mut self, index: usize) -> Option<&mut dyn VmDevice> {
        Some(&mut *self.entries.get_mut(index)?.device)
    }

    /// Whether a device has work no guest access will start.
    pub fn has_work(&self) -> bool {
        self.active
            .iter()
            .any(|i| self.entries[*i].device.has_work())
    }

    /// Serves every device with work; returns the VMs they delivered to
    /// (a mask), to be woken.
    pub fn service(&mut self, mem: &mut dyn GuestMemory) -> u64 {
        let mut wake = 0;
        for i in &self.active {
            let device = &mut self.entries[*i].device;
            if device.has_work() {
                device.service(mem);
            }
            wake |= device.take_wakeups();
        }
        wake
    }

    /// Drives each device's level onto its SPI. Returns, as a mask, the
    /// vCPUs that an interrupt which just rose is routed to.
    pub fn update_lines(&mut self, vgic: &Vgic) -> u64 {
        let mut rose = 0;
        for i in 0..self.active.len() {
            rose |= self.sync_line(self.active[i], vgic);
        }
        rose
    }

    /// Drives device `index`'s level onto its SPI now, as [`Self::update_lines`]
    /// does for all. Call it after every access to the device: an edge-
    /// triggered SPI (virtio's) sees each fall and rise, even when one exit
    /// acknowledges an interrupt and the work it does raises the next.
    pub fn sync_line(&mut self, index: usize, vgic: &Vgic) -> u64 {
        let Some(entry) = self.entries.get_mut(index) else {
            return 0;
        };
        let Some(intid) = entry.intid else {
            return 0;
        };
        let level = entry.device.interrupt_pending();
        if level == entry.line {
            return 0;
        }
        entry.line = level;
        // The table only wires SPIs the VM's vGIC implements.
        let _ = vgic.set_spi_level(intid, level);
        match vgic.spi_target(intid) {
            Ok(Some(vcpu)) if level && vcpu < 64 => 1 << vcpu,
            _ => 0,
        }
    }

    /// The earliest counter value at which a device's line can change by
    /// itself.
    pub fn next_event(&self) -> Option<u64> {
        self.active
            .iter()
            .filter_map(|i| self.entries[*i].device.next_event())
            .min()
    }

    /// Each device's report ([`VmDevice::report`]) with its window's base.
    pub fn reports(
        &self,
    ) -> impl Iterator<Item = (IntermediatePhysAddr, alloc::string::String)> + '_ {
        self.entries
            .iter()
            .filter_map(|e| e.device.report().map(|r| (e.base, r)))
    }

    /// Resets every device and forgets the lines (the vGIC is reset too).
    pub fn reset(&mut self) {
        for entry in &mut self.entries {
            entry.device.reset();
            entry.line = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::gic::Affinity;
    use crate::devices::memory::fake::VecMemory;
    use crate::devices::{AccessWidth, MmioDevice, MmioError};

    /// A device whose line follows register 0 and which counts services.
    #[derive(Default)]
    struct Latch {
        level: bool,
        work: bool,
        serviced: u32,
        resets: u32,
    }

    impl MmioDevice for Latch {
        fn size(&self) -> u64 {
            0x100
        }
        fn read(&mut self, _offset: u64, _width: AccessWidth) -> Result<u64, MmioError> {
            Ok(u64::from(self.serviced))
        }
        fn write(
            &mut self,
            _offset: u64,
            _width: AccessWidth,
            value: u64,
        ) -> Result<(), MmioError> {
            self.level = value & 1 != 0;
            self.work = value & 2 != 0;
            Ok(())
        }
    }

    impl VmDevice for Latch {
        fn interrupt_pending(&mut self) -> bool {
            self.level
        }
        fn service(&mut self, _mem: &mut dyn GuestMemory) {
            self.serviced += 1;
            self.work = false;
        }
        fn has_work(&self) -> bool {
            self.work
        }
        fn take_wakeups(&mut self) -> u64 {
            u64::from(self.serviced)
        }
        fn next_event(&self) -> Option<u64> {
            self.level.then_some(1000)
        }
        fn reset(&mut self) {
            self.resets += 1;
            self.level = false;
        }
    }

    fn ipa(raw: u64) -> IntermediatePhysAddr {
        IntermediatePhysAddr::new(raw)
    }

    fn table() -> DeviceTable {
        let mut t = DeviceTable::new();
        t.insert(ipa(0x2000), Some(48), Box::new(Latch::default()))
            .unwrap();
        t.insert(ipa(0x1000), None, Box::new(Latch::default()))
            .unwrap();
        t
    }

    #[test]
    fn lookup_finds_the_window_and_offset() {
        let t = table();
        assert!(t.lookup(ipa(0x0fff)).is_none());
        assert_eq!(t.lookup(ipa(0x1000)), Some((0, 0)));
        assert_eq!(t.lookup(ipa(0x10ff)), Some((0, 0xff)));
        assert!(t.lookup(ipa(0x1100)).is_none(), "between windows");
        assert_eq!(t.lookup(ipa(0x2080)), Some((1, 0x80)));
        assert!(t.lookup(ipa(0x2100)).is_none());
        assert!(t.lookup(ipa(u64::MAX)).is_none());
    }

    #[test]
    fn overlapping_windows_are_refused() {
        let mut t = table();
        for base in [0x0f80, 0x1000, 0x10ff, 0x1f01, 0x20ff] {
            assert_eq!(
                t.insert(ipa(base), None, Box::new(Latch::default())),
                Err(Overlap { base: ipa(base) }),
                "{base:#x}"
            );
        }
        assert_eq!(
            t.insert(ipa(u64::MAX - 0x10), None, Box::new(Latch::default())),
            Err(Overlap {
                base: ipa(u64::MAX - 0x10)
            })
        );
        assert!(t
            .insert(ipa(0x1100), None, Box::new(Latch::default()))
            .is_ok());
    }

    #[test]
    fn lines_reach_the_vgic_and_report_the_vcpus_to_tell() {
        let vgic = Vgic::new(32, &[Affinity::from_mpidr(0)]).unwrap();
        let mut t = table();
        let (index, offset) = t.lookup(ipa(0x2000)).unwrap();
        let device = t.device(index).unwrap();
        device.write(offset, AccessWidth::Word, 1).unwrap();
        assert_eq!(t.update_lines(&vgic), 0b1, "rose, routed to vCPU 0");
        assert_eq!(t.update_lines(&vgic), 0, "no change, nobody to tell");
        assert_eq!(t.next_event(), Some(1000));
        let (index, offset) = t.lookup(ipa(0x2000)).unwrap();
        let device = t.device(index).unwrap();
        device.write(offset, AccessWidth::Word, 0).unwrap();
        assert_eq!(t.update_lines(&vgic), 0, "a line that fell needs nobody");
        assert_eq!(t.next_event(), None);
    }

    #[test]
    fn a_fall_and_rise_within_one_exit_is_seen_by_an_edge_triggered_spi() {
        let vgic = Vgic::new(32, &[Affinity::from_mpidr(0)]).unwrap();
        // ICFGR2 (SPIs 32..47) and ICFGR3 (48..63): all edge-triggered.
        for icfgr in [0xC08, 0xC0C] {
            vgic.distributor()
                .write(icfgr, AccessWidth::Word, 0xAAAA_AAAA)
                .unwrap();
        }
        let mut t = table();
        let set = |t: &mut DeviceTable, level: u64| {
            t.device(1)
                .unwrap()
                .write(0, AccessWidth::Word, level)
                .unwrap();
            t.sync_line(1, &vgic)
        };
        assert_eq!(set(&mut t, 1), 0b1);
        // The guest takes it: GICD_ICPENDR1 clears SPI 48's latch.
        vgic.distributor()
            .write(0x284, AccessWidth::Word, 1 << 16)
            .unwrap();
        assert!(!vgic.irq(0, 48).unwrap().pending_latch);
        // The guest acknowledges (the line falls) and the same exit's work
        // raises it again: a new edge.
        assert_eq!(set(&mut t, 0), 0);
        assert_eq!(set(&mut t, 1), 0b1);
        assert!(vgic.irq(0, 48).unwrap().pending_latch);
    }

    #[test]
    fn only_devices_with_work_are_served() {
        let mut t = table();
        let mut mem = VecMemory::new(0, 0);
        assert!(!t.has_work());
        assert_eq!(t.service(&mut mem), 0);
        let (index, offset) = t.lookup(ipa(0x2000)).unwrap();
        let device = t.device(index).unwrap();
        device.write(offset, AccessWidth::Word, 2).unwrap();
        assert!(t.has_work());
        assert_eq!(t.service(&mut mem), 1, "its wake-ups are collected");
        assert!(!t.has_work());
        let (index, offset) = t.lookup(ipa(0x2000)).unwrap();
        let device = t.device(index).unwrap();
        assert_eq!(device.read(offset, AccessWidth::Word), Ok(1));
    }

    #[test]
    fn reset_reaches_every_device() {
        let vgic = Vgic::new(32, &[Affinity::from_mpidr(0)]).unwrap();
        let mut t = table();
        let (index, offset) = t.lookup(ipa(0x2000)).unwrap();
        let device = t.device(index).unwrap();
        device.write(offset, AccessWidth::Word, 1).unwrap();
        t.update_lines(&vgic);
        t.reset();
        assert!(!t.device(1).unwrap().interrupt_pending());
        // The line was forgotten with the vGIC's state: raising it again
        // is news.
        let (index, offset) = t.lookup(ipa(0x2000)).unwrap();
        let device = t.device(index).unwrap();
        device.write(offset, AccessWidth::Word, 1).unwrap();
        assert_eq!(t.update_lines(&vgic), 0b1);
    }
}
