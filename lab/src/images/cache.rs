//! The content-addressed cache: every object is stored under its sha256,
//! written atomically (a temporary file renamed in the same directory) and
//! verified each time it is used. A corrupted object is reported, removed and
//! fetched again; offline, a missing object is an error that names it.
//!
//! Layout under the root (`$LAB_CACHE_DIR`, else `$XDG_CACHE_HOME/hvlab`,
//! else `~/.cache/hvlab`):
//! - `objects/<sha256>`: downloads, files taken from packages, built images;
//! - `derived/<key>`: the sha256 of the object built from inputs whose hashes
//!   make up `key` (the raw kernel Image, the initramfs).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::fetch::{FetchError, Fetcher};

/// Temporary files older than this are left over from a killed run.
const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);
const TEMP_PREFIX: &str = ".tmp-";

/// The cache directory from the environment, in the documented order.
pub fn default_cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("LAB_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("hvlab"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("hvlab")),
        None => bail!("no cache directory: set LAB_CACHE_DIR (or XDG_CACHE_HOME or HOME)"),
    }
}

/// The lowercase hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The lowercase hex sha256 of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
    }
}

/// Whether `text` is a well-formed sha256 in lowercase hex.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The content-addressed store.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// Opens (creating it if needed) the cache at `root` and removes
    /// temporary files a killed run left behind.
    pub fn open(root: &Path) -> Result<Cache> {
        let cache = Cache {
            root: root.to_owned(),
        };
        for dir in [cache.objects_dir(), cache.derived_dir()] {
            fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create the cache directory {}", dir.display()))?;
            remove_stale_temps(&dir);
        }
        Ok(cache)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn objects_dir(&self) -> PathBuf {
        self.root.join("objects")
    }

    fn derived_dir(&self) -> PathBuf {
        self.root.join("derived")
    }

    /// Where the object with this sha256 lives (whether or not it exists).
    pub fn object_path(&self, sha256: &str) -> PathBuf {
        self.objects_dir().join(sha256)
    }

    /// The path of a present and intact object. A corrupted object is
    /// reported on stderr and removed, and counts as missing.
    pub fn get(&self, sha256: &str, what: &str) -> Result<Option<PathBuf>> {
        let path = self.object_path(sha256);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        let actual =
            sha256_reader(file).with_context(|| format!("cannot read {}", path.display()))?;
        if actual == sha256 {
            return Ok(Some(path));
        }
        eprintln!(
            "warning: cache entry {} ({what}) is corrupted: its sha256 is {actual}, expected {sha256}; removed it, fetching it again",
            path.display()
        );
        fs::remove_file(&path)
            .with_context(|| format!("cannot remove the corrupted {}", path.display()))?;
        Ok(None)
    }

    /// Stores `data` and returns its sha256 and path.
    pub fn insert(&self, data: &[u8]) -> Result<(String, PathBuf)> {
        let sha256 = sha256_hex(data);
        let path = self.object_path(&sha256);
        if self.get(&sha256, "new object")?.is_none() {
            self.write_atomically(&path, |file| file.write_all(data).map_err(Into::into))?;
        }
        Ok((sha256, path))
    }

    /// Stores `data`, which must have the sha256 `expected`: a mismatch is an
    /// error whose message starts with `what` and ends with `hint`.
    pub fn insert_expected(
        &self,
        data: &[u8],
        expected: &str,
        what: &str,
        hint: &str,
    ) -> Result<PathBuf> {
        let actual = sha256_hex(data);
        if actual != expected {
            bail!("{what} has sha256 {actual}, but {expected} is expected; {hint}");
        }
        Ok(self.insert(data)?.1)
    }

    /// The intact object `sha256`, downloaded from `url` on a miss (unless
    /// `offline`). `hint` says how to fix a download whose hash differs.
    pub fn fetch(
        &self,
        fetcher: &dyn Fetcher,
        request: &FetchRequest<'_>,
        offline: bool,
    ) -> Result<PathBuf, FetchError> {
        let FetchRequest {
            url,
            sha256,
            what,
            hint,
        } = *request;
        if let Some(path) = self.get(sha256, what).map_err(FetchError::Other)? {
            return Ok(path);
        }
        if offline {
            return Err(FetchError::Other(anyhow::anyhow!(
                "{what} (sha256 {sha256}) is not in the cache {} and --offline forbids downloading it from {url}; run `cargo run -p lab -- fetch` while online",
                self.root.display()
            )));
        }
        let path = self.object_path(sha256);
        let mut temp = self
            .temp_file(&self.objects_dir())
            .map_err(FetchError::Other)?;
        fetcher.fetch(url, what, temp.as_file_mut())?;
        let actual = temp
            .as_file_mut()
            .sync_all()
            .and_then(|()| File::open(temp.path()))
            .and_then(sha256_reader)
            .map_err(|err| FetchError::Other(anyhow::anyhow!("cannot read back {what}: {err}")))?;
        if actual != sha256 {
            return Err(FetchError::Other(anyhow::anyhow!(
                "{what} downloaded from {url} has sha256 {actual}, but {sha256} is expected; {hint}"
            )));
        }
        temp.persist(&path).map_err(|err| {
            FetchError::Other(anyhow::anyhow!(
                "cannot store {}: {}",
                path.display(),
                err.error
            ))
        })?;
        Ok(path)
    }

    /// The object recorded under the derived `key`, if it is still intact.
    pub fn get_derived(&self, key: &str, what: &str) -> Result<Option<PathBuf>> {
        let record = self.derived_dir().join(key);
        let sha256 = match fs::read_to_string(&record) {
            Ok(text) => text.trim().to_owned(),
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read {}", record.display()));
            }
        };
        if !is_sha256(&sha256) {
            eprintln!(
                "warning: cache record {} ({what}) is corrupted; removed it, building again",
                record.display()
            );
            fs::remove_file(&record)
                .with_context(|| format!("cannot remove {}", record.display()))?;
            return Ok(None);
        }
        self.get(&sha256, what)
    }

    /// Stores `data` as the object derived from `key`.
    pub fn insert_derived(&self, key: &str, data: &[u8]) -> Result<PathBuf> {
        let (sha256, path) = self.insert(data)?;
        let record = self.derived_dir().join(key);
        self.write_atomically(&record, |file| {
            writeln!(file, "{sha256}").map_err(Into::into)
        })?;
        Ok(path)
    }

    fn temp_file(&self, dir: &Path) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .permissions(std::fs::Permissions::from_mode(0o644))
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a temporary file in {}", dir.display()))
    }

    /// Writes `path` through a temporary file in its directory, renamed into
    /// place once complete: readers never see a half-written file, and a
    /// failed write leaves nothing behind.
    fn write_atomically(
        &self,
        path: &Path,
        write: impl FnOnce(&mut File) -> Result<()>,
    ) -> Result<()> {
        let dir = path.parent().context("cache path without a directory")?;
        let mut temp = self.temp_file(dir)?;
        write(temp.as_file_mut()).with_context(|| format!("cannot write {}", path.display()))?;
        temp.as_file_mut()
            .sync_all()
            .with_context(|| format!("cannot write {}", path.display()))?;
        temp.persist(path)
            .map_err(|err| err.error)
            .with_context(|| format!("cannot store {}", path.display()))?;
        Ok(())
    }
}

/// One download into the cache.
#[derive(Debug, Clone, Copy)]
pub struct FetchRequest<'a> {
    pub url: &'a str,
    pub sha256: &'a str,
    /// What the object is, for messages (`busybox-static_1.35 .deb`).
    pub what: &'a str,
    /// How to fix a download whose hash differs from `sha256`.
    pub hint: &'a str,
}

/// Writes `path` atomically outside the cache (the lock file).
pub fn write_file_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().context("path without a directory")?;
    let mut temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    temp.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))?;
    temp.persist(path)
        .map_err(|err| err.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let is_temp = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok());
        if is_temp && age.is_some_and(|age| age > STALE_TEMP_AGE) {
            // Best effort: another run may have removed it first.
            let _ = fs::remove_file(entry.path());
        }
    }
}
