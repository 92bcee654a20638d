//! The hostile guest (`testguest.attack` in `/chosen/bootargs`): instead of
//! the machine checks it runs attacks on the hypervisor, each a thing a
//! guest may try and each with an architected answer it checks: RAM a reset
//! must have zeroed; EL2, ID, PMU, debug and implementation-defined
//! registers from EL1; the GIC's SGI registers from XZR, the GICv2
//! interface after clearing SRE, active and pending bits of listed
//! interrupts; MMIO by instructions that set no syndrome (pairs,
//! exclusives, atomics, writeback, SP as the base, an A32 LDM from EL0),
//! unaligned and page-crossing MMIO; cache maintenance and instruction
//! fetches outside RAM, stage-1 table walks into MMIO; malformed and racing
//! PSCI calls, SGI floods to an off vCPU, WFI/WFE storms on a CPU its two
//! vCPUs share, timer deadlines at the end of time; and its virtio-net
//! device (`virtio`). It prints one line per attack,
//! `ATTACK <name>: SURVIVED <what the guest got>` or
//! `ATTACK <name>: FAIL <what it got instead>`, then
//! `ATTACK DONE tried=<n> failed=<m>`, and last resets the VM (PSCI
//! SYSTEM_RESET), so it runs again and again: a reset storm beside
//! whichever VMs the scenario runs next to it.
//!
//! Surviving means the guest got an architected answer and the hypervisor
//! went on; whether the other VMs went on too is the scenario's to check.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

mod virtio;

use crate::affinity;
use crate::arch::attack::{self as probe, Maintenance, SgiRegister};
use crate::arch::{self, sysreg, DeviceWindow, Fault};
use crate::console::Pl011;
use crate::gic::{Gic, SPURIOUS_INTID};
use crate::platform::{Conduit, Platform, Window};
use crate::smccc;

/// ESR_EL1 exception classes and fault status codes the answers carry.
const EC_UNKNOWN: u64 = 0x00;
const EC_INSTRUCTION_ABORT: u64 = 0x21;
const EC_DATA_ABORT: u64 = 0x25;
const EC_DATA_ABORT_LOWER: u64 = 0x24;
const FSC_EXTERNAL: u64 = 0x10;
/// Synchronous external abort on a translation table walk, levels 0-3.
const FSC_EXTERNAL_WALK: core::ops::RangeInclusive<u64> = 0x14..=0x17;

/// PSCI return codes (DEN0022, 5.2.2).
const PSCI_SUCCESS: i32 = 0;
const PSCI_INVALID_PARAMETERS: i32 = -2;
const PSCI_ALREADY_ON: i32 = -4;
const PSCI_ON_PENDING: i32 = -5;
const PSCI_INVALID_ADDRESS: i32 = -9;
const PSCI_AFFINITY_OFF: i32 = 1;
const PSCI_SYSTEM_RESET: u32 = 0x8400_0009;

/// An IPA in QEMU virt's platform-bus hole: nothing backs it.
const HOLE: usize = 0x0C00_0000;
/// GICD offsets the MMIO attacks read (GICv3 12.9): both read-only.
const GICD_TYPER: usize = 0x4;
const GICD_IIDR: usize = 0x8;
/// The priority byte of SPI 63: a register no attack depends on.
const GICD_IPRIORITYR_SPI63: usize = 0x400 + 60;
/// Where QEMU's virt board puts a GICv2 CPU interface (GICC), above the
/// distributor.
const GICC_OFFSET: usize = 0x1_0000;
/// A redistributor's two 64 KiB frames.
const GICR_FRAME: usize = 0x2_0000;
const GICR_SGI_BASE: usize = 0x1_0000;
const GICR_IGROUPR0: usize = GICR_SGI_BASE + 0x80;
const GICR_ISENABLER0: usize = GICR_SGI_BASE + 0x100;
const GICR_ISPENDR0: usize = GICR_SGI_BASE + 0x200;
const GICR_ICPENDR0: usize = GICR_SGI_BASE + 0x280;
const GICR_ISACTIVER0: usize = GICR_SGI_BASE + 0x300;
const GICR_ICACTIVER0: usize = GICR_SGI_BASE + 0x380;
/// The page of RAM whose contents must not survive a reset: half-way up.
const MARKER_LEN: usize = 0x1000;
const MARKER_BYTE: u8 = 0xA5;
/// The SGIs the floods use.
const SGI_SELF: u32 = 3;
const SGI_TO_OFF_CPU: u32 = 5;
/// Repetitions of the storms and floods.
const STORM: u32 = 20_000;
/// How long a vCPU waits for an interrupt that must (or must not) come.
const WAIT_MS: u64 = 20;
/// Rounds of the WFI storm, and the timer each round sleeps on (100 us).
const WFI_ROUNDS: u32 = 1_000;
const WFI_SLEEP_US: u64 = 100;
/// Rounds of CPU_ON against a CPU that turns itself off at once.
const RACE_ROUNDS: u32 = 50;

/// What the second vCPU does when CPU_ON starts it (its context id).
mod duty {
    /// CPU_OFF at once.
    pub const OFF: u64 = 1;
    /// WFE until told to stop, then CPU_OFF.
    pub const WFE_STORM: u64 = 2;
    /// Take the SGIs pending for it, count them, CPU_OFF.
    pub const COUNT_SGIS: u64 = 3;
    /// Sleep in WFI on a short timer, over and over, then CPU_OFF.
    pub const TIMER_WFI_STORM: u64 = 4;
}

// Globals: the second vCPU starts with nothing but its duty. Written by
// one side, read by the other.
static CONDUIT_SMC: AtomicU8 = AtomicU8::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static SECONDARY_COUNT: AtomicU64 = AtomicU64::new(0);
static SECONDARY_DONE: AtomicBool = AtomicBool::new(false);
static VTIMER_INTID: AtomicU64 = AtomicU64::new(0);

