//! The checks, in the order they run. Each one drives a device through
//! `arch` and writes exactly one sentinel line through the `Report`.

use core::fmt::Write;

use crate::arch::{self, sysreg, DeviceWindow};
use crate::civil::DateTime;
use crate::console::{self, Pl011};
use crate::platform::{Conduit, Platform};
use crate::report::Report;
use crate::smccc::{self, Version};

/// GICv3 distributor registers (GICv3 architecture spec, 12.9).
mod gicd {
    pub const CTLR: usize = 0x0000;
    pub const TYPER: usize = 0x0004;
    pub const IIDR: usize = 0x0008;
    pub const PIDR2: usize = 0xFFE8;
    pub const CTLR_ENABLE_G1: u32 = 1 << 0;
    pub const CTLR_ENABLE_G1A: u32 = 1 << 1;
    pub const CTLR_ARE_NS: u32 = 1 << 4;
    pub const CTLR_RWP: u32 = 1 << 31;
}

/// GICv3 redistributor registers: RD_base frame, then SGI_base frame.
mod gicr {
    pub const FRAME_STRIDE: usize = 0x2_0000;
    pub const SGI_BASE: usize = 0x1_0000;
    pub const CTLR: usize = 0x0000;
    pub const TYPER: usize = 0x0008;
    pub const WAKER: usize = 0x0014;
    pub const CTLR_RWP: u32 = 1 << 3;
    pub const TYPER_LAST: u64 = 1 << 4;
    pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
    pub const IGROUPR0: usize = SGI_BASE + 0x0080;
    pub const ISENABLER0: usize = SGI_BASE + 0x0100;
    pub const ICENABLER0: usize = SGI_BASE + 0x0180;
    pub const ICPENDR0: usize = SGI_BASE + 0x0280;
    pub const IPRIORITYR: usize = SGI_BASE + 0x0400;
}

/// Distributor registers for SPIs (one bit, one byte or 8 bytes per INTID).
mod spi {
    pub const IGROUPR: usize = 0x0080;
    pub const ISENABLER: usize = 0x0100;
    pub const ICENABLER: usize = 0x0180;
    pub const ISPENDR: usize = 0x0200;
    pub const ICPENDR: usize = 0x0280;
    pub const IPRIORITYR: usize = 0x0400;
    pub const IROUTER: usize = 0x6000;
}

/// PL031 registers (PrimeCell RTC TRM, 3.2).
mod rtc {
    pub const DR: usize = 0x000;
    pub const PERIPH_ID0: usize = 0xFE0;
    pub const PCELL_ID0: usize = 0xFF0;
    pub const PERIPH_ID: u32 = 0x0004_1031;
    pub const PERIPH_ID_MASK: u32 = 0x000F_FFFF;
}

/// The PrimeCell component ID every AMBA peripheral reports.
pub const PRIMECELL_ID: u32 = 0xB105_F00D;
/// 2020-01-01T00:00:00Z.
const YEAR_2020: u64 = 1_577_836_800;
/// ICC_SRE_EL1.SRE.
const ICC_SRE: u64 = 1;
/// Priority given to every PPI/SGI; the mask lets anything above 0xF0 in.
const PPI_PRIORITY: u8 = 0xA0;
const PRIORITY_MASK: u64 = 0xF0;
/// How long the virtual timer is set for and how long we wait for it.
const TIMER_DELAY_MS: u64 = 10;
const TIMER_PATIENCE_MS: u64 = 2_000;
/// Polls of a GIC register before we give up on RWP/ChildrenAsleep.
const GIC_POLLS: u32 = 1_000_000;

fn ms_to_ticks(ms: u64) -> u64 {
    sysreg::counter_frequency().saturating_mul(ms) / 1_000
}

fn ticks_to_us(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000) / sysreg::counter_frequency().max(1)
}

fn poll_clear(window: &DeviceWindow, offset: usize, bit: u32) -> bool {
    (0..GIC_POLLS).any(|_| window.read32(offset) & bit == 0)
}

pub fn psci_version<W: Write>(report: &mut Report<W>, conduit: Conduit) {
    let w0 = smccc::status(arch::smccc_call(conduit, smccc::PSCI_VERSION, [0; 3])[0]);
    match Version::decode(w0 as u32) {
        Some(v) if v >= (Version { major: 1, minor: 0 }) => {
            report.pass("psci-version", format_args!("{v} via {conduit}"))
        }
        Some(v) => report.fail(
            "psci-version",
            format_args!("{v} via {conduit}, need >= 1.0"),
        ),
        None => report.fail("psci-version", format_args!("error {w0} via {conduit}")),
    }
}

