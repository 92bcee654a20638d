//! The console tee: sits between QEMU's pty and rexpect's reader, so every
//! byte reaches `console.log` the moment it arrives and every complete line
//! becomes a `ConsoleLine` event, whatever the steps are waiting for.
//!
//! With several VMs the hypervisor starts each VM's lines with `[<vm>] `;
//! [`Consoles`] routes such a line to that VM's console, tag removed, and
//! everything else to the machine's own console. When output of another
//! source interrupts a VM's unfinished line, the hypervisor ends that line
//! with [`LINE_BREAK_MARK`] and continues it on the VM's next tagged line;
//! the tee joins the pieces, so each VM's console holds the lines its guest
//! printed, however the VMs' output interleaved.
//!
//! [`ConsoleTexts`] also keeps [`EVERY_CONSOLE`]: every console's lines,
//! tags removed, in the order they arrived. The steps that name no console
//! read it, so a pattern matches within one line of one source and never
//! across a tag.

use super::events::{Emitter, EventKind};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

/// Longest line kept whole; a guest printing without newlines still
/// produces events.
pub(crate) const MAX_LINE: usize = 4096;

/// The byte (ASCII RS) the hypervisor puts before the line break it inserts
/// into a VM's unfinished line; terminals show nothing for it.
pub const LINE_BREAK_MARK: char = '\x1e';

/// The name under which [`ConsoleTexts`] keeps every console's lines in
/// arrival order (no VM can be named so: VM names are identifiers).
pub const EVERY_CONSOLE: &str = "*";

/// Which console a line belongs to.
#[derive(Debug, Clone)]
pub struct Consoles {
    machine: Arc<str>,
    /// `("[vm0] ", "vm0")` for each VM whose lines carry a tag.
    tagged: Vec<(String, Arc<str>)>,
}

impl Consoles {
    /// Every line on the machine's console `machine`, and the lines tagged
    /// `[<vm>] ` on the console of that VM.
    pub fn new(machine: &str, tagged_vms: &[String]) -> Self {
        Consoles {
            machine: machine.into(),
            tagged: tagged_vms
                .iter()
                .map(|vm| (format!("[{vm}] "), Arc::from(vm.as_str())))
                .collect(),
        }
    }

    /// Whether `console` is a VM's tagged console.
    fn is_tagged(&self, console: &str) -> bool {
        self.tagged.iter().any(|(_, c)| &**c == console)
    }

    /// The console of a line and the line without its tag.
    pub fn route(&self, line: String) -> (Arc<str>, String) {
        for (tag, console) in &self.tagged {
            if let Some(rest) = line.strip_prefix(tag.as_str()) {
                return (console.clone(), rest.to_owned());
            }
        }
        (self.machine.clone(), line)
    }
}

/// Each console's text so far, for steps that wait on one VM's console
/// with a cursor of their own: complete lines (each ending in `\n`) and
/// the line still being printed, tags removed; and the same for
/// [`EVERY_CONSOLE`], whose unfinished part is every console's unfinished
/// line (in practice one: the hypervisor prints whole lines).
#[derive(Debug, Clone, Default)]
pub struct ConsoleTexts(Arc<Mutex<Texts>>);

#[derive(Debug, Default)]
struct Texts {
    lines: BTreeMap<Arc<str>, String>,
    /// Each console's unfinished line.
    partial: BTreeMap<Arc<str>, String>,
}

impl ConsoleTexts {
    fn push_line(&self, console: &Arc<str>, line: &str) {
        if let Ok(mut texts) = self.0.lock() {
            for name in [console.clone(), Arc::from(EVERY_CONSOLE)] {
                let text = texts.lines.entry(name).or_default();
                text.push_str(line);
                text.push('\n');
            }
            texts.partial.remove(console);
            texts.partial.remove(EVERY_CONSOLE);
        }
    }

    fn set_partials(&self, mut partial: BTreeMap<Arc<str>, String>) {
        let every: String = partial.values().map(String::as_str).collect();
        if !every.is_empty() {
            partial.insert(Arc::from(EVERY_CONSOLE), every);
        }
        if let Ok(mut texts) = self.0.lock() {
            texts.partial = partial;
        }
    }

