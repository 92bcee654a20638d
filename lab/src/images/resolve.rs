//! The Debian archive client and the taking of files from packages:
//! `dists/<suite>/Release` → `main/binary-<arch>/Packages.xz` (checked
//! against the Release hashes, cached) → the `.deb` (checked against the
//! index, cached) → the files images.yaml asks for, into the cache.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{bail, Context, Result};

use super::cache::{sha256_hex, Cache, FetchRequest};
use super::deb::{for_each_file, path_matches};
use super::debian::{mirror, parse_release, PackageIndex, DEFAULT_MIRROR, MIRROR_ENV};
use super::fetch::{FetchError, Fetcher};
use super::lock::{source_key, LockedFile, LockedImage, LockedModule};
use super::manifest::{DebianSource, Source};
use super::modules::{self, is_module_path, load_order, module_name};

/// What to run when the lock no longer matches the archive.
pub const UPDATE_HINT: &str = "run `cargo run -p lab -- fetch --update` to re-resolve the images and rewrite guest-images/images.lock";

/// Package indexes parsed in this run, by suite and architecture.
pub type Indexes = HashMap<(String, String), Rc<PackageIndex>>;

/// Downloads through the cache, remembering the package indexes it parsed.
pub struct Archive<'a> {
    pub fetcher: &'a dyn Fetcher,
    pub cache: &'a Cache,
    pub offline: bool,
    indexes: &'a mut Indexes,
}

