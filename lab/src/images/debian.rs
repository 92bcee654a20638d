//! Debian archive metadata: the `Release` file's SHA256 list and the
//! `Packages` index (deb822 stanzas), and following a metapackage through its
//! `Depends` to the real package. Parsing only; downloads live in `resolve`.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use super::cache::is_sha256;

/// The mirror used unless `LAB_DEBIAN_MIRROR` says otherwise.
pub const DEFAULT_MIRROR: &str = "https://deb.debian.org/debian";

/// The environment variable that overrides the mirror.
pub const MIRROR_ENV: &str = "LAB_DEBIAN_MIRROR";

/// The archive base URL, without a trailing slash.
pub fn mirror() -> String {
    std::env::var(MIRROR_ENV)
        .ok()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| DEFAULT_MIRROR.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// One line of a Release file's `SHA256:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseEntry {
    pub sha256: String,
    pub size: u64,
}

/// The SHA256 list of a `Release` (or the signed body of an `InRelease`),
/// keyed by path relative to `dists/<suite>/`.
pub fn parse_release(text: &str) -> Result<BTreeMap<String, ReleaseEntry>> {
    let mut entries = BTreeMap::new();
    let mut in_sha256 = false;
    for (index, line) in text.lines().enumerate() {
        if !line.starts_with(' ') {
            in_sha256 = line.trim_end() == "SHA256:";
            continue;
        }
        if !in_sha256 {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [sha256, size, path] = fields[..] else {
            bail!(
                "Release line {}: expected `sha256 size path`, found {line:?}",
                index + 1
            );
        };
        let size = size
            .parse()
            .with_context(|| format!("Release line {}: bad size {size:?}", index + 1))?;
        if !is_sha256(sha256) {
            bail!("Release line {}: bad sha256 {sha256:?}", index + 1);
        }
        entries.insert(
            path.to_owned(),
            ReleaseEntry {
                sha256: sha256.to_owned(),
                size,
            },
        );
    }
    if entries.is_empty() {
        bail!("the Release file has no SHA256 section");
    }
    Ok(entries)
}

/// The fields of one binary package the lab uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// Names of the packages in `Depends`, first alternative of each, without
    /// version constraints or architecture qualifiers.
    pub depends: Vec<String>,
    /// Path of the `.deb` relative to the mirror (`pool/main/...`).
    pub filename: String,
    pub sha256: String,
    pub size: u64,
}

/// A `Packages` index: package name to its stanza (the first one when a name
/// appears twice; one suite lists one version of each package).
#[derive(Debug, Default)]
pub struct PackageIndex {
    packages: BTreeMap<String, Package>,
}

impl PackageIndex {
    /// Parses a decompressed `Packages` file.
    pub fn parse(text: &str) -> Result<PackageIndex> {
        let mut packages = BTreeMap::new();
        let mut line_no = 0;
        for stanza in text.split("\n\n") {
            let start = line_no + 1;
            line_no += stanza.lines().count() + 1;
            let fields = parse_stanza(stanza);
            if fields.is_empty() {
                continue;
            }
            let package = package_from_fields(&fields)
                .with_context(|| format!("Packages stanza at line {start}"))?;
            packages.entry(package.name.clone()).or_insert(package);
        }
        Ok(PackageIndex { packages })
    }

    pub fn get(&self, name: &str) -> Option<&Package> {
        self.packages.get(name)
    }

    pub fn len(&self) -> usize {
        self.packages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// `name`, or, while the package found depends on a package whose name
    /// starts with `follow`, that package: a metapackage such as
    /// `linux-image-cloud-arm64` leads to `linux-image-6.1.0-NN-cloud-arm64`.
    pub fn resolve(&self, name: &str, follow: Option<&str>) -> Result<&Package> {
        let mut package = self
            .get(name)
            .with_context(|| format!("package {name} is not in the index"))?;
        let Some(prefix) = follow else {
            return Ok(package);
        };
        let mut chain = vec![name.to_owned()];
        while let Some(next) = package.depends.iter().find(|d| d.starts_with(prefix)) {
            if chain.contains(next) {
                bail!(
                    "package {name}: dependency loop {} -> {next}",
                    chain.join(" -> ")
                );
            }
            package = self.get(next).with_context(|| {
                format!(
                    "package {} depends on {next}, which is not in the index",
                    package.name
                )
            })?;
            chain.push(next.clone());
        }
        Ok(package)
    }
}

/// The `Field: value` pairs of one stanza; continuation lines are dropped
/// (none of the fields the lab reads spans lines).
fn parse_stanza(stanza: &str) -> BTreeMap<&str, &str> {
    stanza
        .lines()
        .filter(|line| !line.starts_with([' ', '\t']))
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key, value.trim()))
        .collect()
}

fn package_from_fields(fields: &BTreeMap<&str, &str>) -> Result<Package> {
    let field = |name: &str| -> Result<&str> {
        fields
            .get(name)
            .copied()
            .with_context(|| format!("missing field {name}"))
    };
    let sha256 = field("SHA256")?;
    if !is_sha256(sha256) {
        bail!("bad SHA256 {sha256:?}");
    }
    let size = field("Size")?;
    Ok(Package {
        name: field("Package")?.to_owned(),
        version: field("Version")?.to_owned(),
        depends: fields
            .get("Depends")
            .map_or_else(Vec::new, |d| parse_depends(d)),
        filename: field("Filename")?.to_owned(),
        sha256: sha256.to_owned(),
        size: size.parse().with_context(|| format!("bad Size {size:?}"))?,
    })
}

/// `a (>= 1), b | c, d:any` → `[a, b, d]`.
pub fn parse_depends(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter_map(|clause| clause.split('|').next())
        .map(|alt| {
            let name = alt.trim().split([' ', '(']).next().unwrap_or_default();
            name.split(':').next().unwrap_or_default().to_owned()
        })
        .filter(|name| !name.is_empty())
        .collect()
}
