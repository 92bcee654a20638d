//! Fuzz target for the exit handler: a sequence of synchronous exits with
//! any syndrome, fault address and register contents, taken by the vCPUs
//! of a test VM (no RAM on the host, the fixed device windows and its
//! device table), as the run loop takes them: the lock-free fast path first,
//! then `handle_sync`, then the device lines.

use std::sync::Mutex;

use super::Input;
use crate::arch::aarch64::context::{ExitInfo, ExitKind, SPSR_EL1H_MASKED};
use crate::ffa;
use crate::layout::{GICD_BASE, GICR_BASE, PL011_BASE, PL031_BASE, RAM_BASE, VIRTIO_BASE};
use crate::mm::frames::FrameAllocator;
use crate::platform::PsciConduit;
use crate::smccc::fid;
use crate::vm::exit::{self, fast_path, service_devices, update_device_lines, FastExit};
use crate::vm::{Vcpu, Vm};

const VCPUS: usize = 4;
/// Longest sequence of exits one input runs.
const MAX_EXITS: usize = 256;

/// The exception classes the run loop sees most, by value of ESR.EC:
/// HVC64, SMC64, MSR/MRS, data and instruction aborts, WFx, and a few it
/// does not handle (SVE, BRK, an unknown class).
const CLASSES: [u64; 10] = [0x16, 0x17, 0x18, 0x24, 0x24, 0x24, 0x20, 0x01, 0x19, 0x3c];

/// Function IDs a guest calls: PSCI, SMCCC discovery, FF-A, and others.
const FUNCTIONS: [u32; 16] = [
    fid::PSCI_VERSION,
    fid::PSCI_CPU_ON_64,
    fid::PSCI_CPU_OFF,
    fid::PSCI_AFFINITY_INFO_64,
    fid::PSCI_SYSTEM_RESET,
    fid::PSCI_FEATURES,
    fid::PSCI_CPU_SUSPEND_64,
    0x8000_0000,
    0x8000_0001,
    fid::FFA_VERSION,
    fid::FFA_RXTX_MAP_64,
    fid::FFA_PARTITION_INFO_GET,
    fid::FFA_MEM_SHARE_64,
    fid::FFA_MSG_SEND_DIRECT_REQ_64,
    fid::FFA_ID_GET,
    0xc200_0bad,
];

/// One VM for every input (a test VM leaks its vGIC and UART), cleared
/// before each.
static VM: Mutex<Option<Vm>> = Mutex::new(None);

/// An IPA in one of the windows a guest can touch, or anywhere.
fn fault_ipa(input: &mut Input) -> u64 {
    let offset = u64::from(input.u32());
    match input.u8() % 8 {
        0 => GICD_BASE.as_u64() + offset % 0x1_0000,
        1 => GICR_BASE.as_u64() + offset % 0x10_0000,
        2 => PL011_BASE.as_u64() + offset % 0x1000,
        3 => PL031_BASE.as_u64() + offset % 0x1000,
        4 => VIRTIO_BASE.as_u64() + offset % 0x4000,
        5 => RAM_BASE.as_u64() + offset,
        6 => offset << 12,
        _ => input.u64(),
    }
}

/// The exit of `vcpu` the input describes, its registers set up for it.
fn next_exit(input: &mut Input, vcpu: &mut Vcpu) -> ExitInfo {
    let class = input.pick(&CLASSES);
    let iss = u64::from(input.u32()) & 0x1ff_ffff;
    let il = u64::from(input.bool()) << 25;
    let esr = (class << 26) | il | iss | (u64::from(input.u8() == 0) * input.u64());
    let ipa = fault_ipa(input);
    let far = (input.u64() & !0xfff) | (ipa & 0xfff);
    let hpfar = if input.u8() == 0 {
        input.u64()
    } else {
        (ipa >> 12) << 4
    };
    let x0 = if input.bool() {
        u64::from(input.pick(&FUNCTIONS))
    } else {
        input.u64()
    };
    vcpu.regs.set_x(0, x0);
    for n in 1..8 {
        let value = input.u64();
        vcpu.regs.set_x(n, value);
    }
    let rt = usize::from(input.u8() % 32);
    let value = input.u64();
    vcpu.regs.set_x(rt, value);
    vcpu.regs.guest.pstate = if input.u8() == 0 {
        input.u64()
    } else {
        SPSR_EL1H_MASKED
    };
    ExitInfo {
        kind: ExitKind::Sync,
        esr,
        far,
        hpfar,
    }
}

/// Runs the exits the input describes.
pub fn handle_sync(data: &[u8]) {
    let mut frames = FrameAllocator::new(&[], &[]).expect("an empty frame allocator");
    // The stub SPMC (PSCI over HVC), as on a machine without EL3; only
    // the first call creates it.
    ffa::init(PsciConduit::Hvc, 1, &mut frames);
    let mut guard = VM.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let vm = guard.get_or_insert_with(|| Vm::for_tests(VCPUS));
    vm.clear_for_tests();
    ffa::vm_reset(vm.index);
    let mut vcpus: Vec<Vcpu> = (0..VCPUS).map(|i| Vcpu::boot(i, 0x4008_0000, 0)).collect();
    let mut input = Input::new(data);
    for _ in 0..MAX_EXITS {
        if input.is_empty() {
            break;
        }
        let vcpu = &mut vcpus[usize::from(input.u8()) % VCPUS];
        let info = next_exit(&mut input, vcpu);
        if let FastExit::NotMine = fast_path(vm.uart, vm.vgic, VCPUS, vcpu, &info) {
            let _ = exit::handle_sync(vm, vcpu, &info);
        }
        service_devices(vm);
        let _ = update_device_lines(vm);
    }
}
