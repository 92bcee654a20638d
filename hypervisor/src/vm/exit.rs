//! Synchronous guest exits: firmware calls (HVC/SMC → PSCI/SMCCC/FF-A), data
//! aborts on emulated MMIO (dispatched by IPA to the VM's devices), trapped
//! system registers (ICC_SGI1R_EL1, ID registers; ACTLR_EL1 and the debug
//! registers read as zero), and everything a guest may not do,
//! which gets the architected answer (external abort, UNDEFINED,
//! NOT_SUPPORTED) and a console line (rate-limited, [`super::reports`]),
//! never a hypervisor crash.

use core::fmt;

use crate::addr::IntermediatePhysAddr;
use crate::arch;
use crate::arch::aarch64::context::{ExitInfo, ExitKind, VcpuRegs};
use crate::arch::aarch64::esr::{self, Esr, ExceptionClass, SysRegId};
use crate::arch::aarch64::idregs;
use crate::arch::aarch64::mmio_decode::{self, Direction, MmioAccess};
use crate::devices::gic::Vgic;
use crate::devices::memory::GuestMemory;
use crate::devices::{MmioDevice, MmioError};
use crate::ffa;
use crate::layout::{
    GICD_BASE, GICD_SIZE, GICR_BASE, GICR_STRIDE, PL011_BASE, PL011_INTID, PRIMECELL_SIZE,
};
use crate::psci::{self, PsciAction, PsciTarget};
use crate::smccc::{self, Service};

use super::reports::ReportKind;
use super::{Vcpu, VcpuPower, Vm, VmStop, VmUart};

/// What the run loop does after an exit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ExitOutcome {
    /// Re-enter the same vCPU.
    Continue,
    /// The calling vCPU powered itself off.
    CpuOff,
    /// Start another vCPU (PSCI CPU_ON) and continue.
    CpuOn(usize),
    /// These vCPUs (a mask) have new interrupts: tell their CPUs, and
    /// continue.
    Interrupt(u64),
    /// The whole VM stopped.
    Stop(VmStop),
}

/// The windows every VM has outside its device table: the interrupt
/// controller and the console, which have locks of their own.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fixed {
    Gicd,
    Gicr,
    Uart,
}

/// The fixed window `ipa` falls in, and the offset inside it, for a VM
/// with `vcpus` redistributor frames.
fn fixed_window(vcpus: usize, ipa: IntermediatePhysAddr) -> Option<(Fixed, u64)> {
    let vcpus = u64::try_from(vcpus).unwrap_or(0);
    let windows = [
        (Fixed::Gicd, GICD_BASE, GICD_SIZE),
        (Fixed::Gicr, GICR_BASE, GICR_STRIDE.saturating_mul(vcpus)),
        (Fixed::Uart, PL011_BASE, PRIMECELL_SIZE),
    ];
    windows.into_iter().find_map(|(w, base, size)| {
        ipa.checked_offset_from(base)
            .filter(|offset| *offset < size)
            .map(|offset| (w, offset))
    })
}

/// Performs a decoded access on `dev` for the vCPU whose registers are
/// `regs`: a store takes its register's value, a load lands in it.
fn perform(
    dev: &mut dyn MmioDevice,
    regs: &mut VcpuRegs,
    offset: u64,
    access: &MmioAccess,
) -> Result<(), MmioError> {
    let reg = usize::from(access.register);
    match access.direction {
        Direction::Write => dev.write(offset, access.width, access.store_value(regs.x(reg))),
        Direction::Read => dev
            .read(offset, access.width)
            .map(|raw| regs.set_x(reg, access.load_result(raw))),
    }
}

/// What [`fast_path`] did with an exit.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FastExit {
    /// Not an exit it handles: the exit is the slow path's.
    NotMine,
    /// Done, and the vGIC is as it was: the list registers need no
    /// refill.
    Done,
    /// A UART access done, the vGIC as it was. When the UART's interrupt
    /// line moved, the VM's devices must be looked at
    /// (`update_device_lines`) before the vCPU runs again; and the access
    /// may have made room for console input a full receive buffer held
    /// back (any other input comes with a kick, an IRQ exit).
    UartDone { line_moved: bool },
}

/// Handles an exit that needs nothing of the VM but its UART or its vGIC,
/// without the VM lock, which every other exit of the VM's vCPUs needs:
/// - a PL011 access, under the UART's own lock (most exits of a booting
///   Linux: two per console character, a flag read and a data write);
/// - a read of the vGIC's distributor or of a redistributor (no side
///   effects: nothing else changes);
/// - an SMCCC call whose answer is fixed (`PSCI_VERSION`, `SMCCC_VERSION`,
///   the feature queries, ...).
///
/// Only MMIO accesses the syndrome describes (ISV) qualify. `vcpus` is
/// the VM's vCPU count (the redistributor window's size). An exit it
/// handles is counted in `vcpu.exits` (it knows its kind already); the
/// caller counts the others. Inlined into the run loop: the class test
/// is all an MMIO exit pays here.
#[inline(always)]
pub fn fast_path(
    uart: &VmUart,
    vgic: &Vgic,
    vcpus: usize,
    vcpu: &mut Vcpu,
    info: &ExitInfo,
) -> FastExit {
    if info.kind != ExitKind::Sync {
        return FastExit::NotMine;
    }
    let e = Esr(info.esr);
    // MMIO first, in one comparison: most exits are.
    if e.is_data_abort_lower() {
        return mmio_fast_path(uart, vgic, vcpus, vcpu, info.esr, info.far, info.hpfar);
    }
    // Only immediate 0 is an SMCCC call; the slow path answers the others.
    match e.class() {
        _ if e.call_immediate() != 0 => FastExit::NotMine,
        ExceptionClass::Hvc64 => fixed_call(vcpu, 0),
        // SMC traps before it executes: the answer skips it.
        ExceptionClass::Smc64 => fixed_call(vcpu, 4),
        _ => FastExit::NotMine,
    }
}

