//! Bundle tests: members, the manifest as the hypervisor reads it, and
//! the generated trees as DTS snapshots.

use super::*;
use crate::disk::DiskContents;
use crate::images::manifest::BootFormat;
use std::path::Path;

const SCENARIO: &str = "\
schema: 1
name: two
description: Two VMs under the hypervisor.
machine: { cpus: 2, memory-mib: 1024 }
vms:
  - { name: vm0, kernel: { image: linux-cloud }, initramfs: true, cmdline: quiet, vcpus: 1, memory-mib: 256 }
  - { name: vm1, kernel: { crate: testguest }, vcpus: 2, memory-mib: 64 }
steps: []
";

fn image(text_offset: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    bytes[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
    bytes[0x10..0x18].copy_from_slice(&(len as u64).to_le_bytes());
    bytes[0x38..0x3c].copy_from_slice(b"ARM\x64");
    bytes
}

fn bundle() -> Bundle {
    let scenario = Scenario::parse(Path::new("two.yaml"), SCENARIO).unwrap();
    pack(
        &scenario,
        &[
            VmFiles {
                kernel: image(0, 0x4000),
                format: BootFormat::LinuxImage,
                initrd: Some(vec![7u8; 0x1000]),
                disks: Vec::new(),
            },
            VmFiles {
                kernel: image(0x80000, 0x1000),
                format: BootFormat::LinuxImage,
                initrd: None,
                disks: Vec::new(),
            },
        ],
        "t",
    )
    .unwrap()
}

/// Member names of a newc archive.
fn members(mut cpio: &[u8]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    loop {
        let field = |h: &[u8], i: usize| {
            usize::from_str_radix(std::str::from_utf8(&h[6 + i * 8..14 + i * 8]).unwrap(), 16)
                .unwrap()
        };
        assert_eq!(&cpio[..6], b"070701");
        let (size, name_len) = (field(cpio, 6), field(cpio, 11));
        let name = String::from_utf8(cpio[110..110 + name_len - 1].to_vec()).unwrap();
        if name == "TRAILER!!!" {
            return out;
        }
        let data_at = (110 + name_len).next_multiple_of(4);
        out.push((name, size));
        cpio = &cpio[(data_at + size).next_multiple_of(4)..];
    }
}

#[test]
fn bundle_has_the_contract_members() {
    let bundle = bundle();
    assert_eq!(
        members(&bundle.cpio),
        [
            ("manifest.dtb".to_owned(), bundle.manifest.len()),
            ("vm0/kernel".to_owned(), 0x4000),
            ("vm0/dtb".to_owned(), bundle.guest_dtbs[0].1.len()),
            ("vm0/initrd".to_owned(), 0x1000),
            ("vm1/kernel".to_owned(), 0x1000),
            ("vm1/dtb".to_owned(), bundle.guest_dtbs[1].1.len()),
        ]
    );
}

#[test]
fn identical_images_are_packed_once_and_shared() {
    let text = SCENARIO.replace(
        "kernel: { crate: testguest }, vcpus: 2",
        "kernel: { image: linux-cloud }, initramfs: true, vcpus: 1",
    );
    let scenario = Scenario::parse(Path::new("two.yaml"), &text).unwrap();
    let vm = |initrd: u8| VmFiles {
        kernel: image(0, 0x4000),
        format: BootFormat::LinuxImage,
        initrd: Some(vec![initrd; 0x1000]),
        disks: Vec::new(),
    };
    let bundle = pack(&scenario, &[vm(7), vm(8)], "t").unwrap();
    let names: Vec<String> = members(&bundle.cpio).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "manifest.dtb",
            "vm0/kernel",
            "vm0/dtb",
            "vm0/initrd",
            "vm1/dtb",
            "vm1/initrd"
        ]
    );
    let fdt = fdt::Fdt::new(&bundle.manifest).unwrap();
    let vm1 = fdt.find_node("/vms/vm@1").unwrap();
    assert_eq!(vm1.property("kernel").unwrap().as_str(), Some("vm0/kernel"));
    assert_eq!(vm1.property("initrd").unwrap().as_str(), Some("vm1/initrd"));
    assert_eq!(vm1.property("dtb").unwrap().as_str(), Some("vm1/dtb"));
}

#[test]
fn manifest_names_members_and_places() {
    let bundle = bundle();
    let fdt = fdt::Fdt::new(&bundle.manifest).unwrap();
    let vm0 = fdt.find_node("/vms/vm@0").unwrap();
    let u64_of = |node: &fdt::node::FdtNode, name: &str| {
        u64::from_be_bytes(node.property(name).unwrap().value.try_into().unwrap())
    };
    assert_eq!(vm0.property("name").unwrap().as_str(), Some("vm0"));
    assert_eq!(vm0.property("kernel").unwrap().as_str(), Some("vm0/kernel"));
    assert_eq!(u64_of(&vm0, "memory-size"), 256 << 20);
    assert_eq!(u64_of(&vm0, "kernel-ipa"), 0x4000_0000);
    assert_eq!(u64_of(&vm0, "initrd-ipa"), 0x4800_0000);
    assert_eq!(u64_of(&vm0, "dtb-ipa"), 0x4fe0_0000);
    let vm1 = fdt.find_node("/vms/vm@1").unwrap();
    assert_eq!(u64_of(&vm1, "kernel-ipa"), 0x4008_0000);
    assert!(vm1.property("initrd").is_none());
    assert_eq!(
        vm1.property("physical-cpus").unwrap().value,
        [0, 0, 0, 1, 0, 0, 0, 1]
    );
}

#[test]
fn manifest_dts() {
    insta::assert_snapshot!(dts::to_dts(&bundle().manifest).unwrap());
}

