//! The secure world of `machine.secure-world: true`: TF-A (BL1, BL2, BL31
//! with the SPMD) and OP-TEE as the S-EL1 SPMC, built from Debian's source
//! packages with Debian's `aarch64-linux-gnu-` cross compiler, packed into
//! the flash image QEMU's `-bios` takes, and cached.
//!
//! The source files are pinned by their sha256 as the suites' `Sources.xz`
//! list them (like images.lock pins binary packages) and fetched from the
//! archive's pool into the content-addressed cache. The flash image is
//! cached under a key over those hashes, the build flags, the SPMC manifest
//! and the compiler's version, so only the first run (or a changed input)
//! builds. The hypervisor is BL33 but not in the flash: TF-A is built with
//! `PRELOADED_BL33_BASE` = [`BL33_BASE`] and QEMU loads the hypervisor
//! there, so one flash image serves every hypervisor build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::images::cache::{self, Cache, FetchRequest};
use crate::images::debian::mirror;
use crate::images::fetch::HttpFetcher;

/// Where TF-A enters BL33 and QEMU loads the hypervisor: its link address
/// (RAM base + the 2 MiB `text_offset`), clear of the 1 MiB DTB TF-A keeps
/// at the start of RAM.
pub const BL33_BASE: u64 = 0x4020_0000;

/// The cross compiler prefix, from Debian's `gcc-aarch64-linux-gnu`.
pub const CROSS_COMPILE: &str = "aarch64-linux-gnu-";

/// What a machine needs to build the secure world (Debian packages).
pub const BUILD_PACKAGES: &str = "gcc-aarch64-linux-gnu make device-tree-compiler python3-cryptography python3-pyelftools libssl-dev patch xz-utils";

/// A Debian source package, pinned.
struct SourcePackage {
    name: &'static str,
    version: &'static str,
    /// The suite whose `Sources.xz` lists this version.
    suite: &'static str,
    /// `pool/main/...` directory of the package.
    directory: &'static str,
    /// The upstream tarball, then the Debian tarball: (file, sha256).
    orig: (&'static str, &'static str),
    debian: (&'static str, &'static str),
}

const TF_A: SourcePackage = SourcePackage {
    name: "arm-trusted-firmware",
    version: "2.12.1+dfsg-1",
    suite: "trixie",
    directory: "pool/main/a/arm-trusted-firmware",
    orig: (
        "arm-trusted-firmware_2.12.1+dfsg.orig.tar.xz",
        "332c08d71867b7f0dce0bce4cb2abd80f19cb3e0a2de6fe07245c111189d6fb7",
    ),
    debian: (
        "arm-trusted-firmware_2.12.1+dfsg-1.debian.tar.xz",
        "b553d2ae6149784736979ee1bb6e391a579edc1551ec57618a486b6a1783cbe9",
    ),
};

const OPTEE_OS: SourcePackage = SourcePackage {
    name: "optee-os",
    version: "4.10.0-2",
    suite: "sid",
    directory: "pool/main/o/optee-os",
    orig: (
        "optee-os_4.10.0.orig.tar.gz",
        "18633691cb075ff2249422251f1cd77c30439a95b564b46682dea1fb6580a5af",
    ),
    debian: (
        "optee-os_4.10.0-2.debian.tar.xz",
        "4f0bad3d39b5623da371845a337bfcae826916e871c54f35017c9931178f01d4",
    ),
};

/// OP-TEE for QEMU's virt board as the SPMC at S-EL1, GICv3, 64-bit TAs
/// only (no 32-bit compiler needed); `TEE_IMPL_VERSION` names the Debian
/// version (a tarball has no git describe).
const OPTEE_FLAGS: &[&str] = &[
    "PLATFORM=vexpress-qemu_armv8a",
    "CFG_ARM64_core=y",
    "CFG_ARM_GICV3=y",
    "CFG_CORE_SEL1_SPMC=y",
    "CFG_USER_TA_TARGETS=ta_arm64",
    "CFG_TEE_CORE_LOG_LEVEL=2",
    "TEE_IMPL_VERSION=4.10.0-2",
];

/// TF-A for QEMU with the SPMD and OP-TEE as the SPMC at S-EL1, the BL33
/// QEMU preloads, GICv3.
const TF_A_FLAGS: &[&str] = &[
    "PLAT=qemu",
    "SPD=spmd",
    "SPMD_SPM_AT_SEL2=0",
    "SPMC_OPTEE=1",
    "QEMU_USE_GIC_DRIVER=QEMU_GICV3",
    "PRELOADED_BL33_BASE=0x40200000",
];

