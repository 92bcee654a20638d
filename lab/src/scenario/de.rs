//! Hand-written deserialisers for the two schema types that are "a map with
//! exactly one of these keys" (`Step`, `KernelSource`). Writing the visitor
//! by hand, rather than `try_from` a struct of options, keeps every error
//! inside the map, so serde_yaml reports it at that map's line:column and
//! path (`steps[3]`), not at the enclosing list.

use super::{template, KernelSource, Step, DEFAULT_TIMEOUT_SECS};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

const STEP_FIELDS: &[&str] = &["expect", "send", "expect-exit", "timeout", "console"];
const KERNEL_FIELDS: &[&str] = &["image", "crate"];

/// Stores a field's value, rejecting a key given twice.
fn set<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    key: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(key));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(StepVisitor)
    }
}

struct StepVisitor;

impl<'de> Visitor<'de> for StepVisitor {
    type Value = Step;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a step: a map with one of `expect`, `send`, `expect-exit`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Step, A::Error> {
        let (mut expect, mut send) = (None::<String>, None::<String>);
        let mut expect_exit = None::<i32>;
        let (mut timeout, mut console) = (None::<u64>, None::<String>);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "expect" => set(&mut map, &mut expect, "expect")?,
                "send" => set(&mut map, &mut send, "send")?,
                "expect-exit" => set(&mut map, &mut expect_exit, "expect-exit")?,
                "timeout" => set(&mut map, &mut timeout, "timeout")?,
                "console" => set(&mut map, &mut console, "console")?,
                other => return Err(de::Error::unknown_field(other, STEP_FIELDS)),
            }
        }
        let timeout_secs = timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout_secs == 0 {
            return Err(de::Error::custom("`timeout` must be at least 1 second"));
        }
        match (expect, send, expect_exit) {
            (Some(pattern), None, None) => {
                // Check the syntax now; `{variables}` expand to escaped text,
                // so a placeholder stands in for them.
                let probe = template::placeholder_expansion(&pattern);
                super::compile_pattern(&probe).map_err(|e| {
                    de::Error::custom(format!("`expect` is not a valid regex: {e}"))
                })?;
                Ok(Step::Expect {
                    pattern,
                    timeout_secs,
                    console,
                })
            }
            (None, Some(_), None) if timeout.is_some() => {
                Err(de::Error::custom("a `send` step takes no `timeout`"))
            }
            (None, Some(line), None) => Ok(Step::Send { line, console }),
            (None, None, Some(_)) if console.is_some() => Err(de::Error::custom(
                "an `expect-exit` step takes no `console`",
            )),
            (None, None, Some(status)) => Ok(Step::ExpectExit {
                status,
                timeout_secs,
            }),
            _ => Err(de::Error::custom(
                "a step has exactly one of `expect`, `send`, `expect-exit`",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for KernelSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(KernelVisitor)
    }
}

struct KernelVisitor;

impl<'de> Visitor<'de> for KernelVisitor {
    type Value = KernelSource;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`{ image: NAME }` or `{ crate: NAME }`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KernelSource, A::Error> {
        let (mut image, mut krate) = (None::<String>, None::<String>);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "image" => set(&mut map, &mut image, "image")?,
                "crate" => set(&mut map, &mut krate, "crate")?,
                other => return Err(de::Error::unknown_field(other, KERNEL_FIELDS)),
            }
        }
        match (image, krate) {
            (Some(image), None) => Ok(KernelSource::Image(image)),
            (None, Some(krate)) => Ok(KernelSource::Crate(krate)),
            _ => Err(de::Error::custom(
                "a kernel is exactly one of `{ image: NAME }`, `{ crate: NAME }`",
            )),
        }
    }
}