/// Out of line: its frame (the registers an MMIO access needs) would
/// otherwise be set up for a call too. The syndrome is decoded first
/// (a few bit tests), the window found from the IPA next, the UART's
/// first: most of these exits are its.
#[inline(never)]
fn mmio_fast_path(
    uart: &VmUart,
    vgic: &Vgic,
    vcpus: usize,
    vcpu: &mut Vcpu,
    esr: u64,
    far: u64,
    hpfar: u64,
) -> FastExit {
    // The caller checked the class: a data abort from the guest.
    let e = Esr(esr);
    let abort = e.data_abort_iss();
    if !abort.syndrome_valid
        || abort.stage1_walk
        || abort.cache_maintenance
        || !abort.is_translation_or_access_fault()
    {
        return FastExit::NotMine;
    }
    let access = mmio_decode::described_access(&abort);
    let ipa = esr::fault_ipa(hpfar, far);
    let uart_offset = ipa
        .checked_offset_from(PL011_BASE)
        .filter(|offset| *offset < PRIMECELL_SIZE);
    // A refused access changes nothing; the slow path refuses it again and
    // reports it.
    let done = if let Some(offset) = uart_offset {
        let mut device = uart.lock();
        let line_before = device.interrupt_pending();
        if perform(&mut *device, &mut vcpu.regs, offset, &access).is_err() {
            return FastExit::NotMine;
        }
        let line_moved = device.interrupt_pending() != line_before;
        // Only a write to the data register sends anything.
        if device.sink().has_output() {
            let output = device.sink_mut().take_output();
            drop(device);
            output.write();
        }
        vcpu.exits.uart += 1;
        FastExit::UartDone { line_moved }
    } else {
        // A write may pend, route or enable interrupts: the slow path's.
        if access.direction == Direction::Write {
            return FastExit::NotMine;
        }
        let result = match fixed_window(vcpus, ipa) {
            Some((Fixed::Gicd, offset)) => {
                perform(&mut vgic.distributor(), &mut vcpu.regs, offset, &access)
            }
            Some((Fixed::Gicr, offset)) => {
                perform(&mut vgic.redistributors(), &mut vcpu.regs, offset, &access)
            }
            _ => return FastExit::NotMine,
        };
        if result.is_err() {
            return FastExit::NotMine;
        }
        vcpu.exits.gic += 1;
        FastExit::Done
    };
    let regs = &mut vcpu.regs.guest;
    regs.pc = regs.pc.wrapping_add(e.instruction_len());
    done
}

/// Answers a call whose answer depends on nothing but its arguments
/// (`smccc::fixed_answer`, `psci::fixed_answer`), `skip` bytes past the
/// calling instruction; anything else (and an unknown function, which is
/// reported) is the slow path's.
fn fixed_call(vcpu: &mut Vcpu, skip: u64) -> FastExit {
    let (x0, x1) = (vcpu.regs.x(0), vcpu.regs.x(1));
    // Each answers only function IDs of its own service: no routing.
    let answer = psci::fixed_answer(x0, x1).or_else(|| smccc::fixed_answer(x0, x1));
    let Some(value) = answer else {
        return FastExit::NotMine;
    };
    // SMCCC returns the signed status in x0 as a 64-bit value.
    vcpu.regs.set_x(0, value as u64);
    vcpu.exits.call += 1;
    let regs = &mut vcpu.regs.guest;
    regs.pc = regs.pc.wrapping_add(skip);
    FastExit::Done
}

/// Re-evaluates the emulated devices' interrupt lines. Returns, as a mask,
/// the vCPUs that an interrupt which just rose is routed to: they have to
/// look at their vGIC state (a line that fell needs nobody's attention).
pub fn update_device_lines(vm: &mut Vm) -> u64 {
    let mut rose = 0;
    let uart = vm.uart.lock().interrupt_pending();
    if uart != vm.uart_line {
        vm.uart_line = uart;
        // The UART's INTID exists in every VM's vGIC (VGIC_SPIS covers it).
        let _ = vm.vgic.set_spi_level(PL011_INTID, uart);
        if let (true, Ok(Some(vcpu))) = (uart, vm.vgic.spi_target(PL011_INTID)) {
            if vcpu < 64 {
                rose |= 1 << vcpu;
            }
        }
    }
    rose | core::mem::take(&mut vm.lines_rose) | vm.devices.update_lines(vm.vgic)
}

/// Serves the devices with work no guest access started (frames the
/// switch delivered, queue rounds left over at their budget), and notes
/// the VMs their output went to in `vm.wake_vms`.
pub fn service_devices(vm: &mut Vm) {
    if vm.devices.has_work() {
        vm.wake_vms |= vm.devices.service(&mut vm.ram);
    }
}

/// `why` is formatted only when a line is printed: an abort loop costs
/// no allocation per exit.
fn inject_data_abort(vm: &mut Vm, vcpu: &mut Vcpu, info: &ExitInfo, why: &dyn fmt::Display) {
    let regs = &mut vcpu.regs.guest;
    let ipa = esr::fault_ipa(info.hpfar, info.far);
    vm.reports.report(
        &vm.name,
        ReportKind::DataAbort,
        format_args!(
            "vcpu {}: {why} at IPA {:#x} (pc {:#x}), injecting an external abort",
            vcpu.index, ipa, regs.pc
        ),
    );
    let el1_esr = esr::external_data_abort_esr(Esr(info.esr), regs.pstate);
    let offset = esr::sync_vector_offset(regs.pstate);
    arch::inject_sync_exception(regs, el1_esr, info.far, offset);
}

fn inject_undefined(vm: &mut Vm, vcpu: &mut Vcpu, what: &str, esr_value: u64) {
    let regs = &mut vcpu.regs.guest;
    vm.reports.report(
        &vm.name,
        ReportKind::Undefined,
        format_args!(
            "vcpu {}: {what} (ESR {esr_value:#x}, pc {:#x}), injecting UNDEFINED",
            vcpu.index, regs.pc
        ),
    );
    let offset = esr::sync_vector_offset(regs.pstate);
    arch::inject_sync_exception(regs, esr::undefined_esr(), 0, offset);
}

