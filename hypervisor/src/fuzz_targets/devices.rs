//! Fuzz targets for the register-only device models: the PL011, PL031,
//! CFI flash and the vGIC, each driven by a sequence of guest accesses
//! (offset, width, value) mixed with what their other side does (bytes
//! arriving, time passing, interrupts raised by devices and timers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::Input;
use crate::devices::gic::{Affinity, Vgic};
use crate::devices::pflash::Pflash;
use crate::devices::pl011::{CharSink, Pl011};
use crate::devices::pl031::{Pl031, TimeSource};
use crate::devices::{AccessWidth, MmioDevice, VmDevice};

/// Longest sequence of operations one input runs.
const MAX_OPS: usize = 4096;

/// One guest access at an offset of `device`'s window. A read returns
/// only the bits of its width (the models zero-extend).
pub(crate) fn access(device: &mut dyn MmioDevice, input: &mut Input) {
    let op = input.u8();
    let width = AccessWidth::from_log2(op >> 1);
    let offset = input.offset(device.size());
    if op & 1 == 0 {
        if let Ok(value) = device.read(offset, width) {
            assert_eq!(
                value & !width.mask(),
                0,
                "{width:?} read at {offset:#x} returned {value:#x}"
            );
        }
    } else {
        let _ = device.write(offset, width, input.u64());
    }
}

/// Counts what the guest transmits.
struct CountingSink(usize);

impl CharSink for CountingSink {
    fn write_byte(&mut self, _byte: u8) {
        self.0 += 1;
    }
}

/// PL011: register accesses, bytes arriving from the console.
pub fn pl011(data: &[u8]) {
    let mut input = Input::new(data);
    let mut uart = Pl011::new(CountingSink(0));
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 4 {
            0 | 1 => access(&mut uart, &mut input),
            2 => {
                let byte = input.u8();
                let _ = uart.push_rx(byte);
            }
            _ => {
                let mut left = input.u8();
                uart.fill_rx(|| {
                    left = left.checked_sub(1)?;
                    Some(left)
                });
            }
        }
        let _ = uart.interrupt_pending();
    }
}

/// A system counter the input moves forward (clones share it).
#[derive(Clone)]
struct Counter {
    now: Arc<AtomicU64>,
    frequency: u64,
    epoch_at_zero: u64,
}

impl TimeSource for Counter {
    fn counter(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
    fn frequency(&self) -> u64 {
        self.frequency
    }
    fn epoch_at_zero(&self) -> u64 {
        self.epoch_at_zero
    }
}

/// PL031: register accesses (the load and match registers), time passing,
/// the run loop asking for the line and the next alarm.
pub fn pl031(data: &[u8]) {
    let mut input = Input::new(data);
    // The counter frequency comes from firmware (CNTFRQ) and the epoch
    // from the host's RTC: not guest input, but any plausible value.
    let time = Counter {
        now: Arc::new(AtomicU64::new(input.u64() >> input.u8().min(63))),
        frequency: input.pick(&[1, 1_000, 62_500_000, 1_000_000_000, u64::from(u32::MAX)]),
        epoch_at_zero: u64::from(input.u32()),
    };
    let mut rtc = Pl031::new(time.clone());
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 4 {
            0 | 1 => access(&mut rtc, &mut input),
            2 => {
                let ticks = u64::from(input.u32()) << (input.u8() % 32);
                let now = time.counter().saturating_add(ticks);
                time.now.store(now, Ordering::Relaxed);
            }
            _ => {
                let _ = Pl031::interrupt_pending(&mut rtc);
                let _ = Pl031::next_event(&rtc);
            }
        }
    }
    VmDevice::reset(&mut rtc);
}

/// CFI flash: command sequences and array accesses, and a reset.
pub fn pflash(data: &[u8]) {
    let mut input = Input::new(data);
    let mut flash = Pflash::new();
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        if input.u8() == 0xff {
            VmDevice::reset(&mut flash);
        } else {
            access(&mut flash, &mut input);
        }
    }
}

/// The vGIC: distributor and redistributor accesses mixed with the
/// interrupts devices, timers and other vCPUs raise, and the list-register
/// path taking and completing them.
pub fn gic(data: &[u8]) {
    let mut input = Input::new(data);
    let spis = input.pick(&[0, 32, 64, 96, 960, 33]);
    let vcpus = usize::from(input.u8() % 8) + 1;
    let affinities: Vec<Affinity> = (0..vcpus)
        .map(|i| Affinity::new(0, 0, 0, i as u8))
        .collect();
    let Ok(vgic) = Vgic::new(spis, &affinities) else {
        return;
    };
    // INTIDs up to a little past the last SPI, and the special ones.
    let intid =
        |input: &mut Input| u32::from(input.u16()) % (spis + 64) + u32::from(input.bool()) * 1000;
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let vcpu = usize::from(input.u8()) % (vcpus + 1);
        match input.u8() % 12 {
            0..=2 => access(&mut vgic.distributor(), &mut input),
            3..=5 => access(&mut vgic.redistributors(), &mut input),
            6 => {
                let _ = vgic.send_sgi(vcpu, input.u64());
            }
            7 => {
                let _ = vgic.raise_edge(vcpu, intid(&mut input));
            }
            8 => {
                let level = input.bool();
                let _ = vgic.set_spi_level(intid(&mut input), level);
                let _ = vgic.set_ppi_level(vcpu, intid(&mut input), level);
            }
            9 => {
                let _ = vgic.highest_pending(vcpu);
                let _ = vgic.activate_highest(vcpu);
            }
            10 => {
                let id = intid(&mut input);
                let _ = vgic.activate(vcpu, id);
                let _ = vgic.deactivate(vcpu, intid(&mut input));
                let _ = vgic.irq(vcpu, id);
                let _ = vgic.spi_target(id);
            }
            _ => {
                if input.u8() == 0 {
                    vgic.reset();
                }
                let _ = vgic.generation(vcpu);
            }
        }
    }
}
