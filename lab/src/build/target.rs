//! Making the bare-metal Rust target present before the lab builds: the
//! workspace pins its toolchain and `aarch64-unknown-none` in
//! `rust-toolchain.toml`, but rustup adds a pinned toolchain's targets only
//! when it installs the toolchain, not to one a machine already has. The
//! lab checks the toolchain's sysroot and, if the target is missing, runs
//! `rustup target add` for that toolchain and says so.

use super::BARE_METAL_TARGET;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The sysroot of the toolchain the workspace builds with.
fn sysroot(root: &Path) -> Result<PathBuf> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(root)
        .output()
        .context("running `rustc --print sysroot`")?;
    if !out.status.success() {
        bail!(
            "`rustc --print sysroot` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Whether a sysroot has the bare-metal target's standard library.
fn has_target(sysroot: &Path) -> bool {
    sysroot.join("lib/rustlib").join(BARE_METAL_TARGET).is_dir()
}

/// Whether the workspace's toolchain has the bare-metal target.
pub fn target_installed(root: &Path) -> Result<bool> {
    Ok(has_target(&sysroot(root)?))
}

/// The toolchain rustup names for a sysroot (`1.95.0-x86_64-unknown-linux-gnu`
/// in `~/.rustup/toolchains/`).
fn toolchain_name(sysroot: &Path) -> Option<String> {
    let name = sysroot.file_name()?.to_str()?;
    let parent = sysroot.parent()?.file_name()?.to_str()?;
    (parent == "toolchains").then(|| name.to_owned())
}

/// The `rustup` command that adds the target to the toolchain of `sysroot`.
pub fn add_target_args(sysroot: &Path) -> Vec<String> {
    let mut args = vec![
        "target".to_owned(),
        "add".to_owned(),
        BARE_METAL_TARGET.to_owned(),
    ];
    if let Some(toolchain) = toolchain_name(sysroot) {
        args.push("--toolchain".into());
        args.push(toolchain);
    }
    args
}

/// Makes sure the workspace's toolchain has the bare-metal target, adding
/// it with rustup (once per process) and printing what it ran.
pub fn ensure_target(root: &Path) -> Result<()> {
    static CHECKED: Mutex<bool> = Mutex::new(false);
    let mut checked = CHECKED.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    if *checked {
        return Ok(());
    }
    let sysroot = sysroot(root)?;
    if !has_target(&sysroot) {
        let args = add_target_args(&sysroot);
        let shown = format!("rustup {}", args.join(" "));
        eprintln!(
            "lab: the toolchain at {} lacks the {BARE_METAL_TARGET} target (rustup does not add a pinned \
             toolchain's targets to a toolchain already installed); running `{shown}`",
            sysroot.display()
        );
        let status = Command::new("rustup")
            .args(&args)
            .current_dir(root)
            .status()
            .with_context(|| format!("running `{shown}` (is rustup installed?)"))?;
        if !status.success() || !has_target(&sysroot) {
            bail!("`{shown}` failed ({status}); add the target by hand and run again");
        }
        eprintln!("lab: added {BARE_METAL_TARGET} to {}", sysroot.display());
    }
    *checked = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rustup_command_names_the_sysroots_toolchain() {
        let sysroot = Path::new("/root/.rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu");
        assert_eq!(
            add_target_args(sysroot).join(" "),
            "target add aarch64-unknown-none --toolchain 1.95.0-x86_64-unknown-linux-gnu"
        );
        assert_eq!(
            add_target_args(Path::new("/usr")).join(" "),
            "target add aarch64-unknown-none",
            "not a rustup toolchain: rustup's own choice"
        );
    }

    #[test]
    fn this_workspaces_toolchain_has_the_target_after_ensure() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        ensure_target(&root).unwrap();
        assert!(target_installed(&root).unwrap());
    }
}