/// The SPMC manifest (TOS_FW_CONFIG) TF-A's SPMD reads, in the workspace.
const SPMC_MANIFEST: &str = "guest-images/firmware/qemu_optee_spmc_manifest.dts";

/// Where the FIP starts in the flash (TF-A's `PLAT_QEMU_FIP_BASE`).
const FIP_OFFSET: usize = 0x4_0000;

/// The flash image (`-bios`) with the secure world, built or from the cache.
pub fn flash_image(
    workspace_root: &Path,
    cache_dir: Option<&Path>,
    offline: bool,
) -> Result<PathBuf> {
    let cache_dir = match cache_dir {
        Some(dir) => dir.to_owned(),
        None => cache::default_cache_dir()?,
    };
    let cache = Cache::open(&cache_dir)?;
    let manifest_path = workspace_root.join(SPMC_MANIFEST);
    let manifest = std::fs::read(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let compiler = compiler_version()?;
    let key = build_key(&manifest, &compiler);
    let what = "secure world flash (TF-A + OP-TEE)";
    if let Some(path) = cache.get_derived(&key, what)? {
        return Ok(path);
    }
    let fetcher = HttpFetcher::new();
    let mut sources = Vec::new();
    for package in [&TF_A, &OPTEE_OS] {
        for (file, sha256) in [package.orig, package.debian] {
            let url = format!("{}/{}/{file}", mirror(), package.directory);
            let hint = format!(
                "the archive changed {} {} ({}); update the pin in lab/src/firmware.rs from that suite's Sources.xz",
                package.name, package.version, package.suite
            );
            let request = FetchRequest {
                url: &url,
                sha256,
                what: file,
                hint: &hint,
            };
            sources.push(cache.fetch(&fetcher, &request, offline)?);
        }
    }
    let python = python3()?;
    let work = tempfile::Builder::new()
        .prefix("secure-world-build.")
        .tempdir_in(cache.root())
        .context("creating a build directory in the cache")?;
    let optee = unpack(
        &OPTEE_OS,
        &sources[2],
        &sources[3],
        &work.path().join("optee-os"),
    )?;
    let optee_out = optee.join("out");
    let mut make_optee = vec![
        format!("CROSS_COMPILE={CROSS_COMPILE}"),
        format!("CROSS_COMPILE64={CROSS_COMPILE}"),
        format!("PYTHON3={}", python.display()),
        format!("O={}", optee_out.display()),
    ];
    make_optee.extend(OPTEE_FLAGS.iter().map(|f| f.to_string()));
    make(&format!("OP-TEE {}", OPTEE_OS.version), &optee, &make_optee)?;

    let tf_a = unpack(&TF_A, &sources[0], &sources[1], &work.path().join("tf-a"))?;
    let core = optee_out.join("core");
    let mut make_tf_a = vec![
        format!("CROSS_COMPILE={CROSS_COMPILE}"),
        format!("BL32={}", core.join("tee-header_v2.bin").display()),
        format!("BL32_EXTRA1={}", core.join("tee-pager_v2.bin").display()),
        format!("BL32_EXTRA2={}", core.join("tee-pageable_v2.bin").display()),
        format!("QEMU_TOS_FW_CONFIG_DTS={}", manifest_path.display()),
    ];
    make_tf_a.extend(TF_A_FLAGS.iter().map(|f| f.to_string()));
    make_tf_a.extend(["all".into(), "fip".into()]);
    make(&format!("TF-A {}", TF_A.version), &tf_a, &make_tf_a)?;

    let release = tf_a.join("build/qemu/release");
    let read = |name: &str| {
        let path = release.join(name);
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    };
    let flash = pack_flash(&read("bl1.bin")?, &read("fip.bin")?)?;
    cache.insert_derived(&key, &flash)
}

/// BL1 at the start of the flash, the FIP at [`FIP_OFFSET`].
fn pack_flash(bl1: &[u8], fip: &[u8]) -> Result<Vec<u8>> {
    if bl1.len() > FIP_OFFSET {
        bail!(
            "bl1.bin is {} bytes, more than the {FIP_OFFSET:#x} before the FIP",
            bl1.len()
        );
    }
    let mut flash = vec![0u8; FIP_OFFSET + fip.len()];
    flash[..bl1.len()].copy_from_slice(bl1);
    flash[FIP_OFFSET..].copy_from_slice(fip);
    Ok(flash)
}

/// The cache key of a flash image: every input that changes the bytes.
fn build_key(manifest: &[u8], compiler: &str) -> String {
    let mut hash = Sha256::new();
    for package in [&TF_A, &OPTEE_OS] {
        hash.update(package.orig.1);
        hash.update(package.debian.1);
    }
    for flag in OPTEE_FLAGS.iter().chain(TF_A_FLAGS) {
        hash.update(flag);
        hash.update([0]);
    }
    hash.update(manifest);
    hash.update(compiler);
    format!("secure-world-{}", hex::encode(hash.finalize()))
}

/// The cross compiler's `--version` line, or how to install it.
pub fn compiler_version() -> Result<String> {
    let gcc = format!("{CROSS_COMPILE}gcc");
    let output = Command::new(&gcc).arg("--version").output();
    match output {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()),
        _ => bail!(
            "{gcc} is missing, and the secure world is built with it: as root on Debian run `apt-get install {BUILD_PACKAGES}` (or `.ci/run --provision-only`)"
        ),
    }
}