    /// Where the text of `console` ends so far, the unfinished line
    /// included: an offset for [`text_from`](Self::text_from).
    pub fn end(&self, console: &str) -> usize {
        let Ok(texts) = self.0.lock() else {
            return 0;
        };
        let lines = texts.lines.get(console).map_or(0, String::len);
        let partial = texts.partial.get(console).map_or(0, String::len);
        lines + partial
    }

    /// The text of `console` from byte `from` on, the unfinished line
    /// included. Offsets stay valid: an unfinished line is later committed
    /// with the same text plus `\n`.
    pub fn text_from(&self, console: &str, from: usize) -> String {
        let Ok(texts) = self.0.lock() else {
            return String::new();
        };
        let mut text = texts
            .lines
            .get(console)
            .and_then(|t| t.get(from..))
            .unwrap_or_default()
            .to_owned();
        if let Some(partial) = texts.partial.get(console) {
            text.push_str(partial);
        }
        text
    }
}

/// Reads from `inner`, copies to the log, emits lines. Its end (EOF, or the
/// EIO a pty master returns once QEMU has gone) reads as EOF, after the last
/// partial line is emitted and `closed` is signalled.
pub struct ConsoleTee<R> {
    inner: R,
    log: File,
    consoles: Consoles,
    texts: ConsoleTexts,
    emitter: Emitter,
    /// The physical line being received.
    line: Vec<u8>,
    /// Per VM console, the start of a line the hypervisor broke.
    broken: BTreeMap<Arc<str>, String>,
    closed: Option<Sender<()>>,
}

impl<R> ConsoleTee<R> {
    pub fn new(
        inner: R,
        log: File,
        consoles: Consoles,
        texts: ConsoleTexts,
        emitter: Emitter,
        closed: Sender<()>,
    ) -> Self {
        ConsoleTee {
            inner,
            log,
            consoles,
            texts,
            emitter,
            line: Vec::new(),
            broken: BTreeMap::new(),
            closed: Some(closed),
        }
    }

    fn take_in(&mut self, bytes: &[u8]) {
        // The log is best effort: a full disk must not hang the run.
        let _ = self.log.write_all(bytes);
        for &byte in bytes {
            if byte == b'\n' {
                self.emit_line();
            } else {
                self.line.push(byte);
                if self.line.len() >= MAX_LINE {
                    self.emit_line();
                }
            }
        }
        let mut partials = self.broken.clone();
        if !self.line.is_empty() {
            let (console, mut text) = self.consoles.route(self.current_line());
            // A mark not yet followed by its line break is not text.
            if self.consoles.is_tagged(&console) && text.ends_with(LINE_BREAK_MARK) {
                text.pop();
            }
            partials.entry(console).or_default().push_str(&text);
        }
        self.texts.set_partials(partials);
    }

    /// The bytes of the unfinished line as text, without trailing `\r`s
    /// (guests end lines with `\r\n`, and the pty turns `\n` into `\r\n`).
    fn current_line(&self) -> String {
        let text = String::from_utf8_lossy(&self.line);
        text.trim_end_matches('\r').to_owned()
    }

    /// Ends the physical line: a VM's line the hypervisor broke waits for
    /// its continuation, any other completes its console's line.
    fn emit_line(&mut self) {
        let (console, mut text) = self.consoles.route(self.current_line());
        self.line.clear();
        if self.consoles.is_tagged(&console) && text.ends_with(LINE_BREAK_MARK) {
            text.pop();
            let start = self.broken.entry(console.clone()).or_default();
            start.push_str(&text);
            // A guest can print the mark itself: a line held this long is
            // committed as it is, like any over-long line.
            if start.len() >= MAX_LINE {
                let line = self.broken.remove(&console).unwrap_or_default();
                self.commit(console, line);
            }
            return;
        }
        let line = match self.broken.remove(&console) {
            // A `\r` the guest sent just before the break ends its line.
            Some(start) => (start + &text).trim_end_matches('\r').to_owned(),
            None => text,
        };
        self.commit(console, line);
    }

