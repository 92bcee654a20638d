//! Interrupts of a running vCPU: physical IRQs taken while the guest ran
//! (its EL1 timers', forwarded with HW = 1 so the guest's EOI deactivates
//! the physical interrupt; the console UART's input; the kick SGI other
//! CPUs send; maintenance), and the hand-over between the vGIC model and
//! the list registers around each guest entry.

use crate::addr::PhysAddr;
use crate::arch;
use crate::arch::aarch64::gic_lr::{ListRegister, LrState};
use crate::console::{self, Routed};
use crate::devices::gic::{Activated, Group, Vgic};
use crate::fixed_vec::FixedVec;
use crate::layout::{HYP_TIMER_INTID, MAINTENANCE_INTID};
use crate::platform::MAX_CPUS;

use super::listed::{registers, MAX_LIST_REGISTERS};
use super::timers::{self, GuestTimer};
use super::{Vcpu, Vm};

/// ICH_HCR_EL2.En.
const ICH_HCR_EN: u64 = 1 << 0;
/// ICH_HCR_EL2.UIE: maintenance interrupt when at most one LR is in use,
/// so interrupts that did not fit get their turn.
const ICH_HCR_UIE: u64 = 1 << 1;
/// The SGI one physical CPU sends another to make it leave its guest and
/// look at the VM's state (power, a stop, console input), under its lock.
/// Below 8: with a secure world, SGIs 8-15 are TF-A's secure SGIs.
pub const KICK_SGI: u32 = 0;
/// The SGI that tells a physical CPU that a vCPU it runs has a new
/// interrupt in the vGIC: it re-enters with its list registers refilled,
/// without the VM lock when the vCPU has the CPU to itself.
pub const INTERRUPT_SGI: u32 = 1;

/// The host's interrupt sources the run loops serve, and how to reach the
/// other physical CPUs.
#[derive(Clone, Copy, Debug)]
pub struct HostIrqs {
    /// The console PL011 and its INTID, for guest input.
    pub uart: Option<(PhysAddr, u32)>,
    /// MPIDR of each physical CPU.
    pub cpu_mpidrs: FixedVec<u64, MAX_CPUS>,
    /// The physical CPU of each VM's vCPU 0, where its console input is
    /// picked up.
    pub vm_home_cpus: FixedVec<usize, MAX_CPUS>,
}

impl HostIrqs {
    /// Makes the CPU of VM `vm`'s vCPU 0 leave its guest.
    pub fn kick_home(&self, vm: usize) {
        let cpu = self.vm_home_cpus.as_slice().get(vm);
        if let Some(mpidr) = cpu.and_then(|c| self.cpu_mpidrs.as_slice().get(*c)) {
            arch::gic_send_sgi(KICK_SGI, *mpidr);
        }
    }

    /// Makes physical CPU `cpu` leave its guest and look at its VM.
    pub fn kick_cpu(&self, cpu: usize) {
        if let Some(mpidr) = self.cpu_mpidrs.as_slice().get(cpu) {
            arch::gic_send_sgi(KICK_SGI, *mpidr);
        }
    }

    /// Makes the physical CPUs of the vCPUs in `mask` leave their guests
    /// and look at the VM; `pcpus[v]` is the physical CPU of vCPU v.
    pub fn kick(&self, pcpus: &[usize], mask: u64) {
        self.send(KICK_SGI, pcpus, mask);
    }

    /// Tells the physical CPUs of the vCPUs in `mask` that those have new
    /// interrupts in the vGIC.
    pub fn interrupt(&self, pcpus: &[usize], mask: u64) {
        self.send(INTERRUPT_SGI, pcpus, mask);
    }

    fn send(&self, sgi: u32, pcpus: &[usize], mask: u64) {
        for (vcpu, pcpu) in pcpus.iter().enumerate() {
            if vcpu < 64 && mask & (1 << vcpu) != 0 {
                if let Some(mpidr) = self.cpu_mpidrs.as_slice().get(*pcpu) {
                    arch::gic_send_sgi(sgi, *mpidr);
                }
            }
        }
    }
}

/// Moves console input typed for `vm` into its PL011, as much as its
/// receive buffer takes: the rest stays queued and follows later (the run
/// loop calls this whenever it holds the VM lock, and the UART's fast path
/// hands over to it while input waits). The UART's line is the caller's
/// ([`update_device_lines`](super::exit::update_device_lines)).
pub fn take_console_input(vm: &mut Vm) {
    let index = vm.index;
    if console::input_waiting(index) {
        vm.uart.lock().fill_rx(|| console::take_input(index));
    }
}

