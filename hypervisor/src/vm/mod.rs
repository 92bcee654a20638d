//! Virtual machines: one VM's RAM partition, stage-2 tables, vCPUs and
//! emulated devices, built from a manifest entry and the bundle's files.
//!
//! - [`loader`]: kernel/DTB/initrd placement (host-tested);
//! - [`exit`]: what a guest exit means and what to do about it;
//! - [`irq`]: physical interrupts and the vGIC ↔ list-register sync;
//! - [`reports`]: the console lines a guest can cause, rate-limited;
//! - [`run`]: the per-CPU run loop;
//! - [`stats`]: exit counts per vCPU and VM.
pub mod exit;
pub mod irq;
pub mod listed;
pub mod loader;
pub mod reports;
pub mod run;
pub mod schedule;
pub mod stats;
pub mod timers;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::addr::{IntermediatePhysAddr, PhysAddr, BLOCK_2M, PAGE_SIZE};
use crate::arch::aarch64::context::VcpuRegs;
use crate::arch::aarch64::pte::Stage2;
use crate::arch::{self, IdentityTables};
use crate::boot::files::{BootFile, BootFiles};
use crate::boot::manifest::{DeviceConfig, DeviceKind, ManifestError, Placement, VmConfig};
use crate::console;
use crate::devices::gic::{Affinity, Vgic};
use crate::devices::memory::{region_offset, GuestMemory, GuestMemoryError};
use crate::devices::pflash::{Pflash, BANK_BASES};
use crate::devices::pl011::{CharSink, Pl011};
use crate::devices::pl031::{Pl031, TimeSource};
use crate::devices::table::DeviceTable;
use crate::devices::virtio::blk::{MemDisk, VirtioBlk};
use crate::devices::virtio::mmio::{EmptySlot, VirtioMmio, SLOT_SIZE};
use crate::devices::virtio::net::VirtioNet;
use crate::devices::VmDevice;
use crate::fixed_vec::FixedVec;
use crate::layout::{
    PL031_BASE, PL031_INTID, RAM_BASE, VIRTIO_BASE, VIRTIO_INTID_BASE, VIRTIO_SLOTS,
};
use crate::mm::frames::{FrameAllocator, Frames};
use crate::mm::pagetable::{MapAttrs, PageTable};
use crate::vswitch::{Fabric, Owner};
use loader::{load_kernel, RamImage};
use reports::GuestReports;
use spin::Mutex;

/// SPIs each VM's vGIC implements (INTIDs 32..96: UART, RTC, virtio slots).
const VGIC_SPIS: u32 = 64;
/// MPIDR bit 31 is RES1.
const MPIDR_RES1: u64 = 1 << 31;

/// One VM's RAM: a host partition seen at IPA [`RAM_BASE`].
pub struct GuestRam {
    frames: Frames,
    size: u64,
}

impl GuestRam {
    /// Host-physical address of guest RAM's first byte.
    pub fn host_base(&self) -> PhysAddr {
        self.frames.range().start
    }

    /// Bytes of guest RAM.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn bytes(&self) -> &[u8] {
        arch::frames_bytes(&self.frames)
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        arch::frames_bytes_mut(&mut self.frames)
    }

    fn range(
        &self,
        address: IntermediatePhysAddr,
        len: usize,
    ) -> Result<core::ops::Range<usize>, GuestMemoryError> {
        let len64 = u64::try_from(len).unwrap_or(u64::MAX);
        let start = region_offset(RAM_BASE, self.size, address, len64)?;
        let start = usize::try_from(start).map_err(|_| GuestMemoryError::OutOfRange {
            address,
            len: len64,
        })?;
        Ok(start..start + len)
    }
}

impl GuestMemory for GuestRam {
    fn publish(&self) {
        arch::memory_barrier();
    }

    fn acquire(&self) {
        arch::read_barrier();
    }