    fn commit(&mut self, console: Arc<str>, line: String) {
        self.texts.push_line(&console, &line);
        self.emitter.emit(EventKind::ConsoleLine { console, line });
    }

    fn close(&mut self) {
        if self.closed.is_none() {
            return;
        }
        if !self.line.is_empty() {
            self.emit_line();
        }
        for (console, line) in std::mem::take(&mut self.broken) {
            self.commit(console, line);
        }
        let _ = self.log.flush();
        self.closed = None;
    }
}

impl<R: Read> Read for ConsoleTee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.closed.is_none() {
            return Ok(0);
        }
        loop {
            match self.inner.read(buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.take_in(&buf[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EIO: the pty's other side is closed, QEMU is gone.
                Err(_) => break,
            }
        }
        self.close();
        Ok(0)
    }
}

impl<R> Drop for ConsoleTee<R> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::events::Event;
    use std::sync::mpsc;

    #[test]
    fn logs_bytes_and_emits_lines_then_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let (tx, rx) = mpsc::channel::<Event>();
        let (closed_tx, closed_rx) = mpsc::channel();
        let input: &[u8] = b"one\r\ntwo\npartial";
        let mut tee = ConsoleTee::new(
            input,
            File::create(&path).unwrap(),
            Consoles::new("vm0", &[]),
            ConsoleTexts::default(),
            Emitter::new(tx, "s"),
            closed_tx,
        );
        let mut out = Vec::new();
        tee.read_to_end(&mut out).unwrap();
        assert_eq!(out, input);
        assert!(closed_rx.try_recv().is_err(), "sender dropped, not sent");
        assert!(matches!(
            closed_rx.try_recv(),
            Err(mpsc::TryRecvError::Disconnected)
        ));
        drop(tee);
        let lines: Vec<String> = rx
            .try_iter()
            .map(|e| match e.kind {
                EventKind::ConsoleLine { console, line } => format!("{console}: {line}"),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(lines, ["vm0: one", "vm0: two", "vm0: partial"]);
        assert_eq!(std::fs::read(&path).unwrap(), input);
    }

    /// A tee over a serial console shared by two tagged VMs, fed by
    /// `take_in`; its texts and its events.
    fn two_vm_tee() -> (
        tempfile::TempDir,
        ConsoleTee<&'static [u8]>,
        ConsoleTexts,
        mpsc::Receiver<Event>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel::<Event>();
        let (closed_tx, _closed_rx) = mpsc::channel();
        let texts = ConsoleTexts::default();
        let tee = ConsoleTee::new(
            &b""[..],
            File::create(dir.path().join("log")).unwrap(),
            Consoles::new("serial", &["vm0".into(), "vm1".into()]),
            texts.clone(),
            Emitter::new(tx, "s"),
            closed_tx,
        );
        (dir, tee, texts, rx)
    }

    #[test]
    fn texts_keep_each_console_with_its_unfinished_line() {
        let (_dir, mut tee, texts, _rx) = two_vm_tee();
        tee.take_in(b"hypervisor: up\r\n[vm1] ready\r\n[vm0] vm0:/# ");
        assert_eq!(texts.text_from("serial", 0), "hypervisor: up\n");
        assert_eq!(texts.text_from("vm1", 0), "ready\n");
        assert_eq!(texts.text_from("vm0", 0), "vm0:/# ");
        assert_eq!(texts.end("vm0"), 7);
        assert_eq!(texts.end("vm1"), 6);
        assert_eq!(texts.end("nobody"), 0);
        assert_eq!(texts.text_from("vm1", 2), "ady\n");
        // The unfinished line is committed at the same offsets.
        tee.take_in(b"ls\r\n");
        assert_eq!(texts.text_from("vm0", 0), "vm0:/# ls\n");
        assert_eq!(texts.text_from("vm0", 7), "ls\n");
        assert_eq!(texts.text_from("nobody", 0), "");
    }

    #[test]
    fn every_console_holds_all_lines_untagged_in_arrival_order() {
        let (_dir, mut tee, texts, _rx) = two_vm_tee();
        tee.take_in(b"[vm1] ready\r\nhypervisor: up\r\n[vm0] vm0:/# ");
        let every = "ready\nhypervisor: up\nvm0:/# ";
        assert_eq!(texts.text_from(EVERY_CONSOLE, 0), every);
        assert_eq!(texts.end(EVERY_CONSOLE), every.len());
        // A tag is no text: no pattern can match across it.
        assert!(!texts.text_from(EVERY_CONSOLE, 0).contains("[vm"));
        tee.take_in(b"ls\r\n[vm1] [vm0] spoof\r\n");
        assert_eq!(
            texts.text_from(EVERY_CONSOLE, every.len()),
            "ls\n[vm0] spoof\n"
        );
        assert_eq!(texts.text_from("vm0", 0), "vm0:/# ls\n");
    }

    #[test]
    fn lines_the_hypervisor_broke_are_joined_per_vm() {
        let (_dir, mut tee, texts, rx) = two_vm_tee();
        tee.take_in(b"[vm0] TESTGUEST ua\x1e\r");
        assert_eq!(
            texts.text_from("vm0", 0),
            "TESTGUEST ua",
            "the mark is not text"
        );
        tee.take_in(b"\r\n[vm1] TESTGUEST uart: PASS\r\r\nhypervisor: note\r\n[vm0] rt: ");
        assert_eq!(texts.text_from("vm0", 0), "TESTGUEST uart: ");
        assert_eq!(texts.text_from("vm1", 0), "TESTGUEST uart: PASS\n");
        tee.take_in(b"PASS\r\x1e\r\r\n[vm0] \r\n[vm1] vm1:/# \x1e\r\n[vm0] done\r\n");
        assert_eq!(texts.text_from("vm0", 0), "TESTGUEST uart: PASS\ndone\n");
        assert_eq!(texts.text_from("vm1", 0), "TESTGUEST uart: PASS\nvm1:/# ");
        tee.close();
        let lines: Vec<String> = rx
            .try_iter()
            .filter_map(|e| match e.kind {
                EventKind::ConsoleLine { console, line } => Some(format!("{console}: {line}")),
                _ => None,
            })
            .collect();
        assert_eq!(
            lines,
            [
                "vm1: TESTGUEST uart: PASS",
                "serial: hypervisor: note",
                "vm0: TESTGUEST uart: PASS",
                "vm0: done",
                "vm1: vm1:/# ",
            ]
        );
    }

    /// A guest printing the break mark itself, line after line: what the
    /// tee holds for the line it thinks is broken stays bounded, and the
    /// text still arrives as lines.
    #[test]
    fn a_guest_printing_break_marks_cannot_grow_the_tee() {
        let (_dir, mut tee, texts, rx) = two_vm_tee();
        for _ in 0..10_000 {
            tee.take_in(b"[vm0] 0123456789abcdef\x1e\r\n");
            assert!(tee.broken.values().all(|s| s.len() <= MAX_LINE));
        }
        let lines: Vec<usize> = rx
            .try_iter()
            .filter_map(|e| match e.kind {
                EventKind::ConsoleLine { line, .. } => Some(line.len()),
                _ => None,
            })
            .collect();
        assert_eq!(lines.len(), 10_000 * 16 / MAX_LINE);
        assert!(lines.iter().all(|len| *len == MAX_LINE));
        assert!(texts
            .text_from("vm0", 0)
            .starts_with("0123456789abcdef0123"));
    }

    #[test]
    fn tagged_lines_go_to_their_vm() {
        let consoles = Consoles::new("serial", &["vm0".into(), "vm1".into()]);
        let route = |line: &str| {
            let (console, text) = consoles.route(line.into());
            format!("{console}: {text}")
        };
        assert_eq!(route("[vm1] LAB-READY vm1"), "vm1: LAB-READY vm1");
        assert_eq!(route("[vm0] # "), "vm0: # ");
        assert_eq!(route("hypervisor: 2 VMs"), "serial: hypervisor: 2 VMs");
        assert_eq!(route("[vm2] not ours"), "serial: [vm2] not ours");
        assert_eq!(route("[vm0]no space"), "serial: [vm0]no space");
    }
}
