//! The FF-A v1.1 (Arm DEN0077A) the FF-A battery speaks: function IDs,
//! error codes, and the two descriptors it builds or reads (the memory
//! transaction descriptor of FFA_MEM_SHARE/LEND, the partition
//! information descriptor). Plain logic, tested on the host; the calls
//! themselves go through `arch::ffa_call`.
// The battery that uses all of it (`ffa`) only builds for the guest; the
// host build of this module is for its tests.
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

use core::fmt;

pub const FFA_ERROR: u32 = 0x8400_0060;
pub const FFA_SUCCESS_32: u32 = 0x8400_0061;
pub const FFA_VERSION: u32 = 0x8400_0063;
pub const FFA_FEATURES: u32 = 0x8400_0064;
pub const FFA_RX_RELEASE: u32 = 0x8400_0065;
pub const FFA_RXTX_MAP_64: u32 = 0xC400_0066;
pub const FFA_RXTX_UNMAP: u32 = 0x8400_0067;
pub const FFA_PARTITION_INFO_GET: u32 = 0x8400_0068;
pub const FFA_ID_GET: u32 = 0x8400_0069;
pub const FFA_MSG_SEND_DIRECT_REQ_32: u32 = 0x8400_006F;
pub const FFA_MSG_SEND_DIRECT_REQ_64: u32 = 0xC400_006F;
pub const FFA_MSG_SEND_DIRECT_RESP_32: u32 = 0x8400_0070;
pub const FFA_MSG_SEND_DIRECT_RESP_64: u32 = 0xC400_0070;
pub const FFA_MEM_DONATE_32: u32 = 0x8400_0071;
pub const FFA_MEM_LEND_32: u32 = 0x8400_0072;
pub const FFA_MEM_SHARE_32: u32 = 0x8400_0073;
pub const FFA_MEM_SHARE_64: u32 = 0xC400_0073;
pub const FFA_MEM_RECLAIM: u32 = 0x8400_0077;
pub const FFA_SPM_ID_GET: u32 = 0x8400_0085;

/// Every ABI the battery uses or the proxy answers, for FFA_FEATURES.
pub const ABIS: [(&str, u32); 21] = [
    ("ERROR", FFA_ERROR),
    ("SUCCESS_32", FFA_SUCCESS_32),
    ("SUCCESS_64", 0xC400_0061),
    ("VERSION", FFA_VERSION),
    ("FEATURES", FFA_FEATURES),
    ("ID_GET", FFA_ID_GET),
    ("SPM_ID_GET", FFA_SPM_ID_GET),
    ("RXTX_MAP_32", 0x8400_0066),
    ("RXTX_MAP_64", FFA_RXTX_MAP_64),
    ("RXTX_UNMAP", FFA_RXTX_UNMAP),
    ("RX_RELEASE", FFA_RX_RELEASE),
    ("PARTITION_INFO_GET", FFA_PARTITION_INFO_GET),
    ("MSG_SEND_DIRECT_REQ_32", FFA_MSG_SEND_DIRECT_REQ_32),
    ("MSG_SEND_DIRECT_REQ_64", FFA_MSG_SEND_DIRECT_REQ_64),
    ("MSG_SEND_DIRECT_RESP_32", FFA_MSG_SEND_DIRECT_RESP_32),
    ("MSG_SEND_DIRECT_RESP_64", FFA_MSG_SEND_DIRECT_RESP_64),
    ("MEM_SHARE_32", FFA_MEM_SHARE_32),
    ("MEM_SHARE_64", FFA_MEM_SHARE_64),
    ("MEM_LEND_32", FFA_MEM_LEND_32),
    ("MEM_LEND_64", 0xC400_0072),
    ("MEM_RECLAIM", FFA_MEM_RECLAIM),
];

/// FFA_VERSION 1.1.
pub const VERSION_1_1: u32 = 0x1_0001;
/// The stub SPMC's share-record partition command (the hypervisor's
/// `ffa::spmc::RECORD_CMD_OLDEST_FROM_OTHER`).
pub const RECORD_CMD_OLDEST_FROM_OTHER: u64 = 1;
/// Bytes of a v1.1 partition information descriptor.
pub const PARTITION_INFO_SIZE: usize = 24;
/// FFA_MEM_RECLAIM: zero the memory first.
pub const RECLAIM_ZERO: u64 = 1;

/// An FF-A error code (FF-A v1.1, Table 13.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FfaError(pub i32);

pub const NOT_SUPPORTED: FfaError = FfaError(-1);
pub const INVALID_PARAMETERS: FfaError = FfaError(-2);
pub const BUSY: FfaError = FfaError(-4);
pub const DENIED: FfaError = FfaError(-6);
pub const NO_DATA: FfaError = FfaError(-9);

impl fmt::Display for FfaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            -1 => "NOT_SUPPORTED",
            -2 => "INVALID_PARAMETERS",
            -3 => "NO_MEMORY",
            -4 => "BUSY",
            -5 => "INTERRUPTED",
            -6 => "DENIED",
            -7 => "RETRY",
            -8 => "ABORTED",
            -9 => "NO_DATA",
            _ => return write!(f, "error {}", self.0),
        };
        f.write_str(name)
    }
}

/// The outcome of a call answered with FFA_SUCCESS or FFA_ERROR; any
/// other answer is reported by its x0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success([u64; 8]),
    Error(FfaError),
    Other(u64),
}