fn handle_mmio(vm: &mut Vm, vcpu: &mut Vcpu, info: &ExitInfo) -> ExitOutcome {
    let e = Esr(info.esr);
    let ipa = esr::fault_ipa(info.hpfar, info.far);
    let Some(abort) = e.data_abort() else {
        inject_data_abort(vm, vcpu, info, &"not a data abort");
        return ExitOutcome::Continue;
    };
    if abort.stage1_walk {
        inject_data_abort(vm, vcpu, info, &"stage-1 table walk outside RAM");
        return ExitOutcome::Continue;
    }
    if !abort.is_translation_or_access_fault() {
        // HPFAR may be UNKNOWN: nothing here can be emulated.
        let why = format_args!("stage-2 fault status {:#x}", abort.fault_status);
        inject_data_abort(vm, vcpu, info, &why);
        return ExitOutcome::Continue;
    }
    if abort.cache_maintenance {
        // DC CIVAC and the like on an address outside RAM: there is no
        // cache to maintain for an emulated device or a hole, so the
        // instruction is skipped, as KVM does.
        let regs = &mut vcpu.regs.guest;
        regs.pc = regs.pc.wrapping_add(e.instruction_len());
        return ExitOutcome::Continue;
    }
    let fixed = fixed_window(vm.power.len(), ipa);
    let in_table = vm.devices.lookup(ipa);
    if fixed.is_none() && in_table.is_none() {
        inject_data_abort(vm, vcpu, info, &"access to unmapped memory");
        return ExitOutcome::Continue;
    }
    let instruction = if abort.syndrome_valid {
        None
    } else {
        let pc = vcpu.regs.guest.pc;
        arch::guest_va_to_ipa(pc).and_then(|ipa| vm.ram.read_u32(ipa).ok())
    };
    let access = match mmio_decode::decode(info.esr, vcpu.regs.guest.pstate, instruction) {
        Ok(access) => access,
        Err(err) => {
            let why = format_args!("MMIO access not emulated ({err})");
            inject_data_abort(vm, vcpu, info, &why);
            return ExitOutcome::Continue;
        }
    };
    if access.writeback.is_some_and(|w| w.base == 31) {
        inject_data_abort(vm, vcpu, info, &"MMIO access with SP writeback");
        return ExitOutcome::Continue;
    }
    let regs = &mut vcpu.regs;
    let result = match fixed {
        Some((Fixed::Gicd, offset)) => perform(&mut vm.vgic.distributor(), regs, offset, &access),
        Some((Fixed::Gicr, offset)) => {
            perform(&mut vm.vgic.redistributors(), regs, offset, &access)
        }
        Some((Fixed::Uart, offset)) => perform(&mut *vm.uart.lock(), regs, offset, &access),
        None => match in_table {
            Some((index, offset)) => table_access(vm, regs, index, offset, &access),
            None => Err(MmioError::Unhandled { offset: 0 }),
        },
    };
    if result.is_ok() {
        if let Some(w) = access.writeback {
            let base = usize::from(w.base);
            let regs = &mut vcpu.regs;
            regs.set_x(base, regs.x(base).wrapping_add_signed(w.offset));
        }
    }
    match result {
        Ok(()) => {
            // A line this moved is brought up to date, and its vCPU told,
            // at the top of the run loop.
            let regs = &mut vcpu.regs.guest;
            regs.pc = regs.pc.wrapping_add(e.instruction_len());
        }
        Err(err) => {
            inject_data_abort(vm, vcpu, info, &err);
        }
    }
    ExitOutcome::Continue
}

/// An access to device `index` of the VM's table. The device's line is
/// driven after the access and again after the work a write started (a
/// virtio queue notification, served now within the device's budget): an
/// edge-triggered SPI must see the fall of an acknowledgement before the
/// rise of the interrupt the same exit's work raises, or that interrupt is
/// lost for good.
fn table_access(
    vm: &mut Vm,
    regs: &mut VcpuRegs,
    index: usize,
    offset: u64,
    access: &MmioAccess,
) -> Result<(), MmioError> {
    let Some(device) = vm.devices.device(index) else {
        return Err(MmioError::Unhandled { offset });
    };
    let result = perform(device, regs, offset, access);
    vm.lines_rose |= vm.devices.sync_line(index, vm.vgic);
    if result.is_ok() && access.direction == Direction::Write {
        if let Some(device) = vm.devices.device(index) {
            device.service(&mut vm.ram);
            vm.wake_vms |= device.take_wakeups();
        }
        vm.lines_rose |= vm.devices.sync_line(index, vm.vgic);
    }
    result
}

impl PsciTarget for Vm {
    fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize> {
        usize::try_from(mpidr)
            .ok()
            .filter(|i| *i < self.power.len())
    }
    fn is_on(&self, index: usize) -> bool {
        self.power.get(index).is_some_and(|v| v.on)
    }
    /// An A64 instruction in RAM: a misaligned entry would start the vCPU
    /// with a PC alignment fault before its vector table exists.
    fn valid_entry(&self, entry: u64) -> bool {
        entry.is_multiple_of(4)
            && self
                .config
                .ram_contains(IntermediatePhysAddr::new(entry), 4)
    }
}

fn handle_call(vm: &mut Vm, vcpu: &mut Vcpu, conduit: &str) -> ExitOutcome {
    let regs = &vcpu.regs;
    let x0 = regs.x(0);
    let args = [regs.x(1), regs.x(2), regs.x(3)];
    let action = match smccc::route(x0) {
        Service::Arch => PsciAction::Return(smccc::arch_call(x0, args[0])),
        Service::Psci => psci::handle(x0, args, vm),
        Service::Ffa => {
            let mut ffa_regs = core::array::from_fn(|i| vcpu.regs.x(i));
            ffa::call(vm, &mut ffa_regs);
            for (i, value) in ffa_regs.into_iter().enumerate() {
                vcpu.regs.set_x(i, value);
            }
            return ExitOutcome::Continue;
        }
        Service::VendorHyp | Service::Other => PsciAction::Return(smccc::NOT_SUPPORTED),
    };
    // SMCCC returns the signed status in x0 as a 64-bit value.
    let ret = |vcpu: &mut Vcpu, value: i64| vcpu.regs.set_x(0, value as u64);
    match action {
        PsciAction::Return(value) => {
            if value == smccc::NOT_SUPPORTED
                && !psci::is_known(x0)
                && !smccc::is_discovery_probe(x0)
            {
                vm.reports.report(
                    &vm.name,
                    ReportKind::UnknownCall,
                    format_args!(
                        "vcpu {}: unknown {conduit} function {x0:#x}, returning NOT_SUPPORTED",
                        vcpu.index
                    ),
                );
            }
            ret(vcpu, value);
            ExitOutcome::Continue
        }
        PsciAction::CpuOn {
            target,
            entry,
            context,
        } => {
            vm.power[target] = VcpuPower {
                on: true,
                boot: Some((entry, context)),
            };
            ret(vcpu, smccc::SUCCESS);
            ExitOutcome::CpuOn(target)
        }
        PsciAction::CpuOff => {
            vm.power[vcpu.index] = VcpuPower::default();
            if vm.power.iter().any(|v| v.on) {
                ExitOutcome::CpuOff
            } else {
                ExitOutcome::Stop(VmStop::PowerOff)
            }
        }
        PsciAction::SystemOff => ExitOutcome::Stop(VmStop::PowerOff),
        PsciAction::SystemReset => ExitOutcome::Stop(VmStop::Reset),
    }
}

