//! The hypervisor's manifest (`manifest.dtb`, `lab,hypervisor-manifest-v1`):
//! one node per VM naming its bundle members and where they go. The format
//! is the contract in the common brief; `hypervisor/src/boot/manifest.rs`
//! is its reader.

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
    pub kernel_ipa: u64,
    pub dtb: String,
    pub dtb_ipa: u64,
    pub initrd: Option<(String, u64)>,
    pub physical_cpus: Vec<u32>,
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
        // Every kernel the lab boots carries an arm64 Image header: Linux,
        // and the in-tree guests by contract.
        fdt.property_string("kernel-format", "linux-image")?;
        fdt.property_u64("kernel-ipa", vm.kernel_ipa)?;
        fdt.property_string("dtb", &vm.dtb)?;
        fdt.property_u64("dtb-ipa", vm.dtb_ipa)?;
        if let Some((initrd, ipa)) = &vm.initrd {
            fdt.property_string("initrd", initrd)?;
            fdt.property_u64("initrd-ipa", *ipa)?;
        }
        fdt.property_array_u32("physical-cpus", &vm.physical_cpus)?;
        fdt.end_node(node)?;
    }
    fdt.end_node(list)?;
    fdt.end_node(root)?;
    fdt.finish()
}

/// Physical CPUs for each VM's vCPUs: consecutive, wrapping around the
/// machine's CPUs, so VMs spread over the machine before they share.
pub fn assign_cpus(vcpus: &[u32], machine_cpus: u32) -> Vec<Vec<u32>> {
    let mut next = 0u32;
    vcpus
        .iter()
        .map(|&count| {
            (0..count)
                .map(|_| {
                    let cpu = next % machine_cpus.max(1);
                    next = next.wrapping_add(1);
                    cpu
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpus_spread_then_wrap() {
        assert_eq!(assign_cpus(&[1, 1], 2), [vec![0], vec![1]]);
        assert_eq!(assign_cpus(&[2, 1], 2), [vec![0, 1], vec![0]]);
        assert_eq!(assign_cpus(&[4], 2), [vec![0, 1, 0, 1]]);
    }
}
