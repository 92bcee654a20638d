//! Console lines a guest can cause, rate-limited per VM and kind.
//!
//! The console is one polled UART behind a spin lock, written with
//! interrupts masked: a guest that could print a line per exit (an abort
//! loop, an unknown HVC in a loop) would starve every other VM's console
//! and make each such exit cost a line of output. So each kind of report
//! prints its first [`FIRST_LINES`] occurrences in full, then one line
//! saying further ones are counted, then a summary each time the count
//! reaches a power of two: a guest can cause O(log n) lines for n exits.

use core::fmt;

use crate::println;

/// Occurrences of one kind printed in full, per VM.
pub const FIRST_LINES: u64 = 4;

/// The kinds of guest misbehaviour the hypervisor reports.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReportKind {
    /// An HVC or SMC function nobody implements.
    UnknownCall,
    /// A data abort the hypervisor answered with an external abort.
    DataAbort,
    /// An instruction fetch outside RAM.
    InstructionAbort,
    /// A trapped instruction or system register answered with UNDEFINED.
    Undefined,
}

impl ReportKind {
    const COUNT: usize = 4;

    fn index(self) -> usize {
        match self {
            ReportKind::UnknownCall => 0,
            ReportKind::DataAbort => 1,
            ReportKind::InstructionAbort => 2,
            ReportKind::Undefined => 3,
        }
    }

    fn plural(self) -> &'static str {
        match self {
            ReportKind::UnknownCall => "unknown HVC/SMC calls",
            ReportKind::DataAbort => "injected data aborts",
            ReportKind::InstructionAbort => "injected instruction aborts",
            ReportKind::Undefined => "injected UNDEFINED exceptions",
        }
    }
}

/// What to print for one occurrence.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verdict {
    /// The full line.
    Line,
    /// Only that this kind is counted from now on.
    Suppressing,
    /// A summary: this many so far.
    Summary(u64),
    /// Nothing.
    Quiet,
}

/// Per-VM counts of each kind. They survive a VM reset, so a reset loop
/// cannot earn new full lines.
#[derive(Clone, Debug, Default)]
pub struct GuestReports {
    counts: [u64; ReportKind::COUNT],
}

impl GuestReports {
    /// Counts one occurrence of `kind` and says what to print for it.
    pub fn count(&mut self, kind: ReportKind) -> Verdict {
        let Some(count) = self.counts.get_mut(kind.index()) else {
            return Verdict::Quiet;
        };
        *count = count.saturating_add(1);
        match *count {
            n if n <= FIRST_LINES => Verdict::Line,
            n if n == FIRST_LINES + 1 => Verdict::Suppressing,
            n if n.is_power_of_two() => Verdict::Summary(n),
            _ => Verdict::Quiet,
        }
    }

    /// Occurrences of `kind` so far.
    pub fn total(&self, kind: ReportKind) -> u64 {
        self.counts.get(kind.index()).copied().unwrap_or(0)
    }

    /// Counts one occurrence of `kind` on VM `vm` and prints what it calls
    /// for: `line` in full, or a short note.
    pub fn report(&mut self, vm: &str, kind: ReportKind, line: fmt::Arguments<'_>) {
        match self.count(kind) {
            Verdict::Line => println!("hypervisor: {vm}: {line}"),
            Verdict::Suppressing => println!(
                "hypervisor: {vm}: more {}, counted without a line each",
                kind.plural()
            ),
            Verdict::Summary(n) => println!("hypervisor: {vm}: {n} {} so far", kind.plural()),
            Verdict::Quiet => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_lines_then_a_note_then_powers_of_two() {
        let mut r = GuestReports::default();
        let verdicts: Vec<_> = (0..17).map(|_| r.count(ReportKind::UnknownCall)).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Line,
                Verdict::Line,
                Verdict::Line,
                Verdict::Line,
                Verdict::Suppressing,
                Verdict::Quiet,
                Verdict::Quiet,
                Verdict::Summary(8),
                Verdict::Quiet,
                Verdict::Quiet,
                Verdict::Quiet,
                Verdict::Quiet,
                Verdict::Quiet,
                Verdict::Quiet,
                Verdict::Quiet,
                Verdict::Summary(16),
                Verdict::Quiet,
            ]
        );
        // Kinds are counted apart.
        assert_eq!(r.count(ReportKind::DataAbort), Verdict::Line);
        assert_eq!(r.total(ReportKind::UnknownCall), 17);
        assert_eq!(r.total(ReportKind::DataAbort), 1);
    }

    #[test]
    fn a_million_occurrences_print_a_few_dozen_lines() {
        let mut r = GuestReports::default();
        let printed = (0..1_000_000)
            .filter(|_| r.count(ReportKind::Undefined) != Verdict::Quiet)
            .count();
        // 4 lines, the note, summaries at 8, 16, ..., 2^19.
        assert_eq!(printed, 4 + 1 + 17);
    }
}
