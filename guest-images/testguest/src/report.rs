//! The sentinel lines the lab matches: one `TESTGUEST <check>: PASS|FAIL
//! <detail>` line per check, the guest's counter as `LAB-CLOCK <ticks>
//! <frequency>` (what `lab bench boot --icount` reads, as from Linux's
//! `/bin/lab-clock`) and a closing `TESTGUEST DONE passed=<n> failed=<m>`.
//! Only this module knows the format.

use core::fmt::{self, Write};

/// Counts results and writes their sentinel lines to `out`.
pub struct Report<W: Write> {
    out: W,
    passed: u32,
    failed: u32,
}

impl<W: Write> Report<W> {
    pub fn new(out: W) -> Self {
        Report {
            out,
            passed: 0,
            failed: 0,
        }
    }

    pub fn pass(&mut self, check: &str, detail: fmt::Arguments<'_>) {
        self.passed += 1;
        self.line(check, "PASS", detail);
    }

    pub fn fail(&mut self, check: &str, detail: fmt::Arguments<'_>) {
        self.failed += 1;
        self.line(check, "FAIL", detail);
    }

    /// Writes the guest's virtual counter and its frequency (CNTVCT_EL0,
    /// CNTFRQ_EL0), just before the closing line.
    pub fn clock(&mut self, ticks: u64, frequency: u64) {
        let _ = writeln!(self.out, "LAB-CLOCK {ticks} {frequency}");
    }

    /// Writes the closing line; returns whether every check passed.
    pub fn done(&mut self) -> bool {
        // A console that refuses bytes cannot report that either.
        let _ = writeln!(
            self.out,
            "TESTGUEST DONE passed={} failed={}",
            self.passed, self.failed
        );
        self.failed == 0
    }

    fn line(&mut self, check: &str, verdict: &str, detail: fmt::Arguments<'_>) {
        let _ = writeln!(self.out, "TESTGUEST {check}: {verdict} {detail}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_tally() {
        let mut report = Report::new(String::new());
        report.pass("uart", format_args!("pl011 at {:#x}", 0x900_0000));
        report.fail("pl031", format_args!("date {} is before 2020", 1970));
        report.pass("dtb", format_args!("ok"));
        report.clock(123_456, 62_500_000);
        assert!(!report.done());
        assert_eq!(
            report.out,
            "TESTGUEST uart: PASS pl011 at 0x9000000\n\
             TESTGUEST pl031: FAIL date 1970 is before 2020\n\
             TESTGUEST dtb: PASS ok\n\
             LAB-CLOCK 123456 62500000\n\
             TESTGUEST DONE passed=2 failed=1\n"
        );
    }

    #[test]
    fn all_passed() {
        let mut report = Report::new(String::new());
        report.pass("uart", format_args!("x"));
        assert!(report.done());
    }
}
