//! The FF-A proxy: answers every FF-A call a VM makes for its endpoint,
//! holds each endpoint's RX/TX mailbox, and records which of its pages
//! are mailbox, shared or lent, in a per-VM table. The table, not
//! stage-2 software bits: the proxy only needs the state at call time,
//! under its one lock, for pages of every VM (a reclaim is checked
//! against the share's owner), and guest stage 2 stays as the VM was
//! built; the stage 2 is still what decides ownership (`CallerMemory`).
//! The SPMC behind it (`super::spmc::Spmc`) sees only calls that passed
//! these checks, with host-physical addresses.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::descriptors::{
    parse_mem_transaction, uuid_from_words, PartitionInfo, Range, ShareKind, PARTITION_INFO_SIZE,
};
use super::spmc::Spmc;
use super::{error, success, vm_endpoint_id, FfaError, Regs};
use crate::addr::{IntermediatePhysAddr, PhysAddr, PAGE_SIZE};
use crate::devices::memory::GuestMemory;
use crate::smccc::{fid, FunctionId};

/// The FF-A version the proxy implements (1.1).
pub const VERSION: u32 = 0x1_0001;
/// FFA_VERSION's answer to a version it cannot serve.
const VERSION_NOT_SUPPORTED: u64 = 0xffff_ffff;
/// FFA_RXTX_MAP: the page count is w3 bits 5:0.
const RXTX_PAGE_COUNT_MASK: u64 = 0x3f;
/// FFA_PARTITION_INFO_GET flags: return the count only.
const PARTITION_COUNT_ONLY: u64 = 1;
/// FFA_MEM_RECLAIM flags: zero the memory before giving it back.
const RECLAIM_ZERO: u64 = 1;

/// The calling VM's memory: bytes at IPAs, and which pages it owns.
pub trait CallerMemory: GuestMemory {
    /// The host-physical page behind the page at `ipa`, if the caller's
    /// stage 2 maps it to the caller's own RAM.
    fn owned_page(&self, ipa: IntermediatePhysAddr) -> Option<PhysAddr>;
}

/// What a page of a VM is used for by FF-A.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum PageUse {
    /// Part of its RX/TX mailbox.
    Mailbox,
    /// Shared or lent under this handle.
    Given(u64),
}

/// A VM's registered RX/TX buffer pair.
#[derive(Clone, Copy, Debug)]
struct Mailbox {
    tx: IntermediatePhysAddr,
    rx: IntermediatePhysAddr,
    pages: u64,
    /// The RX buffer holds a message for the VM (it owns it until
    /// FFA_RX_RELEASE).
    rx_full: bool,
}

impl Mailbox {
    fn bytes(&self) -> u64 {
        self.pages * PAGE_SIZE
    }
}

/// One VM's FF-A state.
#[derive(Default)]
struct Endpoint {
    mailbox: Option<Mailbox>,
    pages: BTreeMap<u64, PageUse>,
}

/// A share or lend the SPMC accepted.
struct Share {
    owner: usize,
    pages: Vec<u64>,
}

/// Every VM's FF-A state and the SPMC.
pub struct Proxy {
    spmc: Box<dyn Spmc>,
    endpoints: Vec<Endpoint>,
    shares: BTreeMap<u64, Share>,
    /// Some VM made an FF-A call already (the console line is printed
    /// once).
    announced: bool,
}

