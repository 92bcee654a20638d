//! One snapshot per scenario file of the device trees the lab generates for
//! it (the manifest and each VM's tree, as DTS text), for every scenario
//! that runs VMs under the hypervisor. The trees depend on the scenario and
//! on the sizes of the files packed; the test packs placeholders of fixed
//! sizes (stated at the top of each snapshot), so only the scenario moves
//! the snapshot. Review with `cargo insta review`.

use lab::bundle::{dts, pack, VmFiles};
use lab::disk::DiskContents;
use lab::images::manifest::{BootFormat, Manifest, RAW_LOAD_DEFAULT};
use lab::scenario::{BootMode, KernelSource, Scenario};

const MIB: usize = 1 << 20;
/// In-tree guests: Image header with text_offset 0x80000 (the contract).
const CRATE_KERNEL: (u64, usize) = (0x80000, MIB);
/// Debian's arm64 Images: text_offset 0.
const IMAGE_KERNEL: (u64, usize) = (0, 32 * MIB);
const INITRD_BYTES: usize = 16 * MIB;
/// A disk filled from an image, without `size-mib`: as big as the image.
const DISK_IMAGE_BYTES: usize = 4 * MIB;
/// Bare-metal images: an ELF with one segment of this size at the base of
/// RAM (as Zephyr's), or a raw binary of this size.
const BARE_BYTES: usize = MIB;
/// The run id the guests' random seeds come from.
const SEED: &str = "snapshot";

fn image((text_offset, size): (u64, usize)) -> Vec<u8> {
    let mut bytes = vec![0u8; size];
    bytes[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
    bytes[0x10..0x18].copy_from_slice(&(size as u64).to_le_bytes());
    bytes[0x38..0x3c].copy_from_slice(b"ARM\x64");
    bytes
}

/// A little-endian AArch64 ELF64 with one `PT_LOAD` of `size` bytes at
/// the base of guest RAM.
fn elf(size: usize) -> Vec<u8> {
    let base: u64 = 0x4000_0000;
    let mut out = vec![0u8; 64 + 56];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4..7].copy_from_slice(&[2, 1, 1]);
    out[16..18].copy_from_slice(&2u16.to_le_bytes());
    out[18..20].copy_from_slice(&183u16.to_le_bytes());
    out[24..32].copy_from_slice(&base.to_le_bytes());
    out[32..40].copy_from_slice(&64u64.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&1u16.to_le_bytes());
    out[64..68].copy_from_slice(&1u32.to_le_bytes());
    for field in [80, 88] {
        out[field..field + 8].copy_from_slice(&base.to_le_bytes());
    }
    for field in [96, 104] {
        out[field..field + 8].copy_from_slice(&(size as u64).to_le_bytes());
    }
    out
}

/// The placeholder kernel of a VM, and how it boots.
fn kernel(images: &Manifest, source: &KernelSource) -> (Vec<u8>, BootFormat) {
    let image_name = match source {
        KernelSource::Crate(_) => return (image(CRATE_KERNEL), BootFormat::LinuxImage),
        KernelSource::Image(name) => name,
    };
    let format = images
        .require(image_name)
        .unwrap_or_else(|e| panic!("{e}"))
        .format;
    match format {
        Some(BootFormat::Elf) => (elf(BARE_BYTES), BootFormat::Elf),
        Some(raw @ BootFormat::Raw { .. }) => (vec![0u8; BARE_BYTES], raw),
        Some(BootFormat::Detect) => (
            vec![0u8; BARE_BYTES],
            BootFormat::Raw {
                load: RAW_LOAD_DEFAULT,
                entry: RAW_LOAD_DEFAULT,
            },
        ),
        _ => (image(IMAGE_KERNEL), BootFormat::LinuxImage),
    }
}

#[test]
fn bundle_device_trees() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let images = Manifest::load(&root).unwrap_or_else(|e| panic!("{e}"));
    insta::glob!("../../scenarios", "*.yaml", |path| {
        let scenario = Scenario::load(path).unwrap_or_else(|e| panic!("{e}"));
        if scenario.boot != BootMode::Hypervisor || scenario.vms.is_empty() {
            return;
        }
        let files: Vec<VmFiles> = scenario
            .vms
            .iter()
            .map(|vm| {
                let (kernel, format) = kernel(&images, &vm.kernel);
                VmFiles {
                    kernel,
                    format,
                    initrd: vm.initramfs.then(|| vec![0u8; INITRD_BYTES]),
                    disks: vm
                        .disks
                        .iter()
                        .map(|disk| {
                            let image = disk.image.as_ref().map(|_| vec![0u8; DISK_IMAGE_BYTES]);
                            DiskContents::new(disk, image, &vm.name)
                                .unwrap_or_else(|e| panic!("{e:#}"))
                        })
                        .collect(),
                }
            })
            .collect();
        let bundle = pack(&scenario, &files, SEED).unwrap_or_else(|e| panic!("{e:#}"));
        let bare = files.iter().any(|f| f.format != BootFormat::LinuxImage);
        let mut text = format!(
            "# placeholders: crate kernel {} MiB at text_offset {:#x}, image kernel {} MiB at \
             text_offset {:#x}, initramfs {} MiB, disk image {} MiB{}; seeds from run id {SEED:?}\n\n\
             # manifest.dts\n",
            CRATE_KERNEL.1 / MIB,
            CRATE_KERNEL.0,
            IMAGE_KERNEL.1 / MIB,
            IMAGE_KERNEL.0,
            INITRD_BYTES / MIB,
            DISK_IMAGE_BYTES / MIB,
            if bare {
                format!(", bare-metal {} MiB", BARE_BYTES / MIB)
            } else {
                String::new()
            }
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
