//! PL011 UART emulation (PrimeCell UART TRM, DDI 0183): transmitted bytes go
//! to a `CharSink` (the physical console, tagged per VM by the hypervisor);
//! received bytes come from a bounded buffer the hypervisor fills from the
//! physical UART's interrupt. The interrupt line (`interrupt_pending`) is
//! routed to SPI 1 (INTID 33) by the hypervisor. Identification registers
//! read as QEMU's PL011 does, which Linux's `amba-pl011` matches.

use alloc::collections::VecDeque;

use super::{amba_id_byte, check_access, AccessWidth, MmioDevice, MmioError};

/// Where transmitted bytes go.
pub trait CharSink {
    fn write_byte(&mut self, byte: u8);
}

/// Register offsets.
mod reg {
    pub const DR: u64 = 0x000;
    pub const RSR_ECR: u64 = 0x004;
    pub const FR: u64 = 0x018;
    pub const ILPR: u64 = 0x020;
    pub const IBRD: u64 = 0x024;
    pub const FBRD: u64 = 0x028;
    pub const LCR_H: u64 = 0x02C;
    pub const CR: u64 = 0x030;
    pub const IFLS: u64 = 0x034;
    pub const IMSC: u64 = 0x038;
    pub const RIS: u64 = 0x03C;
    pub const MIS: u64 = 0x040;
    pub const ICR: u64 = 0x044;
    pub const DMACR: u64 = 0x048;
}

/// UARTFR bits.
const FR_RXFE: u32 = 1 << 4;
const FR_RXFF: u32 = 1 << 6;
const FR_TXFE: u32 = 1 << 7;
// TXFF (bit 5) and BUSY (bit 3) never read as set: transmission is instant.

/// Interrupt bits (IMSC, RIS, MIS, ICR share the layout).
const INT_RX: u32 = 1 << 4;
const INT_TX: u32 = 1 << 5;
const INT_RT: u32 = 1 << 6;
const INT_OE: u32 = 1 << 10;
const INT_ALL: u32 = 0x7FF;

/// UARTRSR/ECR overrun error.
const RSR_OE: u32 = 1 << 3;
/// UARTDR overrun flag on the received character.
const DR_OE: u32 = 1 << 11;

/// LCR_H.FEN: FIFOs enabled.
const LCR_H_FEN: u32 = 1 << 4;

/// Reset values (TRM 3.2): CR has TXE and RXE set, IFLS both at 1/2.
const CR_RESET: u32 = 0x300;
const IFLS_RESET: u32 = 0x12;

/// Depth of the hardware receive FIFO, for the RX trigger level.
const HW_FIFO_DEPTH: usize = 32;

/// PeriphID0..3 of QEMU's `pl011` (part 0x011, designer 0x41 'A', rev 1).
const PERIPH_ID: [u8; 4] = [0x11, 0x10, 0x14, 0x00];

/// The window a PL011 occupies.
pub const PL011_SIZE: u64 = 0x1000;

/// How many received bytes the model buffers before it drops input and
/// flags an overrun.
pub const RX_CAPACITY: usize = 256;

/// One emulated PL011.
pub struct Pl011<S: CharSink> {
    sink: S,
    rx: VecDeque<u8>,
    /// An overrun happened since the guest last read DR; the next read
    /// carries DR_OE.
    rx_overrun: bool,
    rsr: u32,
    ilpr: u32,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    dmacr: u32,
    /// Latched interrupt sources (TX, OE); RX and RT follow the buffer.
    latched: u32,
    /// The interrupt line (MIS != 0), brought up to date by every change
    /// of what it depends on (`update_line`): an exit that leaves it alone
    /// (a flag poll, a control register) does not recompute it.
    line: bool,
}

