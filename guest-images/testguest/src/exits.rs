//! The exit-cost measurements (`testguest.exits` in `/chosen/bootargs`):
//! what one trip through whatever sits below the guest costs, averaged
//! over many operations in one run. Each figure is one line
//! `TESTGUEST exits-<figure>: PASS ops=<n> ticks=<t> hz=<f>`: `t` virtual
//! counter ticks over `n` operations at `f` ticks per second (under QEMU's
//! `-icount shift=0` one instruction is one nanosecond of virtual time, so
//! `t * 1e9 / f / n` is instructions per operation). The figures:
//! - `hvc`: a null call, PSCI_VERSION over the DT's conduit (bare QEMU
//!   answers it itself, a hypervisor takes an exit);
//! - `uart-read`, `uart-write`: a PL011 UARTFR read, a UARTILPR write
//!   (the IrDA divisor: nothing uses it);
//! - `gicd-read`: a GICD_TYPER read;
//! - `vtimer`: a virtual timer interrupt from its deadline (CNTV_CVAL) to
//!   the IRQ handler, the CPU spinning;
//! - `wfi-timer`: the same, the CPU asleep in WFI;
//! - `sgi`: an SGI to CPU 1, from the write of ICC_SGI1R_EL1 until CPU 1,
//!   polling ICC_IAR1_EL1, acknowledged it (its counter read then);
//! - `sgi-wfi`: the same with CPU 1 asleep in WFI.
//!
//! One check goes with them, `exits-fp`: V0-V31 hold what the guest put
//! there across a call and an MMIO exit (a hypervisor that keeps the
//! guest's FP/SIMD state in the registers over exits must not lose it).
//!
//! The two SGI figures need a second CPU in the DT; the next SGI goes out
//! once CPU 1 counted the last one taken. Every wait spins on memory with
//! YIELD (see `arch::yield_cpu`).

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::affinity;
use crate::arch::{self, sysreg, DeviceWindow};
use crate::gic::Gic;
use crate::platform::{Platform, Window};
use crate::report::Report;
use crate::smccc;

/// Operations per trap figure and per interrupt figure.
const TRAP_OPS: u64 = 1_000;
const INTERRUPT_OPS: u64 = 100;
/// How far ahead of now a timer figure sets its deadline.
const TIMER_LEAD_US: u64 = 50;
/// How long the boot CPU lets CPU 1 settle into WFI before an SGI.
const SETTLE_US: u64 = 20;
/// How long any wait for the other CPU may take.
const PATIENCE_MS: u64 = 2_000;
/// The SGI sent to CPU 1.
const SGI_PING: u32 = 3;
/// PL011 registers: flags (read), IrDA low-power divisor (written).
const UARTFR: usize = 0x018;
const UARTILPR: usize = 0x020;
const GICD_TYPER: usize = 0x0004;

/// What CPU 1 does, in [`PHASE`].
mod phase {
    /// Not started, or no bench running.
    pub const IDLE: u32 = 0;
    /// Spins, IRQs unmasked, between pings.
    pub const POLL: u32 = 1;
    /// Sleeps in WFI between pings.
    pub const SLEEP: u32 = 2;
    /// Leaves the loop and calls CPU_OFF.
    pub const STOP: u32 = 3;
}

// Globals: CPU 1 starts with nothing but its index. The boot CPU writes
// the windows and the phase; CPU 1 writes the rest.
static GICD: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];
static GICR: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];
static CONDUIT: AtomicU32 = AtomicU32::new(0);
static PHASE: AtomicU32 = AtomicU32::new(phase::IDLE);
/// CPU 1 is up with its GIC ready (1) or failed to bring it up (2).
static SECONDARY_UP: AtomicU32 = AtomicU32::new(0);
/// Pings CPU 1 took, and the counter when it acknowledged the last one.
static PINGS_TAKEN: AtomicU64 = AtomicU64::new(0);
static PING_TAKEN_AT: AtomicU64 = AtomicU64::new(0);
/// In SLEEP: the ping CPU 1 waits for (PINGS_TAKEN + 1), stored just
/// before its WFI.
static ASLEEP_FOR: AtomicU64 = AtomicU64::new(0);

fn us_to_ticks(us: u64) -> u64 {
    sysreg::counter_frequency().saturating_mul(us) / 1_000_000
}

/// Whether a CPU that starts now is CPU 1 of this bench, not of the SMP
/// checks.
pub fn secondary_wanted() -> bool {
    CONDUIT.load(Ordering::SeqCst) != 0
}

fn window(slot: &[AtomicUsize; 2]) -> Window {
    Window {
        base: slot[0].load(Ordering::SeqCst),
        size: slot[1].load(Ordering::SeqCst),
    }
}

fn conduit() -> crate::platform::Conduit {
    use crate::platform::Conduit;
    if CONDUIT.load(Ordering::SeqCst) == 2 {
        Conduit::Smc
    } else {
        Conduit::Hvc
    }
}