/// A trapped ICC_SGI1R_EL1 write (the guest's IPIs): makes the SGI pending
/// on its targets and returns the other vCPUs it made one pending for, or
/// `None` if the exit is not such a write. It needs only the vGIC, so the
/// run loop handles it without the VM lock.
pub fn sgi_write(vgic: &Vgic, vcpu: &mut Vcpu, info: &ExitInfo) -> Option<u64> {
    let e = Esr(info.esr);
    if info.kind != ExitKind::Sync {
        return None;
    }
    let access = e
        .sysreg_access()
        .filter(|a| a.register == SysRegId::ICC_SGI1R_EL1 && !a.is_read)?;
    // A bad sender cannot happen (vcpu is ours); targets outside the VM
    // are ignored by the model.
    let targets = vgic
        .send_sgi(vcpu.index, vcpu.regs.x(access.rt))
        .unwrap_or(0);
    let regs = &mut vcpu.regs.guest;
    regs.pc = regs.pc.wrapping_add(e.instruction_len());
    // The sender picks up its own SGIs at its next entry.
    Some(targets & !(1 << (vcpu.index % 64)))
}

fn handle_sysreg(vm: &mut Vm, vcpu: &mut Vcpu, e: Esr) -> ExitOutcome {
    let Some(access) = e.sysreg_access() else {
        inject_undefined(vm, vcpu, "not a system register access", e.0);
        return ExitOutcome::Continue;
    };
    let register = access.register;
    if access.is_read && register.is_id_register() {
        let (crm, op2) = (register.crm, register.op2);
        let value = idregs::guest_view(crm, op2, arch::read_id_register(crm, op2));
        vcpu.regs.set_x(access.rt, value);
    } else if register == SysRegId::ACTLR_EL1 || register.is_debug() {
        // ACTLR_EL1 (HCR_EL2.TACR): the guest does not configure the core
        // other VMs run on. The debug registers (MDCR_EL2.TDA, TDOSA,
        // TDRA) are not switched between vCPUs. Both RAZ/WI.
        if access.is_read {
            vcpu.regs.set_x(access.rt, 0);
        }
    } else if !access.is_read && register.is_data_cache_set_way() {
        // HCR_EL2.TSW.
        arch::dc_clean_invalidate_set_way(vcpu.regs.x(access.rt));
    } else {
        // Everything else, implementation-defined registers (TIDCP)
        // included, is UNDEFINED, as under KVM.
        inject_undefined(vm, vcpu, "trapped system register access", e.0);
        return ExitOutcome::Continue;
    }
    let regs = &mut vcpu.regs.guest;
    regs.pc = regs.pc.wrapping_add(e.instruction_len());
    ExitOutcome::Continue
}