impl<S: CharSink> Pl011<S> {
    pub fn new(sink: S) -> Self {
        Pl011 {
            sink,
            rx: VecDeque::with_capacity(RX_CAPACITY),
            rx_overrun: false,
            rsr: 0,
            ilpr: 0,
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: CR_RESET,
            ifls: IFLS_RESET,
            imsc: 0,
            dmacr: 0,
            latched: 0,
            line: false,
        }
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Queues a byte received on the physical UART. Returns false, drops the
    /// byte and flags an overrun when the buffer is full.
    pub fn push_rx(&mut self, byte: u8) -> bool {
        if self.rx.len() >= RX_CAPACITY {
            self.rx_overrun = true;
            self.rsr |= RSR_OE;
            self.latched |= INT_OE;
            self.update_line();
            return false;
        }
        self.rx.push_back(byte);
        self.update_line();
        true
    }

    /// Takes received bytes from `source` while the buffer has room, so
    /// input longer than the buffer waits at its source (the console's
    /// per-VM queue) until the guest reads, instead of being dropped.
    /// Returns how many bytes it took.
    pub fn fill_rx(&mut self, mut source: impl FnMut() -> Option<u8>) -> usize {
        let mut taken = 0;
        while self.rx.len() < RX_CAPACITY {
            let Some(byte) = source() else { break };
            self.push_rx(byte);
            taken += 1;
        }
        taken
    }

    /// Whether the UART's interrupt line is asserted (RIS & IMSC != 0).
    pub fn interrupt_pending(&self) -> bool {
        debug_assert_eq!(self.line, self.mis() != 0, "stale interrupt line");
        self.line
    }

    /// Recomputes the line after a change of the receive buffer, the
    /// latched sources, the mask or the trigger level.
    fn update_line(&mut self) {
        self.line = self.mis() != 0;
    }

    fn rx_trigger_level(&self) -> usize {
        if self.lcr_h & LCR_H_FEN == 0 {
            return 1;
        }
        // IFLS.RXIFLSEL: 1/8, 1/4, 1/2, 3/4, 7/8 full.
        let eighths = match (self.ifls >> 3) & 7 {
            0 => 1,
            1 => 2,
            2 => 4,
            3 => 6,
            _ => 7,
        };
        HW_FIFO_DEPTH * eighths / 8
    }

    fn ris(&self) -> u32 {
        let mut ris = self.latched;
        if self.rx.len() >= self.rx_trigger_level() {
            ris |= INT_RX;
        }
        if !self.rx.is_empty() {
            // The receive timeout fires when data waits below the trigger
            // level; with instant delivery there is always "waiting" data.
            ris |= INT_RT;
        }
        ris
    }

    fn mis(&self) -> u32 {
        self.ris() & self.imsc
    }

    fn flags(&self) -> u32 {
        let mut fr = FR_TXFE;
        if self.rx.is_empty() {
            fr |= FR_RXFE;
        }
        if self.rx.len() >= RX_CAPACITY {
            fr |= FR_RXFF;
        }
        fr
    }

    fn read_dr(&mut self) -> u32 {
        let Some(byte) = self.rx.pop_front() else {
            return 0;
        };
        self.update_line();
        let mut value = u32::from(byte);
        if core::mem::take(&mut self.rx_overrun) {
            value |= DR_OE;
        }
        value
    }

    /// Inlined, as `read32`/`write32` and the `MmioDevice` accesses are,
    /// into the exit fast path (`vm::exit`): out of line, each access
    /// returned its result through memory and set up a frame.
    #[inline(always)]
    fn read32(&mut self, offset: u64) -> Result<u32, MmioError> {
        Ok(match offset {
            reg::DR => self.read_dr(),
            reg::RSR_ECR => self.rsr,
            reg::FR => self.flags(),
            reg::ILPR => self.ilpr,
            reg::IBRD => self.ibrd,
            reg::FBRD => self.fbrd,
            reg::LCR_H => self.lcr_h,
            reg::CR => self.cr,
            reg::IFLS => self.ifls,
            reg::IMSC => self.imsc,
            reg::RIS => self.ris(),
            reg::MIS => self.mis(),
            reg::ICR => 0,
            reg::DMACR => self.dmacr,
            _ => match amba_id_byte(offset, PERIPH_ID) {
                Some(byte) => u32::from(byte),
                None => return Err(MmioError::Unhandled { offset }),
            },
        })
    }

    #[inline(always)]
    fn write32(&mut self, offset: u64, value: u32) -> Result<(), MmioError> {
        match offset {
            reg::DR => {
                self.sink.write_byte(value as u8);
                // The byte left the (virtual) FIFO at once: the TX FIFO fell
                // through its trigger level.
                self.latched |= INT_TX;
                self.update_line();
            }
            reg::RSR_ECR => self.rsr = 0,
            reg::ILPR => self.ilpr = value & 0xFF,
            reg::IBRD => self.ibrd = value & 0xFFFF,
            reg::FBRD => self.fbrd = value & 0x3F,
            reg::LCR_H => {
                self.lcr_h = value & 0xFF;
                self.update_line();
            }
            reg::CR => self.cr = value & 0xFF87,
            reg::IFLS => {
                self.ifls = value & 0x3F;
                self.update_line();
            }
            reg::IMSC => {
                self.imsc = value & INT_ALL;
                self.update_line();
            }
            reg::ICR => {
                self.latched &= !value;
                self.update_line();
            }
            reg::DMACR => self.dmacr = value & 0x7,
            reg::FR | reg::RIS | reg::MIS => {}
            _ if amba_id_byte(offset, PERIPH_ID).is_some() => {}
            _ => return Err(MmioError::Unhandled { offset }),
        }
        Ok(())
    }
}

impl<S: CharSink> MmioDevice for Pl011<S> {
    fn size(&self) -> u64 {
        PL011_SIZE
    }

