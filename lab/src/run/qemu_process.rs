//! One QEMU process under rexpect: spawned on its own pty and in its own
//! session (so its process group is its pid and no terminal signal reaches
//! it), read through the console tee, killed as a whole group, and always
//! reaped — also when the run ends early and this value is dropped.

use super::console::{ConsoleTee, ConsoleTexts, Consoles, EVERY_CONSOLE};
use super::events::{Emitter, QemuStatus};
use super::typing;
use super::Cancel;
use crate::qemu::QemuCommand;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use regex::Regex;
use rexpect::error::Error as ExpectError;
use rexpect::process::PtyProcess;
use rexpect::session::{Options, StreamSession};
use rexpect::ReadUntil;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// How long one rexpect wait lasts before the lab checks its own deadline
/// and the cancel flag again.
const POLL: Duration = Duration::from_millis(100);

/// How long a paced line waits for the echo of a piece before it takes
/// the console for one that does not echo.
const ECHO_WAIT: Duration = Duration::from_secs(5);

/// How often a paced line looks for its echo (the console reader files
/// output as it arrives, in its own thread).
const ECHO_POLL: Duration = Duration::from_millis(1);

/// How long QEMU gets to exit after SIGTERM before it is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// How long QEMU gets to close its console after it has been killed.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why a wait on the console ended without its match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitEnd {
    Timeout,
    /// The console closed: QEMU has exited.
    Closed,
    Interrupted,
    /// A `fail-on` pattern matched first; the text it matched.
    FailPattern(String),
}

pub struct QemuProcess {
    process: PtyProcess,
    session: StreamSession<File>,
    /// QEMU's process group; `None` if it exited before the lab read it.
    group: Option<Pid>,
    status: Option<QemuStatus>,
    console_closed: Receiver<()>,
    /// Per-console text, for steps that wait on one VM's console.
    texts: ConsoleTexts,
    /// How far each console's steps have matched.
    cursors: HashMap<String, usize>,
    /// How far `fail-on` patterns found nothing in [`EVERY_CONSOLE`]
    /// while steps waited on one VM's console.
    fail_scanned: usize,
}

impl QemuProcess {
    /// Starts QEMU in `dir`; the console goes to `log` and to `emitter` as
    /// lines of the `consoles`.
    pub fn spawn(
        command: &QemuCommand,
        dir: &Path,
        log: File,
        consoles: Consoles,
        emitter: Emitter,
    ) -> Result<QemuProcess> {
        // rexpect forks and then execs; a failed exec would leave the forked
        // child running the lab, so check what exec and chdir need first.
        let executable = std::fs::metadata(&command.program)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !executable {
            bail!(
                "QEMU binary {} is not an executable file",
                command.program.display()
            );
        }
        if !dir.is_dir() {
            bail!("run directory {} does not exist", dir.display());
        }
        let mut cmd = Command::new(&command.program);
        cmd.args(command.argv()).current_dir(dir);
        let process = PtyProcess::new(cmd).context("starting QEMU on a pty")?;
        let pty = process.get_file_handle().context("opening QEMU's pty")?;
        let (group, status) = session_group(&process, &pty)?;
        let (closed_tx, console_closed) = mpsc::channel();
        let texts = ConsoleTexts::default();
        let reader = ConsoleTee::new(
            pty.try_clone().context("opening QEMU's pty")?,
            log,
            consoles,
            texts.clone(),
            emitter,
            closed_tx,
        );
        let options = Options::new().timeout_ms(Some(POLL.as_millis() as u64));
        let session = StreamSession::new(reader, pty, options);
        Ok(QemuProcess {
            process,
            session,
            group,
            status,
            console_closed,
            texts,
            cursors: HashMap::new(),
            fail_scanned: 0,
        })
    }

    /// Whether QEMU has exited (and is reaped).
    pub fn has_exited(&mut self) -> bool {
        self.reap_within(Duration::ZERO).is_some()
    }

    /// QEMU's process id (= its process group), unless it is long gone.
    pub fn pid(&self) -> Option<Pid> {
        self.group
    }