/// The ABIs FFA_FEATURES reports, with their w2 properties.
const FEATURES: [(u32, u64); 21] = [
    (fid::FFA_ERROR, 0),
    (fid::FFA_SUCCESS_32, 0),
    (fid::FFA_SUCCESS_64, 0),
    (fid::FFA_VERSION, 0),
    (fid::FFA_FEATURES, 0),
    (fid::FFA_ID_GET, 0),
    (fid::FFA_SPM_ID_GET, 0),
    // Buffers of any multiple of 4 KiB, 4 KiB aligned (w2 bits 1:0 = 0).
    (fid::FFA_RXTX_MAP_32, 0),
    (fid::FFA_RXTX_MAP_64, 0),
    (fid::FFA_RXTX_UNMAP, 0),
    (fid::FFA_RX_RELEASE, 0),
    (fid::FFA_PARTITION_INFO_GET, 0),
    (fid::FFA_MSG_SEND_DIRECT_REQ_32, 0),
    (fid::FFA_MSG_SEND_DIRECT_REQ_64, 0),
    (fid::FFA_MSG_SEND_DIRECT_RESP_32, 0),
    (fid::FFA_MSG_SEND_DIRECT_RESP_64, 0),
    // No dynamically allocated buffers: descriptors come in the TX buffer.
    (fid::FFA_MEM_SHARE_32, 0),
    (fid::FFA_MEM_SHARE_64, 0),
    (fid::FFA_MEM_LEND_32, 0),
    (fid::FFA_MEM_LEND_64, 0),
    (fid::FFA_MEM_RECLAIM, 0),
];

impl Proxy {
    /// The proxy for `vms` VMs in front of `spmc`.
    pub fn new(vms: usize, spmc: Box<dyn Spmc>) -> Self {
        Self {
            spmc,
            endpoints: (0..vms).map(|_| Endpoint::default()).collect(),
            shares: BTreeMap::new(),
            announced: false,
        }
    }

    /// The SPMC backend, in words.
    pub fn spmc_description(&self) -> &str {
        self.spmc.describe()
    }

    /// Whether this is the first FF-A call any VM made.
    pub fn first_call(&mut self) -> bool {
        !core::mem::replace(&mut self.announced, true)
    }

    /// Drops VM number `vm`'s mailbox and reclaims its shares from the
    /// SPMC (the VM is restarting); returns how many shares the SPMC
    /// would not give back (they stay recorded, their pages in use).
    pub fn forget_vm(&mut self, vm: usize) -> usize {
        let Some(endpoint) = self.endpoints.get_mut(vm) else {
            return 0;
        };
        endpoint.mailbox = None;
        endpoint.pages.retain(|_, u| *u != PageUse::Mailbox);
        let handles: Vec<u64> = self
            .shares
            .iter()
            .filter(|(_, s)| s.owner == vm)
            .map(|(h, _)| *h)
            .collect();
        let mut refused = 0;
        for handle in handles {
            if self.spmc.reclaim(handle, vm_endpoint_id(vm), 0).is_err() {
                refused += 1;
                continue;
            }
            if let Some(share) = self.shares.remove(&handle) {
                let endpoint = self.endpoint(vm);
                for ipa in share.pages {
                    endpoint.pages.remove(&ipa);
                }
            }
        }
        refused
    }