    /// Byte, halfword and word accesses to the low bits of a register (Linux
    /// uses 16-bit accessors for `arm,pl011`, earlycon 8- or 32-bit ones).
    #[inline(always)]
    fn read(&mut self, offset: u64, width: AccessWidth) -> Result<u64, MmioError> {
        check_register_access(offset, width)?;
        Ok(u64::from(self.read32(offset)?) & width.mask())
    }

    #[inline(always)]
    fn write(&mut self, offset: u64, width: AccessWidth, value: u64) -> Result<(), MmioError> {
        check_register_access(offset, width)?;
        self.write32(offset, (value & width.mask()) as u32)
    }
}

/// `check_access` for a register access: byte, halfword or word at a word
/// offset, which cannot cross the end of the window, so the window test
/// is the offset's alone (and folds away where the caller knows it: the
/// exit fast path). Any other access gets `check_access`'s answer if it
/// has one, else `BadAccess`.
#[inline(always)]
fn check_register_access(offset: u64, width: AccessWidth) -> Result<(), MmioError> {
    if width == AccessWidth::Double || !offset.is_multiple_of(4) {
        check_access(offset, width, PL011_SIZE)?;
        return Err(MmioError::BadAccess { offset, width });
    }
    if offset >= PL011_SIZE {
        return Err(MmioError::OutOfWindow { offset });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FR_TXFF: u32 = 1 << 5;

    #[derive(Default)]
    struct Capture(Vec<u8>);

    impl CharSink for Capture {
        fn write_byte(&mut self, byte: u8) {
            self.0.push(byte);
        }
    }

    fn uart() -> Pl011<Capture> {
        Pl011::new(Capture::default())
    }

    fn read(u: &mut Pl011<Capture>, offset: u64) -> u64 {
        u.read(offset, AccessWidth::Word).unwrap()
    }

    fn write(u: &mut Pl011<Capture>, offset: u64, value: u64) {
        u.write(offset, AccessWidth::Word, value).unwrap()
    }

    #[test]
    fn transmit_goes_to_the_sink() {
        let mut u = uart();
        for byte in b"hi\n" {
            u.write(reg::DR, AccessWidth::Byte, u64::from(*byte))
                .unwrap();
        }
        assert_eq!(u.sink().0, b"hi\n");
        let fr = read(&mut u, reg::FR) as u32;
        assert_eq!(fr & (FR_TXFE | FR_TXFF | FR_RXFE), FR_TXFE | FR_RXFE);
    }

    #[test]
    fn receive_in_order_with_flags() {
        let mut u = uart();
        assert!(u.push_rx(b'a'));
        assert!(u.push_rx(b'b'));
        assert_eq!(read(&mut u, reg::FR) as u32 & FR_RXFE, 0);
        assert_eq!(read(&mut u, reg::DR), u64::from(b'a'));
        assert_eq!(u.read(reg::DR, AccessWidth::Half), Ok(u64::from(b'b')));
        assert_ne!(read(&mut u, reg::FR) as u32 & FR_RXFE, 0);
        assert_eq!(read(&mut u, reg::DR), 0, "empty FIFO reads 0");
    }

    #[test]
    fn overrun_is_flagged_and_cleared() {
        let mut u = uart();
        for i in 0..RX_CAPACITY {
            assert!(u.push_rx(i as u8));
        }
        assert_ne!(read(&mut u, reg::FR) as u32 & FR_RXFF, 0);
        assert!(!u.push_rx(0xEE));
        assert_ne!(read(&mut u, reg::RSR_ECR) as u32 & RSR_OE, 0);
        assert_ne!(read(&mut u, reg::RIS) as u32 & INT_OE, 0);
        assert_eq!(read(&mut u, reg::DR) as u32, DR_OE);
        assert_eq!(
            read(&mut u, reg::DR),
            1,
            "flag only on the first byte after the loss"
        );
        write(&mut u, reg::RSR_ECR, 0);
        write(&mut u, reg::ICR, u64::from(INT_OE));
        assert_eq!(read(&mut u, reg::RSR_ECR), 0);
        assert_eq!(read(&mut u, reg::RIS) as u32 & INT_OE, 0);
    }

    #[test]
    fn fill_takes_what_fits_and_the_rest_later() {
        let mut u = uart();
        let mut input = (0..RX_CAPACITY + 44).map(|i| i as u8);
        assert_eq!(u.fill_rx(|| input.next()), RX_CAPACITY);
        assert_ne!(read(&mut u, reg::FR) as u32 & FR_RXFF, 0);
        for i in 0..4 {
            assert_eq!(read(&mut u, reg::DR), i);
        }
        assert_eq!(u.fill_rx(|| input.next()), 4);
        for i in 4..RX_CAPACITY as u64 + 4 {
            assert_eq!(read(&mut u, reg::DR), i & 0xFF);
        }
        assert_eq!(u.fill_rx(|| input.next()), 40);
        assert_eq!(u.fill_rx(|| input.next()), 0, "source drained");
        assert_eq!(read(&mut u, reg::RSR_ECR), 0, "nothing was lost");
        for i in RX_CAPACITY as u64 + 4..RX_CAPACITY as u64 + 44 {
            assert_eq!(read(&mut u, reg::DR), i & 0xFF);
        }
        assert_ne!(read(&mut u, reg::FR) as u32 & FR_RXFE, 0);
    }

    #[test]
    fn receive_interrupt_follows_mask_and_data() {
        let mut u = uart();
        u.push_rx(b'x');
        assert!(!u.interrupt_pending(), "masked");
        write(&mut u, reg::IMSC, u64::from(INT_RX | INT_RT));
        assert!(u.interrupt_pending());
        assert_eq!(read(&mut u, reg::MIS) as u32, INT_RX | INT_RT);
        read(&mut u, reg::DR);
        assert!(!u.interrupt_pending(), "drained");
    }

    #[test]
    fn fifo_trigger_level_gates_rx_but_not_timeout() {
        let mut u = uart();
        write(&mut u, reg::LCR_H, u64::from(LCR_H_FEN));
        u.push_rx(b'x');
        let ris = read(&mut u, reg::RIS) as u32;
        assert_eq!(
            ris & (INT_RX | INT_RT),
            INT_RT,
            "1 byte is below the 1/2 trigger"
        );
        for _ in 1..HW_FIFO_DEPTH / 2 {
            u.push_rx(b'y');
        }
        assert_ne!(read(&mut u, reg::RIS) as u32 & INT_RX, 0);
    }

    #[test]
    fn transmit_interrupt_latches_until_cleared() {
        let mut u = uart();
        write(&mut u, reg::IMSC, u64::from(INT_TX));
        assert!(!u.interrupt_pending());
        write(&mut u, reg::DR, u64::from(b'a'));
        assert!(u.interrupt_pending());
        write(&mut u, reg::ICR, u64::from(INT_TX));
        assert!(!u.interrupt_pending());
    }

    #[test]
    fn control_registers_are_stored() {
        let mut u = uart();
        assert_eq!(read(&mut u, reg::CR), u64::from(CR_RESET));
        assert_eq!(read(&mut u, reg::IFLS), u64::from(IFLS_RESET));
        for (offset, value) in [
            (reg::IBRD, 0x27),
            (reg::FBRD, 0x4),
            (reg::LCR_H, 0x70),
            (reg::CR, 0x301),
        ] {
            write(&mut u, offset, value);
            assert_eq!(read(&mut u, offset), value, "{offset:#x}");
        }
    }

    #[test]
    fn identification_as_amba_probes_it() {
        let mut u = uart();
        let id = |u: &mut Pl011<Capture>, base: u64| {
            (0..4).fold(0u32, |id, i| {
                id | (read(u, base + 4 * i) as u32 & 0xFF) << (8 * i)
            })
        };
        // drivers/tty/serial/amba-pl011.c: { .id = 0x00041011, .mask = 0x000fffff }.
        assert_eq!(id(&mut u, 0xFE0) & 0x000F_FFFF, 0x0004_1011);
        assert_eq!(id(&mut u, 0xFF0), 0xB105_F00D);
    }

    #[test]
    fn bad_accesses_are_errors() {
        let mut u = uart();
        assert_eq!(
            u.read(reg::DR, AccessWidth::Double),
            Err(MmioError::BadAccess {
                offset: 0,
                width: AccessWidth::Double
            })
        );
        assert_eq!(
            u.read(0x19, AccessWidth::Byte),
            Err(MmioError::BadAccess {
                offset: 0x19,
                width: AccessWidth::Byte
            })
        );
        assert_eq!(
            u.read(0x100, AccessWidth::Word),
            Err(MmioError::Unhandled { offset: 0x100 })
        );
        assert_eq!(
            u.read(0x1000, AccessWidth::Word),
            Err(MmioError::OutOfWindow { offset: 0x1000 })
        );
        // Misaligned and across the end: the window's answer first.
        assert_eq!(
            u.read(0xFFF, AccessWidth::Half),
            Err(MmioError::OutOfWindow { offset: 0xFFF })
        );
        assert_eq!(
            u.write(0xFFC, AccessWidth::Double, 0),
            Err(MmioError::OutOfWindow { offset: 0xFFC })
        );
    }
}