/// SMCCC discovery as Linux does it: PSCI_FEATURES(SMCCC_VERSION) first;
/// NOT_SUPPORTED there means SMCCC v1.0.
pub fn smccc_version<W: Write>(report: &mut Report<W>, conduit: Conduit) {
    let features = smccc::status(
        arch::smccc_call(
            conduit,
            smccc::PSCI_FEATURES,
            [u64::from(smccc::SMCCC_VERSION), 0, 0],
        )[0],
    );
    if features == smccc::NOT_SUPPORTED {
        report.pass(
            "smccc-version",
            format_args!("1.0 (PSCI_FEATURES: SMCCC_VERSION not implemented)"),
        );
        return;
    }
    if features < 0 {
        report.fail(
            "smccc-version",
            format_args!("PSCI_FEATURES(SMCCC_VERSION) returned {features}"),
        );
        return;
    }
    let w0 = smccc::status(arch::smccc_call(conduit, smccc::SMCCC_VERSION, [0; 3])[0]);
    match Version::decode(w0 as u32) {
        Some(v) if v >= (Version { major: 1, minor: 1 }) => {
            report.pass("smccc-version", format_args!("{v}"))
        }
        Some(v) => report.fail(
            "smccc-version",
            format_args!("{v}: SMCCC_VERSION exists only from 1.1"),
        ),
        None => report.fail("smccc-version", format_args!("SMCCC_VERSION returned {w0}")),
    }
}

/// The distributor and this CPU's redistributor, once brought up.
pub struct Gic {
    dist: DeviceWindow,
    rd: DeviceWindow,
}

/// The redistributor frame whose GICR_TYPER affinity is this CPU's.
fn find_redistributor(
    gicr_window: &DeviceWindow,
    gicr_size: usize,
) -> Option<(usize, DeviceWindow)> {
    let mpidr = sysreg::mpidr();
    let affinity = (((mpidr >> 32) & 0xFF) << 24) | (mpidr & 0xFF_FFFF);
    let mut offset = 0;
    while offset + gicr::FRAME_STRIDE <= gicr_size {
        let typer = gicr_window.read64(offset + gicr::TYPER);
        if typer >> 32 == affinity {
            let frame = DeviceWindow::new(crate::platform::Window {
                base: gicr_window.base() + offset,
                size: gicr::FRAME_STRIDE,
            })?;
            return Some((offset, frame));
        }
        if typer & gicr::TYPER_LAST != 0 {
            break;
        }
        offset += gicr::FRAME_STRIDE;
    }
    None
}