    /// Answers FF-A call `regs` of VM number `vm`, whose memory is `mem`.
    pub fn call(&mut self, vm: usize, mem: &mut dyn CallerMemory, regs: &Regs) -> Regs {
        if vm >= self.endpoints.len() {
            return error(FfaError::NotSupported);
        }
        let id = FunctionId::from_x0(regs[0]);
        let arg = |i: usize| id.arg(regs[i]);
        let result = match id.0 {
            fid::FFA_VERSION => return self.version(arg(1)),
            fid::FFA_FEATURES => Self::features(arg(1)),
            fid::FFA_ID_GET => Ok(success(&[u64::from(vm_endpoint_id(vm))])),
            fid::FFA_SPM_ID_GET => Ok(success(&[u64::from(self.spmc.id())])),
            fid::FFA_RXTX_MAP_32 | fid::FFA_RXTX_MAP_64 => {
                self.rxtx_map(vm, mem, arg(1), arg(2), arg(3))
            }
            fid::FFA_RXTX_UNMAP => self.rxtx_unmap(vm, arg(1)),
            fid::FFA_RX_RELEASE => self.rx_release(vm),
            fid::FFA_PARTITION_INFO_GET => self.partition_info(vm, mem, regs),
            fid::FFA_MSG_SEND_DIRECT_REQ_32 | fid::FFA_MSG_SEND_DIRECT_REQ_64 => {
                self.direct_request(vm, regs)
            }
            // Only partitions receive direct requests: no VM has one to
            // answer.
            fid::FFA_MSG_SEND_DIRECT_RESP_32 | fid::FFA_MSG_SEND_DIRECT_RESP_64 => {
                Err(FfaError::Denied)
            }
            fid::FFA_MEM_SHARE_32 | fid::FFA_MEM_SHARE_64 => {
                self.share(vm, mem, ShareKind::Share, [arg(1), arg(2), arg(3), arg(4)])
            }
            fid::FFA_MEM_LEND_32 | fid::FFA_MEM_LEND_64 => {
                self.share(vm, mem, ShareKind::Lend, [arg(1), arg(2), arg(3), arg(4)])
            }
            fid::FFA_MEM_RECLAIM => {
                self.reclaim(vm, mem, (arg(2) << 32) | (arg(1) & 0xffff_ffff), arg(3))
            }
            _ => Err(FfaError::NotSupported),
        };
        result.unwrap_or_else(error)
    }

    fn version(&self, requested: u64) -> Regs {
        // Bit 31 is zero in a version; the major versions must match.
        let answer = if requested & (1 << 31) != 0 || requested >> 16 != u64::from(VERSION >> 16) {
            VERSION_NOT_SUPPORTED
        } else {
            u64::from(VERSION)
        };
        let mut regs = [0; 8];
        regs[0] = answer;
        regs
    }

    fn features(queried: u64) -> Result<Regs, FfaError> {
        // Feature IDs (bit 31 clear: interrupts) are not offered.
        let queried = u32::try_from(queried).map_err(|_| FfaError::NotSupported)?;
        FEATURES
            .iter()
            .find(|(f, _)| *f == queried)
            .map(|(_, properties)| success(&[*properties]))
            .ok_or(FfaError::NotSupported)
    }

    fn endpoint(&mut self, vm: usize) -> &mut Endpoint {
        &mut self.endpoints[vm]
    }

    /// Checks that the caller owns every page in `ranges` and that none is
    /// in FF-A use; returns their host-physical pages.
    fn free_owned_pages(
        &self,
        vm: usize,
        mem: &dyn CallerMemory,
        ranges: &[Range],
    ) -> Result<Vec<(u64, PhysAddr)>, FfaError> {
        let endpoint = &self.endpoints[vm];
        let mut pages = Vec::new();
        for range in ranges {
            for ipa in range.page_addresses() {
                let pa = mem
                    .owned_page(IntermediatePhysAddr::new(ipa))
                    .ok_or(FfaError::Denied)?;
                if endpoint.pages.contains_key(&ipa) {
                    return Err(FfaError::Denied);
                }
                pages.push((ipa, pa));
            }
        }
        Ok(pages)
    }

    fn rxtx_map(
        &mut self,
        vm: usize,
        mem: &dyn CallerMemory,
        tx: u64,
        rx: u64,
        count: u64,
    ) -> Result<Regs, FfaError> {
        let pages = u32::try_from(count & RXTX_PAGE_COUNT_MASK).unwrap_or(0);
        let tx_range = Range { address: tx, pages };
        let rx_range = Range { address: rx, pages };
        let (Some(tx_end), Some(rx_end)) = (tx_range.end(), rx_range.end()) else {
            return Err(FfaError::InvalidParameters);
        };
        if count & !RXTX_PAGE_COUNT_MASK != 0
            || pages == 0
            || !tx.is_multiple_of(PAGE_SIZE)
            || !rx.is_multiple_of(PAGE_SIZE)
            || (tx < rx_end && rx < tx_end)
        {
            return Err(FfaError::InvalidParameters);
        }
        if self.endpoints[vm].mailbox.is_some() {
            return Err(FfaError::Denied);
        }
        let owned = self.free_owned_pages(vm, mem, &[tx_range, rx_range])?;
        let endpoint = self.endpoint(vm);
        for (ipa, _) in owned {
            endpoint.pages.insert(ipa, PageUse::Mailbox);
        }
        endpoint.mailbox = Some(Mailbox {
            tx: IntermediatePhysAddr::new(tx),
            rx: IntermediatePhysAddr::new(rx),
            pages: u64::from(pages),
            rx_full: false,
        });
        Ok(success(&[]))
    }

