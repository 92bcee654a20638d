//! The boot bundle the hypervisor boots from (the fw_cfg file
//! `opt/org.hvlab/bundle`, from `bundle.cpio`): a
//! newc cpio archive with `manifest.dtb` and, per VM, `<vm>/kernel`,
//! `<vm>/dtb`, optionally `<vm>/initrd`, and `<vm>/disk<N>` for each disk
//! that starts filled from an image. A kernel, initrd or disk image with
//! the same bytes as an earlier VM's is not packed again: the manifest
//! names the earlier VM's member (two VMs of one Debian kernel carry it
//! once, which halves what QEMU loads and copies; the hypervisor has QEMU
//! copy each member straight to the VM that needs it). The lab writes every device
//! tree on the host (`manifest.rs`, `guest_dt.rs`), places the files
//! (`layout.rs`) and keeps the trees as text next to the run (`dts.rs`).

pub mod dts;
pub mod guest_dt;
pub mod layout;
pub mod manifest;

use crate::disk::DiskContents;
use crate::images::initramfs::{write_cpio, Entry};
use crate::images::manifest::BootFormat;
use crate::qemu::cmdline::vm_bootargs;
use crate::scenario::{CpuModel, Scenario};
use anyhow::{bail, Context, Result};
use guest_dt::GuestDt;
use layout::{bare_layout, layout, ImageHeader, ImageSpan};
use manifest::{assign_cpus, manifest_dtb, Device, KernelLoad, ManifestVm};
use std::path::Path;

pub const BUNDLE_FILE: &str = "bundle.cpio";
pub const MANIFEST_DTS: &str = "manifest.dts";

/// What one VM boots, read from the cache or the build.
#[derive(Debug, Clone)]
pub struct VmFiles {
    pub kernel: Vec<u8>,
    /// How `kernel` boots (never [`BootFormat::Detect`]).
    pub format: BootFormat,
    pub initrd: Option<Vec<u8>>,
    /// One per disk of the VM, in `disks` order.
    pub disks: Vec<DiskContents>,
}

/// Host RAM the hypervisor needs beyond the VMs' RAM and disks:
/// its own image, stacks, page tables and queues.
pub const HYPERVISOR_RESERVE_MIB: u64 = 16;

/// The name of disk `index` of a VM: its serial (what VIRTIO_BLK_T_GET_ID
/// answers) and, for a filled disk, its bundle member under the VM's name.
pub fn disk_name(index: usize) -> String {
    format!("disk{index}")
}

/// A packed bundle and the trees inside it.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub cpio: Vec<u8>,
    pub manifest: Vec<u8>,
    /// `(vm name, guest DTB)` in VM order.
    pub guest_dtbs: Vec<(String, Vec<u8>)>,
}

/// The `compatible` of a CPU node for a QEMU CPU model.
pub fn cpu_compatible(cpu: CpuModel) -> &'static str {
    match cpu {
        CpuModel::CortexA72 => "arm,cortex-a72",
        CpuModel::Max => "arm,arm-v8",
    }
}

/// The `/chosen` `rng-seed` (32 bytes) and `kaslr-seed` of VM `vm`, which
/// QEMU fills with fresh random bytes on every boot: here SHA-256 over
/// `seed` (the run id) and the VM's name, so every run gets its own, and the
/// same run id (or a recorded run's bundle, replayed) gives the same ones.
pub fn dt_seeds(seed: &str, vm: &str) -> ([u8; 32], u64) {
    use sha2::{Digest, Sha256};
    let digest = |what: &str| {
        let mut hasher = Sha256::new();
        for part in ["lab-dt-seed-v1", seed, vm, what] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        <[u8; 32]>::from(hasher.finalize())
    };
    let kaslr = digest("kaslr-seed");
    let kaslr = u64::from_le_bytes(kaslr[..8].try_into().unwrap_or_default());
    (digest("rng-seed"), kaslr)
}