impl<'a> Archive<'a> {
    pub fn new(
        fetcher: &'a dyn Fetcher,
        cache: &'a Cache,
        offline: bool,
        indexes: &'a mut Indexes,
    ) -> Archive<'a> {
        Archive {
            fetcher,
            cache,
            offline,
            indexes,
        }
    }

    /// Resolves `source` afresh: for a Debian source, the package now in the
    /// archive and the files taken from it, stored in the cache.
    pub fn resolve(&mut self, image: &str, source: &Source) -> Result<LockedImage> {
        if self.offline && !matches!(source, Source::Generated(_)) {
            bail!(
                "image {image} must be resolved against the archive, but --offline forbids it; run `cargo run -p lab -- fetch` while online"
            );
        }
        match source {
            Source::Debian(debian) => self.resolve_debian(image, source, debian),
            Source::Url { url, sha256 } => {
                let hint = "check `url` and `sha256` in guest-images/images.yaml";
                self.download(url, sha256, &format!("image {image}"), hint, hint)?;
                let name = url.rsplit('/').next().unwrap_or(url).to_owned();
                Ok(LockedImage {
                    source: source_key(source),
                    package: None,
                    version: None,
                    url: url.clone(),
                    sha256: sha256.clone(),
                    file: LockedFile {
                        path: name,
                        sha256: sha256.clone(),
                    },
                    modules: Vec::new(),
                    builtin: Vec::new(),
                })
            }
            Source::Path { .. } => {
                bail!("image {image} is a local file; it has nothing to resolve")
            }
            Source::Generated(generated) => {
                let (sha256, _) = self.cache.insert(&generated.generate())?;
                Ok(generated_lock(image, source, sha256))
            }
        }
    }

    /// Makes sure every file a lock entry names is intact in the cache,
    /// downloading and unpacking its package if one is missing, or
    /// generating what the lab generates (also offline: nothing to fetch).
    pub fn materialize(
        &mut self,
        image: &str,
        source: &Source,
        locked: &LockedImage,
    ) -> Result<()> {
        if let Source::Generated(generated) = source {
            let what = format!("generated image {image}");
            if self.cache.get(&locked.sha256, &what)?.is_none() {
                let hint = format!(
                    "the generator or images.yaml changed since images.lock was written; {UPDATE_HINT}"
                );
                self.cache
                    .insert_expected(&generated.generate(), &locked.sha256, &what, &hint)?;
            }
            return Ok(());
        }
        let mut wanted: Vec<(&str, &str)> = vec![(&locked.file.path, &locked.file.sha256)];
        wanted.extend(
            locked
                .modules
                .iter()
                .map(|m| (m.path.as_str(), m.sha256.as_str())),
        );
        let mut missing = BTreeMap::new();
        for (path, sha256) in wanted {
            if self
                .cache
                .get(sha256, &format!("{path} of image {image}"))?
                .is_none()
            {
                missing.insert(path.to_owned(), sha256.to_owned());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let what = match (&locked.package, &locked.version) {
            (Some(package), Some(version)) => format!("{package} {version}"),
            _ => format!("image {image}"),
        };
        let hint = format!(
            "the expected sha256 comes from guest-images/images.lock: if the lock was edited, restore it (`git checkout guest-images/images.lock`), else {UPDATE_HINT}"
        );
        let gone = if locked.package.is_some() {
            UPDATE_HINT
        } else {
            "check `url` in guest-images/images.yaml"
        };
        let download = self.download(&relocate(&locked.url), &locked.sha256, &what, &hint, gone)?;
        if locked.package.is_none() {
            return Ok(());
        }
        let mut found = BTreeSet::new();
        let deb =
            File::open(&download).with_context(|| format!("cannot open {}", download.display()))?;
        for_each_file(BufReader::new(deb), |path, contents| {
            if let Some(sha256) = missing.get(path) {
                let data = read_all(contents)?;
                let hint = format!(
                    "images.lock is wrong or the package changed; restore the lock or {UPDATE_HINT}"
                );
                self.cache
                    .insert_expected(&data, sha256, &format!("{path} from {what}"), &hint)?;
                found.insert(path.to_owned());
            }
            Ok(())
        })
        .with_context(|| format!("cannot unpack {what}"))?;
        if let Some(path) = missing.keys().find(|p| !found.contains(*p)) {
            bail!("{what} has no file {path}, which images.lock names; {UPDATE_HINT}");
        }
        Ok(())
    }

    fn resolve_debian(
        &mut self,
        image: &str,
        source: &Source,
        debian: &DebianSource,
    ) -> Result<LockedImage> {
        let index = self.index(&debian.suite, &debian.architecture)?;
        let package = index
            .resolve(&debian.package, debian.follow_depends.as_deref())
            .with_context(|| {
                format!(
                    "image {image}: cannot resolve in {} {}/{}",
                    mirror(),
                    debian.suite,
                    debian.architecture
                )
            })?;
        let what = format!("{} {}", package.name, package.version);
        let url = format!("{}/{}", mirror(), package.filename);
        let deb = self.download(
            &url,
            &package.sha256,
            &what,
            "the mirror served a different file than its index lists; try again or another mirror",
            "the mirror lists a package it does not have; try again later or another mirror",
        )?;
        let taken = take(&deb, debian)
            .with_context(|| format!("image {image}: cannot take files from {what}"))?;
        let store = |path: &str, data: &[u8]| -> Result<LockedFile> {
            let (sha256, _) = self.cache.insert(data)?;
            Ok(LockedFile {
                path: path.to_owned(),
                sha256,
            })
        };
        let file = store(&taken.file.0, &taken.file.1)?;
        let mut modules = Vec::new();
        for (name, path, data) in &taken.modules {
            let stored = store(path, data)?;
            modules.push(LockedModule {
                name: name.clone(),
                path: stored.path,
                sha256: stored.sha256,
            });
        }
        Ok(LockedImage {
            source: source_key(source),
            package: Some(package.name.clone()),
            version: Some(package.version.clone()),
            url: canonical_url(&package.filename),
            sha256: package.sha256.clone(),
            file,
            modules,
            builtin: taken.builtin,
        })
    }

    /// The package index of one suite and architecture, parsed once.
    fn index(&mut self, suite: &str, architecture: &str) -> Result<Rc<PackageIndex>> {
        let key = (suite.to_owned(), architecture.to_owned());
        if let Some(index) = self.indexes.get(&key) {
            return Ok(index.clone());
        }
        let base = format!("{}/dists/{suite}", mirror());
        let (release_url, release) = self.release(&base, suite)?;
        let release = parse_release(&String::from_utf8_lossy(&release))
            .with_context(|| format!("bad Release file at {release_url}"))?;
        let member = format!("main/binary-{architecture}/Packages.xz");
        let entry = release.get(&member).with_context(|| {
            format!(
                "{release_url} lists no {member}: is {architecture} an architecture of {suite}?"
            )
        })?;
        let url = format!("{base}/{member}");
        let path = self.download(
            &url,
            &entry.sha256,
            &format!("{suite}/{architecture} Packages.xz"),
            "the index does not match its Release file; try again later or another mirror",
            "the mirror is incomplete; try again later or another mirror",
        )?;
        let mut text = String::new();
        xz2::read::XzDecoder::new(BufReader::new(File::open(&path)?))
            .read_to_string(&mut text)
            .with_context(|| format!("cannot decompress {url}"))?;
        let index = Rc::new(
            PackageIndex::parse(&text).with_context(|| format!("bad package index {url}"))?,
        );
        self.indexes.insert(key, index.clone());
        Ok(index)
    }

    /// The suite's `Release`, or its `InRelease` (the same text, signed)
    /// where a mirror has only that; with the URL it came from.
    fn release(&self, base: &str, suite: &str) -> Result<(String, Vec<u8>)> {
        for name in ["Release", "InRelease"] {
            let url = format!("{base}/{name}");
            let mut text = Vec::new();
            match self
                .fetcher
                .fetch(&url, &format!("{suite} {name}"), &mut text)
            {
                Ok(()) => return Ok((url, text)),
                Err(FetchError::NotFound { .. }) => continue,
                Err(err) => return Err(unreachable_archive(err, &url)),
            }
        }
        bail!(
            "{base} has neither Release nor InRelease: is {suite} a suite of the mirror {}?",
            mirror()
        )
    }

    /// One verified download through the cache; `hint` says how to fix a
    /// file with the wrong hash, `gone` one that is not there (404).
    fn download(
        &self,
        url: &str,
        sha256: &str,
        what: &str,
        hint: &str,
        gone: &str,
    ) -> Result<PathBuf> {
        let request = FetchRequest {
            url,
            sha256,
            what,
            hint,
        };
        self.cache
            .fetch(self.fetcher, &request, self.offline)
            .map_err(|err| match err {
                FetchError::NotFound { url } => {
                    anyhow::anyhow!("{what} is no longer available: {url} answers 404; {gone}")
                }
                other => unreachable_archive(other, url),
            })
    }
}

/// The lock entry of a generated image with this sha256; its `url` names
/// the generator, not a download.
fn generated_lock(image: &str, source: &Source, sha256: String) -> LockedImage {
    LockedImage {
        source: source_key(source),
        package: None,
        version: None,
        url: format!("lab-generated:{image}"),
        sha256: sha256.clone(),
        file: LockedFile {
            path: image.to_owned(),
            sha256,
        },
        modules: Vec::new(),
        builtin: Vec::new(),
    }
}

fn unreachable_archive(err: FetchError, url: &str) -> anyhow::Error {
    match err {
        FetchError::Failed { .. } => {
            let mirror = mirror();
            let server = if url.starts_with(&mirror) {
                format!("the Debian mirror {mirror} ({MIRROR_ENV} selects another)")
            } else {
                "the server".to_owned()
            };
            anyhow::anyhow!(
                "{err}; check the network and {server}, or run with --offline if the cache is warm"
            )
        }
        FetchError::NotFound { .. } => anyhow::anyhow!("{err}"),
        FetchError::Other(err) => err,
    }
}

/// The URL the lock records for a pool path: always the default mirror, so
/// the lock does not depend on who wrote it.
fn canonical_url(filename: &str) -> String {
    format!("{DEFAULT_MIRROR}/{filename}")
}

/// A locked URL moved to the configured mirror.
fn relocate(url: &str) -> String {
    match url.strip_prefix(DEFAULT_MIRROR) {
        Some(rest) => format!("{}{rest}", mirror()),
        None => url.to_owned(),
    }
}

fn read_all(reader: &mut dyn Read) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    reader.read_to_end(&mut data)?;
    Ok(data)
}

