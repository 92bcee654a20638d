//! The PL011 console: a polled transmitter behind `fmt::Write`, reachable
//! from the panic and exception handlers.

use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::arch::DeviceWindow;
use crate::platform::Window;

/// PL011 registers (PrimeCell UART TRM, 3.2).
const UARTDR: usize = 0x000;
const UARTFR: usize = 0x018;
const FR_TXFF: u32 = 1 << 5;
const UARTIMSC: usize = 0x038;
const UARTRIS: usize = 0x03C;
const UARTICR: usize = 0x044;
/// The transmit interrupt bit of IMSC/RIS/ICR.
pub const INT_TX: u32 = 1 << 5;
/// UARTPeriphID0..3 and UARTPCellID0..3, one byte per word.
const PERIPH_ID0: usize = 0xFE0;
const PCELL_ID0: usize = 0xFF0;
/// The window a PL011 needs.
const PL011_SIZE: usize = 0x1000;

// Global: the panic and exception handlers have no other way to reach the
// console. Holds the console PL011's base once `install` ran, else 0.
static CONSOLE_BASE: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Copy)]
pub struct Pl011 {
    regs: DeviceWindow,
}

impl Pl011 {
    pub fn new(window: Window) -> Option<Self> {
        DeviceWindow::new(window).map(|regs| Pl011 { regs })
    }

    pub fn base(&self) -> usize {
        self.regs.base()
    }

    /// PeriphID and PCellID, each assembled from its four byte registers.
    pub fn ids(&self) -> (u32, u32) {
        let assemble = |start: usize| {
            (0..4).fold(0u32, |id, i| {
                id | (self.regs.read32(start + 4 * i) & 0xFF) << (8 * i)
            })
        };
        (assemble(PERIPH_ID0), assemble(PCELL_ID0))
    }

    /// UARTIMSC: which interrupt sources drive the line.
    pub fn set_interrupt_mask(&self, mask: u32) {
        self.regs.write32(UARTIMSC, mask);
    }

    /// UARTRIS: the raw interrupt status.
    pub fn raw_interrupts(&self) -> u32 {
        self.regs.read32(UARTRIS)
    }

    /// UARTICR: clears latched interrupt sources.
    pub fn clear_interrupts(&self, bits: u32) {
        self.regs.write32(UARTICR, bits);
    }

    fn put(&self, byte: u8) {
        while self.regs.read32(UARTFR) & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        self.regs.write32(UARTDR, u32::from(byte));
    }
}

impl fmt::Write for Pl011 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                self.put(b'\r');
            }
            self.put(byte);
        }
        Ok(())
    }
}

/// Makes `uart` the console the handlers print to.
pub fn install(uart: Pl011) {
    CONSOLE_BASE.store(uart.base(), Ordering::SeqCst);
}

/// The installed console, if any.
pub fn get() -> Option<Pl011> {
    match CONSOLE_BASE.load(Ordering::SeqCst) {
        0 => None,
        base => Pl011::new(Window {
            base,
            size: PL011_SIZE,
        }),
    }
}
