//! Guest images: public sources declared in `guest-images/images.yaml`,
//! pinned in `guest-images/images.lock`, kept in a verified content-addressed
//! cache, and the initramfs the lab assembles from them.
//!
//! The runner calls [`prepare_guest`]; `lab fetch` calls
//! [`fetch_command`]. Both take [`ImageOptions`]; a [`Session`] with a fake
//! [`Fetcher`] runs the same code without network in tests.

pub mod cache;
pub mod deb;
pub mod debian;
pub mod fetch;
pub mod initramfs;
pub mod lock;
pub mod manifest;
pub mod modules;
pub mod resolve;
mod scenarios;

pub use scenarios::check_images;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use cache::{sha256_hex, Cache};
pub use fetch::{FetchError, Fetcher, HttpFetcher};
use lock::{source_key, LockFile, LockedImage};
use manifest::{BootFormat, ImageKind, Manifest, Source, RAW_LOAD_DEFAULT};
use resolve::{derived_key, Archive, Indexes};

/// Where the initramfs `/init` script lives in the workspace.
pub const INIT_SCRIPT_PATH: &str = "guest-images/init/init";

/// Shell scripts the initramfs carries in `/bin`, from `guest-images/init/`.
pub const INIT_SCRIPTS: &[&str] = &["lab-time"];

/// The arm64 Image header magic, `ARM\x64` at offset 0x38.
const ARM64_IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";
const ARM64_IMAGE_MAGIC_OFFSET: usize = 0x38;
const GZIP_MAGIC: &[u8; 2] = &[0x1f, 0x8b];
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// How images are obtained.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// Use only the cache; a miss is an error.
    pub offline: bool,
    /// The cache root; `None` means `$LAB_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/hvlab`, else `~/.cache/hvlab`.
    pub cache_dir: Option<PathBuf>,
}

/// The crates whose programs go into the initramfs's `/bin` (see
/// [`initramfs_programs`]).
pub const INITRAMFS_PROGRAMS: &[&str] = &["lab-clock"];

/// Builds the [`INITRAMFS_PROGRAMS`] (static Linux ELFs, for
/// `aarch64-unknown-none`) for [`prepare_guest`] and [`fetch_command`].
pub fn initramfs_programs(
    workspace_root: &Path,
    target_dir: &Path,
) -> Result<Vec<initramfs::Program>> {
    INITRAMFS_PROGRAMS
        .iter()
        .map(|krate| {
            Ok(initramfs::Program {
                name: (*krate).to_owned(),
                elf: crate::build::build_elf(workspace_root, target_dir, krate)?,
            })
        })
        .collect()
}

/// Host paths of what a VM boots (inside the cache; do not modify).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFiles {
    /// A raw (uncompressed) arm64 `Image`, or a bare-metal ELF or binary.
    pub kernel: PathBuf,
    /// How `kernel` boots (never [`BootFormat::Detect`]).
    pub format: BootFormat,
    /// The lab's gzip'd cpio initramfs, when asked for.
    pub initramfs: Option<PathBuf>,
}

/// The kernel of `image` (a `linux-kernel` or `bare-metal` image) and, if
/// `with_initramfs`, the lab's initramfs with that Linux kernel's modules
/// and `programs` (from [`initramfs_programs`]), fetched and built through
/// the cache.
pub fn prepare_guest(
    workspace_root: &Path,
    image: &str,
    with_initramfs: bool,
    programs: &[initramfs::Program],
    opts: &ImageOptions,
) -> Result<GuestFiles> {
    let fetcher = HttpFetcher::new();
    Session::open(workspace_root, opts, &fetcher)?
        .with_programs(programs.to_vec())
        .prepare_guest(image, with_initramfs)
}

/// The verified file of a disk image (kind `disk`), fetched or generated
/// through the cache.
pub fn disk_image(workspace_root: &Path, image: &str, opts: &ImageOptions) -> Result<PathBuf> {
    let fetcher = HttpFetcher::new();
    let mut session = Session::open(workspace_root, opts, &fetcher)?;
    let kind = session.manifest.require(image)?.kind;
    if kind != ImageKind::Disk {
        bail!("image {image} is a {kind:?} image, not a disk");
    }
    session.image_file(image)
}