/// The files taken from one package.
#[derive(Debug, Default)]
pub struct Taken {
    /// `(path, contents)` of the file images.yaml names.
    pub file: (String, Vec<u8>),
    /// `(name, path, contents as packaged)` in load order.
    pub modules: Vec<(String, String, Vec<u8>)>,
    /// Wanted modules and dependencies that are built into the kernel.
    pub builtin: Vec<String>,
}

/// Takes the file and the module closure `debian` asks for from a `.deb`: a
/// first pass finds them and reads every module's `depends=`, a second reads
/// the modules to load.
pub fn take(deb: &std::path::Path, debian: &DebianSource) -> Result<Taken> {
    let open = || -> Result<BufReader<File>> {
        Ok(BufReader::new(File::open(deb).with_context(|| {
            format!("cannot open {}", deb.display())
        })?))
    };
    let mut matches = Vec::new();
    let mut builtin_text = None;
    let mut depends = BTreeMap::new();
    let mut paths = BTreeMap::new();
    let wants_modules = !debian.modules.is_empty();
    for_each_file(open()?, |path, contents| {
        // Bookworm ships modules under lib/modules/, trixie (merged /usr)
        // under usr/lib/modules/.
        let tree = path.strip_prefix("usr/").unwrap_or(path);
        if path_matches(&debian.file, path) {
            matches.push((path.to_owned(), read_all(contents)?));
        } else if wants_modules && path_matches("lib/modules/*/modules.builtin", tree) {
            builtin_text = Some(String::from_utf8_lossy(&read_all(contents)?).into_owned());
        } else if wants_modules && tree.starts_with("lib/modules/") && is_module_path(path) {
            let elf = modules::decompress(path, &read_all(contents)?)?;
            let info = modules::modinfo(&elf, &module_name(path))?;
            paths.insert(info.name.clone(), path.to_owned());
            depends.insert(info.name, info.depends);
        }
        Ok(())
    })?;
    let file = match matches.len() {
        1 => matches.remove(0),
        0 => bail!("no file matches {:?}", debian.file),
        _ => {
            let names: Vec<&str> = matches.iter().map(|(p, _)| p.as_str()).collect();
            bail!(
                "{:?} matches several files: {}",
                debian.file,
                names.join(", ")
            )
        }
    };
    if !wants_modules {
        return Ok(Taken {
            file,
            ..Taken::default()
        });
    }
    let builtin = modules::parse_builtin(
        &builtin_text.context("the package has no (usr/)lib/modules/*/modules.builtin")?,
    );
    let order = load_order(&debian.modules, &depends, &builtin)?;
    let mut contents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let wanted: BTreeSet<&str> = order.iter().map(|name| paths[name].as_str()).collect();
    for_each_file(open()?, |path, data| {
        if wanted.contains(path) {
            contents.insert(path.to_owned(), read_all(data)?);
        }
        Ok(())
    })?;
    let mut modules = Vec::new();
    for name in order {
        let path = paths[&name].clone();
        let data = contents
            .remove(&path)
            .with_context(|| format!("{path} vanished between two reads"))?;
        modules.push((name, path, data));
    }
    let needed: BTreeSet<&String> = debian
        .modules
        .iter()
        .chain(modules.iter().flat_map(|(name, _, _)| &depends[name]))
        .collect();
    let builtin = needed
        .into_iter()
        .filter(|m| builtin.contains(*m))
        .cloned()
        .collect();
    Ok(Taken {
        file,
        modules,
        builtin,
    })
}

/// The sha256 a derived-cache key is made of: a recipe name and its inputs.
pub fn derived_key(recipe: &str, inputs: &[&str]) -> String {
    sha256_hex(format!("{recipe}\n{}", inputs.join("\n")).as_bytes())
}
