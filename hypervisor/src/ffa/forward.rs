//! The SPMC backend for a machine with a secure world: FF-A calls the
//! proxy has checked go to the SPMC at EL3 by SMC (through TF-A's SPMD).
//! The hypervisor is endpoint 0 to it and has an RX/TX pair of its own,
//! registered at boot, for partition information and for memory
//! descriptors, which it rewrites with the physical pages behind a VM's
//! IPAs.
#![forbid(unsafe_code)]

use alloc::vec::Vec;

use super::descriptors::{MemTransaction, PartitionInfo, ShareKind, PARTITION_INFO_SIZE};
use super::spmc::Spmc;
use super::{EndpointId, FfaError, Regs};
use crate::addr::PAGE_SIZE;
use crate::arch;
use crate::mm::frames::{FrameAllocator, Frames};
use crate::smccc::fid;

/// The version the proxy asks for (1.1).
const VERSION_1_1: u64 = 0x1_0001;

/// Forwards to the SPMC at EL3.
pub struct ForwardSpmc {
    id: EndpointId,
    partitions: Vec<PartitionInfo>,
    tx: Frames,
    rx: Frames,
    description: alloc::string::String,
}

/// One SMC with x0..x7.
fn smc(regs: [u64; 8]) -> Regs {
    arch::smc_call(regs)
}

fn call(function: u32, args: &[u64]) -> Regs {
    let mut regs = [0; 8];
    regs[0] = u64::from(function);
    for (slot, v) in regs[1..].iter_mut().zip(args) {
        *slot = *v;
    }
    smc(regs)
}

/// The FF-A status of an answer.
fn status(regs: &Regs) -> Result<(), FfaError> {
    let w0 = u32::try_from(regs[0] & 0xffff_ffff).unwrap_or(0);
    if w0 == fid::FFA_SUCCESS_32 || w0 == fid::FFA_SUCCESS_64 {
        Ok(())
    } else if w0 == fid::FFA_ERROR {
        Err(FfaError::from_w2(regs[2]).unwrap_or(FfaError::NotSupported))
    } else {
        Err(FfaError::NotSupported)
    }
}

impl ForwardSpmc {
    /// Asks EL3 for FF-A; with an SPMC there, registers the hypervisor's
    /// RX/TX pair and reads the partition list. The error says why the
    /// stub must stand in.
    pub fn probe(frames: &mut FrameAllocator) -> Result<Self, &'static str> {
        let version = call(fid::FFA_VERSION, &[VERSION_1_1])[0];
        // NOT_SUPPORTED is -1 in w0; a version has bit 31 clear.
        if version & (1 << 31) != 0 || version >> 16 != VERSION_1_1 >> 16 {
            return Err("stub SPMC (EL3 answered FFA_VERSION with NOT_SUPPORTED)");
        }
        let id_regs = call(fid::FFA_SPM_ID_GET, &[]);
        let id = match status(&id_regs) {
            Ok(()) => u16::try_from(id_regs[2] & 0xffff).unwrap_or(0),
            Err(_) => return Err("stub SPMC (EL3 has FF-A but no SPMC ID)"),
        };
        let (Ok(mut tx), Ok(mut rx)) = (
            frames.alloc_frames(PAGE_SIZE, PAGE_SIZE),
            frames.alloc_frames(PAGE_SIZE, PAGE_SIZE),
        ) else {
            return Err("stub SPMC (no memory for the hypervisor's RX/TX buffers)");
        };
        arch::frames_bytes_mut(&mut tx).fill(0);
        arch::frames_bytes_mut(&mut rx).fill(0);
        let map = call(
            fid::FFA_RXTX_MAP_64,
            &[tx.range().start.as_u64(), rx.range().start.as_u64(), 1],
        );
        if status(&map).is_err() {
            return Err("stub SPMC (the SPMC refused the hypervisor's RX/TX buffers)");
        }
        let mut spmc = Self {
            id,
            partitions: Vec::new(),
            tx,
            rx,
            description: alloc::format!(
                "forwarding to the SPMC at EL3 (FF-A {}.{}, ID {id:#06x})",
                version >> 16,
                version & 0xffff
            ),
        };
        spmc.partitions = spmc.read_partitions();
        Ok(spmc)
    }

    /// FFA_PARTITION_INFO_GET for every partition, through our RX buffer.
    fn read_partitions(&self) -> Vec<PartitionInfo> {
        let regs = call(fid::FFA_PARTITION_INFO_GET, &[0, 0, 0, 0, 0]);
        if status(&regs).is_err() {
            return Vec::new();
        }
        let count = usize::try_from(regs[2] & 0xffff_ffff).unwrap_or(0);
        let size = usize::try_from(regs[3] & 0xffff_ffff).unwrap_or(0);
        let bytes = arch::frames_bytes(&self.rx);
        let found = if size < PARTITION_INFO_SIZE {
            Vec::new()
        } else {
            (0..count)
                .filter_map(|i| bytes.get(i.checked_mul(size)?..))
                .filter_map(PartitionInfo::decode)
                .collect()
        };
        call(fid::FFA_RX_RELEASE, &[]);
        found
    }
}

impl Spmc for ForwardSpmc {
    fn describe(&self) -> &str {
        &self.description
    }

    fn id(&self) -> EndpointId {
        self.id
    }

    fn partitions(&self) -> &[PartitionInfo] {
        &self.partitions
    }

    fn direct_request(&mut self, regs: &Regs) -> Regs {
        smc(*regs)
    }

    fn share(&mut self, kind: ShareKind, transaction: &MemTransaction) -> Result<u64, FfaError> {
        let bytes = transaction.encode();
        let buffer = arch::frames_bytes_mut(&mut self.tx);
        let Some(slot) = buffer.get_mut(..bytes.len()) else {
            return Err(FfaError::NoMemory);
        };
        slot.copy_from_slice(&bytes);
        let function = match kind {
            ShareKind::Share => fid::FFA_MEM_SHARE_32,
            ShareKind::Lend => fid::FFA_MEM_LEND_32,
        };
        let len = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        let regs = call(function, &[len, len, 0, 0]);
        status(&regs)?;
        Ok((regs[2] & 0xffff_ffff) | (regs[3] << 32))
    }

    fn reclaim(&mut self, handle: u64, _owner: EndpointId, flags: u32) -> Result<(), FfaError> {
        let regs = call(
            fid::FFA_MEM_RECLAIM,
            &[handle & 0xffff_ffff, handle >> 32, u64::from(flags)],
        );
        status(&regs)
    }
}
