//! The run loop of one physical CPU and the vCPUs placed on it
//! (`Vm::pcpus`). With one vCPU the CPU is simply dedicated to it. With
//! several, they are time-sliced round robin (`schedule`: who runs next,
//! when the EL2 timer fires): the EL2 physical timer ends a slice, WFI/WFE
//! trap so an idle or spinning vCPU yields, and a descheduled vCPU's EL1
//! timers are watched in software (their interrupts made pending in the
//! vGIC when due, the EL2 timer armed for the earliest deadline).
//! The CPU running vCPU 0 also arms the EL2 timer for the VM's RTC alarm.
//!
//! Exits that need only the VM's UART or its vGIC re-enter the guest at
//! once, without the VM lock: PL011 accesses, vGIC register reads and
//! calls with fixed answers (`exit::fast_path`), the
//! guest timers' and maintenance interrupts, IPIs (`exit::sgi_write`) and
//! the interrupts they bring (`irq::INTERRUPT_SGI`) when the vCPU has the
//! CPU to itself. Every other exit takes the VM lock.
//!
//! Lock order: the VM lock, then either the VM's UART lock or its vGIC
//! locks (never both at once), then the console input lock, then the
//! console lock, then the heap lock. The VM lock is never held while a
//! guest runs, nor while its console output goes to the (slow) physical
//! UART.

use spin::{Mutex, MutexGuard};

use crate::arch;
use crate::arch::aarch64::context::{El1SysRegs, ExitInfo, ExitKind};
use crate::arch::aarch64::esr::{Esr, ExceptionClass};
use crate::console::{self, Routed};
use crate::layout::{MAINTENANCE_INTID, PTIMER_INTID, VTIMER_INTID};
use crate::println;

use super::exit::{
    fast_path, handle_sync, service_devices, sgi_write, update_device_lines, ExitOutcome, FastExit,
};
use super::irq::{
    clear_lrs, flush_to_lrs, handle_physical_irqs, restore_lrs, save_lrs, sync_from_lrs,
    take_console_input, HostIrqs, IrqEvents,
};
use super::schedule::Schedule;
use super::{Vcpu, Vm, VmStop};

/// Length of a time slice when vCPUs share a CPU.
const SLICE_US: u64 = 4_000;

/// This CPU's EL2 physical timer and GIC virtual interface control, written
/// only when their value changes: every write makes QEMU re-evaluate its
/// timers or virtual interrupt lines, and the run loop passes here on every
/// exit.
#[derive(Default)]
struct CpuControls {
    /// The EL2 timer's deadline as last written (`Some(None)`: disarmed);
    /// `None` when unknown (its interrupt handler disarms it).
    hyp_deadline: Option<Option<u64>>,
    /// ICH_HCR_EL2 as last written.
    ich_hcr: Option<u64>,
    /// The maintenance interrupt was taken and is held active until the
    /// list registers are next refilled (`IrqEvents::maintenance`).
    maintenance_held: bool,
}

impl CpuControls {
    fn set_hyp_deadline(&mut self, deadline: Option<u64>) {
        if self.hyp_deadline == Some(deadline) {
            return;
        }
        match deadline {
            Some(at) => arch::hyp_timer_arm_at(at),
            None => arch::hyp_timer_disarm(),
        }
        self.hyp_deadline = Some(deadline);
    }

    /// After serving physical interrupts, which may have disarmed the timer.
    fn forget_hyp_deadline(&mut self) {
        self.hyp_deadline = None;
    }

    /// Called once the list registers are refilled for an entry (or
    /// emptied): what raised the maintenance interrupt is dealt with, so a
    /// maintenance interrupt held active may go.
    fn set_ich_hcr(&mut self, value: u64) {
        if self.ich_hcr != Some(value) {
            arch::gic_set_ich_hcr(value);
            self.ich_hcr = Some(value);
        }
        if core::mem::take(&mut self.maintenance_held) {
            arch::gic_deactivate(MAINTENANCE_INTID);
        }
    }

    /// After serving physical interrupts.
    fn note(&mut self, events: &IrqEvents) {
        self.maintenance_held |= events.maintenance;
    }
}

/// Why a vCPU's run on the CPU ended up needing the VM lock.
enum Exit {
    /// A synchronous exit the UART's fast path does not handle.
    Sync(ExitInfo),
    /// An SError.
    SError(ExitInfo),
    /// Physical interrupts were served; these need the VM.
    Irqs(IrqEvents),
    /// A UART access was done, and moved its interrupt line or found
    /// console input waiting.
    DevicesMoved,
    /// An IPI was sent; these vCPUs have new interrupts.
    Interrupted(u64),
}