fn conduit() -> Conduit {
    if CONDUIT_SMC.load(Ordering::SeqCst) != 0 {
        Conduit::Smc
    } else {
        Conduit::Hvc
    }
}

fn call(function: u32, args: [u64; 3]) -> i32 {
    smccc::status(arch::smccc_call(conduit(), function, args)[0])
}

fn ms_to_ticks(ms: u64) -> u64 {
    sysreg::counter_frequency().saturating_mul(ms) / 1_000
}

/// Counts attacks and writes their lines.
pub struct Tally {
    out: Pl011,
    tried: u32,
    failed: u32,
}

impl Tally {
    fn survived(&mut self, name: &str, detail: fmt::Arguments<'_>) {
        self.tried += 1;
        let _ = writeln!(self.out, "ATTACK {name}: SURVIVED {detail}");
    }

    fn fail(&mut self, name: &str, detail: fmt::Arguments<'_>) {
        self.tried += 1;
        self.failed += 1;
        let _ = writeln!(self.out, "ATTACK {name}: FAIL {detail}");
    }

    /// The answer must be an Undefined Instruction exception at EL1.
    fn undefined<T: fmt::Debug>(&mut self, name: &str, result: Result<T, Fault>) {
        match result {
            Err(fault) if fault.class() == EC_UNKNOWN => {
                self.survived(name, format_args!("undefined (ESR={:#x})", fault.esr))
            }
            other => self.fail(name, format_args!("expected UNDEFINED, got {other:x?}")),
        }
    }

    /// The answer must be a synchronous external abort (`class` 0x25 or
    /// 0x21), on a table walk if `walk`.
    fn external_abort<T: fmt::Debug>(
        &mut self,
        name: &str,
        class: u64,
        walk: bool,
        result: Result<T, Fault>,
    ) {
        match result {
            Err(fault) if fault.class() == class && is_external(fault, walk) => self.survived(
                name,
                format_args!("external abort (ESR={:#x} FAR={:#x})", fault.esr, fault.far),
            ),
            other => self.fail(
                name,
                format_args!("expected an external abort, got {other:x?}"),
            ),
        }
    }

    /// The instruction must complete (no exception).
    fn completes(&mut self, name: &str, result: Result<(), Fault>) {
        match result {
            Ok(()) => self.survived(name, format_args!("completed, no exception")),
            Err(fault) => self.fail(
                name,
                format_args!(
                    "expected completion, got ESR={:#x} FAR={:#x}",
                    fault.esr, fault.far
                ),
            ),
        }
    }
}

/// FSC 0x10, or (on a walk) the walk's external abort, which a hypervisor
/// may also report as 0x10 (as KVM does).
fn is_external(fault: Fault, walk: bool) -> bool {
    let fsc = fault.esr & 0x3F;
    fsc == FSC_EXTERNAL || (walk && FSC_EXTERNAL_WALK.contains(&fsc))
}

/// The machine as the attacks need it.
struct Target {
    gicd: DeviceWindow,
    gicr: Window,
    uart: Window,
    ram: Window,
    cpu_count: usize,
    second_cpu: Option<u64>,
    vtimer_intid: u32,
    ptimer_intid: u32,
    gic: Option<Gic>,
}

/// Runs every attack, prints the tally, then resets the VM. `virtio` are
/// the DT's virtio-mmio slots.
pub fn run(platform: &Platform, uart: Pl011, virtio: impl Iterator<Item = Window>) -> ! {
    CONDUIT_SMC.store(u8::from(platform.conduit == Conduit::Smc), Ordering::SeqCst);
    let mut tally = Tally {
        out: uart,
        tried: 0,
        failed: 0,
    };
    let Some(gicd) = DeviceWindow::new(platform.gicd) else {
        tally.fail("setup", format_args!("GICD window unusable"));
        reset(tally)
    };
    let gic = Gic::init(platform.gicd, platform.gicr)
        .ok()
        .map(|(gic, _)| gic);
    if gic.is_none() {
        tally.fail("setup", format_args!("GIC bring-up failed"));
    }
    let own = affinity::route(sysreg::mpidr());
    let target = Target {
        gicd,
        gicr: platform.gicr,
        uart: platform.uart,
        ram: platform.ram,
        cpu_count: platform.cpu_count,
        second_cpu: platform.cpus[..platform.cpu_count]
            .iter()
            .copied()
            .find(|mpidr| affinity::route(*mpidr) != own),
        vtimer_intid: platform.vtimer_intid,
        ptimer_intid: platform.ptimer_intid,
        gic,
    };
    ram_zeroed(&mut tally, platform.ram);
    sysreg_attacks(&mut tally);
    gic_attacks(&mut tally, &target);
    listed_state_attacks(&mut tally, &target);
    mmio_attacks(&mut tally, &target);
    maintenance_attacks(&mut tally, &target);
    call_attacks(&mut tally, &target);
    cpu_attacks(&mut tally, &target);
    timer_attacks(&mut tally, &target);
    virtio::attacks(&mut tally, virtio);
    reset(tally)
}

fn reset(mut tally: Tally) -> ! {
    let _ = writeln!(
        tally.out,
        "ATTACK DONE tried={} failed={}",
        tally.tried, tally.failed
    );
    // The last attack: the VM starts over (and attacks again), the
    // hypervisor must rebuild it each time.
    let status = call(PSCI_SYSTEM_RESET, [0; 3]);
    tally.fail(
        "system-reset",
        format_args!("SYSTEM_RESET returned {status}"),
    );
    arch::halt()
}

