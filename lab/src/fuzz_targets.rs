//! The bodies of the cargo-fuzz targets in `lab/fuzz`: the files a user
//! (or a pull request) hands the lab (scenario YAML, images.yaml, the lock
//! file, Debian's Release and Packages indexes) and the console bytes a
//! guest prints. A panic is a bug: the lab answers bad input with an
//! error that says what is wrong.
//!
//! `cargo test -p lab` replays every committed corpus input and past
//! crash through these functions on stable (`replay` below).

use crate::images::debian::{self, PackageIndex};
use crate::images::lock::LockFile;
use crate::images::manifest::Manifest;
use crate::run::console::{ConsoleTee, ConsoleTexts, Consoles, MAX_LINE};
use crate::run::events::{Emitter, EventKind};
use crate::run::topology;
use crate::scenario::{Scenario, Step};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// A target's body: runs one input, panics on a bug.
pub type Body = fn(&[u8]);

/// Every target, by the name of its cargo-fuzz binary and corpus folder.
pub const TARGETS: &[(&str, Body)] = &[
    ("scenario", scenario),
    ("images", images),
    ("console", console),
];

/// A scenario file (named `fuzz.yaml`). One that parses has VM names fit
/// for file names, and everything derived from it can be computed.
pub fn scenario(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let scenario = match Scenario::parse(Path::new("scenarios/fuzz.yaml"), text) {
        Ok(scenario) => scenario,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    for vm in &scenario.vms {
        let safe = !vm.name.is_empty()
            && vm
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        assert!(safe, "VM name {:?} goes into file names", vm.name);
        for index in 0..vm.net.len() {
            let _ = scenario.mac(vm, index);
        }
    }
    let _ = scenario.template_vars();
    let _ = scenario.run_variables();
    let _ = scenario.expects_exit();
    for step in &scenario.steps {
        let _ = step.console();
        if let Step::Expect { pattern, .. } = step {
            let _ = scenario.expect_regex(pattern);
        }
    }
    let consoles = topology::machine_consoles(&scenario);
    for index in 0..consoles.len() {
        let _ = topology::console_log_name(&consoles, index);
    }
}

/// The image files, by the first byte: images.yaml, images.lock (which
/// writes back to text that reads the same), a Release file, a Packages
/// index (and the lookups the resolver makes in it).
pub fn images(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 4 {
        0 => match Manifest::parse(Path::new("guest-images/images.yaml"), text) {
            Ok(manifest) => {
                let _ = manifest.require(&manifest.busybox);
                for image in &manifest.images {
                    let _ = manifest.image(&image.name);
                }
            }
            Err(err) => {
                let _ = err.to_string();
            }
        },
        1 => {
            if let Ok(lock) = LockFile::parse(text) {
                let again = lock.to_text().and_then(|t| LockFile::parse(&t));
                assert_eq!(again.ok().as_ref(), Some(&lock), "lock file round trip");
            }
        }
        2 => {
            let _ = debian::parse_release(text).map_err(|e| e.to_string());
        }
        _ => {
            let Ok(index) = PackageIndex::parse(text) else {
                return;
            };
            let first = text.lines().find_map(|l| l.strip_prefix("Package: "));
            for name in [first.unwrap_or(""), "linux-image-cloud-arm64", "busybox"] {
                let _ = index.resolve(name, Some("linux-image-"));
                let _ = index.resolve(name, None);
            }
            for line in text.lines().filter_map(|l| l.strip_prefix("Depends: ")) {
                let _ = debian::parse_depends(line);
            }
        }
    }
}

/// Hands out the input in the chunk sizes it names, as a pty does.
struct Chunks<'a>(&'a [u8]);

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some((&len, rest)) = self.0.split_first() else {
            return Ok(0);
        };
        let len = usize::from(len).max(1).min(rest.len()).min(buf.len());
        buf[..len].copy_from_slice(&rest[..len]);
        self.0 = &rest[len..];
        Ok(len)
    }
}

/// The console tee: bytes from the pty in chunks, with up to three VMs
/// whose lines the hypervisor tags. Every line it emits is bounded, even
/// when a guest prints the hypervisor's line-break mark.
pub fn console(data: &[u8]) {
    let Some((&header, rest)) = data.split_first() else {
        return;
    };
    let tagged: Vec<String> = ["vm0", "vm1", "x"][..usize::from(header % 4)]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let (closed, _closed_rx) = std::sync::mpsc::channel();
    let log = File::options()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null opens for writing");
    let mut tee = ConsoleTee::new(
        Chunks(rest),
        log,
        Consoles::new("serial", &tagged),
        ConsoleTexts::default(),
        Emitter::new(tx, "fuzz"),
        closed,
    );
    let mut out = Vec::new();
    tee.read_to_end(&mut out).expect("reading from memory");
    drop(tee);
    for event in rx.try_iter() {
        if let EventKind::ConsoleLine { line, .. } = event.kind {
            assert!(
                line.chars().count() <= 2 * MAX_LINE,
                "a {}-character line",
                line.chars().count()
            );
        }
    }
}

#[cfg(test)]
mod replay {
    //! Runs every committed input of every target (`lab/fuzz/corpus/<target>`
    //! and the crashes kept in `lab/fuzz/artifacts/<target>`).
    use std::path::{Path, PathBuf};

    #[test]
    fn every_committed_input_runs_without_a_panic() {
        let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut failed = Vec::new();
        for (name, body) in super::TARGETS {
            let binary = fuzz_dir.join("fuzz_targets").join(format!("{name}.rs"));
            assert!(binary.is_file(), "{} is missing", binary.display());
            let mut ran = 0;
            for dir in ["corpus", "artifacts"] {
                let Ok(entries) = std::fs::read_dir(fuzz_dir.join(dir).join(name)) else {
                    continue;
                };
                let mut files: Vec<PathBuf> = entries
                    .map(|e| e.expect("reading a corpus folder").path())
                    .filter(|p| p.is_file())
                    .collect();
                files.sort();
                for file in files {
                    let data = std::fs::read(&file).expect("reading a corpus file");
                    ran += 1;
                    if std::panic::catch_unwind(|| body(&data)).is_err() {
                        failed.push(file.display().to_string());
                    }
                }
            }
            assert!(ran > 0, "target {name}: no committed inputs");
        }
        assert!(failed.is_empty(), "inputs that panic: {failed:#?}");
        let binaries = std::fs::read_dir(fuzz_dir.join("fuzz_targets"))
            .expect("lab/fuzz/fuzz_targets")
            .count();
        assert_eq!(binaries, super::TARGETS.len(), "a binary per target");
    }
}
