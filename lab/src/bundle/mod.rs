//! The boot bundle the hypervisor boots from (`-initrd bundle.cpio`): a
//! newc cpio archive with `manifest.dtb` and, per VM, `<vm>/kernel`,
//! `<vm>/dtb` and optionally `<vm>/initrd`. The lab writes every device
//! tree on the host (`manifest.rs`, `guest_dt.rs`), places the files
//! (`layout.rs`) and keeps the trees as text next to the run (`dts.rs`).

pub mod dts;
pub mod guest_dt;
pub mod layout;
pub mod manifest;

use crate::images::initramfs::{write_cpio, Entry};
use crate::qemu::cmdline::vm_bootargs;
use crate::scenario::{CpuModel, Scenario};
use anyhow::{bail, Context, Result};
use guest_dt::GuestDt;
use layout::{layout, ImageHeader};
use manifest::{assign_cpus, manifest_dtb, ManifestVm};
use std::path::Path;

pub const BUNDLE_FILE: &str = "bundle.cpio";
pub const MANIFEST_DTS: &str = "manifest.dts";

/// What one VM boots, read from the cache or the build.
#[derive(Debug, Clone)]
pub struct VmFiles {
    pub kernel: Vec<u8>,
    pub initrd: Option<Vec<u8>>,
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

/// Packs the scenario's VMs; `files` is in `scenario.vms` order.
pub fn pack(scenario: &Scenario, files: &[VmFiles]) -> Result<Bundle> {
    if files.len() != scenario.vms.len() {
        bail!("{} VMs but files for {}", scenario.vms.len(), files.len());
    }
    let cpus = assign_cpus(
        &scenario.vms.iter().map(|vm| vm.vcpus).collect::<Vec<_>>(),
        scenario.machine.cpus,
    );
    let mut entries = Vec::new();
    let mut manifest_vms = Vec::new();
    let mut guest_dtbs = Vec::new();
    for ((vm, files), physical_cpus) in scenario.vms.iter().zip(files).zip(cpus) {
        let what = |item: &str| format!("VM {}: {item}", vm.name);
        let memory_size = vm.memory_mib << 20;
        let header = ImageHeader::parse(&files.kernel).with_context(|| what("kernel"))?;
        let initrd_len = files.initrd.as_ref().map(|i| i.len() as u64);
        let places = layout(memory_size, header, initrd_len).with_context(|| what("layout"))?;
        let dtb = GuestDt {
            vcpus: vm.vcpus,
            memory_size,
            cpu_compatible: cpu_compatible(scenario.machine.cpu).into(),
            bootargs: vm_bootargs(vm),
            initrd: places.initrd,
        }
        .to_dtb()?;
        let member = |file: &str| format!("{}/{file}", vm.name);
        entries.push(Entry::file(&member("kernel"), files.kernel.clone(), false));
        entries.push(Entry::file(&member("dtb"), dtb.clone(), false));
        let initrd = match (&files.initrd, places.initrd) {
            (Some(data), Some((start, _))) => {
                entries.push(Entry::file(&member("initrd"), data.clone(), false));
                Some((member("initrd"), start))
            }
            _ => None,
        };
        manifest_vms.push(ManifestVm {
            name: vm.name.clone(),
            vcpus: vm.vcpus,
            memory_size,
            kernel: member("kernel"),
            kernel_ipa: places.kernel,
            dtb: member("dtb"),
            dtb_ipa: places.dtb,
            initrd,
            physical_cpus,
        });
        guest_dtbs.push((vm.name.clone(), dtb));
    }
    let manifest = manifest_dtb(&manifest_vms)?;
    entries.insert(0, Entry::file("manifest.dtb", manifest.clone(), false));
    Ok(Bundle {
        cpio: write_cpio(&entries)?,
        manifest,
        guest_dtbs,
    })
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
