//! The SPMC behind the proxy, as one trait with two backends chosen at
//! boot (`super::init`): [`StubSpmc`] here, for machines without a secure
//! world, and `super::forward::ForwardSpmc`, which passes calls to a real
//! SPMC at EL3. The proxy has validated every call before a backend sees
//! it (caller's ID, receivers, page ownership); memory addresses reaching
//! a backend are host-physical.
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;

use super::descriptors::{MemTransaction, PartitionInfo, ShareKind, PROPERTIES_DIRECT_AARCH64};
use super::{EndpointId, FfaError, Regs};
use crate::smccc::fid;

/// What the proxy needs of an SPMC.
pub trait Spmc: Send {
    /// One line for the console: which backend, and why.
    fn describe(&self) -> &str;
    /// The SPMC's own endpoint ID (FFA_SPM_ID_GET).
    fn id(&self) -> EndpointId;
    /// The secure partitions.
    fn partitions(&self) -> &[PartitionInfo];
    /// A direct request (x0..x7 as the VM made it, sender and receiver
    /// checked); returns the registers the VM gets back.
    fn direct_request(&mut self, regs: &Regs) -> Regs;
    /// Shares or lends the transaction's pages (physical addresses);
    /// returns the handle.
    fn share(&mut self, kind: ShareKind, transaction: &MemTransaction) -> Result<u64, FfaError>;
    /// Reclaims `handle` for its owner `owner` (FFA_MEM_RECLAIM flags).
    fn reclaim(&mut self, handle: u64, owner: EndpointId, flags: u32) -> Result<(), FfaError>;
}

/// The stub SPMC's own endpoint ID, as a real SPMC's (OP-TEE's is 0x8000).
pub const STUB_SPMC_ID: EndpointId = 0x8000;
/// The echo partition: answers a direct request with its payload.
pub const ECHO_SP: EndpointId = 0x8001;
/// The share-record partition: receives memory and reports what it holds.
pub const RECORD_SP: EndpointId = 0x8002;
/// Direct request to [`RECORD_SP`]: w3 = this command, w4 = an endpoint
/// ID; answers w3 = 0, w4/w5 = low/high half of the handle of the oldest
/// share it holds from any other endpoint, w6 = its owner, w7 = its pages;
/// or w3 = NO_DATA when it holds none. (The oldest: a VM's first share
/// stays put while it makes and reclaims others.)
pub const RECORD_CMD_OLDEST_FROM_OTHER: u64 = 1;

/// A share the stub holds.
struct Record {
    owner: EndpointId,
    pages: u64,
    /// Order of arrival, to find the oldest.
    serial: u64,
}

/// An SPMC with two test partitions, inside the hypervisor.
pub struct StubSpmc {
    why: &'static str,
    partitions: [PartitionInfo; 2],
    records: BTreeMap<u64, Record>,
    next_handle: u64,
}

impl StubSpmc {
    /// The stub, with the reason it was chosen (for the console).
    pub fn new(why: &'static str) -> Self {
        let partition = |id, uuid| PartitionInfo {
            id,
            execution_contexts: 1,
            properties: PROPERTIES_DIRECT_AARCH64,
            uuid,
        };
        Self {
            why,
            partitions: [
                // Random (version 4) UUIDs, one per test service.
                partition(
                    ECHO_SP,
                    [
                        0x5d, 0x2b, 0x8c, 0x1e, 0x3f, 0x4a, 0x47, 0x6b, 0x9a, 0x0e, 0x61, 0x7c,
                        0x25, 0xd8, 0x4f, 0x01,
                    ],
                ),
                partition(
                    RECORD_SP,
                    [
                        0xb7, 0x41, 0x06, 0xe2, 0x98, 0x3c, 0x4d, 0x15, 0x8e, 0x73, 0x2a, 0xf0,
                        0x5b, 0xc6, 0x19, 0x02,
                    ],
                ),
            ],
            records: BTreeMap::new(),
            // SPMC-allocated handles have bit 63 clear (FF-A v1.1, 11.2).
            next_handle: 1,
        }
    }

    fn oldest_from_other(&self, requester: u64) -> Option<(u64, &Record)> {
        self.records
            .iter()
            .filter(|(_, r)| u64::from(r.owner) != requester)
            .min_by_key(|(_, r)| r.serial)
            .map(|(h, r)| (*h, r))
    }
}

impl Spmc for StubSpmc {
    fn describe(&self) -> &str {
        self.why
    }

    fn id(&self) -> EndpointId {
        STUB_SPMC_ID
    }

    fn partitions(&self) -> &[PartitionInfo] {
        &self.partitions
    }