/// Brings up distributor, this CPU's redistributor and the CPU interface
/// as Linux's irq-gic-v3 does; returns the redistributor for the timer check.
pub fn gic<W: Write>(report: &mut Report<W>, platform: &Platform) -> Option<Gic> {
    let (Some(dist), Some(redists)) = (
        DeviceWindow::new(platform.gicd),
        DeviceWindow::new(platform.gicr),
    ) else {
        report.fail("gic", format_args!("GIC windows overlap the guest image"));
        return None;
    };
    let arch_rev = (dist.read32(gicd::PIDR2) >> 4) & 0xF;
    if arch_rev != 3 && arch_rev != 4 {
        report.fail(
            "gic",
            format_args!("GICD_PIDR2.ArchRev={arch_rev}, expected 3 or 4"),
        );
        return None;
    }
    dist.write32(gicd::CTLR, 0);
    let enable = gicd::CTLR_ARE_NS | gicd::CTLR_ENABLE_G1A | gicd::CTLR_ENABLE_G1;
    if !poll_clear(&dist, gicd::CTLR, gicd::CTLR_RWP) {
        report.fail("gic", format_args!("GICD_CTLR.RWP stuck"));
        return None;
    }
    dist.write32(gicd::CTLR, enable);
    let ctlr = dist.read32(gicd::CTLR);
    if !poll_clear(&dist, gicd::CTLR, gicd::CTLR_RWP) || ctlr & gicd::CTLR_ARE_NS == 0 {
        report.fail(
            "gic",
            format_args!("GICD_CTLR={ctlr:#x}: affinity routing not enabled"),
        );
        return None;
    }
    let Some((offset, rd)) = find_redistributor(&redists, platform.gicr.size) else {
        report.fail(
            "gic",
            format_args!("no redistributor for MPIDR {:#x}", sysreg::mpidr()),
        );
        return None;
    };
    rd.write32(
        gicr::WAKER,
        rd.read32(gicr::WAKER) & !gicr::WAKER_PROCESSOR_SLEEP,
    );
    if !poll_clear(&rd, gicr::WAKER, gicr::WAKER_CHILDREN_ASLEEP) {
        report.fail("gic", format_args!("GICR_WAKER.ChildrenAsleep stays set"));
        return None;
    }
    rd.write32(gicr::ICENABLER0, u32::MAX);
    rd.write32(gicr::ICPENDR0, u32::MAX);
    if !poll_clear(&rd, gicr::CTLR, gicr::CTLR_RWP) {
        report.fail("gic", format_args!("GICR_CTLR.RWP stuck"));
        return None;
    }
    rd.write32(gicr::IGROUPR0, u32::MAX);
    let priorities = u32::from_ne_bytes([PPI_PRIORITY; 4]);
    for word in 0..8 {
        rd.write32(gicr::IPRIORITYR + 4 * word, priorities);
    }
    sysreg::set_icc_sre(sysreg::icc_sre() | ICC_SRE);
    if sysreg::icc_sre() & ICC_SRE == 0 {
        report.fail("gic", format_args!("ICC_SRE_EL1.SRE does not stick"));
        return None;
    }
    sysreg::set_icc_pmr(PRIORITY_MASK);
    sysreg::set_icc_bpr1(0);
    sysreg::set_icc_ctlr(0);
    sysreg::set_icc_igrpen1(1);
    let typer = dist.read32(gicd::TYPER);
    report.pass(
        "gic",
        format_args!(
            "GICD IIDR={:#x} ITLinesNumber={} IDbits={} ArchRev={arch_rev}, GICR frame {} at {:#x}",
            dist.read32(gicd::IIDR),
            typer & 0x1F,
            ((typer >> 19) & 0x1F) + 1,
            offset / gicr::FRAME_STRIDE,
            rd.base(),
        ),
    );
    Some(Gic { dist, rd })
}

/// Programs CNTV_TVAL and waits, IRQs unmasked, for the virtual timer's PPI
/// to arrive through the GIC; the IRQ handler acknowledges and EOIs it.
pub fn vtimer<W: Write>(report: &mut Report<W>, platform: &Platform, gic: Option<&Gic>) {
    let Some(Gic { rd, .. }) = gic else {
        report.fail("vtimer", format_args!("no GIC"));
        return;
    };
    let intid = platform.vtimer_intid;
    if intid >= 32 {
        report.fail("vtimer", format_args!("timer INTID {intid} is not a PPI"));
        return;
    }
    rd.write32(gicr::ISENABLER0, 1 << intid);
    let (count_before, _) = arch::irq_stats();
    let ticks = ms_to_ticks(TIMER_DELAY_MS);
    let start = sysreg::counter();
    let deadline = start.saturating_add(ms_to_ticks(TIMER_PATIENCE_MS));
    sysreg::vtimer_arm(u32::try_from(ticks).unwrap_or(u32::MAX));
    sysreg::irq_unmask();
    while arch::irq_stats().0 == count_before && sysreg::counter() < deadline {
        core::hint::spin_loop();
    }
    sysreg::irq_mask();
    let elapsed = sysreg::counter().saturating_sub(start);
    sysreg::vtimer_stop();
    rd.write32(gicr::ICENABLER0, 1 << intid);
    match arch::irq_stats() {
        (count, _) if count == count_before => report.fail(
            "vtimer",
            format_args!(
                "no interrupt within {TIMER_PATIENCE_MS} ms (timer set for {TIMER_DELAY_MS} ms)"
            ),
        ),
        (_, last) if last != intid => report.fail(
            "vtimer",
            format_args!("took INTID {last}, expected {intid}"),
        ),
        _ if elapsed < ticks => report.fail(
            "vtimer",
            format_args!("fired after {} us, early", ticks_to_us(elapsed)),
        ),
        _ => report.pass(
            "vtimer",
            format_args!(
                "PPI INTID {intid} taken and EOI'd {} us after arming for {TIMER_DELAY_MS} ms",
                ticks_to_us(elapsed)
            ),
        ),
    }
}

