//! The run loop of one physical CPU, which runs one vCPU (`Vm::pcpus`).
//! A *session* waits until its vCPU is powered on (PSCI), loads it, and
//! enters / handles exits until the vCPU turns itself off or the VM stops.
//!
//! Lock order: the VM lock, then the console lock (`println!`), then the
//! heap lock. The VM lock is never held while a guest runs.

use spin::Mutex;

use crate::arch;
use crate::arch::aarch64::context::ExitKind;
use crate::println;

use super::exit::{handle_sync, ExitOutcome};
use super::irq::{
    clear_lrs, flush_to_lrs, handle_physical_irqs, sync_from_lrs, take_console_input, HostIrqs,
};
use super::{Vcpu, Vm, VmStop};

/// How a session ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SessionEnd {
    /// The VM stopped (this CPU or another saw it).
    Stopped(VmStop),
    /// This vCPU turned itself off (PSCI CPU_OFF); others still run.
    CpuOff,
}

/// Waits for vCPU `index` to be powered on and runs it until it is off or
/// the VM stops.
pub fn run_session(vm: &Mutex<Vm>, index: usize, host: &HostIrqs) -> SessionEnd {
    let (mut vcpu, epoch) = loop {
        {
            let mut v = vm.lock();
            if let Some(stop) = v.stopped {
                return SessionEnd::Stopped(stop);
            }
            if let Some((entry, context)) = v.power.get_mut(index).and_then(|p| p.boot.take()) {
                v.in_guest += 1;
                arch::load_stage2(v.stage2_root, v.vmid);
                break (Vcpu::boot(index, entry, context), v.epoch);
            }
        }
        arch::wait_for_event();
    };
    arch::load_el1(&vcpu.regs.el1);
    clear_lrs(&mut vcpu);
    let end = run_vcpu(vm, &mut vcpu, epoch, host);
    clear_lrs(&mut vcpu);
    vm.lock().in_guest -= 1;
    end
}

fn run_vcpu(vm: &Mutex<Vm>, vcpu: &mut Vcpu, epoch: u64, host: &HostIrqs) -> SessionEnd {
    loop {
        {
            let mut v = vm.lock();
            if let Some(stop) = v.stopped {
                return SessionEnd::Stopped(stop);
            }
            if v.epoch != epoch {
                return SessionEnd::Stopped(VmStop::Reset);
            }
            if take_console_input(&mut v) {
                let others = in_use(&v) & !(1 << vcpu.index);
                host.kick(&v.pcpus, others);
            }
            flush_to_lrs(&mut v, vcpu);
        }
        let info = arch::run_guest(&mut vcpu.regs.guest);
        let mut v = vm.lock();
        sync_from_lrs(&mut v, vcpu);
        let outcome = match info.kind {
            ExitKind::Irq | ExitKind::Fiq => {
                if handle_physical_irqs(&mut v, vcpu, host) {
                    ExitOutcome::Kick(!(1u64 << vcpu.index))
                } else {
                    ExitOutcome::Continue
                }
            }
            ExitKind::SError => {
                println!(
                    "hypervisor: {}: vcpu {}: SError (ESR {:#x}), stopping the VM",
                    v.name, vcpu.index, info.esr
                );
                ExitOutcome::Stop(VmStop::PowerOff)
            }
            ExitKind::Sync => handle_sync(&mut v, vcpu, &info),
        };
        match outcome {
            ExitOutcome::Continue => {}
            ExitOutcome::Kick(mask) => host.kick(&v.pcpus, mask & in_use(&v)),
            ExitOutcome::CpuOn(_) => arch::send_event(),
            ExitOutcome::CpuOff => return SessionEnd::CpuOff,
            ExitOutcome::Stop(stop) => {
                v.stopped = Some(stop);
                host.kick(&v.pcpus, in_use(&v) & !(1 << vcpu.index));
                arch::send_event();
                return SessionEnd::Stopped(stop);
            }
        }
    }
}

/// The vCPUs of `vm` that may be running (powered on), as a mask.
fn in_use(vm: &Vm) -> u64 {
    vm.power
        .iter()
        .enumerate()
        .filter(|(i, p)| p.on && *i < 64)
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

/// Waits until no CPU has a vCPU of `vm` loaded.
pub fn wait_all_out(vm: &Mutex<Vm>) {
    while vm.lock().in_guest > 0 {
        core::hint::spin_loop();
    }
}

/// Waits until the VM is no longer stopped at `epoch` (it was reset).
pub fn wait_restart(vm: &Mutex<Vm>, epoch: u64) {
    loop {
        {
            let v = vm.lock();
            if v.stopped.is_none() && v.epoch != epoch {
                return;
            }
        }
        arch::wait_for_event();
    }
}
