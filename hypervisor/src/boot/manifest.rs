//! The lab's manifest (`manifest.dtb` in the boot bundle, schema
//! `lab,hypervisor-manifest-v1`) parsed into typed VM configurations. Every
//! problem is a [`ManifestError`] naming the field (`vms/vm@0/memory-size`)
//! and what is wrong with it; the boot flow prints it and powers off.
//!
//! ```text
//! / { compatible = "lab,hypervisor-manifest-v1";
//!     vms { vm@0 { name = "vm0"; vcpus = <1>; memory-size = <0x0 0x10000000>;
//!                  kernel = "vm0/kernel"; kernel-format = "linux-image"; // | "elf" | "raw"
//!                  kernel-ipa = <0x0 0x40080000>;     // not needed for elf
//!                  dtb = "vm0/dtb"; dtb-ipa = <0x0 0x48000000>;
//!                  initrd = "vm0/initrd"; initrd-ipa = <...>;  // optional pair
//!                  physical-cpus = <0 1>;
//!                  devices {                          // optional
//!                      virtio@0 { kind = "virtio-net"; slot = <0>;
//!                                 mac = [02 4c 41 42 00 01]; switch = "lan0"; };
//!                      virtio@1 { kind = "virtio-blk"; slot = <1>;
//!                                 disk-size = <0x0 0x4000000>; serial = "disk1";
//!                                 image = "vm0/disk1";   // optional initial contents
//!                                 read-only; };          // optional
//!                  }; }; }; };
//! ```
//!
//! Slot `n` is the virtio-mmio window at IPA 0x0A00_0000 + n·0x200 with
//! SPI 16 + n, as on QEMU's `virt` board.
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::dt::{self, Node, Property};
use crate::addr::{IntermediatePhysAddr, PAGE_SIZE};
use crate::layout::{MAX_VCPUS, RAM_BASE, VIRTIO_SLOTS};

/// The `compatible` string of the root node.
pub const COMPATIBLE: &str = "lab,hypervisor-manifest-v1";
/// Guest RAM size granularity.
const MEMORY_GRANULE: u64 = 2 * 1024 * 1024;
/// Largest guest RAM accepted (IPA space above [`RAM_BASE`]).
const MEMORY_MAX: u64 = 256 * 1024 * 1024 * 1024;

/// How the kernel file is laid out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KernelFormat {
    /// An arm64 Linux `Image` (header with text offset), entered at its start.
    LinuxImage,
    /// An ELF64: segments at their physical addresses, entry from the header.
    Elf,
    /// A flat binary loaded at `kernel-ipa` and entered there.
    Raw,
}

/// Longest serial number a virtio-blk device reports (GET_ID).
const SERIAL_MAX: usize = 20;

/// What kind of device a manifest device node describes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum DeviceKind {
    /// virtio-net on a port of the switch called `switch`.
    Net { mac: [u8; 6], switch: String },
    /// virtio-blk over `size` bytes of host RAM, filled from the bundle
    /// member `image` (the rest zero).
    Block {
        size: u64,
        serial: String,
        image: Option<String>,
        read_only: bool,
    },
}

/// One device of a VM.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DeviceConfig {
    /// Node path for messages (`vms/vm@0/devices/virtio@1`).
    pub node: String,
    /// virtio-mmio slot, below [`VIRTIO_SLOTS`].
    pub slot: u32,
    pub kind: DeviceKind,
}

/// A file of the bundle placed at a guest-physical address.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Placement {
    /// Bundle member path.
    pub path: String,
    /// Where it goes in guest RAM.
    pub ipa: IntermediatePhysAddr,
}

/// One VM of the manifest.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VmConfig {
    /// Node path for messages (`vms/vm@0`).
    pub node: String,
    /// VM name (console tag).
    pub name: String,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM bytes, at IPA [`RAM_BASE`].
    pub memory_size: u64,
    /// Kernel file.
    pub kernel: String,
    /// Kernel layout.
    pub kernel_format: KernelFormat,
    /// Load address (required unless ELF).
    pub kernel_ipa: Option<IntermediatePhysAddr>,
    /// The VM's device tree.
    pub dtb: Placement,
    /// Optional initrd.
    pub initrd: Option<Placement>,
    /// Physical CPUs the vCPUs run on (empty: the hypervisor chooses).
    pub physical_cpus: Vec<u32>,
    /// virtio devices, in manifest order.
    pub devices: Vec<DeviceConfig>,
}