/// Handles a synchronous exit of `vcpu`.
pub fn handle_sync(vm: &mut Vm, vcpu: &mut Vcpu, info: &ExitInfo) -> ExitOutcome {
    let e = Esr(info.esr);
    match e.class() {
        ExceptionClass::Hvc64 | ExceptionClass::Smc64 => {
            if e.class() == ExceptionClass::Smc64 {
                // SMC traps before it executes: skip it, then answer.
                let regs = &mut vcpu.regs.guest;
                regs.pc = regs.pc.wrapping_add(4);
            }
            if e.call_immediate() != 0 {
                // SMCCC calls use immediate 0 only; the others are
                // reserved, and answered NOT_SUPPORTED (as under KVM).
                vcpu.regs.set_x(0, smccc::NOT_SUPPORTED as u64);
                return ExitOutcome::Continue;
            }
            let conduit = if e.class() == ExceptionClass::Hvc64 {
                "HVC"
            } else {
                "SMC"
            };
            handle_call(vm, vcpu, conduit)
        }
        ExceptionClass::DataAbortLower => handle_mmio(vm, vcpu, info),
        ExceptionClass::InstructionAbortLower => {
            let index = vcpu.index;
            let regs = &mut vcpu.regs.guest;
            vm.reports.report(
                &vm.name,
                ReportKind::InstructionAbort,
                format_args!(
                    "vcpu {index}: instruction fetch from unmapped IPA {:#x} (pc {:#x}), injecting an external abort",
                    esr::fault_ipa(info.hpfar, info.far),
                    regs.pc
                ),
            );
            let el1_esr = esr::external_instruction_abort_esr(regs.pstate);
            let offset = esr::sync_vector_offset(regs.pstate);
            arch::inject_sync_exception(regs, el1_esr, info.far, offset);
            ExitOutcome::Continue
        }
        ExceptionClass::Wfx => {
            let regs = &mut vcpu.regs.guest;
            regs.pc = regs.pc.wrapping_add(e.instruction_len());
            ExitOutcome::Continue
        }
        ExceptionClass::SysReg => match sgi_write(vm.vgic, vcpu, info) {
            Some(targets) => ExitOutcome::Interrupt(targets),
            None => handle_sysreg(vm, vcpu, e),
        },
        ExceptionClass::Other(_) => {
            inject_undefined(vm, vcpu, "unhandled exception class", e.0);
            ExitOutcome::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_windows_and_offsets() {
        let at = |ipa: u64| fixed_window(2, IntermediatePhysAddr::new(ipa));
        assert_eq!(at(0x0800_0004), Some((Fixed::Gicd, 4)));
        assert_eq!(at(0x080a_0000 + 0x2_0008), Some((Fixed::Gicr, 0x2_0008)));
        // Two vCPUs: the third redistributor frame is not there.
        assert_eq!(at(0x080a_0000 + 0x4_0000), None);
        assert_eq!(at(0x0900_0fe0), Some((Fixed::Uart, 0xfe0)));
        // The RTC and the virtio slots are in the VM's device table.
        assert_eq!(at(0x0901_0000), None);
        assert_eq!(at(0x0a00_0208), None);
        assert_eq!(at(u64::MAX), None);
    }

    use crate::arch::aarch64::context::SPSR_EL1H_MASKED;
    use crate::devices::AccessWidth;
    use crate::smccc::fid;

    const EC_HVC64: u64 = 0x16 << 26;
    const EC_SMC64: u64 = 0x17 << 26;
    const EC_SYS64: u64 = 0x18 << 26;
    /// A data abort from EL1 with DFSC = translation fault, level 3.
    const EC_DABT_LOW: u64 = (0x24 << 26) | 0x07;
    const IL: u64 = 1 << 25;

    fn exit(esr: u64, ipa: u64) -> ExitInfo {
        ExitInfo {
            kind: ExitKind::Sync,
            esr,
            far: ipa,
            hpfar: (ipa >> 12) << 4,
        }
    }

    fn vcpu(index: usize) -> Vcpu {
        let mut v = Vcpu::boot(index, 0x4008_0000, 0);
        v.regs.guest.pstate = SPSR_EL1H_MASKED;
        v
    }

    fn call(vm: &mut Vm, v: &mut Vcpu, esr: u64, x: [u64; 4]) -> ExitOutcome {
        for (i, value) in x.iter().enumerate() {
            v.regs.set_x(i, *value);
        }
        handle_sync(vm, v, &exit(esr | IL, 0))
    }

    #[test]
    fn firmware_calls() {
        let mut vm = Vm::for_tests(2);
        let mut v = vcpu(0);
        assert_eq!(
            call(&mut vm, &mut v, EC_HVC64, [0x8400_0000, 0, 0, 0]),
            ExitOutcome::Continue
        );
        assert_eq!(v.regs.x(0), 0x1_0001);
        call(&mut vm, &mut v, EC_HVC64, [0xc200_0bad, 0, 0, 0]);
        assert_eq!(v.regs.x(0), u64::MAX, "NOT_SUPPORTED is -1");
        // HVC #0x4242 PSCI_VERSION: only immediate 0 is an SMCCC call.
        call(&mut vm, &mut v, EC_HVC64 | 0x4242, [0x8400_0000, 0, 0, 0]);
        assert_eq!(v.regs.x(0), u64::MAX);
        // SMC is trapped before it executes: the PC moves past it.
        let pc = v.regs.guest.pc;
        call(&mut vm, &mut v, EC_SMC64, [0x8000_0000, 0, 0, 0]);
        assert_eq!(v.regs.guest.pc, pc + 4);
        assert_eq!(v.regs.x(0), 0x1_0001);
    }

    /// A guest calling an unknown function in a loop, or aborting in a
    /// loop, gets its answer each time but only a few console lines.
    #[test]
    fn misbehaviour_in_a_loop_prints_a_few_lines() {
        crate::console::init(crate::addr::PhysAddr::new(0x0900_0000));
        let _ = arch::take_uart_output();
        let mut vm = Vm::for_tests(1);
        let mut v = vcpu(0);
        let ldr_w2 = EC_DABT_LOW | IL | (1 << 24) | (2 << 22) | (2 << 16);
        for _ in 0..1000 {
            call(&mut vm, &mut v, EC_HVC64, [0xc200_0bad, 0, 0, 0]);
            assert_eq!(v.regs.x(0), u64::MAX, "NOT_SUPPORTED every time");
            handle_sync(&mut vm, &mut v, &exit(ldr_w2, 0x0c00_0000));
            assert_eq!(v.regs.guest.pc, 0x200, "an external abort every time");
        }
        let output = String::from_utf8(arch::take_uart_output()).unwrap();
        let lines: Vec<&str> = output.lines().collect();
        let full = |what: &str| lines.iter().filter(|l| l.contains(what)).count();
        assert_eq!(full("unknown HVC function 0xc2000bad"), 4, "{output}");
        assert_eq!(full("injecting an external abort"), 4, "{output}");
        assert!(lines.contains(&"hypervisor: vm0: 512 unknown HVC/SMC calls so far"));
        // Per kind: 4 lines, the note, summaries at 8 .. 512.
        assert_eq!(lines.len(), 2 * (4 + 1 + 7), "{output}");
        assert_eq!(vm.reports.total(ReportKind::UnknownCall), 1000);
    }

    #[test]
    fn ffa_calls_reach_the_proxy_with_eight_registers() {
        use crate::mm::frames::FrameAllocator;
        use crate::platform::PsciConduit;
        let mut frames = FrameAllocator::new(&[], &[]).unwrap();
        // PSCI over HVC: the stub SPMC, nothing probed.
        ffa::init(PsciConduit::Hvc, 1, &mut frames);
        let mut vm = Vm::for_tests(1);
        let mut v = vcpu(0);
        call(
            &mut vm,
            &mut v,
            EC_SMC64,
            [u64::from(fid::FFA_VERSION), 0x1_0001, 0, 0],
        );
        assert_eq!(v.regs.x(0), 0x1_0001);
        call(
            &mut vm,
            &mut v,
            EC_SMC64,
            [u64::from(fid::FFA_ID_GET), 0, 0, 0],
        );
        assert_eq!(
            (v.regs.x(0), v.regs.x(2)),
            (u64::from(fid::FFA_SUCCESS_32), 1)
        );
        // An echo through the stub's first partition: x3..x7 come back.
        for (i, value) in [0, 0, 0, 0, 0x33, 0x44, 0x55, 0x66].into_iter().enumerate() {
            v.regs.set_x(i, value);
        }
        let w1 = (1 << 16) | u64::from(ffa::spmc::ECHO_SP);
        call(
            &mut vm,
            &mut v,
            EC_SMC64,
            [u64::from(fid::FFA_MSG_SEND_DIRECT_REQ_64), w1, 0, 0x22],
        );
        let answer: [u64; 8] = core::array::from_fn(|i| v.regs.x(i));
        assert_eq!(answer[0], u64::from(fid::FFA_MSG_SEND_DIRECT_RESP_64));
        assert_eq!(&answer[3..], &[0x22, 0x33, 0x44, 0x55, 0x66]);
    }

    #[test]
    fn cpu_on_off_and_system_off() {
        let mut vm = Vm::for_tests(2);
        let mut v = vcpu(0);
        assert_eq!(
            call(
                &mut vm,
                &mut v,
                EC_HVC64,
                [u64::from(fid::PSCI_CPU_ON_64), 1, 0x4010_0000, 7]
            ),
            ExitOutcome::CpuOn(1)
        );
        assert_eq!(vm.power[1].boot, Some((0x4010_0000, 7)));
        let mut v1 = vcpu(1);
        call(
            &mut vm,
            &mut v1,
            EC_HVC64,
            [u64::from(fid::PSCI_CPU_OFF), 0, 0, 0],
        );
        // A misaligned entry point, and one outside RAM, start nothing.
        for entry in [0x4010_0002, 0x0900_0000] {
            call(
                &mut vm,
                &mut v,
                EC_HVC64,
                [u64::from(fid::PSCI_CPU_ON_64), 1, entry, 7],
            );
            assert_eq!(v.regs.x(0), psci::INVALID_ADDRESS as u64, "{entry:#x}");
            assert!(!vm.power[1].on);
        }
        call(
            &mut vm,
            &mut v,
            EC_HVC64,
            [u64::from(fid::PSCI_CPU_ON_64), 1, 0x4010_0000, 7],
        );
        call(
            &mut vm,
            &mut v,
            EC_HVC64,
            [u64::from(fid::PSCI_AFFINITY_INFO_64), 1, 0, 0],
        );
        assert_eq!(v.regs.x(0), 0, "ON");
        call(
            &mut vm,
            &mut v,
            EC_HVC64,
            [u64::from(fid::PSCI_CPU_ON_64), 1, 0x4010_0000, 7],
        );
        assert_eq!(v.regs.x(0), psci::ALREADY_ON as u64);
        let mut v1 = vcpu(1);
        assert_eq!(
            call(
                &mut vm,
                &mut v1,
                EC_HVC64,
                [u64::from(fid::PSCI_CPU_OFF), 0, 0, 0]
            ),
            ExitOutcome::CpuOff
        );
        assert!(!vm.power[1].on);
        assert_eq!(
            call(
                &mut vm,
                &mut v,
                EC_HVC64,
                [u64::from(fid::PSCI_SYSTEM_OFF), 0, 0, 0]
            ),
            ExitOutcome::Stop(VmStop::PowerOff)
        );
    }

    #[test]
    fn mmio_reads_reach_the_device_and_unmapped_ipas_abort() {
        let mut vm = Vm::for_tests(1);
        let mut v = vcpu(0);
        let pc = v.regs.guest.pc;
        // LDR W2, [Xn] at the PL011's PeriphID0: ISV, SAS = word, SRT = 2.
        let ldr_w2 = EC_DABT_LOW | IL | (1 << 24) | (2 << 22) | (2 << 16);
        assert_eq!(
            handle_sync(&mut vm, &mut v, &exit(ldr_w2, 0x0900_0fe0)),
            ExitOutcome::Continue
        );
        assert_eq!(v.regs.x(2), 0x11);
        assert_eq!(v.regs.guest.pc, pc + 4);
        // The same access where nothing is mapped: an external abort at
        // the EL1h synchronous vector.
        assert_eq!(
            handle_sync(&mut vm, &mut v, &exit(ldr_w2, 0x0c00_0000)),
            ExitOutcome::Continue
        );
        assert_eq!(v.regs.guest.pc, 0x200);
        assert_eq!(v.regs.guest.pstate, SPSR_EL1H_MASKED);
    }

    /// Only a translation or access flag fault makes HPFAR the faulting
    /// IPA: any other fault status is answered with an abort, never an
    /// access to whatever device HPFAR happens to name.
    #[test]
    fn other_fault_statuses_are_not_emulated() {
        let mut vm = Vm::for_tests(1);
        let mut v = vcpu(0);
        // LDR W2 at the PL011's PeriphID0, but DFSC = synchronous external
        // abort (0x10), and then TLB conflict (0x30).
        let ldr_w2 = (EC_DABT_LOW & !0x3f) | IL | (1 << 24) | (2 << 22) | (2 << 16);
        for fsc in [0x10, 0x30] {
            v.regs.set_x(2, 0x77);
            v.regs.guest.pc = 0x4008_0000;
            let info = exit(ldr_w2 | fsc, 0x0900_0fe0);
            assert_eq!(
                fast_path(vm.uart, vm.vgic, 1, &mut v, &info),
                FastExit::NotMine
            );
            handle_sync(&mut vm, &mut v, &info);
            assert_eq!(v.regs.x(2), 0x77, "DFSC {fsc:#x}: no device read");
            assert_eq!(v.regs.guest.pc, 0x200, "DFSC {fsc:#x}: an external abort");
        }
    }

    /// DC CIVAC (CM = 1, WnR = 1, ISV = 0) on an emulated device or an
    /// unmapped IPA is skipped, as KVM does: no abort.
    #[test]
    fn cache_maintenance_outside_ram_is_skipped() {
        let mut vm = Vm::for_tests(1);
        let mut v = vcpu(0);
        let dc_civac = EC_DABT_LOW | IL | (1 << 8) | (1 << 6);
        for ipa in [0x0900_0000, 0x0c00_0000] {
            let pc = v.regs.guest.pc;
            handle_sync(&mut vm, &mut v, &exit(dc_civac, ipa));
            assert_eq!(v.regs.guest.pc, pc + 4, "at {ipa:#x}");
        }
    }

    #[test]
    fn id_registers_are_emulated_and_other_sysregs_undefined() {
        let mut vm = Vm::for_tests(1);
        let mut v = vcpu(0);
        let pc = v.regs.guest.pc;
        v.regs.set_x(5, 0x55);
        // MRS X5, ID_AA64PFR0_EL1: Op0 3, Op1 0, CRn 0, CRm 4, Op2 0, read.
        let mrs = EC_SYS64 | IL | (3 << 20) | (4 << 1) | (5 << 5) | 1;
        handle_sync(&mut vm, &mut v, &exit(mrs, 0));
        assert_eq!(v.regs.x(5), 0, "the host backend reads 0");
        assert_eq!(v.regs.guest.pc, pc + 4);
        // MSR of some other register: UNDEFINED.
        let msr = EC_SYS64 | IL | (3 << 20) | (1 << 14) | (15 << 10);
        handle_sync(&mut vm, &mut v, &exit(msr, 0));
        assert_eq!(v.regs.guest.pc, 0x200);
    }

    /// The traps that keep a guest off shared core state: ACTLR_EL1 reads
    /// as zero and ignores writes, set/way cache operations are done for
    /// the guest, implementation-defined registers are UNDEFINED.
    #[test]
    fn actlr_set_way_and_implementation_defined_registers() {
        let mut vm = Vm::for_tests(1);
        let mut v = vcpu(0);
        let pc = v.regs.guest.pc;
        // MRS X4, ACTLR_EL1 then MSR ACTLR_EL1, X4.
        let actlr = EC_SYS64 | IL | (3 << 20) | (1 << 17) | (1 << 10) | (4 << 5);
        v.regs.set_x(4, 0x55);
        handle_sync(&mut vm, &mut v, &exit(actlr | 1, 0));
        assert_eq!((v.regs.x(4), v.regs.guest.pc), (0, pc + 4));
        handle_sync(&mut vm, &mut v, &exit(actlr, 0));
        assert_eq!(v.regs.guest.pc, pc + 8);
        // DC ISW, DC CSW, DC CISW X1: Op0 1, Op1 0, CRn 7, Op2 2.
        for crm in [6, 10, 14] {
            let dc = EC_SYS64 | IL | (1 << 20) | (2 << 17) | (7 << 10) | (1 << 5) | (crm << 1);
            let pc = v.regs.guest.pc;
            handle_sync(&mut vm, &mut v, &exit(dc, 0));
            assert_eq!(v.regs.guest.pc, pc + 4, "CRm {crm}");
        }
        // MRS X0, S3_1_C15_C2_0 (an implementation-defined register).
        let imp_def = EC_SYS64 | IL | (3 << 20) | (1 << 14) | (15 << 10) | (2 << 1) | 1;
        handle_sync(&mut vm, &mut v, &exit(imp_def, 0));
        assert_eq!(v.regs.guest.pc, 0x200);
    }

    /// Debug registers (op0 2) read as zero and ignore writes: MRS X3,
    /// MDSCR_EL1 and MSR DBGBVR0_EL1, X3. PMU registers are UNDEFINED:
    /// MRS X3, PMCR_EL0.
    #[test]
    fn debug_registers_raz_wi_and_pmu_undefined() {
        let mut vm = Vm::for_tests(1);
        let mut v = vcpu(0);
        let pc = v.regs.guest.pc;
        v.regs.set_x(3, 0x55);
        let mdscr = EC_SYS64 | IL | (2 << 20) | (2 << 17) | (2 << 1) | (3 << 5) | 1;
        handle_sync(&mut vm, &mut v, &exit(mdscr, 0));
        assert_eq!((v.regs.x(3), v.regs.guest.pc), (0, pc + 4));
        let dbgbvr0 = EC_SYS64 | IL | (2 << 20) | (4 << 17) | (3 << 5);
        v.regs.set_x(3, 0x4008_0000);
        handle_sync(&mut vm, &mut v, &exit(dbgbvr0, 0));
        assert_eq!((v.regs.x(3), v.regs.guest.pc), (0x4008_0000, pc + 8));
        let pmcr = EC_SYS64 | IL | (3 << 20) | (3 << 14) | (9 << 10) | (12 << 1) | (3 << 5) | 1;
        handle_sync(&mut vm, &mut v, &exit(pmcr, 0));
        assert_eq!(v.regs.guest.pc, 0x200);
    }

    /// STRH W1, [Xn]: ISV, SAS = halfword, SRT = 1, WnR.
    const STRH_W1: u64 = EC_DABT_LOW | IL | (1 << 24) | (1 << 22) | (1 << 16) | (1 << 6);
    /// LDRH W2, [Xn]: ISV, SAS = halfword, SRT = 2.
    const LDRH_W2: u64 = EC_DABT_LOW | IL | (1 << 24) | (1 << 22) | (2 << 16);

    #[test]
    fn fast_path_takes_described_uart_accesses_only() {
        let vm = Vm::for_tests(1);
        let mut v = vcpu(0);
        let pc = v.regs.guest.pc;
        // The flag register, as Linux polls it before each character.
        assert_eq!(
            fast_path(vm.uart, vm.vgic, 1, &mut v, &exit(LDRH_W2, 0x0900_0018)),
            FastExit::UartDone { line_moved: false }
        );
        assert_eq!(v.regs.guest.pc, pc + 4);
        v.regs.set_x(1, u64::from(b'x'));
        assert_eq!(
            fast_path(vm.uart, vm.vgic, 1, &mut v, &exit(STRH_W1, 0x0900_0000)),
            FastExit::UartDone { line_moved: false }
        );
        assert_eq!(v.regs.guest.pc, pc + 8);
        let not_mine = [
            // A distributor write may pend or route interrupts.
            exit(STRH_W1, 0x0800_0000),
            // No ISV: the instruction has to be decoded from guest memory.
            exit(LDRH_W2 & !(1 << 24), 0x0900_0018),
            exit(EC_SYS64 | IL, 0x0900_0018),
            // PeriphID at a halfword offset the PL011 refuses.
            exit(LDRH_W2, 0x0900_0fe2),
        ];
        for info in not_mine {
            assert_eq!(
                fast_path(vm.uart, vm.vgic, 1, &mut v, &info),
                FastExit::NotMine
            );
        }
        assert_eq!(v.regs.guest.pc, pc + 8, "untouched when not handled");
        assert_eq!(v.exits.uart, 2, "the handled exits are counted, no other");
        assert_eq!(v.exits.total(), 2);
    }

    /// LDR W2, [Xn]: ISV, SAS = word, SRT = 2.
    const LDR_W2: u64 = EC_DABT_LOW | IL | (1 << 24) | (2 << 22) | (2 << 16);

    #[test]
    fn vgic_reads_take_the_fast_path_with_the_slow_paths_answer() {
        let mut vm = Vm::for_tests(2);
        let (mut fast, mut slow) = (vcpu(0), vcpu(0));
        let pc = fast.regs.guest.pc;
        // GICD_TYPER, then GICR_TYPER of the second redistributor.
        for ipa in [0x0800_0004, 0x080a_0000 + 0x2_0008] {
            fast.regs.set_x(2, 0x77);
            slow.regs.set_x(2, 0x77);
            let info = exit(LDR_W2, ipa);
            assert_eq!(
                fast_path(vm.uart, vm.vgic, 2, &mut fast, &info),
                FastExit::Done
            );
            handle_sync(&mut vm, &mut slow, &info);
            assert_eq!(fast.regs.x(2), slow.regs.x(2), "IPA {ipa:#x}");
            assert_ne!(fast.regs.x(2), 0x77, "IPA {ipa:#x}: read");
        }
        assert_eq!(fast.regs.guest.pc, pc + 8);
        assert_eq!(fast.regs.guest.pc, slow.regs.guest.pc);
        assert_eq!(fast.exits.gic, 2);
        // Past the last redistributor of two vCPUs: the slow path's.
        let beyond = exit(LDR_W2, 0x080a_0000 + 0x4_0008);
        assert_eq!(
            fast_path(vm.uart, vm.vgic, 2, &mut fast, &beyond),
            FastExit::NotMine
        );
    }

    #[test]
    fn calls_with_fixed_answers_need_nothing_of_the_vm() {
        let mut vm = Vm::for_tests(2);
        let mut v = vcpu(0);
        let pc = v.regs.guest.pc;
        let hvc = exit(EC_HVC64 | IL, 0);
        v.regs.set_x(0, u64::from(fid::PSCI_VERSION));
        assert_eq!(fast_path(vm.uart, vm.vgic, 2, &mut v, &hvc), FastExit::Done);
        let version = v.regs.x(0);
        assert_eq!(v.regs.guest.pc, pc, "HVC returns past itself already");
        assert_eq!(v.exits.call, 1);
        // The slow path gives the same answer.
        let mut slow = vcpu(0);
        slow.regs.set_x(0, u64::from(fid::PSCI_VERSION));
        handle_sync(&mut vm, &mut slow, &hvc);
        assert_eq!(slow.regs.x(0), version);
        // SMCCC_VERSION over SMC: skipped past the SMC.
        v.regs.set_x(0, u64::from(fid::SMCCC_VERSION));
        assert_eq!(
            fast_path(vm.uart, vm.vgic, 2, &mut v, &exit(EC_SMC64 | IL, 0)),
            FastExit::Done
        );
        assert_eq!(v.regs.guest.pc, pc + 4);
        assert_eq!(v.regs.x(0), 0x1_0001, "SMCCC 1.1");
        // HVC #1: not an SMCCC call, the slow path's.
        v.regs.set_x(0, u64::from(fid::PSCI_VERSION));
        assert_eq!(
            fast_path(vm.uart, vm.vgic, 2, &mut v, &exit(EC_HVC64 | IL | 1, 0)),
            FastExit::NotMine
        );
        // CPU_ON needs the VM; an unknown function is reported by the slow
        // path.
        for x0 in [0xc400_0003, 0x8800_0bad] {
            v.regs.set_x(0, x0);
            assert_eq!(
                fast_path(vm.uart, vm.vgic, 2, &mut v, &hvc),
                FastExit::NotMine
            );
            assert_eq!(v.regs.x(0), x0, "untouched");
        }
    }

    #[test]
    fn an_enabled_uart_interrupt_moving_is_reported() {
        let vm = Vm::for_tests(1);
        let mut v = vcpu(0);
        // IMSC = TXIM, as the tty layer sets it to send: nothing yet.
        v.regs.set_x(1, 1 << 5);
        assert_eq!(
            fast_path(vm.uart, vm.vgic, 1, &mut v, &exit(STRH_W1, 0x0900_0038)),
            FastExit::UartDone { line_moved: false }
        );
        // A byte leaves at once, the transmit interrupt latches.
        v.regs.set_x(1, u64::from(b'x'));
        assert_eq!(
            fast_path(vm.uart, vm.vgic, 1, &mut v, &exit(STRH_W1, 0x0900_0000)),
            FastExit::UartDone { line_moved: true }
        );
        assert!(vm.uart.lock().interrupt_pending());
    }

    #[test]
    fn sgi_writes_need_only_the_vgic() {
        let vm = Vm::for_tests(3);
        let gicd_ctlr_grp1 = 0b10;
        let mut gicd = vm.vgic.distributor();
        gicd.write(0, AccessWidth::Word, gicd_ctlr_grp1).unwrap();
        let mut gicr = vm.vgic.redistributors();
        for vcpu in 0..3u64 {
            // IGROUPR0: SGIs are Group 1.
            let igroupr0 = vcpu * 0x2_0000 + 0x1_0080;
            gicr.write(igroupr0, AccessWidth::Word, 0xffff).unwrap();
        }
        let mut v = vcpu(0);
        let pc = v.regs.guest.pc;
        // MSR ICC_SGI1R_EL1, X3 (op0 3, op1 0, CRn 12, CRm 11, op2 5)
        // with SGI 5 to the list {0, 2}.
        let sgi1r = (3 << 20) | (5 << 17) | (12 << 10) | (11 << 1);
        let msr = EC_SYS64 | IL | sgi1r | (3 << 5);
        v.regs.set_x(3, (5 << 24) | 0b101);
        assert_eq!(
            sgi_write(vm.vgic, &mut v, &exit(msr, 0)),
            Some(0b100),
            "the sender's own SGI is not its target to tell"
        );
        assert_eq!(v.regs.guest.pc, pc + 4);
        assert!(vm.vgic.irq(2, 5).unwrap().pending_latch);
        assert!(vm.vgic.irq(0, 5).unwrap().pending_latch);
        assert!(!vm.vgic.irq(1, 5).unwrap().pending_latch);
        // A read of it is not a write.
        assert_eq!(sgi_write(vm.vgic, &mut v, &exit(msr | 1, 0)), None);
        assert_eq!(v.regs.guest.pc, pc + 4);
    }
}
