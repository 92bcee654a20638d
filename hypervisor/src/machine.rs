//! The running machine: which physical CPU serves which VM's vCPUs (a CPU
//! serves one VM; several vCPUs on one CPU are time-sliced by `vm::run`),
//! starting the secondary CPUs, and each CPU's loop. The CPU running a VM's vCPU 0 owns that VM's life cycle:
//! it waits for the others to leave after a stop, reloads the VM on reset,
//! and powers the machine off after the last VM.
//!
//! Lock order: a VM's lock, then the FF-A proxy's, then the console lock,
//! then the heap lock; no CPU holds two VM locks.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::{Mutex, Once};

use crate::addr::PhysAddr;
use crate::arch::{self, HostGic};
use crate::boot::files::BootFiles;
use crate::boot::manifest::{ManifestError, VmConfig};
use crate::ffa;
use crate::fixed_vec::FixedVec;
use crate::layout::{HYP_TIMER_INTID, MAINTENANCE_INTID, PTIMER_INTID, VTIMER_INTID};
use crate::platform::{GicV3Info, PlatformInfo, MAX_CPUS};
use crate::power;
use crate::println;
use crate::smccc::fid::PSCI_CPU_ON_64;
use crate::vm::irq::{HostIrqs, INTERRUPT_SGI, KICK_SGI};
use crate::vm::run::{run_cpu, wait_all_out, wait_restart};
use crate::vm::{Vm, VmStop};

/// Which VM each physical CPU serves, if any.
pub type Assignment = FixedVec<Option<usize>, MAX_CPUS>;

/// Places every vCPU on a physical CPU: the manifest's `physical-cpus`
/// where given (a CPU may appear more than once: those vCPUs share it),
/// else spread round robin over the VM's share of the free CPUs (as many as
/// it has vCPUs, or all that are left). A CPU never serves two VMs. Returns
/// each VM's vCPU → CPU list and the per-CPU assignment.
pub fn assign(
    vms: &[VmConfig],
    cpus: usize,
) -> Result<(Vec<Vec<usize>>, Assignment), ManifestError> {
    let mut by_cpu: Assignment = FixedVec::new();
    for _ in 0..cpus.min(MAX_CPUS) {
        // Capacity is MAX_CPUS.
        let _ = by_cpu.push(None);
    }
    let mut per_vm = Vec::new();
    for (k, vm) in vms.iter().enumerate() {
        let vcpus = usize::try_from(vm.vcpus).unwrap_or(usize::MAX);
        let field = |name: &str| format!("{}/{}", vm.node, name);
        let wanted: Vec<usize> = if vm.physical_cpus.is_empty() {
            let free: Vec<usize> = by_cpu
                .iter()
                .enumerate()
                .filter(|(_, a)| a.is_none())
                .map(|(c, _)| c)
                .take(vcpus)
                .collect();
            if free.is_empty() {
                return Err(ManifestError::new(
                    field("vcpus"),
                    format!("no free physical CPU left of {cpus}"),
                ));
            }
            (0..vcpus).map(|v| free[v % free.len()]).collect()
        } else {
            if vm.physical_cpus.len() != vcpus {
                return Err(ManifestError::new(
                    field("physical-cpus"),
                    format!("lists {} CPUs for {vcpus} vCPUs", vm.physical_cpus.len()),
                ));
            }
            vm.physical_cpus
                .iter()
                .map(|c| usize::try_from(*c).unwrap_or(usize::MAX))
                .collect()
        };
        for cpu in &wanted {
            let slot = by_cpu.as_mut_slice().get_mut(*cpu).ok_or_else(|| {
                ManifestError::new(
                    field("physical-cpus"),
                    format!("CPU {cpu} does not exist (the machine has {cpus})"),
                )
            })?;
            match *slot {
                Some(other) if other != k => {
                    return Err(ManifestError::new(
                        field("physical-cpus"),
                        format!("CPU {cpu} already runs vCPUs of {}", vms[other].name),
                    ))
                }
                _ => *slot = Some(k),
            }
        }
        per_vm.push(wanted);
    }
    Ok((per_vm, by_cpu))
}