/// Reads the RTC, checks its identity and that it keeps time.
pub fn pl031<W: Write>(report: &mut Report<W>, platform: &Platform) {
    let Some(rtc) = DeviceWindow::new(platform.rtc) else {
        report.fail("pl031", format_args!("RTC window overlaps the guest image"));
        return;
    };
    let id = |start: usize| {
        (0..4).fold(0u32, |id, i| {
            id | (rtc.read32(start + 4 * i) & 0xFF) << (8 * i)
        })
    };
    let (periph, cell) = (id(rtc::PERIPH_ID0), id(rtc::PCELL_ID0));
    if periph & rtc::PERIPH_ID_MASK != rtc::PERIPH_ID || cell != PRIMECELL_ID {
        report.fail(
            "pl031",
            format_args!("PeriphID {periph:#010x} PCellID {cell:#010x}"),
        );
        return;
    }
    let first = u64::from(rtc.read32(rtc::DR));
    let start = sysreg::counter();
    let wait = ms_to_ticks(1_500);
    while sysreg::counter().saturating_sub(start) < wait {
        core::hint::spin_loop();
    }
    let second = u64::from(rtc.read32(rtc::DR));
    let date = DateTime::from_unix(first);
    if first < YEAR_2020 {
        report.fail("pl031", format_args!("date {date} is before 2020"));
    } else if second <= first {
        report.fail(
            "pl031",
            format_args!("{date}, still {second} s after 1.5 s"),
        );
    } else {
        report.pass(
            "pl031",
            format_args!("{date}, advanced {} s in 1.5 s", second - first),
        );
    }
}

/// Issue 4: an access to an IPA nothing backs must come back as a
/// synchronous external abort (ESR EC 0x25, DFSC 0x10).
pub fn unmapped_access<W: Write>(report: &mut Report<W>, address: usize) {
    const EC_DATA_ABORT_SAME_EL: u64 = 0x25;
    const DFSC_SYNC_EXTERNAL: u64 = 0x10;
    match arch::probe_unmapped_read(address) {
        Ok(value) => report.fail(
            "unmapped-access",
            format_args!("read {address:#x} returned {value:#x}, no abort"),
        ),
        Err(fault)
            if fault.class() == EC_DATA_ABORT_SAME_EL && fault.esr & 0x3F == DFSC_SYNC_EXTERNAL =>
        {
            report.pass(
                "unmapped-access",
                format_args!(
                    "external abort taken (ESR={:#x} FAR={:#x})",
                    fault.esr, fault.far
                ),
            )
        }
        Err(fault) => report.fail(
            "unmapped-access",
            format_args!(
                "exception other than an external abort: ESR={:#x} FAR={:#x}",
                fault.esr, fault.far
            ),
        ),
    }
}

/// Issue 4: an unassigned function ID must return NOT_SUPPORTED.
pub fn bogus_call<W: Write>(report: &mut Report<W>, conduit: Conduit) {
    match arch::guarded_smccc_call(conduit, smccc::BOGUS_FUNCTION, [0; 3]) {
        Ok(regs) if smccc::status(regs[0]) == smccc::NOT_SUPPORTED => {
            report.pass("bogus-call", format_args!("not supported"))
        }
        Ok(regs) => report.fail(
            "bogus-call",
            format_args!(
                "{conduit} {:#x} returned {:#x}, expected NOT_SUPPORTED",
                smccc::BOGUS_FUNCTION,
                regs[0]
            ),
        ),
        Err(fault) => report.fail(
            "bogus-call",
            format_args!(
                "{conduit} {:#x} raised an exception, ESR={:#x}",
                smccc::BOGUS_FUNCTION,
                fault.esr
            ),
        ),
    }
}

/// What polling the CPU interface for one interrupt found.
enum Poll {
    /// Acknowledged and EOI'd after this many microseconds.
    Taken(u64),
    Nothing,
    /// Another INTID came first (it was EOI'd too).
    Other(u32),
}

/// Polls ICC_IAR1_EL1 (IRQs stay masked: acknowledging does not need the
/// exception) until `intid` arrives or `patience_ms` pass; `quiesce`
/// lowers the source before the EOI.
fn poll_interrupt(intid: u32, patience_ms: u64, quiesce: impl FnOnce()) -> Poll {
    const SPURIOUS: u32 = 1023;
    let start = sysreg::counter();
    let deadline = start.saturating_add(ms_to_ticks(patience_ms));
    while sysreg::counter() < deadline {
        match sysreg::icc_iar1() {
            SPURIOUS => core::hint::spin_loop(),
            got if got == intid => {
                quiesce();
                sysreg::icc_eoir1(got);
                return Poll::Taken(ticks_to_us(sysreg::counter().saturating_sub(start)));
            }
            other => {
                sysreg::icc_eoir1(other);
                return Poll::Other(other);
            }
        }
    }
    Poll::Nothing
}