/// Runs the vCPUs `indices` of `vm` on this CPU until the VM stops.
pub fn run_cpu(vm: &Mutex<Vm>, indices: &[usize], host: &HostIrqs) -> VmStop {
    let slice_ticks = arch::counter_frequency().saturating_mul(SLICE_US) / 1_000_000;
    let mut schedule = Schedule::new(indices, slice_ticks);
    let shared = schedule.shared();
    let own = schedule.own_mask();
    arch::set_wfx_trap(shared);
    let (epoch, vm_index, uart, vgic, pcpus, vcpus) = {
        let v = vm.lock();
        (
            v.epoch,
            v.index,
            v.uart,
            v.vgic,
            v.pcpus.clone(),
            v.power.len(),
        )
    };
    let this_cpu = indices.first().and_then(|i| pcpus.get(*i)).copied();
    let mut loaded: Option<usize> = None;
    let mut controls = CpuControls::default();
    // Held from each exit through the next entry, and released meanwhile.
    let mut v = vm.lock();
    let stop = loop {
        if let Some(stop) = v.stopped {
            break stop;
        }
        if v.epoch != epoch {
            break VmStop::Reset;
        }
        // Console input, the RTC alarm, a UART access on a fast path: the
        // devices' lines are brought up to date here, before any vCPU is
        // found blocked or entered, and the other CPUs told.
        take_console_input(&mut v);
        service_devices(&mut v);
        wake_vms(&mut v, host, this_cpu);
        let rose = update_device_lines(&mut v) & in_use(&v) & !own;
        if rose != 0 {
            host.interrupt(&v.pcpus, rose);
        }
        let now = arch::counter();
        for (i, slot) in schedule.slots.iter_mut().enumerate() {
            if let Some((entry, context)) = v.power.get_mut(slot.index).and_then(|p| p.boot.take())
            {
                if slot.vcpu.is_none() {
                    v.in_guest += 1;
                }
                if loaded == Some(i) {
                    // Its FP/SIMD state must not land in the new one's.
                    arch::fp_flush();
                    loaded = None;
                }
                slot.vcpu = Some(Vcpu::boot(slot.index, entry, context));
                slot.blocked = false;
            }
            let Some(vcpu) = slot.vcpu.as_ref() else {
                continue;
            };
            // A vCPU that is not loaded has its timers in software.
            if loaded != Some(i) {
                for timer in vcpu.timers_due(now) {
                    let _ = v.vgic.set_ppi_level(slot.index, timer.intid(), true);
                }
            }
            if slot.blocked && matches!(v.vgic.highest_pending(slot.index), Ok(Some(_))) {
                slot.blocked = false;
            }
        }
        let Some(next) = schedule.pick(now) else {
            // Nothing to run: sleep until an interrupt (a kick, the loaded
            // vCPU's timer, the EL2 timer for a descheduled one's deadline).
            let wake = schedule.timer_deadline(loaded, device_event(&v, own), now);
            controls.set_hyp_deadline(wake);
            unlock(v);
            arch::wait_for_interrupt();
            // Served before taking the VM lock, which the CPU that resets
            // or stops the VM may be waiting for; what needs the VM (a
            // kick, console input) is looked at at the top of the loop.
            match loaded.and_then(|i| schedule.slots[i].vcpu.as_mut()) {
                Some(vcpu) => {
                    controls.note(&handle_physical_irqs(vgic, vm_index, vcpu, host));
                }
                None => drain_irqs(host),
            }
            controls.forget_hyp_deadline();
            v = vm.lock();
            continue;
        };
        if loaded != Some(next) {
            let slots = &mut schedule.slots;
            if let Some(old) = loaded.and_then(|i| slots[i].vcpu.as_mut()) {
                arch::fp_flush();
                arch::save_el1(&mut old.regs.el1);
                save_lrs(old);
            }
            let vcpu = slots[next].vcpu.as_mut().unwrap_or_else(|| unreachable!());
            if loaded.is_none() {
                arch::load_stage2(v.stage2_root, v.vmid);
            }
            arch::load_el1(&vcpu.regs.el1);
            if vcpu.saved_lrs.is_empty() {
                clear_lrs(vcpu);
            } else {
                restore_lrs(vcpu);
            }
            loaded = Some(next);
        }
        // After the switch: the vCPU taken off has just saved its timers.
        let deadline = schedule.deadline(next, device_event(&v, own), now);
        controls.set_hyp_deadline(deadline);
        let slots = &mut schedule.slots;
        let index = slots[next].index;
        let vcpu = slots[next].vcpu.as_mut().unwrap_or_else(|| unreachable!());
        controls.set_ich_hcr(flush_to_lrs(vgic, vcpu));
        unlock(v);

        // Exits that need only the UART or the vGIC re-enter at once,
        // without the VM lock (see the module doc).
        let exit = loop {
            let info = arch::run_guest(&mut vcpu.regs.guest);
            vcpu.lrs_retired = false;
            match info.kind {
                ExitKind::Irq | ExitKind::Fiq => {
                    vcpu.exits.count(&info);
                    // The interrupts first: a guest timer's that fired
                    // again re-lists its finished list register in place,
                    // and then there is nothing else to do.
                    let events = handle_physical_irqs(vgic, vm_index, vcpu, host);
                    controls.note(&events);
                    if events.need_vm(shared) {
                        break Exit::Irqs(events);
                    }
                    if !events.refill {
                        continue;
                    }
                    sync_from_lrs(vgic, vcpu);
                }
                ExitKind::SError => {
                    vcpu.exits.count(&info);
                    break Exit::SError(info);
                }
                ExitKind::Sync => match fast_path(uart, vgic, vcpus, vcpu, &info) {
                    // The vGIC is as it was: the list registers stand.
                    // Anything another CPU pends for this vCPU comes with a
                    // kick, an IRQ exit that refills them.
                    FastExit::Done => continue,
                    FastExit::UartDone { line_moved } => {
                        if line_moved || console::input_waiting(vm_index) {
                            break Exit::DevicesMoved;
                        }
                        continue;
                    }
                    // An IPI to a vCPU sharing this CPU, perhaps blocked in
                    // WFI, is the VM's business.
                    FastExit::NotMine => {
                        vcpu.exits.count(&info);
                        match sgi_write(vgic, vcpu, &info) {
                            Some(targets) if !shared => host.interrupt(&pcpus, targets),
                            Some(targets) => break Exit::Interrupted(targets),
                            None => break Exit::Sync(info),
                        }
                    }
                },
            }
            controls.set_ich_hcr(flush_to_lrs(vgic, vcpu));
        };

        v = vm.lock();
        sync_from_lrs(vgic, vcpu);
        let mut block = false;
        // The vCPU's turn ends: its slice is over, or it waits or yields.
        let mut end_turn = false;
        let outcome = match exit {
            // Handled; device lines and console input are brought up to date
            // at the top of the loop.
            Exit::DevicesMoved => ExitOutcome::Continue,
            Exit::Irqs(events) => {
                if events.preempt {
                    controls.forget_hyp_deadline();
                    end_turn = true;
                }
                ExitOutcome::Continue
            }
            Exit::Interrupted(targets) => ExitOutcome::Interrupt(targets),
            Exit::SError(info) => {
                println!(
                    "hypervisor: {}: vcpu {index}: SError (ESR {:#x}), stopping the VM",
                    v.name, info.esr
                );
                ExitOutcome::Stop(VmStop::PowerOff)
            }
            Exit::Sync(info) if shared && Esr(info.esr).class() == ExceptionClass::Wfx => {
                let regs = &mut vcpu.regs.guest;
                regs.pc = regs.pc.wrapping_add(Esr(info.esr).instruction_len());
                // WFI (ISS bit 0 clear) waits for an interrupt; WFE yields.
                let is_wfi = info.esr & 1 == 0;
                let pending =
                    matches!(v.vgic.highest_pending(index), Ok(Some(_))) || !vcpu.lrs.is_empty();
                block = is_wfi && !pending;
                end_turn = true;
                ExitOutcome::Continue
            }
            Exit::Sync(info) => handle_sync(&mut v, vcpu, &info),
        };
        match outcome {
            ExitOutcome::Continue => {}
            ExitOutcome::Interrupt(mask) => host.interrupt(&v.pcpus, mask & in_use(&v)),
            ExitOutcome::CpuOn(_) => {
                host.kick(&v.pcpus, in_use(&v) & !(1 << index));
                arch::send_event();
            }
            ExitOutcome::CpuOff => {
                v.exits.add(&vcpu.exits);
                leave_cpu(vcpu, &mut controls);
                slots[next].vcpu = None;
                loaded = None;
                v.in_guest -= 1;
            }
            ExitOutcome::Stop(stop) => {
                v.stopped = Some(stop);
                host.kick(&v.pcpus, in_use(&v) & !(1 << index));
                arch::send_event();
                break stop;
            }
        }
        if block {
            slots[next].blocked = true;
        }
        if end_turn {
            schedule.yield_cpu();
        }
    };
    arch::hyp_timer_disarm();
    if let Some(vcpu) = loaded.and_then(|i| schedule.slots[i].vcpu.as_mut()) {
        leave_cpu(vcpu, &mut controls);
    }
    for slot in &mut schedule.slots {
        if let Some(mut vcpu) = slot.vcpu.take() {
            v.exits.add(&vcpu.exits);
            clear_lrs(&mut vcpu);
            v.in_guest -= 1;
        }
    }
    unlock(v);
    stop
}

