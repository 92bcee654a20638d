//! Exit statistics: how often each vCPU left its guest, by kind. A vCPU's
//! CPU counts its exits without any lock (the exit fast path bumps the
//! field of the kind it handled; [`ExitCounts::count`] classifies every
//! other exit), folds them into the VM's total when the vCPU stops, and
//! the VM's owner prints one line when the VM stops:
//!
//! ```text
//! hypervisor: vm0: exits 27031: uart 15000, gic 2400, device 800, call 12, sysreg 3100, wfx 0, irq 5700, other 19
//! ```
//!
//! The lab reads that line into the run's result.json and boot timeline.
#![forbid(unsafe_code)]

use core::fmt;

use crate::addr::IntermediatePhysAddr;
use crate::arch::aarch64::context::{ExitInfo, ExitKind};
use crate::arch::aarch64::esr::{self, Esr, ExceptionClass};
use crate::layout::{GICD_BASE, GICR_BASE, PL011_BASE, PRIMECELL_SIZE, VIRTIO_BASE};

/// Exits by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// Accesses to the PL011.
    pub uart: u64,
    /// Accesses to the GIC distributor and redistributors.
    pub gic: u64,
    /// Accesses to the other devices (RTC, virtio, flash).
    pub device: u64,
    /// HVC and SMC calls (PSCI, SMCCC, FF-A).
    pub call: u64,
    /// Trapped system registers (the guest's IPIs among them).
    pub sysreg: u64,
    /// WFI/WFE (trapped only while vCPUs share a CPU).
    pub wfx: u64,
    /// Physical interrupts: timers, kicks, maintenance, console input.
    pub irq: u64,
    /// Everything else (aborts outside devices, SErrors, undefined).
    pub other: u64,
}

impl ExitCounts {
    /// Counts one exit.
    pub fn count(&mut self, info: &ExitInfo) {
        let slot = match info.kind {
            ExitKind::Irq | ExitKind::Fiq => &mut self.irq,
            ExitKind::SError => &mut self.other,
            ExitKind::Sync => match Esr(info.esr).class() {
                ExceptionClass::DataAbortLower => {
                    match window(esr::fault_ipa(info.hpfar, info.far)) {
                        Window::Uart => &mut self.uart,
                        Window::Gic => &mut self.gic,
                        Window::Device => &mut self.device,
                        Window::Other => &mut self.other,
                    }
                }
                ExceptionClass::Hvc64 | ExceptionClass::Smc64 => &mut self.call,
                ExceptionClass::SysReg => &mut self.sysreg,
                ExceptionClass::Wfx => &mut self.wfx,
                _ => &mut self.other,
            },
        };
        *slot += 1;
    }

    pub fn total(&self) -> u64 {
        self.fields().iter().map(|(_, n)| n).sum()
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &ExitCounts) {
        self.uart += other.uart;
        self.gic += other.gic;
        self.device += other.device;
        self.call += other.call;
        self.sysreg += other.sysreg;
        self.wfx += other.wfx;
        self.irq += other.irq;
        self.other += other.other;
    }

    fn fields(&self) -> [(&'static str, u64); 8] {
        [
            ("uart", self.uart),
            ("gic", self.gic),
            ("device", self.device),
            ("call", self.call),
            ("sysreg", self.sysreg),
            ("wfx", self.wfx),
            ("irq", self.irq),
            ("other", self.other),
        ]
    }
}

/// `exits <total>: uart <n>, gic <n>, ...` (the lab parses this).
impl fmt::Display for ExitCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exits {}:", self.total())?;
        for (i, (name, n)) in self.fields().iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep} {name} {n}")?;
        }
        Ok(())
    }
}

enum Window {
    Uart,
    Gic,
    Device,
    Other,
}

/// Which kind of device window `ipa` is in, by address alone (the GIC's
/// redistributor range is taken as its largest: 8 vCPUs).
fn window(ipa: IntermediatePhysAddr) -> Window {
    let raw = ipa.as_u64();
    let in_range =
        |base: IntermediatePhysAddr, size: u64| raw >= base.as_u64() && raw - base.as_u64() < size;
    if in_range(PL011_BASE, PRIMECELL_SIZE) {
        Window::Uart
    } else if in_range(
        GICD_BASE,
        GICR_BASE.as_u64() + 8 * 0x2_0000 - GICD_BASE.as_u64(),
    ) {
        Window::Gic
    } else if raw < VIRTIO_BASE.as_u64() + 0x1_0000 {
        // Flash, RTC, virtio: everything below the end of the virtio slots.
        Window::Device
    } else {
        Window::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(kind: ExitKind, esr: u64, ipa: u64) -> ExitInfo {
        ExitInfo {
            kind,
            esr,
            far: ipa,
            hpfar: (ipa >> 12) << 4,
        }
    }

    const DABT: u64 = 0x24 << 26;

    #[test]
    fn exits_are_counted_by_kind_and_printed_in_one_line() {
        let mut c = ExitCounts::default();
        c.count(&exit(ExitKind::Sync, DABT, 0x0900_0018));
        c.count(&exit(ExitKind::Sync, DABT, 0x0900_0000));
        c.count(&exit(ExitKind::Sync, DABT, 0x0800_0100));
        c.count(&exit(ExitKind::Sync, DABT, 0x080a_0000 + 0x2_0100));
        c.count(&exit(ExitKind::Sync, DABT, 0x0a00_0050));
        c.count(&exit(ExitKind::Sync, DABT, 0x0901_0000));
        c.count(&exit(ExitKind::Sync, DABT, 0x3000_0000));
        c.count(&exit(ExitKind::Sync, 0x16 << 26, 0));
        c.count(&exit(ExitKind::Sync, 0x17 << 26, 0));
        c.count(&exit(ExitKind::Sync, 0x18 << 26, 0));
        c.count(&exit(ExitKind::Sync, 0x01 << 26, 0));
        c.count(&exit(ExitKind::Irq, 0, 0));
        c.count(&exit(ExitKind::SError, 0, 0));
        c.count(&exit(ExitKind::Sync, 0, 0));
        assert_eq!(
            c,
            ExitCounts {
                uart: 2,
                gic: 2,
                device: 2,
                call: 2,
                sysreg: 1,
                wfx: 1,
                irq: 1,
                other: 3,
            }
        );
        let mut total = ExitCounts::default();
        total.add(&c);
        total.add(&c);
        assert_eq!(total.total(), 28);
        assert_eq!(
            alloc::format!("{total}"),
            "exits 28: uart 4, gic 4, device 4, call 4, sysreg 2, wfx 2, irq 2, other 6"
        );
    }
}
