//! The checks, in the order they run. Each one drives a device through
//! `arch` and writes exactly one sentinel line through the `Report`.

use core::fmt::Write;

use crate::arch::{self, sysreg, DeviceWindow};
use crate::civil::DateTime;
use crate::console::{self, Pl011};
use crate::gic::{poll_interrupt, Gic, Poll, SPURIOUS_INTID};
use crate::platform::{Conduit, Platform};
use crate::report::Report;
use crate::smccc::{self, Version};

/// PL031 registers (PrimeCell RTC TRM, 3.2).
mod rtc {
    pub const DR: usize = 0x000;
    pub const MR: usize = 0x004;
    pub const IMSC: usize = 0x010;
    pub const ICR: usize = 0x01C;
    /// RTCINTR, in IMSC/ICR.
    pub const INT: u32 = 1;
    /// An offset inside the window with no register.
    pub const NO_REGISTER: usize = 0x020;
    pub const PERIPH_ID0: usize = 0xFE0;
    pub const PCELL_ID0: usize = 0xFF0;
    pub const PERIPH_ID: u32 = 0x0004_1031;
    pub const PERIPH_ID_MASK: u32 = 0x000F_FFFF;
}

/// The PrimeCell component ID every AMBA peripheral reports.
pub const PRIMECELL_ID: u32 = 0xB105_F00D;
/// 2020-01-01T00:00:00Z.
const YEAR_2020: u64 = 1_577_836_800;
/// How long the virtual timer is set for and how long we wait for it.
const TIMER_DELAY_MS: u64 = 10;
const TIMER_PATIENCE_MS: u64 = 2_000;
/// The RTC alarm is set two seconds ahead (at least one full second);
/// the virtual timer, set for this long, ends the wait when none comes.
const ALARM_PATIENCE_MS: u64 = 4_000;

fn ms_to_ticks(ms: u64) -> u64 {
    sysreg::counter_frequency().saturating_mul(ms) / 1_000
}

