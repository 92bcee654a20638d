//! `--attach`: hands the console to the user once the steps are done (or
//! at the first failure). The user's terminal goes raw, keys go to QEMU's
//! console as typed (so the hypervisor's own focus-switch escape reaches
//! it), console output goes to the screen (and, through the tee, still to
//! `console.log` and the event stream). `Ctrl-]` gives the terminal back;
//! so does QEMU exiting.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, SetArg, Termios};
use rexpect::session::StreamSession;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;

/// The key that ends an attached session.
pub const DETACH_KEY: u8 = 0x1d;
/// How the user is told about it.
pub const DETACH_HINT: &str = "Ctrl-]";

/// Puts the terminal back as it was, also on an early return.
struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(saved) = &saved {
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, saved);
        }
    }
}

/// Copies the console to stdout and stdin to the console until the user
/// detaches or `closed()` says the console has closed (QEMU gone).
pub fn interact(session: &mut StreamSession<File>, closed: impl Fn() -> bool) {
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "lab: attached to the console; {DETACH_HINT} detaches (QEMU is then stopped)"
    );
    let _raw = RawMode::enter();
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 256];
    loop {
        let mut shown = String::new();
        while let Some(c) = session.try_read() {
            shown.push(c);
        }
        if !shown.is_empty() {
            let _ = out.write_all(shown.as_bytes());
            let _ = out.flush();
        }
        if closed() {
            break;
        }
        let ready = {
            let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(20u8)).unwrap_or(0) > 0
        };
        if !ready {
            continue;
        }
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let keys = &buf[..n];
        let (keys, detach) = match keys.iter().position(|&b| b == DETACH_KEY) {
            Some(at) => (&keys[..at], true),
            None => (keys, false),
        };
        if !keys.is_empty() && session.send(&String::from_utf8_lossy(keys)).is_err() {
            break;
        }
        let _ = session.flush();
        if detach {
            break;
        }
    }
    let _ = writeln!(out, "\r\nlab: detached");
}
