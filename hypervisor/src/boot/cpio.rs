//! Reader for the boot bundle: a cpio archive in the "newc" format (magic
//! `070701`) as the lab packs it. Members are borrowed slices of the
//! archive; nothing is copied. Malformed archives yield [`CpioError`].
//! An archive that is not in memory is indexed piecewise ([`index`]): its
//! headers are read, its members' data left where it is.
#![forbid(unsafe_code)]

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";
/// `c_mode` file-type bits and the regular-file type.
const MODE_TYPE_MASK: u32 = 0o170000;
const MODE_REGULAR: u32 = 0o100000;

/// Why the archive could not be read.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CpioError {
    /// A header or member runs past the end of the archive.
    Truncated,
    /// A header without the newc magic.
    BadMagic,
    /// A header field that is not 8 hex digits, or a bad name.
    BadHeader,
    /// A piece of an archive read piecewise could not be read.
    Unreadable,
}

impl fmt::Display for CpioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CpioError::Truncated => "truncated cpio archive",
            CpioError::BadMagic => "not a newc cpio archive",
            CpioError::BadHeader => "malformed cpio header",
            CpioError::Unreadable => "the cpio archive could not be read",
        })
    }
}

/// One archive member.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Entry<'a> {
    /// Path inside the archive, without a leading `./`.
    pub name: &'a str,
    /// `c_mode`.
    pub mode: u32,
    /// File contents.
    pub data: &'a [u8],
}

impl Entry<'_> {
    /// Whether the member is a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & MODE_TYPE_MASK == MODE_REGULAR
    }
}

/// A newc cpio archive in memory.
#[derive(Clone, Copy, Debug)]
pub struct Archive<'a> {
    data: &'a [u8],
}

fn hex_field(header: &[u8], index: usize) -> Result<u32, CpioError> {
    let start = 6 + index * 8;
    let digits = header.get(start..start + 8).ok_or(CpioError::Truncated)?;
    let s = core::str::from_utf8(digits).map_err(|_| CpioError::BadHeader)?;
    u32::from_str_radix(s, 16).map_err(|_| CpioError::BadHeader)
}