/// What the physical interrupts of one exit asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqEvents {
    /// The EL2 physical timer fired: the time slice ended, or a deadline
    /// it watches passed (a descheduled vCPU's timer, the RTC alarm).
    pub preempt: bool,
    /// Another CPU kicked this one: the VM's state changed (power, a
    /// stop, console input).
    pub kicked: bool,
    /// Another CPU made an interrupt pending for a vCPU this one runs.
    pub interrupted: bool,
    /// Console input arrived for this VM.
    pub console_input: bool,
    /// The maintenance interrupt was taken: it stays active until the list
    /// registers are refilled for the next entry (`gic_deactivate` then).
    pub maintenance: bool,
    /// The vGIC or the list registers may have changed (by anything but
    /// a guest timer re-listed in place, [`forward_timer`]): they are
    /// synchronised and refilled before the vCPU runs again.
    pub refill: bool,
}

impl IrqEvents {
    /// Whether the run loop has to look at the VM (under its lock) before
    /// the vCPU runs again: the timer and maintenance interrupts need only
    /// the vGIC, and so does a new interrupt when the vCPU has the CPU to
    /// itself (`shared`: other vCPUs, perhaps blocked in WFI, share it).
    pub fn need_vm(&self, shared: bool) -> bool {
        self.preempt || self.kicked || self.console_input || (shared && self.interrupted)
    }
}

/// Serves the physical interrupts pending at EL2 after an IRQ exit (or while
/// the CPU idles with `vcpu` loaded), for `vcpu` of VM number `vm_index`.
/// Needs only the vGIC: what needs the VM is reported.
pub fn handle_physical_irqs(
    vgic: &Vgic,
    vm_index: usize,
    vcpu: &mut Vcpu,
    host: &HostIrqs,
) -> IrqEvents {
    let mut events = IrqEvents::default();
    loop {
        let intid = arch::gic_ack();
        if intid >= arch::SPURIOUS_INTID {
            return events;
        }
        if let Some(timer) = GuestTimer::of_intid(intid) {
            // Stays active until the guest EOIs the virtual interrupt.
            events.refill |= !forward_timer(vgic, vcpu, timer);
            arch::gic_eoi(intid);
            continue;
        }
        events.refill = true;
        if intid == MAINTENANCE_INTID {
            // Level-triggered, and asserted until the list registers are
            // retired and refilled: deactivated only then, or it would be
            // taken again at once, for ever.
            arch::gic_eoi(intid);
            events.maintenance = true;
            continue;
        }
        serve_host_irq(intid, vm_index, host, &mut events);
    }
}

/// One of the host's own interrupts, acknowledged: served, EOI'd and
/// deactivated. Out of line, so that a guest timer's exit does not set up
/// what these need.
#[inline(never)]
fn serve_host_irq(intid: u32, vm_index: usize, host: &HostIrqs, events: &mut IrqEvents) {
    match intid {
        HYP_TIMER_INTID => {
            arch::hyp_timer_disarm();
            events.preempt = true;
        }
        KICK_SGI => events.kicked = true,
        INTERRUPT_SGI => events.interrupted = true,
        _ => {}
    }
    if let Some((base, uart_intid)) = host.uart {
        if intid == uart_intid {
            while let Some(byte) = arch::uart_read_byte(base) {
                match console::feed_input(byte) {
                    Routed::To(k) if k == vm_index => events.console_input = true,
                    Routed::To(k) => host.kick_home(k),
                    _ => {}
                }
            }
        }
    }
    arch::gic_eoi(intid);
    arch::gic_deactivate(intid);
}

/// A guest timer's physical interrupt was acknowledged while `vcpu` is
/// loaded: hands it to the guest with HW = 1, so that the guest's EOI
/// deactivates it.
///
/// If the vCPU held it already, the guest has EOI'd the last one (only
/// that deactivates it), whose list register is not retired yet. When the
/// vGIC has not changed since the vCPU last settled, listing it again as
/// pending in that same register is all a retirement followed by a flush
/// would do (the model keeps it active and listed, its line high): the
/// timer's exit then re-enters without touching the model. Otherwise that
/// register is retired first and the interrupt goes the general way.
/// Returns whether it was re-listed in place.
fn forward_timer(vgic: &Vgic, vcpu: &mut Vcpu, timer: GuestTimer) -> bool {
    let intid = timer.intid();
    if vcpu.timers_active & timer.bit() != 0 {
        if let Some(n) = vcpu.lrs.find(intid) {
            let raw = arch::gic_read_lr(n);
            if LrState::of(raw) == LrState::Invalid {
                if vcpu.settled_at == Some(vgic.generation(vcpu.index)) {
                    arch::gic_write_lr(n, LrState::Pending.set_in(raw));
                    return true;
                }
                retire(vgic, vcpu, n, intid);
            }
        }
    }
    let _ = vgic.set_ppi_level(vcpu.index, intid, true);
    vcpu.timers_active |= timer.bit();
    false
}