/// `lab fetch [--update] [--offline]`: with `update`, re-resolves every
/// image and rewrites images.lock; then fetches and builds everything the
/// scenarios under `scenarios/` use, the initramfs with `programs`.
pub fn fetch_command(
    workspace_root: &Path,
    update: bool,
    programs: &[initramfs::Program],
    opts: &ImageOptions,
) -> Result<()> {
    let fetcher = HttpFetcher::new();
    Session::open(workspace_root, opts, &fetcher)?
        .with_programs(programs.to_vec())
        .fetch(update)
}

/// images.yaml, images.lock and the cache, opened once.
pub struct Session<'f> {
    root: PathBuf,
    pub manifest: Manifest,
    pub lock: LockFile,
    pub cache: Cache,
    fetcher: &'f dyn Fetcher,
    offline: bool,
    indexes: Indexes,
    /// What the initramfs carries in `/bin` besides busybox.
    programs: Vec<initramfs::Program>,
}

impl<'f> Session<'f> {
    pub fn open(
        workspace_root: &Path,
        opts: &ImageOptions,
        fetcher: &'f dyn Fetcher,
    ) -> Result<Session<'f>> {
        let manifest = Manifest::load(workspace_root)?;
        let lock = LockFile::load(workspace_root)?;
        let cache_dir = match &opts.cache_dir {
            Some(dir) => dir.clone(),
            None => cache::default_cache_dir()?,
        };
        Ok(Session {
            root: workspace_root.to_owned(),
            manifest,
            lock,
            cache: Cache::open(&cache_dir)?,
            fetcher,
            offline: opts.offline,
            indexes: Indexes::new(),
            programs: Vec::new(),
        })
    }

    /// The session, its initramfs carrying `programs` in `/bin` (none
    /// unless given).
    pub fn with_programs(mut self, programs: Vec<initramfs::Program>) -> Self {
        self.programs = programs;
        self
    }

    /// See [`prepare_guest`].
    pub fn prepare_guest(&mut self, image: &str, with_initramfs: bool) -> Result<GuestFiles> {
        let spec = self.manifest.require(image)?.clone();
        let format = match (spec.kind, spec.format) {
            (ImageKind::LinuxKernel, _) => BootFormat::LinuxImage,
            (ImageKind::BareMetal, _) if with_initramfs => {
                bail!(
                    "image {image} is a bare-metal image: the lab's initramfs needs a Linux kernel"
                )
            }
            (ImageKind::BareMetal, Some(format)) => {
                let kernel = self.image_file(image)?;
                let data = std::fs::read(&kernel)
                    .with_context(|| format!("cannot read {}", kernel.display()))?;
                let format = bare_format(image, format, &data)?;
                return Ok(GuestFiles {
                    kernel,
                    format,
                    initramfs: None,
                });
            }
            (kind, _) => bail!("image {image} is a {kind:?} image, not a kernel"),
        };
        let (kernel_file, modules) = match &spec.source {
            Source::Path { path, sha256 } => {
                (self.local_file(image, path, sha256.as_deref())?, Vec::new())
            }
            _ => {
                let locked = self.locked(image)?;
                let kernel = self.cache.object_path(&locked.file.sha256);
                let modules = locked
                    .modules
                    .iter()
                    .map(|m| (m.name.clone(), m.path.clone(), m.sha256.clone()))
                    .collect();
                (kernel, modules)
            }
        };
        let kernel = self.raw_kernel(image, &kernel_file)?;
        let initramfs = if with_initramfs {
            Some(self.initramfs(image, &modules)?)
        } else {
            None
        };
        Ok(GuestFiles {
            kernel,
            format,
            initramfs,
        })
    }

    /// See [`fetch_command`].
    pub fn fetch(&mut self, update: bool) -> Result<()> {
        let start = Instant::now();
        if update {
            self.update_lock()?;
        }
        let uses = scenarios::image_uses(&self.root)?;
        for (image, with_initramfs) in &uses {
            let kind = self.manifest.require(image)?.kind;
            let (kernel, initramfs) = match kind {
                ImageKind::LinuxKernel | ImageKind::BareMetal => {
                    let files = self.prepare_guest(image, *with_initramfs)?;
                    (files.kernel, files.initramfs)
                }
                _ => (self.image_file(image)?, None),
            };
            eprintln!("fetch: {image} ready: {}", kernel.display());
            if let Some(initramfs) = &initramfs {
                eprintln!("fetch: {image} initramfs ready: {}", initramfs.display());
            }
        }
        eprintln!(
            "fetch: {} image(s) ready in {} ({:.1}s)",
            uses.len(),
            self.cache.root().display(),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The file of any image, verified, as stored (not decompressed).
    pub fn image_file(&mut self, image: &str) -> Result<PathBuf> {
        let spec = self.manifest.require(image)?.clone();
        match &spec.source {
            Source::Path { path, sha256 } => self.local_file(image, path, sha256.as_deref()),
            _ => {
                let locked = self.locked(image)?;
                Ok(self.cache.object_path(&locked.file.sha256))
            }
        }
    }

    /// Re-resolves every image with a public source and rewrites the lock.
    pub fn update_lock(&mut self) -> Result<()> {
        if self.offline {
            bail!(
                "`fetch --update` resolves images against the archive; it cannot run with --offline"
            );
        }
        let mut archive = Archive::new(self.fetcher, &self.cache, false, &mut self.indexes);
        let mut lock = LockFile {
            schema: 1,
            images: Default::default(),
        };
        for image in &self.manifest.images {
            if matches!(image.source, Source::Path { .. }) {
                continue;
            }
            let locked = archive.resolve(&image.name, &image.source)?;
            report_resolved(&image.name, self.lock.images.get(&image.name), &locked);
            lock.images.insert(image.name.clone(), locked);
        }
        lock.save(&self.root)?;
        self.lock = lock;
        Ok(())
    }

    /// The lock entry of `image`, its files intact in the cache. An image the
    /// lock lacks, or whose images.yaml source changed, is resolved and the
    /// lock rewritten.
    fn locked(&mut self, image: &str) -> Result<LockedImage> {
        let spec = self.manifest.require(image)?;
        let current = self
            .lock
            .images
            .get(image)
            .filter(|l| l.source == source_key(&spec.source))
            .cloned();
        let mut archive = Archive::new(self.fetcher, &self.cache, self.offline, &mut self.indexes);
        let locked = match current {
            Some(locked) => {
                archive.materialize(image, &spec.source, &locked)?;
                locked
            }
            None => {
                if self.offline && !matches!(spec.source, Source::Generated(_)) {
                    bail!(
                        "image {image} has no current entry in guest-images/images.lock, and --offline forbids resolving it; run `cargo run -p lab -- fetch` while online"
                    );
                }
                eprintln!(
                    "fetch: image {image} is not pinned in guest-images/images.lock yet; resolving it"
                );
                let locked = archive.resolve(image, &spec.source)?;
                self.lock.images.insert(image.to_owned(), locked.clone());
                self.lock.save(&self.root)?;
                locked
            }
        };
        Ok(locked)
    }

    /// A local image file, checked against its `sha256` when it has one.
    /// A pinned file also goes into the content-addressed cache, like a
    /// download: a checkout where the path does not exist (a clone in
    /// another directory, `../shared` out of reach) still finds it there.
    fn local_file(&self, image: &str, path: &Path, sha256: Option<&str>) -> Result<PathBuf> {
        let path = self.root.join(path);
        let Some(expected) = sha256 else {
            if !path.is_file() {
                bail!(
                    "image {image}: {} does not exist; put the file there, or point its `path:` \
                     (or a `url:` with `sha256:`) in {} at where it is",
                    path.display(),
                    manifest::MANIFEST_PATH
                );
            }
            return Ok(path);
        };
        if !path.is_file() {
            return self.cache.get(expected, image)?.with_context(|| {
                format!(
                    "image {image}: {} does not exist and no file with its sha256 {expected} is \
                     in the image cache ({}); put the file there, or point its `path:` (or a \
                     `url:` with `sha256:`) in {} at where it is",
                    path.display(),
                    self.cache.root().display(),
                    manifest::MANIFEST_PATH
                )
            });
        }
        let data =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        self.cache.insert_expected(
            &data,
            expected,
            &format!("image {image}: {}", path.display()),
            &format!("update its sha256 in {}", manifest::MANIFEST_PATH),
        )
    }

    /// A raw arm64 Image from a gzip'd or raw kernel file.
    fn raw_kernel(&self, image: &str, file: &Path) -> Result<PathBuf> {
        let data = std::fs::read(file)
            .with_context(|| format!("cannot read the kernel of image {image}"))?;
        if !data.starts_with(GZIP_MAGIC) {
            check_arm64_image(image, &data)?;
            return Ok(file.to_owned());
        }
        let key = derived_key("raw-kernel-v1", &[&sha256_hex(&data)]);
        if let Some(path) = self
            .cache
            .get_derived(&key, &format!("kernel Image of {image}"))?
        {
            return Ok(path);
        }
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&data[..]), &mut raw)
            .with_context(|| format!("cannot un-gzip the kernel of image {image}"))?;
        check_arm64_image(image, &raw)?;
        self.cache.insert_derived(&key, &raw)
    }

    /// The initramfs with busybox, `/init`, the session's programs and
    /// `modules` (`(name, path in the package, sha256)` in load order),
    /// built once per set of inputs: every input's hash is in the cache key.
    fn initramfs(&mut self, image: &str, modules: &[(String, String, String)]) -> Result<PathBuf> {
        let busybox_image = self.manifest.busybox.clone();
        let busybox = self.image_file(&busybox_image)?;
        let busybox = std::fs::read(&busybox)
            .with_context(|| format!("cannot read {}", busybox.display()))?;
        let init_path = self.root.join(INIT_SCRIPT_PATH);
        let init = std::fs::read(&init_path)
            .with_context(|| format!("cannot read {}", init_path.display()))?;
        let mut programs = self.programs.clone();
        for script in INIT_SCRIPTS {
            let path = init_path.with_file_name(script);
            programs.push(initramfs::Program {
                name: (*script).to_owned(),
                elf: std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            });
        }
        let mut inputs = vec![sha256_hex(&busybox), sha256_hex(&init)];
        inputs.extend(
            programs
                .iter()
                .map(|p| format!("bin/{} {}", p.name, sha256_hex(&p.elf))),
        );
        inputs.extend(
            modules
                .iter()
                .map(|(name, _, sha256)| format!("{name} {sha256}")),
        );
        let key = derived_key(
            "initramfs-v1",
            &inputs.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        let what = format!("initramfs for image {image}");
        if let Some(path) = self.cache.get_derived(&key, &what)? {
            return Ok(path);
        }
        let mut elves = Vec::new();
        for (name, path, sha256) in modules {
            let file = self.cache.object_path(sha256);
            let data =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            elves.push((
                name.clone(),
                modules::decompress(path, &data).with_context(|| format!("module {name}"))?,
            ));
        }
        let archive = initramfs::build(initramfs::Inputs {
            busybox,
            init,
            programs,
            modules: elves,
        })
        .with_context(|| format!("cannot build the {what}"))?;
        self.cache.insert_derived(&key, &archive)
    }
}