fn usize_of(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// The fields of a header the reader uses.
struct Header {
    mode: u32,
    file_size: usize,
    name_size: usize,
}

impl Header {
    /// Reads the fields of `bytes`, a whole header.
    fn parse(bytes: &[u8]) -> Result<Self, CpioError> {
        if bytes.get(..6) != Some(MAGIC.as_slice()) {
            return Err(CpioError::BadMagic);
        }
        Ok(Header {
            mode: hex_field(bytes, 1)?,
            file_size: usize_of(hex_field(bytes, 6)?),
            name_size: usize_of(hex_field(bytes, 11)?),
        })
    }
}

/// A member's name from its NUL-terminated bytes.
fn member_name(raw: &[u8]) -> Result<&str, CpioError> {
    let (last, name) = raw.split_last().ok_or(CpioError::BadHeader)?;
    if *last != 0 {
        return Err(CpioError::BadHeader);
    }
    core::str::from_utf8(name).map_err(|_| CpioError::BadHeader)
}

/// Iterator over an archive's members, up to the trailer.
pub struct Entries<'a> {
    data: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Entries<'a> {
    fn parse_one(&mut self) -> Result<Option<Entry<'a>>, CpioError> {
        let header = self
            .data
            .get(self.pos..)
            .and_then(|rest| rest.get(..HEADER_LEN))
            .ok_or(CpioError::Truncated)?;
        let Header {
            mode,
            file_size,
            name_size,
        } = Header::parse(header)?;
        let name_start = self.pos + HEADER_LEN;
        let name_end = name_start
            .checked_add(name_size)
            .ok_or(CpioError::Truncated)?;
        let raw_name = self
            .data
            .get(name_start..name_end)
            .ok_or(CpioError::Truncated)?;
        let name = member_name(raw_name)?;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start
            .checked_add(file_size)
            .ok_or(CpioError::Truncated)?;
        let data = self
            .data
            .get(data_start..data_end)
            .ok_or(CpioError::Truncated)?;
        self.pos = data_end.next_multiple_of(4);
        if name == TRAILER {
            return Ok(None);
        }
        Ok(Some(Entry {
            name: name.strip_prefix("./").unwrap_or(name),
            mode,
            data,
        }))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, CpioError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.parse_one() {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Where a regular file's data lies in an archive.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Span {
    /// Path inside the archive, without a leading `./`.
    pub name: String,
    /// Offset of the data from the start of the archive.
    pub offset: usize,
    /// Bytes of data.
    pub len: usize,
}

/// Indexes an archive of `len` bytes that is not in memory: reads each
/// header and name with `read(offset, dest)` into a small buffer of its
/// own, skips the data, and returns where each regular file's lies. Only
/// the headers are read: the data of a member nobody asks for is never
/// touched.
pub fn index(
    len: usize,
    mut read: impl FnMut(usize, &mut [u8]) -> Result<(), CpioError>,
) -> Result<Vec<Span>, CpioError> {
    let mut spans = Vec::new();
    let mut header = [0u8; HEADER_LEN];
    let mut raw_name = Vec::new();
    let mut pos: usize = 0;
    loop {
        let header_end = pos
            .checked_add(HEADER_LEN)
            .filter(|&end| end <= len)
            .ok_or(CpioError::Truncated)?;
        read(pos, &mut header)?;
        let Header {
            mode,
            file_size,
            name_size,
        } = Header::parse(&header)?;
        let name_end = header_end
            .checked_add(name_size)
            .filter(|&end| end <= len)
            .ok_or(CpioError::Truncated)?;
        raw_name.clear();
        raw_name.resize(name_size, 0);
        read(header_end, &mut raw_name)?;
        let name = member_name(&raw_name)?;
        let data_start = name_end.next_multiple_of(4);
        let data_end = data_start
            .checked_add(file_size)
            .filter(|&end| end <= len)
            .ok_or(CpioError::Truncated)?;
        if name == TRAILER {
            return Ok(spans);
        }
        if mode & MODE_TYPE_MASK == MODE_REGULAR {
            spans.push(Span {
                name: name.strip_prefix("./").unwrap_or(name).to_string(),
                offset: data_start,
                len: file_size,
            });
        }
        pos = data_end.next_multiple_of(4);
    }
}

impl<'a> Archive<'a> {
    /// Wraps the archive bytes (nothing is checked until members are read).
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The members in archive order.
    pub fn entries(&self) -> Entries<'a> {
        Entries {
            data: self.data,
            pos: 0,
            done: false,
        }
    }

    /// The regular file called `name` (`Ok(None)` if there is none).
    pub fn find(&self, name: &str) -> Result<Option<&'a [u8]>, CpioError> {
        let wanted = name.strip_prefix("./").unwrap_or(name);
        for entry in self.entries() {
            let entry = entry?;
            if entry.is_file() && entry.name == wanted {
                return Ok(Some(entry.data));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::vec::Vec;

    /// Builds a newc archive: (name, mode, data) members plus the trailer.
    pub fn build(members: &[(&str, u32, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut add = |name: &str, mode: u32, data: &[u8], ino: u32| {
            let header = format!(
                "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
            );
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
        for (i, (name, mode, data)) in members.iter().enumerate() {
            add(name, *mode, data, u32::try_from(i).unwrap() + 1);
        }
        add(TRAILER, 0, &[], 0);
        out
    }

    /// A directory, then two files, one named with a leading `./`.
    fn sample() -> Vec<u8> {
        build(&[
            (".", 0o40755, b""),
            ("manifest.dtb", 0o100644, b"MANIFEST"),
            ("./vm0/kernel", 0o100644, b"kernel bytes"),
        ])
    }

    #[test]
    fn finds_members_by_name() {
        let a = sample();
        let archive = Archive::new(&a);
        assert_eq!(archive.find("manifest.dtb"), Ok(Some(&b"MANIFEST"[..])));
        assert_eq!(archive.find("vm0/kernel"), Ok(Some(&b"kernel bytes"[..])));
        assert_eq!(archive.find("vm0/dtb"), Ok(None));
        // The directory "." is not a file.
        assert_eq!(archive.find("."), Ok(None));
        assert_eq!(archive.entries().count(), 3);
    }

    #[test]
    fn an_archive_indexed_piecewise_finds_what_one_in_memory_does() {
        let a = sample();
        let mut reads = Vec::new();
        let spans = index(a.len(), |at, dest| {
            reads.push((at, dest.len()));
            dest.copy_from_slice(&a[at..at + dest.len()]);
            Ok(())
        })
        .unwrap();
        assert_eq!(
            spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["manifest.dtb", "vm0/kernel"]
        );
        // Headers and names only: four members, two reads each.
        assert_eq!(reads.len(), 8);
        for span in &spans {
            assert_eq!(
                Archive::new(&a).find(&span.name),
                Ok(Some(&a[span.offset..span.offset + span.len]))
            );
        }
    }

    #[test]
    fn a_piecewise_index_stops_at_the_first_problem() {
        let a = build(&[("manifest.dtb", 0o100644, b"MANIFEST")]);
        let copy = |at: usize, dest: &mut [u8]| {
            dest.copy_from_slice(&a[at..at + dest.len()]);
            Ok(())
        };
        for len in 0..a.len() - 120 {
            assert!(index(len, copy).is_err(), "length {len}");
        }
        assert_eq!(
            index(a.len(), |_, _| Err(CpioError::Unreadable)),
            Err(CpioError::Unreadable)
        );
        let mut bad = a.clone();
        bad[0] = b'1';
        let from_bad = |at: usize, dest: &mut [u8]| {
            dest.copy_from_slice(&bad[at..at + dest.len()]);
            Ok(())
        };
        assert_eq!(index(a.len(), from_bad), Err(CpioError::BadMagic));
    }

    #[test]
    fn malformed_archives_are_errors() {
        let a = build(&[("manifest.dtb", 0o100644, b"MANIFEST")]);
        for len in 0..a.len() - 120 {
            assert!(
                Archive::new(&a[..len]).find("nothing").is_err(),
                "length {len}"
            );
        }
        let mut bad = a.clone();
        bad[0] = b'1';
        assert_eq!(Archive::new(&bad).find("x"), Err(CpioError::BadMagic));
        let mut bad = a.clone();
        bad[60] = b'z';
        assert_eq!(Archive::new(&bad).find("x"), Err(CpioError::BadHeader));
    }
}