/// Everything every CPU needs once the VMs exist.
pub struct Machine {
    /// EL2 stage-1 root, for secondary CPUs' MMUs.
    pub root: PhysAddr,
    /// The host GIC.
    pub gic: GicV3Info,
    /// Host interrupt sources and CPU MPIDRs.
    pub host: HostIrqs,
    /// The boot bundle (for resets).
    pub bundle: BootFiles<'static>,
    /// The VMs.
    pub vms: Vec<&'static Mutex<Vm>>,
    /// Which VM each CPU serves.
    pub assignment: Assignment,
    /// VMs not powered off yet.
    pub running: AtomicUsize,
}

// A global because CPUs started by PSCI CPU_ON arrive with nothing but their
// index; written once by the primary before it starts any.
static MACHINE: Once<Machine> = Once::new();

/// Publishes the machine, starts the CPUs that have a vCPU, and runs CPU 0's
/// share (or idles).
pub fn run(machine: Machine, platform: &PlatformInfo<'_>) -> ! {
    let machine = MACHINE.call_once(|| machine);
    let entry = arch::secondary_entry_point().as_u64();
    for (cpu, mpidr) in platform.cpu_mpidrs.iter().enumerate().skip(1) {
        if !matches!(machine.assignment.as_slice().get(cpu), Some(Some(_))) {
            continue;
        }
        let context = u64::try_from(cpu).unwrap_or(0);
        let status = arch::psci_call(platform.psci, PSCI_CPU_ON_64, [*mpidr, entry, context]);
        if status != 0 {
            println!(
                "hypervisor: CPU {cpu} (MPIDR {mpidr:#x}) did not start: PSCI status {}",
                status.cast_signed()
            );
        }
    }
    cpu_loop(machine, 0)
}

/// Sets up this CPU's GIC interface for running guests.
pub fn init_cpu_gic(gic: &GicV3Info, primary: bool) -> Option<HostGic> {
    arch::init_virtualization();
    let host_gic = HostGic::init(gic.dist, gic.redist, primary)?;
    host_gic.enable(VTIMER_INTID);
    host_gic.enable(PTIMER_INTID);
    host_gic.enable(MAINTENANCE_INTID);
    host_gic.enable(KICK_SGI);
    host_gic.enable(INTERRUPT_SGI);
    host_gic.enable(HYP_TIMER_INTID);
    Some(host_gic)
}

/// Entered on each secondary CPU from the boot assembly, MMU off.
pub fn boot_secondary(cpu: usize) -> ! {
    let Some(machine) = MACHINE.get() else {
        arch::halt()
    };
    arch::enable_mmu(machine.root);
    if init_cpu_gic(&machine.gic, false).is_none() {
        println!("hypervisor: CPU {cpu}: no GICv3 redistributor, stopping it");
        arch::halt()
    }
    cpu_loop(machine, cpu)
}

fn cpu_loop(machine: &Machine, cpu: usize) -> ! {
    let Some(Some(k)) = machine.assignment.as_slice().get(cpu).copied() else {
        loop {
            arch::wait_for_event();
        }
    };
    let vm = machine.vms[k];
    let (name, indices): (String, Vec<usize>) = {
        let v = vm.lock();
        let mine = (0..v.pcpus.len()).filter(|i| v.pcpus[*i] == cpu).collect();
        (v.name.clone(), mine)
    };
    let owner = indices.contains(&0);
    loop {
        let epoch = vm.lock().epoch;
        let stop = run_cpu(vm, &indices, &machine.host);
        if owner {
            owner_stop(machine, vm, &name, stop);
        } else {
            wait_restart(vm, epoch);
        }
    }
}