/// Takes the loaded `vcpu` off this CPU for good (it turned itself off, or
/// its VM stopped or reset): its FP/SIMD state is saved, and its list
/// registers, its EL1 timers and the virtual interface go, so that neither
/// a timer's nor the maintenance interrupt stays asserted at EL2 for a
/// vCPU that is gone (the VM's next vCPU on this CPU may start much later,
/// or never).
fn leave_cpu(vcpu: &mut Vcpu, controls: &mut CpuControls) {
    arch::fp_flush();
    clear_lrs(vcpu);
    arch::load_el1(&El1SysRegs::default());
    controls.set_ich_hcr(0);
}

/// Wakes the CPUs of the VMs the devices delivered to (frames through a
/// switch), and this one when a device has work left over at its budget:
/// the guest runs a little, and the kick brings the CPU back here.
fn wake_vms(vm: &mut Vm, host: &HostIrqs, this_cpu: Option<usize>) {
    let mut wake = core::mem::take(&mut vm.wake_vms);
    while wake != 0 {
        let k = wake.trailing_zeros() as usize;
        wake &= wake - 1;
        host.kick_home(k);
    }
    if vm.devices.has_work() {
        if let Some(cpu) = this_cpu {
            host.kick_cpu(cpu);
        }
    }
}

/// Releases the VM lock, then writes the console output the VM's guest
/// produced while it was held (see `VmConsole`).
fn unlock(vm: MutexGuard<'_, Vm>) {
    let output = vm.uart.lock().sink_mut().take_output();
    drop(vm);
    output.write();
}

