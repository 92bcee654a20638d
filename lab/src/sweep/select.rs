//! Which scenarios a sweep runs: `--tag`, `--filter REGEX`, `--only-failed`
//! and `--shard K/N`, applied in that order to the scenarios sorted by
//! name. Sharding is round-robin over that sorted list, so shards 1/N to
//! N/N partition every selection exactly, on every machine, and stay
//! balanced as files are added.

use crate::scenario::Scenario;
use anyhow::{bail, Context, Result};
use regex::Regex;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// `K/N`: the K-th (1-based) of N shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let (k, n) = text
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: a shard is K/N, e.g. 1/4"))?;
        let parse = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("`{text}`: `{s}` is not a number"))
        };
        let shard = Shard {
            index: parse(k)?,
            count: parse(n)?,
        };
        if shard.count == 0 || shard.index == 0 || shard.index > shard.count {
            return Err(format!("`{text}`: need 1 <= K <= N"));
        }
        Ok(shard)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether the `position`-th (0-based) name of the sorted list is ours.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count as usize == (self.index - 1) as usize
    }
}

/// The selection options of `lab sweep`.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub tags: Vec<String>,
    pub filter: Option<String>,
    pub shard: Option<Shard>,
    /// Only these names (the failures of the previous sweep).
    pub only: Option<BTreeSet<String>>,
}

impl Selection {
    /// The scenarios to run, sorted by name.
    pub fn apply(&self, mut scenarios: Vec<Scenario>) -> Result<Vec<Scenario>> {
        let filter = self
            .filter
            .as_deref()
            .map(Regex::new)
            .transpose()
            .context("--filter is not a valid regex")?;
        scenarios.sort_by(|a, b| a.name.cmp(&b.name));
        let names: BTreeSet<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
        if names.len() != scenarios.len() {
            bail!("two scenario files share a name");
        }
        let chosen: Vec<Scenario> = scenarios
            .into_iter()
            .filter(|s| self.tags.iter().all(|t| s.tags.contains(t)))
            .filter(|s| filter.as_ref().is_none_or(|re| re.is_match(&s.name)))
            .filter(|s| self.only.as_ref().is_none_or(|only| only.contains(&s.name)))
            .collect();
        Ok(match self.shard {
            Some(shard) => chosen
                .into_iter()
                .enumerate()
                .filter(|(i, _)| shard.owns(*i))
                .map(|(_, s)| s)
                .collect(),
            None => chosen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenario(name: &str, tags: &str) -> Scenario {
        Scenario::parse(
            Path::new(&format!("{name}.yaml")),
            &format!("schema: 1\nname: {name}\ndescription: d\ntags: [{tags}]\nmachine: {{ cpus: 1, memory-mib: 64 }}\nsteps: []\n"),
        )
        .unwrap()
    }

    fn names(scenarios: &[Scenario]) -> Vec<&str> {
        scenarios.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn shard_parsing() {
        assert_eq!("2/3".parse(), Ok(Shard { index: 2, count: 3 }));
        for bad in ["0/3", "4/3", "1/0", "3", "a/b", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shards_partition_the_set_exactly() {
        let all: Vec<Scenario> = (0..11)
            .rev()
            .map(|i| scenario(&format!("s{i:02}"), ""))
            .collect();
        for count in 1..=12 {
            let mut seen = Vec::new();
            for index in 1..=count {
                let selection = Selection {
                    shard: Some(Shard { index, count }),
                    ..Selection::default()
                };
                let part = selection.apply(all.clone()).unwrap();
                let sizes_differ_by = 11 / count as usize + 1;
                assert!(part.len() <= sizes_differ_by, "{count}: {}", part.len());
                seen.extend(names(&part).into_iter().map(str::to_owned));
            }
            seen.sort();
            let mut expected: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
            expected.sort();
            assert_eq!(seen, expected, "shards of {count}");
        }
    }

    #[test]
    fn tags_filter_and_only() {
        let all = vec![
            scenario("linux_bare", "linux, baseline"),
            scenario("hv_boot", "hypervisor, smoke"),
            scenario("testguest_bare", "testguest, baseline"),
        ];
        let by_tag = Selection {
            tags: vec!["baseline".into()],
            ..Selection::default()
        };
        assert_eq!(
            names(&by_tag.apply(all.clone()).unwrap()),
            ["linux_bare", "testguest_bare"]
        );
        let by_regex = Selection {
            filter: Some("^(hv|linux)_".into()),
            ..Selection::default()
        };
        assert_eq!(
            names(&by_regex.apply(all.clone()).unwrap()),
            ["hv_boot", "linux_bare"]
        );
        let only = Selection {
            only: Some(["testguest_bare".to_string()].into()),
            ..Selection::default()
        };
        assert_eq!(names(&only.apply(all.clone()).unwrap()), ["testguest_bare"]);
        let bad = Selection {
            filter: Some("(".into()),
            ..Selection::default()
        };
        assert!(bad.apply(all).is_err());
    }
}
