//! FF-A v1.1 (DEN0077A) descriptors in RX/TX buffers: the memory
//! transaction descriptor of FFA_MEM_SHARE/LEND with its endpoint memory
//! access descriptors and composite memory region descriptor (parsed and
//! validated from a caller's TX buffer, encoded for the SPMC), and the
//! partition information descriptor of FFA_PARTITION_INFO_GET. Every
//! offset and count comes from the guest, so all arithmetic is checked.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::{EndpointId, FfaError};
use crate::addr::PAGE_SIZE;

/// Memory transaction descriptor (FF-A v1.1, Table 10.20).
pub const MEM_TRANSACTION_SIZE: usize = 48;
/// Endpoint memory access descriptor (FF-A v1.1, Table 10.16).
pub const EMAD_SIZE: usize = 16;
/// Memory access permissions descriptor (FF-A v1.1, Table 10.15).
pub const ACCESS_PERMISSIONS_SIZE: usize = 4;
/// Composite memory region descriptor header (FF-A v1.1, Table 10.13).
pub const COMPOSITE_SIZE: usize = 16;
/// Constituent memory region descriptor (FF-A v1.1, Table 10.14).
pub const CONSTITUENT_SIZE: usize = 16;
/// Partition information descriptor (FF-A v1.1, Table 13.37).
pub const PARTITION_INFO_SIZE: usize = 24;

/// The layouts as fields, so the sizes above are checked against the
/// fields the parser reads.
#[repr(C)]
struct MemTransactionLayout {
    sender: u16,
    attributes: u16,
    flags: u32,
    handle: u64,
    tag: u64,
    emad_size: u32,
    emad_count: u32,
    emad_offset: u32,
    reserved: [u8; 12],
}
#[repr(C)]
struct AccessPermissionsLayout {
    endpoint: u16,
    permissions: u8,
    flags: u8,
}
#[repr(C)]
struct EmadLayout {
    access: AccessPermissionsLayout,
    composite_offset: u32,
    reserved: u64,
}
#[repr(C)]
struct CompositeLayout {
    total_pages: u32,
    range_count: u32,
    reserved: u64,
}
#[repr(C)]
struct ConstituentLayout {
    address: u64,
    pages: u32,
    reserved: u32,
}
#[repr(C)]
struct PartitionInfoLayout {
    id: u16,
    execution_contexts: u16,
    properties: u32,
    uuid: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<MemTransactionLayout>() == MEM_TRANSACTION_SIZE);
const _: () = assert!(core::mem::size_of::<AccessPermissionsLayout>() == ACCESS_PERMISSIONS_SIZE);
const _: () = assert!(core::mem::size_of::<EmadLayout>() == EMAD_SIZE);
const _: () = assert!(core::mem::size_of::<CompositeLayout>() == COMPOSITE_SIZE);
const _: () = assert!(core::mem::size_of::<ConstituentLayout>() == CONSTITUENT_SIZE);
const _: () = assert!(core::mem::size_of::<PartitionInfoLayout>() == PARTITION_INFO_SIZE);

/// Flags of a memory transaction (Table 10.21): bits 4:3 the transaction
/// type (0 unspecified, 1 share, 2 lend), bit 0 zero memory; bits 9:5 are
/// the address-range alignment hint; the rest is reserved.
const FLAG_ZERO_MEMORY: u32 = 1 << 0;
const FLAG_TYPE_SHIFT: u32 = 3;
const FLAG_TYPE_MASK: u32 = 0b11 << FLAG_TYPE_SHIFT;
const FLAGS_DEFINED: u32 = 0x3ff;

/// How the sender gives memory away.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ShareKind {
    /// FFA_MEM_SHARE: the sender keeps access.
    Share,
    /// FFA_MEM_LEND: the sender gives up access until it reclaims.
    Lend,
}

impl ShareKind {
    fn type_flag(self) -> u32 {
        match self {
            ShareKind::Share => 1 << FLAG_TYPE_SHIFT,
            ShareKind::Lend => 2 << FLAG_TYPE_SHIFT,
        }
    }
}

/// One receiver and the access it gets (Table 10.15).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Receiver {
    /// Its endpoint ID.
    pub id: EndpointId,
    /// Data and instruction access permissions.
    pub permissions: u8,
    /// Receiver flags.
    pub flags: u8,
}

/// A contiguous run of pages (Table 10.14): the address is an IPA in a
/// guest's descriptor, a physical address in one sent to the SPMC.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Range {
    /// First byte, page-aligned.
    pub address: u64,
    /// 4 KiB pages, at least one.
    pub pages: u32,
}

