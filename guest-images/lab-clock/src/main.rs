//! lab-clock: a static AArch64 Linux program in the lab's initramfs. `/init`
//! runs it just before it prints `LAB-READY <vm>`; it reads the guest's
//! virtual counter (CNTVCT_EL0, which Linux lets EL0 read for the vDSO) and
//! the counter frequency (CNTFRQ_EL0), writes one line
//! `LAB-CLOCK <ticks> <frequency>` to stdout and exits. Under `-icount` the
//! counter is virtual time since machine reset, on bare QEMU and under the
//! hypervisor (which keeps CNTVOFF_EL2 at 0) alike: `lab bench boot
//! --icount` reads it from the console.
//!
//! This file owns the Linux side: the entry point, the two system calls
//! (`write`, `exit`), the counter reads and the panic handler; the line's
//! format is in `line.rs`. Built for `aarch64-unknown-none`, linked by
//! `linker/lab-clock.ld`. On the host the crate only compiles `line.rs` for
//! `cargo test`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(any(test, target_os = "none"))]
mod line;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "lab-clock is a static AArch64 Linux program for the lab's initramfs; build it with\n  \
         cargo build -p lab-clock --target aarch64-unknown-none --release"
    );
    std::process::exit(2);
}

#[cfg(target_os = "none")]
mod linux {
    use crate::line::Line;
    use core::arch::asm;

    /// Linux AArch64 system call numbers.
    const SYS_WRITE: u64 = 64;
    const SYS_EXIT: u64 = 93;

    const STDOUT: u64 = 1;

    /// Exit status when stdout refused the line.
    const EXIT_WRITE_FAILED: u64 = 1;
    /// Exit status of a panic.
    const EXIT_PANIC: u64 = 101;

    /// The entry point Linux jumps to (ELF `e_entry`), with `sp` at argc.
    #[unsafe(no_mangle)]
    #[unsafe(link_section = ".text._start")]
    extern "C" fn _start() -> ! {
        let (ticks, frequency) = counter();
        let line = Line::new(ticks, frequency);
        let status = if write_all(STDOUT, line.as_bytes()) {
            0
        } else {
            EXIT_WRITE_FAILED
        };
        exit(status)
    }

    /// CNTVCT_EL0 and CNTFRQ_EL0. The ISB keeps the counter read from
    /// being taken early, ahead of the instructions before it.
    fn counter() -> (u64, u64) {
        let ticks: u64;
        let frequency: u64;
        // SAFETY: reading the counter and its frequency touches no memory;
        // Linux enables EL0 access to both (CNTKCTL_EL1.EL0VCTEN, for the
        // vDSO), so neither traps.
        unsafe {
            asm!(
                "isb",
                "mrs {ticks}, cntvct_el0",
                "mrs {frequency}, cntfrq_el0",
                ticks = out(reg) ticks,
                frequency = out(reg) frequency,
                options(nomem, nostack, preserves_flags),
            );
        }
        (ticks, frequency)
    }

    /// Writes all of `bytes` to `fd`; false if the kernel refused.
    fn write_all(fd: u64, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            let written = write(fd, bytes);
            match usize::try_from(written) {
                Ok(n) if n > 0 && n <= bytes.len() => bytes = &bytes[n..],
                _ => return false,
            }
        }
        true
    }

    /// `write(2)`: bytes written, or a negative errno.
    fn write(fd: u64, bytes: &[u8]) -> i64 {
        let result: i64;
        // SAFETY: the kernel only reads `bytes.len()` bytes from
        // `bytes.as_ptr()`, a live slice; the call clobbers nothing but x0.
        unsafe {
            asm!(
                "svc #0",
                in("x8") SYS_WRITE,
                inlateout("x0") fd => result,
                in("x1") bytes.as_ptr(),
                in("x2") bytes.len(),
                options(nostack, readonly),
            );
        }
        result
    }

    /// `exit(2)`.
    fn exit(status: u64) -> ! {
        // SAFETY: `exit` ends the process and does not return.
        unsafe {
            asm!(
                "svc #0",
                in("x8") SYS_EXIT,
                in("x0") status,
                options(noreturn, nostack),
            )
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
        exit(EXIT_PANIC)
    }
}