impl Gic {
    /// Group 1, default priority, routed to this CPU, enabled.
    fn enable_spi(&self, intid: u32) {
        let (word, bit) = ((intid / 32) as usize * 4, 1u32 << (intid % 32));
        self.dist.write32(
            spi::IGROUPR + word,
            self.dist.read32(spi::IGROUPR + word) | bit,
        );
        let priority_word = spi::IPRIORITYR + (intid as usize & !3);
        let shift = (intid % 4) * 8;
        let priorities = self.dist.read32(priority_word) & !(0xFF << shift);
        self.dist.write32(
            priority_word,
            priorities | (u32::from(PPI_PRIORITY) << shift),
        );
        let mpidr = sysreg::mpidr();
        let route = (mpidr & 0xFF_0000_0000) | (mpidr & 0xFF_FFFF);
        self.dist.write64(spi::IROUTER + 8 * intid as usize, route);
        self.dist.write32(spi::ISENABLER + word, bit);
    }

    fn disable_spi(&self, intid: u32) {
        let (word, bit) = ((intid / 32) as usize * 4, 1u32 << (intid % 32));
        self.dist.write32(spi::ICENABLER + word, bit);
        self.dist.write32(spi::ICPENDR + word, bit);
    }

    /// Makes an SPI pending from software (GICD_ISPENDR).
    fn pend_spi(&self, intid: u32) {
        self.dist
            .write32(spi::ISPENDR + (intid / 32) as usize * 4, 1 << (intid % 32));
    }
}

/// An SPI made pending through GICD_ISPENDR reaches this CPU: distributor
/// routing and SPI delivery without any device involved.
pub fn spi<W: Write>(report: &mut Report<W>, platform: &Platform, gic: Option<&Gic>) {
    let Some(gic) = gic else {
        report.fail("spi", format_args!("no GIC"));
        return;
    };
    let intid = platform.rtc_intid;
    gic.enable_spi(intid);
    gic.pend_spi(intid);
    let outcome = poll_interrupt(intid, TIMER_PATIENCE_MS, || ());
    gic.disable_spi(intid);
    match outcome {
        Poll::Taken(us) => report.pass(
            "spi",
            format_args!("INTID {intid} pended via GICD_ISPENDR, taken after {us} us"),
        ),
        Poll::Nothing => report.fail(
            "spi",
            format_args!("INTID {intid} pended via GICD_ISPENDR never arrived"),
        ),
        Poll::Other(other) => {
            report.fail("spi", format_args!("expected INTID {intid}, got {other}"))
        }
    }
}

/// The console UART's own interrupt line: its transmit interrupt, latched
/// by the output so far, unmasked in UARTIMSC, arrives as the DT's SPI.
pub fn uart_irq<W: Write>(
    report: &mut Report<W>,
    platform: &Platform,
    gic: Option<&Gic>,
    uart: Pl011,
) {
    let Some(gic) = gic else {
        report.fail("uart-irq", format_args!("no GIC"));
        return;
    };
    let intid = platform.uart_intid;
    let raw = uart.raw_interrupts();
    if raw & console::INT_TX == 0 {
        report.fail(
            "uart-irq",
            format_args!("UARTRIS={raw:#x}: transmit interrupt not latched after output"),
        );
        return;
    }
    gic.enable_spi(intid);
    uart.set_interrupt_mask(console::INT_TX);
    let outcome = poll_interrupt(intid, TIMER_PATIENCE_MS, || {
        uart.set_interrupt_mask(0);
        uart.clear_interrupts(console::INT_TX);
    });
    uart.set_interrupt_mask(0);
    gic.disable_spi(intid);
    let after = uart.raw_interrupts();
    match outcome {
        Poll::Taken(us) if after & console::INT_TX == 0 => report.pass(
            "uart-irq",
            format_args!("TX interrupt as INTID {intid} after {us} us, cleared by UARTICR"),
        ),
        Poll::Taken(_) => report.fail(
            "uart-irq",
            format_args!("UARTICR did not clear TX: UARTRIS={after:#x}"),
        ),
        Poll::Nothing => report.fail(
            "uart-irq",
            format_args!("unmasked TX interrupt never arrived as INTID {intid}"),
        ),
        Poll::Other(other) => report.fail(
            "uart-irq",
            format_args!("expected INTID {intid}, got {other}"),
        ),
    }
}