/// CPU 1: answers pings (polling or asleep, as PHASE says) until STOP,
/// then powers itself off.
pub fn secondary() -> ! {
    let Ok(gic) = Gic::init_cpu(window(&GICD), window(&GICR)) else {
        SECONDARY_UP.store(2, Ordering::SeqCst);
        arch::smccc_call(conduit(), smccc::PSCI_CPU_OFF, [0; 3]);
        arch::halt()
    };
    gic.enable_private(SGI_PING);
    // Interrupts handled so far: the handler may take a ping whenever IRQs
    // are unmasked, so progress is measured against this, not against a
    // count read later.
    let (mut seen, _) = arch::irq_stats();
    SECONDARY_UP.store(1, Ordering::SeqCst);
    loop {
        match PHASE.load(Ordering::SeqCst) {
            phase::STOP => break,
            phase::SLEEP => {
                ASLEEP_FOR.store(PINGS_TAKEN.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
                arch::sleep_until_handled(seen);
            }
            _ => {
                sysreg::irq_unmask();
                while arch::irq_stats().0 == seen && PHASE.load(Ordering::SeqCst) == phase::POLL {
                    arch::yield_cpu();
                }
                sysreg::irq_mask();
            }
        }
        let (count, last) = arch::irq_stats();
        if count != seen {
            seen = count;
            if last == SGI_PING {
                PING_TAKEN_AT.store(arch::irq_entered_at(), Ordering::SeqCst);
                PINGS_TAKEN.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    sysreg::irq_mask();
    gic.disable_private(SGI_PING);
    arch::smccc_call(conduit(), smccc::PSCI_CPU_OFF, [0; 3]);
    arch::halt()
}

/// Counter ticks `ops` runs of `op` take, loop included.
fn time(ops: u64, mut op: impl FnMut()) -> u64 {
    let start = sysreg::counter();
    for _ in 0..ops {
        op();
    }
    sysreg::counter().saturating_sub(start)
}

/// Reports one figure; `check` is `exits-<figure>`.
fn figure<W: Write>(report: &mut Report<W>, check: &str, ops: u64, ticks: u64) {
    let hz = sysreg::counter_frequency();
    report.pass(check, format_args!("ops={ops} ticks={ticks} hz={hz}"));
}

/// Runs every measurement and reports one figure each.
pub fn measure<W: Write>(report: &mut Report<W>, platform: &Platform) {
    let conduit = platform.conduit;
    let ticks = time(TRAP_OPS, || {
        arch::smccc_call(conduit, smccc::PSCI_VERSION, [0; 3]);
    });
    figure(report, "exits-hvc", TRAP_OPS, ticks);

    let Some(uart) = DeviceWindow::new(platform.uart) else {
        report.fail("exits-uart", format_args!("UART window overlaps the guest"));
        return;
    };
    let ticks = time(TRAP_OPS, || {
        uart.read32(UARTFR);
    });
    figure(report, "exits-uart-read", TRAP_OPS, ticks);
    let ticks = time(TRAP_OPS, || uart.write32(UARTILPR, 0));
    figure(report, "exits-uart-write", TRAP_OPS, ticks);

    let gic = match Gic::init(platform.gicd, platform.gicr) {
        Ok((gic, _)) => gic,
        Err(error) => {
            report.fail("exits-gic", format_args!("{error}"));
            return;
        }
    };
    let Some(gicd) = DeviceWindow::new(platform.gicd) else {
        report.fail("exits-gic", format_args!("GICD window overlaps the guest"));
        return;
    };
    let ticks = time(TRAP_OPS, || {
        gicd.read32(GICD_TYPER);
    });
    figure(report, "exits-gicd-read", TRAP_OPS, ticks);

    vectors_kept(report, platform);

    timer_latency(report, &gic, platform.vtimer_intid, "exits-vtimer", false);
    timer_latency(report, &gic, platform.vtimer_intid, "exits-wfi-timer", true);
    sgis(report, platform);
}

/// V0-V31 across a null call and a PL011 read, with distinct patterns
/// (every byte of every register differs).
fn vectors_kept<W: Write>(report: &mut Report<W>, platform: &Platform) {
    for round in 0..4u128 {
        let pattern: arch::VectorFile = core::array::from_fn(|i| {
            let byte = (round * 32 + i as u128) as u8;
            u128::from_ne_bytes([byte; 16]) ^ 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210
        });
        let after =
            arch::vectors_across_exits(&pattern, platform.conduit, platform.uart.base + UARTFR);
        if let Some(n) = (0..32).find(|&n| after[n] != pattern[n]) {
            report.fail(
                "exits-fp",
                format_args!(
                    "round {round}: V{n} was {:#034x}, is {:#034x} after the exits",
                    pattern[n], after[n]
                ),
            );
            return;
        }
    }
    report.pass(
        "exits-fp",
        format_args!("V0-V31 kept across a call and a PL011 read (4 rounds)"),
    );
}

/// From the virtual timer's deadline to the IRQ handler's first counter
/// read, spinning or (`asleep`) in WFI.
fn timer_latency<W: Write>(
    report: &mut Report<W>,
    gic: &Gic,
    intid: u32,
    name: &str,
    asleep: bool,
) {
    gic.enable_private(intid);
    let mut total = 0;
    for _ in 0..INTERRUPT_OPS {
        let (count_before, _) = arch::irq_stats();
        let deadline = sysreg::counter() + us_to_ticks(TIMER_LEAD_US);
        sysreg::vtimer_arm_at(deadline);
        if asleep {
            arch::sleep_until_handled(count_before);
        } else {
            sysreg::irq_unmask();
            while arch::irq_stats().0 == count_before {
                arch::yield_cpu();
            }
            sysreg::irq_mask();
        }
        let (_, last) = arch::irq_stats();
        if last != intid {
            gic.disable_private(intid);
            report.fail(name, format_args!("took INTID {last}, expected {intid}"));
            return;
        }
        total += arch::irq_entered_at().saturating_sub(deadline);
    }
    gic.disable_private(intid);
    figure(report, name, INTERRUPT_OPS, total);
}

/// Spins until `done` or PATIENCE_MS pass; returns whether it got done.
fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = sysreg::counter().saturating_add(us_to_ticks(PATIENCE_MS * 1_000));
    while sysreg::counter() < deadline {
        if done() {
            return true;
        }
        arch::yield_cpu();
    }
    done()
}

/// Starts CPU 1, measures both SGI figures against it and stops it.
fn sgis<W: Write>(report: &mut Report<W>, platform: &Platform) {
    let own = affinity::route(sysreg::mpidr());
    let Some((index, target)) = platform.cpus[..platform.cpu_count]
        .iter()
        .copied()
        .enumerate()
        .find(|(_, mpidr)| affinity::route(*mpidr) != own)
    else {
        report.fail(
            "exits-sgi",
            format_args!("one CPU in the DT; SGIs need two"),
        );
        return;
    };
    let Some((entry, context)) = arch::secondary_entry(index) else {
        report.fail("exits-sgi", format_args!("no stack slot for CPU {index}"));
        return;
    };
    GICD[0].store(platform.gicd.base, Ordering::SeqCst);
    GICD[1].store(platform.gicd.size, Ordering::SeqCst);
    GICR[0].store(platform.gicr.base, Ordering::SeqCst);
    GICR[1].store(platform.gicr.size, Ordering::SeqCst);
    PHASE.store(phase::POLL, Ordering::SeqCst);
    CONDUIT.store(
        match platform.conduit {
            crate::platform::Conduit::Hvc => 1,
            crate::platform::Conduit::Smc => 2,
        },
        Ordering::SeqCst,
    );
    let status = arch::smccc_call(
        platform.conduit,
        smccc::PSCI_CPU_ON_64,
        [target, entry, context],
    )[0];
    if smccc::status(status) != 0 {
        report.fail(
            "exits-sgi",
            format_args!("CPU_ON({target:#x}) returned {}", smccc::status(status)),
        );
        return;
    }
    if !wait_for(|| SECONDARY_UP.load(Ordering::SeqCst) != 0)
        || SECONDARY_UP.load(Ordering::SeqCst) != 1
    {
        report.fail(
            "exits-sgi",
            format_args!("CPU {index} did not bring up its GIC"),
        );
        return;
    }
    let outcome = ping(target, "exits-sgi", false).and_then(|polled| {
        PHASE.store(phase::SLEEP, Ordering::SeqCst);
        ping(target, "exits-sgi-wfi", true).map(|asleep| (polled, asleep))
    });
    PHASE.store(phase::STOP, Ordering::SeqCst);
    // Wakes CPU 1 if it sleeps, so it sees STOP.
    sysreg::send_sgi1(affinity::sgi1r(SGI_PING, target));
    match outcome {
        Ok((polled, asleep)) => {
            figure(report, "exits-sgi", INTERRUPT_OPS, polled);
            figure(report, "exits-sgi-wfi", INTERRUPT_OPS, asleep);
        }
        Err((name, why)) => report.fail(name, format_args!("{why}")),
    }
}

/// Sends INTERRUPT_OPS pings to `target`; the ticks from each send until
/// CPU 1 acknowledged it, summed, or which figure failed and why.
fn ping(
    target: u64,
    name: &'static str,
    asleep: bool,
) -> Result<u64, (&'static str, &'static str)> {
    let ping = affinity::sgi1r(SGI_PING, target);
    let mut total = 0;
    for _ in 0..INTERRUPT_OPS {
        let taken = PINGS_TAKEN.load(Ordering::SeqCst);
        if asleep {
            if !wait_for(|| ASLEEP_FOR.load(Ordering::SeqCst) == taken + 1) {
                return Err((name, "CPU 1 never went to sleep"));
            }
            let settle = sysreg::counter() + us_to_ticks(SETTLE_US);
            while sysreg::counter() < settle {
                arch::yield_cpu();
            }
        }
        let sent = sysreg::counter();
        sysreg::send_sgi1(ping);
        // Memory, not the GIC: polling ICC_IAR1_EL1 would contend with
        // CPU 1 for QEMU's global lock.
        if !wait_for(|| PINGS_TAKEN.load(Ordering::SeqCst) == taken + 1) {
            return Err((name, "CPU 1 never took it"));
        }
        total += PING_TAKEN_AT.load(Ordering::SeqCst).saturating_sub(sent);
    }
    Ok(total)
}
