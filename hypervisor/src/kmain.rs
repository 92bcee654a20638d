//! The primary CPU's boot flow, after the arch layer's assembly: discover the
//! platform from the host DTB, build and enable the EL2 identity map, start
//! the console, print the banner, set up the heap, and run (or power off when
//! there is nothing to run).
//!
//! Console contract (the lab's `hv_boot` scenario matches these lines):
//! ```text
//! hypervisor 0.1.0: EL2, <N> CPUs, <M> MiB RAM at 0x<base>
//! hypervisor: gicv3 dist 0x<a> redist 0x<b>, pl011 0x<c>, psci <smc|hvc>
//! hypervisor: no VMs to run, powering off
//! hypervisor: <vm>: <n> vCPU on CPU[s] <c>[,<c>...], <m> MiB at IPA 0x<ipa> (host 0x<pa>), entry 0x<pc>
//! ```
//!
//! With a boot bundle (a cpio holding `manifest.dtb` and the VMs' files, as
//! the fw_cfg file `opt/org.hvlab/bundle` or `-initrd`) it builds the
//! manifest's VMs instead and hands the CPUs to `machine::run`; a bad
//! manifest prints
//! `hypervisor: manifest: <field>: <problem>` and powers off.
//!
//! Fault injection for the lab's failure tests: when the host command line
//! (`/chosen/bootargs`, QEMU `-append`) holds the word `hv.debug=panic`, the
//! hypervisor panics right after the banner; the panic handler prints
//! `hypervisor panic at <file>:<line>: <message>` and powers off.

use crate::addr::{PhysAddr, PhysRange, BLOCK_2M, PAGE_SIZE};
use crate::arch::{self, aarch64::pte::El2Stage1, IdentityTables};
use crate::boot::cpio::{self, Archive, CpioError};
use crate::boot::files::{BootFiles, FwCfgItem};
use crate::boot::fw_cfg::{self, FwCfgError};
use crate::boot::manifest::{self, DeviceKind, ManifestError, VmConfig};
use crate::console;
use crate::ffa;
use crate::fixed_vec::FixedVec;
use crate::layout::RAM_BASE;
use crate::machine::{self, Machine};
use crate::mm::frames::FrameAllocator;
use crate::mm::pagetable::{MapAttrs, MapError, PageTable, LARGEST_BLOCK};
use crate::platform::{PlatformInfo, MAX_RESERVED_RANGES};
use crate::power;
use crate::println;
use crate::vm::irq::HostIrqs;
use crate::vm::{self, HostClock, Vm, VmHost};
use crate::vswitch::{Fabric, Owner};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::AtomicUsize;
use spin::Mutex;

/// The fault-injection word on the host command line.
pub const DEBUG_PANIC_BOOTARG: &str = "hv.debug=panic";
/// The manifest's name in the boot bundle.
const MANIFEST_FILE: &str = "manifest.dtb";
/// Heap size we ask for (the arch layer caps it to what it can manage).
const HEAP_SIZE: u64 = 16 * 1024 * 1024;