/// The previous round (before its SYSTEM_RESET) left a marker in free RAM:
/// the reset must have zeroed it. Then the marker for the next round.
fn ram_zeroed(tally: &mut Tally, ram: Window) {
    let page = Window {
        base: ram.base + ram.size / 2,
        size: MARKER_LEN,
    };
    let Some(pages) = arch::free_ram(page) else {
        tally.fail(
            "ram-zeroed",
            format_args!("no free RAM at {:#x}", page.base),
        );
        return;
    };
    let mut seen = [0u8; MARKER_LEN];
    pages.read(0, &mut seen);
    let left = seen.iter().filter(|b| **b != 0).count();
    pages.write(0, &[MARKER_BYTE; MARKER_LEN]);
    if left == 0 {
        tally.survived(
            "ram-zeroed",
            format_args!("the page the last run marked reads as zeros"),
        );
    } else {
        tally.fail(
            "ram-zeroed",
            format_args!("{left} bytes of the last run survived at {:#x}", page.base),
        );
    }
}

fn sysreg_attacks(tally: &mut Tally) {
    tally.undefined("msr-id-register", probe::write_id_aa64pfr0(0));
    tally.undefined("msr-midr", probe::write_midr(0));
    tally.undefined("mrs-hcr-el2", probe::read_hcr_el2());
    tally.undefined("msr-hcr-el2", probe::write_hcr_el2(0));
    tally.undefined("msr-vttbr-el2", probe::write_vttbr_el2(0));
    tally.undefined("mrs-cnthp-ctl-el2", probe::read_cnthp_ctl_el2());
    tally.undefined("msr-cntvoff-el2", probe::write_cntvoff_el2(1 << 40));
    tally.undefined("msr-cnthctl-el2", probe::write_cnthctl_el2(0));
    tally.undefined("mrs-ich-lr0-el2", probe::read_ich_lr0_el2());
    tally.undefined("msr-ich-hcr-el2", probe::write_ich_hcr_el2(0));
    tally.undefined("impdef-register", probe::read_impdef());
    tally.undefined("pauth-key", probe::write_apiakeylo(0x1234));
    tally.undefined("pmu-control", probe::read_pmcr_el0());
    tally.undefined("pmu-cycle-counter", probe::read_pmccntr_el0());
    tally.undefined("pmu-enable", probe::write_pmcntenset_el0(1 << 31));
    hidden_features(tally);
    read_as_zero(
        tally,
        "actlr-el1",
        probe::write_actlr_el1(u64::MAX),
        probe::read_actlr_el1(),
    );
    read_as_zero(
        tally,
        "debug-breakpoint",
        probe::write_dbgbvr0_el1(0x4008_0000),
        probe::read_dbgbvr0_el1(),
    );
    read_as_zero(
        tally,
        "debug-watchpoint",
        // Enabled, EL1 and EL0, any access, 8 bytes.
        probe::write_dbgwcr0_el1(0xff << 5 | 0b11 << 3 | 0b11 << 1 | 1),
        probe::read_dbgwcr0_el1(),
    );
    read_as_zero(
        tally,
        "debug-os-lock",
        probe::write_oslar_el1(1),
        probe::read_oslsr_el1(),
    );
    match probe::read_mdrar_el1() {
        Ok(0) => tally.survived("debug-rom-address", format_args!("reads as zero")),
        other => tally.fail(
            "debug-rom-address",
            format_args!("expected zero, got {other:x?}"),
        ),
    }
}

/// A register the guest writes and reads back as zero (RAZ/WI): the
/// hypervisor keeps it from reaching the hardware other VMs share.
fn read_as_zero(tally: &mut Tally, name: &str, write: Result<(), Fault>, read: Result<u64, Fault>) {
    match (write, read) {
        (Ok(()), Ok(0)) => tally.survived(name, format_args!("written and read as zero")),
        (write, read) => tally.fail(
            name,
            format_args!("expected RAZ/WI, write {write:x?} read {read:x?}"),
        ),
    }
}

/// The features whose state the hypervisor does not switch per vCPU must
/// read as absent: SVE, MTE, SME, the PMU and pointer authentication.
fn hidden_features(tally: &mut Tally) {
    let field = |value: u64, shift: u32| (value >> shift) & 0xF;
    let reads = (
        probe::read_id_aa64pfr0(),
        probe::read_id_aa64pfr1(),
        probe::read_id_aa64dfr0(),
        probe::read_id_aa64isar1(),
    );
    let (Ok(pfr0), Ok(pfr1), Ok(dfr0), Ok(isar1)) = reads else {
        tally.fail(
            "hidden-features",
            format_args!("an ID register faulted: {reads:x?}"),
        );
        return;
    };
    let shown = [
        ("SVE", field(pfr0, 32)),
        ("MTE", field(pfr1, 8)),
        ("SME", field(pfr1, 24)),
        ("PMU", field(dfr0, 8)),
        (
            "PAuth",
            field(isar1, 4) | field(isar1, 8) | field(isar1, 24) | field(isar1, 28),
        ),
    ];
    match shown.iter().find(|(_, value)| *value != 0) {
        None => tally.survived(
            "hidden-features",
            format_args!("SVE, MTE, SME, PMU and PAuth read as absent"),
        ),
        Some((name, value)) => tally.fail(
            "hidden-features",
            format_args!("{name} reads as {value:#x}"),
        ),
    }
}

/// Drains the CPU interface: the INTIDs acknowledged within `ms`, counted
/// for `intid` (every one is EOI'd).
fn take_interrupts(intid: u32, ms: u64) -> (u32, u32) {
    let deadline = sysreg::counter().saturating_add(ms_to_ticks(ms));
    let (mut wanted, mut others) = (0, 0);
    loop {
        // One more look after the deadline: the host may have run this
        // vCPU too late for any look before it.
        let last = sysreg::counter() >= deadline;
        match sysreg::icc_iar1() {
            SPURIOUS_INTID => core::hint::spin_loop(),
            got => {
                sysreg::icc_eoir1(got);
                if got == intid {
                    wanted += 1;
                } else {
                    others += 1;
                }
            }
        }
        if last {
            break;
        }
    }
    (wanted, others)
}

