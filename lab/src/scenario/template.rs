//! `{variable}` expansion in `expect` patterns, so a scenario states each
//! value once: `'{cpus} CPUs, {memory-mib} MiB'`. Values are regex-escaped.
//! Only names of lower-case letters, digits, `-` and `_` expand, so regex
//! repetitions such as `\d{4}` or `x{2,3}` pass through untouched.
//!
//! Some values exist only once the run does: what the lab computed while
//! preparing it (a disk's md5) and what an earlier `expect` captured with a
//! named group. Before then such a variable is declared without a value and
//! stands for any non-blank text.

use super::Scenario;

/// A variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Literal(String),
    /// Known only during the run: any non-blank text until then.
    Pending,
}

/// What a pending variable matches before its value is known.
const PENDING_REGEX: &str = r"\S+";

/// The values a pattern may name.
#[derive(Debug, Clone)]
pub struct TemplateVars(Vec<(String, Value)>);

impl TemplateVars {
    /// The machine values of a scenario, and its run-time values declared.
    pub(super) fn new(scenario: &Scenario) -> Self {
        let mut vars = TemplateVars(
            [
                ("name", scenario.name.clone()),
                ("cpus", scenario.machine.cpus.to_string()),
                ("memory-mib", scenario.machine.memory_mib.to_string()),
                ("cpu", scenario.machine.cpu.qemu_name().to_owned()),
            ]
            .into_iter()
            .map(|(name, value)| (name.to_owned(), Value::Literal(value)))
            .collect(),
        );
        for name in scenario.run_variables() {
            vars.declare(&name);
        }
        vars
    }

    /// Gives `name` a value, declaring it if needed.
    pub fn set(&mut self, name: &str, value: String) {
        match self.0.iter_mut().find(|(key, _)| key == name) {
            Some((_, slot)) => *slot = Value::Literal(value),
            None => self.0.push((name.to_owned(), Value::Literal(value))),
        }
    }

    /// Declares `name` without a value, unless it has one.
    pub fn declare(&mut self, name: &str) {
        if !self.contains(name) {
            self.0.push((name.to_owned(), Value::Pending));
        }
    }

    /// Whether `name` is a variable.
    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(key, _)| key == name)
    }

    /// Sets every named group of `regex` that matched in `captures`, as an
    /// `expect` that captured them does for the steps after it.
    pub fn set_captures(&mut self, regex: &regex::Regex, captures: &regex::Captures<'_>) {
        for name in regex.capture_names().flatten() {
            if let Some(value) = captures.name(name) {
                if is_variable_name(name) {
                    self.set(name, value.as_str().to_owned());
                }
            }
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(key, _)| key.as_str()).collect()
    }
}

/// The named groups of a pattern that become variables for later steps.
pub fn capture_names(regex: &regex::Regex) -> Vec<String> {
    regex
        .capture_names()
        .flatten()
        .filter(|name| is_variable_name(name))
        .map(str::to_owned)
        .collect()
}

/// Expands every `{name}`; an unknown name is an error that lists the known ones.
pub fn expand(pattern: &str, vars: &TemplateVars) -> Result<String, String> {
    substitute(pattern, |name| match vars.get(name) {
        Some(Value::Literal(value)) => Ok(regex::escape(value)),
        Some(Value::Pending) => Ok(PENDING_REGEX.to_owned()),
        None => Err(format!(
            "unknown variable `{{{name}}}` (known: {})",
            vars.names().join(", ")
        )),
    })
}

/// Replaces every `{name}` with a literal, to check the regex syntax before
/// the values are known.
pub(super) fn placeholder_expansion(pattern: &str) -> String {
    substitute(pattern, |_| Ok::<_, String>("x".to_owned())).unwrap_or_default()
}

fn substitute<E>(
    pattern: &str,
    mut value: impl FnMut(&str) -> Result<String, E>,
) -> Result<String, E> {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) if is_variable_name(&after[..close]) => {
                out.push_str(&value(&after[..close])?);
                rest = &after[close + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether `s` is spelled like a variable: a lower-case letter, then
/// lower-case letters, digits, `-` and `_`.
pub fn is_variable_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> TemplateVars {
        let mut vars = TemplateVars(Vec::new());
        vars.set("cpus", "2".into());
        vars.set("name", "a.b".into());
        vars
    }

    #[test]
    fn expands_known_names_escaped() {
        assert_eq!(expand("{cpus} CPUs", &vars()).unwrap(), "2 CPUs");
        assert_eq!(expand("x {name}", &vars()).unwrap(), r"x a\.b");
    }

    #[test]
    fn leaves_regex_repetitions_alone() {
        for pattern in [r"\d{4}", "x{2,3}", "{", "a{}b", "{Cpus}"] {
            assert_eq!(expand(pattern, &vars()).unwrap(), pattern);
        }
    }

    #[test]
    fn unknown_name_lists_known_ones() {
        let err = expand("{memory}", &vars()).unwrap_err();
        assert_eq!(err, "unknown variable `{memory}` (known: cpus, name)");
    }

    #[test]
    fn pending_values_match_any_word_until_set_by_a_capture() {
        let mut vars = vars();
        vars.declare("vm0-disk0-md5");
        assert_eq!(expand("md5 {vm0-disk0-md5}", &vars).unwrap(), r"md5 \S+");
        let step = regex::Regex::new(r"(?P<sum>[0-9a-f]+)  (?P<Other>\S+)").unwrap();
        assert_eq!(capture_names(&step), ["sum"]);
        let captures = step.captures("d41d8  /tmp/x").unwrap();
        vars.set_captures(&step, &captures);
        assert_eq!(expand("{sum}-", &vars).unwrap(), "d41d8-");
        vars.set("vm0-disk0-md5", "a.b".into());
        assert_eq!(expand("{vm0-disk0-md5}", &vars).unwrap(), r"a\.b");
        assert!(
            expand("{Other}", &vars).unwrap() == "{Other}",
            "not a variable name"
        );
    }

    #[test]
    fn placeholder_keeps_syntax_checkable() {
        assert_eq!(placeholder_expansion("a{cpus}b{2}"), "axb{2}");
    }
}