    fn read(&self, address: IntermediatePhysAddr, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        let range = self.range(address, buf.len())?;
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let src = self
            .bytes()
            .get(range)
            .ok_or(GuestMemoryError::OutOfRange { address, len })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write(&mut self, address: IntermediatePhysAddr, buf: &[u8]) -> Result<(), GuestMemoryError> {
        let range = self.range(address, buf.len())?;
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let dst = self
            .bytes_mut()
            .get_mut(range)
            .ok_or(GuestMemoryError::OutOfRange { address, len })?;
        dst.copy_from_slice(buf);
        Ok(())
    }
}

/// Bytes a VM's PL011 holds for the physical console between two guest
/// entries; more are written at once. Every transmitted byte exits, so a
/// batch holds one byte in practice; it is small because it is copied out
/// of the VM on every exit.
const CONSOLE_BATCH: usize = 16;

/// A VM's console output: the physical console, each line tagged with the
/// VM name. The bytes a guest transmits are
/// held until its vCPU leaves the VM lock ([`VmConsole::take_output`]):
/// the physical UART is slow under emulation, and other vCPUs of the VM
/// must not wait for it.
pub struct VmConsole {
    /// VM index and `[name] ` when tagging.
    tag: Option<(usize, &'static str)>,
    pending: FixedVec<u8, CONSOLE_BATCH>,
}

impl VmConsole {
    fn new(tag: Option<(usize, &'static str)>) -> Self {
        VmConsole {
            tag,
            pending: FixedVec::new(),
        }
    }

    /// Whether it holds bytes to write.
    pub fn has_output(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The output held so far, to be written once the VM lock is released.
    pub fn take_output(&mut self) -> VmOutput {
        let output = VmOutput {
            tag: self.tag,
            bytes: self.pending,
        };
        self.pending.clear();
        output
    }
}

impl CharSink for VmConsole {
    fn write_byte(&mut self, byte: u8) {
        if let Err(byte) = self.pending.push(byte) {
            // A full batch goes out at once, still in order.
            self.take_output().write();
            let _ = self.pending.push(byte);
        }
    }
}

/// Console output of a VM taken out of its lock (see [`VmConsole`]).
#[must_use]
pub struct VmOutput {
    tag: Option<(usize, &'static str)>,
    bytes: FixedVec<u8, CONSOLE_BATCH>,
}

impl VmOutput {
    /// Writes it to the physical console.
    pub fn write(self) {
        let bytes = self.bytes.as_slice();
        if bytes.is_empty() {
            return;
        }
        match self.tag {
            Some((source, tag)) => console::write_tagged(source, tag, bytes),
            None => console::write_bytes(bytes),
        }
    }
}

/// Wall-clock time for the PL031: the system counter plus the host RTC's
/// reading at boot.
#[derive(Clone, Copy)]
pub struct HostClock {
    /// Unix seconds at counter zero.
    pub epoch_at_zero: u64,
}

impl TimeSource for HostClock {
    fn counter(&self) -> u64 {
        arch::counter()
    }
    fn frequency(&self) -> u64 {
        arch::counter_frequency()
    }
    fn epoch_at_zero(&self) -> u64 {
        self.epoch_at_zero
    }
}

/// A VM's PL011 and the lock it has to itself.
pub type VmUart = Mutex<Pl011<VmConsole>>;

/// What the host gives every VM it creates.
#[derive(Clone, Copy)]
pub struct VmHost {
    /// The PL031's wall clock.
    pub clock: HostClock,
    /// Largest stage-2 leaf mapping guest RAM ([`stage2_largest_leaf`]).
    pub stage2_leaf: u64,
    /// The switches the VMs' network devices plug into.
    pub fabric: &'static Fabric,
}

/// Host pages holding one VM disk (virtio-blk's storage).
pub struct DiskPages(Frames);

impl AsRef<[u8]> for DiskPages {
    fn as_ref(&self) -> &[u8] {
        arch::frames_bytes(&self.0)
    }
}

impl AsMut<[u8]> for DiskPages {
    fn as_mut(&mut self) -> &mut [u8] {
        arch::frames_bytes_mut(&mut self.0)
    }
}

/// The largest stage-2 leaf for guest RAM. On hardware, blocks give the
/// TLB the most reach. QEMU's TCG TLB records a two-stage translation at
/// the larger of its stage-1 and stage-2 sizes, so behind 2 MiB blocks
/// every entry counts as a large page, and a guest's single-page TLBI
/// (Linux issues thousands while it boots) flushes that whole TLB: under
/// QEMU's `virt` board, guest RAM is mapped with 4 KiB pages (a Linux boot
/// to its shell went from 1.26 to 1.15 times its bare time).
pub fn stage2_largest_leaf(platform_is_qemu_virt: bool) -> u64 {
    if platform_is_qemu_virt {
        PAGE_SIZE
    } else {
        BLOCK_2M
    }
}

/// One vCPU as the physical CPU running it owns it.
pub struct Vcpu {
    /// Index in the VM (= MPIDR Aff0).
    pub index: usize,
    /// Register state.
    pub regs: VcpuRegs,
    /// The INTIDs it has in its CPU's list registers.
    pub lrs: listed::Listed,
    /// The timers ([`timers::GuestTimer::bit`]) whose physical PPI is
    /// active and owned by this vCPU.
    pub timers_active: u8,
    /// List registers saved while another vCPU uses this CPU.
    pub saved_lrs: Vec<u64>,
    /// The vGIC generation at which it last had nothing deliverable left
    /// over (`irq::flush_to_lrs`); `None` after its list registers changed
    /// hands.
    pub settled_at: Option<u64>,
    /// Its list registers were retired (`irq::sync_from_lrs`) since the
    /// guest last ran: nothing in them changed since.
    pub lrs_retired: bool,
    /// Its exits since it started, counted by its CPU without a lock.
    pub exits: stats::ExitCounts,
}

impl Vcpu {
    /// vCPU `index` starting at `entry` with x0 = `context`, EL1h, MMU off.
    pub fn boot(index: usize, entry: u64, context: u64) -> Self {
        Self {
            index,
            regs: VcpuRegs::boot(entry, context, vcpu_mpidr(index)),
            lrs: listed::Listed::new(arch::gic_lr_count()),
            timers_active: 0,
            saved_lrs: Vec::new(),
            settled_at: None,
            lrs_retired: false,
            exits: stats::ExitCounts::default(),
        }
    }

    /// The timers whose condition holds while the vCPU is not loaded
    /// (their saved control and compare value against the counter).
    pub fn timers_due(&self, now: u64) -> impl Iterator<Item = timers::GuestTimer> + '_ {
        timers::GuestTimer::ALL
            .into_iter()
            .filter(move |t| t.deadline(&self.regs.el1).is_some_and(|at| now >= at))
    }

    /// When the earliest of its saved timers fires, if one is armed.
    pub fn timer_deadline(&self) -> Option<u64> {
        timers::GuestTimer::ALL
            .into_iter()
            .filter_map(|t| t.deadline(&self.regs.el1))
            .min()
    }
}

/// A vCPU's power state, shared by every physical CPU of the VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuPower {
    /// On (PSCI).
    pub on: bool,
    /// Entry point and x0 for its next start, until its CPU picks it up.
    pub boot: Option<(u64, u64)>,
}

/// The MPIDR vCPU `index` reads: Aff0 = index, bit 31 RES1.
pub fn vcpu_mpidr(index: usize) -> u64 {
    u64::try_from(index).unwrap_or(0) | MPIDR_RES1
}

/// Why a VM stopped.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VmStop {
    /// PSCI SYSTEM_OFF, or the last vCPU called CPU_OFF.
    PowerOff,
    /// PSCI SYSTEM_RESET.
    Reset,
}

/// One virtual machine: everything its vCPUs share. Physical CPUs take its
/// lock to handle an exit and drop it while their vCPU runs.
pub struct Vm {
    /// Name from the manifest.
    pub name: String,
    /// Position in the manifest.
    pub index: usize,
    /// VMID in VTTBR_EL2.
    pub vmid: u16,
    /// The manifest entry it was built from.
    pub config: VmConfig,
    /// Guest RAM.
    pub ram: GuestRam,
    /// Stage-2 root table.
    pub stage2_root: PhysAddr,
    /// Kernel entry point.
    pub entry: IntermediatePhysAddr,
    /// Power state of each vCPU.
    pub power: Vec<VcpuPower>,
    /// The physical CPU each vCPU runs on.
    pub pcpus: Vec<usize>,
    /// Set when the VM stopped; every CPU running one of its vCPUs leaves.
    pub stopped: Option<VmStop>,
    /// Bumped by every reset, so CPUs notice a restart.
    pub epoch: u64,
    /// vCPUs currently loaded on some CPU.
    pub in_guest: usize,
    /// Last level driven onto the PL011's SPI.
    pub uart_line: bool,
    /// vCPUs (a mask) that device interrupts raised during an exit are
    /// routed to, for the run loop to tell.
    pub lines_rose: u64,
    /// The virtual GICv3, with locks of its own (taken after the VM's,
    /// never together with the UART's), so that interrupt exits need only
    /// those.
    pub vgic: &'static Vgic,
    /// The PL011, behind its own lock (taken after the VM's), so that the
    /// console accesses, a booting Linux's most frequent exits, need only
    /// that one (`exit::fast_path`).
    pub uart: &'static VmUart,
    /// Every other device (the PL031, the virtio-mmio slots), by window.
    pub devices: DeviceTable,
    /// VMs (a mask of manifest indices) its devices delivered to during an
    /// exit, whose CPUs the run loop wakes.
    pub wake_vms: u64,
    /// Exits of its vCPUs that stopped since the VM (re)started.
    pub exits: stats::ExitCounts,
    /// Counts of the misbehaviour it was told about on the console.
    pub reports: GuestReports,
}

fn bundle_file<'a>(
    bundle: &BootFiles<'a>,
    field: &str,
    path: &str,
) -> Result<BootFile<'a>, ManifestError> {
    match bundle.find(path) {
        Ok(Some(data)) => Ok(data),
        Ok(None) => Err(ManifestError::new(
            field,
            format!("{path:?} is not in the boot bundle"),
        )),
        Err(e) => Err(ManifestError::new(field, format!("boot bundle: {e}"))),
    }
}