/// Entered once, on the primary CPU, with the MMU off.
pub fn boot_primary(dtb_addr: PhysAddr, dtb: &'static [u8], image: PhysRange) -> ! {
    // No console yet: without a platform description there is nothing to
    // print on, so power off through the conduit QEMU uses.
    let Ok(platform) = PlatformInfo::from_dtb(dtb) else {
        power::system_off()
    };
    let dtb_len = u64::try_from(dtb.len()).unwrap_or(u64::MAX);
    let dtb_range = PhysRange::from_start_size(dtb_addr, dtb_len).unwrap_or_default();
    let mut reserved: FixedVec<PhysRange, { 3 + MAX_RESERVED_RANGES }> = FixedVec::new();
    for r in [Some(image), Some(dtb_range), platform.initrd]
        .into_iter()
        .flatten()
        .chain(platform.reserved.iter().copied())
    {
        // Capacity is exactly the candidates above.
        let _ = reserved.push(r);
    }
    let Ok(mut frames) = FrameAllocator::new(platform.memory.as_slice(), reserved.as_slice())
    else {
        power::system_off_via(platform.psci)
    };
    let Ok(root) = build_identity_map(&platform, &mut frames) else {
        power::system_off_via(platform.psci)
    };
    arch::enable_mmu(root);

    power::set_conduit(platform.psci);
    if let Some(uart) = platform.pl011 {
        console::init(uart.start);
    }
    print_banner(&platform);
    if platform.has_bootarg(DEBUG_PANIC_BOOTARG) {
        panic!("{DEBUG_PANIC_BOOTARG} on the command line: injected fault after the banner");
    }

    let heap_size = HEAP_SIZE
        .min(frames.free_bytes() / 8)
        .next_multiple_of(BLOCK_2M);
    match frames.alloc(heap_size, BLOCK_2M) {
        Ok(range) => {
            arch::heap_init(range);
        }
        Err(e) => {
            println!("hypervisor: no memory for the heap ({e:?}), powering off");
            power::system_off()
        }
    }

    let bundle = open_bundle(&platform);
    run_bundle(&platform, &mut frames, root, bundle)
}

/// The boot bundle: fw_cfg file [`fw_cfg::BUNDLE_FILE`] (how the lab
/// passes it), else the initrd QEMU loaded. Powers off when there is none.
fn open_bundle(platform: &PlatformInfo<'static>) -> BootFiles<'static> {
    if let (None, Some(fw_cfg)) = (platform.initrd, platform.fw_cfg) {
        match bundle_in_fw_cfg(fw_cfg.start) {
            Ok(Some(bundle)) => return bundle,
            Ok(None) => {}
            Err(e) => {
                println!("hypervisor: boot bundle: {e}, powering off");
                power::system_off()
            }
        }
    }
    let bytes = arch::initrd_bytes(platform);
    if bytes.is_empty() {
        println!("hypervisor: no VMs to run, powering off");
        power::system_off()
    }
    BootFiles::InMemory(Archive::new(bytes))
}

/// Why the bundle could not be read from fw_cfg.
enum FetchError {
    FwCfg(FwCfgError),
    Cpio(CpioError),
}

impl From<FwCfgError> for FetchError {
    fn from(e: FwCfgError) -> Self {
        FetchError::FwCfg(e)
    }
}

impl From<CpioError> for FetchError {
    fn from(e: CpioError) -> Self {
        FetchError::Cpio(e)
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::FwCfg(e) => write!(f, "{e}"),
            FetchError::Cpio(e) => write!(f, "{e}"),
        }
    }
}

/// The boot bundle in fw_cfg file [`fw_cfg::BUNDLE_FILE`] (`None` when
/// there is no such file), read as little as it can be: the file
/// directory, the bundle's headers, and its manifest, into the heap. Every
/// other member stays in fw_cfg, copied from there by DMA when a VM
/// (re)starts.
fn bundle_in_fw_cfg(fw_cfg: PhysAddr) -> Result<Option<BootFiles<'static>>, FetchError> {
    let mut head = [0u8; 4];
    arch::fw_cfg_read_into(fw_cfg, fw_cfg::KEY_FILE_DIR, 0, &mut head)?;
    let count = fw_cfg::dir_count(&head).ok_or(FwCfgError::BadDirectory)?;
    let mut dir = alloc::vec![0; fw_cfg::dir_size(count).ok_or(FwCfgError::BadDirectory)?];
    arch::fw_cfg_read_into(fw_cfg, fw_cfg::KEY_FILE_DIR, 0, &mut dir)?;
    let Some(file) = fw_cfg::find_file(&dir, fw_cfg::BUNDLE_FILE)? else {
        return Ok(None);
    };
    let item = FwCfgItem {
        base: fw_cfg,
        select: file.select,
    };
    let fetch = |at: usize, dest: &mut [u8]| {
        arch::fw_cfg_read_into(fw_cfg, file.select, at, dest).map_err(|_| CpioError::Unreadable)
    };
    let len = usize::try_from(file.size).unwrap_or(usize::MAX);
    let members = cpio::index(len, fetch)?;
    let mut fetched = Vec::new();
    if let Some(manifest) = members.iter().find(|span| span.name == MANIFEST_FILE) {
        let mut bytes = alloc::vec![0; manifest.len];
        fetch(manifest.offset, &mut bytes)?;
        // Lives as long as the machine, like the rest of the bundle.
        fetched.push((MANIFEST_FILE, &*Box::leak(bytes.into_boxed_slice())));
    }
    Ok(Some(BootFiles::InFwCfg {
        item,
        members,
        fetched,
    }))
}