fn gic_attacks(tally: &mut Tally, target: &Target) {
    let Some(gic) = &target.gic else {
        tally.fail("gic", format_args!("no GIC: the GIC attacks did not run"));
        return;
    };
    gic.enable_private(0);
    gic.enable_private(SGI_SELF);
    for (name, register) in [
        ("sgi0r-from-xzr", SgiRegister::Sgi0r),
        ("asgi1r-from-xzr", SgiRegister::Asgi1r),
    ] {
        // Group 0 and "other security state" SGIs: a non-secure guest
        // with only Group 1 may get UNDEFINED or nothing at all.
        match probe::sgi_from_xzr(register) {
            Err(fault) if fault.class() == EC_UNKNOWN => {
                tally.survived(name, format_args!("undefined (ESR={:#x})", fault.esr))
            }
            Ok(()) => match take_interrupts(0, 1) {
                (0, 0) => tally.survived(name, format_args!("completed, no interrupt")),
                got => tally.fail(name, format_args!("interrupts arrived: {got:?}")),
            },
            Err(fault) => tally.fail(name, format_args!("ESR={:#x}", fault.esr)),
        }
    }
    // Target list 0: nobody, not SGI 0 to vCPU 0.
    match probe::sgi_from_xzr(SgiRegister::Sgi1r).map(|()| take_interrupts(0, 1)) {
        Ok((0, 0)) => tally.survived(
            "sgi1r-from-xzr",
            format_args!("completed, no interrupt (empty target list)"),
        ),
        other => tally.fail("sgi1r-from-xzr", format_args!("got {other:?}")),
    }
    // Aff1 255: no such vCPU.
    let absent = affinity::sgi1r(SGI_SELF, 0xFF << 8 | 1);
    match probe::write_icc_sgi1r(absent).map(|()| take_interrupts(SGI_SELF, 1)) {
        Ok((0, 0)) => tally.survived(
            "sgi1r-absent-cpu",
            format_args!("completed, nothing delivered"),
        ),
        other => tally.fail("sgi1r-absent-cpu", format_args!("got {other:?}")),
    }
    let own = affinity::sgi1r(SGI_SELF, sysreg::mpidr());
    for _ in 0..STORM {
        sysreg::send_sgi1(own);
    }
    // A GIC takes it once. The vGIC counts an SGI in a list register as
    // active, so a flood while it is listed pends it once more: one extra
    // (timing decides), never a storm.
    match take_interrupts(SGI_SELF, WAIT_MS) {
        (1..=2, 0) => tally.survived(
            "sgi-self-flood",
            format_args!("{STORM} SGIs, taken at most twice"),
        ),
        got => tally.fail(
            "sgi-self-flood",
            format_args!("{STORM} SGIs, taken (ours, others) {got:?}"),
        ),
    }
    let before = probe::read_icc_sre();
    let cleared = probe::write_icc_sre(0);
    let after = probe::read_icc_sre();
    match (before, cleared, after) {
        (Ok(before), Ok(()), Ok(after)) if after & 1 == 1 => tally.survived(
            "sre-cleared",
            format_args!("ICC_SRE_EL1 {before:#x} -> {after:#x}: SRE is RAO/WI"),
        ),
        got => tally.fail("sre-cleared", format_args!("got {got:x?}")),
    }
    let gicc = target.gicd.base() + GICC_OFFSET;
    tally.external_abort(
        "gicv2-cpu-interface",
        EC_DATA_ABORT,
        false,
        arch::probe_unmapped_read(gicc),
    );
    let beyond = target.gicr.base + target.cpu_count * GICR_FRAME;
    tally.external_abort(
        "gicr-beyond-vcpus",
        EC_DATA_ABORT,
        false,
        arch::probe_unmapped_read(beyond + 8),
    );
}

/// The redistributor's active and pending bits written for an interrupt
/// the hypervisor has in a list register: an SGI, and the physical timer's
/// PPI (a hardware list register). No interrupt may be listed twice or
/// wedged: after the writes it is taken at most twice, and a fresh one is
/// taken again.
fn listed_state_attacks(tally: &mut Tally, target: &Target) {
    let (Some(gic), Some(rd)) = (&target.gic, DeviceWindow::new(target.gicr)) else {
        tally.fail("listed-state", format_args!("no GIC"));
        return;
    };
    let own = affinity::sgi1r(SGI_SELF, sysreg::mpidr());
    let bit = 1 << SGI_SELF;
    gic.enable_private(SGI_SELF);
    // The SGI goes pending and is listed when this vCPU next enters.
    sysreg::send_sgi1(own);
    for offset in [
        GICR_ISACTIVER0,
        GICR_ICPENDR0,
        GICR_ICACTIVER0,
        GICR_ISPENDR0,
    ] {
        rd.write32(offset, bit);
    }
    let (during, others) = take_interrupts(SGI_SELF, WAIT_MS);
    sysreg::send_sgi1(own);
    let (fresh, _) = take_interrupts(SGI_SELF, WAIT_MS);
    gic.disable_private(SGI_SELF);
    match (during, others, fresh) {
        (0..=2, 0, 1..=2) => tally.survived(
            "sgi-active-pending-while-listed",
            format_args!("taken at most twice, and again when sent again"),
        ),
        got => tally.fail(
            "sgi-active-pending-while-listed",
            format_args!("(taken, others, taken when sent again) {got:?}"),
        ),
    }
    let ptimer = target.ptimer_intid;
    let bit = 1 << ptimer;
    gic.enable_private(ptimer);
    // Due at once: listed with its hardware interrupt.
    let armed = (probe::write_cntp_cval(0), probe::write_cntp_ctl(1));
    for offset in [
        GICR_ICACTIVER0,
        GICR_ICPENDR0,
        GICR_ISACTIVER0,
        GICR_ICACTIVER0,
    ] {
        rd.write32(offset, bit);
    }
    let _ = probe::write_cntp_ctl(0);
    let (during, others) = take_interrupts(ptimer, WAIT_MS);
    let now = sysreg::counter();
    let rearmed = (
        probe::write_cntp_cval(now + ms_to_ticks(1)),
        probe::write_cntp_ctl(1),
    );
    let fresh = first_interrupt(WAIT_MS * 10);
    let _ = probe::write_cntp_ctl(0);
    gic.disable_private(ptimer);
    match (armed, rearmed, during, others, fresh) {
        ((Ok(()), Ok(())), (Ok(()), Ok(())), 0..=2, 0, Some(intid)) if intid == ptimer => tally
            .survived(
                "ptimer-deactivated-while-listed",
                format_args!("taken at most twice, and again when re-armed"),
            ),
        got => tally.fail(
            "ptimer-deactivated-while-listed",
            format_args!("(armed, re-armed, taken, others, next) {got:x?}"),
        ),
    }
}