/// vCPU 0's CPU after its VM stopped.
fn owner_stop(machine: &Machine, vm: &Mutex<Vm>, name: &str, stop: VmStop) {
    wait_all_out(vm);
    // Every vCPU folded its exits in as it stopped; a reset starts afresh.
    let (exits, reports): (_, Vec<_>) = {
        let mut v = vm.lock();
        (core::mem::take(&mut v.exits), v.devices.reports().collect())
    };
    println!("hypervisor: {name}: {exits}");
    for (base, report) in reports {
        println!("hypervisor: {name}: device {base:#x}: {report}");
    }
    match stop {
        VmStop::PowerOff => {
            println!("hypervisor: {name}: powered off");
            if machine.running.fetch_sub(1, Ordering::AcqRel) == 1 {
                println!("hypervisor: all VMs stopped, powering off");
                power::system_off()
            }
            let epoch = vm.lock().epoch;
            wait_restart(vm, epoch);
        }
        VmStop::Reset => {
            println!("hypervisor: {name}: reset");
            let reset = {
                let mut vm = vm.lock();
                // The restarted guest starts without FF-A buffers or shares.
                ffa::vm_reset(vm.index);
                vm.reset(&machine.bundle)
            };
            if let Err(e) = reset {
                println!("hypervisor: manifest: {e}");
                power::system_off()
            }
            arch::send_event();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::manifest::tests::{build, default_vm, Value};
    use crate::boot::manifest::{parse, COMPATIBLE};

    fn configs(specs: Vec<crate::boot::manifest::tests::VmSpec>) -> Vec<VmConfig> {
        parse(&build(COMPATIBLE, &specs)).unwrap().vms
    }

    #[test]
    fn default_placement_fills_free_cpus_in_order() {
        let vms = configs(vec![
            default_vm("vm0")
                .set("vcpus", Value::U32(2))
                .without("physical-cpus"),
            default_vm("vm1").without("physical-cpus"),
        ]);
        let (per_vm, by_cpu) = assign(&vms, 4).unwrap();
        assert_eq!(per_vm, [vec![0, 1], vec![2]]);
        assert_eq!(by_cpu.as_slice(), &[Some(0), Some(0), Some(1), None]);
    }

    #[test]
    fn explicit_placement_and_conflicts() {
        let vms = configs(vec![
            default_vm("vm0").set("physical-cpus", Value::Cells(vec![1])),
            default_vm("vm1").without("physical-cpus"),
        ]);
        let (per_vm, _) = assign(&vms, 2).unwrap();
        assert_eq!(per_vm, [vec![1], vec![0]]);

        let clash = configs(vec![
            default_vm("vm0").set("physical-cpus", Value::Cells(vec![1])),
            default_vm("vm1").set("physical-cpus", Value::Cells(vec![1])),
        ]);
        assert_eq!(
            assign(&clash, 2).unwrap_err().to_string(),
            "vms/vm@1/physical-cpus: CPU 1 already runs vCPUs of vm0"
        );
        // More vCPUs than CPUs: they share them, round robin.
        let shared = configs(vec![default_vm("vm0")
            .set("vcpus", Value::U32(4))
            .without("physical-cpus")]);
        assert_eq!(assign(&shared, 2).unwrap().0, [vec![0, 1, 0, 1]]);
        let no_cpu_left = configs(vec![
            default_vm("vm0")
                .set("vcpus", Value::U32(2))
                .without("physical-cpus"),
            default_vm("vm1").without("physical-cpus"),
        ]);
        assert_eq!(
            assign(&no_cpu_left, 2).unwrap_err().to_string(),
            "vms/vm@1/vcpus: no free physical CPU left of 2"
        );
        let missing = configs(vec![
            default_vm("vm0").set("physical-cpus", Value::Cells(vec![3]))
        ]);
        assert_eq!(
            assign(&missing, 2).unwrap_err().to_string(),
            "vms/vm@0/physical-cpus: CPU 3 does not exist (the machine has 2)"
        );
        let count = configs(vec![
            default_vm("vm0").set("physical-cpus", Value::Cells(vec![0, 1]))
        ]);
        assert_eq!(
            assign(&count, 2).unwrap_err().to_string(),
            "vms/vm@0/physical-cpus: lists 2 CPUs for 1 vCPUs"
        );
    }
}