/// Packs the scenario's VMs; `files` is in `scenario.vms` order, `seed`
/// makes the guests' random seeds ([`dt_seeds`]).
pub fn pack(scenario: &Scenario, files: &[VmFiles], seed: &str) -> Result<Bundle> {
    if files.len() != scenario.vms.len() {
        bail!("{} VMs but files for {}", scenario.vms.len(), files.len());
    }
    let cpus = assign_cpus(
        &scenario.vms.iter().map(|vm| vm.vcpus).collect::<Vec<_>>(),
        scenario.machine.cpus,
    );
    let mut entries = Vec::new();
    let mut packed = Packed::default();
    let mut manifest_vms = Vec::new();
    let mut guest_dtbs = Vec::new();
    for ((vm, files), physical_cpus) in scenario.vms.iter().zip(files).zip(cpus) {
        let what = |item: &str| format!("VM {}: {item}", vm.name);
        let memory_size = vm.memory_mib << 20;
        let (rng_seed, kaslr_seed) = dt_seeds(seed, &vm.name);
        let guest_dt = GuestDt {
            rng_seed,
            kaslr_seed,
            vcpus: vm.vcpus,
            memory_size,
            cpu_compatible: cpu_compatible(scenario.machine.cpu).into(),
            bootargs: vm_bootargs(vm),
            initrd: None,
        };
        let (dtb, kernel_load, dtb_ipa, initrd_at) = match files.format {
            BootFormat::LinuxImage => {
                let header = ImageHeader::parse(&files.kernel).with_context(|| what("kernel"))?;
                let initrd_len = files.initrd.as_ref().map(|i| i.len() as u64);
                let places =
                    layout(memory_size, header, initrd_len).with_context(|| what("layout"))?;
                let dtb = GuestDt {
                    initrd: places.initrd,
                    ..guest_dt
                }
                .to_dtb()?;
                let load = KernelLoad::LinuxImage { ipa: places.kernel };
                (dtb, load, places.dtb, places.initrd)
            }
            BootFormat::Elf | BootFormat::Raw { .. } if files.initrd.is_some() => {
                bail!("VM {}: a bare-metal kernel takes no initrd", vm.name)
            }
            BootFormat::Elf | BootFormat::Raw { .. } => {
                let (span, load) = match files.format {
                    BootFormat::Raw { load, .. } => (
                        ImageSpan::raw(load, files.kernel.len() as u64)?,
                        KernelLoad::Raw { ipa: load },
                    ),
                    _ => (
                        ImageSpan::elf(&files.kernel).with_context(|| what("kernel"))?,
                        KernelLoad::Elf,
                    ),
                };
                let dtb = guest_dt.to_dtb()?;
                let places = bare_layout(memory_size, span, dtb.len() as u64)
                    .with_context(|| what("layout"))?;
                (dtb, load, places.dtb, None)
            }
            BootFormat::Detect => bail!("VM {}: the kernel's format was not resolved", vm.name),
        };
        let member = |file: &str| format!("{}/{file}", vm.name);
        let kernel = packed.add(&mut entries, member("kernel"), &files.kernel);
        entries.push(Entry::file(&member("dtb"), dtb.clone(), false));
        let initrd = match (&files.initrd, initrd_at) {
            (Some(data), Some((start, _))) => {
                Some((packed.add(&mut entries, member("initrd"), data), start))
            }
            _ => None,
        };
        if files.disks.len() != vm.disks.len() {
            bail!(
                "VM {}: {} disks but contents for {}",
                vm.name,
                vm.disks.len(),
                files.disks.len()
            );
        }
        let mut devices: Vec<Device> = (0..vm.net.len())
            .map(|index| Device::Net {
                slot: index as u32,
                mac: scenario.mac(vm, index).0,
                switch: vm.net[index].switch.clone(),
            })
            .collect();
        for (index, disk) in files.disks.iter().enumerate() {
            let name = disk_name(index);
            let image = disk
                .image
                .as_ref()
                .map(|data| packed.add(&mut entries, member(&name), data));
            devices.push(Device::Blk {
                slot: (vm.net.len() + index) as u32,
                size: disk.size,
                serial: name,
                image,
                read_only: disk.read_only,
            });
        }
        manifest_vms.push(ManifestVm {
            name: vm.name.clone(),
            vcpus: vm.vcpus,
            memory_size,
            kernel,
            kernel_load,
            dtb: member("dtb"),
            dtb_ipa,
            initrd,
            physical_cpus,
            devices,
        });
        guest_dtbs.push((vm.name.clone(), dtb));
    }
    let manifest = manifest_dtb(&manifest_vms)?;
    entries.insert(0, Entry::file("manifest.dtb", manifest.clone(), false));
    let cpio = write_cpio(&entries)?;
    check_memory(scenario, files)?;
    Ok(Bundle {
        cpio,
        manifest,
        guest_dtbs,
    })
}

