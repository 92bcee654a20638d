//! Building what QEMU boots from this workspace: the hypervisor and the
//! in-tree bare-metal guests, each `cargo build`-ed for
//! `aarch64-unknown-none` and turned into a flat binary (`flat.rs`) that
//! starts with its arm64 Image header; and the static Linux programs the
//! initramfs carries (`lab-clock`), built for the same target and kept as
//! ELF. Before the first build the lab makes the target present
//! (`target.rs`).

mod flat;
mod target;

pub use flat::elf_to_flat;
pub use target::{ensure_target, target_installed};

use crate::qemu::LabeledPath;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Rust target of everything QEMU boots.
pub const BARE_METAL_TARGET: &str = "aarch64-unknown-none";

/// The crate the lab boots as the hypervisor.
pub const HYPERVISOR_CRATE: &str = "hypervisor";

/// The cargo that runs the lab (`$CARGO` under `cargo run`/`cargo test`).
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// The workspace's target directory as cargo resolves it (honours
/// `CARGO_TARGET_DIR` and `.cargo/config.toml`).
pub fn target_dir(workspace_root: &Path) -> Result<PathBuf> {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root)
        .output()
        .context("running `cargo metadata`")?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    #[derive(serde::Deserialize)]
    struct Metadata {
        target_directory: PathBuf,
    }
    let metadata: Metadata =
        serde_json::from_slice(&out.stdout).context("reading `cargo metadata` output")?;
    Ok(metadata.target_directory)
}

/// The `cargo build` arguments for one bare-metal crate.
pub fn build_args(krate: &str) -> Vec<String> {
    [
        "build",
        "-p",
        krate,
        "--target",
        BARE_METAL_TARGET,
        "--release",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Builds a crate for `aarch64-unknown-none` and returns its ELF. A failed
/// build is an error carrying the compiler's output.
pub fn build_elf(workspace_root: &Path, target_dir: &Path, krate: &str) -> Result<Vec<u8>> {
    ensure_target(workspace_root)?;
    let args = build_args(krate);
    let out = Command::new(cargo())
        .args(&args)
        .current_dir(workspace_root)
        .output()
        .with_context(|| format!("running `cargo {}`", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`cargo {}` failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    let elf_path = elf_path(target_dir, krate);
    std::fs::read(&elf_path).with_context(|| format!("reading {}", elf_path.display()))
}

/// Where cargo puts the release ELF of a crate built by [`build_elf`].
pub fn elf_path(target_dir: &Path, krate: &str) -> PathBuf {
    target_dir
        .join(BARE_METAL_TARGET)
        .join("release")
        .join(krate)
}

/// Builds a bare-metal crate and writes its flat binary to
/// `<target>/lab/bin/<crate>.bin`. A failed build is an error carrying the
/// compiler's output.
pub fn build_flat_binary(
    workspace_root: &Path,
    target_dir: &Path,
    krate: &str,
) -> Result<LabeledPath> {
    let elf = build_elf(workspace_root, target_dir, krate)?;
    let flat = elf_to_flat(&elf)
        .with_context(|| format!("converting {}", elf_path(target_dir, krate).display()))?;
    let dir = target_dir.join("lab").join("bin");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let label = format!("{krate}.bin");
    let path = dir.join(&label);
    write_atomically(&path, &flat)?;
    Ok(LabeledPath::new(label, path))
}

/// Writes a file so that concurrent readers see the old or the new content,
/// never half of it.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().context("path without parent")?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    tmp.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    // Temporary files are private; artifacts are ordinary files.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_follow_the_contract() {
        assert_eq!(
            build_args("hypervisor").join(" "),
            "build -p hypervisor --target aarch64-unknown-none --release"
        );
    }

    #[test]
    fn target_dir_comes_from_cargo_metadata() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = target_dir(&root).unwrap();
        assert!(dir.is_absolute(), "{}", dir.display());
        assert!(dir.ends_with("target") || std::env::var_os("CARGO_TARGET_DIR").is_some());
    }
}