    fn direct_request(&mut self, regs: &Regs) -> Regs {
        let is_64 = regs[0] == u64::from(fid::FFA_MSG_SEND_DIRECT_REQ_64);
        let narrow = |v: u64| if is_64 { v } else { v & 0xffff_ffff };
        let sender = (regs[1] >> 16) & 0xffff;
        let receiver = regs[1] & 0xffff;
        let payload: [u64; 5] = match u16::try_from(receiver) {
            Ok(ECHO_SP) => [regs[3], regs[4], regs[5], regs[6], regs[7]],
            Ok(RECORD_SP) if regs[3] == RECORD_CMD_OLDEST_FROM_OTHER => {
                match self.oldest_from_other(regs[4]) {
                    Some((handle, r)) => [
                        0,
                        handle & 0xffff_ffff,
                        handle >> 32,
                        u64::from(r.owner),
                        r.pages,
                    ],
                    None => [FfaError::NoData.w2(), 0, 0, 0, 0],
                }
            }
            _ => [FfaError::NotSupported.w2(), 0, 0, 0, 0],
        };
        let resp = if is_64 {
            fid::FFA_MSG_SEND_DIRECT_RESP_64
        } else {
            fid::FFA_MSG_SEND_DIRECT_RESP_32
        };
        [
            u64::from(resp),
            (receiver << 16) | sender,
            0,
            narrow(payload[0]),
            narrow(payload[1]),
            narrow(payload[2]),
            narrow(payload[3]),
            narrow(payload[4]),
        ]
    }

    fn share(&mut self, _kind: ShareKind, transaction: &MemTransaction) -> Result<u64, FfaError> {
        let handle = self.next_handle;
        self.next_handle += 1;
        self.records.insert(
            handle,
            Record {
                owner: transaction.sender,
                pages: transaction.total_pages(),
                serial: handle,
            },
        );
        Ok(handle)
    }

    fn reclaim(&mut self, handle: u64, owner: EndpointId, _flags: u32) -> Result<(), FfaError> {
        match self.records.get(&handle) {
            Some(r) if r.owner == owner => {
                self.records.remove(&handle);
                Ok(())
            }
            _ => Err(FfaError::InvalidParameters),
        }
    }
}

/// Handles the stub gave out and still holds, for tests.
#[cfg(test)]
impl StubSpmc {
    pub(crate) fn handles(&self) -> alloc::vec::Vec<u64> {
        self.records.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffa::descriptors::{Range, Receiver};

    fn share_from(owner: EndpointId) -> MemTransaction {
        MemTransaction {
            sender: owner,
            attributes: 0,
            flags: 0,
            tag: 0,
            receivers: alloc::vec![Receiver {
                id: RECORD_SP,
                permissions: 2,
                flags: 0
            }],
            ranges: alloc::vec![Range {
                address: 0x8000_0000,
                pages: 3
            }],
        }
    }

    #[test]
    fn echo_returns_the_payload_narrowed_for_smc32() {
        let mut stub = StubSpmc::new("test");
        let req = [
            u64::from(fid::FFA_MSG_SEND_DIRECT_REQ_32),
            (1 << 16) | u64::from(ECHO_SP),
            0,
            1 << 40 | 5,
            6,
            7,
            8,
            9,
        ];
        assert_eq!(
            stub.direct_request(&req),
            [
                u64::from(fid::FFA_MSG_SEND_DIRECT_RESP_32),
                (u64::from(ECHO_SP) << 16) | 1,
                0,
                5,
                6,
                7,
                8,
                9
            ]
        );
    }

    #[test]
    fn records_report_the_oldest_share_of_another_owner() {
        let mut stub = StubSpmc::new("test");
        let ask = |stub: &mut StubSpmc, who: u64| {
            stub.direct_request(&[
                u64::from(fid::FFA_MSG_SEND_DIRECT_REQ_64),
                (who << 16) | u64::from(RECORD_SP),
                0,
                RECORD_CMD_OLDEST_FROM_OTHER,
                who,
                0,
                0,
                0,
            ])
        };
        assert_eq!(ask(&mut stub, 2)[3], FfaError::NoData.w2());
        let first = stub.share(ShareKind::Share, &share_from(1)).unwrap();
        let mine = stub.share(ShareKind::Lend, &share_from(2)).unwrap();
        let later = stub.share(ShareKind::Share, &share_from(1)).unwrap();
        assert_ne!(first, mine);
        assert_eq!(&ask(&mut stub, 2)[3..], &[0, first, 0, 1, 3]);
        assert_eq!(
            stub.reclaim(first, 2, 0),
            Err(FfaError::InvalidParameters),
            "not the owner"
        );
        assert_eq!(stub.reclaim(first, 1, 0), Ok(()));
        assert_eq!(stub.reclaim(first, 1, 0), Err(FfaError::InvalidParameters));
        assert_eq!(&ask(&mut stub, 2)[3..], &[0, later, 0, 1, 3]);
        assert_eq!(stub.handles(), [mine, later]);
    }
}