/// The images packed so far, by member name: each distinct content once.
#[derive(Default)]
struct Packed<'a> {
    members: Vec<(String, &'a [u8])>,
}

impl<'a> Packed<'a> {
    /// The member holding `data`: an earlier one with the same bytes, else
    /// `name`, added to `entries`.
    fn add(&mut self, entries: &mut Vec<Entry>, name: String, data: &'a [u8]) -> String {
        if let Some((earlier, _)) = self.members.iter().find(|(_, bytes)| *bytes == data) {
            return earlier.clone();
        }
        entries.push(Entry::file(&name, data.to_vec(), false));
        self.members.push((name.clone(), data));
        name
    }
}

/// The hypervisor holds every VM's RAM and disks in the machine's RAM
/// (the bundle stays in fw_cfg, outside it): refuse a machine too small
/// for them, rather than let the hypervisor run out.
fn check_memory(scenario: &Scenario, files: &[VmFiles]) -> Result<()> {
    const MIB: u64 = 1 << 20;
    let ram: u64 = scenario.vms.iter().map(|vm| vm.memory_mib * MIB).sum();
    let disks: u64 = files.iter().flat_map(|f| &f.disks).map(|d| d.size).sum();
    let needed = ram + disks + HYPERVISOR_RESERVE_MIB * MIB;
    let have = scenario.machine.memory_mib * MIB;
    if needed > have {
        bail!(
            "machine.memory-mib is {} but the hypervisor needs {} MiB: {} MiB of VM RAM, {} MiB \
             of disks and {HYPERVISOR_RESERVE_MIB} MiB for itself",
            scenario.machine.memory_mib,
            needed.div_ceil(MIB),
            ram / MIB,
            disks.div_ceil(MIB),
        );
    }
    // Each VM's RAM is one contiguous run of host RAM, and QEMU puts the
    // hypervisor's device tree at RAM + min(RAM / 2, 128 MiB) (where it
    // would load an initrd; the bundle comes by fw_cfg): below it the
    // hypervisor's own pages come first, above it the rest. The biggest VM
    // must fit in one of the two.
    let dtb_start = (have / 2).min(128 * MIB);
    let below = dtb_start.saturating_sub(HYPERVISOR_RESERVE_MIB * MIB);
    let above = have.saturating_sub(dtb_start + layout::DTB_MAX);
    if let Some(vm) = scenario
        .vms
        .iter()
        .max_by_key(|vm| vm.memory_mib)
        .filter(|vm| vm.memory_mib * MIB > below.max(above))
    {
        bail!(
            "VM {} needs {} MiB of contiguous host RAM, but QEMU puts the hypervisor's device \
             tree at +{} MiB of the machine's {} MiB, leaving {} MiB below it and {} MiB above \
             it: give the machine more memory or the VM less",
            vm.name,
            vm.memory_mib,
            dtb_start / MIB,
            scenario.machine.memory_mib,
            below / MIB,
            above / MIB
        );
    }
    Ok(())
}

impl Bundle {
    /// Writes `bundle.cpio`, `manifest.dts` and `<vm>.dts` into `dir`;
    /// returns the bundle's path.
    pub fn write_to(&self, dir: &Path) -> Result<std::path::PathBuf> {
        let write = |name: &str, data: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))
        };
        write(MANIFEST_DTS, dts::to_dts(&self.manifest)?.as_bytes())?;
        for (vm, dtb) in &self.guest_dtbs {
            write(&format!("{vm}.dts"), dts::to_dts(dtb)?.as_bytes())?;
        }
        write(BUNDLE_FILE, &self.cpio)?;
        Ok(dir.join(BUNDLE_FILE))
    }
}

#[cfg(test)]
mod tests;