fn mmio_attacks(tally: &mut Tally, target: &Target) {
    let gicd = target.gicd.base();
    let typer = target.gicd.read32(GICD_TYPER);
    let iidr = target.gicd.read32(GICD_IIDR);
    // An emulated access must give what the single loads give; refusing
    // it with an external abort is the other architected answer.
    match probe::load_pair(gicd + GICD_TYPER) {
        Ok(pair) if pair == (typer, iidr) => {
            tally.survived("ldp-mmio", format_args!("emulated: {pair:#x?}"))
        }
        other => tally.external_abort("ldp-mmio", EC_DATA_ABORT, false, other),
    }
    match probe::load_exclusive(gicd + GICD_TYPER) {
        Ok(value) if value == typer => {
            tally.survived("ldxr-mmio", format_args!("emulated: {value:#x}"))
        }
        other => tally.external_abort("ldxr-mmio", EC_DATA_ABORT, false, other),
    }
    let priority_before = target.gicd.read32(GICD_IPRIORITYR_SPI63);
    match probe::store_exclusive(gicd + GICD_IPRIORITYR_SPI63, 0x8080_8080) {
        // Exclusives need a monitor MMIO lacks: the store may fail (status
        // 1, nothing written) or abort.
        Ok(1) if target.gicd.read32(GICD_IPRIORITYR_SPI63) == priority_before => tally.survived(
            "stxr-mmio",
            format_args!("failed (status 1), nothing written"),
        ),
        other => tally.external_abort("stxr-mmio", EC_DATA_ABORT, false, other),
    }
    let lse = probe::read_id_aa64isar0().map_or(0, |isar0| (isar0 >> 20) & 0xF);
    let priority_before = target.gicd.read32(GICD_IPRIORITYR_SPI63);
    let atomic = probe::atomic_add(gicd + GICD_IPRIORITYR_SPI63, 1);
    if lse == 0 {
        tally.undefined("atomic-mmio", atomic);
    } else {
        match atomic {
            Ok(old)
                if old == priority_before
                    && target.gicd.read32(GICD_IPRIORITYR_SPI63) == old.wrapping_add(1) =>
            {
                tally.survived("atomic-mmio", format_args!("emulated"))
            }
            other => tally.external_abort("atomic-mmio", EC_DATA_ABORT, false, other),
        }
    }
    match probe::load_post_index(gicd + GICD_TYPER) {
        Ok((value, base)) if value == typer && base == gicd + GICD_TYPER + 4 => tally.survived(
            "post-index-mmio",
            format_args!("emulated, base advanced by 4"),
        ),
        other => tally.external_abort("post-index-mmio", EC_DATA_ABORT, false, other),
    }
    match probe::load_pre_index(gicd) {
        Ok((value, base)) if value == typer && base == gicd + GICD_TYPER => tally.survived(
            "pre-index-mmio",
            format_args!("emulated, base advanced by 4"),
        ),
        other => tally.external_abort("pre-index-mmio", EC_DATA_ABORT, false, other),
    }
    match probe::load_sp_writeback(gicd) {
        Ok(value) if value == typer => {
            tally.survived("sp-writeback-mmio", format_args!("emulated"))
        }
        other => tally.external_abort("sp-writeback-mmio", EC_DATA_ABORT, false, other),
    }
    // ISV = 0 in AArch32 state: an A32 instruction, which an A64 decoder
    // must not read.
    let aarch32_el0 = probe::read_id_aa64pfr0().is_ok_and(|pfr0| pfr0 & 0xF == 2);
    if aarch32_el0 {
        tally.external_abort(
            "aarch32-ldm-mmio",
            EC_DATA_ABORT_LOWER,
            false,
            probe::aarch32_load_multiple(gicd + GICD_TYPER),
        );
    } else {
        tally.survived(
            "aarch32-ldm-mmio",
            format_args!("no AArch32 at EL0 on this CPU"),
        );
    }
    tally.external_abort(
        "access-hole",
        EC_DATA_ABORT,
        false,
        arch::probe_unmapped_read(HOLE),
    );
    // With the MMU on (Normal memory), accesses the hardware may split.
    // The redistributor's last word (CIDR3) and the first of its SGI frame.
    let rd = target.gicr.base;
    let cidr3 = DeviceWindow::new(target.gicr).map(|w| {
        (
            u64::from(w.read32(GICR_SGI_BASE - 4)),
            u64::from(w.read32(GICR_SGI_BASE)),
        )
    });
    let crossing = probe::with_mmu(HOLE, || probe::load64(rd + GICR_SGI_BASE - 4));
    match (crossing, cidr3) {
        (Ok(value), Some((low, high))) if value == low | high << 32 || value == 0 => tally
            .survived(
                "page-crossing-mmio",
                format_args!("emulated as the two words: {value:#x}"),
            ),
        (other, _) => tally.external_abort("page-crossing-mmio", EC_DATA_ABORT, false, other),
    }
    let ram_end = target.ram.base + target.ram.size;
    tally.external_abort(
        "page-crossing-ram-end",
        EC_DATA_ABORT,
        false,
        probe::with_mmu(HOLE, || probe::load64(ram_end - 4)),
    );
    let unaligned = probe::with_mmu(HOLE, || probe::load64(gicd + GICD_TYPER + 2));
    let bytes = u64::from(typer >> 16) | u64::from(iidr) << 16;
    match unaligned {
        Ok(value) if value & 0xFFFF_FFFF_FFFF == bytes || value == 0 => tally.survived(
            "unaligned-mmio",
            format_args!("emulated as the bytes there: {value:#x}"),
        ),
        other => tally.external_abort("unaligned-mmio", EC_DATA_ABORT, false, other),
    }
    tally.external_abort(
        "walk-into-mmio",
        EC_DATA_ABORT,
        true,
        probe::with_mmu(gicd, || probe::load64(probe::UPPER_VA)),
    );
    tally.external_abort(
        "walk-into-hole",
        EC_DATA_ABORT,
        true,
        probe::with_mmu(HOLE, || probe::load64(probe::UPPER_VA)),
    );
    tally.external_abort(
        "fetch-from-hole",
        EC_INSTRUCTION_ABORT,
        false,
        probe::branch_to(HOLE),
    );
    tally.external_abort(
        "fetch-from-mmio",
        EC_INSTRUCTION_ABORT,
        false,
        probe::branch_to(target.uart.base),
    );
}