    fn rxtx_unmap(&mut self, vm: usize, w1: u64) -> Result<Regs, FfaError> {
        let id = (w1 >> 16) & 0xffff;
        if id != 0 && id != u64::from(vm_endpoint_id(vm)) {
            return Err(FfaError::InvalidParameters);
        }
        let endpoint = self.endpoint(vm);
        if endpoint.mailbox.take().is_none() {
            return Err(FfaError::InvalidParameters);
        }
        endpoint.pages.retain(|_, u| *u != PageUse::Mailbox);
        Ok(success(&[]))
    }

    fn rx_release(&mut self, vm: usize) -> Result<Regs, FfaError> {
        match &mut self.endpoint(vm).mailbox {
            Some(mailbox) if mailbox.rx_full => {
                mailbox.rx_full = false;
                Ok(success(&[]))
            }
            _ => Err(FfaError::Denied),
        }
    }

    fn partition_info(
        &mut self,
        vm: usize,
        mem: &mut dyn CallerMemory,
        regs: &Regs,
    ) -> Result<Regs, FfaError> {
        let word = |i: usize| u32::try_from(regs[i] & 0xffff_ffff).unwrap_or(0);
        let uuid = uuid_from_words([word(1), word(2), word(3), word(4)]);
        let flags = regs[5] & 0xffff_ffff;
        if flags & !PARTITION_COUNT_ONLY != 0 {
            return Err(FfaError::InvalidParameters);
        }
        let found: Vec<PartitionInfo> = self
            .spmc
            .partitions()
            .iter()
            .filter(|p| uuid == [0; 16] || p.uuid == uuid)
            .copied()
            .collect();
        if found.is_empty() {
            return Err(FfaError::InvalidParameters);
        }
        let count = u64::try_from(found.len()).unwrap_or(u64::MAX);
        if flags & PARTITION_COUNT_ONLY != 0 {
            return Ok(success(&[count, 0]));
        }
        let mailbox = match &mut self.endpoint(vm).mailbox {
            Some(m) if !m.rx_full => m,
            _ => return Err(FfaError::Busy),
        };
        let bytes: Vec<u8> = found.iter().flat_map(|p| p.encode()).collect();
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > mailbox.bytes() {
            return Err(FfaError::NoMemory);
        }
        mem.write(mailbox.rx, &bytes)
            .map_err(|_| FfaError::Denied)?;
        mailbox.rx_full = true;
        let size = u64::try_from(PARTITION_INFO_SIZE).unwrap_or(0);
        Ok(success(&[count, size]))
    }

    fn direct_request(&mut self, vm: usize, regs: &Regs) -> Result<Regs, FfaError> {
        let w1 = FunctionId::from_x0(regs[0]).arg(regs[1]);
        let sender = (w1 >> 16) & 0xffff;
        let receiver = w1 & 0xffff;
        let is_partition = self
            .spmc
            .partitions()
            .iter()
            .any(|p| u64::from(p.id) == receiver);
        // w2 holds flags; bit 31 marks framework messages, which VMs do not
        // send.
        if sender != u64::from(vm_endpoint_id(vm)) || !is_partition || w1 >> 32 != 0 || regs[2] != 0
        {
            return Err(FfaError::InvalidParameters);
        }
        Ok(self.spmc.direct_request(regs))
    }

