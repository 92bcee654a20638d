//! Builders the guest-image tests share: module ELFs with a `.modinfo`
//! section, `.deb` packages made with the `ar` and `tar` crates, compressed
//! blobs, and a fake [`Fetcher`] that serves a map of URLs and counts calls.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Write};

use lab::images::{FetchError, Fetcher};

/// A minimal little-endian ELF64 relocatable file whose only section besides
/// the string table is `.modinfo` holding `fields` as NUL-terminated strings.
pub fn module_elf(fields: &[&str]) -> Vec<u8> {
    let mut modinfo = Vec::new();
    for field in fields {
        modinfo.extend_from_slice(field.as_bytes());
        modinfo.push(0);
    }
    let shstrtab = b"\0.modinfo\0.shstrtab\0";
    let modinfo_offset = 64u64;
    let shstrtab_offset = modinfo_offset + modinfo.len() as u64;
    let shoff = (shstrtab_offset + shstrtab.len() as u64).next_multiple_of(8);

    let mut elf = Vec::new();
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    elf.extend_from_slice(&[0; 8]);
    elf.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
    elf.extend_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes()); // entry
    elf.extend_from_slice(&0u64.to_le_bytes()); // phoff
    elf.extend_from_slice(&shoff.to_le_bytes());
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    elf.extend_from_slice(&64u16.to_le_bytes()); // ehsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // phentsize
    elf.extend_from_slice(&0u16.to_le_bytes()); // phnum
    elf.extend_from_slice(&64u16.to_le_bytes()); // shentsize
    elf.extend_from_slice(&3u16.to_le_bytes()); // shnum
    elf.extend_from_slice(&2u16.to_le_bytes()); // shstrndx
    assert_eq!(elf.len(), 64);
    elf.extend_from_slice(&modinfo);
    elf.extend_from_slice(shstrtab);
    elf.resize(shoff as usize, 0);
    let section = |elf: &mut Vec<u8>, name: u32, kind: u32, offset: u64, size: u64| {
        elf.extend_from_slice(&name.to_le_bytes());
        elf.extend_from_slice(&kind.to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes()); // flags
        elf.extend_from_slice(&0u64.to_le_bytes()); // addr
        elf.extend_from_slice(&offset.to_le_bytes());
        elf.extend_from_slice(&size.to_le_bytes());
        elf.extend_from_slice(&0u32.to_le_bytes()); // link
        elf.extend_from_slice(&0u32.to_le_bytes()); // info
        elf.extend_from_slice(&1u64.to_le_bytes()); // addralign
        elf.extend_from_slice(&0u64.to_le_bytes()); // entsize
    };
    section(&mut elf, 0, 0, 0, 0);
    section(&mut elf, 1, 1, modinfo_offset, modinfo.len() as u64);
    section(&mut elf, 10, 3, shstrtab_offset, shstrtab.len() as u64);
    elf
}

/// A module ELF for `name` depending on `depends`.
pub fn module(name: &str, depends: &[&str]) -> Vec<u8> {
    let depends = format!("depends={}", depends.join(","));
    let name = format!("name={name}");
    module_elf(&[
        "license=GPL",
        &depends,
        "intree=Y",
        &name,
        "vermagic=6.1.0 SMP",
    ])
}

/// How a tarball inside a .deb is compressed.
#[derive(Debug, Clone, Copy)]
pub enum Compression {
    None,
    Xz,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Xz => ".xz",
            Compression::Gzip => ".gz",
            Compression::Zstd => ".zst",
        }
    }

    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => data.to_vec(),
            Compression::Xz => xz(data),
            Compression::Gzip => gzip(data),
            Compression::Zstd => {
                ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
            }
        }
    }
}

pub fn xz(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    xz2::read::XzEncoder::new(data, 6)
        .read_to_end(&mut out)
        .unwrap();
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A tar archive with dpkg-style `./` paths, a directory entry for each
/// file's parent, in the given order.
pub fn tarball(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        if let Some((dir, _)) = path.rsplit_once('/') {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_path(format!("./{dir}/")).unwrap();
            header.set_mode(0o755);
            header.set_size(0);
            header.set_cksum();
            builder.append(&header, &[][..]).unwrap();
        }
        let mut header = tar::Header::new_gnu();
        header.set_path(format!("./{path}")).unwrap();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A .deb (ar archive: debian-binary, control.tar.xz, data.tar<ext>).
pub fn deb(files: &[(&str, &[u8])], compression: Compression) -> Vec<u8> {
    let control = xz(&tarball(&[("control", b"Package: test\nVersion: 1\n")]));
    let data = compression.compress(&tarball(files));
    let data_name = format!("data.tar{}", compression.extension());
    let mut builder = ar::Builder::new(Vec::new());
    for (name, contents) in [
        ("debian-binary", &b"2.0\n"[..]),
        ("control.tar.xz", &control),
        (&data_name, &data),
    ] {
        let header = ar::Header::new(name.as_bytes().to_vec(), contents.len() as u64);
        builder.append(&header, contents).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Bytes that look like an arm64 Linux Image (magic at 0x38), `size` long.
pub fn arm64_image(size: usize) -> Vec<u8> {
    let mut image: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    image[0x38..0x3c].copy_from_slice(b"ARM\x64");
    image
}

/// A fetcher serving a fixed set of URLs (404 for others), or failing every
/// request when `unreachable`; it records the URLs asked for.
#[derive(Default)]
pub struct FakeFetcher {
    pub files: RefCell<BTreeMap<String, Vec<u8>>>,
    pub unreachable: bool,
    pub calls: RefCell<Vec<String>>,
}

impl FakeFetcher {
    pub fn serve(&self, url: &str, data: Vec<u8>) {
        self.files.borrow_mut().insert(url.to_owned(), data);
    }

    pub fn withdraw(&self, url: &str) {
        self.files.borrow_mut().remove(url);
    }

    pub fn call_count(&self) -> usize {
        self.calls.borrow().len()
    }
}

impl Fetcher for FakeFetcher {
    fn fetch(&self, url: &str, _what: &str, out: &mut dyn Write) -> Result<(), FetchError> {
        self.calls.borrow_mut().push(url.to_owned());
        if self.unreachable {
            return Err(FetchError::Failed {
                url: url.to_owned(),
                reason: "connection refused".into(),
            });
        }
        match self.files.borrow().get(url) {
            Some(data) => out
                .write_all(data)
                .map_err(|err| FetchError::Other(err.into())),
            None => Err(FetchError::NotFound {
                url: url.to_owned(),
            }),
        }
    }
}