/// How a bare-metal image's `data` boots: its declared format, checked
/// against the file, or the one its magic says.
fn bare_format(image: &str, declared: BootFormat, data: &[u8]) -> Result<BootFormat> {
    let is_elf = data.starts_with(ELF_MAGIC);
    match declared {
        BootFormat::Elf if !is_elf => {
            bail!("image {image} is declared `format: elf` but its file is not an ELF")
        }
        BootFormat::Raw { .. } if is_elf => bail!(
            "image {image} is declared `format: raw` but its file is an ELF: drop `format: raw` \
             and its addresses, or give the raw binary"
        ),
        BootFormat::LinuxImage => bail!("image {image} is a bare-metal image, not Linux"),
        BootFormat::Detect if is_elf => Ok(BootFormat::Elf),
        BootFormat::Detect => Ok(BootFormat::Raw {
            load: RAW_LOAD_DEFAULT,
            entry: RAW_LOAD_DEFAULT,
        }),
        format => Ok(format),
    }
}

fn check_arm64_image(image: &str, data: &[u8]) -> Result<()> {
    let magic =
        data.get(ARM64_IMAGE_MAGIC_OFFSET..ARM64_IMAGE_MAGIC_OFFSET + ARM64_IMAGE_MAGIC.len());
    if magic != Some(&ARM64_IMAGE_MAGIC[..]) {
        bail!(
            "the kernel of image {image} is not an arm64 Linux Image (no ARM\\x64 magic at 0x38)"
        );
    }
    Ok(())
}

fn report_resolved(image: &str, old: Option<&LockedImage>, new: &LockedImage) {
    let describe = |l: &LockedImage| match (&l.package, &l.version) {
        (Some(p), Some(v)) => format!("{p} {v}"),
        _ => l.url.clone(),
    };
    match old {
        Some(old) if old == new => eprintln!("fetch: {image}: {} (unchanged)", describe(new)),
        Some(old) => eprintln!("fetch: {image}: {} -> {}", describe(old), describe(new)),
        None => eprintln!("fetch: {image}: {}", describe(new)),
    }
}