/// Serves whatever woke an idle CPU with no vCPU loaded: console input is
/// routed (the loop above picks up this VM's share), the rest acknowledged.
/// A level interrupt acknowledged here must not be asserted again at once,
/// or this would never end: the EL2 timer is disarmed, the EL1 timers
/// (which belong to no vCPU while none is loaded) turned off, and an
/// interrupt seen a second time is left for the next call (the caller
/// waits for interrupts between calls).
fn drain_irqs(host: &HostIrqs) {
    // One bit per INTID below the spurious ones.
    let mut seen = [0u64; arch::SPURIOUS_INTID.div_ceil(64) as usize];
    loop {
        let intid = arch::gic_ack();
        if intid >= arch::SPURIOUS_INTID {
            return;
        }
        let (word, bit) = ((intid / 64) as usize, 1u64 << (intid % 64));
        let Some(word) = seen.get_mut(word) else {
            return;
        };
        if core::mem::replace(word, *word | bit) & bit != 0 {
            arch::gic_eoi(intid);
            arch::gic_deactivate(intid);
            return;
        }
        match intid {
            crate::layout::HYP_TIMER_INTID => arch::hyp_timer_disarm(),
            VTIMER_INTID | PTIMER_INTID => arch::guest_timers_disable(),
            _ => {}
        }
        if let Some((base, uart_intid)) = host.uart {
            if intid == uart_intid {
                while let Some(byte) = arch::uart_read_byte(base) {
                    if let Routed::To(k) = console::feed_input(byte) {
                        host.kick_home(k);
                    }
                }
            }
        }
        arch::gic_eoi(intid);
        arch::gic_deactivate(intid);
    }
}

/// When a device's line changes by itself (the RTC alarm), if this CPU
/// watches the VM's devices: the one running vCPU 0 does, so that a guest
/// asleep in WFI gets its alarm (device lines are otherwise looked at only
/// when some vCPU exits).
fn device_event(vm: &Vm, own: u64) -> Option<u64> {
    if own & 1 == 0 {
        return None;
    }
    vm.devices.next_event()
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