impl VmConfig {
    /// Whether `[ipa, ipa + len)` lies inside the VM's RAM.
    pub fn ram_contains(&self, ipa: IntermediatePhysAddr, len: u64) -> bool {
        let Some(offset) = ipa.checked_offset_from(RAM_BASE) else {
            return false;
        };
        offset
            .checked_add(len)
            .is_some_and(|end| end <= self.memory_size)
    }
}

/// The parsed manifest.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Manifest {
    /// VMs in manifest order.
    pub vms: Vec<VmConfig>,
}

/// A rejected manifest: which field, and what is wrong with it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ManifestError {
    /// Field path, e.g. `vms/vm@0/memory-size`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl ManifestError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

struct Fields<'n, 'a> {
    node: &'n Node<'a>,
    path: String,
}

impl<'a> Fields<'_, 'a> {
    fn field(&self, name: &str) -> String {
        format!("{}/{}", self.path, name)
    }

    fn err(&self, name: &str, problem: impl Into<String>) -> ManifestError {
        ManifestError::new(self.field(name), problem)
    }

    fn prop(&self, name: &str) -> Result<&Property<'a>, ManifestError> {
        self.node
            .property(name)
            .ok_or_else(|| self.err(name, "missing"))
    }

    fn string(&self, name: &str) -> Result<String, ManifestError> {
        self.prop(name)?
            .as_str()
            .filter(|s| !s.is_empty())
            .map(ToString::to_string)
            .ok_or_else(|| self.err(name, "must be a non-empty string"))
    }

    fn u32(&self, name: &str) -> Result<u32, ManifestError> {
        self.prop(name)?
            .as_u32()
            .ok_or_else(|| self.err(name, "must be one 32-bit cell"))
    }

    fn u64(&self, name: &str) -> Result<u64, ManifestError> {
        self.prop(name)?
            .as_u64()
            .ok_or_else(|| self.err(name, "must be two 32-bit cells <hi lo>"))
    }

    fn ipa(&self, name: &str) -> Result<IntermediatePhysAddr, ManifestError> {
        self.u64(name).map(IntermediatePhysAddr::new)
    }
}

fn parse_device(node: &Node<'_>, path: String) -> Result<DeviceConfig, ManifestError> {
    let f = Fields { node, path };
    let slot = f.u32("slot")?;
    if u64::from(slot) >= VIRTIO_SLOTS {
        return Err(f.err("slot", format!("must be below {VIRTIO_SLOTS}, not {slot}")));
    }
    let kind = match f.string("kind")?.as_str() {
        "virtio-net" => {
            let mac: [u8; 6] = f
                .prop("mac")?
                .value
                .try_into()
                .map_err(|_| f.err("mac", "must be 6 bytes"))?;
            if mac[0] & 1 != 0 || mac == [0; 6] {
                return Err(f.err("mac", "must be a unicast address"));
            }
            DeviceKind::Net {
                mac,
                switch: f.string("switch")?,
            }
        }
        "virtio-blk" => {
            let size = f.u64("disk-size")?;
            if size == 0 || !size.is_multiple_of(PAGE_SIZE) {
                return Err(f.err(
                    "disk-size",
                    format!("must be a non-zero multiple of 4 KiB, not {size:#x}"),
                ));
            }
            let serial = f.string("serial")?;
            if serial.len() > SERIAL_MAX {
                return Err(f.err("serial", format!("must be at most {SERIAL_MAX} bytes")));
            }
            let image = match node.property("image") {
                None => None,
                Some(_) => Some(f.string("image")?),
            };
            DeviceKind::Block {
                size,
                serial,
                image,
                read_only: node.property("read-only").is_some(),
            }
        }
        other => {
            return Err(f.err(
                "kind",
                format!("must be virtio-net or virtio-blk, not {other:?}"),
            ))
        }
    };
    Ok(DeviceConfig {
        node: f.path.clone(),
        slot,
        kind,
    })
}

fn parse_devices(
    node: Option<&Node<'_>>,
    vm_path: &str,
) -> Result<Vec<DeviceConfig>, ManifestError> {
    let mut devices: Vec<DeviceConfig> = Vec::new();
    for child in node.map(|n| n.children.as_slice()).unwrap_or_default() {
        let device = parse_device(child, format!("{vm_path}/devices/{}", child.name))?;
        if devices.iter().any(|d| d.slot == device.slot) {
            return Err(ManifestError::new(
                format!("{}/slot", device.node),
                format!("slot {} is taken by another device", device.slot),
            ));
        }
        devices.push(device);
    }
    Ok(devices)
}