/// A python3 that has the modules OP-TEE's build scripts import (a pyenv
/// shim first in PATH may not; Debian's own has them once installed).
fn python3() -> Result<PathBuf> {
    for candidate in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(candidate)
            .args(["-c", "import elftools, cryptography"])
            .output()
            .is_ok_and(|out| out.status.success());
        if ok {
            return Ok(PathBuf::from(candidate));
        }
    }
    bail!(
        "no python3 with the elftools and cryptography modules, which OP-TEE's build needs: as root on Debian run `apt-get install {BUILD_PACKAGES}`"
    )
}

/// Unpacks a source package as dpkg-source would: the upstream tarball,
/// the `debian/` tarball over it, then the patches of `debian/patches/series`.
fn unpack(package: &SourcePackage, orig: &Path, debian: &Path, dir: &Path) -> Result<PathBuf> {
    eprintln!(
        "secure world: unpacking {} {} ({})",
        package.name, package.version, package.suite
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(orig)
            .arg("--strip-components=1")
            .arg("-C")
            .arg(dir),
        &format!("unpacking {}", package.orig.0),
    )?;
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(debian)
            .arg("-C")
            .arg(dir),
        &format!("unpacking {}", package.debian.0),
    )?;
    let series_path = dir.join("debian/patches/series");
    let series = match std::fs::read_to_string(&series_path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).with_context(|| format!("reading {}", series_path.display())),
    };
    for patch in series
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
    {
        run(
            Command::new("patch")
                .args(["-p1", "-s", "-i"])
                .arg(dir.join("debian/patches").join(patch))
                .current_dir(dir),
            &format!("applying {} debian/patches/{patch}", package.name),
        )?;
    }
    Ok(dir.to_owned())
}

/// Runs `make -j<cpus>` with `args` in `dir`, its output in `dir/build.log`.
fn make(what: &str, dir: &Path, args: &[String]) -> Result<()> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let log_path = dir.join("build.log");
    eprintln!(
        "secure world: building {what} (make -j{jobs} {})",
        args.join(" ")
    );
    let start = Instant::now();
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let status = Command::new("make")
        .arg(format!("-j{jobs}"))
        .args(args)
        .current_dir(dir)
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("running make for {what} (is `make` installed?)"))?;
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        bail!(
            "building {what} failed ({status}); the last lines of its log:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    eprintln!(
        "secure world: built {what} in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("{what}: cannot start {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flash_puts_the_fip_where_bl1_looks_for_it() {
        let flash = pack_flash(&[1, 2, 3], &[9; 5]).unwrap();
        assert_eq!(flash.len(), FIP_OFFSET + 5);
        assert_eq!(&flash[..4], &[1, 2, 3, 0]);
        assert_eq!(&flash[FIP_OFFSET..], &[9; 5]);
        let err = pack_flash(&vec![0; FIP_OFFSET + 1], &[]).unwrap_err();
        assert!(err.to_string().contains("before the FIP"), "{err}");
    }

    #[test]
    fn the_key_follows_every_input() {
        let base = build_key(b"manifest", "gcc 12");
        assert!(base.starts_with("secure-world-"));
        assert_eq!(base, build_key(b"manifest", "gcc 12"));
        assert_ne!(base, build_key(b"manifest2", "gcc 12"));
        assert_ne!(base, build_key(b"manifest", "gcc 13"));
    }

    #[test]
    fn the_bl33_base_is_the_flag_tf_a_gets() {
        let flag = format!("PRELOADED_BL33_BASE={BL33_BASE:#x}");
        assert!(TF_A_FLAGS.contains(&flag.as_str()), "{flag}");
    }
}
