//! `guest-images/images.lock`: what each image of images.yaml resolved to —
//! the real package, its version, the `.deb` URL and sha256, and the sha256
//! of every file taken from it (modules in load order). Runs use the lock;
//! `lab fetch --update` rewrites it. Written atomically, keys sorted, so
//! diffs stay small.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::cache::{is_sha256, write_file_atomically};
use super::manifest::Source;

/// Where the lock lives in the workspace.
pub const LOCK_PATH: &str = "guest-images/images.lock";

const HEADER: &str = "# Written by `cargo run -p lab -- fetch --update`; do not edit by hand.\n";

/// The whole lock file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockFile {
    pub schema: u32,
    pub images: BTreeMap<String, LockedImage>,
}

/// What one image resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedImage {
    /// The images.yaml source this entry was resolved from, in one line; a
    /// different source makes the entry stale.
    pub source: String,
    /// The package that holds the files (after following a metapackage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The download: a `.deb` or the image itself.
    pub url: String,
    pub sha256: String,
    /// The file taken (the kernel, busybox, the image itself).
    pub file: LockedFile,
    /// Kernel modules taken, in load order (dependencies first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<LockedModule>,
    /// Modules asked for or depended on that the kernel has built in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builtin: Vec<String>,
}

/// One file taken from a download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedFile {
    pub path: String,
    pub sha256: String,
}

/// One kernel module taken from a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedModule {
    pub name: String,
    pub path: String,
    pub sha256: String,
}

impl LockFile {
    /// The lock at `<workspace_root>/guest-images/images.lock`; an empty lock
    /// when the file does not exist yet.
    pub fn load(workspace_root: &Path) -> Result<LockFile> {
        let path = lock_path(workspace_root);
        match std::fs::read_to_string(&path) {
            Ok(text) => LockFile::parse(&text).with_context(|| {
                format!("{} is damaged; restore it with `git checkout {LOCK_PATH}` or rewrite it with `cargo run -p lab -- fetch --update`", path.display())
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(LockFile {
                schema: 1,
                images: BTreeMap::new(),
            }),
            Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Parses and checks the text of a lock.
    pub fn parse(text: &str) -> Result<LockFile> {
        let lock: LockFile = serde_yaml::from_str(text)?;
        if lock.schema != 1 {
            bail!("schema {} is not supported; this lab reads 1", lock.schema);
        }
        for (name, image) in &lock.images {
            let hashes = std::iter::once(&image.sha256)
                .chain(std::iter::once(&image.file.sha256))
                .chain(image.modules.iter().map(|m| &m.sha256));
            for sha256 in hashes {
                if !is_sha256(sha256) {
                    bail!("{name}: {sha256:?} is not a sha256");
                }
            }
        }
        Ok(lock)
    }

    /// The text of the lock.
    pub fn to_text(&self) -> Result<String> {
        Ok(format!("{HEADER}{}", serde_yaml::to_string(self)?))
    }

    /// Writes the lock atomically.
    pub fn save(&self, workspace_root: &Path) -> Result<()> {
        write_file_atomically(&lock_path(workspace_root), self.to_text()?.as_bytes())
    }
}

pub fn lock_path(workspace_root: &Path) -> PathBuf {
    workspace_root.join(LOCK_PATH)
}

/// The one-line description of a source that a lock entry records.
pub fn source_key(source: &Source) -> String {
    match source {
        Source::Debian(d) => {
            let mut key = format!(
                "debian {} {}/{} {}",
                d.package, d.suite, d.architecture, d.file
            );
            if let Some(prefix) = &d.follow_depends {
                key.push_str(&format!(" follow {prefix}"));
            }
            if !d.modules.is_empty() {
                key.push_str(&format!(" modules {}", d.modules.join(",")));
            }
            key
        }
        Source::Url { url, sha256 } => format!("url {url} {sha256}"),
        Source::Path { path, .. } => format!("path {}", path.display()),
        Source::Generated(g) => format!("generated sha256-counter {:?} {}", g.seed, g.bytes),
    }
}