fn parse_vm(node: &Node<'_>, path: String) -> Result<VmConfig, ManifestError> {
    let f = Fields { node, path };
    let name = f.string("name")?;
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(f.err("name", "must be letters, digits, '-' or '_'"));
    }
    let vcpus = f.u32("vcpus")?;
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(f.err("vcpus", format!("must be 1 to {MAX_VCPUS}, not {vcpus}")));
    }
    let memory_size = f.u64("memory-size")?;
    if memory_size == 0 || !memory_size.is_multiple_of(MEMORY_GRANULE) || memory_size > MEMORY_MAX {
        return Err(f.err(
            "memory-size",
            format!("must be a non-zero multiple of 2 MiB up to 256 GiB, not {memory_size:#x}"),
        ));
    }
    let kernel = f.string("kernel")?;
    let kernel_format = match f.string("kernel-format")?.as_str() {
        "linux-image" => KernelFormat::LinuxImage,
        "elf" => KernelFormat::Elf,
        "raw" => KernelFormat::Raw,
        other => {
            return Err(f.err(
                "kernel-format",
                format!("must be linux-image, elf or raw, not {other:?}"),
            ))
        }
    };
    let kernel_ipa = match (kernel_format, node.property("kernel-ipa")) {
        (KernelFormat::Elf, None) => None,
        _ => Some(f.ipa("kernel-ipa")?),
    };
    let dtb = Placement {
        path: f.string("dtb")?,
        ipa: f.ipa("dtb-ipa")?,
    };
    let initrd = match (node.property("initrd"), node.property("initrd-ipa")) {
        (None, None) => None,
        (Some(_), None) => return Err(f.err("initrd-ipa", "missing (initrd is set)")),
        (None, Some(_)) => return Err(f.err("initrd", "missing (initrd-ipa is set)")),
        (Some(_), Some(_)) => Some(Placement {
            path: f.string("initrd")?,
            ipa: f.ipa("initrd-ipa")?,
        }),
    };
    let physical_cpus = match node.property("physical-cpus") {
        None => Vec::new(),
        // An empty list, like an absent one, leaves placement to us.
        Some(p) => p
            .cells()
            .ok_or_else(|| f.err("physical-cpus", "must be a list of 32-bit cells"))?
            .collect(),
    };
    let devices = parse_devices(node.child("devices"), &f.path)?;
    let vm = VmConfig {
        node: f.path.clone(),
        name,
        vcpus,
        memory_size,
        kernel,
        kernel_format,
        kernel_ipa,
        dtb,
        initrd,
        physical_cpus,
        devices,
    };
    // Placements must start inside RAM, page-aligned where the boot
    // protocols ask for it; whether the files fit is checked at load time.
    if let Some(ipa) = vm.kernel_ipa {
        if !vm.ram_contains(ipa, 1) {
            return Err(f.err("kernel-ipa", format!("{ipa:#x} is outside the VM's RAM")));
        }
    }
    if !vm.ram_contains(vm.dtb.ipa, 1) || !vm.dtb.ipa.is_aligned(8) {
        return Err(f.err(
            "dtb-ipa",
            format!(
                "{:#x} is not an 8-byte aligned address in the VM's RAM",
                vm.dtb.ipa
            ),
        ));
    }
    if let Some(initrd) = &vm.initrd {
        if !vm.ram_contains(initrd.ipa, 1) || !initrd.ipa.is_aligned(PAGE_SIZE) {
            return Err(f.err(
                "initrd-ipa",
                format!(
                    "{:#x} is not a page-aligned address in the VM's RAM",
                    initrd.ipa
                ),
            ));
        }
    }
    Ok(vm)
}