fn ticks_to_us(ticks: u64) -> u64 {
    ticks.saturating_mul(1_000_000) / sysreg::counter_frequency().max(1)
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

/// Brings up the GIC (see `gic`); the other interrupt checks need it.
pub fn gic<W: Write>(report: &mut Report<W>, platform: &Platform) -> Option<Gic> {
    match Gic::init(platform.gicd, platform.gicr) {
        Ok((gic, id)) => {
            report.pass(
                "gic",
                format_args!(
                    "GICD IIDR={:#x} ITLinesNumber={} IDbits={} ArchRev={}, GICR frame {} at {:#x}",
                    id.iidr,
                    id.it_lines,
                    id.id_bits,
                    id.arch_rev,
                    gic.frame,
                    gic.redistributor_base(),
                ),
            );
            Some(gic)
        }
        Err(error) => {
            report.fail("gic", format_args!("{error}"));
            None
        }
    }
}

/// Programs CNTV_TVAL and waits, IRQs unmasked, for the virtual timer's PPI
/// to arrive through the GIC; the IRQ handler acknowledges and EOIs it.
pub fn vtimer<W: Write>(report: &mut Report<W>, platform: &Platform, gic: Option<&Gic>) {
    let Some(gic) = gic else {
        report.fail("vtimer", format_args!("no GIC"));
        return;
    };
    let intid = platform.vtimer_intid;
    if intid >= 32 {
        report.fail("vtimer", format_args!("timer INTID {intid} is not a PPI"));
        return;
    }
    gic.enable_private(intid);
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
    gic.disable_private(intid);
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

/// The virtual timer's interrupt is level-triggered: raised while disabled
/// at the GIC, it is delivered once enabled if the timer still fires, and
/// not at all if the timer was turned off meanwhile (a GIC that follows the
/// timer's output, as QEMU's does; one that latched the old level delivers
/// a stale interrupt).
pub fn vtimer_level<W: Write>(report: &mut Report<W>, platform: &Platform, gic: Option<&Gic>) {
    let Some(gic) = gic else {
        report.fail("vtimer-level", format_args!("no GIC"));
        return;
    };
    let intid = platform.vtimer_intid;
    // Fires 1 ms after arming, disabled at the GIC; 5 ms later (a
    // hypervisor has seen the physical interrupt by then) it is enabled,
    // with the timer still on or turned off.
    let raise_disabled = |keep_timer: bool| {
        gic.disable_private(intid);
        let start = sysreg::counter();
        sysreg::vtimer_arm(u32::try_from(ms_to_ticks(1)).unwrap_or(u32::MAX));
        while sysreg::counter().saturating_sub(start) < ms_to_ticks(6) {
            core::hint::spin_loop();
        }
        if !keep_timer {
            sysreg::vtimer_stop();
        }
        gic.enable_private(intid);
        let poll = poll_interrupt(intid, ms_to_ticks(20), sysreg::vtimer_stop);
        sysreg::vtimer_stop();
        gic.disable_private(intid);
        poll
    };
    let still_firing = raise_disabled(true);
    let turned_off = raise_disabled(false);
    match (still_firing, turned_off) {
        (Poll::Taken(_), Poll::Nothing) => report.pass(
            "vtimer-level",
            format_args!(
                "INTID {intid} raised while disabled: delivered when enabled with the timer on, \
                 nothing once the timer was off"
            ),
        ),
        (Poll::Taken(_), Poll::Taken(_)) => report.fail(
            "vtimer-level",
            format_args!("INTID {intid} delivered after the timer was turned off (stale)"),
        ),
        (Poll::Taken(_), Poll::Other(other)) | (Poll::Other(other), _) => report.fail(
            "vtimer-level",
            format_args!("INTID {other} came instead of {intid}"),
        ),
        (Poll::Nothing, _) => report.fail(
            "vtimer-level",
            format_args!("INTID {intid} not delivered when enabled with the timer on"),
        ),
    }
}

/// The EL1 physical timer (CNTP_*), which QEMU gives EL1 as it gives the
/// virtual one: it must be accessible and interrupt as the DT's PPI.
pub fn ptimer<W: Write>(report: &mut Report<W>, platform: &Platform, gic: Option<&Gic>) {
    let Some(gic) = gic else {
        report.fail("ptimer", format_args!("no GIC"));
        return;
    };
    if let Err(fault) = arch::guarded(sysreg::ptimer_stop) {
        report.fail(
            "ptimer",
            format_args!("CNTP_CTL_EL0 write took an exception, ESR {:#x}", fault.esr),
        );
        return;
    }
    let intid = platform.ptimer_intid;
    let ticks = ms_to_ticks(TIMER_DELAY_MS);
    gic.enable_private(intid);
    // Time from before the arming: the vCPU may lose the host CPU between
    // arming and polling, and the counter runs on meanwhile.
    let start = sysreg::counter();
    sysreg::ptimer_arm(u32::try_from(ticks).unwrap_or(u32::MAX));
    let poll = match poll_interrupt(intid, ms_to_ticks(TIMER_PATIENCE_MS), sysreg::ptimer_stop) {
        Poll::Taken(_) => Poll::Taken(sysreg::counter().saturating_sub(start)),
        other => other,
    };
    sysreg::ptimer_stop();
    gic.disable_private(intid);
    match poll {
        Poll::Taken(elapsed) if elapsed >= ticks => report.pass(
            "ptimer",
            format_args!(
                "PPI INTID {intid} {} us after arming for {TIMER_DELAY_MS} ms",
                ticks_to_us(elapsed)
            ),
        ),
        Poll::Taken(elapsed) => report.fail(
            "ptimer",
            format_args!("fired after {} us, early", ticks_to_us(elapsed)),
        ),
        Poll::Nothing => report.fail(
            "ptimer",
            format_args!("no interrupt within {TIMER_PATIENCE_MS} ms"),
        ),
        Poll::Other(other) => report.fail(
            "ptimer",
            format_args!("took INTID {other}, expected {intid}"),
        ),
    }
}

/// What one timer sleep saw: how long it took (counter ticks) and the last
/// interrupt taken.
struct Slept {
    elapsed: u64,
    last_intid: u32,
}

/// Sleeps in WFI until the virtual timer (interrupt `intid`), armed for
/// `ticks`, interrupts: no instructions run meanwhile.
fn sleep_on_timer(gic: &Gic, intid: u32, ticks: u64) -> Slept {
    gic.enable_private(intid);
    let (count_before, _) = arch::irq_stats();
    let start = sysreg::counter();
    sysreg::vtimer_arm(u32::try_from(ticks).unwrap_or(u32::MAX));
    arch::sleep_until_handled(count_before);
    let elapsed = sysreg::counter().saturating_sub(start);
    sysreg::vtimer_stop();
    gic.disable_private(intid);
    Slept {
        elapsed,
        last_intid: arch::irq_stats().1,
    }
}

/// Sleeps in WFI with the virtual timer armed: the CPU (under a hypervisor,
/// the vCPU blocked in its WFI exit) must wake on the timer's interrupt.
/// A machine that never wakes it hangs here, and the lab's timeout says so.
pub fn wfi<W: Write>(report: &mut Report<W>, platform: &Platform, gic: Option<&Gic>) {
    let Some(gic) = gic else {
        report.fail("wfi", format_args!("no GIC"));
        return;
    };
    let intid = platform.vtimer_intid;
    let ticks = ms_to_ticks(TIMER_DELAY_MS);
    match sleep_on_timer(gic, intid, ticks) {
        Slept { last_intid, .. } if last_intid != intid => report.fail(
            "wfi",
            format_args!("woken by INTID {last_intid}, expected {intid}"),
        ),
        Slept { elapsed, .. } if elapsed < ticks => report.fail(
            "wfi",
            format_args!("woke after {} us, before the timer", ticks_to_us(elapsed)),
        ),
        Slept { elapsed, .. } => report.pass(
            "wfi",
            format_args!(
                "woke on INTID {intid} {} us after arming for {TIMER_DELAY_MS} ms",
                ticks_to_us(elapsed)
            ),
        ),
    }
}

/// Waits `ms` milliseconds: asleep on the timer when there is a GIC, since
/// under `-icount` a busy-wait costs an instruction per nanosecond (1.5 s
/// would be 1.5 billion of them); polling the counter without one.
fn wait_ms(platform: &Platform, gic: Option<&Gic>, ms: u64) {
    let ticks = ms_to_ticks(ms);
    let start = sysreg::counter();
    if let Some(gic) = gic {
        // An early wake (another interrupt) falls through to the poll.
        sleep_on_timer(gic, platform.vtimer_intid, ticks);
    }
    while sysreg::counter().saturating_sub(start) < ticks {
        core::hint::spin_loop();
    }
}

/// Reads the RTC, checks its identity and that it keeps time.
pub fn pl031<W: Write>(report: &mut Report<W>, platform: &Platform, gic: Option<&Gic>) {
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
    wait_ms(platform, gic, 1_500);
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

/// The PL031 at every access width, as QEMU's model answers them: a byte
/// or halfword read of a register returns its low bits (Linux's and other
/// drivers' `readb`/`readw` of the identification block), and a word read
/// of an offset with no register returns 0, not an abort.
pub fn pl031_access<W: Write>(report: &mut Report<W>, platform: &Platform) {
    let Some(rtc) = DeviceWindow::new(platform.rtc) else {
        report.fail(
            "pl031-access",
            format_args!("RTC window overlaps the guest image"),
        );
        return;
    };
    let mut periph = 0u32;
    for (i, offset) in (rtc::PERIPH_ID0..rtc::PCELL_ID0 + 16)
        .step_by(4)
        .enumerate()
    {
        let word = rtc.read32(offset);
        if i < 4 {
            periph |= (word & 0xFF) << (8 * i);
        }
        for width in [1, 2] {
            match rtc.probe_read(offset, width) {
                Ok(value) if value == word & ((1 << (8 * width)) - 1) => {}
                Ok(value) => {
                    return report.fail(
                        "pl031-access",
                        format_args!(
                            "{width}-byte read at {offset:#x}: {value:#x}, word {word:#x}"
                        ),
                    )
                }
                Err(fault) => {
                    return report.fail(
                        "pl031-access",
                        format_args!(
                            "{width}-byte read at {offset:#x}: abort, ESR {:#x}",
                            fault.esr
                        ),
                    )
                }
            }
        }
    }
    // DR's low half, between two word reads (it may tick in between).
    let before = rtc.read32(rtc::DR) & 0xFFFF;
    let half = rtc.probe_read(rtc::DR, 2);
    let after = rtc.read32(rtc::DR) & 0xFFFF;
    match half {
        Ok(half) if half == before || half == after => {}
        Ok(half) => {
            return report.fail(
                "pl031-access",
                format_args!("halfword DR {half:#x}, word DR {before:#x}..{after:#x}"),
            )
        }
        Err(fault) => {
            return report.fail(
                "pl031-access",
                format_args!("halfword DR: abort, ESR {:#x}", fault.esr),
            )
        }
    }
    let hole = rtc.read32(rtc::NO_REGISTER);
    if hole != 0 {
        return report.fail(
            "pl031-access",
            format_args!("offset {:#x} reads {hole:#x}", rtc::NO_REGISTER),
        );
    }
    report.pass(
        "pl031-access",
        format_args!(
            "PeriphID {periph:#010x}; byte and halfword reads give the words' low bits; \
             offset {:#x} reads 0",
            rtc::NO_REGISTER
        ),
    );
}

/// The PL031's match register: an alarm two seconds ahead arrives as the
/// DT's SPI while the CPU sleeps in WFI with no other work. A hypervisor
/// that looks at the RTC only when the guest exits never delivers it; the
/// virtual timer, armed as a backstop, ends the wait then.
pub fn pl031_alarm<W: Write>(report: &mut Report<W>, platform: &Platform, gic: Option<&Gic>) {
    let Some(gic) = gic else {
        report.fail("pl031-alarm", format_args!("no GIC"));
        return;
    };
    let Some(rtc) = DeviceWindow::new(platform.rtc) else {
        report.fail(
            "pl031-alarm",
            format_args!("RTC window overlaps the guest image"),
        );
        return;
    };
    let (rtc_intid, timer_intid) = (platform.rtc_intid, platform.vtimer_intid);
    let due = rtc.read32(rtc::DR).wrapping_add(2);
    rtc.write32(rtc::MR, due);
    rtc.write32(rtc::ICR, rtc::INT);
    rtc.write32(rtc::IMSC, rtc::INT);
    gic.enable_spi(rtc_intid);
    gic.enable_private(timer_intid);
    let start = sysreg::counter();
    sysreg::vtimer_arm(u32::try_from(ms_to_ticks(ALARM_PATIENCE_MS)).unwrap_or(u32::MAX));
    // Interrupts stay masked: WFI still wakes on a pending one, taken here.
    let got = loop {
        arch::wait_for_interrupt();
        match sysreg::icc_iar1() {
            SPURIOUS_INTID => continue,
            intid => break intid,
        }
    };
    let elapsed = sysreg::counter().saturating_sub(start);
    rtc.write32(rtc::IMSC, 0);
    rtc.write32(rtc::ICR, rtc::INT);
    sysreg::vtimer_stop();
    sysreg::icc_eoir1(got);
    gic.disable_spi(rtc_intid);
    gic.disable_private(timer_intid);
    let now = rtc.read32(rtc::DR);
    if got == rtc_intid && now.wrapping_sub(due) < 2 {
        report.pass(
            "pl031-alarm",
            format_args!(
                "INTID {rtc_intid} when DR reached MR = DR + 2, after {} ms",
                ticks_to_us(elapsed) / 1000
            ),
        );
    } else if got == rtc_intid {
        report.fail(
            "pl031-alarm",
            format_args!("INTID {rtc_intid} at DR {now}, alarm set for {due}"),
        );
    } else if got == timer_intid {
        report.fail(
            "pl031-alarm",
            format_args!("no RTC interrupt within {ALARM_PATIENCE_MS} ms of MR = DR + 2"),
        );
    } else {
        report.fail(
            "pl031-alarm",
            format_args!("woken by INTID {got}, expected {rtc_intid}"),
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
    let outcome = poll_interrupt(intid, ms_to_ticks(TIMER_PATIENCE_MS), || ());
    gic.disable_spi(intid);
    match outcome {
        Poll::Taken(ticks) => report.pass(
            "spi",
            format_args!(
                "INTID {intid} pended via GICD_ISPENDR, taken after {} us",
                ticks_to_us(ticks)
            ),
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

/// The first of the SGIs [`sgi_burst`] sends itself, and how many: more
/// than the four list registers QEMU's GICv3 CPU interface has, so a
/// hypervisor must refill them while the guest takes the first ones.
const BURST_FIRST_SGI: u32 = 4;
const BURST_SGIS: u32 = 8;
/// How long [`sgi_burst`] watches for an SGI taken twice.
const BURST_QUIET_MS: u64 = 20;

/// Eight SGIs pending at once, all at one priority: each is taken once,
/// lowest INTID first, as a GIC presents them.
pub fn sgi_burst<W: Write>(report: &mut Report<W>, gic: Option<&Gic>) {
    let Some(gic) = gic else {
        report.fail("sgi-burst", format_args!("no GIC"));
        return;
    };
    let burst = BURST_FIRST_SGI..BURST_FIRST_SGI + BURST_SGIS;
    for intid in burst.clone() {
        gic.enable_private(intid);
    }
    let own = sysreg::mpidr();
    for intid in burst.clone() {
        sysreg::send_sgi1(crate::affinity::sgi1r(intid, own));
    }
    // The first SGI that did not come as expected: (INTID, how many came
    // before it, what came instead).
    let mut missed = None;
    for (taken, intid) in burst.clone().enumerate() {
        match poll_interrupt(intid, ms_to_ticks(TIMER_PATIENCE_MS), || ()) {
            Poll::Taken(_) => continue,
            Poll::Nothing => missed = Some((intid, taken, None)),
            Poll::Other(other) => missed = Some((intid, taken, Some(other))),
        }
        break;
    }
    // None is left, nor comes twice.
    let again = poll_interrupt(SPURIOUS_INTID, ms_to_ticks(BURST_QUIET_MS), || ());
    for intid in burst.clone() {
        gic.disable_private(intid);
    }
    match (missed, again) {
        (Some((intid, taken, None)), _) => report.fail(
            "sgi-burst",
            format_args!("SGI {intid} never came ({taken} taken before it)"),
        ),
        (Some((intid, _, Some(other))), _) => report.fail(
            "sgi-burst",
            format_args!("expected SGI {intid}, got INTID {other}"),
        ),
        (None, Poll::Other(other)) => report.fail(
            "sgi-burst",
            format_args!("all {BURST_SGIS} taken, then INTID {other} again"),
        ),
        (None, _) => report.pass(
            "sgi-burst",
            format_args!(
                "SGIs {}-{} pended at once, each taken once in INTID order",
                burst.start,
                burst.end - 1
            ),
        ),
    }
}

/// The SGI [`sgi_disabled`] sends itself.
const DISABLED_SGI: u32 = 12;

/// An SGI disabled while pending is not taken, and stays pending: enabled
/// again, it arrives (GICR_ICENABLER0 masks, it does not clear).
pub fn sgi_disabled<W: Write>(report: &mut Report<W>, gic: Option<&Gic>) {
    let Some(gic) = gic else {
        report.fail("sgi-disabled", format_args!("no GIC"));
        return;
    };
    let intid = DISABLED_SGI;
    gic.enable_private(intid);
    sysreg::send_sgi1(crate::affinity::sgi1r(intid, sysreg::mpidr()));
    gic.disable_private(intid);
    let while_disabled = poll_interrupt(intid, ms_to_ticks(BURST_QUIET_MS), || ());
    gic.enable_private(intid);
    let enabled_again = poll_interrupt(intid, ms_to_ticks(TIMER_PATIENCE_MS), || ());
    gic.disable_private(intid);
    match (while_disabled, enabled_again) {
        (Poll::Nothing, Poll::Taken(_)) => report.pass(
            "sgi-disabled",
            format_args!("SGI {intid} held while disabled, taken once enabled again"),
        ),
        (Poll::Taken(_), _) => report.fail(
            "sgi-disabled",
            format_args!("SGI {intid} taken while disabled"),
        ),
        (Poll::Other(other), _) | (_, Poll::Other(other)) => report.fail(
            "sgi-disabled",
            format_args!("expected SGI {intid}, got INTID {other}"),
        ),
        (_, Poll::Nothing) => report.fail(
            "sgi-disabled",
            format_args!("SGI {intid} lost: not taken once enabled again"),
        ),
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
    let outcome = poll_interrupt(intid, ms_to_ticks(TIMER_PATIENCE_MS), || {
        uart.set_interrupt_mask(0);
        uart.clear_interrupts(console::INT_TX);
    });
    uart.set_interrupt_mask(0);
    gic.disable_spi(intid);
    let after = uart.raw_interrupts();
    match outcome {
        Poll::Taken(ticks) if after & console::INT_TX == 0 => report.pass(
            "uart-irq",
            format_args!(
                "TX interrupt as INTID {intid} after {} us, cleared by UARTICR",
                ticks_to_us(ticks)
            ),
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

/// A level-triggered SPI follows its line: the PL011's TX interrupt,
/// unmasked and then masked again while the CPU has IRQs masked, is no
/// longer pending and is never acknowledged (QEMU's GIC); unmasked again, it
/// is. A model that keeps it pending once handed to the CPU interface
/// delivers a spurious interrupt.
pub fn spi_level<W: Write>(
    report: &mut Report<W>,
    platform: &Platform,
    gic: Option<&Gic>,
    uart: Pl011,
) {
    let Some(gic) = gic else {
        report.fail("spi-level", format_args!("no GIC"));
        return;
    };
    let intid = platform.uart_intid;
    if uart.raw_interrupts() & console::INT_TX == 0 {
        report.fail(
            "spi-level",
            format_args!("transmit interrupt not latched after output"),
        );
        return;
    }
    gic.enable_spi(intid);
    let quiesce = || {
        uart.set_interrupt_mask(0);
        uart.clear_interrupts(console::INT_TX);
    };
    uart.set_interrupt_mask(console::INT_TX);
    let start = sysreg::counter();
    while sysreg::counter().saturating_sub(start) < ms_to_ticks(1) {
        core::hint::spin_loop();
    }
    uart.set_interrupt_mask(0);
    let lowered = poll_interrupt(intid, ms_to_ticks(5), quiesce);
    uart.set_interrupt_mask(console::INT_TX);
    let raised = poll_interrupt(intid, ms_to_ticks(TIMER_PATIENCE_MS), quiesce);
    quiesce();
    gic.disable_spi(intid);
    match (lowered, raised) {
        (Poll::Nothing, Poll::Taken(_)) => report.pass(
            "spi-level",
            format_args!(
                "INTID {intid} raised and lowered while IRQs were masked: never acknowledged; \
                 raised again: acknowledged"
            ),
        ),
        (Poll::Taken(_), _) => report.fail(
            "spi-level",
            format_args!("INTID {intid} acknowledged after its line dropped (spurious)"),
        ),
        (Poll::Other(other), _) | (_, Poll::Other(other)) => report.fail(
            "spi-level",
            format_args!("INTID {other} came instead of {intid}"),
        ),
        (Poll::Nothing, Poll::Nothing) => report.fail(
            "spi-level",
            format_args!("INTID {intid} never arrived with its line high"),
        ),
    }
}
