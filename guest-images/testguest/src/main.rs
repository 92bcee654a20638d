//! A bare-metal AArch64 guest that checks the machine it runs on: the PL011
//! console, the device tree in x0, PSCI and SMCCC through the DT's conduit,
//! the GICv3, the EL1 virtual timer's interrupt (spinning, as a level
//! interrupt, then asleep in WFI), the EL1 physical timer, an SPI pended
//! by software,
//! the PL011's own interrupt line (also as a level interrupt whose line
//! drops before it is taken) and the PL031 (at every access width). It
//! prints one
//! `TESTGUEST <check>: PASS|FAIL <detail>` line per check, then
//! `TESTGUEST DONE passed=<n> failed=<m>`, and powers off through PSCI.
//!
//! With more than one CPU in the DT it also starts the others through PSCI,
//! exchanges SGIs with them and waits for their CPU_OFF (`smp`).
//!
//! With `testguest.misbehave` in `/chosen/bootargs` it also makes an access
//! nothing backs and a call nobody implements, and checks it gets the
//! architected answers (external abort, NOT_SUPPORTED).
//!
//! With `testguest.attack` it is a hostile guest instead: after the UART
//! and DTB checks it runs the attacks of `attacks` and resets, forever.
//!
//! With `testguest.ffa` (or `testguest.ffa-peer`) it runs the FF-A battery
//! (`ffa`) after the UART and DTB checks instead of the machine checks.
//!
//! With `testguest.exits` it measures what exits cost (`exits`) after the
//! UART and DTB checks instead of the machine checks.
//!
//! It boots like a Linux Image (header in `arch/boot.rs`, layout in
//! `linker/testguest.ld`), at EL1h, MMU off. On the host the crate only
//! compiles its portable parts for `cargo test`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(any(test, target_os = "none"))]
mod affinity;
#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod attacks;
#[cfg(target_os = "none")]
mod checks;
#[cfg(any(test, target_os = "none"))]
mod civil;
#[cfg(target_os = "none")]
mod console;
#[cfg(target_os = "none")]
mod exits;
#[cfg(target_os = "none")]
mod ffa;
#[cfg(any(test, target_os = "none"))]
mod ffa_abi;
#[cfg(target_os = "none")]
mod gic;
#[cfg(any(test, target_os = "none"))]
mod platform;
#[cfg(any(test, target_os = "none"))]
mod report;
#[cfg(any(test, target_os = "none"))]
mod smccc;
#[cfg(target_os = "none")]
mod smp;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "testguest is a bare-metal guest; build it with\n  \
         cargo build -p testguest --target aarch64-unknown-none --release\n\
         and boot it with `cargo run -p lab -- scenario testguest_bare`"
    );
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod guest {
    use core::fmt::Write;
    use core::sync::atomic::{AtomicU8, Ordering};

    use crate::arch::{self, sysreg};
    use crate::checks;
    use crate::console::{self, Pl011};
    use crate::platform::{self, Conduit, Platform, Window};
    use crate::report::Report;
    use crate::smccc;
    use crate::smp;

    /// Where QEMU's virt board has its PL011: used only to report that the
    /// device tree could not be read, which is then a failure.
    const FALLBACK_UART: Window = Window {
        base: 0x0900_0000,
        size: 0x1000,
    };
    /// An IPA inside QEMU virt's platform-bus hole: no device tree node and
    /// no Stage-2 mapping covers it.
    const UNMAPPED_IPA: usize = 0x0C00_0000;

    // Global: the panic and exception handlers power off through it and
    // have no other way to learn the conduit. 0 = not known yet.
    static POWER_CONDUIT: AtomicU8 = AtomicU8::new(0);
    const CONDUIT_HVC: u8 = 1;
    const CONDUIT_SMC: u8 = 2;

    #[no_mangle]
    extern "C" fn testguest_main(dtb: usize) -> ! {
        let fdt = arch::device_tree(dtb);
        let platform = match &fdt {
            Ok(fdt) => Platform::discover(fdt).map_err(Some),
            Err(_) => Err(None),
        };
        let uart_window = platform.as_ref().map_or(FALLBACK_UART, |p| p.uart);
        let Some(uart) = Pl011::new(uart_window) else {
            arch::halt()
        };
        console::install(uart);
        let mut report = Report::new(uart);

        let (periph, cell) = uart.ids();
        let el = (sysreg::current_el() >> 2) & 3;
        let detail = format_args!(
            "pl011 at {:#x} PeriphID={periph:#010x} PCellID={cell:#010x} EL{el}",
            uart.base()
        );
        // What Linux's AMBA bus and amba-pl011 match (0x00041011 under mask
        // 0x000fffff, PrimeCell ID 0xb105f00d): printing alone is not enough.
        if periph & 0x000F_FFFF == 0x0004_1011 && cell == checks::PRIMECELL_ID {
            report.pass("uart", detail);
        } else {
            report.fail("uart", detail);
        }
        let platform = match platform {
            Ok(platform) => platform,
            Err(error) => {
                match (error, &fdt) {
                    (Some(error), _) => report.fail("dtb", format_args!("{error}")),
                    (None, Err(error)) => {
                        report.fail("dtb", format_args!("no DTB at {dtb:#x}: {error:?}"))
                    }
                    (None, Ok(_)) => report.fail("dtb", format_args!("unreadable")),
                }
                report.done();
                arch::halt()
            }
        };
        POWER_CONDUIT.store(
            match platform.conduit {
                Conduit::Hvc => CONDUIT_HVC,
                Conduit::Smc => CONDUIT_SMC,
            },
            Ordering::SeqCst,
        );
        report.pass(
            "dtb",
            format_args!(
                "at {dtb:#x}: pl011 {:#x} (INTID {}) gicd {:#x} gicr {:#x}+{:#x} pl031 {:#x} (INTID {}) \
                 psci {} vtimer INTID {}{}{}",
                platform.uart.base,
                platform.uart_intid,
                platform.gicd.base,
                platform.gicr.base,
                platform.gicr.size,
                platform.rtc.base,
                platform.rtc_intid,
                platform.conduit,
                platform.vtimer_intid,
                if platform.misbehave { " misbehave" } else { "" },
                if platform.attack { " attack" } else { "" },
            ),
        );
        if platform.attack {
            let virtio = fdt
                .as_ref()
                .ok()
                .into_iter()
                .flat_map(platform::virtio_slots);
            crate::attacks::run(&platform, uart, virtio)
        }
        if let Some(mode) = platform.ffa {
            crate::ffa::battery(&mut report, &platform, mode);
            report.clock(sysreg::counter(), sysreg::counter_frequency());
            report.done();
            power_off(platform.conduit)
        }
        if platform.exits {
            crate::exits::measure(&mut report, &platform);
            report.clock(sysreg::counter(), sysreg::counter_frequency());
            report.done();
            power_off(platform.conduit)
        }
        checks::psci_version(&mut report, platform.conduit);
        checks::smccc_version(&mut report, platform.conduit);
        let gic = checks::gic(&mut report, &platform);
        checks::vtimer(&mut report, &platform, gic.as_ref());
        checks::vtimer_level(&mut report, &platform, gic.as_ref());
        checks::ptimer(&mut report, &platform, gic.as_ref());
        checks::wfi(&mut report, &platform, gic.as_ref());
        checks::spi(&mut report, &platform, gic.as_ref());
        checks::sgi_burst(&mut report, gic.as_ref());
        checks::sgi_disabled(&mut report, gic.as_ref());
        checks::uart_irq(&mut report, &platform, gic.as_ref(), uart);
        checks::spi_level(&mut report, &platform, gic.as_ref(), uart);
        smp::checks(&mut report, &platform, gic.as_ref());
        checks::pl031(&mut report, &platform, gic.as_ref());
        checks::pl031_access(&mut report, &platform);
        checks::pl031_alarm(&mut report, &platform, gic.as_ref());
        if platform.misbehave {
            checks::unmapped_access(&mut report, UNMAPPED_IPA);
            checks::bogus_call(&mut report, platform.conduit);
        }
        report.clock(sysreg::counter(), sysreg::counter_frequency());
        report.done();
        power_off(platform.conduit)
    }

    fn power_off(conduit: Conduit) -> ! {
        let status = smccc::status(arch::smccc_call(conduit, smccc::PSCI_SYSTEM_OFF, [0; 3])[0]);
        if let Some(mut console) = console::get() {
            let _ = writeln!(console, "TESTGUEST: PSCI SYSTEM_OFF returned {status}");
        }
        arch::halt()
    }

    /// Powers off if the conduit is known, else stops.
    pub(crate) fn shutdown() -> ! {
        match POWER_CONDUIT.load(Ordering::SeqCst) {
            CONDUIT_HVC => power_off(Conduit::Hvc),
            CONDUIT_SMC => power_off(Conduit::Smc),
            _ => arch::halt(),
        }
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        crate::fatal(format_args!("panic: {}", info.message()))
    }
}

/// Reports a failure the checks could not contain, then powers off so the
/// lab sees the end at once instead of waiting for its timeout.
#[cfg(target_os = "none")]
fn fatal(detail: core::fmt::Arguments<'_>) -> ! {
    use core::fmt::Write;
    if let Some(mut console) = console::get() {
        let _ = writeln!(console, "TESTGUEST fatal: FAIL {detail}");
    }
    guest::shutdown()
}