fn maintenance_attacks(tally: &mut Tally, target: &Target) {
    let uart = target.uart.base;
    tally.completes(
        "dc-civac-mmio",
        probe::maintain(Maintenance::CleanInvalidate, uart),
    );
    tally.completes(
        "dc-civac-hole",
        probe::maintain(Maintenance::CleanInvalidate, HOLE),
    );
    tally.completes(
        "dc-ivac-mmio",
        probe::maintain(Maintenance::Invalidate, uart),
    );
    tally.completes(
        "ic-ivau-hole",
        probe::maintain(Maintenance::InstructionInvalidate, HOLE),
    );
    tally.completes(
        "dc-set-way",
        probe::maintain(Maintenance::InvalidateBySetWay, 0),
    );
    tally.completes(
        "tlbi-broadcast",
        probe::maintain(Maintenance::TlbInvalidateAll, 0),
    );
    // DC ZVA is a store of a whole block: to a hole it aborts.
    tally.external_abort(
        "dc-zva-hole",
        EC_DATA_ABORT,
        false,
        probe::with_mmu(HOLE, || probe::maintain(Maintenance::ZeroBlock, HOLE)),
    );
}

fn call_attacks(tally: &mut Tally, target: &Target) {
    // SMCCC reserves every HVC immediate but 0.
    match probe::hvc_with_immediate(u64::from(smccc::PSCI_VERSION)) {
        Ok(x0) if smccc::status(x0) == smccc::NOT_SUPPORTED => {
            tally.survived("hvc-immediate", format_args!("NOT_SUPPORTED"))
        }
        other => tally.fail(
            "hvc-immediate",
            format_args!("expected NOT_SUPPORTED, got {other:x?}"),
        ),
    }
    let answers = (0..STORM)
        .filter(|_| call(smccc::BOGUS_FUNCTION, [0; 3]) == smccc::NOT_SUPPORTED)
        .count();
    if answers == STORM as usize {
        tally.survived(
            "unknown-call-storm",
            format_args!("{STORM} calls, each NOT_SUPPORTED"),
        );
    } else {
        tally.fail(
            "unknown-call-storm",
            format_args!("{answers} of {STORM} calls NOT_SUPPORTED"),
        );
    }
    let Some(second) = target.second_cpu else {
        tally.fail(
            "cpu-on",
            format_args!("one vCPU: the PSCI attacks need two"),
        );
        return;
    };
    let entry = arch::attack_secondary_entry();
    for (name, entry, wanted) in [
        ("cpu-on-misaligned", entry + 2, PSCI_INVALID_ADDRESS),
        (
            "cpu-on-outside-ram",
            target.uart.base as u64,
            PSCI_INVALID_ADDRESS,
        ),
    ] {
        let status = call(smccc::PSCI_CPU_ON_64, [second, entry, duty::OFF]);
        if status == wanted {
            tally.survived(name, format_args!("status {status}"));
        } else {
            tally.fail(name, format_args!("status {status}, expected {wanted}"));
            wait_off(second);
        }
    }
    let status = call(smccc::PSCI_CPU_ON_64, [0xFF_0000, entry, duty::OFF]);
    if status == PSCI_INVALID_PARAMETERS {
        tally.survived("cpu-on-absent-cpu", format_args!("status {status}"));
    } else {
        tally.fail(
            "cpu-on-absent-cpu",
            format_args!("status {status}, expected {PSCI_INVALID_PARAMETERS}"),
        );
    }
}

/// Waits until AFFINITY_INFO says `mpidr` is off; false if it never is.
fn wait_off(mpidr: u64) -> bool {
    wait_until(|| call(smccc::PSCI_AFFINITY_INFO, [mpidr, 0, 0]) == PSCI_AFFINITY_OFF)
}

/// Whether `done` becomes true within two seconds (looked at once more
/// after them, in case the host ran this vCPU late).
fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let deadline = sysreg::counter().saturating_add(ms_to_ticks(2_000));
    loop {
        let last = sysreg::counter() >= deadline;
        if done() {
            return true;
        }
        if last {
            return false;
        }
    }
}

