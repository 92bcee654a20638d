//! The one line lab-clock prints, `LAB-CLOCK <ticks> <frequency>\n`, both
//! numbers in decimal: the lab's timeline parses it. Only this module knows
//! the format; it needs no allocator and no `core::fmt`.

/// What the line starts with.
pub const PREFIX: &[u8] = b"LAB-CLOCK ";

/// Digits of the largest `u64`.
const MAX_DIGITS: usize = 20;

/// The prefix, two numbers, a space and the newline.
const CAPACITY: usize = PREFIX.len() + 2 * MAX_DIGITS + 2;

/// A formatted line in a fixed buffer.
pub struct Line {
    buf: [u8; CAPACITY],
    len: usize,
}

impl Line {
    /// The line for a counter value and the counter's frequency in Hz.
    pub fn new(ticks: u64, frequency: u64) -> Line {
        let mut line = Line {
            buf: [0; CAPACITY],
            len: 0,
        };
        line.push(PREFIX);
        line.push(decimal(ticks).as_bytes());
        line.push(b" ");
        line.push(decimal(frequency).as_bytes());
        line.push(b"\n");
        line
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// Appends `bytes`. CAPACITY covers the longest line, so nothing is
    /// ever cut; written without indexing, so the program has no panic path
    /// (and no `core::fmt` behind one).
    fn push(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = byte;
                self.len += 1;
            }
        }
    }
}

/// A `u64` in decimal, without leading zeros ("0" for zero).
pub struct Decimal {
    digits: [u8; MAX_DIGITS],
    start: usize,
}

impl Decimal {
    pub fn as_bytes(&self) -> &[u8] {
        self.digits.get(self.start..).unwrap_or_default()
    }
}

/// `value` in decimal.
pub fn decimal(mut value: u64) -> Decimal {
    let mut digits = [b'0'; MAX_DIGITS];
    let mut start = MAX_DIGITS;
    for slot in digits.iter_mut().rev() {
        // A remainder of 10 is a single digit: the cast cannot truncate.
        *slot = b'0' + (value % 10) as u8;
        start -= 1;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    Decimal { digits, start }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> &str {
        core::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn decimal_agrees_with_std_formatting() {
        let mut values = vec![0, 1, 9, 10, 99, 100, 62_500_000, u64::MAX - 1, u64::MAX];
        values.extend((0..64).map(|bit| 1u64 << bit));
        values.extend((1..20).map(|exp| 10u64.pow(exp) - 1));
        for value in values {
            assert_eq!(text(decimal(value).as_bytes()), value.to_string());
        }
    }

    #[test]
    fn line_is_prefix_ticks_frequency_newline() {
        for (ticks, frequency) in [(0, 0), (123_456_789, 62_500_000), (u64::MAX, u64::MAX)] {
            assert_eq!(
                text(Line::new(ticks, frequency).as_bytes()),
                format!("LAB-CLOCK {ticks} {frequency}\n")
            );
        }
    }
}
