//! The hypervisor console: formatted output on the host's PL011 through the
//! arch layer's polled `uart_write`, serialised across CPUs, plus the
//! `println!` macro. Before `init` (or with no PL011) output is dropped.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
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

/// What ends a VM's unfinished line that other output interrupts: ASCII RS,
/// which terminals do not show, then a line break. The lab's console reader
/// (`lab/src/run/console.rs`) joins the line with the VM's next tagged line.
pub const LINE_BREAK: &[u8] = b"\x1e\r\n";

/// Breaks a VM's unfinished line before other output (caller holds the lock).
fn break_partial_line(base: PhysAddr, unless: usize) {
    let owner = PARTIAL_LINE.load(Ordering::Relaxed);
    if owner != NO_SOURCE && owner != unless {
        arch::uart_write(base, LINE_BREAK);
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

/// Writes a guest's output for source `source` (a VM index) whose lines
/// start with `tag`: every console line carries exactly one source's
/// bytes, so a line another source interrupts is broken (marked with
/// [`LINE_BREAK`]) and continued on a new, tagged line.
pub fn write_tagged(source: usize, tag: &str, bytes: &[u8]) {
    let base = CONSOLE_BASE.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    let base = PhysAddr::new(base);
    let _guard = CONSOLE_LOCK.lock();
    break_partial_line(base, source);
    for &byte in bytes {
        if PARTIAL_LINE.load(Ordering::Relaxed) != source {
            arch::uart_write(base, tag.as_bytes());
        }
        arch::uart_write(base, &[byte]);
        let owner = if byte == b'\n' { NO_SOURCE } else { source };
        PARTIAL_LINE.store(owner, Ordering::Relaxed);
    }
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

/// Console input escape: this byte (Ctrl-\\) followed by a digit `n` sends
/// further input to VM `n` (only when several VMs share the console).
pub const FOCUS_ESCAPE: u8 = 0x1c;
/// Bytes of input buffered per VM before more is dropped.
const INPUT_QUEUE_MAX: usize = 4096;

/// Where typed input goes.
#[derive(Debug, Default)]
pub struct InputRouter {
    focus: usize,
    escaped: bool,
    queues: Vec<VecDeque<u8>>,
}

/// What one typed byte did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Routed {
    /// Queued for this VM.
    To(usize),
    /// Switched the focus to this VM.
    Focus(usize),
    /// Consumed (first half of an escape) or dropped (queue full).
    Nothing,
}

impl InputRouter {
    /// Input for `vms` VMs, focused on the first.
    pub fn new(vms: usize) -> Self {
        Self {
            focus: 0,
            escaped: false,
            queues: (0..vms).map(|_| VecDeque::new()).collect(),
        }
    }

    fn queue(&mut self, vm: usize, byte: u8) -> Routed {
        match self.queues.get_mut(vm) {
            Some(q) if q.len() < INPUT_QUEUE_MAX => {
                q.push_back(byte);
                Routed::To(vm)
            }
            _ => Routed::Nothing,
        }
    }

    /// Routes one typed byte.
    pub fn feed(&mut self, byte: u8) -> Routed {
        if self.queues.len() < 2 {
            return self.queue(0, byte);
        }
        if self.escaped {
            self.escaped = false;
            if let Some(vm) = char::from(byte).to_digit(10).map(|d| d as usize) {
                if vm < self.queues.len() {
                    self.focus = vm;
                    return Routed::Focus(vm);
                }
            }
            // Not a focus switch: deliver both bytes.
            self.queue(self.focus, FOCUS_ESCAPE);
            return self.queue(self.focus, byte);
        }
        if byte == FOCUS_ESCAPE {
            self.escaped = true;
            return Routed::Nothing;
        }
        self.queue(self.focus, byte)
    }

    /// Takes the bytes queued for `vm`.
    pub fn take(&mut self, vm: usize) -> Option<u8> {
        self.queues.get_mut(vm)?.pop_front()
    }

    /// Whether bytes are queued for `vm`.
    pub fn has_input(&self, vm: usize) -> bool {
        self.queues.get(vm).is_some_and(|q| !q.is_empty())
    }
}

// A global because the one physical UART's input arrives on CPU 0 and is
// consumed by whichever CPU runs the focused VM. Lock order: a VM's lock,
// then this, then the console lock.
static INPUT: Mutex<Option<InputRouter>> = Mutex::new(None);

// The VMs with input queued in INPUT, one bit each (a VM past bit 63
// always takes the lock), so that the run loops, which ask on every exit,
// skip INPUT's lock when there is none. Changed only under INPUT's lock; a
// byte queued just after a run loop looked is picked up by the kick that
// follows it.
static INPUT_WAITING: AtomicU64 = AtomicU64::new(0);

/// Records whether `router` has input queued for `vm` (call under INPUT).
fn note_waiting(router: &InputRouter, vm: usize) {
    if vm >= 64 {
        return;
    }
    if router.has_input(vm) {
        INPUT_WAITING.fetch_or(1 << vm, Ordering::Release);
    } else {
        INPUT_WAITING.fetch_and(!(1 << vm), Ordering::Release);
    }
}

/// Sets up input routing for `vms` VMs.
pub fn init_input(vms: usize) {
    *INPUT.lock() = Some(InputRouter::new(vms));
}

/// Routes a byte typed on the console.
pub fn feed_input(byte: u8) -> Routed {
    let routed = INPUT.lock().as_mut().map_or(Routed::Nothing, |r| {
        let routed = r.feed(byte);
        if let Routed::To(vm) = routed {
            note_waiting(r, vm);
        }
        routed
    });
    if let Routed::Focus(vm) = routed {
        print(format_args!("hypervisor: console input to VM {vm}\n"));
    }
    routed
}

/// Whether input waits for VM `vm`, without taking the input lock.
pub fn input_waiting(vm: usize) -> bool {
    vm >= 64 || INPUT_WAITING.load(Ordering::Acquire) & (1 << vm) != 0
}

/// The next byte typed for VM `vm`.
pub fn take_input(vm: usize) -> Option<u8> {
    if !input_waiting(vm) {
        return None;
    }
    INPUT.lock().as_mut().and_then(|r| {
        let byte = r.take(vm);
        note_waiting(r, vm);
        byte
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_vm_gets_everything() {
        let mut r = InputRouter::new(1);
        assert_eq!(r.feed(FOCUS_ESCAPE), Routed::To(0));
        assert_eq!(r.feed(b'1'), Routed::To(0));
        assert_eq!(r.take(0), Some(FOCUS_ESCAPE));
    }

    #[test]
    fn escape_digit_switches_focus() {
        let mut r = InputRouter::new(2);
        assert_eq!(r.feed(b'a'), Routed::To(0));
        assert_eq!(r.feed(FOCUS_ESCAPE), Routed::Nothing);
        assert_eq!(r.feed(b'1'), Routed::Focus(1));
        assert_eq!(r.feed(b'b'), Routed::To(1));
        // An escape not followed by a VM number is passed through.
        r.feed(FOCUS_ESCAPE);
        assert_eq!(r.feed(b'x'), Routed::To(1));
        assert_eq!(r.take(1), Some(b'b'));
        assert_eq!(r.take(1), Some(FOCUS_ESCAPE));
        assert_eq!(r.take(1), Some(b'x'));
        assert_eq!(r.take(0), Some(b'a'));
        assert_eq!(r.take(0), None);
        r.feed(FOCUS_ESCAPE);
        assert_eq!(r.feed(b'7'), Routed::To(1), "no VM 7: both bytes delivered");
    }
}
