//! A small, total reader for flattened device trees the hypervisor does not
//! trust (the lab's manifest): every malformed input becomes a [`DtError`],
//! never a panic. The blob is parsed once into a tree of borrowed slices.
#![forbid(unsafe_code)]

use alloc::vec::Vec;
use core::fmt;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_NOP: u32 = 4;
const FDT_END: u32 = 9;
/// Deepest nesting accepted (a manifest needs 3).
const MAX_DEPTH: usize = 16;
/// Oldest FDT version whose layout we read (17 is what every writer emits).
const MIN_VERSION: u32 = 16;

/// Why a blob is not a usable device tree.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DtError {
    /// Shorter than its header says, or a block lies outside it.
    Truncated,
    /// Wrong magic number.
    BadMagic,
    /// Version older than 16.
    BadVersion,
    /// Tokens out of order, nesting too deep, or bad names.
    BadStructure,
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DtError::Truncated => "truncated device tree",
            DtError::BadMagic => "not a device tree (bad magic)",
            DtError::BadVersion => "unsupported device tree version",
            DtError::BadStructure => "malformed device tree structure",
        })
    }
}

/// One property: name and raw value.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Property<'a> {
    /// Property name.
    pub name: &'a str,
    /// Raw big-endian value.
    pub value: &'a [u8],
}

impl<'a> Property<'a> {
    /// The value as one NUL-terminated string.
    pub fn as_str(&self) -> Option<&'a str> {
        let (last, body) = self.value.split_last()?;
        if *last != 0 || body.contains(&0) {
            return None;
        }
        core::str::from_utf8(body).ok()
    }

    /// The value as big-endian 32-bit cells.
    pub fn cells(&self) -> Option<impl Iterator<Item = u32> + 'a> {
        if !self.value.len().is_multiple_of(4) {
            return None;
        }
        Some(
            self.value
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])),
        )
    }

    /// The value as one cell (`<n>`).
    pub fn as_u32(&self) -> Option<u32> {
        let b: [u8; 4] = self.value.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }

    /// The value as two cells (`<hi lo>`).
    pub fn as_u64(&self) -> Option<u64> {
        let b: [u8; 8] = self.value.try_into().ok()?;
        Some(u64::from_be_bytes(b))
    }
}

/// A node with its properties and children.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Node<'a> {
    /// Node name including any unit address (`vm@0`); empty for the root.
    pub name: &'a str,
    /// Properties in blob order.
    pub properties: Vec<Property<'a>>,
    /// Children in blob order.
    pub children: Vec<Node<'a>>,
}

impl<'a> Node<'a> {
    /// The property called `name`.
    pub fn property(&self, name: &str) -> Option<&Property<'a>> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// The child called `name` (exact, unit address included).
    pub fn child(&self, name: &str) -> Option<&Node<'a>> {
        self.children.iter().find(|c| c.name == name)
    }
}

fn be32(blob: &[u8], offset: usize) -> Result<u32, DtError> {
    let end = offset.checked_add(4).ok_or(DtError::Truncated)?;
    let b: [u8; 4] = blob
        .get(offset..end)
        .ok_or(DtError::Truncated)?
        .try_into()
        .map_err(|_| DtError::Truncated)?;
    Ok(u32::from_be_bytes(b))
}