impl Range {
    /// One past the last byte, if that fits in 64 bits.
    pub fn end(&self) -> Option<u64> {
        u64::from(self.pages)
            .checked_mul(PAGE_SIZE)
            .and_then(|len| self.address.checked_add(len))
    }

    /// The address of every page, up to the end of the address space: a
    /// parsed range never reaches it (parsing checks [`Range::end`]), and
    /// one built otherwise stops there rather than wrap.
    pub fn page_addresses(&self) -> impl Iterator<Item = u64> + '_ {
        (0..u64::from(self.pages)).map_while(move |i| {
            i.checked_mul(PAGE_SIZE)
                .and_then(|o| self.address.checked_add(o))
        })
    }
}

/// A validated FFA_MEM_SHARE/LEND transaction.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MemTransaction {
    /// The sender (owner).
    pub sender: EndpointId,
    /// Memory region attributes (Table 10.18), passed on as given.
    pub attributes: u16,
    /// Transaction flags.
    pub flags: u32,
    /// Tag, passed on as given.
    pub tag: u64,
    /// The receivers, at least one, no duplicates, none the sender.
    pub receivers: Vec<Receiver>,
    /// The memory, at least one page, ranges page-aligned and disjoint.
    pub ranges: Vec<Range>,
}

impl MemTransaction {
    /// Pages in all ranges.
    pub fn total_pages(&self) -> u64 {
        self.ranges.iter().map(|r| u64::from(r.pages)).sum()
    }

    /// The same transaction over other ranges (the physical pages behind
    /// the IPAs, when it goes to the SPMC).
    pub fn with_ranges(&self, ranges: Vec<Range>) -> Self {
        Self {
            ranges,
            ..self.clone()
        }
    }

