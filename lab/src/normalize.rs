//! The transcript normaliser: turns raw console output into text that is
//! the same on every run and every machine, so transcripts can be compared
//! with snapshots. It is a fixed list of named rules (as libreswan's
//! sanitizers), each a regex and its replacement, applied in order to every
//! line after the line itself is cut out of the byte stream (CR/LF) and
//! cleared of terminal escapes. Every snapshot of a transcript comes from
//! here; nothing is scrubbed afterwards.
//!
//! What is deliberately kept: device and RAM addresses up to 32 bits
//! (`0x9000000`, `0x40000000`) are the topology a scenario checks, and the
//! kernel release (`6.1.0-50-cloud-arm64`) changes only with
//! `guest-images/images.lock`, which a snapshot review should see.

use regex::Regex;
use std::sync::OnceLock;

/// One named rewrite.
#[derive(Debug)]
pub struct Rule {
    pub name: &'static str,
    /// What the rule is for, one line (shown by tests and docs).
    pub about: &'static str,
    regex: Regex,
    replacement: &'static str,
}

impl Rule {
    fn new(
        name: &'static str,
        about: &'static str,
        pattern: &str,
        replacement: &'static str,
    ) -> Rule {
        Rule {
            name,
            about,
            regex: Regex::new(pattern).unwrap_or_else(|e| panic!("rule {name}: {e}")),
            replacement,
        }
    }

    /// The rule applied to one line.
    pub fn apply(&self, line: &str) -> String {
        self.regex.replace_all(line, self.replacement).into_owned()
    }
}

/// The ordered rule list.
#[derive(Debug)]
pub struct Normalizer {
    rules: Vec<Rule>,
}

/// Terminal escape sequences: CSI (`ESC [ ... letter`, e.g. busybox ash's
/// `ESC[6n` cursor query after each prompt), OSC (`ESC ] ... BEL/ST`) and
/// two-byte escapes (`ESC (B`, `ESC =`).
const TERMINAL_ESCAPES: &str = r"\x1b\[[0-9;?<=>!]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78cDEHMNOZ]";

