//! Scenario errors: every one names the file, and where it can the
//! `line:column` and the field, in the `file:line:column: field: message`
//! form editors and terminals turn into links.

use std::fmt;
use std::path::{Path, PathBuf};

/// A scenario file the lab cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    /// 1-based line and column, when the error has a place in the text.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl ScenarioError {
    /// An error at a place in the file, for a field given as a path
    /// (`steps[2].console`).
    pub fn at(file: &Path, line: usize, column: usize, field: &str, message: String) -> Self {
        ScenarioError {
            file: file.to_owned(),
            location: Some((line, column)),
            message: format!("{field}: {message}"),
        }
    }

    /// A file that cannot be read.
    pub fn io(file: &Path, err: &std::io::Error) -> Self {
        ScenarioError {
            file: file.to_owned(),
            location: None,
            message: format!("cannot read: {err}"),
        }
    }

    /// A YAML or schema error from serde_yaml. Its message already carries
    /// the field path (`machine.cpus: invalid type ...`); the location moves
    /// to the front.
    pub fn from_yaml(file: &Path, err: &serde_yaml::Error) -> Self {
        let mut message = err.to_string();
        let location = err.location().map(|l| (l.line(), l.column()));
        if let Some((line, column)) = location {
            let suffix = format!(" at line {line} column {column}");
            if let Some(pos) = message.find(&suffix) {
                message.replace_range(pos..pos + suffix.len(), "");
            }
        }
        ScenarioError {
            file: file.to_owned(),
            location,
            message,
        }
    }
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// The 1-based line and column of the first `key:` whose line contains
/// `value` (any `key:` line when `value` is empty); 1:1 when there is none.
/// The checks that relate several fields use it to point at the text.
pub fn locate(text: &str, key: &str, value: &str) -> (usize, usize) {
    let needle = format!("{key}:");
    for (index, line) in text.lines().enumerate() {
        let body = line.trim_start().trim_start_matches("- ");
        if body.starts_with(&needle) && line.contains(value) {
            let column = line.len() - body.len() + 1;
            return (index + 1, column);
        }
    }
    (1, 1)
}

/// The 1-based line and column of the first occurrence of `value` (list
/// items have no key of their own); 1:1 when there is none.
pub fn locate_value(text: &str, value: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(index, line)| line.find(value).map(|col| (index + 1, col + 1)))
        .unwrap_or((1, 1))
}

/// The 1-based line and column of the first `key: value` at or after line
/// `from` (1-based), in block (`key: value`) or flow (`{ a: 1, key: value }`)
/// style, the value plain or quoted and not just the start of a longer
/// word; `None` when there is none.
pub fn locate_from(text: &str, from: usize, key: &str, value: &str) -> Option<(usize, usize)> {
    let needle = format!("{key}:");
    for (index, line) in text.lines().enumerate().skip(from.saturating_sub(1)) {
        let mut search = 0;
        while let Some(found) = line[search..].find(&needle) {
            let at = search + found;
            search = at + needle.len();
            let boundary = line[..at]
                .chars()
                .next_back()
                .is_none_or(|c| " \t{,-".contains(c));
            let rest = line[search..].trim_start().trim_start_matches(['"', '\'']);
            let whole = rest.strip_prefix(value).is_some_and(|after| {
                !after.starts_with(|c: char| c.is_ascii_alphanumeric() || "_-.:/".contains(c))
            });
            if boundary && whole {
                return Some((index + 1, at + 1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_from_finds_block_and_flow_values_whole() {
        let text = "vms:\n  - name: vm0\n    net: [{ switch: lan0, ip: 10.0.0.1/24 }]\n  - name: vm1\n    net:\n      - switch: 'lan0'\n        ip: 10.0.0.1/24\n";
        assert_eq!(locate_from(text, 1, "name", "vm1"), Some((4, 5)));
        assert_eq!(locate_from(text, 1, "switch", "lan0"), Some((3, 13)));
        assert_eq!(locate_from(text, 4, "switch", "lan0"), Some((6, 9)));
        assert_eq!(locate_from(text, 4, "ip", "10.0.0.1/24"), Some((7, 9)));
        assert_eq!(
            locate_from(text, 1, "name", "vm"),
            None,
            "a word's start is not the word"
        );
        assert_eq!(locate_from(text, 5, "name", "vm0"), None);
    }

    #[test]
    fn locate_finds_key_with_value() {
        let text = "name: a\nsteps:\n  - expect: x\n    console: vm1\n";
        assert_eq!(locate(text, "console", "vm1"), (4, 5));
        assert_eq!(locate(text, "expect", "x"), (3, 5));
        assert_eq!(locate(text, "name", ""), (1, 1));
        assert_eq!(locate(text, "missing", ""), (1, 1));
        assert_eq!(locate_value(text, "vm1"), (4, 14));
        assert_eq!(locate_value(text, "nowhere"), (1, 1));
    }

    #[test]
    fn display_puts_location_first() {
        let err = ScenarioError::at(Path::new("s/a.yaml"), 3, 7, "boot", "bad".into());
        assert_eq!(err.to_string(), "s/a.yaml:3:7: boot: bad");
    }
}
