//! The lab's initramfs: a gzip-compressed cpio (newc) archive with busybox,
//! the kernel modules in load order (`/lib/modules/load-order`), `/dev/console`,
//! the lab's own programs in `/bin` (`lab-clock`, `lab-time`) and the `/init`
//! script from `guest-images/init/init`. Entries carry mtime 0
//! and root ownership, so the same inputs give the same bytes.

use std::io::Write;

use anyhow::{Context, Result};
use cpio::newc::{Builder, ModeFileType};
use flate2::write::GzEncoder;
use flate2::Compression;

/// Where the module list lives in the initramfs; `/init` reads it.
pub const LOAD_ORDER_FILE: &str = "lib/modules/load-order";

/// What one archive member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Directory,
    File { data: Vec<u8>, executable: bool },
    Symlink { target: String },
    CharDevice { major: u32, minor: u32 },
}

/// One archive member; `path` is relative (`bin/busybox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub node: Node,
}

impl Entry {
    pub fn dir(path: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            node: Node::Directory,
        }
    }

    pub fn file(path: &str, data: Vec<u8>, executable: bool) -> Entry {
        Entry {
            path: path.to_owned(),
            node: Node::File { data, executable },
        }
    }

    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry {
            path: path.to_owned(),
            node: Node::Symlink {
                target: target.to_owned(),
            },
        }
    }
}

/// A program the initramfs carries as `/bin/<name>`: a static Linux ELF,
/// or a shell script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub name: String,
    /// The executable file.
    pub elf: Vec<u8>,
}

/// The inputs of the initramfs.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub busybox: Vec<u8>,
    pub init: Vec<u8>,
    /// Programs for `/bin`, besides busybox.
    pub programs: Vec<Program>,
    /// Uncompressed modules as `(name, ELF)`, in load order.
    pub modules: Vec<(String, Vec<u8>)>,
}

/// The members of the initramfs, directories before their contents.
pub fn entries(inputs: Inputs) -> Vec<Entry> {
    let mut entries: Vec<Entry> = [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "mnt",
        "proc",
        "root",
        "run",
        "sbin",
        "sys",
        "tmp",
        "usr",
        "usr/bin",
        "usr/sbin",
    ]
    .into_iter()
    .map(Entry::dir)
    .collect();
    entries.push(Entry {
        path: "dev/console".to_owned(),
        node: Node::CharDevice { major: 5, minor: 1 },
    });
    entries.push(Entry::file("bin/busybox", inputs.busybox, true));
    entries.push(Entry::symlink("bin/sh", "busybox"));
    for program in inputs.programs {
        entries.push(Entry::file(
            &format!("bin/{}", program.name),
            program.elf,
            true,
        ));
    }
    entries.push(Entry::file("init", inputs.init, true));
    let mut order = String::new();
    for (name, elf) in inputs.modules {
        let file = format!("{name}.ko");
        order.push_str(&file);
        order.push('\n');
        entries.push(Entry::file(&format!("lib/modules/{file}"), elf, false));
    }
    entries.push(Entry::file(LOAD_ORDER_FILE, order.into_bytes(), false));
    entries
}

/// A newc cpio archive of `entries`, with its trailer.
pub fn write_cpio(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let ino = u32::try_from(index + 1).context("too many initramfs entries")?;
        let builder = Builder::new(&entry.path).ino(ino).uid(0).gid(0).mtime(0);
        let (builder, data): (Builder, &[u8]) = match &entry.node {
            Node::Directory => (
                builder
                    .mode(0o755)
                    .nlink(2)
                    .set_mode_file_type(ModeFileType::Directory),
                &[],
            ),
            Node::File { data, executable } => {
                let mode = if *executable { 0o755 } else { 0o644 };
                (
                    builder
                        .mode(mode)
                        .nlink(1)
                        .set_mode_file_type(ModeFileType::Regular),
                    data,
                )
            }
            Node::Symlink { target } => (
                builder
                    .mode(0o777)
                    .nlink(1)
                    .set_mode_file_type(ModeFileType::Symlink),
                target.as_bytes(),
            ),
            Node::CharDevice { major, minor } => (
                builder
                    .mode(0o600)
                    .nlink(1)
                    .rdev_major(*major)
                    .rdev_minor(*minor)
                    .set_mode_file_type(ModeFileType::Char),
                &[],
            ),
        };
        let size = u32::try_from(data.len())
            .with_context(|| format!("{} is larger than cpio allows", entry.path))?;
        let mut writer = builder.write(out, size);
        writer.write_all(data)?;
        out = writer.finish()?;
    }
    Ok(cpio::newc::trailer(out)?)
}

/// The gzip-compressed initramfs for `inputs`.
pub fn build(inputs: Inputs) -> Result<Vec<u8>> {
    let cpio = write_cpio(&entries(inputs))?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&cpio)?;
    Ok(gz.finish()?)
}