    fn share(
        &mut self,
        vm: usize,
        mem: &mut dyn CallerMemory,
        kind: ShareKind,
        [total, fragment, address, page_count]: [u64; 4],
    ) -> Result<Regs, FfaError> {
        let Some(mailbox) = self.endpoints[vm].mailbox else {
            return Err(FfaError::InvalidParameters);
        };
        // The descriptor comes whole in the TX buffer: no fragments, no
        // buffer of its own.
        if address != 0 || page_count != 0 || total != fragment || total == 0 {
            return Err(FfaError::InvalidParameters);
        }
        if total > mailbox.bytes() {
            return Err(FfaError::InvalidParameters);
        }
        let mut bytes =
            alloc::vec![0; usize::try_from(total).map_err(|_| FfaError::InvalidParameters)?];
        mem.read(mailbox.tx, &mut bytes)
            .map_err(|_| FfaError::InvalidParameters)?;
        let transaction = parse_mem_transaction(&bytes, kind, vm_endpoint_id(vm))?;
        let partitions = self.spmc.partitions();
        if !transaction
            .receivers
            .iter()
            .all(|r| partitions.iter().any(|p| p.id == r.id))
        {
            // Memory goes to secure partitions only: sharing between VMs
            // would need FFA_MEM_RETRIEVE_REQ, which the proxy lacks.
            return Err(FfaError::InvalidParameters);
        }
        let pages = self.free_owned_pages(vm, mem, &transaction.ranges)?;
        let physical = physical_ranges(&pages);
        let handle = self.spmc.share(kind, &transaction.with_ranges(physical))?;
        let endpoint = self.endpoint(vm);
        for (ipa, _) in &pages {
            endpoint.pages.insert(*ipa, PageUse::Given(handle));
        }
        self.shares.insert(
            handle,
            Share {
                owner: vm,
                pages: pages.into_iter().map(|(ipa, _)| ipa).collect(),
            },
        );
        Ok(success(&[handle & 0xffff_ffff, handle >> 32]))
    }

    fn reclaim(
        &mut self,
        vm: usize,
        mem: &mut dyn CallerMemory,
        handle: u64,
        flags: u64,
    ) -> Result<Regs, FfaError> {
        if flags & !RECLAIM_ZERO != 0 {
            return Err(FfaError::InvalidParameters);
        }
        // An unknown handle and another VM's handle get the same answer,
        // so a VM learns nothing about others' shares by guessing.
        match self.shares.get(&handle) {
            Some(share) if share.owner == vm => {}
            _ => return Err(FfaError::InvalidParameters),
        }
        let flags32 = u32::try_from(flags).unwrap_or(0);
        self.spmc.reclaim(handle, vm_endpoint_id(vm), flags32)?;
        let Some(share) = self.shares.remove(&handle) else {
            return Err(FfaError::InvalidParameters);
        };
        let endpoint = self.endpoint(vm);
        for ipa in &share.pages {
            endpoint.pages.remove(ipa);
        }
        if flags & RECLAIM_ZERO != 0 {
            let zeros = [0u8; 4096];
            for ipa in &share.pages {
                mem.write(IntermediatePhysAddr::new(*ipa), &zeros)
                    .map_err(|_| FfaError::Denied)?;
            }
        }
        Ok(success(&[]))
    }
}

/// `pages` (IPA, physical page) as physical ranges, neighbours merged.
fn physical_ranges(pages: &[(u64, PhysAddr)]) -> Vec<Range> {
    let mut ranges: Vec<Range> = Vec::new();
    for (_, pa) in pages {
        let pa = pa.as_u64();
        match ranges.last_mut() {
            Some(last) if last.end() == Some(pa) => last.pages += 1,
            _ => ranges.push(Range {
                address: pa,
                pages: 1,
            }),
        }
    }
    ranges
}

#[cfg(test)]
mod tests;