fn to_usize(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn cstr(bytes: &[u8]) -> Result<(&str, usize), DtError> {
    let len = bytes
        .iter()
        .position(|b| *b == 0)
        .ok_or(DtError::BadStructure)?;
    let s = core::str::from_utf8(&bytes[..len]).map_err(|_| DtError::BadStructure)?;
    Ok((s, len + 1))
}

struct Parser<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn token(&mut self) -> Result<u32, DtError> {
        loop {
            let t = be32(self.structs, self.pos)?;
            self.pos += 4;
            if t != FDT_NOP {
                return Ok(t);
            }
        }
    }

    fn align(&mut self) {
        self.pos = self.pos.next_multiple_of(4);
    }

    /// Parses a node whose BEGIN_NODE token was just read.
    fn node(&mut self, depth: usize) -> Result<Node<'a>, DtError> {
        if depth > MAX_DEPTH {
            return Err(DtError::BadStructure);
        }
        let rest = self.structs.get(self.pos..).ok_or(DtError::Truncated)?;
        let (name, used) = cstr(rest)?;
        self.pos += used;
        self.align();
        let mut node = Node {
            name,
            ..Node::default()
        };
        loop {
            match self.token()? {
                FDT_PROP => {
                    let len = to_usize(be32(self.structs, self.pos)?);
                    let name_off = to_usize(be32(self.structs, self.pos + 4)?);
                    self.pos += 8;
                    let end = self.pos.checked_add(len).ok_or(DtError::Truncated)?;
                    let value = self.structs.get(self.pos..end).ok_or(DtError::Truncated)?;
                    self.pos = end;
                    self.align();
                    let (pname, _) = cstr(self.strings.get(name_off..).ok_or(DtError::Truncated)?)?;
                    node.properties.push(Property { name: pname, value });
                }
                FDT_BEGIN_NODE => node.children.push(self.node(depth + 1)?),
                FDT_END_NODE => return Ok(node),
                _ => return Err(DtError::BadStructure),
            }
        }
    }
}

/// Parses `blob` into its root node.
pub fn parse(blob: &[u8]) -> Result<Node<'_>, DtError> {
    if be32(blob, 0)? != FDT_MAGIC {
        return Err(DtError::BadMagic);
    }
    let total = to_usize(be32(blob, 4)?);
    let blob = blob.get(..total).ok_or(DtError::Truncated)?;
    let off_struct = to_usize(be32(blob, 8)?);
    let off_strings = to_usize(be32(blob, 12)?);
    if be32(blob, 20)? < MIN_VERSION {
        return Err(DtError::BadVersion);
    }
    let size_strings = to_usize(be32(blob, 32)?);
    let size_struct = to_usize(be32(blob, 36)?);
    let block = |off: usize, size: usize| {
        off.checked_add(size)
            .and_then(|end| blob.get(off..end))
            .ok_or(DtError::Truncated)
    };
    let mut p = Parser {
        structs: block(off_struct, size_struct)?,
        strings: block(off_strings, size_strings)?,
        pos: 0,
    };
    if p.token()? != FDT_BEGIN_NODE {
        return Err(DtError::BadStructure);
    }
    let root = p.node(0)?;
    if p.token()? != FDT_END {
        return Err(DtError::BadStructure);
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_DTB: &[u8] = include_bytes!("../../tests/fixtures/qemu-virt-gicv3-2cpu.dtb");

    #[test]
    fn reads_what_qemu_writes() {
        let root = parse(QEMU_DTB).unwrap();
        assert_eq!(root.name, "");
        let psci = root.child("psci").unwrap();
        assert_eq!(psci.property("method").unwrap().as_str(), Some("smc"));
        let mem = root.child("memory@40000000").unwrap();
        let reg: Vec<u32> = mem.property("reg").unwrap().cells().unwrap().collect();
        assert_eq!(reg, [0, 0x4000_0000, 0, 0x2000_0000]);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        for len in 0..QEMU_DTB.len() {
            assert!(parse(&QEMU_DTB[..len]).is_err());
        }
        let mut blob = QEMU_DTB.to_vec();
        for i in (0..blob.len()).step_by(7) {
            let saved = blob[i];
            blob[i] ^= 0xa5;
            let _ = parse(&blob);
            blob[i] = saved;
        }
        assert_eq!(parse(&[0; 64]), Err(DtError::BadMagic));
    }

    #[test]
    fn property_accessors_check_lengths() {
        let p = Property {
            name: "x",
            value: &[0, 0, 0, 1, 0, 0, 0, 2],
        };
        assert_eq!(p.as_u64(), Some(0x1_0000_0002));
        assert_eq!(p.as_u32(), None);
        assert_eq!(p.as_str(), None);
        let s = Property {
            name: "s",
            value: b"vm0\0",
        };
        assert_eq!(s.as_str(), Some("vm0"));
        let two = Property {
            name: "s",
            value: b"a\0b\0",
        };
        assert_eq!(two.as_str(), None);
    }
}