    /// Waits until `regex` matches console output not consumed by an
    /// earlier match, unless one of `fail_on` matches earlier output;
    /// returns the text it matched.
    pub fn expect(
        &mut self,
        regex: &Regex,
        fail_on: &[Regex],
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<String, WaitEnd> {
        self.wait_for(Some((regex, fail_on)), timeout, cancel)
            .map(Option::unwrap_or_default)
    }

    /// Like [`expect`](Self::expect), on one console's text (tags removed)
    /// with that console's own cursor, so VMs' steps do not consume each
    /// other's output; returns the text it matched. `fail_on` applies to
    /// every console: a VM's panic fails a step waiting on another VM.
    pub fn expect_on(
        &mut self,
        console: &str,
        regex: &Regex,
        fail_on: &[Regex],
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<String, WaitEnd> {
        let deadline = Instant::now() + timeout;
        let mut closed = false;
        loop {
            if console != EVERY_CONSOLE {
                if let Some(matched) = self.fail_elsewhere(fail_on) {
                    return Err(WaitEnd::FailPattern(matched));
                }
            }
            let from = self.cursors.get(console).copied().unwrap_or(0);
            let text = self.texts.text_from(console, from);
            match first_match(&text, regex, fail_on) {
                Some(Found::Step(start, end)) => {
                    self.cursors.insert(console.to_owned(), from + end);
                    return Ok(text[start..end].to_owned());
                }
                Some(Found::Fail(matched)) => return Err(WaitEnd::FailPattern(matched)),
                None if closed => return Err(WaitEnd::Closed),
                None => {}
            }
            if cancel.is_cancelled() {
                return Err(WaitEnd::Interrupted);
            }
            if Instant::now() >= deadline {
                return Err(WaitEnd::Timeout);
            }
            // Wait one poll for more output; at EOF the tee has already
            // filed the last line, so one more search settles it.
            match self.session.exp_eof() {
                Err(ExpectError::Timeout { .. }) => {}
                _ => closed = true,
            }
        }
    }

    /// The first `fail_on` match in every console's complete lines not
    /// searched before.
    fn fail_elsewhere(&mut self, fail_on: &[Regex]) -> Option<String> {
        let text = self.texts.text_from(EVERY_CONSOLE, self.fail_scanned);
        let complete = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        if let Some(found) = fail_on
            .iter()
            .filter_map(|f| f.find(complete))
            .min_by_key(|m| m.start())
        {
            return Some(found.as_str().to_owned());
        }
        self.fail_scanned += complete.len();
        None
    }

    /// Sends bytes as they are (no newline).
    pub fn send_raw(&mut self, bytes: &str) -> Result<(), String> {
        self.session
            .send(bytes)
            .and_then(|_| self.session.flush())
            .map_err(|e| e.to_string())
    }

    /// Waits until QEMU exits, and returns how.
    pub fn wait_exit(&mut self, timeout: Duration, cancel: &Cancel) -> Result<QemuStatus, WaitEnd> {
        let deadline = Instant::now() + timeout;
        match self.wait_for(None, timeout, cancel) {
            Ok(_) | Err(WaitEnd::Closed) => {}
            Err(end) => return Err(end),
        }
        let grace = deadline
            .saturating_duration_since(Instant::now())
            .max(CLOSE_GRACE);
        self.reap_within(grace).ok_or(WaitEnd::Timeout)
    }

    /// Sends one line (the lab appends `\n`).
    pub fn send_line(&mut self, line: &str) -> Result<(), String> {
        self.session
            .send_line(line)
            .and_then(|_| self.session.flush())
            .map_err(|e| e.to_string())
    }

    /// Types `line` and a newline in pieces ([`typing`]), each once
    /// `console` has echoed the one before; returns once it echoed the
    /// last, so a next line starts with QEMU's buffers empty too. A
    /// console that shows no echo of a piece within [`ECHO_WAIT`] (a guest
    /// that does not echo) gets the rest of the line at once.
    pub fn send_line_paced(
        &mut self,
        line: &str,
        console: &str,
        cancel: &Cancel,
    ) -> Result<(), String> {
        let pieces = typing::pieces(line);
        for (i, piece) in pieces.iter().enumerate() {
            let from = self.texts.end(console);
            self.send_raw(piece)?;
            if !self.wait_echo(console, from, piece, cancel) {
                return self.send_raw(&pieces[i + 1..].concat());
            }
        }
        Ok(())
    }

    /// Waits until the text of `console` from `from` on shows the echo of
    /// `typed`; false if it does not within [`ECHO_WAIT`], or the run is
    /// cancelled, or the console closed.
    fn wait_echo(&self, console: &str, from: usize, typed: &str, cancel: &Cancel) -> bool {
        let deadline = Instant::now() + ECHO_WAIT;
        loop {
            if typing::echoed(&self.texts.text_from(console, from), typed) {
                return true;
            }
            let closed = !matches!(
                self.console_closed.try_recv(),
                Err(mpsc::TryRecvError::Empty)
            );
            if closed || cancel.is_cancelled() || Instant::now() >= deadline {
                return false;
            }
            thread::sleep(ECHO_POLL);
        }
    }

    /// Waits for a regex (failing on the first `fail_on` match that comes
    /// earlier) and returns the text it matched, or with `None` waits for
    /// the console to close.
    fn wait_for(
        &mut self,
        regex: Option<(&Regex, &[Regex])>,
        timeout: Duration,
        cancel: &Cancel,
    ) -> Result<Option<String>, WaitEnd> {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = match regex {
                Some((re, fail_on)) => {
                    let needles = std::iter::once(re)
                        .chain(fail_on)
                        .map(|r| ReadUntil::Regex(r.clone()))
                        .collect();
                    // rexpect returns the leftmost match of any needle.
                    self.session.exp_any(needles).map(|(_, matched)| {
                        if re.is_match(&matched) {
                            Ok(Some(matched))
                        } else {
                            Err(matched)
                        }
                    })
                }
                None => self.session.exp_eof().map(|_| Ok(None)),
            };
            match attempt {
                Ok(Ok(matched)) => return Ok(matched),
                Ok(Err(failed)) => return Err(WaitEnd::FailPattern(failed)),
                Err(ExpectError::Timeout { .. }) => {}
                // The console closed before a match (or failed): QEMU is gone.
                Err(_) => return Err(WaitEnd::Closed),
            }
            if cancel.is_cancelled() {
                return Err(WaitEnd::Interrupted);
            }
            if Instant::now() >= deadline {
                return Err(WaitEnd::Timeout);
            }
        }
    }

    /// Ends QEMU if it still runs (SIGKILL to its whole process group),
    /// reaps it, and waits for the console to drain into the log.
    pub fn stop(mut self) -> QemuStatus {
        let status = self.kill_and_reap();
        // The tee closes when the pty reports the other side gone; keep
        // reading until then so the last lines reach the log and events.
        let closed_by = Instant::now() + CLOSE_GRACE;
        while Instant::now() < closed_by {
            let _ = self.session.exp_eof();
            if !matches!(
                self.console_closed.try_recv(),
                Err(mpsc::TryRecvError::Empty)
            ) {
                break;
            }
        }
        status
    }

    /// Like [`QemuProcess::stop`], but asks QEMU to quit first (SIGTERM to
    /// its group), so it can finish what it writes (a record/replay log is
    /// unreadable without its final header); SIGKILL after a grace period.
    pub fn stop_gracefully(mut self) -> QemuStatus {
        if self.status.is_none() {
            if let Some(group) = self.group {
                let _ = killpg(group, Signal::SIGTERM);
                let _ = self.reap_within(TERM_GRACE);
            }
        }
        self.stop()
    }

    /// Hands the console to the user's terminal until they detach or QEMU
    /// exits (`--attach`).
    pub fn attach(&mut self) {
        let closed = &self.console_closed;
        super::attach::interact(&mut self.session, || {
            !matches!(closed.try_recv(), Err(mpsc::TryRecvError::Empty))
        });
    }

    fn kill_and_reap(&mut self) -> QemuStatus {
        if let Some(status) = self.reap_within(Duration::ZERO) {
            return status;
        }
        if let Some(group) = self.group {
            let _ = killpg(group, Signal::SIGKILL);
        }
        let status = match self.process.wait() {
            Ok(WaitStatus::Signaled(_, Signal::SIGKILL, _)) => QemuStatus::Signaled {
                signal: "SIGKILL".into(),
                by_lab: true,
            },
            Ok(other) => to_status(other).unwrap_or(QemuStatus::Signaled {
                signal: format!("{other:?}"),
                by_lab: true,
            }),
            // Reaped elsewhere (cannot happen: this value owns the child).
            Err(_) => QemuStatus::Signaled {
                signal: "SIGKILL".into(),
                by_lab: true,
            },
        };
        self.status = Some(status.clone());
        status
    }

    /// Reaps QEMU if it exits within `limit`.
    fn reap_within(&mut self, limit: Duration) -> Option<QemuStatus> {
        if let Some(status) = &self.status {
            return Some(status.clone());
        }
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.process.status().and_then(to_status) {
                self.status = Some(status.clone());
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            self.kill_and_reap();
        }
    }
}

/// What matched first in some console text.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// The step's pattern, from and to these byte offsets.
    Step(usize, usize),
    /// A `fail-on` pattern, with the text it matched.
    Fail(String),
}

