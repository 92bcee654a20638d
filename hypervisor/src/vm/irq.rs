//! Interrupts of a running vCPU: physical IRQs taken while the guest ran
//! (the virtual timer, forwarded with HW = 1 so the guest's EOI deactivates
//! the physical interrupt; the console UART's input; maintenance), and the
//! hand-over between the vGIC model and the list registers around each
//! guest entry.

use crate::addr::PhysAddr;
use crate::arch;
use crate::arch::aarch64::gic_lr::{ListRegister, LrState};
use crate::devices::gic::Group;
use crate::layout::VTIMER_INTID;

use super::exit::update_device_lines;
use super::Vm;

/// ICH_HCR_EL2.En.
const ICH_HCR_EN: u64 = 1 << 0;
/// ICH_HCR_EL2.UIE: maintenance interrupt when at most one LR is in use,
/// so interrupts that did not fit get their turn.
const ICH_HCR_UIE: u64 = 1 << 1;

/// The host's interrupt sources the run loop serves.
#[derive(Clone, Copy, Debug)]
pub struct HostIrqs {
    /// The console PL011 and its INTID, for guest input.
    pub uart: Option<(PhysAddr, u32)>,
}

/// Serves the physical interrupts pending at EL2 after an IRQ exit.
pub fn handle_physical_irqs(vm: &mut Vm, vcpu: usize, host: &HostIrqs) {
    loop {
        let intid = arch::gic_ack();
        if intid >= arch::SPURIOUS_INTID {
            return;
        }
        if intid == VTIMER_INTID {
            // Stays active until the guest EOIs the virtual interrupt.
            let _ = vm.vgic.set_ppi_level(vcpu, VTIMER_INTID, true);
            vm.vcpus[vcpu].vtimer_active = true;
            arch::gic_eoi(intid);
            continue;
        }
        if let Some((base, uart_intid)) = host.uart {
            if intid == uart_intid {
                while let Some(byte) = arch::uart_read_byte(base) {
                    vm.uart.push_rx(byte);
                }
                update_device_lines(vm);
            }
        }
        arch::gic_eoi(intid);
        arch::gic_deactivate(intid);
    }
}

/// After an exit: retires the interrupts the guest EOI'd from their list
/// registers.
pub fn sync_from_lrs(vm: &mut Vm, vcpu: usize) {
    let v = &mut vm.vcpus[vcpu];
    for (n, slot) in v.lrs.iter_mut().enumerate() {
        let Some(intid) = *slot else { continue };
        if ListRegister::decode(arch::gic_read_lr(n)).state != LrState::Invalid {
            continue;
        }
        // Free it: an invalid LR with its EOI bit still set keeps the
        // maintenance interrupt asserted.
        arch::gic_write_lr(n, 0);
        *slot = None;
        let _ = vm.vgic.deactivate(vcpu, intid);
        if intid == VTIMER_INTID {
            // The physical timer interrupt fires again if still asserted.
            let _ = vm.vgic.set_ppi_level(vcpu, VTIMER_INTID, false);
            v.vtimer_active = false;
        }
    }
}

/// Before an entry: moves deliverable interrupts from the model into free
/// list registers, highest priority first.
pub fn flush_to_lrs(vm: &mut Vm, vcpu: usize) {
    update_device_lines(vm);
    let mut more = false;
    while let Ok(Some(next)) = vm.vgic.highest_pending(vcpu) {
        let Some(free) = vm.vcpus[vcpu].lrs.iter().position(Option::is_none) else {
            more = true;
            break;
        };
        let mut lr = ListRegister::pending(next.intid, next.priority);
        lr.group1 = next.group == Group::One;
        if next.intid == VTIMER_INTID && vm.vcpus[vcpu].vtimer_active {
            lr.pintid = Some(VTIMER_INTID);
        } else {
            // Level interrupts may still be asserted after the guest's EOI;
            // get an exit then to present them again.
            lr.eoi_maintenance = true;
        }
        arch::gic_write_lr(free, lr.encode());
        vm.vcpus[vcpu].lrs[free] = Some(next.intid);
        let _ = vm.vgic.activate(vcpu, next.intid);
    }
    arch::gic_set_ich_hcr(if more {
        ICH_HCR_EN | ICH_HCR_UIE
    } else {
        ICH_HCR_EN
    });
}

/// Empties every list register (VM reset, or a vCPU leaving this CPU) and
/// gives back a physical timer interrupt the guest still held.
pub fn clear_lrs(vm: &mut Vm, vcpu: usize) {
    let v = &mut vm.vcpus[vcpu];
    for (n, slot) in v.lrs.iter_mut().enumerate() {
        arch::gic_write_lr(n, 0);
        *slot = None;
    }
    if v.vtimer_active {
        arch::gic_deactivate(VTIMER_INTID);
        v.vtimer_active = false;
    }
}