/// After an exit, once its physical interrupts are served: retires the
/// interrupts the guest EOI'd from their list registers, and takes back a
/// timer interrupt whose line dropped before the guest took it.
pub fn sync_from_lrs(vgic: &Vgic, vcpu: &mut Vcpu) {
    if vcpu.timers_active != 0 {
        let (virtual_ctl, physical_ctl) = arch::guest_timer_ctls();
        for (timer, ctl) in GuestTimer::ALL.into_iter().zip([virtual_ctl, physical_ctl]) {
            if vcpu.timers_active & timer.bit() != 0 && !timers::line(ctl) {
                drop_stale_timer(vgic, vcpu, timer);
            }
        }
    }
    retire_completed(vgic, vcpu);
}

/// Frees the list registers the guest is done with (EOI'd: invalid) and
/// tells the vGIC. Edge-triggered interrupts are listed without an EOI
/// maintenance request, so their EOI causes no exit: they are retired here,
/// after any exit, or before a new interrupt is listed.
fn retire_completed(vgic: &Vgic, vcpu: &mut Vcpu) {
    // The guest has not run since the last retirement: nothing to find.
    if core::mem::replace(&mut vcpu.lrs_retired, true) || vcpu.lrs.is_empty() {
        return;
    }
    // Only the low 16 bits can be list registers.
    let finished = arch::gic_finished_lrs() as u16;
    for n in registers(vcpu.lrs.used() & finished) {
        if let Some(intid) = vcpu.lrs.get(n) {
            retire(vgic, vcpu, n, intid);
        }
    }
}

/// Frees list register `n`, whose `intid` the guest is done with, and
/// tells the vGIC.
fn retire(vgic: &Vgic, vcpu: &mut Vcpu, n: usize, intid: u32) {
    let timer = GuestTimer::of_intid(intid);
    let held = timer.is_some_and(|t| vcpu.timers_active & t.bit() != 0);
    if held && ListRegister::decode(arch::gic_read_lr(n)).pintid.is_none() {
        // A software copy of a timer interrupt retired while the physical
        // one was held active for it: release that too.
        arch::gic_deactivate(intid);
    }
    // Free it: an invalid LR with its EOI bit still set keeps the
    // maintenance interrupt asserted.
    arch::gic_write_lr(n, 0);
    vcpu.lrs.clear(n);
    let _ = vgic.deactivate(vcpu.index, intid);
    if let Some(timer) = timer {
        // The physical timer interrupt fires again if still asserted.
        let _ = vgic.set_ppi_level(vcpu.index, intid, false);
        vcpu.timers_active &= !timer.bit();
    }
}

/// The guest turned a timer off (or masked it) while the timer's interrupt
/// waited for it, disabled at the vGIC or pending in a list register. The
/// interrupt is level-triggered, so, as on QEMU's GIC, which follows the
/// timer's output, it is no longer pending: take it back and release the
/// physical interrupt held active for it. Once the guest has acknowledged
/// it, it is the guest's to EOI.
fn drop_stale_timer(vgic: &Vgic, vcpu: &mut Vcpu, timer: GuestTimer) {
    let intid = timer.intid();
    if let Some(n) = vcpu.lrs.find(intid) {
        if LrState::of(arch::gic_read_lr(n)) != LrState::Pending {
            return;
        }
        arch::gic_write_lr(n, 0);
        vcpu.lrs.clear(n);
        let _ = vgic.deactivate(vcpu.index, intid);
    }
    let _ = vgic.set_ppi_level(vcpu.index, intid, false);
    arch::gic_deactivate(intid);
    vcpu.timers_active &= !timer.bit();
    vcpu.settled_at = None;
}