/// The leftmost match of the step's pattern or a `fail-on` pattern; the
/// step wins a tie, as it does in rexpect.
fn first_match(text: &str, regex: &Regex, fail_on: &[Regex]) -> Option<Found> {
    let step = regex.find(text);
    let fail = fail_on
        .iter()
        .filter_map(|f| f.find(text))
        .min_by_key(|m| m.start());
    match (step, fail) {
        (Some(s), Some(f)) if f.start() < s.start() => Some(Found::Fail(f.as_str().to_owned())),
        (Some(s), _) => Some(Found::Step(s.start(), s.end())),
        (None, Some(f)) => Some(Found::Fail(f.as_str().to_owned())),
        (None, None) => None,
    }
}

fn to_status(status: WaitStatus) -> Option<QemuStatus> {
    match status {
        WaitStatus::Exited(_, code) => Some(QemuStatus::Exited { code }),
        WaitStatus::Signaled(_, signal, _) => Some(QemuStatus::Signaled {
            signal: signal.as_str().to_owned(),
            by_lab: false,
        }),
        _ => None,
    }
}

/// The process group of the session on the pty: rexpect's child calls
/// setsid() and opens the pty, so the pty's foreground group is QEMU's pid.
/// Until the child has done that the group reads as 0. A QEMU that has
/// already exited (bad arguments) has no group left: its status instead.
fn session_group(process: &PtyProcess, pty: &File) -> Result<(Option<Pid>, Option<QemuStatus>)> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match nix::unistd::tcgetpgrp(pty) {
            Ok(pid) if pid.as_raw() > 1 => return Ok((Some(pid), None)),
            _ => {}
        }
        if let Some(status) = process.status().and_then(to_status) {
            return Ok((None, Some(status)));
        }
        if Instant::now() >= deadline {
            bail!("QEMU did not take its pty within 5s");
        }
        thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_match_takes_the_leftmost() {
        let step = Regex::new("DONE").unwrap();
        let fail = [Regex::new("panic").unwrap()];
        assert_eq!(first_match("a DONE", &step, &fail), Some(Found::Step(2, 6)));
        assert_eq!(
            first_match("panic then DONE", &step, &fail),
            Some(Found::Fail("panic".into()))
        );
        assert_eq!(
            first_match("DONE then panic", &step, &fail),
            Some(Found::Step(0, 4))
        );
        assert_eq!(first_match("nothing", &step, &fail), None);
        assert_eq!(first_match("DONE", &step, &[]), Some(Found::Step(0, 4)));
    }
}