impl Outcome {
    pub fn of(regs: [u64; 8]) -> Self {
        match regs[0] as u32 {
            FFA_SUCCESS_32 | 0xC400_0061 => Outcome::Success(regs),
            FFA_ERROR => Outcome::Error(FfaError(regs[2] as u32 as i32)),
            _ => Outcome::Other(regs[0]),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success(_) => f.write_str("SUCCESS"),
            Outcome::Error(e) => write!(f, "{e}"),
            Outcome::Other(x0) => write!(f, "x0={x0:#x}"),
        }
    }
}

/// A call's registers: function ID, then `args` from x1.
pub fn regs(function: u32, args: &[u64]) -> [u64; 8] {
    let mut regs = [0; 8];
    regs[0] = u64::from(function);
    regs[1..=args.len()].copy_from_slice(args);
    regs
}

/// One partition as FFA_PARTITION_INFO_GET describes it (Table 13.37).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    pub id: u16,
    pub contexts: u16,
    pub properties: u32,
    pub uuid: [u8; 16],
}

impl Partition {
    pub fn decode(bytes: &[u8; PARTITION_INFO_SIZE]) -> Self {
        let mut uuid = [0; 16];
        uuid.copy_from_slice(&bytes[8..]);
        Partition {
            id: u16::from_le_bytes([bytes[0], bytes[1]]),
            contexts: u16::from_le_bytes([bytes[2], bytes[3]]),
            properties: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            uuid,
        }
    }

    /// The UUID as FFA_PARTITION_INFO_GET takes it in w1..w4.
    pub fn uuid_words(&self) -> [u64; 4] {
        core::array::from_fn(|i| {
            let b = &self.uuid[i * 4..i * 4 + 4];
            u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        })
    }
}

/// A UUID printed as 8-4-4-4-12 hex digits of its bytes in order.
pub struct Uuid<'a>(pub &'a [u8; 16]);

impl fmt::Display for Uuid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Bytes of a memory transaction descriptor for one receiver and
/// `ranges.len()` ranges: header 48, access descriptor 16, composite 16,
/// 16 per range.
pub const fn share_len(ranges: usize) -> usize {
    48 + 16 + 16 + 16 * ranges
}

/// Memory region attributes of a share: normal memory, write-back, inner
/// shareable (Table 10.18).
pub const ATTRIBUTES_NORMAL_WB_INNER: u16 = 0x2f;
/// A lend to a single borrower leaves the attributes to the borrower
/// (FF-A v1.1 10.10.4.1.1); OP-TEE refuses a lend that sets them.
pub const ATTRIBUTES_NOT_SPECIFIED: u16 = 0;

/// Writes into `out` an FF-A v1.1 memory transaction descriptor (Table
/// 10.20) from `sender` giving `receiver` read-write access to `ranges`
/// (address, pages) with memory region `attributes`; returns its length.
pub fn encode_share(
    out: &mut [u8],
    sender: u16,
    receiver: u16,
    attributes: u16,
    ranges: &[(u64, u32)],
) -> usize {
    let len = share_len(ranges.len());
    let out = &mut out[..len];
    out.fill(0);
    let put16 = |o: &mut [u8], at: usize, v: u16| o[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |o: &mut [u8], at: usize, v: u32| o[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |o: &mut [u8], at: usize, v: u64| o[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put16(out, 0, sender);
    put16(out, 2, attributes);
    put32(out, 24, 16);
    put32(out, 28, 1);
    put32(out, 32, 48);
    put16(out, 48, receiver);
    // Read-write data access, instruction access not specified.
    out[50] = 0b10;
    put32(out, 52, 64);
    let total: u32 = ranges.iter().map(|r| r.1).sum();
    put32(out, 64, total);
    put32(out, 68, ranges.len() as u32);
    for (i, (address, pages)) in ranges.iter().enumerate() {
        put64(out, 80 + 16 * i, *address);
        put32(out, 88 + 16 * i, *pages);
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_descriptor_layout() {
        let mut buf = [0xffu8; 128];
        let len = encode_share(
            &mut buf,
            1,
            0x8002,
            ATTRIBUTES_NORMAL_WB_INNER,
            &[(0x4010_0000, 2), (0x4030_0000, 1)],
        );
        assert_eq!(len, 112);
        assert_eq!(&buf[0..4], &[1, 0, 0x2f, 0]);
        assert_eq!(&buf[24..36], &[16, 0, 0, 0, 1, 0, 0, 0, 48, 0, 0, 0]);
        assert_eq!(&buf[48..56], &[0x02, 0x80, 0b10, 0, 64, 0, 0, 0]);
        assert_eq!(&buf[64..72], &[3, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&buf[80..92], &[0, 0, 0x10, 0x40, 0, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(buf[112], 0xff, "nothing written past the descriptor");
    }

    #[test]
    fn outcomes_and_partitions() {
        assert_eq!(
            Outcome::of(regs(FFA_ERROR, &[0, 0xffff_fffa])),
            Outcome::Error(DENIED)
        );
        assert_eq!(DENIED.to_string(), "DENIED");
        let mut bytes = [0u8; PARTITION_INFO_SIZE];
        bytes[..8].copy_from_slice(&[0x01, 0x80, 1, 0, 3, 1, 0, 0]);
        bytes[8..].copy_from_slice(&core::array::from_fn::<u8, 16, _>(|i| i as u8));
        let p = Partition::decode(&bytes);
        assert_eq!((p.id, p.contexts, p.properties), (0x8001, 1, 0x103));
        assert_eq!(p.uuid_words()[0], 0x0302_0100);
        assert_eq!(
            Uuid(&p.uuid).to_string(),
            "00010203-0405-0607-0809-0a0b0c0d0e0f"
        );
    }
}