impl Normalizer {
    /// The lab's rules, in the order they apply. Order matters: escapes
    /// first, the guest clock line before any rule could take a piece of a
    /// number, the kernel build string before dates, host placement before
    /// addresses, MACs before times of day, hex runs before durations.
    pub fn standard() -> &'static Normalizer {
        static STANDARD: OnceLock<Normalizer> = OnceLock::new();
        STANDARD.get_or_init(|| Normalizer {
            rules: vec![
                Rule::new(
                    "terminal-escapes",
                    "ANSI/VT100 escape sequences and other control characters",
                    &format!(r"{TERMINAL_ESCAPES}|[\x00-\x08\x0b-\x1f\x7f]"),
                    "",
                ),
                Rule::new(
                    "guest-clock",
                    "the guest counter line `LAB-CLOCK <ticks> <frequency>` (/bin/lab-clock): ticks since reset differ every run",
                    r"\bLAB-CLOCK \d+ \d+\b",
                    "LAB-CLOCK <ticks> <frequency>",
                ),
                Rule::new(
                    "exit-figure",
                    "a figure of the test guest's exit bench `ops=<n> ticks=<t> hz=<f>` (testguest.exits): the ticks differ every run",
                    r"\bops=\d+ ticks=\d+ hz=\d+\b",
                    "ops=<n> ticks=<ticks> hz=<frequency>",
                ),
                Rule::new(
                    "guest-time",
                    "a timed command's line `LAB-TIME <name> <ticks> <frequency>` (/bin/lab-time): its duration differs every run",
                    r"\bLAB-TIME (\S+) \d+ \d+\b",
                    "LAB-TIME ${1} <ticks> <frequency>",
                ),
                Rule::new(
                    "exit-counts",
                    "the hypervisor's exit statistics of a VM that stopped (`exits 27031: uart 15000, gic 2400, ...`): they differ every run",
                    r"\bexits \d+:( [a-z]+ \d+,?)+",
                    "exits <counts>",
                ),
                Rule::new(
                    "device-counts",
                    "what a VM's network device counted, printed when the VM stops (`device 0xa000000: net: 0 malformed sent, ...`): traffic differs every run",
                    r"^(hypervisor: \S+: device 0x[0-9a-f]+: net: ).*$",
                    "${1}<counts>",
                ),
                Rule::new(
                    "autoboot-countdown",
                    "U-Boot's `Hit any key to stop autoboot:  2  0`: the digits left depend on when the key arrived",
                    r"(Hit any key to stop autoboot:)( +\d+)+",
                    "${1} <countdown>",
                ),
                Rule::new(
                    "ping-times",
                    "busybox ping's summary `round-trip min/avg/max = 0.5/1.2/2.0 ms` and per-reply `time=1.234 ms`",
                    r"(round-trip min/avg/max = )[0-9./]+ ms|\b(time=)[0-9.]+ ms",
                    "${1}${2}<times> ms",
                ),
                Rule::new(
                    "kernel-timestamp",
                    "printk stamps `[    0.123456]`",
                    r"\[\s*\d+\.\d{6}\]",
                    "[<time>]",
                ),
                Rule::new(
                    "kernel-build",
                    "`#1 SMP Debian 6.1.176-1 (2026-07-02)`: the build number, flags, package version and date",
                    r"#\d+ SMP( PREEMPT(_\w+)?)?( Debian [^ ()]+)? \(\d{4}-\d{2}-\d{2}\)",
                    "#<build>",
                ),
                Rule::new(
                    "mac",
                    "Ethernet MAC addresses",
                    r"\b[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\b",
                    "<mac>",
                ),
                Rule::new(
                    "datetime",
                    "wall-clock dates and times (RTC, `date`, ISO 8601)",
                    r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}:\d{2}(\.\d+)?( ?(UTC|Z))?)?|\b\d{2}:\d{2}:\d{2}\b",
                    "<datetime>",
                ),
                Rule::new(
                    "code-address",
                    "program counters and link registers (`pc 0x40083018`): they move with every rebuild of the code",
                    r"\b(pc|PC|lr|LR|elr|ELR|ELR_EL[123])([ =:]+)0x[0-9a-fA-F]+\b",
                    "${1}${2}<code>",
                ),
                Rule::new(
                    "host-placement",
                    "where the hypervisor put a VM's RAM in host memory (`host 0x49e00000`): it moves whenever the boot bundle changes size",
                    r"\(host 0x[0-9a-fA-F]+\)",
                    "(host <placement>)",
                ),
                Rule::new(
                    "address",
                    "64-bit values in hex (`0x` and more than 8 digits): pointers, KASLR, counters",
                    r"\b0x[0-9a-fA-F]{9,}\b",
                    "0x<addr>",
                ),
                Rule::new(
                    "hex-run",
                    "bare hex runs of 12 digits or more: hashes, key ids, pointers without 0x",
                    r"\b[0-9a-fA-F]{12,}\b",
                    "<hex>",
                ),
                Rule::new(
                    "duration",
                    "a number with a time unit: `10445 us`, `1.5 s`, `3ms`",
                    r"\b\d+(\.\d+)? ?(ns|us|µs|ms|s|sec|secs|seconds)\b",
                    "<duration>",
                ),
                Rule::new(
                    "pid",
                    "process ids: `pid 1234`, `pid=1234`",
                    r"\b(pid|PID)([ =:]| is )\d+",
                    "${1}${2}<pid>",
                ),
                Rule::new(
                    "syslog-pid",
                    "the process id of a syslog-style tag: `udhcpc[123]:`",
                    r"\b([A-Za-z_][\w.-]*)\[\d+\]:",
                    "${1}[<pid>]:",
                ),
                Rule::new(
                    "trailing-space",
                    "spaces at the end of a line",
                    r"[ \t]+$",
                    "",
                ),
            ],
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule called `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.name == name)
    }

    /// One line, without its line ending, through every rule.
    pub fn line(&self, raw: &str) -> String {
        self.rules
            .iter()
            .fold(raw.to_owned(), |line, rule| rule.apply(&line))
    }

    /// A raw console byte stream: split into lines at LF (a lone CR, as in
    /// QEMU's `\r\r\n`, ends nothing), each line normalised.
    pub fn transcript(&self, raw: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(raw);
        let mut lines: Vec<String> = text.split('\n').map(|line| self.line(line)).collect();
        if lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real console lines (from `target/lab/runs/*/latest/console.log`)
    /// per rule, and what that rule alone makes of them.
    const RULE_CASES: &[(&str, &str, &str)] = &[
        (
            "terminal-escapes",
            "vm0:/root# \x1b[6nuname -a\r\r",
            "vm0:/root# uname -a",
        ),
        (
            "terminal-escapes",
            "\x1b[1;32mok\x1b[0m \x1b]0;title\x07done\x1b(B",
            "ok done",
        ),
        (
            "guest-clock",
            "LAB-CLOCK 123412341234 62500000",
            "LAB-CLOCK <ticks> <frequency>",
        ),
        (
            "guest-clock",
            "LAB-CLOCK 0 1000000000",
            "LAB-CLOCK <ticks> <frequency>",
        ),
        (
            "guest-time",
            "LAB-TIME tcp-send 3337749 62500000",
            "LAB-TIME tcp-send <ticks> <frequency>",
        ),
        (
            "exit-counts",
            "hypervisor: vm0: exits 27031: uart 15000, gic 2400, device 800, call 12, sysreg 3100, wfx 0, irq 5700, other 19",
            "hypervisor: vm0: exits <counts>",
        ),
        (
            "device-counts",
            "hypervisor: vm0: device 0xa000000: net: 0 malformed sent, 0 receive buffers refused, switch lan0: 12 frames in, 0 dropped for a full queue, 0 refused",
            "hypervisor: vm0: device 0xa000000: net: <counts>",
        ),
        (
            "autoboot-countdown",
            "Hit any key to stop autoboot:  2  1  0",
            "Hit any key to stop autoboot: <countdown>",
        ),
        (
            "ping-times",
            "round-trip min/avg/max = 0.512/1.204/2.000 ms",
            "round-trip min/avg/max = <times> ms",
        ),
        (
            "ping-times",
            "64 bytes from 10.0.0.2: seq=0 ttl=64 time=1.234 ms",
            "64 bytes from 10.0.0.2: seq=0 ttl=64 time=<times> ms",
        ),
        (
            "kernel-timestamp",
            "[    0.810466] rtc-pl031 9010000.pl031: registered as rtc0",
            "[<time>] rtc-pl031 9010000.pl031: registered as rtc0",
        ),
        (
            "kernel-timestamp",
            "[  123.000089] sched_clock: 57 bits at 63MHz",
            "[<time>] sched_clock: 57 bits at 63MHz",
        ),
        (
            "kernel-build",
            "Linux vm0 6.1.0-50-cloud-arm64 #1 SMP Debian 6.1.176-1 (2026-07-02) aarch64 GNU/Linux",
            "Linux vm0 6.1.0-50-cloud-arm64 #<build> aarch64 GNU/Linux",
        ),
        (
            "kernel-build",
            "Linux version 6.12.57+deb13-cloud-arm64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.12.57-1 (2025-11-05)",
            "Linux version 6.12.57+deb13-cloud-arm64 (debian-kernel@lists.debian.org) #<build>",
        ),
        (
            "datetime",
            "TESTGUEST pl031: PASS 2026-11-25 20:21:07 UTC, advanced 2 s in 1.5 s",
            "TESTGUEST pl031: PASS <datetime>, advanced 2 s in 1.5 s",
        ),
        (
            "datetime",
            "[    0.810466] rtc-pl031 9010000.pl031: setting system clock to 2026-11-25T20:30:45 UTC (1795638645)",
            "[    0.810466] rtc-pl031 9010000.pl031: setting system clock to <datetime> (1795638645)",
        ),
        (
            "mac",
            "[    2.1] virtio_net virtio0 eth0: MAC 52:54:00:12:34:56",
            "[    2.1] virtio_net virtio0 eth0: MAC <mac>",
        ),
        (
            "code-address",
            "hypervisor: vm0: vcpu 0: access to unmapped memory at IPA 0xc000000 (pc 0x40083018), injecting an external abort",
            "hypervisor: vm0: vcpu 0: access to unmapped memory at IPA 0xc000000 (pc <code>), injecting an external abort",
        ),
        (
            "code-address",
            "TESTGUEST FAIL unexpected exception ESR=0x96000010 ELR=0x40084aec",
            "TESTGUEST FAIL unexpected exception ESR=0x96000010 ELR=<code>",
        ),
        (
            "host-placement",
            "hypervisor: vm0: 1 vCPU on CPU 0, 64 MiB at IPA 0x40000000 (host 0x41200000), entry 0x40080000",
            "hypervisor: vm0: 1 vCPU on CPU 0, 64 MiB at IPA 0x40000000 (host <placement>), entry 0x40080000",
        ),
        (
            "address",
            "[    0.000000] GICv3: CPU0: found redistributor 0 region 0:0x00000000080a0000",
            "[    0.000000] GICv3: CPU0: found redistributor 0 region 0:0x<addr>",
        ),
        (
            "address",
            "hypervisor: gicv3 dist 0x8000000 redist 0x80a0000, pl011 0x9000000, psci smc",
            "hypervisor: gicv3 dist 0x8000000 redist 0x80a0000, pl011 0x9000000, psci smc",
        ),
        (
            "hex-run",
            "[    1.000903] Loaded X.509 cert 'Build time autogenerated kernel key: 3d77b24788c1bd749ce2d6adcc54f935a347602b'",
            "[    1.000903] Loaded X.509 cert 'Build time autogenerated kernel key: <hex>'",
        ),
        (
            "duration",
            "TESTGUEST vtimer: PASS PPI INTID 27 taken and EOI'd 10445 us after arming for 10 ms",
            "TESTGUEST vtimer: PASS PPI INTID 27 taken and EOI'd <duration> after arming for <duration>",
        ),
        (
            "duration",
            "TESTGUEST pl031: PASS 2026-11-25 20:21:07 UTC, advanced 2 s in 1.5 s",
            "TESTGUEST pl031: PASS 2026-11-25 20:21:07 UTC, advanced <duration> in <duration>",
        ),
        (
            "exit-figure",
            "TESTGUEST exits-hvc: PASS ops=1000 ticks=55438 hz=62500000",
            "TESTGUEST exits-hvc: PASS ops=<n> ticks=<ticks> hz=<frequency>",
        ),
        (
            "pid",
            "qemu-system-aarch64: terminating on signal 15 from pid 4242 (lab)",
            "qemu-system-aarch64: terminating on signal 15 from pid <pid> (lab)",
        ),
        (
            "syslog-pid",
            "udhcpc[87]: sending discover",
            "udhcpc[<pid>]: sending discover",
        ),
        ("trailing-space", "vm0:/root# ", "vm0:/root#"),
    ];

    #[test]
    fn each_rule_on_real_lines() {
        let normalizer = Normalizer::standard();
        for (name, raw, expected) in RULE_CASES {
            let rule = normalizer
                .rule(name)
                .unwrap_or_else(|| panic!("no rule {name}"));
            assert_eq!(&rule.apply(raw), expected, "rule {name} on {raw:?}");
        }
    }

    #[test]
    fn every_rule_has_a_case() {
        for rule in Normalizer::standard().rules() {
            assert!(
                RULE_CASES.iter().any(|(name, _, _)| *name == rule.name),
                "rule {} ({}) has no test case",
                rule.name,
                rule.about
            );
        }
    }

    #[test]
    fn stable_text_is_left_alone() {
        let normalizer = Normalizer::standard();
        for line in [
            "hypervisor 0.1.0: EL2, 2 CPUs, 512 MiB RAM at 0x40000000",
            "TESTGUEST uart: PASS pl011 at 0x9000000 PeriphID=0x00141011 PCellID=0xb105f00d EL1",
            "TESTGUEST DONE passed=9 failed=0",
            "LAB-READY vm0",
            "BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) built-in shell (ash)",
        ] {
            assert_eq!(normalizer.line(line), line);
        }
    }

    #[test]
    fn a_raw_transcript_end_to_end() {
        let raw = b"[    0.000000] Linux version 6.1.0-50-cloud-arm64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP Debian 6.1.176-1 (2026-07-02)\r\r\n\
LAB-READY vm0\r\r\n\r\r\n\
vm0:/root# \x1b[6nuname -a\r\r\n\
Linux vm0 6.1.0-50-cloud-arm64 #1 SMP Debian 6.1.176-1 (2026-07-02) aarch64 GNU/Linux\r\r\n\
vm0:/root# \x1b[6n";
        assert_eq!(
            Normalizer::standard().transcript(raw),
            [
                "[<time>] Linux version 6.1.0-50-cloud-arm64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #<build>",
                "LAB-READY vm0",
                "",
                "vm0:/root# uname -a",
                "Linux vm0 6.1.0-50-cloud-arm64 #<build> aarch64 GNU/Linux",
                "vm0:/root#",
            ]
        );
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        let normalizer = Normalizer::standard();
        for (_, raw, _) in RULE_CASES {
            let once = normalizer.line(raw);
            assert_eq!(normalizer.line(&once), once, "{raw:?}");
        }
    }
}
