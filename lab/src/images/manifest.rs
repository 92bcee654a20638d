//! `guest-images/images.yaml`: the public sources of guest images, a closed
//! schema (unknown fields are errors) validated into typed [`Image`]s. Errors
//! read `file:line:column: field: message`, like the scenario loader's.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::cache::is_sha256;

/// Where images.yaml lives in the workspace.
pub const MANIFEST_PATH: &str = "guest-images/images.yaml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    schema: u32,
    busybox: String,
    images: Vec<RawImage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawImage {
    name: String,
    description: String,
    kind: ImageKind,
    debian: Option<DebianSource>,
    url: Option<String>,
    sha256: Option<String>,
    path: Option<PathBuf>,
}

/// What an image is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageKind {
    /// An arm64 Linux kernel (gzip'd or raw `Image`), with modules when it
    /// comes from a Debian package.
    LinuxKernel,
    /// A static busybox binary for the initramfs.
    Busybox,
    /// A bare-metal guest binary booted as it is.
    BareMetal,
}

/// A binary package in the Debian archive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DebianSource {
    pub package: String,
    /// Follow `Depends` entries starting with this prefix from `package`
    /// (a metapackage) to the package that holds the files.
    pub follow_depends: Option<String>,
    pub suite: String,
    pub architecture: String,
    /// The file to take, a path in the package where `*` matches within one
    /// component (`boot/vmlinuz-*`).
    pub file: String,
    /// Kernel modules to take with their dependencies (linux-kernel only).
    #[serde(default)]
    pub modules: Vec<String>,
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Debian(DebianSource),
    Url {
        url: String,
        sha256: String,
    },
    /// A local file, relative to the workspace root unless absolute.
    Path(PathBuf),
}

/// One validated image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub description: String,
    pub kind: ImageKind,
    pub source: Source,
}

/// images.yaml, validated.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub path: PathBuf,
    /// The image whose busybox goes into the initramfs.
    pub busybox: String,
    pub images: Vec<Image>,
}

impl Manifest {
    /// Reads and validates `<workspace_root>/guest-images/images.yaml`.
    pub fn load(workspace_root: &Path) -> Result<Manifest, ManifestError> {
        let path = workspace_root.join(MANIFEST_PATH);
        let text = std::fs::read_to_string(&path).map_err(|err| ManifestError {
            file: path.clone(),
            location: None,
            message: format!("cannot read: {err}"),
        })?;
        Manifest::parse(&path, &text)
    }