/// Before an entry: moves deliverable interrupts from the vGIC into free
/// list registers, highest priority first. Returns the ICH_HCR_EL2 value
/// the entry needs (with the underflow maintenance interrupt when some did
/// not fit). Device lines are the caller's (`update_device_lines`).
#[must_use]
pub fn flush_to_lrs(vgic: &Vgic, vcpu: &mut Vcpu) -> u64 {
    // Most exits change no interrupt state of this vCPU: skip the scan.
    if vcpu.settled_at == Some(vgic.generation(vcpu.index)) {
        return ICH_HCR_EN;
    }
    // The generation is read before each scan: a change another CPU makes
    // during the scan moves it past what is recorded, so the next entry
    // scans again instead of missing that change.
    vcpu.settled_at = None;
    retire_completed(vgic, vcpu);
    retract_undeliverable(vgic, vcpu);
    merge_repeated_edges(vgic, vcpu);
    let listed_before = vcpu.lrs.used();
    let hcr = fill_free_lrs(vgic, vcpu);
    if vcpu.lrs.used() != listed_before && listed_before != 0 {
        order_pending(vcpu);
    }
    hcr
}

/// Lists deliverable interrupts, highest priority first, in the free list
/// registers; the ICH_HCR_EL2 value for the entry.
fn fill_free_lrs(vgic: &Vgic, vcpu: &mut Vcpu) -> u64 {
    loop {
        let generation = vgic.generation(vcpu.index);
        let Some(free) = vcpu.lrs.free() else {
            if matches!(vgic.highest_pending(vcpu.index), Ok(Some(_))) {
                return ICH_HCR_EN | ICH_HCR_UIE;
            }
            vcpu.settled_at = Some(generation);
            break;
        };
        let Ok(Some(Activated { irq: next, more })) = vgic.activate_highest(vcpu.index) else {
            vcpu.settled_at = Some(generation);
            break;
        };
        let mut lr = ListRegister::pending(next.intid, next.priority);
        lr.group1 = next.group == Group::One;
        let held = GuestTimer::of_intid(next.intid)
            .is_some_and(|timer| vcpu.timers_active & timer.bit() != 0);
        if held {
            lr.pintid = Some(next.intid);
        } else {
            // Level interrupts may still be asserted after the guest's EOI;
            // get an exit then to present them again. An edge that fires
            // again while listed is added to its list register instead
            // (`merge_repeated_edges`), so its EOI needs no exit.
            lr.eoi_maintenance = !next.edge;
        }
        arch::gic_write_lr(free, lr.encode());
        vcpu.lrs.set(free, next.intid);
        if !more {
            // Its scan saw nothing else to list, and handing `next` over
            // moved this vCPU's generation on by one: if nothing else has
            // moved it since, the next entry need not scan at all.
            vcpu.settled_at = Some(generation.wrapping_add(1));
            break;
        }
    }
    ICH_HCR_EN
}

/// Puts the interrupts waiting in list registers (pending, not yet
/// acknowledged) in the order a GIC presents them: by priority, then
/// lowest INTID first, as QEMU's GIC does and KVM's list registers are
/// filled. The virtual CPU interface takes the lowest-numbered of several
/// equal-priority list registers, and new interrupts land in whichever
/// registers were free, perhaps below older ones still waiting.
fn order_pending(vcpu: &mut Vcpu) {
    let mut slots: FixedVec<usize, MAX_LIST_REGISTERS> = FixedVec::new();
    let mut waiting: FixedVec<(u8, u32, u64), MAX_LIST_REGISTERS> = FixedVec::new();
    for n in registers(vcpu.lrs.used()) {
        let raw = arch::gic_read_lr(n);
        let lr = ListRegister::decode(raw);
        if lr.state == LrState::Pending {
            let _ = slots.push(n);
            let _ = waiting.push((lr.priority, lr.vintid, raw));
        }
    }
    let waiting = waiting.as_mut_slice();
    if waiting.is_sorted() {
        return;
    }
    waiting.sort_unstable();
    for (n, (_, vintid, raw)) in slots.iter().zip(waiting.iter()) {
        arch::gic_write_lr(*n, *raw);
        vcpu.lrs.set(*n, *vintid);
    }
}

/// Edge-triggered interrupts that fired again while listed (a virtio queue
/// interrupt, an SGI) become pending again in their list register (pending
/// and active if the guest is handling the first), as a GIC keeps one
/// pending edge beside the active one.
fn merge_repeated_edges(vgic: &Vgic, vcpu: &mut Vcpu) {
    for (n, intid) in vcpu.lrs.iter() {
        if !vgic.take_repeated_edge(vcpu.index, intid).unwrap_or(false) {
            continue;
        }
        let mut lr = ListRegister::decode(arch::gic_read_lr(n));
        if lr.state == LrState::Active {
            lr.state = LrState::PendingActive;
            arch::gic_write_lr(n, lr.encode());
        }
    }
}

