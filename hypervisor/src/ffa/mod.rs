//! FF-A v1.1 (Arm DEN0077A) for every VM: the SMCCC router sends FF-A
//! calls here, and the proxy ([`proxy`]) answers them for the calling
//! VM's endpoint, with the SPMC behind it ([`spmc`]: a stub inside the
//! hypervisor, or [`forward`]ing to a real one at EL3, chosen at boot by
//! [`init`]). This file owns the pieces shared by the others (endpoint
//! IDs, error codes, the register encodings of FFA_SUCCESS/FFA_ERROR),
//! the one proxy every VM shares, and the glue to a [`Vm`]: its endpoint
//! ID and the stage-2 walk that tells which pages it owns.
//!
//! Lock order: a VM's lock, then the proxy's lock (memory shares and the
//! SPMC are machine-wide, so one lock covers them; no CPU takes a VM lock
//! while holding it).
#![forbid(unsafe_code)]

pub mod descriptors;
pub mod forward;
pub mod proxy;
pub mod spmc;

use alloc::boxed::Box;

use spin::{Mutex, Once};

use crate::addr::{IntermediatePhysAddr, PhysAddr, PAGE_SIZE};
use crate::arch;
use crate::arch::aarch64::pte::Stage2;
use crate::devices::memory::{GuestMemory, GuestMemoryError};
use crate::layout::RAM_BASE;
use crate::mm::frames::FrameAllocator;
use crate::mm::pagetable::PageTable;
use crate::platform::PsciConduit;
use crate::println;
use crate::smccc::fid;
use crate::vm::Vm;
use proxy::{CallerMemory, Proxy};
use spmc::{Spmc, StubSpmc};

/// An FF-A endpoint ID: 0 is the hypervisor, VMs count from 1, secure
/// endpoints have bit 15 set.
pub type EndpointId = u16;

/// x0..x7 of an FF-A call or its answer.
pub type Regs = [u64; 8];

/// The endpoint ID of VM number `index` in the manifest.
pub fn vm_endpoint_id(index: usize) -> EndpointId {
    u16::try_from(index + 1).unwrap_or(u16::MAX) & 0x7fff
}

/// FF-A error codes (FF-A v1.1, Table 13.1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FfaError {
    /// NOT_SUPPORTED (-1).
    NotSupported,
    /// INVALID_PARAMETERS (-2).
    InvalidParameters,
    /// NO_MEMORY (-3).
    NoMemory,
    /// BUSY (-4).
    Busy,
    /// DENIED (-6).
    Denied,
    /// NO_DATA (-9).
    NoData,
}

impl FfaError {
    /// The signed code.
    pub fn code(self) -> i32 {
        match self {
            FfaError::NotSupported => -1,
            FfaError::InvalidParameters => -2,
            FfaError::NoMemory => -3,
            FfaError::Busy => -4,
            FfaError::Denied => -6,
            FfaError::NoData => -9,
        }
    }

    /// The code as w2 of FFA_ERROR carries it (32 bits, zero-extended).
    pub fn w2(self) -> u64 {
        u64::from(self.code().cast_unsigned())
    }

    /// The code in w2 of an FFA_ERROR answer.
    pub fn from_w2(w2: u64) -> Option<Self> {
        let code = u32::try_from(w2 & 0xffff_ffff).ok()?.cast_signed();
        [
            FfaError::NotSupported,
            FfaError::InvalidParameters,
            FfaError::NoMemory,
            FfaError::Busy,
            FfaError::Denied,
            FfaError::NoData,
        ]
        .into_iter()
        .find(|e| e.code() == code)
    }
}

/// FFA_SUCCESS_32 with w2.. = `values`.
pub fn success(values: &[u64]) -> Regs {
    let mut regs = [0; 8];
    regs[0] = u64::from(fid::FFA_SUCCESS_32);
    for (slot, v) in regs[2..].iter_mut().zip(values) {
        *slot = *v & 0xffff_ffff;
    }
    regs
}

/// FFA_ERROR with `error` in w2.
pub fn error(error: FfaError) -> Regs {
    let mut regs = [0; 8];
    regs[0] = u64::from(fid::FFA_ERROR);
    regs[2] = error.w2();
    regs
}

// A global because FF-A state is machine-wide: the SPMC and the memory
// shares belong to no single VM. Written once at boot by `init`.
static PROXY: Once<Mutex<Proxy>> = Once::new();