    /// The descriptor as FF-A v1.1 lays it out: the transaction header,
    /// the access descriptors right after it, then one composite
    /// descriptor all receivers share.
    pub fn encode(&self) -> Vec<u8> {
        let emads = self.receivers.len() * EMAD_SIZE;
        let composite_offset = MEM_TRANSACTION_SIZE + emads;
        let mut out = Vec::with_capacity(
            composite_offset + COMPOSITE_SIZE + self.ranges.len() * CONSTITUENT_SIZE,
        );
        out.extend_from_slice(&self.sender.to_le_bytes());
        out.extend_from_slice(&self.attributes.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        out.extend_from_slice(&self.tag.to_le_bytes());
        out.extend_from_slice(&u32_of(EMAD_SIZE).to_le_bytes());
        out.extend_from_slice(&u32_of(self.receivers.len()).to_le_bytes());
        out.extend_from_slice(&u32_of(MEM_TRANSACTION_SIZE).to_le_bytes());
        out.extend_from_slice(&[0; 12]);
        for r in &self.receivers {
            out.extend_from_slice(&r.id.to_le_bytes());
            out.push(r.permissions);
            out.push(r.flags);
            out.extend_from_slice(&u32_of(composite_offset).to_le_bytes());
            out.extend_from_slice(&0u64.to_le_bytes());
        }
        let total = u32::try_from(self.total_pages()).unwrap_or(u32::MAX);
        out.extend_from_slice(&total.to_le_bytes());
        out.extend_from_slice(&u32_of(self.ranges.len()).to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        for range in &self.ranges {
            out.extend_from_slice(&range.address.to_le_bytes());
            out.extend_from_slice(&range.pages.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        out
    }
}

fn u32_of(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Little-endian field reads that fail instead of panicking.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes<const N: usize>(&self, offset: usize) -> Result<[u8; N], FfaError> {
        let end = offset.checked_add(N).ok_or(FfaError::InvalidParameters)?;
        self.0
            .get(offset..end)
            .and_then(|s| s.try_into().ok())
            .ok_or(FfaError::InvalidParameters)
    }
    fn u8(&self, offset: usize) -> Result<u8, FfaError> {
        Ok(self.bytes::<1>(offset)?[0])
    }
    fn u16(&self, offset: usize) -> Result<u16, FfaError> {
        Ok(u16::from_le_bytes(self.bytes(offset)?))
    }
    fn u32(&self, offset: usize) -> Result<u32, FfaError> {
        Ok(u32::from_le_bytes(self.bytes(offset)?))
    }
    fn u64(&self, offset: usize) -> Result<u64, FfaError> {
        Ok(u64::from_le_bytes(self.bytes(offset)?))
    }
    fn offset(&self, value: u32) -> Result<usize, FfaError> {
        usize::try_from(value).map_err(|_| FfaError::InvalidParameters)
    }
}

/// Start of the `index`-th element of an array of `size`-byte elements at
/// `base`, checked.
fn element(base: usize, index: usize, size: usize) -> Result<usize, FfaError> {
    index
        .checked_mul(size)
        .and_then(|o| base.checked_add(o))
        .ok_or(FfaError::InvalidParameters)
}

/// Parses and validates the memory transaction descriptor `bytes` (the
/// first `length` bytes of the sender's TX buffer) of a `kind`
/// transaction from `sender`. Every malformed descriptor is
/// INVALID_PARAMETERS, as FF-A v1.1 (11.1) has it.
pub fn parse_mem_transaction(
    bytes: &[u8],
    kind: ShareKind,
    sender: EndpointId,
) -> Result<MemTransaction, FfaError> {
    let r = Reader(bytes);
    if bytes.len() < MEM_TRANSACTION_SIZE {
        return Err(FfaError::InvalidParameters);
    }
    let flags = r.u32(4)?;
    let type_flag = flags & FLAG_TYPE_MASK;
    let reserved_zero = r.bytes::<12>(36)? == [0; 12];
    if r.u16(0)? != sender
        || r.u64(8)? != 0
        || flags & !FLAGS_DEFINED != 0
        || (type_flag != 0 && type_flag != kind.type_flag())
        || (kind == ShareKind::Share && flags & FLAG_ZERO_MEMORY != 0)
        || r.u32(24)? != u32_of(EMAD_SIZE)
        || !reserved_zero
    {
        return Err(FfaError::InvalidParameters);
    }
    let count = r.offset(r.u32(28)?)?;
    let emads = r.offset(r.u32(32)?)?;
    if count == 0 || emads < MEM_TRANSACTION_SIZE || !emads.is_multiple_of(16) {
        return Err(FfaError::InvalidParameters);
    }
    let emads_end = element(emads, count, EMAD_SIZE)?;
    if emads_end > bytes.len() {
        return Err(FfaError::InvalidParameters);
    }
    let mut receivers: Vec<Receiver> = Vec::new();
    let mut composite = None;
    for i in 0..count {
        let at = element(emads, i, EMAD_SIZE)?;
        let receiver = Receiver {
            id: r.u16(at)?,
            permissions: r.u8(at + 2)?,
            flags: r.u8(at + 3)?,
        };
        let offset = r.offset(r.u32(at + 4)?)?;
        if receiver.id == sender
            || receivers.iter().any(|x| x.id == receiver.id)
            || r.u64(at + 8)? != 0
            // Every receiver describes the same memory.
            || composite.is_some_and(|c| c != offset)
        {
            return Err(FfaError::InvalidParameters);
        }
        composite = Some(offset);
        receivers.push(receiver);
    }
    let composite = composite.ok_or(FfaError::InvalidParameters)?;
    // The composite descriptor lies after the header and the access
    // descriptors and inside the buffer, 8-byte aligned.
    if composite < emads_end
        || !composite.is_multiple_of(8)
        || composite
            .checked_add(COMPOSITE_SIZE)
            .is_none_or(|end| end > bytes.len())
    {
        return Err(FfaError::InvalidParameters);
    }
    let total_pages = r.u32(composite)?;
    let range_count = r.offset(r.u32(composite + 4)?)?;
    let first = composite + COMPOSITE_SIZE;
    if range_count == 0 || r.u64(composite + 8)? != 0 {
        return Err(FfaError::InvalidParameters);
    }
    if element(first, range_count, CONSTITUENT_SIZE)? > bytes.len() {
        return Err(FfaError::InvalidParameters);
    }
    let mut ranges = Vec::with_capacity(range_count);
    let mut sum: u64 = 0;
    for i in 0..range_count {
        let at = element(first, i, CONSTITUENT_SIZE)?;
        let range = Range {
            address: r.u64(at)?,
            pages: r.u32(at + 8)?,
        };
        if range.pages == 0
            || !range.address.is_multiple_of(PAGE_SIZE)
            || range.end().is_none()
            || r.u32(at + 12)? != 0
        {
            return Err(FfaError::InvalidParameters);
        }
        sum += u64::from(range.pages);
        ranges.push(range);
    }
    if sum != u64::from(total_pages) || overlapping(&ranges) {
        return Err(FfaError::InvalidParameters);
    }
    Ok(MemTransaction {
        sender,
        attributes: r.u16(2)?,
        flags,
        tag: r.u64(16)?,
        receivers,
        ranges,
    })
}

/// Whether any two ranges share a page (each range's end is known to fit).
fn overlapping(ranges: &[Range]) -> bool {
    let mut sorted: Vec<(u64, u64)> = ranges
        .iter()
        .map(|r| (r.address, r.end().unwrap_or(u64::MAX)))
        .collect();
    sorted.sort_unstable();
    sorted.windows(2).any(|w| w[1].0 < w[0].1)
}

/// What FFA_PARTITION_INFO_GET reports about one partition.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PartitionInfo {
    /// Its endpoint ID.
    pub id: EndpointId,
    /// Execution contexts (vCPUs).
    pub execution_contexts: u16,
    /// Partition properties (Table 13.38).
    pub properties: u32,
    /// Its UUID, in the byte order the descriptor carries.
    pub uuid: [u8; 16],
}

/// Partition properties: receives and sends direct requests, runs in
/// AArch64 (Table 13.38, bits 0, 1 and 8).
pub const PROPERTIES_DIRECT_AARCH64: u32 = (1 << 0) | (1 << 1) | (1 << 8);

impl PartitionInfo {
    /// The 24-byte descriptor.
    pub fn encode(&self) -> [u8; PARTITION_INFO_SIZE] {
        let mut out = [0; PARTITION_INFO_SIZE];
        out[0..2].copy_from_slice(&self.id.to_le_bytes());
        out[2..4].copy_from_slice(&self.execution_contexts.to_le_bytes());
        out[4..8].copy_from_slice(&self.properties.to_le_bytes());
        out[8..24].copy_from_slice(&self.uuid);
        out
    }

    /// Decodes a descriptor (as the SPMC writes it into our RX buffer).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let r = Reader(bytes);
        Some(Self {
            id: r.u16(0).ok()?,
            execution_contexts: r.u16(2).ok()?,
            properties: r.u32(4).ok()?,
            uuid: r.bytes(8).ok()?,
        })
    }
}

/// The UUID FFA_PARTITION_INFO_GET carries in w1..w4: each register holds
/// four bytes of it, little-endian.
pub fn uuid_from_words(words: [u32; 4]) -> [u8; 16] {
    let mut uuid = [0; 16];
    for (chunk, word) in uuid.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    uuid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_addresses_stop_at_the_end_of_the_address_space() {
        let near_end = Range {
            address: u64::MAX - 2 * PAGE_SIZE + 1,
            pages: 4,
        };
        assert_eq!(near_end.end(), None);
        assert_eq!(
            near_end.page_addresses().collect::<Vec<_>>(),
            [u64::MAX - 2 * PAGE_SIZE + 1, u64::MAX - PAGE_SIZE + 1]
        );
        let ordinary = Range {
            address: 0x4000_0000,
            pages: 2,
        };
        assert_eq!(
            ordinary.page_addresses().collect::<Vec<_>>(),
            [0x4000_0000, 0x4000_1000]
        );
    }

    const VM: EndpointId = 1;
    const SP: EndpointId = 0x8001;

    fn good() -> MemTransaction {
        MemTransaction {
            sender: VM,
            attributes: 0x2f,
            flags: 0,
            tag: 0,
            receivers: vec![Receiver {
                id: SP,
                permissions: 0b10,
                flags: 0,
            }],
            ranges: vec![
                Range {
                    address: 0x4010_0000,
                    pages: 2,
                },
                Range {
                    address: 0x4020_0000,
                    pages: 1,
                },
            ],
        }
    }

    #[test]
    fn a_good_descriptor_round_trips() {
        let t = good();
        let bytes = t.encode();
        assert_eq!(
            bytes.len(),
            MEM_TRANSACTION_SIZE + EMAD_SIZE + COMPOSITE_SIZE + 2 * CONSTITUENT_SIZE
        );
        assert_eq!(parse_mem_transaction(&bytes, ShareKind::Share, VM), Ok(t));
        assert_eq!(good().total_pages(), 3);
    }

    fn put32(bytes: &mut [u8], at: usize, v: u32) {
        bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(bytes: &mut [u8], at: usize, v: u64) {
        bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Offsets in the encoding of `good()`.
    const EMAD: usize = MEM_TRANSACTION_SIZE;
    const COMPOSITE: usize = EMAD + EMAD_SIZE;
    const RANGE0: usize = COMPOSITE + COMPOSITE_SIZE;
    const RANGE1: usize = RANGE0 + CONSTITUENT_SIZE;

    #[test]
    fn bad_descriptors_are_invalid_parameters() {
        type Edit = fn(&mut Vec<u8>);
        let cases: &[(&str, Edit)] = &[
            ("shorter than the header", |b| b.truncate(40)),
            ("someone else's sender ID", |b| b[0] = 2),
            ("a handle on a new transaction", |b| put64(b, 8, 7)),
            ("reserved flag bits", |b| put32(b, 4, 1 << 12)),
            ("a lend flagged as share", |b| put32(b, 4, 2 << 3)),
            ("zero memory on a share", |b| put32(b, 4, 1)),
            ("a v1.0 access descriptor size", |b| put32(b, 24, 12)),
            ("reserved header bytes", |b| b[40] = 1),
            ("no receivers", |b| put32(b, 28, 0)),
            ("a receiver count that overflows", |b| {
                put32(b, 28, u32::MAX)
            }),
            ("receivers past the buffer", |b| put32(b, 28, 9)),
            ("access descriptors inside the header", |b| put32(b, 32, 16)),
            ("access descriptors past the buffer", |b| {
                put32(b, 32, 0xffff_fff0)
            }),
            ("unaligned access descriptors", |b| put32(b, 32, 52)),
            ("the sender as its own receiver", |b| {
                b[EMAD..EMAD + 2].copy_from_slice(&VM.to_le_bytes())
            }),
            ("a composite offset past the buffer", |b| {
                put32(b, EMAD + 4, 4096)
            }),
            ("a composite inside the header", |b| put32(b, EMAD + 4, 8)),
            ("a composite offset that wraps", |b| {
                put32(b, EMAD + 4, u32::MAX - 7)
            }),
            ("a page total that does not add up", |b| {
                put32(b, COMPOSITE, 4)
            }),
            ("no ranges", |b| put32(b, COMPOSITE + 4, 0)),
            ("a range count past the buffer", |b| {
                put32(b, COMPOSITE + 4, 3)
            }),
            ("a range count that overflows", |b| {
                put32(b, COMPOSITE + 4, u32::MAX)
            }),
            ("an unaligned range", |b| put64(b, RANGE0, 0x4010_0800)),
            ("a range of zero pages", |b| {
                put32(b, RANGE1 + 8, 0);
                put32(b, COMPOSITE, 2);
            }),
            ("a range that wraps the address space", |b| {
                put64(b, RANGE1, 0xffff_ffff_ffff_f000);
            }),
            ("overlapping ranges", |b| put64(b, RANGE1, 0x4010_1000)),
            ("the same range twice", |b| {
                put64(b, RANGE1, 0x4010_0000);
                put32(b, RANGE1 + 8, 2);
                put32(b, COMPOSITE, 4);
            }),
            ("reserved constituent bytes", |b| put32(b, RANGE0 + 12, 1)),
        ];
        for (what, edit) in cases {
            let mut bytes = good().encode();
            edit(&mut bytes);
            assert_eq!(
                parse_mem_transaction(&bytes, ShareKind::Share, VM),
                Err(FfaError::InvalidParameters),
                "{what}"
            );
        }
    }

    #[test]
    fn two_receivers_must_differ_and_share_one_composite() {
        let mut t = good();
        t.receivers.push(Receiver {
            id: 0x8002,
            ..t.receivers[0]
        });
        let bytes = t.encode();
        assert_eq!(
            parse_mem_transaction(&bytes, ShareKind::Lend, VM).map(|t| t.receivers.len()),
            Ok(2)
        );
        let mut twice = bytes.clone();
        twice[EMAD + EMAD_SIZE] = 0x01;
        twice[EMAD + EMAD_SIZE + 1] = 0x80;
        assert_eq!(
            parse_mem_transaction(&twice, ShareKind::Lend, VM),
            Err(FfaError::InvalidParameters)
        );
        let mut apart = bytes;
        put32(&mut apart, EMAD + EMAD_SIZE + 4, 0);
        assert_eq!(
            parse_mem_transaction(&apart, ShareKind::Lend, VM),
            Err(FfaError::InvalidParameters)
        );
    }

    #[test]
    fn partition_info_and_uuid_words() {
        let info = PartitionInfo {
            id: 0x8001,
            execution_contexts: 1,
            properties: PROPERTIES_DIRECT_AARCH64,
            uuid: uuid_from_words([0x0302_0100, 0x0706_0504, 0x0b0a_0908, 0x0f0e_0d0c]),
        };
        let bytes = info.encode();
        assert_eq!(&bytes[..8], &[0x01, 0x80, 1, 0, 0x03, 0x01, 0, 0]);
        assert_eq!(&bytes[8..], &core::array::from_fn::<u8, 16, _>(|i| i as u8));
        assert_eq!(PartitionInfo::decode(&bytes), Some(info));
        assert_eq!(PartitionInfo::decode(&bytes[..20]), None);
    }
}