fn cpu_attacks(tally: &mut Tally, target: &Target) {
    let (Some(second), Some(gic)) = (target.second_cpu, &target.gic) else {
        tally.fail(
            "cpu-attacks",
            format_args!("need a second vCPU and the GIC"),
        );
        return;
    };
    let entry = arch::attack_secondary_entry();
    // CPU_ON against a vCPU that turns itself off at once.
    let (mut started, mut refused) = (0, 0);
    let mut unexpected = None;
    for _ in 0..RACE_ROUNDS {
        match call(smccc::PSCI_CPU_ON_64, [second, entry, duty::OFF]) {
            PSCI_SUCCESS => started += 1,
            PSCI_ALREADY_ON | PSCI_ON_PENDING => refused += 1,
            other => unexpected = Some(other),
        }
        let _ = call(smccc::PSCI_AFFINITY_INFO, [second, 0, 0]);
    }
    match (unexpected, wait_off(second)) {
        (None, true) if started > 0 => tally.survived(
            "cpu-on-off-race",
            format_args!("{RACE_ROUNDS} CPU_ON, each SUCCESS or ALREADY_ON, then off"),
        ),
        got => tally.fail(
            "cpu-on-off-race",
            format_args!("{started} started, {refused} refused, (unexpected status, off) {got:?}"),
        ),
    }
    // SGIs to the vCPU while it is off: at most one stays pending.
    let frame = DeviceWindow::new(Window {
        base: target.gicr.base + GICR_FRAME,
        size: GICR_FRAME,
    });
    if let Some(frame) = frame {
        frame.write32(GICR_IGROUPR0, u32::MAX);
        frame.write32(GICR_ISENABLER0, 1 << SGI_TO_OFF_CPU);
    }
    let to_second = affinity::sgi1r(SGI_TO_OFF_CPU, second);
    for _ in 0..STORM {
        sysreg::send_sgi1(to_second);
    }
    SECONDARY_DONE.store(false, Ordering::SeqCst);
    let status = call(smccc::PSCI_CPU_ON_64, [second, entry, duty::COUNT_SGIS]);
    let counted = wait_done().then(|| SECONDARY_COUNT.load(Ordering::SeqCst));
    match (status, counted, wait_off(second)) {
        (PSCI_SUCCESS, Some(0..=1), true) => tally.survived(
            "sgi-flood-off-cpu",
            format_args!("{STORM} SGIs to an off vCPU, at most one taken once it ran"),
        ),
        got => tally.fail(
            "sgi-flood-off-cpu",
            format_args!("(CPU_ON, SGIs taken, off) {got:?}"),
        ),
    }
    // A WFE storm while the other vCPU shares the CPU in one of its own.
    STOP.store(false, Ordering::SeqCst);
    SECONDARY_DONE.store(false, Ordering::SeqCst);
    SECONDARY_COUNT.store(0, Ordering::SeqCst);
    let status = call(smccc::PSCI_CPU_ON_64, [second, entry, duty::WFE_STORM]);
    for _ in 0..STORM {
        probe::wait_for_event();
    }
    // Until the other vCPU got the CPU too.
    let deadline = sysreg::counter().saturating_add(ms_to_ticks(2_000));
    while SECONDARY_COUNT.load(Ordering::SeqCst) == 0 && sysreg::counter() < deadline {
        probe::wait_for_event();
    }
    STOP.store(true, Ordering::SeqCst);
    let theirs = wait_done().then(|| SECONDARY_COUNT.load(Ordering::SeqCst));
    match (status, theirs, wait_off(second)) {
        (PSCI_SUCCESS, Some(1..), true) => tally.survived(
            "wfe-storm",
            format_args!("{STORM} WFE beside the other vCPU's on the same CPU"),
        ),
        got => tally.fail(
            "wfe-storm",
            format_args!("(CPU_ON, their WFEs, off) {got:?}"),
        ),
    }
    // Both vCPUs sleep in WFI on a short timer, over and over: each WFI
    // blocks its vCPU and hands the CPU to the other, and the hypervisor
    // watches the sleeper's timer for it.
    if let Some(frame) = frame {
        frame.write32(GICR_ISENABLER0, 1 << target.vtimer_intid);
    }
    gic.enable_private(target.vtimer_intid);
    VTIMER_INTID.store(u64::from(target.vtimer_intid), Ordering::SeqCst);
    SECONDARY_DONE.store(false, Ordering::SeqCst);
    let status = call(
        smccc::PSCI_CPU_ON_64,
        [second, entry, duty::TIMER_WFI_STORM],
    );
    let ours = timer_wfi_storm(target.vtimer_intid);
    // Asleep, not spinning: a spinning vCPU would keep the CPU for whole
    // slices while the other's timers fire.
    let deadline = sysreg::counter().saturating_add(ms_to_ticks(10_000));
    while !SECONDARY_DONE.load(Ordering::SeqCst) && sysreg::counter() < deadline {
        sysreg::vtimer_arm(u32::try_from(ms_to_ticks(1)).unwrap_or(u32::MAX));
        arch::wait_for_interrupt();
        let _ = first_interrupt(WAIT_MS);
        sysreg::vtimer_stop();
    }
    let theirs = wait_done().then(|| SECONDARY_COUNT.load(Ordering::SeqCst));
    gic.disable_private(target.vtimer_intid);
    match (status, ours, theirs, wait_off(second)) {
        (PSCI_SUCCESS, WFI_ROUNDS, Some(theirs), true) if theirs == u64::from(WFI_ROUNDS) => tally
            .survived(
                "wfi-timer-storm",
                format_args!("each vCPU woken by its timer {WFI_ROUNDS} times"),
            ),
        got => tally.fail(
            "wfi-timer-storm",
            format_args!("(CPU_ON, ours, theirs, off) {got:?}, {WFI_ROUNDS} each expected"),
        ),
    }
    gic.disable_private(SGI_SELF);
}

