//! The run loop of one physical CPU: enter the vCPU, handle its exit, enter
//! again, until its VM stops.

use crate::arch;
use crate::arch::aarch64::context::ExitKind;
use crate::println;

use super::exit::{handle_sync, ExitOutcome};
use super::irq::{clear_lrs, flush_to_lrs, handle_physical_irqs, sync_from_lrs, HostIrqs};
use super::{Vm, VmStop};

/// Runs vCPU 0 of `vm` on this CPU until the VM powers off or resets.
pub fn run_vm(vm: &mut Vm, host: &HostIrqs) -> VmStop {
    const VCPU: usize = 0;
    arch::load_stage2(vm.stage2_root, vm.vmid);
    arch::load_el1(&vm.vcpus[VCPU].regs.el1);
    clear_lrs(vm, VCPU);
    loop {
        flush_to_lrs(vm, VCPU);
        let info = arch::run_guest(&mut vm.vcpus[VCPU].regs.guest);
        sync_from_lrs(vm, VCPU);
        match info.kind {
            ExitKind::Irq | ExitKind::Fiq => handle_physical_irqs(vm, VCPU, host),
            ExitKind::SError => {
                println!(
                    "hypervisor: {}: SError (ESR {:#x}), stopping the VM",
                    vm.name, info.esr
                );
                clear_lrs(vm, VCPU);
                return VmStop::PowerOff;
            }
            ExitKind::Sync => match handle_sync(vm, VCPU, &info) {
                ExitOutcome::Continue => {}
                ExitOutcome::CpuOn(target) => println!(
                    "hypervisor: {}: vcpu {target} started, but secondary vCPUs do not run yet",
                    vm.name
                ),
                ExitOutcome::CpuOff => {
                    println!("hypervisor: {}: vcpu 0 is off, stopping the VM", vm.name);
                    clear_lrs(vm, VCPU);
                    return VmStop::PowerOff;
                }
                ExitOutcome::Stop(stop) => {
                    arch::save_el1(&mut vm.vcpus[VCPU].regs.el1);
                    clear_lrs(vm, VCPU);
                    return stop;
                }
            },
        }
    }
}
