//! The SMP checks, run only when the DT lists more than one CPU:
//! - `smp`: PSCI CPU_ON starts every other CPU at `_secondary_start`, and
//!   each reports its MPIDR;
//! - `sgi`: the boot CPU sends SGI 1 to each (ICC_SGI1R_EL1), which answers
//!   with SGI 2, both taken by polling ICC_IAR1_EL1;
//! - `cpu-off`: each secondary calls CPU_OFF and AFFINITY_INFO says OFF.
//!
//! Secondaries print nothing (one console, no lock): they report through
//! their slots and the boot CPU writes every line.

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::affinity;
use crate::arch::{self, sysreg};
use crate::gic::{poll_interrupt, Gic, Poll};
use crate::platform::{Conduit, Platform, Window, MAX_CPUS};
use crate::report::Report;
use crate::smccc;

/// SGIs of the exchange.
const SGI_PING: u32 = 1;
const SGI_PONG: u32 = 2;
/// How long any one step may take.
const PATIENCE_MS: u64 = 2_000;
/// AFFINITY_INFO's answer for a CPU that is off (PSCI, 5.7).
const AFFINITY_OFF: i32 = 1;
/// ONLINE slot flag (MPIDR bit 63 is RES0).
const ONLINE_FLAG: u64 = 1 << 63;

/// How far a secondary got, in its STAGE slot.
mod stage {
    pub const GIC_READY: u32 = 1;
    /// Stored before the answer goes out, so the boot CPU never sees the
    /// answer before the stage.
    pub const PING_TAKEN: u32 = 2;
    pub const PONG_SENT: u32 = 3;
    pub const GIC_FAILED: u32 = 10;
    pub const NO_PING: u32 = 11;
    pub const OTHER_IRQ: u32 = 12;
}

// Globals: a secondary CPU starts with nothing but its index (the CPU_ON
// context id). The boot CPU publishes what it needs here before CPU_ON;
// each secondary writes only its own slots.
static GICD: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];
static GICR: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];
static CONDUIT_SMC: AtomicU8 = AtomicU8::new(0);
static BOOT_MPIDR: AtomicU64 = AtomicU64::new(0);
static ONLINE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static STAGE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

fn ms_to_ticks(ms: u64) -> u64 {
    sysreg::counter_frequency().saturating_mul(ms) / 1_000
}

/// Spins until `done` or PATIENCE_MS pass; returns whether it got done.
fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = sysreg::counter().saturating_add(ms_to_ticks(PATIENCE_MS));
    while sysreg::counter() < deadline {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

fn conduit() -> Conduit {
    if CONDUIT_SMC.load(Ordering::SeqCst) != 0 {
        Conduit::Smc
    } else {
        Conduit::Hvc
    }
}

fn window(slot: &[AtomicUsize; 2]) -> Window {
    Window {
        base: slot[0].load(Ordering::SeqCst),
        size: slot[1].load(Ordering::SeqCst),
    }
}

#[no_mangle]
extern "C" fn testguest_secondary(index: usize) -> ! {
    if crate::exits::secondary_wanted() {
        crate::exits::secondary()
    }
    // `arch::secondary_entry` only hands out indices below MAX_CPUS.
    let slot = index.min(MAX_CPUS - 1);
    ONLINE[slot].store(sysreg::mpidr() | ONLINE_FLAG, Ordering::SeqCst);
    let outcome = match Gic::init_cpu(window(&GICD), window(&GICR)) {
        Err(_) => stage::GIC_FAILED,
        Ok(gic) => {
            gic.enable_private(SGI_PING);
            STAGE[slot].store(stage::GIC_READY, Ordering::SeqCst);
            match poll_interrupt(SGI_PING, ms_to_ticks(PATIENCE_MS), || ()) {
                Poll::Taken(_) => {
                    STAGE[slot].store(stage::PING_TAKEN, Ordering::SeqCst);
                    sysreg::send_sgi1(affinity::sgi1r(SGI_PONG, BOOT_MPIDR.load(Ordering::SeqCst)));
                    stage::PONG_SENT
                }
                Poll::Nothing => stage::NO_PING,
                Poll::Other(_) => stage::OTHER_IRQ,
            }
        }
    };
    STAGE[slot].store(outcome, Ordering::SeqCst);
    arch::smccc_call(conduit(), smccc::PSCI_CPU_OFF, [0; 3]);
    arch::halt()
}

/// The secondaries: (DT index, MPIDR affinity) of every CPU but this one.
fn secondaries(platform: &Platform) -> impl Iterator<Item = (usize, u64)> + '_ {
    let own = affinity::route(sysreg::mpidr());
    platform.cpus[..platform.cpu_count]
        .iter()
        .enumerate()
        .filter(move |(_, mpidr)| affinity::route(**mpidr) != own)
        .map(|(index, mpidr)| (index, *mpidr))
}

