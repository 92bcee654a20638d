//! The hypervisor console: formatted output on the host's PL011 through the
//! arch layer's polled `uart_write`, serialised across CPUs, plus the
//! `println!` macro. Before `init` (or with no PL011) output is dropped.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use crate::addr::PhysAddr;
use crate::arch;

// Globals because there is one physical UART for the whole machine, shared
// by every CPU, and the panic handler must reach it without any context.
static CONSOLE_BASE: AtomicU64 = AtomicU64::new(0);
static CONSOLE_LOCK: Mutex<()> = Mutex::new(());

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

/// Prints `args` as one uninterrupted piece of console output.
pub fn print(args: fmt::Arguments<'_>) {
    let _guard = CONSOLE_LOCK.lock();
    write_unlocked(args);
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