    /// Validates the text of an images.yaml; `path` is for messages.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawFile =
            serde_yaml::from_str(text).map_err(|err| ManifestError::from_yaml(path, &err))?;
        let at_in =
            |image: Option<&str>, key: &str, value: &str, field: String, message: String| {
                let (line, column) = locate(text, image, key, value);
                ManifestError {
                    file: path.to_owned(),
                    location: Some((line, column)),
                    message: format!("{field}: {message}"),
                }
            };
        let at = |key: &str, value: &str, field: String, message: String| {
            at_in(None, key, value, field, message)
        };
        if raw.schema != 1 {
            return Err(at(
                "schema",
                "",
                "schema".into(),
                format!("version {} is not supported; this lab reads 1", raw.schema),
            ));
        }
        let mut images: Vec<Image> = Vec::new();
        for (index, image) in raw.images.into_iter().enumerate() {
            let field = |name: &str| format!("images[{index}].{name}");
            let name = image.name.clone();
            let at = |key: &str, value: &str, field: String, message: String| {
                at_in(Some(&name), key, value, field, message)
            };
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid_name {
                return Err(at(
                    "name",
                    &name,
                    field("name"),
                    format!("{name:?} must be lowercase letters, digits and `-`"),
                ));
            }
            if images.iter().any(|i| i.name == name) {
                return Err(at(
                    "name",
                    &name,
                    field("name"),
                    format!("image {name} is declared twice"),
                ));
            }
            let source = match (image.debian, image.url, image.sha256, image.path) {
                (Some(debian), None, None, None) => {
                    check_debian(&debian, image.kind)
                        .map_err(|(key, msg)| at(key, "", field(&format!("debian.{key}")), msg))?;
                    Source::Debian(debian)
                }
                (None, Some(url), Some(sha256), None) => {
                    if !url.starts_with("https://") && !url.starts_with("http://") {
                        return Err(at(
                            "url",
                            &url,
                            field("url"),
                            format!("{url:?} is not an http(s) URL"),
                        ));
                    }
                    if !is_sha256(&sha256) {
                        return Err(at(
                            "sha256",
                            &sha256,
                            field("sha256"),
                            "must be 64 lowercase hex digits".into(),
                        ));
                    }
                    Source::Url { url, sha256 }
                }
                (None, Some(url), None, None) => {
                    return Err(at(
                        "url",
                        &url,
                        field("sha256"),
                        "a url image needs its sha256".into(),
                    ));
                }
                (None, None, None, Some(path)) => Source::Path(path),
                _ => {
                    return Err(at(
                        "name",
                        &name,
                        format!("images[{index}]"),
                        "needs exactly one source: `debian`, `url` with `sha256`, or `path`".into(),
                    ));
                }
            };
            images.push(Image {
                name,
                description: image.description,
                kind: image.kind,
                source,
            });
        }
        let manifest = Manifest {
            path: path.to_owned(),
            busybox: raw.busybox,
            images,
        };
        match manifest.image(&manifest.busybox) {
            Some(image) if image.kind == ImageKind::Busybox => Ok(manifest),
            _ => Err(at(
                "busybox",
                "",
                "busybox".into(),
                format!("{:?} is not an image of kind busybox", manifest.busybox),
            )),
        }
    }

    pub fn image(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.name == name)
    }

    /// The image `name`, or an error that lists the declared names.
    pub fn require(&self, name: &str) -> anyhow::Result<&Image> {
        self.image(name).ok_or_else(|| {
            let names: Vec<&str> = self.images.iter().map(|i| i.name.as_str()).collect();
            anyhow::anyhow!(
                "image {name:?} is not declared in {} (declared: {})",
                self.path.display(),
                names.join(", ")
            )
        })
    }
}

/// Checks a Debian source; the error names the offending key.
fn check_debian(debian: &DebianSource, kind: ImageKind) -> Result<(), (&'static str, String)> {
    for (key, value) in [
        ("package", &debian.package),
        ("suite", &debian.suite),
        ("architecture", &debian.architecture),
        ("file", &debian.file),
    ] {
        if value.is_empty() || value.contains(char::is_whitespace) {
            return Err((key, format!("{value:?} must be one non-empty word")));
        }
    }
    if debian.file.starts_with('/') || debian.file.split('/').any(|c| c == "..") {
        return Err(("file", "must be a relative path inside the package".into()));
    }
    if !debian.modules.is_empty() && kind != ImageKind::LinuxKernel {
        return Err(("modules", "only linux-kernel images take modules".into()));
    }
    Ok(())
}

/// An images.yaml the lab cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl ManifestError {
    fn from_yaml(file: &Path, err: &serde_yaml::Error) -> ManifestError {
        let mut message = err.to_string();
        let location = err.location().map(|l| (l.line(), l.column()));
        if let Some((line, column)) = location {
            let suffix = format!(" at line {line} column {column}");
            if let Some(pos) = message.find(&suffix) {
                message.replace_range(pos..pos + suffix.len(), "");
            }
        }
        ManifestError {
            file: file.to_owned(),
            location,
            message,
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

/// The 1-based line and column of the first `key:` line containing `value`,
/// searching from the `name:` line of `image` when given; 1:1 when there is
/// none.
fn locate(text: &str, image: Option<&str>, key: &str, value: &str) -> (usize, usize) {
    let start = image
        .and_then(|image| {
            text.lines().position(|line| {
                line.trim_start()
                    .trim_start_matches("- ")
                    .strip_prefix("name:")
                    .is_some_and(|v| v.trim() == image)
            })
        })
        .unwrap_or(0);
    let needle = format!("{key}:");
    for (index, line) in text.lines().enumerate().skip(start) {
        let body = line.trim_start().trim_start_matches("- ");
        if body.starts_with(&needle) && line.contains(value) {
            return (index + 1, line.len() - body.len() + 1);
        }
    }
    (1, 1)
}