/// Runs the three SMP checks if the DT lists more than one CPU.
pub fn checks<W: Write>(report: &mut Report<W>, platform: &Platform, gic: Option<&Gic>) {
    if platform.cpu_count < 2 {
        return;
    }
    GICD[0].store(platform.gicd.base, Ordering::SeqCst);
    GICD[1].store(platform.gicd.size, Ordering::SeqCst);
    GICR[0].store(platform.gicr.base, Ordering::SeqCst);
    GICR[1].store(platform.gicr.size, Ordering::SeqCst);
    CONDUIT_SMC.store(u8::from(platform.conduit == Conduit::Smc), Ordering::SeqCst);
    BOOT_MPIDR.store(sysreg::mpidr(), Ordering::SeqCst);
    if !start_secondaries(report, platform) {
        return;
    }
    exchange_sgis(report, platform, gic);
    wait_off(report, platform);
}

fn start_secondaries<W: Write>(report: &mut Report<W>, platform: &Platform) -> bool {
    for (index, mpidr) in secondaries(platform) {
        let Some((entry, context)) = arch::secondary_entry(index) else {
            report.fail("smp", format_args!("no stack slot for CPU {index}"));
            return false;
        };
        let status = arch::smccc_call(
            platform.conduit,
            smccc::PSCI_CPU_ON_64,
            [mpidr, entry, context],
        )[0];
        if smccc::status(status) != 0 {
            report.fail(
                "smp",
                format_args!("CPU_ON({mpidr:#x}) returned {}", smccc::status(status)),
            );
            return false;
        }
        let slot = &ONLINE[index];
        if !wait_for(|| slot.load(Ordering::SeqCst) & ONLINE_FLAG != 0) {
            report.fail(
                "smp",
                format_args!("CPU {index} ({mpidr:#x}) never ran after CPU_ON"),
            );
            return false;
        }
        let reported = slot.load(Ordering::SeqCst) & !ONLINE_FLAG;
        if affinity::route(reported) != affinity::route(mpidr) {
            report.fail(
                "smp",
                format_args!("CPU {index}: started {mpidr:#x}, it reports MPIDR {reported:#x}"),
            );
            return false;
        }
    }
    report.pass(
        "smp",
        format_args!(
            "CPU_ON started {} secondary CPU(s), each reported its MPIDR",
            platform.cpu_count - 1
        ),
    );
    true
}

fn exchange_sgis<W: Write>(report: &mut Report<W>, platform: &Platform, gic: Option<&Gic>) {
    let Some(gic) = gic else {
        report.fail("sgi", format_args!("no GIC"));
        return;
    };
    gic.enable_private(SGI_PONG);
    for (index, mpidr) in secondaries(platform) {
        let stage = &STAGE[index];
        if !wait_for(|| stage.load(Ordering::SeqCst) != 0)
            || stage.load(Ordering::SeqCst) != stage::GIC_READY
        {
            report.fail(
                "sgi",
                format_args!(
                    "CPU {index} GIC not ready (stage {})",
                    stage.load(Ordering::SeqCst)
                ),
            );
            return;
        }
        sysreg::send_sgi1(affinity::sgi1r(SGI_PING, mpidr));
        let pong = poll_interrupt(SGI_PONG, ms_to_ticks(PATIENCE_MS), || ());
        let reached = stage.load(Ordering::SeqCst);
        match pong {
            Poll::Taken(_) if reached == stage::PING_TAKEN || reached == stage::PONG_SENT => {}
            Poll::Taken(_) => {
                report.fail(
                    "sgi",
                    format_args!("SGI {SGI_PONG} arrived but CPU {index} is at stage {reached}"),
                );
                return;
            }
            Poll::Nothing => {
                report.fail(
                    "sgi",
                    format_args!("no SGI {SGI_PONG} back from CPU {index} (its stage {reached})"),
                );
                return;
            }
            Poll::Other(intid) => {
                report.fail(
                    "sgi",
                    format_args!("expected SGI {SGI_PONG} from CPU {index}, got INTID {intid}"),
                );
                return;
            }
        }
    }
    gic.disable_private(SGI_PONG);
    report.pass(
        "sgi",
        format_args!("SGI {SGI_PING} to each secondary, SGI {SGI_PONG} back from each"),
    );
}

fn wait_off<W: Write>(report: &mut Report<W>, platform: &Platform) {
    for (index, mpidr) in secondaries(platform) {
        let off = || {
            let status =
                arch::smccc_call(platform.conduit, smccc::PSCI_AFFINITY_INFO, [mpidr, 0, 0])[0];
            smccc::status(status) == AFFINITY_OFF
        };
        if !wait_for(off) {
            report.fail(
                "cpu-off",
                format_args!("AFFINITY_INFO never says CPU {index} ({mpidr:#x}) is off"),
            );
            return;
        }
    }
    report.pass(
        "cpu-off",
        format_args!("every secondary called CPU_OFF; AFFINITY_INFO reports them off"),
    );
}
