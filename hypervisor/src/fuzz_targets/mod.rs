//! The bodies of the cargo-fuzz targets in `hypervisor/fuzz`: each takes
//! the fuzzer's bytes, decodes them into what a guest (or the boot bundle)
//! can hand the hypervisor, and drives the code that parses or emulates it.
//! A panic is a bug: the hypervisor answers bad input with the architected
//! answer, never by stopping.
//!
//! The bodies live here, not in the fuzz crate, so `cargo test` on stable
//! replays every committed corpus input and past crash through the same
//! code (`replay` below); the fuzz crate, which needs nightly, is a list of
//! one-line `fuzz_target!` calls.

mod devices;
mod parsers;
mod virtio;
mod vm_exit;

pub use devices::{gic, pflash, pl011, pl031};
pub use parsers::{cpio, ffa_descriptors, manifest, mmio_decode};
pub use virtio::{virtio_blk, virtio_mmio, virtio_net, virtio_queue, vswitch};
pub use vm_exit::handle_sync;

/// A target's body: runs one input, panics on a bug.
pub type Body = fn(&[u8]);

/// Every target, by the name of its cargo-fuzz binary and corpus folder.
pub const TARGETS: &[(&str, Body)] = &[
    ("mmio_decode", mmio_decode),
    ("handle_sync", handle_sync),
    ("pl011", pl011),
    ("pl031", pl031),
    ("pflash", pflash),
    ("gic", gic),
    ("virtio_mmio", virtio_mmio),
    ("virtio_queue", virtio_queue),
    ("virtio_blk", virtio_blk),
    ("virtio_net", virtio_net),
    ("vswitch", vswitch),
    ("manifest", manifest),
    ("cpio", cpio),
    ("ffa_descriptors", ffa_descriptors),
];

/// The fuzzer's bytes read front to back as the values a target needs;
/// past the end every value is zero, so any input is a complete one.
pub(crate) struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input(data)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Up to `len` bytes (fewer at the end).
    pub(crate) fn bytes(&mut self, len: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn le<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        let head = self.bytes(N);
        out[..head.len()].copy_from_slice(head);
        out
    }

    pub(crate) fn u8(&mut self) -> u8 {
        self.le::<1>()[0]
    }

    pub(crate) fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.le())
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.le())
    }

    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.le())
    }

    /// One of `choices` (which is not empty).
    pub(crate) fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[usize::from(self.u8()) % choices.len()]
    }

    /// An offset into a window of `size` bytes, mostly inside it (where
    /// the registers are), sometimes just past it, rarely anywhere.
    pub(crate) fn offset(&mut self, size: u64) -> u64 {
        let raw = self.u32();
        match raw >> 30 {
            0 => self.u64(),
            1 => size.saturating_add(u64::from(raw & 0xff)),
            _ => u64::from(raw) % size.max(1),
        }
    }
}

#[cfg(test)]
pub(crate) mod replay {
    //! Runs every committed input of every target (`fuzz/corpus/<target>`
    //! and the crashes kept in `fuzz/artifacts/<target>`).
    use std::path::{Path, PathBuf};

    /// Runs each file under `dirs` through `body`; returns how many ran and
    /// the files whose input panicked.
    pub fn replay(dirs: &[PathBuf], body: super::Body) -> (usize, Vec<String>) {
        let mut ran = 0;
        let mut failed = Vec::new();
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
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
        (ran, failed)
    }

    /// Replays every target of `targets` from `fuzz_dir`, and checks that
    /// each has a cargo-fuzz binary and committed inputs.
    pub fn replay_all(fuzz_dir: &Path, targets: &[(&str, super::Body)]) {
        let mut failed = Vec::new();
        for (name, body) in targets {
            let binary = fuzz_dir.join("fuzz_targets").join(format!("{name}.rs"));
            assert!(binary.is_file(), "{} is missing", binary.display());
            let dirs = [
                fuzz_dir.join("corpus").join(name),
                fuzz_dir.join("artifacts").join(name),
            ];
            let (ran, mut bad) = replay(&dirs, *body);
            assert!(
                ran > 0,
                "target {name}: no committed inputs under {fuzz_dir:?}"
            );
            failed.append(&mut bad);
        }
        assert!(failed.is_empty(), "inputs that panic: {failed:#?}");
    }

    #[test]
    fn every_committed_input_runs_without_a_panic() {
        let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        replay_all(&fuzz_dir, super::TARGETS);
        let binaries = std::fs::read_dir(fuzz_dir.join("fuzz_targets"))
            .expect("hypervisor/fuzz/fuzz_targets")
            .count();
        assert_eq!(binaries, super::TARGETS.len(), "a binary per target");
    }
}
