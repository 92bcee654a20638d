//! `lab doctor`: what this machine has and lacks for running scenarios,
//! with the exact command that installs each missing piece.

use crate::build::{target_installed, BARE_METAL_TARGET};
use crate::images;
use crate::qemu::provision::{self, Plan};
use crate::run::Lab;
use anyhow::Result;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Free space below which doctor warns (images, initramfs, run artifacts).
const MIN_FREE_BYTES: u64 = 2 << 30;

/// The doctor's lines, printed at the end so a closed pipe cannot
/// interrupt the checks.
#[derive(Default)]
struct Report {
    text: String,
    missing: usize,
}

impl Report {
    fn check(&mut self, ok: bool, what: &str, detail: String) {
        let mark = if ok { "ok     " } else { "MISSING" };
        self.line(mark, what, &detail);
        if !ok {
            self.missing += 1;
        }
    }

    fn line(&mut self, mark: &str, what: &str, detail: &str) {
        self.text += &format!("{mark} {what:<14} {detail}\n");
    }
}

/// Prints one line per check; exit 0 when nothing essential is missing.
pub fn run(lab: &Lab) -> Result<ExitCode> {
    let mut report = Report::default();
    match provision::plan(&provision::host_facts()) {
        Plan::Found(path) => {
            let version = provision::qemu_version(&path)
                .unwrap_or_else(|e| format!("(version unknown: {e:#})"));
            let (major, minor) = provision::MIN_QEMU_VERSION;
            let new_enough =
                provision::parse_qemu_version(&version) >= Some(provision::MIN_QEMU_VERSION);
            let mut detail = format!("{} ({version})", path.display());
            if !new_enough {
                detail.push_str(&format!(
                    "; need QEMU >= {major}.{minor}: on Debian bookworm \
                     `apt-get install -t bookworm-backports qemu-system-arm`"
                ));
            }
            report.check(new_enough, "qemu", detail);
        }
        Plan::Install(_) => report.check(
            false,
            "qemu",
            "not found; `lab scenario` installs qemu-system-arm (running as root on Debian)".into(),
        ),
        Plan::Manual(message) => report.check(false, "qemu", message),
    }
    match target_installed(&lab.root) {
        Ok(true) => report.check(true, "rust target", BARE_METAL_TARGET.into()),
        Ok(false) => report.check(
            false,
            "rust target",
            format!("missing; `lab scenario` adds it, or: rustup target add {BARE_METAL_TARGET}"),
        ),
        Err(e) => report.check(false, "rust target", format!("cannot tell: {e:#}")),
    }
    match crate::firmware::compiler_version() {
        Ok(version) => report.check(
            true,
            "cross gcc",
            format!("{version} (builds TF-A and OP-TEE)"),
        ),
        Err(e) => report.check(false, "cross gcc", format!("{e:#}")),
    }
    let cache = images::cache::default_cache_dir();
    match &cache {
        Ok(dir) => report.check(true, "image cache", dir.display().to_string()),
        Err(e) => report.check(false, "image cache", format!("{e:#} (set LAB_CACHE_DIR)")),
    }
    let mut places = vec![("target dir", lab.target_dir.clone())];
    if let Ok(dir) = cache {
        places.push(("cache disk", dir));
    }
    for (what, dir) in places {
        match free_bytes(&dir) {
            Some(free) => report.check(
                free >= MIN_FREE_BYTES,
                what,
                format!(
                    "{:.1} GiB free at {}",
                    free as f64 / f64::from(1 << 30),
                    dir.display()
                ),
            ),
            None => report.line(
                "ok     ",
                what,
                &format!("{} (not created yet)", dir.display()),
            ),
        }
    }
    match provision::find_in_path("gdb-multiarch") {
        Some(path) => report.line("ok     ", "gdb", &format!("{} (for --gdb)", path.display())),
        None => report.line(
            "note   ",
            "gdb",
            "gdb-multiarch not found (optional): apt-get install gdb-multiarch",
        ),
    }
    let _ = std::io::stdout().write_all(report.text.as_bytes());
    Ok(if report.missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::cli::EXIT_ERROR)
    })
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