/// Sleeps in WFI on the virtual timer WFI_ROUNDS times; returns how often
/// the timer woke it.
fn timer_wfi_storm(vtimer_intid: u32) -> u32 {
    let sleep = (sysreg::counter_frequency() * WFI_SLEEP_US / 1_000_000).max(1);
    let mut woken = 0;
    for _ in 0..WFI_ROUNDS {
        sysreg::vtimer_arm(u32::try_from(sleep).unwrap_or(u32::MAX));
        arch::wait_for_interrupt();
        if let Some(intid) = first_interrupt(WAIT_MS) {
            if intid == vtimer_intid {
                woken += 1;
            }
        }
        sysreg::vtimer_stop();
    }
    woken
}

fn wait_done() -> bool {
    wait_until(|| SECONDARY_DONE.load(Ordering::SeqCst))
}

/// Deadlines the EL2 timer cannot hold in a signed 32-bit TVAL, or at the
/// end of time: the other timer, due soon, must come first, and nothing
/// must storm.
fn timer_attacks(tally: &mut Tally, target: &Target) {
    let Some(gic) = &target.gic else {
        return;
    };
    // The other vCPU spins beside: this one is descheduled while it
    // waits, so the hypervisor watches its timers for it.
    STOP.store(false, Ordering::SeqCst);
    SECONDARY_DONE.store(false, Ordering::SeqCst);
    let beside = target.second_cpu.map(|second| {
        (
            second,
            call(
                smccc::PSCI_CPU_ON_64,
                [second, arch::attack_secondary_entry(), duty::WFE_STORM],
            ),
        )
    });
    let soon = ms_to_ticks(5);
    let cases = [
        ("timer-far-deadline", 1 << 40, soon, target.ptimer_intid),
        ("timer-max-deadline", soon, u64::MAX, target.vtimer_intid),
    ];
    for (name, vtimer_in, ptimer_in, wanted) in cases {
        gic.enable_private(target.vtimer_intid);
        gic.enable_private(target.ptimer_intid);
        let now = sysreg::counter();
        let armed = (
            probe::write_cntv_cval(now.saturating_add(vtimer_in)),
            probe::write_cntv_ctl(1),
            probe::write_cntp_cval(now.saturating_add(ptimer_in)),
            probe::write_cntp_ctl(1),
        );
        let first = first_interrupt(WAIT_MS * 10);
        let _ = (probe::write_cntv_ctl(0), probe::write_cntp_ctl(0));
        let (_, others) = take_interrupts(SPURIOUS_INTID, 1);
        gic.disable_private(target.vtimer_intid);
        gic.disable_private(target.ptimer_intid);
        match (armed, first) {
            ((Ok(()), Ok(()), Ok(()), Ok(())), Some(intid)) if intid == wanted && others == 0 => {
                tally.survived(name, format_args!("INTID {intid} came first, no storm"))
            }
            got => tally.fail(
                name,
                format_args!("expected INTID {wanted} alone, got {got:x?}, {others} more"),
            ),
        }
    }
    STOP.store(true, Ordering::SeqCst);
    if let Some((second, PSCI_SUCCESS)) = beside {
        wait_off(second);
    }
}

/// Waits in WFI (IRQs masked) for the first interrupt; acknowledges and
/// EOIs it.
fn first_interrupt(ms: u64) -> Option<u32> {
    let deadline = sysreg::counter().saturating_add(ms_to_ticks(ms));
    loop {
        // Past the deadline, one last look without waiting.
        let last = sysreg::counter() >= deadline;
        if !last {
            arch::wait_for_interrupt();
        }
        match sysreg::icc_iar1() {
            SPURIOUS_INTID if last => return None,
            SPURIOUS_INTID => {}
            got => {
                let _ = (probe::write_cntv_ctl(0), probe::write_cntp_ctl(0));
                sysreg::icc_eoir1(got);
                return Some(got);
            }
        }
    }
}

/// The second vCPU's GIC CPU interface (its redistributor is the boot
/// vCPU's to set up).
fn enable_cpu_interface() {
    let _ = probe::write_icc_sre(1);
    sysreg::set_icc_pmr(0xF0);
    sysreg::set_icc_igrpen1(1);
}

/// The second vCPU: does its duty, then CPU_OFF.
#[no_mangle]
extern "C" fn testguest_attack_secondary(duty: u64) -> ! {
    match duty {
        duty::WFE_STORM => {
            while !STOP.load(Ordering::SeqCst) {
                probe::wait_for_event();
                // One writer: no read-modify-write (exclusives need a
                // monitor Device memory may lack).
                let count = SECONDARY_COUNT.load(Ordering::SeqCst);
                SECONDARY_COUNT.store(count + 1, Ordering::SeqCst);
            }
            SECONDARY_DONE.store(true, Ordering::SeqCst);
        }
        duty::COUNT_SGIS => {
            // The CPU interface only: the redistributor's pending state is
            // what the flood left.
            enable_cpu_interface();
            let (taken, _) = take_interrupts(SGI_TO_OFF_CPU, WAIT_MS);
            SECONDARY_COUNT.store(u64::from(taken), Ordering::SeqCst);
            SECONDARY_DONE.store(true, Ordering::SeqCst);
        }
        duty::TIMER_WFI_STORM => {
            enable_cpu_interface();
            let intid = u32::try_from(VTIMER_INTID.load(Ordering::SeqCst)).unwrap_or(0);
            let woken = timer_wfi_storm(intid);
            SECONDARY_COUNT.store(u64::from(woken), Ordering::SeqCst);
            SECONDARY_DONE.store(true, Ordering::SeqCst);
        }
        _ => {}
    }
    call(smccc::PSCI_CPU_OFF, [0; 3]);
    arch::halt()
}
