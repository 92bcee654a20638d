//! `lab doctor`: what this machine has and lacks for running scenarios,
//! with the exact command that installs each missing piece.

use crate::build::BARE_METAL_TARGET;
use crate::images;
use crate::qemu::provision::{self, Plan};
use crate::run::Lab;
use anyhow::Result;
use std::path::Path;
use std::process::{Command, ExitCode};

/// Free space below which doctor warns (images, initramfs, run artifacts).
const MIN_FREE_BYTES: u64 = 2 << 30;

/// Prints one line per check; exit 0 when nothing essential is missing.
pub fn run(lab: &Lab) -> Result<ExitCode> {
    let mut missing = 0;
    let mut report = |ok: bool, what: &str, detail: String| {
        println!(
            "{} {what:<14} {detail}",
            if ok { "ok     " } else { "MISSING" }
        );
        if !ok {
            missing += 1;
        }
    };
    match provision::plan(&provision::host_facts()) {
        Plan::Found(path) => {
            let version = provision::qemu_version(&path)
                .unwrap_or_else(|e| format!("(version unknown: {e:#})"));
            report(true, "qemu", format!("{} ({version})", path.display()));
        }
        Plan::Install(_) => report(
            false,
            "qemu",
            "not found; `lab scenario` installs qemu-system-arm (running as root on Debian)".into(),
        ),
        Plan::Manual(message) => report(false, "qemu", message),
    }
    match target_installed(&lab.root) {
        Ok(true) => report(true, "rust target", BARE_METAL_TARGET.into()),
        Ok(false) => report(
            false,
            "rust target",
            format!("install with: rustup target add {BARE_METAL_TARGET}"),
        ),
        Err(e) => report(false, "rust target", format!("cannot tell: {e:#}")),
    }
    let cache = images::cache::default_cache_dir();
    match &cache {
        Ok(dir) => report(true, "image cache", dir.display().to_string()),
        Err(e) => report(false, "image cache", format!("{e:#} (set LAB_CACHE_DIR)")),
    }
    let mut places = vec![("target dir", lab.target_dir.clone())];
    if let Ok(dir) = cache {
        places.push(("cache disk", dir));
    }
    for (what, dir) in places {
        match free_bytes(&dir) {
            Some(free) => report(
                free >= MIN_FREE_BYTES,
                what,
                format!(
                    "{:.1} GiB free at {}",
                    free as f64 / f64::from(1 << 30),
                    dir.display()
                ),
            ),
            None => report(true, what, format!("{} (not created yet)", dir.display())),
        }
    }
    match provision::find_in_path("gdb-multiarch") {
        Some(path) => println!("ok      {:<14} {} (for --gdb)", "gdb", path.display()),
        None => println!(
            "note    {:<14} gdb-multiarch not found (optional): apt-get install gdb-multiarch",
            "gdb"
        ),
    }
    Ok(if missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::cli::EXIT_ERROR)
    })
}

/// Whether the sysroot of the workspace's toolchain has the bare-metal target.
fn target_installed(root: &Path) -> Result<bool> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(root)
        .output()?;
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(Path::new(&sysroot)
        .join("lib/rustlib")
        .join(BARE_METAL_TARGET)
        .is_dir())
}

/// Free bytes on the file system of `dir` or its nearest existing ancestor.
fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    if existing != dir && existing == Path::new("/") {
        return None;
    }
    let stat = nix::sys::statvfs::statvfs(existing).ok()?;
    Some(stat.blocks_available() * stat.fragment_size())
}