fn place(
    ram: &mut RamImage<'_>,
    bundle: &BootFiles<'_>,
    field: &str,
    p: &Placement,
) -> Result<(), ManifestError> {
    let file = bundle_file(bundle, field, &p.path)?;
    ram.place_file(p.ipa, &file)
        .map_err(|e| ManifestError::new(field, format!("{}: {e}", p.path)))
}

fn affinities(vcpus: usize) -> Vec<Affinity> {
    (0..vcpus)
        .map(|i| Affinity::from_mpidr(u64::try_from(i).unwrap_or(0)))
        .collect()
}

fn boot_power(
    vcpus: usize,
    entry: IntermediatePhysAddr,
    dtb: IntermediatePhysAddr,
) -> Vec<VcpuPower> {
    (0..vcpus)
        .map(|i| VcpuPower {
            on: i == 0,
            boot: (i == 0).then_some((entry.as_u64(), dtb.as_u64())),
        })
        .collect()
}

/// The VM's device table: the two CFI flash banks and the PL031, then
/// every virtio-mmio slot (QEMU's `virt` has 32, and the guest DT lists
/// them all): the manifest's devices in theirs, an [`EmptySlot`] in the
/// rest.
fn device_table(
    vm: usize,
    config: &VmConfig,
    bundle: &BootFiles<'_>,
    frames: &mut FrameAllocator,
    host: VmHost,
) -> Result<DeviceTable, ManifestError> {
    let mut table = DeviceTable::new();
    let mut add = |base, intid, device: Box<dyn VmDevice>, field: &str| {
        table.insert(base, intid, device).map_err(|e| {
            ManifestError::new(field, format!("window at {:#x} overlaps another", e.base))
        })
    };
    for base in BANK_BASES {
        let base = IntermediatePhysAddr::new(base);
        add(base, None, Box::<Pflash>::default(), &config.node)?;
    }
    add(
        PL031_BASE,
        Some(PL031_INTID),
        Box::new(Pl031::new(host.clock)),
        &config.node,
    )?;
    for slot in 0..VIRTIO_SLOTS {
        let base = VIRTIO_BASE
            .checked_add(slot * SLOT_SIZE)
            .unwrap_or(VIRTIO_BASE);
        let configured = config.devices.iter().find(|d| u64::from(d.slot) == slot);
        let (device, intid): (Box<dyn VmDevice>, _) = match configured {
            Some(device) => (
                virtio_device(vm, device, bundle, frames, host)?,
                u32::try_from(slot).ok().map(|s| VIRTIO_INTID_BASE + s),
            ),
            None => (Box::new(EmptySlot), None),
        };
        add(base, intid, device, &config.node)?;
    }
    Ok(table)
}

