//! Typing a line into a console that has no input flow control.
//!
//! Under `-icount rr=record` QEMU's character backend hands every byte it
//! reads from the lab's pty to the recorder as an event, to be played into
//! the machine later. What decides whether it reads more (the free space
//! of the console multiplexer and the UART) does not change until then, so
//! it reads whatever the lab typed. The events are played in together, at
//! the next checkpoint, with no guest instruction in between: the
//! multiplexer (`-nographic`) buffers 32 bytes in a ring that overwrites
//! itself, the PL011 FIFO holds 32 more (one while its FIFO is off), and
//! whatever else was typed is lost or garbled before any guest can read it.
//!
//! So a recorded run types each line in [`CHUNK`]-byte pieces and sends the
//! next piece only once the console has echoed the one before: the echo
//! shows the guest has read those bytes, so QEMU's buffers are empty again.

/// Bytes typed before waiting for their echo: the multiplexer's ring,
/// which with a UART byte (its FIFO off) is what QEMU holds at the least.
/// Under the hypervisor (its UART FIFO on) a focus escape typed before a
/// line still fits. Each piece costs a replay one wait for the guest's
/// next timer ([`crate::replay::REPLAY_TIMEOUT_FACTOR`]): the pieces are
/// as large as is safe.
pub const CHUNK: usize = 32;

/// The pieces `line` and its newline are typed in: at most [`CHUNK`]
/// bytes each, split between characters; the last one ends with `\n`.
pub fn pieces(line: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut piece = String::new();
    for c in line.chars().chain(['\n']) {
        if !piece.is_empty() && piece.len() + c.len_utf8() > CHUNK {
            pieces.push(std::mem::take(&mut piece));
        }
        piece.push(c);
    }
    pieces.push(piece);
    pieces
}

/// The characters of console text a terminal shows: escape sequences
/// (`ESC [ ... final`, `ESC x`) and control characters removed.
fn visible(text: &str) -> impl Iterator<Item = char> + '_ {
    let mut chars = text.chars();
    std::iter::from_fn(move || loop {
        let c = chars.next()?;
        if c == '\x1b' {
            if chars.next()? == '[' {
                // Parameters and intermediates, up to the final byte.
                while !('\x40'..='\x7e').contains(&chars.next()?) {}
            }
            continue;
        }
        if !c.is_control() {
            return Some(c);
        }
    })
}

/// Whether console `output` shows the echo of `typed`: its visible
/// characters in order, whatever the guest put around or between them (a
/// shell breaks a line at the terminal's width, the kernel logs a line).
pub fn echoed(output: &str, typed: &str) -> bool {
    let mut wanted = visible(typed).peekable();
    for c in visible(output) {
        if wanted.peek() == Some(&c) {
            wanted.next();
        }
    }
    wanted.peek().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_into_pieces_that_end_with_the_newline() {
        assert_eq!(pieces(""), ["\n"]);
        assert_eq!(pieces("uname -a"), ["uname -a\n"]);
        let line = "a".repeat(CHUNK);
        assert_eq!(pieces(&line), [line.clone(), "\n".into()]);
        let long = "x".repeat(2 * CHUNK + 3);
        let split = pieces(&long);
        assert_eq!(split.len(), 3);
        assert!(split.iter().all(|p| p.len() <= CHUNK));
        assert_eq!(split.concat(), format!("{long}\n"));
        // Never inside a character: 'é' is two bytes.
        let accents = "é".repeat(CHUNK);
        assert!(pieces(&accents).iter().all(|p| p.len() <= CHUNK));
        assert_eq!(pieces(&accents).concat(), format!("{accents}\n"));
    }

    #[test]
    fn echo_is_found_through_escapes_line_breaks_and_noise() {
        assert!(echoed("awk '/arch", "awk '/arch"));
        assert!(echoed("\x1b[6nawk '/arch", "awk '/arch"));
        // busybox ash wrapping at the terminal's width.
        assert!(echoed("\"idle\"), \r\r\r\n$3, $4", "\"idle\"), $3, $4"));
        assert!(echoed("ab\r\n[ 2.1] random: crng init done\r\ncd", "abcd"));
        assert!(echoed("x", ""));
        assert!(!echoed("awk '/arc", "awk '/arch"), "not all of it yet");
        assert!(!echoed("", "uname"));
        assert!(!echoed("hcra", "arch"), "out of order");
    }

    #[test]
    fn visible_text_drops_escape_sequences_and_controls() {
        let shown: String = visible("a\x1b[6nb\x1b[1;31mc\x1b7d\r\n\x07e\x1b").collect();
        assert_eq!(shown, "abcde");
    }
}