/// Chooses the SPMC backend by probing EL3, and creates the proxy for
/// `vms` VMs. With no EL3 (no secure world can exist, and an SMC would be
/// UNDEFINED), with PSCI over HVC, or when EL3 answers FFA_VERSION with
/// NOT_SUPPORTED, it is the stub; otherwise calls are forwarded.
pub fn init(conduit: PsciConduit, vms: usize, frames: &mut FrameAllocator) {
    let spmc: Box<dyn Spmc> = if conduit == PsciConduit::Hvc {
        Box::new(StubSpmc::new("stub SPMC (PSCI over HVC: no EL3 below us)"))
    } else if !arch::has_el3() {
        Box::new(StubSpmc::new("stub SPMC (no EL3)"))
    } else {
        match forward::ForwardSpmc::probe(frames) {
            Ok(spmc) => Box::new(spmc),
            Err(why) => Box::new(StubSpmc::new(why)),
        }
    };
    PROXY.call_once(|| Mutex::new(Proxy::new(vms, spmc)));
}

/// `vm`'s RAM and stage 2 as the proxy sees them.
struct VmMemory<'a>(&'a mut Vm);

impl GuestMemory for VmMemory<'_> {
    fn read(&self, address: IntermediatePhysAddr, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        self.0.ram.read(address, buf)
    }

    fn write(&mut self, address: IntermediatePhysAddr, buf: &[u8]) -> Result<(), GuestMemoryError> {
        self.0.ram.write(address, buf)
    }
}

impl CallerMemory for VmMemory<'_> {
    fn owned_page(&self, ipa: IntermediatePhysAddr) -> Option<PhysAddr> {
        let table = PageTable::from_root(self.0.stage2_root);
        let (pa, _) = table.translate::<Stage2>(&arch::TableReader, ipa.as_u64())?;
        let ram = &self.0.ram;
        let offset = pa.checked_offset_from(ram.host_base())?;
        // The VM's own partition, and the IPA it has there: a page mapped
        // anywhere else (a device, another VM's RAM) is not the caller's
        // to give.
        let own_ipa = RAM_BASE.checked_add(offset)?;
        (pa.is_aligned(PAGE_SIZE) && offset < ram.size() && own_ipa == ipa).then_some(pa)
    }
}

/// Forgets VM number `index`'s FF-A state as it restarts: its RX/TX
/// pair, and its shares, reclaimed from the SPMC.
pub fn vm_reset(index: usize) {
    if let Some(proxy) = PROXY.get() {
        let refused = proxy.lock().forget_vm(index);
        if refused > 0 {
            println!(
                "hypervisor: FF-A: the SPMC kept {refused} share(s) of endpoint {:#06x} across its reset",
                vm_endpoint_id(index)
            );
        }
    }
}

/// Answers the FF-A call in `regs` (x0..x7) made by `vm`'s vCPU, in place.
pub fn call(vm: &mut Vm, regs: &mut Regs) {
    let Some(proxy) = PROXY.get() else {
        *regs = error(FfaError::NotSupported);
        return;
    };
    let mut proxy = proxy.lock();
    // Once, at the first call (machines that never use FF-A keep their
    // console as it was).
    if proxy.first_call() {
        println!(
            "hypervisor: FF-A {}, VM n is endpoint n+1",
            proxy.spmc_description()
        );
    }
    *regs = proxy.call(vm.index, &mut VmMemory(vm), regs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_through_w2() {
        assert_eq!(FfaError::InvalidParameters.w2(), 0xffff_fffe);
        for e in [FfaError::NotSupported, FfaError::Denied, FfaError::NoData] {
            assert_eq!(FfaError::from_w2(e.w2()), Some(e));
        }
        assert_eq!(FfaError::from_w2(0), None);
        assert_eq!(error(FfaError::Busy)[..3], [0x8400_0060, 0, 0xffff_fffc]);
        assert_eq!(success(&[1 << 40 | 7])[..3], [0x8400_0061, 0, 7]);
    }

    #[test]
    fn vm_endpoint_ids_are_non_secure_and_not_the_hypervisor() {
        assert_eq!(vm_endpoint_id(0), 1);
        assert_eq!(vm_endpoint_id(1), 2);
        assert_eq!(vm_endpoint_id(0x8000) & 0x8000, 0);
    }
}