/// One virtio device of the manifest behind its transport.
fn virtio_device(
    vm: usize,
    device: &DeviceConfig,
    bundle: &BootFiles<'_>,
    frames: &mut FrameAllocator,
    host: VmHost,
) -> Result<Box<dyn VmDevice>, ManifestError> {
    let field = |name: &str| format!("{}/{}", device.node, name);
    match &device.kind {
        DeviceKind::Net { mac, switch } => {
            let owner = Owner {
                vm,
                slot: device.slot,
            };
            let port = host.fabric.port(switch, owner).ok_or_else(|| {
                ManifestError::new(field("switch"), format!("no port on switch {switch:?}"))
            })?;
            Ok(Box::new(VirtioMmio::new(VirtioNet::new(port, *mac))))
        }
        DeviceKind::Block {
            size,
            serial,
            image,
            read_only,
        } => {
            let pages = frames.alloc_frames(*size, PAGE_SIZE).map_err(|e| {
                ManifestError::new(field("disk-size"), format!("no host memory for it ({e:?})"))
            })?;
            let mut disk = DiskPages(pages);
            let bytes = disk.as_mut();
            let filled = match image {
                Some(path) => {
                    let file = bundle_file(bundle, &field("image"), path)?;
                    let Some(dst) = bytes.get_mut(..file.len()) else {
                        return Err(ManifestError::new(
                            field("image"),
                            format!("{path}: {} bytes do not fit the disk", file.len()),
                        ));
                    };
                    file.copy_to(dst)
                        .map_err(|e| ManifestError::new(field("image"), format!("{path}: {e}")))?;
                    file.len()
                }
                None => 0,
            };
            // Host RAM the disk takes may hold anything: a disk starts zeroed.
            if let Some(rest) = bytes.get_mut(filled..) {
                rest.fill(0);
            }
            let disk = MemDisk::new(disk, *read_only, serial.as_bytes());
            Ok(Box::new(VirtioMmio::new(VirtioBlk::new(disk))))
        }
    }
}