/// Prints a manifest problem and powers off.
fn manifest_error(error: &ManifestError) -> ! {
    println!("hypervisor: manifest: {error}");
    power::system_off()
}

/// Builds the manifest's VMs from the boot bundle and runs them.
fn run_bundle(
    platform: &PlatformInfo<'_>,
    frames: &mut FrameAllocator,
    root: PhysAddr,
    bundle: BootFiles<'static>,
) -> ! {
    let blob = match bundle.find(MANIFEST_FILE) {
        Ok(Some(file)) => file.bytes().unwrap_or_default(),
        Ok(None) => manifest_error(&ManifestError::new(MANIFEST_FILE, "not in the boot bundle")),
        Err(e) => manifest_error(&ManifestError::new(
            MANIFEST_FILE,
            alloc::format!("boot bundle: {e}"),
        )),
    };
    let manifest = match manifest::parse(blob) {
        Ok(m) => m,
        Err(e) => manifest_error(&e),
    };
    if manifest.vms.is_empty() {
        println!("hypervisor: no VMs to run, powering off");
        power::system_off()
    }
    let (per_vm, assignment) = match machine::assign(&manifest.vms, platform.cpu_count()) {
        Ok(placement) => placement,
        Err(e) => manifest_error(&e),
    };

    let Some(gic) = machine::init_cpu_gic(&platform.gic, true) else {
        println!("hypervisor: no GICv3 redistributor for this CPU, powering off");
        power::system_off()
    };
    let uart = platform
        .pl011
        .zip(platform.pl011_intid)
        .map(|(r, i)| (r.start, i));
    if let Some((base, intid)) = uart {
        gic.enable(intid);
        arch::uart_enable_rx_irq(base);
    }
    let mut vm_home_cpus = FixedVec::new();
    for cpus in &per_vm {
        // At most one VM per CPU, so at most MAX_CPUS entries.
        let _ = vm_home_cpus.push(cpus.first().copied().unwrap_or(0));
    }
    let host = HostIrqs {
        uart,
        cpu_mpidrs: platform.cpu_mpidrs,
        vm_home_cpus,
    };
    console::init_input(manifest.vms.len());

    let now = platform
        .pl031
        .map_or(0, |r| u64::from(arch::rtc_read_seconds(r.start)));
    let uptime = arch::counter() / arch::counter_frequency().max(1);
    let vm_host = VmHost {
        clock: HostClock {
            epoch_at_zero: now.saturating_sub(uptime),
        },
        stage2_leaf: vm::stage2_largest_leaf(platform.qemu_virt),
        // Lives as long as the machine: the VMs' ports point into it.
        fabric: Box::leak(Box::new(fabric(&manifest.vms))),
    };
    let mut vms = Vec::new();
    for (k, (config, pcpus)) in manifest.vms.iter().zip(per_vm).enumerate() {
        let vm = match Vm::create(k, config, &bundle, frames, pcpus, vm_host) {
            Ok(vm) => vm,
            Err(e) => manifest_error(&e),
        };
        println!(
            "hypervisor: {}: {} vCPU on {}, {} MiB at IPA {:#x} (host {:#x}), entry {:#x}",
            vm.name,
            vm.power.len(),
            CpuList(&vm.pcpus),
            vm.ram.size() / (1024 * 1024),
            RAM_BASE,
            vm.ram.host_base(),
            vm.entry
        );
        // Lives as long as the machine; every CPU reaches it via `machine`.
        let vm: &'static Mutex<Vm> = Box::leak(Box::new(Mutex::new(vm)));
        vms.push(vm);
    }
    ffa::init(platform.psci, vms.len(), frames);
    let running = AtomicUsize::new(vms.len());
    machine::run(
        Machine {
            root,
            gic: platform.gic,
            host,
            bundle,
            vms,
            assignment,
            running,
        },
        platform,
    )
}

