//! One snapshot per scenario file of the device trees the lab generates for
//! it (the manifest and each VM's tree, as DTS text), for every scenario
//! that runs VMs under the hypervisor. The trees depend on the scenario and
//! on the sizes of the files packed; the test packs placeholders of fixed
//! sizes (stated at the top of each snapshot), so only the scenario moves
//! the snapshot. Review with `cargo insta review`.

use lab::bundle::{dts, pack, VmFiles};
use lab::disk::DiskContents;
use lab::scenario::{BootMode, KernelSource, Scenario};

const MIB: usize = 1 << 20;
/// In-tree guests: Image header with text_offset 0x80000 (the contract).
const CRATE_KERNEL: (u64, usize) = (0x80000, MIB);
/// Debian's arm64 Images: text_offset 0.
const IMAGE_KERNEL: (u64, usize) = (0, 32 * MIB);
const INITRD_BYTES: usize = 16 * MIB;
/// A disk filled from an image, without `size-mib`: as big as the image.
const DISK_IMAGE_BYTES: usize = 4 * MIB;

fn image((text_offset, size): (u64, usize)) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    bytes[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
    bytes[0x10..0x18].copy_from_slice(&(size as u64).to_le_bytes());
    bytes[0x38..0x3c].copy_from_slice(b"ARM\x64");
    bytes
}

#[test]
fn bundle_device_trees() {
    insta::glob!("../../scenarios", "*.yaml", |path| {
        let scenario = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
        if scenario.boot != BootMode::Hypervisor || scenario.vms.is_empty() {
            return;
        }
        let files: Vec<VmFiles> = scenario
            .vms
            .iter()
            .map(|vm| VmFiles {
                kernel: image(match vm.kernel {
                    KernelSource::Crate(_) => CRATE_KERNEL,
                    KernelSource::Image(_) => IMAGE_KERNEL,
                }),
                initrd: vm.initramfs.then(|| vec![0u8; INITRD_BYTES]),
                disks: vm
                    .disks
                    .iter()
                    .map(|disk| {
                        let image = disk.image.as_ref().map(|_| vec![0u8; DISK_IMAGE_BYTES]);
                        DiskContents::new(disk, image, &vm.name).unwrap_or_else(|e| panic!("{e:#}"))
                    })
                    .collect(),
            })
            .collect();
        let bundle = pack(&scenario, &files).unwrap_or_else(|e| panic!("{e:#}"));
        let mut text = format!(
            "# placeholders: crate kernel {} MiB at text_offset {:#x}, image kernel {} MiB at \
             text_offset {:#x}, initramfs {} MiB, disk image {} MiB\n\n# manifest.dts\n",
            CRATE_KERNEL.1 / MIB,
            CRATE_KERNEL.0,
            IMAGE_KERNEL.1 / MIB,
            IMAGE_KERNEL.0,
            INITRD_BYTES / MIB,
            DISK_IMAGE_BYTES / MIB
        );
        text += &dts::to_dts(&bundle.manifest).unwrap();
        for (vm, dtb) in &bundle.guest_dtbs {
            text += &format!("\n# {vm}.dts\n");
            text += &dts::to_dts(dtb).unwrap();
        }
        insta::with_settings!({
            snapshot_path => "../../scenarios/snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(text);
        });
    });
}