impl Vm {
    /// Builds VM number `index` of the manifest: partition, images, stage 2,
    /// vCPU 0 ready to start, and devices. Errors name the manifest field at
    /// fault.
    pub fn create(
        index: usize,
        config: &VmConfig,
        bundle: &BootFiles<'_>,
        frames: &mut FrameAllocator,
        pcpus: Vec<usize>,
        host: VmHost,
    ) -> Result<Self, ManifestError> {
        let field = |name: &str| format!("{}/{}", config.node, name);
        let frames_for_ram = frames
            .alloc_frames(config.memory_size, BLOCK_2M)
            .map_err(|e| {
                ManifestError::new(
                    field("memory-size"),
                    format!("no host memory for it ({e:?})"),
                )
            })?;
        let mut ram = GuestRam {
            frames: frames_for_ram,
            size: config.memory_size,
        };
        let entry = Self::load_images(&mut ram, config, bundle)?;

        let mut tables = IdentityTables { frames };
        let stage2_error = |e| ManifestError::new(field("memory-size"), format!("stage 2: {e:?}"));
        let mut stage2 = PageTable::new(&mut tables).map_err(stage2_error)?;
        stage2
            .map::<Stage2>(
                &mut tables,
                RAM_BASE.as_u64(),
                ram.host_base(),
                config.memory_size,
                MapAttrs::RAM,
                host.stage2_leaf,
            )
            .map_err(stage2_error)?;

        let vcpu_count = usize::try_from(config.vcpus).unwrap_or(1);
        let vgic = Vgic::new(VGIC_SPIS, &affinities(vcpu_count))
            .map_err(|e| ManifestError::new(field("vcpus"), format!("{e}")))?;
        let devices = device_table(index, config, bundle, frames, host)?;
        arch::sync_icache();
        Ok(Self {
            name: config.name.clone(),
            index,
            vmid: u16::try_from(index + 1).unwrap_or(u16::MAX),
            config: config.clone(),
            ram,
            stage2_root: stage2.root(),
            entry,
            power: boot_power(vcpu_count, entry, config.dtb.ipa),
            pcpus,
            stopped: None,
            epoch: 0,
            in_guest: 0,
            uart_line: false,
            lines_rose: 0,
            // Lives as long as the machine, like the VM.
            vgic: Box::leak(Box::new(vgic)),
            // Lives as long as the machine, like the VM. Every VM's lines
            // carry its tag, also a single VM's: no guest can print a line
            // the lab takes for the hypervisor's.
            uart: Box::leak(Box::new(Mutex::new(Pl011::new(VmConsole::new(Some((
                index,
                Box::leak(format!("[{}] ", config.name).into_boxed_str()),
            ))))))),
            devices,
            wake_vms: 0,
            exits: stats::ExitCounts::default(),
            reports: GuestReports::default(),
        })
    }

    fn load_images(
        ram: &mut GuestRam,
        config: &VmConfig,
        bundle: &BootFiles<'_>,
    ) -> Result<IntermediatePhysAddr, ManifestError> {
        let field = |name: &str| format!("{}/{}", config.node, name);
        let kernel = bundle_file(bundle, &field("kernel"), &config.kernel)?;
        let mut image = RamImage {
            base: RAM_BASE,
            bytes: ram.bytes_mut(),
        };
        let entry = load_kernel(&mut image, config.kernel_format, &kernel, config.kernel_ipa)
            .map_err(|e| ManifestError::new(field("kernel"), format!("{}: {e}", config.kernel)))?;
        place(&mut image, bundle, &field("dtb"), &config.dtb)?;
        if let Some(initrd) = &config.initrd {
            place(&mut image, bundle, &field("initrd"), initrd)?;
        }
        Ok(entry)
    }

