//! The hypervisor console: formatted output on the host's PL011 through the
//! arch layer's polled `uart_write`, serialised across CPUs, plus the
//! `println!` macro. Before `init` (or with no PL011) output is dropped.

use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

use crate::addr::PhysAddr;
use crate::arch;

// Globals because there is one physical UART for the whole machine, shared
// by every CPU, and the panic handler must reach it without any context.
static CONSOLE_BASE: AtomicU64 = AtomicU64::new(0);
static CONSOLE_LOCK: Mutex<()> = Mutex::new(());
// Which tagged source (a VM) has an unfinished line on the console, or
// NO_SOURCE; guarded by CONSOLE_LOCK, atomic only to be a safe static.
static PARTIAL_LINE: AtomicUsize = AtomicUsize::new(NO_SOURCE);
const NO_SOURCE: usize = usize::MAX;

/// How many times the panic path tries the lock before writing regardless.
const PANIC_LOCK_TRIES: u32 = 1_000_000;

/// Sends console output to the PL011 at `base`.
pub fn init(base: PhysAddr) {
    CONSOLE_BASE.store(base.as_u64(), Ordering::Release);
}

/// A `fmt::Write` onto the console UART that turns `\n` into `\r\n`.
struct Writer(PhysAddr);

impl fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for (i, line) in s.split('\n').enumerate() {
            if i > 0 {
                arch::uart_write(self.0, b"\r\n");
            }
            arch::uart_write(self.0, line.as_bytes());
        }
        Ok(())
    }
}

fn write_unlocked(args: fmt::Arguments<'_>) {
    let base = CONSOLE_BASE.load(Ordering::Acquire);
    if base != 0 {
        // Writer never fails.
        let _ = fmt::Write::write_fmt(&mut Writer(PhysAddr::new(base)), args);
    }
}

/// Ends a VM's unfinished line before other output (caller holds the lock).
fn break_partial_line(base: PhysAddr, unless: usize) {
    let owner = PARTIAL_LINE.load(Ordering::Relaxed);
    if owner != NO_SOURCE && owner != unless {
        arch::uart_write(base, b"\r\n");
        PARTIAL_LINE.store(NO_SOURCE, Ordering::Relaxed);
    }
}

/// Prints `args` as one uninterrupted piece of console output.
pub fn print(args: fmt::Arguments<'_>) {
    let _guard = CONSOLE_LOCK.lock();
    let base = CONSOLE_BASE.load(Ordering::Acquire);
    if base != 0 {
        break_partial_line(PhysAddr::new(base), NO_SOURCE);
    }
    write_unlocked(args);
}

/// Writes a guest's output byte for source `source` (a VM index) whose
/// lines start with `tag`: every console line carries exactly one source's
/// bytes, so a line another source interrupts is broken and continued on a
/// new, tagged line.
pub fn write_tagged(source: usize, tag: &str, byte: u8) {
    let base = CONSOLE_BASE.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    let base = PhysAddr::new(base);
    let _guard = CONSOLE_LOCK.lock();
    break_partial_line(base, source);
    if PARTIAL_LINE.load(Ordering::Relaxed) != source {
        arch::uart_write(base, tag.as_bytes());
    }
    arch::uart_write(base, &[byte]);
    let owner = if byte == b'\n' { NO_SOURCE } else { source };
    PARTIAL_LINE.store(owner, Ordering::Relaxed);
}

/// Writes raw bytes (a guest's console output) as one piece.
pub fn write_bytes(bytes: &[u8]) {
    let base = CONSOLE_BASE.load(Ordering::Acquire);
    if base != 0 {
        let _guard = CONSOLE_LOCK.lock();
        arch::uart_write(PhysAddr::new(base), bytes);
    }
}

/// Prints from the panic handler: takes the lock if it can, and writes
/// regardless if the panicking CPU (or a stuck one) holds it.
pub fn panic_print(args: fmt::Arguments<'_>) {
    let mut guard = None;
    for _ in 0..PANIC_LOCK_TRIES {
        guard = CONSOLE_LOCK.try_lock();
        if guard.is_some() {
            break;
        }
    }
    write_unlocked(args);
    drop(guard);
}

/// Prints a line on the hypervisor console.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}