/// Takes back the interrupts waiting in list registers, not yet
/// acknowledged, that a GIC would no longer present: the guest disabled
/// them or their group or cleared their pending state, or a level line
/// dropped (QEMU's GIC follows the line). Runs when the vGIC changed since
/// the last entry, which each of those does. A timer's interrupt stays
/// held for the guest (its line has [`drop_stale_timer`]).
fn retract_undeliverable(vgic: &Vgic, vcpu: &mut Vcpu) {
    for n in registers(vcpu.lrs.used()) {
        let Some(intid) = vcpu.lrs.get(n) else {
            continue;
        };
        if LrState::of(arch::gic_read_lr(n)) == LrState::Pending
            && vgic
                .withdraw_undeliverable(vcpu.index, intid)
                .unwrap_or(false)
        {
            arch::gic_write_lr(n, 0);
            vcpu.lrs.clear(n);
        }
    }
}

/// Takes the vCPU's interrupts off this CPU's list registers so another
/// vCPU can run here; a timer interrupt forwarded with HW = 1 becomes a
/// software one (with an EOI maintenance request) and the physical one is
/// released, since the next vCPU's timer uses it.
pub fn save_lrs(vcpu: &mut Vcpu) {
    vcpu.saved_lrs.clear();
    for n in 0..vcpu.lrs.count() {
        let mut raw = arch::gic_read_lr(n);
        if vcpu.lrs.get(n).is_some() {
            let mut lr = ListRegister::decode(raw);
            if lr.pintid.is_some() {
                lr.pintid = None;
                lr.eoi_maintenance = true;
                raw = lr.encode();
            }
        }
        vcpu.saved_lrs.push(raw);
        arch::gic_write_lr(n, 0);
    }
    release_timers(vcpu);
}

/// Gives back the physical timer interrupts the vCPU held active (it
/// leaves this CPU; the next vCPU's timers use them).
fn release_timers(vcpu: &mut Vcpu) {
    for timer in GuestTimer::ALL {
        if vcpu.timers_active & timer.bit() != 0 {
            arch::gic_deactivate(timer.intid());
        }
    }
    vcpu.timers_active = 0;
}

/// Puts back what [`save_lrs`] took.
pub fn restore_lrs(vcpu: &mut Vcpu) {
    vcpu.settled_at = None;
    vcpu.lrs_retired = false;
    for (n, raw) in vcpu.saved_lrs.iter().enumerate() {
        arch::gic_write_lr(n, *raw);
    }
    vcpu.saved_lrs.clear();
}