/// Parses and validates `manifest.dtb`.
pub fn parse(blob: &[u8]) -> Result<Manifest, ManifestError> {
    let root = dt::parse(blob).map_err(|e| ManifestError::new("manifest.dtb", e.to_string()))?;
    let compatible = root
        .property("compatible")
        .ok_or_else(|| ManifestError::new("compatible", "missing"))?;
    let ok = compatible
        .value
        .split(|b| *b == 0)
        .any(|c| c == COMPATIBLE.as_bytes());
    if !ok {
        return Err(ManifestError::new(
            "compatible",
            format!("must include {COMPATIBLE:?}"),
        ));
    }
    let vms_node = root
        .child("vms")
        .ok_or_else(|| ManifestError::new("vms", "missing"))?;
    let mut vms: Vec<VmConfig> = Vec::new();
    for child in &vms_node.children {
        let path = format!("vms/{}", child.name);
        let vm = parse_vm(child, path)?;
        if vms.iter().any(|other| other.name == vm.name) {
            return Err(ManifestError::new(
                format!("{}/name", vm.node),
                format!("duplicate VM name {:?}", vm.name),
            ));
        }
        vms.push(vm);
    }
    Ok(Manifest { vms })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vm_fdt::FdtWriter;

    /// One VM's manifest properties; tests tweak them.
    pub struct VmSpec {
        pub props: Vec<(&'static str, Value)>,
        /// Children of the `devices` node: name and properties.
        pub devices: Vec<(String, Vec<(&'static str, Value)>)>,
    }

    pub enum Value {
        Str(&'static str),
        U32(u32),
        U64(u64),
        Cells(Vec<u32>),
        Bytes(Vec<u8>),
        Empty,
    }

    pub fn default_vm(name: &'static str) -> VmSpec {
        VmSpec {
            props: vec![
                ("name", Value::Str(name)),
                ("vcpus", Value::U32(1)),
                ("memory-size", Value::U64(0x1000_0000)),
                ("kernel", Value::Str("vm0/kernel")),
                ("kernel-format", Value::Str("linux-image")),
                ("kernel-ipa", Value::U64(0x4008_0000)),
                ("dtb", Value::Str("vm0/dtb")),
                ("dtb-ipa", Value::U64(0x4800_0000)),
                ("physical-cpus", Value::Cells(vec![0])),
            ],
            devices: Vec::new(),
        }
    }

    impl VmSpec {
        pub fn set(mut self, name: &'static str, value: Value) -> Self {
            self.props.retain(|(n, _)| *n != name);
            self.props.push((name, value));
            self
        }
        pub fn without(mut self, name: &str) -> Self {
            self.props.retain(|(n, _)| *n != name);
            self
        }
        pub fn device(mut self, name: &str, props: Vec<(&'static str, Value)>) -> Self {
            self.devices.push((name.into(), props));
            self
        }
    }

    fn write_props(w: &mut FdtWriter, props: &[(&'static str, Value)]) {
        for (name, value) in props {
            match value {
                Value::Str(s) => w.property_string(name, s).unwrap(),
                Value::U32(v) => w.property_u32(name, *v).unwrap(),
                Value::U64(v) => w.property_u64(name, *v).unwrap(),
                Value::Cells(c) => w.property_array_u32(name, c).unwrap(),
                Value::Bytes(b) => w.property(name, b).unwrap(),
                Value::Empty => w.property_null(name).unwrap(),
            }
        }
    }

    pub fn build(compatible: &str, vms: &[VmSpec]) -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_string("compatible", compatible).unwrap();
        let vms_node = w.begin_node("vms").unwrap();
        for (i, vm) in vms.iter().enumerate() {
            let n = w.begin_node(&format!("vm@{i}")).unwrap();
            write_props(&mut w, &vm.props);
            if !vm.devices.is_empty() {
                let devices = w.begin_node("devices").unwrap();
                for (name, props) in &vm.devices {
                    let d = w.begin_node(name).unwrap();
                    write_props(&mut w, props);
                    w.end_node(d).unwrap();
                }
                w.end_node(devices).unwrap();
            }
            w.end_node(n).unwrap();
        }
        w.end_node(vms_node).unwrap();
        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    fn error_of(vm: VmSpec) -> String {
        parse(&build(COMPATIBLE, &[vm])).unwrap_err().to_string()
    }

    #[test]
    fn a_good_manifest_parses() {
        let blob = build(
            COMPATIBLE,
            &[
                default_vm("vm0"),
                default_vm("vm1")
                    .set("kernel-format", Value::Str("elf"))
                    .without("kernel-ipa")
                    .set("initrd", Value::Str("vm1/initrd"))
                    .set("initrd-ipa", Value::U64(0x4a00_0000))
                    .set("physical-cpus", Value::Cells(vec![1, 0])),
            ],
        );
        let m = parse(&blob).unwrap();
        assert_eq!(m.vms.len(), 2);
        let vm0 = &m.vms[0];
        assert_eq!(vm0.name, "vm0");
        assert_eq!(vm0.memory_size, 256 << 20);
        assert_eq!(vm0.kernel_format, KernelFormat::LinuxImage);
        assert_eq!(vm0.kernel_ipa, Some(IntermediatePhysAddr::new(0x4008_0000)));
        assert_eq!(vm0.dtb.ipa, IntermediatePhysAddr::new(0x4800_0000));
        assert_eq!(vm0.initrd, None);
        let vm1 = &m.vms[1];
        assert_eq!(vm1.kernel_format, KernelFormat::Elf);
        assert_eq!(vm1.kernel_ipa, None);
        assert_eq!(vm1.initrd.as_ref().unwrap().path, "vm1/initrd");
        assert_eq!(vm1.physical_cpus, [1, 0]);
    }

    fn net(slot: u32) -> Vec<(&'static str, Value)> {
        vec![
            ("kind", Value::Str("virtio-net")),
            ("slot", Value::U32(slot)),
            ("mac", Value::Bytes(vec![2, 0x4c, 0x41, 0x42, 0, 1])),
            ("switch", Value::Str("lan0")),
        ]
    }

    fn blk(slot: u32) -> Vec<(&'static str, Value)> {
        vec![
            ("kind", Value::Str("virtio-blk")),
            ("slot", Value::U32(slot)),
            ("disk-size", Value::U64(0x400_0000)),
            ("serial", Value::Str("disk1")),
        ]
    }

    fn with(
        mut props: Vec<(&'static str, Value)>,
        name: &'static str,
        value: Value,
    ) -> Vec<(&'static str, Value)> {
        props.retain(|(n, _)| *n != name);
        props.push((name, value));
        props
    }

    #[test]
    fn devices_parse_in_order() {
        let mut image = blk(1);
        image.push(("image", Value::Str("vm0/disk1")));
        image.push(("read-only", Value::Empty));
        let vm = default_vm("vm0")
            .device("virtio@0", net(0))
            .device("virtio@1", image)
            .device("virtio@2", blk(2));
        let m = parse(&build(COMPATIBLE, &[vm])).unwrap();
        let devices = &m.vms[0].devices;
        assert_eq!(devices.len(), 3);
        assert_eq!(devices[0].node, "vms/vm@0/devices/virtio@0");
        assert_eq!(
            devices[0].kind,
            DeviceKind::Net {
                mac: [2, 0x4c, 0x41, 0x42, 0, 1],
                switch: "lan0".into()
            }
        );
        assert_eq!(devices[1].slot, 1);
        assert_eq!(
            devices[1].kind,
            DeviceKind::Block {
                size: 0x400_0000,
                serial: "disk1".into(),
                image: Some("vm0/disk1".into()),
                read_only: true
            }
        );
        assert!(matches!(
            devices[2].kind,
            DeviceKind::Block {
                image: None,
                read_only: false,
                ..
            }
        ));
    }

    #[test]
    fn bad_devices_are_named() {
        let at = "vms/vm@0/devices/virtio@0";
        let cases: Vec<(Vec<(&'static str, Value)>, String)> = vec![
            (
                with(net(0), "slot", Value::U32(32)),
                format!("{at}/slot: must be below 32"),
            ),
            (
                with(net(0), "kind", Value::Str("virtio-gpu")),
                format!("{at}/kind: must be virtio-net or virtio-blk"),
            ),
            (
                with(net(0), "mac", Value::Bytes(vec![2, 0, 0])),
                format!("{at}/mac: must be 6 bytes"),
            ),
            (
                with(net(0), "mac", Value::Bytes(vec![1, 0, 0, 0, 0, 1])),
                format!("{at}/mac: must be a unicast address"),
            ),
            (
                net(0).into_iter().filter(|(n, _)| *n != "switch").collect(),
                format!("{at}/switch: missing"),
            ),
            (
                with(blk(0), "disk-size", Value::U64(1000)),
                format!("{at}/disk-size: must be a non-zero multiple of 4 KiB"),
            ),
            (
                with(blk(0), "disk-size", Value::U64(0)),
                format!("{at}/disk-size: must be a non-zero multiple of 4 KiB"),
            ),
            (
                with(blk(0), "serial", Value::Str("a-serial-longer-than-twenty")),
                format!("{at}/serial: must be at most 20 bytes"),
            ),
            (
                with(blk(0), "image", Value::U32(3)),
                format!("{at}/image: must be a non-empty string"),
            ),
        ];
        for (device, expected) in cases {
            let got = error_of(default_vm("vm0").device("virtio@0", device));
            assert!(
                got.starts_with(&expected),
                "{got:?} should start with {expected:?}"
            );
        }
        let twice = default_vm("vm0")
            .device("virtio@0", net(3))
            .device("virtio@1", blk(3));
        assert_eq!(
            error_of(twice),
            "vms/vm@0/devices/virtio@1/slot: slot 3 is taken by another device"
        );
    }

    #[test]
    fn an_empty_vms_node_means_nothing_to_run() {
        assert_eq!(parse(&build(COMPATIBLE, &[])).unwrap().vms.len(), 0);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(VmSpec, &str)> = vec![
            (default_vm("vm0").without("name"), "vms/vm@0/name: missing"),
            (default_vm("vm 0"), "vms/vm@0/name: must be letters"),
            (
                default_vm("vm0").set("vcpus", Value::U32(0)),
                "vms/vm@0/vcpus: must be 1 to 8",
            ),
            (
                default_vm("vm0").set("vcpus", Value::U64(1)),
                "vms/vm@0/vcpus: must be one 32-bit cell",
            ),
            (
                default_vm("vm0").set("memory-size", Value::U64(0x1234)),
                "vms/vm@0/memory-size: must be a non-zero multiple of 2 MiB",
            ),
            (
                default_vm("vm0").set("memory-size", Value::U32(0x1000_0000)),
                "vms/vm@0/memory-size: must be two 32-bit cells",
            ),
            (
                default_vm("vm0").set("kernel-format", Value::Str("bzImage")),
                "vms/vm@0/kernel-format: must be linux-image, elf or raw",
            ),
            (
                default_vm("vm0").without("kernel-ipa"),
                "vms/vm@0/kernel-ipa: missing",
            ),
            (
                default_vm("vm0").set("kernel-ipa", Value::U64(0x1000)),
                "vms/vm@0/kernel-ipa: 0x1000 is outside the VM's RAM",
            ),
            (
                default_vm("vm0").set("dtb-ipa", Value::U64(0x5000_0000)),
                "vms/vm@0/dtb-ipa: 0x50000000 is not an 8-byte aligned address",
            ),
            (default_vm("vm0").without("dtb"), "vms/vm@0/dtb: missing"),
            (
                default_vm("vm0").set("initrd", Value::Str("x")),
                "vms/vm@0/initrd-ipa: missing (initrd is set)",
            ),
            (
                default_vm("vm0").set("initrd-ipa", Value::U64(0x4100_0000)),
                "vms/vm@0/initrd: missing (initrd-ipa is set)",
            ),
            (
                default_vm("vm0").set("kernel", Value::U32(7)),
                "vms/vm@0/kernel: must be a non-empty string",
            ),
        ];
        for (vm, expected) in cases {
            let got = error_of(vm);
            assert!(
                got.starts_with(expected),
                "{got:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn document_level_errors() {
        assert_eq!(
            parse(&build("other", &[])).unwrap_err().to_string(),
            "compatible: must include \"lab,hypervisor-manifest-v1\""
        );
        assert_eq!(parse(b"garbage").unwrap_err().field, "manifest.dtb");
        let blob = build(COMPATIBLE, &[default_vm("vm0"), default_vm("vm0")]);
        assert_eq!(
            parse(&blob).unwrap_err().to_string(),
            "vms/vm@1/name: duplicate VM name \"vm0\""
        );
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_string("compatible", COMPATIBLE).unwrap();
        w.end_node(root).unwrap();
        assert_eq!(
            parse(&w.finish().unwrap()).unwrap_err().to_string(),
            "vms: missing"
        );
    }

    #[test]
    fn corrupted_manifests_never_panic() {
        let blob = build(COMPATIBLE, &[default_vm("vm0")]);
        for len in 0..blob.len() {
            let _ = parse(&blob[..len]);
        }
        let mut b = blob.clone();
        for i in 0..b.len() {
            b[i] ^= 0xff;
            let _ = parse(&b);
            b[i] ^= 0xff;
        }
    }
}