    /// Restarts the VM from its images (PSCI SYSTEM_RESET). Call with no
    /// vCPU loaded anywhere (`in_guest == 0`).
    pub fn reset(&mut self, bundle: &BootFiles<'_>) -> Result<(), ManifestError> {
        // Nothing of the last run is left for the next one to read.
        arch::zero_guest_ram(self.ram.bytes_mut());
        self.entry = Self::load_images(&mut self.ram, &self.config, bundle)?;
        arch::sync_icache();
        self.vgic.reset();
        let mut uart = self.uart.lock();
        uart.sink_mut().take_output().write();
        *uart = Pl011::new(VmConsole::new(uart.sink().tag));
        drop(uart);
        self.devices.reset();
        self.power = boot_power(self.power.len(), self.entry, self.config.dtb.ipa);
        self.stopped = None;
        self.epoch = self.epoch.wrapping_add(1);
        self.uart_line = false;
        self.lines_rose = 0;
        Ok(())
    }
}

#[cfg(any(test, feature = "fuzzing"))]
impl Vm {
    /// A VM with `vcpus` vCPUs and no RAM behind it, for exit-handling
    /// tests (the host arch backend has no memory to lend).
    pub(crate) fn for_tests(vcpus: usize) -> Self {
        use crate::addr::PhysRange;
        use crate::boot::manifest::KernelFormat;
        let mut frames = FrameAllocator::new(
            &[PhysRange {
                start: PhysAddr::new(0x4000_0000),
                end: PhysAddr::new(0x5000_0000),
            }],
            &[],
        )
        .unwrap();
        let config = VmConfig {
            node: "vms/vm@0".into(),
            name: "vm0".into(),
            vcpus: u32::try_from(vcpus).unwrap(),
            memory_size: 0x1000_0000,
            kernel: "vm0/kernel".into(),
            kernel_format: KernelFormat::LinuxImage,
            kernel_ipa: Some(IntermediatePhysAddr::new(0x4008_0000)),
            dtb: Placement {
                path: "vm0/dtb".into(),
                ipa: IntermediatePhysAddr::new(0x4800_0000),
            },
            initrd: None,
            physical_cpus: Vec::new(),
            devices: Vec::new(),
        };
        let host = VmHost {
            clock: HostClock { epoch_at_zero: 0 },
            stage2_leaf: PAGE_SIZE,
            fabric: Box::leak(Box::default()),
        };
        let devices = device_table(
            0,
            &config,
            &BootFiles::InMemory(crate::boot::cpio::Archive::new(&[])),
            &mut frames,
            host,
        )
        .unwrap();
        let entry = IntermediatePhysAddr::new(0x4008_0000);
        Self {
            name: config.name.clone(),
            index: 0,
            vmid: 1,
            ram: GuestRam {
                frames: frames.alloc_frames(0x1000_0000, BLOCK_2M).unwrap(),
                size: 0x1000_0000,
            },
            stage2_root: PhysAddr::new(0),
            entry,
            power: boot_power(vcpus, entry, config.dtb.ipa),
            pcpus: (0..vcpus).collect(),
            stopped: None,
            epoch: 0,
            in_guest: 0,
            uart_line: false,
            lines_rose: 0,
            vgic: Box::leak(Box::new(Vgic::new(VGIC_SPIS, &affinities(vcpus)).unwrap())),
            uart: Box::leak(Box::new(Mutex::new(Pl011::new(VmConsole::new(None))))),
            devices,
            wake_vms: 0,
            exits: stats::ExitCounts::default(),
            reports: GuestReports::default(),
            config,
        }
    }

    /// Back to the state [`Vm::for_tests`] made, so one VM serves many
    /// fuzz inputs (each `for_tests` VM leaks its vGIC and UART).
    pub(crate) fn clear_for_tests(&mut self) {
        self.vgic.reset();
        *self.uart.lock() = Pl011::new(VmConsole::new(None));
        self.devices.reset();
        self.power = boot_power(self.power.len(), self.entry, self.config.dtb.ipa);
        self.stopped = None;
        self.uart_line = false;
        self.lines_rose = 0;
        self.wake_vms = 0;
        self.reports = GuestReports::default();
    }
}