/// The switches of the manifest's network devices, one port per device.
fn fabric(vms: &[VmConfig]) -> Fabric {
    Fabric::new(vms.iter().enumerate().flat_map(|(vm, config)| {
        config
            .devices
            .iter()
            .filter_map(move |device| match &device.kind {
                DeviceKind::Net { switch, .. } => Some((
                    switch.as_str(),
                    Owner {
                        vm,
                        slot: device.slot,
                    },
                )),
                DeviceKind::Block { .. } => None,
            })
    }))
}

fn print_banner(platform: &PlatformInfo<'_>) {
    println!(
        "hypervisor {}: EL{}, {} CPUs, {} MiB RAM at {:#x}",
        env!("CARGO_PKG_VERSION"),
        arch::current_el(),
        platform.cpu_count(),
        platform.total_memory() / (1024 * 1024),
        platform.memory_base()
    );
    match platform.pl011 {
        Some(uart) => println!(
            "hypervisor: gicv3 dist {:#x} redist {:#x}, pl011 {:#x}, psci {}",
            platform.gic.dist.start,
            platform.gic.redist.start,
            uart.start,
            platform.psci.as_str()
        ),
        None => println!(
            "hypervisor: gicv3 dist {:#x} redist {:#x}, psci {}",
            platform.gic.dist.start,
            platform.gic.redist.start,
            platform.psci.as_str()
        ),
    }
}

/// The EL2 stage-1 identity map: RAM as normal memory, the devices the
/// hypervisor drives as device memory.
fn build_identity_map(
    platform: &PlatformInfo<'_>,
    frames: &mut FrameAllocator,
) -> Result<PhysAddr, MapError> {
    let mut mem = IdentityTables { frames };
    let mut tables = PageTable::new(&mut mem)?;
    for ram in platform.memory.iter() {
        let (Some(start), end) = (ram.start.align_up(PAGE_SIZE), ram.end.align_down(PAGE_SIZE))
        else {
            continue;
        };
        if let Some(size) = end.checked_offset_from(start).filter(|s| *s > 0) {
            tables.map::<El2Stage1>(
                &mut mem,
                start.as_u64(),
                start,
                size,
                MapAttrs::RAM,
                LARGEST_BLOCK,
            )?;
        }
    }
    for dev in platform.device_ranges().iter() {
        let start = dev.start.align_down(PAGE_SIZE);
        let end = dev.end.align_up(PAGE_SIZE).ok_or(MapError::BadRange)?;
        let size = end.checked_offset_from(start).ok_or(MapError::BadRange)?;
        match tables.map::<El2Stage1>(
            &mut mem,
            start.as_u64(),
            start,
            size,
            MapAttrs::DEVICE,
            LARGEST_BLOCK,
        ) {
            // Two devices share a page: map what is left page by page.
            Err(MapError::AlreadyMapped) => {
                let mut page = start;
                while page < end {
                    match tables.map::<El2Stage1>(
                        &mut mem,
                        page.as_u64(),
                        page,
                        PAGE_SIZE,
                        MapAttrs::DEVICE,
                        PAGE_SIZE,
                    ) {
                        Ok(()) | Err(MapError::AlreadyMapped) => {}
                        Err(e) => return Err(e),
                    }
                    page = page.checked_add(PAGE_SIZE).ok_or(MapError::BadRange)?;
                }
            }
            other => other?,
        }
    }
    Ok(tables.root())
}

/// The physical CPU of each vCPU, in vCPU order, for the VM banner line:
/// `CPU 0`, or `CPUs 0,1,0,1` (a CPU named twice time-slices its vCPUs).
struct CpuList<'a>(&'a [usize]);

impl fmt::Display for CpuList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.len() == 1 { "CPU " } else { "CPUs " })?;
        for (i, cpu) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{cpu}")?;
        }
        Ok(())
    }
}
