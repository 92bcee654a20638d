//! `{variable}` expansion in `expect` patterns, so a scenario states each
//! machine value once: `'{cpus} CPUs, {memory-mib} MiB'`. Values are
//! regex-escaped. Only lower-case names expand, so regex repetitions such as
//! `\d{4}` or `x{2,3}` pass through untouched.

use super::Scenario;

/// The values a pattern may name.
#[derive(Debug, Clone)]
pub struct TemplateVars(Vec<(&'static str, String)>);

impl TemplateVars {
    pub(super) fn new(scenario: &Scenario) -> Self {
        TemplateVars(vec![
            ("name", scenario.name.clone()),
            ("cpus", scenario.machine.cpus.to_string()),
            ("memory-mib", scenario.machine.memory_mib.to_string()),
            ("cpu", scenario.machine.cpu.qemu_name().to_owned()),
        ])
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|(key, _)| *key).collect()
    }
}

/// Expands every `{name}`; an unknown name is an error that lists the known ones.
pub fn expand(pattern: &str, vars: &TemplateVars) -> Result<String, String> {
    substitute(pattern, |name| {
        vars.get(name).map(regex::escape).ok_or_else(|| {
            format!(
                "unknown variable `{{{name}}}` (known: {})",
                vars.names().join(", ")
            )
        })
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

fn is_variable_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> TemplateVars {
        TemplateVars(vec![("cpus", "2".into()), ("name", "a.b".into())])
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
    fn placeholder_keeps_syntax_checkable() {
        assert_eq!(placeholder_expansion("a{cpus}b{2}"), "axb{2}");
    }
}