#[test]
fn guest_dts() {
    let bundle = bundle();
    for (vm, dtb) in &bundle.guest_dtbs {
        insta::assert_snapshot!(format!("guest_dts_{vm}"), dts::to_dts(dtb).unwrap());
    }
}

#[test]
fn a_kernel_without_image_header_is_named() {
    let scenario = Scenario::parse(Path::new("two.yaml"), SCENARIO).unwrap();
    let files = vec![
        VmFiles {
            kernel: vec![0u8; 0x100],
            format: BootFormat::LinuxImage,
            initrd: None,
            disks: Vec::new(),
        };
        2
    ];
    let err = format!("{:#}", pack(&scenario, &files, "t").unwrap_err());
    assert!(
        err.starts_with("VM vm0: kernel: not an arm64 Image"),
        "{err}"
    );
}

const NET_SCENARIO: &str = "\
schema: 1
name: lan
description: Two VMs on a switch, one with two disks.
machine: { cpus: 2, memory-mib: 1024 }
switches: [lan0]
vms:
  - name: vm0
    kernel: { image: linux-cloud }
    initramfs: true
    vcpus: 1
    memory-mib: 256
    net: [{ switch: lan0, mac: '02:4c:41:42:00:01', ip: 10.0.0.1/24 }]
    disks: [{ size-mib: 8 }, { image: lab-disk, read-only: true }]
  - name: vm1
    kernel: { image: linux-cloud }
    vcpus: 1
    memory-mib: 256
    net: [{ switch: lan0, ip: 10.0.0.2/24 }]
steps: []
";

fn net_bundle(machine_mib: u64) -> Result<Bundle> {
    let text = NET_SCENARIO.replace("memory-mib: 1024", &format!("memory-mib: {machine_mib}"));
    let scenario = Scenario::parse(Path::new("lan.yaml"), &text).unwrap();
    let disk = |size_mib, image: Option<Vec<u8>>, read_only| {
        let disk = crate::scenario::Disk {
            image: None,
            size_mib,
            read_only,
        };
        DiskContents::new(&disk, image, "d").unwrap()
    };
    let vm = |disks| VmFiles {
        kernel: image(0, 0x4000),
        format: BootFormat::LinuxImage,
        initrd: None,
        disks,
    };
    pack(
        &scenario,
        &[
            vm(vec![
                disk(Some(8), None, false),
                disk(None, Some(vec![5u8; 5000]), true),
            ]),
            vm(Vec::new()),
        ],
        "t",
    )
}

#[test]
fn random_seeds_are_the_run_ids_and_each_vms_own() {
    let (rng, kaslr) = dt_seeds("run-1", "vm0");
    assert_eq!(dt_seeds("run-1", "vm0"), (rng, kaslr), "reproducible");
    assert_ne!(dt_seeds("run-2", "vm0").0, rng, "fresh per run");
    assert_ne!(dt_seeds("run-1", "vm1").1, kaslr, "per VM");
    let guest = dts::to_dts(&bundle().guest_dtbs[0].1).unwrap();
    assert!(guest.contains("rng-seed = <0x"), "{guest}");
    assert!(guest.contains("kaslr-seed = <0x"), "{guest}");
}

#[test]
fn devices_follow_the_contract() {
    let bundle = net_bundle(1024).unwrap();
    let names: Vec<String> = members(&bundle.cpio).into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"vm0/disk1".to_owned()), "{names:?}");
    assert!(
        !names.contains(&"vm0/disk0".to_owned()),
        "an empty disk has no member"
    );
    let dts = dts::to_dts(&bundle.manifest).unwrap();
    insta::assert_snapshot!(dts);
    let guest = dts::to_dts(&bundle.guest_dtbs[0].1).unwrap();
    assert_eq!(guest.matches("compatible = \"virtio,mmio\"").count(), 32);
    assert!(guest.contains("bootargs = \"console=ttyAMA0 lab.name=vm0 lab.ip=eth0:10.0.0.1/24\""));
    // Without the lab's initramfs, a VM's bootargs are its own: none here.
    let other = dts::to_dts(&bundle.guest_dtbs[1].1).unwrap();
    assert!(!other.contains("bootargs"), "{other}");
}

#[test]
fn the_machine_must_hold_ram_and_disks() {
    let err = format!("{:#}", net_bundle(528).unwrap_err());
    assert!(
        err.starts_with("machine.memory-mib is 528 but the hypervisor needs 537 MiB: 512 MiB of VM RAM, 9 MiB of disks and 16 MiB for itself"),
        "{err}"
    );
}

#[test]
fn each_vm_must_fit_beside_the_bundle() {
    // 256 MiB: the device tree at +128 MiB leaves no 128 MiB run (the
    // hypervisor said "no host memory" for such a VM); 512 MiB does.
    let one_vm = |machine: u64| {
        let text = format!(
            "schema: 1\nname: u\ndescription: d\nmachine: {{ cpus: 1, memory-mib: {machine} }}\nvms:\n  - {{ name: vm0, kernel: {{ crate: testguest }}, vcpus: 1, memory-mib: 128 }}\nsteps: []\n"
        );
        let scenario = Scenario::parse(Path::new("u.yaml"), &text).unwrap();
        let files = [VmFiles {
            kernel: image(0x80000, 0x1000),
            format: BootFormat::LinuxImage,
            initrd: None,
            disks: Vec::new(),
        }];
        pack(&scenario, &files, "t").map(|_| ())
    };
    let err = format!("{:#}", one_vm(256).unwrap_err());
    assert!(
        err.starts_with("VM vm0 needs 128 MiB of contiguous host RAM, but QEMU puts the hypervisor's device tree at +128 MiB of the machine's 256 MiB, leaving 112 MiB below it and 126 MiB above it"),
        "{err}"
    );
    assert!(one_vm(512).is_ok());
}