/// Empties every list register (the vCPU leaves this CPU) and gives back a
/// physical timer interrupt the guest still held.
pub fn clear_lrs(vcpu: &mut Vcpu) {
    vcpu.settled_at = None;
    vcpu.lrs_retired = false;
    for n in 0..vcpu.lrs.count() {
        arch::gic_write_lr(n, 0);
    }
    vcpu.lrs.clear_all();
    release_timers(vcpu);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{AccessWidth, MmioDevice};
    use crate::layout::VTIMER_INTID;
    use crate::vm::listed::Listed;
    use crate::vm::Vm;

    /// vCPU 0 of a one-vCPU VM whose guest enabled Group 1 and the
    /// virtual timer's PPI, with four list registers.
    fn guest_with_timer_enabled() -> (Vm, Vcpu) {
        let vm = Vm::for_tests(1);
        vm.vgic
            .distributor()
            .write(0, AccessWidth::Word, 0b10)
            .unwrap();
        let mut gicr = vm.vgic.redistributors();
        // WAKER: awake; IGROUPR0: Group 1; ISENABLER0: the timer.
        gicr.write(0x14, AccessWidth::Word, 0).unwrap();
        gicr.write(0x1_0080, AccessWidth::Word, u64::MAX).unwrap();
        gicr.write(0x1_0100, AccessWidth::Word, 1 << VTIMER_INTID)
            .unwrap();
        let mut vcpu = Vcpu::boot(0, 0x4008_0000, 0);
        vcpu.lrs = Listed::new(4);
        // The fake list registers are per thread: start from empty ones.
        clear_lrs(&mut vcpu);
        (vm, vcpu)
    }

    #[test]
    fn flush_moves_what_is_pending_and_then_settles() {
        let (vm, mut vcpu) = guest_with_timer_enabled();
        assert_eq!(flush_to_lrs(vm.vgic, &mut vcpu), ICH_HCR_EN);
        assert_eq!(vcpu.settled_at, Some(vm.vgic.generation(0)));
        vm.vgic.set_ppi_level(0, VTIMER_INTID, true).unwrap();
        assert_eq!(flush_to_lrs(vm.vgic, &mut vcpu), ICH_HCR_EN);
        assert_eq!(vcpu.lrs.get(0), Some(VTIMER_INTID));
        assert!(vm.vgic.irq(0, VTIMER_INTID).unwrap().active);
        // Settled at the generation its last scan started from.
        assert_eq!(vcpu.settled_at, Some(vm.vgic.generation(0)));
        assert_eq!(flush_to_lrs(vm.vgic, &mut vcpu), ICH_HCR_EN);
        assert_eq!(vcpu.lrs.iter().count(), 1, "not twice");
    }

    /// The guest clears (ICACTIVER) or sets (ISACTIVER) the active state
    /// of an interrupt waiting in a list register, or clears its pending
    /// state (ICPENDR), while its line stays high: it is never listed a
    /// second time (two list registers with one INTID are UNPREDICTABLE).
    #[test]
    fn active_and_pending_writes_never_list_an_interrupt_twice() {
        let (vm, mut vcpu) = guest_with_timer_enabled();
        vm.vgic.set_ppi_level(0, VTIMER_INTID, true).unwrap();
        let _ = flush_to_lrs(vm.vgic, &mut vcpu);
        assert_eq!(vcpu.lrs.get(0), Some(VTIMER_INTID));
        let bit = 1 << VTIMER_INTID;
        // ICACTIVER0, ISACTIVER0, ICPENDR0, ICACTIVER0 in SGI_base.
        for offset in [0x1_0380, 0x1_0300, 0x1_0280, 0x1_0380] {
            vm.vgic
                .redistributors()
                .write(offset, AccessWidth::Word, bit)
                .unwrap();
            let _ = flush_to_lrs(vm.vgic, &mut vcpu);
            let listed = vcpu.lrs.iter().count();
            assert_eq!(listed, 1, "after a write at {offset:#x}: {:?}", vcpu.lrs);
        }
    }

    /// SPI 48 (the first virtio-mmio slot's) enabled as an edge-triggered
    /// Group 1 interrupt routed to vCPU 0.
    const EDGE_SPI: u32 = 48;

    fn enable_edge_spi(vm: &Vm) {
        let mut gicd = vm.vgic.distributor();
        // IGROUPR1, ICFGR3 (bit 1: INTID 48 edge-triggered), IROUTER48,
        // ISENABLER1.
        gicd.write(0x84, AccessWidth::Word, u64::from(u32::MAX))
            .unwrap();
        gicd.write(0xc0c, AccessWidth::Word, 0b10).unwrap();
        gicd.write(0x6180, AccessWidth::Double, 0).unwrap();
        gicd.write(0x104, AccessWidth::Word, 1 << (EDGE_SPI - 32))
            .unwrap();
    }

    /// The guest runs and moves list register `n` to `state` (an
    /// acknowledge, an EOI).
    fn guest_moves_lr(vcpu: &mut Vcpu, n: usize, state: LrState) {
        arch::set_lr_state(n, state);
        vcpu.lrs_retired = false;
    }

    fn fire(vm: &Vm, intid: u32) {
        vm.vgic.set_spi_level(intid, true).unwrap();
        vm.vgic.set_spi_level(intid, false).unwrap();
    }

    #[test]
    fn an_edge_is_listed_without_an_eoi_exit_and_retired_when_it_fires_again() {
        let (vm, mut vcpu) = guest_with_timer_enabled();
        enable_edge_spi(&vm);
        fire(&vm, EDGE_SPI);
        let _ = flush_to_lrs(vm.vgic, &mut vcpu);
        assert_eq!(vcpu.lrs.get(0), Some(EDGE_SPI));
        let lr = ListRegister::decode(arch::gic_read_lr(0));
        assert!(!lr.eoi_maintenance, "its EOI needs no exit: {lr:?}");
        // The guest acknowledges and EOIs it without an exit, and it fires
        // again before the hypervisor looked.
        guest_moves_lr(&mut vcpu, 0, LrState::Invalid);
        fire(&vm, EDGE_SPI);
        let _ = flush_to_lrs(vm.vgic, &mut vcpu);
        assert_eq!(vcpu.lrs.iter().count(), 1, "{:?}", vcpu.lrs);
        let lr = ListRegister::decode(arch::gic_read_lr(0));
        assert_eq!((lr.vintid, lr.state), (EDGE_SPI, LrState::Pending));
    }

    #[test]
    fn an_edge_that_fires_while_the_guest_handles_it_is_pending_again_in_its_list_register() {
        let (vm, mut vcpu) = guest_with_timer_enabled();
        enable_edge_spi(&vm);
        fire(&vm, EDGE_SPI);
        let _ = flush_to_lrs(vm.vgic, &mut vcpu);
        guest_moves_lr(&mut vcpu, 0, LrState::Active);
        fire(&vm, EDGE_SPI);
        let _ = flush_to_lrs(vm.vgic, &mut vcpu);
        assert_eq!(vcpu.lrs.iter().count(), 1, "{:?}", vcpu.lrs);
        let lr = ListRegister::decode(arch::gic_read_lr(0));
        assert_eq!((lr.vintid, lr.state), (EDGE_SPI, LrState::PendingActive));
        assert!(
            !vm.vgic.irq(0, EDGE_SPI).unwrap().pending_latch,
            "taken once"
        );
        // Level interrupts still ask for the exit on EOI.
        vm.vgic.set_ppi_level(0, VTIMER_INTID, true).unwrap();
        let _ = flush_to_lrs(vm.vgic, &mut vcpu);
        let timer = ListRegister::decode(arch::gic_read_lr(1));
        assert_eq!(timer.vintid, VTIMER_INTID);
        assert!(timer.eoi_maintenance);
    }

    /// The guest timer's physical interrupt as the run loop takes it: the
    /// vCPU holds it for the guest (HW = 1), then the list registers are
    /// filled for the entry.
    fn timer_fires(vm: &Vm, vcpu: &mut Vcpu) {
        assert!(!forward_timer(vm.vgic, vcpu, GuestTimer::Virtual));
        let _ = flush_to_lrs(vm.vgic, vcpu);
    }

    #[test]
    fn a_timer_that_fires_again_is_relisted_in_place_when_nothing_else_changed() {
        let (vm, mut vcpu) = guest_with_timer_enabled();
        timer_fires(&vm, &mut vcpu);
        let listed = ListRegister::decode(arch::gic_read_lr(0));
        assert_eq!(listed.pintid, Some(VTIMER_INTID), "{listed:?}");
        // The guest EOIs it (deactivating the physical one), which fires
        // again before any other exit.
        guest_moves_lr(&mut vcpu, 0, LrState::Invalid);
        let generation = vm.vgic.generation(0);
        assert!(forward_timer(vm.vgic, &mut vcpu, GuestTimer::Virtual));
        let relisted = ListRegister::decode(arch::gic_read_lr(0));
        assert_eq!(relisted, listed, "pending again, in the same register");
        assert_eq!(vm.vgic.generation(0), generation, "the vGIC untouched");
        assert_eq!(vcpu.timers_active, GuestTimer::Virtual.bit());
        // sync_from_lrs but for its look at the timer line, which host
        // builds cannot read.
        retire_completed(vm.vgic, &mut vcpu);
        assert_eq!(flush_to_lrs(vm.vgic, &mut vcpu), ICH_HCR_EN);
        assert_eq!(
            vcpu.lrs.iter().collect::<alloc::vec::Vec<_>>(),
            [(0, VTIMER_INTID)]
        );
        let irq = vm.vgic.irq(0, VTIMER_INTID).unwrap();
        assert!(irq.active && irq.listed && irq.line, "{irq:?}");
    }

    #[test]
    fn a_timer_that_fires_again_after_a_vgic_change_goes_the_general_way() {
        let (vm, mut vcpu) = guest_with_timer_enabled();
        enable_edge_spi(&vm);
        timer_fires(&vm, &mut vcpu);
        guest_moves_lr(&mut vcpu, 0, LrState::Invalid);
        // A device interrupt became pending meanwhile: the timer's list
        // register is retired, and both are listed by priority.
        fire(&vm, EDGE_SPI);
        assert!(!forward_timer(vm.vgic, &mut vcpu, GuestTimer::Virtual));
        // sync_from_lrs but for its look at the timer line, which host
        // builds cannot read.
        retire_completed(vm.vgic, &mut vcpu);
        assert_eq!(flush_to_lrs(vm.vgic, &mut vcpu), ICH_HCR_EN);
        let mut listed: alloc::vec::Vec<u32> = vcpu.lrs.iter().map(|(_, i)| i).collect();
        listed.sort_unstable();
        assert_eq!(listed, [VTIMER_INTID, EDGE_SPI]);
        let timer = vcpu.lrs.find(VTIMER_INTID).unwrap();
        let lr = ListRegister::decode(arch::gic_read_lr(timer));
        assert_eq!(
            (lr.state, lr.pintid),
            (LrState::Pending, Some(VTIMER_INTID))
        );
        assert_eq!(vcpu.timers_active, GuestTimer::Virtual.bit());
    }

    #[test]
    fn an_interrupt_disabled_while_waiting_in_a_list_register_is_taken_back_and_kept_pending() {
        let (vm, mut vcpu) = guest_with_timer_enabled();
        enable_edge_spi(&vm);
        fire(&vm, EDGE_SPI);
        let _ = flush_to_lrs(vm.vgic, &mut vcpu);
        assert_eq!(vcpu.lrs.find(EDGE_SPI), Some(0));
        // GICD_ICENABLER1, then GICD_ISENABLER1.
        let bit = 1 << (EDGE_SPI - 32);
        vm.vgic
            .distributor()
            .write(0x184, AccessWidth::Word, bit)
            .unwrap();
        let _ = flush_to_lrs(vm.vgic, &mut vcpu);
        assert!(vcpu.lrs.is_empty(), "{:?}", vcpu.lrs);
        assert_eq!(arch::gic_read_lr(0), 0);
        let irq = vm.vgic.irq(0, EDGE_SPI).unwrap();
        assert!(irq.pending() && !irq.active && !irq.listed, "{irq:?}");
        vm.vgic
            .distributor()
            .write(0x104, AccessWidth::Word, bit)
            .unwrap();
        let _ = flush_to_lrs(vm.vgic, &mut vcpu);
        assert_eq!(vcpu.lrs.find(EDGE_SPI), Some(0), "listed again");
    }

    #[test]
    fn a_level_interrupt_pended_by_software_is_not_taken_back_when_its_line_is_low() {
        let (vm, mut vcpu) = guest_with_timer_enabled();
        enable_edge_spi(&vm);
        // ICFGR3 back to level for INTID 48, then GICD_ISPENDR1.
        let mut gicd = vm.vgic.distributor();
        gicd.write(0xc0c, AccessWidth::Word, 0).unwrap();
        gicd.write(0x204, AccessWidth::Word, 1 << (EDGE_SPI - 32))
            .unwrap();
        let _ = flush_to_lrs(vm.vgic, &mut vcpu);
        assert_eq!(vcpu.lrs.find(EDGE_SPI), Some(0));
        // Another change makes the next entry look at the list registers.
        vm.vgic.set_ppi_level(0, VTIMER_INTID, true).unwrap();
        let _ = flush_to_lrs(vm.vgic, &mut vcpu);
        assert!(vcpu.lrs.find(EDGE_SPI).is_some(), "{:?}", vcpu.lrs);
    }

    #[test]
    fn interrupts_listed_beside_waiting_ones_are_presented_lowest_intid_first() {
        let (vm, mut vcpu) = guest_with_timer_enabled();
        let sgis = 4..9;
        let enable: u64 = sgis.clone().map(|i| 1 << i).sum();
        vm.vgic
            .redistributors()
            .write(0x1_0100, AccessWidth::Word, enable)
            .unwrap();
        for intid in sgis.clone() {
            vm.vgic.raise_edge(0, intid).unwrap();
        }
        assert_eq!(flush_to_lrs(vm.vgic, &mut vcpu), ICH_HCR_EN | ICH_HCR_UIE);
        // The guest takes SGIs 4-6; 7 still waits in list register 3 when 8
        // is listed in a freed register below it.
        for n in 0..3 {
            guest_moves_lr(&mut vcpu, n, LrState::Invalid);
        }
        assert_eq!(flush_to_lrs(vm.vgic, &mut vcpu), ICH_HCR_EN);
        let waiting: alloc::vec::Vec<u32> = (0..4)
            .map(|n| ListRegister::decode(arch::gic_read_lr(n)))
            .filter(|lr| lr.state == LrState::Pending)
            .map(|lr| lr.vintid)
            .collect();
        assert_eq!(waiting, [7, 8], "in list register order");
        assert_eq!(
            vcpu.lrs.iter().collect::<alloc::vec::Vec<_>>(),
            [(0, 7), (3, 8)]
        );
    }

    #[test]
    fn full_list_registers_ask_for_the_underflow_interrupt() {
        let (vm, mut vcpu) = guest_with_timer_enabled();
        for n in 0..4 {
            arch::gic_write_lr(n, ListRegister::pending(3, 0).encode());
        }
        for n in 0..4 {
            vcpu.lrs.set(n, 3);
        }
        vm.vgic.set_ppi_level(0, VTIMER_INTID, true).unwrap();
        assert_eq!(flush_to_lrs(vm.vgic, &mut vcpu), ICH_HCR_EN | ICH_HCR_UIE);
        assert_eq!(vcpu.settled_at, None, "it has to try again");
        assert!(!vm.vgic.irq(0, VTIMER_INTID).unwrap().active);
    }
}
