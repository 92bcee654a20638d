//! The hypervisor's manifest (`manifest.dtb`, `lab,hypervisor-manifest-v1`):
//! one node per VM naming its bundle members and where they go, and its
//! virtio devices (`devices/virtio@<slot>`: a network port on a named
//! switch, or a disk). The format is the lab/hypervisor contract;
//! `hypervisor/src/boot/manifest.rs` is its reader.

use anyhow::{anyhow, Result};
use vm_fdt::FdtWriter;

pub const COMPATIBLE: &str = "lab,hypervisor-manifest-v1";

/// One VM of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestVm {
    pub name: String,
    pub vcpus: u32,
    pub memory_size: u64,
    /// Bundle member names.
    pub kernel: String,
    pub kernel_load: KernelLoad,
    pub dtb: String,
    pub dtb_ipa: u64,
    pub initrd: Option<(String, u64)>,
    pub physical_cpus: Vec<u32>,
    pub devices: Vec<Device>,
}

/// How the hypervisor loads a VM's kernel (`kernel-format`, `kernel-ipa`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelLoad {
    /// An arm64 Linux `Image` (Linux, and the in-tree guests) at `ipa`.
    LinuxImage { ipa: u64 },
    /// An ELF: segments at their addresses, entry from its header.
    Elf,
    /// A raw binary at `ipa`, entered there.
    Raw { ipa: u64 },
}

/// One virtio device of a VM, in the slot the guest finds it at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    Net {
        slot: u32,
        mac: [u8; 6],
        switch: String,
    },
    Blk {
        slot: u32,
        /// Bytes, a multiple of 4096.
        size: u64,
        /// What VIRTIO_BLK_T_GET_ID answers (at most 20 bytes).
        serial: String,
        /// The bundle member with the initial contents, if any.
        image: Option<String>,
        read_only: bool,
    },
}

impl Device {
    fn slot(&self) -> u32 {
        match self {
            Device::Net { slot, .. } | Device::Blk { slot, .. } => *slot,
        }
    }
}

/// The manifest blob.
pub fn manifest_dtb(vms: &[ManifestVm]) -> Result<Vec<u8>> {
    write(vms).map_err(|e| anyhow!("writing manifest.dtb: {e}"))
}

fn write(vms: &[ManifestVm]) -> Result<Vec<u8>, vm_fdt::Error> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", COMPATIBLE)?;
    let list = fdt.begin_node("vms")?;
    for (index, vm) in vms.iter().enumerate() {
        let node = fdt.begin_node(&format!("vm@{index}"))?;
        fdt.property_string("name", &vm.name)?;
        fdt.property_u32("vcpus", vm.vcpus)?;
        fdt.property_u64("memory-size", vm.memory_size)?;
        fdt.property_string("kernel", &vm.kernel)?;
        match vm.kernel_load {
            KernelLoad::LinuxImage { ipa } => {
                fdt.property_string("kernel-format", "linux-image")?;
                fdt.property_u64("kernel-ipa", ipa)?;
            }
            KernelLoad::Elf => fdt.property_string("kernel-format", "elf")?,
            KernelLoad::Raw { ipa } => {
                fdt.property_string("kernel-format", "raw")?;
                fdt.property_u64("kernel-ipa", ipa)?;
            }
        }
        fdt.property_string("dtb", &vm.dtb)?;
        fdt.property_u64("dtb-ipa", vm.dtb_ipa)?;
        if let Some((initrd, ipa)) = &vm.initrd {
            fdt.property_string("initrd", initrd)?;
            fdt.property_u64("initrd-ipa", *ipa)?;
        }
        fdt.property_array_u32("physical-cpus", &vm.physical_cpus)?;
        if !vm.devices.is_empty() {
            write_devices(&mut fdt, &vm.devices)?;
        }
        fdt.end_node(node)?;
    }
    fdt.end_node(list)?;
    fdt.end_node(root)?;
    fdt.finish()
}

fn write_devices(fdt: &mut FdtWriter, devices: &[Device]) -> Result<(), vm_fdt::Error> {
    let list = fdt.begin_node("devices")?;
    for device in devices {
        let node = fdt.begin_node(&format!("virtio@{:x}", device.slot()))?;
        match device {
            Device::Net { slot, mac, switch } => {
                fdt.property_string("kind", "virtio-net")?;
                fdt.property_u32("slot", *slot)?;
                fdt.property("mac", mac)?;
                fdt.property_string("switch", switch)?;
            }
            Device::Blk {
                slot,
                size,
                serial,
                image,
                read_only,
            } => {
                fdt.property_string("kind", "virtio-blk")?;
                fdt.property_u32("slot", *slot)?;
                fdt.property_u64("disk-size", *size)?;
                fdt.property_string("serial", serial)?;
                if let Some(image) = image {
                    fdt.property_string("image", image)?;
                }
                if *read_only {
                    fdt.property_null("read-only")?;
                }
            }
        }
        fdt.end_node(node)?;
    }
    fdt.end_node(list)
}

/// Physical CPUs for each VM's vCPUs. The hypervisor never lets two VMs
/// share a CPU, so each VM gets its own share of the machine: one CPU each
/// first, then the rest handed out in VM order to VMs with more vCPUs than
/// CPUs. A VM's vCPUs go round robin over its share, so with fewer CPUs
/// than vCPUs they are time-sliced. The scenario check guarantees at least
/// one CPU per VM; if there are fewer, the surplus VMs get an empty list
/// and the hypervisor's own placement reports them.
pub fn assign_cpus(vcpus: &[u32], machine_cpus: u32) -> Vec<Vec<u32>> {
    let mut shares: Vec<u32> = vcpus
        .iter()
        .enumerate()
        .map(|(i, _)| u32::from((i as u64) < u64::from(machine_cpus)))
        .collect();
    let mut spare = machine_cpus.saturating_sub(shares.iter().sum());
    while spare > 0 {
        let Some(share) = shares
            .iter_mut()
            .zip(vcpus)
            .find(|(share, wanted)| **share > 0 && **share < **wanted)
            .map(|(share, _)| share)
        else {
            break;
        };
        *share += 1;
        spare -= 1;
    }
    let mut first = 0;
    shares
        .iter()
        .zip(vcpus)
        .map(|(&share, &count)| {
            if share == 0 {
                return Vec::new();
            }
            let cpus = (0..count).map(|v| first + v % share).collect();
            first += share;
            cpus
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vm_gets_its_own_cpus() {
        assert_eq!(assign_cpus(&[1, 1], 2), [vec![0], vec![1]]);
        assert_eq!(assign_cpus(&[4], 4), [vec![0, 1, 2, 3]]);
        assert_eq!(assign_cpus(&[1], 4), [vec![0]]);
    }

    #[test]
    fn oversubscribed_vcpus_share_their_vms_cpus_only() {
        assert_eq!(assign_cpus(&[4], 2), [vec![0, 1, 0, 1]]);
        assert_eq!(assign_cpus(&[2, 1], 2), [vec![0, 0], vec![1]]);
        assert_eq!(assign_cpus(&[3, 2], 4), [vec![0, 1, 2], vec![3, 3]]);
        assert_eq!(assign_cpus(&[2, 2], 3), [vec![0, 1], vec![2, 2]]);
    }

    #[test]
    fn more_vms_than_cpus_leaves_the_surplus_unplaced() {
        assert_eq!(assign_cpus(&[1, 1, 1], 2), [vec![0], vec![1], vec![]]);
    }
}
